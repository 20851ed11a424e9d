"""``driftloop demo``: version 1 from part of a labelled file, the rest streamed through the pipeline."""

from __future__ import annotations

import argparse
import json
import logging
import random
import signal
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from driftloop.config import Settings, load_settings
from driftloop.datasets import LabelledText, load_builtin, read_labelled, shuffled
from driftloop.errors import ConfigError, DriftloopError

logger = logging.getLogger(__name__)

# Requests redacted per Presidio batch on the ingress path; at 150 requests/s this adds
# about 0.2 s to the end-to-end latency.
INGRESS_BATCH_SIZE = 32


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    demo = subparsers.add_parser(
        "demo",
        help="train version 1 on part of a labelled file and stream the rest through the pipeline",
        description=(
            "Starts the embedded stack if no Kafka is configured, trains version 1 on the first part of the "
            "shuffled data, streams the rest as redacted requests, sends feedback after a delay, runs the "
            "inference workers and the feedback join, and shows live figures."
        ),
    )
    source = demo.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="CSV or JSONL with text and label columns (banking77's layout works as is)")
    source.add_argument("--dataset", help="built-in public dataset loaded with Hugging Face datasets (needs network): banking77")
    demo.add_argument("--text-column", help="text column; default: the first of text, full_text, sentence, utterance")
    demo.add_argument("--label-column", help="label column; default: the first of label, category, intent")
    demo.add_argument("--limit", type=int, default=5000, help="rows to use after a seeded shuffle (default 5000)")
    demo.add_argument("--train-fraction", type=float, default=0.5, help="share of rows that train version 1 (default 0.5)")
    demo.add_argument("--rate", type=float, default=150.0, help="requests per second; 0 sends as fast as possible (default 150)")
    demo.add_argument("--feedback-fraction", type=float, default=1.0, help="share of requests that get feedback (default 1.0)")
    demo.add_argument("--feedback-delay", type=float, default=2.0, help="seconds from a request to its feedback (default 2)")
    demo.add_argument("--workers", type=int, default=1, help="inference worker processes (default 1)")
    demo.add_argument("--seed", type=int, default=0, help="shuffle and sampling seed (default 0)")
    demo.add_argument("--timeout", type=float, default=900.0, help="give up waiting for predictions after this many seconds (default 900)")
    demo.add_argument("--no-redact", action="store_true", help="send texts without PII redaction (only for data known to hold no PII)")
    demo.add_argument("--no-live", action="store_true", help="print progress lines instead of the live view")
    demo.add_argument("--summary-json", metavar="FILE", help="write the summary as JSON to FILE")
    demo.set_defaults(handler=cmd_demo)


@dataclass
class DemoRun:
    settings: Settings
    run_dir: Path
    stream: list[LabelledText]
    raw_texts: list[str]
    texts: list[str]
    feedback_ids: set[str] = field(default_factory=set)
    request_ids: list[str] = field(default_factory=list)
    first_sent_ms: int | None = None


def cmd_demo(args: argparse.Namespace) -> int:
    if not 0.0 < args.train_fraction < 1.0:
        raise ConfigError(f"--train-fraction must be between 0 and 1, got {args.train_fraction}")
    if not 0.0 <= args.feedback_fraction <= 1.0:
        raise ConfigError(f"--feedback-fraction must be between 0 and 1, got {args.feedback_fraction}")
    if args.workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {args.workers}")
    if args.limit is not None and args.limit < 10:
        raise ConfigError(f"--limit must be at least 10 rows, got {args.limit}")
    # SIGTERM unwinds like Ctrl-C, so the processes and the stack this demo started are stopped.
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    base = load_settings(args.config)
    summary = run_demo(base, args)
    text = json.dumps(summary, indent=2, sort_keys=True)
    print(text)
    print(
        f"{summary['distinct_predicted']} of {summary['requests']} requests predicted; online accuracy "
        f"{_percent(summary['online_accuracy'])} from {summary['joined']} joined feedback, offline accuracy of the "
        f"same model on the same texts {_percent(summary['offline_accuracy'])}"
    )
    if args.summary_json:
        Path(args.summary_json).write_text(text + "\n", encoding="utf-8")
    return 0 if summary["distinct_predicted"] == summary["requests"] else 1


