"""Reading a topic from its beginning, for checks in tests and benchmarks."""

from __future__ import annotations

import time
import uuid

from confluent_kafka import Consumer, Message

from driftloop.config import Settings


class TopicReader:
    """Reads every record of one topic, with a group of its own that never commits."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.topic = topic
        self.consumer = Consumer(
            settings.kafka_client_config(
                **{
                    "group.id": f"reader-{uuid.uuid4().hex[:8]}",
                    "auto.offset.reset": "earliest",
                    "enable.auto.commit": False,
                    "session.timeout.ms": settings.session_timeout_ms,
                    "heartbeat.interval.ms": max(100, settings.session_timeout_ms // 10),
                }
            )
        )
        self.consumer.subscribe([topic])
        self.records: list[Message] = []

    def read_for(self, seconds: float) -> list[Message]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self._poll()
        return self.records

    def read_until(self, condition, timeout: float) -> list[Message]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not condition(self.records):
            self._poll()
        return self.records

    def _poll(self) -> None:
        for message in self.consumer.consume(1000, timeout=0.2):
            if message.error() is None:
                self.records.append(message)

    def close(self) -> None:
        self.consumer.close()
