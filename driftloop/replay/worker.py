"""The inference worker process of a replay lane: ``python -m driftloop.replay.worker``.

It runs the pipeline's :class:`~driftloop.workers.inference.InferenceWorker` on one
fixed model version, like ``driftloop worker inference --model``, and adds what a
replay needs: torch is seeded and asked for deterministic algorithms before the
model is loaded, and the artifact's files are checked against the registry's SHA-256.
"""

from __future__ import annotations

import argparse
import logging
import sys

from driftloop.errors import DriftloopError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m driftloop.replay.worker", description=__doc__)
    parser.add_argument("--config", required=True, metavar="FILE", help="settings of the lane (YAML)")
    parser.add_argument("--model", required=True, metavar="DIR", help="model artifact directory")
    parser.add_argument("--model-version", type=int, required=True, help="version number stamped on predictions")
    parser.add_argument(
        "--sha256", help="expected artifact SHA-256 over all files of --model; the worker exits if it differs"
    )
    parser.add_argument("--seed", type=int, default=0, help="torch seed (default 0)")
    parser.add_argument("--worker-id", required=True, help="name in logs and metrics")
    parser.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    try:
        run(args)
    except DriftloopError as exc:
        print(f"driftloop replay worker {args.worker_id}: error: {exc}", file=sys.stderr)
        return 2
    return 0


def run(args: argparse.Namespace) -> None:
    import torch

    from driftloop.commands import configure_torch, install_stop_handlers
    from driftloop.config import load_settings
    from driftloop.model import load_artifact, select_device
    from driftloop.workers.inference import InferenceWorker
    from driftloop.workers.model_source import FixedModel

    settings = load_settings(args.config)
    configure_torch(settings)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    model = load_artifact(
        args.model,
        device=select_device(settings.device),
        precision=settings.precision,
        version=args.model_version,
        expected_sha256=args.sha256,
    )
    worker = InferenceWorker(settings, FixedModel(model), worker_id=args.worker_id)
    install_stop_handlers(worker.stop, settings.shutdown_timeout_s)
    worker.run()


if __name__ == "__main__":
    sys.exit(main())