def _raise_keyboard_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def run_demo(base: Settings, args: argparse.Namespace) -> dict[str, Any]:
    from driftloop.bootstrap import offline_accuracy, train_initial
    from driftloop.infra.stack import EmbeddedStack
    from driftloop.infra.topics import create_topics
    from driftloop.model import save_artifact

    run_id = time.strftime("%Y%m%d%H%M%S") + uuid.uuid4().hex[:4]
    # Each run gets its own topics and state folder (model store, logs), so runs never
    # collide; the embedded stack keeps the configured state folder.
    run_dir = Path(base.state_dir).resolve() / "demo" / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    settings = base.model_copy(update={"topic_prefix": f"{base.topic_prefix}demo-{run_id}.", "state_dir": run_dir})

    rows = _load_rows(args)
    stack = EmbeddedStack(base) if settings.embedded else None
    started_stack = False
    if stack is not None and not (stack.broker_healthy(1.0) and stack.redis_healthy(1.0)):
        for line in stack.up():
            print(line)
        started_stack = True

    processes = []
    try:
        create_topics(settings)
        cut = int(len(rows) * args.train_fraction)
        train_rows, stream_rows = rows[:cut], rows[cut:]
        print(f"training version 1 on {len(train_rows)} rows; streaming {len(stream_rows)} requests under prefix {settings.topic_prefix}")
        redact = None if args.no_redact else _redactor(settings)
        train_texts = _redacted([row.text for row in train_rows], redact)
        model = train_initial(settings, [LabelledText(t, r.label) for t, r in zip(train_texts, train_rows, strict=True)], seed=args.seed)
        artifact = run_dir / "model-v1"
        save_artifact(model.classifier, model.tokenizer, model.metadata, artifact)
        version = _register(settings, artifact)

        raw_texts = [row.text for row in stream_rows]
        # The offline comparison needs the texts the workers will see: redaction is
        # deterministic, so redacting here gives the same texts the ingress path sends.
        run = DemoRun(settings, run_dir, stream_rows, raw_texts, _redacted(raw_texts, redact))
        processes = _start_processes(settings, run_dir, args.workers)
        _wait_for_workers(settings, processes, args.workers, run_dir)
        started = time.time()
        monitor = _Monitor(settings, run, live_view=not args.no_live and sys.stdout.isatty(), processes=processes)
        try:
            _stream(run, args, monitor, redact)
            monitor.wait_for_completion(args.timeout, len(run.feedback_ids))
        finally:
            monitor.close()
        elapsed = time.time() - started

        offline_all = offline_accuracy(model, [LabelledText(t, r.label) for t, r in zip(run.texts, stream_rows, strict=True)], settings.forward_batch_size)
        feedback_rows = [LabelledText(t, r.label) for t, r, rid in zip(run.texts, stream_rows, run.request_ids, strict=True) if rid in run.feedback_ids]
        offline_feedback = offline_accuracy(model, feedback_rows, settings.forward_batch_size)
        return monitor.summary(elapsed, offline_all, offline_feedback, version, args)
    finally:
        from driftloop.testing.services import stop_process

        for process in processes:
            stop_process(process)
        if started_stack and stack is not None:
            for line in stack.down():
                print(line)


def _load_rows(args: argparse.Namespace) -> list[LabelledText]:
    rows = load_builtin(args.dataset) if args.dataset else read_labelled(args.data, args.text_column, args.label_column)
    rows = shuffled(rows, args.seed)
    if args.limit:
        rows = rows[: args.limit]
    if len(rows) < 10:
        raise ConfigError(f"the demo needs at least 10 rows, got {len(rows)}")
    return rows


def _redactor(settings: Settings):
    try:
        from driftloop.redaction.redactor import Redactor
    except ImportError:
        logger.warning("PII redaction is not available; texts are sent as they are")
        return None
    return Redactor(settings.redaction)


def _redacted(texts: list[str], redactor) -> list[str]:
    if redactor is None:
        return texts
    return [result.text for result in redactor.redact_batch(texts)]


def _register(settings: Settings, artifact: Path) -> int:
    from driftloop.registry.registry import ModelRegistry

    with ModelRegistry(settings) as registry:
        version = registry.register(artifact, data_window={"source": "demo"}).version
        registry.promote(version, reason="demo version 1")
    return version


def _start_processes(settings: Settings, run_dir: Path, workers: int):
    from driftloop.testing.services import spawn_driftloop, write_config

    config = write_config(settings, run_dir / "config.yaml")
    processes = [spawn_driftloop(["worker", "join"], config, run_dir / "join.log")]
    for index in range(workers):
        command = ["worker", "inference", "--worker-id", f"demo-worker-{index}"]
        processes.append(spawn_driftloop(command, config, run_dir / f"worker-{index}.log"))
    return processes


def _wait_for_workers(settings: Settings, processes, count: int, run_dir: Path, timeout: float = 120.0) -> None:
    """Wait until ``count`` workers report and together own every requests partition."""
    from driftloop.infra.clients import make_redis
    from driftloop.registry.heartbeat import read_workers

    client = make_redis(settings)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for process in processes:
            if process.poll() is not None:
                raise DriftloopError(f"pipeline process exited with code {process.returncode} during start-up; see the logs in {run_dir}")
        workers = [w for w in read_workers(client, settings.topic_prefix) if not w["stale"]]
        owned = {p for worker in workers for p in worker["partitions"]}
        if len(workers) >= count and len(owned) >= settings.partitions:
            return
        time.sleep(0.2)
    logger.warning("workers did not own every partition within %.0f s; streaming anyway", timeout)


