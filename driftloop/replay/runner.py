"""Running a replay: validate the recording, start the lanes, publish, wait, collect.

Steps of :func:`run_replay`:

1. Read and validate the whole recording, then check every lane's model artifact.
   Nothing has touched the broker yet, so a bad file or model publishes nothing.
2. Create each lane's topics under a fresh prefix and start its join and workers.
3. Publish the recorded requests and feedback into every lane.
4. Wait until every lane has a prediction for every request and has joined every
   feedback whose request was recorded, or until the timeout.
5. Stop the lanes, read the joins' online metrics, and delete the run's topics and
   Redis keys unless they are to be kept.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import redis

from driftloop.config import Settings
from driftloop.infra.clients import make_redis
from driftloop.replay.collector import LaneCollector
from driftloop.replay.errors import ReplayError
from driftloop.replay.lanes import ModelChoice, check_models
from driftloop.replay.outcome import LaneOutcome, ReplayOutcome, recorded_lane
from driftloop.replay.pipeline import Lane, ReplayPipeline
from driftloop.replay.publisher import Publisher
from driftloop.replay.reader import Recording, read_recording
from driftloop.replay.result import ReplayResult
from driftloop.streams.metrics import read_metrics

logger = logging.getLogger(__name__)

JOIN_CHECK_INTERVAL_S = 0.5


@dataclass(frozen=True)
class ReplayOptions:
    """How to replay.

    ``speed`` multiplies the recorded pace (1.0 replays at recorded speed, 10.0 ten
    times faster); None publishes as fast as possible. ``workers`` is the number of
    inference worker processes per lane. ``timeout_s`` bounds the wait for
    predictions and joins after publishing. ``seed`` seeds torch in every worker
    before it loads its model.
    """

    speed: float | None = None
    workers: int = 1
    seed: int = 0
    timeout_s: float = 600.0
    ready_timeout_s: float = 60.0
    keep_topics: bool = False
    drift: bool = True
    examples: int = 10


def run_replay(
    settings: Settings,
    recording: Recording | str | Path,
    choices: Sequence[ModelChoice],
    options: ReplayOptions = ReplayOptions(),
    *,
    run_dir: Path | None = None,
) -> ReplayResult:
    """Replay ``recording`` into one lane per model choice and return the result with its report."""
    # 1. Validate everything before touching the broker.
    if not isinstance(recording, Recording):
        recording = read_recording(recording)
    if not recording.requests:
        raise ReplayError(f"{recording.path} contains no requests, so there is nothing to replay")
    if not choices:
        raise ReplayError("no model version to serve")
    if options.speed is not None and options.speed <= 0:
        raise ReplayError(f"speed must be above 0, got {options.speed}")
    check_models(choices)

    run_id = time.strftime("%Y%m%d%H%M%S") + uuid.uuid4().hex[:6]
    run_settings = settings.model_copy(update={"topic_prefix": f"{settings.topic_prefix}replay-{run_id}."})
    run_dir = run_dir or Path(settings.state_dir).resolve() / "replay" / run_id
    pipeline = ReplayPipeline(
        run_settings, choices, run_dir=run_dir, workers_per_lane=options.workers, seed=options.seed
    )
    logger.info(
        "replaying %s into lanes %s under %s", recording.path, [c.name for c in choices], run_settings.topic_prefix
    )

    collectors: dict[str, LaneCollector] = {}
    redis_client = make_redis(settings)
    try:
        # 2. Start the lanes.
        pipeline.start()
        collectors = {lane.name: LaneCollector(lane.settings) for lane in pipeline.lanes}
        pipeline.wait_until_ready(options.ready_timeout_s)

        # 3. Publish.
        publisher = Publisher(run_settings, [lane.settings for lane in pipeline.lanes])
        started = time.monotonic()
        stats = publisher.publish(recording.events, speed=options.speed, check=pipeline.check_alive)

        # 4. Wait for every prediction and join.
        progress = _wait_for_completion(pipeline, collectors, recording, redis_client, options.timeout_s)
        seconds = time.monotonic() - started
    finally:
        # 5. Stop, collect and clean up.
        pipeline.stop()
        lanes = [_lane_outcome(lane, collectors.get(lane.name), redis_client) for lane in pipeline.lanes]
        for collector in collectors.values():
            collector.close()
        redis_client.close()
        if not options.keep_topics:
            pipeline.remove()

    recorded = recorded_lane(recording)
    outcome = ReplayOutcome(
        recording=recording,
        lanes=tuple(lanes + ([recorded] if recorded else [])),
        publish=stats,
        topic_prefix=run_settings.topic_prefix,
        speed=options.speed,
        seed=options.seed,
        seconds=seconds,
        predictions_seconds=None if progress.all_predicted_at is None else progress.all_predicted_at - started,
        complete=progress.complete,
        kept_topics=options.keep_topics,
    )
    return ReplayResult.build(outcome, settings, drift=options.drift, examples=options.examples)


def _expected_joins(recording: Recording) -> int:
    request_ids = {record.request_id for record in recording.requests}
    return len({record.request_id for record in recording.feedback if record.request_id in request_ids})


@dataclass
class _Progress:
    complete: bool = False
    all_predicted_at: float | None = None  # monotonic time when every lane had predicted every request


def _wait_for_completion(
    pipeline: ReplayPipeline,
    collectors: dict[str, LaneCollector],
    recording: Recording,
    redis_client: redis.Redis,
    timeout_s: float,
) -> _Progress:
    """Wait until every lane has predicted every request and joined every feedback, or until the timeout."""
    request_ids = {record.request_id for record in recording.requests}
    expected_joins = _expected_joins(recording)
    deadline = time.monotonic() + timeout_s
    progress = _Progress()
    joined: dict[str, int] = {}
    last_join_check = 0.0
    while True:
        pipeline.check_alive()
        for collector in collectors.values():
            collector.poll(0.1)
        predicted = {name: len(request_ids.intersection(c.predictions)) for name, c in collectors.items()}
        all_predicted = all(count == len(request_ids) for count in predicted.values())
        if all_predicted and progress.all_predicted_at is None:
            progress.all_predicted_at = time.monotonic()
        if time.monotonic() - last_join_check >= JOIN_CHECK_INTERVAL_S:
            joined = {lane.name: _joined(redis_client, lane) for lane in pipeline.lanes}
            last_join_check = time.monotonic()
        if all_predicted and all(joined.get(name, 0) >= expected_joins for name in collectors):
            progress.complete = True
            return progress
        if time.monotonic() > deadline:
            logger.warning(
                "replay incomplete after %.0f s: predicted %s of %d requests, joined %s of %d feedback",
                timeout_s,
                predicted,
                len(request_ids),
                joined,
                expected_joins,
            )
            return progress


def _joined(client: redis.Redis, lane: Lane) -> int:
    try:
        return int(read_metrics(client, lane.settings.topic_prefix)["join"].get("joined", 0))
    except redis.RedisError as exc:
        logger.warning("lane %s: could not read the join's metrics: %s", lane.name, exc)
        return 0


def _lane_outcome(lane: Lane, collector: LaneCollector | None, client: redis.Redis) -> LaneOutcome:
    if collector is not None:
        collector.poll(0.5)
    try:
        online = read_metrics(client, lane.settings.topic_prefix)
    except redis.RedisError as exc:
        logger.warning("lane %s: could not read the join's metrics: %s", lane.name, exc)
        online = {}
    return LaneOutcome(
        name=lane.name,
        origin=lane.choice.origin,
        path=str(lane.choice.path),
        topic_prefix=lane.settings.topic_prefix,
        predictions=dict(collector.predictions) if collector else {},
        version=lane.choice.version,
        duplicates=collector.duplicates if collector else 0,
        dead_letters=collector.dead_letters if collector else 0,
        online=online,
    )
