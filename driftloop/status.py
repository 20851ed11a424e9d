"""``driftloop status``: online metrics, consumer lag, what each worker serves and what the trainer does."""

from __future__ import annotations

import time
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from driftloop.config import Settings
from driftloop.errors import ServiceError
from driftloop.infra.clients import make_redis
from driftloop.infra.topics import FEEDBACK, PREDICTIONS, REQUESTS
from driftloop.drift.redis_lock import job_lock_for, pipeline_name
from driftloop.registry.heartbeat import read_trainer_status, read_workers
from driftloop.registry.registry import ModelRegistry
from driftloop.streams.metrics import read_metrics


def consumer_lag(settings: Settings, group_id: str, topics: list[str], timeout: float = 5.0) -> dict[str, int]:
    """Return, per topic, records past the group's committed offsets."""
    consumer = Consumer(settings.kafka_client_config(**{"group.id": group_id, "enable.auto.commit": False}))
    lag: dict[str, int] = {}
    try:
        metadata = consumer.list_topics(timeout=timeout)
        for topic in topics:
            info = metadata.topics.get(topic)
            if info is None or info.error is not None:
                continue
            partitions = [TopicPartition(topic, p) for p in info.partitions]
            total = 0
            for committed in consumer.committed(partitions, timeout=timeout):
                low, high = consumer.get_watermark_offsets(committed, timeout=timeout)
                start = committed.offset if committed.offset >= 0 else low
                total += max(0, high - start)
            lag[topic] = total
    except KafkaException:
        pass
    finally:
        consumer.close()
    return lag


def collect_status(settings: Settings) -> dict[str, Any]:
    from driftloop.infra.stack import broker_reachable, redis_reachable

    unreachable = []
    if not broker_reachable(settings.bootstrap, timeout=3.0):
        unreachable.append(f"the broker at {settings.bootstrap}")
    if not redis_reachable(settings.redis, timeout=3.0):
        unreachable.append(f"Redis at {settings.redis_masked}")
    if unreachable:
        raise ServiceError(
            f"{' and '.join(unreachable)} {'is' if len(unreachable) == 1 else 'are'} not reachable; "
            "start the embedded stack with `driftloop up`, "
            "or set DRIFTLOOP_KAFKA_BOOTSTRAP and DRIFTLOOP_REDIS_URL"
        )
    client = make_redis(settings)
    status: dict[str, Any] = {
        "bootstrap": settings.bootstrap,
        "topic_prefix": settings.topic_prefix,
        "time": time.time(),
        "lag": {
            "inference": consumer_lag(settings, settings.topic("inference"), [settings.topic(REQUESTS)]),
            "join": consumer_lag(settings, settings.topic("join"), [settings.topic(PREDICTIONS), settings.topic(FEEDBACK)]),
        },
        "metrics": read_metrics(client, settings.topic_prefix),
        "workers": [],
        "champion": None,
    }
    status["workers"] = read_workers(client, settings.topic_prefix)
    status["learning"] = {
        "trainer": read_trainer_status(client, settings),
        "job_lock": job_lock_for(settings, client).holder(pipeline_name(settings)),
    }
    with ModelRegistry(settings, redis_client=client) as registry:
        status["champion"] = registry.champion_version()
    return status


def render_status(status: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"pipeline [bold]{status['topic_prefix']}[/] on {status['bootstrap']}, champion: {status['champion']}")
    versions = Table(title="online metrics per model version")
    for column in ("version", "predictions", "joined", "accuracy", "mean confidence"):
        versions.add_column(column)
    for version, figures in status["metrics"]["versions"].items():
        versions.add_row(version, str(figures["predictions"]), str(figures["joined"]), _percent(figures["accuracy"]), _percent(figures["mean_confidence"]))
    console.print(versions)
    groups = Table(title="accuracy per group")
    for column in ("version", "group", "joined", "accuracy"):
        groups.add_column(column)
    for version, figures in status["metrics"]["versions"].items():
        for group, counts in figures["per_group"].items():
            groups.add_row(version, group, str(counts["n"]), _percent(counts["accuracy"]))
    console.print(groups)
    console.print(f"join counters: {status['metrics']['join']}")
    console.print(f"consumer lag: {status['lag']}")
    workers = Table(title="inference workers")
    for column in ("worker", "version", "since", "processed"):
        workers.add_column(column)
    for worker in status["workers"]:
        since = time.strftime("%H:%M:%S", time.localtime(worker.get("since", 0)))
        workers.add_row(str(worker.get("worker_id")), str(worker.get("version")), since, str(worker.get("processed")))
    console.print(workers)
    console.print(describe_learning(status["learning"]))


def describe_learning(learning: dict[str, Any]) -> str:
    trainer = learning["trainer"]
    if not trainer:
        line = "trainer: not running"
    else:
        since = time.strftime("%H:%M:%S", time.localtime(int(trainer.get("since_ms", "0")) / 1000))
        job = f", job {trainer['job_id']}" if trainer.get("job_id") else ""
        line = f"trainer {trainer.get('worker_id')}: {trainer.get('phase')}{job} since {since}"
    holder = learning["job_lock"]
    return f"{line}; job lock: {'held by job ' + holder if holder else 'free'}"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"
