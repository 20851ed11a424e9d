"""PII redaction with Presidio, before anything is stored.

Modules: ``settings`` (the ``redaction:`` config section, cheap to import), ``redactor``
(``Redactor`` and ``RedactionResult``, the stage), ``scan`` (``scan_texts``, and
``scan_pipeline`` behind ``pii scan``), ``evaluate`` (precision and recall on labelled
data) and ``cli`` (the ``pii`` subcommands). The names below are imported on first use,
because importing Presidio and spaCy takes seconds.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY_NAMES = {
    "RedactionSettings": "driftloop.redaction.settings",
    "Redactor": "driftloop.redaction.redactor",
    "RedactionResult": "driftloop.redaction.redactor",
    "DetectedSpan": "driftloop.redaction.spans",
    "scan_texts": "driftloop.redaction.scan",
}

__all__ = sorted(_LAZY_NAMES)


def __getattr__(name: str) -> Any:
    if name not in _LAZY_NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY_NAMES[name]), name)
