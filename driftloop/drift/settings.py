"""Settings of drift detection, the training trigger, the replay buffer and the promotion gate.

This module imports no river code, so that loading the config stays cheap. The
constraints on detector parameters repeat river 0.26's own checks and add those that
river only hits at run time (see :class:`KSWINParams` and :class:`ADWINParams`).
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

DetectorName = Literal["adwin", "ddm", "eddm", "hddm_a", "page_hinkley", "kswin", "chi_square"]
"""Detectors by config name: river's ADWIN, DDM, EDDM, HDDMA, PageHinkley, KSWIN, plus our chi-square test."""

Signal = Literal["error", "confidence", "predicted_label", "log_length", "digit_share", "placeholder_count"]
"""Per-example values a detector can watch. :mod:`driftloop.drift.features` defines the text features."""

BINARY_DETECTORS = frozenset({"ddm", "eddm", "hddm_a"})
"""Detectors that accept only 0/1 input, so they watch only the ``error`` signal."""

CATEGORICAL_DETECTORS = frozenset({"chi_square"})
"""Detectors that watch a label, not a number, so they watch only ``predicted_label``."""


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# Detector parameters: field names are the constructor names of the river class, and the
# defaults are river 0.26's, so ``params: {}`` gives river's default detector.


class ADWINParams(_Frozen):
    """Parameters of river's ``drift.ADWIN``."""

    delta: float = Field(0.002, gt=0, lt=1, description="Significance level of the window-split test")
    # river's Rust ADWIN panics on the first update with clock=0 or max_buckets=0.
    clock: int = Field(32, ge=1, description="Examples between two checks for a change")
    max_buckets: int = Field(5, ge=1, description="Buckets of each size kept before merging")
    min_window_length: int = Field(5, ge=1, description="Smallest sub-window tested")
    grace_period: int = Field(10, ge=0, description="Examples before the first check")


class DDMParams(_Frozen):
    """Parameters of river's ``drift.binary.DDM``."""

    warm_start: int = Field(30, ge=1, description="Examples before the first check")
    warning_threshold: float = Field(2.0, gt=0, description="Warning level, in standard deviations")
    drift_threshold: float = Field(3.0, gt=0, description="Alarm level, in standard deviations")

    @model_validator(mode="after")
    def _check_order(self) -> DDMParams:
        if self.drift_threshold < self.warning_threshold:
            raise ValueError(
                f"drift_threshold ({self.drift_threshold}) must be at least warning_threshold "
                f"({self.warning_threshold})"
            )
        return self


class EDDMParams(_Frozen):
    """Parameters of river's ``drift.binary.EDDM``."""

    warm_start: int = Field(30, ge=1, description="Examples before the first check")
    alpha: float = Field(0.95, gt=0, le=1, description="Warning level of the distance ratio")
    beta: float = Field(0.9, gt=0, le=1, description="Alarm level of the distance ratio")

    @model_validator(mode="after")
    def _check_order(self) -> EDDMParams:
        if self.alpha < self.beta:
            raise ValueError(f"alpha ({self.alpha}) must be at least beta ({self.beta})")
        return self


class HDDMAParams(_Frozen):
    """Parameters of river's ``drift.binary.HDDMA``."""

    drift_confidence: float = Field(0.001, gt=0, lt=1, description="Significance level of an alarm")
    warning_confidence: float = Field(0.005, gt=0, lt=1, description="Significance level of a warning")
    two_sided_test: bool = Field(False, description="Also alarm when the error rate falls")

    @model_validator(mode="after")
    def _check_order(self) -> HDDMAParams:
        if self.drift_confidence > self.warning_confidence:
            raise ValueError(
                f"drift_confidence ({self.drift_confidence}) must not exceed warning_confidence "
                f"({self.warning_confidence})"
            )
        return self


