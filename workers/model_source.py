"""Where an inference worker gets the model it serves, and new versions between batches."""

from __future__ import annotations

from typing import Protocol

from driftloop.model import ServingModel


class ModelSource(Protocol):
    """Supplies the serving model; ``poll`` is called between batches and must not block."""

    def current(self) -> ServingModel: ...

    def poll(self) -> ServingModel | None:
        """Return a newly loaded model to swap in, or None to keep the current one."""
        ...

    def close(self) -> None: ...


class FixedModel:
    """A model source that always serves the one model it was given."""

    def __init__(self, model: ServingModel) -> None:
        self._model = model

    def current(self) -> ServingModel:
        return self._model

    def poll(self) -> ServingModel | None:
        return None

    def close(self) -> None:
        pass
