"""The drift process: drift monitors of the serving model version and the training trigger.

``driftloop learn drift`` runs one :class:`DriftProcess`. It consumes two topics in
the consumer group ``{prefix}drift``:

- the examples topic (joined predictions and feedback): each example feeds the
  ``error`` detectors and counts as a labelled example for the trigger policy;
- the predictions topic: each prediction feeds the label-free detectors
  (``confidence``, the text features and ``predicted_label``), so input drift is seen
  before any feedback arrives.

Drift events go to the drift topic, and the :class:`TriggerPolicy` turns them into at
most one :class:`TrainingJob` at a time on the jobs topic, guarded by the Redis job
lock that the trainer releases when the job ends.

The monitored version is the registry's champion. It is read at start, every
``CHAMPION_CHECK_S`` and whenever a record of a newer version arrives. Without a
champion, the newest version seen in the records is monitored. Records of any other
version are counted as stale and skipped, because the detectors describe one version.

The detectors' state lives in process memory, and offsets are committed after each
batch. At start, :meth:`DriftProcess.warm_up` feeds the detectors the last
``WARM_UP_RECORDS`` records of each topic before the committed offsets, without
publishing their alarms, so that a restarted process does not take a drift that began
before the restart as its baseline.

NOTE: the trigger policy's counts and episodes are not restored, so after a restart a
job needs ``min_labelled_examples`` new labelled examples. Run one instance per
pipeline: members of one group split the partitions, and each would watch only part of
the stream.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

import redis
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from driftloop.config import Settings
from driftloop.drift.events import DriftEvent, TrainingJob
from driftloop.drift.monitor import DriftMonitor, MonitoredExample
from driftloop.drift.redis_lock import job_lock_for, pipeline_name
from driftloop.drift.settings import DriftSettings
from driftloop.drift.trigger import JobLock, TriggerPolicy
from driftloop.errors import EventError, ServiceError
from driftloop.infra.batches import DeliveryFailed, DeliveryTracker, store_offsets
from driftloop.infra.clients import make_consumer, make_producer, make_redis, source_of
from driftloop.infra.topics import DRIFT, EXAMPLES, JOBS, PREDICTIONS
from driftloop.registry.records import RegistryKeys
from driftloop.schemas.events import Example, Prediction, decode_event

logger = logging.getLogger(__name__)

CHAMPION_CHECK_S = 2.0
"""Seconds between two reads of the registry's champion pointer."""
STATS_INTERVAL_S = 60.0
"""Seconds between two log lines with the process's counters."""
RECHECK_S = 0.2
"""Seconds a record of a newer version waits before the champion pointer is read again for it."""
IDLE_UPDATE_S = 1.0
"""Seconds between trigger updates while no record arrives, so a waiting episode retries the job lock."""
BATCH_SIZE = 500
POLL_TIMEOUT_S = 0.5
DELIVERY_TIMEOUT_S = 10.0
WARM_UP_RECORDS = 2000
"""Records per topic that a starting drift process reads again from before its committed offsets."""
WARM_UP_TIMEOUT_S = 60.0


def split_detectors(settings: DriftSettings) -> tuple[DriftSettings, DriftSettings]:
    """Return (labelled, label-free) copies of ``settings``: the ``error`` detectors, and all others."""
    labelled = tuple(detector for detector in settings.detectors if detector.signal == "error")
    label_free = tuple(detector for detector in settings.detectors if detector.signal != "error")
    return (
        settings.model_copy(update={"detectors": labelled}),
        settings.model_copy(update={"detectors": label_free}),
    )


class VersionMonitor:
    """The drift monitors of one model version, fed from examples and from predictions.

    Positions in the drift events count examples for the ``error`` detectors and
    predictions for the others. With feedback on every request both count requests, so
    the trigger's ``cooldown_examples`` compares like with like.

    NOTE: with feedback on only part of the requests, the two position counts drift
    apart, and ``cooldown_examples`` mixes them. ``cooldown_s`` is not affected.
    """

    def __init__(self, settings: DriftSettings, model_version: int) -> None:
        labelled, label_free = split_detectors(settings)
        self.model_version = model_version
        self.labelled = DriftMonitor(labelled, model_version)
        self.label_free = DriftMonitor(label_free, model_version)

    def on_example(self, example: Example) -> list[DriftEvent]:
        """Feed the error of one joined example and return the drift events it raised."""
        return self.labelled.update(
            MonitoredExample(error=example.label != example.predicted_label, event_time=_event_time(example.event_time_ms))
        )

    def on_prediction(self, prediction: Prediction) -> list[DriftEvent]:
        """Feed the label-free signals of one prediction and return the drift events it raised."""
        return self.label_free.update(
            MonitoredExample(
                confidence=prediction.confidence,
                text=prediction.text or None,
                predicted_label=prediction.label,
                event_time=_event_time(prediction.event_time_ms),
            )
        )


