"""Drift recovery benchmark: an era change on banking77, end to end through the real pipeline.

The stream has two eras, drawn with a seed from banking77's training file (whose rows
are sorted by intent, so they are shuffled first):

- era 1: a subset of the intents (``--era1-intents``) at their natural priors;
- era 2: the remaining intents arrive with a share of ``--new-share``, and the priors
  of the era-1 intents are shifted by log-normal factors (sigma ``--prior-shift``).

Version 1 is a head on the bundled MiniLM encoder, trained on ``--bootstrap`` era-1
rows. An embedded broker and Redis start on free loopback ports, and the inference
worker, the feedback join, the drift process and the trainer run as subprocesses. The
benchmark sends requests and their feedback at ``--rate`` per second. Two bursts of
``--burst`` requests measure serving throughput: one three quarters into era 1, and one
as soon as the trainer reports the ``training`` phase, in which it embeds examples and
fits the head. Each burst measures serving throughput from its first request to
its last prediction. Nobody acts on the pipeline: the drift process detects the era
change, and the trainer trains, gates and registers version 2.

After the stream, the pipeline stops and the offline figures are computed in this
process on MiniLM embeddings: the oracle (a head trained on everything seen before
version 2 served), the accuracy of versions 1 and 2 on banking77's test rows of the
era-1 intents, and the training jobs that the drift process's monitors and trigger
policy start on ``--stationary-seeds`` stationary streams of ``--stationary`` events
each (``false_alarm_jobs`` is their sum). Each stream is drawn
with replacement from rows of the era-1 intents that version 1 was not trained on (the
streamed ones and banking77's test rows) and is scored offline by version 1, because
pushing 20,000 more events through the pipeline would not fit the time budget.

Usage::

    python benchmarks/drift_recovery.py --json OUT

With the defaults it sends 7,000 requests. On 2 otherwise idle CPU cores a run took
303 s: 208 s of streaming and 76 s of offline figures, most of that on the five
stationary streams.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from _machine import machine_info  # noqa: E402

from driftloop.config import Settings, load_settings  # noqa: E402
from driftloop.datasets import LabelledText, read_labelled  # noqa: E402
from driftloop.drift.baseline import standalone_adwin_delay  # noqa: E402
from driftloop.drift.events import DriftEvent, TrainingJob  # noqa: E402
from driftloop.drift.trigger import InMemoryJobLock, TriggerPolicy  # noqa: E402
from driftloop.infra.clients import make_redis  # noqa: E402
from driftloop.infra.stack import EmbeddedStack, free_port  # noqa: E402
from driftloop.infra.topics import ALL_TOPICS, DRIFT, JOBS, PREDICTIONS, create_topics  # noqa: E402
from driftloop.model import ServingModel, default_base_model, load_artifact, new_classifier, save_artifact  # noqa: E402
from driftloop.producer import EventProducer  # noqa: E402
from driftloop.registry.registry import ModelRegistry  # noqa: E402
from driftloop.schemas.events import Example, Feedback, InferenceRequest, Prediction  # noqa: E402
from driftloop.streams.drift import VersionMonitor  # noqa: E402
from driftloop.testing.services import spawn_driftloop, stop_process, wait_until, write_config  # noqa: E402
from driftloop.testing.topics import TopicReader  # noqa: E402
from driftloop.training import FitOptions, embed_texts, fit  # noqa: E402
from driftloop.registry.heartbeat import read_trainer_status  # noqa: E402

DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "banking77"
SEGMENTS = ("retail", "business", "premium")
PHASE_POLL_EVERY = 20
"""Requests between two reads of the trainer's phase while streaming."""
DRAIN_LIMIT_S = 300.0
READY_LIMIT_S = 180.0
JOB_LIMIT_S = 600.0
ORACLE_HEAD_STEPS = 500


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, metavar="OUT", help="write the report to this JSON file")
    parser.add_argument("--data", type=Path, default=DATA_DIR, help="folder with banking77's train.csv and test.csv")
    parser.add_argument("--seed", type=int, default=0, help="seed of the eras, the shuffles and the stationary stream (default 0)")
    parser.add_argument("--era1-intents", type=int, default=57, help="intents of era 1, and era 2 adds the others (default 57)")
    parser.add_argument("--bootstrap", type=int, default=800, help="era-1 rows that train version 1 (default 800)")
    parser.add_argument("--era1", type=int, default=1500, help="requests in era 1 (default 1500)")
    parser.add_argument("--era2", type=int, default=5500, help="requests in era 2 (default 5500)")
    parser.add_argument("--new-share", type=float, default=0.3, help="share of era-2 requests with a new intent (default 0.3)")
    parser.add_argument("--prior-shift", type=float, default=0.75, help="sigma of the log-normal prior factors of era 2 (default 0.75)")
    parser.add_argument("--rate", type=float, default=30.0, help="requests per second outside the bursts (default 30)")
    parser.add_argument("--burst", type=int, default=500, help="requests in each throughput burst (default 500)")
    parser.add_argument(
        "--min-examples-after-alarm", type=int, default=1500, help="trainer option of the same name (default 1500)"
    )
    parser.add_argument("--stationary", type=int, default=20_000, help="events of the stationary false-alarm stream (default 20000)")
    parser.add_argument(
        "--stationary-seeds", type=positive_int, default=5, help="stationary streams, seeds SEED to SEED + N - 1 (default 5)"
    )
    parser.add_argument("--warmup", type=int, default=100, help="era-1 requests sent before the pipeline must be up (default 100)")
    parser.add_argument("--log-dir", type=Path, help="copy the processes' logs into this folder")
    return parser.parse_args(argv)


