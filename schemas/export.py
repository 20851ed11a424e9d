"""Write the JSON Schema file of each event model: ``python -m driftloop.schemas.export``."""

from __future__ import annotations

import json
from pathlib import Path

from driftloop.schemas.events import SCHEMA_VERSION, DeadLetter, Example, Feedback, InferenceRequest, Prediction

MODELS = (InferenceRequest, Prediction, Feedback, Example, DeadLetter)
SCHEMA_DIR = Path(__file__).resolve().parent


def schema_path(name: str) -> Path:
    return SCHEMA_DIR / f"{name}.v{SCHEMA_VERSION}.json"


def json_schema(model: type) -> dict:
    schema = model.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://driftloop.dev/schemas/{model.__name__}.v{SCHEMA_VERSION}.json"
    return schema


def main() -> None:
    for model in MODELS:
        path = schema_path(model.__name__)
        path.write_text(json.dumps(json_schema(model), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        print(path)


if __name__ == "__main__":
    main()
