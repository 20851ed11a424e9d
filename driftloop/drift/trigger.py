"""The trigger policy: which drift alarms start a training job.

Rules, in order:

1. An alarm joins the open episode while the episode is still inside its cooldown,
   counted from its first alarm in examples (``cooldown_examples``) or in seconds of
   event time (``cooldown_s``). An alarm joins while either window is open. Later
   alarms open a new episode.
2. An episode that has not started a job yet absorbs every alarm, whatever the
   cooldown, because it can start at most one job anyway.
3. An episode starts a job once at least ``min_labelled_examples`` labelled examples
   arrived since the model version started and since the last job started, and the job
   lock of the pipeline is free. Until then it waits, so a drift found early in a
   version still starts a job when enough labels have arrived.
4. A new model version drops the episode and the example counts, because the alarms
   described the old version.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Protocol

from driftloop.drift.events import DriftEvent, Episode, ExampleWindow, TrainingJob
from driftloop.drift.settings import TriggerSettings

logger = logging.getLogger(__name__)


class JobLock(Protocol):
    """Lock that allows one training job per pipeline, with an expiry so a crashed trainer frees it.

    A Redis implementation maps ``acquire`` to ``SET key job_id NX PX ttl``, and
    ``refresh`` and ``release`` to compare-and-set scripts on the job id.
    """

    def acquire(self, pipeline: str, job_id: str, ttl_s: float) -> bool:
        """Take the lock for ``job_id`` unless another job holds it, and return whether it was taken."""
        ...

    def refresh(self, pipeline: str, job_id: str, ttl_s: float) -> bool:
        """Extend the lock to ``ttl_s`` from now if ``job_id`` still holds it, and return whether it does."""
        ...

    def release(self, pipeline: str, job_id: str) -> bool:
        """Free the lock if ``job_id`` holds it, and return whether it did."""
        ...

    def holder(self, pipeline: str) -> str | None:
        """Return the id of the job holding the lock, or None when it is free."""
        ...


class InMemoryJobLock:
    """A :class:`JobLock` in process memory, for tests and single-process runs.

    Parameters
    ----------
    clock
        Monotonic seconds for the expiry. Defaults to ``time.monotonic``.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._holders: dict[str, tuple[str, float]] = {}

    def acquire(self, pipeline: str, job_id: str, ttl_s: float) -> bool:
        if self.holder(pipeline) is not None:
            return False
        self._holders[pipeline] = (job_id, self.clock() + ttl_s)
        return True

    def refresh(self, pipeline: str, job_id: str, ttl_s: float) -> bool:
        if self.holder(pipeline) != job_id:
            return False
        self._holders[pipeline] = (job_id, self.clock() + ttl_s)
        return True

    def release(self, pipeline: str, job_id: str) -> bool:
        if self.holder(pipeline) != job_id:
            return False
        del self._holders[pipeline]
        return True

    def holder(self, pipeline: str) -> str | None:
        entry = self._holders.get(pipeline)
        if entry is None:
            return None
        job_id, expires_at = entry
        if self.clock() >= expires_at:
            del self._holders[pipeline]
            return None
        return job_id


@dataclass
class _OpenEpisode:
    first: DriftEvent
    last: DriftEvent
    n_alarms: int = 1
    detectors: list[str] = field(default_factory=list)
    job_id: str | None = None

    def snapshot(self) -> Episode:
        return Episode(
            model_version=self.first.model_version,
            first_position=self.first.position,
            last_position=self.last.position,
            first_time=self.first.time,
            last_time=self.last.time,
            n_alarms=self.n_alarms,
            detectors=tuple(self.detectors),
        )


