"""``driftloop record`` and ``driftloop replay``."""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from pydantic import ValidationError

from driftloop.argtypes import non_negative_int, positive_int
from driftloop.config import Settings, load_settings
from driftloop.errors import ConfigError

logger = logging.getLogger(__name__)

RECORD_DESCRIPTION = (
    "Capture the pipeline's redacted topics (requests and feedback; predictions with --predictions) "
    "with keys, headers, timestamps, partitions and offsets into a gzip-compressed JSON Lines file "
    "whose first line is a header. Each partition is read from its start to its end at the time of "
    "reading, unless bounded by time, offset or count. The raw transit topic requests.raw can never "
    "be recorded."
)
REPLAY_DESCRIPTION = (
    "Validate a recording, then publish its requests and feedback into an isolated pipeline under a "
    "fresh topic prefix on the configured broker (the embedded one by default, started if needed): "
    "for each model version a lane with its own topics, inference workers and feedback join. Prints "
    "a report per version (accuracy overall, per class and per group, confidence, latency, drift "
    "alarms) and between versions (label flips, where one is right and the other wrong). Exits with "
    "1 when some request got no prediction, or some feedback was not joined, within --timeout."
)


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    _add_record(subparsers)
    _add_replay(subparsers)


def _add_record(subparsers: argparse._SubParsersAction) -> None:
    record = subparsers.add_parser(
        "record", help="record redacted topics into a replayable file", description=RECORD_DESCRIPTION
    )
    record.add_argument("--out", required=True, metavar="FILE", help="recording file to write, e.g. capture.jsonl.gz")
    record.add_argument(
        "--topic",
        action="append",
        metavar="NAME",
        help="topic to record, by short name: requests, feedback or predictions; repeat for several "
        "(default: requests and feedback)",
    )
    record.add_argument("--predictions", action="store_true", help="also record the predictions topic")

    # Bounds of the capture.
    record.add_argument(
        "--since",
        metavar="TIME",
        help="earliest record timestamp to include: ISO 8601 such as 2025-01-31T12:00:00Z (UTC when no "
        "offset is given) or milliseconds since the epoch",
    )
    record.add_argument(
        "--until", metavar="TIME", help="latest record timestamp to include, inclusive; same forms as --since"
    )
    record.add_argument(
        "--start-offset", type=non_negative_int, metavar="OFFSET", help="first offset of each partition to include"
    )
    record.add_argument(
        "--end-offset",
        type=non_negative_int,
        metavar="OFFSET",
        help="offset of each partition where the capture stops, exclusive",
    )
    record.add_argument(
        "--count",
        type=positive_int,
        metavar="N",
        help="record at most N records, all topics together, earliest timestamps first",
    )

    record.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="fail if the end of every partition is not reached within this many seconds (default 300)",
    )
    record.add_argument("--force", action="store_true", help="replace FILE if it exists")
    record.set_defaults(handler=record_handler)


def _add_replay(subparsers: argparse._SubParsersAction) -> None:
    replay = subparsers.add_parser(
        "replay", help="replay a recording into an isolated pipeline and report", description=REPLAY_DESCRIPTION
    )
    replay.add_argument("file", metavar="FILE", help="recording written by `driftloop record`")
    replay.add_argument(
        "--version",
        type=non_negative_int,
        action="append",
        metavar="N",
        help="registry model version to serve; repeat to serve several side by side (default: the champion, "
        "unless --model is given)",
    )
    replay.add_argument(
        "--model",
        action="append",
        metavar="[VERSION=]DIR",
        help="model artifact directory to serve, stamped as VERSION on its predictions (default 0); repeat "
        "with distinct versions to serve several",
    )

    # How to replay.
    replay.add_argument(
        "--speed",
        default="1",
        metavar="FACTOR|max",
        help="pace of publishing: 1 keeps the recorded delays between events, 10 makes them 10 times "
        "shorter, max publishes as fast as possible (default 1)",
    )
    replay.add_argument(
        "--workers", type=positive_int, default=1, metavar="N", help="inference worker processes per version (default 1)"
    )
    replay.add_argument(
        "--seed",
        type=int,
        default=0,
        help="torch seed of every worker process, set before it loads its model (default 0)",
    )
    replay.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="after publishing, wait at most this many seconds for every prediction and join (default 600)",
    )

    # The report.
    replay.add_argument(
        "--examples",
        type=non_negative_int,
        default=10,
        metavar="N",
        help="request ids listed per flip or right/wrong list (default 10)",
    )
    replay.add_argument(
        "--no-drift", action="store_true", help="do not run the drift detectors over the replayed predictions"
    )
    replay.add_argument(
        "--keep-topics", action="store_true", help="keep the replay's topics and Redis keys (default: delete them)"
    )
    replay.add_argument("--check", action="store_true", help="only validate FILE and print its header; publish nothing")
    replay.add_argument("--json", action="store_true", help="print the report as JSON instead of text")
    replay.add_argument("--html", metavar="FILE", help="also write the report as a self-contained HTML page to FILE")
    replay.set_defaults(handler=replay_handler)


