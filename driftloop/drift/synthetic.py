"""Seeded synthetic streams with known change points, for tests and detector tuning."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

from driftloop.drift.monitor import MonitoredExample

START_TIME = datetime(2026, 1, 1, tzinfo=timezone.utc)
"""Event time of the first synthetic example. Each later example comes one second after its predecessor."""

LABELS = ("billing", "technical", "account", "other")
LABEL_WEIGHTS = (0.4, 0.3, 0.2, 0.1)

_WORDS = ("please", "help", "my", "invoice", "login", "fails", "since", "today", "order", "refund", "the", "app")
_PLACEHOLDERS = ("<PERSON>", "<PHONE_NUMBER>", "<EMAIL_ADDRESS>")


def bernoulli_errors(
    n: int,
    seed: int,
    error_rate: float,
    change_position: int | None = None,
    error_rate_after: float | None = None,
) -> list[int]:
    """Return ``n`` error indicators (1 = wrong prediction) drawn with ``error_rate``.

    From ``change_position`` on, the rate is ``error_rate_after``.
    """
    if (change_position is None) != (error_rate_after is None):
        raise ValueError(
            "change_position and error_rate_after must be given together, got "
            f"change_position={change_position}, error_rate_after={error_rate_after}"
        )
    rng = random.Random(seed)
    errors = []
    for position in range(n):
        rate = error_rate if change_position is None or position < change_position else error_rate_after
        errors.append(1 if rng.random() < rate else 0)
    return errors


def stationary_examples(n: int, seed: int) -> list[MonitoredExample]:
    """Return ``n`` joined examples with every signal drawn from one fixed distribution.

    Error rate 0.2, confidence Beta(8, 2), labels :data:`LABELS` with
    :data:`LABEL_WEIGHTS`, and texts of 3 or more tokens, 11 on average, in which 5% of
    the tokens are numbers and 5% are redaction placeholders.
    """
    rng = random.Random(seed)
    return [
        MonitoredExample(
            error=rng.random() < 0.2,
            confidence=rng.betavariate(8, 2),
            text=_text(rng),
            predicted_label=rng.choices(LABELS, LABEL_WEIGHTS)[0],
            event_time=START_TIME + timedelta(seconds=position),
        )
        for position in range(n)
    ]


def _text(rng: random.Random) -> str:
    tokens = []
    for _ in range(3 + int(rng.expovariate(1 / 8))):
        draw = rng.random()
        if draw < 0.05:
            tokens.append(rng.choice(_PLACEHOLDERS))
        elif draw < 0.10:
            tokens.append(str(rng.randrange(10, 100_000)))
        else:
            tokens.append(rng.choice(_WORDS))
    return " ".join(tokens)
