"""Precision, recall and F2 of the stage and of Presidio's defaults on span-labelled data.

Matching rule: a gold span counts as found when a predicted span of its mapped entity
type overlaps it by at least one character, and a predicted span counts as correct when
it overlaps a gold span of its type. Both configurations are scored on what a redactor
would replace: predictions of the stage's entity types only, merged with ``merge_spans``.
``char_coverage`` is the share of gold characters inside any predicted span, of any type,
which is the share that replacement removes.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from driftloop.errors import ConfigError
from driftloop.redaction.labelled import GOLD_TO_ENTITY, LabelledText, read_labelled_spans
from driftloop.redaction.settings import RedactionSettings
from driftloop.redaction.spans import DetectedSpan, merge_spans

STAGE = "stage"
PRESIDIO_DEFAULT = "presidio_default"
DEFAULT_BATCH_SIZE = 64


def evaluate(
    data: str | Path,
    settings: RedactionSettings | None = None,
    *,
    limit: int | None = None,
    compare_defaults: bool = True,
    redactor=None,
    default_analyzer=None,
) -> dict[str, Any]:
    """Score the stage, and Presidio's defaults unless ``compare_defaults`` is False, on ``data``.

    ``data`` is a ``.json`` file in the format of presidio-research's synthetic set, or a
    CoNLL BIO file such as WNUT-17. ``limit`` keeps the first texts only. A loaded
    ``redactor`` or ``default_analyzer`` is used as given, else one is built from
    ``settings`` (the defaults when None). Returns a JSON-serialisable dict.
    """
    from driftloop.redaction.redactor import Redactor

    data_format, texts = read_labelled_spans(data)
    texts = texts[:limit] if limit is not None else texts
    if settings is not None and not settings.enabled:
        raise ConfigError("redaction.enabled is false, so there is no stage to evaluate; enable it in the config")
    if redactor is None:
        with Redactor(settings or RedactionSettings()) as own_redactor:
            return evaluate(
                data, limit=limit, compare_defaults=compare_defaults,
                redactor=own_redactor, default_analyzer=default_analyzer,
            )

    entity_types = _evaluated_types(redactor.settings.active_entities, texts)
    results = {}
    started = time.perf_counter()
    stage_spans = redactor.analyze_batch([item.text for item in texts])
    results[STAGE] = score(texts, stage_spans, entity_types)
    results[STAGE]["seconds"] = round(time.perf_counter() - started, 2)

    if compare_defaults:
        if default_analyzer is None:
            from driftloop.redaction.baseline import build_default_analyzer

            default_analyzer = build_default_analyzer(redactor.settings.spacy_model)
        started = time.perf_counter()
        default_spans = analyze_with_presidio(default_analyzer, [item.text for item in texts], entity_types)
        results[PRESIDIO_DEFAULT] = score(texts, default_spans, entity_types)
        results[PRESIDIO_DEFAULT]["seconds"] = round(time.perf_counter() - started, 2)

    labels = Counter(span.label for item in texts for span in item.spans)
    return {
        "data": str(data),
        "format": data_format,
        "texts": len(texts),
        "gold_spans": sum(labels.values()),
        "entity_types": list(entity_types),
        "mapping": {label: GOLD_TO_ENTITY.get(label) for label in sorted(labels)},
        "not_evaluated": {
            label: count for label, count in sorted(labels.items()) if GOLD_TO_ENTITY.get(label) not in entity_types
        },
        "criterion": "overlap",
        "results": results,
    }


def analyze_with_presidio(analyzer, texts: Sequence[str], entity_types: Sequence[str]) -> list[list[DetectedSpan]]:
    """Run a Presidio AnalyzerEngine as configured, keep ``entity_types`` and merge the spans."""
    from presidio_analyzer import BatchAnalyzerEngine

    batches = BatchAnalyzerEngine(analyzer).analyze_iterator(list(texts), language="en", batch_size=DEFAULT_BATCH_SIZE)
    wanted = set(entity_types)
    return [
        merge_spans(DetectedSpan(r.entity_type, r.start, r.end, r.score) for r in results if r.entity_type in wanted)
        for results in batches
    ]


def score(
    texts: Sequence[LabelledText], predictions: Sequence[Sequence[DetectedSpan]], entity_types: Sequence[str]
) -> dict[str, Any]:
    """Count matches per entity type and per gold label, and derive precision, recall and F2."""
    counts = {entity: Counter() for entity in entity_types}
    by_label: dict[str, Counter] = {}
    for item, predicted in zip(texts, predictions, strict=True):
        for span in item.spans:
            entity = span.entity_type
            if entity not in counts:
                continue
            found = any(p.entity_type == entity and _overlaps(p, span) for p in predicted)
            covered = _covered_chars(span, predicted)
            counts[entity].update(support=1, found=int(found), gold_chars=span.end - span.start, covered_chars=covered)
            by_label.setdefault(span.label, Counter()).update(support=1, found=int(found))
        for prediction in predicted:
            if prediction.entity_type not in counts:
                continue
            correct = any(
                s.entity_type == prediction.entity_type and _overlaps(prediction, s) for s in item.spans
            )
            counts[prediction.entity_type].update(predicted=1, correct=int(correct))

    per_entity = {entity: _metrics(counter) for entity, counter in counts.items()}
    overall = _metrics(sum(counts.values(), Counter()))
    recall_by_label = {
        label: {
            "entity_type": GOLD_TO_ENTITY[label],
            "support": counter["support"],
            "recall": _ratio(counter["found"], counter["support"]),
        }
        for label, counter in sorted(by_label.items())
    }
    return {"per_entity": per_entity, "overall": overall, "recall_by_label": recall_by_label}


def render_table(report: dict[str, Any]) -> str:
    """Render an ``evaluate`` report as fixed-width text tables."""
    configurations = list(report["results"])
    lines = [
        f"{report['data']}: {report['texts']} texts, {report['gold_spans']} gold spans",
        "A gold span is found when a prediction of its type overlaps it; chars is the share of",
        "gold characters inside any prediction, so the share that redaction removes.",
        "",
    ]
    group_line = " " * 26
    header = f"{'entity':<18}{'support':>8}"
    for name in configurations:
        group_line += f" | {name:^27}"
        header += f" | {'P':>6}{'R':>7}{'F2':>7}{'chars':>7}"
    lines += [group_line.rstrip(), header, "-" * len(header)]
    rows = [(entity, report["results"][configurations[0]]["per_entity"][entity]) for entity in report["entity_types"]]
    rows.append(("overall", report["results"][configurations[0]]["overall"]))
    for entity, first in rows:
        line = f"{entity:<18}{first['support']:>8}"
        for name in configurations:
            result = report["results"][name]
            metrics = result["overall"] if entity == "overall" else result["per_entity"][entity]
            line += (
                f" | {metrics['precision']:>6.3f}{metrics['recall']:>7.3f}"
                f"{metrics['f2']:>7.3f}{metrics['char_coverage']:>7.3f}"
            )
        lines.append(line)

    lines += ["", f"{'gold label':<18}{'counted as':>14}{'support':>8}" + "".join(f"{name + ' R':>20}" for name in configurations)]
    for label, first in report["results"][configurations[0]]["recall_by_label"].items():
        line = f"{label:<18}{first['entity_type']:>14}{first['support']:>8}"
        line += "".join(f"{report['results'][name]['recall_by_label'][label]['recall']:>20.3f}" for name in configurations)
        lines.append(line)
    if report["not_evaluated"]:
        skipped = ", ".join(f"{label} {count}" for label, count in report["not_evaluated"].items())
        lines += ["", f"not evaluated (no configured entity type): {skipped}"]
    return "\n".join(lines)


def _evaluated_types(active_entities: Sequence[str], texts: Sequence[LabelledText]) -> tuple[str, ...]:
    present = {span.entity_type for item in texts for span in item.spans}
    return tuple(entity for entity in active_entities if entity in present)


def _metrics(counter: Counter) -> dict[str, Any]:
    precision = _ratio(counter["correct"], counter["predicted"])
    recall = _ratio(counter["found"], counter["support"])
    f2 = 5 * precision * recall / (4 * precision + recall) if precision + recall else 0.0
    return {
        "support": counter["support"],
        "predicted": counter["predicted"],
        "precision": precision,
        "recall": recall,
        "f2": round(f2, 4),
        "char_coverage": _ratio(counter["covered_chars"], counter["gold_chars"]),
    }


def _ratio(numerator: int, denominator: int) -> float:
    # NOTE: 0/0 is reported as 0.0, as scikit-learn's zero_division=0 does.
    return round(numerator / denominator, 4) if denominator else 0.0


def _overlaps(first, second) -> bool:
    return first.start < second.end and second.start < first.end


def _covered_chars(span, predicted: Sequence[DetectedSpan]) -> int:
    covered = 0
    for prediction in predicted:
        covered += max(0, min(span.end, prediction.end) - max(span.start, prediction.start))
    return covered
