"""The classifier on the real all-MiniLM-L6-v2 weights, and artifact loading rules."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest
import torch

from driftloop.datasets import read_labelled, shuffled
from driftloop.errors import ArtifactError, ModelError
from driftloop.model import ServingModel, default_base_model, load_artifact, load_encoder, new_classifier, save_artifact
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
