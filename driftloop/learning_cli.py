"""Commands of the continuous-learning loop: ``train``, ``learn drift`` and ``learn trainer``.

``driftloop.cli`` adds them to the ``driftloop`` command through :func:`add_commands`.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import uuid
from datetime import datetime, timezone
from typing import Any

from driftloop.argtypes import non_negative_float, non_negative_int, positive_int
from driftloop.config import Settings, load_settings, log_summary
from driftloop.errors import DriftloopError, ServiceError

logger = logging.getLogger(__name__)

MANUAL_EPISODE_START = datetime(1970, 1, 1, tzinfo=timezone.utc)
"""First alarm time of a job started by hand. Such a job has no alarm, so every example counts as arriving after it."""
PUBLISH_TIMEOUT_S = 10.0
WAIT_INTERVAL_S = 1.0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser(
        "train",
        help="start a training job by hand: take the job lock and publish a job for the champion",
        description=(
            "Takes the pipeline's job lock and publishes a training job for the current champion on the jobs "
            "topic. A running `learn trainer` process picks it up."
        ),
    )
    train.add_argument("--reason", default="started by hand", help="reason recorded with the job (default: started by hand)")
    train.add_argument("--wait", action="store_true", help="wait until the trainer releases the job lock and print the outcome")
    train.add_argument("--timeout", type=non_negative_float, default=3600.0, help="seconds --wait waits at most (default 3600)")
    train.set_defaults(handler=cmd_train)

    learn = subparsers.add_parser(
        "learn",
        help="run a process of the continuous-learning loop",
        description=(
            "The loop needs both processes next to the inference workers and the feedback join: "
            "`learn drift` decides when to train, `learn trainer` trains, gates and promotes."
        ),
    )
    processes = learn.add_subparsers(dest="learn_process", metavar="PROCESS", required=True)
    drift = processes.add_parser(
        "drift",
        help="watch examples and predictions for drift, publish drift events and training jobs",
        description=(
            "Feeds the detectors of the config's drift section with the champion's predictions and joined "
            "examples, and publishes each alarm to the drift topic. Alarms within the cooldown form one "
            "episode, and an episode publishes a training job once enough labelled examples have arrived and "
            "the pipeline's job lock is free. Run one drift process per pipeline: a second one would take some "
            "of the partitions, so each one's detectors would see part of the stream. At start it feeds its "
            "detectors the last 2,000 records of each topic again, without publishing their alarms."
        ),
    )
    drift.set_defaults(handler=cmd_learn_drift)

    trainer = processes.add_parser(
        "trainer",
        help="consume training jobs: fine-tune from the champion, gate, register and promote or reject",
        description=(
            "For each training job: reads the labelled examples of the champion's version plus a seeded "
            "sample of older ones, fine-tunes a copy of the champion (drift.training), compares candidate "
            "and champion on held-out examples (drift.gate), and registers the candidate as the new champion "
            "or as rejected, with the figures and the reason. Runs with fewer torch threads and a lower "
            "priority so that serving goes on."
        ),
    )
    trainer.add_argument(
        "--min-examples-after-alarm",
        type=non_negative_int,
        default=500,
        help=(
            "labelled examples that arrived after a job's first drift alarm to wait for before training, so that "
            "the candidate learns the new traffic (default 500; 0 trains at once on what has arrived)"
        ),
    )
    trainer.add_argument(
        "--wait-timeout",
        type=non_negative_float,
        default=600.0,
        help="seconds to wait for those examples before training on what arrived (default 600)",
    )
    trainer.add_argument("--max-attempts", type=positive_int, default=2, help="starts of one job before it is recorded as failed (default 2)")
    trainer.add_argument(
        "--nice",
        type=int,
        default=10,
        help="amount added to the process's nice value, so serving wins CPU contention (default 10, and 0 keeps the priority)",
    )
    trainer.add_argument("--max-jobs", type=positive_int, help="exit after this many jobs (default: run until stopped)")
    trainer.set_defaults(handler=cmd_learn_trainer)


# train


def cmd_train(args: argparse.Namespace) -> int:
    from driftloop.infra.clients import check_services
    from driftloop.infra.topics import JOBS

    settings = load_settings(args.config)
    check_services(settings, (JOBS,))
    job = publish_manual_job(settings, args.reason)
    print(json.dumps({"job_id": job.job_id, "pipeline": job.pipeline, "model_version": job.model_version}))
    if not args.wait:
        return 0
    outcome = wait_for_job(settings, job.job_id, job.pipeline, args.timeout)
    print(json.dumps(outcome, indent=2, sort_keys=True))
    # A gate rejection is a normal outcome, but a failed or unfinished job is not.
    return 0 if outcome.get("status") in ("promoted", "rejected") else 1


def publish_manual_job(settings: Settings, reason: str):
    """Take the job lock and publish a training job for the champion; return the job.

    Raises DriftloopError when there is no champion or another job holds the lock.
    """
    from driftloop.drift.events import MANUAL_DETECTOR, Episode, ExampleWindow, TrainingJob
    from driftloop.infra.clients import make_producer, make_redis
    from driftloop.infra.topics import JOBS
    from driftloop.registry.heartbeat import read_trainer_status
    from driftloop.registry.records import RegistryKeys
    from driftloop.drift.redis_lock import job_lock_for, pipeline_name

    client = make_redis(settings)
    try:
        champion = client.get(RegistryKeys(settings.topic_prefix).champion)
        if champion is None:
            raise DriftloopError(
                f"the registry under prefix {settings.topic_prefix!r} has no champion to train from; "
                "promote a version with `driftloop models promote N`"
            )
        version = int(champion)
        pipeline = pipeline_name(settings)
        lock = job_lock_for(settings, client)
        job_id = uuid.uuid4().hex
        if not lock.acquire(pipeline, job_id, settings.drift.trigger.lock_ttl_s):
            expires_s = max(0, client.pttl(lock.key(pipeline))) / 1000
            raise DriftloopError(
                f"job {lock.holder(pipeline)} holds the job lock of pipeline {pipeline} (it expires in at most "
                f"{expires_s:.0f} s); {describe_trainer(read_trainer_status(client, settings))}"
            )
        now = datetime.now(timezone.utc)
        job = TrainingJob(
            job_id=job_id,
            pipeline=pipeline,
            model_version=version,
            reason=f"started by hand: {reason}",
            episode=Episode(
                model_version=version,
                first_position=0,
                last_position=0,
                first_time=MANUAL_EPISODE_START,
                last_time=now,
                n_alarms=1,
                detectors=(MANUAL_DETECTOR,),
            ),
            examples=ExampleWindow(start=0, end=0),
            requested_at=now,
        )
        producer = make_producer(settings)
        producer.produce(settings.topic(JOBS), key=pipeline.encode("utf-8"), value=job.model_dump_json().encode("utf-8"))
        if producer.flush(PUBLISH_TIMEOUT_S):
            lock.release(pipeline, job_id)
            raise ServiceError(
                f"training job {job_id} not acknowledged by {settings.bootstrap} within {PUBLISH_TIMEOUT_S:.0f} s; "
                "the job lock was released"
            )
        logger.info("published training job %s for version %d of pipeline %s", job_id, version, pipeline)
        if not read_trainer_status(client, settings):
            logger.warning("no trainer is running, so the job waits on %s until `driftloop learn trainer` starts", settings.topic(JOBS))
        return job
    finally:
        client.close()


def wait_for_job(settings: Settings, job_id: str, pipeline: str, timeout_s: float) -> dict[str, Any]:
    """Wait until ``job_id`` no longer holds the job lock, then return its registry outcome."""
    from driftloop.infra.clients import make_redis
    from driftloop.drift.redis_lock import job_lock_for
    from driftloop.registry.heartbeat import read_trainer_status
    from driftloop.registry.registry import ModelRegistry

    client = make_redis(settings)
    try:
        lock = job_lock_for(settings, client)
        deadline = time.monotonic() + timeout_s
        while lock.holder(pipeline) == job_id and time.monotonic() < deadline:
            time.sleep(WAIT_INTERVAL_S)
        if lock.holder(pipeline) == job_id:
            trainer = read_trainer_status(client, settings)
            status = "running" if trainer.get("job_id") == job_id else "queued"
            return {"job_id": job_id, "status": status, "reason": f"not done after {timeout_s:.0f} s; {describe_trainer(trainer)}"}
        with ModelRegistry(settings, redis_client=client) as registry:
            for record in reversed(registry.list_versions()):
                if record.data_window.get("job_id") == job_id:
                    if "error" in record.metrics:
                        status = "failed"
                    elif record.status.value in ("champion", "retired"):
                        status = "promoted"
                    else:
                        status = record.status.value
                    return {"job_id": job_id, "status": status, "version": record.version, "reason": record.status_reason}
        return {"job_id": job_id, "status": "unknown", "reason": "the job ended without a registry record; see the trainer's log"}
    finally:
        client.close()


def describe_trainer(trainer: dict[str, str]) -> str:
    """Describe the trainer's status hash for an error or a wait result, with the next step when none runs."""
    if not trainer:
        return "no trainer is running: start `driftloop learn trainer` to run the job"
    job = f" job {trainer['job_id']}" if trainer.get("job_id") else ""
    return f"trainer {trainer.get('worker_id')} is {trainer.get('phase')}{job}"


