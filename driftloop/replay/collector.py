"""Reading a lane's predictions and dead letters while the replay runs."""

from __future__ import annotations

import logging
import uuid

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from driftloop.config import Settings
from driftloop.errors import EventError
from driftloop.infra.clients import source_of
from driftloop.infra.topics import DEAD_LETTER, PREDICTIONS
from driftloop.schemas.events import Prediction, decode_event

logger = logging.getLogger(__name__)

CONSUME_BATCH = 5000


class LaneCollector:
    """Reads a lane's predictions and dead-letter topics from the beginning, without a consumer group.

    At-least-once delivery can repeat a prediction; the first one of a request id is
    kept and the others are counted in ``duplicates``.
    """

    def __init__(self, settings: Settings) -> None:
        self.predictions_topic = settings.topic(PREDICTIONS)
        self.dead_letter_topic = settings.topic(DEAD_LETTER)
        self.consumer = Consumer(
            settings.kafka_client_config(
                **{
                    "group.id": f"{settings.topic_prefix}collector-{uuid.uuid4().hex[:8]}",
                    "enable.auto.commit": False,
                    "fetch.wait.max.ms": 10,
                }
            )
        )
        self.consumer.assign(
            [
                TopicPartition(topic, partition, OFFSET_BEGINNING)
                for topic in (self.predictions_topic, self.dead_letter_topic)
                for partition in range(settings.partitions)
            ]
        )
        self.predictions: dict[str, Prediction] = {}
        self.duplicates = 0
        self.invalid = 0
        self.dead_letters = 0

    def poll(self, timeout_s: float = 0.1) -> int:
        """Read what has arrived, waiting at most ``timeout_s``; return the number of records read."""
        messages = self.consumer.consume(CONSUME_BATCH, timeout=timeout_s)
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    logger.warning("consume error on %s[%d]: %s", message.topic(), message.partition(), error)
                continue
            if message.topic() == self.dead_letter_topic:
                self.dead_letters += 1
                continue
            self._add(message)
        return len(messages)

    def _add(self, message) -> None:
        try:
            prediction = decode_event(Prediction, message.value())
        except EventError as exc:
            self.invalid += 1
            logger.warning("invalid prediction at %s: %s", source_of(message), exc)
            return
        if prediction.request_id in self.predictions:
            self.duplicates += 1
        else:
            self.predictions[prediction.request_id] = prediction

    def close(self) -> None:
        self.consumer.close()
