"""The trainer on the real broker, Redis and torch: jobs in, gated and registered candidates out."""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest
import torch

from driftloop.config import Settings
from driftloop.drift.events import MANUAL_DETECTOR, Episode, ExampleWindow, TrainingJob
from driftloop.drift.settings import GateSettings, TrainingSettings
from driftloop.infra.clients import make_producer, make_redis
from driftloop.infra.topics import AUDIT, EXAMPLES, JOBS, create_topics
from driftloop.model import TextClassifier, load_artifact
from driftloop.registry.cards import CARD_MARKDOWN
from driftloop.registry.records import Status
from driftloop.registry.registry import ModelRegistry
from driftloop.schemas.events import Example, encode_event
from driftloop.drift.redis_lock import job_lock_for, pipeline_name
from driftloop.testing.models import write_tiny_artifact
from driftloop.testing.topics import TopicReader
from driftloop.training import FitOptions
from driftloop.workers.trainer import TrainerOptions, TrainerWorker

pytestmark = pytest.mark.integration

CHAMPION_LABELS = ("billing", "bug")
WORDS = {
    "billing": ("invoice", "charged", "refund", "payment", "bill"),
    "bug": ("crash", "error", "broken", "freeze", "screen"),
    "praise": ("thanks", "great", "love", "excellent", "happy"),
}
SEGMENTS = ("retail", "business")
EPISODE_TIME = datetime(2026, 1, 1, tzinfo=timezone.utc)


class FailingFineTuner:
    """A fine-tuner that damages the candidate's head, then fails like an out-of-memory error."""

    def __init__(self) -> None:
        self.calls = 0

    def fine_tune(self, classifier: TextClassifier, tokenizer, texts, label_ids, options: FitOptions, device) -> dict[str, float]:
        self.calls += 1
        with torch.no_grad():
            classifier.head.weight.fill_(float("nan"))
        raise RuntimeError("injected failure: out of memory at step 3")


def text_for(label: str, rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS[label]) for _ in range(6))


def make_examples(labels: tuple[str, ...], count: int, version: int, seed: int) -> list[Example]:
    """Return ``count`` examples of ``version`` whose label cycles through ``labels``. Each prediction is wrong."""
    rng = random.Random(seed)
    examples = []
    for index in range(count):
        label = labels[index % len(labels)]
        examples.append(
            Example(
                request_id=uuid.uuid4().hex,
                text=text_for(label, rng),
                label=label,
                predicted_label="bug" if label != "bug" else "billing",
                confidence=0.5,
                model_version=version,
                attributes={"segment": SEGMENTS[index % len(SEGMENTS)]},
                event_time_ms=int(EPISODE_TIME.timestamp() * 1000) + index,
            )
        )
    return examples


def produce_examples(settings: Settings, examples: list[Example]) -> None:
    producer = make_producer(settings)
    for example in examples:
        producer.produce(settings.topic(EXAMPLES), key=example.request_id.encode(), value=encode_event(example))
        producer.poll(0)
    assert producer.flush(30) == 0


def with_gate(settings: Settings, **gate: float) -> Settings:
    defaults = {"min_group_examples": 10, "min_recent_examples": 5}
    drift = settings.drift.model_copy(update={"gate": GateSettings(**{**defaults, **gate})})
    return settings.model_copy(update={"drift": drift})


def start_pipeline(settings: Settings, tmp_path: Path, versions: int = 1) -> None:
    """Create the topics, register tiny versions 1..``versions`` and make the last one the champion."""
    create_topics(settings, (EXAMPLES, JOBS, AUDIT))
    with ModelRegistry(settings) as registry:
        for seed in range(versions):
            write_tiny_artifact(tmp_path / f"seed{seed}", CHAMPION_LABELS, seed=seed)
            registry.register(tmp_path / f"seed{seed}")
        registry.promote(versions, "trainer test")


