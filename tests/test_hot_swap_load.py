"""Hot swaps under load, and the guardrail loop that rolls a worse champion back.

The load test runs two ``driftloop worker inference`` processes that follow the
registry's champion, with tiny models, on the session's broker and Redis. Requests
arrive at a bounded rate while the champion changes six times. Every request must
get exactly one prediction, and each worker's versions must follow the champion
history. The guardrail tests write online metrics into Redis as the feedback join
does and check when the loop rolls back.
"""

from __future__ import annotations

import argparse
import gc
import json
import signal
import threading
import time
import uuid
import weakref
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
import yaml
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from redis.backoff import NoBackoff
from redis.retry import Retry

from driftloop.config import Settings
from driftloop.infra.clients import make_redis
from driftloop.infra.stack import free_port
from driftloop.infra.topics import DEAD_LETTER, PREDICTIONS, REQUESTS, create_topics
from driftloop.producer import EventProducer, now_ms
from driftloop.registry import cli
from driftloop.registry.guardrail import GuardrailOutcome, GuardrailPolicy, Verdict, run_guardrail_loop
from driftloop.registry.heartbeat import read_workers
from driftloop.registry.records import ChampionChange, Status
from driftloop.registry.registry import ModelRegistry
from driftloop.registry.source import RegistryModelSource
from driftloop.schemas.events import InferenceRequest
from driftloop.streams.metrics import MetricsAccumulator
from driftloop.testing.services import spawn_driftloop, stop_process, write_config

pytestmark = pytest.mark.integration

LABELS = ("billing", "bug", "praise")
WORKER_IDS = ("w1", "w2")
SWAPS = 6
REQUESTS_PER_S = 20.0
MAX_REQUESTS = 20_000
# Upper bound for each wait; a test fails only if one is exceeded.
WAIT_LIMIT_S = 120.0


@pytest.fixture
def redis_client(settings: Settings):
    client = make_redis(settings)
    yield client
    client.close()


# Hot swaps under load.


class PacedRequests:
    """Sends requests at a fixed rate from a background thread, at most ``MAX_REQUESTS``."""

    def __init__(self, settings: Settings) -> None:
        self._producer = EventProducer(settings)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="paced-requests", daemon=True)
        self.sent: list[str] = []

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> list[str]:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(30)
        self._producer.flush(30)
        return list(self.sent)

    def _run(self) -> None:
        while not self._stop.is_set() and len(self.sent) < MAX_REQUESTS:
            request_id = f"req-{len(self.sent)}"
            text = f"request {len(self.sent)}: the invoice was charged twice"
            self._producer.send_request(InferenceRequest(request_id=request_id, event_time_ms=now_ms(), text=text))
            self.sent.append(request_id)
            self._stop.wait(1.0 / REQUESTS_PER_S)


class PredictionLog:
    """Reads the predictions topic from its beginning, without a consumer group."""

    def __init__(self, settings: Settings) -> None:
        topic = settings.topic(PREDICTIONS)
        self._consumer = Consumer(
            settings.kafka_client_config(**{"group.id": f"reader-{uuid.uuid4().hex[:8]}", "fetch.wait.max.ms": 10})
        )
        partitions = self._consumer.list_topics(topic, timeout=10).topics[topic].partitions
        self._consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING) for partition in partitions])
        self.predictions: list[dict] = []

    def read_until(self, condition: Callable[[list[dict]], bool], description: str) -> None:
        deadline = time.monotonic() + WAIT_LIMIT_S
        while not condition(self.predictions):
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {WAIT_LIMIT_S:.0f} s waiting for {description}")
            for message in self._consumer.consume(500, timeout=0.2):
                if message.error() is None:
                    self.predictions.append(json.loads(message.value()))

    def read_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        self.read_until(lambda _: time.monotonic() > deadline, f"{seconds:.0f} s of reading")

    def close(self) -> None:
        self._consumer.close()


def served_by_every_worker(version: int, since_ms: int) -> Callable[[list[dict]], bool]:
    def condition(predictions: list[dict]) -> bool:
        workers = {
            p["worker_id"] for p in predictions if p["model_version"] == version and p["predicted_at_ms"] >= since_ms
        }
        return workers >= set(WORKER_IDS)

    return condition


