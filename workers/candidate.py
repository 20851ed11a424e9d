"""The candidate of a training job: fine-tuned from the champion, scored for the gate, described for the registry."""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import torch
from transformers import PreTrainedTokenizerBase

from driftloop.config import Settings
from driftloop.drift.events import TrainingJob
from driftloop.drift.gate import GateDecision, GateSlice
from driftloop.drift.reservoir import TrainingSet
from driftloop.model import ServingModel, TextClassifier
from driftloop.schemas.events import Example
from driftloop.training import FitOptions, embed_texts, fit, fit_head
from driftloop.workers.example_reader import CollectedExamples

MISSING_GROUP = "(none)"
"""Group of a held-out example whose request has no group attribute."""


class FineTuner(Protocol):
    """Interface that fits a classifier in place. :func:`driftloop.training.fit` is the real one."""

    def fine_tune(
        self,
        classifier: TextClassifier,
        tokenizer: PreTrainedTokenizerBase,
        texts: Sequence[str],
        label_ids: Sequence[int],
        options: FitOptions,
        device: torch.device,
    ) -> dict[str, float]:
        """Fit ``classifier`` on the texts and return training figures such as ``loss``."""
        ...


class TorchFineTuner:
    """The :class:`FineTuner` of the trainer: :func:`driftloop.training.fit`, or a head fit on cached embeddings.

    With ``embeddings`` and ``options.train_layers == 0`` the encoder stays frozen, so
    the head is fitted on the cached embeddings of the champion's encoder instead of
    embedding every text again.
    """

    def __init__(self, embeddings: TextEmbeddings | None = None) -> None:
        self.embeddings = embeddings

    def fine_tune(
        self,
        classifier: TextClassifier,
        tokenizer: PreTrainedTokenizerBase,
        texts: Sequence[str],
        label_ids: Sequence[int],
        options: FitOptions,
        device: torch.device,
    ) -> dict[str, float]:
        if options.train_layers > 0 or self.embeddings is None:
            return fit(classifier, tokenizer, texts, label_ids, options, device)
        targets = torch.tensor(list(label_ids), dtype=torch.long)
        return fit_head(classifier.head, self.embeddings.get(texts), targets, options)


class TextEmbeddings:
    """Embeddings of texts under one model's frozen encoder, each text computed once.

    The trainer fills it while it waits for examples, so that in head mode the fit
    and the gate need no encoder pass of their own.
    """

    def __init__(self, model: ServingModel) -> None:
        self.model = model
        self.options = FitOptions(max_length=model.metadata.max_length)
        self.seconds = 0.0
        self._rows: dict[str, torch.Tensor] = {}

    def add(self, texts: Sequence[str]) -> int:
        """Compute the embeddings of the texts not cached yet, and return how many were computed."""
        missing = list(dict.fromkeys(text for text in texts if text not in self._rows))
        if not missing:
            return 0
        started = time.monotonic()
        computed = embed_texts(self.model.classifier, self.model.tokenizer, missing, self.options, self.model.device)
        self.seconds += time.monotonic() - started
        self._rows.update(zip(missing, computed, strict=True))
        return len(missing)

    def get(self, texts: Sequence[str]) -> torch.Tensor:
        """Return the embeddings of ``texts`` in order, computing the missing ones."""
        self.add(texts)
        return torch.stack([self._rows[text] for text in texts])

    def __len__(self) -> int:
        return len(self._rows)


@dataclass
class Candidate:
    """A fine-tuned candidate, ready to score and save."""

    model: ServingModel
    new_labels: tuple[str, ...]
    fit_figures: dict[str, float]
    options: FitOptions
    training_s: float


def fit_options(settings: Settings, champion: ServingModel, seed: int) -> FitOptions:
    """Return the fit options of ``settings.drift.training`` for a candidate of ``champion``."""
    training = settings.drift.training
    encoder_layers = int(getattr(champion.classifier.encoder.config, "num_hidden_layers", 0))
    return FitOptions(
        train_layers=training.train_layers(encoder_layers),
        epochs=training.epochs,
        learning_rate=training.learning_rate,
        encoder_learning_rate=training.encoder_learning_rate,
        max_length=champion.metadata.max_length,
        seed=seed,
    )


