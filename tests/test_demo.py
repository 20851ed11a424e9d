"""The demo end to end on banking77: every request predicted, online accuracy equals offline."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from driftloop.infra.stack import free_port

pytestmark = pytest.mark.integration

SUMMARY_KEYS = {
    "requests", "predictions", "distinct_predicted", "dlq", "online_accuracy", "offline_accuracy",
    "throughput_per_s", "latency_ms", "bootstrap", "topics",
}


def test_demo_summary(tmp_path, shared_data):
    config = tmp_path / "config.yaml"
    config.write_text(
        f"state_dir: {tmp_path / 'state'}\nbroker_port: {free_port()}\nredis_port: {free_port()}\n"
        "session_timeout_ms: 2000\npartitions: 2\n",
        encoding="utf-8",
    )
    summary_file = tmp_path / "s.json"
    result = subprocess.run(
        [
            sys.executable, "-m", "driftloop.cli", "--config", str(config), "demo",
            "--data", str(shared_data / "banking77" / "train.csv"), "--limit", "400", "--rate", "0",
            "--feedback-delay", "0.5", "--no-live", "--summary-json", str(summary_file),
        ],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(summary_file.read_text())

    assert SUMMARY_KEYS <= set(summary)
    assert summary["requests"] == 200
    assert summary["distinct_predicted"] == summary["requests"]
    assert summary["dlq"] == 0
    assert summary["redacted"] is True
    assert abs(summary["online_accuracy"] - summary["offline_accuracy"]) <= 0.01
    assert set(summary["latency_ms"]) == {"p50", "p95", "p99"}
    assert "broker stopped" in result.stdout
