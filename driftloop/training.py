"""Fitting a classifier on labelled texts: the head only, or the head and top encoder layers."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from driftloop.model import CHARS_PER_TOKEN_BOUND, TextClassifier

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FitOptions:
    """How to fit: ``train_layers`` = 0 trains the head on frozen embeddings."""

    train_layers: int = 0
    epochs: int = 3
    head_steps: int = 300
    learning_rate: float = 2e-3
    encoder_learning_rate: float = 3e-5
    batch_size: int = 32
    max_length: int = 128
    seed: int = 0


def fit(
    classifier: TextClassifier,
    tokenizer,
    texts: Sequence[str],
    label_ids: Sequence[int],
    options: FitOptions,
    device: torch.device,
) -> dict[str, float]:
    """Fit ``classifier`` in place on ``texts`` and return the final training loss and accuracy."""
    if len(texts) != len(label_ids):
        raise ValueError(f"{len(texts)} texts but {len(label_ids)} labels")
    if not texts:
        raise ValueError("no training examples")
    torch.manual_seed(options.seed)
    classifier.to(device)
    targets = torch.tensor(list(label_ids), dtype=torch.long)
    if options.train_layers <= 0:
        return _fit_head(classifier, tokenizer, texts, targets, options, device)
    return _fit_top_layers(classifier, tokenizer, texts, targets, options, device)


def embed_texts(classifier: TextClassifier, tokenizer, texts: Sequence[str], options: FitOptions, device) -> torch.Tensor:
    classifier.eval()
    chunks = []
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    for start in range(0, len(order), 64):
        indices = order[start : start + 64]
        batch = _tokenize(tokenizer, [texts[i] for i in indices], options.max_length)
        with torch.inference_mode():
            chunks.append(classifier.embed(batch["input_ids"].to(device), batch["attention_mask"].to(device)).cpu())
    embeddings = torch.cat(chunks)
    restored = torch.empty_like(embeddings)
    restored[torch.tensor(order)] = embeddings
    return restored


def _fit_head(classifier, tokenizer, texts, targets, options: FitOptions, device) -> dict[str, float]:
    embeddings = embed_texts(classifier, tokenizer, texts, options, device)
    return fit_head(classifier.head, embeddings, targets, options)


def fit_head(head: nn.Module, embeddings: torch.Tensor, targets: torch.Tensor, options: FitOptions) -> dict[str, float]:
    """Fit ``head`` on fixed embeddings, full batch, for ``options.head_steps`` steps.

    The tensors move to the head's device. Returns the final ``loss`` and the
    ``train_accuracy`` on the same embeddings.
    """
    if len(embeddings) != len(targets):
        raise ValueError(f"{len(embeddings)} embeddings but {len(targets)} labels")
    if not len(targets):
        raise ValueError("no training examples")
    torch.manual_seed(options.seed)
    device = next(head.parameters()).device
    embeddings, targets = embeddings.to(device), targets.to(device)
    optimizer = torch.optim.AdamW(head.parameters(), lr=options.learning_rate, weight_decay=1e-4)
    loss_function = nn.CrossEntropyLoss()
    head.train()
    loss = torch.tensor(0.0)
    for _ in range(options.head_steps):
        optimizer.zero_grad()
        loss = loss_function(head(embeddings), targets)
        loss.backward()
        optimizer.step()
    head.eval()
    with torch.no_grad():
        accuracy = (head(embeddings).argmax(dim=-1) == targets).float().mean().item()
    return {"loss": float(loss.item()), "train_accuracy": accuracy}


def _fit_top_layers(classifier, tokenizer, texts, targets, options: FitOptions, device) -> dict[str, float]:
    trainable = _unfreeze_top_layers(classifier, options.train_layers)
    optimizer = torch.optim.AdamW(
        [
            {"params": trainable, "lr": options.encoder_learning_rate},
            {"params": list(classifier.head.parameters()), "lr": options.learning_rate},
        ],
        weight_decay=1e-4,
    )
    loss_function = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(options.seed)
    classifier.train()
    loss = torch.tensor(0.0)
    correct = 0
    for _ in range(options.epochs):
        correct = 0
        permutation = torch.randperm(len(texts), generator=generator).tolist()
        for start in range(0, len(permutation), options.batch_size):
            indices = permutation[start : start + options.batch_size]
            batch = _tokenize(tokenizer, [texts[i] for i in indices], options.max_length)
            batch_targets = targets[indices].to(device)
            optimizer.zero_grad()
            logits = classifier(batch["input_ids"].to(device), batch["attention_mask"].to(device))
            loss = loss_function(logits, batch_targets)
            loss.backward()
            optimizer.step()
            correct += int((logits.argmax(dim=-1) == batch_targets).sum().item())
    classifier.eval()
    for parameter in classifier.parameters():
        parameter.requires_grad_(True)
    return {"loss": float(loss.item()), "train_accuracy": correct / len(texts)}


def _unfreeze_top_layers(classifier: TextClassifier, count: int) -> list[nn.Parameter]:
    for parameter in classifier.encoder.parameters():
        parameter.requires_grad_(False)
    layers = _encoder_layers(classifier.encoder)
    trainable: list[nn.Parameter] = []
    for layer in layers[-count:]:
        for parameter in layer.parameters():
            parameter.requires_grad_(True)
            trainable.append(parameter)
    return trainable


def _encoder_layers(encoder: nn.Module) -> list[nn.Module]:
    layer_list = getattr(getattr(encoder, "encoder", None), "layer", None)
    if layer_list is None:
        raise ValueError(f"cannot find transformer layers in {type(encoder).__name__}; use train_layers=0")
    return list(layer_list)


def _tokenize(tokenizer, texts: Sequence[str], max_length: int):
    clipped = [text[: max_length * CHARS_PER_TOKEN_BOUND] for text in texts]
    return tokenizer(clipped, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
