"""Prometheus metrics of one inference worker, in a registry of its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

LATENCY_BUCKETS_MS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000)


class WorkerMetrics:
    def __init__(self, worker_id: str) -> None:
        self.registry = CollectorRegistry()
        labels = {"worker_id": worker_id}
        self._labels = labels
        self.processed = Counter("driftloop_requests_processed", "Requests with a prediction produced", ["worker_id"], registry=self.registry).labels(**labels)
        self.failed = Counter("driftloop_requests_failed", "Requests sent to the dead-letter topic", ["worker_id", "reason"], registry=self.registry)
        self.batch_size = Histogram("driftloop_batch_size", "Requests per micro-batch", ["worker_id"], buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512), registry=self.registry).labels(**labels)
        self.batch_latency = Histogram("driftloop_batch_latency_ms", "Forward-pass time per micro-batch, ms", ["worker_id"], buckets=LATENCY_BUCKETS_MS, registry=self.registry).labels(**labels)
        self.end_to_end = Histogram("driftloop_end_to_end_latency_ms", "Request event time to prediction, ms", ["worker_id"], buckets=LATENCY_BUCKETS_MS, registry=self.registry).labels(**labels)
        self.lag = Gauge("driftloop_consumer_lag", "Records behind the high watermark, all assigned partitions", ["worker_id"], registry=self.registry).labels(**labels)
        self.model_version = Gauge("driftloop_model_version", "Model version this worker serves", ["worker_id"], registry=self.registry).labels(**labels)
        self.model_since = Gauge("driftloop_model_since_seconds", "Unix time the served version was swapped in", ["worker_id"], registry=self.registry).labels(**labels)

    def count_failure(self, reason: str) -> None:
        self.failed.labels(reason=reason, **self._labels).inc()

    def serve(self, port: int) -> int:
        """Serve the metrics over HTTP on 127.0.0.1 and return the bound port."""
        server, _ = start_http_server(port, addr="127.0.0.1", registry=self.registry)
        return server.server_port