class PageHinkleyParams(_Frozen):
    """Parameters of river's ``drift.PageHinkley``. ``delta`` and ``threshold`` are in units of the signal."""

    min_instances: int = Field(30, ge=1, description="Examples before the first check")
    delta: float = Field(0.005, ge=0, description="Change of the mean that is tolerated")
    threshold: float = Field(50.0, gt=0, description="Alarm level of the cumulative deviation")
    alpha: float = Field(1 - 0.0001, gt=0, le=1, description="Fading factor of the cumulative sums")
    mode: Literal["up", "down", "both"] = Field("both", description="Direction of change to detect")


class KSWINParams(_Frozen):
    """Parameters of river's ``drift.KSWIN``, without the ``window`` warm-start argument."""

    alpha: float = Field(0.005, gt=0, lt=1, description="Significance level of each Kolmogorov-Smirnov test")
    window_size: int = Field(100, ge=2, description="Length of the sliding window")
    stat_size: int = Field(30, ge=1, description="Length of the recent sub-window that is tested")
    seed: int | None = Field(None, description="Seed of the sub-sampling, or None for a run that is not reproducible")

    @model_validator(mode="after")
    def _check_sizes(self) -> KSWINParams:
        # river checks only window_size >= stat_size in the constructor, but then draws
        # stat_size values from the window_size - stat_size older ones and raises
        # ValueError on the update that fills the window.
        if self.window_size < 2 * self.stat_size:
            raise ValueError(
                f"window_size ({self.window_size}) must be at least twice stat_size ({self.stat_size})"
            )
        return self


class ChiSquareParams(_Frozen):
    """Parameters of :class:`driftloop.drift.label_shift.LabelShiftTest`."""

    reference_size: int = Field(500, ge=10, description="Predicted labels in the reference window")
    window_size: int = Field(500, ge=10, description="Predicted labels in each tested window")
    alpha: float = Field(0.001, gt=0, lt=1, description="Significance level of each chi-square test")
    min_distance: float = Field(
        0.1, ge=0, le=1, description="Smallest total variation distance that raises an alarm"
    )
    min_expected: float = Field(
        5.0, gt=0, description="Labels with a smaller expected count are pooled into one category"
    )


DETECTOR_PARAMS: dict[str, type[_Frozen]] = {
    "adwin": ADWINParams,
    "ddm": DDMParams,
    "eddm": EDDMParams,
    "hddm_a": HDDMAParams,
    "page_hinkley": PageHinkleyParams,
    "kswin": KSWINParams,
    "chi_square": ChiSquareParams,
}


