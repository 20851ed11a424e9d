"""The isolated pipeline of a replay: one lane per model version under a fresh topic prefix.

Each lane has its own topics under ``{run prefix}{lane}.``, inference workers running
as threads of this process (each serving the lane's model, loaded once), and the
feedback join (``driftloop worker join``) as a child process. Nothing is shared with
the recorded pipeline except the broker and Redis.
"""

from __future__ import annotations

import logging
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from driftloop.config import Settings
from driftloop.infra.clients import make_redis
from driftloop.infra.topics import DEAD_LETTER, EXAMPLES, FEEDBACK, METRICS, PREDICTIONS, REQUESTS, create_topics
from driftloop.model import ServingModel
from driftloop.replay.errors import ReplayError
from driftloop.replay.lanes import ModelChoice
from driftloop.testing.services import spawn_driftloop, stop_process, write_config
from driftloop.workers.inference import InferenceWorker
from driftloop.workers.model_source import FixedModel

logger = logging.getLogger(__name__)

LANE_TOPICS = (REQUESTS, FEEDBACK, PREDICTIONS, EXAMPLES, METRICS, DEAD_LETTER)
ADMIN_TIMEOUT_S = 15.0


@dataclass
class Lane:
    """One model version's part of the pipeline."""

    choice: ModelChoice
    settings: Settings
    model: ServingModel
    workers: list[InferenceWorker] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    join: subprocess.Popen | None = None
    join_log: Path | None = None

    @property
    def name(self) -> str:
        return self.choice.name


class ReplayPipeline:
    """Starts, checks, stops and removes the lanes of one replay run."""

    def __init__(
        self,
        settings: Settings,
        choices: Sequence[ModelChoice],
        models: dict[str, ServingModel],
        *,
        run_dir: Path,
        workers_per_lane: int = 1,
        join_log_level: str = "WARNING",
    ) -> None:
        if workers_per_lane < 1:
            raise ReplayError(f"workers per version must be at least 1, got {workers_per_lane}")
        self.settings = settings
        self.run_dir = run_dir
        self.workers_per_lane = workers_per_lane
        self.join_log_level = join_log_level
        self.lanes = [
            Lane(
                choice=choice,
                settings=settings.model_copy(
                    update={"topic_prefix": f"{settings.topic_prefix}{choice.name}.", "state_dir": run_dir / choice.name}
                ),
                model=models[choice.name],
            )
            for choice in choices
        ]

    # Lifecycle.

    def start(self) -> None:
        """Create every lane's topics, then start its feedback join and inference workers."""
        for lane in self.lanes:
            Path(lane.settings.state_dir).mkdir(parents=True, exist_ok=True)
            create_topics(lane.settings, LANE_TOPICS)
        for lane in self.lanes:
            self._start_join(lane)
            self._start_workers(lane)

    def _start_join(self, lane: Lane) -> None:
        state_dir = Path(lane.settings.state_dir)
        config = write_config(lane.settings, state_dir / "config.yaml")
        lane.join_log = state_dir / "join.log"
        lane.join = spawn_driftloop(["--log-level", self.join_log_level, "worker", "join"], config, lane.join_log)
        logger.info("lane %s: feedback join started, pid %d, log %s", lane.name, lane.join.pid, lane.join_log)

    def _start_workers(self, lane: Lane) -> None:
        for index in range(self.workers_per_lane):
            worker = InferenceWorker(lane.settings, FixedModel(lane.model), worker_id=f"replay-{lane.name}-{index}")
            thread = threading.Thread(target=self._run_worker, args=(lane, worker), name=f"replay-{lane.name}-{index}", daemon=True)
            lane.workers.append(worker)
            lane.threads.append(thread)
            thread.start()

    @staticmethod
    def _run_worker(lane: Lane, worker: InferenceWorker) -> None:
        try:
            worker.run()
        except BaseException as exc:  # reported by check_alive in the main thread
            logger.exception("lane %s: worker %s failed", lane.name, worker.worker_id)
            lane.errors.append(exc)

    def wait_until_assigned(self, timeout_s: float) -> bool:
        """Wait until each lane's workers together own every requests partition; return whether they do."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.check_alive()
            if all(self._assigned(lane) >= lane.settings.partitions for lane in self.lanes):
                return True
            time.sleep(0.1)
        logger.warning("workers did not own every requests partition within %.0f s; publishing anyway", timeout_s)
        return False

    @staticmethod
    def _assigned(lane: Lane) -> int:
        owned: set[int] = set()
        for worker in lane.workers:
            try:
                owned.update(tp.partition for tp in worker.consumer.assignment())
            except (KafkaException, RuntimeError):
                # A consumer that is closing raises RuntimeError; check_alive reports a dead worker.
                continue
        return len(owned)

    def check_alive(self) -> None:
        """Raise ReplayError if a worker or a join of any lane has stopped."""
        for lane in self.lanes:
            if lane.errors:
                raise ReplayError(f"lane {lane.name}: an inference worker failed: {lane.errors[0]!r}")
            if any(not thread.is_alive() for thread in lane.threads):
                raise ReplayError(f"lane {lane.name}: an inference worker stopped unexpectedly; see the log above")
            if lane.join is not None and lane.join.poll() is not None:
                raise ReplayError(
                    f"lane {lane.name}: the feedback join exited with code {lane.join.returncode}; see {lane.join_log}"
                )

    def stop(self) -> None:
        """Stop every worker and join; safe to call more than once."""
        for lane in self.lanes:
            for worker in lane.workers:
                worker.stop()
        for lane in self.lanes:
            for thread in lane.threads:
                thread.join(lane.settings.shutdown_timeout_s * 2 + 5)
                if thread.is_alive():
                    logger.error("lane %s: worker thread %s did not stop", lane.name, thread.name)
            if lane.join is not None:
                code = stop_process(lane.join)
                logger.info("lane %s: feedback join stopped with code %s", lane.name, code)

    def remove(self) -> None:
        """Delete the run's topics (the joins' internal ones too) and its Redis keys."""
        prefix = self.settings.topic_prefix
        admin = AdminClient(self.settings.kafka_client_config())
        try:
            names = [name for name in admin.list_topics(timeout=ADMIN_TIMEOUT_S).topics if name.startswith(prefix)]
            if names:
                for name, future in admin.delete_topics(names, operation_timeout=ADMIN_TIMEOUT_S).items():
                    try:
                        future.result(ADMIN_TIMEOUT_S)
                    except KafkaException as exc:
                        logger.warning("could not delete replay topic %s: %s", name, exc)
        except KafkaException as exc:
            logger.warning("could not list the replay topics under %s to delete them: %s", prefix, exc)
        client = make_redis(self.settings)
        try:
            keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
            if keys:
                client.delete(*keys)
        finally:
            client.close()
