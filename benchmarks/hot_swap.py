"""Hot-swap benchmark under load: two inference worker processes, 50 swaps and 10 bad versions.

Starts the embedded broker and Redis on free loopback ports, registers two model
versions and ten damaged ones, and runs two ``driftloop worker inference``
processes that serve the registry's champion. A background thread sends requests
at a set rate, and another reads every prediction back with its arrival time.
The phases, in order:

1. steady: ``--steady-s`` seconds at ``--rate`` requests/s without a swap;
2. loaded swaps: ``--loaded-swaps`` champion changes at ``--rate``, alternating
   ``promote(2)`` and ``rollback()`` to 1. Each change comes ``--swap-interval-s``
   after the one before, or later if a worker has not served that one yet, so no
   worker skips a version and the RSS is sampled after the release;
3. light swaps: the remaining changes up to ``--swaps`` at ``--light-rate``,
   ``--light-swap-interval-s`` apart, for the worker RSS after 10 and 50 swaps;
4. bad versions: each damaged version is promoted under ``--rate`` load. Where
   ``promote()``'s hash check rejects it, it is promoted without the check, as a
   registry that skipped it would. Once both workers logged the failed load, it
   is rolled back.

Latencies are end to end: from the request's event time, set when it is sent,
to the prediction's arrival at the reader. The two good versions are
all-MiniLM-L6-v2 classifier heads trained on two slices of banking77, or tiny
random models with ``--tiny``. Requests are banking77 test texts.

Usage::

    python benchmarks/hot_swap.py --json hot_swap.json
    python benchmarks/hot_swap.py --tiny --swaps 10 --loaded-swaps 4 --steady-s 10 --json quick.json
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import psutil
import redis
import torch
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import machine_info  # noqa: E402

from driftloop.artifact_digest import digest_artifact  # noqa: E402
from driftloop.bootstrap import train_initial  # noqa: E402
from driftloop.config import Settings, load_settings  # noqa: E402
from driftloop.datasets import read_labelled, shuffled  # noqa: E402
from driftloop.errors import ArtifactError  # noqa: E402
from driftloop.infra.clients import make_redis  # noqa: E402
from driftloop.infra.stack import EmbeddedStack, free_port  # noqa: E402
from driftloop.infra.topics import AUDIT, DEAD_LETTER, PREDICTIONS, REQUESTS, create_topics  # noqa: E402
from driftloop.model import ARCHITECTURE, METADATA_FILE, WEIGHTS_FILE, save_artifact  # noqa: E402
from driftloop.producer import EventProducer, now_ms  # noqa: E402
from driftloop.registry.heartbeat import read_workers  # noqa: E402
from driftloop.registry.records import ChampionChange, ModelVersion  # noqa: E402
from driftloop.registry.registry import ModelRegistry  # noqa: E402
from driftloop.schemas.events import InferenceRequest  # noqa: E402
from driftloop.testing.models import write_tiny_artifact  # noqa: E402
from driftloop.testing.services import spawn_driftloop, stop_process, write_config  # noqa: E402

DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "banking77"
WORKER_IDS = ("w1", "w2")
GOOD_VERSIONS = (1, 2)
RSS_AFTER = (1, 10, 50)
# Upper bounds on waits; reaching one ends the run with an error.
START_LIMIT_S = 180.0
BAD_LOAD_LIMIT_S = 60.0
DRAIN_LIMIT_S = 120.0
SWAP_LIMIT_S = 120.0
# Wait after a worker's first prediction by a new version before its RSS is sampled.
# The model source releases the replaced version at its next loop step, which comes
# within its 1 s message wait.
RELEASE_SETTLE_S = 1.5
# Extra reading after the last expected prediction, to catch late duplicates.
DUPLICATE_GRACE_S = 3.0
# Pause after a bad version is rolled back, before the next one is promoted.
BAD_GAP_S = 1.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, metavar="OUT", help="Write the results to this JSON file")
    parser.add_argument(
        "--predictions-out", type=Path, metavar="FILE", help="Write every prediction, without its text and scores, as JSON lines"
    )
    parser.add_argument("--tiny", action="store_true", help="Use tiny random models instead of MiniLM heads")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR, help="Folder with banking77 train.csv and test.csv")
    parser.add_argument("--train-rows", type=int, default=800, help="Training rows per MiniLM head (default 800)")
    parser.add_argument("--rate", type=float, default=50.0, help="Requests/s in the steady, loaded-swap and bad phases (default 50)")
    parser.add_argument("--light-rate", type=float, default=10.0, help="Requests/s during the light swaps (default 10)")
    parser.add_argument("--warmup-s", type=float, default=5.0, help="Seconds of load before the steady phase (default 5)")
    parser.add_argument("--steady-s", type=float, default=40.0, help="Seconds of the steady phase (default 40)")
    parser.add_argument("--swaps", type=int, default=50, help="Champion changes in all (default 50)")
    parser.add_argument("--loaded-swaps", type=int, default=20, help="Champion changes under --rate (default 20)")
    parser.add_argument("--swap-interval-s", type=float, default=4.0, help="Seconds between loaded swaps (default 4)")
    parser.add_argument("--light-swap-interval-s", type=float, default=3.0, help="Seconds between light swaps (default 3)")
    parser.add_argument("--swap-window-s", type=float, default=3.0, help="Seconds after a loaded swap whose predictions count as during the swap (default 3)")
    parser.add_argument("--bin-s", type=float, default=1.0, help="Width of the throughput windows, seconds (default 1)")
    parser.add_argument(
        "--version-tolerance-s",
        type=float,
        default=5.0,
        help="How long a worker may serve the previous version after a change, seconds (default 5, the model source's reconcile interval)",
    )
    parser.add_argument("--bad-versions", type=int, default=10, help="Damaged versions to promote, at most 10 (default 10)")
    return parser.parse_args(argv)


def validate_args(args: argparse.Namespace) -> list[str]:
    problems = []
    if not 1 <= args.loaded_swaps <= args.swaps:
        problems.append(f"--loaded-swaps must be between 1 and --swaps ({args.swaps}), got {args.loaded_swaps}")
    if args.rate <= 0 or args.light_rate <= 0:
        problems.append(f"--rate and --light-rate must be positive, got {args.rate} and {args.light_rate}")
    if not 0 <= args.bad_versions <= len(DAMAGES):
        problems.append(f"--bad-versions must be between 0 and {len(DAMAGES)}, got {args.bad_versions}")
    if args.swap_window_s > args.swap_interval_s:
        problems.append(f"--swap-window-s ({args.swap_window_s}) must not exceed --swap-interval-s ({args.swap_interval_s})")
    return problems


# Model versions.


def write_good_artifacts(args: argparse.Namespace, settings: Settings, root: Path) -> tuple[list[Path], dict]:
    """Write the artifacts of versions 1 and 2; return their paths and how they were made."""
    paths = [root / "good1", root / "good2"]
    if args.tiny:
        labels = sorted({row.label for row in read_labelled(args.data_dir / "train.csv")})
        for seed, path in enumerate(paths):
            write_tiny_artifact(path, labels, seed=seed)
        return paths, {"kind": "tiny random BERT (2 layers, hidden size 32)", "labels_per_version": [len(labels)] * 2}
    rows = shuffled(read_labelled(args.data_dir / "train.csv"), seed=0)
    started = time.perf_counter()
    label_counts = []
    for index, path in enumerate(paths):
        # Each head is trained on its own slice, so the two versions predict differently.
        # A slice may miss a rare intent, so the versions' label lists can differ.
        part = rows[index * args.train_rows : (index + 1) * args.train_rows]
        model = train_initial(settings, part, seed=index)
        save_artifact(model.classifier, model.tokenizer, model.metadata, path)
        label_counts.append(len(model.labels))
        del model
        gc.collect()
    return paths, {
        "kind": "all-MiniLM-L6-v2 encoder with a trained head",
        "train_rows_per_version": args.train_rows,
        "labels_per_version": label_counts,
        "training_s": round(time.perf_counter() - started, 1),
    }


class PickleBomb:
    """Unpickling this object creates ``marker``: proof that a pickle was loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _set_sha256(client: redis.Redis, registry: ModelRegistry, record: ModelVersion) -> None:
    """Store the damaged artifact's SHA-256 and file list in the record, as if it had been registered damaged."""
    digest, _ = digest_artifact(record.path)
    mapping = {"sha256": digest.sha256, "files": json.dumps(digest.files, sort_keys=True)}
    client.hset(registry.keys.version(record.version), mapping=mapping)


