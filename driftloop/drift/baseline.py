"""Figures for the detection benchmark: plain river ADWIN delay and stationary false alarms.

``python -m driftloop.drift.baseline [SEEDS [EXAMPLES]]`` prints the false alarms of the
default detectors on EXAMPLES (default 10,000) examples of
:func:`driftloop.drift.synthetic.stationary_examples`, for seeds 0 to SEEDS - 1
(default 10).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

from river import drift

from driftloop.drift.monitor import DriftMonitor
from driftloop.drift.settings import DriftSettings
from driftloop.drift.synthetic import stationary_examples


def standalone_adwin_delay(error_stream: Iterable[float], change_position: int, **params: object) -> int | None:
    """Return the examples from ``change_position`` to the first alarm of a plain river ADWIN.

    The ADWIN is built with ``params`` (river's constructor arguments) and sees every
    value, with no filtering. Alarms before the change are ignored. Returns None when no
    alarm comes at or after the change. 0 means the alarm came on the first changed value.
    """
    detector = drift.ADWIN(**params)
    for position, value in enumerate(error_stream):
        detector.update(value)
        if detector.drift_detected and position >= change_position:
            return position - change_position
    return None


def count_stationary_alarms(settings: DriftSettings, seeds: Iterable[int], n_examples: int) -> dict[str, list[int]]:
    """Return, per 'detector on signal', the alarms on a stationary synthetic stream of each seed."""
    counts: dict[str, list[int]] = {}
    for seed in seeds:
        monitor = DriftMonitor(settings, model_version=0)
        for example in stationary_examples(n_examples, seed):
            monitor.update(example)
        for detector in monitor.detector_counts():
            counts.setdefault(f"{detector.detector} on {detector.signal}", []).append(detector.n_detections)
    return counts


def main(argv: list[str]) -> None:
    n_seeds = int(argv[0]) if argv else 10
    n_examples = int(argv[1]) if len(argv) > 1 else 10_000
    counts = count_stationary_alarms(DriftSettings(), range(n_seeds), n_examples=n_examples)
    print(f"alarms on {n_examples:,} stationary examples, seeds 0..{n_seeds - 1}")
    for label, per_seed in counts.items():
        print(f"{label:30} total {sum(per_seed):3d}, seeds with an alarm {sum(1 for n in per_seed if n)}")


if __name__ == "__main__":
    main(sys.argv[1:])
