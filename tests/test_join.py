"""Feedback join: both arrival orders, duplicates, expiry, unknown labels; then through faust."""

from __future__ import annotations

import json

import pytest

from driftloop.producer import EventProducer, now_ms
from driftloop.schemas.events import Feedback, Prediction, encode_event
from driftloop.streams.join import JoinState
from driftloop.streams.metrics import MetricsAccumulator, summarize_version


def prediction(request_id: str, label: str = "a", version: int = 1, segment: str = "retail") -> bytes:
    return encode_event(
        Prediction(
            request_id=request_id, model_version=version, label=label, confidence=0.8, scores={label: 0.8},
            latency_ms=1.0, inference_ms=1.0, worker_id="w", event_time_ms=1, predicted_at_ms=2,
            text=f"text of {request_id}", attributes={"segment": segment},
        )
    )


def feedback(request_id: str, label: str = "a") -> bytes:
    return encode_event(Feedback(request_id=request_id, label=label, event_time_ms=3))


@pytest.fixture
def state() -> JoinState:
    return JoinState({}, MetricsAccumulator("p.", "segment"), ttl_s=10.0)


def version_fields(state: JoinState, version: int = 1) -> dict:
    return summarize_version(dict(state.metrics._versions[version]))


def test_prediction_then_feedback_joins(state):
    assert state.on_prediction(prediction("r1"), 0, "p[0]@0", now=0.0) is None
    example = state.on_feedback(feedback("r1", "a"), 0, "f[0]@0", now=1.0)

    assert example is not None
    assert example.label == "a"
    assert example.predicted_label == "a"
    assert example.text == "text of r1"
    assert example.source_offset == "p[0]@0"
    assert version_fields(state)["accuracy"] == 1.0


def test_feedback_then_prediction_joins(state):
    assert state.on_feedback(feedback("r1", "b"), 0, "f[0]@0", now=0.0) is None
    example = state.on_prediction(prediction("r1", "a"), 0, "p[0]@5", now=1.0)

    assert example is not None
    assert example.label == "b"
    assert version_fields(state)["accuracy"] == 0.0


def test_duplicates_counted_not_joined_twice(state):
    state.on_prediction(prediction("r1"), 0, "p", now=0.0)
    state.on_feedback(feedback("r1"), 0, "f", now=0.1)

    assert state.on_prediction(prediction("r1"), 0, "p", now=0.2) is None
    assert state.on_feedback(feedback("r1"), 0, "f", now=0.3) is None
    assert state.metrics._join["duplicate_predictions"] == 1
    assert state.metrics._join["duplicate_feedback"] == 1
    assert state.metrics._join["joined"] == 1


def test_unknown_request_feedback_expires(state):
    state.on_feedback(feedback("never-predicted"), 0, "f", now=0.0)
    state.on_prediction(prediction("unrelated"), 0, "p", now=11.0)

    assert "never-predicted" not in state.pending
    assert state.metrics._join["expired_feedback"] == 1


def test_prediction_without_feedback_expires(state):
    state.on_prediction(prediction("lonely"), 1, "p", now=0.0)
    state.on_feedback(feedback("other"), 1, "f", now=20.0)

    assert "lonely" not in state.pending
    assert state.metrics._join["expired_predictions"] == 1


def test_expiry_only_touches_own_partition(state):
    state.on_prediction(prediction("p0"), 0, "p", now=0.0)
    state.on_prediction(prediction("p1"), 1, "p", now=20.0)

    assert "p0" in state.pending


def test_unknown_label_feedback_is_joined_as_error(state):
    state.on_prediction(prediction("r1", "a"), 0, "p", now=0.0)
    example = state.on_feedback(feedback("r1", "label_the_model_never_saw"), 0, "f", now=1.0)

    assert example is not None
    assert example.label == "label_the_model_never_saw"
    assert version_fields(state)["accuracy"] == 0.0


def test_invalid_events_counted(state):
    assert state.on_prediction(b"{oops", 0, "p", now=0.0) is None
    assert state.on_feedback(b'{"request_id": "x"}', 0, "f", now=0.0) is None
    assert state.metrics._join["invalid_events"] == 2


def test_per_group_accuracy(state):
    state.on_prediction(prediction("r1", "a", segment="retail"), 0, "p", now=0.0)
    state.on_prediction(prediction("r2", "a", segment="business"), 0, "p", now=0.0)
    state.on_feedback(feedback("r1", "a"), 0, "f", now=0.1)
    state.on_feedback(feedback("r2", "b"), 0, "f", now=0.1)

    groups = version_fields(state)["per_group"]
    assert groups["retail"]["accuracy"] == 1.0
    assert groups["business"]["accuracy"] == 0.0


@pytest.mark.integration
def test_join_app_end_to_end(settings, tmp_path):
    from driftloop.infra.clients import make_redis
    from driftloop.infra.topics import EXAMPLES, PREDICTIONS, create_topics
    from driftloop.streams.metrics import read_metrics
    from driftloop.testing.services import spawn_driftloop, stop_process, wait_until, write_config
    from driftloop.testing.topics import TopicReader

    create_topics(settings)
    process = spawn_driftloop(["worker", "join"], write_config(settings, tmp_path / "config.yaml"), tmp_path / "join.log")
    try:
        producer = EventProducer(settings)
        # r0..r9: prediction first; r10..r19: feedback first; one unknown-request feedback.
        for i in range(10):
            producer.send_raw(settings.topic(PREDICTIONS), f"r{i}".encode(), prediction(f"r{i}", "a"))
        for i in range(10, 20):
            producer.send_feedback(Feedback(request_id=f"r{i}", label="a" if i % 2 else "b", event_time_ms=now_ms()))
        producer.flush()
        for i in range(10):
            producer.send_feedback(Feedback(request_id=f"r{i}", label="a", event_time_ms=now_ms()))
        for i in range(10, 20):
            producer.send_raw(settings.topic(PREDICTIONS), f"r{i}".encode(), prediction(f"r{i}", "a"))
        producer.flush()

        reader = TopicReader(settings, settings.topic(EXAMPLES))
        examples = reader.read_until(lambda rs: len(rs) >= 20, 90)
        reader.close()
        client = make_redis(settings)
        assert wait_until(lambda: read_metrics(client, settings.topic_prefix)["join"].get("joined", 0) >= 20, 30)
        metrics = read_metrics(client, settings.topic_prefix)
    finally:
        assert stop_process(process) is not None
    assert len({json.loads(r.value())["request_id"] for r in examples}) == 20
    assert metrics["versions"]["1"]["joined"] == 20
    assert metrics["versions"]["1"]["accuracy"] == pytest.approx(15 / 20)