def _edit_metadata(record: ModelVersion, change: Callable[[dict], None]) -> None:
    path = record.path / METADATA_FILE
    metadata = json.loads(path.read_text(encoding="utf-8"))
    change(metadata)
    path.write_text(json.dumps(metadata), encoding="utf-8")


def damage_append_byte(record, registry, client, marker) -> None:
    with (record.path / WEIGHTS_FILE).open("ab") as handle:
        handle.write(b"\0")


def damage_truncate(record, registry, client, marker) -> None:
    weights = record.path / WEIGHTS_FILE
    with weights.open("r+b") as handle:
        handle.truncate(weights.stat().st_size // 2)


def damage_truncate_matching_hash(record, registry, client, marker) -> None:
    damage_truncate(record, registry, client, marker)
    _set_sha256(client, registry, record)


def damage_pickle_only(record, registry, client, marker) -> None:
    torch.save(PickleBomb(marker), record.path / "pytorch_model.bin")
    (record.path / WEIGHTS_FILE).unlink()


def damage_pickle_beside_safetensors(record, registry, client, marker) -> None:
    torch.save(PickleBomb(marker), record.path / "pytorch_model.bin")


def damage_pickle_as_safetensors(record, registry, client, marker) -> None:
    torch.save(PickleBomb(marker), record.path / WEIGHTS_FILE)
    _set_sha256(client, registry, record)


def damage_other_architecture(record, registry, client, marker) -> None:
    _edit_metadata(record, lambda metadata: metadata.update(architecture="other.Classifier/3"))


def damage_other_shape(record, registry, client, marker) -> None:
    weights = record.path / WEIGHTS_FILE
    state = load_file(str(weights))
    rows, width = state["head.weight"].shape
    state["head.weight"] = torch.zeros(rows + 1, width)
    state["head.bias"] = torch.zeros(rows + 1)
    save_file(state, str(weights), metadata={"architecture": ARCHITECTURE})
    _set_sha256(client, registry, record)


def damage_other_labels(record, registry, client, marker) -> None:
    _edit_metadata(record, lambda metadata: metadata.update(labels=list(reversed(metadata["labels"]))))


def damage_missing_metadata(record, registry, client, marker) -> None:
    (record.path / METADATA_FILE).unlink()


DAMAGES = (
    damage_append_byte,
    damage_truncate,
    damage_truncate_matching_hash,
    damage_pickle_only,
    damage_pickle_beside_safetensors,
    damage_pickle_as_safetensors,
    damage_other_architecture,
    damage_other_shape,
    damage_other_labels,
    damage_missing_metadata,
)


@dataclass
class BadVersion:
    version: int
    damage: str
    caught_by_promote_check: bool = False
    rejected_by: list[str] = field(default_factory=list)


def register_bad_versions(registry: ModelRegistry, client: redis.Redis, source: Path, count: int, marker: Path) -> list[BadVersion]:
    """Register ``count`` copies of ``source`` and damage each stored copy in its own way."""
    bad = []
    for damage in DAMAGES[:count]:
        record = registry.register(source)
        damage(record, registry, client, marker)
        bad.append(BadVersion(record.version, damage.__name__.removeprefix("damage_")))
    return bad


# Traffic.


class LoadGenerator:
    """Sends requests at a set rate from a background thread; the rate can change while it runs.

    Each request's event time is the moment it is sent. After a stall the thread
    catches up by sending the missed requests at once, unless it is more than a
    second behind, in which case it drops the backlog and restarts its schedule.
    """

    def __init__(self, settings: Settings, texts: list[str], rate: float, max_requests: int, max_seconds: float) -> None:
        self._producer = EventProducer(settings)
        self._texts = texts
        self._rate = rate
        self._max_requests = max_requests
        self._max_seconds = max_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="load-generator", daemon=True)
        self.sent: list[str] = []
        self.schedule_resets = 0

    def start(self) -> None:
        self._thread.start()

    def set_rate(self, rate: float) -> None:
        self._rate = rate

    def stop(self) -> list[str]:
        """Stop sending, wait for every request to be acknowledged and return the ids sent."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(30)
        self._producer.flush(30)
        return list(self.sent)

    def _run(self) -> None:
        deadline = time.monotonic() + self._max_seconds
        next_at = time.monotonic()
        while not self._stop.is_set() and len(self.sent) < self._max_requests and time.monotonic() < deadline:
            now = time.monotonic()
            if next_at > now:
                self._stop.wait(next_at - now)
                continue
            if now - next_at > 1.0:
                self.schedule_resets += 1
                next_at = now
            index = len(self.sent)
            request_id = f"r{index:07d}"
            text = self._texts[index % len(self._texts)]
            self._producer.send_request(InferenceRequest(request_id=request_id, event_time_ms=now_ms(), text=text))
            self.sent.append(request_id)
            next_at += 1.0 / self._rate


class PredictionCollector:
    """Reads the predictions topic from its beginning in a background thread, noting arrival times.

    Partitions are assigned directly, without a consumer group, so reading starts at
    once and nothing is committed.
    """

    def __init__(self, settings: Settings, max_seconds: float) -> None:
        topic = settings.topic(PREDICTIONS)
        options = {
            "group.id": f"hot-swap-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            # The embedded broker answers a fetch only when its maximum wait has passed,
            # so the default of 500 ms would add up to half a second to each latency.
            "fetch.wait.max.ms": 10,
        }
        self._consumer = Consumer(settings.kafka_client_config(**options))
        partitions = self._consumer.list_topics(topic, timeout=10).topics[topic].partitions
        self._consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING) for partition in partitions])
        self._max_seconds = max_seconds
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="prediction-collector", daemon=True)
        self.predictions: list[dict] = []
        self._latest: dict[str, dict] = {}

    def start(self) -> None:
        self._thread.start()

    def seen_ids(self) -> set[str]:
        with self._lock:
            return {prediction["request_id"] for prediction in self.predictions}

    def snapshot(self) -> list[dict]:
        with self._lock:
            return list(self.predictions)

    def wait_for(self, request_ids: list[str], timeout_s: float) -> bool:
        """Return True once every id in ``request_ids`` has a prediction, False after ``timeout_s``."""
        expected = set(request_ids)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if expected <= self.seen_ids():
                return True
            time.sleep(0.2)
        return expected <= self.seen_ids()

    def wait_until_served(self, version: int, since_ms: float, worker_ids: list[str], timeout_s: float) -> float | None:
        """Wait until every worker's latest prediction is by ``version`` and made after ``since_ms``.

        Returns the monotonic time at which that was first seen, or None after ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                latest = [self._latest.get(worker_id) for worker_id in worker_ids]
            if all(p is not None and p["model_version"] == version and p["predicted_at_ms"] >= since_ms for p in latest):
                return time.monotonic()
            time.sleep(0.05)
        return None

    def stop(self) -> list[dict]:
        self._stop.set()
        self._thread.join(30)
        self._consumer.close()
        return self.snapshot()

    def _run(self) -> None:
        deadline = time.monotonic() + self._max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            messages = self._consumer.consume(500, timeout=0.1)
            arrived_ms = time.time() * 1000.0
            decoded = []
            for message in messages:
                if message.error() is None:
                    decoded.append({**json.loads(message.value()), "arrived_ms": arrived_ms})
            with self._lock:
                self.predictions.extend(decoded)
                for prediction in decoded:
                    latest = self._latest.get(prediction["worker_id"])
                    if latest is None or prediction["predicted_at_ms"] >= latest["predicted_at_ms"]:
                        self._latest[prediction["worker_id"]] = prediction


