"""An inference worker on RegistryModelSource swaps versions between batches, on the real broker."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from driftloop.config import Settings
from driftloop.infra.clients import make_producer, make_redis
from driftloop.infra.topics import AUDIT, DEAD_LETTER, PREDICTIONS, REQUESTS, create_topics
from driftloop.registry.heartbeat import WorkerHeartbeat, read_workers
from driftloop.registry.registry import ModelRegistry
from driftloop.registry.source import RegistryModelSource
from driftloop.schemas.events import InferenceRequest, Prediction, decode_event, encode_event
from driftloop.testing.models import write_tiny_artifact
from driftloop.workers.inference import InferenceWorker

pytestmark = pytest.mark.integration

LABELS = ("billing", "bug", "praise")
WAIT_LIMIT_S = 90.0


def wait_for(condition: Callable[[], object], description: str) -> object:
    deadline = time.monotonic() + WAIT_LIMIT_S
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"timed out after {WAIT_LIMIT_S:.0f} s waiting for {description}")


def produce_requests(settings: Settings, count: int) -> list[str]:
    producer = make_producer(settings)
    request_ids = []
    for index in range(count):
        request = InferenceRequest(
            request_id=uuid.uuid4().hex,
            event_time_ms=int(time.time() * 1000),
            text=f"request {index}: the invoice was charged twice",
        )
        producer.produce(settings.topic(REQUESTS), key=request.request_id.encode(), value=encode_event(request))
        request_ids.append(request.request_id)
    assert producer.flush(30) == 0
    return request_ids


class PredictionReader:
    """Reads the predictions topic from the beginning without joining a consumer group."""

    def __init__(self, settings: Settings) -> None:
        topic = settings.topic(PREDICTIONS)
        self.consumer = Consumer(settings.kafka_client_config(**{"group.id": f"reader-{uuid.uuid4().hex[:8]}"}))
        partitions = self.consumer.list_topics(topic, timeout=10).topics[topic].partitions
        self.consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING) for partition in partitions])
        self.predictions: dict[str, Prediction] = {}

    def read_until(self, request_ids: list[str]) -> dict[str, Prediction]:
        deadline = time.monotonic() + WAIT_LIMIT_S
        while not set(request_ids) <= set(self.predictions) and time.monotonic() < deadline:
            message = self.consumer.poll(0.5)
            if message is None or message.error() is not None:
                continue
            prediction = decode_event(Prediction, message.value())
            self.predictions[prediction.request_id] = prediction
        return {request_id: self.predictions[request_id] for request_id in request_ids if request_id in self.predictions}

    def close(self) -> None:
        self.consumer.close()


def test_worker_swaps_to_promoted_version(settings: Settings, tmp_path) -> None:
    create_topics(settings, (REQUESTS, PREDICTIONS, DEAD_LETTER, AUDIT))
    registry = ModelRegistry(settings)
    for seed in (0, 1):
        write_tiny_artifact(tmp_path / f"seed{seed}", LABELS, seed=seed)
        registry.register(tmp_path / f"seed{seed}")
    registry.promote(1, "first")
    source = RegistryModelSource(settings, device="cpu", reconcile_interval_s=2.0)
    worker = InferenceWorker(settings, source, heartbeat=WorkerHeartbeat.for_settings(settings))
    first_model = worker.model
    thread = threading.Thread(target=worker.run, name="inference-worker")
    thread.start()
    reader = PredictionReader(settings)
    client = make_redis(settings)
    try:
        before = reader.read_until(produce_requests(settings, 10))
        registry.promote(2, "second")
        wait_for(lambda: worker.model.version == 2, "the worker to swap in version 2")
        after = reader.read_until(produce_requests(settings, 10))
        heartbeats = wait_for(
            lambda: [w for w in read_workers(client, settings.topic_prefix) if w["version"] == 2],
            "a heartbeat that reports version 2",
        )
    finally:
        worker.stop()
        thread.join(60)
        reader.close()
        registry.close()

    assert len(before) == 10
    assert {prediction.model_version for prediction in before.values()} == {1}
    assert len(after) == 10
    assert {prediction.model_version for prediction in after.values()} == {2}
    assert heartbeats[0]["worker_id"] == worker.worker_id
    assert first_model.classifier is None
    assert read_workers(client, settings.topic_prefix) == []
    client.close()
