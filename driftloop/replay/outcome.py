"""The outcome of a replay: the predictions of each lane, publishing figures and the recording."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from driftloop.replay.publisher import PublishStats
from driftloop.replay.reader import Recording
from driftloop.schemas.events import Prediction

RECORDED_LANE = "recorded"


@dataclass(frozen=True)
class LaneOutcome:
    """The predictions of one lane, first per request id.

    The lane named ``recorded`` contains the predictions found in the recording, which
    the original pipeline made; its model version may change along the stream.
    """

    name: str
    origin: str  # "registry", "artifact" or "recorded"
    path: str
    topic_prefix: str
    predictions: Mapping[str, Prediction]
    version: int | None = None
    duplicates: int = 0
    dead_letters: int = 0
    online: Mapping[str, Any] = field(default_factory=dict)  # the join's metrics, as read_metrics returns them


@dataclass(frozen=True)
class ReplayOutcome:
    """Everything a report is built from."""

    recording: Recording
    lanes: tuple[LaneOutcome, ...]
    publish: PublishStats
    topic_prefix: str
    speed: float | None  # None: as fast as possible
    seed: int
    seconds: float  # from the first publish until every lane was complete, or the timeout
    predictions_seconds: float | None  # from the first publish until every lane had predicted every request
    complete: bool  # every lane predicted every request and joined every feedback in time
    kept_topics: bool = False

    def lane(self, name: str) -> LaneOutcome:
        for lane in self.lanes:
            if lane.name == name:
                return lane
        raise KeyError(f"no lane {name!r}; lanes: {[lane.name for lane in self.lanes]}")


def recorded_lane(recording: Recording) -> LaneOutcome | None:
    """Return the lane of the recording's own predictions, or None when it has none."""
    if not recording.predictions:
        return None
    predictions: dict[str, Prediction] = {}
    duplicates = 0
    for record in recording.predictions:
        if record.request_id in predictions:
            duplicates += 1
        else:
            predictions[record.request_id] = record.event  # type: ignore[assignment]
    return LaneOutcome(
        name=RECORDED_LANE,
        origin="recorded",
        path=str(recording.path),
        topic_prefix=recording.header.source.topic_prefix,
        predictions=predictions,
        duplicates=duplicates,
    )