# The stream.


@dataclass(frozen=True)
class StreamEvent:
    index: int
    text: str
    label: str
    era: int
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)


@dataclass
class Eras:
    bootstrap: list[LabelledText]
    stream: list[StreamEvent]
    era1_intents: list[str]
    new_intents: list[str]


def build_eras(rows: list[LabelledText], args: argparse.Namespace) -> Eras:
    """Draw the bootstrap rows and the two eras from ``rows``, without replacement."""
    rng = random.Random(args.seed)
    intents = sorted({row.label for row in rows})
    rng.shuffle(intents)
    era1_intents = sorted(intents[: args.era1_intents])
    new_intents = sorted(intents[args.era1_intents :])
    shuffled_rows = list(rows)
    rng.shuffle(shuffled_rows)

    old_rows = [row for row in shuffled_rows if row.label in set(era1_intents)]
    bootstrap = old_rows[: args.bootstrap]
    era1 = old_rows[args.bootstrap : args.bootstrap + args.era1]
    pools: dict[str, list[LabelledText]] = {}
    for row in old_rows[args.bootstrap + args.era1 :] + [row for row in shuffled_rows if row.label in set(new_intents)]:
        pools.setdefault(row.label, []).append(row)

    weights = {intent: args.new_share / len(new_intents) for intent in new_intents}
    factors = {intent: len(pools.get(intent, [])) * math.exp(rng.gauss(0.0, args.prior_shift)) for intent in era1_intents}
    total = sum(factors.values())
    weights.update({intent: (1 - args.new_share) * factor / total for intent, factor in factors.items()})
    # Counts are drawn first and the rows shuffled after, so era 2 is stationary. Drawing
    # row by row would shift the priors late in the era, as the small intents run out.
    counts = era2_counts(weights, {intent: len(rows) for intent, rows in pools.items()}, args.era2, rng)
    era2 = [pools[intent].pop() for intent, count in counts.items() for _ in range(count)]
    rng.shuffle(era2)

    stream = [StreamEvent(index, row.text, row.label, 1) for index, row in enumerate(era1)]
    stream += [StreamEvent(len(era1) + index, row.text, row.label, 2) for index, row in enumerate(era2)]
    return Eras(bootstrap, stream, era1_intents, new_intents)


def era2_counts(weights: dict[str, float], capacity: dict[str, int], total: int, rng: random.Random) -> dict[str, int]:
    """Draw ``total`` intents by ``weights``, capped at each intent's ``capacity``.

    The draws above a cap are drawn again among the intents with room left, in
    proportion to their weights, so the capped intents' share goes to the others.
    """
    if total > sum(capacity.get(intent, 0) for intent in weights):
        raise SystemExit(f"banking77 has too few rows for --era2 {total}; lower the era sizes")
    counts = Counter({intent: 0 for intent in weights})
    remaining = total
    # Each round fills at least one intent to its cap or places every draw, so it ends within len(weights) rounds.
    for _ in range(len(weights) + 1):
        if remaining == 0:
            break
        open_intents = [intent for intent in weights if counts[intent] < capacity.get(intent, 0)]
        drawn = Counter(rng.choices(open_intents, [weights[intent] for intent in open_intents], k=remaining))
        remaining = 0
        for intent, count in drawn.items():
            room = capacity[intent] - counts[intent]
            counts[intent] += min(count, room)
            remaining += max(0, count - room)
    return dict(counts)


# The pipeline.


