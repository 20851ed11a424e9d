"""kill -9 of one of two inference worker processes: every request still gets a prediction."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from driftloop.infra.topics import PREDICTIONS, create_topics
from driftloop.producer import EventProducer, now_ms
from driftloop.schemas.events import InferenceRequest
from driftloop.testing.models import write_tiny_artifact
from driftloop.testing.services import spawn_driftloop, stop_process, write_config
from driftloop.testing.topics import TopicReader

pytestmark = pytest.mark.integration

REQUESTS = 3000


def test_kill_one_of_two_workers(settings, tmp_path):
    settings = settings.model_copy(update={"partitions": 4, "batch_size": 16})
    create_topics(settings)
    write_tiny_artifact(tmp_path / "model", ["a", "b"])
    config = write_config(settings, tmp_path / "config.yaml")
    command = ["worker", "inference", "--model", str(tmp_path / "model"), "--model-version", "1"]
    workers = [spawn_driftloop([*command, "--worker-id", f"w{i}"], config, tmp_path / f"w{i}.log") for i in range(2)]
    reader = TopicReader(settings, settings.topic(PREDICTIONS))
    try:
        producer = EventProducer(settings)
        ids = [f"req-{i}" for i in range(REQUESTS)]
        for request_id in ids:
            producer.send_request(InferenceRequest(request_id=request_id, event_time_ms=now_ms(), text=f"text {request_id}"))
        producer.flush()

        # Kill one worker in the middle of the run, while it owns partitions with work left.
        reader.read_until(lambda rs: len(rs) >= REQUESTS // 4, 120)
        os.kill(workers[0].pid, signal.SIGKILL)
        workers[0].wait(10)
        killed_at = len(reader.records)
        time.sleep(1.0)
        workers[0] = spawn_driftloop([*command, "--worker-id", "w0-restarted"], config, tmp_path / "w0-restarted.log")

        expected = set(ids)
        records = reader.read_until(lambda rs: expected <= {json.loads(r.value())["request_id"] for r in rs}, 180)
    finally:
        reader.close()
        for worker in workers:
            stop_process(worker)

    predicted = {json.loads(r.value())["request_id"] for r in records}
    assert killed_at < REQUESTS, "the kill came after every request was predicted"
    assert predicted == set(ids)