def _stream(run: DemoRun, args: argparse.Namespace, monitor: _Monitor, redactor) -> None:
    """Send every request at the chosen rate and each sampled feedback after its delay.

    With redaction on, requests go through the ingress path (``RedactingProducer``), so the
    broker only ever receives redacted text.
    """
    from driftloop.producer import EventProducer, new_request_id, now_ms
    from driftloop.schemas.events import Feedback, InferenceRequest

    ingress = None
    if redactor is not None:
        from driftloop.redaction.ingress import RedactingProducer

        ingress = RedactingProducer(run.settings, redactor=redactor, batch_size=INGRESS_BATCH_SIZE)
    producer = EventProducer(run.settings)
    sampler = random.Random(args.seed)
    segments = ("retail", "business", "premium")
    due: list[tuple[float, Feedback]] = []
    interval = 1.0 / args.rate if args.rate > 0 else 0.0
    started = time.monotonic()
    for index, (raw_text, row) in enumerate(zip(run.raw_texts, run.stream, strict=True)):
        request_id = new_request_id()
        sent = now_ms()
        attributes = {"segment": segments[index % 3]}
        if ingress is not None:
            ingress.send_request(raw_text, request_id=request_id, attributes=attributes, event_time_ms=sent)
        else:
            producer.send_request(InferenceRequest(request_id=request_id, event_time_ms=sent, text=raw_text, attributes=attributes))
        run.request_ids.append(request_id)
        if run.first_sent_ms is None:
            run.first_sent_ms = sent
        if sampler.random() < args.feedback_fraction:
            run.feedback_ids.add(request_id)
            due.append((time.monotonic() + args.feedback_delay, Feedback(request_id=request_id, label=row.label, source="demo", event_time_ms=sent)))
        due = _send_due(producer, due)
        if interval:
            pause = started + (index + 1) * interval - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        monitor.refresh()
    if ingress is not None:
        ingress.flush()
    while due:
        due = _send_due(producer, due)
        monitor.refresh()
        time.sleep(0.05)
    producer.flush()


def _send_due(producer, due):
    now = time.monotonic()
    waiting = []
    for when, feedback in due:
        if when <= now:
            producer.send_feedback(feedback)
        else:
            waiting.append((when, feedback))
    return waiting