def wait_for_assignment(client: redis.Redis, settings: Settings, workers: dict) -> None:
    """Wait until both workers' heartbeats show partitions, together every partition once."""
    deadline = time.monotonic() + WAIT_LIMIT_S
    while time.monotonic() < deadline:
        for worker_id, process in workers.items():
            assert process.poll() is None, f"worker {worker_id} exited with code {process.returncode}"
        beats = {beat["worker_id"]: beat["partitions"] for beat in read_workers(client, settings.topic_prefix)}
        assigned = sorted(partition for worker_id in WORKER_IDS for partition in beats.get(worker_id, []))
        if all(beats.get(worker_id) for worker_id in WORKER_IDS) and assigned == list(range(settings.partitions)):
            return
        time.sleep(0.2)
    pytest.fail(f"workers did not share the {settings.partitions} partitions within {WAIT_LIMIT_S:.0f} s")


def reign_walk_errors(predictions: list[dict], history: list[ChampionChange]) -> list[str]:
    """Return one line per prediction whose version breaks the champion history.

    Each worker's predictions are walked in the order it made them. A worker may
    keep the previous version for a while after a change, but it must never serve a
    version before its promotion or return to a replaced one.
    """
    errors = []
    by_worker: dict[str, list[dict]] = defaultdict(list)
    for prediction in predictions:
        by_worker[prediction["worker_id"]].append(prediction)
    for worker_id, made in sorted(by_worker.items()):
        reign = 0
        for prediction in sorted(made, key=lambda p: p["predicted_at_ms"]):
            found = next(
                (
                    index
                    for index in range(reign, len(history))
                    if history[index].version == prediction["model_version"]
                    and history[index].at_ms <= prediction["predicted_at_ms"]
                ),
                None,
            )
            if found is None:
                errors.append(f"{worker_id}: {prediction['request_id']} by version {prediction['model_version']} in reign {reign}")
                continue
            reign = found
    return errors


def test_workers_swap_under_load(settings: Settings, registry: ModelRegistry, redis_client, artifacts, tmp_path: Path) -> None:
    settings = settings.model_copy(update={"partitions": 4, "device": "cpu", "torch_threads": 1})
    create_topics(settings, (REQUESTS, PREDICTIONS, DEAD_LETTER))
    for seed in range(2):
        registry.register(artifacts[seed])
    registry.promote(1, "start")
    config = write_config(settings, tmp_path / "config.yaml")
    workers = {
        worker_id: spawn_driftloop(["worker", "inference", "--worker-id", worker_id], config, tmp_path / f"{worker_id}.log")
        for worker_id in WORKER_IDS
    }
    log = PredictionLog(settings)
    load = PacedRequests(settings)
    try:
        wait_for_assignment(redis_client, settings, workers)
        load.start()
        log.read_until(served_by_every_worker(1, 0), "both workers to serve version 1")

        # Alternate promote(2) and rollback() to 1; each change must reach both workers.
        for number in range(1, SWAPS + 1):
            if number % 2 == 1:
                change = registry.promote(2, f"swap {number}", allow_rejected=True)
            else:
                change = registry.rollback(f"swap {number}")
            log.read_until(served_by_every_worker(change.version, change.at_ms), f"both workers to serve version {change.version}")

        sent = load.stop()
        log.read_until(lambda predictions: set(sent) <= {p["request_id"] for p in predictions}, "a prediction for every request")
        log.read_for(2.0)
    finally:
        load.stop()
        log.close()
        exit_codes = {worker_id: stop_process(process) for worker_id, process in workers.items()}

    counts = Counter(p["request_id"] for p in log.predictions)
    versions = Counter(p["model_version"] for p in log.predictions)
    history = registry.history()
    assert exit_codes == {"w1": 0, "w2": 0}
    assert len(history) == SWAPS + 1
    assert sorted(set(sent) - set(counts)) == []
    assert sorted(request_id for request_id, count in counts.items() if count > 1) == []
    assert set(versions) == {1, 2}
    assert reign_walk_errors(log.predictions, history) == []


# Releasing a replaced version.


@pytest.mark.parametrize("in_cycle", [False, True], ids=["plain", "in_reference_cycle"])
def test_source_frees_replaced_classifier(registry: ModelRegistry, artifacts, settings: Settings, in_cycle: bool) -> None:
    for seed in range(2):
        registry.register(artifacts[seed])
    registry.promote(1, "first")
    source = RegistryModelSource(settings, device="cpu")
    classifier = source.current().classifier
    if in_cycle:
        # Only a full collection frees a classifier that refers to itself.
        classifier.self_reference = [classifier]
    replaced = weakref.ref(classifier)
    del classifier
    # With automatic collection off, only the source's own collection can free a cycle.
    gc.disable()
    try:
        registry.promote(2, "second")
        deadline = time.monotonic() + WAIT_LIMIT_S
        while source.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        while replaced() is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        served_version = source.served_version
        # Read before close(), which runs a full collection of its own.
        freed = replaced() is None
    finally:
        gc.enable()
        source.close()

    assert served_version == 2
    assert freed


