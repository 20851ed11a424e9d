"""Tiny randomly initialised classifiers, for tests that need a model but not its accuracy."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import AutoTokenizer, BertConfig, BertModel

from driftloop.model import ModelMetadata, TextClassifier, default_base_model, save_artifact


def tiny_classifier(labels: Sequence[str], seed: int = 0, max_length: int = 64) -> tuple[TextClassifier, object, ModelMetadata]:
    """Build a 2-layer BERT with hidden size 32 on MiniLM's vocabulary."""
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(default_base_model())
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
    )
    encoder = BertModel(config, add_pooling_layer=False)
    metadata = ModelMetadata(labels=tuple(labels), encoder_config=config.to_dict(), max_length=max_length, base_model="tiny-random-bert")
    return TextClassifier(encoder, len(labels)), tokenizer, metadata


def write_tiny_artifact(directory: Path, labels: Sequence[str], seed: int = 0) -> str:
    """Write a tiny model artifact to ``directory`` and return its artifact SHA-256 (all files)."""
    classifier, tokenizer, metadata = tiny_classifier(labels, seed)
    return save_artifact(classifier, tokenizer, metadata, directory)
