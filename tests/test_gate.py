"""The promotion gate: promote or reject a candidate, with figures and reasons."""

from __future__ import annotations

import json

import pydantic
import pytest

from driftloop.drift.gate import GateDecision, GateSlice, evaluate_gate
from driftloop.drift.settings import GateSettings

SETTINGS = GateSettings(min_recent_gain=0.02, max_replay_loss=0.02, max_group_loss=0.05, min_group_examples=30)


def results(correct: int, total: int) -> tuple[bool, ...]:
    """Return ``total`` results of which the first ``correct`` are right."""
    return (True,) * correct + (False,) * (total - correct)


def grouped_slice(groups: dict[str, tuple[int, int, int]]) -> GateSlice:
    """Build a slice from {group: (candidate correct, champion correct, examples)}."""
    candidate, champion, names = [], [], []
    for name, (candidate_correct, champion_correct, total) in groups.items():
        candidate += results(candidate_correct, total)
        champion += results(champion_correct, total)
        names += [name] * total
    return GateSlice(candidate_correct=candidate, champion_correct=champion, groups=names)


def check(decision: GateDecision, name: str):
    return next(check for check in decision.checks if check.name == name)


def test_gate_promotes_better_candidate():
    recent = grouped_slice({"retail": (180, 160, 200), "business": (170, 150, 200)})
    replay = grouped_slice({"retail": (90, 90, 100), "business": (89, 90, 100)})

    decision = evaluate_gate(recent, replay, SETTINGS)

    assert decision.promote is True
    assert decision.recent.candidate_accuracy == pytest.approx(0.875)
    assert decision.recent.champion_accuracy == pytest.approx(0.775)
    assert decision.replay.gain == pytest.approx(-0.005)
    assert decision.reason.startswith("promote: recent accuracy 0.8750 vs champion 0.7750 on 400 examples")
    assert "replayed accuracy 0.8950 vs champion 0.9000 on 200 examples, change -0.0050, within" in decision.reason
    assert "over 2 group(s)" in decision.reason


def test_gate_rejects_worse_candidate():
    recent = GateSlice(candidate_correct=results(150, 200), champion_correct=results(160, 200))
    replay = GateSlice(candidate_correct=results(90, 100), champion_correct=results(90, 100))

    decision = evaluate_gate(recent, replay, SETTINGS)

    assert decision.promote is False
    assert check(decision, "recent_gain").passed is False
    assert check(decision, "replay_loss").passed is True
    assert decision.reason == (
        "reject: recent accuracy 0.7500 vs champion 0.8000 on 200 examples, "
        "gain -0.0500 is below the required +0.0200"
    )


def test_gate_rejects_small_gain():
    recent = GateSlice(candidate_correct=results(163, 200), champion_correct=results(160, 200))
    replay = GateSlice(candidate_correct=(), champion_correct=())

    decision = evaluate_gate(recent, replay, SETTINGS)

    assert decision.promote is False
    assert "gain +0.0150 is below the required +0.0200" in decision.reason


def test_gate_rejects_group_collapse():
    # Better on recent data by 0.15, but the small "enterprise" group falls from 0.90 to 0.40.
    recent = grouped_slice(
        {"retail": (380, 300, 400), "business": (370, 300, 400), "enterprise": (20, 45, 50)}
    )
    replay = grouped_slice({"retail": (90, 90, 100), "enterprise": (9, 9, 10)})

    decision = evaluate_gate(recent, replay, SETTINGS)

    assert decision.recent.gain == pytest.approx(770 / 850 - 645 / 850)
    assert decision.promote is False
    assert check(decision, "recent_gain").passed is True
    assert check(decision, "replay_loss").passed is True
    assert check(decision, "group_loss").passed is False
    assert "group accuracy falls more than the allowed 0.0500 in 'enterprise' 0.4833 vs champion 0.9000" in (
        decision.reason
    )
    enterprise = next(group for group in decision.groups if group.group == "enterprise")
    assert enterprise.n == 60
    assert enterprise.counted is True
    assert enterprise.gain == pytest.approx(29 / 60 - 54 / 60)


