"""The drift monitor of one model version: examples in, drift events out."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Protocol

from driftloop.drift.adapter import build_river_detector
from driftloop.drift.events import DriftEvent
from driftloop.drift.features import text_features
from driftloop.drift.label_shift import LabelShiftTest
from driftloop.drift.settings import DetectorSettings, DriftSettings

if TYPE_CHECKING:
    from driftloop.schemas.events import Example

logger = logging.getLogger(__name__)


class SignalDetector(Protocol):
    """Interface that the monitor reads from every detector.

    :class:`RiverDetector` and :class:`LabelShiftTest` implement it.
    """

    def update(self, x, /) -> SignalDetector: ...

    @property
    def drift_detected(self) -> bool: ...

    @property
    def n_updates(self) -> int: ...

    @property
    def n_dropped(self) -> int: ...

    @property
    def n_detections(self) -> int: ...

    @property
    def statistic(self) -> float: ...

    @property
    def statistic_name(self) -> str: ...


def build_detector(settings: DetectorSettings) -> SignalDetector:
    """Build the detector that ``settings`` names."""
    if settings.name == "chi_square":
        return LabelShiftTest(**settings.params)
    return build_river_detector(settings)


@dataclass(frozen=True, slots=True)
class MonitoredExample:
    """One example of a model version's stream. A signal that is None is skipped.

    A prediction without feedback has ``error=None``, so only the label-free detectors
    see it. ``text`` is the redacted text, and ``event_time`` must be timezone-aware.
    """

    error: bool | None = None
    confidence: float | None = None
    text: str | None = None
    predicted_label: str | None = None
    event_time: datetime | None = None

    def __post_init__(self) -> None:
        if self.event_time is not None and self.event_time.tzinfo is None:
            raise ValueError(f"event_time must be timezone-aware, got {self.event_time.isoformat()}")

    @classmethod
    def from_event(cls, example: Example) -> MonitoredExample:
        """Build the monitored example of a joined prediction and feedback."""
        return cls(
            error=example.label != example.predicted_label,
            confidence=example.confidence,
            text=example.text,
            predicted_label=example.predicted_label,
            event_time=datetime.fromtimestamp(example.event_time_ms / 1000, tz=timezone.utc),
        )

    def signal_values(self) -> dict[str, float | str]:
        """Return the value of each signal present in the example, keyed by signal name."""
        values: dict[str, float | str] = {}
        if self.error is not None:
            values["error"] = 1.0 if self.error else 0.0
        if self.confidence is not None:
            values["confidence"] = float(self.confidence)
        if self.text is not None:
            features = text_features(self.text)
            values["log_length"] = features.log_length
            values["digit_share"] = features.digit_share
            values["placeholder_count"] = float(features.placeholder_count)
        if self.predicted_label is not None:
            values["predicted_label"] = self.predicted_label
        return values


@dataclass(frozen=True, slots=True)
class DetectorCounts:
    """Counters of one detector, for metrics."""

    detector: str
    signal: str
    n_updates: int
    n_dropped: int
    n_detections: int


@dataclass(frozen=True, slots=True)
class _Watch:
    name: str
    signal: str
    detector: SignalDetector


class DriftMonitor:
    """Feed the examples of one model version to the configured detectors and emit drift events.

    Build a new monitor when a new model version starts serving, because the detectors'
    windows describe the old version's behaviour.

    Parameters
    ----------
    settings
        The ``drift:`` settings; with ``enabled`` false, no detector is built.
    model_version
        The model version whose examples this monitor watches.
    clock
        Time of an alarm when the example has no ``event_time``; defaults to UTC now.
    """

    def __init__(
        self,
        settings: DriftSettings,
        model_version: int,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.settings = settings
        self.model_version = model_version
        self.clock = clock or _utc_now
        specs = settings.detectors if settings.enabled else ()
        self._watches = tuple(_Watch(spec.name, spec.signal, build_detector(spec)) for spec in specs)
        self._position = 0

    def update(self, example: MonitoredExample) -> list[DriftEvent]:
        """Feed one example to each detector whose signal it contains, and return the drift events it raised."""
        position = self._position
        self._position += 1
        values = example.signal_values() if self._watches else {}

        events: list[DriftEvent] = []
        for watch in self._watches:
            value = values.get(watch.signal)
            if value is None:
                continue
            dropped_before = watch.detector.n_dropped
            watch.detector.update(value)
            if watch.detector.n_dropped != dropped_before:
                _log_dropped(watch, self.model_version, position)
            if watch.detector.drift_detected:
                events.append(self._event(watch, position, example.event_time or self.clock()))
        return events

    def _event(self, watch: _Watch, position: int, time: datetime) -> DriftEvent:
        event = DriftEvent(
            detector=watch.name,
            signal=watch.signal,
            statistic=watch.detector.statistic,
            statistic_name=watch.detector.statistic_name,
            position=position,
            model_version=self.model_version,
            time=time,
        )
        logger.info(
            "drift alarm from %s on %s: model version %d, position %d, %s=%.4f",
            event.detector,
            event.signal,
            event.model_version,
            event.position,
            event.statistic_name,
            event.statistic,
        )
        return event

    @property
    def position(self) -> int:
        """Examples fed so far, which is also the position of the next example."""
        return self._position

    @property
    def detectors(self) -> tuple[tuple[str, str], ...]:
        """(detector, signal) of each detector, in config order."""
        return tuple((watch.name, watch.signal) for watch in self._watches)

    @property
    def n_dropped(self) -> int:
        """Non-finite values dropped across all detectors."""
        return sum(watch.detector.n_dropped for watch in self._watches)

    def detector_counts(self) -> list[DetectorCounts]:
        """Return the counters of each detector, in config order."""
        return [
            DetectorCounts(
                detector=watch.name,
                signal=watch.signal,
                n_updates=watch.detector.n_updates,
                n_dropped=watch.detector.n_dropped,
                n_detections=watch.detector.n_detections,
            )
            for watch in self._watches
        ]


def _log_dropped(watch: _Watch, model_version: int, position: int) -> None:
    # Rate-limited: the 1st, 10th, 100th, ... dropped value of each detector is logged.
    count = watch.detector.n_dropped
    if count == 10 ** (len(str(count)) - 1):
        logger.warning(
            "%s on %s dropped a non-finite value: model version %d, position %d, %d dropped so far",
            watch.name,
            watch.signal,
            model_version,
            position,
            count,
        )


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)
