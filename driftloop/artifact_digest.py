"""The artifact SHA-256: one digest over every file of a model artifact directory.

The registry records it for each model version, and every loader recomputes it
before serving. A changed label list in ``driftloop.json`` or a changed tokenizer
file is therefore rejected like changed weights. This module imports neither torch
nor the registry, so tools and the command line can hash an artifact cheaply.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from driftloop.errors import ArtifactError

# The registry writes these model cards into each stored version after it has hashed
# the version. The cards repeat the registry record, and no loader reads them.
CARD_MARKDOWN = "MODEL_CARD.md"
CARD_JSON = "model_card.json"
UNHASHED_FILES = frozenset({CARD_MARKDOWN, CARD_JSON})

_CHUNK_SIZE = 1 << 20
# sha256sum escapes the output line of a file name that contains one of these
# characters, which would make the manifest differ from sha256sum's output.
_ESCAPED_CHARACTERS = ("\n", "\r", "\\")


@dataclass(frozen=True)
class ArtifactDigest:
    """An artifact's SHA-256 and the per-file SHA-256 values it was computed from.

    ``files`` maps each hashed file's path, relative to the artifact directory with
    ``/`` separators, to the lowercase hex SHA-256 of its content.
    """

    sha256: str
    files: dict[str, str]


def artifact_sha256(directory: str | Path) -> str:
    """Hash every file of an artifact directory and return the artifact SHA-256 that :func:`digest_artifact` builds."""
    digest, _ = digest_artifact(directory)
    return digest.sha256


def digest_artifact(directory: str | Path, *, keep: Collection[str] = ()) -> tuple[ArtifactDigest, dict[str, bytes]]:
    """Hash every file of an artifact directory, and return the content of the files in ``keep``.

    The artifact SHA-256 is built so that other tools can recompute it:

    1. List every regular file under the directory, recursively, by its path relative
       to the directory with ``/`` separators. Leave out the model cards
       ``MODEL_CARD.md`` and ``model_card.json`` at the top level only.
    2. Sort the paths by their UTF-8 bytes.
    3. Write one manifest line per file: the lowercase hex SHA-256 of its content,
       two spaces, the path and a line feed (``\\n``).
    4. The artifact SHA-256 is the lowercase hex SHA-256 of the manifest's UTF-8 bytes.

    The manifest is what GNU ``sha256sum`` prints for those files in that order
    (checked with coreutils 9.1), so this shell line recomputes the digest::

        cd ARTIFACT && find . -type f ! -path ./MODEL_CARD.md ! -path ./model_card.json \\
            | sed 's|^\\./||' | LC_ALL=C sort | xargs -d '\\n' sha256sum | sha256sum

    Empty directories add nothing. ArtifactError is raised for a symbolic link
    anywhere in the directory, model cards included, because it could point outside
    the artifact. ``save_artifact`` never writes one. ArtifactError is also raised for a
    special file (FIFO, socket, device), a path that is not valid UTF-8 or contains a
    line feed, carriage return or backslash, a missing directory and a file that
    cannot be read. The directory path itself may be a symbolic link.

    The files named in ``keep`` (relative paths) are read whole and returned, so the
    caller can use exactly the bytes that were hashed. A name in ``keep`` that is not
    a file of the artifact is left out of the returned dictionary.
    """
    root = Path(directory).resolve()
    if not root.is_dir():
        raise ArtifactError(f"artifact directory {root} not found")
    files: dict[str, str] = {}
    contents: dict[str, bytes] = {}
    for relative, path in _list_files(root):
        if relative in keep:
            content = _read_file(path)
            contents[relative] = content
            files[relative] = hashlib.sha256(content).hexdigest()
        else:
            files[relative] = _sha256_file(path)
    return ArtifactDigest(sha256=manifest_sha256(files), files=files), contents


def manifest_sha256(files: Mapping[str, str]) -> str:
    """Return the artifact SHA-256 of a mapping from relative path to the SHA-256 of the file's content."""
    ordered = sorted(files, key=lambda relative: relative.encode("utf-8"))
    manifest = "".join(f"{files[relative]}  {relative}\n" for relative in ordered)
    return hashlib.sha256(manifest.encode("utf-8")).hexdigest()


