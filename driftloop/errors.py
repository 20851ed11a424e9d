"""Exceptions raised by driftloop.

Every error that driftloop raises derives from :class:`DriftloopError`::

    DriftloopError
    ├── ConfigError          invalid or contradictory settings
    ├── ServiceError         Kafka or Redis could not be reached or refused a request
    │   └── StackError       the embedded broker or Redis failed to start or stop
    ├── EventError           an event failed to decode or validate
    ├── ModelError           a model could not be built, loaded or saved
    │   └── ArtifactError    a model artifact is missing, corrupt or unsafe to load
    ├── RegistryError        the model registry refused an operation
    └── RedactionError       the PII redaction stage could not be configured or run

Errors from confluent-kafka, redis-py and torch are wrapped where driftloop calls
them, with the original kept as ``__cause__``.
"""


class DriftloopError(Exception):
    """Root of all driftloop errors."""


class ConfigError(DriftloopError):
    """Invalid or contradictory settings; the message names the setting."""


class ServiceError(DriftloopError):
    """Kafka or Redis could not be reached or rejected a request."""


class StackError(ServiceError):
    """The embedded broker or Redis server failed to start, answer or stop."""


class EventError(DriftloopError):
    """An event failed to decode or validate against its schema."""

    def __init__(self, message: str, *, kind: str = "invalid") -> None:
        super().__init__(message)
        self.kind = kind


class ModelError(DriftloopError):
    """A model could not be built, loaded or saved."""


class ArtifactError(ModelError):
    """A model artifact is missing, corrupt, of another architecture or unsafe to load."""


class RegistryError(DriftloopError):
    """The model registry rejected an operation."""


class RedactionError(DriftloopError):
    """The PII redaction stage could not be configured or run."""
