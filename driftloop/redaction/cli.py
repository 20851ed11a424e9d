"""The ``driftloop pii`` subcommands contributed by the redaction package.

``pii evaluate`` scores the stage on labelled data. ``pii scan`` reports the PII that
the configured analyzer still finds in a pipeline's stored data: every topic under the
prefix, the model store and the logs. Its report contains counts, entity types,
locations and line numbers of known values, never a value.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import re
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from driftloop.argtypes import positive_int

logger = logging.getLogger(__name__)


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


# Pipeline scan.

# Distinct texts per analyzer call.
SCAN_CHUNK_TEXTS = 512
# Distinct texts whose findings are remembered, so that a text stored on several topics
# (requests, predictions, examples) is analysed once. Later texts are analysed each time.
CACHE_MAX_TEXTS = 200_000
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
# Fields that driftloop fills with record coordinates, worker names and hashes. The
# analyzer is not run on them: Presidio's URL recognizer reports "p.pr" in the record
# coordinates "p.predictions[0]@5" (".pr" is a country-code domain). Known values are
# still counted in them.
GENERATED_FIELDS = frozenset({"reason", "sha256", "source", "source_offset", "stage", "worker_id"})
# Fields that hold identifiers, labels and program messages rather than prose. spaCy tags
# short tokens such as "t4" as PERSON, so in these fields only the entity types of the
# pattern recognizers count. A Kafka key and a JSON object key are identifiers too.
IDENTIFIER_FIELDS = frozenset({"<key>", "error", "key", "label", "predicted_label", "request_id"})
# Addresses that cannot identify a person, masked like placeholders before analysis.
LOOPBACK_PATTERN = r"\b127(?:\.\d{1,3}){3}\b|\blocalhost\b|\b0\.0\.0\.0\b"


def _known_field_names() -> frozenset[str]:
    """Return the field names of driftloop's events and model cards, kept in reported field paths."""
    import dataclasses

    from driftloop.registry.records import ChampionChange, ModelVersion
    from driftloop.schemas.events import DeadLetter, Example, Feedback, InferenceRequest, Prediction

    names: set[str] = set()
    for model in (InferenceRequest, Prediction, Feedback, Example, DeadLetter):
        names.update(model.model_fields)
    for record in (ModelVersion, ChampionChange):
        names.update(item.name for item in dataclasses.fields(record))
    return frozenset(names)


@dataclass
class ScanLocation:
    """Findings in one topic or file: counts per entity type and field, never values."""

    kind: str
    name: str
    records: int = 0
    texts: int = 0
    entity_counts: Counter[str] = field(default_factory=Counter)
    field_counts: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    known_values: Counter[int] = field(default_factory=Counter)
    complete: bool = True
    note: str = ""

    @property
    def found(self) -> bool:
        return bool(self.entity_counts) or bool(self.known_values)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "records": self.records,
            "texts": self.texts,
            "entity_counts": dict(sorted(self.entity_counts.items())),
            "fields": {name: dict(sorted(counts.items())) for name, counts in sorted(self.field_counts.items()) if counts},
            "known_value_matches": sum(self.known_values.values()),
            "known_value_lines": sorted(self.known_values),
            "complete": self.complete,
            "note": self.note,
        }


