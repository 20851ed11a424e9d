"""`driftloop record`: capturing the redacted topics from the real broker, with bounds."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from driftloop.infra.clients import make_producer
from driftloop.infra.topics import FEEDBACK, PREDICTIONS, REQUESTS, REQUESTS_RAW, create_topics
from driftloop.schemas.events import Feedback, InferenceRequest, Prediction, encode_event

import driftloop.cli
from driftloop.config import Settings
from driftloop.replay.errors import ReplayError
from driftloop.replay.format import Bounds
from driftloop.replay.reader import read_recording
from driftloop.replay.record import record
from driftloop.testing.services import write_config

pytestmark = pytest.mark.integration

START_MS = 1_700_000_000_000
REQUESTS_SENT = 30
FEEDBACK_SENT = 20
PREDICTIONS_SENT = 10


def add_replay_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    """Register ``driftloop.replay.cli`` with the command line, unless it already is."""
    if "driftloop.replay.cli" not in driftloop.cli.COMMAND_MODULES:
        monkeypatch.setattr(driftloop.cli, "COMMAND_MODULES", (*driftloop.cli.COMMAND_MODULES, "driftloop.replay.cli"))


@pytest.fixture
def source(driftloop_settings: Settings) -> Settings:
    """A pipeline with 30 requests (one a second), feedback for the first 20, predictions for the first 10,
    one request that is not valid JSON, and raw text on the transit topic."""
    settings = driftloop_settings.model_copy(update={"kafka_config": {"sasl.password": "hunter2"}})
    create_topics(settings, (REQUESTS, REQUESTS_RAW, FEEDBACK, PREDICTIONS))
    producer = make_producer(settings)
    for index in range(REQUESTS_SENT):
        sent_ms = START_MS + index * 1000
        request = InferenceRequest(
            request_id=f"r{index:02d}", event_time_ms=sent_ms, text=f"card {index} has not arrived"
        )
        key = request.request_id.encode()
        producer.produce(
            settings.topic(REQUESTS),
            key=key,
            value=encode_event(request),
            timestamp=sent_ms,
            headers=[("origin", b"app")],
        )
        producer.produce(
            settings.topic(REQUESTS_RAW), key=key, value=b'{"text": "Call Ana at 555-0100"}', timestamp=sent_ms
        )
        if index < FEEDBACK_SENT:
            feedback = Feedback(request_id=request.request_id, label="card_arrival", event_time_ms=sent_ms + 500)
            producer.produce(settings.topic(FEEDBACK), key=key, value=encode_event(feedback), timestamp=sent_ms + 500)
        if index < PREDICTIONS_SENT:
            producer.produce(
                settings.topic(PREDICTIONS),
                key=key,
                value=encode_event(prediction(request, 3 + index % 2)),
                timestamp=sent_ms + 100,
            )
    producer.produce(settings.topic(REQUESTS), key=b"broken", value=b"{not json", timestamp=START_MS + 99_000)
    assert producer.flush(30) == 0
    return settings


def prediction(request: InferenceRequest, version: int) -> Prediction:
    return Prediction(
        request_id=request.request_id,
        model_version=version,
        label="card_arrival",
        confidence=0.8,
        scores={"card_arrival": 0.8},
        latency_ms=100.0,
        inference_ms=2.0,
        worker_id="w",
        event_time_ms=request.event_time_ms,
        predicted_at_ms=request.event_time_ms + 100,
        text=request.text,
    )


def test_record_all_requests_and_feedback(source: Settings, tmp_path: Path) -> None:
    header = record(source, tmp_path / "all.jsonl.gz")
    recording = read_recording(tmp_path / "all.jsonl.gz")

    assert header.counts == {REQUESTS: REQUESTS_SENT, FEEDBACK: FEEDBACK_SENT}
    assert header.skipped_invalid == 1
    assert header.source.topics[REQUESTS].name == source.topic(REQUESTS)
    assert header.source.topics[REQUESTS].partitions == source.partitions
    assert [r.request_id for r in recording.requests] == [f"r{i:02d}" for i in range(REQUESTS_SENT)]
    assert recording.requests[0].headers == (("origin", b"app"),)
    assert recording.requests[0].key == b"r00"
    assert recording.requests[0].timestamp_ms == START_MS
    timestamps = [r.timestamp_ms for r in recording.events]
    assert timestamps == sorted(timestamps)


def test_record_masks_secrets(source: Settings, tmp_path: Path) -> None:
    record(source, tmp_path / "masked.jsonl.gz")

    with gzip.open(tmp_path / "masked.jsonl.gz", "rt", encoding="utf-8") as handle:
        text = handle.read()

    assert "hunter2" not in text
    assert json.loads(text.splitlines()[0])["config"]["kafka_config"] == {"sasl.password": "***"}


def test_record_keeps_partition_offset_order(source: Settings, tmp_path: Path) -> None:
    record(source, tmp_path / "order.jsonl.gz")
    recording = read_recording(tmp_path / "order.jsonl.gz")

    for partition in range(source.partitions):
        offsets = [r.offset for r in recording.requests if r.partition == partition]
        assert offsets == sorted(offsets)
        assert offsets[0] == 0


def test_record_count_takes_earliest(source: Settings, tmp_path: Path) -> None:
    header = record(source, tmp_path / "count.jsonl.gz", bounds=Bounds(count=7))
    recording = read_recording(tmp_path / "count.jsonl.gz")

    assert header.total == 7
    # Request i at i s and its feedback at i s + 500 ms: the 7 earliest records.
    assert [(r.topic, r.request_id) for r in recording.events] == [
        (REQUESTS, "r00"), (FEEDBACK, "r00"), (REQUESTS, "r01"), (FEEDBACK, "r01"),
        (REQUESTS, "r02"), (FEEDBACK, "r02"), (REQUESTS, "r03"),
    ]  # fmt: skip


def test_record_time_range(source: Settings, tmp_path: Path) -> None:
    bounds = Bounds(since_ms=START_MS + 10_000, until_ms=START_MS + 19_999)
    header = record(source, tmp_path / "window.jsonl.gz", bounds=bounds)
    recording = read_recording(tmp_path / "window.jsonl.gz")

    assert [r.request_id for r in recording.requests] == [f"r{i:02d}" for i in range(10, 20)]
    assert [r.request_id for r in recording.feedback] == [f"r{i:02d}" for i in range(10, 20)]
    assert header.bounds == bounds


def test_record_offset_range(source: Settings, tmp_path: Path) -> None:
    record(source, tmp_path / "offsets.jsonl.gz", topics=[REQUESTS], bounds=Bounds(start_offset=2, end_offset=5))
    recording = read_recording(tmp_path / "offsets.jsonl.gz")

    for partition in range(source.partitions):
        assert [r.offset for r in recording.requests if r.partition == partition] == [2, 3, 4]


def test_record_predictions_and_versions(source: Settings, tmp_path: Path) -> None:
    header = record(source, tmp_path / "predictions.jsonl.gz", topics=[PREDICTIONS, REQUESTS])

    assert header.counts == {REQUESTS: REQUESTS_SENT, PREDICTIONS: PREDICTIONS_SENT}
    assert header.model_versions == [3, 4]
    assert header.champion_version is None


def test_record_rejects_raw_topic(source: Settings, tmp_path: Path) -> None:
    with pytest.raises(ReplayError, match="'requests.raw' contains raw, unredacted text and can never be recorded"):
        record(source, tmp_path / "raw.jsonl.gz", topics=[REQUESTS, REQUESTS_RAW])

    assert not (tmp_path / "raw.jsonl.gz").exists()


def test_record_rejects_dead_letters(source: Settings, tmp_path: Path) -> None:
    with pytest.raises(ReplayError, match="'dlq' cannot be recorded"):
        record(source, tmp_path / "dlq.jsonl.gz", topics=["dlq"])


def test_record_missing_topic(driftloop_settings: Settings, tmp_path: Path) -> None:
    with pytest.raises(ReplayError, match="not found on"):
        record(driftloop_settings, tmp_path / "none.jsonl.gz")


def test_record_empty_offset_range(source: Settings, tmp_path: Path) -> None:
    with pytest.raises(ReplayError, match="offset range is empty"):
        record(source, tmp_path / "empty.jsonl.gz", bounds=Bounds(start_offset=5, end_offset=5))


def test_cli_record_rejects_raw_topic(source: Settings, tmp_path: Path, monkeypatch, capsys) -> None:
    add_replay_commands(monkeypatch)
    config = write_config(source, tmp_path / "config.yaml")
    monkeypatch.setenv("DRIFTLOOP_CONFIG", str(config))

    code = driftloop.cli.main(
        ["--config", str(config), "record", "--out", str(tmp_path / "raw.jsonl.gz"), "--topic", "requests.raw"]
    )

    assert code == 2
    assert "can never be recorded" in capsys.readouterr().err
    assert not (tmp_path / "raw.jsonl.gz").exists()


def test_cli_record_then_replay(source: Settings, tmp_path: Path, monkeypatch, capsys) -> None:
    from driftloop.testing.plugin import train_tiny_artifact

    add_replay_commands(monkeypatch)
    config = write_config(source, tmp_path / "config.yaml")
    monkeypatch.setenv("DRIFTLOOP_CONFIG", str(config))
    model = train_tiny_artifact(
        tmp_path / "model", ["card has not arrived", "exchange rate today"], ["card_arrival", "exchange_rate"]
    )
    capture = tmp_path / "capture.jsonl.gz"

    record_code = driftloop.cli.main(["--config", str(config), "record", "--out", str(capture), "--predictions"])
    record_output = capsys.readouterr().out
    # The recorded events span about 30 s; at 30 times the recorded speed the replay takes about 1 s.
    replay_arguments = ["replay", str(capture), "--model", f"7={model}", "--speed", "30", "--timeout", "120"]
    replay_code = driftloop.cli.main(
        ["--config", str(config), *replay_arguments, "--json", "--html", str(tmp_path / "report.html")]
    )
    report = json.loads(capsys.readouterr().out)

    assert record_code == 0
    assert f"recorded {REQUESTS_SENT + FEEDBACK_SENT + PREDICTIONS_SENT} records" in record_output
    assert replay_code == 0
    assert report["replay"]["complete"] is True
    assert report["replay"]["speed"] == 30.0
    assert (tmp_path / "report.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert sorted(report["lanes"]) == ["recorded", "v7"]
    assert report["lanes"]["v7"]["predicted"] == REQUESTS_SENT
    assert report["lanes"]["v7"]["labelled"] == FEEDBACK_SENT
    assert report["lanes"]["v7"]["online"]["joined"] == FEEDBACK_SENT
    assert report["lanes"]["recorded"]["predicted"] == PREDICTIONS_SENT
    assert report["lanes"]["recorded"]["model_versions"] == [3, 4]
    assert len(report["lanes"]["recorded"]["swaps"]) == PREDICTIONS_SENT - 1
    assert report["comparisons"][0]["compared"] == PREDICTIONS_SENT
