"""The isolated pipeline of a replay: one lane per model version under a fresh topic prefix.

Each lane has its own topics under ``{run prefix}{lane}.``, its inference workers
(``python -m driftloop.replay.worker``, one process each, serving the lane's model
version) and its feedback join (``driftloop worker join``), all as child processes
whose output goes to ``{run dir}/{lane}/``. Nothing is shared with the recorded
pipeline except the broker and Redis.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import redis
from confluent_kafka import ConsumerGroupState, KafkaException
from confluent_kafka.admin import AdminClient

from driftloop.config import Settings
from driftloop.infra.clients import make_redis
from driftloop.infra.topics import DEAD_LETTER, EXAMPLES, FEEDBACK, METRICS, PREDICTIONS, REQUESTS, create_topics
from driftloop.replay.errors import ReplayError
from driftloop.replay.lanes import ModelChoice
from driftloop.testing.services import stop_process, write_config

logger = logging.getLogger(__name__)

LANE_TOPICS = (REQUESTS, FEEDBACK, PREDICTIONS, EXAMPLES, METRICS, DEAD_LETTER)
ADMIN_TIMEOUT_S = 15.0
# Niceness added to every lane process, so that when the cores are busy the publisher
# keeps its pace instead of yielding to the workers that consume what it publishes.
LANE_NICENESS = 10


@dataclass
class LaneProcess:
    """A child process of a lane and where its output goes."""

    role: str  # "join" or "worker-{index}"
    process: subprocess.Popen
    log: Path


@dataclass
class Lane:
    """One model version's part of the pipeline."""

    choice: ModelChoice
    settings: Settings
    processes: list[LaneProcess] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.choice.name

    @property
    def directory(self) -> Path:
        return Path(self.settings.state_dir)

    @property
    def worker_group(self) -> str:
        return self.settings.topic("inference")

    @property
    def join_group(self) -> str:
        return self.settings.topic("join")


