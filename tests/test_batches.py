"""The shared steps of the consumer loops, on fakes that implement the parts of confluent-kafka they call."""

from __future__ import annotations

import logging

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from driftloop.infra.batches import (
    DeliveryFailed,
    DeliveryTracker,
    collect_batch,
    describe,
    next_offsets,
    rewind,
    store_offsets,
)


class FakeMessage:
    def __init__(self, topic: str, partition: int, offset: int, error: KafkaError | None = None) -> None:
        self._topic, self._partition, self._offset, self._error = topic, partition, offset, error

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def error(self) -> KafkaError | None:
        return self._error


class FakeProducer:
    def __init__(self, unacknowledged: int = 0) -> None:
        self.unacknowledged = unacknowledged

    def flush(self, timeout: float) -> int:
        return self.unacknowledged


class FakeConsumer:
    def __init__(self, batches: list[list[FakeMessage]] | None = None, fail: bool = False) -> None:
        self.batches = list(batches or [])
        self.fail = fail
        self.stored: list[TopicPartition] = []
        self.seeks: list[TopicPartition] = []

    def consume(self, num_messages: int, timeout: float) -> list[FakeMessage]:
        return self.batches.pop(0) if self.batches else []

    def store_offsets(self, offsets: list[TopicPartition]) -> None:
        if self.fail:
            raise KafkaException(KafkaError(KafkaError._STATE, "partition revoked"))
        self.stored.extend(offsets)

    def seek(self, partition: TopicPartition) -> None:
        if self.fail and partition.partition == 0:
            raise KafkaException(KafkaError(KafkaError._STATE, "not assigned"))
        self.seeks.append(partition)


MESSAGES = [FakeMessage("a", 1, 7), FakeMessage("a", 0, 3), FakeMessage("a", 1, 5), FakeMessage("b", 0, 9)]


def as_tuples(partitions: list[TopicPartition]) -> list[tuple[str, int, int]]:
    return [(tp.topic, tp.partition, tp.offset) for tp in partitions]


def test_next_offsets_per_partition():
    assert as_tuples(next_offsets(MESSAGES)) == [("a", 0, 4), ("a", 1, 8), ("b", 0, 10)]
    assert next_offsets([]) == []


def test_store_offsets_stores_next_offsets():
    consumer = FakeConsumer()

    store_offsets(consumer, MESSAGES, "worker w1")

    assert as_tuples(consumer.stored) == [("a", 0, 4), ("a", 1, 8), ("b", 0, 10)]


def test_store_offsets_failure_logged(caplog):
    consumer = FakeConsumer(fail=True)

    with caplog.at_level(logging.WARNING, logger="driftloop.infra.batches"):
        store_offsets(consumer, MESSAGES, "worker w1")

    assert "worker w1: could not store offsets a[0]@4, a[1]@8, b[0]@10" in caplog.text


def test_rewind_survives_failed_seek(caplog):
    consumer = FakeConsumer(fail=True)

    with caplog.at_level(logging.WARNING, logger="driftloop.infra.batches"):
        rewind(consumer, MESSAGES, "redactor r1")

    assert as_tuples(consumer.seeks) == [("a", 1, 5)]
    assert "redactor r1: could not seek a[0]@3" in caplog.text
    assert "redactor r1: could not seek b[0]@9" in caplog.text


def test_collect_batch_skips_errors(caplog):
    end = FakeMessage("a", 0, 4, KafkaError(KafkaError._PARTITION_EOF))
    broken = FakeMessage("a", 1, -1, KafkaError(KafkaError._TRANSPORT, "broker went away"))
    good = FakeMessage("a", 0, 3)
    consumer = FakeConsumer([[good, end, broken]])

    with caplog.at_level(logging.WARNING, logger="driftloop.infra.batches"):
        records = collect_batch(consumer, 10, 20, "worker w1")

    assert records == [good]
    assert "worker w1: consume error on a" in caplog.text
    assert "Partition EOF" not in caplog.text


def test_collect_batch_waits_again_when_idle():
    good = FakeMessage("a", 0, 3)
    consumer = FakeConsumer([[], [good]])

    assert collect_batch(consumer, 10, 20, "worker w1") == [good]


def test_delivery_tracker_passes_when_all_acknowledged():
    tracker = DeliveryTracker(FakeProducer())
    tracker.on_delivery(None, FakeMessage("a", 0, 1))

    tracker.await_acks(1.0)


def test_delivery_tracker_raises_on_unacknowledged_records():
    tracker = DeliveryTracker(FakeProducer(unacknowledged=3))

    with pytest.raises(DeliveryFailed, match="3 records not acknowledged within 2 s"):
        tracker.await_acks(2.0)


def test_delivery_tracker_raises_once_per_batch_of_errors():
    tracker = DeliveryTracker(FakeProducer())
    tracker.on_delivery(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "too large"), FakeMessage("a", 0, 1))
    tracker.on_delivery(KafkaError(KafkaError._MSG_TIMED_OUT, "timed out"), FakeMessage("a", 0, 2))

    with pytest.raises(DeliveryFailed, match="2 records failed delivery, first: .*too large"):
        tracker.await_acks(1.0)
    tracker.await_acks(1.0)  # the errors belonged to the last batch only


def test_describe():
    assert describe([TopicPartition("t", 2, 11)]) == "t[2]@11"
