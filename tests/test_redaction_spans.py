"""Chunk planning, span merging and replacement: pure functions, no model."""

from __future__ import annotations

import random

import pytest

from driftloop.redaction.spans import DetectedSpan, count_entities, merge_spans, plan_chunks, replace_spans


def span(entity_type: str, start: int, end: int, score: float = 0.85) -> DetectedSpan:
    return DetectedSpan(entity_type, start, end, score)


def redact(text: str, spans: list[DetectedSpan]) -> str:
    return replace_spans(text, merge_spans(spans))


def test_short_text_is_one_chunk():
    assert plan_chunks(500, max_chars=1000, overlap=100) == [(0, 500)]
    assert plan_chunks(0, max_chars=1000, overlap=100) == [(0, 0)]


def test_chunks_cover_text_with_overlap():
    windows = plan_chunks(2500, max_chars=1000, overlap=100)

    assert windows == [(0, 1000), (900, 1900), (1800, 2500)]


@pytest.mark.parametrize("length", [1001, 1999, 5000, 123_457])
def test_every_short_span_fits_one_chunk(length):
    max_chars, overlap = 1000, 100
    windows = plan_chunks(length, max_chars, overlap)
    rng = random.Random(length)

    assert windows[0][0] == 0
    assert windows[-1][1] == length
    assert all(end - start <= max_chars for start, end in windows)
    for _ in range(2000):
        start = rng.randrange(0, length)
        end = min(length, start + rng.randint(1, overlap + 1))
        assert any(w_start <= start and end <= w_end for w_start, w_end in windows), (start, end)


def test_disjoint_spans_each_replaced():
    text = "Forward to a@x.com b@y.org c@z.net"

    assert redact(text, [span("EMAIL_ADDRESS", 11, 18), span("EMAIL_ADDRESS", 19, 26), span("EMAIL_ADDRESS", 27, 34)]) == (
        "Forward to <EMAIL_ADDRESS> <EMAIL_ADDRESS> <EMAIL_ADDRESS>"
    )


def test_overlapping_spans_become_one():
    text = "Test card 4111 1111 1111 1111.com is not a real site"
    card = span("CREDIT_CARD", 10, 29, 1.0)
    url = span("URL", 25, 33, 0.5)

    merged = merge_spans([url, card])

    assert merged == [span("CREDIT_CARD", 10, 33, 1.0)]
    assert replace_spans(text, merged) == "Test card <CREDIT_CARD> is not a real site"


def test_contained_span_absorbed():
    text = "Mail jane.doe@example.com today"
    email = span("EMAIL_ADDRESS", 5, 25, 1.0)
    url = span("URL", 14, 25, 0.5)

    assert redact(text, [email, url]) == "Mail <EMAIL_ADDRESS> today"


def test_chain_of_overlaps_merges_whole():
    merged = merge_spans([span("A", 0, 5), span("B", 4, 9), span("C", 8, 12, 0.9)])

    assert merged == [span("C", 0, 12, 0.9)]


def test_touching_spans_of_one_type_merge():
    assert merge_spans([span("PERSON", 0, 4), span("PERSON", 4, 9)]) == [span("PERSON", 0, 9)]


def test_touching_spans_of_two_types_stay_apart():
    text = "AnnaParis"

    assert redact(text, [span("PERSON", 0, 4), span("LOCATION", 4, 9)]) == "<PERSON><LOCATION>"


def test_label_tie_broken_by_length_then_name():
    assert merge_spans([span("URL", 0, 4), span("EMAIL_ADDRESS", 2, 8)])[0].entity_type == "EMAIL_ADDRESS"
    assert merge_spans([span("URL", 0, 6), span("EMAIL_ADDRESS", 0, 6)])[0].entity_type == "EMAIL_ADDRESS"
    assert merge_spans([span("EMAIL_ADDRESS", 0, 6), span("URL", 0, 6)])[0].entity_type == "EMAIL_ADDRESS"


def test_merge_independent_of_input_order():
    spans = [span("A", 0, 5, 0.5), span("B", 3, 9, 0.7), span("C", 20, 25), span("C", 25, 30), span("D", 40, 41)]
    expected = merge_spans(spans)

    for seed in range(20):
        shuffled = list(spans)
        random.Random(seed).shuffle(shuffled)
        assert merge_spans(shuffled) == expected


def test_operator_sees_original_span_text():
    text = "Call Anna Berg at anna@example.com or Anna"
    seen = []

    def operator(entity_type: str, value: str) -> str:
        seen.append((entity_type, value))
        return f"[{entity_type}:{len(value)}]"

    spans = merge_spans([span("PERSON", 5, 14), span("EMAIL_ADDRESS", 18, 34, 1.0), span("URL", 23, 34, 0.5), span("PERSON", 38, 42)])
    output = replace_spans(text, spans, operator)

    assert seen == [("PERSON", "Anna Berg"), ("EMAIL_ADDRESS", "anna@example.com"), ("PERSON", "Anna")]
    assert output == "Call [PERSON:9] at [EMAIL_ADDRESS:16] or [PERSON:4]"


def test_placeholder_in_input_not_nested():
    text = "<PERSON> met Anna"

    assert redact(text, [span("PERSON", 13, 17)]) == "<PERSON> met <PERSON>"


def test_unmerged_spans_rejected():
    with pytest.raises(ValueError, match="merge_spans"):
        replace_spans("abcdef", [span("A", 0, 4), span("B", 2, 6)])


def test_random_spans_leave_no_fragment():
    rng = random.Random(7)
    text = "".join(rng.choice("abcdefghij ") for _ in range(300))
    for _ in range(200):
        spans = []
        for _ in range(rng.randint(1, 12)):
            start = rng.randrange(0, 290)
            spans.append(span(rng.choice(["A", "B"]), start, start + rng.randint(1, 10), rng.random()))
        merged = merge_spans(spans)

        covered = {index for s in spans for index in range(s.start, s.end)}
        merged_cover = {index for s in merged for index in range(s.start, s.end)}
        assert merged_cover == covered
        assert all(left.end <= right.start for left, right in zip(merged, merged[1:]))
        output = replace_spans(text, merged, lambda entity, value: "#" * len(value))
        assert len(output) == len(text)
        assert all(output[i] == "#" for i in covered)


def test_count_entities_sorted():
    assert count_entities([span("URL", 0, 1), span("PERSON", 2, 3), span("URL", 4, 5)]) == {"PERSON": 1, "URL": 2}
