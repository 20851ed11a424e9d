"""Cheap features of a redacted text, watched for input drift.

The features are counts and shares, so they reveal nothing of the text that a log line
of lengths would not.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

PLACEHOLDER_PATTERN = re.compile(r"<[A-Z][A-Z0-9_]*>")
"""A redaction placeholder such as ``<PERSON>``: an upper-case entity type in angle brackets."""


@dataclass(frozen=True, slots=True)
class TextFeatures:
    """Features of one redacted text, named as the signals in :data:`driftloop.drift.settings.Signal`."""

    log_length: float
    """Natural log of 1 + the length in characters. The log keeps long texts from dominating a mean."""
    digit_share: float
    """Share of characters that are digits (``str.isdigit``), 0.0 for an empty text."""
    placeholder_count: int
    """Redaction placeholders in the text."""


def text_features(text: str) -> TextFeatures:
    """Compute the drift features of a redacted ``text``."""
    length = len(text)
    digits = sum(character.isdigit() for character in text)
    return TextFeatures(
        log_length=math.log1p(length),
        digit_share=digits / length if length else 0.0,
        placeholder_count=len(PLACEHOLDER_PATTERN.findall(text)),
    )
