"""Running pipeline processes from tests, demos and benchmarks."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from driftloop.config import Settings


def write_config(settings: Settings, path: Path) -> Path:
    """Write ``settings`` as a YAML file that ``--config`` reads back to the same values."""
    data = settings.model_dump(mode="json", exclude_defaults=True)
    path.write_text(yaml.safe_dump(data, sort_keys=True), encoding="utf-8")
    return path


def spawn_driftloop(args: list[str], config: Path, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start ``driftloop --config CONFIG ARGS...`` in its own process, output to ``log``."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith("DRIFTLOOP_")}
    environment.update(env or {})
    handle = log.open("ab")
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "driftloop.cli", "--config", str(config), *args],
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=environment,
        )
    finally:
        handle.close()


def stop_process(process: subprocess.Popen, timeout: float = 20.0) -> int:
    """Send SIGTERM, wait up to ``timeout``, then SIGKILL; return the exit code."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
    return process.returncode


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()
