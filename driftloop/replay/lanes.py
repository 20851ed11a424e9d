"""The model versions a replay serves, each in a lane of its own.

A lane is one model version with a pipeline of its own under ``{run prefix}v{n}.``:
its requests, feedback and predictions topics, inference workers and feedback join.
The replay publishes every recorded event into every lane, so all versions see the
same stream in the same order, and each join keeps the online metrics of one version
only.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from driftloop.config import Settings
from driftloop.errors import ArtifactError, ConfigError, RegistryError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelChoice:
    """A model version to serve: its number, artifact directory and origin."""

    version: int
    path: Path
    origin: str  # "registry" or "artifact"
    sha256: str | None = None  # the registry's artifact SHA-256 (all files), checked on load

    @property
    def name(self) -> str:
        """Lane name, as it appears in reports: ``v{version}``."""
        return f"v{self.version}"


def parse_model_spec(spec: str, default_version: int = 0) -> tuple[int, Path]:
    """Parse ``DIR`` or ``VERSION=DIR`` into (version, directory)."""
    version_text, separator, directory = spec.partition("=")
    if not separator:
        return default_version, Path(spec)
    try:
        version = int(version_text)
    except ValueError as exc:
        raise ConfigError(f"--model {spec!r}: expected DIR or VERSION=DIR with an integer VERSION") from exc
    if version < 0 or not directory:
        raise ConfigError(f"--model {spec!r}: expected DIR or VERSION=DIR with VERSION >= 0")
    return version, Path(directory)


def resolve_models(
    settings: Settings,
    versions: Sequence[int] = (),
    artifacts: Sequence[tuple[int, str | Path]] = (),
) -> list[ModelChoice]:
    """Return the lanes to serve: registry ``versions``, then ``artifacts`` as (version, directory).

    With neither, the lane serves the registry's champion. Registry versions are looked
    up under ``settings.topic_prefix``. Two lanes with one version number are rejected,
    because reports name lanes by version.
    """
    choices: list[ModelChoice] = []
    if versions or not artifacts:
        choices.extend(_from_registry(settings, versions))
    for version, directory in artifacts:
        path = Path(directory)
        if not path.is_dir():
            raise ConfigError(f"model artifact directory not found: {path}")
        choices.append(ModelChoice(version=version, path=path.resolve(), origin="artifact"))
    seen: set[int] = set()
    for choice in choices:
        if choice.version in seen:
            raise ConfigError(
                f"version {choice.version} is served twice; serve each version once, "
                "and give each --model its own number as VERSION=DIR"
            )
        seen.add(choice.version)
    return choices


def _from_registry(settings: Settings, versions: Sequence[int]) -> list[ModelChoice]:
    from driftloop.registry.registry import ModelRegistry

    with ModelRegistry(settings) as registry:
        if not versions:
            champion = registry.champion_version()
            if champion is None:
                raise RegistryError(
                    f"no champion in the registry under prefix {settings.topic_prefix!r}; "
                    "name versions with --version or artifact directories with --model"
                )
            versions = [champion]
        records = [registry.get(version) for version in versions]
    return [ModelChoice(version=r.version, path=Path(r.path), origin="registry", sha256=r.sha256) for r in records]


def check_models(choices: Sequence[ModelChoice]) -> None:
    """Check every lane's artifact without loading its weights; raise ArtifactError at the first problem.

    The files of a registry version must still have the registry's artifact SHA-256.
    Each lane's workers then load the artifact and check the SHA-256 again.
    """
    from driftloop.registry.store import inspect_artifact

    for choice in choices:
        info = inspect_artifact(choice.path)
        if choice.sha256 is not None and info.sha256 != choice.sha256:
            raise ArtifactError(
                f"version {choice.version}: artifact SHA-256 (all files) of {choice.path} is {info.sha256}, "
                f"but the registry expects {choice.sha256}"
            )
        logger.info("version %d: artifact %s checked (%s)", choice.version, choice.path, choice.origin)
