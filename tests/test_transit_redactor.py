"""The transit redactor against the real broker and Presidio: redaction, dead letters, DeleteRecords."""

from __future__ import annotations

import json
import logging
import threading
import uuid
from concurrent.futures import Future

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import DeletedRecords

from driftloop.infra.topics import DEAD_LETTER, REQUESTS, REQUESTS_RAW, create_topics
from driftloop.producer import EventProducer
from driftloop.redaction.redactor import Redactor
from driftloop.redaction.scan import scan_pipeline
from driftloop.testing.topics import TopicReader
from driftloop.workers.redactor import TransitRedactor

pytestmark = pytest.mark.integration

EMAIL = "ben.okafor@example.org"
SSN = "536-22-8417"


@pytest.fixture(scope="module")
def redactor():
    with Redactor() as shared:
        yield shared


class RecordingAdmin:
    """An admin client with AdminClient.delete_records that records each request and the group's committed offsets at that moment."""

    def __init__(self, settings, group_id: str) -> None:
        self.requests: list[dict[int, int]] = []
        self.committed_then: list[dict[int, int]] = []
        self.topic = settings.topic(REQUESTS_RAW)
        # A consumer that never joins the group reads the group's committed offsets.
        self._offsets = Consumer(settings.kafka_client_config(**{"group.id": group_id, "enable.auto.commit": False}))

    def delete_records(self, topic_partition_offsets, **kwargs):
        request = {tp.partition: tp.offset for tp in topic_partition_offsets if tp.topic == self.topic}
        futures = {}
        for tp in topic_partition_offsets:
            future: Future = Future()
            future.set_result(DeletedRecords(tp.offset))
            futures[tp] = future
        if request and any(offset > 0 for offset in request.values()):
            committed = self._offsets.committed([TopicPartition(self.topic, p) for p in request], timeout=10)
            self.requests.append(request)
            self.committed_then.append({tp.partition: tp.offset for tp in committed})
        return futures

    def close(self) -> None:
        self._offsets.close()


def send_raw_records(settings, count: int, prefix: str = "t") -> list[str]:
    producer = EventProducer(settings)
    ids = []
    for index in range(count):
        request_id = f"{prefix}{index}"
        value = {"request_id": request_id, "text": f"My SSN is {SSN}, mail {EMAIL} ({index})"}
        producer.send_raw(settings.topic(REQUESTS_RAW), request_id.encode(), json.dumps(value).encode())
        ids.append(request_id)
    producer.flush()
    return ids


def read_records(settings, name: str, condition, timeout: float = 90.0) -> list:
    reader = TopicReader(settings, settings.topic(name))
    try:
        return list(reader.read_until(condition, timeout))
    finally:
        reader.close()


def start(worker: TransitRedactor) -> threading.Thread:
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    return thread


def stop(worker: TransitRedactor, thread: threading.Thread) -> None:
    worker.stop()
    thread.join(60)
    assert not thread.is_alive(), "redactor did not stop within 60 s"


def distinct_ids(records) -> set[str]:
    return {json.loads(record.value())["request_id"] for record in records}


