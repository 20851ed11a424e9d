"""Online metrics per model version, accumulated in memory and flushed to Redis.

Counts are kept as Redis hash fields under ``{prefix}metrics:v{version}`` so that
several join instances add up, and ``driftloop status`` reads one place.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import redis

class MetricsAccumulator:
    """Collects metric increments between flushes."""

    def __init__(self, prefix: str, group_attribute: str) -> None:
        self.prefix = prefix
        self.group_attribute = group_attribute
        self._versions: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self._join: dict[str, float] = defaultdict(float)

    def count(self, counter: str, amount: int = 1) -> None:
        self._join[counter] += amount

    def add_joined(self, version: int, predicted: str, label: str, confidence: float, attributes: dict[str, Any]) -> None:
        fields = self._versions[version]
        correct = predicted == label
        fields["n"] += 1
        fields["correct"] += int(correct)
        fields["confidence_sum"] += confidence
        fields[f"support:{label}"] += 1
        fields[f"predicted:{predicted}"] += 1
        fields[f"true_positive:{label}"] += int(correct)
        group = attributes.get(self.group_attribute)
        if group is not None:
            fields[f"group_n:{group}"] += 1
            fields[f"group_correct:{group}"] += int(correct)
        self._join["joined"] += 1

    def add_prediction(self, version: int) -> None:
        self._versions[version]["predictions"] += 1

    def flush(self, client: redis.Redis) -> bool:
        """Add the collected increments to Redis; return False when there was nothing to add."""
        if not self._versions and not self._join:
            return False
        pipe = client.pipeline(transaction=False)
        for version, fields in self._versions.items():
            key = f"{self.prefix}metrics:v{version}"
            for name, amount in fields.items():
                pipe.hincrbyfloat(key, name, amount)
            pipe.sadd(f"{self.prefix}metrics:versions", version)
        for name, amount in self._join.items():
            pipe.hincrbyfloat(f"{self.prefix}metrics:join", name, amount)
        pipe.execute()
        self._versions.clear()
        self._join.clear()
        return True


def read_metrics(client: redis.Redis, prefix: str) -> dict[str, Any]:
    """Return the online metrics of every model version and the join counters."""
    versions = sorted(int(v) for v in client.smembers(f"{prefix}metrics:versions"))
    result: dict[str, Any] = {"versions": {}, "join": {}}
    for name, value in client.hgetall(f"{prefix}metrics:join").items():
        result["join"][name.decode()] = int(float(value))
    for version in versions:
        raw = {k.decode(): float(v) for k, v in client.hgetall(f"{prefix}metrics:v{version}").items()}
        result["versions"][str(version)] = summarize_version(raw)
    return result


def summarize_version(raw: dict[str, float]) -> dict[str, Any]:
    n = raw.get("n", 0.0)
    per_class: dict[str, dict[str, float]] = defaultdict(lambda: {"support": 0, "predicted": 0, "true_positive": 0})
    groups: dict[str, dict[str, float]] = defaultdict(lambda: {"n": 0, "correct": 0})
    for name, value in raw.items():
        kind, _, label = name.partition(":")
        if kind in ("support", "predicted", "true_positive"):
            per_class[label][kind] = int(value)
        elif kind == "group_n":
            groups[label]["n"] = int(value)
        elif kind == "group_correct":
            groups[label]["correct"] = int(value)
    return {
        "predictions": int(raw.get("predictions", 0)),
        "joined": int(n),
        "accuracy": (raw.get("correct", 0.0) / n) if n else None,
        "mean_confidence": (raw.get("confidence_sum", 0.0) / n) if n else None,
        "per_class": dict(sorted(per_class.items())),
        "per_group": {
            group: {**counts, "accuracy": counts["correct"] / counts["n"] if counts["n"] else None}
            for group, counts in sorted(groups.items())
        },
    }
