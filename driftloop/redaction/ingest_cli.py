"""The ``driftloop ingest`` and ``driftloop redactor`` commands.

``ingest`` reads raw requests from a JSON Lines or CSV file, or from stdin, redacts them
in this process and produces only redacted requests. ``redactor`` runs a transit
redactor, a consumer-group member that redacts the raw transit topic.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from driftloop.datasets import LABEL_COLUMNS, TEXT_COLUMNS
from driftloop.errors import ConfigError, EventError

logger = logging.getLogger(__name__)

# Bad lines reported one by one on stderr; later ones are only counted.
MAX_REPORTED_LINES = 100


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add the top-level ``ingest`` and ``redactor`` commands."""
    ingest = subparsers.add_parser(
        "ingest",
        help="redact raw requests from a JSONL or CSV file (or stdin) and produce them; prints counts only",
        description=(
            "Each row becomes a request: its text and string attributes are redacted before anything is "
            "produced. A row with a label also produces feedback. Bad rows are reported by line number and "
            "dead-lettered as length and SHA-256 only. Exits 1 when any row was dead-lettered."
        ),
    )
    ingest.add_argument("file", nargs="?", default="-", metavar="FILE", help="input file; - or none reads stdin")
    ingest.add_argument("--format", choices=["jsonl", "csv"], help="input format; default: csv for a .csv file, else jsonl")
    ingest.add_argument("--text-column", help=f"text field; default: the first of {', '.join(TEXT_COLUMNS)} in each row")
    ingest.add_argument("--label-column", help=f"label field, sent as feedback; default: the first of {', '.join(LABEL_COLUMNS)} in each row")
    ingest.add_argument("--id-column", default="request_id", help="request id field; rows without one get a new id (default request_id)")
    ingest.add_argument("--attribute", action="append", default=[], metavar="COLUMN", help="copy this field into the request's attributes; repeatable")
    ingest.add_argument("--batch-size", type=int, default=256, help="requests redacted per batch (default 256)")
    ingest.add_argument("--json", action="store_true", help="print the counts as JSON")
    ingest.set_defaults(handler=run_ingest)

    redactor = subparsers.add_parser(
        "redactor",
        help="redact the raw transit topic into the requests topic; run several to share the partitions",
    )
    redactor.add_argument("--worker-id", help="name shown in the logs; default host-pid-random")
    redactor.set_defaults(handler=run_redactor)


# Ingest.


@dataclass(frozen=True)
class InputRow:
    """One row of the input: its fields, or why it could not be read."""

    line: int
    raw: bytes
    fields: dict[str, Any] | None
    reason: str = ""
    error: str = ""


@dataclass
class IngestReport:
    """Counts of one ingest run; never values."""

    source: str
    rows: int = 0
    blank_lines: int = 0
    bad_rows: Counter[str] = field(default_factory=Counter)
    rejected_feedback: int = 0
    sent: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "rows": self.rows,
            "blank_lines": self.blank_lines,
            "bad_rows": dict(sorted(self.bad_rows.items())),
            "rejected_feedback": self.rejected_feedback,
            **self.sent,
        }


def run_ingest(args: argparse.Namespace) -> int:
    from driftloop.config import load_settings
    from driftloop.redaction.ingress import RedactingProducer

    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {args.batch_size}")
    settings = load_settings(args.config)
    source = "stdin" if args.file == "-" else args.file
    args.format = args.format or ("csv" if source.lower().endswith(".csv") else "jsonl")
    report = IngestReport(source)
    with _open_input(args.file) as stream, RedactingProducer(settings, batch_size=args.batch_size) as producer:
        rows = read_csv(stream) if args.format == "csv" else read_jsonl(stream)
        for row in rows:
            _ingest_row(row, args, producer, report)
    report.sent = producer.counts.to_json()
    _print_report(report, args.json)
    return 1 if report.bad_rows else 0


def _open_input(path: str) -> BinaryIO:
    if path == "-":
        # A wrapper that leaves the process's stdin open when the `with` block closes it.
        return io.BufferedReader(io.FileIO(sys.stdin.buffer.fileno(), "rb", closefd=False))
    try:
        return Path(path).open("rb")
    except FileNotFoundError as exc:
        raise ConfigError(f"input file not found: {path}") from exc


def read_jsonl(stream: BinaryIO) -> Iterator[InputRow]:
    """Yield each line as a row; a blank line yields a row with reason ``blank``."""
    for number, line in enumerate(stream, start=1):
        raw = line.rstrip(b"\r\n")
        if not raw.strip():
            yield InputRow(number, raw, None, "blank")
            continue
        try:
            data = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            yield InputRow(number, raw, None, "not_utf8", f"not valid UTF-8 at byte {exc.start}")
            continue
        except json.JSONDecodeError as exc:
            yield InputRow(number, raw, None, "invalid_json", f"invalid JSON: {exc.msg} at char {exc.pos}")
            continue
        if not isinstance(data, dict):
            yield InputRow(number, raw, None, "wrong_type", f"expected a JSON object, got {type(data).__name__}")
            continue
        yield InputRow(number, raw, data)