# Worker processes.


def start_workers(config: Path, log_dir: Path) -> dict[str, subprocess.Popen]:
    return {
        worker_id: spawn_driftloop(["worker", "inference", "--worker-id", worker_id], config, log_dir / f"{worker_id}.log")
        for worker_id in WORKER_IDS
    }


def wait_for_assignment(client: redis.Redis, settings: Settings, workers: dict[str, subprocess.Popen]) -> None:
    """Wait until the workers' heartbeats show every partition assigned, each to one worker."""
    deadline = time.monotonic() + START_LIMIT_S
    while time.monotonic() < deadline:
        for worker_id, process in workers.items():
            if process.poll() is not None:
                raise RuntimeError(f"worker {worker_id} exited with code {process.returncode} during start-up")
        beats = {beat["worker_id"]: beat["partitions"] for beat in read_workers(client, settings.topic_prefix)}
        assigned = [partition for worker_id in workers for partition in beats.get(worker_id, [])]
        if all(beats.get(worker_id) for worker_id in workers) and sorted(assigned) == list(range(settings.partitions)):
            return
        time.sleep(0.2)
    raise TimeoutError(f"workers did not share the {settings.partitions} partitions within {START_LIMIT_S:.0f} s")


def worker_rss_mb(workers: dict[str, subprocess.Popen]) -> dict[str, float]:
    return {worker_id: round(psutil.Process(process.pid).memory_info().rss / 2**20, 1) for worker_id, process in workers.items()}


