"""``driftloop models``: list, show, register, promote and roll back model versions."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from driftloop.config import load_settings
from driftloop.errors import ConfigError


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    models = subparsers.add_parser("models", help="Inspect and change the model registry")
    commands = models.add_subparsers(dest="models_command", metavar="SUBCOMMAND")
    commands.required = True

    listing = commands.add_parser("list", help="List registered versions, oldest first")
    _add_json_flag(listing)
    listing.set_defaults(handler=list_handler)

    show = commands.add_parser("show", help="Show one version's record")
    show.add_argument("version", type=int, help="Version number")
    _add_json_flag(show)
    show.set_defaults(handler=show_handler)

    register = commands.add_parser("register", help="Verify an artifact directory and register it as a candidate")
    register.add_argument("directory", type=Path, help="Artifact directory with model.safetensors and driftloop.json")
    register.add_argument("--parent", type=int, help="Version this model was trained from")
    register.add_argument(
        "--metadata",
        type=Path,
        metavar="FILE",
        help="JSON file with any of data_window, metrics, group_metrics, gate and redaction",
    )
    _add_json_flag(register)
    register.set_defaults(handler=register_handler)

    promote = commands.add_parser("promote", help="Make a version the champion")
    promote.add_argument("version", type=int, help="Version number")
    promote.add_argument("--reason", default="promoted from the command line", help="Reason recorded in the history and audit topic")
    promote.add_argument("--allow-rejected", action="store_true", help="Promote even if the version was rejected")
    _add_json_flag(promote)
    promote.set_defaults(handler=promote_handler)

    rollback = commands.add_parser("rollback", help="Reinstate the previous champion and reject the current one")
    rollback.add_argument("--reason", default="rolled back from the command line", help="Reason recorded in the history and audit topic")
    _add_json_flag(rollback)
    rollback.set_defaults(handler=rollback_handler)


def _add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="Print JSON instead of text")


# Handlers. The registry is imported inside them because it imports torch.


def list_handler(args: argparse.Namespace) -> int:
    with _open_registry(args) as registry:
        versions = registry.list_versions()
        champion = registry.champion_version()
    if args.json:
        _print_json({"champion": champion, "versions": [record.to_json() for record in versions]})
        return 0
    if not versions:
        print("no versions registered")
        return 0
    print(f"{'VERSION':>7}  {'STATUS':<9}  {'PARENT':>6}  {'CREATED':<20}  {'LABELS':>6}  SHA-256")
    for record in versions:
        parent = "-" if record.parent is None else str(record.parent)
        print(
            f"{record.version:>7}  {record.status.value:<9}  {parent:>6}  {_time(record.created_at_ms):<20}  "
            f"{len(record.labels):>6}  {record.sha256[:12]}"
        )
    return 0


def show_handler(args: argparse.Namespace) -> int:
    with _open_registry(args) as registry:
        record = registry.get(args.version)
        champion = registry.champion_version()
    data = record.to_json()
    data["is_champion"] = champion == record.version
    if args.json:
        _print_json(data)
        return 0
    for key, value in data.items():
        text = json.dumps(value, sort_keys=True) if isinstance(value, dict | list) else value
        print(f"{key}: {text}")
    return 0


def register_handler(args: argparse.Namespace) -> int:
    metadata = _read_metadata_file(args.metadata) if args.metadata else {}
    with _open_registry(args) as registry:
        record = registry.register(args.directory, parent=args.parent, **metadata)
    if args.json:
        _print_json(record.to_json())
    else:
        print(f"registered version {record.version} at {record.path} (SHA-256 {record.sha256})")
    return 0


def promote_handler(args: argparse.Namespace) -> int:
    with _open_registry(args) as registry:
        change = registry.promote(args.version, args.reason, allow_rejected=args.allow_rejected)
        pending = registry.pending_audit_events()
    return _report_change(args, change, pending)


def rollback_handler(args: argparse.Namespace) -> int:
    with _open_registry(args) as registry:
        change = registry.rollback(args.reason)
        pending = registry.pending_audit_events()
    return _report_change(args, change, pending)


# Helpers.


def _open_registry(args: argparse.Namespace):
    from driftloop.registry.registry import ModelRegistry

    return ModelRegistry(load_settings(getattr(args, "config", None)))


def _report_change(args: argparse.Namespace, change, pending_audit_events: int) -> int:
    if args.json:
        _print_json({**change.to_json(), "pending_audit_events": pending_audit_events})
    else:
        previous = "none" if change.previous is None else str(change.previous)
        print(f"{change.action}: champion is now version {change.version} (was {previous})")
        if pending_audit_events:
            print(f"warning: {pending_audit_events} audit events not yet delivered to Kafka; they are retried on the next change")
    return 0


_METADATA_KEYS = ("data_window", "metrics", "group_metrics", "gate", "redaction")


def _read_metadata_file(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"metadata file {path} not found") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"metadata file {path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"metadata file {path} must contain a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - set(_METADATA_KEYS))
    if unknown:
        raise ConfigError(f"metadata file {path} has unknown keys {unknown}; allowed: {list(_METADATA_KEYS)}")
    return data


def _time(at_ms: int) -> str:
    return datetime.fromtimestamp(at_ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))
