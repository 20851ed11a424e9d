"""Inference worker: a consumer-group member that classifies requests in micro-batches.

Delivery is at-least-once. A batch's offsets are stored for commit only after every
prediction of the batch is acknowledged by the broker, so a crash can repeat a batch
but never loses one.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition

from driftloop.config import Settings
from driftloop.errors import EventError
from driftloop.infra.clients import DeadLetterWriter, make_consumer, make_producer, source_of
from driftloop.infra.topics import PREDICTIONS, REQUESTS
from driftloop.model import CHARS_PER_TOKEN_BOUND
from driftloop.schemas.events import InferenceRequest, Prediction, decode_event, encode_event
from driftloop.infra.batches import DeliveryFailed, DeliveryTracker, collect_batch, rewind, store_offsets
from driftloop.workers.metrics import WorkerMetrics
from driftloop.workers.model_source import ModelSource

logger = logging.getLogger(__name__)

STAGE = "inference"
LAG_INTERVAL_S = 5.0
RETRY_BACKOFF_S = 1.0


def new_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:4]}"


@dataclass
class _Decoded:
    message: Message
    request: InferenceRequest


class InferenceWorker:
    """Reads requests, batches them, predicts, produces predictions, then stores offsets."""

    def __init__(
        self,
        settings: Settings,
        models: ModelSource,
        *,
        worker_id: str | None = None,
        group_id: str | None = None,
        metrics: WorkerMetrics | None = None,
        heartbeat=None,
    ) -> None:
        self.settings = settings
        self.models = models
        self.worker_id = worker_id or new_worker_id()
        self._owner = f"worker {self.worker_id}"
        self.group_id = group_id or settings.topic("inference")
        self.metrics = metrics or WorkerMetrics(self.worker_id)
        self.heartbeat = heartbeat
        self.consumer = make_consumer(settings, self.group_id)
        self.producer = make_producer(settings)
        self.dead_letters = DeadLetterWriter(settings, self.producer, STAGE, include_payload=True)
        self.requests_topic = settings.topic(REQUESTS)
        self.predictions_topic = settings.topic(PREDICTIONS)
        self.model = models.current()
        self.model_since = time.time()
        self.processed = 0
        self._stop = threading.Event()
        self._last_lag_check = 0.0
        self._deliveries = DeliveryTracker(self.producer)
        self.assigned_partitions: set[int] = set()
        self.metrics.model_version.set(self.model.version)
        self.metrics.model_since.set(self.model_since)

    # Lifecycle.

    def stop(self) -> None:
        """Ask the loop to finish its batch and return; safe from a signal handler."""
        self._stop.set()

    def run(self, max_batches: int | None = None) -> None:
        self.consumer.subscribe([self.requests_topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_revoke)
        logger.info("worker %s serving version %d from %s (group %s)", self.worker_id, self.model.version, self.requests_topic, self.group_id)
        batches = 0
        try:
            while not self._stop.is_set() and (max_batches is None or batches < max_batches):
                messages = collect_batch(self.consumer, self.settings.batch_size, self.settings.max_batch_wait_ms, self._owner)
                if messages:
                    self._process(messages)
                    batches += 1
                self._swap_model_if_ready()
                self._report()
        finally:
            self._shutdown()

    # Rebalance callbacks, called from inside consume().

    def _on_assign(self, consumer, partitions: list[TopicPartition]) -> None:
        self.assigned_partitions.update(p.partition for p in partitions)
        logger.info("worker %s assigned %s", self.worker_id, sorted(self.assigned_partitions))
        self._last_lag_check = 0.0  # report the new assignment at the next step

    def _on_revoke(self, consumer, partitions: list[TopicPartition]) -> None:
        self.assigned_partitions.difference_update(p.partition for p in partitions)
        logger.info("worker %s revoked %s", self.worker_id, sorted(p.partition for p in partitions))
        self._last_lag_check = 0.0

    # Steps of the loop.

    def _process(self, messages: list[Message]) -> None:
        decoded = self._decode(messages)
        try:
            if decoded:
                self._predict_and_produce(decoded)
            self._deliveries.await_acks(self.settings.shutdown_timeout_s)
        except DeliveryFailed as exc:
            logger.error("%s: %s; re-reading the batch from its first offsets", self._owner, exc)
            rewind(self.consumer, messages, self._owner)
            time.sleep(RETRY_BACKOFF_S)
            return
        store_offsets(self.consumer, messages, self._owner)

    def _decode(self, messages: list[Message]) -> list[_Decoded]:
        decoded = []
        for message in messages:
            try:
                decoded.append(_Decoded(message, decode_event(InferenceRequest, message.value())))
            except EventError as exc:
                self.dead_letters.send(message, exc.kind, str(exc))
                self.metrics.count_failure(exc.kind)
        return decoded

    def _predict_and_produce(self, decoded: list[_Decoded]) -> None:
        model = self.model
        texts = [item.request.text for item in decoded]
        started = time.perf_counter()
        results = model.predict_bucketed(texts, self.settings.forward_batch_size, self.settings.max_batch_tokens or None)
        inference_ms = (time.perf_counter() - started) * 1000.0
        now_ms = int(time.time() * 1000)
        self.metrics.batch_size.observe(len(decoded))
        self.metrics.batch_latency.observe(inference_ms)

        text_limit = model.metadata.max_length * CHARS_PER_TOKEN_BOUND
        for item, result in zip(decoded, results, strict=True):
            request = item.request
            latency_ms = max(0.0, float(now_ms - request.event_time_ms))
            prediction = Prediction(
                request_id=request.request_id,
                model_version=model.version,
                label=result.label,
                confidence=min(1.0, max(0.0, result.confidence)),
                scores=result.scores,
                latency_ms=latency_ms,
                inference_ms=inference_ms,
                worker_id=self.worker_id,
                event_time_ms=request.event_time_ms,
                predicted_at_ms=now_ms,
                # Only the part of the text the model saw travels on.
                text=request.text[:text_limit],
                attributes=request.attributes,
            )
            self.producer.produce(self.predictions_topic, key=request.request_id.encode("utf-8"), value=encode_event(prediction), on_delivery=self._deliveries.on_delivery)
            self.metrics.end_to_end.observe(latency_ms)

        self.processed += len(decoded)
        self.metrics.processed.inc(len(decoded))

    def _swap_model_if_ready(self) -> None:
        new_model = self.models.poll()
        if new_model is None or new_model is self.model:
            return
        old = self.model
        self.model = new_model
        self.model_since = time.time()
        self.metrics.model_version.set(new_model.version)
        self.metrics.model_since.set(self.model_since)
        logger.info("worker %s swapped version %d -> %d between batches", self.worker_id, old.version, new_model.version)

    def _report(self) -> None:
        now = time.monotonic()
        if now - self._last_lag_check < LAG_INTERVAL_S:
            return
        self._last_lag_check = now
        lag = self.lag()
        self.metrics.lag.set(lag)
        if self.heartbeat is not None:
            self.heartbeat.beat(self)

    def lag(self) -> int:
        """Return records behind the high watermark over the assigned partitions."""
        total = 0
        try:
            assignment = self.consumer.assignment()
            for position in self.consumer.position(assignment):
                _, high = self.consumer.get_watermark_offsets(position, timeout=1.0, cached=False)
                if position.offset >= 0:
                    total += max(0, high - position.offset)
        except KafkaException as exc:
            logger.debug("lag check failed: %s", exc)
        return total

    def _shutdown(self) -> None:
        logger.info("worker %s stopping after %d predictions", self.worker_id, self.processed)
        remaining = self.producer.flush(self.settings.shutdown_timeout_s)
        if remaining:
            logger.error("worker %s: %d predictions not acknowledged at shutdown; their requests will be re-read", self.worker_id, remaining)
        try:
            self.consumer.commit(asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._NO_OFFSET:
                logger.warning("worker %s: final commit failed: %s", self.worker_id, exc)
        self.consumer.close()
        self.models.close()
        if self.heartbeat is not None:
            self.heartbeat.remove(self)
