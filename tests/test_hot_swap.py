"""RegistryModelSource: loading the champion, refusing bad versions, surviving Redis restarts.

Runs against the session's real broker and Redis with tiny real models. The Redis
restart test starts its own redis-server so the shared one keeps running.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
import torch
from safetensors.torch import load_file, save_file

from driftloop.artifact_digest import digest_artifact
from driftloop.config import Settings
from driftloop.errors import ArtifactError, RegistryError
from driftloop.infra.clients import make_redis
from driftloop.infra.stack import free_port, redis_reachable, resolve_redis_binary
from driftloop.infra.topics import AUDIT, create_topics
from driftloop.model import ARCHITECTURE, METADATA_FILE, WEIGHTS_FILE
from driftloop.registry.registry import ModelRegistry
from driftloop.registry.source import RegistryModelSource

pytestmark = pytest.mark.integration

LABELS = ("billing", "bug", "praise")
TEXTS = ["the invoice charged me twice", "app crashes when I upload a photo", "great support, thanks!"]
# Upper bound for waits on background work; a test fails only if it is exceeded.
WAIT_LIMIT_S = 60.0


class PickleBomb:
    """Unpickling this object creates ``marker``: proof that a pickle was loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def wait_for(condition: Callable[[], object], description: str, timeout_s: float = WAIT_LIMIT_S) -> object:
    """Return the first truthy value of ``condition()``; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {description}")


def poll_until_swapped(source: RegistryModelSource, version: int):
    model = wait_for(source.poll, f"poll() to return version {version}")
    assert model.version == version
    return model


@pytest.fixture
def source_factory(settings: Settings):
    sources: list[RegistryModelSource] = []

    def make(source_settings: Settings = settings, **options) -> RegistryModelSource:
        source = RegistryModelSource(source_settings, device="cpu", **options)
        sources.append(source)
        return source

    yield make
    for source in sources:
        source.close()


# Serving the champion.


def test_source_serves_champion_at_start(registry: ModelRegistry, artifacts, source_factory) -> None:
    for seed in range(2):
        registry.register(artifacts[seed])
    registry.promote(1, "first")
    registry.promote(2, "second")

    source = source_factory()

    assert source.current().version == 2
    assert source.served_version == 2
    assert source.poll() is None
    assert len(source.current().predict(TEXTS)) == 3


def test_source_without_champion_raises(registry: ModelRegistry, artifacts, source_factory) -> None:
    registry.register(artifacts[0])

    with pytest.raises(RegistryError, match="has no champion; promote a version"):
        source_factory()


def test_source_damaged_champion_raises(registry: ModelRegistry, artifacts, source_factory) -> None:
    record = registry.register(artifacts[0])
    registry.promote(1, "first")
    with (record.path / WEIGHTS_FILE).open("ab") as handle:
        handle.write(b"\0")

    with pytest.raises(ArtifactError, match=r"version 1: artifact SHA-256 \(all files\) of .* was expected"):
        source_factory()


def test_source_close_releases_models(registry: ModelRegistry, artifacts, settings: Settings) -> None:
    registry.register(artifacts[0])
    registry.promote(1, "first")
    source = RegistryModelSource(settings, device=torch.device("cpu"))
    model = source.current()

    source.close()

    assert model.classifier is None


def test_source_follows_promotion_and_rollback(registry: ModelRegistry, artifacts, source_factory) -> None:
    for seed in range(2):
        registry.register(artifacts[seed])
    registry.promote(1, "first")
    source = source_factory()
    since = source.served_since

    registry.promote(2, "second")
    promoted = poll_until_swapped(source, 2)
    registry.rollback("worse online")
    rolled_back = poll_until_swapped(source, 1)

    assert promoted.version == 2
    assert rolled_back.version == 1
    assert source.current() is rolled_back
    assert source.served_since > since
    assert wait_for(lambda: promoted.classifier is None, "the replaced version to be released")


# Versions that must not load.


def record_damaged_artifact(record, registry) -> None:
    """Store the damaged artifact's SHA-256 and file list, as if it had been registered damaged."""
    digest, _ = digest_artifact(record.path)
    client = make_redis(registry.settings)
    mapping = {"sha256": digest.sha256, "files": json.dumps(digest.files, sort_keys=True)}
    client.hset(registry.keys.version(record.version), mapping=mapping)
    client.close()


