"""Model version records and the Redis keys of the registry.

Every key lives under the pipeline's topic prefix, so several pipelines (and tests)
can share one Redis::

    {prefix}registry:next_version   counter that numbers new versions (INCR)
    {prefix}registry:versions       sorted set of every registered version
    {prefix}registry:v{n}           hash with the record of version n
    {prefix}registry:champion       the champion's version number
    {prefix}registry:champions      list of champions in promotion order, for rollback
    {prefix}registry:history        list of champion changes as JSON, oldest first
    {prefix}registry:audit_outbox   audit events written but not yet acknowledged by Kafka

The pub/sub channel ``{prefix}registry:champion`` carries the new champion's version
number after every change. It only wakes model sources: the champion key is the truth.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from driftloop.errors import RegistryError


class Status(StrEnum):
    """Lifecycle of a model version."""

    CANDIDATE = "candidate"
    CHAMPION = "champion"
    RETIRED = "retired"
    REJECTED = "rejected"


class RegistryKeys:
    """Names of the registry's Redis keys and pub/sub channel under one prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        base = f"{prefix}registry:"
        self.next_version = base + "next_version"
        self.versions = base + "versions"
        self.champion = base + "champion"
        self.champions = base + "champions"
        self.history = base + "history"
        self.audit_outbox = base + "audit_outbox"
        self.channel = base + "champion"

    def version(self, number: int) -> str:
        return f"{self.prefix}registry:v{number}"


# Fields stored as JSON text in the version hash.
_JSON_FIELDS = ("labels", "data_window", "metrics", "group_metrics", "gate", "redaction")


@dataclass(frozen=True)
class ModelVersion:
    """The registry's record of one model version.

    ``sha256`` is the artifact SHA-256 over all files of the stored version (see
    :func:`driftloop.artifact_digest.digest_artifact`). ``files`` maps each file to
    its own SHA-256, so a failed check can name the file. Records written by driftloop
    versions that hashed only the weights have no ``files``.
    """

    version: int
    status: Status
    sha256: str
    path: Path
    architecture: str
    labels: tuple[str, ...]
    created_at_ms: int
    updated_at_ms: int
    parent: int | None = None
    data_window: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    group_metrics: dict[str, Any] = field(default_factory=dict)
    gate: dict[str, Any] = field(default_factory=dict)
    redaction: dict[str, Any] = field(default_factory=dict)
    status_reason: str = ""
    files: dict[str, str] = field(default_factory=dict)

    def to_hash(self) -> dict[str, str]:
        """Return the record as Redis hash fields, all strings."""
        fields = {
            "version": str(self.version),
            "status": self.status.value,
            "sha256": self.sha256,
            "path": str(self.path),
            "architecture": self.architecture,
            "created_at_ms": str(self.created_at_ms),
            "updated_at_ms": str(self.updated_at_ms),
            "parent": "" if self.parent is None else str(self.parent),
            "status_reason": self.status_reason,
            "files": json.dumps(self.files, sort_keys=True),
        }
        for name in _JSON_FIELDS:
            value = getattr(self, name)
            fields[name] = json.dumps(list(value) if name == "labels" else value, sort_keys=True)
        return fields

    @classmethod
    def from_hash(cls, raw: dict[bytes, bytes] | dict[str, str]) -> ModelVersion:
        """Build a record from ``HGETALL`` output; raise RegistryError if a field is missing or invalid."""
        data = {_text(key): _text(value) for key, value in raw.items()}
        try:
            decoded = {name: json.loads(data[name]) for name in _JSON_FIELDS}
            return cls(
                version=int(data["version"]),
                status=Status(data["status"]),
                sha256=data["sha256"],
                path=Path(data["path"]),
                architecture=data["architecture"],
                labels=tuple(str(label) for label in decoded["labels"]),
                created_at_ms=int(data["created_at_ms"]),
                updated_at_ms=int(data["updated_at_ms"]),
                parent=int(data["parent"]) if data["parent"] else None,
                data_window=decoded["data_window"],
                metrics=decoded["metrics"],
                group_metrics=decoded["group_metrics"],
                gate=decoded["gate"],
                redaction=decoded["redaction"],
                status_reason=data.get("status_reason", ""),
                files=_file_hashes(json.loads(data.get("files", "{}"))),
            )
        except (KeyError, ValueError, TypeError) as exc:
            version = data.get("version", "?")
            raise RegistryError(f"registry record of version {version} is missing or has an invalid field: {exc}") from exc

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "status": self.status.value,
            "status_reason": self.status_reason,
            "parent": self.parent,
            "sha256": self.sha256,
            "files": self.files,
            "path": str(self.path),
            "architecture": self.architecture,
            "labels": list(self.labels),
            "created_at_ms": self.created_at_ms,
            "updated_at_ms": self.updated_at_ms,
            "data_window": self.data_window,
            "metrics": self.metrics,
            "group_metrics": self.group_metrics,
            "gate": self.gate,
            "redaction": self.redaction,
        }


@dataclass(frozen=True)
class ChampionChange:
    """One change of champion: a promotion or a rollback."""

    action: str
    version: int
    previous: int | None
    reason: str
    at_ms: int
    event_id: str

    def to_json(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "version": self.version,
            "previous": self.previous,
            "reason": self.reason,
            "at_ms": self.at_ms,
            "event_id": self.event_id,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ChampionChange:
        previous = data.get("previous")
        return cls(
            action=str(data["action"]),
            version=int(data["version"]),
            previous=None if previous is None else int(previous),
            reason=str(data.get("reason", "")),
            at_ms=int(data["at_ms"]),
            event_id=str(data.get("event_id", "")),
        )


def _file_hashes(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise TypeError(f"files must be a JSON object of path to SHA-256, got {type(value).__name__}")
    return {str(path): str(sha256) for path, sha256 in value.items()}


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value
