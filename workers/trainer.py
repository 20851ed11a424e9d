"""The trainer: turns each training job into a candidate, gates it and registers it.

``driftloop learn trainer`` runs one :class:`TrainerWorker`, a member of the consumer
group ``{prefix}trainer`` on the jobs topic. For each job, :meth:`TrainerWorker.handle_job`:

1. claims the job lock that the drift process (or ``driftloop train``) took for the
   job, and refreshes it in a background thread while the job runs;
2. checks that the job's model version is still the champion, and skips it otherwise;
3. reads the examples topic from its start: the examples of the job's version are the
   recent examples, and those of older versions feed a seeded replay buffer;
4. splits both into training examples and held-out slices for the gate;
5. fine-tunes a copy of the champion (the head, the top layers or everything, per
   ``drift.training``), growing the head for labels the champion has never seen;
6. scores candidate and champion on the held-out slices, per group, and applies the
   promotion gate;
7. registers the candidate with its data window, figures and gate decision, then
   promotes it or records it as rejected with the gate's reason;
8. releases the job lock.

A job that fails in steps 3 to 7 leaves the champion serving and is recorded as a
rejected version with the error as its reason. Because the registry records
rejections only on versions, that version contains a copy of its parent's weights.

The job's offset is committed once the job ends, whatever its outcome. A trainer that
dies during a job reads the job again after a restart, and a job that has been
started ``max_attempts`` times is recorded as failed without training again.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
import torch
from confluent_kafka import Consumer, KafkaError, KafkaException, Message
from pydantic import ValidationError

from driftloop.config import Settings
from driftloop.drift.events import TrainingJob
from driftloop.drift.gate import GateDecision, evaluate_gate
from driftloop.drift.redis_lock import job_lock_for
from driftloop.drift.reservoir import TrainingSet, build_training_set
from driftloop.drift.trigger import JobLock
from driftloop.errors import DriftloopError, ServiceError
from driftloop.infra.clients import make_consumer, make_redis, source_of
from driftloop.infra.topics import EXAMPLES, JOBS
from driftloop.model import ServingModel, load_artifact, save_artifact, select_device
from driftloop.registry.heartbeat import trainer_status_key
from driftloop.registry.records import ModelVersion
from driftloop.registry.registry import ModelRegistry
from driftloop.schemas.events import Example
from driftloop.workers.candidate import (
    Candidate,
    FineTuner,
    Scorer,
    TextEmbeddings,
    TorchFineTuner,
    build_candidate,
    data_window,
    fit_options,
    gate_metrics,
    gate_slice,
    group_metrics,
)
from driftloop.workers.example_reader import collect_examples

logger = logging.getLogger(__name__)

ATTEMPTS_TTL_S = 7 * 24 * 3600
POLL_TIMEOUT_S = 0.5
MAX_POLL_INTERVAL_MS = 86_400_000
"""librdkafka's maximum ``max.poll.interval.ms``: a job may run for hours without a poll."""


class Phase:
    """Phases written to ``{prefix}trainer:status``, for ``status`` views and benchmarks.

    In head mode ``training`` starts with the first embeddings, while the trainer may
    still wait for examples after the alarm.
    """

    IDLE = "idle"
    COLLECTING = "collecting"
    TRAINING = "training"
    EVALUATING = "evaluating"
    REGISTERING = "registering"


@dataclass(frozen=True)
class TrainerOptions:
    """How the trainer runs jobs, beyond ``settings.drift``.

    ``min_examples_after_alarm``: labelled examples of the job's version, with an
    event time at or after the episode's first alarm, that the trainer waits for
    before it trains, so that the candidate is trained on the drifted data. It waits at most
    ``wait_timeout_s`` and then trains on what has arrived. ``max_attempts``: times a
    job may be started before it is recorded as failed without training.
    ``batch_size``: texts per forward pass when candidate and champion are scored.
    """

    min_examples_after_alarm: int = 0
    wait_timeout_s: float = 600.0
    max_attempts: int = 2
    batch_size: int = 64

    def __post_init__(self) -> None:
        if self.min_examples_after_alarm < 0:
            raise ValueError(f"min_examples_after_alarm must be >= 0, got {self.min_examples_after_alarm}")
        if self.wait_timeout_s < 0:
            raise ValueError(f"wait_timeout_s must be >= 0, got {self.wait_timeout_s}")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")


