"""The ingress path against the real broker and Presidio: RedactingProducer and `driftloop ingest`."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

import driftloop.cli
from driftloop.errors import RedactionError
from driftloop.infra.topics import DEAD_LETTER, FEEDBACK, REQUESTS, create_topics
from driftloop.redaction.ingress import RedactingProducer
from driftloop.redaction.redactor import Redactor
from driftloop.testing.services import write_config
from driftloop.testing.topics import TopicReader

pytestmark = pytest.mark.integration

EMAIL = "ana.kowalska@example.com"
PHONE = "+44 20 7946 0958"
CARD = "4111 1111 1111 1111"
CARD_NUMBER = 4111111111111111


@pytest.fixture(scope="module")
def redactor():
    with Redactor() as shared:
        yield shared


class FailingRedactor:
    """A Redactor that raises RedactionError for any batch holding ``poison``, else redacts."""

    def __init__(self, redactor: Redactor, poison: str | None) -> None:
        self.redactor = redactor
        self.poison = poison

    def redact_batch(self, texts):
        if self.poison is None or any(self.poison in text for text in texts):
            raise RedactionError("PII analysis failed with ValueError at recognizer.py:1 on a batch")
        return self.redactor.redact_batch(texts)

    def close(self) -> None:
        pass


def read_values(settings, name: str, count: int, timeout: float = 60.0) -> list[bytes]:
    reader = TopicReader(settings, settings.topic(name))
    try:
        return [record.value() for record in reader.read_until(lambda records: len(records) >= count, timeout)]
    finally:
        reader.close()


def run_cli(monkeypatch, argv: list[str]) -> int:
    """Run the driftloop CLI in this process with the ingest commands added."""
    modules = (*driftloop.cli.COMMAND_MODULES, "driftloop.redaction.ingest_cli")
    monkeypatch.setattr(driftloop.cli, "COMMAND_MODULES", tuple(dict.fromkeys(modules)))
    return driftloop.cli.main(argv)


def test_producer_sends_only_redacted_requests(settings, redactor):
    create_topics(settings)
    with RedactingProducer(settings, redactor=redactor, batch_size=2) as producer:
        first = producer.send_request(f"Mail {EMAIL} about the card", request_id="r1", attributes={"segment": "retail"})
        producer.send_request(f"Call {PHONE} today", request_id="r2", attributes={"contact": EMAIL, "card": CARD_NUMBER, "tier": 3})
        producer.send_request(f"Card {CARD} was charged twice", request_id="r3")
        producer.send_feedback(first, "card_arrival")

    requests = {json.loads(value)["request_id"]: json.loads(value) for value in read_values(settings, REQUESTS, 3)}
    feedback = [json.loads(value) for value in read_values(settings, FEEDBACK, 1)]

    assert requests["r1"]["text"] == "Mail <EMAIL_ADDRESS> about the card"
    assert requests["r1"]["attributes"] == {"segment": "retail"}
    assert requests["r2"]["text"] == "Call <PHONE_NUMBER> today"
    assert requests["r2"]["attributes"] == {"contact": "<EMAIL_ADDRESS>", "card": "<CREDIT_CARD>", "tier": 3}
    assert requests["r3"]["text"] == "Card <CREDIT_CARD> was charged twice"
    assert feedback[0]["request_id"] == "r1"
    assert feedback[0]["label"] == "card_arrival"
    assert producer.counts.requests == 3
    assert producer.counts.entity_counts == {"EMAIL_ADDRESS": 2, "PHONE_NUMBER": 1, "CREDIT_CARD": 2}


def test_unredactable_text_dead_lettered_as_hash(settings, redactor):
    create_topics(settings)
    poisoned = f"poison text of {EMAIL}"
    with RedactingProducer(settings, redactor=FailingRedactor(redactor, "poison"), batch_size=10) as producer:
        producer.send_request("first clean text", request_id="ok-1")
        producer.send_request(poisoned, request_id="bad-1", origin="unit:7")
        producer.send_request("second clean text", request_id="ok-2")

    requests = [json.loads(value) for value in read_values(settings, REQUESTS, 2)]
    letters = read_values(settings, DEAD_LETTER, 1)
    letter = json.loads(letters[0])

    assert sorted(request["request_id"] for request in requests) == ["ok-1", "ok-2"]
    assert letter["stage"] == "ingress"
    assert letter["reason"] == "redaction_failed"
    assert letter["source"] == "unit:7"
    assert letter["length"] == len(poisoned.encode())
    assert letter["sha256"] == hashlib.sha256(poisoned.encode()).hexdigest()
    assert letter["value_b64"] is None
    assert EMAIL.encode() not in letters[0]
    assert b"poison" not in letters[0]


def test_broken_redactor_raises_and_keeps_requests(settings, redactor):
    create_topics(settings)
    producer = RedactingProducer(settings, redactor=FailingRedactor(redactor, None), batch_size=10)
    producer.send_request(f"Mail {EMAIL}", request_id="held-back")

    with pytest.raises(RedactionError, match="failed on every text, a fixed check text included"):
        producer.flush()

    assert read_values(settings, REQUESTS, 1, timeout=3.0) == []
    assert read_values(settings, DEAD_LETTER, 1, timeout=1.0) == []
    # The request stays buffered: once the redactor works again, a flush sends it.
    producer.redactor = redactor
    producer.flush()
    sent = [json.loads(value) for value in read_values(settings, REQUESTS, 1)]
    assert [request["request_id"] for request in sent] == ["held-back"]
    assert sent[0]["text"] == "Mail <EMAIL_ADDRESS>"


BAD_AND_GOOD_LINES = [
    json.dumps({"request_id": "j1", "text": f"Mail {EMAIL}", "label": "contact", "attributes": {"segment": "retail"}}),
    '{"request_id": "j2", "text": ',  # line 2: invalid JSON
    json.dumps({"request_id": "j3", "label": "contact"}),  # line 3: no text
    json.dumps({"request_id": "j4", "text": "   "}),  # line 4: empty text
    "",  # line 5: blank, skipped
    json.dumps(["not", "an", "object"]),  # line 6
    json.dumps({"request_id": "j7", "text": f"Call {PHONE}", "label": "callback"}),
]


def write_jsonl(path: Path, lines: list[str], extra: bytes = b"") -> Path:
    path.write_bytes(("\n".join(lines) + "\n").encode() + extra)
    return path


def test_ingest_file_reports_bad_lines(settings, tmp_path, monkeypatch, capsys):
    create_topics(settings)
    config = write_config(settings, tmp_path / "config.yaml")
    monkeypatch.setenv("DRIFTLOOP_CONFIG", str(config))
    # Line 8 is not valid UTF-8: 0xff never starts a UTF-8 sequence.
    data = write_jsonl(tmp_path / "input.jsonl", BAD_AND_GOOD_LINES, b'{"text": "caf\xff"}\n')

    code = run_cli(monkeypatch, ["--config", str(config), "ingest", str(data), "--json"])
    output = capsys.readouterr()

    report = json.loads(output.out)
    requests = {json.loads(value)["request_id"]: json.loads(value) for value in read_values(settings, REQUESTS, 2)}
    letters = [json.loads(value) for value in read_values(settings, DEAD_LETTER, 5)]
    feedback = [json.loads(value) for value in read_values(settings, FEEDBACK, 2)]
    assert code == 1
    assert report["requests"] == 2
    assert report["feedback"] == 2
    assert report["rows"] == 7
    assert report["blank_lines"] == 1
    assert report["bad_rows"] == {"empty_text": 1, "invalid_json": 1, "missing_text": 1, "not_utf8": 1, "wrong_type": 1}
    for line, reason in ((2, "invalid_json"), (3, "missing_text"), (4, "empty_text"), (6, "wrong_type"), (8, "not_utf8")):
        assert f"input.jsonl line {line}: " in output.err
        assert f"dead-lettered ({reason})" in output.err
    assert "line 5" not in output.err
    assert {letter["source"]: letter["reason"] for letter in letters} == {
        f"{data}:2": "invalid_json",
        f"{data}:3": "missing_text",
        f"{data}:4": "empty_text",
        f"{data}:6": "wrong_type",
        f"{data}:8": "not_utf8",
    }
    assert all(letter["value_b64"] is None for letter in letters)
    assert requests["j1"]["text"] == "Mail <EMAIL_ADDRESS>"
    assert requests["j1"]["attributes"] == {"segment": "retail"}
    assert requests["j7"]["text"] == "Call <PHONE_NUMBER>"
    assert sorted(item["label"] for item in feedback) == ["callback", "contact"]
    assert EMAIL not in output.out + output.err
    assert PHONE not in output.out + output.err


def test_ingest_reads_stdin(settings, tmp_path):
    create_topics(settings)
    config = write_config(settings, tmp_path / "config.yaml")
    lines = [json.dumps({"request_id": f"s{i}", "text": f"Card {CARD} for order {i}"}) for i in range(5)]
    lines.insert(2, '{"text": oops}')

    result = subprocess.run(
        # DEBUG adds Presidio's per-text records, whose string arguments must be masked.
        [sys.executable, "-m", "driftloop.redaction.ingest_cli", "--config", str(config), "--log-level", "DEBUG", "ingest", "-"],
        input=("\n".join(lines) + "\n").encode(),
        capture_output=True,
        timeout=180,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )

    values = read_values(settings, REQUESTS, 5)
    letters = [json.loads(value) for value in read_values(settings, DEAD_LETTER, 1)]
    stdout = result.stdout.decode()
    stderr = result.stderr.decode()
    assert result.returncode == 1, stderr
    assert "ingested stdin: 6 rows, 5 requests and 0 feedback sent, 1 rows dead-lettered (invalid_json 1)" in stdout
    assert "redacted spans: CREDIT_CARD 5" in stdout
    assert "stdin line 3: invalid JSON" in stderr
    assert sorted(json.loads(value)["request_id"] for value in values) == [f"s{i}" for i in range(5)]
    assert all(json.loads(value)["text"].startswith("Card <CREDIT_CARD> for order") for value in values)
    assert letters[0]["source"] == "stdin:3"
    assert "Context list is: <" in stderr
    assert CARD not in stdout + stderr
    assert CARD.replace(" ", "") not in stdout + stderr


def test_ingest_csv_with_label_and_attribute(settings, tmp_path, monkeypatch, capsys):
    create_topics(settings)
    config = write_config(settings, tmp_path / "config.yaml")
    monkeypatch.setenv("DRIFTLOOP_CONFIG", str(config))
    data = tmp_path / "input.csv"
    data.write_text(
        "id,utterance,category,segment\n"
        f'c1,"Mail {EMAIL}, please",contact,retail\n'
        'c2,"",contact,retail\n'
        f'c3,"Call {PHONE}\nafter six",callback,{EMAIL}\n',
        encoding="utf-8",
    )

    code = run_cli(
        monkeypatch,
        ["--config", str(config), "ingest", str(data), "--id-column", "id", "--attribute", "segment", "--json"],
    )
    output = capsys.readouterr()

    report = json.loads(output.out)
    requests = {json.loads(value)["request_id"]: json.loads(value) for value in read_values(settings, REQUESTS, 2)}
    letters = [json.loads(value) for value in read_values(settings, DEAD_LETTER, 1)]
    assert code == 1
    assert report["bad_rows"] == {"empty_text": 1}
    assert report["feedback"] == 2
    assert requests["c1"]["text"] == "Mail <EMAIL_ADDRESS>, please"
    assert requests["c1"]["attributes"] == {"segment": "retail"}
    assert requests["c3"]["text"] == "Call <PHONE_NUMBER>\nafter six"
    assert requests["c3"]["attributes"] == {"segment": "<EMAIL_ADDRESS>"}
    assert letters[0]["source"] == f"{data}:3"
    # A quoted field over two lines: the record is numbered by the line it ends on.
    assert "input.csv line 3: " in output.err
    assert letters[0]["sha256"] == hashlib.sha256(b'c2,"",contact,retail').hexdigest()
