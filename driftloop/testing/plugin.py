"""pytest plugin for replay tests: a stack per session, a topic prefix per test, replays and checks.

Fixtures:

- ``driftloop_stack``: settings of an embedded broker and Redis on free loopback ports,
  started once per test session and stopped at its end.
- ``driftloop_settings``: the stack's settings with a topic prefix and state directory
  of the test's own.
- ``driftloop_replay``: a function that replays a recording into an isolated pipeline
  under the test's prefix and returns a :class:`~driftloop.replay.result.ReplayResult`.

Checks, each raising AssertionError with the lanes and request ids involved:
:func:`assert_all_predicted`, :func:`assert_accuracy_at_least`,
:func:`assert_no_drift_alarm` and :func:`assert_no_label_flips`.

Helpers to build test inputs without a running pipeline: :func:`write_labelled_recording`
and :func:`train_tiny_artifact`.

Enable it with ``-p driftloop.testing.plugin`` or the ``pytest11`` entry point.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from driftloop.config import Settings, load_settings
from driftloop.infra.stack import EmbeddedStack, free_port
from driftloop.infra.topics import FEEDBACK, REQUESTS
from driftloop.replay.outcome import RECORDED_LANE
from driftloop.schemas.events import Feedback, InferenceRequest

# Lanes to check when a check names none: every lane that the replay served.
ALL_SERVED = None


# Fixtures.


@pytest.fixture(scope="session")
def driftloop_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterable[Settings]:
    """Start an embedded broker and Redis on free loopback ports for the whole session."""
    settings = load_settings(
        None,
        state_dir=tmp_path_factory.mktemp("driftloop-stack"),
        broker_port=free_port(),
        redis_port=free_port(),
        session_timeout_ms=2000,
        partitions=2,
    )
    stack = EmbeddedStack(settings)
    stack.up()
    try:
        yield settings
    finally:
        stack.down()


@pytest.fixture
def driftloop_settings(driftloop_stack: Settings, tmp_path: Path) -> Settings:
    """Return the session stack's settings with a topic prefix and state directory of this test's own."""
    return driftloop_stack.model_copy(update={"topic_prefix": f"t{uuid.uuid4().hex[:8]}.", "state_dir": tmp_path})


@pytest.fixture
def driftloop_replay(driftloop_settings: Settings) -> Callable[..., Any]:
    """Return ``replay(recording, *, versions=(), models=None, speed=None, ...)`` for this test.

    ``versions`` are registry versions under the test's prefix; ``models`` maps a
    version number to an artifact directory. ``speed`` None publishes as fast as
    possible. Other keywords are those of :class:`~driftloop.replay.runner.ReplayOptions`.
    """
    from driftloop.replay.lanes import resolve_models
    from driftloop.replay.reader import read_recording
    from driftloop.replay.runner import ReplayOptions, run_replay

    def replay(
        recording: str | Path,
        *,
        versions: Sequence[int] = (),
        models: Mapping[int, str | Path] | None = None,
        speed: float | None = None,
        timeout_s: float = 120.0,
        **options: Any,
    ):
        # The whole recording is validated before anything else, so a bad one publishes nothing.
        validated = read_recording(recording)
        choices = resolve_models(driftloop_settings, versions, sorted((models or {}).items()))
        return run_replay(
            driftloop_settings, validated, choices, ReplayOptions(speed=speed, timeout_s=timeout_s, **options)
        )

    return replay


# Checks.


def _served_lanes(result, lane: str | None) -> list[str]:
    if lane is not None:
        return [lane]
    return [name for name in result.lane_names if name != RECORDED_LANE]


def assert_all_predicted(result, lane: str | None = ALL_SERVED) -> None:
    """Fail unless every recorded request has a prediction in ``lane`` (default: every served lane)."""
    __tracebackhide__ = True
    for name in _served_lanes(result, lane):
        missing = result.missing_predictions(name)
        if missing:
            raise AssertionError(
                f"lane {name}: {len(missing)} of {len(result.request_ids)} requests have no prediction, first: {missing[:10]}"
            )


def assert_accuracy_at_least(result, minimum: float, lane: str | None = ALL_SERVED) -> None:
    """Fail unless the accuracy of ``lane`` (default: every served lane) is at least ``minimum`` (0 to 1)."""
    __tracebackhide__ = True
    for name in _served_lanes(result, lane):
        accuracy = result.accuracy(name)
        if accuracy is None:
            raise AssertionError(
                f"lane {name}: no request has both a prediction and feedback, so accuracy is undefined"
            )
        if accuracy < minimum:
            labelled = result.report["lanes"][name]["labelled"]
            raise AssertionError(
                f"lane {name}: accuracy {accuracy:.4f} on {labelled} labelled requests is below {minimum:.4f}"
            )


def assert_no_drift_alarm(result, lane: str | None = ALL_SERVED) -> None:
    """Fail if the drift detectors raised an alarm on ``lane`` (default: every served lane)."""
    __tracebackhide__ = True
    for name in _served_lanes(result, lane):
        if not result.report["lanes"][name]["drift_checked"]:
            raise AssertionError(f"lane {name}: drift was not checked; replay with drift=True")
        alarms = result.drift_alarms(name)
        if alarms:
            described = ", ".join(f"{a['detector']} on {a['signal']} at request {a['position']}" for a in alarms[:5])
            raise AssertionError(f"lane {name}: {len(alarms)} drift alarms: {described}")


def assert_no_label_flips(
    result, request_ids: Collection[str] | None = None, a: str | None = None, b: str | None = None
) -> None:
    """Fail if lanes ``a`` and ``b`` label any of ``request_ids`` (default: all) differently.

    With ``a`` and ``b`` left out, the replay must have served exactly two lanes.
    """
    __tracebackhide__ = True
    if a is None or b is None:
        served = _served_lanes(result, None)
        if len(served) != 2:
            raise AssertionError(f"name the two lanes to compare; the replay served {served}")
        a, b = served
    flips = result.label_flips(a, b, request_ids)
    if flips:
        first, second = result.predictions(a), result.predictions(b)
        described = ", ".join(f"{r} ({first[r].label} -> {second[r].label})" for r in flips[:10])
        raise AssertionError(f"{len(flips)} label flips between {a} and {b}: {described}")


# Test inputs.


def write_labelled_recording(
    path: str | Path,
    rows: Iterable[tuple[str, str | None]],
    *,
    start_ms: int = 1_700_000_000_000,
    interval_ms: int = 10,
    feedback_delay_ms: int = 5,
    attributes: Callable[[int], Mapping[str, Any]] | None = None,
    partitions: int = 2,
) -> Path:
    """Write a recording of one request per (text, label) row, with feedback where the label is not None.

    Request ``i`` gets id ``req-{i:05d}``, timestamp ``start_ms + i * interval_ms`` and
    ``attributes(i)``; its feedback follows ``feedback_delay_ms`` later.
    """
    from driftloop.replay.writer import RecordingWriter

    path = Path(path)
    with RecordingWriter(path, overwrite=True) as writer:
        for index, (text, label) in enumerate(rows):
            request_id = f"req-{index:05d}"
            sent_ms = start_ms + index * interval_ms
            request = InferenceRequest(
                request_id=request_id,
                event_time_ms=sent_ms,
                text=text,
                attributes=dict(attributes(index)) if attributes else {},
            )
            writer.add_event(REQUESTS, request, timestamp_ms=sent_ms, partition=index % partitions)
            if label is not None:
                feedback = Feedback(
                    request_id=request_id, label=label, source="test", event_time_ms=sent_ms + feedback_delay_ms
                )
                writer.add_event(
                    FEEDBACK, feedback, timestamp_ms=sent_ms + feedback_delay_ms, partition=index % partitions
                )
        writer.finish()
    return path


def train_tiny_artifact(
    directory: str | Path,
    texts: Sequence[str],
    labels: Sequence[str],
    *,
    steps: int = 200,
    seed: int = 0,
    learning_rate: float = 0.05,
) -> Path:
    """Train the linear head of a tiny random encoder on (text, label) pairs and save it as an artifact.

    Training takes well under a second on a CPU, because the encoder (2 layers, hidden
    size 32, from :func:`driftloop.testing.models.tiny_classifier`) stays frozen and
    embeds the texts once. Such a model distinguishes a handful of distinct intents;
    fewer ``steps`` give a weaker model.
    """
    import torch

    from driftloop.model import save_artifact
    from driftloop.testing.models import tiny_classifier

    classes = sorted(set(labels))
    classifier, tokenizer, metadata = tiny_classifier(classes, seed=seed)
    batch = tokenizer(list(texts), padding=True, truncation=True, max_length=metadata.max_length, return_tensors="pt")
    targets = torch.tensor([classes.index(label) for label in labels])
    with torch.no_grad():
        features = classifier.embed(batch["input_ids"], batch["attention_mask"])
    optimizer = torch.optim.Adam(classifier.head.parameters(), lr=learning_rate)
    for _ in range(steps):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(classifier.head(features), targets)
        loss.backward()
        optimizer.step()
    directory = Path(directory)
    save_artifact(classifier.eval(), tokenizer, metadata, directory)
    return directory