def build_candidate(
    champion: ServingModel,
    train: Sequence[Example],
    options: FitOptions,
    fine_tuner: FineTuner,
    extra: dict[str, Any],
) -> Candidate:
    """Fine-tune a copy of ``champion`` on ``train``, with new head rows for labels the champion has never seen.

    New labels are appended after the champion's, sorted, so the champion's label ids
    keep their meaning.
    """
    if not train:
        raise ValueError("no training examples: the examples topic contains no labelled example of this version")
    known = set(champion.labels)
    new_labels = tuple(sorted({example.label for example in train} - known))
    labels = (*champion.labels, *new_labels)
    classifier = copy.deepcopy(champion.classifier)
    classifier.grow_head(len(labels))
    index = {label: position for position, label in enumerate(labels)}

    started = time.monotonic()
    figures = fine_tuner.fine_tune(
        classifier,
        champion.tokenizer,
        [example.text for example in train],
        [index[example.label] for example in train],
        options,
        champion.device,
    )
    training_s = time.monotonic() - started
    metadata = replace(champion.metadata, labels=labels, extra={**champion.metadata.extra, **extra})
    model = ServingModel(classifier, champion.tokenizer, metadata, device=champion.device, precision=champion.precision)
    return Candidate(model, new_labels, dict(figures), options, training_s)


@dataclass(frozen=True)
class Scorer:
    """Label predictor of the gate, which reads cached embeddings when both models share the frozen encoder."""

    embeddings: TextEmbeddings | None
    batch_size: int
    max_batch_tokens: int | None = None

    def labels(self, model: ServingModel, texts: Sequence[str]) -> list[str]:
        if not texts:
            return []
        if self.embeddings is None:
            return [result.label for result in model.predict_bucketed(texts, self.batch_size, self.max_batch_tokens)]
        with torch.no_grad():
            logits = model.classifier.head(self.embeddings.get(texts).to(model.device))
        return [model.labels[index] for index in logits.argmax(dim=-1).tolist()]


def gate_slice(
    candidate: ServingModel,
    champion: ServingModel,
    examples: Sequence[Example],
    group_attribute: str,
    scorer: Scorer,
) -> GateSlice:
    """Score candidate and champion on ``examples`` and return their per-example correctness and groups."""
    texts = [example.text for example in examples]
    candidate_labels = scorer.labels(candidate, texts)
    champion_labels = scorer.labels(champion, texts)
    groups = None
    if any(group_attribute in example.attributes for example in examples):
        groups = tuple(str(example.attributes.get(group_attribute, MISSING_GROUP)) for example in examples)
    return GateSlice(
        candidate_correct=tuple(label == example.label for label, example in zip(candidate_labels, examples, strict=True)),
        champion_correct=tuple(label == example.label for label, example in zip(champion_labels, examples, strict=True)),
        groups=groups,
    )


# Registry records.


def data_window(job: TrainingJob, topic: str, collected: CollectedExamples, training_set: TrainingSet[Example]) -> dict[str, Any]:
    """Describe the examples behind a candidate: topic offsets, counts and the drift episode."""
    replay = collected.replay
    event_times = [example.event_time_ms for example in collected.recent]
    return {
        "job_id": job.job_id,
        "reason": job.reason,
        "topic": topic,
        "model_version": job.model_version,
        "read_offsets": {str(p): {"start": first, "end": end} for p, (first, end) in sorted(collected.read_offsets.items())},
        "recent_offsets": {str(p): {"first": first, "last": last} for p, (first, last) in sorted(collected.recent_offsets.items())},
        "recent_examples": len(collected.recent),
        "recent_event_time_ms": {"first": min(event_times), "last": max(event_times)} if event_times else None,
        "replay_examples": len(replay) if replay is not None else 0,
        "replay_offered": replay.n_seen if replay is not None else 0,
        "skipped_records": collected.skipped,
        "train_examples": len(training_set.train),
        "recent_holdout": len(training_set.recent_holdout),
        "replay_holdout": len(training_set.replay_holdout),
        "episode": job.episode.model_dump(mode="json"),
    }


def gate_metrics(decision: GateDecision, candidate: Candidate) -> dict[str, Any]:
    return {
        "recent_accuracy": decision.recent.candidate_accuracy,
        "champion_recent_accuracy": decision.recent.champion_accuracy,
        "replay_accuracy": decision.replay.candidate_accuracy,
        "champion_replay_accuracy": decision.replay.champion_accuracy,
        "new_labels": list(candidate.new_labels),
        "train_layers": candidate.options.train_layers,
        "training_s": round(candidate.training_s, 3),
        "torch_threads": torch.get_num_threads(),
        **{f"fit_{name}": value for name, value in candidate.fit_figures.items()},
    }


def group_metrics(decision: GateDecision) -> dict[str, Any]:
    return {
        group.group: {
            "n": group.n,
            "candidate_accuracy": group.candidate_accuracy,
            "champion_accuracy": group.champion_accuracy,
            "checked": group.counted,
        }
        for group in decision.groups
    }