def wait_for_log_line(log: Path, text: str, deadline: float) -> bool:
    while time.monotonic() < deadline:
        if log.is_file() and text in log.read_text(encoding="utf-8", errors="replace"):
            return True
        time.sleep(0.2)
    return False


# Champion changes.


@dataclass
class Swap:
    number: int
    action: str
    version: int
    loaded: bool
    # The registry's time of the change, taken just before its transaction.
    changed_at_ms: float
    returned_at_ms: float
    rss_mb: dict[str, float] = field(default_factory=dict)
    # Seconds from this change to the next. It exceeds the interval when the workers
    # took longer to serve the new version.
    took_s: float = 0.0


def change_champion(registry: ModelRegistry, number: int, loaded: bool) -> Swap:
    """Promote version 2 on odd swap numbers and roll back to version 1 on even ones."""
    if number % 2 == 1:
        # Version 2 was rejected by the previous rollback, so it needs allow_rejected.
        change = registry.promote(2, f"benchmark swap {number}", allow_rejected=True)
    else:
        change = registry.rollback(f"benchmark swap {number}")
    return Swap(number, change.action, change.version, loaded, float(change.at_ms), time.time() * 1000.0)


def run_swaps(
    registry: ModelRegistry,
    workers: dict[str, subprocess.Popen],
    collector: PredictionCollector,
    numbers: range,
    interval_s: float,
    loaded: bool,
) -> list[Swap]:
    """Run the swaps ``numbers``, each at least ``interval_s`` after the one before.

    After each change the next waits until every worker served the new version and
    ``RELEASE_SETTLE_S`` passed, so the replaced version has been released when the
    workers' RSS is sampled, and no worker skips a version.
    """
    swaps = []
    for number in numbers:
        started = time.monotonic()
        swap = change_champion(registry, number, loaded)
        served_at = collector.wait_until_served(swap.version, swap.changed_at_ms, list(workers), SWAP_LIMIT_S)
        if served_at is None:
            raise TimeoutError(f"workers did not serve version {swap.version} within {SWAP_LIMIT_S:.0f} s of swap {number}")
        time.sleep(max(0.0, served_at + RELEASE_SETTLE_S - time.monotonic()))
        swap.rss_mb = worker_rss_mb(workers)
        time.sleep(max(0.0, interval_s - (time.monotonic() - started)))
        swap.took_s = round(time.monotonic() - started, 2)
        swaps.append(swap)
    return swaps