def parse_time_ms(text: str, option: str) -> int:
    """Parse milliseconds since the epoch or an ISO 8601 time (UTC without an offset)."""
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ConfigError(
            f"{option} {text!r}: expected ISO 8601, such as 2025-01-31T12:00:00Z, or milliseconds since the epoch"
        ) from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1000)


def parse_speed(text: str) -> float | None:
    """Parse --speed: a factor above 0, or ``max`` for as fast as possible (None)."""
    if text.strip().lower() == "max":
        return None
    try:
        speed = float(text)
    except ValueError as exc:
        raise ConfigError(f"--speed {text!r}: expected a factor such as 1 or 10, or max") from exc
    if not speed > 0:
        raise ConfigError(f"--speed {text!r}: the factor must be above 0; use max for as fast as possible")
    return speed


# Handlers.


def record_handler(args: argparse.Namespace) -> int:
    from driftloop.infra.topics import PREDICTIONS
    from driftloop.replay.format import Bounds
    from driftloop.replay.record import DEFAULT_TOPICS, record

    settings = load_settings(args.config)
    topics = list(args.topic or DEFAULT_TOPICS)
    if args.predictions:
        topics.append(PREDICTIONS)
    try:
        bounds = Bounds(
            since_ms=None if args.since is None else parse_time_ms(args.since, "--since"),
            until_ms=None if args.until is None else parse_time_ms(args.until, "--until"),
            start_offset=args.start_offset,
            end_offset=args.end_offset,
            count=args.count,
        )
    except ValidationError as exc:
        raise ConfigError(f"invalid bounds: {exc}") from exc
    header = record(settings, args.out, topics=topics, bounds=bounds, timeout_s=args.timeout, overwrite=args.force)
    counts = ", ".join(f"{topic} {count}" for topic, count in header.counts.items())
    source = f"{settings.bootstrap} under prefix {settings.topic_prefix!r}"
    print(f"recorded {header.total} records ({counts}) from {source} into {args.out}")
    if header.skipped_invalid:
        print(f"left out {header.skipped_invalid} records that failed validation; see the warnings above")
    return 0


def replay_handler(args: argparse.Namespace) -> int:
    from driftloop.replay.reader import read_recording

    settings = load_settings(args.config)
    speed = parse_speed(args.speed)
    recording = read_recording(args.file)
    if args.check:
        header = recording.header
        print(
            f"{args.file}: valid, {header.total} records {dict(header.counts)}, model versions {header.model_versions}"
        )
        return 0
    with _embedded_stack(settings):
        return _replay(settings, args, recording, speed)


def _replay(settings: Settings, args: argparse.Namespace, recording, speed: float | None) -> int:
    from driftloop.replay.lanes import parse_model_spec, resolve_models
    from driftloop.replay.runner import ReplayOptions, run_replay

    choices = resolve_models(settings, args.version or (), [parse_model_spec(spec) for spec in args.model or ()])
    options = ReplayOptions(
        speed=speed,
        workers=args.workers,
        seed=args.seed,
        timeout_s=args.timeout,
        keep_topics=args.keep_topics,
        drift=not args.no_drift,
        examples=args.examples,
    )
    result = run_replay(settings, recording, choices, options)
    if args.json:
        print(json.dumps(result.report, indent=2, sort_keys=True))
    else:
        print(result.text(), end="")
    if args.html:
        Path(args.html).write_text(result.html(), encoding="utf-8")
        logger.info("wrote the HTML report to %s", args.html)
    return 0 if result.outcome.complete else 1


@contextmanager
def _embedded_stack(settings: Settings) -> Iterator[None]:
    """Start the embedded stack if it is configured and not running, and stop it afterwards."""
    from driftloop.infra.stack import EmbeddedStack

    stack = EmbeddedStack(settings) if settings.embedded else None
    if stack is None or (stack.broker_healthy(1.0) and stack.redis_healthy(1.0)):
        yield
        return
    for line in stack.up():
        logger.info("%s", line)
    try:
        yield
    finally:
        for line in stack.down():
            logger.info("%s", line)
