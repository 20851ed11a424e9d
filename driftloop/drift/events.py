"""Drift events and training jobs: what drift detection emits and what the trainer receives.

Times are timezone-aware datetimes, serialised as ISO 8601 by ``model_dump_json``.
"""

from __future__ import annotations

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DriftEvent(_Model):
    """An alarm raised by one detector on one signal of one model version."""

    detector: str = Field(description="Config name of the detector, e.g. adwin")
    signal: str = Field(description="Watched signal, e.g. error or confidence")
    statistic: float = Field(description="Figure reported by the detector when the alarm was raised")
    statistic_name: str = Field(description="Name of the statistic, e.g. recent_mean or total_variation")
    position: int = Field(ge=0, description="0-based index of the example in the monitor's stream")
    model_version: int = Field(ge=0)
    time: AwareDatetime = Field(description="Event time of the example that raised the alarm")


MANUAL_DETECTOR = "manual"
"""The only entry of ``Episode.detectors`` in a job started by hand with ``driftloop train``."""


class Episode(_Model):
    """Drift alarms grouped into one episode by the cooldown of the trigger policy."""

    model_version: int = Field(ge=0)
    first_position: int = Field(ge=0)
    last_position: int = Field(ge=0)
    first_time: AwareDatetime
    last_time: AwareDatetime
    n_alarms: int = Field(ge=1)
    detectors: tuple[str, ...] = Field(
        description="'detector on signal' of the alarms, each once, in order of first alarm"
    )

    @property
    def started_by_hand(self) -> bool:
        """Whether the job was started with ``driftloop train`` rather than by drift alarms."""
        return self.detectors == (MANUAL_DETECTOR,)

    def summary(self) -> str:
        """Describe the episode in one line for logs and job reasons."""
        return (
            f"{self.n_alarms} drift alarm(s) on model version {self.model_version} from "
            f"{', '.join(self.detectors)} at positions {self.first_position}..{self.last_position}"
        )


class ExampleWindow(_Model):
    """Half-open range ``[start, end)`` of labelled examples of one model version, counted from 0."""

    start: int = Field(ge=0)
    end: int = Field(ge=0)

    @model_validator(mode="after")
    def _check_order(self) -> ExampleWindow:
        if self.end < self.start:
            raise ValueError(f"end ({self.end}) must not be before start ({self.start})")
        return self

    @property
    def size(self) -> int:
        """Number of labelled examples in the window."""
        return self.end - self.start


class TrainingJob(_Model):
    """A request to train a candidate from the champion, started by a drift episode."""

    job_id: str
    pipeline: str
    model_version: int = Field(ge=0, description="The champion the candidate starts from")
    reason: str = Field(description="Human-readable reason, naming the episode and the example counts")
    episode: Episode
    examples: ExampleWindow = Field(description="Labelled examples of the model version to train on")
    requested_at: AwareDatetime