class DetectorSettings(_Frozen):
    """One detector watching one signal.

    ``params`` takes the constructor arguments of the river class, under river's names.
    After validation it contains every parameter, defaults included.
    """

    name: DetectorName
    signal: Signal
    params: dict[str, Any] = Field(default_factory=dict, validate_default=True)

    @field_validator("signal")
    @classmethod
    def _check_signal(cls, signal: str, info: ValidationInfo) -> str:
        name = info.data.get("name")
        if name is None:
            return signal  # the name failed validation and is reported on its own
        if name in BINARY_DETECTORS and signal != "error":
            raise ValueError(f"detector {name!r} accepts only 0/1 input, so its signal must be 'error'")
        if (name in CATEGORICAL_DETECTORS) != (signal == "predicted_label"):
            raise ValueError(
                f"signal 'predicted_label' needs detector 'chi_square', and 'chi_square' needs signal "
                f"'predicted_label'; got detector {name!r} on signal {signal!r}"
            )
        return signal

    @field_validator("params")
    @classmethod
    def _check_params(cls, params: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        name = info.data.get("name")
        if name is None:
            return params
        model = DETECTOR_PARAMS[name]
        try:
            return model.model_validate(params).model_dump()
        except ValidationError as exc:
            problems = "; ".join(_describe_error(error) for error in exc.errors())
            accepted = ", ".join(model.model_fields)
            raise ValueError(
                f"invalid parameters for detector {name!r}: {problems} (accepted parameters: {accepted})"
            ) from None


def _describe_error(error: Any) -> str:
    message = error["msg"].removeprefix("Value error, ")
    location = ".".join(str(part) for part in error["loc"])
    if not location:
        return message
    return f"{location}: {message}, got {error['input']!r}"


def _default_detectors() -> tuple[DetectorSettings, ...]:
    # Tuned so that 10,000 stationary synthetic examples raise no alarm. The figures are
    # in the docstring of DriftSettings, and tests/test_drift_detectors.py checks seed 0.
    return (
        DetectorSettings(name="adwin", signal="error"),
        DetectorSettings(name="ddm", signal="error", params={"warm_start": 300, "drift_threshold": 4.0}),
        DetectorSettings(
            name="page_hinkley",
            signal="confidence",
            params={"mode": "down", "delta": 0.02, "threshold": 25.0, "alpha": 1.0},
        ),
        DetectorSettings(
            name="kswin", signal="confidence", params={"alpha": 1e-6, "window_size": 300, "stat_size": 100, "seed": 0}
        ),
        DetectorSettings(name="adwin", signal="log_length"),
        DetectorSettings(name="adwin", signal="digit_share"),
        DetectorSettings(name="adwin", signal="placeholder_count", params={"delta": 0.0002}),
        DetectorSettings(name="chi_square", signal="predicted_label"),
    )


class TriggerSettings(_Frozen):
    """When drift alarms start a training job."""

    cooldown_examples: int | None = Field(
        2000,
        ge=1,
        description="Alarms up to this many examples after an episode's first alarm join it; None turns it off",
    )
    cooldown_s: float | None = Field(
        900.0,
        gt=0,
        description="Alarms up to this many seconds after an episode's first alarm join it; None turns it off",
    )
    min_labelled_examples: int = Field(
        500, ge=1, description="Labelled examples needed since the model version started and since the last job"
    )
    lock_ttl_s: float = Field(
        3600.0, gt=0, description="Seconds the job lock lives unless the trainer refreshes it"
    )

    @model_validator(mode="after")
    def _check_cooldown(self) -> TriggerSettings:
        if self.cooldown_examples is None and self.cooldown_s is None:
            raise ValueError(
                "cooldown_examples and cooldown_s are both None, so every alarm would be its own episode; "
                "set one or both"
            )
        return self


class ReplaySettings(_Frozen):
    """The reservoir sample of older labelled examples that is mixed into each training set."""

    size: int = Field(5000, ge=1, description="Examples kept in the replay buffer")
    seed: int = Field(0, description="Seed of the reservoir sampling and of the train/held-out split")


class GateSettings(_Frozen):
    """Margins of the promotion gate, as accuracy differences in [0, 1]."""

    min_recent_gain: float = Field(
        0.01, ge=0, le=1, description="Accuracy the candidate must gain over the champion on recent examples"
    )
    max_replay_loss: float = Field(
        0.02, ge=0, le=1, description="Accuracy the candidate may lose against the champion on replayed examples"
    )
    max_group_loss: float = Field(
        0.05, ge=0, le=1, description="Accuracy the candidate may lose against the champion in any group"
    )
    min_group_examples: int = Field(
        30, ge=1, description="Held-out examples a group needs before its accuracy is checked"
    )
    min_recent_examples: int = Field(
        50, ge=1, description="Held-out recent examples needed to compare at all; with fewer, the candidate is rejected"
    )
    holdout_fraction: float = Field(
        0.2, gt=0, lt=1, description="Share of recent and of replayed examples held out from training for the gate"
    )


class TrainingSettings(_Frozen):
    """Training of a candidate from the champion: which layers, how many epochs, which learning rates."""

    mode: Literal["head", "top_layers", "all"] = Field(
        "head", description="Train the classifier head only, the head and the top encoder layers, or everything"
    )
    layers: int = Field(2, ge=1, description="Encoder layers trained in mode 'top_layers'")
    epochs: int = Field(3, ge=1)
    learning_rate: float = Field(2e-3, gt=0, description="Learning rate of the classifier head")
    encoder_learning_rate: float = Field(3e-5, gt=0, description="Learning rate of the trained encoder layers")
    cpu_share: float = Field(
        0.5, gt=0, le=1, description="Share of the machine's CPU cores the trainer may use for torch threads"
    )

    def train_layers(self, encoder_layers: int) -> int:
        """Return how many top encoder layers to train, out of ``encoder_layers``. 0 means the head only."""
        if self.mode == "head":
            return 0
        if self.mode == "all":
            return encoder_layers
        return min(self.layers, encoder_layers)

    def threads(self, cpu_count: int) -> int:
        """Return the torch thread count for ``cpu_count`` cores: the configured share, at least 1."""
        return max(1, math.floor(cpu_count * self.cpu_share))


class DriftSettings(_Frozen):
    """Drift settings (the ``drift:`` section of the config file).

    ``detectors`` lists which detector watches which signal. With the defaults below,
    ``python -m driftloop.drift.baseline 20`` counts no alarm on 10,000 stationary
    examples of :func:`driftloop.drift.synthetic.stationary_examples`, seeds 0 to 19.
    River's defaults, measured the same way, alarm where noted:

    - ``adwin`` on ``error``: river's defaults.
    - ``ddm`` on ``error``: ``warm_start=300, drift_threshold=4.0``. river's defaults
      (30, 3.0) raised 7 alarms in 4 of the 20 seeds.
    - ``page_hinkley`` on ``confidence``, falling only: ``delta=0.02, threshold=25``, in
      confidence units, half river's threshold so that a fall is found sooner, and
      ``alpha=1``, no fading. With river's fading factor (``1 - 1e-4``) the cumulative sum
      stops growing after about ``1 / (1 - alpha)`` examples and then wanders with a
      standard deviation of about ``sigma / sqrt(2 * (1 - alpha))``, 70 times the signal's
      own, so a long stationary stream crosses any threshold in the end. With fading, it
      alarmed once on 20,000 real MiniLM confidences (benchmarks/drift_recovery.py), in 2
      of 3 seeds of 100,000 synthetic examples, and, on a wider signal (standard
      deviation 0.3), even at threshold 50. Without fading, ``delta`` keeps the sum
      growing, so a false alarm needs a drawdown of 25 against that growth. None of
      these streams raised one.
    - ``kswin`` on ``confidence``: ``alpha=1e-6, window_size=300, stat_size=100, seed=0``.
      KSWIN tests on every example, so river's ``alpha=0.005`` raised 247 alarms.
    - ``adwin`` on ``log_length``, ``digit_share`` and ``placeholder_count``. The last uses
      ``delta=0.0002``, because river's 0.002 raised 1 alarm on its small integer counts.
    - ``chi_square`` on ``predicted_label``: windows of 500 against a reference of 500.

    ``eddm`` and ``hddm_a`` are available but not on by default: with river's defaults they
    raised 346 and 4 alarms.

    NOTE: these rates hold for the synthetic distributions. A real stream with
    autocorrelation, such as bursts of similar requests, raises more alarms.
    """

    enabled: bool = Field(True, description="False builds no detectors, so no drift event is emitted")
    detectors: tuple[DetectorSettings, ...] = Field(default_factory=_default_detectors)
    trigger: TriggerSettings = Field(default_factory=TriggerSettings)
    replay: ReplaySettings = Field(default_factory=ReplaySettings)
    gate: GateSettings = Field(default_factory=GateSettings)
    training: TrainingSettings = Field(default_factory=TrainingSettings)

    @field_validator("detectors")
    @classmethod
    def _check_unique(cls, detectors: tuple[DetectorSettings, ...]) -> tuple[DetectorSettings, ...]:
        first_index: dict[tuple[str, str], int] = {}
        for index, detector in enumerate(detectors):
            key = (detector.name, detector.signal)
            if key in first_index:
                raise ValueError(
                    f"drift.detectors[{index}] repeats {detector.name} on {detector.signal} "
                    f"(also drift.detectors[{first_index[key]}]); its drift events could not be told apart"
                )
            first_index[key] = index
        return detectors
