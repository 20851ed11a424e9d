"""Worker heartbeats in the Redis hash ``{prefix}workers``, read by ``driftloop status``.

Each field is a worker id and each value a JSON object: ``version`` (the served
model version), ``since`` (Unix time it was swapped in), ``processed`` (predictions
made so far), ``partitions`` (assigned partitions) and ``beat_at`` (Unix time of the beat). Hash fields cannot expire on Redis 6, so a reader marks a worker stale when
its last beat is older than ``stale_after_s``. ``remove`` deletes a stopping worker.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Protocol

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from driftloop.config import Settings
from driftloop.errors import ServiceError
from driftloop.infra.clients import make_redis

logger = logging.getLogger(__name__)

DEFAULT_STALE_AFTER_S = 30.0
# A beat runs in the worker's loop, so a Redis outage may delay a batch by at most this.
HEARTBEAT_TIMEOUT_S = 1.0


class _ServedModel(Protocol):
    version: int


class HeartbeatSubject(Protocol):
    """The worker attributes a heartbeat reads, as on an ``InferenceWorker``."""

    worker_id: str
    model: _ServedModel
    model_since: float
    processed: int


def workers_key(prefix: str) -> str:
    return f"{prefix}workers"


class WorkerHeartbeat:
    """Writer of a worker's state to ``{prefix}workers``.

    A heartbeat is reporting only, so a failed write is logged and not raised, and a
    Redis outage does not stop the worker. Repeated failures are logged once until a
    write succeeds again.
    """

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self._redis = client
        self.key = workers_key(prefix)
        self._failing = False

    @classmethod
    def for_settings(cls, settings: Settings) -> WorkerHeartbeat:
        """Build a heartbeat with its own Redis client that fails fast instead of retrying."""
        client = make_redis(
            settings,
            socket_timeout=HEARTBEAT_TIMEOUT_S,
            socket_connect_timeout=HEARTBEAT_TIMEOUT_S,
            retry=Retry(NoBackoff(), 0),
        )
        return cls(client, settings.topic_prefix)

    def beat(self, worker: HeartbeatSubject) -> None:
        value = {
            "version": worker.model.version,
            "since": worker.model_since,
            "processed": worker.processed,
            "partitions": sorted(getattr(worker, "assigned_partitions", ())),
            "beat_at": time.time(),
        }
        self._write(worker.worker_id, lambda: self._redis.hset(self.key, worker.worker_id, json.dumps(value)))

    def remove(self, worker: HeartbeatSubject) -> None:
        self._write(worker.worker_id, lambda: self._redis.hdel(self.key, worker.worker_id))

    def _write(self, worker_id: str, operation) -> None:
        try:
            operation()
        except redis.RedisError as exc:
            if not self._failing:
                logger.warning("heartbeat of worker %s not written to %s: %s", worker_id, self.key, exc)
            self._failing = True
            return
        if self._failing:
            logger.info("heartbeat of worker %s written again", worker_id)
        self._failing = False


def read_workers(client: redis.Redis, prefix: str, *, stale_after_s: float = DEFAULT_STALE_AFTER_S) -> list[dict[str, Any]]:
    """Return the last heartbeat of every worker as a JSON-ready dict, sorted by worker id.

    Each dict has ``worker_id``, ``version``, ``since``, ``processed``, ``partitions``
    (the assigned partitions of the requests topic), ``beat_at`` and ``stale``. Entries that are not valid JSON are skipped with a warning. Raises
    ServiceError when Redis cannot be read.
    """
    key = workers_key(prefix)
    try:
        raw = client.hgetall(key)
    except redis.RedisError as exc:
        raise ServiceError(f"could not read worker heartbeats from {key}: {exc}") from exc
    now = time.time()
    workers = []
    for field, value in raw.items():
        worker_id = field.decode("utf-8") if isinstance(field, bytes) else field
        try:
            data = json.loads(value)
            beat_at = float(data["beat_at"])
            workers.append(
                {
                    "worker_id": worker_id,
                    "version": int(data["version"]),
                    "since": float(data["since"]),
                    "processed": int(data["processed"]),
                    "partitions": list(data.get("partitions", [])),
                    "beat_at": beat_at,
                    "stale": now - beat_at > stale_after_s,
                }
            )
        except (ValueError, KeyError, TypeError) as exc:
            logger.warning("skipping invalid heartbeat of worker %s in %s: %s", worker_id, key, exc)
    return sorted(workers, key=lambda worker: worker["worker_id"])


def trainer_status_key(settings: Settings) -> str:
    """Return the Redis key of the trainer's status hash."""
    return f"{settings.topic_prefix}trainer:status"


def read_trainer_status(client: redis.Redis, settings: Settings) -> dict[str, str]:
    """Return the trainer's status hash (``phase``, ``job_id``, ``since_ms``, ``worker_id``), empty if none runs."""
    raw = client.hgetall(trainer_status_key(settings))
    return {key.decode(): value.decode() for key, value in raw.items()}
