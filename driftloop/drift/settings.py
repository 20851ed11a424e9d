"""Settings of the drift detectors and the training trigger."""

from pydantic import BaseModel, ConfigDict


class DriftSettings(BaseModel):
    """Drift settings (the ``drift:`` section of the config file)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
