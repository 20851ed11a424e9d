"""Span-labelled evaluation data: Presidio's synthetic JSON set and CoNLL BIO files (WNUT-17)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from driftloop.errors import ConfigError

# Gold labels of the two data sets mapped to the Presidio entity type that should cover
# them. None marks labels that no supported recognizer aims at.
GOLD_TO_ENTITY: dict[str, str | None] = {
    # presidio-research synth_dataset_v2.json
    "PERSON": "PERSON",
    "GPE": "LOCATION",
    "STREET_ADDRESS": "LOCATION",
    "LOCATION": "LOCATION",
    "EMAIL_ADDRESS": "EMAIL_ADDRESS",
    "PHONE_NUMBER": "PHONE_NUMBER",
    "CREDIT_CARD": "CREDIT_CARD",
    "IBAN_CODE": "IBAN_CODE",
    "IP_ADDRESS": "IP_ADDRESS",
    "US_SSN": "US_SSN",
    "DOMAIN_NAME": "URL",
    "US_DRIVER_LICENSE": "US_DRIVER_LICENSE",
    "DATE_TIME": "DATE_TIME",
    "NRP": "NRP",
    "ORGANIZATION": "ORGANIZATION",
    "TITLE": None,
    "AGE": None,
    "ZIP_CODE": None,
    # WNUT-17
    "person": "PERSON",
    "location": "LOCATION",
    "corporation": "ORGANIZATION",
    "group": "ORGANIZATION",
    "product": None,
    "creative-work": None,
}


@dataclass(frozen=True)
class GoldSpan:
    """A labelled span: the data set's own label and character offsets, end exclusive."""

    label: str
    start: int
    end: int

    @property
    def entity_type(self) -> str | None:
        return GOLD_TO_ENTITY.get(self.label)


@dataclass(frozen=True)
class LabelledText:
    text: str
    spans: tuple[GoldSpan, ...]


def read_labelled_spans(path: str | Path) -> tuple[str, list[LabelledText]]:
    """Read a ``.json`` file as Presidio's synthetic set and any other file as CoNLL BIO.

    Returns the format name ("presidio-json" or "conll-bio") and the texts.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"evaluation data file not found: {path}")
    if path.suffix.lower() == ".json":
        return "presidio-json", read_presidio_json(path)
    return "conll-bio", read_conll(path)


def read_presidio_json(path: Path) -> list[LabelledText]:
    """Read records with ``full_text`` and ``spans`` of ``entity_type``, ``start_position``, ``end_position``."""
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc.msg} at line {exc.lineno}") from exc
    if not isinstance(records, list):
        raise ConfigError(f"{path}: expected a JSON array of records, got {type(records).__name__}")
    texts = []
    for number, record in enumerate(records):
        try:
            spans = tuple(
                GoldSpan(span["entity_type"], int(span["start_position"]), int(span["end_position"]))
                for span in record["spans"]
            )
            texts.append(LabelledText(record["full_text"], spans))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(
                f"{path} record {number}: expected full_text and spans with entity_type, "
                f"start_position, end_position ({type(exc).__name__}: {exc})"
            ) from exc
    return texts


def read_conll(path: Path) -> list[LabelledText]:
    """Read ``token<TAB>tag`` lines with BIO tags, one sentence per block of lines.

    Tokens are joined with single spaces, and span offsets point into that text.
    """
    texts = []
    tokens: list[str] = []
    tags: list[str] = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                if tokens:
                    texts.append(_sentence(tokens, tags))
                tokens, tags = [], []
                continue
            token, separator, tag = line.rstrip("\n").rpartition("\t")
            if not separator:
                raise ConfigError(f"{path} line {number}: expected token<TAB>tag")
            tokens.append(token)
            tags.append(tag.strip())
    if tokens:
        texts.append(_sentence(tokens, tags))
    return texts


def _sentence(tokens: list[str], tags: list[str]) -> LabelledText:
    text = " ".join(tokens)
    spans = []
    position = 0
    open_label = None
    open_start = open_end = 0
    for token, tag in zip(tokens, tags, strict=True):
        start, end = position, position + len(token)
        position = end + 1
        prefix, _, label = tag.partition("-")
        if prefix == "I" and label == open_label:
            open_end = end
            continue
        if open_label is not None:
            spans.append(GoldSpan(open_label, open_start, open_end))
            open_label = None
        if prefix in ("B", "I"):
            open_label, open_start, open_end = label, start, end
    if open_label is not None:
        spans.append(GoldSpan(open_label, open_start, open_end))
    return LabelledText(text, tuple(spans))
