"""The replay report, the plugin's checks and the replay schedule, on outcomes built in code (no broker)."""

from __future__ import annotations

from pathlib import Path

import pytest
from driftloop.schemas.events import Feedback, InferenceRequest, Prediction

from driftloop.config import load_settings
from driftloop.drift.settings import DetectorSettings, DriftSettings
from driftloop.errors import ConfigError
from driftloop.replay.cli import parse_speed, parse_time_ms
from driftloop.replay.lanes import parse_model_spec
from driftloop.replay.outcome import LaneOutcome, ReplayOutcome, recorded_lane
from driftloop.replay.publisher import PublishStats, replay_schedule
from driftloop.replay.reader import read_recording
from driftloop.replay.result import ReplayResult
from driftloop.replay.writer import RecordingWriter
from driftloop.testing.plugin import (
    assert_accuracy_at_least,
    assert_all_predicted,
    assert_no_drift_alarm,
    assert_no_label_flips,
    write_labelled_recording,
)

START_MS = 1_700_000_000_000


def make_prediction(
    request_id: str, label: str, version: int, confidence: float = 0.9, predicted_at_ms: int = START_MS
) -> Prediction:
    return Prediction(
        request_id=request_id,
        model_version=version,
        label=label,
        confidence=confidence,
        scores={label: confidence},
        latency_ms=1.0,
        inference_ms=2.0,
        worker_id="w",
        event_time_ms=START_MS,
        predicted_at_ms=predicted_at_ms,
        text="text",
    )


def make_result(
    tmp_path: Path, truth: list[str | None], lanes: dict[str, list[str | None]], drift: DriftSettings | None = None
) -> ReplayResult:
    """Build a result of requests req-00000... with ``truth`` labels and each lane's predicted labels (None: missing)."""
    recording = read_recording(
        write_labelled_recording(
            tmp_path / "stream.jsonl.gz",
            [(f"text {i}", label) for i, label in enumerate(truth)],
            attributes=lambda i: {"segment": "a" if i % 2 == 0 else "b"},
        )
    )
    request_ids = [record.request_id for record in recording.requests]
    published = PublishStats(events=len(recording.events), records=len(recording.events) * len(lanes), seconds=0.5)
    published.published_at_ms = {request_id: START_MS for request_id in request_ids}
    outcome_lanes = []
    for name, labels in lanes.items():
        version = int(name[1:])
        predictions = {
            request_id: make_prediction(request_id, label, version, predicted_at_ms=START_MS + 10 * (index + 1))
            for index, (request_id, label) in enumerate(zip(request_ids, labels, strict=True))
            if label is not None
        }
        outcome_lanes.append(
            LaneOutcome(
                name=name,
                origin="artifact",
                path=f"/models/{name}",
                topic_prefix=f"p.{name}.",
                predictions=predictions,
                version=version,
            )
        )
    outcome = ReplayOutcome(
        recording=recording,
        lanes=tuple(outcome_lanes),
        publish=published,
        topic_prefix="p.",
        speed=None,
        seed=0,
        seconds=1.0,
        predictions_seconds=0.8,
        complete=True,
    )
    settings = load_settings(None, drift=drift or DriftSettings(enabled=False))
    return ReplayResult.build(outcome, settings, drift=True)


# Figures of one lane.


def test_lane_accuracy_per_class_and_group(tmp_path: Path) -> None:
    truth = ["x", "x", "y", "y", None]
    result = make_result(tmp_path, truth, {"v1": ["x", "y", "y", "y", "x"]})
    lane = result.report["lanes"]["v1"]

    assert lane["labelled"] == 4
    assert lane["correct"] == 3
    assert lane["accuracy"] == pytest.approx(0.75)
    assert lane["per_class"]["x"] == {
        "support": 2,
        "predicted": 1,
        "correct": 1,
        "precision": 1.0,
        "recall": 0.5,
        "f1": pytest.approx(2 / 3),
    }
    assert lane["per_class"]["y"]["precision"] == pytest.approx(2 / 3)
    assert lane["per_group"] == {
        "a": {"n": 2, "correct": 2, "accuracy": 1.0},
        "b": {"n": 2, "correct": 1, "accuracy": 0.5},
    }
    assert lane["latency_ms"]["p50"] == 30.0
    assert lane["latency_ms"]["max"] == 50.0


