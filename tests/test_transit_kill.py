"""kill -9 of the transit redactor process mid-run: nothing unredacted passes, every record is redacted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from driftloop.infra.topics import REQUESTS, REQUESTS_RAW, create_topics
from driftloop.producer import EventProducer
from driftloop.redaction.scan import scan_pipeline
from driftloop.testing.services import stop_process, write_config
from driftloop.testing.topics import TopicReader

pytestmark = pytest.mark.integration

RECORDS = 2000
VALUES = {
    "email": "carla.mendes@example.net",
    "phone": "+44 20 7946 0321",
    "card": "4539 1488 0343 6467",
    "ssn": "412-68-3091",
}
TEMPLATE = "Card {card} blocked; SSN {ssn}; reach me at {email} or {phone}. Order {index}."
# spaCy tags a few of the "Order {index}" tails as PERSON, so only the start is compared.
REDACTED_START = "Card <CREDIT_CARD> blocked; SSN <US_SSN>; reach me at <EMAIL_ADDRESS> or <PHONE_NUMBER>. "


def spawn_redactor(config: Path, log: Path, worker_id: str) -> subprocess.Popen:
    """Start ``driftloop redactor`` through the ingest CLI module, output to ``log``."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith("DRIFTLOOP_")}
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as handle:
        return subprocess.Popen(
            [sys.executable, "-m", "driftloop.redaction.ingest_cli", "--config", str(config), "redactor", "--worker-id", worker_id],
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=environment,
        )


def request_ids(records) -> set[str]:
    return {json.loads(record.value())["request_id"] for record in records}


def test_redactor_killed_and_restarted(settings, tmp_path):
    settings = settings.model_copy(update={"partitions": 2, "batch_size": 16})
    create_topics(settings)
    producer = EventProducer(settings)
    ids = [f"k{index}" for index in range(RECORDS)]
    for index, request_id in enumerate(ids):
        value = {"request_id": request_id, "text": TEMPLATE.format(index=index, **VALUES)}
        producer.send_raw(settings.topic(REQUESTS_RAW), request_id.encode(), json.dumps(value).encode())
    producer.flush()
    config = write_config(settings, tmp_path / "config.yaml")
    logs = Path(settings.state_dir) / "logs"

    reader = TopicReader(settings, settings.topic(REQUESTS))
    process = spawn_redactor(config, logs / "redactor-0.log", "r0")
    try:
        reader.read_until(lambda records: len(request_ids(records)) >= RECORDS // 4, 180)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
        killed_at = len(request_ids(reader.records))
        time.sleep(1.0)
        process = spawn_redactor(config, logs / "redactor-1.log", "r1")
        records = reader.read_until(lambda records: request_ids(records) >= set(ids), 240)
    finally:
        reader.close()
        stop_process(process)

    report = scan_pipeline(
        settings, use_analyzer=False, known_values=list(enumerate(VALUES.values(), start=1))
    )

    assert killed_at < RECORDS, "the kill came after every record was redacted"
    assert request_ids(records) == set(ids)
    for record in records:
        assert json.loads(record.value())["text"].startswith(REDACTED_START)
    locations = {location["name"]: location for location in report["locations"]}
    assert locations[settings.topic(REQUESTS)]["records"] >= RECORDS
    assert locations[settings.topic(REQUESTS_RAW)]["known_value_matches"] == RECORDS * len(VALUES)
    assert {"logs/redactor-0.log", "logs/redactor-1.log"} <= set(locations)
    for name, location in locations.items():
        if name != settings.topic(REQUESTS_RAW):
            assert location["known_value_matches"] == 0, name
