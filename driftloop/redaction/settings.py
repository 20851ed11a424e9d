"""Settings of the PII redaction stage."""

from pydantic import BaseModel, ConfigDict


class RedactionSettings(BaseModel):
    """Redaction settings (the ``redaction:`` section of the config file)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
