"""The ``driftloop pii`` subcommands contributed by the redaction package."""

from __future__ import annotations

import argparse
import json
import sys


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``pii`` with its ``evaluate`` subcommand to the top-level parser."""
    pii = subparsers.add_parser("pii", help="Check the PII redaction stage")
    pii_commands = pii.add_subparsers(dest="pii_command", metavar="PII_COMMAND")
    pii_commands.required = True

    evaluate = pii_commands.add_parser(
        "evaluate",
        help="Precision, recall and F2 per entity type on span-labelled data, next to Presidio's defaults",
    )
    evaluate.add_argument(
        "--data",
        required=True,
        metavar="FILE",
        help="A .json file in presidio-research's synthetic format, or a CoNLL BIO file such as WNUT-17",
    )
    evaluate.add_argument("--json", action="store_true", help="Print the report as JSON instead of tables")
    evaluate.add_argument("--limit", type=_positive_int, metavar="N", help="Evaluate the first N texts only")
    evaluate.add_argument(
        "--no-defaults", action="store_true", help="Skip the comparison with Presidio's default analyzer"
    )
    evaluate.set_defaults(handler=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    from driftloop.config import load_settings
    from driftloop.redaction.evaluate import evaluate, render_table

    settings = load_settings(args.config)
    report = evaluate(args.data, settings.redaction, limit=args.limit, compare_defaults=not args.no_defaults)
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(render_table(report))
    return 0


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return number
