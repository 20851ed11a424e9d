"""The learning commands: their parser, and ``train`` publishing a job by hand on the real broker and Redis."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from driftloop.config import Settings
from driftloop.drift.events import TrainingJob
from driftloop.infra.clients import make_redis
from driftloop.infra.stack import free_port
from driftloop.infra.topics import AUDIT, EXAMPLES, JOBS, create_topics
from driftloop.cli import main
from driftloop.learning_cli import add_commands, cmd_learn_drift, cmd_learn_trainer, cmd_train
from driftloop.registry.heartbeat import trainer_status_key
from driftloop.registry.registry import ModelRegistry
from driftloop.status import collect_status, describe_learning
from driftloop.drift.redis_lock import job_lock_for, pipeline_name
from driftloop.testing.models import write_tiny_artifact
from driftloop.testing.services import write_config
from driftloop.testing.topics import TopicReader


def parser() -> argparse.ArgumentParser:
    result = argparse.ArgumentParser()
    result.add_argument("--config")
    add_commands(result.add_subparsers(dest="command", required=True))
    return result


def test_commands_parse() -> None:
    train = parser().parse_args(["train", "--reason", "new intents", "--wait"])
    drift = parser().parse_args(["learn", "drift"])
    trainer = parser().parse_args(["learn", "trainer", "--min-examples-after-alarm", "300", "--nice", "0", "--max-jobs", "1"])

    assert train.handler is cmd_train
    assert train.reason == "new intents"
    assert train.wait
    assert drift.handler is cmd_learn_drift
    assert trainer.handler is cmd_learn_trainer
    assert trainer.min_examples_after_alarm == 300
    assert trainer.nice == 0
    assert trainer.max_jobs == 1


def test_learn_needs_a_process() -> None:
    with pytest.raises(SystemExit):
        parser().parse_args(["learn"])


def register_champion(settings: Settings, tmp_path: Path) -> None:
    """Create the jobs and audit topics and register a tiny version 1 as champion."""
    create_topics(settings, (JOBS, AUDIT))
    write_tiny_artifact(tmp_path / "v1", ("billing", "bug"))
    with ModelRegistry(settings) as registry:
        registry.register(tmp_path / "v1")
        registry.promote(1, "train command test")


@pytest.mark.integration
def test_train_publishes_job(settings: Settings, tmp_path: Path, capsys, monkeypatch) -> None:
    # An empty DRIFTLOOP_CONFIG keeps a config path set in the environment out of the test.
    monkeypatch.setenv("DRIFTLOOP_CONFIG", "")
    register_champion(settings, tmp_path)
    config = write_config(settings, tmp_path / "config.yaml")
    reader = TopicReader(settings, settings.topic(JOBS))

    exit_code = main(["--config", str(config), "train", "--reason", "new intents"])
    printed = json.loads(capsys.readouterr().out)
    records = reader.read_until(lambda found: len(found) >= 1, timeout=30)
    reader.close()

    assert exit_code == 0
    assert len(records) == 1
    job = TrainingJob.model_validate_json(records[0].value())
    assert job.job_id == printed["job_id"]
    assert job.model_version == 1
    assert job.pipeline == pipeline_name(settings)
    assert job.reason == "started by hand: new intents"
    client = make_redis(settings)
    try:
        assert job_lock_for(settings, client).holder(job.pipeline) == job.job_id
    finally:
        client.close()


@pytest.mark.integration
def test_train_rejected_while_job_runs(settings: Settings, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("DRIFTLOOP_CONFIG", "")
    register_champion(settings, tmp_path)
    client = make_redis(settings)
    job_lock_for(settings, client).acquire(pipeline_name(settings), "running-job", ttl_s=600)
    client.close()
    config = write_config(settings, tmp_path / "config.yaml")

    exit_code = main(["--config", str(config), "train"])

    assert exit_code == 2
    error = capsys.readouterr().err
    assert f"job running-job holds the job lock of pipeline {pipeline_name(settings)} (it expires in at most 6" in error
    assert "no trainer is running: start `driftloop learn trainer`" in error


@pytest.mark.integration
def test_train_wait_without_trainer_says_queued(settings: Settings, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("DRIFTLOOP_CONFIG", "")
    register_champion(settings, tmp_path)
    config = write_config(settings, tmp_path / "config.yaml")

    exit_code = main(["--config", str(config), "train", "--wait", "--timeout", "1"])

    assert exit_code == 1
    outcome = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert outcome["status"] == "queued"
    assert outcome["reason"] == "not done after 1 s; no trainer is running: start `driftloop learn trainer` to run the job"


@pytest.mark.integration
def test_train_needs_a_champion(settings: Settings, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("DRIFTLOOP_CONFIG", "")
    create_topics(settings, (JOBS,))
    config = write_config(settings, tmp_path / "config.yaml")

    exit_code = main(["--config", str(config), "train"])

    assert exit_code == 2
    assert "has no champion to train from" in capsys.readouterr().err


@pytest.mark.integration
@pytest.mark.parametrize("command", [["train"], ["learn", "drift"], ["learn", "trainer"]])
def test_command_without_redis(command, settings: Settings, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("DRIFTLOOP_CONFIG", "")
    config = write_config(settings.model_copy(update={"redis_port": free_port()}), tmp_path / "config.yaml")

    exit_code = main(["--config", str(config), *command])

    assert exit_code == 2
    error = capsys.readouterr().err
    assert "is not reachable" in error
    assert "driftloop up" in error


@pytest.mark.integration
def test_learn_drift_without_kafka(settings: Settings, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("DRIFTLOOP_CONFIG", "")
    port = free_port()
    config = write_config(settings.model_copy(update={"broker_port": port}), tmp_path / "config.yaml")

    exit_code = main(["--config", str(config), "learn", "drift"])

    assert exit_code == 2
    assert f"Kafka at 127.0.0.1:{port} did not respond within 10 s" in capsys.readouterr().err


@pytest.mark.integration
def test_learn_trainer_missing_topics(settings: Settings, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("DRIFTLOOP_CONFIG", "")
    create_topics(settings, (JOBS,))
    config = write_config(settings, tmp_path / "config.yaml")

    exit_code = main(["--config", str(config), "learn", "trainer"])

    assert exit_code == 2
    error = capsys.readouterr().err
    assert f"topics {settings.topic(EXAMPLES)}, {settings.topic(AUDIT)} not found" in error
    assert "driftloop topics create" in error


@pytest.mark.parametrize(
    "arguments",
    [
        ["learn", "trainer", "--max-attempts", "0"],
        ["learn", "trainer", "--max-jobs", "0"],
        ["learn", "trainer", "--min-examples-after-alarm", "-1"],
        ["learn", "trainer", "--wait-timeout", "nan"],
        ["train", "--timeout", "-5"],
    ],
)
def test_invalid_numbers_rejected(arguments, capsys) -> None:
    with pytest.raises(SystemExit) as stopped:
        parser().parse_args(arguments)

    assert stopped.value.code == 2
    assert "expected" in capsys.readouterr().err


@pytest.mark.integration
def test_status_shows_trainer_and_job_lock(settings: Settings) -> None:
    client = make_redis(settings)
    try:
        assert collect_status(settings)["learning"] == {"trainer": {}, "job_lock": None}

        client.hset(
            trainer_status_key(settings),
            mapping={"worker_id": "trainer-7", "phase": "training", "job_id": "job-1", "since_ms": "0"},
        )
        job_lock_for(settings, client).acquire(pipeline_name(settings), "job-1", ttl_s=600)
        learning = collect_status(settings)["learning"]
    finally:
        client.close()

    assert learning["trainer"]["phase"] == "training"
    assert learning["job_lock"] == "job-1"
    line = describe_learning(learning)
    assert line.startswith("trainer trainer-7: training, job job-1 since ")
    assert line.endswith("; job lock: held by job job-1")
    assert describe_learning({"trainer": {}, "job_lock": None}) == "trainer: not running; job lock: free"
