"""Labelled text files: CSV or JSON Lines with a text and a label column."""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from driftloop.errors import ConfigError

TEXT_COLUMNS = ("text", "full_text", "sentence", "utterance")
LABEL_COLUMNS = ("label", "category", "intent")
BUILTIN_DATASETS = {"banking77": ("PolyAI/banking77", "text", "label")}


@dataclass(frozen=True)
class LabelledText:
    text: str
    label: str


def read_labelled(path: str | Path, text_column: str | None = None, label_column: str | None = None) -> list[LabelledText]:
    """Read every row of a CSV or JSONL file; banking77's ``text``/``category`` need no flags."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"data file not found: {path}")
    rows = list(_rows(path))
    if not rows:
        raise ConfigError(f"data file {path} has no rows")
    text_key = text_column or _pick(rows[0], TEXT_COLUMNS, path, "text", "--text-column")
    label_key = label_column or _pick(rows[0], LABEL_COLUMNS, path, "label", "--label-column")
    result = []
    for number, row in enumerate(rows, start=1):
        if text_key not in row or label_key not in row:
            raise ConfigError(f"{path} row {number}: missing column {text_key!r} or {label_key!r}")
        result.append(LabelledText(str(row[text_key]), str(row[label_key])))
    return result


def load_builtin(name: str) -> list[LabelledText]:
    """Load a public dataset by name with Hugging Face ``datasets`` (needs network access)."""
    if name not in BUILTIN_DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; built-in names: {sorted(BUILTIN_DATASETS)}")
    try:
        import datasets
    except ImportError as exc:
        raise ConfigError("--dataset needs the `datasets` package: pip install 'driftloop[hub]'") from exc
    hub_id, text_key, label_key = BUILTIN_DATASETS[name]
    split = datasets.load_dataset(hub_id, split="train")
    names = split.features[label_key].names
    return [LabelledText(row[text_key], names[row[label_key]]) for row in split]


def shuffled(rows: list[LabelledText], seed: int) -> list[LabelledText]:
    copy = list(rows)
    random.Random(seed).shuffle(copy)
    return copy


def _rows(path: Path) -> Iterator[dict]:
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ConfigError(f"{path} line {number} is not valid JSON: {exc.msg}") from exc
                if not isinstance(row, dict):
                    raise ConfigError(f"{path} line {number}: expected a JSON object")
                yield row
        return
    with path.open(encoding="utf-8", newline="") as handle:
        yield from csv.DictReader(handle)


def _pick(row: dict, candidates: tuple[str, ...], path: Path, what: str, flag: str) -> str:
    for name in candidates:
        if name in row:
            return name
    raise ConfigError(f"{path}: no {what} column among {sorted(row)}; name it with {flag}")