def test_lane_missing_predictions(tmp_path: Path) -> None:
    result = make_result(tmp_path, ["x", "x", "x"], {"v1": ["x", None, "x"]})

    assert result.report["lanes"]["v1"]["missing"] == 1
    assert result.missing_predictions("v1") == ["req-00001"]
    with pytest.raises(AssertionError, match=r"lane v1: 1 of 3 requests have no prediction, first: \['req-00001'\]"):
        assert_all_predicted(result)


def test_accuracy_over_stream_window(tmp_path: Path) -> None:
    truth = ["x"] * 40
    predicted = ["x"] * 20 + ["y"] * 20
    result = make_result(tmp_path, truth, {"v1": predicted})
    points = result.report["lanes"]["v1"]["accuracy_over_stream"]

    assert result.report["replay"]["accuracy_window"] == 10
    assert points[0] == [0, 1.0]
    assert points[19] == [19, 1.0]
    assert points[-1] == [39, 0.0]


def test_drift_alarm_found_and_checked(tmp_path: Path) -> None:
    drift = DriftSettings(detectors=(DetectorSettings(name="adwin", signal="error"),))
    truth = ["x"] * 600
    result = make_result(tmp_path, truth, {"v1": ["x"] * 300 + ["y"] * 300}, drift=drift)
    alarms = result.drift_alarms("v1")

    assert alarms
    assert alarms[0]["detector"] == "adwin"
    assert alarms[0]["signal"] == "error"
    assert 300 <= alarms[0]["position"] < 600
    with pytest.raises(AssertionError, match="lane v1: .* drift alarms: adwin on error at request"):
        assert_no_drift_alarm(result)


def test_no_drift_alarm_on_stable_stream(tmp_path: Path) -> None:
    drift = DriftSettings(detectors=(DetectorSettings(name="adwin", signal="error"),))
    result = make_result(tmp_path, ["x"] * 200, {"v1": ["x", "y"] * 100}, drift=drift)

    assert result.drift_alarms("v1") == []
    assert_no_drift_alarm(result)


# Two lanes.


def test_comparison_flips_and_right_wrong(tmp_path: Path) -> None:
    truth = ["x", "x", "y", "y", None, "x"]
    result = make_result(tmp_path, truth, {"v1": ["x", "y", "y", "x", "x", "y"], "v2": ["x", "x", "x", "x", "y", "y"]})
    comparison = result.report["comparisons"][0]

    assert comparison["compared"] == 6
    assert comparison["label_flips"] == 3
    assert result.label_flips("v1", "v2") == ["req-00001", "req-00002", "req-00004"]
    assert comparison["a_right_b_wrong"] == {"count": 1, "examples": ["req-00002"]}
    assert comparison["b_right_a_wrong"] == {"count": 1, "examples": ["req-00001"]}
    assert comparison["both_right"] == 1
    assert comparison["both_wrong"] == 2
    assert comparison["flip_examples"][0] == {"request_id": "req-00001", "v1": "y", "v2": "x", "label": "x"}


def test_no_label_flips_check(tmp_path: Path) -> None:
    result = make_result(tmp_path, ["x", "x", "x"], {"v1": ["x", "x", "y"], "v2": ["x", "x", "x"]})

    assert_no_label_flips(result, request_ids=["req-00000", "req-00001"])
    with pytest.raises(AssertionError, match=r"1 label flips between v1 and v2: req-00002 \(y -> x\)"):
        assert_no_label_flips(result)


def test_accuracy_check(tmp_path: Path) -> None:
    result = make_result(tmp_path, ["x", "x", "x", "x"], {"v1": ["x", "x", "x", "y"], "v2": ["x", "x", "x", "x"]})

    assert_accuracy_at_least(result, 0.75)
    assert_accuracy_at_least(result, 1.0, lane="v2")
    with pytest.raises(AssertionError, match="lane v1: accuracy 0.7500 on 4 labelled requests is below 0.8000"):
        assert_accuracy_at_least(result, 0.8)


def test_accuracy_check_without_feedback(tmp_path: Path) -> None:
    result = make_result(tmp_path, [None, None], {"v1": ["x", "x"]})

    with pytest.raises(AssertionError, match="no request has both a prediction and feedback"):
        assert_accuracy_at_least(result, 0.5)


