"""The faust-streaming app that runs the feedback join: ``driftloop worker join``."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import faust

from driftloop.config import Settings
from driftloop.infra.clients import make_redis
from driftloop.infra.topics import EXAMPLES, FEEDBACK, METRICS, PREDICTIONS
from driftloop.schemas.events import encode_event
from driftloop.streams.join import JoinState
from driftloop.streams.metrics import MetricsAccumulator, read_metrics

logger = logging.getLogger(__name__)


def create_app(settings: Settings) -> faust.App:
    """Build the join app; its consumer group is ``{prefix}join``."""
    app = faust.App(
        settings.topic("join"),
        broker=[f"kafka://{server}" for server in settings.bootstrap.split(",")],
        store="memory://",
        web_enabled=False,
        datadir=str(Path(settings.state_dir) / "faust"),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        broker_session_timeout=settings.session_timeout_ms / 1000,
        broker_heartbeat_interval=max(0.1, settings.session_timeout_ms / 10000),
        consumer_auto_offset_reset="earliest",
        table_cleanup_interval=settings.metrics_interval_s,
    )
    predictions_topic = settings.topic(PREDICTIONS)
    source = app.topic(predictions_topic, settings.topic(FEEDBACK), key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    examples = app.topic(settings.topic(EXAMPLES), key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    metrics_topic = app.topic(settings.topic(METRICS), key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    pending = app.Table("pending", default=None, partitions=settings.partitions, key_type=str)

    accumulator = MetricsAccumulator(settings.topic_prefix, settings.group_attribute)
    state = JoinState(pending, accumulator, settings.join_ttl_s)
    redis_client = make_redis(settings)

    @app.agent(source)
    async def join(stream):
        async for event in stream.events():
            message = event.message
            origin = f"{message.topic}[{message.partition}]@{message.offset}"
            if message.topic == predictions_topic:
                example = state.on_prediction(event.value, message.partition, origin)
            else:
                example = state.on_feedback(event.value, message.partition, origin)
            if example is not None:
                await examples.send(key=example.request_id.encode("utf-8"), value=encode_event(example))

    @app.timer(interval=settings.metrics_interval_s)
    async def publish_metrics():
        if not accumulator.flush(redis_client):
            return
        snapshot = read_metrics(redis_client, settings.topic_prefix)
        snapshot["published_at_ms"] = int(time.time() * 1000)
        await metrics_topic.send(key=b"online", value=json.dumps(snapshot, sort_keys=True).encode("utf-8"))

    return app


def run_join(settings: Settings, log_level: str = "info") -> None:
    """Run the join until SIGTERM or SIGINT."""
    app = create_app(settings)
    worker = faust.Worker(app, loglevel=log_level.lower().replace("warning", "warn"), quiet=True)
    worker.execute_from_commandline()