class _Monitor:
    """Follows predictions, dead letters and online metrics, and draws the live view."""

    def __init__(self, settings: Settings, run: DemoRun, live_view: bool, processes: list) -> None:
        from driftloop.infra.clients import make_redis
        from driftloop.infra.topics import DEAD_LETTER, PREDICTIONS
        from driftloop.testing.topics import TopicReader

        self.settings = settings
        self.run = run
        self.predictions = TopicReader(settings, settings.topic(PREDICTIONS))
        self.dead_letters = TopicReader(settings, settings.topic(DEAD_LETTER))
        self.redis = make_redis(settings)
        self.distinct: set[str] = set()
        self.latencies: list[float] = []
        self.versions: set[int] = set()
        self.first_prediction_ms: int | None = None
        self.last_prediction_ms: int | None = None
        self._seen = 0
        self._last_draw = 0.0
        self._started = time.monotonic()
        self._live = None
        self.live_view = live_view
        self.processes = processes

    def refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_draw < 0.5:
            return
        self._last_draw = now
        self._check_processes()
        self.predictions._poll()
        self.dead_letters._poll()
        for message in self.predictions.records[self._seen :]:
            prediction = json.loads(message.value())
            self.distinct.add(prediction["request_id"])
            self.latencies.append(prediction["predicted_at_ms"] - prediction["event_time_ms"])
            self.versions.add(prediction["model_version"])
            stamp = prediction["predicted_at_ms"]
            self.first_prediction_ms = stamp if self.first_prediction_ms is None else min(self.first_prediction_ms, stamp)
            self.last_prediction_ms = stamp if self.last_prediction_ms is None else max(self.last_prediction_ms, stamp)
        self._seen = len(self.predictions.records)
        self._draw()

    def _check_processes(self) -> None:
        for process in self.processes:
            if process.poll() is not None:
                raise DriftloopError(
                    f"pipeline process {' '.join(process.args[3:])} exited with code {process.returncode}; "
                    f"see the logs in {self.run.run_dir}"
                )

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
        self.predictions.close()
        self.dead_letters.close()

    def online(self) -> dict[str, Any]:
        from driftloop.streams.metrics import read_metrics

        return read_metrics(self.redis, self.settings.topic_prefix)

    def wait_for_completion(self, timeout: float, feedback_expected: int) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.refresh(force=True)
            joined = self.online()["join"].get("joined", 0)
            if len(self.distinct) >= len(self.run.request_ids) and joined >= feedback_expected:
                break
            time.sleep(0.5)
        time.sleep(self.settings.metrics_interval_s * 2)
        self.refresh(force=True)

    def _draw(self) -> None:
        elapsed = max(1e-6, time.monotonic() - self._started)
        online = self.online()
        accuracy = _online_accuracy(online)
        if self.live_view:
            self._draw_table(elapsed, online, accuracy)
            return
        line = (
            f"requests {len(self.run.request_ids)} ({len(self.run.request_ids) / elapsed:.0f}/s)  "
            f"predicted {len(self.distinct)} ({len(self.distinct) / elapsed:.0f}/s)  "
            f"p50/p95/p99 {_percentiles_text(self.latencies)} ms  "
            f"lag {len(self.run.request_ids) - len(self.distinct)}  "
            f"joined {online['join'].get('joined', 0)}  online accuracy {'-' if accuracy is None else f'{100 * accuracy:.1f}%'}"
        )
        print(line, flush=True)

    def _draw_table(self, elapsed: float, online: dict[str, Any], accuracy: float | None) -> None:
        from rich.live import Live
        from rich.table import Table

        table = Table(title=f"driftloop demo  {self.settings.topic_prefix}  on {self.settings.bootstrap}")
        table.add_column("figure")
        table.add_column("value", justify="right")
        requests = len(self.run.request_ids)
        table.add_row("requests sent", f"{requests}  ({requests / elapsed:.0f}/s)")
        table.add_row("predictions", f"{len(self.distinct)}  ({len(self.distinct) / elapsed:.0f}/s)")
        table.add_row("end-to-end latency p50/p95/p99", f"{_percentiles_text(self.latencies)} ms")
        table.add_row("consumer lag (requests without prediction)", str(requests - len(self.distinct)))
        table.add_row("dead letters", str(len(self.dead_letters.records)))
        table.add_row("feedback joined", str(online["join"].get("joined", 0)))
        table.add_row("online accuracy", "-" if accuracy is None else f"{100 * accuracy:.1f}%")
        table.add_row("model versions seen", ", ".join(str(v) for v in sorted(self.versions)) or "-")
        if self._live is None:
            self._live = Live(table, refresh_per_second=4, transient=False)
            self._live.start()
        else:
            self._live.update(table)

    def summary(self, elapsed: float, offline_all, offline_feedback, version, args) -> dict[str, Any]:
        from driftloop.infra.topics import ALL_TOPICS

        online = self.online()
        # Throughput over the span from the first request sent to the last prediction made.
        span_s = ((self.last_prediction_ms or 0) - (self.run.first_sent_ms or 0)) / 1000
        throughput = len(self.distinct) / span_s if span_s > 0 else 0.0
        return {
            "requests": len(self.run.request_ids),
            "predictions": len(self.predictions.records),
            "distinct_predicted": len(self.distinct),
            "dlq": len(self.dead_letters.records),
            "feedback_sent": len(self.run.feedback_ids),
            "joined": online["join"].get("joined", 0),
            "online_accuracy": _online_accuracy(online),
            "offline_accuracy": offline_feedback,
            "offline_accuracy_all_streamed": offline_all,
            "throughput_per_s": round(throughput, 2),
            "latency_ms": _percentiles(self.latencies),
            "bootstrap": self.settings.bootstrap,
            "topic_prefix": self.settings.topic_prefix,
            "topics": [self.settings.topic(name) for name in ALL_TOPICS],
            "model_versions_seen": sorted(self.versions),
            "registered_version": version,
            "workers": args.workers,
            "elapsed_s": round(elapsed, 2),
            "prediction_span_s": round(span_s, 2),
            "redacted": not args.no_redact,
        }


def _online_accuracy(online: dict[str, Any]) -> float | None:
    joined = sum(v["joined"] for v in online["versions"].values())
    if not joined:
        return None
    correct = sum((v["accuracy"] or 0.0) * v["joined"] for v in online["versions"].values())
    return correct / joined


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None}
    ordered = sorted(values)

    def at(q: float) -> float:
        return float(ordered[min(len(ordered) - 1, int(q * len(ordered)))])

    return {"p50": at(0.50), "p95": at(0.95), "p99": at(0.99)}


def _percentiles_text(values: list[float]) -> str:
    figures = _percentiles(values)
    return "/".join("-" if figures[key] is None else f"{figures[key]:.0f}" for key in ("p50", "p95", "p99"))
