"""Capturing the pipeline's redacted topics from the broker into a recording file.

The capture reads each partition from its start (the beginning, ``start_offset`` or
the first offset at ``since_ms``) until the consumer reaches the end of the partition
(``PARTITION_EOF``), ``end_offset``, or ``count`` records. It does not use the high
watermark from ListOffsets, because Tansu 0.6 (the embedded broker) reports the base
offset of the partition's last batch plus one there, which would cut off that batch.
"""

from __future__ import annotations

import heapq
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import redis
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition

from driftloop.config import Settings
from driftloop.errors import EventError
from driftloop.infra.clients import make_redis, source_of
from driftloop.infra.topics import FEEDBACK, REQUESTS
from driftloop.registry.records import RegistryKeys
from driftloop.replay.errors import ReplayError
from driftloop.replay.format import (
    EVENT_MODELS,
    RECORDABLE_TOPICS,
    Bounds,
    RecordedEvent,
    RecordingHeader,
    SourceInfo,
    TopicInfo,
    check_recordable,
)
from driftloop.replay.writer import RecordingWriter
from driftloop.schemas.events import decode_event

logger = logging.getLogger(__name__)

DEFAULT_TOPICS = (REQUESTS, FEEDBACK)
CONSUME_BATCH = 1000
METADATA_TIMEOUT_S = 10.0


@dataclass
class _PartitionCapture:
    """Records read from one topic partition, and whether its end was reached."""

    topic: str
    partition: int
    records: list[RecordedEvent] = field(default_factory=list)
    done: bool = False


def record(
    settings: Settings,
    out: str | Path,
    *,
    topics: Sequence[str] = DEFAULT_TOPICS,
    bounds: Bounds | None = None,
    timeout_s: float = 300.0,
    overwrite: bool = False,
) -> RecordingHeader:
    """Record ``topics`` (short names) of the pipeline under ``settings.topic_prefix`` into ``out``.

    Raises ReplayError for a topic that may not be recorded (``requests.raw`` above
    all), a topic missing on the broker, or a capture that did not reach the end of
    every partition within ``timeout_s``.

    NOTE: the records are held in memory until they are written, so bound a capture
    of a large topic with ``count`` or a time range.
    """
    bounds = bounds or Bounds()
    topics = _check_topics(topics)
    _check_bounds(bounds)
    consumer = Consumer(
        settings.kafka_client_config(
            **{
                "group.id": f"{settings.topic_prefix}recorder-{uuid.uuid4().hex[:8]}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "fetch.wait.max.ms": 10,
            }
        )
    )
    try:
        source = _describe_source(settings, consumer, topics)
        captures = _assign(settings, consumer, source, bounds)
        skipped = _consume(consumer, captures, bounds, timeout_s)
    finally:
        consumer.close()

    with RecordingWriter(out, overwrite=overwrite) as writer:
        for record_ in _merge(captures, bounds.count):
            writer.add(record_)
        header = writer.finish(
            source,
            bounds=bounds,
            config=settings.summary(),
            champion_version=_read_champion(settings),
            skipped_invalid=skipped,
        )
    logger.info("recorded %s from %s under %s into %s", header.counts, settings.bootstrap, settings.topic_prefix, out)
    return header


def _check_topics(topics: Sequence[str]) -> tuple[str, ...]:
    if not topics:
        raise ReplayError(f"no topic to record; choose from {', '.join(RECORDABLE_TOPICS)}")
    checked = []
    for topic in topics:
        check_recordable(topic)
        if topic not in checked:
            checked.append(topic)
    # Keep one order of topics in every recording, whatever order they were named in.
    return tuple(sorted(checked, key=RECORDABLE_TOPICS.index))


def _check_bounds(bounds: Bounds) -> None:
    if bounds.since_ms is not None and bounds.until_ms is not None and bounds.since_ms > bounds.until_ms:
        raise ReplayError(f"the time range is empty: since {bounds.since_ms} ms is after until {bounds.until_ms} ms")
    if bounds.start_offset is not None and bounds.end_offset is not None and bounds.start_offset >= bounds.end_offset:
        raise ReplayError(
            f"the offset range is empty: start offset {bounds.start_offset} is not before end offset {bounds.end_offset}"
        )


def _describe_source(settings: Settings, consumer: Consumer, topics: tuple[str, ...]) -> SourceInfo:
    described = {}
    for topic in topics:
        name = settings.topic(topic)
        try:
            metadata = consumer.list_topics(name, timeout=METADATA_TIMEOUT_S).topics.get(name)
        except KafkaException as exc:
            raise ReplayError(f"could not read the metadata of {name} from {settings.bootstrap}: {exc}") from exc
        if metadata is None or metadata.error is not None or not metadata.partitions:
            raise ReplayError(
                f"topic {name} not found on {settings.bootstrap}; check topic_prefix ({settings.topic_prefix!r})"
            )
        described[topic] = TopicInfo(name=name, partitions=len(metadata.partitions))
    return SourceInfo(bootstrap=settings.bootstrap, topic_prefix=settings.topic_prefix, topics=described)


