"""Replays on the real broker, Redis, join and models: determinism, label flips, the report.

Two replays of one recording serve versions 1 and 2 side by side: the first from the
registry, the second from the artifact directories. Both models are tiny encoders with
a trained head, on three banking77 intents.
"""

from __future__ import annotations

import csv
import gzip
import json
import random
import uuid
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from driftloop.infra.topics import REQUESTS

from driftloop.config import Settings
from driftloop.model import load_artifact
from driftloop.registry.registry import ModelRegistry
from driftloop.replay.errors import RecordingError
from driftloop.replay.lanes import resolve_models
from driftloop.replay.reader import read_recording
from driftloop.replay.runner import ReplayOptions, run_replay
from driftloop.testing.plugin import train_tiny_artifact, write_labelled_recording

pytestmark = pytest.mark.integration

INTENTS = ("card_arrival", "exchange_rate", "lost_or_stolen_card")
SEGMENTS = ("retail", "business")


def banking77_rows(shared_data: Path) -> list[tuple[str, str]]:
    with (shared_data / "banking77" / "train.csv").open(encoding="utf-8", newline="") as handle:
        rows = [(row["text"], row["category"]) for row in csv.DictReader(handle) if row["category"] in INTENTS]
    random.Random(0).shuffle(rows)
    return rows


@pytest.fixture(scope="module")
def scenario(driftloop_stack: Settings, shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Train versions 1 and 2, write a recording of 147 requests (3 in 4 with feedback), replay it twice."""
    workdir = tmp_path_factory.mktemp("replay-pipeline")
    settings = driftloop_stack.model_copy(update={"topic_prefix": f"t{uuid.uuid4().hex[:8]}.", "state_dir": workdir})
    rows = banking77_rows(shared_data)
    train, stream = rows[:200], rows[200:]
    texts, labels = [text for text, _ in train], [label for _, label in train]
    models = {
        version: train_tiny_artifact(workdir / f"model-{version}", texts, labels, seed=version - 1)
        for version in (1, 2)
    }
    recording_path = write_labelled_recording(
        workdir / "stream.jsonl.gz",
        [(text, None if index % 4 == 3 else label) for index, (text, label) in enumerate(stream)],
        attributes=lambda index: {"segment": SEGMENTS[index % 2]},
    )
    with ModelRegistry(settings) as registry:
        assert [registry.register(models[version]).version for version in (1, 2)] == [1, 2]

    recording = read_recording(recording_path)
    from_registry = run_replay(
        settings, recording, resolve_models(settings, versions=[1, 2]), ReplayOptions(timeout_s=120, keep_topics=True)
    )
    from_artifacts = run_replay(
        settings, recording, resolve_models(settings, artifacts=sorted(models.items())), ReplayOptions(timeout_s=120)
    )
    return {
        "settings": settings,
        "stream": stream,
        "models": models,
        "recording": recording,
        "first": from_registry,
        "second": from_artifacts,
    }


def offline_labels(model_dir: Path, texts: list[str], batch_size: int) -> list[str]:
    model = load_artifact(model_dir)
    return [result.label for result in model.predict_bucketed(texts, batch_size)]


def test_replays_complete(scenario: dict) -> None:
    for name in ("first", "second"):
        result = scenario[name]
        assert result.outcome.complete
        assert result.lane_names == ["v1", "v2"]
        for lane in ("v1", "v2"):
            assert result.missing_predictions(lane) == []
            assert result.report["lanes"][lane]["dead_letters"] == 0


def test_same_version_same_predictions(scenario: dict) -> None:
    first, second = scenario["first"], scenario["second"]

    for lane in ("v1", "v2"):
        assert first.labels(lane) == second.labels(lane)
        assert len(first.labels(lane)) == len(scenario["stream"])
        for request_id, prediction in first.predictions(lane).items():
            assert prediction.model_version == int(lane[1:])
            assert prediction.confidence == pytest.approx(second.predictions(lane)[request_id].confidence, abs=1e-6)


def test_label_flips_match_offline(scenario: dict) -> None:
    result, settings = scenario["first"], scenario["settings"]
    texts = [text for text, _ in scenario["stream"]]
    request_ids = result.request_ids
    offline = {version: offline_labels(scenario["models"][version], texts, settings.batch_size) for version in (1, 2)}
    offline_flips = [request_ids[i] for i in range(len(texts)) if offline[1][i] != offline[2][i]]

    comparison = result.report["comparisons"][0]

    assert offline_flips, "the two models should disagree somewhere for this test to mean anything"
    assert len(offline_flips) < len(texts)
    assert result.label_flips("v1", "v2") == offline_flips
    assert comparison["label_flips"] == len(offline_flips)
    assert [example["request_id"] for example in comparison["flip_examples"]] == offline_flips[:10]


def test_right_and_wrong_match_offline(scenario: dict) -> None:
    result, settings = scenario["first"], scenario["settings"]
    texts = [text for text, _ in scenario["stream"]]
    truth = [None if index % 4 == 3 else label for index, (_, label) in enumerate(scenario["stream"])]
    offline = {version: offline_labels(scenario["models"][version], texts, settings.batch_size) for version in (1, 2)}
    labelled = [i for i, label in enumerate(truth) if label is not None]
    only_v1 = [i for i in labelled if offline[1][i] == truth[i] != offline[2][i]]
    only_v2 = [i for i in labelled if offline[2][i] == truth[i] != offline[1][i]]

    comparison = result.report["comparisons"][0]

    assert comparison["labelled"] == len(labelled)
    assert comparison["a_right_b_wrong"]["count"] == len(only_v1)
    assert comparison["b_right_a_wrong"]["count"] == len(only_v2)
    assert comparison["a_right_b_wrong"]["examples"] == [result.request_ids[i] for i in only_v1[:10]]
    for lane, version in (("v1", 1), ("v2", 2)):
        correct = sum(1 for i in labelled if offline[version][i] == truth[i])
        assert result.report["lanes"][lane]["correct"] == correct
        assert result.accuracy(lane) == pytest.approx(correct / len(labelled))


def test_join_agrees_with_report(scenario: dict) -> None:
    result = scenario["first"]

    for lane in ("v1", "v2"):
        figures = result.report["lanes"][lane]
        assert figures["online"]["joined"] == figures["labelled"]
        assert figures["online"]["accuracy"] == pytest.approx(figures["accuracy"])
        assert sum(group["n"] for group in figures["per_group"].values()) == figures["labelled"]
        assert set(figures["per_group"]) == set(SEGMENTS)


def test_replay_keeps_order_per_partition(scenario: dict) -> None:
    """Every partition of a lane's requests topic contains its requests in recorded order."""
    result, settings = scenario["first"], scenario["settings"]
    topic = f"{result.outcome.topic_prefix}v1.{REQUESTS}"
    consumer = Consumer(
        settings.kafka_client_config(**{"group.id": f"check-{uuid.uuid4().hex[:8]}", "enable.partition.eof": True})
    )
    consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING) for partition in range(settings.partitions)])
    by_partition: dict[int, list[str]] = {}
    ended: set[int] = set()
    for _ in range(200):
        if len(ended) == settings.partitions:
            break
        for message in consumer.consume(500, timeout=0.2):
            if message.error() is not None:
                ended.add(message.partition())
                continue
            by_partition.setdefault(message.partition(), []).append(json.loads(message.value())["request_id"])
    consumer.close()
    position = {request_id: index for index, request_id in enumerate(result.request_ids)}

    assert sum(len(ids) for ids in by_partition.values()) == len(result.request_ids)
    for ids in by_partition.values():
        assert ids == sorted(ids, key=position.__getitem__)


