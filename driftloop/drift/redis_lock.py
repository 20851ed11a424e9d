"""The training job lock in Redis: one job per pipeline across every process.

The lock is one string key whose value is the id of the job that holds it:

- ``acquire`` is ``SET key job_id NX PX ttl``, so it succeeds only on a free key and
  the key expires by itself when a crashed trainer stops refreshing it;
- ``refresh`` and ``release`` are Lua scripts that compare the stored job id with the
  caller's before they extend or delete the key. A job whose lock expired and went to
  another job therefore cannot extend or free the new holder's lock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import redis

from driftloop.errors import ServiceError

if TYPE_CHECKING:
    from driftloop.config import Settings

logger = logging.getLogger(__name__)

T = TypeVar("T")

_REFRESH_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


def pipeline_name(settings: Settings) -> str:
    """Return the pipeline name that keys the job lock: the topic prefix without its trailing dot."""
    return settings.topic_prefix.rstrip(".") or "driftloop"


def job_lock_for(settings: Settings, client: redis.Redis) -> RedisJobLock:
    """Return the Redis job lock shared by the drift process, the trainer and ``driftloop train``."""
    return RedisJobLock(client, key_prefix=settings.topic_prefix)


class RedisJobLock:
    """A :class:`driftloop.drift.trigger.JobLock` kept in Redis under ``{key_prefix}job_lock:{pipeline}``.

    Parameters
    ----------
    client
        Redis client; the lock does not close it.
    key_prefix
        Prefix of the lock keys, usually the pipeline's topic prefix, so that pipelines
        sharing one Redis keep separate locks.
    """

    def __init__(self, client: redis.Redis, key_prefix: str = "") -> None:
        self.client = client
        self.key_prefix = key_prefix
        self._refresh = client.register_script(_REFRESH_SCRIPT)
        self._release = client.register_script(_RELEASE_SCRIPT)

    def key(self, pipeline: str) -> str:
        """Return the Redis key of ``pipeline``'s lock."""
        return f"{self.key_prefix}job_lock:{pipeline}"

    def acquire(self, pipeline: str, job_id: str, ttl_s: float) -> bool:
        key = self.key(pipeline)
        acquired = self._call("acquire", key, lambda: self.client.set(key, job_id, nx=True, px=_milliseconds(ttl_s)))
        return bool(acquired)

    def refresh(self, pipeline: str, job_id: str, ttl_s: float) -> bool:
        key = self.key(pipeline)
        extended = self._call("refresh", key, lambda: self._refresh(keys=[key], args=[job_id, _milliseconds(ttl_s)]))
        return int(extended) == 1

    def release(self, pipeline: str, job_id: str) -> bool:
        key = self.key(pipeline)
        deleted = self._call("release", key, lambda: self._release(keys=[key], args=[job_id]))
        return int(deleted) == 1

    def holder(self, pipeline: str) -> str | None:
        key = self.key(pipeline)
        value = self._call("read", key, lambda: self.client.get(key))
        if value is None:
            return None
        return value.decode("utf-8") if isinstance(value, bytes) else str(value)

    def _call(self, operation: str, key: str, request: Callable[[], T]) -> T:
        try:
            return request()
        except redis.RedisError as exc:
            raise ServiceError(f"Redis failed to {operation} the training job lock {key}: {exc}") from exc


def _milliseconds(ttl_s: float) -> int:
    if ttl_s <= 0:
        raise ValueError(f"ttl_s must be positive, got {ttl_s}")
    # PX takes whole milliseconds and rejects 0.
    return max(1, round(ttl_s * 1000))
