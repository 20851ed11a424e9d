"""The ``driftloop pii`` subcommands contributed by the redaction package.

``pii evaluate`` scores the stage on labelled data. ``pii scan`` reports the PII that
the configured analyzer still finds in a pipeline's stored data: every topic under the
prefix, the model store and the logs. Its report contains counts, entity types,
locations and line numbers of known values, never a value.
"""

from __future__ import annotations

import argparse
import json
import sys

from driftloop.argtypes import positive_int


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``pii`` with its ``evaluate`` and ``scan`` subcommands to the top-level parser."""
    pii = subparsers.add_parser("pii", help="check the PII redaction stage")
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
    evaluate.add_argument("--limit", type=positive_int, metavar="N", help="Evaluate the first N texts only")
    evaluate.add_argument(
        "--no-defaults", action="store_true", help="Skip the comparison with Presidio's default analyzer"
    )
    evaluate.set_defaults(handler=run_evaluate)

    scan = pii_commands.add_parser(
        "scan",
        help="Report the PII still stored in a pipeline's topics, model store and logs; counts only",
        description=(
            "Reads every topic under the configured prefix from its first offset, the text files of "
            "STATE_DIR/models (tokenizer vocabularies excluded) and STATE_DIR/**/*.log, and counts what the "
            "configured analyzer finds there per entity type and location. Placeholders such as "
            "<EMAIL_ADDRESS>, loopback addresses and the pipeline's own topic names and addresses are not "
            "counted. In keys, request ids, labels and error messages only the pattern entities count, and "
            "record coordinates and hashes are checked for --values only. The output never contains a "
            "matched value. Exits 1 when anything is found."
        ),
    )
    scan.add_argument(
        "--values",
        metavar="FILE",
        help="Known values, one per line, counted where they occur exactly; reported by line number",
    )
    scan.add_argument(
        "--include",
        action="append",
        default=[],
        metavar="PATH",
        help="Another file or folder to scan, e.g. a run report; repeatable",
    )
    scan.add_argument(
        "--values-only", action="store_true", help="Skip the analyzer and count only the --values matches"
    )
    scan.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="Time limit for reading all topics to their end; a topic cut short is marked incomplete (default 120)",
    )
    scan.add_argument("--json", action="store_true", help="Print the report as JSON instead of a table")
    scan.set_defaults(handler=run_scan)


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


def run_scan(args: argparse.Namespace) -> int:
    from driftloop.config import load_settings
    from driftloop.errors import ConfigError
    from driftloop.redaction.scan import read_known_values, render_scan, scan_pipeline

    if args.values_only and not args.values:
        raise ConfigError("--values-only needs --values FILE")
    if args.timeout <= 0:
        raise ConfigError(f"--timeout must be positive, got {args.timeout}")
    settings = load_settings(args.config)
    known_values = read_known_values(args.values) if args.values else None
    report = scan_pipeline(
        settings,
        known_values=known_values,
        include=args.include,
        use_analyzer=not args.values_only,
        topics_timeout_s=args.timeout,
    )
    if args.json:
        json.dump(report, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    else:
        print(render_scan(report))
    return 1 if report["found"] else 0
