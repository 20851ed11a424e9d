"""The promotion gate: does a candidate replace the champion?

The candidate is promoted only if all three checks pass:

1. ``recent_gain``: on at least ``min_recent_examples`` held-out recent examples, its
   accuracy is at least the champion's plus ``min_recent_gain``.
2. ``replay_loss``: on held-out replayed (older) examples, its accuracy is at most
   ``max_replay_loss`` below the champion's. With no replayed examples, the check
   passes, and its message reports that it was skipped.
3. ``group_loss``: in every group with at least ``min_group_examples`` held-out
   examples, recent and replayed together, its accuracy is at most ``max_group_loss``
   below the champion's.

A value exactly at a limit passes; comparisons allow 1e-9 for float rounding.

NOTE: the margins are compared with point estimates. With a few hundred held-out
examples, an accuracy difference of 0.01 is within sampling noise, so size the
margins and ``min_group_examples`` to the held-out slice.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field, computed_field, field_validator, model_validator

from driftloop.drift.settings import GateSettings

_TOLERANCE = 1e-9


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GateSlice(_Model):
    """Per-example correctness of candidate and champion on one held-out slice.

    ``groups`` gives each example's group attribute, or is None when the slice has none.
    """

    candidate_correct: tuple[bool, ...]
    champion_correct: tuple[bool, ...]
    groups: tuple[str, ...] | None = None

    @field_validator("groups", mode="before")
    @classmethod
    def _groups_as_text(cls, groups: object) -> object:
        # Group attributes may be numbers or booleans in requests, so compare them as text.
        if groups is None or isinstance(groups, str):
            return groups
        return tuple(str(group) for group in groups)

    @model_validator(mode="after")
    def _check_lengths(self) -> GateSlice:
        n = len(self.candidate_correct)
        if len(self.champion_correct) != n:
            raise ValueError(f"{n} candidate results but {len(self.champion_correct)} champion results")
        if self.groups is not None and len(self.groups) != n:
            raise ValueError(f"{n} results but {len(self.groups)} group values")
        return self


class SliceFigures(_Model):
    """Accuracies on one set of examples, or None when it is empty."""

    n: int
    candidate_accuracy: float | None
    champion_accuracy: float | None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def gain(self) -> float | None:
        """Candidate accuracy minus champion accuracy."""
        if self.candidate_accuracy is None or self.champion_accuracy is None:
            return None
        return self.candidate_accuracy - self.champion_accuracy


class GroupFigures(SliceFigures):
    """Accuracies in one group, over recent and replayed held-out examples."""

    group: str
    counted: bool = Field(description="Whether the group had enough examples to be checked")


class GateCheck(_Model):
    """Outcome of one check of the gate."""

    name: str
    passed: bool
    message: str


class GateDecision(_Model):
    """The decision of the gate with every figure behind it. ``model_dump_json`` serialises it."""

    promote: bool
    reason: str
    checks: tuple[GateCheck, ...]
    recent: SliceFigures
    replay: SliceFigures
    groups: tuple[GroupFigures, ...]


def evaluate_gate(recent: GateSlice, replay: GateSlice, settings: GateSettings) -> GateDecision:
    """Decide whether the candidate replaces the champion, by the checks in the module docstring."""
    recent_figures = _figures(recent.candidate_correct, recent.champion_correct)
    replay_figures = _figures(replay.candidate_correct, replay.champion_correct)
    group_figures = _group_figures((recent, replay), settings.min_group_examples)
    checks = (
        _check_recent(recent_figures, settings),
        _check_replay(replay_figures, settings),
        _check_groups(group_figures, settings),
    )

    failed = [check for check in checks if not check.passed]
    if failed:
        reason = "reject: " + "; ".join(check.message for check in failed)
    else:
        reason = "promote: " + "; ".join(check.message for check in checks)
    return GateDecision(
        promote=not failed,
        reason=reason,
        checks=checks,
        recent=recent_figures,
        replay=replay_figures,
        groups=group_figures,
    )


def _figures(candidate: Sequence[bool], champion: Sequence[bool]) -> SliceFigures:
    n = len(candidate)
    if n == 0:
        return SliceFigures(n=0, candidate_accuracy=None, champion_accuracy=None)
    return SliceFigures(n=n, candidate_accuracy=sum(candidate) / n, champion_accuracy=sum(champion) / n)


def _group_figures(slices: Sequence[GateSlice], min_examples: int) -> tuple[GroupFigures, ...]:
    results: dict[str, tuple[list[bool], list[bool]]] = {}
    for gate_slice in slices:
        if gate_slice.groups is None:
            continue
        for group, candidate, champion in zip(
            gate_slice.groups, gate_slice.candidate_correct, gate_slice.champion_correct, strict=True
        ):
            candidate_results, champion_results = results.setdefault(group, ([], []))
            candidate_results.append(candidate)
            champion_results.append(champion)

    figures = []
    for group in sorted(results):
        candidate_results, champion_results = results[group]
        overall = _figures(candidate_results, champion_results)
        figures.append(
            GroupFigures(
                n=overall.n,
                candidate_accuracy=overall.candidate_accuracy,
                champion_accuracy=overall.champion_accuracy,
                group=group,
                counted=overall.n >= min_examples,
            )
        )
    return tuple(figures)


def _check_recent(figures: SliceFigures, settings: GateSettings) -> GateCheck:
    margin = settings.min_recent_gain
    if figures.gain is None:
        return GateCheck(name="recent_gain", passed=False, message="no held-out recent examples to compare on")
    if figures.n < settings.min_recent_examples:
        return GateCheck(
            name="recent_gain",
            passed=False,
            message=(
                f"only {figures.n} held-out recent examples, fewer than the {settings.min_recent_examples} needed "
                "(gate.min_recent_examples); the next job has more labelled examples to compare on"
            ),
        )
    passed = figures.gain >= margin - _TOLERANCE
    return GateCheck(
        name="recent_gain",
        passed=passed,
        message=(
            f"recent accuracy {figures.candidate_accuracy:.4f} vs champion {figures.champion_accuracy:.4f} "
            f"on {figures.n} examples, gain {figures.gain:+.4f} "
            f"{'meets' if passed else 'is below'} the required {margin:+.4f}"
        ),
    )


def _check_replay(figures: SliceFigures, settings: GateSettings) -> GateCheck:
    tolerance = settings.max_replay_loss
    if figures.gain is None:
        return GateCheck(name="replay_loss", passed=True, message="no held-out replayed examples, check skipped")
    loss = -figures.gain
    passed = loss <= tolerance + _TOLERANCE
    return GateCheck(
        name="replay_loss",
        passed=passed,
        message=(
            f"replayed accuracy {figures.candidate_accuracy:.4f} vs champion {figures.champion_accuracy:.4f} "
            f"on {figures.n} examples, change {figures.gain:+.4f}, "
            f"{'within' if passed else 'beyond'} the allowed loss of {tolerance:.4f}"
        ),
    )


def _check_groups(groups: Sequence[GroupFigures], settings: GateSettings) -> GateCheck:
    tolerance = settings.max_group_loss
    counted = [group for group in groups if group.counted]
    skipped = len(groups) - len(counted)
    note = f" ({skipped} group(s) under {settings.min_group_examples} examples not checked)" if skipped else ""
    if not counted:
        return GateCheck(name="group_loss", passed=True, message=f"no group large enough to check{note}")

    failing = [group for group in counted if -(group.gain or 0.0) > tolerance + _TOLERANCE]
    if failing:
        details = ", ".join(
            f"{group.group!r} {group.candidate_accuracy:.4f} vs champion {group.champion_accuracy:.4f} "
            f"on {group.n} examples"
            for group in failing
        )
        message = f"group accuracy falls more than the allowed {tolerance:.4f} in {details}{note}"
        return GateCheck(name="group_loss", passed=False, message=message)

    worst = min(counted, key=lambda group: group.gain or 0.0)
    message = (
        f"smallest group change {worst.gain or 0.0:+.4f} in {worst.group!r}, within the allowed loss of "
        f"{tolerance:.4f}, over {len(counted)} group(s){note}"
    )
    return GateCheck(name="group_loss", passed=True, message=message)
