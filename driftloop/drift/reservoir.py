"""The replay buffer: a seeded reservoir sample of older labelled examples.

Training a candidate on recent examples alone lets it forget classes that were common
before the drift. Mixing in a uniform sample of everything seen before counters that.
Add a job's recent examples to the buffer after the job, so that later jobs replay them
as older data.

The trainer rebuilds the buffer from the examples topic for each job, so a restarted
trainer replays the same examples.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


class ReplayBuffer(Generic[T]):
    """Uniform sample of at most ``size`` of the examples added, by reservoir sampling.

    After n additions, every added example is in the buffer with probability
    ``min(1, size / n)`` (Vitter's algorithm R). The same seed and the same sequence of
    additions give the same buffer.

    Parameters
    ----------
    size
        Examples kept.
    seed
        Seed of the sampling.
    """

    def __init__(self, size: int, seed: int = 0) -> None:
        if size < 1:
            raise ValueError(f"size must be at least 1, got {size}")
        self.size = size
        self.seed = seed
        self._rng = random.Random(seed)
        self._items: list[T] = []
        self._n_seen = 0

    def add(self, example: T) -> ReplayBuffer[T]:
        """Offer one example: kept while the buffer has room, then with probability ``size / n_seen``."""
        if len(self._items) < self.size:
            self._items.append(example)
        else:
            slot = self._rng.randrange(self._n_seen + 1)
            if slot < self.size:
                self._items[slot] = example
        self._n_seen += 1
        return self

    def extend(self, examples: Iterable[T]) -> ReplayBuffer[T]:
        """Offer each example in order."""
        for example in examples:
            self.add(example)
        return self

    @property
    def items(self) -> tuple[T, ...]:
        """The sampled examples, in slot order."""
        return tuple(self._items)

    @property
    def n_seen(self) -> int:
        """Examples offered so far."""
        return self._n_seen

    def __len__(self) -> int:
        return len(self._items)


@dataclass(frozen=True)
class TrainingSet(Generic[T]):
    """Examples to train a candidate on and the held-out slices the promotion gate scores."""

    train: tuple[T, ...]
    recent_holdout: tuple[T, ...]
    """Held-out recent examples: the candidate must beat the champion here."""
    replay_holdout: tuple[T, ...]
    """Held-out replayed examples: the candidate must not forget these."""


def build_training_set(
    recent: Sequence[T],
    replay: Sequence[T],
    holdout_fraction: float,
    seed: int = 0,
    key: Callable[[T], Hashable] | None = None,
) -> TrainingSet[T]:
    """Split recent and replayed examples into a shuffled training set and two held-out slices.

    Without ``key``, each input is shuffled with ``seed`` and ``ceil(holdout_fraction *
    len)`` of its examples are held out.

    With ``key``, replayed examples whose key is also among the recent ones are dropped
    first, so no example is both trained on and scored as older data. Then an example
    is held out when a hash of ``seed`` and its key falls below ``holdout_fraction``, so
    the same example is held out in every job or in none. The recent examples of one
    job are the replayed ones of the next, and the champion that the next job's gate
    scores was trained without the held-out ones. Changing ``seed`` between jobs breaks
    that guarantee.

    Either way a non-empty input keeps at least one held-out example.
    """
    if not 0 < holdout_fraction < 1:
        raise ValueError(f"holdout_fraction must be in (0, 1), got {holdout_fraction}")
    rng = random.Random(seed)
    if key is None:
        recent_train, recent_holdout = _split(recent, holdout_fraction, rng)
        replay_train, replay_holdout = _split(replay, holdout_fraction, rng)
    else:
        recent_keys = {key(example) for example in recent}
        replay = [example for example in replay if key(example) not in recent_keys]
        recent_train, recent_holdout = _split_by_key(recent, holdout_fraction, seed, key)
        replay_train, replay_holdout = _split_by_key(replay, holdout_fraction, seed, key)
    train = recent_train + replay_train
    rng.shuffle(train)
    return TrainingSet(tuple(train), tuple(recent_holdout), tuple(replay_holdout))


def _split_by_key(
    examples: Sequence[T], holdout_fraction: float, seed: int, key: Callable[[T], Hashable]
) -> tuple[list[T], list[T]]:
    scores = [_unit_hash(seed, key(example)) for example in examples]
    holdout_indices = {index for index, score in enumerate(scores) if score < holdout_fraction}
    if not holdout_indices and scores:
        holdout_indices = {min(range(len(scores)), key=scores.__getitem__)}
    train = [example for index, example in enumerate(examples) if index not in holdout_indices]
    holdout = [example for index, example in enumerate(examples) if index in holdout_indices]
    return train, holdout


def _unit_hash(seed: int, key: Hashable) -> float:
    """Map ``seed`` and ``key`` to a number in [0, 1), the same in every process and run."""
    digest = hashlib.sha256(f"{seed}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _split(examples: Sequence[T], holdout_fraction: float, rng: random.Random) -> tuple[list[T], list[T]]:
    shuffled = list(examples)
    rng.shuffle(shuffled)
    n_holdout = math.ceil(holdout_fraction * len(shuffled))
    return shuffled[n_holdout:], shuffled[:n_holdout]