def test_report_renders_text_and_html(tmp_path: Path) -> None:
    result = make_result(tmp_path, ["x", "<b>"], {"v1": ["x", "<b>"], "v2": ["y", "<b>"]})

    text = result.text()
    page = result.html()

    assert "v1 vs v2: 1 label flips in 2 requests (50.0%)" in text
    assert "accuracy 100.0% on 2 labelled requests" in text
    assert "&lt;b&gt;" in page
    assert "<b>" not in page.split("<pre>")[0]


# The recording's own predictions.


def test_recorded_lane_swaps(tmp_path: Path) -> None:
    path = tmp_path / "recorded.jsonl.gz"
    with RecordingWriter(path) as writer:
        for index, version in enumerate([1, 1, 2, 2, 1]):
            request_id = f"r{index}"
            writer.add_event(
                "requests",
                InferenceRequest(request_id=request_id, event_time_ms=START_MS, text="t"),
                timestamp_ms=START_MS + index,
            )
            writer.add_event("predictions", make_prediction(request_id, "x", version), timestamp_ms=START_MS + index)
            writer.add_event(
                "feedback",
                Feedback(request_id=request_id, label="x", event_time_ms=START_MS),
                timestamp_ms=START_MS + index,
            )
        writer.finish()
    recording = read_recording(path)
    lane = recorded_lane(recording)
    outcome = ReplayOutcome(
        recording=recording,
        lanes=(lane,),
        publish=PublishStats(),
        topic_prefix="p.",
        speed=None,
        seed=0,
        seconds=0.0,
        predictions_seconds=0.0,
        complete=True,
    )
    result = ReplayResult.build(outcome, load_settings(None), drift=False)

    swaps = result.report["lanes"]["recorded"]["swaps"]

    assert [(swap["position"], swap["from"], swap["to"]) for swap in swaps] == [(2, 1, 2), (4, 2, 1)]
    assert result.report["lanes"]["recorded"]["latency_ms"]["p50"] is None
    assert result.report["lanes"]["recorded"]["drift_checked"] is False


# Replay schedule and command-line values.


def test_schedule_scales_recorded_gaps(tmp_path: Path) -> None:
    recording = read_recording(
        write_labelled_recording(tmp_path / "s.jsonl.gz", [("a", None), ("b", None), ("c", None)], interval_ms=1000)
    )

    assert replay_schedule(recording.events, 1.0) == [0.0, 1.0, 2.0]
    assert replay_schedule(recording.events, 10.0) == [0.0, 0.1, 0.2]
    assert replay_schedule(recording.events, None) == [0.0, 0.0, 0.0]


def test_schedule_never_goes_back(tmp_path: Path) -> None:
    path = tmp_path / "back.jsonl.gz"
    with RecordingWriter(path) as writer:
        for index, timestamp in enumerate([0, 2000, 1000, 3000]):
            request = InferenceRequest(request_id=f"r{index}", event_time_ms=START_MS, text="t")
            writer.add_event("requests", request, timestamp_ms=START_MS + timestamp, partition=index)
        writer.finish()

    assert replay_schedule(read_recording(path).events, 1.0) == [0.0, 2.0, 2.0, 3.0]


@pytest.mark.parametrize(("text", "expected"), [("1", 1.0), ("2.5", 2.5), ("max", None), ("MAX", None)])
def test_parse_speed(text: str, expected: float | None) -> None:
    assert parse_speed(text) == expected


@pytest.mark.parametrize("text", ["0", "-1", "fast"])
def test_parse_speed_rejects(text: str) -> None:
    with pytest.raises(ConfigError, match="--speed"):
        parse_speed(text)


def test_parse_time() -> None:
    assert parse_time_ms("1700000000000", "--since") == START_MS
    assert parse_time_ms("2023-11-14T22:13:20Z", "--since") == START_MS
    assert parse_time_ms("2023-11-14T22:13:20", "--since") == START_MS
    assert parse_time_ms("2023-11-14T23:13:20+01:00", "--since") == START_MS
    with pytest.raises(ConfigError, match="--until 'yesterday': expected ISO 8601"):
        parse_time_ms("yesterday", "--until")


def test_parse_model_spec() -> None:
    assert parse_model_spec("models/a") == (0, Path("models/a"))
    assert parse_model_spec("3=models/a") == (3, Path("models/a"))
    with pytest.raises(ConfigError, match="VERSION=DIR"):
        parse_model_spec("x=models/a")
