"""Hot-swap benchmark, in one process: swap latency and RSS over repeated promotions.

Starts an embedded broker and Redis on free loopback ports, registers two tiny
models, then promotes them in turn. For each swap it measures the time from the end
of ``promote()`` to ``poll()`` handing over the new version (pub/sub wake-up plus the
background load) and the process RSS once the replaced version is released.

Usage::

    python benchmarks/hot_swap.py --swaps 50 --json hot_swap.json

NOTE: this skeleton runs no inference traffic, so it measures swaps on an idle
worker. The end-to-end version under load is still to be written.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil
import torch

from driftloop.config import load_settings
from driftloop.infra.stack import EmbeddedStack, free_port
from driftloop.infra.topics import AUDIT, create_topics
from driftloop.registry.registry import ModelRegistry
from driftloop.registry.source import RegistryModelSource
from driftloop.testing.models import write_tiny_artifact

LABELS = ("billing", "bug", "praise")
REPORT_AFTER = (1, 10, 50)
WAIT_LIMIT_S = 120.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--swaps", type=int, default=50, help="Number of promotions to measure (default 50)")
    parser.add_argument("--reconcile-interval", type=float, default=5.0, help="Source reconciliation interval, seconds")
    parser.add_argument("--json", type=Path, metavar="OUT", help="Write the results to this JSON file")
    return parser.parse_args(argv)


def wait_until(condition, description: str) -> None:
    deadline = time.monotonic() + WAIT_LIMIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {WAIT_LIMIT_S:.0f} s waiting for {description}")
        time.sleep(0.001)


def measure_swaps(registry: ModelRegistry, source: RegistryModelSource, swaps: int) -> list[dict]:
    process = psutil.Process()
    results = []
    for number in range(1, swaps + 1):
        target = 2 if number % 2 == 1 else 1
        registry.promote(target, f"benchmark swap {number}", verify=False)
        promoted_at = time.perf_counter()
        model = None

        def handed_over() -> bool:
            nonlocal model
            model = source.poll()
            return model is not None

        wait_until(handed_over, f"version {target} to be handed over")
        latency_ms = (time.perf_counter() - promoted_at) * 1000.0
        wait_until(lambda: source.status().pending_release == 0, "the replaced version to be released")
        results.append({"swap": number, "version": model.version, "latency_ms": latency_ms, "rss_mib": process.memory_info().rss / 2**20})
    return results


def summarize(swaps: list[dict]) -> dict:
    latencies = [swap["latency_ms"] for swap in swaps]
    rss_after = {str(n): round(swaps[n - 1]["rss_mib"], 1) for n in REPORT_AFTER if n <= len(swaps)}
    return {
        "swaps": len(swaps),
        "latency_ms": {
            "median": statistics.median(latencies),
            "max": max(latencies),
            "min": min(latencies),
        },
        "rss_mib_after_swaps": rss_after,
    }


def run(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="driftloop-hot-swap-") as directory:
        root = Path(directory)
        settings = load_settings(None, state_dir=root / "state", broker_port=free_port(), redis_port=free_port(), partitions=1)
        stack = EmbeddedStack(settings)
        stack.up()
        try:
            create_topics(settings, (AUDIT,))
            with ModelRegistry(settings) as registry:
                for seed in (0, 1):
                    write_tiny_artifact(root / f"seed{seed}", LABELS, seed=seed)
                    registry.register(root / f"seed{seed}")
                registry.promote(1, "benchmark start")
                source = RegistryModelSource(settings, device="cpu", reconcile_interval_s=args.reconcile_interval)
                try:
                    swaps = measure_swaps(registry, source, args.swaps)
                finally:
                    source.close()
        finally:
            stack.down()
    return {
        "benchmark": "hot_swap_in_process",
        "machine": {"platform": platform.platform(), "cpus": psutil.cpu_count(), "torch": torch.__version__},
        "summary": summarize(swaps),
        "swaps": swaps,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.swaps < 1:
        print("--swaps must be at least 1", file=sys.stderr)
        return 2
    result = run(args)
    print(json.dumps(result["summary"], indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
