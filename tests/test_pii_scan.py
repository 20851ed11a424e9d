"""`driftloop pii scan` against the real broker and Presidio: planted values are found, never printed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from confluent_kafka import Message

import driftloop.cli
from driftloop.infra.clients import DeadLetterWriter, make_producer
from driftloop.infra.topics import PREDICTIONS, REQUESTS, create_topics
from driftloop.producer import EventProducer, now_ms
from driftloop.redaction.ingress import RedactingProducer
from driftloop.redaction.redactor import Redactor
from driftloop.redaction.scan import scan_pipeline
from driftloop.schemas.events import InferenceRequest
from driftloop.testing.services import write_config

pytestmark = pytest.mark.integration

EMAIL = "dora.lindqvist@example.com"
# A customer number that no recognizer matches: only --values finds it.
CUSTOMER_ID = "CUST-88412-ZX"


@pytest.fixture(scope="module")
def redactor():
    with Redactor() as shared:
        yield shared


@pytest.fixture
def config(settings, tmp_path, monkeypatch) -> Path:
    path = write_config(settings, tmp_path / "config.yaml")
    # load_settings sets DRIFTLOOP_CONFIG; monkeypatch restores it after the test.
    monkeypatch.setenv("DRIFTLOOP_CONFIG", str(path))
    return path


def send_request(settings, request_id: str, text: str, **attributes) -> None:
    producer = EventProducer(settings)
    producer.send_request(InferenceRequest(request_id=request_id, event_time_ms=now_ms(), text=text, attributes=attributes))
    producer.flush()


def write_log(settings, name: str, lines: list[str]) -> Path:
    path = Path(settings.state_dir) / "logs" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def by_name(report: dict) -> dict[str, dict]:
    return {location["name"]: location for location in report["locations"]}


def test_scan_finds_planted_email(settings, config, capsys):
    create_topics(settings)
    send_request(settings, "r1", "A request with no personal data")
    send_request(settings, "r2", f"Please write to {EMAIL} today")
    write_log(settings, "worker.log", ["2026-01-01 INFO worker started", f"2026-01-01 ERROR could not parse {EMAIL}"])

    code = driftloop.cli.main(["--config", str(config), "pii", "scan"])
    output = capsys.readouterr()

    lines = output.out.splitlines()
    requests_line = next(line for line in lines if line.startswith(f"topic {settings.topic(REQUESTS)} "))
    log_line = next(line for line in lines if line.startswith("file logs/worker.log "))
    assert code == 1
    # Each request contains three texts: the record key, the request id and the text.
    assert requests_line.split()[2:] == ["2", "6", "EMAIL_ADDRESS", "1"]
    assert log_line.split()[2:] == ["2", "2", "EMAIL_ADDRESS", "1"]
    assert "result: PII found in 2 of " in output.out
    assert EMAIL not in output.out + output.err
    assert "dora" not in output.out + output.err


def test_scan_clean_pipeline_exits_zero(settings, config, redactor, capsys):
    create_topics(settings)
    with RedactingProducer(settings, redactor=redactor) as producer:
        request_id = producer.send_request(f"Mail {EMAIL} about card 4111 1111 1111 1111", attributes={"segment": "retail"})
        producer.send_feedback(request_id, "card_arrival")
        producer.dead_letter(f"bad line with {EMAIL}".encode(), "invalid_json", "invalid JSON", "input.jsonl:2")
    write_log(settings, "worker.log", ["2026-01-01 INFO worker started", "2026-01-01 INFO processed a batch of 3 requests"])

    code = driftloop.cli.main(["--config", str(config), "pii", "scan"])
    output = capsys.readouterr()

    assert code == 0, output.out
    assert f"topic {settings.topic(REQUESTS)}" in output.out
    assert "file logs/worker.log" in output.out
    assert "result: no PII found in " in output.out


def test_scan_known_values(settings, config, tmp_path, capsys):
    create_topics(settings)
    send_request(settings, "r1", "Where is my card?", customer=CUSTOMER_ID)
    card = Path(settings.state_dir) / "models" / "v1" / "MODEL_CARD.md"
    card.parent.mkdir(parents=True)
    card.write_text(f"# Model version 1\n\nTrained on a window that includes {CUSTOMER_ID}.\n", encoding="utf-8")
    values = tmp_path / "values.txt"
    values.write_text(f"{EMAIL}\n{CUSTOMER_ID}\n\n", encoding="utf-8")

    code = driftloop.cli.main(["--config", str(config), "pii", "scan", "--values", str(values), "--json"])
    output = capsys.readouterr()
    values_only = driftloop.cli.main(
        ["--config", str(config), "pii", "scan", "--values", str(values), "--values-only", "--json"]
    )
    output_values_only = capsys.readouterr()

    report = json.loads(output.out)
    locations = by_name(report)
    report_values_only = json.loads(output_values_only.out)
    assert code == 1
    assert report["known_values"] == 2
    assert locations[settings.topic(REQUESTS)]["known_value_matches"] == 1
    assert locations[settings.topic(REQUESTS)]["known_value_lines"] == [2]
    assert locations[settings.topic(REQUESTS)]["entity_counts"] == {}
    assert locations["models/v1/MODEL_CARD.md"]["known_value_matches"] == 1
    assert values_only == 1
    assert report_values_only["analyzer"] is None
    assert by_name(report_values_only)[settings.topic(REQUESTS)]["known_value_lines"] == [2]
    assert CUSTOMER_ID not in output.out + output_values_only.out
    assert EMAIL not in output.out + output_values_only.out


def test_scan_decodes_dead_letter_payload(settings, redactor):
    create_topics(settings)
    producer = make_producer(settings)
    # As the inference worker writes them: the payload base64-encoded in the dead letter.
    letters = DeadLetterWriter(settings, producer, "inference", include_payload=True)
    raw = json.dumps({"request_id": "x1", "text": f"mail {EMAIL}"}).encode()
    letters.send(Message(topic=settings.topic(REQUESTS), partition=0, offset=7, value=raw, key=b"x1"), "invalid_event", "bad")
    producer.flush(10)

    report = scan_pipeline(settings, analyzer=redactor, known_values=[(1, EMAIL)])

    dead_letters = by_name(report)[settings.topic("dlq")]
    assert dead_letters["records"] == 1
    assert dead_letters["entity_counts"] == {"EMAIL_ADDRESS": 1}
    assert dead_letters["fields"] == {"value_b64 (decoded).text": {"EMAIL_ADDRESS": 1}}
    assert dead_letters["known_value_matches"] == 1


def test_scan_model_store_skips_tokenizer(settings, redactor):
    directory = Path(settings.state_dir) / "models" / "v2"
    directory.mkdir(parents=True)
    (directory / "MODEL_CARD.md").write_text(f"# Model\n\nContact {EMAIL}\n", encoding="utf-8")
    (directory / "model_card.json").write_text(json.dumps({"data_window": {"owner": EMAIL}}), encoding="utf-8")
    (directory / "tokenizer.json").write_text(json.dumps({"vocab": {EMAIL: 1, "john": 2}}), encoding="utf-8")
    (directory / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      " + EMAIL.encode())

    report = scan_pipeline(settings, analyzer=redactor)

    locations = by_name(report)
    assert locations["models/v2/MODEL_CARD.md"]["entity_counts"] == {"EMAIL_ADDRESS": 1}
    assert locations["models/v2/model_card.json"]["fields"] == {"data_window.*": {"EMAIL_ADDRESS": 1}}
    assert "models/v2/tokenizer.json" not in locations
    assert "models/v2/model.safetensors" not in locations
    assert {"path": "models/v2/tokenizer.json", "reason": "tokenizer vocabulary"} in report["skipped_files"]
    assert {"path": "models/v2/model.safetensors", "reason": "binary"} in report["skipped_files"]


def test_scan_ignores_placeholders(settings, redactor):
    create_topics(settings)
    send_request(settings, "p1", "Mail <EMAIL_ADDRESS> or call <PHONE_NUMBER>, I am <PERSON> from <LOCATION>")
    send_request(settings, "p2", "Card <CREDIT_CARD>, IBAN <IBAN_CODE>, SSN <US_SSN>, from <IP_ADDRESS>, see <URL>")
    # Predictions carry the text cut to the model's length, which can cut a placeholder.
    producer = EventProducer(settings)
    producer.send_raw(settings.topic(PREDICTIONS), b"p3", json.dumps({"request_id": "p3", "text": "Write to <EMAIL_ADD"}).encode())
    producer.flush()

    report = scan_pipeline(settings, analyzer=redactor)

    locations = by_name(report)
    assert locations[settings.topic(REQUESTS)]["records"] == 2
    assert locations[settings.topic(REQUESTS)]["entity_counts"] == {}
    assert locations[settings.topic(PREDICTIONS)]["records"] == 1
    assert locations[settings.topic(PREDICTIONS)]["entity_counts"] == {}
    assert report["found"] is False
