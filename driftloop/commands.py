"""Core subcommands: up, down, topics, worker, model init, status."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path

import torch

from driftloop.config import Settings, load_settings, log_summary
from driftloop.errors import ConfigError

logger = logging.getLogger(__name__)


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    up = subparsers.add_parser("up", help="start the embedded broker and Redis on loopback")
    up.set_defaults(handler=cmd_up)
    down = subparsers.add_parser("down", help="stop the embedded broker and Redis")
    down.set_defaults(handler=cmd_down)

    topics = subparsers.add_parser("topics", help="manage the pipeline's topics")
    topics_sub = topics.add_subparsers(dest="topics_command", metavar="ACTION", required=True)
    create = topics_sub.add_parser("create", help="create every topic under the configured prefix (idempotent)")
    create.set_defaults(handler=cmd_topics_create)

    worker = subparsers.add_parser("worker", help="run a pipeline process")
    worker_sub = worker.add_subparsers(dest="worker_kind", metavar="KIND", required=True)
    inference = worker_sub.add_parser("inference", help="consume requests, predict in micro-batches, produce predictions")
    inference.add_argument("--model", help="model artifact directory; default: model_path, else the registry's champion")
    inference.add_argument("--model-version", type=int, default=0, help="version number to stamp on predictions made with --model (default 0)")
    inference.add_argument("--worker-id", help="name shown in metrics and status; default host-pid-random")
    inference.set_defaults(handler=cmd_worker_inference)
    join = worker_sub.add_parser("join", help="join feedback with predictions, keep online metrics (faust)")
    join.set_defaults(handler=cmd_worker_join)

    model = subparsers.add_parser("model", help="create a model version from labelled data")
    model_sub = model.add_subparsers(dest="model_command", metavar="ACTION", required=True)
    init = model_sub.add_parser("init", help="train a classifier head on a labelled CSV/JSONL file")
    init.add_argument("--data", required=True, help="CSV or JSONL with text and label columns")
    init.add_argument("--text-column", help="text column; default: the first of text, full_text, sentence, utterance")
    init.add_argument("--label-column", help="label column; default: the first of label, category, intent")
    init.add_argument("--limit", type=int, help="use only the first N rows after shuffling")
    init.add_argument("--train-fraction", type=float, default=0.8, help="share of rows to train on; the rest is held out (default 0.8)")
    init.add_argument("--train-layers", type=int, default=0, help="top encoder layers to fine-tune with the head (default 0: head only)")
    init.add_argument("--seed", type=int, default=0, help="shuffle and training seed (default 0)")
    init.add_argument("--out", help="artifact directory; default: STATE_DIR/models/init")
    init.add_argument("--no-register", action="store_true", help="write the artifact without registering it as a version")
    init.set_defaults(handler=cmd_model_init)

    status = subparsers.add_parser(
        "status",
        help="show online metrics, consumer lag and the workers' model versions",
        description=(
            "Reads the online metrics per model version and group from Redis, the consumer lag of the inference "
            "and join groups from the broker, and each inference worker's served version from its heartbeat."
        ),
    )
    status.add_argument("--json", action="store_true", help="print JSON instead of tables")
    status.set_defaults(handler=cmd_status)


def settings_from(args: argparse.Namespace) -> Settings:
    return load_settings(args.config)


# Stack and topics.


def cmd_up(args: argparse.Namespace) -> int:
    from driftloop.infra.stack import EmbeddedStack

    settings = settings_from(args)
    if not settings.embedded:
        print(f"kafka_bootstrap is set to {settings.bootstrap}: nothing to start; `driftloop up` runs the embedded stack only")
        return 0
    for line in EmbeddedStack(settings).up():
        print(line)
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from driftloop.infra.stack import EmbeddedStack

    for line in EmbeddedStack(settings_from(args)).down():
        print(line)
    return 0


def cmd_topics_create(args: argparse.Namespace) -> int:
    from driftloop.infra.topics import create_topics

    settings = settings_from(args)
    for result in create_topics(settings):
        print(f"{result.name}: {'created' if result.created else 'exists'}")
    return 0


# Workers.


def cmd_worker_inference(args: argparse.Namespace) -> int:
    from driftloop.workers.inference import InferenceWorker, new_worker_id
    from driftloop.workers.metrics import WorkerMetrics

    settings = settings_from(args)
    log_summary(settings, "inference worker")
    configure_torch(settings)
    worker_id = args.worker_id or new_worker_id()
    models, heartbeat = open_model_source(settings, args.model, args.model_version)
    metrics = WorkerMetrics(worker_id)
    port = metrics.serve(settings.metrics_port)
    logger.info("worker %s: Prometheus metrics on http://127.0.0.1:%d/metrics", worker_id, port)
    worker = InferenceWorker(settings, models, worker_id=worker_id, metrics=metrics, heartbeat=heartbeat)
    install_stop_handlers(worker.stop, settings.shutdown_timeout_s)
    worker.run()
    return 0


def cmd_worker_join(args: argparse.Namespace) -> int:
    from driftloop.streams.app import run_join

    settings = settings_from(args)
    log_summary(settings, "feedback join")
    # faust parses sys.argv itself: give it only the program name.
    sys.argv = [sys.argv[0]]
    run_join(settings, args.log_level)
    return 0


def configure_torch(settings: Settings) -> None:
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)


def open_model_source(settings: Settings, model_dir: str | None, version: int = 0):
    """Return (model source, heartbeat): a fixed artifact if one is named, else the registry."""
    from driftloop.model import load_artifact, select_device
    from driftloop.workers.model_source import FixedModel

    device = select_device(settings.device)
    path = model_dir or settings.model_path
    if path:
        return FixedModel(load_artifact(path, device=device, precision=settings.precision, version=version)), None
    from driftloop.registry.heartbeat import WorkerHeartbeat
    from driftloop.registry.source import RegistryModelSource

    return RegistryModelSource(settings, device=device), WorkerHeartbeat.for_settings(settings)


def install_stop_handlers(stop, timeout_s: float) -> None:
    """On SIGTERM or SIGINT call ``stop``; exit hard if shutdown exceeds its time."""

    def handle(signum, frame) -> None:
        logger.info("received %s; finishing the current batch", signal.Signals(signum).name)
        stop()
        deadline = threading.Timer(timeout_s * 2 + 5, _exit_now, args=(timeout_s * 2 + 5,))
        deadline.daemon = True
        deadline.start()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


def _exit_now(seconds: float) -> None:
    logger.error("shutdown did not finish within %.0f s; exiting without a final commit", seconds)
    os._exit(3)


# Model.


def cmd_model_init(args: argparse.Namespace) -> int:
    from driftloop.bootstrap import create_initial_model

    settings = settings_from(args)
    configure_torch(settings)
    out = Path(args.out) if args.out else Path(settings.state_dir) / "models" / "init"
    report = create_initial_model(
        settings,
        data=args.data,
        out=out,
        text_column=args.text_column,
        label_column=args.label_column,
        limit=args.limit,
        train_fraction=args.train_fraction,
        train_layers=args.train_layers,
        seed=args.seed,
        register=not args.no_register,
    )
    print(json.dumps(report, indent=2))
    return 0


# Status.


def cmd_status(args: argparse.Namespace) -> int:
    from driftloop.status import collect_status, render_status

    settings = settings_from(args)
    status = collect_status(settings)
    if args.json:
        print(json.dumps(status, indent=2, sort_keys=True))
    else:
        render_status(status)
    return 0
