"""The ingress path: redact raw requests in this process, then produce them.

``RedactingProducer`` is the default way into a pipeline for callers with raw text.
Texts and string attribute values are redacted in batches before a record is built, so
the requests topic, and therefore the broker, never receives raw text. A request whose
text cannot be redacted goes to the dead-letter topic with its reason, length and
SHA-256 only.

Request ids and feedback labels are sent as given: they must not contain personal data.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from driftloop.config import Settings
from driftloop.errors import EventError, RedactionError
from driftloop.infra.topics import DEAD_LETTER
from driftloop.producer import EventProducer, new_request_id, now_ms
from driftloop.redaction.redactor import RedactionResult, Redactor
from driftloop.schemas.events import DeadLetter, EventT, Feedback, InferenceRequest, encode_event

logger = logging.getLogger(__name__)

STAGE = "ingress"
DEFAULT_BATCH_SIZE = 256
# Redacted alone when every text of a failed batch also fails alone: if this fails too,
# the redactor itself is broken and nothing may be dead-lettered as if the text were at fault.
CHECK_TEXT = "redaction check"


@dataclass(frozen=True)
class RedactionOutcome:
    """The redacted request, or why the raw request could not be redacted."""

    raw: InferenceRequest
    request: InferenceRequest | None
    entity_counts: dict[str, int] = field(default_factory=dict)
    error: str = ""


@dataclass
class IngressCounts:
    """Counts of the records a RedactingProducer sent; never values."""

    requests: int = 0
    feedback: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)
    entity_counts: Counter[str] = field(default_factory=Counter)

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "feedback": self.feedback,
            "dead_letters": dict(sorted(self.dead_letters.items())),
            "entity_counts": dict(sorted(self.entity_counts.items())),
        }


def build_raw_request(
    text: Any,
    *,
    request_id: Any = None,
    event_time_ms: Any = None,
    attributes: Any = None,
) -> InferenceRequest:
    """Validate a raw request, filling a new request id and the current time where missing.

    Raises EventError whose ``kind`` is ``missing_text``, ``empty_text`` or
    ``invalid_event``. The message names fields and rules, never their values.
    """
    fields: dict[str, Any] = {
        "request_id": new_request_id() if request_id is None else request_id,
        "event_time_ms": now_ms() if event_time_ms is None else event_time_ms,
        "attributes": {} if attributes is None else attributes,
    }
    if text is not None:
        fields["text"] = text
    return _validate(InferenceRequest, fields)


def redact_texts(redactor: Redactor, texts: Sequence[str]) -> list[RedactionResult | RedactionError]:
    """Redact ``texts`` in one batch; after a failed batch, redact them one by one.

    Returns one result per text, or the RedactionError of a text that failed alone.
    Raises RedactionError when the redactor fails on every text, a fixed check text
    included, because then the redactor is at fault and not the texts.
    """
    if not texts:
        return []
    try:
        return list(redactor.redact_batch(texts))
    except RedactionError as exc:
        logger.warning("redaction of a batch of %d texts failed (%s); redacting them one by one", len(texts), exc)
    results = [_redact_one(redactor, text) for text in texts]
    if all(isinstance(result, RedactionError) for result in results):
        check = _redact_one(redactor, CHECK_TEXT)
        if isinstance(check, RedactionError):
            raise RedactionError(f"the redactor failed on every text, a fixed check text included: {check}") from check
    return results


def redact_requests(redactor: Redactor, raw_requests: Sequence[InferenceRequest]) -> list[RedactionOutcome]:
    """Redact the text and the attribute values of each request, in one batch.

    String attribute values are redacted like texts. An integer value is analysed as
    text and replaced by its redacted string only when a span is found, because a card
    or phone number can arrive as a JSON number. Each distinct value is analysed once
    per batch. A request whose text or any attribute value fails comes back with
    ``request`` None and the error.
    """
    attribute_values = list(
        dict.fromkeys(
            _attribute_text(value) for raw in raw_requests for value in raw.attributes.values() if _is_analysed(value)
        )
    )
    results = redact_texts(redactor, [raw.text for raw in raw_requests] + attribute_values)
    text_results = results[: len(raw_requests)]
    attribute_results = dict(zip(attribute_values, results[len(raw_requests) :], strict=True))

    outcomes = []
    for raw, text_result in zip(raw_requests, text_results, strict=True):
        outcomes.append(_redacted_request(raw, text_result, attribute_results))
    return outcomes


def _redacted_request(
    raw: InferenceRequest,
    text_result: RedactionResult | RedactionError,
    attribute_results: Mapping[str, RedactionResult | RedactionError],
) -> RedactionOutcome:
    if isinstance(text_result, RedactionError):
        return RedactionOutcome(raw, None, error=f"text: {text_result}")
    counts = Counter(text_result.entity_counts)
    attributes: dict[str, Any] = {}
    for name, value in raw.attributes.items():
        if not _is_analysed(value):
            attributes[name] = value
            continue
        result = attribute_results[_attribute_text(value)]
        if isinstance(result, RedactionError):
            return RedactionOutcome(raw, None, error=f"attribute {name!r}: {result}")
        attributes[name] = result.text if (isinstance(value, str) or result.redacted) else value
        counts.update(result.entity_counts)
    request = raw.model_copy(update={"text": text_result.text, "attributes": attributes})
    return RedactionOutcome(raw, request, dict(counts))


class RedactingProducer:
    """Sends raw requests and feedback to a pipeline, redacting every text before it is produced.

    Requests are buffered and redacted ``batch_size`` at a time, which is several times
    faster than one at a time. Feedback is buffered too and sent after the requests
    buffered before it. ``flush()`` sends everything buffered and waits for the broker's
    acknowledgements. Use it as a context manager or call ``close()``.

    ``redactor`` defaults to ``Redactor(settings.redaction)``, which this producer then
    closes. A shared Redactor passed in stays open.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        redactor: Redactor | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        **producer_config: Any,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.settings = settings
        self.batch_size = batch_size
        self._owns_redactor = redactor is None
        self.redactor = redactor if redactor is not None else Redactor(settings.redaction)
        self.events = EventProducer(settings, **producer_config)
        self.dead_letter_topic = settings.topic(DEAD_LETTER)
        self.counts = IngressCounts()
        self._pending_requests: list[tuple[InferenceRequest, str]] = []
        self._pending_feedback: list[Feedback] = []

    def __enter__(self) -> RedactingProducer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def send_request(
        self,
        text: str,
        *,
        request_id: str | None = None,
        attributes: Mapping[str, Any] | None = None,
        event_time_ms: int | None = None,
        origin: str = "",
    ) -> str:
        """Buffer a raw request for redaction and return its request id.

        ``origin`` names where it came from, e.g. ``events.jsonl:12``, and becomes the
        dead letter's source if the text cannot be redacted. Raises EventError for a
        missing or blank text or an invalid field.
        """
        raw = build_raw_request(text, request_id=request_id, event_time_ms=event_time_ms, attributes=attributes)
        self._pending_requests.append((raw, origin or f"{STAGE}:{raw.request_id}"))
        if len(self._pending_requests) >= self.batch_size:
            self._send_pending()
        return raw.request_id

    def send_feedback(
        self, request_id: str, label: str, *, source: str = "user", event_time_ms: int | None = None
    ) -> None:
        """Buffer the true label of a request; it is sent after the requests buffered before it.

        Raises EventError with kind ``invalid_event`` for an invalid field.
        """
        fields = {
            "request_id": request_id,
            "label": label,
            "source": source,
            "event_time_ms": now_ms() if event_time_ms is None else event_time_ms,
        }
        feedback = _validate(Feedback, fields)
        self._pending_feedback.append(feedback)
        if len(self._pending_feedback) >= self.batch_size:
            self._send_pending()

    def dead_letter(self, value: bytes, reason: str, error: str, origin: str) -> None:
        """Send input that never became a request to the dead-letter topic, as length and SHA-256 only."""
        letter = DeadLetter(
            stage=STAGE,
            reason=reason,
            error=error,
            source=origin,
            length=len(value),
            sha256=hashlib.sha256(value).hexdigest(),
            value_b64=None,
            key_b64=None,
            dead_at_ms=int(time.time() * 1000),
        )
        self.events.send_raw(self.dead_letter_topic, None, encode_event(letter))
        self.counts.dead_letters[reason] += 1
        logger.warning("%s: dead-lettered %s (%s, %d bytes): %s", STAGE, origin, reason, len(value), error)

    def flush(self, timeout: float = 30.0) -> None:
        """Redact and send everything buffered, then wait for the broker's acknowledgements.

        Raises ServiceError when records are not acknowledged within ``timeout`` seconds.
        """
        self._send_pending()
        self.events.flush(timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Flush, then close the Redactor if this producer created it."""
        try:
            self.flush(timeout)
        finally:
            if self._owns_redactor:
                self.redactor.close()
        logger.info("%s: sent %s", STAGE, self.counts.to_json())

    def _send_pending(self) -> None:
        pending = self._pending_requests
        if pending:
            # A RedactionError leaves the requests buffered, so a later flush can retry them.
            outcomes = redact_requests(self.redactor, [raw for raw, _ in pending])
            self._pending_requests = []
            for (raw, origin), outcome in zip(pending, outcomes, strict=True):
                self._send_outcome(outcome, origin)
        feedback, self._pending_feedback = self._pending_feedback, []
        for item in feedback:
            self.events.send_feedback(item)
            self.counts.feedback += 1
        if pending or feedback:
            logger.debug(
                "%s: sent %d requests and %d feedback; spans so far %s",
                STAGE,
                len(pending),
                len(feedback),
                dict(self.counts.entity_counts),
            )

    def _send_outcome(self, outcome: RedactionOutcome, origin: str) -> None:
        if outcome.request is None:
            self.dead_letter(outcome.raw.text.encode("utf-8", "surrogatepass"), "redaction_failed", outcome.error, origin)
            return
        self.events.send_request(outcome.request)
        self.counts.requests += 1
        self.counts.entity_counts.update(outcome.entity_counts)


def _is_analysed(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def _attribute_text(value: str | int) -> str:
    return value if isinstance(value, str) else str(value)


def _redact_one(redactor: Redactor, text: str) -> RedactionResult | RedactionError:
    try:
        return redactor.redact_batch([text])[0]
    except RedactionError as exc:
        return exc


def _validate(model: type[EventT], fields: dict[str, Any]) -> EventT:
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        # pydantic's own message quotes the input, which may be raw text.
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or '(event)'}: {error['msg']}" for error in exc.errors()
        )
        raise EventError(f"invalid {model.__name__}: {problems}", kind=_validation_kind(exc)) from None


def _validation_kind(exc: ValidationError) -> str:
    first = exc.errors()[0]
    field_name = str(first["loc"][0]) if first["loc"] else ""
    if field_name == "text" and first["type"] == "missing":
        return "missing_text"
    if field_name == "text" and first["type"] == "value_error":
        return "empty_text"
    return "invalid_event"
