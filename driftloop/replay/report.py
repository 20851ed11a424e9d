"""The replay report: figures for each lane and comparisons between lanes, as JSON-ready data.

Accuracy counts only requests with both a prediction and feedback ("labelled"). The
true label of a request is its first recorded feedback. Latency is measured from the
moment the replay published a request to the prediction's ``predicted_at_ms``, both
on this machine's clock, so it includes queueing behind earlier requests when the
replay publishes faster than the workers predict.

Drift alarms come from the configured detectors (the ``drift:`` settings), run by the
report over each lane's predictions in stream order, with a new monitor whenever the
served model version changes.
"""

from __future__ import annotations

import itertools
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from driftloop.drift.settings import DriftSettings
from driftloop.replay.outcome import LaneOutcome, ReplayOutcome
from driftloop.schemas.events import Prediction

logger = logging.getLogger(__name__)

MAX_PLOT_POINTS = 200
MIN_WINDOW = 10
MAX_WINDOW = 500


@dataclass(frozen=True)
class StreamFacts:
    """The recorded stream as the report needs it, keyed by request id."""

    order: tuple[str, ...]  # request ids in replay order, first occurrence
    truth: Mapping[str, str]  # first feedback label
    attributes: Mapping[str, Mapping[str, Any]]
    event_time_ms: Mapping[str, int]
    texts: Mapping[str, str]

    @classmethod
    def from_outcome(cls, outcome: ReplayOutcome) -> StreamFacts:
        order: list[str] = []
        attributes: dict[str, Mapping[str, Any]] = {}
        event_times: dict[str, int] = {}
        texts: dict[str, str] = {}
        for record in outcome.recording.requests:
            request = record.event
            if request.request_id in attributes:
                continue
            order.append(request.request_id)
            attributes[request.request_id] = request.attributes
            event_times[request.request_id] = request.event_time_ms
            texts[request.request_id] = request.text
        truth: dict[str, str] = {}
        for record in outcome.recording.feedback:
            truth.setdefault(record.request_id, record.event.label)
        return cls(tuple(order), truth, attributes, event_times, texts)