@dataclass
class DriftCounters:
    """Counters of a drift process since it started."""

    examples: int = 0
    predictions: int = 0
    stale_records: int = 0
    invalid_records: int = 0
    drift_events: int = 0
    jobs: int = 0
    versions: list[int] = field(default_factory=list)


@dataclass
class _Pending:
    """Drift events and labelled examples of the monitored version not yet given to the trigger policy."""

    events: list[DriftEvent] = field(default_factory=list)
    labelled: int = 0


class DriftProcess:
    """Consumes examples and predictions, runs the monitors and the trigger, publishes events and jobs.

    Parameters
    ----------
    settings
        Pipeline settings; ``settings.drift`` configures the detectors and the trigger.
    lock
        The job lock; defaults to the Redis lock that the trainer releases.
    redis_client
        Client for the champion pointer and the default lock; created when omitted.
    group_id
        Consumer group; defaults to ``{prefix}drift``.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        lock: JobLock | None = None,
        redis_client: redis.Redis | None = None,
        group_id: str | None = None,
    ) -> None:
        self.settings = settings
        self.pipeline = pipeline_name(settings)
        self.examples_topic = settings.topic(EXAMPLES)
        self.predictions_topic = settings.topic(PREDICTIONS)
        self.drift_topic = settings.topic(DRIFT)
        self.jobs_topic = settings.topic(JOBS)
        self.group_id = group_id or settings.topic("drift")
        self._redis = redis_client or make_redis(settings)
        self._owns_redis = redis_client is None
        self.lock = lock or job_lock_for(settings, self._redis)
        self._keys = RegistryKeys(settings.topic_prefix)
        self.consumer = make_consumer(settings, self.group_id)
        self.producer = make_producer(settings)
        self.counters = DriftCounters()

        self._stop = threading.Event()
        self._deliveries = DeliveryTracker(self.producer)
        self._pending = _Pending()
        self._stats_logged_at = time.monotonic()
        self._last_update_at = time.monotonic()
        self.monitor: VersionMonitor | None = None
        self.policy: TriggerPolicy | None = None
        self._champion: int | None = None
        self._refresh_champion()
        if self._champion is not None:
            self._start_version(self._champion)

    # Lifecycle.

    def stop(self) -> None:
        """Ask the loop to finish its batch and return; safe from a signal handler."""
        self._stop.set()

    def run(self, max_batches: int | None = None) -> None:
        """Warm up, then consume until :meth:`stop` (or ``max_batches`` non-empty batches), then commit and close."""
        self.warm_up()
        self.consumer.subscribe([self.examples_topic, self.predictions_topic])
        logger.info(
            "drift process of pipeline %s reading %s and %s (group %s), monitoring version %s",
            self.pipeline, self.examples_topic, self.predictions_topic, self.group_id, self.model_version,
        )
        batches = 0
        try:
            while not self._stop.is_set() and (max_batches is None or batches < max_batches):
                messages = self._consume()
                if messages:
                    self.process(messages)
                    store_offsets(self.consumer, messages, "drift process")
                    batches += 1
                self._follow_champion()
                self._update_when_idle()
                self._log_stats()
        finally:
            self._shutdown()

    @property
    def model_version(self) -> int | None:
        """The monitored model version, or None before the first champion or record."""
        return self.monitor.model_version if self.monitor is not None else None

    def warm_up(self, records_per_topic: int = WARM_UP_RECORDS, timeout_s: float = WARM_UP_TIMEOUT_S) -> int:
        """Feed the detectors the records just before the group's committed offsets; return how many.

        Only records of the monitored version count, alarms raised meanwhile are dropped,
        and the trigger policy receives none of them. A group without committed offsets, as
        on a first start, has nothing to read again.
        """
        if self.monitor is None or records_per_topic <= 0:
            return 0
        reader = Consumer(self.settings.kafka_client_config(**{"group.id": self.group_id, "enable.auto.commit": False}))
        fed = 0
        try:
            ranges = self._warm_up_ranges(reader, records_per_topic)
            if not ranges:
                return 0
            reader.assign([TopicPartition(topic, partition, start) for (topic, partition), (start, _) in ranges.items()])
            pending = set(ranges)
            deadline = time.monotonic() + timeout_s
            while pending and time.monotonic() < deadline:
                for message in reader.consume(BATCH_SIZE, timeout=POLL_TIMEOUT_S):
                    key = (message.topic(), message.partition())
                    if message.error() is None and key in pending and message.offset() < ranges[key][1]:
                        fed += self._warm(message)
                for position in reader.position([TopicPartition(topic, partition) for topic, partition in pending]):
                    if position.offset >= ranges[(position.topic, position.partition)][1]:
                        pending.discard((position.topic, position.partition))
            if pending:
                logger.warning("drift process warm-up stopped after %.0f s before the end of %s", timeout_s, sorted(pending))
        except KafkaException as exc:
            logger.warning("drift process warm-up failed after %d records, so its detectors start empty: %s", fed, exc)
        finally:
            reader.close()
        logger.info(
            "drift process of pipeline %s fed its detectors %d records of version %s from before its committed offsets",
            self.pipeline, fed, self.model_version,
        )
        return fed

    def _warm_up_ranges(self, reader: Consumer, records_per_topic: int) -> dict[tuple[str, int], tuple[int, int]]:
        """Return (topic, partition) -> [start, committed) of the records to read again."""
        ranges: dict[tuple[str, int], tuple[int, int]] = {}
        for topic in (self.examples_topic, self.predictions_topic):
            metadata = reader.list_topics(topic, timeout=10.0).topics.get(topic)
            if metadata is None or metadata.error is not None or not metadata.partitions:
                continue
            per_partition = math.ceil(records_per_topic / len(metadata.partitions))
            partitions = [TopicPartition(topic, partition) for partition in sorted(metadata.partitions)]
            for committed in reader.committed(partitions, timeout=10.0):
                if committed.offset <= 0:
                    continue
                low, _ = reader.get_watermark_offsets(committed, timeout=10.0, cached=False)
                start = max(low, committed.offset - per_partition)
                if start < committed.offset:
                    ranges[(topic, committed.partition)] = (start, committed.offset)
        return ranges

    def _warm(self, message: Message) -> int:
        model = Example if message.topic() == self.examples_topic else Prediction
        try:
            record = decode_event(model, message.value())
        except EventError:
            return 0  # logged when it was first read
        if self.monitor is None or record.model_version != self.monitor.model_version:
            return 0
        if isinstance(record, Example):
            self.monitor.on_example(record)
        else:
            self.monitor.on_prediction(record)
        return 1

    # Steps of the loop.

    def _consume(self) -> list[Message]:
        records = []
        for message in self.consumer.consume(BATCH_SIZE, timeout=POLL_TIMEOUT_S):
            error = message.error()
            if error is None:
                records.append(message)
            elif error.code() != KafkaError._PARTITION_EOF:
                logger.warning("consume error on %s: %s", message.topic(), error)
        return records

    def process(self, messages: list[Message]) -> None:
        """Feed each record to the monitors, then hand the batch's events to the trigger and publish."""
        for message in messages:
            record = self._decode(message)
            if record is None:
                continue
            if not self._accept_version(record.model_version):
                self.counters.stale_records += 1
                continue
            assert self.monitor is not None
            if isinstance(record, Example):
                self._pending.events.extend(self.monitor.on_example(record))
                self._pending.labelled += 1
                self.counters.examples += 1
            else:
                self._pending.events.extend(self.monitor.on_prediction(record))
                self.counters.predictions += 1
        self._update_policy()

    def _decode(self, message: Message) -> Example | Prediction | None:
        model = Example if message.topic() == self.examples_topic else Prediction
        try:
            return decode_event(model, message.value())
        except EventError as exc:
            self.counters.invalid_records += 1
            logger.warning("drift process: skipping invalid %s at %s: %s", model.__name__, source_of(message), exc)
            return None

    def _accept_version(self, version: int) -> bool:
        """Return whether records of ``version`` are monitored, switching to a newer champion first."""
        current = self.model_version
        if version == current:
            return True
        if current is not None and version < current:
            return False
        # A newer version: follow it if it is the champion now, or if there is no champion.
        # The pointer is read at most every RECHECK_S here, because a worker serving a
        # fixed model that is not the champion would otherwise cost a read per record.
        if time.monotonic() - self._champion_checked_at >= RECHECK_S:
            self._refresh_champion()
        if self._champion is None or self._champion == version:
            self._switch_version(version)
            return True
        if self._champion != current:
            self._switch_version(self._champion)
        return False

    def _follow_champion(self) -> None:
        if time.monotonic() - self._champion_checked_at < CHAMPION_CHECK_S:
            return
        self._refresh_champion()
        if self._champion is not None and self._champion != self.model_version:
            self._switch_version(self._champion)

    def _refresh_champion(self) -> None:
        self._champion = self._read_champion()
        self._champion_checked_at = time.monotonic()

    def _switch_version(self, version: int) -> None:
        # The old version's events go to the policy first, and start_version then drops their episode.
        self._update_policy()
        logger.info("drift process of pipeline %s now monitors version %d (was %s)", self.pipeline, version, self.model_version)
        self._start_version(version)

    def _start_version(self, version: int) -> None:
        self.monitor = VersionMonitor(self.settings.drift, version)
        self.counters.versions.append(version)
        if self.policy is None:
            self.policy = TriggerPolicy(self.settings.drift.trigger, self.lock, self.pipeline, version)
        else:
            self.policy.start_version(version)

    def _update_when_idle(self) -> None:
        if time.monotonic() - self._last_update_at >= IDLE_UPDATE_S:
            self._update_policy()

    def _update_policy(self) -> None:
        """Give the pending events and counts to the trigger policy and publish events and jobs."""
        pending, self._pending = self._pending, _Pending()
        self._last_update_at = time.monotonic()
        if self.policy is None:
            return
        try:
            jobs = self.policy.update(pending.events, labelled_examples=pending.labelled)
        except ServiceError as exc:
            # The policy recorded the events and counts before it tried the lock, so the
            # episode keeps waiting and the next update tries the lock again.
            logger.error("drift process of pipeline %s could not reach the job lock: %s", self.pipeline, exc)
            jobs = []
        self._publish(pending.events, jobs)

    def _publish(self, events: list[DriftEvent], jobs: list[TrainingJob]) -> None:
        key = self.pipeline.encode("utf-8")
        for event in events:
            self.producer.produce(self.drift_topic, key=key, value=event.model_dump_json().encode("utf-8"), on_delivery=self._deliveries.on_delivery)
        self.counters.drift_events += len(events)
        for job in jobs:
            self.producer.produce(self.jobs_topic, key=key, value=job.model_dump_json().encode("utf-8"), on_delivery=self._deliveries.on_delivery)
        if not events and not jobs:
            return
        try:
            self._deliveries.await_acks(DELIVERY_TIMEOUT_S)
        except DeliveryFailed as exc:
            logger.error("drift process lost %d drift events and %d jobs: %s", len(events), len(jobs), exc)
            for job in jobs:
                self._abandon(job)
            return
        for job in jobs:
            self.counters.jobs += 1
            logger.info("published training job %s to %s: %s", job.job_id, self.jobs_topic, job.reason)

    def _abandon(self, job: TrainingJob) -> None:
        """Free the lock of a job that never reached the jobs topic, so a later episode can start one."""
        assert self.policy is not None
        try:
            self.policy.finish_job(job.job_id)
        except ServiceError as exc:
            logger.error("could not release the job lock of job %s, which stays until it expires: %s", job.job_id, exc)

    def _read_champion(self) -> int | None:
        try:
            value = self._redis.get(self._keys.champion)
        except redis.RedisError as exc:
            logger.warning("drift process could not read the champion from %s: %s", self._keys.champion, exc)
            return self.model_version
        return None if value is None else int(value)

    def _log_stats(self) -> None:
        if time.monotonic() - self._stats_logged_at < STATS_INTERVAL_S:
            return
        self._stats_logged_at = time.monotonic()
        counters = self.counters
        logger.info(
            "drift process of pipeline %s monitors version %s; since start: %d examples, %d predictions, "
            "%d stale, %d invalid, %d drift events, %d job(s)",
            self.pipeline, self.model_version, counters.examples, counters.predictions, counters.stale_records,
            counters.invalid_records, counters.drift_events, counters.jobs,
        )

    def _shutdown(self) -> None:
        logger.info(
            "drift process of pipeline %s stopping: %d examples, %d predictions, %d drift events, %d job(s)",
            self.pipeline, self.counters.examples, self.counters.predictions, self.counters.drift_events, self.counters.jobs,
        )
        remaining = self.producer.flush(DELIVERY_TIMEOUT_S)
        if remaining:
            logger.error("drift process: %d drift events or jobs not acknowledged at shutdown", remaining)
        try:
            self.consumer.commit(asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._NO_OFFSET:
                logger.warning("drift process: final commit failed: %s", exc)
        self.consumer.close()
        if self._owns_redis:
            self._redis.close()


def _event_time(event_time_ms: int) -> datetime:
    return datetime.fromtimestamp(event_time_ms / 1000, tz=timezone.utc)

