"""The model store: verified copies of registered artifacts under ``state_dir/models/v{n}``.

NOTE: workers load from the path recorded in the registry, so every worker must see
the same ``state_dir`` (one machine, or a shared file system).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from safetensors import SafetensorError, safe_open

from driftloop.artifact_digest import check_artifact_digest, digest_artifact
from driftloop.config import Settings
from driftloop.errors import ArtifactError, RegistryError
from driftloop.model import ARCHITECTURE, METADATA_FILE, PICKLE_SUFFIXES, WEIGHTS_FILE, ModelMetadata

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ArtifactInfo:
    """A checked artifact directory: its path, metadata, artifact SHA-256 (all files) and per-file SHA-256."""

    path: Path
    metadata: ModelMetadata
    sha256: str
    files: dict[str, str]


def store_root(settings: Settings) -> Path:
    return Path(settings.state_dir).resolve() / "models"


def find_pickles(directory: Path) -> list[str]:
    """Return the paths, relative to ``directory``, of files with a pickle suffix."""
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.suffix in PICKLE_SUFFIXES)


def check_no_pickles(directory: Path, version: int | None = None) -> None:
    """Raise ArtifactError if the artifact contains pickle files, even next to safetensors.

    Such a file is never opened. The artifact is rejected because it did not come from
    ``save_artifact``, and a loader elsewhere might pick the pickle up.
    """
    pickles = find_pickles(directory)
    if pickles:
        raise ArtifactError(
            f"{_subject(directory, version)} contains pickle files {pickles}; "
            f"driftloop loads {WEIGHTS_FILE} only, remove them and save with save_artifact"
        )


def inspect_artifact(directory: str | Path) -> ArtifactInfo:
    """Check an artifact directory without loading its weights, and hash every file in it.

    Checks: the directory exists, contains no pickle file and no symbolic link, has a
    weights file with a complete safetensors header, and a valid ``driftloop.json``
    for this architecture. Raises ArtifactError naming the file and the problem.
    """
    path = Path(directory).resolve()
    if not path.is_dir():
        raise ArtifactError(f"artifact directory {path} not found")
    check_no_pickles(path)
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        raise ArtifactError(f"{weights} not found; an artifact needs its weights in safetensors format")
    _check_safetensors_header(weights)
    # driftloop.json is parsed from the bytes that were hashed.
    digest, contents = digest_artifact(path, keep=(METADATA_FILE,))
    if METADATA_FILE not in contents:
        raise ArtifactError(f"{path / METADATA_FILE} not found")
    try:
        raw = json.loads(contents[METADATA_FILE].decode("utf-8"))
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise ArtifactError(f"{path / METADATA_FILE} is not valid JSON: {exc}") from exc
    metadata = ModelMetadata.from_json(raw, path=path)
    return ArtifactInfo(path=path, metadata=metadata, sha256=digest.sha256, files=digest.files)


def _check_safetensors_header(weights: Path) -> None:
    # safe_open reads only the header, and rejects a header whose tensors do not
    # cover the file exactly, which catches most truncated copies.
    try:
        with safe_open(str(weights), framework="pt") as handle:
            header = handle.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise ArtifactError(f"{weights} is not a readable safetensors file: {exc}") from exc
    architecture = header.get("architecture")
    if architecture is not None and architecture != ARCHITECTURE:
        raise ArtifactError(f"{weights} contains a {architecture!r} model; this driftloop loads {ARCHITECTURE!r}")


def copy_into_store(info: ArtifactInfo, root: Path, version: int) -> Path:
    """Copy the artifact to ``root/v{version}`` and return that path.

    The copy is written to a temporary sibling and renamed, so a crash leaves no
    half-written version directory. Every copied file is hashed again, and the copy
    must have the artifact SHA-256 that ``info`` recorded for the source.
    """
    target = root / f"v{version}"
    if target.exists():
        raise RegistryError(f"model store directory {target} already exists; the version counter and the store disagree")
    root.mkdir(parents=True, exist_ok=True)
    temporary = root / f".v{version}.tmp-{os.getpid()}"
    shutil.rmtree(temporary, ignore_errors=True)
    try:
        shutil.copytree(info.path, temporary)
        copied, _ = digest_artifact(temporary)
        try:
            check_artifact_digest(copied, info.sha256, info.files, version=version, path=temporary)
        except ArtifactError as exc:
            raise ArtifactError(f"{exc} The source {info.path} may have been written to during the copy.") from exc
        os.rename(temporary, target)
    except OSError as exc:
        raise RegistryError(f"could not copy {info.path} into the model store at {target}: {exc}") from exc
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    logger.info("stored version %d at %s", version, target)
    return target


def _subject(directory: Path, version: int | None) -> str:
    return f"version {version}: {directory}" if version is not None else str(directory)