def build_report(
    outcome: ReplayOutcome,
    *,
    group_attribute: str,
    drift_settings: DriftSettings | None,
    examples: int = 10,
) -> dict[str, Any]:
    """Return the report of ``outcome``; ``drift_settings`` None skips drift detection."""
    facts = StreamFacts.from_outcome(outcome)
    header = outcome.recording.header
    labelled = sum(1 for request_id in facts.order if request_id in facts.truth)
    window = max(MIN_WINDOW, min(MAX_WINDOW, labelled // 20))
    lanes = {
        lane.name: _lane_report(lane, facts, outcome, group_attribute, drift_settings, examples, window)
        for lane in outcome.lanes
    }
    comparisons = [_compare(a, b, facts, examples) for a, b in itertools.combinations(outcome.lanes, 2)]
    return {
        "recording": {
            "path": str(outcome.recording.path),
            "created_at_ms": header.created_at_ms,
            "source_bootstrap": header.source.bootstrap,
            "source_prefix": header.source.topic_prefix,
            "counts": dict(header.counts),
            "requests": len(facts.order),
            "labelled_requests": labelled,
            "model_versions": list(header.model_versions),
            "champion_version": header.champion_version,
        },
        "replay": {
            "topic_prefix": outcome.topic_prefix,
            "speed": "max" if outcome.speed is None else outcome.speed,
            "seed": outcome.seed,
            "complete": outcome.complete,
            "events_published": outcome.publish.events,
            "records_published": outcome.publish.records,
            "publish_seconds": round(outcome.publish.seconds, 4),
            "events_per_s": round(outcome.publish.events_per_s, 1),
            "records_per_s": round(outcome.publish.records_per_s, 1),
            "seconds": round(outcome.seconds, 3),
            "predictions_seconds": None
            if outcome.predictions_seconds is None
            else round(outcome.predictions_seconds, 3),
            "accuracy_window": window,
            "topics_kept": outcome.kept_topics,
        },
        "lanes": lanes,
        "comparisons": comparisons,
    }


# One lane.


def _lane_report(
    lane: LaneOutcome,
    facts: StreamFacts,
    outcome: ReplayOutcome,
    group_attribute: str,
    drift_settings: DriftSettings | None,
    examples: int,
    window: int,
) -> dict[str, Any]:
    predictions = lane.predictions
    predicted = [request_id for request_id in facts.order if request_id in predictions]
    missing = [request_id for request_id in facts.order if request_id not in predictions]
    labelled = [request_id for request_id in predicted if request_id in facts.truth]
    correct = [request_id for request_id in labelled if predictions[request_id].label == facts.truth[request_id]]
    latencies = [
        float(predictions[request_id].predicted_at_ms - outcome.publish.published_at_ms[request_id])
        for request_id in predicted
        if lane.origin != "recorded" and request_id in outcome.publish.published_at_ms
    ]
    return {
        "origin": lane.origin,
        "path": lane.path,
        "topic_prefix": lane.topic_prefix,
        "model_versions": sorted({predictions[request_id].model_version for request_id in predicted}),
        "requests": len(facts.order),
        "predicted": len(predicted),
        "missing": len(missing),
        "missing_examples": missing[:examples],
        "duplicate_predictions": lane.duplicates,
        "dead_letters": lane.dead_letters,
        "labelled": len(labelled),
        "correct": len(correct),
        "accuracy": _ratio(len(correct), len(labelled)),
        "per_class": _per_class(labelled, predictions, facts.truth),
        "per_group": _per_group(labelled, predictions, facts, group_attribute),
        "group_attribute": group_attribute,
        "confidence": _confidence(predicted, labelled, predictions, facts.truth),
        "latency_ms": _percentiles(latencies),
        "inference_ms": _percentiles([predictions[request_id].inference_ms for request_id in predicted]),
        "swaps": _swaps(predicted, predictions, facts),
        "drift_alarms": _drift_alarms(predicted, predictions, facts, drift_settings) if drift_settings else [],
        "drift_checked": drift_settings is not None,
        "accuracy_over_stream": _accuracy_over_stream(labelled, predictions, facts, window),
        "online": _online(lane),
    }


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def _per_class(labelled: list[str], predictions: Mapping[str, Prediction], truth: Mapping[str, str]) -> dict[str, Any]:
    support: Counter[str] = Counter()
    predicted: Counter[str] = Counter()
    correct: Counter[str] = Counter()
    for request_id in labelled:
        label, guess = truth[request_id], predictions[request_id].label
        support[label] += 1
        predicted[guess] += 1
        correct[label] += int(label == guess)
    classes = {}
    for label in sorted(set(support) | set(predicted)):
        precision = _ratio(correct[label], predicted[label])
        recall = _ratio(correct[label], support[label])
        classes[label] = {
            "support": support[label],
            "predicted": predicted[label],
            "correct": correct[label],
            "precision": precision,
            "recall": recall,
            "f1": _f1(precision, recall, support[label]),
        }
    return classes


def _f1(precision: float | None, recall: float | None, support: int) -> float | None:
    """Return F1, 0.0 for a class with support that was never predicted right, None without support."""
    if precision and recall:
        return 2 * precision * recall / (precision + recall)
    return 0.0 if support else None


def _per_group(
    labelled: list[str], predictions: Mapping[str, Prediction], facts: StreamFacts, group_attribute: str
) -> dict[str, Any]:
    counts: dict[str, list[int]] = {}
    for request_id in labelled:
        group = facts.attributes[request_id].get(group_attribute)
        if group is None:
            continue
        entry = counts.setdefault(str(group), [0, 0])
        entry[0] += 1
        entry[1] += int(predictions[request_id].label == facts.truth[request_id])
    return {group: {"n": n, "correct": c, "accuracy": _ratio(c, n)} for group, (n, c) in sorted(counts.items())}


def _confidence(
    predicted: list[str], labelled: list[str], predictions: Mapping[str, Prediction], truth: Mapping[str, str]
) -> dict[str, float | None]:
    values = [predictions[request_id].confidence for request_id in predicted]
    right = [predictions[r].confidence for r in labelled if predictions[r].label == truth[r]]
    wrong = [predictions[r].confidence for r in labelled if predictions[r].label != truth[r]]
    return {
        "mean": _mean(values),
        "p50": _percentiles(values)["p50"],
        "mean_correct": _mean(right),
        "mean_wrong": _mean(wrong),
    }


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _percentiles(values: Sequence[float]) -> dict[str, float | None]:
    """Nearest-rank percentiles and the maximum."""
    if not values:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    ordered = sorted(values)

    def rank(q: float) -> float:
        return float(ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.999999) - 1))])

    return {"p50": rank(0.50), "p95": rank(0.95), "p99": rank(0.99), "max": float(ordered[-1])}


