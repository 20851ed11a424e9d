"""A replay test as a user of the pytest plugin writes it: a candidate against the champion on a golden stream."""

from __future__ import annotations

import pytest

from driftloop.testing.plugin import (
    assert_accuracy_at_least,
    assert_all_predicted,
    assert_no_drift_alarm,
    assert_no_label_flips,
    train_tiny_artifact,
    write_labelled_recording,
)

pytestmark = pytest.mark.integration

GOLDEN = [
    ("My card still has not arrived", "card_arrival"),
    ("When will my new card be delivered?", "card_arrival"),
    ("How long does card delivery take?", "card_arrival"),
    ("The card you sent me never came", "card_arrival"),
    ("Is my card on its way?", "card_arrival"),
    ("I am still waiting for my card", "card_arrival"),
    ("What is the exchange rate for euros?", "exchange_rate"),
    ("How much is one dollar in pounds today?", "exchange_rate"),
    ("Which rate do you use to convert currency?", "exchange_rate"),
    ("Is the exchange rate fixed at the weekend?", "exchange_rate"),
    ("Why did I get a bad rate when converting?", "exchange_rate"),
    ("Show me today's currency conversion rates", "exchange_rate"),
    ("Someone stole my card", "lost_or_stolen_card"),
    ("I lost my card yesterday, please block it", "lost_or_stolen_card"),
    ("My wallet with the card was stolen", "lost_or_stolen_card"),
    ("I cannot find my card anywhere", "lost_or_stolen_card"),
    ("Freeze my card, I think it was taken", "lost_or_stolen_card"),
    ("I left my card in a taxi and it is gone", "lost_or_stolen_card"),
]
# Requests that never got feedback: they count for label flips, not for accuracy.
UNLABELLED = ["card", "rates?", "hello", "I need help with my account"]


def test_candidate_keeps_golden_answers(driftloop_replay, tmp_path):
    texts = [text for text, _ in GOLDEN]
    labels = [label for _, label in GOLDEN]
    champion = train_tiny_artifact(tmp_path / "champion", texts, labels, seed=0)
    candidate = train_tiny_artifact(tmp_path / "candidate", texts, labels, seed=1, steps=300)
    recording = write_labelled_recording(
        tmp_path / "golden.jsonl.gz",
        GOLDEN + [(text, None) for text in UNLABELLED],
        attributes=lambda index: {"segment": "retail" if index % 2 else "business"},
    )

    result = driftloop_replay(recording, models={1: champion, 2: candidate})

    assert_all_predicted(result)
    assert_accuracy_at_least(result, 0.9, lane="v1")
    assert_accuracy_at_least(result, 0.9, lane="v2")
    assert_no_drift_alarm(result)
    golden_ids = result.request_ids[: len(GOLDEN)]
    assert_no_label_flips(result, request_ids=golden_ids)
