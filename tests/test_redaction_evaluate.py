"""Evaluation against labelled data, next to Presidio's defaults, and the ``pii evaluate`` command."""

from __future__ import annotations

import argparse
import json

import pytest

from driftloop.redaction.baseline import build_default_analyzer
from driftloop.redaction.cli import add_commands
from driftloop.redaction.evaluate import PRESIDIO_DEFAULT, STAGE, analyze_with_presidio, evaluate, render_table, score
from driftloop.redaction.labelled import GoldSpan, read_conll, read_presidio_json
from driftloop.redaction.redactor import Redactor
from driftloop.redaction.scan import scan_texts
from driftloop.redaction.settings import RedactionSettings

# Texts of the PII set kept for the recall test: the first ones (mostly names and places),
# plus every text with a pattern entity, which are too rare among the first ones.
FIRST_TEXTS = 300
PATTERN_LABELS = {"EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "IP_ADDRESS", "US_SSN", "DOMAIN_NAME"}


@pytest.fixture(scope="module")
def redactor():
    with Redactor(RedactionSettings()) as stage:
        yield stage


@pytest.fixture(scope="module")
def default_analyzer():
    return build_default_analyzer()


@pytest.fixture(scope="module")
def pii_set(shared_data):
    return shared_data / "presidio_synth_pii" / "synth_dataset_v2.json"


@pytest.fixture(scope="module")
def wnut_dev(shared_data):
    return shared_data / "wnut17" / "emerging.dev.conll"


def test_conll_spans_from_bio_tags(tmp_path):
    path = tmp_path / "sample.conll"
    path.write_text(
        "Visuals\tO\nof\tO\nGurez\tB-location\nsector\tI-location\n.\tO\n\t\n"
        "go\tO\nray\tB-person\nrice\tI-person\nlondon\tB-location\n",
        encoding="utf-8",
    )

    texts = read_conll(path)

    assert [item.text for item in texts] == ["Visuals of Gurez sector .", "go ray rice london"]
    assert texts[0].spans == (GoldSpan("location", 11, 23),)
    assert texts[1].spans == (GoldSpan("person", 3, 11), GoldSpan("location", 12, 18))
    assert texts[1].text[3:11] == "ray rice"


def test_presidio_json_spans_match_text(pii_set):
    texts = read_presidio_json(pii_set)

    assert len(texts) == 1500
    assert sum(len(item.spans) for item in texts) == 2863
    first = texts[0]
    assert all(0 <= span.start < span.end <= len(first.text) for span in first.spans)


def test_recall_at_least_presidio_defaults(redactor, default_analyzer, pii_set):
    texts = read_presidio_json(pii_set)
    subset = [
        item for number, item in enumerate(texts)
        if number < FIRST_TEXTS or any(span.label in PATTERN_LABELS for span in item.spans)
    ]
    entity_types = redactor.settings.active_entities
    raw_texts = [item.text for item in subset]

    stage = score(subset, redactor.analyze_batch(raw_texts), entity_types)
    default = score(subset, analyze_with_presidio(default_analyzer, raw_texts, entity_types), entity_types)

    assert stage["per_entity"]["PERSON"]["support"] > 100
    assert stage["per_entity"]["LOCATION"]["support"] > 100
    for entity in entity_types:
        assert stage["per_entity"][entity]["recall"] >= default["per_entity"][entity]["recall"], entity
    assert stage["per_entity"]["EMAIL_ADDRESS"]["recall"] == 1.0
    assert stage["per_entity"]["PERSON"]["recall"] > 0.5


def test_evaluate_report_on_wnut(redactor, default_analyzer, wnut_dev):
    report = evaluate(wnut_dev, limit=200, redactor=redactor, default_analyzer=default_analyzer)

    assert report["format"] == "conll-bio"
    assert report["texts"] == 200
    assert report["entity_types"] == ["PERSON", "LOCATION"]
    assert report["mapping"]["person"] == "PERSON"
    assert report["mapping"]["product"] is None
    assert "product" in report["not_evaluated"]
    for name in (STAGE, PRESIDIO_DEFAULT):
        person = report["results"][name]["per_entity"]["PERSON"]
        assert person["support"] > 50
        assert 0.0 <= person["precision"] <= 1.0
        assert 0.0 <= person["f2"] <= 1.0
    stage_recall = report["results"][STAGE]["overall"]["recall"]
    assert stage_recall >= report["results"][PRESIDIO_DEFAULT]["overall"]["recall"]
    json.dumps(report)

    table = render_table(report)

    assert "PERSON" in table
    assert "presidio_default R" in table
    assert "not evaluated" in table


def test_pii_evaluate_command(tmp_path, wnut_dev, monkeypatch, capsys):
    monkeypatch.delenv("DRIFTLOOP_CONFIG", raising=False)
    config = tmp_path / "config.yaml"
    config.write_text("redaction:\n  entities: [PERSON]\n", encoding="utf-8")
    parser = argparse.ArgumentParser()
    parser.add_argument("--config")
    add_commands(parser.add_subparsers(dest="command"))

    args = parser.parse_args(
        ["--config", str(config), "pii", "evaluate", "--data", str(wnut_dev), "--limit", "20", "--json", "--no-defaults"]
    )
    exit_code = args.handler(args)

    assert exit_code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["entity_types"] == ["PERSON"]
    assert list(report["results"]) == [STAGE]


def test_pii_evaluate_rejects_bad_limit(capsys):
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command"))

    with pytest.raises(SystemExit):
        parser.parse_args(["pii", "evaluate", "--data", "x.json", "--limit", "0"])

    assert "expected an integer of at least 1, got 0" in capsys.readouterr().err


def test_scan_with_presidio_analyzer(default_analyzer):
    texts = ["Mail ana@example.com today", "Nothing to report"]

    report = scan_texts(default_analyzer, texts, known_values=["ana@example.com"])

    assert report["texts_with_pii"] == 1
    assert report["entity_counts"]["EMAIL_ADDRESS"] == 1
    assert report["known_values"]["detected"] == 1
    assert "ana@" not in repr(report)