class ReplayPipeline:
    """Starts, checks, stops and removes the lanes of one replay run."""

    def __init__(
        self,
        settings: Settings,
        choices: Sequence[ModelChoice],
        *,
        run_dir: Path,
        workers_per_lane: int = 1,
        seed: int = 0,
        log_level: str = "WARNING",
    ) -> None:
        if workers_per_lane < 1:
            raise ReplayError(f"workers per version must be at least 1, got {workers_per_lane}")
        self.settings = settings
        self.run_dir = run_dir
        self.workers_per_lane = workers_per_lane
        self.seed = seed
        self.log_level = log_level
        # Without a configured torch_threads, the worker processes share the cores
        # instead of each starting one torch thread per core.
        threads = settings.torch_threads or max(1, (os.cpu_count() or 1) // (len(choices) * workers_per_lane))
        self.lanes = [
            Lane(
                choice=choice,
                settings=settings.model_copy(
                    update={
                        "topic_prefix": f"{settings.topic_prefix}{choice.name}.",
                        "state_dir": run_dir / choice.name,
                        "torch_threads": threads,
                    }
                ),
            )
            for choice in choices
        ]

    # Lifecycle.

    def start(self) -> None:
        """Create every lane's topics, then start its feedback join and inference workers."""
        for lane in self.lanes:
            lane.directory.mkdir(parents=True, exist_ok=True)
            create_topics(lane.settings, LANE_TOPICS)
        for lane in self.lanes:
            config = write_config(lane.settings, lane.directory / "config.yaml")
            join = [
                sys.executable,
                "-m",
                "driftloop.cli",
                "--config",
                str(config),
                "--log-level",
                self.log_level,
                "worker",
                "join",
            ]
            self._spawn(lane, "join", join)
            for index in range(self.workers_per_lane):
                self._spawn(lane, f"worker-{index}", self._worker_command(lane, config, index))

    def _worker_command(self, lane: Lane, config: Path, index: int) -> list[str]:
        command = [
            sys.executable, "-m", "driftloop.replay.worker",
            "--config", str(config),
            "--model", str(lane.choice.path),
            "--model-version", str(lane.choice.version),
            "--seed", str(self.seed),
            "--worker-id", f"replay-{lane.name}-{index}",
            "--log-level", self.log_level,
        ]  # fmt: skip
        if lane.choice.sha256:
            command += ["--sha256", lane.choice.sha256]
        return command

    def _spawn(self, lane: Lane, role: str, command: list[str]) -> None:
        log = lane.directory / f"{role}.log"
        # Settings come from the lane's config file only, not from this process's variables.
        environment = {key: value for key, value in os.environ.items() if not key.startswith("DRIFTLOOP_")}
        with log.open("ab") as output:
            process = subprocess.Popen(
                command, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=environment
            )
        lane.processes.append(LaneProcess(role, process, log))
        _lower_priority(process.pid)
        logger.info("lane %s: started %s, pid %d, log %s", lane.name, role, process.pid, log)

    def wait_until_ready(self, timeout_s: float) -> bool:
        """Wait until each lane's worker group and join group are stable; return whether they became so in time.

        Publishing earlier loses nothing, because workers and joins start from the
        earliest offset, but the first requests' latency and the replay's end-to-end
        time would then include the processes' start-up.
        """
        admin = AdminClient(self.settings.kafka_client_config())
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.check_alive()
            if all(
                self._group_ready(admin, lane, group)
                for lane in self.lanes
                for group in (lane.worker_group, lane.join_group)
            ):
                return True
            time.sleep(0.2)
        logger.warning("worker and join groups were not ready within %.0f s; publishing anyway", timeout_s)
        return False

    @staticmethod
    def _group_ready(admin: AdminClient, lane: Lane, group_id: str) -> bool:
        try:
            group = admin.describe_consumer_groups([group_id], request_timeout=ADMIN_TIMEOUT_S)[group_id].result(
                ADMIN_TIMEOUT_S
            )
        except KafkaException as exc:
            logger.debug("lane %s: could not describe group %s: %s", lane.name, group_id, exc)
            return False
        if group.state != ConsumerGroupState.STABLE:
            return False
        # NOTE: Tansu 0.6 lists no members for a stable group, so there only the state is
        # checked. Where a broker lists the members, their assignment is checked too.
        if not group.members:
            return True
        owned = {(tp.topic, tp.partition) for member in group.members for tp in member.assignment.topic_partitions}
        if group_id == lane.join_group:
            return bool(owned)
        requests_topic = lane.settings.topic(REQUESTS)
        return len({partition for topic, partition in owned if topic == requests_topic}) >= lane.settings.partitions

    def check_alive(self) -> None:
        """Raise ReplayError if a worker or join of any lane has exited."""
        for lane in self.lanes:
            for child in lane.processes:
                if child.process.poll() is not None:
                    raise ReplayError(
                        f"lane {lane.name}: the {child.role} process exited with code {child.process.returncode}; see {child.log}"
                    )

    def stop(self) -> None:
        """Stop every child process; safe to call more than once."""
        children = [(lane, child) for lane in self.lanes for child in lane.processes]
        # All get SIGTERM first, so that they shut down side by side.
        for _, child in children:
            if child.process.poll() is None:
                child.process.terminate()
        for lane, child in children:
            code = stop_process(child.process, timeout=lane.settings.shutdown_timeout_s * 2 + 5)
            logger.info("lane %s: %s stopped with code %s", lane.name, child.role, code)

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
            logger.warning("could not list the topics under %s to delete them: %s", prefix, exc)
        client = make_redis(self.settings)
        try:
            keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
            if keys:
                client.delete(*keys)
        except redis.RedisError as exc:
            logger.warning("could not delete the Redis keys under %s: %s", prefix, exc)
        finally:
            client.close()


def _lower_priority(pid: int) -> None:
    """Add LANE_NICENESS to a child's niceness; threads it starts later inherit it."""
    try:
        current = os.getpriority(os.PRIO_PROCESS, pid)
        os.setpriority(os.PRIO_PROCESS, pid, min(19, current + LANE_NICENESS))
    except OSError as exc:
        # The child may have exited already; check_alive reports that.
        logger.warning("could not lower the CPU priority of pid %d: %s", pid, exc)
