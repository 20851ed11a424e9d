"""Creating version 1: a classifier head trained on a labelled file."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from driftloop.config import Settings
from driftloop.datasets import LabelledText, read_labelled, shuffled
from driftloop.errors import ConfigError
from driftloop.model import ServingModel, default_base_model, new_classifier, save_artifact, select_device
from driftloop.training import FitOptions, fit

logger = logging.getLogger(__name__)


def train_initial(
    settings: Settings, rows: list[LabelledText], *, train_layers: int = 0, seed: int = 0
) -> ServingModel:
    """Fit a new classifier on ``rows`` over the configured base encoder."""
    if not rows:
        raise ConfigError("no training rows")
    labels = sorted({row.label for row in rows})
    base = settings.base_model or default_base_model()
    classifier, tokenizer, metadata = new_classifier(base, labels, settings.max_length)
    device = select_device(settings.device)
    options = FitOptions(train_layers=train_layers, max_length=settings.max_length, seed=seed)
    index = {label: i for i, label in enumerate(labels)}
    fit(classifier, tokenizer, [row.text for row in rows], [index[row.label] for row in rows], options, device)
    return ServingModel(classifier, tokenizer, metadata, device=device, precision=settings.precision, version=1)


def offline_accuracy(model: ServingModel, rows: list[LabelledText], batch_size: int = 64) -> float | None:
    if not rows:
        return None
    predictions = model.predict_bucketed([row.text for row in rows], batch_size)
    return sum(p.label == row.label for p, row in zip(predictions, rows, strict=True)) / len(rows)


def create_initial_model(
    settings: Settings,
    *,
    data: str,
    out: Path,
    text_column: str | None = None,
    label_column: str | None = None,
    limit: int | None = None,
    train_fraction: float = 0.8,
    train_layers: int = 0,
    seed: int = 0,
    register: bool = True,
) -> dict[str, Any]:
    """Train version 1 on part of ``data``, save it to ``out`` and register it as champion."""
    if not 0.0 < train_fraction <= 1.0:
        raise ConfigError(f"--train-fraction must be in (0, 1], got {train_fraction}")
    rows = shuffled(read_labelled(data, text_column, label_column), seed)
    if limit is not None:
        rows = rows[:limit]
    cut = max(1, int(len(rows) * train_fraction))
    train_rows, held_out = rows[:cut], rows[cut:]
    model = train_initial(settings, train_rows, train_layers=train_layers, seed=seed)
    sha256 = save_artifact(model.classifier, model.tokenizer, model.metadata, out)
    report: dict[str, Any] = {
        "artifact": str(out),
        "sha256": sha256,
        "labels": len(model.labels),
        "train_rows": len(train_rows),
        "held_out_rows": len(held_out),
        "held_out_accuracy": offline_accuracy(model, held_out, settings.forward_batch_size),
    }
    if register:
        report["version"] = register_initial(settings, out, report)
    return report


def register_initial(settings: Settings, artifact: Path, report: dict[str, Any]) -> int:
    """Register the artifact as a version and make it champion."""
    from driftloop.registry.registry import ModelRegistry

    with ModelRegistry(settings) as registry:
        version = registry.register(
            artifact,
            metrics={"held_out_accuracy": report["held_out_accuracy"]},
            data_window={"source": "model init", "train_rows": report["train_rows"]},
        )
        registry.promote(version.version, reason="model init")
    return version.version
