"""Contract of the river drift detectors that driftloop reads, and of its adapter.

These tests pin river 0.26's API and behaviour on a seeded stream. If a river upgrade
fails them, check driftloop/drift/adapter.py and the parameter models in
driftloop/drift/settings.py before updating the pinned values.
"""

from __future__ import annotations

import inspect
import math
import pickle

import pytest
from river import base, drift
from river.drift import binary

from driftloop.drift.adapter import RIVER_DETECTORS, RiverDetector, build_river_detector
from driftloop.drift.settings import DETECTOR_PARAMS, DetectorSettings
from driftloop.drift.synthetic import bernoulli_errors

# Error rate 0.2, then 0.6 from position 1,000.
STEP_STREAM = bernoulli_errors(3000, seed=1, error_rate=0.2, change_position=1000, error_rate_after=0.6)

# name, river class, river base class, constructor arguments, first alarm on STEP_STREAM.
CONTRACTS = [
    ("adwin", drift.ADWIN, base.DriftDetector, {}, 1055),
    ("ddm", binary.DDM, base.BinaryDriftDetector, {}, 1046),
    # EDDM with river's defaults alarms well before the change.
    ("eddm", binary.EDDM, base.BinaryDriftDetector, {}, 150),
    ("hddm_a", binary.HDDMA, base.BinaryDriftDetector, {}, 1009),
    ("page_hinkley", drift.PageHinkley, base.DriftDetector, {}, 1105),
    ("kswin", drift.KSWIN, base.DriftDetector, {"seed": 1}, 1021),
]
CONTRACT_IDS = [contract[0] for contract in CONTRACTS]


def first_alarm(detector, stream) -> int | None:
    for position, value in enumerate(stream):
        detector.update(value)
        if detector.drift_detected:
            return position
    return None


def test_contracts_cover_every_river_detector():
    assert sorted(RIVER_DETECTORS) == sorted(CONTRACT_IDS)


@pytest.mark.parametrize(("name", "river_class", "base_class", "kwargs", "alarm"), CONTRACTS, ids=CONTRACT_IDS)
def test_river_class_and_base(name, river_class, base_class, kwargs, alarm):
    assert RIVER_DETECTORS[name] is river_class
    assert issubclass(river_class, base_class)


@pytest.mark.parametrize(("name", "river_class", "base_class", "kwargs", "alarm"), CONTRACTS, ids=CONTRACT_IDS)
def test_river_constructor_matches_params(name, river_class, base_class, kwargs, alarm):
    signature = inspect.signature(river_class)
    params = DETECTOR_PARAMS[name]().model_dump()

    for param, default in params.items():
        assert param in signature.parameters, f"{river_class.__name__} has no parameter {param!r}"
        assert signature.parameters[param].default == default, f"default of {param!r} changed"


@pytest.mark.parametrize(("name", "river_class", "base_class", "kwargs", "alarm"), CONTRACTS, ids=CONTRACT_IDS)
def test_river_stores_params_under_names(name, river_class, base_class, kwargs, alarm):
    params = DETECTOR_PARAMS[name]().model_dump()
    detector = river_class(**params)

    for param, value in params.items():
        assert getattr(detector, param) == value


@pytest.mark.parametrize(("name", "river_class", "base_class", "kwargs", "alarm"), CONTRACTS, ids=CONTRACT_IDS)
def test_river_update_and_drift_detected(name, river_class, base_class, kwargs, alarm):
    update_params = list(inspect.signature(river_class.update).parameters)
    assert update_params == ["self", "x"]
    assert isinstance(inspect.getattr_static(river_class, "drift_detected"), property)

    detector = river_class(**kwargs)
    assert detector.drift_detected is False
    detector.update(STEP_STREAM[0])
    assert type(detector.drift_detected) is bool


@pytest.mark.parametrize(("name", "river_class", "base_class", "kwargs", "alarm"), CONTRACTS, ids=CONTRACT_IDS)
def test_river_first_alarm_pinned(name, river_class, base_class, kwargs, alarm):
    detector = river_class(**kwargs)

    assert first_alarm(detector, STEP_STREAM) == alarm


@pytest.mark.parametrize(("name", "river_class", "base_class", "kwargs", "alarm"), CONTRACTS, ids=CONTRACT_IDS)
def test_river_alarm_clears_on_next_update(name, river_class, base_class, kwargs, alarm):
    detector = river_class(**kwargs)
    first_alarm(detector, STEP_STREAM[: alarm + 1])
    assert detector.drift_detected is True

    detector.update(STEP_STREAM[alarm + 1])

    assert detector.drift_detected is False


@pytest.mark.parametrize(("name", "river_class", "base_class", "kwargs", "alarm"), CONTRACTS, ids=CONTRACT_IDS)
def test_adapter_reports_same_alarm(name, river_class, base_class, kwargs, alarm):
    params = {**DETECTOR_PARAMS[name]().model_dump(), **kwargs}
    adapter = build_river_detector(DetectorSettings(name=name, signal="error", params=params))

    assert first_alarm(adapter, STEP_STREAM) == alarm
    assert adapter.n_updates == alarm + 1
    assert adapter.n_detections == 1
    assert adapter.statistic_name == "recent_mean"
    assert 0.0 <= adapter.statistic <= 1.0


@pytest.mark.parametrize(("name", "river_class", "base_class", "kwargs", "alarm"), CONTRACTS, ids=CONTRACT_IDS)
def test_adapter_drops_non_finite(name, river_class, base_class, kwargs, alarm):
    adapter = RiverDetector(river_class(**kwargs))
    for value in STEP_STREAM[:500]:
        adapter.update(value)
    state_before = pickle.dumps(adapter.detector)

    for value in (math.nan, math.inf, -math.inf):
        adapter.update(value)
        assert adapter.drift_detected is False

    assert adapter.n_dropped == 3
    assert adapter.n_updates == 500
    assert pickle.dumps(adapter.detector) == state_before


def test_adapter_non_finite_leaves_alarm_position():
    clean = RiverDetector(drift.ADWIN())
    noisy = RiverDetector(drift.ADWIN())
    noisy_stream = []
    for position, value in enumerate(STEP_STREAM):
        noisy_stream.append(value)
        if position % 100 == 0:
            noisy_stream.extend([math.nan, math.inf, -math.inf])

    clean_alarms = [n for n, value in enumerate(STEP_STREAM) if clean.update(value).drift_detected]
    noisy_alarms = [noisy.n_updates - 1 for value in noisy_stream if noisy.update(value).drift_detected]

    assert noisy_alarms == clean_alarms
    assert noisy.n_dropped == 3 * 30


def test_adapter_rejects_non_river_object():
    with pytest.raises(TypeError, match="expected a river DriftDetector or BinaryDriftDetector, got dict"):
        RiverDetector({})


def test_adapter_rejects_non_binary_value():
    adapter = RiverDetector(binary.DDM())

    with pytest.raises(ValueError, match=r"DDM accepts only 0 or 1, got 0\.5"):
        adapter.update(0.5)


class _IntegerAlarmDetector(base.DriftDetector):
    """A river detector whose drift_detected returns an int, as an API change might."""

    def update(self, x):
        self._drift_detected = 0

    @property
    def drift_detected(self):  # type: ignore[override]
        return self._drift_detected


def test_adapter_rejects_non_bool_alarm():
    adapter = RiverDetector(_IntegerAlarmDetector())

    with pytest.raises(TypeError, match="drift_detected returned int, expected bool; the river API has changed"):
        adapter.update(1.0)
