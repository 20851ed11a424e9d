"""Model registry against the session's real Redis and broker, with tiny real artifacts."""

from __future__ import annotations

import argparse
import json
import shutil
import threading
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
import redis
import torch
import yaml
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from safetensors.torch import load_file, save_file

from driftloop.artifact_digest import artifact_sha256, digest_artifact
from driftloop.config import Settings
from driftloop.errors import ArtifactError, ConfigError, RegistryError, ServiceError
from driftloop.infra.clients import make_redis
from driftloop.infra.stack import free_port
from driftloop.infra.topics import AUDIT, create_topics
from driftloop.model import ARCHITECTURE, METADATA_FILE, WEIGHTS_FILE
from driftloop.registry import cli
from driftloop.registry.cards import CARD_JSON, CARD_MARKDOWN
from driftloop.registry.guardrail import GuardrailPolicy, OnlineAccuracy, Verdict, decide, run_guardrail
from driftloop.registry.heartbeat import WorkerHeartbeat, read_workers
from driftloop.registry.records import Status
from driftloop.registry.registry import ModelRegistry

pytestmark = pytest.mark.integration

LABELS = ("billing", "bug", "praise")


class PickleBomb:
    """Unpickling this object creates ``marker``: proof that a pickle was loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


class FailingPublisher:
    """An audit publisher whose broker is unreachable."""

    def publish(self, event) -> None:
        raise ServiceError("broker unreachable (injected)")

    def close(self) -> None:
        pass


@pytest.fixture
def audit_settings(settings: Settings) -> Settings:
    create_topics(settings, (AUDIT,))
    return settings


@pytest.fixture
def redis_client(settings: Settings):
    client = make_redis(settings)
    yield client
    client.close()


def copy_artifact(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def read_audit_events(settings: Settings, expected: int, timeout_s: float = 30.0) -> list[dict]:
    """Read the audit topic from the beginning until ``expected`` events arrived, oldest first."""
    topic = settings.topic(AUDIT)
    consumer = Consumer(settings.kafka_client_config(**{"group.id": f"audit-{uuid.uuid4().hex[:8]}"}))
    # Assigning partitions directly skips the consumer-group join, which takes seconds.
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING) for partition in partitions])
    events = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(events) < expected and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error() is not None:
                continue
            events.append(json.loads(message.value()))
    finally:
        consumer.close()
    return sorted(events, key=lambda event: event["at_ms"])


# Registering.


def test_register_stores_verified_copy(registry: ModelRegistry, artifacts, settings: Settings) -> None:
    record = registry.register(
        artifacts[0],
        data_window={"examples": {"0": [0, 120]}},
        metrics={"accuracy": 0.8},
        group_metrics={"mobile": {"accuracy": 0.75, "n": 40}},
        gate={"passed": True},
        redaction={"entities": ["EMAIL_ADDRESS"]},
    )

    assert record.version == 1
    assert record.status == Status.CANDIDATE
    assert record.path == Path(settings.state_dir).resolve() / "models" / "v1"
    assert record.sha256 == artifact_sha256(artifacts[0])
    assert record.files == digest_artifact(artifacts[0])[0].files
    assert sorted(record.files) == sorted(path.name for path in artifacts[0].iterdir())
    # The model cards written into the stored copy are left out of its SHA-256.
    assert artifact_sha256(record.path) == record.sha256
    assert record.labels == LABELS
    assert record.architecture == ARCHITECTURE
    assert registry.get(1) == record
    assert registry.champion() is None


def test_register_writes_model_card(registry: ModelRegistry, artifacts) -> None:
    registry.register(artifacts[0])
    record = registry.register(
        artifacts[1],
        parent=1,
        data_window={"examples": {"0": [0, 120]}},
        metrics={"accuracy": 0.8125},
        group_metrics={"mobile": {"accuracy": 0.75, "n": 40}},
        redaction={"score_threshold": 0.5},
    )

    card = json.loads((record.path / CARD_JSON).read_text())
    markdown = (record.path / CARD_MARKDOWN).read_text()
    assert card["parent"] == 1
    assert card["data_window"] == {"examples": {"0": [0, 120]}}
    assert card["group_metrics"] == {"mobile": {"accuracy": 0.75, "n": 40}}
    assert card["redaction"] == {"score_threshold": 0.5}
    assert card["sha256"] == record.sha256
    assert "files" not in card
    assert "# Model version 2" in markdown
    assert "- Parent version: 1" in markdown
    assert "| mobile | 0.7500 | 40 |" in markdown
    assert f"- Artifact SHA-256 (all files except the model cards): `{record.sha256}`" in markdown
    assert "- score_threshold: 0.5" in markdown


def test_register_numbers_versions_increasing(registry: ModelRegistry, artifacts) -> None:
    numbers = [registry.register(artifacts[seed]).version for seed in range(3)]

    assert numbers == [1, 2, 3]
    assert [record.version for record in registry.list_versions()] == [1, 2, 3]


def test_register_unknown_parent_rejected(registry: ModelRegistry, artifacts) -> None:
    with pytest.raises(RegistryError, match="version 7 not found"):
        registry.register(artifacts[0], parent=7)


@pytest.mark.parametrize("keep_safetensors", [False, True], ids=["pickle_only", "pickle_and_safetensors"])
def test_register_rejects_pickle(registry: ModelRegistry, artifacts, tmp_path: Path, keep_safetensors: bool) -> None:
    marker = tmp_path / "unpickled"
    directory = copy_artifact(artifacts[0], tmp_path / "artifact")
    torch.save(PickleBomb(marker), directory / "pytorch_model.bin")
    if not keep_safetensors:
        (directory / WEIGHTS_FILE).unlink()

    with pytest.raises(ArtifactError, match=r"contains pickle files \['pytorch_model.bin'\]"):
        registry.register(directory)

    assert not marker.exists()
    assert registry.list_versions() == []


def test_pickle_bomb_works_when_unpickled(tmp_path: Path) -> None:
    # Guards the pickle tests above: the payload really runs when something unpickles it.
    marker = tmp_path / "unpickled"
    torch.save(PickleBomb(marker), tmp_path / "bomb.bin")

    torch.load(tmp_path / "bomb.bin", weights_only=False)

    assert marker.exists()


def test_register_rejects_truncated_weights(registry: ModelRegistry, artifacts, tmp_path: Path) -> None:
    directory = copy_artifact(artifacts[0], tmp_path / "artifact")
    weights = directory / WEIGHTS_FILE
    with weights.open("r+b") as handle:
        handle.truncate(weights.stat().st_size // 2)

    with pytest.raises(ArtifactError, match="not a readable safetensors file"):
        registry.register(directory)


def test_register_rejects_other_architecture(registry: ModelRegistry, artifacts, tmp_path: Path) -> None:
    directory = copy_artifact(artifacts[0], tmp_path / "artifact")
    metadata = json.loads((directory / METADATA_FILE).read_text())
    metadata["architecture"] = "other.Classifier/3"
    (directory / METADATA_FILE).write_text(json.dumps(metadata))

    with pytest.raises(ArtifactError, match="is a 'other.Classifier/3' model"):
        registry.register(directory)


def test_register_rejects_other_architecture_header(registry: ModelRegistry, artifacts, tmp_path: Path) -> None:
    directory = copy_artifact(artifacts[0], tmp_path / "artifact")
    weights = directory / WEIGHTS_FILE
    save_file(load_file(str(weights)), str(weights), metadata={"architecture": "other.Classifier/3"})

    with pytest.raises(ArtifactError, match="contains a 'other.Classifier/3' model"):
        registry.register(directory)


def test_register_rejects_symlink_out_of_artifact(registry: ModelRegistry, artifacts, tmp_path: Path) -> None:
    directory = copy_artifact(artifacts[0], tmp_path / "artifact")
    outside = tmp_path / "vocab.txt"
    outside.write_text("[PAD]\n", encoding="utf-8")
    (directory / "vocab.txt").symlink_to(outside)

    with pytest.raises(ArtifactError, match="vocab.txt is a symbolic link"):
        registry.register(directory)

    assert registry.list_versions() == []


def test_record_without_file_list_parses(registry: ModelRegistry, artifacts, redis_client: redis.Redis) -> None:
    # Records written before the registry kept per-file SHA-256 values have no files field.
    record = registry.register(artifacts[0])
    redis_client.hdel(registry.keys.version(1), "files")

    assert registry.get(1).files == {}
    assert registry.get(1).sha256 == record.sha256


def test_register_missing_directory_rejected(registry: ModelRegistry, tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="artifact directory .* not found"):
        registry.register(tmp_path / "absent")


# Promoting, rolling back and rejecting.


def test_promote_sets_champion_and_retires(registry: ModelRegistry, artifacts) -> None:
    for seed in range(2):
        registry.register(artifacts[seed])

    first = registry.promote(1, "first model")
    second = registry.promote(2, "better offline accuracy")

    assert first.previous is None
    assert second.previous == 1
    assert registry.champion_version() == 2
    assert registry.get(2).status == Status.CHAMPION
    assert registry.get(1).status == Status.RETIRED
    assert registry.get(1).status_reason == "replaced by version 2"
    assert [change.version for change in registry.history()] == [1, 2]
    assert registry.champion_stack() == [1, 2]


def test_promote_current_champion_rejected(registry: ModelRegistry, artifacts) -> None:
    registry.register(artifacts[0])
    registry.promote(1, "first")

    with pytest.raises(RegistryError, match="version 1 is already the champion"):
        registry.promote(1, "again")


def test_promote_unknown_version_rejected(registry: ModelRegistry) -> None:
    with pytest.raises(RegistryError, match="version 4 not found"):
        registry.promote(4, "absent")


def test_promote_corrupted_store_rejected(registry: ModelRegistry, artifacts) -> None:
    record = registry.register(artifacts[0])
    with (record.path / WEIGHTS_FILE).open("ab") as handle:
        handle.write(b"\0")

    with pytest.raises(ArtifactError, match=r"version 1: artifact SHA-256 \(all files\) of .* was expected"):
        registry.promote(1, "corrupted")

    assert registry.champion_version() is None


def swap_labels(directory: Path) -> str:
    metadata = json.loads((directory / METADATA_FILE).read_text())
    metadata["labels"] = list(reversed(metadata["labels"]))
    (directory / METADATA_FILE).write_text(json.dumps(metadata))
    return "Changed files: ['driftloop.json']."


def change_tokenizer_file(directory: Path) -> str:
    with (directory / "tokenizer.json").open("a", encoding="utf-8") as handle:
        handle.write("\n")
    return "Changed files: ['tokenizer.json']."


def add_stray_file(directory: Path) -> str:
    (directory / "notes.txt").write_text("not part of the model", encoding="utf-8")
    return "Files not in the expected list: ['notes.txt']."


def append_to_weights(directory: Path) -> str:
    with (directory / WEIGHTS_FILE).open("ab") as handle:
        handle.write(b"\0")
    return "Changed files: ['model.safetensors']."


STORE_CHANGES = [swap_labels, change_tokenizer_file, add_stray_file, append_to_weights]


@pytest.mark.parametrize("change", STORE_CHANGES, ids=[change.__name__ for change in STORE_CHANGES])
def test_promote_changed_store_rejected(registry: ModelRegistry, artifacts, change) -> None:
    registry.register(artifacts[0])
    registry.promote(1, "good")
    record = registry.register(artifacts[1])
    expected_detail = change(record.path)

    with pytest.raises(ArtifactError) as raised:
        registry.promote(2, "changed after registration")

    message = str(raised.value)
    assert message.startswith(f"version 2: artifact SHA-256 (all files) of {record.path} is ")
    assert f"but {record.sha256} was expected." in message
    assert message.endswith(expected_detail)
    assert registry.champion_version() == 1


def test_promote_weights_only_record_explained(registry: ModelRegistry, artifacts, redis_client: redis.Redis) -> None:
    # A record as older driftloop versions wrote it: the weights' SHA-256 and no file list.
    record = registry.register(artifacts[0])
    weights_sha = digest_artifact(record.path)[0].files[WEIGHTS_FILE]
    redis_client.hset(registry.keys.version(1), "sha256", weights_sha)
    redis_client.hdel(registry.keys.version(1), "files")

    with pytest.raises(ArtifactError, match=r"^version 1: .* the SHA-256 of model.safetensors alone.* register it again"):
        registry.promote(1, "old record")

    assert registry.champion_version() is None


def test_rollback_reinstates_previous(registry: ModelRegistry, artifacts) -> None:
    for seed in range(3):
        registry.register(artifacts[seed])
    for version in (1, 2, 3):
        registry.promote(version, f"promote {version}")

    change = registry.rollback("accuracy dropped")

    assert (change.action, change.version, change.previous) == ("rollback", 2, 3)
    assert registry.champion_version() == 2
    assert registry.get(3).status == Status.REJECTED
    assert registry.get(3).status_reason == "rolled back: accuracy dropped"
    assert registry.get(2).status == Status.CHAMPION
    assert [(c.action, c.version) for c in registry.history()] == [
        ("promote", 1), ("promote", 2), ("promote", 3), ("rollback", 2)
    ]
    assert registry.champion_stack() == [1, 2]


def test_rollback_skips_rejected_champions(registry: ModelRegistry, artifacts) -> None:
    for seed in range(3):
        registry.register(artifacts[seed])
    for version in (1, 2, 3):
        registry.promote(version, f"promote {version}")
    registry.reject(2, "found label leakage")

    assert registry.rollback_target() == 1
    change = registry.rollback("bad")

    assert change.version == 1
    assert registry.champion_stack() == [1]


def test_rollback_without_previous_rejected(registry: ModelRegistry, artifacts) -> None:
    registry.register(artifacts[0])
    registry.promote(1, "first")

    with pytest.raises(RegistryError, match="no earlier champion"):
        registry.rollback("nothing to go back to")

    assert registry.champion_version() == 1
    assert registry.get(1).status == Status.CHAMPION


def test_rollback_expected_version_mismatch(registry: ModelRegistry, artifacts) -> None:
    for seed in range(2):
        registry.register(artifacts[seed])
    registry.promote(1, "first")
    registry.promote(2, "second")

    with pytest.raises(RegistryError, match="champion is version 2, not 1"):
        registry.rollback("stale check", expected_version=1)

    assert registry.champion_version() == 2


def test_reject_champion_refused(registry: ModelRegistry, artifacts) -> None:
    registry.register(artifacts[0])
    registry.promote(1, "first")

    with pytest.raises(RegistryError, match="roll it back"):
        registry.reject(1, "bad")


def test_promote_rejected_needs_allow(registry: ModelRegistry, artifacts) -> None:
    registry.register(artifacts[0])
    registry.reject(1, "gate failed")

    with pytest.raises(RegistryError, match="was rejected"):
        registry.promote(1, "try")
    registry.promote(1, "operator override", allow_rejected=True)

    assert registry.champion_version() == 1


def test_concurrent_promotions_leave_one_champion(registry: ModelRegistry, artifacts, audit_settings: Settings) -> None:
    for seed in range(3):
        registry.register(artifacts[seed])
    errors: list[Exception] = []
    successes: list[int] = []

    def promote_repeatedly(version: int) -> None:
        with ModelRegistry(audit_settings) as own:
            for _ in range(4):
                try:
                    own.promote(version, f"thread {version}", verify=False)
                    successes.append(version)
                except RegistryError as exc:
                    if "already the champion" not in str(exc):
                        errors.append(exc)

    threads = [threading.Thread(target=promote_repeatedly, args=(version,)) for version in (1, 2, 3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)

    assert errors == []
    statuses = [record.status for record in registry.list_versions()]
    assert statuses.count(Status.CHAMPION) == 1
    assert registry.get(registry.champion_version()).status == Status.CHAMPION
    assert len(registry.history()) == len(successes)


# Audit events.


def test_champion_changes_reach_audit_topic(registry: ModelRegistry, artifacts, audit_settings: Settings) -> None:
    for seed in range(2):
        registry.register(artifacts[seed])
    promoted = registry.promote(1, "first")
    registry.promote(2, "second")
    rolled_back = registry.rollback("accuracy dropped")

    events = read_audit_events(audit_settings, expected=5)
    changes = [event for event in events if event["event"] == "champion_changed"]

    assert [event["event"] for event in events].count("version_registered") == 2
    assert [(e["action"], e["version"], e["previous"]) for e in changes] == [
        ("promote", 1, None), ("promote", 2, 1), ("rollback", 1, 2)
    ]
    assert changes[0]["event_id"] == promoted.event_id
    assert changes[2]["reason"] == "accuracy dropped"
    assert changes[2]["topic_prefix"] == audit_settings.topic_prefix
    assert changes[2]["event_id"] == rolled_back.event_id
    assert registry.pending_audit_events() == 0


def test_undelivered_audit_event_kept(audit_settings: Settings, artifacts) -> None:
    with ModelRegistry(audit_settings, publisher=FailingPublisher()) as offline:
        offline.register(artifacts[0])
        offline.promote(1, "broker down")
        assert offline.champion_version() == 1
        assert offline.pending_audit_events() == 2

    with ModelRegistry(audit_settings) as online:
        delivered = online.flush_audit()
        pending = online.pending_audit_events()

    assert delivered == 2
    assert pending == 0
    events = read_audit_events(audit_settings, expected=2)
    assert [event["event"] for event in events] == ["version_registered", "champion_changed"]


def test_promotion_published_on_channel(registry: ModelRegistry, artifacts, redis_client: redis.Redis) -> None:
    registry.register(artifacts[0])
    pubsub = redis_client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(registry.keys.channel)
    pubsub.get_message(timeout=1.0)

    registry.promote(1, "first")

    message = None
    deadline = time.monotonic() + 10
    while message is None and time.monotonic() < deadline:
        message = pubsub.get_message(timeout=1.0)
    pubsub.close()
    assert message is not None
    assert message["data"] == b"1"


# Guardrail.


@pytest.mark.parametrize(
    ("champion", "previous", "verdict"),
    [
        (OnlineAccuracy(2, 100, 50), OnlineAccuracy(1, 100, 90), Verdict.ROLLBACK),
        (OnlineAccuracy(2, 100, 89), OnlineAccuracy(1, 100, 90), Verdict.KEEP),
        (OnlineAccuracy(2, 100, 87), OnlineAccuracy(1, 100, 90), Verdict.ROLLBACK),
        (OnlineAccuracy(2, 100, 95), OnlineAccuracy(1, 100, 90), Verdict.KEEP),
        (OnlineAccuracy(2, 99, 0), OnlineAccuracy(1, 100, 90), Verdict.INSUFFICIENT_DATA),
        (OnlineAccuracy(2, 100, 0), OnlineAccuracy(1, 10, 9), Verdict.INSUFFICIENT_DATA),
    ],
)
def test_guardrail_decide(champion, previous, verdict) -> None:
    decision = decide(champion, previous, GuardrailPolicy(window=100, margin=0.02))

    assert decision.verdict == verdict


def test_guardrail_policy_validates() -> None:
    with pytest.raises(ValueError, match="margin must be in"):
        GuardrailPolicy(margin=1.5)
    with pytest.raises(ValueError, match="window must be at least 1"):
        GuardrailPolicy(window=0)


def test_guardrail_rolls_back_worse_champion(registry: ModelRegistry, artifacts, redis_client, audit_settings) -> None:
    for seed in range(2):
        registry.register(artifacts[seed])
    registry.promote(1, "first")
    registry.promote(2, "second")
    prefix = audit_settings.topic_prefix
    redis_client.hset(f"{prefix}metrics:v1", mapping={"n": 200, "correct": 180})
    redis_client.hset(f"{prefix}metrics:v2", mapping={"n": 200, "correct": 120})

    outcome = run_guardrail(registry, redis_client, GuardrailPolicy(window=100, margin=0.05))

    assert outcome.decision.verdict == Verdict.ROLLBACK
    assert outcome.rollback is not None
    assert registry.champion_version() == 1
    assert registry.get(2).status == Status.REJECTED
    assert registry.history()[-1].reason.startswith("guardrail: online accuracy of version 2 is 0.6000")
    events = read_audit_events(audit_settings, expected=5)
    assert events[-1]["action"] == "rollback"


def test_guardrail_keeps_with_little_feedback(registry: ModelRegistry, artifacts, redis_client, audit_settings) -> None:
    for seed in range(2):
        registry.register(artifacts[seed])
    registry.promote(1, "first")
    registry.promote(2, "second")
    redis_client.hset(f"{audit_settings.topic_prefix}metrics:v2", mapping={"n": 20, "correct": 0})

    outcome = run_guardrail(registry, redis_client, GuardrailPolicy(window=100, margin=0.05))

    assert outcome.decision.verdict == Verdict.INSUFFICIENT_DATA
    assert outcome.rollback is None
    assert registry.champion_version() == 2


# Worker heartbeats.


def test_heartbeat_written_and_removed(settings: Settings, redis_client) -> None:
    heartbeat = WorkerHeartbeat(redis_client, settings.topic_prefix)
    worker = SimpleNamespace(worker_id="host-1-ab12", model=SimpleNamespace(version=3), model_since=1700000000.0, processed=42)

    heartbeat.beat(worker)
    workers = read_workers(redis_client, settings.topic_prefix)
    heartbeat.remove(worker)

    assert len(workers) == 1
    assert workers[0]["worker_id"] == "host-1-ab12"
    assert workers[0]["version"] == 3
    assert workers[0]["since"] == 1700000000.0
    assert workers[0]["processed"] == 42
    assert workers[0]["stale"] is False
    assert read_workers(redis_client, settings.topic_prefix) == []


def test_heartbeat_marks_stale_workers(settings: Settings, redis_client) -> None:
    beat_at = time.time() - 120
    value = {"version": 1, "since": beat_at, "processed": 0, "beat_at": beat_at}
    redis_client.hset(f"{settings.topic_prefix}workers", "gone-worker", json.dumps(value))
    redis_client.hset(f"{settings.topic_prefix}workers", "garbled-worker", "not json")

    workers = read_workers(redis_client, settings.topic_prefix, stale_after_s=30)

    assert [worker["worker_id"] for worker in workers] == ["gone-worker"]
    assert workers[0]["stale"] is True


def test_heartbeat_survives_redis_outage(settings: Settings) -> None:
    unreachable = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    heartbeat = WorkerHeartbeat.for_settings(unreachable)
    worker = SimpleNamespace(worker_id="w", model=SimpleNamespace(version=1), model_since=0.0, processed=0)

    heartbeat.beat(worker)
    heartbeat.remove(worker)


# Command line.


def run_cli(argv: list[str], config: Path) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config")
    subparsers = parser.add_subparsers(dest="command")
    cli.add_commands(subparsers)
    args = parser.parse_args(["--config", str(config), *argv])
    return args.handler(args)


@pytest.fixture
def config_file(audit_settings: Settings, tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.delenv("DRIFTLOOP_CONFIG", raising=False)
    data = {
        "broker_port": audit_settings.broker_port,
        "redis_port": audit_settings.redis_port,
        "topic_prefix": audit_settings.topic_prefix,
        "state_dir": str(audit_settings.state_dir),
    }
    path = tmp_path / "driftloop.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_cli_register_promote_rollback(config_file: Path, artifacts, capsys) -> None:
    assert run_cli(["models", "register", str(artifacts[0]), "--json"], config_file) == 0
    registered = json.loads(capsys.readouterr().out)
    assert run_cli(["models", "register", str(artifacts[1]), "--parent", "1"], config_file) == 0
    assert "registered version 2" in capsys.readouterr().out

    assert run_cli(["models", "promote", "1"], config_file) == 0
    assert "champion is now version 1" in capsys.readouterr().out
    assert run_cli(["models", "promote", "2", "--reason", "better", "--json"], config_file) == 0
    promoted = json.loads(capsys.readouterr().out)
    assert run_cli(["models", "rollback", "--json"], config_file) == 0
    rolled_back = json.loads(capsys.readouterr().out)
    assert run_cli(["models", "list", "--json"], config_file) == 0
    listing = json.loads(capsys.readouterr().out)
    assert run_cli(["models", "show", "2", "--json"], config_file) == 0
    show_output = json.loads(capsys.readouterr().out)

    assert registered["version"] == 1
    assert (promoted["action"], promoted["version"], promoted["previous"], promoted["reason"]) == ("promote", 2, 1, "better")
    assert (rolled_back["action"], rolled_back["version"]) == ("rollback", 1)
    assert rolled_back["pending_audit_events"] == 0
    assert listing["champion"] == 1
    assert [v["status"] for v in listing["versions"]] == ["champion", "rejected"]
    assert show_output["parent"] == 1
    assert show_output["is_champion"] is False


def test_cli_text_output(config_file: Path, artifacts, capsys) -> None:
    run_cli(["models", "register", str(artifacts[0])], config_file)
    run_cli(["models", "promote", "1"], config_file)
    capsys.readouterr()

    run_cli(["models", "list"], config_file)
    listing = capsys.readouterr().out
    run_cli(["models", "show", "1"], config_file)
    show_output = capsys.readouterr().out

    assert "VERSION" in listing
    assert "champion" in listing
    assert "status: champion" in show_output


def test_cli_metadata_file(config_file: Path, artifacts, tmp_path: Path, capsys) -> None:
    metadata = tmp_path / "meta.json"
    metadata.write_text(json.dumps({"metrics": {"accuracy": 0.9}, "gate": {"passed": True}}))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"accuracy": 0.9}))

    run_cli(["models", "register", str(artifacts[0]), "--metadata", str(metadata), "--json"], config_file)
    record = json.loads(capsys.readouterr().out)

    assert record["metrics"] == {"accuracy": 0.9}
    assert record["gate"] == {"passed": True}
    with pytest.raises(ConfigError, match=r"unknown keys \['accuracy'\]"):
        run_cli(["models", "register", str(artifacts[0]), "--metadata", str(bad)], config_file)


def test_cli_show_unknown_version(config_file: Path) -> None:
    with pytest.raises(RegistryError, match="version 9 not found"):
        run_cli(["models", "show", "9"], config_file)
