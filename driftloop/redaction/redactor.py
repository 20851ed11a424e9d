"""The redaction stage: replace each detected PII span with ``<ENTITY_TYPE>``."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from driftloop.errors import RedactionError
from driftloop.redaction.pool import create_backend
from driftloop.redaction.settings import RedactionSettings
from driftloop.redaction.spans import (
    DetectedSpan,
    Operator,
    count_entities,
    merge_spans,
    placeholder,
    plan_chunks,
    replace_spans,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RedactionResult:
    """A redacted text and the number of replaced spans per entity type; never the values."""

    text: str
    entity_counts: dict[str, int] = field(default_factory=dict)

    @property
    def redacted(self) -> bool:
        """True when at least one span was replaced."""
        return bool(self.entity_counts)


@dataclass(frozen=True)
class _Piece:
    text_index: int
    offset: int
    text: str


class Redactor:
    """Find PII with Presidio and replace it, in batches, in one or several processes.

    Texts longer than ``settings.max_chunk_chars`` are analysed in overlapping chunks and
    the spans of all chunks are merged before replacement, so a value that crosses a
    chunk border is replaced whole when it is at most ``chunk_overlap_chars + 1`` long.

    Construction imports Presidio and loads the spaCy model, which takes seconds, so
    reuse one Redactor. Call ``close()``, or use it as a context manager, to stop the
    worker processes. With ``processes`` above 1 the workers are spawned, which re-imports
    the main module: a script must start the Redactor under ``if __name__ == "__main__":``.

    >>> with Redactor() as redactor:  # doctest: +SKIP
    ...     redactor.redact("Mail ana@example.com").text
    'Mail <EMAIL_ADDRESS>'
    """

    def __init__(self, settings: RedactionSettings | None = None, *, operator: Operator = placeholder) -> None:
        self.settings = settings or RedactionSettings()
        self.operator = operator
        self._backend = None
        if not self.settings.enabled:
            logger.warning("PII redaction is disabled (redaction.enabled: false): texts pass through unchanged")
            return
        started = time.perf_counter()
        self._backend = create_backend(self.settings)
        logger.info(
            "PII redaction ready in %.1f s: entities %s, spaCy model %s, %d process(es), score threshold %s",
            time.perf_counter() - started,
            ",".join(self.settings.active_entities),
            self.settings.spacy_model,
            self.settings.processes,
            self.settings.score_threshold,
        )

    def __enter__(self) -> Redactor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the worker processes, if any. Later calls to redact raise RedactionError."""
        if self._backend is not None:
            self._backend.close()
            self._backend = None

    def redact(self, text: str) -> RedactionResult:
        """Redact one text; prefer ``redact_batch`` for many, it is several times faster."""
        return self.redact_batch([text])[0]

    def redact_batch(self, texts: Sequence[str]) -> list[RedactionResult]:
        """Redact ``texts``, returning one result per text in the same order."""
        if not self.settings.enabled:
            _check_types(texts)
            return [RedactionResult(text) for text in texts]
        spans_per_text = self.analyze_batch(texts)
        return [
            RedactionResult(replace_spans(text, spans, self.operator), count_entities(spans))
            for text, spans in zip(texts, spans_per_text, strict=True)
        ]

    def analyze_batch(self, texts: Sequence[str]) -> list[list[DetectedSpan]]:
        """Return the merged spans to replace in each text, with offsets into that text."""
        _check_types(texts)
        if self._backend is None:
            raise RedactionError("this Redactor is disabled or closed; create a new one to redact")
        if not texts:
            return []
        started = time.perf_counter()
        pieces = self._split(texts)
        spans_per_piece = self._backend.analyze([piece.text for piece in pieces])

        collected: list[list[DetectedSpan]] = [[] for _ in texts]
        for piece, spans in zip(pieces, spans_per_piece, strict=True):
            collected[piece.text_index].extend(span.shifted(piece.offset) for span in spans)
        merged = [merge_spans(spans) for spans in collected]

        if logger.isEnabledFor(logging.DEBUG):
            totals = Counter()
            for spans in merged:
                totals.update(span.entity_type for span in spans)
            logger.debug(
                "analysed %d texts (%d chars, %d chunks) in %.3f s: %s",
                len(texts),
                sum(len(text) for text in texts),
                len(pieces),
                time.perf_counter() - started,
                dict(sorted(totals.items())),
            )
        return merged

    def _split(self, texts: Sequence[str]) -> list[_Piece]:
        pieces = []
        for index, text in enumerate(texts):
            windows = plan_chunks(len(text), self.settings.max_chunk_chars, self.settings.chunk_overlap_chars)
            if len(windows) > 1:
                logger.info("text %d of the batch has %d chars: analysing it in %d chunks", index, len(text), len(windows))
            pieces.extend(_Piece(index, start, text[start:end]) for start, end in windows)
        return pieces


def _check_types(texts: Sequence[str]) -> None:
    if isinstance(texts, str):
        raise RedactionError("redact_batch expects a sequence of texts, got a single str; call redact for one text")
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise RedactionError(f"texts[{index}] is {type(text).__name__}, expected str")
