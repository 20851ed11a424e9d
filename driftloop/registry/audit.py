"""Publishers of registry audit events to the audit topic.

An event is a JSON object with at least ``event`` (its kind), ``event_id``, ``at_ms``
and ``topic_prefix``. Kinds: ``version_registered``, ``champion_changed`` (with
``action`` = ``promote`` or ``rollback``) and ``version_rejected``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any, Protocol

from confluent_kafka import KafkaError, KafkaException, Producer

from driftloop.config import Settings
from driftloop.errors import ServiceError
from driftloop.infra.clients import make_producer
from driftloop.infra.topics import AUDIT

logger = logging.getLogger(__name__)

DEFAULT_DELIVERY_TIMEOUT_S = 10.0


class AuditPublisher(Protocol):
    """Sends one audit event and returns once it is stored, or raises ServiceError."""

    def publish(self, event: Mapping[str, Any]) -> None: ...

    def close(self) -> None: ...


class KafkaAuditPublisher:
    """Produces audit events to ``settings.topic(AUDIT)`` and waits for each acknowledgement.

    The producer is created on the first event, so a registry that only reads never
    connects to Kafka.
    """

    def __init__(
        self,
        settings: Settings,
        producer: Producer | None = None,
        *,
        delivery_timeout_s: float = DEFAULT_DELIVERY_TIMEOUT_S,
    ) -> None:
        self.settings = settings
        self.topic = settings.topic(AUDIT)
        self.delivery_timeout_s = delivery_timeout_s
        self._producer = producer

    def publish(self, event: Mapping[str, Any]) -> None:
        if self._producer is None:
            self._producer = make_producer(
                self.settings, **{"message.timeout.ms": int(self.delivery_timeout_s * 1000)}
            )
        errors: list[KafkaError] = []

        def on_delivery(error: KafkaError | None, _message) -> None:
            if error is not None:
                errors.append(error)

        key = str(event.get("version", "")).encode("utf-8")
        try:
            self._producer.produce(self.topic, key=key, value=json.dumps(event, sort_keys=True).encode("utf-8"), on_delivery=on_delivery)
        except (KafkaException, BufferError) as exc:
            raise ServiceError(f"could not queue audit event {event.get('event_id')} for {self.topic}: {exc}") from exc
        remaining = self._producer.flush(self.delivery_timeout_s)
        if remaining:
            raise ServiceError(
                f"audit event {event.get('event_id')} not acknowledged by {self.settings.bootstrap} "
                f"within {self.delivery_timeout_s:.0f} s"
            )
        if errors:
            raise ServiceError(f"audit event {event.get('event_id')} failed delivery to {self.topic}: {errors[0]}")

    def close(self) -> None:
        if self._producer is not None:
            remaining = self._producer.flush(self.delivery_timeout_s)
            if remaining:
                logger.warning("%d audit events to %s not acknowledged at close", remaining, self.topic)
            self._producer = None
