"""Count the PII in texts, for ``driftloop pii scan``. The report contains counts, never values."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from driftloop.errors import RedactionError
from driftloop.redaction.spans import DetectedSpan, merge_spans


def scan_texts(
    redactor_or_analyzer, texts: Sequence[str], known_values: Sequence[str] | None = None
) -> dict[str, Any]:
    """Count detected spans per entity type and, if given, how many known values were found.

    ``redactor_or_analyzer`` is a Redactor (its configured entities) or a Presidio
    AnalyzerEngine (every entity it supports, with its own score threshold). Each
    occurrence of a ``known_values`` item in a text counts as detected when the merged
    spans cover all of its characters, that is, when redaction would remove it whole.
    Missed values are reported by their index in ``known_values``, never by content.
    """
    spans_per_text = _find_spans(redactor_or_analyzer, texts)
    entity_counts: Counter[str] = Counter()
    for spans in spans_per_text:
        entity_counts.update(span.entity_type for span in spans)
    report: dict[str, Any] = {
        "texts": len(texts),
        "chars": sum(len(text) for text in texts),
        "texts_with_pii": sum(1 for spans in spans_per_text if spans),
        "entity_counts": dict(sorted(entity_counts.items())),
    }
    if known_values is not None:
        report["known_values"] = _check_known_values(texts, spans_per_text, known_values)
    return report


def _find_spans(redactor_or_analyzer, texts: Sequence[str]) -> list[list[DetectedSpan]]:
    if hasattr(redactor_or_analyzer, "analyze_batch"):
        return redactor_or_analyzer.analyze_batch(texts)
    if hasattr(redactor_or_analyzer, "analyze"):
        from presidio_analyzer import BatchAnalyzerEngine

        batches = BatchAnalyzerEngine(redactor_or_analyzer).analyze_iterator(list(texts), language="en", batch_size=64)
        return [merge_spans(DetectedSpan(r.entity_type, r.start, r.end, r.score) for r in results) for results in batches]
    raise RedactionError(
        f"scan_texts expects a Redactor or a Presidio AnalyzerEngine, got {type(redactor_or_analyzer).__name__}"
    )


def _check_known_values(
    texts: Sequence[str], spans_per_text: Sequence[Sequence[DetectedSpan]], known_values: Sequence[str]
) -> dict[str, Any]:
    occurrences = detected = 0
    missed_indices = set()
    for index, value in enumerate(known_values):
        if not value:
            raise RedactionError(f"known_values[{index}] is empty; an empty value would match every position")
        for text, spans in zip(texts, spans_per_text, strict=True):
            start = text.find(value)
            while start != -1:
                occurrences += 1
                if _is_covered(start, start + len(value), spans):
                    detected += 1
                else:
                    missed_indices.add(index)
                start = text.find(value, start + 1)
    return {
        "given": len(known_values),
        "occurrences": occurrences,
        "detected": detected,
        "missed": occurrences - detected,
        "missed_value_indices": sorted(missed_indices),
    }


def _is_covered(start: int, end: int, spans: Sequence[DetectedSpan]) -> bool:
    # Merged spans never overlap, so summing the overlaps measures the covered length.
    covered = sum(max(0, min(end, span.end) - max(start, span.start)) for span in spans)
    return covered == end - start
