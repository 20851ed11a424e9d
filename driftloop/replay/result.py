"""The result of a replay: its outcome, its report, and queries for checks in tests."""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from driftloop.config import Settings
from driftloop.replay.html import render_html
from driftloop.replay.outcome import ReplayOutcome
from driftloop.replay.render import render_text
from driftloop.replay.report import build_report
from driftloop.schemas.events import Prediction


@dataclass(frozen=True)
class ReplayResult:
    """A finished replay. ``report`` is JSON-ready; the methods read the full outcome."""

    outcome: ReplayOutcome
    report: dict[str, Any]

    @classmethod
    def build(
        cls, outcome: ReplayOutcome, settings: Settings, *, drift: bool = True, examples: int = 10
    ) -> ReplayResult:
        report = build_report(
            outcome,
            group_attribute=settings.group_attribute,
            drift_settings=settings.drift if drift else None,
            examples=examples,
        )
        return cls(outcome, report)

    # Queries.

    @property
    def lane_names(self) -> list[str]:
        """Names of the lanes: ``v{n}`` per served version, then ``recorded`` if the recording has predictions."""
        return [lane.name for lane in self.outcome.lanes]

    @property
    def request_ids(self) -> list[str]:
        """Request ids in replay order, each once."""
        seen: dict[str, None] = {}
        for record in self.outcome.recording.requests:
            seen.setdefault(record.request_id, None)
        return list(seen)

    def predictions(self, lane: str) -> Mapping[str, Prediction]:
        """Return the first prediction of each request id in ``lane``."""
        return self.outcome.lane(lane).predictions

    def labels(self, lane: str) -> dict[str, str]:
        """Return the predicted label of each request id in ``lane``."""
        return {request_id: prediction.label for request_id, prediction in self.predictions(lane).items()}

    def missing_predictions(self, lane: str) -> list[str]:
        """Return the request ids without a prediction in ``lane``, in replay order."""
        predictions = self.predictions(lane)
        return [request_id for request_id in self.request_ids if request_id not in predictions]

    def accuracy(self, lane: str) -> float | None:
        """Return the accuracy of ``lane`` on requests with feedback, or None when there are none."""
        return self.report["lanes"][lane]["accuracy"]

    def drift_alarms(self, lane: str) -> list[dict[str, Any]]:
        return self.report["lanes"][lane]["drift_alarms"]

    def label_flips(self, a: str, b: str, request_ids: Collection[str] | None = None) -> list[str]:
        """Return the request ids, in replay order, that lanes ``a`` and ``b`` label differently.

        Only requests that both lanes predicted count; ``request_ids`` limits the check.
        """
        first, second = self.predictions(a), self.predictions(b)
        selected = None if request_ids is None else set(request_ids)
        return [
            request_id
            for request_id in self.request_ids
            if (selected is None or request_id in selected)
            and request_id in first
            and request_id in second
            and first[request_id].label != second[request_id].label
        ]

    # Output.

    def text(self) -> str:
        return render_text(self.report)

    def html(self) -> str:
        return render_html(self.report)

    def to_json(self) -> str:
        return json.dumps(self.report, indent=2, sort_keys=True)
