"""Inference worker against the real broker: batching, bad input, dead letters, shutdown."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from driftloop.config import Settings
from driftloop.infra.topics import DEAD_LETTER, PREDICTIONS, REQUESTS, create_topics
from driftloop.model import load_artifact
from driftloop.producer import EventProducer, now_ms
from driftloop.schemas.events import InferenceRequest
from driftloop.testing.models import write_tiny_artifact
from driftloop.testing.topics import TopicReader
from driftloop.workers.inference import InferenceWorker
from driftloop.workers.model_source import FixedModel

pytestmark = pytest.mark.integration

LABELS = ["card_arrival", "exchange_rate", "lost_card"]


@pytest.fixture
def running_worker(settings: Settings, tmp_path: Path):
    create_topics(settings)
    write_tiny_artifact(tmp_path / "model", LABELS)
    worker = InferenceWorker(settings, FixedModel(load_artifact(tmp_path / "model", version=3)))
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    yield worker
    worker.stop()
    thread.join(30)
    assert not thread.is_alive(), "worker did not stop within 30 s"


def request(request_id: str, text: str, **attributes) -> InferenceRequest:
    return InferenceRequest(request_id=request_id, event_time_ms=now_ms(), text=text, attributes=attributes)


def read_predictions(settings: Settings, expected_ids: set[str], timeout: float = 60.0) -> dict[str, list[dict]]:
    reader = TopicReader(settings, settings.topic(PREDICTIONS))
    try:
        records = reader.read_until(lambda rs: expected_ids <= {json.loads(r.value())["request_id"] for r in rs}, timeout)
    finally:
        reader.close()
    by_id: dict[str, list[dict]] = {}
    for record in records:
        prediction = json.loads(record.value())
        by_id.setdefault(prediction["request_id"], []).append(prediction)
    return by_id


def read_dead_letters(settings: Settings, count: int, timeout: float = 30.0) -> list[dict]:
    reader = TopicReader(settings, settings.topic(DEAD_LETTER))
    try:
        return [json.loads(r.value()) for r in reader.read_until(lambda rs: len(rs) >= count, timeout)]
    finally:
        reader.close()


def test_worker_predicts_every_request(settings, running_worker):
    producer = EventProducer(settings)
    ids = {f"r{i}" for i in range(300)}
    for request_id in sorted(ids):
        producer.send_request(request(request_id, f"where is my card {request_id}", segment="retail"))
    producer.flush()

    predictions = read_predictions(settings, ids)

    assert set(predictions) == ids
    first = predictions["r1"][0]
    assert first["model_version"] == 3
    assert first["label"] in LABELS
    assert first["attributes"] == {"segment": "retail"}
    assert first["worker_id"] == running_worker.worker_id
    assert 0.0 <= first["confidence"] <= 1.0


BAD_VALUES = [
    ("invalid_json", b"{not json", "invalid_json"),
    ("json_array", b'["a", "b"]', "wrong_type"),
    ("json_string", b'"hello"', "wrong_type"),
    ("missing_text", json.dumps({"request_id": "x1", "event_time_ms": 1}).encode(), "missing_text"),
    ("empty_text", json.dumps({"request_id": "x2", "event_time_ms": 1, "text": "   "}).encode(), "empty_text"),
    ("text_not_string", json.dumps({"request_id": "x3", "event_time_ms": 1, "text": 42}).encode(), "invalid_event"),
    ("not_utf8_value", b'{"request_id": "x4", "text": "\xff\xfe"}', "not_utf8"),
    ("unknown_schema", json.dumps({"schema_version": 99, "request_id": "x5", "event_time_ms": 1, "text": "hi"}).encode(), "unknown_schema_version"),
]


def test_bad_inputs_dead_lettered_worker_continues(settings, running_worker):
    producer = EventProducer(settings)
    topic = settings.topic(REQUESTS)
    for name, value, _ in BAD_VALUES:
        producer.send_raw(topic, name.encode(), value)
    producer.send_request(request("after-bad", "the card has not arrived"))
    producer.flush()

    letters = read_dead_letters(settings, len(BAD_VALUES))
    predictions = read_predictions(settings, {"after-bad"})

    reasons = {bytes.fromhex(letter["key_b64"].encode().hex()) and letter["reason"] for letter in letters}
    assert reasons == {reason for _, _, reason in BAD_VALUES}
    for letter in letters:
        assert letter["stage"] == "inference"
        assert letter["source"].startswith(f"{topic}[")
        assert "@" in letter["source"]
        assert letter["value_b64"] is not None
        assert letter["error"]
    assert "after-bad" in predictions


def test_hard_texts_are_processed(settings, running_worker):
    producer = EventProducer(settings)
    texts = {
        "control": "card\x00 arrived\x07\x1b[31m?",
        "emoji": "my card 💳🚀 never came 😡",
        "rtl": "\u05d0\u05d9\u05e4\u05d4 \u05d4\u05db\u05e8\u05d8\u05d9\u05e1 \u0645\u0631\u062d\u0628\u0627",
        "long": "lost card " * 100_000,
    }
    for request_id, text in texts.items():
        producer.send_request(request(request_id, text))
    normal = {f"normal-{i}" for i in range(20)}
    for request_id in sorted(normal):
        producer.send_request(request(request_id, "exchange rate today"))
    producer.send_raw(settings.topic(REQUESTS), b"\xff\xfe\xfa", request("bad-key", "key is not utf-8").model_dump_json().encode())
    producer.flush()

    predictions = read_predictions(settings, set(texts) | normal | {"bad-key"})

    assert set(texts) | normal | {"bad-key"} <= set(predictions)
    assert len(texts["long"]) == 1_000_000
    assert len(predictions["long"][0]["text"]) < 10_000


def test_repeated_request_id_is_predicted(settings, running_worker):
    producer = EventProducer(settings)
    producer.send_request(request("twice", "first time"))
    producer.send_request(request("twice", "second time"))
    producer.send_request(request("marker", "after the repeat"))
    producer.flush()

    predictions = read_predictions(settings, {"twice", "marker"})
    reader = TopicReader(settings, settings.topic(PREDICTIONS))
    records = reader.read_until(lambda rs: sum(json.loads(r.value())["request_id"] == "twice" for r in rs) >= 2, 20)
    reader.close()

    assert "twice" in predictions
    assert sum(json.loads(r.value())["request_id"] == "twice" for r in records) == 2


def test_stop_is_bounded_when_broker_unreachable(stack_settings, tmp_path):
    from driftloop.infra.stack import free_port

    dead = stack_settings.model_copy(update={"kafka_bootstrap": f"127.0.0.1:{free_port()}", "shutdown_timeout_s": 2.0})
    write_tiny_artifact(tmp_path / "model", LABELS)
    worker = InferenceWorker(dead, FixedModel(load_artifact(tmp_path / "model", version=1)))
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    time.sleep(1.0)
    started = time.monotonic()
    worker.stop()
    thread.join(30)

    assert not thread.is_alive()
    assert time.monotonic() - started < 30


def test_metrics_endpoint_serves_counters(settings, running_worker):
    import urllib.request

    producer = EventProducer(settings)
    producer.send_request(request("metered", "how do I top up"))
    producer.flush()
    read_predictions(settings, {"metered"})
    port = running_worker.metrics.serve(0)

    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()

    assert "driftloop_requests_processed_total" in body
    assert f'driftloop_model_version{{worker_id="{running_worker.worker_id}"}} 3.0' in body
    assert "driftloop_batch_latency_ms_bucket" in body
    assert "driftloop_end_to_end_latency_ms_count" in body
