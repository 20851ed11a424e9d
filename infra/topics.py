"""Topic names and idempotent topic creation."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from driftloop.config import Settings
from driftloop.errors import ServiceError

logger = logging.getLogger(__name__)

# Topic suffixes under the pipeline's prefix.
REQUESTS = "requests"
REQUESTS_RAW = "requests.raw"  # transit topic for producers that cannot redact
PREDICTIONS = "predictions"
FEEDBACK = "feedback"
EXAMPLES = "examples"
METRICS = "metrics"
DEAD_LETTER = "dlq"
DRIFT = "drift"
JOBS = "jobs"
AUDIT = "audit"

ALL_TOPICS = (REQUESTS, REQUESTS_RAW, PREDICTIONS, FEEDBACK, EXAMPLES, METRICS, DEAD_LETTER, DRIFT, JOBS, AUDIT)
# Raw text may sit on the transit topic until the redactor truncates it, so keep it short.
TRANSIT_RETENTION_MS = 60 * 60 * 1000


@dataclass(frozen=True)
class TopicResult:
    name: str
    created: bool


def create_topics(settings: Settings, names: tuple[str, ...] = ALL_TOPICS, timeout: float = 15.0) -> list[TopicResult]:
    """Create the pipeline's topics; topics that already exist are left as they are."""
    admin = AdminClient(settings.kafka_client_config())
    new_topics = []
    for name in names:
        retention = TRANSIT_RETENTION_MS if name == REQUESTS_RAW else settings.retention_ms
        new_topics.append(
            NewTopic(
                settings.topic(name),
                num_partitions=settings.partitions,
                replication_factor=settings.replication_factor,
                config={"retention.ms": str(retention)},
            )
        )
    results = []
    for topic, future in admin.create_topics(new_topics, request_timeout=timeout).items():
        try:
            future.result(timeout=timeout)
            results.append(TopicResult(topic, True))
            logger.info("created topic %s", topic)
        except KafkaException as exc:
            error = exc.args[0]
            if isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                results.append(TopicResult(topic, False))
                continue
            raise ServiceError(f"could not create topic {topic} on {settings.bootstrap}: {error}") from exc
    return results


def partition_count(settings: Settings, name: str, timeout: float = 10.0) -> int:
    admin = AdminClient(settings.kafka_client_config())
    metadata = admin.list_topics(settings.topic(name), timeout=timeout)
    topic = metadata.topics.get(settings.topic(name))
    if topic is None or topic.error is not None:
        raise ServiceError(f"topic {settings.topic(name)} not found on {settings.bootstrap}; run `driftloop topics create`")
    return len(topic.partitions)
