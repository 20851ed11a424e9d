"""driftloop: a continuous-learning stream processor on Kafka, Redis and transformers.

Subpackages by runtime role:

- ``driftloop.schemas``: event contracts (JSON Schema files and typed models).
- ``driftloop.infra``: the embedded broker and Redis, topics, Kafka and Redis clients.
- ``driftloop.workers``: consumer-group workers (inference, redactor, trainer).
- ``driftloop.streams``: faust-streaming apps (feedback join, online metrics).
"""

__version__ = "0.1.0"