def take_job(settings: Settings, model_version: int) -> TrainingJob:
    """Take the job lock as the drift process does and return the job."""
    pipeline = pipeline_name(settings)
    job_id = uuid.uuid4().hex
    client = make_redis(settings)
    try:
        assert job_lock_for(settings, client).acquire(pipeline, job_id, ttl_s=600)
    finally:
        client.close()
    return TrainingJob(
        job_id=job_id,
        pipeline=pipeline,
        model_version=model_version,
        reason="test job",
        episode=Episode(
            model_version=model_version,
            first_position=0,
            last_position=0,
            first_time=EPISODE_TIME,
            last_time=EPISODE_TIME,
            n_alarms=1,
            detectors=("adwin on error",),
        ),
        examples=ExampleWindow(start=0, end=0),
        requested_at=EPISODE_TIME,
    )


def lock_holder(settings: Settings) -> str | None:
    client = make_redis(settings)
    try:
        return job_lock_for(settings, client).holder(pipeline_name(settings))
    finally:
        client.close()


def run_job(settings: Settings, job: TrainingJob, **worker_options):
    worker = TrainerWorker(settings, **worker_options)
    try:
        return worker.handle_job(job)
    finally:
        worker.close()


def test_new_label_is_learned(settings: Settings, tmp_path: Path) -> None:
    settings = with_gate(settings, min_recent_gain=0.0)
    start_pipeline(settings, tmp_path)
    produce_examples(settings, make_examples(("billing", "bug", "praise"), 240, version=1, seed=0))
    job = take_job(settings, 1)

    outcome = run_job(settings, job)

    assert outcome.status == "promoted", outcome.reason
    with ModelRegistry(settings) as registry:
        record = registry.get(outcome.version)
        assert registry.champion_version() == outcome.version
    assert record.parent == 1
    assert record.labels == ("billing", "bug", "praise")
    assert record.metrics["new_labels"] == ["praise"]
    assert record.metrics["fit_embedded_texts"] == 240
    candidate = load_artifact(record.path, version=record.version)
    rng = random.Random(99)
    predictions = candidate.predict([text_for("praise", rng) for _ in range(20)])
    assert [prediction.label for prediction in predictions] == ["praise"] * 20
    assert lock_holder(settings) is None


def test_registered_candidate_has_data_window(settings: Settings, tmp_path: Path) -> None:
    settings = with_gate(settings, min_recent_gain=0.0)
    start_pipeline(settings, tmp_path)
    produce_examples(settings, make_examples(("billing", "bug", "praise"), 100, version=1, seed=1))
    job = take_job(settings, 1)

    outcome = run_job(settings, job)

    with ModelRegistry(settings) as registry:
        record = registry.get(outcome.version)
    window = record.data_window
    assert window["job_id"] == job.job_id
    assert window["topic"] == settings.topic(EXAMPLES)
    assert window["recent_examples"] == 100
    assert sum(offsets["end"] - offsets["start"] for offsets in window["read_offsets"].values()) == 100
    assert window["train_examples"] + window["recent_holdout"] == 100
    assert window["episode"]["detectors"] == ["adwin on error"]
    assert record.gate["promote"] is True
    assert {check["name"] for check in record.gate["checks"]} == {"recent_gain", "replay_loss", "group_loss"}
    assert set(record.group_metrics) == set(SEGMENTS)
    assert "## Training data window" in (record.path / CARD_MARKDOWN).read_text()


def test_gate_failure_rejects_candidate(settings: Settings, tmp_path: Path) -> None:
    # A gain of 1.0 is out of reach unless the champion scores 0 and the candidate 1.
    settings = with_gate(settings, min_recent_gain=1.0)
    start_pipeline(settings, tmp_path)
    produce_examples(settings, make_examples(("billing", "bug"), 120, version=1, seed=2))
    job = take_job(settings, 1)
    audit = TopicReader(settings, settings.topic(AUDIT))

    outcome = run_job(settings, job)
    events = audit.read_until(lambda records: any(b"version_rejected" in record.value() for record in records), timeout=30)
    audit.close()

    assert outcome.status == "rejected"
    with ModelRegistry(settings) as registry:
        record = registry.get(outcome.version)
        assert registry.champion_version() == 1
    assert record.status == Status.REJECTED
    assert "recent accuracy" in record.status_reason
    assert "is below the required +1.0000" in record.status_reason
    assert record.gate["promote"] is False
    assert any(b"version_rejected" in event.value() for event in events)
    assert lock_holder(settings) is None