def test_transit_redacts_and_dead_letters(settings, redactor, caplog):
    create_topics(settings)
    ids = set(send_raw_records(settings, 40))
    producer = EventProducer(settings)
    raw_topic = settings.topic(REQUESTS_RAW)
    producer.send_raw(raw_topic, EMAIL.encode(), f"not json {EMAIL}".encode())
    producer.send_raw(raw_topic, None, json.dumps({"request_id": "no-text", "body": EMAIL}).encode())
    producer.send_raw(raw_topic, None, json.dumps({"text": f"no id, mail {EMAIL}", "extra": EMAIL}).encode())
    producer.flush()

    with caplog.at_level(logging.WARNING, logger="driftloop.workers.redactor"):
        worker = TransitRedactor(settings, redactor)
        thread = start(worker)
        try:
            requests = read_records(settings, REQUESTS, lambda rs: len(distinct_ids(rs)) >= len(ids) + 1)
            letters = read_records(settings, DEAD_LETTER, lambda rs: len(rs) >= 2)
        finally:
            stop(worker, thread)

    by_id = {json.loads(record.value())["request_id"]: json.loads(record.value()) for record in requests}
    transit_ids = [request_id for request_id in by_id if request_id.startswith("transit-")]
    assert ids <= set(by_id)
    assert by_id["t7"]["text"] == "My SSN is <US_SSN>, mail <EMAIL_ADDRESS> (7)"
    assert len(transit_ids) == 1
    assert by_id[transit_ids[0]]["text"] == "no id, mail <EMAIL_ADDRESS>"
    for record in requests:
        assert EMAIL.encode() not in record.value()
        assert EMAIL.encode() not in (record.key() or b"")
        assert SSN.encode() not in record.value()
    assert sorted(json.loads(letter.value())["reason"] for letter in letters) == ["invalid_json", "missing_text"]
    for letter in letters:
        assert json.loads(letter.value())["value_b64"] is None
        assert json.loads(letter.value())["stage"] == "redactor"
        assert EMAIL.encode() not in letter.value()
        assert letter.key() is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "cannot be truncated" in r.getMessage()]
    assert len(warnings) == 1
    assert "DeleteRecords" in warnings[0]
    assert "the embedded broker enforces no retention" in warnings[0]


def test_scan_reports_untruncated_transit_topic(settings, redactor):
    create_topics(settings)
    send_raw_records(settings, 10)
    worker = TransitRedactor(settings, redactor)
    thread = start(worker)
    try:
        read_records(settings, REQUESTS, lambda rs: len(distinct_ids(rs)) >= 10)
    finally:
        stop(worker, thread)

    report = scan_pipeline(settings, analyzer=redactor, known_values=[(1, EMAIL), (2, SSN)])

    locations = {location["name"]: location for location in report["locations"]}
    transit = report["transit"]
    assert transit["topic"] == settings.topic(REQUESTS_RAW)
    assert transit["records"] == 10
    assert transit["truncation_supported"] is False
    assert "DeleteRecords" in transit["truncation_error"]
    assert transit["retention_ms"] == "3600000"
    assert transit["retention_enforced"] is False
    assert locations[settings.topic(REQUESTS_RAW)]["known_value_matches"] == 20
    assert locations[settings.topic(REQUESTS_RAW)]["entity_counts"]["EMAIL_ADDRESS"] == 10
    assert locations[settings.topic(REQUESTS)]["records"] == 10
    assert locations[settings.topic(REQUESTS)]["known_value_matches"] == 0
    assert locations[settings.topic(REQUESTS)]["entity_counts"] == {}
    assert report["found"] is True


def test_delete_records_up_to_committed_offsets(settings, redactor):
    settings = settings.model_copy(update={"batch_size": 8})
    create_topics(settings)
    ids = set(send_raw_records(settings, 120))
    group_id = f"{settings.topic('redactor')}-{uuid.uuid4().hex[:6]}"
    admin = RecordingAdmin(settings, group_id)
    worker = TransitRedactor(settings, redactor, group_id=group_id, admin=admin)
    thread = start(worker)
    try:
        read_records(settings, REQUESTS, lambda rs: distinct_ids(rs) >= ids)
    finally:
        stop(worker, thread)
        admin.close()

    reader = Consumer(settings.kafka_client_config(**{"group.id": group_id, "enable.auto.commit": False}))
    final = reader.committed([TopicPartition(settings.topic(REQUESTS_RAW), p) for p in range(settings.partitions)], timeout=10)
    reader.close()
    final_offsets = {tp.partition: tp.offset for tp in final}

    assert worker.truncation.supported is True
    assert len(admin.requests) >= 120 // 8 // settings.partitions
    for request, committed in zip(admin.requests, admin.committed_then, strict=True):
        assert request == committed
    last_requested: dict[int, int] = {}
    for request in admin.requests:
        for partition, offset in request.items():
            assert offset > last_requested.get(partition, 0)
            last_requested[partition] = offset
    assert last_requested == final_offsets
    assert sum(final_offsets.values()) == 120
