"""Drift detection end to end: the monitor, its default detectors and the trigger policy, on seeded streams."""

from __future__ import annotations

import math
import random
from datetime import timedelta

import pytest

from driftloop.drift import (
    DriftEvent,
    DriftMonitor,
    DriftSettings,
    InMemoryJobLock,
    LabelShiftTest,
    MonitoredExample,
    TriggerPolicy,
    standalone_adwin_delay,
    text_features,
)
from driftloop.drift.settings import DetectorSettings
from driftloop.drift.synthetic import START_TIME, bernoulli_errors, stationary_examples

# Accuracy 0.8, then 0.4 from position 1,000: error rate 0.2, then 0.6.
STEP_ERRORS = bernoulli_errors(5000, seed=1, error_rate=0.2, change_position=1000, error_rate_after=0.6)

ERROR_DETECTORS = (
    DetectorSettings(name="adwin", signal="error"),
    DetectorSettings(name="ddm", signal="error", params={"warm_start": 300, "drift_threshold": 4.0}),
    DetectorSettings(name="hddm_a", signal="error"),
    DetectorSettings(name="page_hinkley", signal="error", params={"mode": "up", "delta": 0.05, "threshold": 25.0}),
)


def error_example(position: int, error: int) -> MonitoredExample:
    return MonitoredExample(error=bool(error), event_time=START_TIME + timedelta(seconds=position))


def feed_errors(monitor: DriftMonitor, errors: list[int]) -> list[DriftEvent]:
    events = []
    for position, error in enumerate(errors):
        events.extend(monitor.update(error_example(position, error)))
    return events


@pytest.mark.parametrize("value", [0, 1])
@pytest.mark.parametrize("name", ["adwin", "ddm"])
def test_constant_error_raises_no_alarm(name, value):
    default = next(spec for spec in DriftSettings().detectors if spec.name == name and spec.signal == "error")
    monitor = DriftMonitor(DriftSettings(detectors=(default,)), model_version=1)

    events = [event for position in range(5000) for event in monitor.update(error_example(position, value))]

    assert events == []
    assert monitor.detector_counts()[0].n_updates == 5000


def test_error_step_alarm_positions():
    monitor = DriftMonitor(DriftSettings(detectors=ERROR_DETECTORS), model_version=1)

    events = feed_errors(monitor, STEP_ERRORS)
    first_alarm = {}
    for event in events:
        first_alarm.setdefault(event.detector, event.position)

    assert first_alarm == {"hddm_a": 1009, "adwin": 1055, "ddm": 1075, "page_hinkley": 1055}
    assert min(event.position for event in events) >= 1000
    assert len(events) >= 4


def test_error_step_starts_one_job():
    settings = DriftSettings(detectors=ERROR_DETECTORS)
    monitor = DriftMonitor(settings, model_version=1)
    policy = TriggerPolicy(settings.trigger, InMemoryJobLock(), pipeline="support", model_version=1)

    events = []
    jobs = []
    for position, error in enumerate(STEP_ERRORS):
        new_events = monitor.update(error_example(position, error))
        events.extend(new_events)
        jobs.extend(policy.update(new_events, labelled_examples=1))

    assert len(events) >= 4
    assert len(jobs) == 1
    job = jobs[0]
    assert job.model_version == 1
    assert job.episode.first_position == 1009
    assert job.episode.detectors == ("hddm_a on error",)
    assert (job.examples.start, job.examples.end) == (0, 1010)
    assert "1010 labelled examples since the model version started (minimum 500)" in job.reason
    assert policy.episode.n_alarms == len([e for e in events if e.position - 1009 <= 2000])


def test_standalone_adwin_delay_on_step():
    assert standalone_adwin_delay(STEP_ERRORS, change_position=1000) == 55
    assert standalone_adwin_delay(STEP_ERRORS, change_position=1000, clock=1) == 33


def test_standalone_adwin_delay_without_change():
    stationary = bernoulli_errors(3000, seed=1, error_rate=0.2)

    assert standalone_adwin_delay(stationary, change_position=1000) is None


def test_stationary_defaults_raise_no_alarm():
    # Alarm budget per detector on 10,000 stationary examples: 0 for every default detector.
    settings = DriftSettings()
    monitor = DriftMonitor(settings, model_version=1)

    for example in stationary_examples(10_000, seed=0):
        monitor.update(example)

    counts = monitor.detector_counts()
    assert len(counts) == len(settings.detectors)
    for count in counts:
        assert count.n_updates == 10_000, f"{count.detector} on {count.signal} skipped examples"
        assert count.n_detections == 0, f"{count.detector} on {count.signal} raised {count.n_detections} alarm(s)"


def wide_confidences(count: int, seed: int) -> list[float]:
    # Beta(1, 0.6): mean 0.625, standard deviation 0.30, wider than the synthetic stream's.
    rng = random.Random(seed)
    return [rng.betavariate(1.0, 0.6) for _ in range(count)]


def confidence_alarms(spec: DetectorSettings, confidences: list[float]) -> list[int]:
    monitor = DriftMonitor(DriftSettings(detectors=(spec,)), model_version=1)
    return [
        position
        for position, confidence in enumerate(confidences)
        if monitor.update(MonitoredExample(confidence=confidence, event_time=START_TIME))
    ]