# The guardrail loop.


def add_joined_feedback(client: redis.Redis, prefix: str, version: int, joined: int, correct: int) -> None:
    """Count joined feedback for ``version`` as the feedback join does, through its accumulator."""
    accumulator = MetricsAccumulator(prefix, "segment")
    for index in range(joined):
        label = "billing" if index < correct else "bug"
        accumulator.add_joined(version, "billing", label, 0.9, {})
    accumulator.flush(client)


def promote_two_versions(registry: ModelRegistry, artifacts) -> None:
    for seed in range(2):
        registry.register(artifacts[seed])
    registry.promote(1, "first")
    registry.promote(2, "second")


def test_guardrail_loop_rolls_back_once_window_filled(registry, redis_client, artifacts, settings: Settings) -> None:
    promote_two_versions(registry, artifacts)
    prefix = settings.topic_prefix
    add_joined_feedback(redis_client, prefix, 1, joined=200, correct=180)
    add_joined_feedback(redis_client, prefix, 2, joined=60, correct=30)
    outcomes: list[GuardrailOutcome] = []
    stop = threading.Event()
    policy = GuardrailPolicy(window=100, margin=0.05)

    def record(outcome: GuardrailOutcome) -> None:
        outcomes.append(outcome)
        if outcome.rollback is not None:
            stop.set()

    thread = threading.Thread(
        target=lambda: run_guardrail_loop(registry, redis_client, policy, interval_s=0.05, max_checks=2000, stop=stop, on_outcome=record)
    )
    thread.start()
    try:
        deadline = time.monotonic() + WAIT_LIMIT_S
        while len(outcomes) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        champion_before_window = registry.champion_version()
        add_joined_feedback(redis_client, prefix, 2, joined=60, correct=30)
        thread.join(WAIT_LIMIT_S)
    finally:
        stop.set()
        thread.join(WAIT_LIMIT_S)

    verdicts = [outcome.decision.verdict for outcome in outcomes]
    assert verdicts[:3] == [Verdict.INSUFFICIENT_DATA] * 3
    assert champion_before_window == 2
    assert verdicts[-1] == Verdict.ROLLBACK
    assert verdicts.count(Verdict.ROLLBACK) == 1
    assert registry.champion_version() == 1
    assert registry.get(2).status == Status.REJECTED
    assert registry.history()[-1].reason.startswith("guardrail: online accuracy of version 2 is 0.5000 over 120")


def test_guardrail_loop_keeps_champion_within_margin(registry, redis_client, artifacts, settings: Settings) -> None:
    promote_two_versions(registry, artifacts)
    add_joined_feedback(redis_client, settings.topic_prefix, 1, joined=200, correct=180)
    add_joined_feedback(redis_client, settings.topic_prefix, 2, joined=200, correct=172)
    outcomes: list[GuardrailOutcome] = []

    rollbacks = run_guardrail_loop(
        registry, redis_client, GuardrailPolicy(window=100, margin=0.05), interval_s=0.01, max_checks=3, on_outcome=outcomes.append
    )

    assert rollbacks == 0
    assert [outcome.decision.verdict for outcome in outcomes] == [Verdict.KEEP] * 3
    assert registry.champion_version() == 2


def test_guardrail_loop_after_rollback_cannot_compare(registry, redis_client, artifacts, settings: Settings) -> None:
    promote_two_versions(registry, artifacts)
    add_joined_feedback(redis_client, settings.topic_prefix, 1, joined=200, correct=180)
    add_joined_feedback(redis_client, settings.topic_prefix, 2, joined=200, correct=100)
    outcomes: list[GuardrailOutcome] = []

    rollbacks = run_guardrail_loop(
        registry, redis_client, GuardrailPolicy(window=100, margin=0.05), interval_s=0.01, max_checks=3, on_outcome=outcomes.append
    )

    # After the rollback version 1 has no earlier champion, so later checks cannot compare.
    assert rollbacks == 1
    assert [outcome.decision.verdict for outcome in outcomes] == [Verdict.ROLLBACK, Verdict.INSUFFICIENT_DATA, Verdict.INSUFFICIENT_DATA]
    assert registry.champion_version() == 1