def _assign(
    settings: Settings, consumer: Consumer, source: SourceInfo, bounds: Bounds
) -> dict[tuple[str, int], _PartitionCapture]:
    """Assign every partition at its first offset to capture; return the captures by full topic name and partition."""
    partitions = [
        TopicPartition(
            info.name, partition, bounds.start_offset if bounds.start_offset is not None else OFFSET_BEGINNING
        )
        for info in source.topics.values()
        for partition in range(info.partitions)
    ]
    if bounds.since_ms is not None:
        partitions = _offsets_at(settings, consumer, partitions, bounds)
    short_names = {info.name: topic for topic, info in source.topics.items()}
    captures = {(tp.topic, tp.partition): _PartitionCapture(short_names[tp.topic], tp.partition) for tp in partitions}
    consumer.assign(partitions)
    return captures


def _offsets_at(
    settings: Settings, consumer: Consumer, partitions: list[TopicPartition], bounds: Bounds
) -> list[TopicPartition]:
    """Move each partition's start to its first offset at or after ``since_ms``.

    Records before ``since_ms`` that are still read (with timestamps out of order, or
    from a broker without a time index) are dropped while consuming.
    """
    query = [TopicPartition(tp.topic, tp.partition, bounds.since_ms) for tp in partitions]
    try:
        found = consumer.offsets_for_times(query, timeout=METADATA_TIMEOUT_S)
    except KafkaException as exc:
        raise ReplayError(f"could not look up offsets by time on {settings.bootstrap}: {exc}") from exc
    starts = []
    for requested, at_time in zip(partitions, found, strict=True):
        if at_time.offset < 0:
            # No record at or after since_ms: start from the end, where only EOF is read.
            starts.append(TopicPartition(requested.topic, requested.partition, at_time.offset))
        elif requested.offset == OFFSET_BEGINNING:
            starts.append(at_time)
        else:
            starts.append(TopicPartition(requested.topic, requested.partition, max(at_time.offset, requested.offset)))
    return starts


def _consume(
    consumer: Consumer, captures: dict[tuple[str, int], _PartitionCapture], bounds: Bounds, timeout_s: float
) -> int:
    """Read until every partition is done; return the number of invalid records skipped."""
    deadline = time.monotonic() + timeout_s
    skipped = 0
    while not all(capture.done for capture in captures.values()):
        if time.monotonic() > deadline:
            pending = sorted(f"{topic}[{partition}]" for (topic, partition), c in captures.items() if not c.done)
            raise ReplayError(
                f"the capture did not reach the end of {', '.join(pending)} within {timeout_s:.0f} s; "
                "raise --timeout, or bound the capture with --count, --until or --end-offset"
            )
        for message in consumer.consume(CONSUME_BATCH, timeout=0.5):
            capture = captures[(message.topic(), message.partition())]
            if capture.done:
                continue
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    capture.done = True
                else:
                    logger.warning("consume error on %s[%d]: %s", message.topic(), message.partition(), error)
                continue
            skipped += _take(message, capture, bounds)
    return skipped


def _take(message: Message, capture: _PartitionCapture, bounds: Bounds) -> int:
    """Add ``message`` to ``capture`` if it is within the bounds; return 1 if it was skipped as invalid."""
    if bounds.end_offset is not None and message.offset() >= bounds.end_offset:
        capture.done = True
        return 0
    # A start offset past the end resets the consumer to the earliest offset; skip up to it.
    if bounds.start_offset is not None and message.offset() < bounds.start_offset:
        return 0
    _, timestamp_ms = message.timestamp()
    if bounds.since_ms is not None and timestamp_ms < bounds.since_ms:
        return 0
    if bounds.until_ms is not None and timestamp_ms > bounds.until_ms:
        return 0
    try:
        event = decode_event(EVENT_MODELS[capture.topic], message.value())
    except EventError as exc:
        logger.warning("left out %s (%s): %s", source_of(message), exc.kind, exc)
        return 1
    capture.records.append(
        RecordedEvent(
            topic=capture.topic,
            partition=capture.partition,
            offset=message.offset(),
            timestamp_ms=timestamp_ms,
            key=message.key(),
            event=event,
            headers=tuple(message.headers() or ()),
        )
    )
    if bounds.count is not None and len(capture.records) >= bounds.count:
        capture.done = True
    return 0


def _merge(captures: dict[tuple[str, int], _PartitionCapture], count: int | None) -> list[RecordedEvent]:
    """Merge the partitions by timestamp, each kept in offset order, and keep the first ``count``."""
    ordered = sorted(captures.values(), key=lambda c: (RECORDABLE_TOPICS.index(c.topic), c.partition))
    merged = heapq.merge(*(capture.records for capture in ordered), key=lambda r: r.timestamp_ms)
    records = list(merged)
    return records if count is None else records[:count]


def _read_champion(settings: Settings) -> int | None:
    """Return the registry's champion version, or None if there is none or Redis is unreachable."""
    client = make_redis(settings, socket_connect_timeout=2.0, socket_timeout=2.0)
    try:
        value = client.get(RegistryKeys(settings.topic_prefix).champion)
    except redis.RedisError as exc:
        logger.warning(
            "could not read the champion version from %s: %s; the header leaves it empty",
            settings.summary()["redis_url"],
            exc,
        )
        return None
    finally:
        client.close()
    return None if value is None else int(value)
