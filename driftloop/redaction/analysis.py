"""Presidio analysis of short texts, batched through spaCy's ``nlp.pipe``.

``SpanAnalyzer`` does no chunking and no replacement. The Redactor passes it texts no
longer than ``max_chunk_chars``, in the calling process or in a worker process.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from presidio_analyzer import AnalyzerEngine, RecognizerRegistry

from driftloop.redaction.logs import mask_presidio_log_arguments
from driftloop.redaction.nlp import LANGUAGE, NerOnlySpacyNlpEngine
from driftloop.redaction.recognizers import build_recognizers
from driftloop.redaction.settings import RedactionSettings
from driftloop.redaction.spans import DetectedSpan

logger = logging.getLogger(__name__)


class SpanAnalyzer:
    """Find the configured entities in texts with Presidio and the trimmed spaCy pipeline."""

    def __init__(self, settings: RedactionSettings) -> None:
        mask_presidio_log_arguments()
        started = time.perf_counter()
        nlp_engine = NerOnlySpacyNlpEngine(settings.spacy_model, settings.ner_entities)
        nlp_engine.load()
        registry = RecognizerRegistry(recognizers=build_recognizers(settings), supported_languages=[LANGUAGE])
        self.engine = AnalyzerEngine(
            registry=registry,
            nlp_engine=nlp_engine,
            supported_languages=[LANGUAGE],
            default_score_threshold=settings.score_threshold,
        )
        self.settings = settings
        self._entities = list(settings.active_entities)
        self._allow_list = list(settings.allow_list) or None
        self.load_seconds = time.perf_counter() - started

    def analyze(self, texts: Sequence[str]) -> list[list[DetectedSpan]]:
        """Return the spans found in each text, before merging, in the order of ``texts``."""
        artifacts = self.engine.nlp_engine.process_batch(
            list(texts), LANGUAGE, batch_size=self.settings.batch_size
        )
        found = []
        for text, nlp_artifacts in artifacts:
            results = self.engine.analyze(
                text,
                LANGUAGE,
                entities=self._entities,
                score_threshold=self.settings.score_threshold,
                allow_list=self._allow_list,
                nlp_artifacts=nlp_artifacts,
            )
            found.append([DetectedSpan(r.entity_type, r.start, r.end, r.score) for r in results])
        return found
