"""Feedback join: pairs each prediction with its feedback by request id, in either order.

A prediction or feedback waits in the ``pending`` table for its partner for at most
``join_ttl_s``; one that is still alone then is counted as expired and dropped. A
joined pair updates the online metrics and becomes an example for the trainer.

Predictions and feedback are both keyed by request id on topics with the same
partition count, so a request's two events meet in the same partition.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import MutableMapping
from typing import Any

from driftloop.errors import EventError
from driftloop.schemas.events import Example, Feedback, Prediction, decode_event
from driftloop.streams.metrics import MetricsAccumulator

logger = logging.getLogger(__name__)


class JoinState:
    """The join's logic over a mapping of pending entries, which faust backs with a table.

    Entries expire lazily: an event from partition ``p`` first drops the entries of
    ``p`` whose deadline has passed. Writes therefore always happen in the context of
    an event of the entry's own partition, as faust's changelog requires.
    """

    def __init__(self, pending: MutableMapping[str, Any], metrics: MetricsAccumulator, ttl_s: float) -> None:
        self.pending = pending
        self.metrics = metrics
        self.ttl_s = ttl_s
        self._deadlines: dict[int, deque[tuple[float, str]]] = {}

    def on_prediction(self, raw: bytes | None, partition: int, source: str, now: float | None = None) -> Example | None:
        now = time.time() if now is None else now
        self._expire(partition, now)
        try:
            prediction = decode_event(Prediction, raw)
        except EventError as exc:
            logger.warning("join: skipping invalid prediction at %s: %s", source, exc)
            self.metrics.count("invalid_events")
            return None
        self.metrics.add_prediction(prediction.model_version)
        entry = self.pending.get(prediction.request_id)
        if entry is not None and entry.get("prediction") is not None:
            # At-least-once delivery can repeat a prediction; the first one counts.
            self.metrics.count("duplicate_predictions")
            return None
        if entry is not None and entry.get("joined"):
            self.metrics.count("duplicate_predictions")
            return None
        if entry is not None and entry.get("feedback") is not None:
            feedback = Feedback.model_validate(entry["feedback"])
            return self._join(prediction, feedback, partition, now, source)
        self.pending[prediction.request_id] = {
            "prediction": prediction.model_dump(mode="json"),
            "source": source,
            "deadline": now + self.ttl_s,
            "partition": partition,
        }
        self._deadline_queue(partition).append((now + self.ttl_s, prediction.request_id))
        return None

    def on_feedback(self, raw: bytes | None, partition: int, source: str, now: float | None = None) -> Example | None:
        now = time.time() if now is None else now
        self._expire(partition, now)
        try:
            feedback = decode_event(Feedback, raw)
        except EventError as exc:
            logger.warning("join: skipping invalid feedback at %s: %s", source, exc)
            self.metrics.count("invalid_events")
            return None
        entry = self.pending.get(feedback.request_id)
        if entry is not None and (entry.get("feedback") is not None or entry.get("joined")):
            self.metrics.count("duplicate_feedback")
            return None
        if entry is not None and entry.get("prediction") is not None:
            prediction = Prediction.model_validate(entry["prediction"])
            return self._join(prediction, feedback, partition, now, entry.get("source", ""))
        self.pending[feedback.request_id] = {
            "feedback": feedback.model_dump(mode="json"),
            "deadline": now + self.ttl_s,
            "partition": partition,
        }
        self._deadline_queue(partition).append((now + self.ttl_s, feedback.request_id))
        return None

    def restore_deadlines(self, partition: int) -> None:
        """Queue the expiry of entries recovered from the changelog for ``partition``."""
        entries = [(value["deadline"], key) for key, value in list(self.pending.items()) if value.get("partition") == partition]
        self._deadlines[partition] = deque(sorted(entries))

    def _join(self, prediction: Prediction, feedback: Feedback, partition: int, now: float, source: str) -> Example:
        self.metrics.add_joined(prediction.model_version, prediction.label, feedback.label, prediction.confidence, prediction.attributes)
        # A joined request keeps a small marker until its deadline, so a repeated
        # prediction or feedback is counted as a duplicate, not joined twice.
        self.pending[prediction.request_id] = {"joined": True, "deadline": now + self.ttl_s, "partition": partition}
        self._deadline_queue(partition).append((now + self.ttl_s, prediction.request_id))
        return Example(
            request_id=prediction.request_id,
            text=prediction.text,
            label=feedback.label,
            predicted_label=prediction.label,
            confidence=prediction.confidence,
            model_version=prediction.model_version,
            attributes=prediction.attributes,
            event_time_ms=prediction.event_time_ms,
            source_offset=source,
        )

    def _deadline_queue(self, partition: int) -> deque[tuple[float, str]]:
        if partition not in self._deadlines:
            self.restore_deadlines(partition)
        return self._deadlines[partition]

    def _expire(self, partition: int, now: float) -> None:
        queue = self._deadline_queue(partition)
        while queue and queue[0][0] <= now:
            _, request_id = queue.popleft()
            entry = self.pending.get(request_id)
            if entry is None or entry["deadline"] > now:
                continue  # replaced by a later entry with its own deadline
            del self.pending[request_id]
            if entry.get("prediction") is not None:
                self.metrics.count("expired_predictions")
            elif entry.get("feedback") is not None:
                # Feedback for a request that never got a prediction (unknown request id).
                self.metrics.count("expired_feedback")