def test_failed_fine_tune_keeps_champion(settings: Settings, tmp_path: Path) -> None:
    start_pipeline(settings, tmp_path)
    produce_examples(settings, make_examples(("billing", "bug", "praise"), 60, version=1, seed=3))
    job = take_job(settings, 1)
    fine_tuner = FailingFineTuner()

    outcome = run_job(settings, job, fine_tuner=fine_tuner)

    assert fine_tuner.calls == 1
    assert outcome.status == "failed"
    with ModelRegistry(settings) as registry:
        champion = registry.champion()
        record = registry.get(outcome.version)
    assert champion is not None
    assert champion.version == 1
    assert record.status == Status.REJECTED
    assert "RuntimeError: injected failure: out of memory at step 3" in record.status_reason
    assert job.job_id in record.status_reason
    assert record.parent == 1
    served = load_artifact(champion.path, version=1, expected_sha256=champion.sha256)
    assert not torch.isnan(served.classifier.head.weight).any()
    assert lock_holder(settings) is None


def test_job_started_too_often_fails(settings: Settings, tmp_path: Path) -> None:
    start_pipeline(settings, tmp_path)
    produce_examples(settings, make_examples(("billing", "bug"), 40, version=1, seed=4))
    job = take_job(settings, 1)
    client = make_redis(settings)
    client.set(f"{settings.topic_prefix}trainer:attempts:{job.job_id}", 2)
    client.close()
    fine_tuner = FailingFineTuner()

    outcome = run_job(settings, job, fine_tuner=fine_tuner)

    assert outcome.status == "failed"
    assert fine_tuner.calls == 0
    assert "started 3 times, more than max_attempts=2" in outcome.reason


def test_job_skipped_while_other_holds_lock(settings: Settings, tmp_path: Path) -> None:
    start_pipeline(settings, tmp_path)
    job = take_job(settings, 1)
    client = make_redis(settings)
    lock = job_lock_for(settings, client)
    lock.release(job.pipeline, job.job_id)
    lock.acquire(job.pipeline, "other-job", ttl_s=600)
    client.close()

    outcome = run_job(settings, job)

    assert outcome.status == "skipped"
    assert outcome.reason == f"job other-job holds the job lock of pipeline {job.pipeline}"
    assert lock_holder(settings) == "other-job"
    with ModelRegistry(settings) as registry:
        assert [record.version for record in registry.list_versions()] == [1]


def test_job_for_replaced_version_skipped(settings: Settings, tmp_path: Path) -> None:
    start_pipeline(settings, tmp_path, versions=2)
    job = take_job(settings, 1)

    outcome = run_job(settings, job)

    assert outcome.status == "skipped"
    assert outcome.reason == "the champion is version 2, not the job's version 1"
    assert lock_holder(settings) is None


def test_older_versions_fill_replay(settings: Settings, tmp_path: Path) -> None:
    settings = with_gate(settings, min_recent_gain=0.0, max_replay_loss=1.0)
    start_pipeline(settings, tmp_path, versions=2)
    produce_examples(settings, make_examples(("billing", "bug"), 80, version=1, seed=5))
    produce_examples(settings, make_examples(("billing", "bug", "praise"), 90, version=2, seed=6))
    job = take_job(settings, 2)

    outcome = run_job(settings, job)

    with ModelRegistry(settings) as registry:
        record = registry.get(outcome.version)
    assert record.parent == 2
    assert record.data_window["recent_examples"] == 90
    assert record.data_window["replay_examples"] == 80
    window = record.data_window
    # About a fifth of each is held out: which ones depends on a hash of the request ids.
    assert 1 <= window["replay_holdout"] < 80
    assert 1 <= window["recent_holdout"] < 90
    assert record.gate["replay"]["n"] == window["replay_holdout"]
    assert window["train_examples"] == 90 - window["recent_holdout"] + 80 - window["replay_holdout"]


