"""Count the entities and known values in the texts of stored records, per location and field.

A stored record is split into (field path, text) pairs: the string leaves of a JSON value,
or the whole value. Field names decide what the analyzer may count there. Placeholders,
loopback addresses and the pipeline's own names are masked before analysis.
"""

from __future__ import annotations

import base64
import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Distinct texts per analyzer call.
SCAN_CHUNK_TEXTS = 512
# Distinct texts whose findings are remembered, so that a text stored on several topics
# (requests, predictions, examples) is analysed once. Later texts are analysed each time.
CACHE_MAX_TEXTS = 200_000
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


class TextScanner:
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


def record_texts(key: bytes | None, value: bytes | None) -> Iterator[tuple[str, str]]:
    """Yield the (field, text) pairs of a Kafka record: its key as ``key``, then its value's."""
    if key:
        yield "key", key.decode("utf-8", "replace")
    if value:
        yield from value_texts(value, "")


def value_texts(value: bytes, path: str) -> Iterator[tuple[str, str]]:
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
            yield from value_texts(decoded, f"{path} (decoded)")
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
