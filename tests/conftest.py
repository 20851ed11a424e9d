"""Shared fixtures: one embedded stack per test session, a topic prefix per test."""

from __future__ import annotations

from pathlib import Path

import pytest

from driftloop.config import Settings

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


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
