"""``driftloop models``: list, show, register, promote and roll back model versions, and guard the champion."""

from __future__ import annotations

import argparse
import json
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from driftloop.config import load_settings
from driftloop.errors import ConfigError


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    models = subparsers.add_parser("models", help="inspect and change the model registry")
    commands = models.add_subparsers(dest="models_command", metavar="SUBCOMMAND")
    commands.required = True

    listing = commands.add_parser("list", help="List registered versions, oldest first")
    _add_json_flag(listing)
    listing.set_defaults(handler=list_handler)

    show = commands.add_parser("show", help="Show one version's record")
    show.add_argument("version", type=int, help="Version number")
    _add_json_flag(show)
    show.set_defaults(handler=show_handler)

    register = commands.add_parser(
        "register",
        help="Verify an artifact directory, record the SHA-256 of all its files and register it as a candidate",
    )
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

    guard = commands.add_parser(
        "guard",
        help="Roll back the champion when its online accuracy falls below the previous champion's, checking periodically",
    )
    guard.add_argument("--window", type=int, default=500, help="Joined feedback each version needs before the two are compared (default 500)")
    guard.add_argument(
        "--margin",
        type=float,
        default=0.02,
        help="Accuracy the champion may lose against the previous champion before it is rolled back, as a fraction (default 0.02)",
    )
    guard.add_argument("--interval", type=float, default=30.0, help="Seconds between checks (default 30)")
    guard.add_argument("--max-checks", type=int, help="Stop after this many checks (default: run until SIGTERM or Ctrl-C)")
    guard.add_argument("--once", action="store_true", help="Run one check, print its decision and exit")
    _add_json_flag(guard)
    guard.set_defaults(handler=guard_handler)


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
    print(f"{'VERSION':>7}  {'STATUS':<9}  {'PARENT':>6}  {'CREATED':<20}  {'LABELS':>6}  SHA-256 (ALL FILES)")
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
        print(f"registered version {record.version} at {record.path} (artifact SHA-256 of all files {record.sha256})")
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


def guard_handler(args: argparse.Namespace) -> int:
    from driftloop.commands import install_stop_handlers
    from driftloop.infra.clients import make_redis
    from driftloop.registry.guardrail import run_guardrail, run_guardrail_loop

    policy = _guardrail_policy(args)
    settings = load_settings(getattr(args, "config", None))
    client = make_redis(settings)
    try:
        with _open_registry(args) as registry:
            if args.once:
                return _report_guardrail(args, run_guardrail(registry, client, policy))
            stop = threading.Event()
            install_stop_handlers(stop.set, settings.shutdown_timeout_s)
            rollbacks = run_guardrail_loop(
                registry, client, policy, interval_s=args.interval, max_checks=args.max_checks, stop=stop
            )
    finally:
        client.close()
    if args.json:
        _print_json({"rollbacks": rollbacks})
    else:
        print(f"guardrail stopped after {rollbacks} rollbacks")
    return 0


# Helpers.


def _guardrail_policy(args: argparse.Namespace):
    from driftloop.registry.guardrail import GuardrailPolicy

    if args.interval <= 0:
        raise ConfigError(f"--interval must be positive, got {args.interval}")
    if args.max_checks is not None and args.max_checks < 1:
        raise ConfigError(f"--max-checks must be at least 1, got {args.max_checks}")
    try:
        return GuardrailPolicy(window=args.window, margin=args.margin)
    except ValueError as exc:
        raise ConfigError(f"invalid --window or --margin: {exc}") from exc


def _report_guardrail(args: argparse.Namespace, outcome) -> int:
    decision = outcome.decision
    if args.json:
        _print_json(
            {
                "verdict": decision.verdict.value,
                "reason": decision.reason,
                "champion": _accuracy_json(decision.champion),
                "previous": _accuracy_json(decision.previous),
                "rollback": outcome.rollback.to_json() if outcome.rollback is not None else None,
            }
        )
    else:
        print(f"{decision.verdict.value}: {decision.reason}")
        if outcome.rollback is not None:
            print(f"rollback: champion is now version {outcome.rollback.version} (was {outcome.rollback.previous})")
    return 0


def _accuracy_json(accuracy) -> dict[str, Any] | None:
    if accuracy is None:
        return None
    return {"version": accuracy.version, "joined": accuracy.joined, "correct": accuracy.correct, "accuracy": accuracy.accuracy}


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
