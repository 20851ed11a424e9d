"""The ``driftloop`` command line.

Each feature module contributes its subcommands through an ``add_commands(subparsers)``
function listed in ``COMMAND_MODULES``; a subcommand's handler takes the parsed
arguments and returns the process exit code.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from driftloop.errors import DriftloopError

COMMAND_MODULES = (
    "driftloop.commands",
    "driftloop.demo",
    "driftloop.registry.cli",
    "driftloop.redaction.cli",
    "driftloop.redaction.ingest_cli",
    "driftloop.learning_cli",
    "driftloop.replay.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="driftloop",
        description="Continuous-learning stream processor: redact, serve, join feedback, detect drift, retrain.",
    )
    parser.add_argument("--config", metavar="FILE", help="YAML settings file (also DRIFTLOOP_CONFIG)")
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="log level on stderr (default INFO)"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).add_commands(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    try:
        return int(args.handler(args) or 0)
    except DriftloopError as exc:
        print(f"driftloop: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
