"""Shared fixtures: one embedded stack per test session, a topic prefix per test."""

from __future__ import annotations

from pathlib import Path

import pytest

from driftloop.config import Settings
from driftloop.infra.topics import AUDIT, create_topics
from driftloop.registry.registry import ModelRegistry
from driftloop.testing.models import write_tiny_artifact

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TINY_LABELS = ("billing", "bug", "praise")


@pytest.fixture(scope="session")
def stack_settings(driftloop_stack: Settings) -> Settings:
    """The session's Tansu broker and Redis server, started by the driftloop pytest plugin."""
    return driftloop_stack


@pytest.fixture
def settings(driftloop_settings: Settings) -> Settings:
    """Settings with a topic prefix and state directory of this test's own, on the session's stack."""
    return driftloop_settings


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> dict[int, Path]:
    """Three tiny artifacts with the labels TINY_LABELS and different weights, by seed."""
    root = tmp_path_factory.mktemp("artifacts")
    paths = {}
    for seed in range(3):
        paths[seed] = root / f"seed{seed}"
        write_tiny_artifact(paths[seed], TINY_LABELS, seed=seed)
    return paths


@pytest.fixture
def registry(settings: Settings):
    """The model registry under this test's prefix, with its audit topic created."""
    create_topics(settings, (AUDIT,))
    with ModelRegistry(settings) as registry:
        yield registry