class _TextScanner:
    """Counter of the entities and known values in the texts of one location at a time."""

    def __init__(self, analyzer, known_values: list[tuple[int, str]] | None, settings) -> None:
        from driftloop.redaction.settings import NER_ENTITIES, SUPPORTED_ENTITIES

        self.analyzer = analyzer
        self.ner_entities = frozenset(NER_ENTITIES)
        self.known_values = known_values or []
        entity_names = set(SUPPORTED_ENTITIES) | set(settings.redaction.active_entities)
        names = "|".join(sorted(entity_names, key=len, reverse=True))
        masked = [
            # A placeholder, or one cut short at the end of a text, as the predictions'
            # texts are cut to the model's length.
            rf"<(?:{names})>|<[A-Z][A-Z0-9_]*$",
            LOOPBACK_PATTERN,
            # The pipeline's own names: topics and consumer groups under the prefix, the
            # broker and Redis addresses, the state folder.
            *(re.escape(server.strip()) for server in settings.bootstrap.split(",") if server.strip()),
            re.escape(settings.redis),
            re.escape(str(Path(settings.state_dir).resolve())),
            # driftloop's module and logger names, which Presidio reads as URLs ("driftloop.co").
            r"\bdriftloop(?:\.\w+)+",
        ]
        if settings.topic_prefix:
            masked.append(rf"{re.escape(settings.topic_prefix)}[\w.\-]*(?:\[\d+\](?:@\d+)?)?")
        self.mask_pattern = re.compile("|".join(f"(?:{pattern})" for pattern in masked))
        self._cache: dict[str, tuple[tuple[str, int], ...]] = {}

    def scan(self, location: ScanLocation, texts: Counter[tuple[str, str]], *, program_output: bool = False) -> None:
        """Add the findings in ``texts``, a count of occurrences per (field, text), to ``location``.

        With ``program_output``, as for logs and model cards, only the pattern entities
        count in every field but ``text``: spaCy tags words of program output such as
        "bert", "GB" or "PHONE_NUMBER" as PERSON or LOCATION.
        """
        distinct = list(dict.fromkeys(text for _, text in texts))
        analysed = list(dict.fromkeys(text for field_name, text in texts if _field_kind(field_name) != "generated"))
        findings = self._find_entities(analysed) if self.analyzer is not None else {}
        matches = {text: self._count_known_values(text) for text in distinct} if self.known_values else {}
        for (field_name, text), occurrences in texts.items():
            location.texts += occurrences
            kind = _field_kind(field_name)
            if program_output and kind == "text" and field_name.rpartition(".")[2] != "text":
                kind = "identifier"
            for entity, count in findings.get(text, ()) if kind != "generated" else ():
                if kind == "identifier" and entity in self.ner_entities:
                    continue
                location.entity_counts[entity] += count * occurrences
                location.field_counts[field_name][entity] += count * occurrences
            for line, count in matches.get(text, ()):
                location.known_values[line] += count * occurrences

    def _find_entities(self, texts: list[str]) -> dict[str, tuple[tuple[str, int], ...]]:
        found = {text: self._cache[text] for text in texts if text in self._cache}
        pending = []
        for text in texts:
            if text in found:
                continue
            masked = self.mask_pattern.sub(lambda match: " " * len(match.group()), text)
            if masked.strip():
                pending.append((text, masked))
            else:
                found[text] = ()
        for start in range(0, len(pending), SCAN_CHUNK_TEXTS):
            chunk = pending[start : start + SCAN_CHUNK_TEXTS]
            spans_per_text = self.analyzer.analyze_batch([masked for _, masked in chunk])
            for (text, _), spans in zip(chunk, spans_per_text, strict=True):
                found[text] = tuple(sorted(Counter(span.entity_type for span in spans).items()))
                if len(self._cache) < CACHE_MAX_TEXTS:
                    self._cache[text] = found[text]
        return found

    def _count_known_values(self, text: str) -> list[tuple[int, int]]:
        counts = []
        for line, value in self.known_values:
            count = text.count(value)
            if count:
                counts.append((line, count))
        return counts


def _field_kind(field_name: str) -> str:
    """Return "generated", "identifier" or "text" for a field path such as ``attributes.*``."""
    last = field_name.rpartition(".")[2]
    if last in GENERATED_FIELDS:
        return "generated"
    if last in IDENTIFIER_FIELDS:
        return "identifier"
    return "text"


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
        scanner = _TextScanner(analyzer if use_analyzer else None, known_values, settings)
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


def _scan_topics(settings, scanner: _TextScanner, timeout_s: float) -> tuple[list[ScanLocation], dict[str, Any] | None]:
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
                    texts[message.topic()].update(_record_texts(message.key(), message.value()))
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


def _record_texts(key: bytes | None, value: bytes | None) -> Iterator[tuple[str, str]]:
    if key:
        yield "key", key.decode("utf-8", "replace")
    if value:
        yield from _value_texts(value, "")


def _value_texts(value: bytes, path: str) -> Iterator[tuple[str, str]]:
    """Yield (field, text) pairs: the string leaves of a JSON value, else the whole value."""
    text = value.decode("utf-8", "replace")
    try:
        data = json.loads(text)
    except ValueError:
        yield path or "value", text
        return
    yield from _json_texts(data, path, "")


def _json_texts(data: Any, path: str, name: str) -> Iterator[tuple[str, str]]:
    known = _KNOWN_FIELDS
    if isinstance(data, str):
        if name in ("value_b64", "key_b64"):
            # A dead letter's payload: scan what it decodes to.
            try:
                decoded = base64.b64decode(data, validate=True)
            except ValueError:
                yield path, data
                return
            yield from _value_texts(decoded, f"{path} (decoded)")
            return
        yield path or "value", data
    elif isinstance(data, bool) or data is None or isinstance(data, float):
        return
    elif isinstance(data, int):
        # A card or phone number can arrive as a JSON number in a request's attributes.
        # Other numbers are counts, offsets and times, which Presidio can read as phone numbers.
        if "attributes" in path.split("."):
            yield path, str(data)
    elif isinstance(data, dict):
        prefix = f"{path}." if path else ""
        for key, item in data.items():
            if key not in known:
                yield f"{prefix}<key>", key
            yield from _json_texts(item, prefix + (key if key in known else "*"), key)
    elif isinstance(data, list):
        for item in data:
            yield from _json_texts(item, f"{path}[]", name)


_KNOWN_FIELDS = _known_field_names()


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


def _scan_file(path: Path, kind: str, settings, scanner: _TextScanner) -> ScanLocation:
    state_dir = Path(settings.state_dir).resolve()
    location = ScanLocation("file", _display(path, state_dir), note=kind)
    texts: Counter[tuple[str, str]] = Counter()
    try:
        if path.suffix == ".json":
            content = path.read_bytes()
            location.records = content.count(b"\n") + 1
            texts.update(_value_texts(content, ""))
        else:
            with path.open("rb") as handle:
                for line in handle:
                    location.records += 1
                    line = line.rstrip(b"\r\n")
                    if path.suffix in (".jsonl", ".ndjson"):
                        texts.update(_value_texts(line, ""))
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
