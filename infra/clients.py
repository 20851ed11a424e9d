"""Kafka and Redis clients built from the settings, and the dead-letter writer."""

from __future__ import annotations

import base64
import hashlib
import logging
import time
from collections.abc import Iterable
from typing import Any

import redis
from confluent_kafka import Consumer, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient

from driftloop.config import Settings
from driftloop.errors import ServiceError
from driftloop.infra.topics import DEAD_LETTER
from driftloop.schemas.events import DeadLetter, encode_event

logger = logging.getLogger(__name__)


def make_producer(settings: Settings, **overrides: Any) -> Producer:
    """Create a producer from driftloop's defaults, then ``kafka_config``, then ``overrides``."""
    # librdkafka's default of 1,000,000 bytes rejects a 1 MB text once wrapped in JSON;
    # the broker's own limit (Kafka: message.max.bytes, 1 MiB by default) still applies.
    config: dict[str, Any] = {"linger.ms": 5, "message.max.bytes": 4 * 1024 * 1024}
    config.update(settings.kafka_client_config())
    config.update(overrides)
    return Producer(config)


def make_consumer(settings: Settings, group_id: str, **overrides: Any) -> Consumer:
    """Create a consumer that commits only offsets the application stored after its work is done.

    Defaults come first, so ``kafka_config`` can change any of them.
    """
    config: dict[str, Any] = {
        "auto.offset.reset": "earliest",
        "enable.auto.commit": True,
        "enable.auto.offset.store": False,
        "auto.commit.interval.ms": 1000,
        "session.timeout.ms": settings.session_timeout_ms,
        "heartbeat.interval.ms": max(100, settings.session_timeout_ms // 10),
        "partition.assignment.strategy": "cooperative-sticky",
        # A short fetch wait keeps latency low on a trickle of requests: with the
        # default 500 ms, Tansu 0.6 held each fetch for the full wait.
        "fetch.wait.max.ms": 10,
    }
    config.update(settings.kafka_client_config())
    config["group.id"] = group_id
    config.update(overrides)
    return Consumer(config)


def make_redis(settings: Settings, **overrides: Any) -> redis.Redis:
    options: dict[str, Any] = {"socket_connect_timeout": 5.0, "socket_timeout": 10.0, "health_check_interval": 15}
    options.update(overrides)
    return redis.Redis.from_url(settings.redis, **options)


def check_services(settings: Settings, topics: Iterable[str], timeout_s: float = 10.0) -> None:
    """Raise ServiceError, naming the fix, unless Redis responds and every topic exists on Kafka.

    A long-running process calls this once at start, so that a missing service ends it
    with one line instead of endless reconnection logs.
    """
    client = make_redis(settings, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise ServiceError(
            f"Redis at {settings.redis_masked} is not reachable ({exc}); start the local stack with "
            "`driftloop up`, or set DRIFTLOOP_REDIS_URL to a running server"
        ) from exc
    finally:
        client.close()
    # Level 2 keeps librdkafka's connection errors out of the log: the error below names them.
    admin = AdminClient(settings.kafka_client_config(log_level=2))
    try:
        metadata = admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        raise ServiceError(
            f"Kafka at {settings.bootstrap} did not respond within {timeout_s:.0f} s ({exc.args[0]}); start the "
            "local stack with `driftloop up`, or set DRIFTLOOP_KAFKA_BOOTSTRAP to a running cluster"
        ) from exc
    missing = [settings.topic(name) for name in topics if settings.topic(name) not in metadata.topics]
    if missing:
        noun = "topic" if len(missing) == 1 else "topics"
        raise ServiceError(f"{noun} {', '.join(missing)} not found on {settings.bootstrap}; run `driftloop topics create`")


def source_of(message: Message) -> str:
    """Return a record's coordinates as ``topic[partition]@offset``."""
    return f"{message.topic()}[{message.partition()}]@{message.offset()}"


class DeadLetterWriter:
    """Sends records a stage could not process to the dead-letter topic, with the reason."""

    def __init__(self, settings: Settings, producer: Producer, stage: str, *, include_payload: bool) -> None:
        self.topic = settings.topic(DEAD_LETTER)
        self.producer = producer
        self.stage = stage
        # Payloads from a topic that may hold raw text are replaced by length and SHA-256.
        self.include_payload = include_payload
        self.count = 0

    def send(self, message: Message, reason: str, error: str) -> None:
        value = message.value() or b""
        key = message.key()
        letter = DeadLetter(
            stage=self.stage,
            reason=reason,
            error=error,
            source=source_of(message),
            length=len(value),
            sha256=hashlib.sha256(value).hexdigest(),
            value_b64=base64.b64encode(value).decode("ascii") if self.include_payload else None,
            key_b64=base64.b64encode(key).decode("ascii") if (key is not None and self.include_payload) else None,
            dead_at_ms=int(time.time() * 1000),
        )
        self.producer.produce(self.topic, key=key if self.include_payload else None, value=encode_event(letter))
        self.count += 1
        logger.warning(
            "%s: dead-lettered %s (%s, %d bytes): %s", self.stage, letter.source, reason, len(value), error
        )