def start_stack(root: Path) -> tuple[Settings, EmbeddedStack]:
    settings = load_settings(
        None,
        state_dir=root / "state",
        broker_port=free_port(),
        redis_port=free_port(),
        session_timeout_ms=3000,
        partitions=1,
        device="cpu",
        torch_threads=1,
        topic_prefix="bench.",
    )
    stack = EmbeddedStack(settings)
    stack.up()
    create_topics(settings, ALL_TOPICS)
    return settings, stack


def register_first_version(settings: Settings, eras: Eras, directory: Path) -> float:
    """Train version 1's head on the bootstrap rows, register and promote it, and return the seconds taken."""
    started = time.monotonic()
    classifier, tokenizer, metadata = new_classifier(default_base_model(), eras.era1_intents, settings.max_length)
    index = {label: position for position, label in enumerate(eras.era1_intents)}
    fit(
        classifier,
        tokenizer,
        [row.text for row in eras.bootstrap],
        [index[row.label] for row in eras.bootstrap],
        FitOptions(max_length=settings.max_length),
        torch.device("cpu"),
    )
    save_artifact(classifier, tokenizer, metadata, directory)
    with ModelRegistry(settings) as registry:
        registry.register(directory, data_window={"source": "drift_recovery bootstrap", "rows": len(eras.bootstrap)})
        registry.promote(1, "drift_recovery benchmark version 1")
    return time.monotonic() - started



def start_processes(settings: Settings, run_dir: Path, args: argparse.Namespace) -> dict[str, subprocess.Popen]:
    config = write_config(settings, run_dir / "config.yaml")
    trainer_args = [
        "learn", "trainer",
        "--min-examples-after-alarm", str(args.min_examples_after_alarm),
        "--wait-timeout", "300",
    ]
    return {
        "join": spawn_driftloop(["worker", "join"], config, run_dir / "join.log"),
        "worker": spawn_driftloop(["worker", "inference", "--worker-id", "bench-worker"], config, run_dir / "worker.log"),
        "drift": spawn_driftloop(["learn", "drift"], config, run_dir / "drift.log"),
        "trainer": spawn_driftloop(trainer_args, config, run_dir / "trainer.log"),
    }


@dataclass
class Burst:
    name: str
    first_index: int
    count: int
    started_ms: int
    trainer_phase: str


@dataclass
class StreamLog:
    sent_ms: dict[str, int] = field(default_factory=dict)
    bursts: list[Burst] = field(default_factory=list)
    trainer_phases: list[tuple[int, str, int]] = field(default_factory=list)
    """(stream position, phase, the phase's start in ms since the epoch) of each phase seen."""


def send_event(producer: EventProducer, event: StreamEvent, log: StreamLog) -> None:
    now_ms = int(time.time() * 1000)
    segment = SEGMENTS[event.index % len(SEGMENTS)]
    producer.send_request(
        InferenceRequest(request_id=event.request_id, event_time_ms=now_ms, text=event.text, attributes={"segment": segment})
    )
    producer.send_feedback(Feedback(request_id=event.request_id, label=event.label, source="benchmark", event_time_ms=now_ms))
    log.sent_ms[event.request_id] = now_ms


def stream(settings: Settings, eras: Eras, args: argparse.Namespace, processes: dict[str, subprocess.Popen]) -> StreamLog:
    """Send the stream at ``args.rate``, with a steady-state burst in era 1 and one during training."""
    producer = EventProducer(settings)
    client = make_redis(settings)
    log = StreamLog()
    # Three quarters into era 1 every process has caught up with the warm-up.
    steady_burst_at = 3 * len([event for event in eras.stream if event.era == 1]) // 4
    training_burst_sent = False
    interval = 1.0 / args.rate
    position = 0
    next_send = time.monotonic()
    try:
        while position < len(eras.stream):
            if position % PHASE_POLL_EVERY == 0:
                check_processes(processes)
                phase = record_trainer_phase(settings, client, position, log)
                if phase == "training" and not training_burst_sent:
                    position = send_burst(producer, eras, position, args.burst, "during_training", phase, log)
                    training_burst_sent = True
                    next_send = time.monotonic()
                    continue

            if position == args.warmup:
                wait_for_pipeline(settings, client, processes, args.warmup)
                next_send = time.monotonic()
            if position == steady_burst_at:
                position = send_burst(producer, eras, position, args.burst, "steady", "", log)
                next_send = time.monotonic()
                continue

            send_event(producer, eras.stream[position], log)
            position += 1
            next_send += interval
            pause = next_send - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        producer.flush()
    finally:
        client.close()
    return log


def record_trainer_phase(settings: Settings, client, position: int, log: StreamLog) -> str:
    """Read the trainer's phase, log it in ``log`` when it changed, and return it."""
    status = read_trainer_status(client, settings)
    phase = status.get("phase", "")
    if not log.trainer_phases or log.trainer_phases[-1][1] != phase:
        log.trainer_phases.append((position, phase, int(status.get("since_ms", 0))))
    return phase


