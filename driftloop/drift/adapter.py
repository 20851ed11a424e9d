"""The one place where driftloop reads river's drift detectors.

The contract of river 0.26: a detector is a ``river.base.DriftDetector`` or a
``river.base.BinaryDriftDetector``. ``update(x)`` takes one value, and the
``drift_detected`` property then tells whether that value raised an alarm. The update
after an alarm resets the detector. The return value of ``update`` is not used, because
river documents ``self`` but returns ``None``. tests/test_drift_adapter.py pins this
contract for every class in :data:`RIVER_DETECTORS`, so a river upgrade that changes it
fails a test.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

from river import base, drift
from river.drift import binary

from driftloop.drift.settings import DetectorSettings

RIVER_DETECTORS: dict[str, type[base.DriftDetector] | type[base.BinaryDriftDetector]] = {
    "adwin": drift.ADWIN,
    "ddm": binary.DDM,
    "eddm": binary.EDDM,
    "hddm_a": binary.HDDMA,
    "page_hinkley": drift.PageHinkley,
    "kswin": drift.KSWIN,
}
"""river detector classes by config name."""

RECENT_WINDOW = 100
"""Values behind :attr:`RiverDetector.recent_mean`."""


class RiverDetector:
    """Adapter that feeds one river drift detector and reads its alarm.

    Non-finite values (nan, inf, -inf) are counted in :attr:`n_dropped` and never reach
    the river detector, so its state is unchanged by them.

    Parameters
    ----------
    detector
        A freshly built river drift detector; the adapter owns it from now on.
    """

    def __init__(self, detector: base.DriftDetector | base.BinaryDriftDetector) -> None:
        if not isinstance(detector, (base.DriftDetector, base.BinaryDriftDetector)):
            raise TypeError(
                f"expected a river DriftDetector or BinaryDriftDetector, got {type(detector).__name__}"
            )
        self.detector = detector
        self._binary = isinstance(detector, base.BinaryDriftDetector)
        self._drift_detected = False
        self._n_updates = 0
        self._n_dropped = 0
        self._n_detections = 0
        self._recent: deque[float] = deque(maxlen=RECENT_WINDOW)

    def update(self, x: float) -> RiverDetector:
        """Feed one value to the river detector, then read :attr:`drift_detected`.

        Raises
        ------
        ValueError
            If the detector is binary and ``x`` is neither 0 nor 1.
        TypeError
            If river's ``drift_detected`` is no longer a bool.
        """
        if not math.isfinite(x):
            self._n_dropped += 1
            self._drift_detected = False
            return self
        if self._binary and x not in (0, 1):
            raise ValueError(f"{type(self.detector).__name__} accepts only 0 or 1, got {x!r}")

        self.detector.update(x)
        detected = self.detector.drift_detected
        if not isinstance(detected, bool):
            raise TypeError(
                f"{type(self.detector).__name__}.drift_detected returned {type(detected).__name__}, "
                "expected bool; the river API has changed, so update driftloop/drift/adapter.py"
            )

        self._drift_detected = detected
        self._n_updates += 1
        self._n_detections += detected
        self._recent.append(float(x))
        return self

    @property
    def drift_detected(self) -> bool:
        """Whether the last call to :meth:`update` raised an alarm. False after a dropped value."""
        return self._drift_detected

    @property
    def n_updates(self) -> int:
        """Values passed to the river detector."""
        return self._n_updates

    @property
    def n_dropped(self) -> int:
        """Non-finite values dropped before the river detector."""
        return self._n_dropped

    @property
    def n_detections(self) -> int:
        """Alarms raised so far."""
        return self._n_detections

    @property
    def recent_mean(self) -> float:
        """Mean of the last :data:`RECENT_WINDOW` values passed on, or nan before the first."""
        if not self._recent:
            return math.nan
        return sum(self._recent) / len(self._recent)

    @property
    def statistic_name(self) -> str:
        """Name of the figure that :attr:`statistic` returns."""
        return "recent_mean"

    @property
    def statistic(self) -> float:
        """The figure reported with an alarm: :attr:`recent_mean`."""
        return self.recent_mean

    def __repr__(self) -> str:
        return f"RiverDetector({self.detector!r})"


def build_river_detector(settings: DetectorSettings) -> RiverDetector:
    """Build the river detector that ``settings`` names, wrapped in a :class:`RiverDetector`."""
    try:
        detector_class = RIVER_DETECTORS[settings.name]
    except KeyError:
        raise ValueError(
            f"{settings.name!r} is not a river detector; expected one of {sorted(RIVER_DETECTORS)}"
        ) from None
    params: dict[str, Any] = dict(settings.params)
    return RiverDetector(detector_class(**params))
