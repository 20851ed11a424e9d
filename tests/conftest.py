"""Shared fixtures: one embedded stack per test session, a topic prefix per test."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from driftloop.config import Settings, load_settings
from driftloop.infra.stack import EmbeddedStack, free_port

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def stack_settings(tmp_path_factory) -> Settings:
    """Start a Tansu broker and a Redis server on free loopback ports for the session."""
    state_dir = tmp_path_factory.mktemp("stack")
    settings = load_settings(
        None,
        state_dir=state_dir,
        broker_port=free_port(),
        redis_port=free_port(),
        session_timeout_ms=2000,
        partitions=2,
    )
    stack = EmbeddedStack(settings)
    stack.up()
    yield settings
    stack.down()


@pytest.fixture
def settings(stack_settings: Settings, tmp_path: Path) -> Settings:
    """Settings with a topic prefix of this test's own, on the session's stack."""
    prefix = f"t{uuid.uuid4().hex[:8]}."
    return stack_settings.model_copy(update={"topic_prefix": prefix, "state_dir": tmp_path})


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA
