"""Typed events carried on driftloop's topics.

Times are integer milliseconds since the Unix epoch, like Kafka record timestamps.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator

from driftloop.errors import EventError

SCHEMA_VERSION = 1

RequestId = Annotated[str, StringConstraints(min_length=1, max_length=256)]
AttributeValue = str | int | float | bool
Label = Annotated[str, StringConstraints(min_length=1, max_length=256)]


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int = Field(SCHEMA_VERSION, description="Version of this event's schema")

    @field_validator("schema_version")
    @classmethod
    def _known_version(cls, value: int) -> int:
        if value != SCHEMA_VERSION:
            raise ValueError(f"unsupported schema_version {value}; this driftloop reads {SCHEMA_VERSION}")
        return value


class InferenceRequest(_Event):
    """A text to classify. On the requests topic its text is already redacted."""

    request_id: RequestId
    event_time_ms: int = Field(ge=0, description="When the request happened, ms since the epoch")
    text: str = Field(description="Text to classify; must contain a non-space character")
    attributes: dict[str, AttributeValue] = Field(
        default_factory=dict, description="Request attributes, e.g. segment, used for per-group metrics"
    )

    @field_validator("text")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("text is empty or only whitespace")
        return value


class Prediction(_Event):
    """The label a model version predicted for one request."""

    request_id: RequestId
    model_version: int = Field(ge=0)
    label: Label
    confidence: float = Field(ge=0.0, le=1.0)
    scores: dict[str, float] = Field(description="Probabilities of the top labels")
    latency_ms: float = Field(ge=0.0, description="From the request's event time to the prediction")
    inference_ms: float = Field(ge=0.0, description="Time of the batch's forward pass")
    worker_id: str
    event_time_ms: int = Field(ge=0, description="The request's event time")
    predicted_at_ms: int = Field(ge=0)
    # The redacted text and attributes travel with the prediction, so the feedback
    # join can emit training examples without a three-way join with requests.
    text: str = ""
    attributes: dict[str, AttributeValue] = Field(default_factory=dict)


class Feedback(_Event):
    """The true label of a request, arriving late or never."""

    request_id: RequestId
    label: Label
    source: str = Field("user", max_length=256)
    event_time_ms: int = Field(ge=0)


class Example(_Event):
    """A joined prediction and feedback: a labelled training example."""

    request_id: RequestId
    text: str
    label: Label
    predicted_label: Label
    confidence: float
    model_version: int
    attributes: dict[str, AttributeValue] = Field(default_factory=dict)
    event_time_ms: int
    source_offset: str = Field("", description="predictions topic[partition]@offset of the prediction")


class DeadLetter(_Event):
    """An event a stage could not process, with its reason and where it came from."""

    stage: str
    reason: str = Field(description="Machine-readable reason, e.g. invalid_json, not_utf8, empty_text")
    error: str
    source: str = Field(description="topic[partition]@offset")
    length: int = Field(ge=0, description="Length of the original value in bytes")
    sha256: str
    value_b64: str | None = Field(None, description="Original value, base64; omitted where it may hold raw PII")
    key_b64: str | None = None
    dead_at_ms: int


EventT = TypeVar("EventT", bound=_Event)


def decode_event(model: type[EventT], value: bytes | None) -> EventT:
    """Decode and validate one event, raising :class:`EventError` with a reason kind."""
    if value is None:
        raise EventError("record has no value (a tombstone)", kind="empty_value")
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EventError(f"value is not valid UTF-8 at byte {exc.start}", kind="not_utf8") from exc
    try:
        data: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        raise EventError(f"value is not valid JSON: {exc.msg} at char {exc.pos}", kind="invalid_json") from exc
    if not isinstance(data, dict):
        raise EventError(f"expected a JSON object, got {type(data).__name__}", kind="wrong_type")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise EventError(_describe(model, exc), kind=_reason(exc)) from exc


def encode_event(event: _Event) -> bytes:
    return event.model_dump_json().encode("utf-8")


def _describe(model: type[_Event], exc: ValidationError) -> str:
    # Field values are left out: they may hold text that must not reach a log line.
    problems = "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or '(event)'}: {error['msg']}" for error in exc.errors()
    )
    return f"invalid {model.__name__}: {problems}"


def _reason(exc: ValidationError) -> str:
    first = exc.errors()[0]
    field = str(first["loc"][0]) if first["loc"] else ""
    if first["type"] == "missing":
        return f"missing_{field}" if field else "missing_field"
    if field == "text" and first["type"] == "value_error":
        return "empty_text"
    if field == "schema_version":
        return "unknown_schema_version"
    return "invalid_event"
