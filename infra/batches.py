"""Steps of an at-least-once consumer loop that the workers and the drift process share.

Each batch goes the same way: collect records, produce the results, wait until the
broker acknowledges every one, then store or commit the offsets past the batch. When a
delivery fails, the consumer seeks back to the batch's first offsets and reads it again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

logger = logging.getLogger(__name__)


class DeliveryFailed(Exception):
    """Some records of a batch were not acknowledged by the broker."""


class DeliveryTracker:
    """Collects the delivery errors of a producer's records, and waits for their acknowledgements.

    Pass :meth:`on_delivery` as the ``on_delivery`` callback of every ``produce`` call.
    """

    def __init__(self, producer: Producer) -> None:
        self.producer = producer
        self._errors: list[KafkaError] = []

    def on_delivery(self, error: KafkaError | None, _message: Message) -> None:
        if error is not None:
            self._errors.append(error)

    def await_acks(self, timeout_s: float) -> None:
        """Flush the producer; raise :class:`DeliveryFailed` if a record is unacknowledged or failed."""
        remaining = self.producer.flush(timeout_s)
        errors, self._errors = self._errors, []
        if remaining:
            raise DeliveryFailed(f"{remaining} records not acknowledged within {timeout_s:.0f} s")
        if errors:
            raise DeliveryFailed(f"{len(errors)} records failed delivery, first: {errors[0]}")


def collect_batch(consumer: Consumer, batch_size: int, max_wait_ms: float, owner: str) -> list[Message]:
    """Take up to ``batch_size`` records, waiting at most ``max_wait_ms`` and 0.5 s more when idle.

    Consume errors other than the end of a partition are logged under ``owner`` and skipped.
    """
    messages = consumer.consume(batch_size, timeout=max(max_wait_ms, 1) / 1000)
    if not messages:
        messages = consumer.consume(batch_size, timeout=0.5)
    records = []
    for message in messages:
        error = message.error()
        if error is None:
            records.append(message)
        elif error.code() != KafkaError._PARTITION_EOF:
            logger.warning("%s: consume error on %s: %s", owner, message.topic(), error)
    return records


def next_offsets(messages: Iterable[Message]) -> list[TopicPartition]:
    """Return, per topic partition, the offset after the last of ``messages``: the next to read."""
    offsets: dict[tuple[str, int], int] = {}
    for message in messages:
        key = (message.topic(), message.partition())
        offsets[key] = max(offsets.get(key, -1), message.offset() + 1)
    return [TopicPartition(topic, partition, offset) for (topic, partition), offset in sorted(offsets.items())]


def store_offsets(consumer: Consumer, messages: Iterable[Message], owner: str) -> None:
    """Store the offsets past ``messages`` for the consumer's next automatic commit."""
    partitions = next_offsets(messages)
    try:
        consumer.store_offsets(offsets=partitions)
    except KafkaException as exc:
        # A partition revoked meanwhile is re-read by its new owner: repeated, not lost.
        logger.warning("%s: could not store offsets %s: %s", owner, describe(partitions), exc)


def rewind(consumer: Consumer, messages: Iterable[Message], owner: str) -> None:
    """Seek each topic partition of ``messages`` back to its first offset among them."""
    first: dict[tuple[str, int], int] = {}
    for message in messages:
        key = (message.topic(), message.partition())
        first[key] = min(first.get(key, message.offset()), message.offset())
    for (topic, partition), offset in sorted(first.items()):
        try:
            consumer.seek(TopicPartition(topic, partition, offset))
        except KafkaException as exc:
            logger.warning("%s: could not seek %s[%d]@%d: %s", owner, topic, partition, offset, exc)


def describe(partitions: Iterable[TopicPartition]) -> str:
    """Return ``topic[partition]@offset`` for each partition, comma-separated."""
    return ", ".join(f"{tp.topic}[{tp.partition}]@{tp.offset}" for tp in partitions)