def wait_for_pipeline(settings: Settings, client, processes: dict[str, subprocess.Popen], examples: int) -> None:
    """Wait until the join counted ``examples`` joined pairs, a worker sent a heartbeat and the trainer reported its phase."""
    from driftloop.registry.heartbeat import read_workers

    def ready() -> bool:
        check_processes(processes)
        # The join's own counter, because the embedded broker understates end offsets.
        joined = float(client.hget(f"{settings.topic_prefix}metrics:join", "joined") or 0)
        return joined >= examples and bool(read_workers(client, settings.topic_prefix)) and bool(read_trainer_status(client, settings))

    started = time.monotonic()
    if not wait_until(ready, timeout=READY_LIMIT_S, interval=0.5):
        raise RuntimeError(f"the pipeline was not up within {READY_LIMIT_S:.0f} s; see the process logs")
    print(f"pipeline up after {time.monotonic() - started:.1f} s of waiting; streaming on", flush=True)


def send_burst(producer: EventProducer, eras: Eras, position: int, count: int, name: str, phase: str, log: StreamLog) -> int:
    events = eras.stream[position : position + count]
    log.bursts.append(Burst(name, position, len(events), int(time.time() * 1000), phase))
    for event in events:
        send_event(producer, event, log)
    producer.flush()
    print(f"sent the {name} burst of {len(events)} requests at stream position {position}", flush=True)
    return position + len(events)


def check_processes(processes: dict[str, subprocess.Popen]) -> None:
    for name, process in processes.items():
        if process.poll() is not None:
            raise RuntimeError(f"pipeline process {name} exited with code {process.returncode}")


def wait_for_trainer(settings: Settings, processes: dict[str, subprocess.Popen]) -> None:
    """Wait until the job on version 1 registered its candidate, or no job runs and the trainer is idle.

    A later job, on version 2, is not waited for: after the stream it would only wait
    for examples that never come.
    """
    client = make_redis(settings)
    registry = ModelRegistry(settings, redis_client=client)
    try:
        def done() -> bool:
            check_processes(processes)
            if any(record.parent == 1 for record in registry.list_versions()):
                return True
            locked = any(key for key in client.scan_iter(f"{settings.topic_prefix}job_lock:*"))
            return not locked and read_trainer_status(client, settings).get("phase", "idle") == "idle"

        wait_until(done, timeout=JOB_LIMIT_S, interval=1.0)
    finally:
        registry.close()
        client.close()


def read_topic(settings: Settings, name: str, expected: int, limit_s: float) -> list:
    reader = TopicReader(settings, settings.topic(name))
    try:
        if expected:
            return list(reader.read_until(lambda records: len(records) >= expected, timeout=limit_s))
        return list(reader.read_for(3.0))
    finally:
        reader.close()


# Figures.


def accuracy(pairs: list[tuple[str, str]]) -> float | None:
    return sum(predicted == label for predicted, label in pairs) / len(pairs) if pairs else None


def burst_throughput(burst: Burst, events: list[StreamEvent], predictions: dict[str, Prediction]) -> float | None:
    ids = [event.request_id for event in events[burst.first_index : burst.first_index + burst.count]]
    done = [predictions[request_id].predicted_at_ms for request_id in ids if request_id in predictions]
    if len(done) < len(ids):
        return None
    seconds = (max(done) - burst.started_ms) / 1000
    return len(ids) / seconds if seconds > 0 else None


def forward_throughput(predictions: list[Prediction], start_ms: int, end_ms: int) -> float | None:
    """Return requests per second of forward-pass time over the worker's batches predicted in [start_ms, end_ms).

    Predictions of one batch share ``predicted_at_ms`` and ``inference_ms``. Unlike the
    bursts, this figure leaves out queueing and pacing, so it shows how much slower the
    worker's forward passes run while the trainer computes.
    """
    batches: dict[tuple[str, int, float], int] = Counter(
        (prediction.worker_id, prediction.predicted_at_ms, prediction.inference_ms)
        for prediction in predictions
        if start_ms <= prediction.predicted_at_ms < end_ms
    )
    seconds = sum(inference_ms for _, _, inference_ms in batches) / 1000
    return sum(batches.values()) / seconds if seconds > 0 else None