def run_bad_versions(registry: ModelRegistry, bad: list[BadVersion], logs: dict[str, Path]) -> None:
    """Promote each bad version, wait until every worker logged its failed load, then roll back."""
    for item in bad:
        try:
            registry.promote(item.version, f"benchmark bad version {item.damage}")
        except ArtifactError:
            item.caught_by_promote_check = True
            registry.promote(item.version, f"benchmark bad version {item.damage}, unchecked", verify=False)
        deadline = time.monotonic() + BAD_LOAD_LIMIT_S
        for worker_id, log in logs.items():
            if wait_for_log_line(log, f"could not load version {item.version},", deadline):
                item.rejected_by.append(worker_id)
        registry.rollback(f"benchmark bad version {item.damage} rolled back")
        time.sleep(BAD_GAP_S)


# Analysis.


@dataclass(frozen=True)
class Reign:
    """A span in which one good version was the champion that workers should serve."""

    version: int
    start_ms: float
    end_ms: float


def servable_reigns(history: list[ChampionChange], good_versions: set[int]) -> list[Reign]:
    """Turn the champion history into reigns of good versions.

    A bad champion cannot be loaded, so workers keep serving the good version
    before it. Its reign and the rollback back to that version are not changes.
    """
    starts: list[tuple[int, float]] = []
    for change in history:
        if change.version not in good_versions:
            continue
        if starts and starts[-1][0] == change.version:
            continue
        starts.append((change.version, float(change.at_ms)))
    ends = [start for _, start in starts[1:]] + [float("inf")]
    return [Reign(version, start, end) for (version, start), end in zip(starts, ends, strict=True)]


def check_versions(predictions: list[dict], reigns: list[Reign], max_batch_wait_ms: int, tolerance_ms: float) -> dict:
    """Check every prediction's version against the reigns of the good versions.

    A prediction is invalid when its version had no reign that started before the
    prediction was made. Otherwise it is stale by the time from the end of its
    version's latest such reign to the start of its batch, if that is positive: the
    worker still served a replaced version. ``correct`` needs no invalid prediction
    and none staler than ``tolerance_ms``, so every version was the champion at
    some moment from ``tolerance_ms`` before its batch to its end.
    """
    invalid = 0
    stale: list[float] = []
    for prediction in predictions:
        reign = _latest_reign(prediction, reigns)
        if reign is None:
            invalid += 1
            continue
        batch_start_ms = prediction["predicted_at_ms"] - prediction["inference_ms"] - max_batch_wait_ms
        if batch_start_ms > reign.end_ms:
            stale.append(batch_start_ms - reign.end_ms)
    return {
        "correct": invalid == 0 and all(value <= tolerance_ms for value in stale),
        "invalid_predictions": invalid,
        "stale_predictions": len(stale),
        "max_stale_ms": round(max(stale), 1) if stale else 0.0,
        "tolerance_ms": tolerance_ms,
        "version_changes_per_worker": version_changes(predictions),
        "reigns": len(reigns),
    }