def check_artifact_digest(
    actual: ArtifactDigest,
    expected_sha256: str,
    expected_files: Mapping[str, str] | None,
    *,
    version: int,
    path: Path,
) -> None:
    """Raise ArtifactError naming the version and the differing files unless the SHA-256 values match.

    ``expected_files`` is the per-file SHA-256 recorded with ``expected_sha256``. It
    serves only to name the files that differ, and may be None or empty.
    """
    if actual.sha256 == expected_sha256:
        return
    raise ArtifactError(
        f"version {version}: artifact SHA-256 (all files) of {path} is {actual.sha256}, "
        f"but {expected_sha256} was expected. {describe_difference(actual, expected_sha256, expected_files)}"
    )


def describe_difference(actual: ArtifactDigest, expected_sha256: str, expected_files: Mapping[str, str] | None) -> str:
    """Return sentences that name the changed, added and missing files, compared with ``expected_files``."""
    if not expected_files:
        return _describe_without_file_list(actual, expected_sha256)
    changed = sorted(name for name in actual.files.keys() & expected_files.keys() if actual.files[name] != expected_files[name])
    added = sorted(actual.files.keys() - expected_files.keys())
    missing = sorted(expected_files.keys() - actual.files.keys())
    sentences = []
    if changed:
        sentences.append(f"Changed files: {changed}.")
    if added:
        sentences.append(f"Files not in the expected list: {added}.")
    if missing:
        sentences.append(f"Missing files: {missing}.")
    if not sentences:
        return "Every file matches its expected SHA-256, so the expected artifact SHA-256 does not match the expected files."
    return " ".join(sentences)


def _describe_without_file_list(actual: ArtifactDigest, expected_sha256: str) -> str:
    # Before the artifact SHA-256 covered every file, the registry recorded the
    # SHA-256 of model.safetensors alone and no per-file list.
    matching = sorted(name for name, sha256 in actual.files.items() if sha256 == expected_sha256)
    if matching:
        return (
            f"The expected value is the SHA-256 of {matching[0]} alone, which driftloop recorded before its "
            "SHA-256 covered all files. Check the artifact and register it again to record the SHA-256 of all its files."
        )
    return "No per-file SHA-256 values were given, so the files that differ are unknown."


def _list_files(root: Path) -> list[tuple[str, Path]]:
    """Return (relative POSIX path, path) of every hashed file under ``root``, sorted by the path's UTF-8 bytes."""
    listed: list[tuple[bytes, str, Path]] = []

    def raise_walk_error(error: OSError) -> None:
        raise ArtifactError(f"artifact directory {root} could not be listed: {error}") from error

    # followlinks=False: a linked directory appears in dirnames and is rejected below, not entered.
    for current, directories, names in os.walk(root, onerror=raise_walk_error, followlinks=False):
        base = Path(current)
        for name in directories:
            if (base / name).is_symlink():
                raise ArtifactError(f"{base / name} is a symbolic link, but an artifact must contain only regular files")
        for name in names:
            path = base / name
            if path.is_symlink():
                raise ArtifactError(
                    f"{path} is a symbolic link, but an artifact must contain only regular files. "
                    "Replace the link with a copy of its target."
                )
            if not path.is_file():
                raise ArtifactError(f"{path} is not a regular file, but an artifact must contain only regular files")
            relative = path.relative_to(root).as_posix()
            if relative in UNHASHED_FILES:
                continue
            listed.append((_encoded_name(relative, path), relative, path))
    return [(relative, path) for _, relative, path in sorted(listed)]


def _encoded_name(relative: str, path: Path) -> bytes:
    if any(character in relative for character in _ESCAPED_CHARACTERS):
        raise ArtifactError(f"invalid file name {path!r}: a name in an artifact must not contain a line feed, carriage return or backslash")
    try:
        return relative.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ArtifactError(f"invalid file name {path!r}: a name in an artifact must be valid UTF-8") from exc


def _read_file(path: Path) -> bytes:
    try:
        with _open_regular_file(path) as handle:
            return handle.read()
    except OSError as exc:
        raise ArtifactError(f"{path} could not be read: {exc}") from exc


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with _open_regular_file(path) as handle:
            while chunk := handle.read(_CHUNK_SIZE):
                digest.update(chunk)
    except OSError as exc:
        raise ArtifactError(f"{path} could not be read: {exc}") from exc
    return digest.hexdigest()


def _open_regular_file(path: Path) -> BinaryIO:
    # O_NOFOLLOW makes the open fail if the file was replaced by a symbolic link after
    # it was listed. The flag does not exist on Windows, where the listing check stays.
    descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    handle = os.fdopen(descriptor, "rb")
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        handle.close()
        raise ArtifactError(f"{path} is not a regular file, but an artifact must contain only regular files")
    return handle
