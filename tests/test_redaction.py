"""The redaction stage with the real Presidio analyzer and spaCy model (no mocks)."""

from __future__ import annotations

import json
import logging
import re

import pytest

from driftloop.errors import RedactionError
from driftloop.redaction.recognizers import build_recognizers, default_pattern_recognizers
from driftloop.redaction.redactor import Redactor
from driftloop.redaction.scan import scan_texts
from driftloop.redaction.settings import PATTERN_ENTITIES, RedactionSettings

LONG_TEXT_CHARS = 1_200_000


@pytest.fixture(scope="module")
def redactor():
    with Redactor(RedactionSettings()) as stage:
        yield stage


def test_same_type_values_each_removed(redactor):
    result = redactor.redact("Forward to ana.one@example.com ben.two@example.org cy.three@example.net")

    assert result.text == "Forward to <EMAIL_ADDRESS> <EMAIL_ADDRESS> <EMAIL_ADDRESS>"
    assert "@" not in result.text
    for local_part in ("ana.one", "ben.two", "cy.three"):
        assert local_part not in result.text
    assert result.entity_counts == {"EMAIL_ADDRESS": 3}


def test_gb_phone_numbers_removed(redactor):
    assert "GB" in redactor.settings.phone_regions

    result = redactor.redact("Call me on 020 7946 0123 or +44 20 7946 0123")

    assert result.text == "Call me on <PHONE_NUMBER> or <PHONE_NUMBER>"
    assert result.entity_counts == {"PHONE_NUMBER": 2}


def test_gb_phone_needs_gb_region():
    with Redactor(RedactionSettings(entities=["PHONE_NUMBER"], phone_regions=["US"])) as us_only:
        result = us_only.redact("Call me on 020 7946 0123 or +44 20 7946 0123")

    # Without GB only the number with a country code is recognised.
    assert result.text == "Call me on 020 7946 0123 or <PHONE_NUMBER>"


def test_card_with_domain_suffix_fully_removed(redactor):
    result = redactor.redact("Test card 4111 1111 1111 1111.com is not a real site")

    assert not re.search(r"\d", result.text)
    assert result.text.startswith("Test card <")
    assert result.text.endswith("> is not a real site")
    placeholders = re.findall(r"<[A-Z_]+>", result.text)
    assert 1 <= len(placeholders) <= 2
    assert "CREDIT_CARD" in result.entity_counts


def test_people_places_and_identifiers(redactor):
    text = (
        "My name is John Smith and I live in Paris. IBAN GB33BUKB20201555555555, "
        "server 192.168.10.24, SSN 536-90-4399 per my social security card."
    )

    result = redactor.redact(text)

    for value in ("John Smith", "Paris", "GB33BUKB20201555555555", "192.168.10.24", "536-90-4399"):
        assert value not in result.text
    assert result.entity_counts == {"IBAN_CODE": 1, "IP_ADDRESS": 1, "LOCATION": 1, "PERSON": 1, "US_SSN": 1}


def test_text_without_pii_unchanged(redactor):
    texts = ["", "   ", "How do I activate my new card?", "\n\n"]

    results = redactor.redact_batch(texts)

    assert [result.text for result in results] == texts
    assert all(result.entity_counts == {} for result in results)
    assert not any(result.redacted for result in results)


def test_batch_matches_single_calls(redactor):
    texts = [
        "Send it to maria.lopez@example.org please",
        "Nothing to see here",
        "Ring +1 212 555 0188 after 5pm, ask for Peter Jones",
    ]

    batch = redactor.redact_batch(texts)

    assert batch == [redactor.redact(text) for text in texts]


def test_allow_list_keeps_value():
    settings = RedactionSettings(entities=["EMAIL_ADDRESS"], allow_list=["support@example.com"])
    with Redactor(settings) as stage:
        result = stage.redact("Write to support@example.com, not to ana@example.com")

    assert result.text == "Write to support@example.com, not to <EMAIL_ADDRESS>"


def test_extra_pattern_recognizer():
    settings = RedactionSettings(
        entities=["EMAIL_ADDRESS"],
        pattern_recognizers=[{"name": "employee id", "entity": "EMPLOYEE_ID", "regex": r"\bEMP-\d{6}\b", "score": 0.9}],
    )
    with Redactor(settings) as stage:
        result = stage.redact("Badge emp-004211 belongs to ana@example.com")

    assert result.text == "Badge <EMPLOYEE_ID> belongs to <EMAIL_ADDRESS>"
    assert result.entity_counts == {"EMAIL_ADDRESS": 1, "EMPLOYEE_ID": 1}


def test_recognizers_limited_to_entities():
    settings = RedactionSettings(entities=["EMAIL_ADDRESS", "PHONE_NUMBER"], phone_regions=["GB"])

    recognizers = build_recognizers(settings)

    names = sorted(type(recognizer).__name__ for recognizer in recognizers)
    assert names == ["OfflineEmailRecognizer", "PhoneRecognizer"]
    phone = next(recognizer for recognizer in recognizers if type(recognizer).__name__ == "PhoneRecognizer")
    assert phone.supported_regions == ("GB",)


