"""The command line: help, the embedded stack's lifecycle, topics, model init and status."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest

from driftloop.cli import ConsoleFilter, main
from driftloop.infra.stack import free_port

pytestmark = pytest.mark.integration


def driftloop(*args: str, env_config=None, check=True) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "driftloop.cli"]
    if env_config is not None:
        command += ["--config", str(env_config)]
    result = subprocess.run([*command, *args], capture_output=True, text=True, timeout=300)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.parametrize("args", [[], ["worker"], ["models"], ["pii"], ["topics"]])
def test_help_lists_commands(args):
    result = driftloop(*args, "--help")
    assert "usage: driftloop" in result.stdout


def test_up_twice_then_down(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(
        f"state_dir: {tmp_path / 'state'}\nbroker_port: {free_port()}\nredis_port: {free_port()}\ntopic_prefix: cli.\npartitions: 2\n",
        encoding="utf-8",
    )
    try:
        first = driftloop("up", env_config=config)
        second = driftloop("up", env_config=config)
        topics = driftloop("topics", "create", env_config=config)
        again = driftloop("topics", "create", env_config=config)
        status = driftloop("status", "--json", env_config=config)
    finally:
        down = driftloop("down", env_config=config)

    assert "broker started" in first.stdout
    assert "redis started" in first.stdout
    assert "already running" in second.stdout
    assert "cli.requests: created" in topics.stdout
    assert "cli.requests: exists" in again.stdout
    assert json.loads(status.stdout)["topic_prefix"] == "cli."
    assert "broker stopped" in down.stdout
    assert "redis stopped" in down.stdout


def test_model_init_with_minilm(stack_settings, tmp_path, shared_data):
    from driftloop.testing.services import write_config

    settings = stack_settings.model_copy(update={"topic_prefix": "init.", "state_dir": tmp_path})
    config = write_config(settings, tmp_path / "config.yaml")
    result = driftloop(
        "model", "init", "--data", str(shared_data / "banking77" / "train.csv"), "--limit", "400",
        env_config=config,
    )
    report = json.loads(result.stdout)
    listing = json.loads(driftloop("models", "list", "--json", env_config=config).stdout)

    assert report["version"] == 1
    assert report["train_rows"] == 320
    assert report["held_out_accuracy"] is not None
    assert listing["champion"] == 1
    assert [entry["status"] for entry in listing["versions"]] == ["champion"]


def test_invalid_setting_exits_2(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("batch_size: -1\n", encoding="utf-8")
    result = driftloop("status", env_config=config, check=False)
    assert result.returncode == 2
    assert "batch_size (DRIFTLOOP_BATCH_SIZE)" in result.stderr


def test_status_without_stack_explains(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(f"broker_port: {free_port()}\nredis_port: {free_port()}\n", encoding="utf-8")
    result = driftloop("status", env_config=config, check=False)
    assert result.returncode == 2
    assert "not reachable; start the embedded stack with `driftloop up`" in result.stderr
    assert "Traceback" not in result.stderr


def test_demo_rejects_bad_limit_before_starting(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(f"state_dir: {tmp_path / 'state'}\nbroker_port: {free_port()}\nredis_port: {free_port()}\n", encoding="utf-8")
    negative = driftloop("demo", "--data", "x.csv", "--limit", "-5", env_config=config, check=False)
    missing = driftloop("demo", "--data", str(tmp_path / "absent.csv"), env_config=config, check=False)

    assert negative.returncode == 2
    assert "--limit must be at least 10 rows, got -5" in negative.stderr
    assert missing.returncode == 2
    assert "data file not found" in missing.stderr
    assert "broker started" not in missing.stdout


def log_record(name: str, level: int) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, "message", None, None)


def test_console_filter_drops_presidio_info_only():
    console = ConsoleFilter()

    assert not console.filter(log_record("presidio-analyzer", logging.INFO))
    assert not console.filter(log_record("presidio-analyzer", logging.DEBUG))
    assert console.filter(log_record("presidio-analyzer", logging.WARNING))
    assert console.filter(log_record("driftloop.redaction.redactor", logging.INFO))


def test_main_leaves_logger_levels_alone(tmp_path):
    presidio = logging.getLogger("presidio-analyzer")
    level = presidio.level

    exit_code = main(["--log-level", "INFO", "pii", "evaluate", "--data", str(tmp_path / "missing.json")])

    assert exit_code == 2
    assert presidio.level == level
