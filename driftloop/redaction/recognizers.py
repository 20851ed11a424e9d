"""Presidio recognizers for the configured entities, all of them usable offline.

The pattern recognizers are taken from the registry that Presidio builds by default
(``conf/default_recognizers.yaml``), so their context words and regex flags match an
``AnalyzerEngine()`` built with no arguments. Two are replaced: EmailRecognizer by
OfflineEmailRecognizer, and PhoneRecognizer by one limited to the configured regions.
"""

from __future__ import annotations

import tldextract
from presidio_analyzer import EntityRecognizer, Pattern, PatternRecognizer
from presidio_analyzer.predefined_recognizers import EmailRecognizer, PhoneRecognizer, SpacyRecognizer
from presidio_analyzer.recognizer_registry import RecognizerRegistryProvider

from driftloop.redaction.nlp import LANGUAGE
from driftloop.redaction.settings import PATTERN_REGEX_FLAGS, PatternRecognizerSettings, RedactionSettings

# tldextract's module-level ``extract`` downloads the Public Suffix List on first use and
# caches it under $HOME. This extractor reads only the snapshot bundled with tldextract:
# no request (empty suffix_list_urls) and no cache file (cache_dir=None).
OFFLINE_TLD_EXTRACTOR = tldextract.TLDExtract(cache_dir=None, suffix_list_urls=())

# Languages of the recognizers in presidio-analyzer's conf/default_recognizers.yaml (2.2.366).
_DEFAULT_CONFIG_LANGUAGES = ["en", "es", "it", "pl"]


class OfflineEmailRecognizer(EmailRecognizer):
    """Presidio's EmailRecognizer with the domain check done against the bundled suffix list.

    Patterns, scores and context words are EmailRecognizer's own, and only the source of
    the Public Suffix List differs. Results differ from the stock recognizer's only for a
    suffix that the live list has and the snapshot in the installed tldextract lacks.
    """

    def validate_result(self, pattern_text: str) -> bool:
        return OFFLINE_TLD_EXTRACTOR(pattern_text).fqdn != ""


def build_recognizers(settings: RedactionSettings) -> list[EntityRecognizer]:
    """Build the recognizers of the active entities, restricted to the configured phone regions."""
    wanted = set(settings.active_entities)
    recognizers: list[EntityRecognizer] = []
    for recognizer in default_pattern_recognizers():
        if not wanted.intersection(recognizer.supported_entities):
            continue
        if isinstance(recognizer, EmailRecognizer):
            recognizer = OfflineEmailRecognizer(context=recognizer.context)
            recognizer.global_regex_flags = PATTERN_REGEX_FLAGS
        elif isinstance(recognizer, PhoneRecognizer):
            recognizer = PhoneRecognizer(context=recognizer.context, supported_regions=settings.phone_regions)
        recognizers.append(recognizer)

    if settings.ner_entities:
        recognizers.append(SpacyRecognizer(supported_language=LANGUAGE, supported_entities=list(settings.ner_entities)))

    recognizers.extend(_build_extra_recognizer(extra) for extra in settings.pattern_recognizers)
    return recognizers


def default_pattern_recognizers() -> list[EntityRecognizer]:
    """Return the English recognizers of Presidio's default registry, the spaCy one excluded."""
    # The default configuration also defines es, it and pl recognizers. Requesting only en
    # makes Presidio log a warning for each of those, so all four are built and en is kept.
    provider = RecognizerRegistryProvider(registry_configuration={"supported_languages": _DEFAULT_CONFIG_LANGUAGES})
    return [
        recognizer
        for recognizer in provider.create_recognizer_registry().recognizers
        if recognizer.supported_language == LANGUAGE and not isinstance(recognizer, SpacyRecognizer)
    ]


def _build_extra_recognizer(extra: PatternRecognizerSettings) -> PatternRecognizer:
    return PatternRecognizer(
        supported_entity=extra.entity,
        name=extra.name,
        patterns=[Pattern(name=extra.name, regex=extra.regex, score=extra.score)],
        global_regex_flags=PATTERN_REGEX_FLAGS,
    )
