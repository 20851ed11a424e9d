"""Producing requests and feedback: the Python producer API used by ingest, the demo and tests."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from typing import Any

from confluent_kafka import KafkaException

from driftloop.config import Settings
from driftloop.errors import ServiceError
from driftloop.infra.clients import make_producer
from driftloop.infra.topics import FEEDBACK, REQUESTS
from driftloop.schemas.events import Feedback, InferenceRequest, encode_event


def now_ms() -> int:
    return int(time.time() * 1000)


def new_request_id() -> str:
    return uuid.uuid4().hex


class EventProducer:
    """Sends requests and feedback to the pipeline's topics, keyed by request id.

    Texts are sent as given: callers that hold raw text use
    :class:`driftloop.redaction.ingress.RedactingProducer`, which redacts first.
    """

    def __init__(self, settings: Settings, **producer_config: Any) -> None:
        self.settings = settings
        self.producer = make_producer(settings, **producer_config)
        self.requests_topic = settings.topic(REQUESTS)
        self.feedback_topic = settings.topic(FEEDBACK)
        self._errors: list[str] = []

    def send_request(self, request: InferenceRequest) -> None:
        self._produce(self.requests_topic, request.request_id, encode_event(request))

    def send_feedback(self, feedback: Feedback) -> None:
        self._produce(self.feedback_topic, feedback.request_id, encode_event(feedback))

    def send_raw(self, topic: str, key: bytes | None, value: bytes) -> None:
        """Send bytes as they are, for tests of bad input."""
        self.producer.produce(topic, key=key, value=value, on_delivery=self._on_delivery)
        self.producer.poll(0)

    def send_requests(self, requests: Iterable[InferenceRequest]) -> int:
        count = 0
        for request in requests:
            self.send_request(request)
            count += 1
        return count

    def flush(self, timeout: float = 30.0) -> None:
        remaining = self.producer.flush(timeout)
        if remaining:
            raise ServiceError(f"{remaining} events not acknowledged by {self.settings.bootstrap} within {timeout:.0f} s")
        if self._errors:
            errors, self._errors = self._errors, []
            raise ServiceError(f"{len(errors)} events failed delivery, first: {errors[0]}")

    def _produce(self, topic: str, request_id: str, value: bytes) -> None:
        try:
            self.producer.produce(topic, key=request_id.encode("utf-8"), value=value, on_delivery=self._on_delivery)
        except BufferError:
            self.producer.poll(0.5)
            self.producer.produce(topic, key=request_id.encode("utf-8"), value=value, on_delivery=self._on_delivery)
        except KafkaException as exc:
            raise ServiceError(f"could not send to {topic}: {exc}") from exc
        self.producer.poll(0)

    def _on_delivery(self, error, message) -> None:
        if error is not None:
            self._errors.append(str(error))