def test_pattern_entities_match_presidio_registry():
    registry_entities = {entity for recognizer in default_pattern_recognizers() for entity in recognizer.supported_entities}

    assert set(PATTERN_ENTITIES) <= registry_entities


def test_disabled_stage_passes_text_through():
    with Redactor(RedactionSettings(enabled=False)) as stage:
        results = stage.redact_batch(["Mail ana@example.com"])

    assert results[0].text == "Mail ana@example.com"
    assert results[0].entity_counts == {}


def test_closed_redactor_raises():
    stage = Redactor(RedactionSettings(entities=["EMAIL_ADDRESS"]))
    stage.close()

    with pytest.raises(RedactionError, match="disabled or closed"):
        stage.redact("Mail ana@example.com")


def test_non_text_rejected(redactor):
    with pytest.raises(RedactionError, match=r"texts\[1\] is bytes, expected str"):
        redactor.redact_batch(["fine", b"raw bytes"])
    with pytest.raises(RedactionError, match="got a single str"):
        redactor.redact_batch("one text")


def test_logs_hold_no_values(redactor, caplog):
    text = "Call phone 020 7946 0123, mail jane.doe@example.com, ask for John Smith in Leeds"

    with caplog.at_level(logging.DEBUG):
        result = redactor.redact(text)
        logging.getLogger("presidio-analyzer").error("Failed to validate text %s", "GB33BUKB20201555555555")

    assert result.entity_counts == {"EMAIL_ADDRESS": 1, "LOCATION": 1, "PERSON": 1, "PHONE_NUMBER": 1}
    messages = "\n".join(record.getMessage() for record in caplog.records)
    assert "Context list is" in messages
    for value in ("7946", "jane.doe", "example.com", "John", "Smith", "Leeds", "GB33BUKB"):
        assert value not in messages


def test_long_text_redacted_in_chunks(redactor, caplog):
    filler = "The quarterly report was reviewed by the team and the figures were checked twice. "
    tail = " Please contact jane.doe@example.com for the full details of this transfer request. "
    body = filler * (LONG_TEXT_CHARS // len(filler) + 1)
    long_text = body[: LONG_TEXT_CHARS - len(tail) - 5_000] + tail + body[:5_000]
    assert len(long_text) == LONG_TEXT_CHARS
    normal = [f"Ticket {number}: Maria Lopez wrote from maria{number}@example.org" for number in range(31)]
    texts = normal[:20] + [long_text] + normal[20:]

    with caplog.at_level(logging.INFO, logger="driftloop.redaction.redactor"):
        results = redactor.redact_batch(texts)

    assert len(results) == 32
    long_result = results[20]
    assert "jane.doe@example.com" not in long_result.text
    assert "@" not in long_result.text
    assert long_result.entity_counts == {"EMAIL_ADDRESS": 1}
    assert long_result.text == long_text.replace("jane.doe@example.com", "<EMAIL_ADDRESS>")
    assert any("chunks" in record.getMessage() for record in caplog.records)
    for number, result in enumerate(results[:20] + results[21:]):
        assert result.text == f"Ticket {number}: <PERSON> wrote from <EMAIL_ADDRESS>"


def test_value_on_chunk_border_found():
    settings = RedactionSettings(entities=["EMAIL_ADDRESS"], max_chunk_chars=1_000, chunk_overlap_chars=100)
    email = "jane.doe@example.com"
    with Redactor(settings) as stage:
        for start in range(985, 1_001):
            text = "x " * 2_000
            text = text[:start] + " " + email + " " + text[start + len(email) + 2 :]
            result = stage.redact(text)

            assert email not in result.text, start
            assert result.entity_counts == {"EMAIL_ADDRESS": 1}, start


def test_scan_counts_without_values(redactor):
    texts = ["Mail ana@example.com or bo@example.org", "Nothing here", "Call Peter Jones on +44 20 7946 0123"]
    known = ["ana@example.com", "Peter Jones", "not present anywhere", "here"]

    report = scan_texts(redactor, texts, known_values=known)

    assert report["texts"] == 3
    assert report["texts_with_pii"] == 2
    assert report["entity_counts"] == {"EMAIL_ADDRESS": 2, "PERSON": 1, "PHONE_NUMBER": 1}
    assert report["known_values"] == {
        "given": 4,
        "occurrences": 3,
        "detected": 2,
        "missed": 1,
        "missed_value_indices": [3],
    }
    assert "ana@example.com" not in repr(report)
    assert "Peter" not in repr(report)


def test_scan_rejects_empty_known_value(redactor):
    with pytest.raises(RedactionError, match=r"known_values\[0\] is empty"):
        scan_texts(redactor, ["text"], known_values=[""])


def test_two_processes_match_one(redactor, shared_data):
    records = json.loads((shared_data / "presidio_synth_pii" / "synth_dataset_v2.json").read_text(encoding="utf-8"))
    texts = [record["full_text"] for record in records[:300]]
    settings = redactor.settings.model_copy(update={"processes": 2})

    with Redactor(settings) as parallel:
        results = parallel.redact_batch(texts)

    assert results == redactor.redact_batch(texts)