def _latest_reign(prediction: dict, reigns: list[Reign]) -> Reign | None:
    """Return the latest reign of the prediction's version that started before the prediction."""
    started = [
        reign
        for reign in reigns
        if reign.version == prediction["model_version"] and reign.start_ms <= prediction["predicted_at_ms"]
    ]
    return started[-1] if started else None


def version_changes(predictions: list[dict]) -> dict[str, int]:
    """Count how often each worker's version changed, in the order it made its predictions."""
    by_worker: dict[str, list[dict]] = defaultdict(list)
    for prediction in predictions:
        by_worker[prediction["worker_id"]].append(prediction)
    changes = {}
    for worker_id, made in sorted(by_worker.items()):
        versions = [p["model_version"] for p in sorted(made, key=lambda p: p["predicted_at_ms"])]
        changes[worker_id] = sum(1 for before, after in zip(versions, versions[1:]) if before != after)
    return changes


def latency_ms(prediction: dict) -> float:
    return prediction["arrived_ms"] - prediction["event_time_ms"]


def p99(values: list[float]) -> float | None:
    return round(float(np.percentile(values, 99)), 1) if values else None


def in_windows(time_ms: float, windows: list[tuple[float, float]]) -> bool:
    return any(start <= time_ms < end for start, end in windows)


