"""Inference throughput: model-only batched, batch size 1, and the worker through the broker.

All figures come from one run on the same texts: banking77 queries (uniform, short)
and a mixed-length set where every fifth text is several queries joined together.

    python benchmarks/inference_throughput.py --json OUT [--texts 2000]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import machine_info  # noqa: E402

from driftloop.config import load_settings  # noqa: E402
from driftloop.datasets import read_labelled, shuffled  # noqa: E402
from driftloop.infra.stack import EmbeddedStack, free_port  # noqa: E402
from driftloop.infra.topics import create_topics  # noqa: E402
from driftloop.model import ServingModel, default_base_model, new_classifier, select_device  # noqa: E402
from driftloop.producer import EventProducer, now_ms  # noqa: E402
from driftloop.schemas.events import InferenceRequest  # noqa: E402
from driftloop.workers.inference import InferenceWorker  # noqa: E402
from driftloop.workers.model_source import FixedModel  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "banking77" / "train.csv"


def texts_per_s(count: int, seconds: float) -> float:
    return round(count / seconds, 1) if seconds > 0 else 0.0


def time_batched(model: ServingModel, texts: list[str], batch_size: int) -> float:
    started = time.perf_counter()
    model.predict_bucketed(texts, batch_size)
    return texts_per_s(len(texts), time.perf_counter() - started)


def time_batch1(model: ServingModel, texts: list[str]) -> float:
    started = time.perf_counter()
    for text in texts:
        model.predict([text])
    return texts_per_s(len(texts), time.perf_counter() - started)


def time_worker(model: ServingModel, texts: list[str], batch_size: int, state_dir: Path) -> float:
    """Return requests/s from the worker's first assignment to the last prediction acknowledged."""
    settings = load_settings(
        None, state_dir=state_dir, broker_port=free_port(), redis_port=free_port(),
        session_timeout_ms=2000, partitions=2, forward_batch_size=batch_size,
    )
    stack = EmbeddedStack(settings)
    stack.up()
    try:
        create_topics(settings)
        producer = EventProducer(settings)
        for index, text in enumerate(texts):
            producer.send_request(InferenceRequest(request_id=f"r{index}", event_time_ms=now_ms(), text=text))
        producer.flush()
        worker = InferenceWorker(settings, FixedModel(model))
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 120
        while not worker.assigned_partitions and time.monotonic() < deadline:
            time.sleep(0.01)
        started = time.perf_counter()
        while worker.processed < len(texts) and time.monotonic() < deadline + 600:
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
        worker.stop()
        thread.join(60)
        return texts_per_s(worker.processed, elapsed)
    finally:
        stack.down()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", metavar="OUT", help="write the figures as JSON to OUT")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="banking77 train.csv")
    parser.add_argument("--texts", type=int, default=2000, help="texts per measurement (default 2000)")
    parser.add_argument("--batch1-texts", type=int, default=400, help="texts for the batch size 1 runs (default 400)")
    parser.add_argument("--batch-size", type=int, default=64, help="texts per forward pass (default 64)")
    args = parser.parse_args()

    rows = shuffled(read_labelled(args.data), seed=0)[: args.texts * 2]
    uniform = [row.text for row in rows[: args.texts]]
    # Every fifth text is eight queries joined: up to the 128-token limit.
    mixed = [" ".join(r.text for r in rows[i : i + 8]) if i % 5 == 0 else rows[i].text for i in range(args.texts)]

    labels = sorted({row.label for row in rows})
    classifier, tokenizer, metadata = new_classifier(default_base_model(), labels)
    model = ServingModel(classifier, tokenizer, metadata, device=select_device("auto"), version=1)
    model.predict_bucketed(uniform[:128], args.batch_size)  # warm-up

    figures = {
        "model_only_texts_per_s": time_batched(model, uniform, args.batch_size),
        "batch1_texts_per_s": time_batch1(model, uniform[: args.batch1_texts]),
        "mixed_batched_texts_per_s": time_batched(model, mixed, args.batch_size),
        "mixed_batch1_texts_per_s": time_batch1(model, mixed[: args.batch1_texts]),
    }
    with tempfile.TemporaryDirectory() as state_dir:
        figures["worker_texts_per_s"] = time_worker(model, uniform, args.batch_size, Path(state_dir))
    figures["ratios"] = {
        "worker_over_model_only": round(figures["worker_texts_per_s"] / figures["model_only_texts_per_s"], 3),
        "batched_over_batch1": round(figures["model_only_texts_per_s"] / figures["batch1_texts_per_s"], 3),
        "mixed_batched_over_batch1": round(figures["mixed_batched_texts_per_s"] / figures["mixed_batch1_texts_per_s"], 3),
    }
    figures["texts"] = args.texts
    figures["batch_size"] = args.batch_size
    figures["machine"] = machine_info()
    text = json.dumps(figures, indent=2)
    print(text)
    print(
        f"worker/model-only {figures['ratios']['worker_over_model_only']:.2f}x, "
        f"batched/batch1 {figures['ratios']['batched_over_batch1']:.2f}x, "
        f"mixed batched/batch1 {figures['ratios']['mixed_batched_over_batch1']:.2f}x"
    )
    if args.json:
        Path(args.json).write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
