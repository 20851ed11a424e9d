"""The drift process as its own process: examples and predictions in, drift events and one training job out."""

from __future__ import annotations

import random
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from driftloop.config import Settings
from driftloop.drift.events import DriftEvent, TrainingJob
from driftloop.drift.synthetic import START_TIME, bernoulli_errors
from driftloop.infra.clients import make_producer, make_redis
from driftloop.infra.topics import AUDIT, DRIFT, EXAMPLES, JOBS, PREDICTIONS, create_topics
from driftloop.registry.registry import ModelRegistry
from driftloop.drift.redis_lock import job_lock_for, pipeline_name
from driftloop.schemas.events import Example, Prediction, encode_event
from driftloop.streams.drift import DriftProcess
from driftloop.testing.models import write_tiny_artifact
from driftloop.testing.services import spawn_driftloop, stop_process, wait_until, write_config
from driftloop.testing.topics import TopicReader

pytestmark = pytest.mark.integration

LABELS = ("billing", "bug", "praise")
STREAM_LENGTH = 3000
CHANGE_POSITION = 1000
WAIT_LIMIT_S = 120.0



def step_stream(seed: int) -> tuple[list[Example], list[Prediction]]:
    """Return examples whose accuracy steps from 0.8 to 0.4 at CHANGE_POSITION, and their predictions.

    The predictions' confidence falls at the same position, from Beta(8, 2) to Beta(2, 2).
    """
    rng = random.Random(seed)
    errors = bernoulli_errors(STREAM_LENGTH, seed, error_rate=0.2, change_position=CHANGE_POSITION, error_rate_after=0.6)
    examples, predictions = [], []
    for position, error in enumerate(errors):
        label = rng.choice(LABELS)
        predicted = rng.choice([other for other in LABELS if other != label]) if error else label
        confidence = rng.betavariate(8, 2) if position < CHANGE_POSITION else rng.betavariate(2, 2)
        event_time_ms = int((START_TIME + timedelta(seconds=position)).timestamp() * 1000)
        request_id = f"request-{position}"
        text = f"message number {position} about {label}"
        predictions.append(
            Prediction(
                request_id=request_id,
                model_version=1,
                label=predicted,
                confidence=confidence,
                scores={predicted: confidence},
                latency_ms=1.0,
                inference_ms=1.0,
                worker_id="test",
                event_time_ms=event_time_ms,
                predicted_at_ms=event_time_ms,
                text=text,
            )
        )
        examples.append(
            Example(
                request_id=request_id,
                text=text,
                label=label,
                predicted_label=predicted,
                confidence=confidence,
                model_version=1,
                event_time_ms=event_time_ms,
            )
        )
    return examples, predictions


def produce(settings: Settings, topic: str, events: list) -> None:
    producer = make_producer(settings)
    for event in events:
        producer.produce(topic, key=event.request_id.encode(), value=encode_event(event))
        producer.poll(0)
    assert producer.flush(30) == 0


def committed_offset(settings: Settings, group_id: str, topic: str) -> int:
    consumer = Consumer(settings.kafka_client_config(**{"group.id": group_id, "enable.auto.commit": False}))
    try:
        [position] = consumer.committed([TopicPartition(topic, 0)], timeout=10)
        return position.offset
    finally:
        consumer.close()


def start_pipeline(settings: Settings, tmp_path: Path) -> Settings:
    """Create one-partition topics, register a tiny version 1 as champion, and return the settings."""
    # One partition per topic keeps the stream in order, so alarm positions are stream positions.
    settings = settings.model_copy(update={"partitions": 1})
    create_topics(settings, (EXAMPLES, PREDICTIONS, DRIFT, JOBS, AUDIT))
    write_tiny_artifact(tmp_path / "v1", LABELS)
    with ModelRegistry(settings) as registry:
        registry.register(tmp_path / "v1")
        registry.promote(1, "drift test")
    return settings