def test_guardrail_loop_survives_redis_errors(registry, artifacts, caplog) -> None:
    promote_two_versions(registry, artifacts)
    # Without retries each check fails at once instead of backing off.
    unreachable = redis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))

    with caplog.at_level("WARNING", logger="driftloop.registry.guardrail"):
        rollbacks = run_guardrail_loop(registry, unreachable, GuardrailPolicy(window=100), interval_s=0.01, max_checks=3)

    failures = [record for record in caplog.records if "guardrail check failed" in record.getMessage()]
    assert rollbacks == 0
    assert len(failures) == 1
    assert "could not read online metrics" in failures[0].getMessage()
    assert registry.champion_version() == 2


def test_guardrail_loop_rejects_bad_arguments(registry, redis_client) -> None:
    with pytest.raises(ValueError, match="interval_s must be positive, got 0"):
        run_guardrail_loop(registry, redis_client, GuardrailPolicy(), interval_s=0)
    with pytest.raises(ValueError, match="max_checks must be at least 1 or None, got 0"):
        run_guardrail_loop(registry, redis_client, GuardrailPolicy(), max_checks=0)


# The ``driftloop models guard`` command.


def run_cli(argv: list[str], config: Path) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config")
    subparsers = parser.add_subparsers(dest="command")
    cli.add_commands(subparsers)
    args = parser.parse_args(["--config", str(config), *argv])
    return args.handler(args)


@pytest.fixture
def config_file(settings: Settings, tmp_path: Path, monkeypatch) -> Path:
    # load_settings stores the path in DRIFTLOOP_CONFIG; monkeypatch restores it afterwards.
    monkeypatch.setenv("DRIFTLOOP_CONFIG", "")
    data = {
        "broker_port": settings.broker_port,
        "redis_port": settings.redis_port,
        "topic_prefix": settings.topic_prefix,
        "state_dir": str(settings.state_dir),
    }
    path = tmp_path / "driftloop.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def restore_signal_handlers():
    """Put back the SIGTERM and SIGINT handlers that the command's loop installs."""
    saved = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGINT)}
    yield
    for number, handler in saved.items():
        signal.signal(number, handler)


def test_cli_guard_once_rolls_back(config_file: Path, registry, redis_client, artifacts, settings: Settings, capsys) -> None:
    promote_two_versions(registry, artifacts)
    add_joined_feedback(redis_client, settings.topic_prefix, 1, joined=200, correct=180)
    add_joined_feedback(redis_client, settings.topic_prefix, 2, joined=200, correct=120)

    exit_code = run_cli(["models", "guard", "--once", "--window", "100", "--margin", "0.05", "--json"], config_file)
    output = json.loads(capsys.readouterr().out)

    assert exit_code == 0
    assert output["verdict"] == "rollback"
    assert output["champion"] == {"version": 2, "joined": 200, "correct": 120, "accuracy": 0.6}
    assert output["previous"]["version"] == 1
    assert (output["rollback"]["action"], output["rollback"]["version"]) == ("rollback", 1)
    assert registry.champion_version() == 1


def test_cli_guard_loop_counts_rollbacks(
    config_file: Path, registry, redis_client, artifacts, settings: Settings, capsys, restore_signal_handlers
) -> None:
    promote_two_versions(registry, artifacts)
    add_joined_feedback(redis_client, settings.topic_prefix, 1, joined=200, correct=180)
    add_joined_feedback(redis_client, settings.topic_prefix, 2, joined=200, correct=120)

    exit_code = run_cli(["models", "guard", "--window", "100", "--interval", "0.05", "--max-checks", "2"], config_file)

    assert exit_code == 0
    assert capsys.readouterr().out.strip() == "guardrail stopped after 1 rollbacks"
    assert registry.champion_version() == 1


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--margin", "1.5"], r"invalid --window or --margin: margin must be in \[0, 1\), got 1.5"),
        (["--window", "0"], "invalid --window or --margin: window must be at least 1"),
        (["--interval", "0"], "--interval must be positive, got 0.0"),
        (["--max-checks", "0"], "--max-checks must be at least 1, got 0"),
    ],
)
def test_cli_guard_rejects_bad_options(config_file: Path, options: list[str], message: str) -> None:
    from driftloop.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        run_cli(["models", "guard", *options], config_file)
