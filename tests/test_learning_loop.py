"""The whole loop as separate processes: drift detected, job trained and gated, new version promoted and served."""

from __future__ import annotations

import json
import random
import time
import uuid
from pathlib import Path

import pytest
import torch

from driftloop.config import Settings
from driftloop.drift.settings import GateSettings, TriggerSettings
from driftloop.infra.topics import ALL_TOPICS, create_topics
from driftloop.model import save_artifact
from driftloop.producer import EventProducer
from driftloop.registry.records import Status
from driftloop.registry.registry import ModelRegistry
from driftloop.schemas.events import Feedback, InferenceRequest
from driftloop.testing.models import tiny_classifier
from driftloop.testing.services import spawn_driftloop, stop_process, wait_until, write_config
from driftloop.testing.topics import TopicReader
from driftloop.training import FitOptions, fit

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WORDS = {
    "billing": ("invoice", "charged", "refund", "payment", "bill"),
    "bug": ("crash", "error", "broken", "freeze", "screen"),
    "praise": ("thanks", "great", "love", "excellent", "happy"),
}
SEGMENTS = ("retail", "business", "premium")
BEFORE_DRIFT = 200
AFTER_DRIFT = 400
SEND_INTERVAL_S = 0.02
WAIT_LIMIT_S = 240.0



def text_for(label: str, rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS[label]) for _ in range(6))


def register_first_version(settings: Settings, directory: Path) -> None:
    """Fit a tiny classifier on billing and bug texts and make it version 1, the champion."""
    rng = random.Random(0)
    labels = ("billing", "bug")
    classifier, tokenizer, metadata = tiny_classifier(labels)
    rows = [(text_for(label, rng), index) for index, label in enumerate(labels) for _ in range(100)]
    fit(classifier, tokenizer, [text for text, _ in rows], [label for _, label in rows], FitOptions(), torch.device("cpu"))
    save_artifact(classifier, tokenizer, metadata, directory)
    with ModelRegistry(settings) as registry:
        registry.register(directory)
        registry.promote(1, "loop test")


def send(producer: EventProducer, labels: tuple[str, ...], count: int, rng: random.Random) -> list[tuple[str, str]]:
    """Send ``count`` requests with their feedback, and return (request id, label) pairs."""
    sent = []
    for index in range(count):
        label = labels[index % len(labels)]
        request_id = uuid.uuid4().hex
        now_ms = int(time.time() * 1000)
        producer.send_request(
            InferenceRequest(
                request_id=request_id,
                event_time_ms=now_ms,
                text=text_for(label, rng),
                attributes={"segment": SEGMENTS[index % len(SEGMENTS)]},
            )
        )
        producer.send_feedback(Feedback(request_id=request_id, label=label, source="test", event_time_ms=now_ms))
        sent.append((request_id, label))
        time.sleep(SEND_INTERVAL_S)
    producer.flush()
    return sent


def loop_settings(settings: Settings) -> Settings:
    drift = settings.drift.model_copy(
        update={
            "trigger": TriggerSettings(min_labelled_examples=100),
            "gate": GateSettings(min_group_examples=10, min_recent_examples=10),
        }
    )
    return settings.model_copy(update={"drift": drift, "device": "cpu", "torch_threads": 1})


def test_loop_promotes_and_serves_new_version(settings: Settings, tmp_path: Path) -> None:
    settings = loop_settings(settings)
    create_topics(settings, ALL_TOPICS)
    register_first_version(settings, tmp_path / "v1")
    config = write_config(settings, tmp_path / "config.yaml")
    processes = {
        "join": spawn_driftloop(["worker", "join"], config, tmp_path / "join.log"),
        "worker": spawn_driftloop(["worker", "inference", "--worker-id", "loop-worker"], config, tmp_path / "worker.log"),
        "drift": spawn_driftloop(["learn", "drift"], config, tmp_path / "drift.log"),
        "trainer": spawn_driftloop(
            ["learn", "trainer", "--min-examples-after-alarm", "150", "--wait-timeout", "60", "--nice", "0"],
            config,
            tmp_path / "trainer.log",
        ),
    }
    producer = EventProducer(settings)
    predictions = TopicReader(settings, settings.topic("predictions"))
    rng = random.Random(1)

    def logs() -> str:
        return "\n".join(f"--- {name}\n{(tmp_path / f'{name}.log').read_text()[-3000:]}" for name in processes)

    try:
        send(producer, ("billing", "bug"), BEFORE_DRIFT, rng)
        send(producer, ("billing", "bug", "praise"), AFTER_DRIFT, rng)
        with ModelRegistry(settings) as registry:
            promoted = wait_until(lambda: registry.champion_version() == 2, timeout=WAIT_LIMIT_S, interval=1.0)
            versions = registry.list_versions()
        assert promoted, logs()

        praise = send(producer, ("praise",), 30, rng)
        praise_ids = {request_id for request_id, _ in praise}

        def served_by_version_2(records) -> bool:
            labels = [json.loads(record.value()) for record in records]
            return sum(1 for p in labels if p["request_id"] in praise_ids and p["model_version"] == 2) >= 10

        records = predictions.read_until(served_by_version_2, timeout=WAIT_LIMIT_S)
        for name, process in processes.items():
            assert process.poll() is None, f"{name} exited\n{logs()}"
    finally:
        predictions.close()
        exit_codes = {name: stop_process(process) for name, process in processes.items()}

    assert versions[0].status == Status.RETIRED
    candidate = versions[1]
    assert candidate.version == 2
    assert candidate.parent == 1
    assert candidate.labels == ("billing", "bug", "praise")
    assert candidate.gate["promote"] is True
    assert candidate.data_window["recent_examples"] >= 150
    late = [json.loads(record.value()) for record in records]
    late = [p for p in late if p["request_id"] in praise_ids and p["model_version"] == 2]
    assert len(late) >= 10
    assert sum(p["label"] == "praise" for p in late) >= 0.9 * len(late)
    assert exit_codes["drift"] == 0
    assert exit_codes["trainer"] == 0