def _swaps(predicted: list[str], predictions: Mapping[str, Prediction], facts: StreamFacts) -> list[dict[str, Any]]:
    """Return where the model version changes along the stream."""
    position_of = {request_id: position for position, request_id in enumerate(facts.order)}
    swaps = []
    previous: int | None = None
    for request_id in predicted:
        version = predictions[request_id].model_version
        if previous is not None and version != previous:
            swaps.append(
                {"position": position_of[request_id], "request_id": request_id, "from": previous, "to": version}
            )
        previous = version
    return swaps


def _drift_alarms(
    predicted: list[str], predictions: Mapping[str, Prediction], facts: StreamFacts, settings: DriftSettings
) -> list[dict[str, Any]]:
    from driftloop.drift.monitor import DriftMonitor, MonitoredExample

    position_of = {request_id: position for position, request_id in enumerate(facts.order)}
    alarms = []
    monitor: DriftMonitor | None = None
    for request_id in predicted:
        prediction = predictions[request_id]
        if monitor is None or monitor.model_version != prediction.model_version:
            monitor = DriftMonitor(settings, prediction.model_version)
        truth = facts.truth.get(request_id)
        example = MonitoredExample(
            error=None if truth is None else prediction.label != truth,
            confidence=prediction.confidence,
            text=prediction.text or facts.texts[request_id],
            predicted_label=prediction.label,
            event_time=datetime.fromtimestamp(facts.event_time_ms[request_id] / 1000, tz=timezone.utc),
        )
        for event in monitor.update(example):
            alarms.append(
                {
                    "detector": event.detector,
                    "signal": event.signal,
                    "statistic_name": event.statistic_name,
                    "statistic": event.statistic,
                    "model_version": event.model_version,
                    "position": position_of[request_id],
                    "request_id": request_id,
                }
            )
    return alarms


def _accuracy_over_stream(
    labelled: list[str], predictions: Mapping[str, Prediction], facts: StreamFacts, window: int
) -> list[list[float]]:
    """Return [stream position, accuracy of the last ``window`` labelled requests], at most MAX_PLOT_POINTS of them."""
    if not labelled:
        return []
    position_of = {request_id: position for position, request_id in enumerate(facts.order)}
    hits = [int(predictions[r].label == facts.truth[r]) for r in labelled]
    running = list(itertools.accumulate(hits, initial=0))
    step = max(1, len(labelled) // MAX_PLOT_POINTS)
    points = []
    for index in range(step - 1, len(labelled), step):
        start = max(0, index + 1 - window)
        points.append([position_of[labelled[index]], (running[index + 1] - running[start]) / (index + 1 - start)])
    return points


def _online(lane: LaneOutcome) -> dict[str, Any]:
    """Return the join's own count and accuracy of the lane, to check the report against."""
    if not lane.online:
        return {}
    version = lane.online.get("versions", {}).get(str(lane.version), {})
    return {
        "joined": lane.online.get("join", {}).get("joined", 0),
        "accuracy": version.get("accuracy"),
        "join_counters": dict(lane.online.get("join", {})),
    }


# Two lanes.


def _compare(a: LaneOutcome, b: LaneOutcome, facts: StreamFacts, examples: int) -> dict[str, Any]:
    both = [r for r in facts.order if r in a.predictions and r in b.predictions]
    flips = [r for r in both if a.predictions[r].label != b.predictions[r].label]
    labelled = [r for r in both if r in facts.truth]
    a_only = [r for r in labelled if a.predictions[r].label == facts.truth[r] != b.predictions[r].label]
    b_only = [r for r in labelled if b.predictions[r].label == facts.truth[r] != a.predictions[r].label]
    both_right = sum(1 for r in labelled if a.predictions[r].label == facts.truth[r] == b.predictions[r].label)
    pairs = Counter((a.predictions[r].label, b.predictions[r].label) for r in flips)
    return {
        "a": a.name,
        "b": b.name,
        "compared": len(both),
        "label_flips": len(flips),
        "flip_rate": _ratio(len(flips), len(both)),
        "flip_examples": [
            {
                "request_id": r,
                a.name: a.predictions[r].label,
                b.name: b.predictions[r].label,
                "label": facts.truth.get(r),
            }
            for r in flips[:examples]
        ],
        "flip_pairs": [{"from": x, "to": y, "count": n} for (x, y), n in pairs.most_common(examples)],
        "labelled": len(labelled),
        "a_right_b_wrong": {"count": len(a_only), "examples": a_only[:examples]},
        "b_right_a_wrong": {"count": len(b_only), "examples": b_only[:examples]},
        "both_right": both_right,
        "both_wrong": len(labelled) - both_right - len(a_only) - len(b_only),
    }
