"""The recording format: writing, reading back, and bad recordings rejected with their line number."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from driftloop.schemas.events import Feedback, InferenceRequest, Prediction

from driftloop.replay.errors import RecordingError, ReplayError
from driftloop.replay.reader import read_recording
from driftloop.replay.writer import RecordingWriter

START_MS = 1_700_000_000_000


def request(index: int) -> InferenceRequest:
    return InferenceRequest(
        request_id=f"r{index}",
        event_time_ms=START_MS + index,
        text=f"where is my card {index}",
        attributes={"segment": "retail"},
    )


def prediction(index: int, version: int) -> Prediction:
    return Prediction(
        request_id=f"r{index}",
        model_version=version,
        label="card_arrival",
        confidence=0.9,
        scores={"card_arrival": 0.9},
        latency_ms=3.0,
        inference_ms=1.0,
        worker_id="w",
        event_time_ms=START_MS + index,
        predicted_at_ms=START_MS + index + 3,
    )


def write_sample(path: Path, count: int = 4) -> Path:
    """Write ``count`` requests on two partitions, feedback for each, and predictions of versions 1 and 2."""
    with RecordingWriter(path, overwrite=True) as writer:
        for index in range(count):
            writer.add_event("requests", request(index), timestamp_ms=START_MS + index, partition=index % 2)
            writer.add_event("predictions", prediction(index, 1 + index % 2), timestamp_ms=START_MS + index + 3)
            feedback = Feedback(request_id=f"r{index}", label="card_arrival", event_time_ms=START_MS + index + 5)
            writer.add_event(
                "feedback", feedback, timestamp_ms=START_MS + index + 5, headers=(("origin", b"app"), ("empty", None))
            )
        writer.finish()
    return path


def read_lines(path: Path) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return handle.read().splitlines()


def write_lines(path: Path, lines: list[str]) -> None:
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("".join(line + "\n" for line in lines))


# Writing and reading.


def test_recording_round_trip(tmp_path: Path) -> None:
    path = write_sample(tmp_path / "sample.jsonl.gz")

    recording = read_recording(path)

    assert recording.header.counts == {"requests": 4, "predictions": 4, "feedback": 4}
    assert recording.header.model_versions == [1, 2]
    assert recording.header.first_timestamp_ms == START_MS
    assert recording.header.last_timestamp_ms == START_MS + 8
    assert [r.event for r in recording.requests] == [request(i) for i in range(4)]
    assert [r.partition for r in recording.requests] == [0, 1, 0, 1]
    assert [r.offset for r in recording.requests] == [0, 0, 1, 1]
    assert recording.feedback[0].headers == (("origin", b"app"), ("empty", None))
    assert recording.requests[0].key == b"r0"
    assert recording.events[0].line == 2


def test_recording_header_is_first_line(tmp_path: Path) -> None:
    path = write_sample(tmp_path / "sample.jsonl.gz")

    header = json.loads(read_lines(path)[0])

    assert header["type"] == "header"
    assert header["format_version"] == 1
    assert header["schema_versions"] == {"requests": 1, "predictions": 1, "feedback": 1}


def test_writer_rejects_raw_topic(tmp_path: Path) -> None:
    with RecordingWriter(tmp_path / "raw.jsonl.gz") as writer:
        with pytest.raises(ReplayError, match="requests.raw.*raw, unredacted text"):
            writer.add_event("requests.raw", request(0), timestamp_ms=START_MS)

    assert not (tmp_path / "raw.jsonl.gz").exists()
    assert list(tmp_path.iterdir()) == []


def test_writer_keeps_existing_file(tmp_path: Path) -> None:
    path = write_sample(tmp_path / "sample.jsonl.gz")

    with pytest.raises(ReplayError, match="already exists"):
        RecordingWriter(path)


def test_binary_key_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "binary.jsonl.gz"
    with RecordingWriter(path) as writer:
        writer.add_event("requests", request(0), timestamp_ms=START_MS, key=b"\xff\x00")
        writer.finish()

    assert read_recording(path).requests[0].key == b"\xff\x00"


# Bad recordings. Each case edits a valid sample and names the line and message expected.


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 40])


def replace_line(number: int, edit: Callable[[str], str]) -> Callable[[Path], None]:
    def apply(path: Path) -> None:
        lines = read_lines(path)
        lines[number - 1] = edit(lines[number - 1])
        write_lines(path, lines)

    return apply


def edit_json(number: int, edit: Callable[[dict], None]) -> Callable[[Path], None]:
    def change(line: str) -> str:
        data = json.loads(line)
        edit(data)
        return json.dumps(data)

    return replace_line(number, change)


def drop_line(number: int) -> Callable[[Path], None]:
    def apply(path: Path) -> None:
        lines = read_lines(path)
        del lines[number - 1]
        write_lines(path, lines)

    return apply


def copy_header_to_line_3(path: Path) -> None:
    lines = read_lines(path)
    write_lines(path, lines[:2] + [lines[0]] + lines[2:])


def set_path(data: dict, keys: tuple, value) -> None:
    for key in keys[:-1]:
        data = data[key]
    data[keys[-1]] = value


BAD_RECORDINGS = {
    "truncated gzip": (truncate, None, "truncated or corrupt"),
    "line not JSON": (replace_line(5, lambda line: line[:-7]), 5, "not valid JSON"),
    "header schema version": (
        edit_json(1, lambda d: set_path(d, ("schema_versions", "requests"), 2)),
        1,
        "unknown schema version 2 for topic 'requests'",
    ),
    "record schema version": (
        edit_json(6, lambda d: set_path(d, ("value", "schema_version"), 3)),
        6,
        "unknown schema version 3 in the",
    ),
    "header counts": (drop_line(13), 1, r"counts do not match .*feedback: header 4, file 3"),
    "header model versions": (
        edit_json(1, lambda d: set_path(d, ("model_versions",), [1])),
        1,
        r"model versions \[1\].*\[1, 2\]",
    ),
    "timestamp outside header": (
        edit_json(4, lambda d: set_path(d, ("timestamp_ms",), START_MS + 999)),
        4,
        "outside the header's range",
    ),
    "offsets out of order": (
        edit_json(8, lambda d: set_path(d, ("offset",), 0)),
        8,
        r"offset 0 of requests\[0\] is not after offset 0 on line 2",
    ),
    "format version": (edit_json(1, lambda d: set_path(d, ("format_version",), 9)), 1, "unsupported format_version 9"),
    "invalid event": (
        edit_json(2, lambda d: set_path(d, ("value", "text"), "  ")),
        2,
        "invalid InferenceRequest event: text",
    ),
    "unknown topic": (edit_json(2, lambda d: set_path(d, ("topic",), "requests.raw")), 2, "invalid record: topic"),
    "second header": (copy_header_to_line_3, 3, "a second header"),
}


@pytest.mark.parametrize("case", sorted(BAD_RECORDINGS))
def test_bad_recording_names_line(tmp_path: Path, case: str) -> None:
    damage, line, message = BAD_RECORDINGS[case]
    path = write_sample(tmp_path / "bad.jsonl.gz")
    damage(path)

    with pytest.raises(RecordingError, match=message) as caught:
        read_recording(path)

    if line is not None:
        assert caught.value.line == line
        assert f"line {line}:" in str(caught.value)
    else:
        assert caught.value.line is not None
        assert "line " in str(caught.value)


def test_plain_text_file_rejected(tmp_path: Path) -> None:
    path = tmp_path / "plain.jsonl"
    path.write_text('{"type": "header"}\n', encoding="utf-8")

    with pytest.raises(RecordingError, match="not a gzip file") as caught:
        read_recording(path)

    assert caught.value.line == 1


def test_empty_recording_rejected(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl.gz"
    write_lines(path, [])

    with pytest.raises(RecordingError, match="empty; expected a header") as caught:
        read_recording(path)

    assert caught.value.line == 1


def test_missing_recording_rejected(tmp_path: Path) -> None:
    with pytest.raises(RecordingError, match="recording file not found"):
        read_recording(tmp_path / "absent.jsonl.gz")


def test_last_line_without_newline(tmp_path: Path) -> None:
    path = write_sample(tmp_path / "cut.jsonl.gz")
    text = "\n".join(read_lines(path))  # no newline after the last record
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write(text)

    with pytest.raises(RecordingError, match="no newline at its end") as caught:
        read_recording(path)

    assert caught.value.line == 13