def read_csv(stream: BinaryIO) -> Iterator[InputRow]:
    """Yield each CSV record as a row, numbered by the line it ends on; the first line names the columns."""
    text = io.TextIOWrapper(stream, encoding="utf-8", errors="surrogateescape", newline="")
    consumed: list[str] = []

    def lines() -> Iterator[str]:
        for line in text:
            consumed.append(line)
            yield line

    reader = csv.DictReader(lines())
    if reader.fieldnames is None:
        return
    consumed.clear()
    for row in reader:
        raw_text = "".join(consumed).rstrip("\r\n")
        consumed.clear()
        raw = raw_text.encode("utf-8", "surrogateescape")
        if _has_undecodable(raw_text):
            yield InputRow(reader.line_num, raw, None, "not_utf8", "not valid UTF-8")
            continue
        yield InputRow(reader.line_num, raw, {key: value for key, value in row.items() if key is not None})


def _ingest_row(row: InputRow, args: argparse.Namespace, producer, report: IngestReport) -> None:
    if row.reason == "blank":
        report.blank_lines += 1
        return
    report.rows += 1
    if row.fields is None:
        _reject(row, row.reason, row.error, producer, report)
        return

    text_key = args.text_column or next((name for name in TEXT_COLUMNS if name in row.fields), None)
    if text_key is None or text_key not in row.fields:
        expected = repr(text_key) if text_key else f"among {', '.join(TEXT_COLUMNS)}"
        _reject(row, "missing_text", f"no text field {expected}; name it with --text-column", producer, report)
        return
    try:
        request_id = producer.send_request(
            row.fields.get(text_key),
            request_id=_identifier(row.fields.get(args.id_column)),
            attributes=_attributes(row.fields, args),
            event_time_ms=row.fields.get("event_time_ms"),
            origin=f"{report.source}:{row.line}",
        )
    except EventError as exc:
        _reject(row, exc.kind, str(exc), producer, report)
        return

    label_key = args.label_column or next((name for name in LABEL_COLUMNS if name in row.fields), None)
    label = _identifier(row.fields.get(label_key)) if label_key else None
    if label is None:
        return
    try:
        producer.send_feedback(request_id, label, source="ingest")
    except EventError as exc:
        report.rejected_feedback += 1
        _report_line(report, f"{report.source} line {row.line}: feedback not sent: {exc}")


def _attributes(fields: dict[str, Any], args: argparse.Namespace) -> Any:
    """Return the row's attributes: a JSON Lines row's attributes object plus the --attribute fields.

    Anything but an object is returned as it is, for the request's validation to reject.
    """
    attributes = fields.get("attributes", {}) if args.format == "jsonl" else {}
    if not isinstance(attributes, dict):
        return attributes
    attributes = dict(attributes)
    for name in args.attribute:
        if fields.get(name) not in (None, ""):
            attributes[name] = fields[name]
    return attributes


def _reject(row: InputRow, reason: str, error: str, producer, report: IngestReport) -> None:
    producer.dead_letter(row.raw, reason, error, f"{report.source}:{row.line}")
    report.bad_rows[reason] += 1
    _report_line(report, f"{report.source} line {row.line}: {error}; dead-lettered ({reason})")


def _report_line(report: IngestReport, message: str) -> None:
    reported = sum(report.bad_rows.values()) + report.rejected_feedback
    if reported <= MAX_REPORTED_LINES:
        print(message, file=sys.stderr)
    elif reported == MAX_REPORTED_LINES + 1:
        print(f"more than {MAX_REPORTED_LINES} bad rows; the rest are counted only", file=sys.stderr)


def _identifier(value: Any) -> str | None:
    """Return a request id or label as text: numbers become strings, empty values None."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return str(value)
    return value


def _has_undecodable(text: str) -> bool:
    # surrogateescape maps each undecodable byte to a lone surrogate U+DC80..U+DCFF.
    return any("\udc80" <= char <= "\udcff" for char in text)


def _print_report(report: IngestReport, as_json: bool) -> None:
    data = report.to_json()
    if as_json:
        print(json.dumps(data, indent=2, sort_keys=True))
        return
    bad = ", ".join(f"{reason} {count}" for reason, count in data["bad_rows"].items())
    print(
        f"ingested {report.source}: {report.rows} rows, {data['requests']} requests and "
        f"{data['feedback']} feedback sent, {sum(report.bad_rows.values())} rows dead-lettered"
        f"{f' ({bad})' if bad else ''}, {report.blank_lines} blank lines skipped"
    )
    if data["entity_counts"]:
        spans = ", ".join(f"{entity} {count}" for entity, count in data["entity_counts"].items())
        print(f"redacted spans: {spans}")


# Transit redactor.


def run_redactor(args: argparse.Namespace) -> int:
    from driftloop.commands import install_stop_handlers
    from driftloop.config import load_settings, log_summary
    from driftloop.redaction.redactor import Redactor
    from driftloop.workers.redactor import TransitRedactor

    settings = load_settings(args.config)
    log_summary(settings, "transit redactor")
    with Redactor(settings.redaction) as redactor:
        worker = TransitRedactor(settings, redactor, worker_id=args.worker_id)
        install_stop_handlers(worker.stop, settings.shutdown_timeout_s)
        worker.run()
    return 0


if __name__ == "__main__":
    # Runs the whole driftloop CLI with these commands added, for as long as
    # driftloop.cli.COMMAND_MODULES does not list this module.
    from driftloop import cli

    if "driftloop.redaction.ingest_cli" not in cli.COMMAND_MODULES:
        cli.COMMAND_MODULES = (*cli.COMMAND_MODULES, "driftloop.redaction.ingest_cli")
    sys.exit(cli.main())