def test_accuracy_step_starts_one_job(settings: Settings, tmp_path: Path) -> None:
    settings = start_pipeline(settings, tmp_path)
    examples, predictions = step_stream(seed=3)
    config = write_config(settings, tmp_path / "config.yaml")
    process = spawn_driftloop(["learn", "drift"], config, tmp_path / "drift.log")
    jobs_reader = TopicReader(settings, settings.topic(JOBS))
    drift_reader = TopicReader(settings, settings.topic(DRIFT))
    try:
        produce(settings, settings.topic(PREDICTIONS), predictions)
        produce(settings, settings.topic(EXAMPLES), examples)
        group = settings.topic("drift")
        processed = wait_until(
            lambda: committed_offset(settings, group, settings.topic(EXAMPLES)) >= STREAM_LENGTH
            and committed_offset(settings, group, settings.topic(PREDICTIONS)) >= STREAM_LENGTH,
            timeout=WAIT_LIMIT_S,
            interval=1.0,
        )
        assert process.poll() is None, (tmp_path / "drift.log").read_text()
        # Alarms that fire after the job must not start a second one, so the reader waits 3 s more.
        jobs = jobs_reader.read_for(3.0)
        events = drift_reader.read_until(lambda records: len(records) >= 2, timeout=10.0)
    finally:
        exit_code = stop_process(process)
        jobs_reader.close()
        drift_reader.close()

    assert processed, (tmp_path / "drift.log").read_text()
    assert exit_code == 0
    drift_events = [DriftEvent.model_validate_json(record.value()) for record in events]
    assert len(drift_events) >= 2
    assert {event.model_version for event in drift_events} == {1}
    assert all(event.position >= CHANGE_POSITION for event in drift_events)
    assert len({(event.detector, event.signal) for event in drift_events}) >= 2

    assert len(jobs) == 1
    job = TrainingJob.model_validate_json(jobs[0].value())
    assert job.model_version == 1
    assert job.pipeline == pipeline_name(settings)
    assert job.episode.first_position >= CHANGE_POSITION
    assert job.examples.end >= settings.drift.trigger.min_labelled_examples

    client = make_redis(settings)
    try:
        assert job_lock_for(settings, client).holder(job.pipeline) == job.job_id
    finally:
        client.close()


def run_until_committed(process: DriftProcess, settings: Settings, offset: int) -> None:
    """Run ``process`` in a thread until its group committed ``offset`` on both topics, then stop it."""
    thread = threading.Thread(target=process.run, name="drift-process")
    thread.start()
    try:
        reached = wait_until(
            lambda: committed_offset(settings, process.group_id, settings.topic(EXAMPLES)) >= offset
            and committed_offset(settings, process.group_id, settings.topic(PREDICTIONS)) >= offset,
            timeout=WAIT_LIMIT_S,
            interval=0.5,
        )
    finally:
        process.stop()
        thread.join(30)
    assert reached
    assert not thread.is_alive()


def test_restarted_process_keeps_drift_in_view(settings: Settings, tmp_path: Path) -> None:
    # Both groups read the stream up to the change and stop. Then the change arrives and
    # each restarts. Only the group that warms up detects the step, because the other one
    # has read nothing from before the change.
    settings = start_pipeline(settings, tmp_path)
    examples, predictions = step_stream(seed=5)
    produce(settings, settings.topic(PREDICTIONS), predictions[:CHANGE_POSITION])
    produce(settings, settings.topic(EXAMPLES), examples[:CHANGE_POSITION])
    groups = {"warm": settings.topic("drift-warm"), "cold": settings.topic("drift-cold")}
    for group in groups.values():
        run_until_committed(DriftProcess(settings, group_id=group), settings, CHANGE_POSITION)

    produce(settings, settings.topic(PREDICTIONS), predictions[CHANGE_POSITION:])
    produce(settings, settings.topic(EXAMPLES), examples[CHANGE_POSITION:])
    warm = DriftProcess(settings, group_id=groups["warm"])
    cold = DriftProcess(settings, group_id=groups["cold"])
    cold.warm_up = lambda *args, **kwargs: 0
    run_until_committed(warm, settings, STREAM_LENGTH)
    run_until_committed(cold, settings, STREAM_LENGTH)

    # The warm process read the 1,000 examples before the change again.
    assert warm.monitor.labelled.detector_counts()[0].n_updates == STREAM_LENGTH
    assert cold.monitor.labelled.detector_counts()[0].n_updates == STREAM_LENGTH - CHANGE_POSITION
    assert warm.counters.drift_events >= 1
    assert cold.counters.drift_events == 0
