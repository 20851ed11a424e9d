"""RedactionSettings: defaults, normalisation and errors that name the setting."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from driftloop.config import load_settings
from driftloop.errors import ConfigError
from driftloop.redaction.settings import DEFAULT_ENTITIES, RedactionSettings


def test_defaults_are_valid():
    settings = RedactionSettings()

    assert settings.enabled is True
    assert settings.entities == DEFAULT_ENTITIES
    assert settings.ner_entities == ("PERSON", "LOCATION")
    assert "CA" not in settings.phone_regions


def test_phone_regions_normalised():
    settings = RedactionSettings(phone_regions=["gb", " us ", "GB"])

    assert settings.phone_regions == ("GB", "US")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"phone_regions": ["UK"]}, r"redaction\.phone_regions: 'UK' is not an ISO 3166-1 alpha-2.*'GB'"),
        ({"phone_regions": ["GB", "XX"]}, r"redaction\.phone_regions: 'XX' is not an ISO 3166-1 alpha-2"),
        ({"phone_regions": ["GBR"]}, r"redaction\.phone_regions: 'GBR'"),
        ({"entities": ["PERSON", "PASSPORT_NUMBER"]}, r"redaction\.entities: unknown entity 'PASSPORT_NUMBER'"),
        ({"entities": []}, r"redaction\.entities is empty"),
        (
            {"pattern_recognizers": [{"name": "ticket", "entity": "TICKET", "regex": "TK-(\\d+"}]},
            r"pattern_recognizers\.0\.regex[\s\S]*redaction\.pattern_recognizers: invalid regular expression",
        ),
        (
            {"pattern_recognizers": [{"name": "any", "entity": "ANY", "regex": "x*"}]},
            r"redaction\.pattern_recognizers: regular expression 'x\*' matches the empty string",
        ),
        (
            {"pattern_recognizers": [{"name": "ticket", "entity": "ticket id", "regex": "TK-\\d+"}]},
            r"redaction\.pattern_recognizers: entity must be upper case",
        ),
        (
            {"score_threshold": 0.9, "pattern_recognizers": [{"name": "t", "entity": "T", "regex": "T-1", "score": 0.5}]},
            r"redaction\.pattern_recognizers\[0\]\.score 0\.5 is below redaction\.score_threshold 0\.9",
        ),
        ({"spacy_model": "en_core_web_missing"}, r"redaction\.spacy_model: 'en_core_web_missing' is neither"),
        (
            {"max_chunk_chars": 1000, "chunk_overlap_chars": 600},
            r"redaction\.chunk_overlap_chars 600 must be at most half of redaction\.max_chunk_chars 1000",
        ),
        ({"colour": "blue"}, r"colour\s+Extra inputs are not permitted"),
    ],
)
def test_invalid_settings_name_the_setting(overrides, message):
    with pytest.raises(ValidationError, match=message):
        RedactionSettings(**overrides)


def test_extra_recognizer_entity_is_active():
    settings = RedactionSettings(
        entities=["EMAIL_ADDRESS"],
        pattern_recognizers=[{"name": "ticket", "entity": "TICKET_ID", "regex": r"\bTK-\d{6}\b"}],
    )

    assert settings.active_entities == ("EMAIL_ADDRESS", "TICKET_ID")


def test_extra_recognizer_entity_may_be_listed():
    settings = RedactionSettings(
        entities=["TICKET_ID"],
        pattern_recognizers=[{"name": "ticket", "entity": "TICKET_ID", "regex": r"\bTK-\d{6}\b"}],
    )

    assert settings.active_entities == ("TICKET_ID",)
    assert settings.ner_entities == ()


def test_settings_are_frozen():
    settings = RedactionSettings()

    with pytest.raises(ValidationError, match="frozen"):
        settings.score_threshold = 0.1


def test_config_file_error_names_redaction_section(tmp_path, monkeypatch):
    monkeypatch.delenv("DRIFTLOOP_CONFIG", raising=False)
    config = tmp_path / "config.yaml"
    config.write_text("redaction:\n  phone_regions: [GB, UK]\n", encoding="utf-8")

    with pytest.raises(ConfigError, match=r"redaction\.phone_regions \(DRIFTLOOP_REDACTION__PHONE_REGIONS\)"):
        load_settings(config)


def test_config_file_sets_redaction(tmp_path, monkeypatch):
    monkeypatch.delenv("DRIFTLOOP_CONFIG", raising=False)
    config = tmp_path / "config.yaml"
    config.write_text("redaction:\n  phone_regions: [gb]\n  score_threshold: 0.5\n", encoding="utf-8")

    settings = load_settings(config)

    assert settings.redaction.phone_regions == ("GB",)
    assert settings.redaction.score_threshold == 0.5
