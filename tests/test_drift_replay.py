"""The replay buffer and the training set built from it."""

from __future__ import annotations

import pytest

from driftloop.drift.reservoir import ReplayBuffer, build_training_set


def test_buffer_keeps_first_examples_until_full():
    buffer = ReplayBuffer(size=5, seed=0).extend(range(3))

    assert buffer.items == (0, 1, 2)
    assert len(buffer) == 3
    assert buffer.n_seen == 3


def test_buffer_never_exceeds_size():
    buffer = ReplayBuffer(size=50, seed=0).extend(range(10_000))

    assert len(buffer) == 50
    assert buffer.n_seen == 10_000
    assert len(set(buffer.items)) == 50


def test_buffer_same_seed_same_sample():
    first = ReplayBuffer(size=20, seed=7).extend(range(1000))
    second = ReplayBuffer(size=20, seed=7)
    for example in range(1000):
        second.add(example)
    other_seed = ReplayBuffer(size=20, seed=8).extend(range(1000))

    assert first.items == second.items
    assert first.items != other_seed.items


def test_buffer_samples_old_and_new_evenly():
    # Each of 1,000 examples should be kept with probability 100 / 1,000, so the first
    # and the second half of the stream each fill about half of the buffer.
    first_half_shares = []
    for seed in range(50):
        buffer = ReplayBuffer(size=100, seed=seed).extend(range(1000))
        first_half_shares.append(sum(1 for example in buffer.items if example < 500) / 100)

    mean_share = sum(first_half_shares) / len(first_half_shares)
    assert mean_share == pytest.approx(0.5, abs=0.03)


def test_buffer_rejects_zero_size():
    with pytest.raises(ValueError, match="size must be at least 1, got 0"):
        ReplayBuffer(size=0)


def test_training_set_split_sizes():
    recent = [f"recent-{n}" for n in range(100)]
    replay = [f"old-{n}" for n in range(51)]

    training_set = build_training_set(recent, replay, holdout_fraction=0.2, seed=0)

    assert len(training_set.recent_holdout) == 20
    assert len(training_set.replay_holdout) == 11
    assert len(training_set.train) == 80 + 40


def test_training_set_holdout_not_trained_on():
    recent = [f"recent-{n}" for n in range(100)]
    replay = [f"old-{n}" for n in range(50)]

    training_set = build_training_set(recent, replay, holdout_fraction=0.2, seed=0)

    train = set(training_set.train)
    assert train.isdisjoint(training_set.recent_holdout)
    assert train.isdisjoint(training_set.replay_holdout)
    assert train | set(training_set.recent_holdout) | set(training_set.replay_holdout) == set(recent) | set(replay)


def test_training_set_mixes_recent_and_replay():
    recent = [f"recent-{n}" for n in range(100)]
    replay = [f"old-{n}" for n in range(100)]

    train = build_training_set(recent, replay, holdout_fraction=0.2, seed=0).train

    first_half = train[: len(train) // 2]
    assert 20 <= sum(1 for example in first_half if example.startswith("old")) <= 60


def test_training_set_same_seed_same_split():
    recent = list(range(100))
    replay = list(range(100, 150))

    first = build_training_set(recent, replay, holdout_fraction=0.3, seed=4)
    second = build_training_set(recent, replay, holdout_fraction=0.3, seed=4)

    assert first == second


def test_training_set_drops_replayed_duplicates():
    recent = [{"id": n} for n in range(10)]
    replay = [{"id": n} for n in range(5, 20)]

    training_set = build_training_set(recent, replay, holdout_fraction=0.2, seed=0, key=lambda example: example["id"])

    replayed_ids = {example["id"] for example in training_set.replay_holdout}
    trained_ids = [example["id"] for example in training_set.train]
    assert replayed_ids.isdisjoint(range(10))
    assert len(trained_ids) == len(set(trained_ids))
    assert len(trained_ids) + len(training_set.recent_holdout) + len(training_set.replay_holdout) == 20


def test_training_set_empty_replay():
    training_set = build_training_set(list(range(10)), [], holdout_fraction=0.2, seed=0)

    assert training_set.replay_holdout == ()
    assert len(training_set.recent_holdout) == 2
    assert len(training_set.train) == 8


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1])
def test_training_set_rejects_bad_fraction(fraction):
    with pytest.raises(ValueError, match=rf"holdout_fraction must be in \(0, 1\), got {fraction}"):
        build_training_set([1], [2], holdout_fraction=fraction)


def test_keyed_split_holds_out_same_examples_every_job():
    first_recent = [{"id": f"a{n}"} for n in range(400)]
    first = build_training_set(first_recent, [], holdout_fraction=0.2, seed=3, key=lambda example: example["id"])
    # The next job replays the first job's examples as older data.
    second_recent = [{"id": f"b{n}"} for n in range(400)]
    second = build_training_set(second_recent, first_recent, holdout_fraction=0.2, seed=3, key=lambda example: example["id"])

    first_trained = {example["id"] for example in first.train}
    second_replay_held = {example["id"] for example in second.replay_holdout}
    assert second_replay_held == {example["id"] for example in first.recent_holdout}
    assert second_replay_held.isdisjoint(first_trained)
    assert 40 <= len(first.recent_holdout) <= 120


def test_keyed_split_keeps_one_holdout():
    training_set = build_training_set([{"id": "only"}], [], holdout_fraction=0.01, seed=0, key=lambda example: example["id"])

    assert [example["id"] for example in training_set.recent_holdout] == ["only"]
    assert training_set.train == ()
