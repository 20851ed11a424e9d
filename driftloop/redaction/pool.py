"""Backends that run SpanAnalyzer in the calling process or in spawned worker processes.

Each worker process loads its own SpanAnalyzer once, in the pool initializer. Workers are
started with the ``spawn`` method, so they share no state with the parent: forking a
process that has already loaded spaCy and Presidio copies their thread pools and locks.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
import traceback
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Protocol

from driftloop.errors import RedactionError
from driftloop.redaction.settings import RedactionSettings
from driftloop.redaction.spans import DetectedSpan

logger = logging.getLogger(__name__)

# How long start-up waits for every worker to load its model.
WORKER_START_TIMEOUT_S = 300.0

# The SpanAnalyzer of a worker process and the barrier of the start-up, set by _init_worker.
_worker_analyzer = None
_worker_barrier = None


class AnalyzerBackend(Protocol):
    def analyze(self, texts: Sequence[str]) -> list[list[DetectedSpan]]: ...

    def close(self) -> None: ...


class InProcessBackend:
    """Runs SpanAnalyzer in the calling process."""

    def __init__(self, settings: RedactionSettings) -> None:
        from driftloop.redaction.analysis import SpanAnalyzer

        self.analyzer = SpanAnalyzer(settings)

    def analyze(self, texts: Sequence[str]) -> list[list[DetectedSpan]]:
        return analyze_without_payload_in_errors(self.analyzer, texts)

    def close(self) -> None:
        pass


class ProcessPoolBackend:
    """Splits each batch over ``settings.processes`` spawned worker processes."""

    def __init__(self, settings: RedactionSettings) -> None:
        self.processes = settings.processes
        context = multiprocessing.get_context("spawn")
        barrier = context.Barrier(settings.processes, timeout=WORKER_START_TIMEOUT_S)
        self._executor = ProcessPoolExecutor(
            max_workers=settings.processes,
            mp_context=context,
            initializer=_init_worker,
            initargs=(settings.model_dump_json(), barrier),
        )
        # Start every worker now, so a model that fails to load fails here and the first
        # batch does not wait for model loads. Each start-up task blocks at the barrier
        # until all workers hold one, so no worker can take two of them.
        started = time.perf_counter()
        try:
            list(self._executor.map(_wait_for_all_workers, range(settings.processes)))
        except (BrokenProcessPool, threading.BrokenBarrierError) as exc:
            self._executor.shutdown(cancel_futures=True)
            raise RedactionError(
                "a redaction worker process failed to start; run with redaction.processes: 1 to see the error"
            ) from exc
        logger.info(
            "started %d redaction worker processes in %.1f s", settings.processes, time.perf_counter() - started
        )

    def analyze(self, texts: Sequence[str]) -> list[list[DetectedSpan]]:
        parts = split_by_chars(texts, self.processes)
        try:
            results = list(self._executor.map(_analyze_in_worker, parts))
        except BrokenProcessPool as exc:
            raise RedactionError("a redaction worker process exited unexpectedly; the batch was not redacted") from exc
        return [spans for part in results for spans in part]

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


def create_backend(settings: RedactionSettings) -> AnalyzerBackend:
    if settings.processes == 1:
        return InProcessBackend(settings)
    return ProcessPoolBackend(settings)


def split_by_chars(texts: Sequence[str], parts: int) -> list[list[str]]:
    """Split ``texts`` into at most ``parts`` consecutive runs of about equal total length."""
    total = sum(len(text) for text in texts) or 1
    runs: list[list[str]] = [[]]
    done = 0
    for text in texts:
        if runs[-1] and done >= total * len(runs) / parts and len(runs) < parts:
            runs.append([])
        runs[-1].append(text)
        done += len(text)
    return [run for run in runs if run]


def analyze_without_payload_in_errors(analyzer, texts: Sequence[str]) -> list[list[DetectedSpan]]:
    """Call ``analyzer.analyze``, raising RedactionError without the original message.

    Messages of errors raised inside Presidio can quote the text (e.g. "Did not find word
    '...'"), so the error keeps only the exception type and where it was raised.
    """
    try:
        return analyzer.analyze(texts)
    except Exception as exc:  # noqa: BLE001 - any failure must not leak the text it was about
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        location = f"{os.path.basename(frame.filename)}:{frame.lineno}"
        raise RedactionError(
            f"PII analysis failed with {type(exc).__name__} at {location} on a batch of "
            f"{len(texts)} texts; the message is withheld because it may quote the text"
        ) from None


def _init_worker(settings_json: str, barrier: threading.Barrier) -> None:
    from driftloop.redaction.analysis import SpanAnalyzer

    global _worker_analyzer, _worker_barrier
    _worker_barrier = barrier
    _worker_analyzer = SpanAnalyzer(RedactionSettings.model_validate_json(settings_json))


def _wait_for_all_workers(_: int) -> None:
    _worker_barrier.wait()


def _analyze_in_worker(texts: list[str]) -> list[list[DetectedSpan]]:
    return analyze_without_payload_in_errors(_worker_analyzer, texts)
