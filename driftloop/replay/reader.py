"""Reading and validating a whole recording before anything of it is published.

:func:`read_recording` reads every line, validates it and checks it against the
header. The first problem raises :class:`RecordingError` with its line number, so a
replay either has a valid recording or publishes nothing.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from driftloop.infra.topics import FEEDBACK, PREDICTIONS, REQUESTS
from driftloop.replay.errors import RecordingError
from driftloop.replay.format import (
    EVENT_MODELS,
    FORMAT_NAME,
    FORMAT_VERSION,
    RecordedEvent,
    RecordingHeader,
    RecordLine,
)
from driftloop.schemas.events import SCHEMA_VERSION

GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class Recording:
    """A validated recording: its header and its records in replay order."""

    path: Path
    header: RecordingHeader
    events: tuple[RecordedEvent, ...]

    def of_topic(self, topic: str) -> list[RecordedEvent]:
        return [record for record in self.events if record.topic == topic]

    @cached_property
    def requests(self) -> list[RecordedEvent]:
        return self.of_topic(REQUESTS)

    @cached_property
    def feedback(self) -> list[RecordedEvent]:
        return self.of_topic(FEEDBACK)

    @cached_property
    def predictions(self) -> list[RecordedEvent]:
        return self.of_topic(PREDICTIONS)


def read_recording(path: str | Path) -> Recording:
    """Read and validate a recording file; raise RecordingError at its first problem."""
    path = Path(path)
    _check_gzip(path)
    header: RecordingHeader | None = None
    events: list[RecordedEvent] = []
    last_offsets: dict[tuple[str, int], tuple[int, int]] = {}
    for number, text in _lines(path):
        if number == 1:
            header = _parse_header(path, text)
            continue
        assert header is not None
        record = _parse_record(path, number, text, header)
        _check_offset_order(path, record, last_offsets)
        events.append(record)
    if header is None:
        raise RecordingError(path, "the file is empty; expected a header line", line=1)
    _check_against_header(path, header, events)
    return Recording(path, header, tuple(events))


# Lines.


def _check_gzip(path: Path) -> None:
    try:
        with path.open("rb") as handle:
            magic = handle.read(2)
    except FileNotFoundError as exc:
        raise RecordingError(path, "recording file not found") from exc
    except OSError as exc:
        raise RecordingError(path, f"recording file could not be read: {exc}") from exc
    if magic != GZIP_MAGIC:
        raise RecordingError(path, "not a gzip file; `driftloop record` writes gzip-compressed JSON Lines", line=1)


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield (line number, text) of each line; raise RecordingError where the file is cut or corrupt."""
    number = 0
    try:
        with gzip.open(path, "rb") as handle:
            for raw in handle:
                number += 1
                if not raw.endswith(b"\n"):
                    raise RecordingError(
                        path, "the line has no newline at its end, so the file is truncated", line=number
                    )
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise RecordingError(path, f"invalid UTF-8 at byte {exc.start} of the line", line=number) from exc
                if not text.strip():
                    raise RecordingError(
                        path, "the line is empty; every line must be the header or a record", line=number
                    )
                yield number, text
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise RecordingError(
            path, f"the file is truncated or corrupt after {number} complete lines ({exc})", line=number + 1
        ) from exc


def _load_object(path: Path, number: int, text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RecordingError(path, f"not valid JSON: {exc.msg} at column {exc.colno}", line=number) from exc
    if not isinstance(data, dict):
        raise RecordingError(path, f"expected a JSON object, got {type(data).__name__}", line=number)
    return data


def _describe(exc: ValidationError) -> str:
    # Input values are left out, because they may hold request text.
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or '(line)'}: {error['msg']}" for error in exc.errors()
    )


# The header.


def _parse_header(path: Path, text: str) -> RecordingHeader:
    data = _load_object(path, 1, text)
    if data.get("type") != "header":
        raise RecordingError(
            path, f'line 1 must be the header, with "type": "header"; got type {data.get("type")!r}', line=1
        )
    if data.get("format") != FORMAT_NAME:
        raise RecordingError(path, f"format is {data.get('format')!r}, expected {FORMAT_NAME!r}", line=1)
    if data.get("format_version") != FORMAT_VERSION:
        raise RecordingError(
            path,
            f"unsupported format_version {data.get('format_version')!r}; this driftloop reads version {FORMAT_VERSION}",
            line=1,
        )
    schema_versions = data.get("schema_versions")
    if isinstance(schema_versions, dict):
        for topic, version in sorted(schema_versions.items()):
            if version != SCHEMA_VERSION:
                raise RecordingError(
                    path,
                    f"unknown schema version {version!r} for topic {topic!r}; "
                    f"this driftloop reads schema version {SCHEMA_VERSION}",
                    line=1,
                )
    try:
        header = RecordingHeader.model_validate(data)
    except ValidationError as exc:
        raise RecordingError(path, f"invalid header: {_describe(exc)}", line=1) from exc
    if set(header.schema_versions) != set(header.source.topics) or set(header.counts) != set(header.source.topics):
        raise RecordingError(
            path,
            f"header names topics {sorted(header.source.topics)} in source, {sorted(header.schema_versions)} in "
            f"schema_versions and {sorted(header.counts)} in counts; all three must match",
            line=1,
        )
    return header


