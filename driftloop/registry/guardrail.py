"""Automatic rollback when a new champion's online accuracy falls below its predecessor's.

Online accuracy comes from joined feedback, counted per model version in the Redis
hashes ``{prefix}metrics:v{version}`` (fields ``n`` and ``correct``) by the feedback
join. :func:`decide` is pure; :func:`run_guardrail` reads the counts and rolls back,
and :func:`run_guardrail_loop` repeats that check at a fixed interval.

NOTE: the counts are totals over a version's whole life, not a sliding window. A
version promoted a second time is judged on its earlier traffic too.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import redis

from driftloop.errors import RegistryError, ServiceError
from driftloop.registry.records import ChampionChange
from driftloop.registry.registry import ModelRegistry

logger = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 30.0


class Verdict(StrEnum):
    KEEP = "keep"
    ROLLBACK = "rollback"
    INSUFFICIENT_DATA = "insufficient_data"


@dataclass(frozen=True)
class GuardrailPolicy:
    """When to roll back.

    ``window``: joined feedback that each of the two versions needs before they are
    compared. ``margin``: how far, in accuracy points (0.02 = 2 %), the champion may
    fall below the previous champion before it is rolled back.
    """

    window: int = 500
    margin: float = 0.02

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ValueError(f"window must be at least 1 joined feedback, got {self.window}")
        if not 0.0 <= self.margin < 1.0:
            raise ValueError(f"margin must be in [0, 1), got {self.margin}")


@dataclass(frozen=True)
class OnlineAccuracy:
    """Joined feedback count and correct predictions of one version."""

    version: int
    joined: int
    correct: int

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.joined if self.joined else None


@dataclass(frozen=True)
class GuardrailDecision:
    verdict: Verdict
    champion: OnlineAccuracy | None
    previous: OnlineAccuracy | None
    reason: str


def decide(champion: OnlineAccuracy, previous: OnlineAccuracy, policy: GuardrailPolicy) -> GuardrailDecision:
    """Compare the champion with the previous champion under ``policy``."""
    if champion.joined < policy.window or previous.joined < policy.window:
        return GuardrailDecision(
            Verdict.INSUFFICIENT_DATA,
            champion,
            previous,
            f"need {policy.window} joined feedback per version; version {champion.version} has {champion.joined}, "
            f"version {previous.version} has {previous.joined}",
        )
    new_accuracy = champion.accuracy or 0.0
    old_accuracy = previous.accuracy or 0.0
    comparison = (
        f"online accuracy of version {champion.version} is {new_accuracy:.4f} over {champion.joined} joined feedback, "
        f"version {previous.version} had {old_accuracy:.4f} over {previous.joined}, margin {policy.margin:.4f}"
    )
    if new_accuracy < old_accuracy - policy.margin:
        return GuardrailDecision(Verdict.ROLLBACK, champion, previous, comparison)
    return GuardrailDecision(Verdict.KEEP, champion, previous, comparison)


def read_online_accuracy(client: redis.Redis, prefix: str, version: int) -> OnlineAccuracy:
    key = f"{prefix}metrics:v{version}"
    try:
        joined, correct = client.hmget(key, "n", "correct")
    except redis.RedisError as exc:
        raise ServiceError(f"could not read online metrics from {key}: {exc}") from exc
    return OnlineAccuracy(version, int(float(joined or 0)), int(float(correct or 0)))


@dataclass(frozen=True)
class GuardrailOutcome:
    decision: GuardrailDecision
    rollback: ChampionChange | None


def run_guardrail(registry: ModelRegistry, client: redis.Redis, policy: GuardrailPolicy) -> GuardrailOutcome:
    """Check the champion against the previous champion and roll back if it falls below the policy's margin.

    The rollback is made only if the evaluated version is still the champion, and it
    is an audit event like any rollback.
    """
    champion_version = registry.champion_version()
    previous_version = registry.rollback_target()
    if champion_version is None or previous_version is None:
        decision = GuardrailDecision(Verdict.INSUFFICIENT_DATA, None, None, "no previous champion to compare with")
        return GuardrailOutcome(decision, None)
    prefix = registry.keys.prefix
    champion = read_online_accuracy(client, prefix, champion_version)
    previous = read_online_accuracy(client, prefix, previous_version)
    decision = decide(champion, previous, policy)
    if decision.verdict != Verdict.ROLLBACK:
        logger.debug("guardrail keeps version %d: %s", champion.version, decision.reason)
        return GuardrailOutcome(decision, None)
    try:
        change = registry.rollback(f"guardrail: {decision.reason}", expected_version=champion.version)
    except RegistryError as exc:
        logger.warning("guardrail did not roll back version %d: %s", champion.version, exc)
        return GuardrailOutcome(decision, None)
    return GuardrailOutcome(decision, change)


def run_guardrail_loop(
    registry: ModelRegistry,
    client: redis.Redis,
    policy: GuardrailPolicy,
    *,
    interval_s: float = DEFAULT_INTERVAL_S,
    max_checks: int | None = None,
    stop: threading.Event | None = None,
    on_outcome: Callable[[GuardrailOutcome], None] | None = None,
) -> int:
    """Run :func:`run_guardrail` every ``interval_s`` seconds and return the number of rollbacks.

    The loop ends when ``stop`` is set or after ``max_checks`` checks (None: no limit).
    A check that fails with ServiceError (Redis or the broker unreachable) is logged
    and the next one runs on schedule. The failure is logged once until a check
    succeeds again. ``on_outcome`` receives the outcome of every check that succeeded.
    """
    if interval_s <= 0:
        raise ValueError(f"interval_s must be positive, got {interval_s}")
    if max_checks is not None and max_checks < 1:
        raise ValueError(f"max_checks must be at least 1 or None, got {max_checks}")
    stop = stop or threading.Event()
    checks = rollbacks = 0
    logger.info(
        "guardrail checking every %.1f s: window %d joined feedback, margin %.4f", interval_s, policy.window, policy.margin
    )
    failing = False
    last_state: tuple[Verdict, int | None] | None = None
    while not stop.is_set() and (max_checks is None or checks < max_checks):
        started = time.monotonic()
        checks += 1
        try:
            outcome = run_guardrail(registry, client, policy)
        except ServiceError as exc:
            if not failing:
                logger.warning("guardrail check failed; next check in %.1f s: %s", interval_s, exc)
            failing = True
        else:
            if failing:
                logger.info("guardrail checks succeed again")
            failing = False
            rollbacks += outcome.rollback is not None
            last_state = _log_if_changed(outcome, last_state)
            if on_outcome is not None:
                on_outcome(outcome)
        if max_checks is not None and checks >= max_checks:
            break
        stop.wait(max(0.0, interval_s - (time.monotonic() - started)))
    logger.info("guardrail stopped after %d checks and %d rollbacks", checks, rollbacks)
    return rollbacks


def _log_if_changed(outcome: GuardrailOutcome, last_state: tuple[Verdict, int | None] | None) -> tuple[Verdict, int | None]:
    """Log a check's verdict at INFO when it or the judged version changed; return the new state."""
    decision = outcome.decision
    state = (decision.verdict, decision.champion.version if decision.champion is not None else None)
    if state != last_state:
        logger.info("guardrail verdict %s for version %s: %s", decision.verdict.value, state[1], decision.reason)
    return state