def forward_ratio(log: StreamLog, predictions: dict[str, Prediction], era1_end_ms: int | None) -> dict[str, Any]:
    """Compare forward-pass throughput in the trainer's training phase with era 1 after the warm-up."""
    phases = log.trainer_phases
    training = next((index for index, entry in enumerate(phases) if entry[1] == "training"), None)
    idle = next((entry for entry in phases if entry[1] == "idle"), None)
    if training is None or idle is None or era1_end_ms is None:
        return {"steady": None, "during_training": None, "ratio": None}
    start_ms = phases[training][2]
    end_ms = phases[training + 1][2] if training + 1 < len(phases) else start_ms
    values = list(predictions.values())
    steady = forward_throughput(values, idle[2], era1_end_ms)
    during = forward_throughput(values, start_ms, end_ms)
    return {"steady": steady, "during_training": during, "ratio": during / steady if steady and during else None}


def burst_within_training(log: StreamLog, events: list[StreamEvent], predictions: dict[str, Prediction]) -> bool | None:
    """Return whether the training burst's last prediction came before the trainer left the training phase."""
    burst = next((burst for burst in log.bursts if burst.name == "during_training"), None)
    if burst is None:
        return None
    phases = [entry for entry in log.trainer_phases if entry[1] == "training"]
    later = [entry for entry in log.trainer_phases if entry[0] > phases[0][0]] if phases else []
    ids = [event.request_id for event in events[burst.first_index : burst.first_index + burst.count]]
    done = [predictions[request_id].predicted_at_ms for request_id in ids if request_id in predictions]
    if not later or not done:
        return None
    return max(done) <= later[0][2]


def train_head(embeddings: torch.Tensor, targets: torch.Tensor, num_labels: int, steps: int, seed: int) -> nn.Linear:
    """Train a linear head on fixed embeddings, as ``driftloop.training`` does in head mode."""
    torch.manual_seed(seed)
    head = nn.Linear(embeddings.shape[1], num_labels)
    optimizer = torch.optim.AdamW(head.parameters(), lr=2e-3, weight_decay=1e-4)
    loss_function = nn.CrossEntropyLoss()
    for _ in range(steps):
        optimizer.zero_grad()
        loss_function(head(embeddings), targets).backward()
        optimizer.step()
    return head.eval()


def head_predictions(head: nn.Module, embeddings: torch.Tensor, labels: list[str]) -> list[str]:
    with torch.no_grad():
        return [labels[i] for i in head(embeddings).argmax(dim=-1).tolist()]


def same_encoder(first: ServingModel, second: ServingModel) -> bool:
    first_state = first.classifier.encoder.state_dict()
    second_state = second.classifier.encoder.state_dict()
    return first_state.keys() == second_state.keys() and all(torch.equal(first_state[k], second_state[k]) for k in first_state)


def stationary_jobs(
    settings: Settings, version_1: ServingModel, embeddings: torch.Tensor, rows: list[LabelledText], count: int, seed: int
) -> dict[str, Any]:
    """Count jobs and alarms of the drift process's monitors and trigger on ``count`` events drawn from ``rows``."""
    with torch.no_grad():
        probabilities = torch.softmax(version_1.classifier.head(embeddings), dim=-1)
    confidence, predicted = probabilities.max(dim=-1)
    rng = random.Random(seed)
    monitor = VersionMonitor(settings.drift, model_version=1)
    policy = TriggerPolicy(settings.drift.trigger, InMemoryJobLock(), "stationary", model_version=1)
    jobs = 0
    alarms: Counter[str] = Counter()
    start_ms = int(time.time() * 1000)
    for position in range(count):
        pick = rng.randrange(len(rows))
        label = version_1.labels[int(predicted[pick])]
        event_time_ms = start_ms + position * 250
        prediction = Prediction(
            request_id=f"stationary-{position}",
            model_version=1,
            label=label,
            confidence=float(confidence[pick]),
            scores={label: float(confidence[pick])},
            latency_ms=0.0,
            inference_ms=0.0,
            worker_id="offline",
            event_time_ms=event_time_ms,
            predicted_at_ms=event_time_ms,
            text=rows[pick].text,
        )
        example = Example(
            request_id=prediction.request_id,
            text=rows[pick].text,
            label=rows[pick].label,
            predicted_label=label,
            confidence=prediction.confidence,
            model_version=1,
            event_time_ms=event_time_ms,
        )
        events = monitor.on_prediction(prediction) + monitor.on_example(example)
        alarms.update(f"{event.detector} on {event.signal}" for event in events)
        for job in policy.update(events, labelled_examples=1):
            jobs += 1
            # The trainer would release the lock when the job ends; here it ends at once.
            policy.finish_job(job.job_id)
    return {"jobs": jobs, "alarms": dict(alarms), "events": count}


