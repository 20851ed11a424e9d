"""Detected spans: chunk planning, merging and replacement. Pure functions, no Presidio."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

# Called with (entity_type, original text of the span), returns the replacement.
Operator = Callable[[str, str], str]


@dataclass(frozen=True, slots=True)
class DetectedSpan:
    """A detected entity: type, character offsets (end exclusive) and Presidio score."""

    entity_type: str
    start: int
    end: int
    score: float

    def shifted(self, offset: int) -> DetectedSpan:
        return DetectedSpan(self.entity_type, self.start + offset, self.end + offset, self.score)


def placeholder(entity_type: str, value: str) -> str:
    """Return ``<ENTITY_TYPE>``; the value is not used."""
    return f"<{entity_type}>"


def plan_chunks(length: int, max_chars: int, overlap: int) -> list[tuple[int, int]]:
    """Split ``range(length)`` into windows of at most ``max_chars`` that overlap by ``overlap``.

    Windows start every ``max_chars - overlap`` characters, so every span of at most
    ``overlap + 1`` characters lies whole inside at least one window.
    """
    if length <= max_chars:
        return [(0, length)]
    step = max_chars - overlap
    windows = []
    start = 0
    while True:
        end = min(start + max_chars, length)
        windows.append((start, end))
        if end == length:
            return windows
        start += step


def merge_spans(spans: Iterable[DetectedSpan]) -> list[DetectedSpan]:
    """Merge overlapping spans, and touching spans of one type, into non-overlapping spans.

    A merged span covers the union of its members and takes the type of the member with
    the highest score; ties go to the longer member, then to the type name in sorted
    order, so the result does not depend on the input order.
    """
    ordered = sorted(spans, key=lambda span: (span.start, -span.end, span.entity_type, span.score))
    merged: list[DetectedSpan] = []
    for span in ordered:
        if merged and _joins(merged[-1], span):
            merged[-1] = _union(merged[-1], span)
        else:
            merged.append(span)
    return merged


def replace_spans(text: str, spans: Sequence[DetectedSpan], operator: Operator = placeholder) -> str:
    """Replace each span of ``merge_spans`` output in one pass over the original text.

    The operator receives the original text of its own span, never text that an earlier
    replacement produced, and replacements are never analysed again, so placeholders
    cannot nest.
    """
    parts = []
    position = 0
    for span in spans:
        if span.start < position:
            raise ValueError("spans overlap or are unsorted; pass them through merge_spans first")
        parts.append(text[position : span.start])
        parts.append(operator(span.entity_type, text[span.start : span.end]))
        position = span.end
    parts.append(text[position:])
    return "".join(parts)


def count_entities(spans: Iterable[DetectedSpan]) -> dict[str, int]:
    """Return the number of spans per entity type, types sorted by name."""
    counts = Counter(span.entity_type for span in spans)
    return dict(sorted(counts.items()))


def _joins(previous: DetectedSpan, span: DetectedSpan) -> bool:
    if span.start < previous.end:
        return True
    return span.start == previous.end and span.entity_type == previous.entity_type


def _union(first: DetectedSpan, second: DetectedSpan) -> DetectedSpan:
    label_source = max(first, second, key=_label_priority)
    return DetectedSpan(
        label_source.entity_type,
        min(first.start, second.start),
        max(first.end, second.end),
        max(first.score, second.score),
    )


def _label_priority(span: DetectedSpan) -> tuple[float, int, tuple[int, ...]]:
    # Negated code points make max() prefer the type name that sorts first.
    return span.score, span.end - span.start, tuple(-ord(char) for char in span.entity_type)