def test_top_layers_mode_trains_encoder(settings: Settings, tmp_path: Path) -> None:
    training = TrainingSettings(mode="top_layers", layers=1, epochs=1)
    settings = with_gate(settings, min_recent_gain=0.0, max_group_loss=1.0)
    settings = settings.model_copy(update={"drift": settings.drift.model_copy(update={"training": training})})
    start_pipeline(settings, tmp_path)
    produce_examples(settings, make_examples(("billing", "bug", "praise"), 60, version=1, seed=7))
    job = take_job(settings, 1)

    outcome = run_job(settings, job)

    with ModelRegistry(settings) as registry:
        record = registry.get(outcome.version)
        champion = registry.get(1)
    assert record.metrics["train_layers"] == 1
    assert "fit_embedding_s" not in record.metrics
    candidate = load_artifact(record.path, version=record.version)
    parent = load_artifact(champion.path, version=1)
    top, bottom = candidate.classifier.encoder.encoder.layer, parent.classifier.encoder.encoder.layer
    assert not torch.equal(top[-1].output.dense.weight, bottom[-1].output.dense.weight)
    assert torch.equal(top[0].output.dense.weight, bottom[0].output.dense.weight)


def test_reads_every_example_of_large_batch(settings: Settings, tmp_path: Path) -> None:
    # One batch of 3,000 records: the embedded broker reports its end offset as 1.
    settings = with_gate(settings, min_recent_gain=0.0)
    start_pipeline(settings, tmp_path)
    producer = make_producer(settings, **{"linger.ms": 2000, "batch.size": 10_000_000, "batch.num.messages": 100_000})
    examples = make_examples(("billing", "bug"), 3000, version=1, seed=8)
    for example in examples:
        producer.produce(settings.topic(EXAMPLES), key=example.request_id.encode(), value=encode_event(example))
    assert producer.flush(30) == 0
    job = take_job(settings, 1)

    outcome = run_job(settings, job)

    with ModelRegistry(settings) as registry:
        record = registry.get(outcome.version)
    assert record.data_window["recent_examples"] == 3000


def test_reading_ends_under_steady_traffic(settings: Settings, tmp_path: Path) -> None:
    settings = with_gate(settings, min_recent_gain=0.0)
    start_pipeline(settings, tmp_path)
    produce_examples(settings, make_examples(("billing", "bug"), 200, version=1, seed=9))
    stop = threading.Event()
    late = make_examples(("billing", "bug"), 3000, version=1, seed=10)

    def produce_steadily() -> None:
        producer = make_producer(settings)
        for example in late:
            if stop.is_set():
                break
            producer.produce(settings.topic(EXAMPLES), key=example.request_id.encode(), value=encode_event(example))
            producer.poll(0)
            time.sleep(0.01)
        producer.flush(10)

    thread = threading.Thread(target=produce_steadily, name="steady-producer")
    thread.start()
    try:
        outcome = run_job(settings, take_job(settings, 1))
    finally:
        stop.set()
        thread.join(30)

    assert outcome.status == "promoted", outcome.reason
    with ModelRegistry(settings) as registry:
        recent = registry.get(outcome.version).data_window["recent_examples"]
    assert 200 <= recent < 3200


def test_job_without_examples_of_its_version_skipped(settings: Settings, tmp_path: Path) -> None:
    start_pipeline(settings, tmp_path, versions=2)
    produce_examples(settings, make_examples(("billing", "bug"), 80, version=1, seed=8))
    job = take_job(settings, 2)

    outcome = run_job(settings, job)

    assert outcome.status == "skipped"
    assert outcome.reason.startswith(f"no labelled examples of version 2 on {settings.topic(EXAMPLES)} yet")
    assert lock_holder(settings) is None
    with ModelRegistry(settings) as registry:
        assert [record.version for record in registry.list_versions()] == [1, 2]


def test_manual_job_skips_alarm_wait(settings: Settings, tmp_path: Path, caplog) -> None:
    settings = with_gate(settings, min_recent_gain=0.0)
    start_pipeline(settings, tmp_path)
    produce_examples(settings, make_examples(("billing", "bug"), 60, version=1, seed=9))
    job = take_job(settings, 1)
    job = job.model_copy(update={"episode": job.episode.model_copy(update={"detectors": (MANUAL_DETECTOR,)})})
    options = TrainerOptions(min_examples_after_alarm=1000, wait_timeout_s=600)

    with caplog.at_level(logging.INFO, logger="driftloop.workers.example_reader"):
        outcome = run_job(settings, job, options=options)

    assert outcome.status in ("promoted", "rejected")
    assert "waits for" not in caplog.text