def offline_figures(
    settings: Settings, eras: Eras, test_rows: list[LabelledText], records: dict[str, Any], first_v2_index: int | None, args
) -> dict[str, Any]:
    """Compute the oracle, the first era's accuracy on test rows, and stationary false alarms."""
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    version_1 = load_artifact(records["v1_path"], version=1)
    era1_test = [row for row in test_rows if row.label in set(eras.era1_intents)]
    seen_stream = eras.stream[:first_v2_index] if first_v2_index is not None else eras.stream
    served_by_v2 = [eras.stream[index] for index in records["v2_indices"]]
    texts = [row.text for row in eras.bootstrap] + [event.text for event in eras.stream] + [row.text for row in era1_test]
    started = time.monotonic()
    options = FitOptions(max_length=settings.max_length)
    embeddings = embed_texts(version_1.classifier, version_1.tokenizer, texts, options, torch.device("cpu"))
    embed_s = time.monotonic() - started
    n_boot, n_stream = len(eras.bootstrap), len(eras.stream)
    boot_emb = embeddings[:n_boot]
    stream_emb = embeddings[n_boot : n_boot + n_stream]
    test_emb = embeddings[n_boot + n_stream :]

    figures: dict[str, Any] = {"embedding_s": round(embed_s, 1), "embedded_texts": len(texts)}

    # Oracle: a head trained on the bootstrap rows and every streamed example before
    # version 2 served. The second oracle is trained only on the examples the trainer read.
    for name, seen in (("oracle", len(seen_stream)), ("oracle_at_job_data", records["job_examples"])):
        if not served_by_v2 or seen is None:
            figures[f"{name}_accuracy"] = None
            continue
        seen_rows = [row.label for row in eras.bootstrap] + [event.label for event in eras.stream[:seen]]
        labels = sorted(set(seen_rows))
        index = {label: position for position, label in enumerate(labels)}
        seen_emb = torch.cat([boot_emb, stream_emb[:seen]])
        targets = torch.tensor([index[label] for label in seen_rows])
        oracle = train_head(seen_emb, targets, len(labels), ORACLE_HEAD_STEPS, args.seed)
        v2_emb = stream_emb[torch.tensor([event.index for event in served_by_v2])]
        oracle_labels = head_predictions(oracle, v2_emb, labels)
        figures[f"{name}_accuracy"] = accuracy(list(zip(oracle_labels, [event.label for event in served_by_v2], strict=True)))
        figures[f"{name}_training_examples"] = len(seen_rows)

    # First era's intents on banking77's test rows, before and after the new version.
    truth = [row.label for row in era1_test]
    v1_test = head_predictions(version_1.classifier.head, test_emb, version_1.labels)
    figures["first_era_test_accuracy_v1"] = accuracy(list(zip(v1_test, truth, strict=True)))
    figures["first_era_test_rows"] = len(era1_test)
    if records.get("v2_path"):
        version_2 = load_artifact(records["v2_path"], version=2)
        if same_encoder(version_1, version_2):
            v2_test = head_predictions(version_2.classifier.head, test_emb, version_2.labels)
        else:
            v2_test = [result.label for result in version_2.predict_bucketed([row.text for row in era1_test], 64)]
        figures["first_era_test_accuracy_v2"] = accuracy(list(zip(v2_test, truth, strict=True)))

    # Stationary stream: era-1 intents only, from rows that version 1 was not trained on.
    era1_intents = set(eras.era1_intents)
    pool = [event.index for event in eras.stream if event.label in era1_intents]
    pool_rows = [LabelledText(eras.stream[index].text, eras.stream[index].label) for index in pool] + era1_test
    pool_emb = torch.cat([stream_emb[torch.tensor(pool)], test_emb])
    per_seed = [
        stationary_jobs(settings, version_1, pool_emb, pool_rows, args.stationary, seed)
        for seed in range(args.seed, args.seed + args.stationary_seeds)
    ]
    alarms: Counter[str] = Counter()
    for stream in per_seed:
        alarms.update(stream["alarms"])
    figures["stationary"] = {
        "jobs": sum(stream["jobs"] for stream in per_seed),
        "jobs_per_seed": [stream["jobs"] for stream in per_seed],
        "alarms": dict(alarms),
        "events_per_stream": args.stationary,
        "streams": len(per_seed),
        "pool_rows": len(pool_rows),
    }
    return figures


