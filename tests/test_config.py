"""Settings: file, environment, validation messages, masked secrets."""

from __future__ import annotations

import pytest

from driftloop.config import load_settings
from driftloop.errors import ConfigError


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in list(__import__("os").environ):
        if name.startswith("DRIFTLOOP_"):
            monkeypatch.delenv(name)


def test_defaults_use_embedded_stack():
    settings = load_settings()
    assert settings.embedded
    assert settings.bootstrap == "127.0.0.1:19092"
    assert settings.topic("requests") == "driftloop.requests"


def test_environment_overrides_file(tmp_path, monkeypatch):
    config = tmp_path / "driftloop.yaml"
    config.write_text("kafka_bootstrap: kafka-a:9092\nbatch_size: 16\nredaction:\n  enabled: false\n", encoding="utf-8")
    monkeypatch.setenv("DRIFTLOOP_BATCH_SIZE", "32")
    monkeypatch.setenv("DRIFTLOOP_REDIS_URL", "redis://:hunter2@cache:6379/1")

    settings = load_settings(config)

    assert settings.kafka_bootstrap == "kafka-a:9092"
    assert settings.batch_size == 32
    assert settings.redaction.enabled is False
    assert not settings.embedded


def test_summary_masks_secrets(monkeypatch):
    monkeypatch.setenv("DRIFTLOOP_REDIS_URL", "redis://user:hunter2@cache:6379/1")
    monkeypatch.setenv("DRIFTLOOP_KAFKA_CONFIG", '{"sasl.password": "s3cret", "security.protocol": "SASL_SSL"}')

    summary = load_settings().summary()

    assert "hunter2" not in str(summary)
    assert "s3cret" not in str(summary)
    assert summary["kafka_config"]["security.protocol"] == "SASL_SSL"


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("DRIFTLOOP_BATCH_SIZE", "0", r"batch_size \(DRIFTLOOP_BATCH_SIZE\)"),
        ("DRIFTLOOP_KAFKA_BOOTSTRAP", "no-port", r"kafka_bootstrap .*host:port"),
        ("DRIFTLOOP_REDIS_URL", "http://x", r"redis_url .*redis://"),
        ("DRIFTLOOP_DEVICE", "tpu", r"device \(DRIFTLOOP_DEVICE\)"),
        ("DRIFTLOOP_TOPIC_PREFIX", "bad prefix", r"topic_prefix"),
    ],
)
def test_invalid_setting_named(monkeypatch, variable, value, message):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=message):
        load_settings()


def test_unknown_key_in_file_rejected(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("batch_sise: 4\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="batch_sise"):
        load_settings(config)


def test_missing_file_named(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(tmp_path / "absent.yaml")


def test_file_that_is_not_mapping(tmp_path):
    config = tmp_path / "list.yaml"
    config.write_text("- a\n- b\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="mapping"):
        load_settings(config)


def test_config_file_not_left_in_environment(tmp_path):
    import os

    config = tmp_path / "driftloop.yaml"
    config.write_text("kafka_bootstrap: kafka-a:9092\n", encoding="utf-8")

    assert load_settings(config).kafka_bootstrap == "kafka-a:9092"
    assert "DRIFTLOOP_CONFIG" not in os.environ
    assert load_settings().kafka_bootstrap == ""
