"""The trigger policy and the in-memory job lock."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest

from driftloop.drift.events import DriftEvent
from driftloop.drift.settings import TriggerSettings
from driftloop.drift.synthetic import START_TIME
from driftloop.drift.trigger import InMemoryJobLock, TriggerPolicy

PIPELINE = "support"


class FakeClock:
    """Monotonic seconds that a test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def alarm(position: int, *, detector: str = "adwin", signal: str = "error", version: int = 1) -> DriftEvent:
    """Return a drift event whose event time is ``position`` seconds after START_TIME."""
    return DriftEvent(
        detector=detector,
        signal=signal,
        statistic=0.5,
        statistic_name="recent_mean",
        position=position,
        model_version=version,
        time=START_TIME + timedelta(seconds=position),
    )


def make_policy(lock=None, **settings) -> TriggerPolicy:
    ids = iter(f"job-{n}" for n in range(1, 100))
    return TriggerPolicy(
        TriggerSettings(**settings),
        lock if lock is not None else InMemoryJobLock(),
        pipeline=PIPELINE,
        model_version=1,
        clock=lambda: START_TIME,
        new_job_id=lambda: next(ids),
    )


def test_alarm_with_enough_examples_starts_job():
    policy = make_policy(min_labelled_examples=100)

    jobs = policy.update([alarm(150)], labelled_examples=150)

    assert len(jobs) == 1
    job = jobs[0]
    assert job.job_id == "job-1"
    assert job.pipeline == PIPELINE
    assert job.model_version == 1
    assert job.examples.start == 0
    assert job.examples.size == 150
    assert job.requested_at == START_TIME
    assert job.episode.detectors == ("adwin on error",)
    assert job.reason == (
        "1 drift alarm(s) on model version 1 from adwin on error at positions 150..150; "
        "150 labelled examples since the model version started (minimum 100)"
    )
    assert policy.lock.holder(PIPELINE) == "job-1"


def test_alarms_in_cooldown_are_one_episode():
    policy = make_policy(min_labelled_examples=10, cooldown_examples=500, cooldown_s=None)
    policy.update(labelled_examples=100)

    jobs = []
    for position in (200, 260, 700):
        jobs += policy.update([alarm(position, detector="ddm"), alarm(position)])

    assert [job.job_id for job in jobs] == ["job-1"]
    episode = policy.episode
    assert episode.n_alarms == 6
    assert (episode.first_position, episode.last_position) == (200, 700)
    assert episode.detectors == ("ddm on error", "adwin on error")


def test_alarm_after_cooldown_opens_episode():
    policy = make_policy(min_labelled_examples=10, cooldown_examples=500, cooldown_s=None)
    policy.update([alarm(200)], labelled_examples=100)

    policy.update([alarm(701)])

    assert policy.episode.first_position == 701
    assert policy.episode.n_alarms == 1


def test_cooldown_in_seconds_only():
    policy = make_policy(min_labelled_examples=10, cooldown_examples=None, cooldown_s=60.0)
    policy.update([alarm(0)], labelled_examples=100)

    policy.update([alarm(60)])
    assert policy.episode.n_alarms == 2

    policy.update([alarm(61)])
    assert policy.episode.first_position == 61


def test_cooldown_open_while_either_window_is():
    policy = make_policy(min_labelled_examples=10, cooldown_examples=10, cooldown_s=60.0)
    policy.update([alarm(0)], labelled_examples=100)

    # 50 examples is past the example window, but 50 seconds is inside the time window.
    policy.update([alarm(50)])

    assert policy.episode.n_alarms == 2


def test_episode_waits_for_labelled_examples(caplog):
    policy = make_policy(min_labelled_examples=500)
    caplog.set_level(logging.INFO, logger="driftloop.drift.trigger")

    assert policy.update([alarm(100)], labelled_examples=100) == []
    assert policy.waiting is True
    for _ in range(10):
        assert policy.update(labelled_examples=30) == []

    jobs = policy.update(labelled_examples=100)

    assert [job.examples.end for job in jobs] == [500]
    assert policy.waiting is False
    waits = [record.getMessage() for record in caplog.records if "waits" in record.getMessage()]
    assert waits == ["drift episode of model version 1 waits: 100 of 500 labelled examples"]


