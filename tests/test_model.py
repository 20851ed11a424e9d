"""The classifier on the real all-MiniLM-L6-v2 weights, and artifact loading rules."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from driftloop.artifact_digest import CARD_JSON, CARD_MARKDOWN, artifact_sha256, digest_artifact, manifest_sha256
from driftloop.datasets import read_labelled, shuffled
from driftloop.errors import ArtifactError, ModelError
from driftloop.model import (
    METADATA_FILE,
    WEIGHTS_FILE,
    ServingModel,
    default_base_model,
    load_artifact,
    load_encoder,
    new_classifier,
    save_artifact,
)
from driftloop.testing.models import tiny_classifier, write_tiny_artifact
from driftloop.training import FitOptions, fit


@pytest.fixture(scope="module")
def minilm_model(shared_data) -> tuple[ServingModel, list]:
    rows = shuffled(read_labelled(shared_data / "banking77" / "train.csv"), seed=1)
    labels = sorted({row.label for row in rows[:600]})
    train, test = rows[:600], [row for row in rows[600:900] if row.label in labels]
    classifier, tokenizer, metadata = new_classifier(default_base_model(), labels)
    index = {label: i for i, label in enumerate(labels)}
    fit(classifier, tokenizer, [r.text for r in train], [index[r.label] for r in train], FitOptions(), torch.device("cpu"))
    return ServingModel(classifier, tokenizer, metadata, device=torch.device("cpu"), version=1), test


def test_minilm_head_learns_banking77(minilm_model):
    model, test = minilm_model
    predictions = model.predict_bucketed([row.text for row in test], 32)
    accuracy = sum(p.label == row.label for p, row in zip(predictions, test)) / len(test)
    # A head on frozen MiniLM embeddings from 600 examples; chance is below 2%.
    assert accuracy > 0.4


def test_minilm_artifact_round_trip(minilm_model, tmp_path):
    model, test = minilm_model
    sha = save_artifact(model.classifier, model.tokenizer, model.metadata, tmp_path / "v1")
    loaded = load_artifact(tmp_path / "v1", version=1, expected_sha256=sha)
    texts = [row.text for row in test[:50]]

    assert [p.label for p in loaded.predict_bucketed(texts, 16)] == [p.label for p in model.predict_bucketed(texts, 16)]
    assert not any(p.is_meta for p in loaded.classifier.parameters())


def test_bucketed_matches_one_by_one(minilm_model):
    model, test = minilm_model
    texts = [row.text for row in test[:40]] + [" ".join(row.text for row in test[:12])]
    bucketed = model.predict_bucketed(texts, 8)
    single = [model.predict([text])[0] for text in texts]
    assert [p.label for p in bucketed] == [p.label for p in single]
    for a, b in zip(bucketed, single):
        assert a.confidence == pytest.approx(b.confidence, abs=1e-4)


def run_offline(code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter with the Hugging Face hub switched off."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def test_local_encoder_loads_offline():
    result = run_offline(
        "from driftloop.model import load_encoder, default_base_model\n"
        "encoder, tokenizer = load_encoder(default_base_model())\n"
        "print(encoder.config.hidden_size, tokenizer('hello')['input_ids'][0] == tokenizer.cls_token_id)"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["384", "True"]


def test_unreachable_hub_id_explains():
    result = run_offline(
        "from driftloop.model import load_encoder\n"
        "from driftloop.errors import ModelError\n"
        "try:\n"
        "    load_encoder('example-org/not-a-model')\n"
        "except ModelError as exc:\n"
        "    print(exc)\n"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "could not load encoder 'example-org/not-a-model'" in result.stdout
    assert "machine that can reach the hub" in result.stdout


def test_grow_head_keeps_old_rows():
    classifier, _, _ = tiny_classifier(["a", "b"])
    before = classifier.head.weight.detach().clone()
    classifier.grow_head(4)
    assert classifier.head.out_features == 4
    assert torch.equal(classifier.head.weight[:2], before)


def test_pickle_only_artifact_rejected(tmp_path):
    write_tiny_artifact(tmp_path / "m", ["a", "b"])
    (tmp_path / "m" / "model.safetensors").rename(tmp_path / "m" / "pytorch_model.bin")
    with pytest.raises(ArtifactError, match=r"version 7: .*model.safetensors not found; pickle files \['pytorch_model.bin'\]"):
        load_artifact(tmp_path / "m", version=7)


def test_other_architecture_rejected(tmp_path):
    write_tiny_artifact(tmp_path / "m", ["a", "b"])
    metadata_file = tmp_path / "m" / "driftloop.json"
    metadata = json.loads(metadata_file.read_text())
    metadata["architecture"] = "someone.Else/2"
    metadata_file.write_text(json.dumps(metadata))
    with pytest.raises(ArtifactError, match="'someone.Else/2' model"):
        load_artifact(tmp_path / "m", version=2)


# The artifact SHA-256 over all files.


@pytest.fixture
def tiny_artifact(tmp_path) -> tuple[Path, str]:
    """A tiny artifact directory and the artifact SHA-256 that save_artifact returned."""
    directory = tmp_path / "m"
    return directory, write_tiny_artifact(directory, ["billing", "bug", "praise"])


def test_artifact_sha256_covers_every_file(tiny_artifact):
    directory, sha = tiny_artifact
    digest, _ = digest_artifact(directory)

    assert digest.sha256 == sha
    assert sorted(digest.files) == sorted(path.name for path in directory.iterdir())
    assert WEIGHTS_FILE in digest.files
    assert METADATA_FILE in digest.files
    assert digest.files[WEIGHTS_FILE] == hashlib.sha256((directory / WEIGHTS_FILE).read_bytes()).hexdigest()
    assert manifest_sha256(digest.files) == sha


@pytest.mark.skipif(shutil.which("sha256sum") is None, reason="GNU coreutils sha256sum not installed")
def test_artifact_sha256_matches_sha256sum(tiny_artifact):
    # The shell line in digest_artifact's docstring must give the same SHA-256.
    directory, _ = tiny_artifact
    (directory / "extra").mkdir()
    (directory / "extra" / "notes with spaces.txt").write_text("x", encoding="utf-8")
    (directory / "extra.txt").write_text("y", encoding="utf-8")
    (directory / CARD_MARKDOWN).write_text("# Model version 1\n", encoding="utf-8")
    command = (
        "find . -type f ! -path ./MODEL_CARD.md ! -path ./model_card.json "
        "| sed 's|^\\./||' | LC_ALL=C sort | xargs -d '\\n' sha256sum | sha256sum"
    )

    result = subprocess.run(["bash", "-c", command], cwd=directory, capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0] == artifact_sha256(directory)


def test_model_cards_left_out_of_sha256(tiny_artifact):
    directory, sha = tiny_artifact
    (directory / CARD_MARKDOWN).write_text("# Model version 1\n", encoding="utf-8")
    (directory / CARD_JSON).write_text("{}", encoding="utf-8")

    assert artifact_sha256(directory) == sha

    # Only the top-level cards are left out.
    (directory / "docs").mkdir()
    (directory / "docs" / CARD_MARKDOWN).write_text("# Another card\n", encoding="utf-8")
    assert artifact_sha256(directory) != sha


def test_artifact_with_sha256_loads(tiny_artifact):
    directory, sha = tiny_artifact
    digest, _ = digest_artifact(directory)

    model = load_artifact(directory, version=5, expected_sha256=sha, expected_files=digest.files)

    assert model.labels == ["billing", "bug", "praise"]
    assert len(model.predict(["the invoice charged me twice"])) == 1


def swap_labels(directory: Path) -> str:
    metadata = json.loads((directory / METADATA_FILE).read_text())
    metadata["labels"] = list(reversed(metadata["labels"]))
    (directory / METADATA_FILE).write_text(json.dumps(metadata))
    return "Changed files: ['driftloop.json']."


def change_tokenizer_config(directory: Path) -> str:
    path = directory / "tokenizer_config.json"
    config = json.loads(path.read_text())
    config["model_max_length"] = 8
    path.write_text(json.dumps(config))
    return "Changed files: ['tokenizer_config.json']."


def add_stray_file(directory: Path) -> str:
    (directory / "notes.txt").write_text("not part of the model", encoding="utf-8")
    return "Files not in the expected list: ['notes.txt']."


def remove_tokenizer_file(directory: Path) -> str:
    (directory / "tokenizer_config.json").unlink()
    return "Missing files: ['tokenizer_config.json']."


def append_to_weights(directory: Path) -> str:
    with (directory / WEIGHTS_FILE).open("ab") as handle:
        handle.write(b"\0")
    return "Changed files: ['model.safetensors']."


CHANGES = [swap_labels, change_tokenizer_config, add_stray_file, remove_tokenizer_file, append_to_weights]


@pytest.mark.parametrize("change", CHANGES, ids=[change.__name__ for change in CHANGES])
def test_changed_artifact_rejected(tiny_artifact, change):
    directory, sha = tiny_artifact
    digest, _ = digest_artifact(directory)
    expected_detail = change(directory)

    with pytest.raises(ArtifactError) as raised:
        load_artifact(directory, version=5, expected_sha256=sha, expected_files=digest.files)

    message = str(raised.value)
    assert message.startswith(f"version 5: artifact SHA-256 (all files) of {directory} is ")
    assert f"but {sha} was expected." in message
    assert message.endswith(expected_detail)


def test_changed_artifact_without_file_list(tiny_artifact):
    directory, sha = tiny_artifact
    swap_labels(directory)

    with pytest.raises(ArtifactError, match=r"^version 5: .* No per-file SHA-256 values were given"):
        load_artifact(directory, version=5, expected_sha256=sha)


def test_weights_only_sha256_explained(tiny_artifact):
    # The SHA-256 of the weights file alone, as the registry recorded it before it hashed every file.
    directory, _ = tiny_artifact
    weights_sha = hashlib.sha256((directory / WEIGHTS_FILE).read_bytes()).hexdigest()

    with pytest.raises(ArtifactError) as raised:
        load_artifact(directory, version=5, expected_sha256=weights_sha)

    message = str(raised.value)
    assert message.startswith("version 5: artifact SHA-256 (all files)")
    assert "is the SHA-256 of model.safetensors alone" in message
    assert "register it again" in message


def test_symlink_out_of_artifact_rejected(tiny_artifact, tmp_path):
    directory, _ = tiny_artifact
    outside = tmp_path / "outside.json"
    outside.write_text("{}", encoding="utf-8")
    (directory / "special_tokens_map.json").symlink_to(outside)

    with pytest.raises(ArtifactError, match=r"^version 5: .*special_tokens_map.json is a symbolic link"):
        load_artifact(directory, version=5)
    with pytest.raises(ArtifactError, match="is a symbolic link"):
        artifact_sha256(directory)


def test_symlinked_directory_rejected(tiny_artifact, tmp_path):
    directory, _ = tiny_artifact
    (tmp_path / "elsewhere").mkdir()
    (directory / "extra").symlink_to(tmp_path / "elsewhere", target_is_directory=True)

    with pytest.raises(ArtifactError, match=re.escape(f"{directory.resolve() / 'extra'} is a symbolic link")):
        artifact_sha256(directory)


@pytest.mark.parametrize(
    ("make_entry", "expected"),
    [
        (lambda directory: os.mkfifo(directory / "pipe"), "pipe is not a regular file"),
        (lambda directory: (directory / "two\nlines.txt").write_text("x"), "must not contain a line feed"),
        (lambda directory: (directory / "back\\slash.txt").write_text("x"), "must not contain a line feed, carriage return or backslash"),
    ],
    ids=["fifo", "line_feed_in_name", "backslash_in_name"],
)
def test_invalid_artifact_entry_rejected(tiny_artifact, make_entry, expected):
    directory, _ = tiny_artifact
    make_entry(directory)

    with pytest.raises(ArtifactError, match=re.escape(expected)):
        artifact_sha256(directory)


def test_symlinked_artifact_directory_loads(tiny_artifact, tmp_path):
    # The directory path itself may be a link: the store's path may pass through one.
    directory, sha = tiny_artifact
    link = tmp_path / "link-to-m"
    link.symlink_to(directory, target_is_directory=True)

    assert artifact_sha256(link) == sha
    assert load_artifact(link, version=5, expected_sha256=sha).labels == ["billing", "bug", "praise"]


def test_tokenizer_shared_across_threads(tmp_path):
    write_tiny_artifact(tmp_path / "m", ["a", "b"])
    model = load_artifact(tmp_path / "m", version=1)
    errors = []

    def work():
        try:
            for _ in range(20):
                model.predict_bucketed(["some text", "another longer piece of text"] * 8, 4)
        except Exception as exc:  # noqa: BLE001 - any error fails the test below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
