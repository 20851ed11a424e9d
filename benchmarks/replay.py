"""Replay benchmark: record a pipeline run of 10,000 events, replay it against two versions.

Steps, all on one embedded stack on loopback:

1. Train two tiny models (a frozen 2-layer encoder with hidden size 32 and a trained
   head, seeds 0 and 1) on banking77 queries that are not streamed.
2. Run a source pipeline: an inference worker serving version 1, fed with requests
   and feedback from ``EventProducer`` on banking77 queries (half the events each).
3. Record its requests, feedback and predictions with ``record``.
4. Replay the recording as fast as possible into lanes for versions 1 and 2, then
   once more into version 1 alone, and compare the two version-1 lanes.
5. Measure the replay's publisher alone, with no worker or join reading, five times
   into fresh topics, and a baseline in the same run: a plain confluent-kafka
   producer publishing the same keys and values to the same number of topics.

    python benchmarks/replay.py --json OUT [--events 10000]

``replay_events_per_s`` is recorded events published per second, each into every
lane, from the first produce call until the broker acknowledged the last record. In a
replay the lanes' workers, joins and the broker run at the same time and share the
cores, so this figure varies with the load of the machine. The output includes the
load averages before and after the run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import machine_info  # noqa: E402
from confluent_kafka import Producer  # noqa: E402

from driftloop.config import Settings, load_settings  # noqa: E402
from driftloop.datasets import read_labelled, shuffled  # noqa: E402
from driftloop.infra.stack import EmbeddedStack, free_port  # noqa: E402
from driftloop.infra.topics import FEEDBACK, PREDICTIONS, REQUESTS, create_topics  # noqa: E402
from driftloop.model import load_artifact  # noqa: E402
from driftloop.producer import EventProducer, now_ms  # noqa: E402
from driftloop.replay.collector import LaneCollector  # noqa: E402
from driftloop.replay.lanes import resolve_models  # noqa: E402
from driftloop.replay.publisher import Publisher  # noqa: E402
from driftloop.replay.reader import read_recording  # noqa: E402
from driftloop.replay.record import record  # noqa: E402
from driftloop.replay.runner import ReplayOptions, run_replay  # noqa: E402
from driftloop.schemas.events import Feedback, InferenceRequest  # noqa: E402
from driftloop.testing.plugin import train_tiny_artifact  # noqa: E402
from driftloop.workers.inference import InferenceWorker  # noqa: E402
from driftloop.workers.model_source import FixedModel  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "banking77" / "train.csv"
TRAINING_ROWS = 3000
SOURCE_TIMEOUT_S = 600.0


def run_source_pipeline(settings: Settings, model_dir: Path, rows, requests: int) -> float:
    """Serve version 1 on ``requests`` requests with feedback; return seconds until every prediction arrived."""
    create_topics(settings, (REQUESTS, FEEDBACK, PREDICTIONS, "dlq"))
    worker = InferenceWorker(settings, FixedModel(load_artifact(model_dir, version=1)), worker_id="bench-source")
    thread = threading.Thread(target=worker.run, name="bench-source-worker")
    thread.start()
    collector = LaneCollector(settings)
    started = time.monotonic()
    try:
        producer = EventProducer(settings)
        segments = ("retail", "business", "premium")
        for index, row in enumerate(rows[:requests]):
            request_id = f"bench-{index:06d}"
            sent = now_ms()
            producer.send_request(
                InferenceRequest(
                    request_id=request_id,
                    event_time_ms=sent,
                    text=row.text,
                    attributes={"segment": segments[index % 3]},
                )
            )
            producer.send_feedback(Feedback(request_id=request_id, label=row.label, source="bench", event_time_ms=sent))
        producer.flush()
        deadline = started + SOURCE_TIMEOUT_S
        while len(collector.predictions) < requests and time.monotonic() < deadline:
            collector.poll(0.5)
        if len(collector.predictions) < requests:
            raise RuntimeError(
                f"the source worker predicted {len(collector.predictions)} of {requests} requests in time"
            )
        return time.monotonic() - started
    finally:
        collector.close()
        worker.stop()
        thread.join(60)


def publisher_only_rate(settings: Settings, recording, lanes: int, repeats: int = 5) -> dict:
    """Publish the recording into ``lanes`` fresh lanes with the replay's publisher, ``repeats`` times."""
    rates = []
    for repeat in range(repeats):
        lane_settings = [
            settings.model_copy(update={"topic_prefix": f"{settings.topic_prefix}{repeat}.v{lane}."})
            for lane in range(lanes)
        ]
        for lane in lane_settings:
            create_topics(lane, (REQUESTS, FEEDBACK))
        stats = Publisher(settings, lane_settings).publish(recording.events)
        rates.append(stats.events_per_s)
    rates.sort()
    return {
        "repeats": repeats,
        "events_per_s_median": round(rates[len(rates) // 2], 1),
        "events_per_s_min": round(rates[0], 1),
    }


def raw_produce_rate(settings: Settings, recording, lanes: int) -> dict:
    """Publish the recording's replayed records to ``lanes`` scratch topic pairs with a plain producer."""
    lane_settings = [
        settings.model_copy(update={"topic_prefix": f"{settings.topic_prefix}raw{lane}."}) for lane in range(lanes)
    ]
    for lane in lane_settings:
        create_topics(lane, (REQUESTS, FEEDBACK))
    records = [r for r in recording.events if r.topic in (REQUESTS, FEEDBACK)]
    producer = Producer({"bootstrap.servers": settings.bootstrap, "linger.ms": 5})

    started = time.perf_counter()
    for index, record_ in enumerate(records):
        for lane in lane_settings:
            produce_with_room(producer, lane.topic(record_.topic), record_)
        if index % 1000 == 0:
            producer.poll(0)
    remaining = producer.flush(60)
    seconds = time.perf_counter() - started

    if remaining:
        raise RuntimeError(f"{remaining} baseline records not acknowledged within 60 s")
    return {
        "events": len(records),
        "records": len(records) * lanes,
        "seconds": round(seconds, 4),
        "events_per_s": round(len(records) / seconds, 1),
    }


def produce_with_room(producer: Producer, topic: str, record_, max_waits: int = 600) -> None:
    """Produce one record, waiting 50 ms at a time (30 s at most) while the producer's queue is full."""
    for _ in range(max_waits):
        try:
            producer.produce(topic, value=record_.value, key=record_.key)
            return
        except BufferError:
            producer.poll(0.05)
    raise RuntimeError(f"the baseline producer's queue stayed full for 30 s while publishing to {topic}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", required=True, metavar="OUT", help="file to write the figures to")
    parser.add_argument(
        "--events", type=int, default=10_000, help="events to record: half requests, half feedback (default 10000)"
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="banking77 train.csv")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    rows = shuffled(read_labelled(args.data), seed=0)
    requests = args.events // 2
    if len(rows) < TRAINING_ROWS + requests:
        parser.error(f"{args.data} has {len(rows)} rows; --events {args.events} needs {TRAINING_ROWS + requests}")
    train, stream = rows[:TRAINING_ROWS], rows[TRAINING_ROWS:]

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="driftloop-replay-bench-") as tmp:
        workdir = Path(tmp)
        base = load_settings(
            None,
            state_dir=workdir,
            broker_port=free_port(),
            redis_port=free_port(),
            session_timeout_ms=2000,
            partitions=4,
        )
        stack = EmbeddedStack(base)
        stack.up()
        try:
            figures = run(base, workdir, train, stream, requests)
        finally:
            stack.down()
    figures["machine"] = machine_info()
    figures["load_average_1min"] = {"before": round(load_before[0], 2), "after": round(os.getloadavg()[0], 2)}
    text = json.dumps(figures, indent=2, sort_keys=True)
    Path(args.json).write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


def run(base: Settings, workdir: Path, train, stream, requests: int) -> dict:
    texts, labels = [row.text for row in train], [row.label for row in train]
    models = {
        version: train_tiny_artifact(workdir / f"v{version}", texts, labels, seed=version - 1) for version in (1, 2)
    }

    source = base.model_copy(update={"topic_prefix": "bench-source."})
    source_seconds = run_source_pipeline(source, models[1], stream, requests)

    capture = workdir / "capture.jsonl.gz"
    started = time.monotonic()
    header = record(source, capture, topics=[REQUESTS, FEEDBACK, PREDICTIONS])
    record_seconds = time.monotonic() - started
    started = time.monotonic()
    recording = read_recording(capture)
    validate_seconds = time.monotonic() - started

    replays = base.model_copy(update={"topic_prefix": "bench-replay."})
    options = ReplayOptions(speed=None, timeout_s=SOURCE_TIMEOUT_S)
    both = run_replay(replays, recording, resolve_models(replays, artifacts=sorted(models.items())), options)
    again = run_replay(replays, recording, resolve_models(replays, artifacts=[(1, models[1])]), options)
    publisher_only = publisher_only_rate(
        base.model_copy(update={"topic_prefix": "bench-publisher."}), recording, lanes=2
    )
    baseline = raw_produce_rate(base.model_copy(update={"topic_prefix": "bench-baseline."}), recording, lanes=2)

    first, second = both.predictions("v1"), again.predictions("v1")
    deterministic = first.keys() == second.keys() and all(first[r].label == second[r].label for r in first)
    confidence_gap = max(abs(first[r].confidence - second[r].confidence) for r in first) if first else None
    replay = both.report["replay"]
    return {
        "events": replay["events_published"],
        "requests": requests,
        "recorded": dict(header.counts),
        "recording_bytes": capture.stat().st_size,
        "source_pipeline_seconds": round(source_seconds, 2),
        "record_seconds": round(record_seconds, 2),
        "validate_seconds": round(validate_seconds, 2),
        "lanes": 2,
        "replay_events_per_s": replay["events_per_s"],
        "replay_records_per_s": replay["records_per_s"],
        "replay_publish_seconds": replay["publish_seconds"],
        "replay_seconds": replay["seconds"],
        "replay_predictions_seconds": replay["predictions_seconds"],
        "replay_complete": both.outcome.complete and again.outcome.complete,
        "single_lane_replay_events_per_s": again.report["replay"]["events_per_s"],
        "single_lane_replay_seconds": again.report["replay"]["seconds"],
        "publisher_only": publisher_only,
        "deterministic": deterministic,
        "max_confidence_difference": confidence_gap,
        "label_flips": both.report["comparisons"][0]["label_flips"],
        "flips_compared": both.report["comparisons"][0]["compared"],
        "matches_recorded_predictions": len(both.label_flips("v1", "recorded")) == 0,
        "accuracy": {lane: both.accuracy(lane) for lane in both.lane_names},
        "baseline_raw_produce": baseline,
        "replay_to_baseline_ratio": round(replay["events_per_s"] / baseline["events_per_s"], 3),
        "publisher_only_to_baseline_ratio": round(publisher_only["events_per_s_median"] / baseline["events_per_s"], 3),
    }


if __name__ == "__main__":
    sys.exit(main())