def test_report_outputs(scenario: dict) -> None:
    result = scenario["first"]

    text = result.text()
    page = result.html()
    data = json.loads(result.to_json())

    assert "v1 vs v2:" in text
    assert "label flips" in text
    assert page.startswith("<!DOCTYPE html>")
    assert page.count("<svg") == 2
    assert "<script" not in page
    assert data["replay"]["events_published"] == len(result.request_ids) + data["recording"]["labelled_requests"]
    assert data["lanes"]["v1"]["latency_ms"]["p50"] is not None
    assert data["lanes"]["v1"]["per_class"]["card_arrival"]["support"] > 0


def test_topics_removed_unless_kept(scenario: dict) -> None:
    settings = scenario["settings"]
    topics = AdminClient(settings.kafka_client_config()).list_topics(timeout=10).topics

    assert any(name.startswith(scenario["first"].outcome.topic_prefix) for name in topics)
    assert not any(name.startswith(scenario["second"].outcome.topic_prefix) for name in topics)


# A bad recording publishes nothing.


def rewrite_lines(path: Path, edit) -> None:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    edit(lines)
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("".join(line + "\n" for line in lines))


def cut_end(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 40])


def break_json(lines: list[str]) -> None:
    lines[2] = lines[2][:-5]


def raise_schema_version(lines: list[str]) -> None:
    header = json.loads(lines[0])
    header["schema_versions"]["requests"] = 2
    lines[0] = json.dumps(header)


def miscount_requests(lines: list[str]) -> None:
    header = json.loads(lines[0])
    header["counts"]["requests"] += 1
    lines[0] = json.dumps(header)


@pytest.mark.parametrize(
    ("damage", "line", "message"),
    [
        (cut_end, None, "truncated or corrupt"),
        (lambda path: rewrite_lines(path, break_json), 3, "not valid JSON"),
        (lambda path: rewrite_lines(path, raise_schema_version), 1, "unknown schema version 2 for topic 'requests'"),
        (lambda path: rewrite_lines(path, miscount_requests), 1, "counts do not match"),
    ],
    ids=["truncated", "line not JSON", "unknown schema version", "header does not match"],
)
def test_bad_recording_publishes_nothing(
    driftloop_settings: Settings, driftloop_replay, tmp_path: Path, damage, line, message
) -> None:
    rows = [(f"card {i} lost", "lost_or_stolen_card") for i in range(20)]
    path = write_labelled_recording(tmp_path / "bad.jsonl.gz", rows)
    damage(path)

    # The model directory does not exist: the recording is validated before the models are looked at.
    with pytest.raises(RecordingError, match=message) as caught:
        driftloop_replay(path, models={1: tmp_path / "not-checked"})

    if line is not None:
        assert caught.value.line == line
    assert f"line {caught.value.line}:" in str(caught.value)
    topics = AdminClient(driftloop_settings.kafka_client_config()).list_topics(timeout=10).topics
    assert [name for name in topics if name.startswith(driftloop_settings.topic_prefix)] == []
