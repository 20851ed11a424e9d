"""Presidio's default analyzer, the reference the stage is evaluated and benchmarked against."""

from __future__ import annotations

from pathlib import Path

import presidio_analyzer
import yaml
from presidio_analyzer import AnalyzerEngine
from presidio_analyzer.nlp_engine import NlpEngineProvider

from driftloop.redaction.logs import mask_presidio_log_arguments
from driftloop.redaction.recognizers import OfflineEmailRecognizer
from driftloop.redaction.settings import DEFAULT_SPACY_MODEL

DEFAULT_NLP_CONFIG = Path(presidio_analyzer.__file__).parent / "conf" / "default.yaml"


def build_default_analyzer(model_name: str = DEFAULT_SPACY_MODEL) -> AnalyzerEngine:
    """Build ``AnalyzerEngine()`` as Presidio configures it by default, changed only to run offline.

    The NLP configuration is Presidio's ``conf/default.yaml`` with ``model_name`` in place
    of ``en_core_web_lg``, which is not installed and which Presidio would download.
    EmailRecognizer is swapped for OfflineEmailRecognizer, which has the same patterns and
    reads the suffix list from tldextract's bundled snapshot. The score threshold stays at
    Presidio's default of 0, and every predefined recognizer stays loaded.
    """
    mask_presidio_log_arguments()
    nlp_configuration = yaml.safe_load(DEFAULT_NLP_CONFIG.read_text(encoding="utf-8"))
    for model in nlp_configuration["models"]:
        model["model_name"] = model_name
    nlp_engine = NlpEngineProvider(nlp_configuration=nlp_configuration).create_engine()
    analyzer = AnalyzerEngine(nlp_engine=nlp_engine)
    analyzer.registry.remove_recognizer("EmailRecognizer")
    analyzer.registry.add_recognizer(OfflineEmailRecognizer())
    return analyzer