def throughput_bins(predictions: list[dict], start_ms: float, end_ms: float, bin_ms: float) -> list[int]:
    """Count predictions arriving in each whole ``bin_ms`` window between ``start_ms`` and ``end_ms``."""
    count = int((end_ms - start_ms) // bin_ms)
    bins = [0] * count
    for prediction in predictions:
        index = int((prediction["arrived_ms"] - start_ms) // bin_ms)
        if 0 <= index < count:
            bins[index] += 1
    return bins


def swap_latencies(predictions: list[dict], swaps: list[Swap]) -> dict[str, list[float | None]]:
    """Per worker and swap: seconds from the champion change to the worker's first prediction by the new version."""
    by_worker: dict[str, list[dict]] = defaultdict(list)
    for prediction in predictions:
        by_worker[prediction["worker_id"]].append(prediction)
    result: dict[str, list[float | None]] = {}
    for worker_id, made in sorted(by_worker.items()):
        made.sort(key=lambda p: p["predicted_at_ms"])
        times = np.array([p["predicted_at_ms"] for p in made], dtype=float)
        versions = np.array([p["model_version"] for p in made])
        latencies: list[float | None] = []
        for swap in swaps:
            after = (times >= swap.changed_at_ms) & (versions == swap.version)
            first = int(np.argmax(after)) if after.any() else None
            latencies.append(None if first is None else round((times[first] - swap.changed_at_ms) / 1000.0, 3))
        result[worker_id] = latencies
    return result


def summarize_latencies(values: list[float | None]) -> dict:
    measured = [value for value in values if value is not None]
    if not measured:
        return {"swaps": len(values), "missing": len(values)}
    return {
        "swaps": len(values),
        "missing": len(values) - len(measured),
        "median": round(float(np.median(measured)), 3),
        "p90": round(float(np.percentile(measured, 90)), 3),
        "max": round(max(measured), 3),
    }


# The run.


@dataclass
class Timeline:
    """Wall-clock marks of the phases, in milliseconds."""

    steady_start_ms: float = 0.0
    steady_end_ms: float = 0.0
    light_start_ms: float = 0.0
    bad_start_ms: float = 0.0
    bad_end_ms: float = 0.0


def benchmark_settings(root: Path) -> Settings:
    return load_settings(
        None,
        state_dir=root / "state",
        broker_port=free_port(),
        redis_port=free_port(),
        partitions=4,
        device="cpu",
        # Two workers share the machine's cores; one torch thread each keeps them from
        # competing for the same cores inside a forward pass.
        torch_threads=1,
    )


def run(args: argparse.Namespace) -> dict:
    load_average_at_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="driftloop-hot-swap-") as directory:
        root = Path(directory)
        settings = benchmark_settings(root)
        stack = EmbeddedStack(settings)
        stack.up()
        try:
            create_topics(settings, (REQUESTS, PREDICTIONS, DEAD_LETTER, AUDIT))
            client = make_redis(settings)
            try:
                with ModelRegistry(settings) as registry:
                    result = run_phases(args, settings, registry, client, root)
            finally:
                client.close()
        finally:
            stack.down()
    result["load_average_at_start"] = [round(value, 2) for value in load_average_at_start]
    return result


def run_phases(args: argparse.Namespace, settings: Settings, registry: ModelRegistry, client: redis.Redis, root: Path) -> dict:
    # Set-up: two good versions, the bad ones, the worker processes.
    good_paths, models = write_good_artifacts(args, settings, root)
    for path in good_paths:
        registry.register(path)
    registry.promote(1, "benchmark start")
    marker = root / "unpickled"
    bad = register_bad_versions(registry, client, good_paths[0], args.bad_versions, marker)
    config = write_config(settings, root / "config.yaml")
    workers = start_workers(config, root)
    logs = {worker_id: root / f"{worker_id}.log" for worker_id in WORKER_IDS}
    texts = [row.text for row in shuffled(read_labelled(args.data_dir / "test.csv"), seed=0)]
    collector = PredictionCollector(settings, max_seconds=3600)
    collector.start()
    load = LoadGenerator(settings, texts, args.rate, max_requests=1_000_000, max_seconds=3600)
    timeline = Timeline()
    try:
        wait_for_assignment(client, settings, workers)
        rss_start = worker_rss_mb(workers)

        # Steady phase.
        load.start()
        time.sleep(args.warmup_s)
        timeline.steady_start_ms = time.time() * 1000.0
        time.sleep(args.steady_s)
        timeline.steady_end_ms = time.time() * 1000.0

        # Swaps under the full load, then under the light load.
        swaps = run_swaps(registry, workers, collector, range(1, args.loaded_swaps + 1), args.swap_interval_s, loaded=True)
        load.set_rate(args.light_rate)
        timeline.light_start_ms = time.time() * 1000.0
        light = range(args.loaded_swaps + 1, args.swaps + 1)
        swaps += run_swaps(registry, workers, collector, light, args.light_swap_interval_s, loaded=False)

        # Bad versions under the full load.
        load.set_rate(args.rate)
        timeline.bad_start_ms = time.time() * 1000.0
        run_bad_versions(registry, bad, logs)
        timeline.bad_end_ms = time.time() * 1000.0

        # Collect every prediction.
        sent = load.stop()
        collector.wait_for(sent, DRAIN_LIMIT_S)
        time.sleep(DUPLICATE_GRACE_S)
        rss_end = worker_rss_mb(workers)
    finally:
        load.stop()
        predictions = collector.stop()
        exit_codes = {worker_id: stop_process(process) for worker_id, process in workers.items()}
    if args.predictions_out:
        write_predictions(args.predictions_out, predictions)
    handed_over = {worker_id: log.read_text(encoding="utf-8", errors="replace") for worker_id, log in logs.items()}
    report = analyze(args, settings, registry.history(), sent, predictions, swaps, bad, timeline, handed_over)
    report["rss_mb_at_start"] = rss_start
    report["rss_mb_at_end"] = rss_end
    report["bad_marker_created"] = marker.exists()
    report["worker_exit_codes"] = exit_codes
    report["load_generator_schedule_resets"] = load.schedule_resets
    report["models"] = models
    return report


def write_predictions(path: Path, predictions: list[dict]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for prediction in predictions:
            kept = {key: value for key, value in prediction.items() if key not in ("text", "scores")}
            handle.write(json.dumps(kept) + "\n")


def analyze(
    args: argparse.Namespace,
    settings: Settings,
    history: list[ChampionChange],
    sent: list[str],
    predictions: list[dict],
    swaps: list[Swap],
    bad: list[BadVersion],
    timeline: Timeline,
    worker_logs: dict[str, str],
) -> dict:
    counts = Counter(prediction["request_id"] for prediction in predictions)
    loaded = [swap for swap in swaps if swap.loaded]
    report: dict = {
        "benchmark": "hot_swap_under_load",
        "requests": len(sent),
        "predictions": len(predictions),
        "lost": len(set(sent) - set(counts)),
        "duplicated": sum(1 for count in counts.values() if count > 1),
    }
    report.update(latency_figures(args, predictions, loaded, timeline))
    report.update(rss_figures(swaps))

    latencies = swap_latencies(predictions, swaps)
    report["swap_latency_s"] = {
        worker_id: {
            "loaded_swaps": summarize_latencies(values[: len(loaded)]),
            "all_swaps": summarize_latencies(values),
        }
        for worker_id, values in latencies.items()
    }

    reigns = servable_reigns(history, set(GOOD_VERSIONS))
    versions = check_versions(predictions, reigns, settings.max_batch_wait_ms, args.version_tolerance_s * 1000.0)
    report["version_correct"] = versions.pop("correct")
    report["version_check"] = versions
    old_version = swaps[-1].version if swaps else 1
    report.update(bad_version_figures(predictions, bad, old_version, timeline, worker_logs))

    report["ratios"] = {
        "p99_swap_over_steady": _ratio(report["p99_swap_ms"], report["p99_steady_ms"]),
        "rss_50_over_10": {
            worker_id: _ratio(report["rss_mb_after_50"].get(worker_id), report["rss_mb_after_10"].get(worker_id))
            for worker_id in WORKER_IDS
        },
    }
    report["settings"] = {key: (str(value) if isinstance(value, Path) else value) for key, value in vars(args).items()}
    report["settings"].update(workers=len(WORKER_IDS), partitions=settings.partitions, worker_torch_threads=settings.torch_threads)
    report["machine"] = machine_info()
    report["swaps"] = [asdict(swap) for swap in swaps]
    report["swap_latency_s_per_swap"] = latencies
    return report


def latency_figures(args: argparse.Namespace, predictions: list[dict], loaded: list[Swap], timeline: Timeline) -> dict:
    """Return p99 latencies and the throughput dip of the steady phase and the loaded swaps."""
    steady_predictions = [p for p in predictions if timeline.steady_start_ms <= p["event_time_ms"] < timeline.steady_end_ms]
    windows = [(swap.changed_at_ms, swap.changed_at_ms + args.swap_window_s * 1000.0) for swap in loaded]
    swap_predictions = [p for p in predictions if in_windows(p["arrived_ms"], windows)]
    steady = [latency_ms(p) for p in steady_predictions]
    during_swaps = [latency_ms(p) for p in swap_predictions]
    bin_ms = args.bin_s * 1000.0
    steady_bins = throughput_bins(predictions, timeline.steady_start_ms, timeline.steady_end_ms, bin_ms)
    swap_bins = throughput_bins(predictions, loaded[0].changed_at_ms, timeline.light_start_ms, bin_ms)
    steady_rate = float(np.mean(steady_bins)) if steady_bins else 0.0
    return {
        "p99_steady_ms": p99(steady),
        "p99_swap_ms": p99(during_swaps),
        "median_steady_ms": round(float(np.median(steady)), 1) if steady else None,
        "median_swap_ms": round(float(np.median(during_swaps)), 1) if during_swaps else None,
        "max_swap_ms": round(max(during_swaps), 1) if during_swaps else None,
        "latency_samples": {"steady": len(steady), "swap": len(during_swaps)},
        # From the request's event time to the prediction, as the worker measured it,
        # without the delivery of the prediction to the reader.
        "worker_p99_ms": {
            "steady": p99([p["latency_ms"] for p in steady_predictions]),
            "swap": p99([p["latency_ms"] for p in swap_predictions]),
        },
        "inference_ms_median_steady": round(float(np.median([p["inference_ms"] for p in steady_predictions])), 1)
        if steady_predictions
        else None,
        "throughput_steady_per_s": round(steady_rate / args.bin_s, 1),
        "throughput_min_during_swaps_per_s": round(min(swap_bins) / args.bin_s, 1) if swap_bins else None,
        "throughput_dip": _ratio(min(swap_bins), steady_rate) if swap_bins else None,
        # The same ratio within the steady phase: the noise floor of the dip.
        "throughput_dip_steady": _ratio(min(steady_bins), steady_rate) if steady_bins else None,
    }


def rss_figures(swaps: list[Swap]) -> dict:
    return {f"rss_mb_after_{count}": swaps[count - 1].rss_mb if count <= len(swaps) else {} for count in RSS_AFTER}


def bad_version_figures(
    predictions: list[dict], bad: list[BadVersion], old_version: int, timeline: Timeline, worker_logs: dict[str, str]
) -> dict:
    """Count swaps to bad versions and the share of bad-phase predictions made by ``old_version``."""
    bad_numbers = {item.version for item in bad}
    during = [p for p in predictions if timeline.bad_start_ms <= p["predicted_at_ms"] < timeline.bad_end_ms]
    served = Counter(p["model_version"] for p in during)
    # A swap is a worker predicting with a bad version or logging that it handed one over.
    swapped = {(p["worker_id"], p["model_version"]) for p in predictions if p["model_version"] in bad_numbers}
    for worker_id, text in worker_logs.items():
        swapped |= {(worker_id, number) for number in bad_numbers if f"handed over version {number}," in text}
    return {
        "bad_artifacts": len(bad),
        "bad_swaps": len(swapped),
        "served_by_old_during_bad": _ratio(served.get(old_version, 0), len(during)),
        "bad_phase_predictions": dict(sorted(served.items())),
        "bad_versions": [asdict(item) for item in bad],
    }


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, 3)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    problems = validate_args(args)
    if problems:
        for problem in problems:
            print(f"hot_swap.py: {problem}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    result = run(args)
    result["run_s"] = round(time.perf_counter() - started, 1)
    headline = {key: value for key, value in result.items() if key not in ("swaps", "swap_latency_s_per_swap", "machine", "bad_versions")}
    print(json.dumps(headline, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
