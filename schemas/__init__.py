"""Event contracts: typed models that validate on decode, and their JSON Schema files.

The ``*.v1.json`` files beside this module are generated from the models by
``python -m driftloop.schemas.export`` and checked against them by the tests; they are
the contract for producers in other languages and for a schema registry.
"""

from driftloop.schemas.events import (
    SCHEMA_VERSION,
    DeadLetter,
    Example,
    Feedback,
    InferenceRequest,
    Prediction,
    decode_event,
    encode_event,
)

__all__ = [
    "SCHEMA_VERSION",
    "DeadLetter",
    "Example",
    "Feedback",
    "InferenceRequest",
    "Prediction",
    "decode_event",
    "encode_event",
]
