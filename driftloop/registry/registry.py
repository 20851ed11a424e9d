"""The model registry: versions, the champion pointer and its history, kept in Redis.

Changes of status and of the champion run as Redis transactions (WATCH/MULTI/EXEC),
so two processes promoting at once cannot leave two champions. Each transaction
also appends its audit event to an outbox list and publishes the new champion on
the registry's pub/sub channel. After the transaction the outbox is sent to the
audit topic. An event whose delivery fails stays in the outbox and is sent by the
next change or by :meth:`ModelRegistry.flush_audit`, so audit delivery is
at-least-once.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import redis

from driftloop.artifact_digest import check_artifact_digest, digest_artifact
from driftloop.config import Settings
from driftloop.errors import ArtifactError, RegistryError, ServiceError
from driftloop.infra.clients import make_redis
from driftloop.registry.audit import AuditPublisher, KafkaAuditPublisher
from driftloop.registry.cards import write_model_card
from driftloop.registry.records import ChampionChange, ModelVersion, RegistryKeys, Status
from driftloop.registry.store import copy_into_store, inspect_artifact, store_root

logger = logging.getLogger(__name__)

# Attempts of one transaction when other clients keep changing the watched keys.
MAX_TRANSACTION_ATTEMPTS = 20

T = TypeVar("T")


class ModelRegistry:
    """Registers model versions, moves the champion pointer and records why.

    ``publisher`` receives the audit events. The default produces them to
    ``settings.topic(AUDIT)`` with a confluent-kafka producer.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        redis_client: redis.Redis | None = None,
        publisher: AuditPublisher | None = None,
    ) -> None:
        self.settings = settings
        self.keys = RegistryKeys(settings.topic_prefix)
        self.store = store_root(settings)
        self._redis = redis_client or make_redis(settings)
        self._owns_redis = redis_client is None
        self._publisher = publisher or KafkaAuditPublisher(settings)

    def close(self) -> None:
        self._publisher.close()
        if self._owns_redis:
            self._redis.close()

    def __enter__(self) -> ModelRegistry:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # Reading.

    def get(self, version: int) -> ModelVersion:
        """Return the record of ``version``; raise RegistryError if it is not registered."""
        raw = self._call(lambda: self._redis.hgetall(self.keys.version(version)))
        if not raw:
            raise RegistryError(f"version {version} not found in the registry under prefix {self.keys.prefix!r}")
        return ModelVersion.from_hash(raw)

    def list_versions(self) -> list[ModelVersion]:
        """Return every registered version, oldest first."""
        numbers = [int(n) for n in self._call(lambda: self._redis.zrange(self.keys.versions, 0, -1))]
        pipe = self._redis.pipeline(transaction=False)
        for number in numbers:
            pipe.hgetall(self.keys.version(number))
        return [ModelVersion.from_hash(raw) for raw in self._call(pipe.execute) if raw]

    def champion_version(self) -> int | None:
        value = self._call(lambda: self._redis.get(self.keys.champion))
        return None if value is None else int(value)

    def champion(self) -> ModelVersion | None:
        number = self.champion_version()
        return None if number is None else self.get(number)

    def history(self) -> list[ChampionChange]:
        """Return every change of champion, oldest first."""
        raw = self._call(lambda: self._redis.lrange(self.keys.history, 0, -1))
        return [ChampionChange.from_json(json.loads(item)) for item in raw]

    def champion_stack(self) -> list[int]:
        """Return the champions that a rollback walks back through, the current one last."""
        return [int(n) for n in self._call(lambda: self._redis.lrange(self.keys.champions, 0, -1))]

    def rollback_target(self) -> int | None:
        """Return the version that :meth:`rollback` would reinstate now, or None."""
        current = self.champion_version()
        stack = [n for n in self.champion_stack() if n != current]
        for version in reversed(stack):
            status = self._call(lambda version=version: self._redis.hget(self.keys.version(version), "status"))
            if status is not None and Status(status.decode()) != Status.REJECTED:
                return version
        return None

    # Registering.

    def register(
        self,
        artifact_dir: str | Path,
        *,
        parent: int | None = None,
        data_window: Mapping[str, Any] | None = None,
        metrics: Mapping[str, Any] | None = None,
        group_metrics: Mapping[str, Any] | None = None,
        gate: Mapping[str, Any] | None = None,
        redaction: Mapping[str, Any] | None = None,
    ) -> ModelVersion:
        """Verify an artifact, copy it into the model store and record it as a candidate.

        Steps:

        1. Inspect the directory (safetensors weights, no pickle file, valid metadata)
           and hash every file in it (the artifact SHA-256).
        2. Take the next version number.
        3. Copy the artifact to ``state_dir/models/v{n}`` and write its model card.
        4. Store the record and queue the audit event in one transaction.

        A version number taken by a registration that then fails is not reused, so
        version numbers increase but may have gaps.
        """
        info = inspect_artifact(artifact_dir)
        if parent is not None:
            self.get(parent)
        version = int(self._call(lambda: self._redis.incr(self.keys.next_version)))
        target = copy_into_store(info, self.store, version)
        now_ms = _now_ms()
        record = ModelVersion(
            version=version,
            status=Status.CANDIDATE,
            sha256=info.sha256,
            files=info.files,
            path=target,
            architecture=info.metadata.architecture,
            labels=info.metadata.labels,
            created_at_ms=now_ms,
            updated_at_ms=now_ms,
            parent=parent,
            data_window=_plain(data_window),
            metrics=_plain(metrics),
            group_metrics=_plain(group_metrics),
            gate=_plain(gate),
            redaction=_plain(redaction),
        )
        write_model_card(record, target)
        event = self._event("version_registered", version=version, parent=parent, sha256=info.sha256)

        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(self.keys.version(version), mapping=record.to_hash())
        pipe.zadd(self.keys.versions, {str(version): version})
        pipe.rpush(self.keys.audit_outbox, json.dumps(event, sort_keys=True))
        self._call(pipe.execute)
        logger.info(
            "registered version %d (parent %s, artifact SHA-256 of all files %s) from %s", version, parent, info.sha256, info.path
        )
        self.flush_audit()
        return record

    # Changing the champion.

    def promote(self, version: int, reason: str, *, allow_rejected: bool = False, verify: bool = True) -> ChampionChange:
        """Make ``version`` the champion; the previous champion becomes retired.

        With ``verify`` every stored file is hashed first, so a corrupted store is
        caught before any worker tries to load it. A rejected version is promoted
        only with ``allow_rejected``.
        """
        record = self.get(version)
        if verify:
            self._verify_stored(record)
        key = self.keys.version(version)

        def transaction(pipe: redis.client.Pipeline) -> ChampionChange:
            pipe.watch(self.keys.champion, key)
            current = _optional_int(pipe.get(self.keys.champion))
            status = pipe.hget(key, "status")
            if status is None:
                raise RegistryError(f"version {version} not found in the registry under prefix {self.keys.prefix!r}")
            status = Status(status.decode())
            if current == version:
                raise RegistryError(f"version {version} is already the champion")
            if status == Status.REJECTED and not allow_rejected:
                raise RegistryError(f"version {version} was rejected; pass allow_rejected (CLI: --allow-rejected) to promote it anyway")
            change = self._change("promote", version, current, reason)
            pipe.multi()
            self._queue_champion_change(pipe, change)
            pipe.rpush(self.keys.champions, version)
            if current is not None:
                self._queue_status(pipe, current, Status.RETIRED, f"replaced by version {version}", change.at_ms)
            return change

        change = self._transact(transaction, f"promote version {version}")
        logger.info("promoted version %d to champion (previous %s): %s", version, change.previous, reason)
        self.flush_audit()
        return change

    def rollback(self, reason: str, *, expected_version: int | None = None) -> ChampionChange:
        """Reinstate the previous champion and mark the current one rejected.

        Champions rejected since their reign are skipped. With ``expected_version``
        the rollback happens only if that version is still the champion, so an
        automatic check cannot undo a newer promotion.
        """

        def transaction(pipe: redis.client.Pipeline) -> ChampionChange:
            pipe.watch(self.keys.champion, self.keys.champions)
            current = _optional_int(pipe.get(self.keys.champion))
            if current is None:
                raise RegistryError("there is no champion to roll back")
            if expected_version is not None and current != expected_version:
                raise RegistryError(f"champion is version {current}, not {expected_version}; rollback cancelled")
            # The rolled-back version becomes rejected, so it leaves the stack everywhere.
            stack = [int(n) for n in pipe.lrange(self.keys.champions, 0, -1) if int(n) != current]
            target = self._previous_champion(pipe, stack)
            if target is None:
                raise RegistryError(f"version {current} has no earlier champion that is not rejected to roll back to")
            change = self._change("rollback", target, current, reason)
            pipe.multi()
            self._queue_champion_change(pipe, change)
            pipe.delete(self.keys.champions)
            pipe.rpush(self.keys.champions, *stack)
            self._queue_status(pipe, current, Status.REJECTED, f"rolled back: {reason}", change.at_ms)
            return change

        change = self._transact(transaction, "roll back")
        logger.warning("rolled back version %d to version %d: %s", change.previous, change.version, reason)
        self.flush_audit()
        return change

    def reject(self, version: int, reason: str) -> ModelVersion:
        """Mark a candidate or retired version rejected; a champion must be rolled back instead."""
        key = self.keys.version(version)

        def transaction(pipe: redis.client.Pipeline) -> None:
            pipe.watch(self.keys.champion, key)
            status = pipe.hget(key, "status")
            if status is None:
                raise RegistryError(f"version {version} not found in the registry under prefix {self.keys.prefix!r}")
            if Status(status.decode()) == Status.CHAMPION:
                raise RegistryError(f"version {version} is the champion; roll it back instead of rejecting it")
            at_ms = _now_ms()
            event = self._event("version_rejected", version=version, reason=reason, at_ms=at_ms)
            pipe.multi()
            self._queue_status(pipe, version, Status.REJECTED, reason, at_ms)
            pipe.rpush(self.keys.audit_outbox, json.dumps(event, sort_keys=True))

        self._transact(transaction, f"reject version {version}")
        logger.info("rejected version %d: %s", version, reason)
        self.flush_audit()
        return self.get(version)

    # Audit events.

    def flush_audit(self) -> int:
        """Send the outbox's audit events in order; return how many were delivered.

        Stops at the first failure and logs it; the remaining events stay queued.
        """
        delivered = 0
        pending = self._call(lambda: self._redis.lrange(self.keys.audit_outbox, 0, -1))
        for raw in pending:
            event = json.loads(raw)
            try:
                self._publisher.publish(event)
            except ServiceError as exc:
                logger.error(
                    "audit event %s (%s) not delivered, %d events stay in %s: %s",
                    event.get("event_id"), event.get("event"), len(pending) - delivered, self.keys.audit_outbox, exc,
                )
                break
            # LREM removes this exact event, even if another process drained the list meanwhile.
            self._call(lambda raw=raw: self._redis.lrem(self.keys.audit_outbox, 1, raw))
            delivered += 1
        return delivered

    def pending_audit_events(self) -> int:
        return int(self._call(lambda: self._redis.llen(self.keys.audit_outbox)))

    # Helpers.

    def _verify_stored(self, record: ModelVersion) -> None:
        try:
            actual, _ = digest_artifact(record.path)
        except ArtifactError as exc:
            raise ArtifactError(f"version {record.version}: stored artifact could not be hashed: {exc}") from exc
        check_artifact_digest(actual, record.sha256, record.files, version=record.version, path=record.path)

    def _previous_champion(self, pipe: redis.client.Pipeline, stack: list[int]) -> int | None:
        """Pop rejected or unregistered versions off ``stack`` and return its new top, if any."""
        while stack:
            key = self.keys.version(stack[-1])
            pipe.watch(key)
            status = pipe.hget(key, "status")
            if status is not None and Status(status.decode()) != Status.REJECTED:
                return stack[-1]
            stack.pop()
        return None

    def _change(self, action: str, version: int, previous: int | None, reason: str) -> ChampionChange:
        return ChampionChange(action=action, version=version, previous=previous, reason=reason, at_ms=_now_ms(), event_id=uuid.uuid4().hex)

    def _queue_champion_change(self, pipe: redis.client.Pipeline, change: ChampionChange) -> None:
        pipe.set(self.keys.champion, change.version)
        self._queue_status(pipe, change.version, Status.CHAMPION, f"{change.action}: {change.reason}", change.at_ms)
        pipe.rpush(self.keys.history, json.dumps(change.to_json(), sort_keys=True))
        event = {**change.to_json(), "event": "champion_changed", "topic_prefix": self.keys.prefix}
        pipe.rpush(self.keys.audit_outbox, json.dumps(event, sort_keys=True))
        pipe.publish(self.keys.channel, str(change.version))

    def _queue_status(self, pipe: redis.client.Pipeline, version: int, status: Status, reason: str, at_ms: int) -> None:
        pipe.hset(
            self.keys.version(version),
            mapping={"status": status.value, "status_reason": reason, "updated_at_ms": str(at_ms)},
        )

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        return {"event": kind, "event_id": uuid.uuid4().hex, "at_ms": _now_ms(), "topic_prefix": self.keys.prefix, **fields}

    def _transact(self, body: Callable[[redis.client.Pipeline], T], operation: str) -> T:
        """Run ``body`` as a WATCH/MULTI/EXEC transaction, retrying when a watched key changed."""
        for _ in range(MAX_TRANSACTION_ATTEMPTS):
            with self._redis.pipeline(transaction=True) as pipe:
                try:
                    result = body(pipe)
                    pipe.execute()
                    return result
                except redis.WatchError:
                    continue
                except redis.RedisError as exc:
                    raise ServiceError(f"Redis at {self._redis_address()} failed to {operation}: {exc}") from exc
        raise RegistryError(f"could not {operation}: the registry kept changing during {MAX_TRANSACTION_ATTEMPTS} attempts")

    def _call(self, operation: Callable[[], T]) -> T:
        try:
            return operation()
        except redis.RedisError as exc:
            raise ServiceError(f"Redis at {self._redis_address()} failed a registry request: {exc}") from exc

    def _redis_address(self) -> str:
        kwargs = self._redis.connection_pool.connection_kwargs
        return f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}"


def _plain(values: Mapping[str, Any] | None) -> dict[str, Any]:
    """Copy ``values`` into a dict, checking that it is a mapping that serialises to JSON."""
    if values is not None and not isinstance(values, Mapping):
        raise RegistryError(f"registry metadata must be a mapping, got {type(values).__name__}")
    data = dict(values or {})
    try:
        json.dumps(data)
    except (TypeError, ValueError) as exc:
        raise RegistryError(f"registry metadata must be JSON-serialisable: {exc}") from exc
    return data


def _optional_int(value: bytes | None) -> int | None:
    return None if value is None else int(value)


def _now_ms() -> int:
    return int(time.time() * 1000)