# learn drift, learn trainer


def cmd_learn_drift(args: argparse.Namespace) -> int:
    from driftloop.commands import install_stop_handlers
    from driftloop.infra.clients import check_services
    from driftloop.infra.topics import DRIFT, EXAMPLES, JOBS, PREDICTIONS
    from driftloop.streams.drift import DriftProcess

    settings = load_settings(args.config)
    # Checked before the settings are logged, so that a missing service prints a single line.
    check_services(settings, (EXAMPLES, PREDICTIONS, DRIFT, JOBS))
    log_summary(settings, "drift process")
    if not settings.drift.enabled or not settings.drift.detectors:
        logger.warning(
            "drift detection is off (drift.enabled is false or drift.detectors is empty), so this process "
            "publishes no drift event and starts no training job"
        )
    process = DriftProcess(settings)
    install_stop_handlers(process.stop, settings.shutdown_timeout_s)
    process.run()
    return 0


def cmd_learn_trainer(args: argparse.Namespace) -> int:
    from driftloop.commands import install_stop_handlers
    from driftloop.infra.clients import check_services
    from driftloop.infra.topics import AUDIT, EXAMPLES, JOBS
    from driftloop.workers.trainer import TrainerOptions, TrainerWorker, configure_trainer_process

    settings = load_settings(args.config)
    # Checked before the settings are logged, so that a missing service prints a single line.
    check_services(settings, (EXAMPLES, JOBS, AUDIT))
    log_summary(settings, "trainer")
    options = TrainerOptions(
        min_examples_after_alarm=args.min_examples_after_alarm,
        wait_timeout_s=args.wait_timeout,
        max_attempts=args.max_attempts,
        batch_size=settings.forward_batch_size,
    )
    threads = configure_trainer_process(settings, args.nice)
    logger.info("trainer uses %d torch threads, nice +%d", threads, args.nice)
    worker = TrainerWorker(settings, options=options)
    # A job can take minutes, so the hard-exit deadline after a stop signal is the
    # lock's time to live, not the usual shutdown timeout.
    install_stop_handlers(worker.stop, settings.drift.trigger.lock_ttl_s)
    worker.run(max_jobs=args.max_jobs)
    return 0

