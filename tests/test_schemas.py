"""Event contracts: JSON Schema files match the models, decoding reports a reason."""

from __future__ import annotations

import json

import jsonschema
import pytest

from driftloop.errors import EventError
from driftloop.schemas.events import Feedback, InferenceRequest, Prediction, decode_event
from driftloop.schemas.export import MODELS, json_schema, schema_path


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_schema_file_matches_model(model):
    on_disk = json.loads(schema_path(model.__name__).read_text(encoding="utf-8"))
    assert on_disk == json_schema(model), "run `python -m driftloop.schemas.export` and commit the files"


def test_schema_file_validates_real_event():
    request = InferenceRequest(request_id="r1", event_time_ms=1, text="hello", attributes={"segment": "retail"})
    schema = json.loads(schema_path("InferenceRequest").read_text(encoding="utf-8"))
    jsonschema.validate(json.loads(request.model_dump_json()), schema)


def test_schema_file_rejects_missing_text():
    schema = json.loads(schema_path("InferenceRequest").read_text(encoding="utf-8"))
    with pytest.raises(jsonschema.ValidationError, match="'text' is a required property"):
        jsonschema.validate({"request_id": "r1", "event_time_ms": 1}, schema)


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (None, "empty_value"),
        (b"\xff", "not_utf8"),
        (b"{", "invalid_json"),
        (b"[]", "wrong_type"),
        (b'{"request_id": "r", "event_time_ms": 1}', "missing_text"),
        (b'{"request_id": "r", "event_time_ms": 1, "text": ""}', "empty_text"),
        (b'{"request_id": "", "event_time_ms": 1, "text": "x"}', "invalid_event"),
        (b'{"request_id": "r", "event_time_ms": -5, "text": "x"}', "invalid_event"),
        (b'{"request_id": "r", "event_time_ms": 1, "text": "x", "extra": 1}', "invalid_event"),
    ],
)
def test_decode_reasons(value, kind):
    with pytest.raises(EventError) as caught:
        decode_event(InferenceRequest, value)
    assert caught.value.kind == kind


def test_decode_error_hides_field_values():
    secret = "ana.one@example.com"
    with pytest.raises(EventError) as caught:
        decode_event(Feedback, json.dumps({"request_id": "r", "label": 5, "event_time_ms": secret}).encode())
    assert secret not in str(caught.value)


def test_prediction_round_trip():
    prediction = Prediction(
        request_id="r", model_version=2, label="a", confidence=0.5, scores={"a": 0.5}, latency_ms=1,
        inference_ms=1, worker_id="w", event_time_ms=1, predicted_at_ms=2,
    )
    assert decode_event(Prediction, prediction.model_dump_json().encode()) == prediction
