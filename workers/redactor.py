"""Transit redactor: a consumer-group member that redacts the raw transit topic.

Producers that cannot redact send raw requests to ``{prefix}requests.raw``: JSON objects
with ``text`` and optionally ``request_id``, ``event_time_ms`` and ``attributes``. Each
batch is redacted, produced to the requests topic and acknowledged by the broker before
its offsets are committed, so delivery is at-least-once and a raw record never reaches
the requests topic. After each commit the redactor sends a DeleteRecords request for the
transit records below the committed offsets, so raw text stays on the broker only until
it is redacted. The transit topic's short retention is the backstop.

A broker that rejects DeleteRecords (the embedded Tansu broker closes the connection)
is detected at start by a probe at the low watermark, which deletes nothing. The
redactor then logs a WARNING and keeps working without truncation.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient

from driftloop.config import Settings
from driftloop.errors import EventError
from driftloop.infra.clients import DeadLetterWriter, make_consumer, make_producer
from driftloop.infra.topics import REQUESTS, REQUESTS_RAW, partition_count
from driftloop.redaction.ingress import build_raw_request, redact_requests
from driftloop.redaction.redactor import Redactor
from driftloop.schemas.events import InferenceRequest, encode_event
from driftloop.infra.batches import DeliveryFailed, DeliveryTracker, collect_batch, describe, next_offsets, rewind
from driftloop.workers.inference import new_worker_id

logger = logging.getLogger(__name__)

STAGE = "redactor"
PROBE_TIMEOUT_S = 5.0
DELETE_TIMEOUT_S = 10.0
RETRY_BACKOFF_S = 1.0


@dataclass(frozen=True)
class Truncation:
    """Whether the broker deletes records on request (DeleteRecords), and why not."""

    supported: bool
    reason: str = ""


def probe_truncation(settings: Settings, admin, topic: str, timeout: float = PROBE_TIMEOUT_S) -> Truncation:
    """Ask for DeleteRecords on partition 0 of ``topic`` at its low watermark.

    Deleting below the low watermark removes nothing, so the probe is safe on a broker
    that supports it. Any error, or no response within ``timeout`` seconds, means the
    broker cannot truncate the topic.
    """
    consumer = make_consumer(settings, f"{settings.topic(STAGE)}-probe")
    try:
        low, _ = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=timeout, cached=False)
    except KafkaException as exc:
        return Truncation(False, f"could not read the low watermark of {topic}[0]: {exc.args[0]}")
    finally:
        consumer.close()
    futures = admin.delete_records(
        [TopicPartition(topic, 0, low)], request_timeout=timeout, operation_timeout=timeout
    )
    try:
        for future in futures.values():
            future.result(timeout=timeout + 1.0)
    except KafkaException as exc:
        return Truncation(False, f"DeleteRecords on {topic}[0]@{low} failed: {exc.args[0]}")
    except TimeoutError:
        return Truncation(False, f"DeleteRecords on {topic}[0]@{low} timed out after {timeout:.0f} s")
    return Truncation(True)


@dataclass
class _Decoded:
    message: Message
    raw: InferenceRequest


class TransitRedactor:
    """Reads raw requests, redacts them in batches, produces them, commits, then truncates."""

    def __init__(
        self,
        settings: Settings,
        redactor: Redactor,
        *,
        worker_id: str | None = None,
        group_id: str | None = None,
        admin: Any = None,
    ) -> None:
        self.settings = settings
        self.redactor = redactor
        self.worker_id = worker_id or new_worker_id()
        self._owner = f"redactor {self.worker_id}"
        self.group_id = group_id or settings.topic(STAGE)
        self.transit_topic = settings.topic(REQUESTS_RAW)
        self.requests_topic = settings.topic(REQUESTS)
        partition_count(settings, REQUESTS_RAW)  # raises ServiceError naming the fix if the topic is missing
        # Offsets are committed by hand, after the acknowledgements, so each commit's
        # offsets are known exactly and DeleteRecords never passes them.
        self.consumer = make_consumer(settings, self.group_id, **{"enable.auto.commit": False})
        self.producer = make_producer(settings)
        self.dead_letters = DeadLetterWriter(settings, self.producer, STAGE, include_payload=False)
        self.admin = admin if admin is not None else AdminClient(settings.kafka_client_config())
        self.truncation = Truncation(False, "not probed yet")
        self.processed = 0
        self.entity_counts: Counter[str] = Counter()
        self._stop = threading.Event()
        self._deliveries = DeliveryTracker(self.producer)
        self._deletions: list[tuple[list[TopicPartition], dict[TopicPartition, Future]]] = []
        self._failed_deletions = 0

    # Lifecycle.

    def stop(self) -> None:
        """Ask the loop to finish its batch and return; safe from a signal handler."""
        self._stop.set()

    def run(self, max_batches: int | None = None) -> None:
        self._probe()
        self.consumer.subscribe([self.transit_topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_revoke)
        logger.info("redactor %s reading %s into %s (group %s)", self.worker_id, self.transit_topic, self.requests_topic, self.group_id)
        batches = 0
        try:
            while not self._stop.is_set() and (max_batches is None or batches < max_batches):
                messages = collect_batch(self.consumer, self.settings.batch_size, self.settings.max_batch_wait_ms, self._owner)
                if messages:
                    self._process(messages)
                    batches += 1
                self._reap_deletions(wait=False)
        finally:
            self._shutdown()

    def _probe(self) -> None:
        self.truncation = probe_truncation(self.settings, self.admin, self.transit_topic)
        if self.truncation.supported:
            logger.info("redactor %s: the broker supports DeleteRecords; %s is truncated after each commit", self.worker_id, self.transit_topic)
            return
        retention = " (the embedded broker enforces no retention either)" if self.settings.embedded else ""
        logger.warning(
            "redactor %s: %s cannot be truncated, so raw texts stay on the broker until its retention "
            "removes them%s: %s",
            self.worker_id,
            self.transit_topic,
            retention,
            self.truncation.reason,
        )

    def _on_assign(self, consumer, partitions: list[TopicPartition]) -> None:
        logger.info("redactor %s assigned %s", self.worker_id, sorted(p.partition for p in partitions))

    def _on_revoke(self, consumer, partitions: list[TopicPartition]) -> None:
        logger.info("redactor %s revoked %s", self.worker_id, sorted(p.partition for p in partitions))

    # Steps of the loop.

    def _process(self, messages: list[Message]) -> None:
        """Redact, produce, await acks, commit, then ask for the truncation up to the commit."""
        decoded = self._decode(messages)
        try:
            self._redact_and_produce(decoded)
            self._deliveries.await_acks(self.settings.shutdown_timeout_s)
        except DeliveryFailed as exc:
            logger.error("%s: %s; re-reading the batch from its first offsets", self._owner, exc)
            rewind(self.consumer, messages, self._owner)
            time.sleep(RETRY_BACKOFF_S)
            return
        committed = self._commit(messages)
        if committed and self.truncation.supported:
            self._truncate(committed)

    def _decode(self, messages: list[Message]) -> list[_Decoded]:
        decoded = []
        for message in messages:
            try:
                decoded.append(_Decoded(message, parse_transit_record(message)))
            except EventError as exc:
                self.dead_letters.send(message, exc.kind, str(exc))
        return decoded

    def _redact_and_produce(self, decoded: list[_Decoded]) -> None:
        outcomes = redact_requests(self.redactor, [item.raw for item in decoded])
        for item, outcome in zip(decoded, outcomes, strict=True):
            if outcome.request is None:
                self.dead_letters.send(item.message, "redaction_failed", outcome.error)
                continue
            request = outcome.request
            self.producer.produce(
                self.requests_topic,
                key=request.request_id.encode("utf-8"),
                value=encode_event(request),
                on_delivery=self._deliveries.on_delivery,
            )
            self.entity_counts.update(outcome.entity_counts)
        self.processed += len(decoded)

    def _commit(self, messages: list[Message]) -> list[TopicPartition]:
        """Commit the processed offset + 1 of each partition; return the partitions committed."""
        offsets = next_offsets(messages)
        try:
            results = self.consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            # A partition revoked meanwhile is re-read by its new owner: repeated, not lost.
            logger.warning("redactor %s: commit of %s failed: %s", self.worker_id, describe(offsets), exc.args[0])
            return []
        committed = [result for result in results or [] if result.error is None and result.offset >= 0]
        for result in results or []:
            if result.error is not None:
                logger.warning("redactor %s: commit of %s[%d]@%d failed: %s", self.worker_id, result.topic, result.partition, result.offset, result.error)
        return committed

    def _truncate(self, committed: list[TopicPartition]) -> None:
        request = [TopicPartition(self.transit_topic, tp.partition, tp.offset) for tp in committed]
        try:
            futures = self.admin.delete_records(request, request_timeout=DELETE_TIMEOUT_S, operation_timeout=DELETE_TIMEOUT_S)
        except KafkaException as exc:
            self._count_failed_deletion(request, exc.args[0])
            return
        self._deletions.append((request, futures))

    def _reap_deletions(self, wait: bool) -> None:
        """Log the DeleteRecords requests that failed; with ``wait``, wait for the pending ones."""
        pending = []
        for request, futures in self._deletions:
            if not wait and not all(future.done() for future in futures.values()):
                pending.append((request, futures))
                continue
            for partition, future in futures.items():
                try:
                    future.result(timeout=DELETE_TIMEOUT_S + 1.0)
                except (KafkaException, TimeoutError) as exc:
                    error = exc.args[0] if isinstance(exc, KafkaException) else f"timed out after {DELETE_TIMEOUT_S:.0f} s"
                    self._count_failed_deletion([partition], error)
        self._deletions = pending

    def _count_failed_deletion(self, partitions: list[TopicPartition], error: object) -> None:
        # Logged for the first and then every 100th failure: a broker that stops
        # accepting DeleteRecords would otherwise log once per batch.
        self._failed_deletions += 1
        if self._failed_deletions == 1 or self._failed_deletions % 100 == 0:
            logger.warning(
                "redactor %s: DeleteRecords up to %s failed (%d failures so far); retention removes those records: %s",
                self.worker_id,
                describe(partitions),
                self._failed_deletions,
                error,
            )

    def _shutdown(self) -> None:
        logger.info(
            "redactor %s stopping after %d raw requests, %d dead-lettered; redacted spans %s",
            self.worker_id,
            self.processed,
            self.dead_letters.count,
            dict(sorted(self.entity_counts.items())),
        )
        remaining = self.producer.flush(self.settings.shutdown_timeout_s)
        if remaining:
            logger.error("redactor %s: %d redacted requests not acknowledged at shutdown; their raw records will be re-read", self.worker_id, remaining)
        self._reap_deletions(wait=True)
        self.consumer.close()


def parse_transit_record(message: Message) -> InferenceRequest:
    """Decode a transit record into a raw request; raise EventError with a reason kind.

    A missing ``request_id`` becomes ``transit-{partition}-{offset}``, so a record read
    twice after a crash yields the same request id. A missing ``event_time_ms`` becomes
    the record's timestamp. Other keys of the object, and the record key, are dropped
    and never forwarded: they may hold personal data.
    """
    value = message.value()
    if value is None:
        raise EventError("record has no value (a tombstone)", kind="empty_value")
    try:
        data: Any = json.loads(value.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise EventError(f"value is not valid UTF-8 at byte {exc.start}", kind="not_utf8") from None
    except json.JSONDecodeError as exc:
        raise EventError(f"value is not valid JSON: {exc.msg} at char {exc.pos}", kind="invalid_json") from None
    if not isinstance(data, dict):
        raise EventError(f"expected a JSON object, got {type(data).__name__}", kind="wrong_type")
    _, timestamp = message.timestamp()
    return build_raw_request(
        data.get("text"),
        request_id=data.get("request_id", f"transit-{message.partition()}-{message.offset()}"),
        event_time_ms=data.get("event_time_ms", timestamp if timestamp and timestamp > 0 else None),
        attributes=data.get("attributes"),
    )