@dataclass(frozen=True)
class JobOutcome:
    """Outcome of one training job."""

    job_id: str
    status: str
    """``promoted``, ``rejected`` (by the gate), ``failed`` (an error, recorded as rejected) or ``skipped``."""
    reason: str
    version: int | None = None


# The job lock while a job runs.


class LockKeeper:
    """Refreshes a job's lock every third of its time to live until the job ends, then releases it."""

    def __init__(self, lock: JobLock, pipeline: str, job_id: str, ttl_s: float) -> None:
        self.lock = lock
        self.pipeline = pipeline
        self.job_id = job_id
        self.ttl_s = ttl_s
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._refresh_until_done, name=f"job-lock-{job_id}", daemon=True)

    def __enter__(self) -> LockKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._done.set()
        self._thread.join(10.0)
        try:
            if not self.lock.release(self.pipeline, self.job_id):
                logger.warning("job %s no longer held the job lock of pipeline %s at its end", self.job_id, self.pipeline)
        except ServiceError as exc:
            logger.error("job %s could not release the job lock of pipeline %s, which expires by itself: %s", self.job_id, self.pipeline, exc)

    def _refresh_until_done(self) -> None:
        # Bounded by the job: the loop ends when __exit__ sets the event.
        while not self._done.wait(self.ttl_s / 3):
            try:
                if not self.lock.refresh(self.pipeline, self.job_id, self.ttl_s):
                    logger.warning("job %s lost the job lock of pipeline %s, so another job may start", self.job_id, self.pipeline)
            except ServiceError as exc:
                logger.warning("job %s could not refresh the job lock of pipeline %s: %s", self.job_id, self.pipeline, exc)


# The worker.