def collect(settings: Settings, eras: Eras, log: StreamLog) -> dict[str, Any]:
    """Read predictions, drift events, jobs and the registry after the stream."""
    raw = read_topic(settings, PREDICTIONS, len(eras.stream), DRAIN_LIMIT_S)
    predictions: dict[str, Prediction] = {}
    for record in raw:
        prediction = Prediction.model_validate_json(record.value())
        predictions.setdefault(prediction.request_id, prediction)
    drift_events = [DriftEvent.model_validate_json(record.value()) for record in read_topic(settings, DRIFT, 0, 0)]
    jobs = [TrainingJob.model_validate_json(record.value()) for record in read_topic(settings, JOBS, 0, 0)]
    with ModelRegistry(settings) as registry:
        versions = [record.to_json() for record in registry.list_versions()]
        history = [change.to_json() for change in registry.history()]
    return {"predictions": predictions, "drift_events": drift_events, "jobs": jobs, "versions": versions, "history": history}


def online_figures(eras: Eras, log: StreamLog, collected: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    predictions: dict[str, Prediction] = collected["predictions"]
    change = len([event for event in eras.stream if event.era == 1])
    served = [(event, predictions.get(event.request_id)) for event in eras.stream]
    missing = sum(1 for _, prediction in served if prediction is None)
    by_version: dict[int, list[int]] = {}
    for event, prediction in served:
        if prediction is not None:
            by_version.setdefault(prediction.model_version, []).append(event.index)

    def pairs(selector) -> list[tuple[str, str]]:
        return [(prediction.label, event.label) for event, prediction in served if prediction is not None and selector(event, prediction)]

    era1_done = [prediction.predicted_at_ms for event, prediction in served if prediction is not None and event.era == 1]
    era1_end_ms = max(era1_done) if era1_done else None
    v2_indices = by_version.get(2, [])
    first_v2 = min(v2_indices) if v2_indices else None
    errors = [int(prediction.label != event.label) for event, prediction in served if prediction is not None and prediction.model_version == 1]
    v1_alarms = [event for event in collected["drift_events"] if event.model_version == 1]
    after_change = [event.position - change for event in v1_alarms if event.position >= change]
    bursts = {burst.name: burst_throughput(burst, eras.stream, predictions) for burst in log.bursts}
    era1_intents = set(eras.era1_intents)
    figures = {
        "missing_predictions": missing,
        "versions_serving": {str(version): len(indices) for version, indices in sorted(by_version.items())},
        "change_position": change,
        "first_v2_position": first_v2,
        "accuracy_before": accuracy(pairs(lambda event, prediction: event.era == 1)),
        "accuracy_dip": accuracy(pairs(lambda event, prediction: event.era == 2 and prediction.model_version == 1)),
        "accuracy_recovered": accuracy(pairs(lambda event, prediction: event.era == 2 and prediction.model_version == 2)),
        "first_era_online_accuracy_v1_in_era2": accuracy(
            pairs(lambda event, prediction: event.era == 2 and prediction.model_version == 1 and event.label in era1_intents)
        ),
        "first_era_online_accuracy_v2_in_era2": accuracy(
            pairs(lambda event, prediction: event.era == 2 and prediction.model_version == 2 and event.label in era1_intents)
        ),
        "detection_delay_examples": min(after_change) if after_change else None,
        "adwin_delay_examples": standalone_adwin_delay(errors, change),
        "alarms_before_change": sum(1 for event in v1_alarms if event.position < change),
        "alarms_version_1": len(v1_alarms),
        "alarm_detectors": sorted({f"{event.detector} on {event.signal}" for event in v1_alarms}),
        "training_jobs": len(collected["jobs"]),
        "burst_throughput_per_s": bursts,
        "forward_throughput_per_s": forward_ratio(log, predictions, era1_end_ms),
        "serving_ratio_during_training": (
            bursts["during_training"] / bursts["steady"]
            if bursts.get("during_training") and bursts.get("steady")
            else None
        ),
        "training_burst_within_training_phase": burst_within_training(log, eras.stream, predictions),
        "trainer_phases": log.trainer_phases,
    }
    figures["v2_indices"] = v2_indices
    return figures


def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.monotonic()
    train_rows = read_labelled(args.data / "train.csv")
    test_rows = read_labelled(args.data / "test.csv")
    eras = build_eras(train_rows, args)
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    with tempfile.TemporaryDirectory(prefix="driftloop-drift-recovery-") as directory:
        root = Path(directory)
        settings, stack = start_stack(root)
        processes: dict[str, subprocess.Popen] = {}
        try:
            bootstrap_s = register_first_version(settings, eras, root / "v1")
            processes = start_processes(settings, root, args)
            stream_started = time.monotonic()
            log = stream(settings, eras, args, processes)
            stream_s = time.monotonic() - stream_started
            wait_for_trainer(settings, processes)
            collected = collect(settings, eras, log)
        finally:
            exit_codes = {name: stop_process(process) for name, process in processes.items()}
            logs = {name: (root / f"{name}.log").read_text(errors="replace")[-4000:] for name in processes}
            if args.log_dir is not None:
                args.log_dir.mkdir(parents=True, exist_ok=True)
                for name in processes:
                    (args.log_dir / f"{name}.log").write_bytes((root / f"{name}.log").read_bytes())
            stack.down()
        online = online_figures(eras, log, collected, args)
        versions = collected["versions"]
        version_2 = next((v for v in versions if v["version"] == 2), None)
        records = {
            "v1_path": str(root / "state" / "models" / "v1"),
            "v2_path": version_2["path"] if version_2 else None,
            "v2_indices": online.pop("v2_indices"),
            "job_examples": version_2["data_window"].get("recent_examples") if version_2 else None,
        }
        # The store lives in the temporary folder, so the offline figures come before it goes.
        stack_free = time.monotonic()
        offline = offline_figures(settings, eras, test_rows, records, online["first_v2_position"], args)
        offline_s = time.monotonic() - stack_free

    first_era_drop = None
    if offline.get("first_era_test_accuracy_v2") is not None:
        first_era_drop = 100 * (offline["first_era_test_accuracy_v1"] - offline["first_era_test_accuracy_v2"])
    delay, adwin = online["detection_delay_examples"], online["adwin_delay_examples"]
    report = {
        "benchmark": "drift_recovery",
        "detection_delay_examples": delay,
        "adwin_delay_examples": adwin,
        "false_alarm_jobs": offline["stationary"]["jobs"],
        "false_alarm_method": (
            f"jobs summed over {args.stationary_seeds} streams (seeds {args.seed} to "
            f"{args.seed + args.stationary_seeds - 1}) of {args.stationary} events, each drawn with replacement "
            f"from {offline['stationary']['pool_rows']} rows of the era-1 intents that version 1 was not trained on (streamed requests and banking77 test rows), scored "
            "offline by version 1 and fed through the drift process's VersionMonitor and TriggerPolicy, with the "
            "job lock released as soon as a job starts"
        ),
        "accuracy_before": online["accuracy_before"],
        "accuracy_dip": online["accuracy_dip"],
        "accuracy_recovered": online["accuracy_recovered"],
        "oracle_accuracy": offline["oracle_accuracy"],
        "oracle_accuracy_at_job_data": offline["oracle_at_job_data_accuracy"],
        "first_era_drop_points": first_era_drop,
        "serving_ratio_during_training": online["serving_ratio_during_training"],
        "ratios": {
            "detection_delay_vs_adwin": delay / adwin if delay is not None and adwin else None,
            "recovered_minus_oracle_points": (
                100 * (online["accuracy_recovered"] - offline["oracle_accuracy"])
                if online["accuracy_recovered"] is not None and offline["oracle_accuracy"] is not None
                else None
            ),
            "serving_during_training_vs_steady": online["serving_ratio_during_training"],
        },
        "loop": {
            "training_jobs": online["training_jobs"],
            "version_2_registered": version_2 is not None,
            "version_2_status": version_2["status"] if version_2 else None,
            "version_2_reason": version_2["status_reason"] if version_2 else None,
            "version_2_metrics": version_2["metrics"] if version_2 else None,
            "version_2_data_window": version_2["data_window"] if version_2 else None,
            "versions": [{"version": v["version"], "status": v["status"], "parent": v["parent"]} for v in versions],
            "history": collected["history"],
        },
        "online": online,
        "offline": offline,
        "sizes": {
            "era1_intents": len(eras.era1_intents),
            "new_intents": len(eras.new_intents),
            "bootstrap_rows": len(eras.bootstrap),
            "era1_requests": args.era1,
            "era2_requests": args.era2,
            "new_share": args.new_share,
            "new_share_drawn": sum(1 for event in eras.stream if event.label in set(eras.new_intents)) / max(1, args.era2),
            "prior_shift_sigma": args.prior_shift,
            "rate_per_s": args.rate,
            "burst": args.burst,
            "min_examples_after_alarm": args.min_examples_after_alarm,
            "stationary_events": args.stationary,
            "stationary_streams": args.stationary_seeds,
            "seed": args.seed,
        },
        "durations_s": {
            "bootstrap": round(bootstrap_s, 1),
            "stream": round(stream_s, 1),
            "offline": round(offline_s, 1),
            "total": round(time.monotonic() - started, 1),
        },
        "exit_codes": exit_codes,
        "machine": {**machine_info(), "load_average": os.getloadavg(), "torch_threads_worker": 1},
    }
    if any(code not in (0, None) for code in exit_codes.values()):
        report["logs"] = logs
    return report


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = run(args)
    text = json.dumps(report, indent=2, default=str)
    print(text)
    print(json.dumps(report["ratios"], indent=2))
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
