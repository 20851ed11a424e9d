"""The Redis job lock on a real Redis, and the trigger policy over it."""

from __future__ import annotations

from datetime import timedelta

import pytest

from driftloop.config import Settings
from driftloop.drift.events import DriftEvent
from driftloop.drift.redis_lock import RedisJobLock
from driftloop.drift.settings import TriggerSettings
from driftloop.drift.synthetic import START_TIME
from driftloop.drift.trigger import TriggerPolicy
from driftloop.infra.clients import make_redis
from driftloop.testing.services import wait_until

pytestmark = pytest.mark.integration

PIPELINE = "support"


@pytest.fixture
def lock(settings: Settings):
    client = make_redis(settings)
    yield RedisJobLock(client, key_prefix=settings.topic_prefix)
    client.close()


def alarm(position: int) -> DriftEvent:
    return DriftEvent(
        detector="adwin",
        signal="error",
        statistic=0.5,
        statistic_name="recent_mean",
        position=position,
        model_version=1,
        time=START_TIME + timedelta(seconds=position),
    )


def test_lock_acquire_is_exclusive(lock: RedisJobLock) -> None:
    assert lock.acquire(PIPELINE, "job-1", ttl_s=60)
    assert not lock.acquire(PIPELINE, "job-2", ttl_s=60)
    assert lock.holder(PIPELINE) == "job-1"


def test_lock_key_is_under_prefix(lock: RedisJobLock, settings: Settings) -> None:
    lock.acquire(PIPELINE, "job-1", ttl_s=60)

    client = make_redis(settings)
    try:
        assert client.get(f"{settings.topic_prefix}job_lock:{PIPELINE}") == b"job-1"
        assert 0 < client.pttl(lock.key(PIPELINE)) <= 60_000
    finally:
        client.close()


def test_lock_release_only_by_holder(lock: RedisJobLock) -> None:
    lock.acquire(PIPELINE, "job-1", ttl_s=60)

    assert not lock.release(PIPELINE, "job-2")
    assert lock.holder(PIPELINE) == "job-1"
    assert lock.release(PIPELINE, "job-1")
    assert lock.holder(PIPELINE) is None
    assert not lock.release(PIPELINE, "job-1")


def test_lock_refresh_only_by_holder(lock: RedisJobLock, settings: Settings) -> None:
    lock.acquire(PIPELINE, "job-1", ttl_s=1)
    client = make_redis(settings)
    try:
        assert not lock.refresh(PIPELINE, "job-2", ttl_s=600)
        assert client.pttl(lock.key(PIPELINE)) <= 1000
        assert lock.refresh(PIPELINE, "job-1", ttl_s=600)
        assert client.pttl(lock.key(PIPELINE)) > 1000
    finally:
        client.close()


def test_lock_expires_and_frees(lock: RedisJobLock) -> None:
    lock.acquire(PIPELINE, "job-1", ttl_s=0.2)

    assert wait_until(lambda: lock.holder(PIPELINE) is None, timeout=10)
    assert not lock.refresh(PIPELINE, "job-1", ttl_s=60)
    assert lock.acquire(PIPELINE, "job-2", ttl_s=60)


def test_lock_rejects_non_positive_ttl(lock: RedisJobLock) -> None:
    with pytest.raises(ValueError, match="ttl_s must be positive, got 0"):
        lock.acquire(PIPELINE, "job-1", ttl_s=0)


def test_pipelines_have_separate_locks(lock: RedisJobLock) -> None:
    assert lock.acquire("first", "job-1", ttl_s=60)
    assert lock.acquire("second", "job-2", ttl_s=60)


def test_policy_waits_for_lock_held_elsewhere(lock: RedisJobLock) -> None:
    ids = iter(["job-a", "job-b"])
    policy = TriggerPolicy(
        TriggerSettings(min_labelled_examples=10), lock, PIPELINE, model_version=1, new_job_id=lambda: next(ids)
    )
    lock.acquire(PIPELINE, "manual-job", ttl_s=60)

    assert policy.update([alarm(20)], labelled_examples=20) == []
    assert policy.waiting
    lock.release(PIPELINE, "manual-job")
    jobs = policy.update()

    assert [job.job_id for job in jobs] == ["job-b"]
    assert lock.holder(PIPELINE) == "job-b"