class TriggerPolicy:
    """Turn drift events and labelled-example counts into training jobs, at most one at a time.

    Parameters
    ----------
    settings
        The ``drift.trigger`` settings.
    lock
        The job lock shared by every process of the pipeline.
    pipeline
        Name of the pipeline, the key of the job lock.
    model_version
        The model version serving now.
    clock
        Time of ``requested_at`` on jobs; defaults to UTC now.
    new_job_id
        Job id factory; defaults to random UUIDs.
    """

    def __init__(
        self,
        settings: TriggerSettings,
        lock: JobLock,
        pipeline: str,
        model_version: int,
        clock: Callable[[], datetime] | None = None,
        new_job_id: Callable[[], str] | None = None,
    ) -> None:
        self.settings = settings
        self.lock = lock
        self.pipeline = pipeline
        self.clock = clock or _utc_now
        self.new_job_id = new_job_id or _random_job_id
        self._n_stale_events = 0
        self._start(model_version)

    def start_version(self, model_version: int) -> None:
        """Start counting for a newly serving model version, dropping the open episode."""
        if self._episode is not None and self._episode.job_id is None:
            logger.info(
                "dropping drift episode without a job: model version %d replaced by %d",
                self._model_version,
                model_version,
            )
        self._start(model_version)

    def _start(self, model_version: int) -> None:
        self._model_version = model_version
        self._labelled = 0
        self._labelled_at_last_job = 0
        self._episode: _OpenEpisode | None = None
        self._waiting_for = ""

    def update(self, events: Iterable[DriftEvent] = (), labelled_examples: int = 0) -> list[TrainingJob]:
        """Record new drift events and newly labelled examples, and return the jobs to start now.

        ``labelled_examples`` counts the labelled examples since the previous call. Events
        of another model version are counted in :attr:`n_stale_events` and ignored. The
        result contains at most one job.
        """
        if labelled_examples < 0:
            raise ValueError(f"labelled_examples must be >= 0, got {labelled_examples}")
        self._labelled += labelled_examples
        for event in events:
            self._add_alarm(event)
        job = self._try_start_job()
        return [job] if job is not None else []

    def finish_job(self, job_id: str) -> bool:
        """Release the job lock held by ``job_id``, and return whether it held the lock."""
        released = self.lock.release(self.pipeline, job_id)
        if not released:
            logger.warning("job %s of pipeline %s did not hold the job lock at release", job_id, self.pipeline)
        return released

    def _add_alarm(self, event: DriftEvent) -> None:
        if event.model_version != self._model_version:
            self._n_stale_events += 1
            logger.debug(
                "ignoring drift event of model version %d, because version %d is serving",
                event.model_version,
                self._model_version,
            )
            return

        episode = self._episode
        label = f"{event.detector} on {event.signal}"
        if episode is None or (episode.job_id is not None and not self._in_cooldown(episode, event)):
            self._episode = _OpenEpisode(first=event, last=event, detectors=[label])
            self._waiting_for = ""
            return
        episode.last = event
        episode.n_alarms += 1
        if label not in episode.detectors:
            episode.detectors.append(label)

    def _in_cooldown(self, episode: _OpenEpisode, event: DriftEvent) -> bool:
        examples = self.settings.cooldown_examples
        seconds = self.settings.cooldown_s
        if examples is not None and event.position - episode.first.position <= examples:
            return True
        return seconds is not None and (event.time - episode.first.time).total_seconds() <= seconds

    def _try_start_job(self) -> TrainingJob | None:
        episode = self._episode
        if episode is None or episode.job_id is not None:
            return None

        fresh = self._labelled - self._labelled_at_last_job
        needed = self.settings.min_labelled_examples
        if fresh < needed:
            self._wait("examples", f"{fresh} of {needed} labelled examples")
            return None

        job_id = self.new_job_id()
        if not self.lock.acquire(self.pipeline, job_id, self.settings.lock_ttl_s):
            self._wait("lock", f"job {self.lock.holder(self.pipeline)} holds the job lock")
            return None

        since = "since the last job" if self._labelled_at_last_job else "since the model version started"
        snapshot = episode.snapshot()
        job = TrainingJob(
            job_id=job_id,
            pipeline=self.pipeline,
            model_version=self._model_version,
            reason=f"{snapshot.summary()}; {fresh} labelled examples {since} (minimum {needed})",
            episode=snapshot,
            examples=ExampleWindow(start=0, end=self._labelled),
            requested_at=self.clock(),
        )
        episode.job_id = job_id
        self._labelled_at_last_job = self._labelled
        logger.info("starting training job %s of pipeline %s: %s", job_id, self.pipeline, job.reason)
        return job

    def _wait(self, kind: str, detail: str) -> None:
        # Log when the reason changes, not on every update while the episode waits.
        if kind != self._waiting_for:
            logger.info("drift episode of model version %d waits: %s", self._model_version, detail)
            self._waiting_for = kind

    @property
    def model_version(self) -> int:
        """The model version whose events count."""
        return self._model_version

    @property
    def labelled_examples(self) -> int:
        """Labelled examples since the model version started."""
        return self._labelled

    @property
    def episode(self) -> Episode | None:
        """The open episode, or None before the first alarm of the version."""
        return self._episode.snapshot() if self._episode is not None else None

    @property
    def waiting(self) -> bool:
        """Whether an episode waits to start a job."""
        return self._episode is not None and self._episode.job_id is None

    @property
    def n_stale_events(self) -> int:
        """Drift events ignored because they came from another model version."""
        return self._n_stale_events


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def _random_job_id() -> str:
    return uuid.uuid4().hex
