"""Scan texts, or all the data a pipeline stores, for PII.

``scan_texts`` counts what a Redactor or a Presidio analyzer finds in a list of texts.
``scan_pipeline``, behind ``driftloop pii scan``, reads every topic under the prefix
from its first offset, the text files of the model store, the logs and any included
files. Its report contains, for each topic or file, the records and texts read, counts
per entity type and field, the line numbers of the known values found there and whether
it was read to the end. It also lists the skipped files and the transit topic's
truncation and retention. A report never contains a matched value.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from driftloop.errors import RedactionError
from driftloop.redaction.spans import DetectedSpan, merge_spans
from driftloop.redaction.text_scanner import ScanLocation, TextScanner, record_texts, value_texts

logger = logging.getLogger(__name__)


def scan_texts(
    redactor_or_analyzer, texts: Sequence[str], known_values: Sequence[str] | None = None
) -> dict[str, Any]:
    """Count detected spans per entity type and, if given, how many known values were found.

    ``redactor_or_analyzer`` is a Redactor (its configured entities) or a Presidio
    AnalyzerEngine (every entity it supports, with its own score threshold). Each
    occurrence of a ``known_values`` item in a text counts as detected when the merged
    spans cover all of its characters, that is, when redaction would remove it whole.
    Missed values are reported by their index in ``known_values``, never by content.
    """
    spans_per_text = _find_spans(redactor_or_analyzer, texts)
    entity_counts: Counter[str] = Counter()
    for spans in spans_per_text:
        entity_counts.update(span.entity_type for span in spans)
    report: dict[str, Any] = {
        "texts": len(texts),
        "chars": sum(len(text) for text in texts),
        "texts_with_pii": sum(1 for spans in spans_per_text if spans),
        "entity_counts": dict(sorted(entity_counts.items())),
    }
    if known_values is not None:
        report["known_values"] = _check_known_values(texts, spans_per_text, known_values)
    return report


def _find_spans(redactor_or_analyzer, texts: Sequence[str]) -> list[list[DetectedSpan]]:
    if hasattr(redactor_or_analyzer, "analyze_batch"):
        return redactor_or_analyzer.analyze_batch(texts)
    if hasattr(redactor_or_analyzer, "analyze"):
        from presidio_analyzer import BatchAnalyzerEngine

        batches = BatchAnalyzerEngine(redactor_or_analyzer).analyze_iterator(list(texts), language="en", batch_size=64)
        return [merge_spans(DetectedSpan(r.entity_type, r.start, r.end, r.score) for r in results) for results in batches]
    raise RedactionError(
        f"scan_texts expects a Redactor or a Presidio AnalyzerEngine, got {type(redactor_or_analyzer).__name__}"
    )


def _check_known_values(
    texts: Sequence[str], spans_per_text: Sequence[Sequence[DetectedSpan]], known_values: Sequence[str]
) -> dict[str, Any]:
    occurrences = detected = 0
    missed_indices = set()
    for index, value in enumerate(known_values):
        if not value:
            raise RedactionError(f"known_values[{index}] is empty; an empty value would match every position")
        for text, spans in zip(texts, spans_per_text, strict=True):
            start = text.find(value)
            while start != -1:
                occurrences += 1
                if _is_covered(start, start + len(value), spans):
                    detected += 1
                else:
                    missed_indices.add(index)
                start = text.find(value, start + 1)
    return {
        "given": len(known_values),
        "occurrences": occurrences,
        "detected": detected,
        "missed": occurrences - detected,
        "missed_value_indices": sorted(missed_indices),
    }


def _is_covered(start: int, end: int, spans: Sequence[DetectedSpan]) -> bool:
    # Merged spans never overlap, so summing the overlaps measures the covered length.
    covered = sum(max(0, min(end, span.end) - max(start, span.start)) for span in spans)
    return covered == end - start


# Pipeline scan.

# Files of a model artifact that hold the tokenizer's vocabulary. Vocabularies contain
# thousands of names and words that the analyzer would report, none from a request.
TOKENIZER_FILES = frozenset(
    {
        "added_tokens.json",
        "merges.txt",
        "special_tokens_map.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.json",
        "vocab.txt",
    }
)
BINARY_PROBE_BYTES = 8192


def read_known_values(path: str | Path) -> list[tuple[int, str]]:
    """Read known values, one per line, as (line number, value); blank lines are skipped."""
    from driftloop.errors import ConfigError

    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as exc:
        raise ConfigError(f"--values file not found: {path}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"--values file {path} is not valid UTF-8 (byte {exc.start})") from exc
    values = [(number, line.strip()) for number, line in enumerate(lines, start=1) if line.strip()]
    if not values:
        raise ConfigError(f"--values file {path} contains no values")
    return values


def scan_pipeline(
    settings,
    *,
    analyzer=None,
    use_analyzer: bool = True,
    known_values: list[tuple[int, str]] | None = None,
    include: Sequence[str | Path] = (),
    topics_timeout_s: float = 120.0,
) -> dict[str, Any]:
    """Scan every topic under the prefix, the model store, the logs and ``include``.

    ``analyzer`` is a Redactor (its configured entities). With ``use_analyzer`` and no
    analyzer, one is built from ``settings.redaction`` and closed afterwards.
    ``known_values`` contains (line number, value) pairs, counted where they occur exactly.
    Returns a JSON-ready report whose ``found`` is true when anything was found.
    """
    from driftloop.redaction.redactor import Redactor

    owned = None
    if analyzer is None and use_analyzer:
        analyzer = owned = Redactor(settings.redaction)
    try:
        scanner = TextScanner(analyzer if use_analyzer else None, known_values, settings)
        locations, transit = _scan_topics(settings, scanner, topics_timeout_s)
        skipped: list[dict[str, str]] = []
        for path, kind in _stored_files(settings, include, skipped):
            locations.append(_scan_file(path, kind, settings, scanner))
    finally:
        if owned is not None:
            owned.close()
    return {
        "bootstrap": settings.bootstrap,
        "topic_prefix": settings.topic_prefix,
        "state_dir": str(Path(settings.state_dir).resolve()),
        "analyzer": (
            {"entities": list(settings.redaction.active_entities), "score_threshold": settings.redaction.score_threshold}
            if use_analyzer
            else None
        ),
        "known_values": len(known_values) if known_values is not None else None,
        "locations": [location.to_json() for location in locations],
        "skipped_files": skipped,
        "transit": transit,
        "found": any(location.found for location in locations),
        "complete": all(location.complete for location in locations),
    }


def _scan_topics(settings, scanner: TextScanner, timeout_s: float) -> tuple[list[ScanLocation], dict[str, Any] | None]:
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    from driftloop.errors import ServiceError
    from driftloop.infra.topics import REQUESTS_RAW

    admin = AdminClient(settings.kafka_client_config())
    try:
        metadata = admin.list_topics(timeout=10)
    except KafkaException as exc:
        raise ServiceError(f"could not list the topics on {settings.bootstrap}: {exc.args[0]}") from exc
    names = sorted(
        name
        for name in metadata.topics
        if name.startswith(settings.topic_prefix) and not (name.startswith("__") and not settings.topic_prefix)
    )
    partitions = {name: sorted(metadata.topics[name].partitions) for name in names}
    locations = {name: ScanLocation("topic", name) for name in names}
    texts = _read_topics(settings, locations, partitions, timeout_s)
    for name in names:
        scanner.scan(locations[name], texts[name])

    transit_name = settings.topic(REQUESTS_RAW)
    transit = _transit_status(settings, admin, locations[transit_name]) if transit_name in locations else None
    return list(locations.values()), transit


def _read_topics(
    settings, locations: dict[str, ScanLocation], partitions: dict[str, list[int]], timeout_s: float
) -> dict[str, Counter[tuple[str, str]]]:
    """Read every partition from its first offset to its end; return the texts of each topic's records.

    The end is the end-of-partition event of the fetch, not the high watermark from
    ListOffsets: Tansu 0.6.0 reported 1,001 there for a partition with 1,500 records.

    NOTE: the distinct texts of all topics are held in memory until they are analysed,
    so a scan of a large pipeline needs memory in proportion to its distinct texts.
    """
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    consumer = Consumer(
        settings.kafka_client_config(
            **{
                "group.id": f"{settings.topic_prefix}pii-scan-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "fetch.wait.max.ms": 10,
            }
        )
    )
    texts: dict[str, Counter[tuple[str, str]]] = {name: Counter() for name in locations}
    unfinished = {(name, partition) for name, numbers in partitions.items() for partition in numbers}
    deadline = time.monotonic() + timeout_s
    try:
        if unfinished:
            consumer.assign([TopicPartition(name, partition, OFFSET_BEGINNING) for name, partition in sorted(unfinished)])
        while unfinished and time.monotonic() < deadline:
            for message in consumer.consume(1000, timeout=0.5):
                error = message.error()
                if error is None:
                    locations[message.topic()].records += 1
                    texts[message.topic()].update(record_texts(message.key(), message.value()))
                elif error.code() == KafkaError._PARTITION_EOF:
                    unfinished.discard((message.topic(), message.partition()))
                else:
                    logger.warning("pii scan: error reading %s[%s]: %s", message.topic(), message.partition(), error)
    finally:
        consumer.close()
    for name in sorted({name for name, _ in unfinished}):
        locations[name].complete = False
        locations[name].note = f"not all partitions were read to their end within {timeout_s:.0f} s"
    return texts


def _transit_status(settings, admin, location: ScanLocation) -> dict[str, Any]:
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import ConfigResource

    from driftloop.workers.redactor import probe_truncation

    truncation = probe_truncation(settings, admin, location.name)
    retention_ms = None
    try:
        futures = admin.describe_configs([ConfigResource("topic", location.name)], request_timeout=10)
        for future in futures.values():
            entry = future.result(timeout=10).get("retention.ms")
            retention_ms = entry.value if entry is not None else None
    except (KafkaException, TimeoutError) as exc:
        logger.warning("pii scan: could not read retention.ms of %s: %s", location.name, exc)
    return {
        "topic": location.name,
        "records": location.records,
        "truncation_supported": truncation.supported,
        "truncation_error": truncation.reason,
        "retention_ms": retention_ms,
        # The embedded Tansu broker (memory storage) ignores retention.ms.
        "retention_enforced": False if settings.embedded else None,
    }


def _stored_files(settings, include: Sequence[str | Path], skipped: list[dict[str, str]]) -> list[tuple[Path, str]]:
    """Return the files to scan with their kind: the model store, the logs, then ``include``."""
    state_dir = Path(settings.state_dir).resolve()
    chosen: dict[Path, str] = {}
    models = state_dir / "models"
    if models.is_dir():
        for path in sorted(models.rglob("*")):
            if path.is_file():
                if path.name in TOKENIZER_FILES:
                    skipped.append({"path": _display(path, state_dir), "reason": "tokenizer vocabulary"})
                else:
                    chosen.setdefault(path, "model store")
    if state_dir.is_dir():
        for path in sorted(state_dir.rglob("*.log")):
            if path.is_file():
                chosen.setdefault(path, "log")
    for entry in include:
        root = Path(entry).resolve()
        if not root.exists():
            from driftloop.errors import ConfigError

            raise ConfigError(f"--include path not found: {entry}")
        for path in [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()):
            chosen.setdefault(path, "included")
    files = []
    for path, kind in chosen.items():
        if _is_binary(path):
            skipped.append({"path": _display(path, state_dir), "reason": "binary"})
        else:
            files.append((path, kind))
    return files


def _scan_file(path: Path, kind: str, settings, scanner: TextScanner) -> ScanLocation:
    state_dir = Path(settings.state_dir).resolve()
    location = ScanLocation("file", _display(path, state_dir), note=kind)
    texts: Counter[tuple[str, str]] = Counter()
    try:
        if path.suffix == ".json":
            content = path.read_bytes()
            location.records = content.count(b"\n") + 1
            texts.update(value_texts(content, ""))
        else:
            with path.open("rb") as handle:
                for line in handle:
                    location.records += 1
                    line = line.rstrip(b"\r\n")
                    if path.suffix in (".jsonl", ".ndjson"):
                        texts.update(value_texts(line, ""))
                    elif line.strip():
                        texts["line", line.decode("utf-8", "replace")] += 1
    except OSError as exc:
        location.complete = False
        location.note = f"{kind}; could not be read: {exc.strerror}"
    scanner.scan(location, texts, program_output=True)
    return location


def _is_binary(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return b"\x00" in handle.read(BINARY_PROBE_BYTES)
    except OSError:
        return False


def _display(path: Path, state_dir: Path) -> str:
    try:
        return str(path.relative_to(state_dir))
    except ValueError:
        return str(path)


def render_scan(report: dict[str, Any]) -> str:
    """Render a scan report as a table with a result line; values never appear in it."""
    lines = [
        f"PII scan of topics under {report['topic_prefix']!r} on {report['bootstrap']}, "
        f"and of the model store and logs in {report['state_dir']}",
    ]
    if report["analyzer"] is not None:
        entities = ", ".join(report["analyzer"]["entities"])
        lines.append(f"analyzer: {entities} (score threshold {report['analyzer']['score_threshold']})")
    if report["known_values"] is not None:
        lines.append(f"known values: {report['known_values']}")

    locations = report["locations"]
    width = max([len("location")] + [len(f"{location['kind']} {location['name']}") for location in locations])
    lines.append("")
    lines.append(f"{'location':<{width}}  {'records':>8}  {'texts':>8}  found")
    for location in locations:
        name = f"{location['kind']} {location['name']}"
        lines.append(f"{name:<{width}}  {location['records']:>8}  {location['texts']:>8}  {_describe_findings(location)}")

    if report["transit"] is not None:
        lines.append("")
        lines.append(_describe_transit(report["transit"]))
    if report["skipped_files"]:
        skipped = ", ".join(f"{item['path']} ({item['reason']})" for item in report["skipped_files"])
        lines.append(f"skipped: {skipped}")

    found = sum(1 for location in locations if location["known_value_matches"] or location["entity_counts"])
    lines.append("")
    if not report["complete"]:
        lines.append("WARNING: some locations were not read completely; see their notes in --json")
    if found:
        lines.append(f"result: PII found in {found} of {len(locations)} locations")
    else:
        lines.append(f"result: no PII found in {len(locations)} locations")
    return "\n".join(lines)


def _describe_findings(location: dict[str, Any]) -> str:
    parts = [f"{entity} {count}" for entity, count in location["entity_counts"].items()]
    if location["known_value_matches"]:
        value_lines = location["known_value_lines"]
        listed = ", ".join(str(line) for line in value_lines[:10])
        more = f" and {len(value_lines) - 10} more" if len(value_lines) > 10 else ""
        parts.append(f"known values {location['known_value_matches']} (lines {listed}{more})")
    if not location["complete"]:
        parts.append(f"INCOMPLETE: {location['note']}")
    return ", ".join(parts) or "-"


def _describe_transit(transit: dict[str, Any]) -> str:
    if transit["truncation_supported"]:
        return (
            f"transit topic {transit['topic']}: {transit['records']} raw records stored; "
            f"the redactor truncates it after each commit"
        )
    retention = f"retention.ms {transit['retention_ms']}" if transit["retention_ms"] is not None else "retention unknown"
    if transit["retention_enforced"] is False:
        retention += ", not enforced by the embedded broker"
    return (
        f"WARNING: transit topic {transit['topic']} holds {transit['records']} raw records and cannot be "
        f"truncated ({transit['truncation_error']}); {retention}"
    )