# Records.


def _parse_record(path: Path, number: int, text: str, header: RecordingHeader) -> RecordedEvent:
    data = _load_object(path, number, text)
    if data.get("type") == "header":
        raise RecordingError(path, "a second header; only line 1 may be a header", line=number)
    try:
        line = RecordLine.model_validate(data)
    except ValidationError as exc:
        raise RecordingError(path, f"invalid record: {_describe(exc)}", line=number) from exc
    if line.topic not in header.source.topics:
        raise RecordingError(
            path,
            f"record of topic {line.topic!r}, which the header does not list (it lists {sorted(header.source.topics)})",
            line=number,
        )
    version = line.value.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise RecordingError(
            path,
            f"unknown schema version {version!r} in the {line.topic} event; this driftloop reads schema version {SCHEMA_VERSION}",
            line=number,
        )
    model = EVENT_MODELS[line.topic]
    try:
        event = model.model_validate(line.value)
    except ValidationError as exc:
        raise RecordingError(path, f"invalid {model.__name__} event: {_describe(exc)}", line=number) from exc
    return RecordedEvent(
        topic=line.topic,
        partition=line.partition,
        offset=line.offset,
        timestamp_ms=line.timestamp_ms,
        key=_key(path, number, line),
        event=event,
        headers=tuple((name, _b64(path, number, value, f"header {name!r}")) for name, value in line.headers),
        line=number,
    )


def _key(path: Path, number: int, line: RecordLine) -> bytes | None:
    if line.key is not None and line.key_b64 is not None:
        raise RecordingError(path, "a record has either key or key_b64, not both", line=number)
    if line.key_b64 is not None:
        return _b64(path, number, line.key_b64, "key_b64")
    return None if line.key is None else line.key.encode("utf-8")


def _b64(path: Path, number: int, value: str | None, field_name: str) -> bytes | None:
    if value is None:
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RecordingError(path, f"{field_name} is not valid base64: {exc}", line=number) from exc


def _check_offset_order(path: Path, record: RecordedEvent, last: dict[tuple[str, int], tuple[int, int]]) -> None:
    coordinates = (record.topic, record.partition)
    previous = last.get(coordinates)
    if previous is not None and record.offset <= previous[0]:
        raise RecordingError(
            path,
            f"offset {record.offset} of {record.topic}[{record.partition}] is not after offset {previous[0]} "
            f"on line {previous[1]}; records of a partition must keep their offset order",
            line=record.line,
        )
    last[coordinates] = (record.offset, record.line)


# The whole file against its header.


def _check_against_header(path: Path, header: RecordingHeader, events: list[RecordedEvent]) -> None:
    counts = {topic: 0 for topic in header.counts}
    for record in events:
        counts[record.topic] += 1
    if counts != header.counts:
        differences = ", ".join(
            f"{topic}: header {header.counts[topic]}, file {counts[topic]}"
            for topic in sorted(counts)
            if counts[topic] != header.counts[topic]
        )
        raise RecordingError(
            path,
            f"the header's counts do not match the {len(events)} record lines ({differences}); "
            "the file may be truncated or edited",
            line=1,
        )
    versions = sorted({record.event.model_version for record in events if record.topic == PREDICTIONS})
    if versions != sorted(header.model_versions):
        raise RecordingError(
            path,
            f"the header lists model versions {sorted(header.model_versions)}, the recorded predictions have {versions}",
            line=1,
        )
    for record in events:
        outside_first = header.first_timestamp_ms is not None and record.timestamp_ms < header.first_timestamp_ms
        outside_last = header.last_timestamp_ms is not None and record.timestamp_ms > header.last_timestamp_ms
        if outside_first or outside_last:
            raise RecordingError(
                path,
                f"timestamp {record.timestamp_ms} is outside the header's range "
                f"{header.first_timestamp_ms}..{header.last_timestamp_ms}",
                line=record.line,
            )
    for record in events:
        partitions = header.source.topics[record.topic].partitions
        if record.partition >= partitions:
            raise RecordingError(
                path,
                f"partition {record.partition} of {record.topic}, but the header says the topic has {partitions}",
                line=record.line,
            )