def corrupt_hash(record, registry, tmp_path):
    with (record.path / WEIGHTS_FILE).open("ab") as handle:
        handle.write(b"\0")
    return "Changed files: ['model.safetensors']"


def truncate_after_registration(record, registry, tmp_path):
    weights = record.path / WEIGHTS_FILE
    with weights.open("r+b") as handle:
        handle.truncate(weights.stat().st_size // 2)
    return "Changed files: ['model.safetensors']"


def truncate_with_matching_record(record, registry, tmp_path):
    # A record written from an already truncated copy: the hash matches, the file does not parse.
    weights = record.path / WEIGHTS_FILE
    with weights.open("r+b") as handle:
        handle.truncate(weights.stat().st_size // 2)
    record_damaged_artifact(record, registry)
    return "is not a readable safetensors file"


def swapped_labels(record, registry, tmp_path):
    # Same weights, labels in another order: every prediction would name the wrong label.
    metadata = json.loads((record.path / METADATA_FILE).read_text())
    metadata["labels"] = list(reversed(metadata["labels"]))
    (record.path / METADATA_FILE).write_text(json.dumps(metadata))
    return "Changed files: ['driftloop.json']"


def changed_tokenizer_file(record, registry, tmp_path):
    path = record.path / "tokenizer_config.json"
    config = json.loads(path.read_text())
    config["model_max_length"] = 8
    path.write_text(json.dumps(config))
    return "Changed files: ['tokenizer_config.json']"


def stray_file(record, registry, tmp_path):
    (record.path / "notes.txt").write_text("not part of the model", encoding="utf-8")
    return "Files not in the expected list: ['notes.txt']"


def pickle_only(record, registry, tmp_path):
    torch.save(PickleBomb(tmp_path / "unpickled"), record.path / "pytorch_model.bin")
    (record.path / WEIGHTS_FILE).unlink()
    return "contains pickle files ['pytorch_model.bin']"


def pickle_beside_safetensors(record, registry, tmp_path):
    torch.save(PickleBomb(tmp_path / "unpickled"), record.path / "pytorch_model.bin")
    return "contains pickle files ['pytorch_model.bin']"


def other_architecture_metadata(record, registry, tmp_path):
    # The record matches the edited files, so the architecture check is what rejects it.
    metadata = json.loads((record.path / METADATA_FILE).read_text())
    metadata["architecture"] = "other.Classifier/3"
    (record.path / METADATA_FILE).write_text(json.dumps(metadata))
    record_damaged_artifact(record, registry)
    return "is a 'other.Classifier/3' model"


BAD_VERSIONS = [
    corrupt_hash,
    truncate_after_registration,
    truncate_with_matching_record,
    swapped_labels,
    changed_tokenizer_file,
    stray_file,
    pickle_only,
    pickle_beside_safetensors,
    other_architecture_metadata,
]


@pytest.mark.parametrize("damage", BAD_VERSIONS, ids=[damage.__name__ for damage in BAD_VERSIONS])
def test_bad_version_keeps_old_serving(registry, artifacts, source_factory, tmp_path: Path, damage) -> None:
    registry.register(artifacts[0])
    registry.promote(1, "good")
    source = source_factory(retry_failed_after_s=3600)
    served = source.current()
    record = registry.register(artifacts[1])
    expected_reason = damage(record, registry, tmp_path)

    registry.promote(2, "damaged", verify=False)
    failure = wait_for(lambda: source.failures.get(2), "the load of version 2 to fail")

    assert source.poll() is None
    assert source.current() is served
    assert source.current().version == 1
    assert failure.reason.startswith("version 2: ")
    assert expected_reason in failure.reason
    assert not (tmp_path / "unpickled").exists()
    assert len(source.current().predict(TEXTS)) == 3


def test_weights_of_other_shape_rejected(registry, artifacts, source_factory, tmp_path: Path) -> None:
    # The metadata promises three labels but the head was saved with four rows, which
    # registration cannot see because it reads only the safetensors header.
    directory = tmp_path / "mismatched"
    shutil.copytree(artifacts[1], directory)
    state = load_file(str(directory / WEIGHTS_FILE))
    state["head.weight"] = torch.zeros(4, state["head.weight"].shape[1])
    state["head.bias"] = torch.zeros(4)
    save_file(state, str(directory / WEIGHTS_FILE), metadata={"architecture": ARCHITECTURE})
    registry.register(artifacts[0])
    registry.promote(1, "good")
    source = source_factory(retry_failed_after_s=3600)
    registry.register(directory)

    registry.promote(2, "mismatched")
    failure = wait_for(lambda: source.failures.get(2), "the load of version 2 to fail")

    assert source.poll() is None
    assert source.current().version == 1
    assert failure.reason.startswith("version 2: ")
    assert "do not fit the architecture" in failure.reason


def test_champion_without_record_keeps_serving(registry, artifacts, source_factory) -> None:
    registry.register(artifacts[0])
    registry.register(artifacts[1])
    registry.promote(1, "good")
    source = source_factory(reconcile_interval_s=0.2)
    client = make_redis(registry.settings)
    # Injected inconsistency: a champion key that no registry operation would write.
    client.set(registry.keys.champion, 9)

    error = wait_for(lambda: source.status().last_error, "the source to report the missing record")
    still_served = source.current().version
    nothing_ready = source.poll()
    client.set(registry.keys.champion, 1)
    client.close()
    registry.promote(2, "recovered")

    assert "names version 9, which has no record" in error
    assert still_served == 1
    assert nothing_ready is None
    assert poll_until_swapped(source, 2).version == 2


def test_failed_version_not_retried_at_once(registry, artifacts, source_factory) -> None:
    registry.register(artifacts[0])
    registry.promote(1, "good")
    source = source_factory(reconcile_interval_s=0.2, retry_failed_after_s=3600)
    record = registry.register(artifacts[1])
    with (record.path / WEIGHTS_FILE).open("ab") as handle:
        handle.write(b"\0")

    registry.promote(2, "damaged", verify=False)
    first = wait_for(lambda: source.failures.get(2), "the load of version 2 to fail")
    # Several reconciliation intervals pass; the failure record must stay the first one.
    wait_for(lambda: (source.status().champion_read_at or 0) > first.failed_at + 1.0, "three reconciliations")

    assert source.failures[2].failed_at == first.failed_at


def test_retry_after_failure_period(registry, artifacts, source_factory) -> None:
    registry.register(artifacts[0])
    registry.promote(1, "good")
    source = source_factory(reconcile_interval_s=0.2, retry_failed_after_s=0.5)
    record = registry.register(artifacts[1])
    weights = record.path / WEIGHTS_FILE
    original = weights.read_bytes()
    weights.write_bytes(original + b"\0")

    registry.promote(2, "damaged for a while", verify=False)
    wait_for(lambda: source.failures.get(2), "the load of version 2 to fail")
    weights.write_bytes(original)

    poll_until_swapped(source, 2)
    assert 2 not in source.failures


# Redis outage.


class OwnRedis:
    """A redis-server started by this test, with an append-only file so data survives restarts."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.process: subprocess.Popen | None = None
        self.port = 0

    def start(self, port: int) -> None:
        self.port = port
        command = [
            resolve_redis_binary(),
            "--bind", "127.0.0.1",
            "--port", str(port),
            "--dir", str(self.data_dir),
            "--save", "",
            "--appendonly", "yes",
            "--appendfsync", "always",
        ]
        log = (self.data_dir / f"redis-{port}.log").open("ab")
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        wait_for(lambda: redis_reachable(self.url, 0.5), f"redis-server on port {port}")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.kill(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


@pytest.fixture
def own_redis(tmp_path: Path):
    data_dir = tmp_path / "own-redis"
    data_dir.mkdir()
    server = OwnRedis(data_dir)
    yield server
    server.stop()


def test_promotion_during_outage_reached(settings, artifacts, source_factory, own_redis: OwnRedis) -> None:
    """The source misses the pub/sub message and finds the new champion when Redis is back.

    The promotion goes to a second server on another port that reads the same data, so
    the source's Redis is down for the whole promotion.
    """
    interval = 3.0
    port = free_port()
    own_redis.start(port)
    create_topics(settings, (AUDIT,))
    source_settings = settings.model_copy(update={"redis_url": own_redis.url})
    with ModelRegistry(source_settings) as registry:
        registry.register(artifacts[0])
        registry.register(artifacts[1])
        registry.promote(1, "first")
    source = source_factory(source_settings, reconcile_interval_s=interval)
    served = source.current()

    own_redis.stop()
    wait_for(lambda: not source.status().connected, "the source to notice that Redis is down")
    other_port = free_port()
    own_redis.start(other_port)
    with ModelRegistry(settings.model_copy(update={"redis_url": own_redis.url})) as registry:
        registry.promote(2, "promoted while the source's Redis was down")
    own_redis.stop()
    assert source.current() is served
    assert source.poll() is None
    assert len(source.current().predict(TEXTS)) == 3

    own_redis.start(port)
    back_at = time.monotonic()
    model = poll_until_swapped(source, 2)
    reached_after_s = time.monotonic() - back_at

    assert model.version == 2
    assert source.status().connected
    assert reached_after_s <= 2 * interval, f"version 2 reached {reached_after_s:.1f} s after Redis was back"


# Concurrency and memory.


def test_tokenize_during_background_loads(registry, artifacts, source_factory) -> None:
    registry.register(artifacts[0])
    registry.register(artifacts[1])
    registry.promote(1, "first")
    source = source_factory()
    errors: list[BaseException] = []
    calls = [0] * 8

    def tokenize_until(stop: threading.Event, index: int) -> None:
        while not stop.is_set():
            try:
                batch = source.current().tokenize(TEXTS)
                assert batch["input_ids"].shape[0] == len(TEXTS)
                calls[index] += 1
            except BaseException as exc:  # noqa: BLE001 - every error counts as a failure
                errors.append(exc)
                return

    for round_number in range(20):
        target = 2 if round_number % 2 == 0 else 1
        stop = threading.Event()
        threads = [threading.Thread(target=tokenize_until, args=(stop, index)) for index in range(8)]
        for thread in threads:
            thread.start()
        registry.promote(target, f"round {round_number}", verify=False)
        poll_until_swapped(source, target)
        stop.set()
        for thread in threads:
            thread.join(WAIT_LIMIT_S)

    assert errors == []
    assert all(count > 0 for count in calls)


def test_rss_levels_off_over_swaps(registry, artifacts, source_factory, record_property) -> None:
    registry.register(artifacts[0])
    registry.register(artifacts[1])
    registry.promote(1, "first")
    source = source_factory()
    process = psutil.Process()
    rss_mb = []

    for round_number in range(20):
        target = 2 if round_number % 2 == 0 else 1
        registry.promote(target, f"round {round_number}", verify=False)
        poll_until_swapped(source, target)
        wait_for(lambda: source.status().pending_release == 0, "the replaced version to be released")
        rss_mb.append(process.memory_info().rss / 2**20)

    record_property("rss_mb_after_swaps", [round(value, 1) for value in rss_mb])
    print("RSS after each swap, MiB:", [round(value) for value in rss_mb])
    # Loose bound. Each model kept alive costs about 13 MiB (measured on CPU with the
    # tiny model and MiniLM's tokenizer), so leaking the 15 replaced ones would exceed it.
    assert rss_mb[-1] - rss_mb[4] < 60
