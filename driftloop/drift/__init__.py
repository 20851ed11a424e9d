"""Drift detection on the streams of a model version, the training trigger, the replay buffer and the promotion gate.

The names below load their module on first use, because ``driftloop.config`` imports
:mod:`driftloop.drift.settings` and should not pay for importing river and scipy.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "RiverDetector": "adapter",
    "build_river_detector": "adapter",
    "standalone_adwin_delay": "baseline",
    "DriftEvent": "events",
    "Episode": "events",
    "ExampleWindow": "events",
    "TrainingJob": "events",
    "TextFeatures": "features",
    "text_features": "features",
    "GateDecision": "gate",
    "GateSlice": "gate",
    "evaluate_gate": "gate",
    "LabelShiftTest": "label_shift",
    "DriftMonitor": "monitor",
    "MonitoredExample": "monitor",
    "build_detector": "monitor",
    "ReplayBuffer": "reservoir",
    "TrainingSet": "reservoir",
    "build_training_set": "reservoir",
    "DriftSettings": "settings",
    "InMemoryJobLock": "trigger",
    "JobLock": "trigger",
    "TriggerPolicy": "trigger",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module_name}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