def test_page_hinkley_long_stationary_quiet():
    default = next(spec for spec in DriftSettings().detectors if spec.name == "page_hinkley")
    fading = default.model_copy(update={"params": {**default.params, "alpha": 1 - 1e-4}})
    confidences = wide_confidences(100_000, seed=0)

    assert confidence_alarms(default, confidences) == []
    # river's fading factor is why the default turns fading off: the faded sum stops
    # growing and wanders, so the same stream crosses the threshold.
    assert confidence_alarms(fading, confidences) != []


def test_page_hinkley_finds_confidence_fall():
    default = next(spec for spec in DriftSettings().detectors if spec.name == "page_hinkley")
    rng = random.Random(1)
    fallen = [rng.betavariate(0.6, 1.0) for _ in range(2000)]  # mean 0.375

    alarms = confidence_alarms(default, wide_confidences(10_000, seed=1) + fallen)

    assert alarms, "no alarm after the confidence fell"
    assert 10_000 <= alarms[0] < 10_500


def test_monitor_drops_non_finite_confidence():
    settings = DriftSettings(detectors=tuple(spec for spec in DriftSettings().detectors if spec.signal == "confidence"))
    monitor = DriftMonitor(settings, model_version=1)
    examples = stationary_examples(400, seed=3)
    for example in examples[:200]:
        monitor.update(example)
    updates_before = [count.n_updates for count in monitor.detector_counts()]

    for value in (math.nan, math.inf, -math.inf):
        assert monitor.update(MonitoredExample(confidence=value)) == []

    assert monitor.n_dropped == 3 * len(settings.detectors)
    assert [count.n_updates for count in monitor.detector_counts()] == updates_before
    assert [count.n_dropped for count in monitor.detector_counts()] == [3, 3]
    assert monitor.position == 203


def test_monitor_skips_missing_signals():
    monitor = DriftMonitor(DriftSettings(), model_version=1)

    monitor.update(MonitoredExample(confidence=0.9, predicted_label="billing"))

    updated = {(count.detector, count.signal) for count in monitor.detector_counts() if count.n_updates}
    assert updated == {("page_hinkley", "confidence"), ("kswin", "confidence"), ("chi_square", "predicted_label")}


def test_monitor_disabled_builds_no_detectors():
    monitor = DriftMonitor(DriftSettings(enabled=False), model_version=1)

    assert monitor.update(MonitoredExample(error=True, confidence=0.1)) == []
    assert monitor.detectors == ()


def test_monitor_rejects_naive_event_time():
    with pytest.raises(ValueError, match="event_time must be timezone-aware, got 2026-01-01T00:00:00"):
        MonitoredExample(error=True, event_time=START_TIME.replace(tzinfo=None))


def test_monitored_example_from_event():
    from driftloop.schemas.events import Example

    event = Example(
        request_id="r1",
        text="call <PERSON> at 555",
        label="billing",
        predicted_label="account",
        confidence=0.7,
        model_version=4,
        event_time_ms=1_767_225_600_000,
    )

    example = MonitoredExample.from_event(event)

    assert example.error is True
    assert example.confidence == 0.7
    assert example.predicted_label == "account"
    assert example.event_time == START_TIME


def test_drift_event_fields():
    monitor = DriftMonitor(DriftSettings(detectors=ERROR_DETECTORS[:1]), model_version=7)

    events = feed_errors(monitor, STEP_ERRORS)

    event = events[0]
    assert (event.detector, event.signal, event.position, event.model_version) == ("adwin", "error", 1055, 7)
    assert event.time == START_TIME + timedelta(seconds=1055)
    assert event.statistic_name == "recent_mean"
    assert event.statistic == pytest.approx(0.43)


def test_text_features():
    features = text_features("call <PERSON> on 0612 or <PHONE_NUMBER>")

    assert features.placeholder_count == 2
    assert features.digit_share == pytest.approx(4 / 39)
    assert features.log_length == pytest.approx(math.log(40))


def test_text_features_empty():
    features = text_features("")

    assert (features.log_length, features.digit_share, features.placeholder_count) == (0.0, 0.0, 0)


def test_label_shift_detects_new_majority():
    test = LabelShiftTest(reference_size=500, window_size=500)
    before = ["billing", "technical", "account", "other"] * 250
    after = ["billing", "technical", "technical", "technical"] * 250

    alarms = []
    for position, label in enumerate(before + after):
        if test.update(label).drift_detected:
            alarms.append((position, test.distance, test.p_value))

    assert [position for position, _, _ in alarms] == [1499]
    _, distance, p_value = alarms[0]
    assert distance == pytest.approx(0.5)
    assert p_value < 1e-10


def test_label_shift_small_shift_below_distance():
    test = LabelShiftTest(reference_size=500, window_size=500, min_distance=0.1)
    before = ["billing", "technical"] * 500
    after = (["billing"] * 11 + ["technical"] * 9) * 50

    alarms = [position for position, label in enumerate(before + after) if test.update(label).drift_detected]

    assert alarms == []
    assert test.distance == pytest.approx(0.05)


def test_label_shift_pools_rare_labels():
    test = LabelShiftTest(reference_size=100, window_size=100)
    for label in ["billing"] * 98 + ["rare-a", "rare-b"]:
        test.update(label)
    for label in ["billing"] * 99 + ["rare-c"]:
        test.update(label)

    # Each rare label has an expected count of 0.5, so the three pool into one category:
    # billing (98, 99) against the pool (2, 1) gives chi-square 0.338 with 1 degree of
    # freedom. Unpooled, the 4 labels would give 3.005 with 3 degrees, p = 0.39.
    assert test.p_value == pytest.approx(0.5607, abs=1e-4)
    assert test.drift_detected is False
