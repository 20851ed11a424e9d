"""Model cards: a Markdown and a JSON summary written next to each stored version."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from driftloop.artifact_digest import CARD_JSON, CARD_MARKDOWN
from driftloop.registry.records import ModelVersion


def card_data(record: ModelVersion) -> dict[str, Any]:
    """Return the card's content. The status is left out because it changes after registration."""
    data = record.to_json()
    for changing in ("status", "status_reason", "updated_at_ms"):
        data.pop(changing)
    # The per-file SHA-256 list stays in the registry record only. Presidio's URL
    # recognizer reports its file names as URLs, so `driftloop pii scan` would flag every card.
    data.pop("files")
    return data


def write_model_card(record: ModelVersion, directory: Path) -> tuple[Path, Path]:
    """Write the Markdown and JSON cards into ``directory`` and return their paths.

    The cards are left out of the artifact SHA-256, because they are written after it
    is computed and contain it.
    """
    data = card_data(record)
    json_path = directory / CARD_JSON
    json_path.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")
    markdown_path = directory / CARD_MARKDOWN
    markdown_path.write_text(render_markdown(record), encoding="utf-8")
    return markdown_path, json_path


def render_markdown(record: ModelVersion) -> str:
    created = datetime.fromtimestamp(record.created_at_ms / 1000, tz=UTC).isoformat(timespec="seconds")
    lines = [
        f"# Model version {record.version}",
        "",
        f"- Parent version: {record.parent if record.parent is not None else 'none'}",
        f"- Created: {created}",
        f"- Architecture: `{record.architecture}`",
        f"- Artifact SHA-256 (all files except the model cards): `{record.sha256}`",
        f"- Labels ({len(record.labels)}): {', '.join(record.labels)}",
        "",
        "## Training data window",
        "",
        *_mapping_lines(record.data_window),
        "",
        "## Metrics",
        "",
        *_mapping_lines(record.metrics),
        "",
        "## Metrics per group",
        "",
        *_group_table(record.group_metrics),
        "",
        "## Gate decision",
        "",
        *_mapping_lines(record.gate),
        "",
        "## Redaction settings",
        "",
        *_mapping_lines(record.redaction),
        "",
    ]
    return "\n".join(lines)


def _mapping_lines(values: dict[str, Any]) -> list[str]:
    if not values:
        return ["(none recorded)"]
    return [f"- {key}: {_format(value)}" for key, value in sorted(values.items())]


def _group_table(groups: dict[str, Any]) -> list[str]:
    if not groups:
        return ["(none recorded)"]
    columns = sorted({name for metrics in groups.values() if isinstance(metrics, dict) for name in metrics})
    lines = ["| group | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for group, metrics in sorted(groups.items()):
        metrics = metrics if isinstance(metrics, dict) else {"value": metrics}
        cells = [_format(metrics.get(column, "")) for column in columns]
        lines.append(f"| {group} | " + " | ".join(cells) + " |")
    return lines


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, dict | list):
        return "`" + json.dumps(value, sort_keys=True) + "`"
    return str(value)