class TrainerWorker:
    """Consumes training jobs one at a time and runs each to a registered, gated candidate.

    Parameters
    ----------
    settings
        Pipeline settings; ``settings.drift`` configures replay, gate and training.
    fine_tuner
        Fits the candidate; defaults to :class:`TorchFineTuner`. Tests inject failures here.
    options
        Waiting, attempt and batch options.
    lock
        The job lock; defaults to the Redis lock shared with the drift process.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        fine_tuner: FineTuner | None = None,
        options: TrainerOptions | None = None,
        lock: JobLock | None = None,
        redis_client: redis.Redis | None = None,
        worker_id: str | None = None,
    ) -> None:
        self.settings = settings
        self.fine_tuner = fine_tuner
        self.options = options or TrainerOptions()
        self.worker_id = worker_id or f"trainer-{os.getpid()}"
        self._redis = redis_client or make_redis(settings)
        self._owns_redis = redis_client is None
        self.lock = lock or job_lock_for(settings, self._redis)
        self.jobs_topic = settings.topic(JOBS)
        self.examples_topic = settings.topic(EXAMPLES)
        self.device = select_device(settings.device)
        self.work_dir = Path(settings.state_dir).resolve() / "trainer"
        self.status_key = trainer_status_key(settings)
        self.outcomes: list[JobOutcome] = []
        self._stop = threading.Event()

    # Lifecycle.

    def stop(self) -> None:
        """Ask the loop to return after the current job. Safe to call from a signal handler."""
        self._stop.set()

    def run(self, max_jobs: int | None = None) -> None:
        """Consume jobs until :meth:`stop` or until ``max_jobs`` jobs were handled."""
        ttl_ms = int(self.settings.drift.trigger.lock_ttl_s * 1000)
        consumer = make_consumer(
            self.settings,
            self.settings.topic("trainer"),
            **{"enable.auto.commit": False, "max.poll.interval.ms": min(MAX_POLL_INTERVAL_MS, max(300_000, ttl_ms + 60_000))},
        )
        consumer.subscribe([self.jobs_topic])
        logger.info(
            "trainer %s reading %s with %d torch threads on %s",
            self.worker_id, self.jobs_topic, torch.get_num_threads(), self.device,
        )
        self._set_phase(Phase.IDLE)
        handled = 0
        try:
            while not self._stop.is_set() and (max_jobs is None or handled < max_jobs):
                message = consumer.poll(POLL_TIMEOUT_S)
                if message is None:
                    continue
                if message.error() is not None:
                    if message.error().code() != KafkaError._PARTITION_EOF:
                        logger.warning("consume error on %s: %s", self.jobs_topic, message.error())
                    continue
                self._handle_message(message)
                self._commit(consumer, message)
                handled += 1
        finally:
            consumer.close()
            self._clear_status()
            self.close()
            logger.info("trainer %s stopping after %d job(s)", self.worker_id, handled)

    def close(self) -> None:
        """Close the Redis client if this worker created it; :meth:`run` calls it on return."""
        if self._owns_redis:
            self._redis.close()

    def _handle_message(self, message: Message) -> None:
        try:
            job = TrainingJob.model_validate_json(message.value() or b"")
        except ValidationError as exc:
            logger.error("trainer: skipping invalid training job at %s: %d validation errors", source_of(message), exc.error_count())
            return
        self.outcomes.append(self.handle_job(job))

    def _commit(self, consumer: Consumer, message: Message) -> None:
        try:
            consumer.commit(message=message, asynchronous=False)
        except KafkaException as exc:
            logger.warning("trainer: could not commit %s, so the job may run again after a restart: %s", source_of(message), exc)

    # One job.

    def handle_job(self, job: TrainingJob) -> JobOutcome:
        """Run ``job`` end to end and return its outcome. A job lock that the job held is released in every case."""
        logger.info("trainer %s received job %s for version %d: %s", self.worker_id, job.job_id, job.model_version, job.reason)
        try:
            skip_reason = self._claim(job)
            if skip_reason is not None:
                return self._finish(job, JobOutcome(job.job_id, "skipped", skip_reason))
            with LockKeeper(self.lock, job.pipeline, job.job_id, self.settings.drift.trigger.lock_ttl_s):
                try:
                    outcome = self._run_claimed(job)
                finally:
                    self._set_phase(Phase.IDLE)
        except DriftloopError as exc:
            # Redis, Kafka or the registry failed outside the fine-tune, so the failure
            # is not recorded in the registry, only logged.
            outcome = JobOutcome(job.job_id, "failed", f"training job {job.job_id} failed: {exc}")
        return self._finish(job, outcome)

    def _finish(self, job: TrainingJob, outcome: JobOutcome) -> JobOutcome:
        log = logger.warning if outcome.status in ("failed", "skipped") else logger.info
        log("job %s %s (version %s): %s", job.job_id, outcome.status, outcome.version, outcome.reason)
        return outcome

    def _claim(self, job: TrainingJob) -> str | None:
        """Take the job lock for ``job`` unless another job holds it; return why the job is skipped, or None.

        The drift process normally took the lock for this job already. A free lock
        means it expired, for example while no trainer ran, so the job takes it again.
        """
        holder = self.lock.holder(job.pipeline)
        if holder is None:
            if self.lock.acquire(job.pipeline, job.job_id, self.settings.drift.trigger.lock_ttl_s):
                return None
            holder = self.lock.holder(job.pipeline)
        if holder != job.job_id:
            return f"job {holder} holds the job lock of pipeline {job.pipeline}"
        return None

    def _run_claimed(self, job: TrainingJob) -> JobOutcome:
        with ModelRegistry(self.settings, redis_client=self._redis) as registry:
            champion_record = registry.champion()
            if champion_record is None or champion_record.version != job.model_version:
                current = None if champion_record is None else champion_record.version
                return JobOutcome(job.job_id, "skipped", f"the champion is version {current}, not the job's version {job.model_version}")
            attempt = self._count_attempt(job)
            if attempt > self.options.max_attempts:
                reason = f"training job {job.job_id} failed: started {attempt} times, more than max_attempts={self.options.max_attempts}"
                return self._record_failure(registry, job, champion_record, reason)
            try:
                return self._train_and_register(registry, job, champion_record)
            # Any error of a fine-tune (torch, tokenizers, our own checks) must leave the
            # champion serving and be recorded, so every exception type is caught here.
            except Exception as exc:  # noqa: BLE001
                logger.exception("job %s failed", job.job_id)
                reason = f"training job {job.job_id} failed: {type(exc).__name__}: {exc}"
                return self._record_failure(registry, job, champion_record, reason)

    def _train_and_register(self, registry: ModelRegistry, job: TrainingJob, champion_record: ModelVersion) -> JobOutcome:
        champion = load_artifact(
            champion_record.path,
            device=self.device,
            version=champion_record.version,
            expected_sha256=champion_record.sha256,
            expected_files=champion_record.files,
            expected_labels=champion_record.labels,
        )
        try:
            seed = self.settings.drift.replay.seed
            options = fit_options(self.settings, champion, seed)
            # In head mode the encoder stays frozen, so examples are embedded while the
            # trainer waits for more of them, and the fit and the gate reuse the embeddings.
            embeddings = TextEmbeddings(champion) if options.train_layers == 0 else None
            self._set_phase(Phase.COLLECTING, job.job_id)
            # A job started by hand has no alarm to wait after.
            collected = collect_examples(
                self.settings,
                job,
                min_examples_after_alarm=0 if job.episode.started_by_hand else self.options.min_examples_after_alarm,
                wait_timeout_s=self.options.wait_timeout_s,
                stop=self._stop,
                on_recent=self._embedder(job, embeddings),
            )
            if not collected.recent:
                reason = (
                    f"no labelled examples of version {job.model_version} on {self.examples_topic} yet, so there is "
                    "nothing to train on or to compare with; start the job again once feedback has arrived"
                )
                return JobOutcome(job.job_id, "skipped", reason)
            replay_items = collected.replay.items if collected.replay is not None else ()
            training_set = build_training_set(
                collected.recent, replay_items, self.settings.drift.gate.holdout_fraction, seed=seed, key=lambda example: example.request_id
            )
            logger.info(
                "job %s: %d recent and %d replayed examples; %d to train on, %d recent and %d replayed held out",
                job.job_id, len(collected.recent), len(replay_items), len(training_set.train),
                len(training_set.recent_holdout), len(training_set.replay_holdout),
            )

            self._set_phase(Phase.TRAINING, job.job_id)
            extra = {"parent_version": champion_record.version, "training_job": job.job_id}
            fine_tuner = self.fine_tuner or TorchFineTuner(embeddings)
            candidate = build_candidate(champion, training_set.train, options, fine_tuner, extra)
            self._set_phase(Phase.EVALUATING, job.job_id)
            decision = self._gate(candidate.model, champion, training_set, embeddings)
            if embeddings is not None:
                candidate.fit_figures["embedding_s"] = round(embeddings.seconds, 3)
                candidate.fit_figures["embedded_texts"] = len(embeddings)
        finally:
            champion.release()

        self._set_phase(Phase.REGISTERING, job.job_id)
        window = data_window(job, self.examples_topic, collected, training_set)
        try:
            return self._register(registry, job, candidate, decision, window)
        finally:
            candidate.model.release()

    def _embedder(self, job: TrainingJob, embeddings: TextEmbeddings | None) -> Callable[[list[Example]], object] | None:
        """Return the callback that embeds recent examples as they are read, or None outside head mode.

        Its first call marks the start of the training phase, because from then on the
        trainer computes embeddings. Replayed examples are embedded later, by the fit.
        """
        if embeddings is None:
            return None
        first_call = True

        def embed(examples: list[Example]) -> None:
            nonlocal first_call
            texts = [example.text for example in examples]
            if first_call:
                first_call = False
                self._set_phase(Phase.TRAINING, job.job_id)
            started = time.monotonic()
            computed = embeddings.add(texts)
            if computed > 100:
                logger.info("job %s: embedded %d examples in %.1f s", job.job_id, computed, time.monotonic() - started)

        return embed

    def _gate(
        self, candidate: ServingModel, champion: ServingModel, training_set: TrainingSet[Example], embeddings: TextEmbeddings | None
    ) -> GateDecision:
        attribute = self.settings.group_attribute
        scorer = Scorer(embeddings, self.options.batch_size, self.settings.max_batch_tokens or None)
        recent = gate_slice(candidate, champion, training_set.recent_holdout, attribute, scorer)
        replay = gate_slice(candidate, champion, training_set.replay_holdout, attribute, scorer)
        return evaluate_gate(recent, replay, self.settings.drift.gate)

    def _register(
        self, registry: ModelRegistry, job: TrainingJob, candidate: Candidate, decision: GateDecision, window: dict[str, Any]
    ) -> JobOutcome:
        directory = self.work_dir / f"job-{job.job_id}"
        shutil.rmtree(directory, ignore_errors=True)
        try:
            save_artifact(candidate.model.classifier, candidate.model.tokenizer, candidate.model.metadata, directory)
            record = registry.register(
                directory,
                parent=job.model_version,
                data_window=window,
                metrics=gate_metrics(decision, candidate),
                group_metrics=group_metrics(decision),
                gate=decision.model_dump(mode="json"),
            )
        finally:
            shutil.rmtree(directory, ignore_errors=True)

        if not decision.promote:
            failed = "failed the gate: " + "; ".join(check.message for check in decision.checks if not check.passed)
            registry.reject(record.version, f"training job {job.job_id} {failed}")
            return JobOutcome(job.job_id, "rejected", failed, record.version)
        # The champion may have changed while the job ran, for example by a manual
        # promotion. The candidate was gated against the job's version only.
        current = registry.champion_version()
        if current != job.model_version:
            reason = f"champion changed from version {job.model_version} to {current} while the job ran"
            registry.reject(record.version, f"training job {job.job_id}: {reason}")
            return JobOutcome(job.job_id, "rejected", reason, record.version)
        passed = "passed the gate: " + "; ".join(check.message for check in decision.checks)
        registry.promote(record.version, f"training job {job.job_id} {passed}")
        return JobOutcome(job.job_id, "promoted", passed, record.version)

    def _record_failure(self, registry: ModelRegistry, job: TrainingJob, champion: ModelVersion, reason: str) -> JobOutcome:
        """Record a failed job as a rejected version holding a copy of the champion's weights."""
        try:
            record = registry.register(
                champion.path,
                parent=champion.version,
                data_window={"job_id": job.job_id, "reason": job.reason, "episode": job.episode.model_dump(mode="json")},
                metrics={"error": reason},
                gate={"promote": False, "reason": reason},
            )
            registry.reject(record.version, reason)
        except (DriftloopError, OSError) as exc:
            logger.error("job %s: could not record its failure in the registry: %s", job.job_id, exc)
            return JobOutcome(job.job_id, "failed", reason)
        return JobOutcome(job.job_id, "failed", reason, record.version)

    # Redis bookkeeping.

    def _count_attempt(self, job: TrainingJob) -> int:
        key = f"{self.settings.topic_prefix}trainer:attempts:{job.job_id}"
        try:
            pipe = self._redis.pipeline(transaction=True)
            pipe.incr(key)
            pipe.expire(key, ATTEMPTS_TTL_S)
            attempt, _ = pipe.execute()
        except redis.RedisError as exc:
            raise ServiceError(f"could not count the attempts of job {job.job_id} in {key}: {exc}") from exc
        return int(attempt)

    def _set_phase(self, phase: str, job_id: str = "") -> None:
        fields = {"worker_id": self.worker_id, "phase": phase, "job_id": job_id, "since_ms": str(int(time.time() * 1000))}
        try:
            self._redis.hset(self.status_key, mapping=fields)
        except redis.RedisError as exc:
            logger.warning("trainer could not write its status to %s: %s", self.status_key, exc)

    def _clear_status(self) -> None:
        try:
            self._redis.delete(self.status_key)
        except redis.RedisError as exc:
            logger.warning("trainer could not remove its status %s: %s", self.status_key, exc)


def training_threads(settings: Settings) -> int:
    """Return the torch threads for this machine's cores under ``drift.training.cpu_share``."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return settings.drift.training.threads(cores)


def configure_trainer_process(settings: Settings, nice: int = 0) -> int:
    """Bound the trainer's CPU use: torch threads from the CPU share, and a lower priority by ``nice``.

    Returns the torch thread count. Call it before any torch work, because torch fixes
    its inter-op thread pool on first use.
    """
    threads = training_threads(settings)
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError as exc:
        logger.warning("trainer could not set torch's inter-op threads: %s", exc)
    if nice:
        os.nice(nice)
    return threads
