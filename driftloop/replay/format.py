"""The recording file format: gzip-compressed JSON Lines, a header line, then one line per record.

Line 1 is the header (:class:`RecordingHeader`). It names the format version, the
schema version of each recorded topic, the source broker, prefix and topics, and the
bounds of the capture. It also stores the pipeline's settings with secrets masked,
the model versions seen in recorded predictions, and the number of records of each
topic. Every further line is one Kafka record (:class:`RecordLine`): the topic's
short name (``requests``, ``feedback`` or ``predictions``), partition, offset,
timestamp, key, headers and the event as a JSON object.

Records are in replay order. Within one topic partition they keep their offset order,
so records with the same key keep their order too. Across partitions they are merged
by timestamp.

Only topics whose text is already redacted can be recorded. ``requests.raw``, the
transit topic for raw text, and the dead-letter topic, whose records may hold raw
payloads, are rejected.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from driftloop.infra.topics import FEEDBACK, PREDICTIONS, REQUESTS, REQUESTS_RAW
from driftloop.replay.errors import ReplayError
from driftloop.schemas.events import Feedback, InferenceRequest, Prediction, encode_event

FORMAT_NAME = "driftloop.recording"
FORMAT_VERSION = 1

RECORDABLE_TOPICS = (REQUESTS, FEEDBACK, PREDICTIONS)
EVENT_MODELS: dict[str, type[InferenceRequest] | type[Feedback] | type[Prediction]] = {
    REQUESTS: InferenceRequest,
    FEEDBACK: Feedback,
    PREDICTIONS: Prediction,
}
# Topics that a replay publishes again. Recorded predictions are not published; the report compares them.
REPLAYED_TOPICS = (REQUESTS, FEEDBACK)

Event = InferenceRequest | Feedback | Prediction


def check_recordable(topic: str) -> str:
    """Return ``topic`` if it may be recorded; raise ReplayError naming the rule otherwise."""
    if topic == REQUESTS_RAW:
        raise ReplayError(
            f"topic {REQUESTS_RAW!r} contains raw, unredacted text and can never be recorded; "
            f"record {REQUESTS!r}, which holds the redacted requests"
        )
    if topic not in RECORDABLE_TOPICS:
        raise ReplayError(f"topic {topic!r} cannot be recorded; choose from {', '.join(RECORDABLE_TOPICS)}")
    return topic


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TopicInfo(_Frozen):
    """A recorded topic: its full name on the source broker and its partition count."""

    name: str
    partitions: int = Field(ge=1)


class SourceInfo(_Frozen):
    """Source of the records: the broker, the topic prefix and the recorded topics."""

    bootstrap: str = Field(description="Bootstrap servers of the source broker; empty for a written recording")
    topic_prefix: str
    topics: dict[str, TopicInfo] = Field(description="Recorded topics by short name, e.g. requests")


class Bounds(_Frozen):
    """The bounds the capture was asked for; None means unbounded."""

    since_ms: int | None = Field(None, description="Earliest record timestamp, ms since the epoch, inclusive")
    until_ms: int | None = Field(None, description="Latest record timestamp, ms since the epoch, inclusive")
    start_offset: int | None = Field(None, ge=0, description="First offset of each partition, inclusive")
    end_offset: int | None = Field(
        None, ge=0, description="Offset of each partition where the capture stops, exclusive"
    )
    count: int | None = Field(None, ge=1, description="Maximum records, all topics together")


class RecordingHeader(_Frozen):
    """Line 1 of a recording."""

    type: Literal["header"] = "header"
    format: Literal["driftloop.recording"] = FORMAT_NAME
    format_version: int = FORMAT_VERSION
    created_at_ms: int = Field(ge=0)
    schema_versions: dict[str, int] = Field(description="Event schema version of each recorded topic")
    source: SourceInfo
    bounds: Bounds = Field(default_factory=Bounds)
    config: dict[str, Any] = Field(default_factory=dict, description="Pipeline settings, secrets masked")
    model_versions: list[int] = Field(default_factory=list, description="Model versions of the recorded predictions")
    champion_version: int | None = Field(None, description="The registry's champion when the recording was made")
    counts: dict[str, int] = Field(description="Records of each recorded topic")
    first_timestamp_ms: int | None = None
    last_timestamp_ms: int | None = None
    skipped_invalid: int = Field(0, ge=0, description="Source records left out because they failed validation")

    @property
    def total(self) -> int:
        """Number of record lines after the header."""
        return sum(self.counts.values())


class RecordLine(_Frozen):
    """One record line as it is stored."""

    type: Literal["record"]
    topic: Literal["requests", "feedback", "predictions"]
    partition: int = Field(ge=0)
    offset: int = Field(ge=0)
    timestamp_ms: int = Field(ge=0)
    key: str | None = None
    key_b64: str | None = Field(None, description="The key, base64, when it is not valid UTF-8")
    headers: list[tuple[str, str | None]] = Field(default_factory=list, description="Header name and base64 value")
    value: dict[str, Any]


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    """One recorded Kafka record with its validated event.

    ``value`` is the event encoded as the pipeline encodes it, ready to publish.
    ``line`` is the record's line in the file it was read from, 0 before it is written.
    """

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    event: Event
    headers: tuple[tuple[str, bytes | None], ...] = ()
    value: bytes = field(default=b"", compare=False)
    line: int = field(default=0, compare=False)

    def __post_init__(self) -> None:
        if not self.value:
            object.__setattr__(self, "value", encode_event(self.event))

    @property
    def request_id(self) -> str:
        return self.event.request_id

    def to_line(self) -> str:
        """Encode the record as one line of JSON, without the newline."""
        data: dict[str, Any] = {
            "type": "record",
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "timestamp_ms": self.timestamp_ms,
        }
        try:
            data["key"] = None if self.key is None else self.key.decode("utf-8")
        except UnicodeDecodeError:
            data["key_b64"] = base64.b64encode(self.key).decode("ascii")
        data["headers"] = [
            [name, None if value is None else base64.b64encode(value).decode("ascii")] for name, value in self.headers
        ]
        data["value"] = self.event.model_dump(mode="json")
        return dumps_line(data)


def dumps_line(data: dict[str, Any]) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))