def test_gate_rejects_forgetting_older_data():
    recent = GateSlice(candidate_correct=results(190, 200), champion_correct=results(150, 200))
    replay = GateSlice(candidate_correct=results(80, 100), champion_correct=results(92, 100))

    decision = evaluate_gate(recent, replay, SETTINGS)

    assert decision.promote is False
    assert check(decision, "recent_gain").passed is True
    assert check(decision, "replay_loss").passed is False
    assert decision.reason == (
        "reject: replayed accuracy 0.8000 vs champion 0.9200 on 100 examples, "
        "change -0.1200, beyond the allowed loss of 0.0200"
    )


def test_gate_ignores_small_groups():
    recent = grouped_slice({"retail": (190, 150, 200), "tiny": (0, 5, 5)})
    replay = GateSlice(candidate_correct=(), champion_correct=())

    decision = evaluate_gate(recent, replay, SETTINGS)

    assert decision.promote is True
    tiny = next(group for group in decision.groups if group.group == "tiny")
    assert tiny.counted is False
    assert "(1 group(s) under 30 examples not checked)" in check(decision, "group_loss").message


def test_gate_limits_pass_at_equality():
    settings = GateSettings(
        min_recent_gain=0.1, max_replay_loss=0.1, max_group_loss=0.1, min_group_examples=1, min_recent_examples=10
    )
    recent = grouped_slice({"a": (9, 8, 10)})
    replay = grouped_slice({"a": (7, 8, 10)})

    decision = evaluate_gate(recent, replay, settings)

    assert [check.passed for check in decision.checks] == [True, True, True]


def test_gate_rejects_empty_recent_slice():
    empty = GateSlice(candidate_correct=(), champion_correct=())

    decision = evaluate_gate(empty, empty, SETTINGS)

    assert decision.promote is False
    assert decision.recent.candidate_accuracy is None
    assert decision.reason == "reject: no held-out recent examples to compare on"
    assert check(decision, "replay_loss").message == "no held-out replayed examples, check skipped"


def test_gate_decision_is_json():
    recent = grouped_slice({"retail": (180, 160, 200)})
    replay = grouped_slice({"retail": (90, 90, 100)})
    decision = evaluate_gate(recent, replay, SETTINGS)

    data = json.loads(decision.model_dump_json())

    assert data["promote"] is True
    assert data["recent"] == {"n": 200, "candidate_accuracy": 0.9, "champion_accuracy": 0.8, "gain": pytest.approx(0.1)}
    assert data["groups"][0]["group"] == "retail"
    assert [check["name"] for check in data["checks"]] == ["recent_gain", "replay_loss", "group_loss"]


def test_gate_groups_accept_numbers():
    gate_slice = GateSlice(candidate_correct=(True, False), champion_correct=(True, True), groups=(1, True))

    assert gate_slice.groups == ("1", "True")


def test_gate_slice_rejects_length_mismatch():
    with pytest.raises(pydantic.ValidationError, match="3 candidate results but 2 champion results"):
        GateSlice(candidate_correct=(True,) * 3, champion_correct=(True,) * 2)


def test_gate_slice_rejects_group_mismatch():
    with pytest.raises(pydantic.ValidationError, match="2 results but 1 group values"):
        GateSlice(candidate_correct=(True, True), champion_correct=(True, True), groups=("a",))


def test_gate_rejects_too_few_recent_examples():
    settings = GateSettings(min_recent_gain=0.0, min_recent_examples=50)
    recent = GateSlice(candidate_correct=results(40, 40), champion_correct=results(20, 40))
    replay = GateSlice(candidate_correct=(), champion_correct=())

    decision = evaluate_gate(recent, replay, settings)

    assert decision.promote is False
    assert check(decision, "recent_gain").message.startswith(
        "only 40 held-out recent examples, fewer than the 50 needed (gate.min_recent_examples)"
    )
