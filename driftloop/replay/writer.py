"""Writing recordings, from the broker or from events built in code."""

from __future__ import annotations

import gzip
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from driftloop.replay.errors import ReplayError
from driftloop.replay.format import (
    EVENT_MODELS,
    Bounds,
    Event,
    RecordedEvent,
    RecordingHeader,
    SourceInfo,
    TopicInfo,
    check_recordable,
    dumps_line,
)
from driftloop.schemas.events import SCHEMA_VERSION, Prediction


class RecordingWriter:
    """Writes one recording file.

    The header comes first but contains the counts of the records after it, so records
    are compressed into a temporary file beside ``path`` and the file is assembled by
    :meth:`finish`: a gzip member with the header line, then the records' member.
    Readers of gzip treat the two members as one stream. The file appears under
    ``path`` only once it is complete.

    Use it as a context manager, so that a failure removes the temporary file::

        with RecordingWriter(path) as writer:
            writer.add_event("requests", request, timestamp_ms=1_700_000_000_000)
            writer.finish(SourceInfo(...))
    """

    def __init__(self, path: str | Path, *, overwrite: bool = False) -> None:
        self.path = Path(path)
        if self.path.exists() and not overwrite:
            raise ReplayError(f"{self.path} already exists; choose another --out or pass --force to replace it")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle, body_name = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".body", dir=self.path.parent)
        os.close(handle)
        self._body_path = Path(body_name)
        self._body = gzip.open(self._body_path, "wt", encoding="utf-8", newline="\n")
        self._counts: dict[str, int] = {}
        self._partitions: dict[str, int] = {}
        self._next_offsets: dict[tuple[str, int], int] = {}
        self._model_versions: set[int] = set()
        self._first_ms: int | None = None
        self._last_ms: int | None = None
        self._finished = False

    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if not self._finished:
            self.abort()

    @property
    def count(self) -> int:
        """Records added so far."""
        return sum(self._counts.values())

    def add(self, record: RecordedEvent) -> None:
        """Append one record; records must be added in replay order."""
        check_recordable(record.topic)
        self._body.write(record.to_line())
        self._body.write("\n")
        self._counts[record.topic] = self._counts.get(record.topic, 0) + 1
        self._partitions[record.topic] = max(self._partitions.get(record.topic, 0), record.partition + 1)
        self._next_offsets[(record.topic, record.partition)] = record.offset + 1
        if isinstance(record.event, Prediction):
            self._model_versions.add(record.event.model_version)
        self._first_ms = record.timestamp_ms if self._first_ms is None else min(self._first_ms, record.timestamp_ms)
        self._last_ms = record.timestamp_ms if self._last_ms is None else max(self._last_ms, record.timestamp_ms)

    def add_event(
        self,
        topic: str,
        event: Event,
        *,
        timestamp_ms: int,
        partition: int = 0,
        offset: int | None = None,
        key: bytes | None = None,
        headers: tuple[tuple[str, bytes | None], ...] = (),
    ) -> RecordedEvent:
        """Append an event built in code; offset defaults to the partition's next one, key to the request id."""
        model = EVENT_MODELS.get(check_recordable(topic))
        if not isinstance(event, model):
            raise ReplayError(
                f"a {type(event).__name__} cannot be recorded on topic {topic!r}, which carries {model.__name__}"
            )
        if offset is None:
            offset = self._next_offsets.get((topic, partition), 0)
        record = RecordedEvent(
            topic=topic,
            partition=partition,
            offset=offset,
            timestamp_ms=timestamp_ms,
            key=event.request_id.encode("utf-8") if key is None else key,
            event=event,
            headers=headers,
        )
        self.add(record)
        return record

    def finish(
        self,
        source: SourceInfo | None = None,
        *,
        bounds: Bounds | None = None,
        config: Mapping[str, Any] | None = None,
        champion_version: int | None = None,
        skipped_invalid: int = 0,
    ) -> RecordingHeader:
        """Write the header and the records to ``path`` and return the header.

        ``source`` defaults to a written recording of the topics that were added, with
        an empty bootstrap and prefix.
        """
        source = source or SourceInfo(
            bootstrap="",
            topic_prefix="",
            topics={topic: TopicInfo(name=topic, partitions=count) for topic, count in self._partitions.items()},
        )
        unknown = sorted(set(self._counts) - set(source.topics))
        if unknown:
            raise ReplayError(
                f"records of topics {unknown} were added, but the source names only {sorted(source.topics)}"
            )
        header = RecordingHeader(
            created_at_ms=int(time.time() * 1000),
            schema_versions={topic: SCHEMA_VERSION for topic in source.topics},
            source=source,
            bounds=bounds or Bounds(),
            config=dict(config or {}),
            model_versions=sorted(self._model_versions),
            champion_version=champion_version,
            counts={topic: self._counts.get(topic, 0) for topic in source.topics},
            first_timestamp_ms=self._first_ms,
            last_timestamp_ms=self._last_ms,
            skipped_invalid=skipped_invalid,
        )
        self._body.close()
        partial = self.path.with_name(f".{self.path.name}.partial")
        try:
            with partial.open("wb") as output:
                with gzip.GzipFile(fileobj=output, mode="wb") as header_member:
                    header_member.write(dumps_line(header.model_dump(mode="json")).encode("utf-8") + b"\n")
                with self._body_path.open("rb") as body:
                    shutil.copyfileobj(body, output)
            partial.replace(self.path)
        finally:
            partial.unlink(missing_ok=True)
            self._body_path.unlink(missing_ok=True)
        self._finished = True
        return header

    def abort(self) -> None:
        """Drop the records written so far; ``path`` is left untouched."""
        self._body.close()
        self._body_path.unlink(missing_ok=True)
        self._finished = True
