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


CHATTY_LOGGERS = ("presidio-analyzer",)
"""Loggers whose INFO lines reach the console only at ``--log-level DEBUG``: Presidio logs one per recognizer it loads."""


class ConsoleFilter(logging.Filter):
    """Filter of the console handler that drops INFO and DEBUG records of :data:`CHATTY_LOGGERS`.

    It filters the handler, not the loggers, so other handlers (a test's log capture, a
    file handler) still get every record.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or not record.name.startswith(CHATTY_LOGGERS)


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
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    if args.log_level != "DEBUG":
        console.addFilter(ConsoleFilter())
    # Like any basicConfig call, this does nothing when the root logger has handlers already.
    logging.basicConfig(level=args.log_level, handlers=[console])
    try:
        return int(args.handler(args) or 0)
    except DriftloopError as exc:
        print(f"driftloop: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