def test_waiting_episode_absorbs_late_alarms():
    policy = make_policy(min_labelled_examples=500, cooldown_examples=100, cooldown_s=None)
    policy.update([alarm(10)], labelled_examples=10)

    policy.update([alarm(5000)], labelled_examples=10)

    assert policy.episode.first_position == 10
    assert policy.episode.n_alarms == 2


def test_held_lock_blocks_second_job():
    lock = InMemoryJobLock()
    assert lock.acquire(PIPELINE, "other-process-job", ttl_s=60.0)
    policy = make_policy(lock, min_labelled_examples=10)

    assert policy.update([alarm(100)], labelled_examples=100) == []
    assert policy.waiting is True

    lock.release(PIPELINE, "other-process-job")
    jobs = policy.update()

    assert len(jobs) == 1
    assert lock.holder(PIPELINE) == jobs[0].job_id


def test_rejected_job_needs_fresh_examples():
    policy = make_policy(min_labelled_examples=100, cooldown_examples=500, cooldown_s=None)
    (first,) = policy.update([alarm(200)], labelled_examples=200)
    assert policy.finish_job(first.job_id) is True

    assert policy.update([alarm(1000)], labelled_examples=50) == []
    jobs = policy.update(labelled_examples=50)

    assert [job.job_id for job in jobs] == ["job-2"]
    second = jobs[0]
    assert (second.examples.start, second.examples.end) == (0, 300)
    assert "100 labelled examples since the last job (minimum 100)" in second.reason


def test_running_job_blocks_new_episode():
    policy = make_policy(min_labelled_examples=10, cooldown_examples=100, cooldown_s=None)
    policy.update([alarm(100)], labelled_examples=1000)

    jobs = policy.update([alarm(5000)], labelled_examples=1000)

    assert jobs == []
    assert policy.waiting is True


def test_new_version_drops_episode_and_counts():
    policy = make_policy(min_labelled_examples=100)
    policy.update([alarm(10)], labelled_examples=50)

    policy.start_version(2)

    assert policy.episode is None
    assert policy.labelled_examples == 0
    assert policy.model_version == 2
    assert policy.update([alarm(200, version=1)], labelled_examples=200) == []
    assert policy.n_stale_events == 1
    assert len(policy.update([alarm(200, version=2)])) == 1


def test_negative_example_count_rejected():
    policy = make_policy()

    with pytest.raises(ValueError, match="labelled_examples must be >= 0, got -1"):
        policy.update(labelled_examples=-1)


def test_finish_unknown_job_returns_false(caplog):
    policy = make_policy()

    assert policy.finish_job("job-unknown") is False
    assert "job job-unknown of pipeline support did not hold the job lock" in caplog.text


def test_lock_single_holder():
    lock = InMemoryJobLock()

    assert lock.acquire(PIPELINE, "a", ttl_s=10.0) is True
    assert lock.acquire(PIPELINE, "b", ttl_s=10.0) is False
    assert lock.acquire("other-pipeline", "b", ttl_s=10.0) is True
    assert lock.holder(PIPELINE) == "a"


def test_lock_release_by_holder_only():
    lock = InMemoryJobLock()
    lock.acquire(PIPELINE, "a", ttl_s=10.0)

    assert lock.release(PIPELINE, "b") is False
    assert lock.holder(PIPELINE) == "a"
    assert lock.release(PIPELINE, "a") is True
    assert lock.holder(PIPELINE) is None


def test_lock_expires_and_refreshes():
    clock = FakeClock()
    lock = InMemoryJobLock(clock)
    lock.acquire(PIPELINE, "a", ttl_s=10.0)

    clock.now = 9.0
    assert lock.refresh(PIPELINE, "a", ttl_s=10.0) is True
    clock.now = 18.0
    assert lock.holder(PIPELINE) == "a"
    clock.now = 19.0
    assert lock.holder(PIPELINE) is None
    assert lock.refresh(PIPELINE, "a", ttl_s=10.0) is False
    assert lock.acquire(PIPELINE, "b", ttl_s=10.0) is True
