"""Validation of the ``drift:`` settings."""

from __future__ import annotations

import pydantic
import pytest

from driftloop.config import load_settings
from driftloop.drift.settings import DriftSettings, TrainingSettings
from driftloop.errors import ConfigError


def test_defaults_are_valid_and_complete():
    settings = DriftSettings()

    assert settings.enabled is True
    assert len(settings.detectors) == 8
    adwin = settings.detectors[0]
    assert (adwin.name, adwin.signal) == ("adwin", "error")
    assert adwin.params == {"delta": 0.002, "clock": 32, "max_buckets": 5, "min_window_length": 5, "grace_period": 10}


def test_settings_are_frozen():
    settings = DriftSettings()

    with pytest.raises(pydantic.ValidationError, match="Instance is frozen"):
        settings.enabled = False


@pytest.mark.parametrize(
    ("drift", "match"),
    [
        pytest.param(
            {"detectors": [{"name": "adwinn", "signal": "error"}]},
            r"detectors\.0\.name\n  Input should be 'adwin', 'ddm'",
            id="unknown-detector",
        ),
        pytest.param(
            {"detectors": [{"name": "adwin", "signal": "latency"}]},
            r"detectors\.0\.signal\n  Input should be 'error', 'confidence'",
            id="unknown-signal",
        ),
        pytest.param(
            {"detectors": [{"name": "adwin", "signal": "error", "params": {"delta": 0}}]},
            r"detectors\.0\.params\n.*invalid parameters for detector 'adwin': "
            r"delta: Input should be greater than 0, got 0",
            id="adwin-delta",
        ),
        pytest.param(
            {"detectors": [{"name": "adwin", "signal": "error", "params": {"clock": 0}}]},
            r"detectors\.0\.params\n.*clock: Input should be greater than or equal to 1, got 0",
            id="adwin-clock",
        ),
        pytest.param(
            {"detectors": [{"name": "adwin", "signal": "error", "params": {"window": 5}}]},
            r"window: Extra inputs are not permitted, got 5 \(accepted parameters: delta, clock, ",
            id="unknown-parameter",
        ),
        pytest.param(
            {"detectors": [{"name": "kswin", "signal": "confidence", "params": {"window_size": 100, "stat_size": 60}}]},
            r"window_size \(100\) must be at least twice stat_size \(60\)",
            id="kswin-sizes",
        ),
        pytest.param(
            {"detectors": [{"name": "ddm", "signal": "error", "params": {"drift_threshold": 1.0}}]},
            r"drift_threshold \(1\.0\) must be at least warning_threshold \(2\.0\)",
            id="ddm-thresholds",
        ),
        pytest.param(
            {"detectors": [{"name": "page_hinkley", "signal": "confidence", "params": {"mode": "falling"}}]},
            r"mode: Input should be 'up', 'down' or 'both', got 'falling'",
            id="page-hinkley-mode",
        ),
        pytest.param(
            {"detectors": [{"name": "ddm", "signal": "confidence"}]},
            r"detectors\.0\.signal\n.*detector 'ddm' accepts only 0/1 input, so its signal must be 'error'",
            id="binary-on-confidence",
        ),
        pytest.param(
            {"detectors": [{"name": "adwin", "signal": "predicted_label"}]},
            r"signal 'predicted_label' needs detector 'chi_square'",
            id="label-without-chi-square",
        ),
        pytest.param(
            {"detectors": [{"name": "adwin", "signal": "error"}, {"name": "adwin", "signal": "error"}]},
            r"drift\.detectors\[1\] repeats adwin on error \(also drift\.detectors\[0\]\)",
            id="duplicate-detector",
        ),
        pytest.param(
            {"trigger": {"cooldown_examples": None, "cooldown_s": None}},
            r"trigger\n.*cooldown_examples and cooldown_s are both None, so every alarm would be its own episode",
            id="no-cooldown",
        ),
        pytest.param(
            {"trigger": {"min_labelled_examples": 0}},
            r"trigger\.min_labelled_examples\n  Input should be greater than or equal to 1",
            id="min-labelled",
        ),
        pytest.param(
            {"replay": {"size": 0}},
            r"replay\.size\n  Input should be greater than or equal to 1",
            id="replay-size",
        ),
        pytest.param(
            {"gate": {"holdout_fraction": 1.0}},
            r"gate\.holdout_fraction\n  Input should be less than 1",
            id="holdout-fraction",
        ),
        pytest.param(
            {"training": {"mode": "everything"}},
            r"training\.mode\n  Input should be 'head', 'top_layers' or 'all'",
            id="training-mode",
        ),
        pytest.param(
            {"training": {"cpu_share": 1.5}},
            r"training\.cpu_share\n  Input should be less than or equal to 1",
            id="cpu-share",
        ),
        pytest.param({"detector": []}, r"detector\n  Extra inputs are not permitted", id="misspelt-key"),
    ],
)
def test_broken_settings_raise(drift, match):
    with pytest.raises(pydantic.ValidationError, match=match):
        DriftSettings(**drift)


def test_load_settings_names_drift_setting(monkeypatch):
    monkeypatch.delenv("DRIFTLOOP_CONFIG", raising=False)
    with pytest.raises(ConfigError, match=r"drift\.detectors\.0\.name \(DRIFTLOOP_DRIFT__DETECTORS\)"):
        load_settings(drift={"detectors": [{"name": "cusum", "signal": "error"}]})


def test_load_settings_reads_drift_yaml(tmp_path, monkeypatch):
    config = tmp_path / "driftloop.yaml"
    config.write_text(
        "drift:\n"
        "  detectors:\n"
        "    - {name: page_hinkley, signal: confidence, params: {mode: down, threshold: 10}}\n"
        "  trigger: {cooldown_s: null}\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("DRIFTLOOP_CONFIG", str(config))

    settings = load_settings()

    (detector,) = settings.drift.detectors
    assert detector.params["threshold"] == 10.0
    assert detector.params["delta"] == 0.005
    assert settings.drift.trigger.cooldown_s is None
    assert settings.drift.trigger.cooldown_examples == 2000


@pytest.mark.parametrize(
    ("mode", "layers", "expected"),
    [("head", 2, 0), ("top_layers", 2, 2), ("top_layers", 9, 6), ("all", 2, 6)],
)
def test_training_train_layers(mode, layers, expected):
    assert TrainingSettings(mode=mode, layers=layers).train_layers(encoder_layers=6) == expected


@pytest.mark.parametrize(("share", "cpu_count", "expected"), [(0.5, 16, 8), (0.5, 1, 1), (1.0, 2, 2), (0.3, 4, 1)])
def test_training_threads(share, cpu_count, expected):
    assert TrainingSettings(cpu_share=share).threads(cpu_count) == expected
