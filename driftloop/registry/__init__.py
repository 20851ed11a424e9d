"""Model registry in Redis, the model store, and the worker-side source that hot-swaps versions.

Names are imported on first use, because most submodules import torch and the
command line should not pay for it before a handler runs.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "AuditPublisher": "driftloop.registry.audit",
    "KafkaAuditPublisher": "driftloop.registry.audit",
    "GuardrailPolicy": "driftloop.registry.guardrail",
    "Verdict": "driftloop.registry.guardrail",
    "decide": "driftloop.registry.guardrail",
    "run_guardrail": "driftloop.registry.guardrail",
    "WorkerHeartbeat": "driftloop.registry.heartbeat",
    "read_workers": "driftloop.registry.heartbeat",
    "ChampionChange": "driftloop.registry.records",
    "ModelVersion": "driftloop.registry.records",
    "RegistryKeys": "driftloop.registry.records",
    "Status": "driftloop.registry.records",
    "ModelRegistry": "driftloop.registry.registry",
    "RegistryModelSource": "driftloop.registry.source",
    "SourceStatus": "driftloop.registry.source",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
