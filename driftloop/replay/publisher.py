"""Publishing recorded requests and feedback into the lanes, on the recorded schedule or at once.

One producer publishes every event, in recording order, to the same topic
of every lane, keyed as it was recorded. Keyed records are placed by the producer's
partitioner, the same one the inference worker uses for predictions, so a request's
prediction and feedback meet in one partition of a lane, as the join requires. A
record without a key keeps its recorded partition (modulo the lane's partition count).
Per-key order is kept because the producer keeps one request in flight per broker
connection, so a retried batch cannot overtake the next one. (Idempotence would
allow more in flight, but its producer id handshake delayed the first records by
0.5 to 1 s on Tansu 0.6, and one in flight still published about 200,000 small
records per second there.)

Values are the recorded events as they were validated; the Kafka timestamp is the
time of publishing. Each record gets the header ``driftloop.replay.source`` with its
recorded ``topic[partition]@offset``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from confluent_kafka import KafkaException

from driftloop.config import Settings
from driftloop.infra.clients import make_producer
from driftloop.infra.topics import REQUESTS
from driftloop.replay.errors import ReplayError
from driftloop.replay.format import REPLAYED_TOPICS, RecordedEvent

logger = logging.getLogger(__name__)

SOURCE_HEADER = "driftloop.replay.source"
POLL_EVERY = 1000  # records between two polls of the producer's delivery reports
FULL_QUEUE_WAIT_S = 0.05
FULL_QUEUE_MAX_WAITS = 600  # 30 s of waiting for room in the producer's queue
CHECK_INTERVAL_S = 1.0
FLUSH_TIMEOUT_S = 60.0


@dataclass
class PublishStats:
    """Counts and duration of one publishing run."""

    events: int = 0  # recorded events published, each into every lane
    records: int = 0  # records produced: events times lanes
    seconds: float = 0.0  # from the first produce call until every record was acknowledged
    started_at_ms: int = 0
    published_at_ms: dict[str, int] = field(default_factory=dict)  # request id -> publish time of its request

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    @property
    def records_per_s(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0


def replay_schedule(events: Sequence[RecordedEvent], speed: float | None) -> list[float]:
    """Return each event's send time in seconds after the first, at ``speed`` times the recorded pace.

    ``speed`` None means as fast as possible (all zeros). The recorded gap before an
    event is measured from the latest timestamp so far, so a timestamp that goes back
    in time does not move its event earlier than the one before it.
    """
    if speed is None or not events:
        return [0.0] * len(events)
    if speed <= 0:
        raise ReplayError(f"speed must be above 0, got {speed}")
    first = events[0].timestamp_ms
    latest = first
    offsets = []
    for record in events:
        latest = max(latest, record.timestamp_ms)
        offsets.append((latest - first) / 1000.0 / speed)
    return offsets


class Publisher:
    """Publishes recorded events into the lanes' topics."""

    def __init__(self, settings: Settings, lane_settings: Sequence[Settings]) -> None:
        self.lane_settings = list(lane_settings)
        self._errors: list[str] = []
        errors = self._errors

        # A function without a reference to self, so that the producer is freed with the
        # publisher and does not outlive the broker in a reference cycle.
        def on_delivery(error, message) -> None:
            if error is not None:
                errors.append(f"{message.topic()}: {error}")

        self.producer = make_producer(
            settings,
            **{
                "max.in.flight.requests.per.connection": 1,
                "delivery.report.only.error": True,
                "on_delivery": on_delivery,
                "queue.buffering.max.messages": 500_000,
            },
        )

    def publish(
        self,
        events: Sequence[RecordedEvent],
        *,
        speed: float | None = None,
        check: Callable[[], None] | None = None,
    ) -> PublishStats:
        """Publish ``events`` of the replayed topics in order; ``check`` runs about once a second and may raise."""
        events = [record for record in events if record.topic in REPLAYED_TOPICS]
        schedule = replay_schedule(events, speed)
        topics = [{topic: s.topic(topic) for topic in REPLAYED_TOPICS} for s in self.lane_settings]
        stats = PublishStats(started_at_ms=int(time.time() * 1000))
        started = time.monotonic()
        last_check = started
        for index, (record, offset) in enumerate(zip(events, schedule, strict=True)):
            last_check = self._wait_until(started + offset, check, last_check)
            headers = [*record.headers, (SOURCE_HEADER, f"{record.topic}[{record.partition}]@{record.offset}".encode())]
            for lane, lane_topics in zip(self.lane_settings, topics, strict=True):
                partition = -1 if record.key is not None else record.partition % lane.partitions
                self._produce(lane_topics[record.topic], record, headers, partition)
            if record.topic == REQUESTS:
                stats.published_at_ms.setdefault(record.request_id, int(time.time() * 1000))
            if index % POLL_EVERY == 0:
                self.producer.poll(0)
                if check is not None and time.monotonic() - last_check >= CHECK_INTERVAL_S:
                    check()
                    last_check = time.monotonic()
        remaining = self.producer.flush(FLUSH_TIMEOUT_S)
        stats.seconds = time.monotonic() - started
        stats.events = len(events)
        stats.records = len(events) * len(self.lane_settings)
        if remaining:
            raise ReplayError(f"{remaining} replayed records not acknowledged within {FLUSH_TIMEOUT_S:.0f} s")
        if self._errors:
            raise ReplayError(f"{len(self._errors)} replayed records failed delivery, first: {self._errors[0]}")
        logger.info("published %d events into %d lanes in %.2f s", stats.events, len(self.lane_settings), stats.seconds)
        return stats

    def _wait_until(self, due: float, check: Callable[[], None] | None, last_check: float) -> float:
        """Serve delivery reports until the monotonic time ``due``; return the time of the last check."""
        while (remaining := due - time.monotonic()) > 0:
            self.producer.poll(min(remaining, CHECK_INTERVAL_S))
            if check is not None and time.monotonic() - last_check >= CHECK_INTERVAL_S:
                check()
                last_check = time.monotonic()
        return last_check

    def _produce(self, topic: str, record: RecordedEvent, headers: list, partition: int) -> None:
        for _ in range(FULL_QUEUE_MAX_WAITS):
            try:
                self.producer.produce(topic, value=record.value, key=record.key, headers=headers, partition=partition)
                return
            except BufferError:
                self.producer.poll(FULL_QUEUE_WAIT_S)
            except KafkaException as exc:
                raise ReplayError(f"could not publish line {record.line} to {topic}: {exc}") from exc
        raise ReplayError(
            f"the producer's queue stayed full for {FULL_QUEUE_MAX_WAITS * FULL_QUEUE_WAIT_S:.0f} s while publishing to {topic}"
        )
