"""The replay report as plain text for the terminal."""

from __future__ import annotations

from typing import Any


def render_text(report: dict[str, Any]) -> str:
    """Return the report as text: the run, one block per lane, then the comparisons."""
    lines = _run_lines(report)
    for name, lane in report["lanes"].items():
        lines.append("")
        lines.extend(_lane_lines(name, lane))
    for comparison in report["comparisons"]:
        lines.append("")
        lines.extend(_comparison_lines(comparison))
    return "\n".join(lines) + "\n"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _number(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _run_lines(report: dict[str, Any]) -> list[str]:
    recording, replay = report["recording"], report["replay"]
    speed = "as fast as possible" if replay["speed"] == "max" else f"{replay['speed']}x recorded speed"
    status = (
        "complete" if replay["complete"] else "INCOMPLETE: some requests have no prediction or feedback was not joined"
    )
    return [
        f"Replay of {recording['path']}",
        f"  recorded: {recording['requests']} requests ({recording['labelled_requests']} with feedback), "
        f"counts {recording['counts']}, from prefix {recording['source_prefix'] or '-'}",
        f"  replayed: {speed}, seed {replay['seed']}, prefix {replay['topic_prefix']}, {status}",
        f"  published {replay['events_published']} events ({replay['records_published']} records) in "
        f"{replay['publish_seconds']:.2f} s: {replay['events_per_s']:.0f} events/s",
        f"  every request predicted after {_number(replay['predictions_seconds'], 1)} s, "
        f"every feedback joined after {replay['seconds']:.1f} s (from the first publish)",
    ]


def _lane_lines(name: str, lane: dict[str, Any]) -> list[str]:
    versions = ", ".join(str(v) for v in lane["model_versions"]) or "-"
    latency = lane["latency_ms"]
    lines = [
        f"Lane {name} ({lane['origin']}: {lane['path']}), model versions {versions}",
        f"  predicted {lane['predicted']} of {lane['requests']} requests, missing {lane['missing']}, "
        f"duplicates {lane['duplicate_predictions']}, dead letters {lane['dead_letters']}",
        f"  accuracy {_percent(lane['accuracy'])} on {lane['labelled']} labelled requests; "
        f"confidence mean {_number(lane['confidence']['mean'])} "
        f"(right {_number(lane['confidence']['mean_correct'])}, wrong {_number(lane['confidence']['mean_wrong'])})",
    ]
    if latency["p50"] is not None:
        lines.append(
            f"  latency from publish to prediction: p50 {latency['p50']:.0f} ms, p95 {latency['p95']:.0f} ms, "
            f"p99 {latency['p99']:.0f} ms, max {latency['max']:.0f} ms"
        )
    online = lane["online"]
    if online:
        lines.append(f"  feedback join: {online['joined']} joined, online accuracy {_percent(online['accuracy'])}")
    if lane["missing_examples"]:
        lines.append(f"  missing predictions, first ids: {', '.join(lane['missing_examples'])}")
    if lane["per_class"]:
        lines.append("  per class:    support  predicted  precision  recall")
        for label, figures in lane["per_class"].items():
            lines.append(
                f"    {label:<28} {figures['support']:>5} {figures['predicted']:>10} "
                f"{_percent(figures['precision']):>10} {_percent(figures['recall']):>7}"
            )
    if lane["per_group"]:
        groups = ", ".join(f"{group} {_percent(g['accuracy'])} of {g['n']}" for group, g in lane["per_group"].items())
        lines.append(f"  per {lane['group_attribute']}: {groups}")
    for swap in lane["swaps"]:
        lines.append(
            f"  version swap {swap['from']} -> {swap['to']} at request {swap['position']} ({swap['request_id']})"
        )
    if not lane["drift_checked"]:
        lines.append("  drift: not checked")
    elif not lane["drift_alarms"]:
        lines.append("  drift: no alarm")
    for alarm in lane["drift_alarms"]:
        lines.append(
            f"  drift alarm: {alarm['detector']} on {alarm['signal']} at request {alarm['position']} "
            f"({alarm['statistic_name']}={alarm['statistic']:.4f})"
        )
    return lines


def _comparison_lines(comparison: dict[str, Any]) -> list[str]:
    a, b = comparison["a"], comparison["b"]
    lines = [
        f"{a} vs {b}: {comparison['label_flips']} label flips in {comparison['compared']} requests "
        f"({_percent(comparison['flip_rate'])})",
        f"  of {comparison['labelled']} labelled: {a} right and {b} wrong {comparison['a_right_b_wrong']['count']}, "
        f"{b} right and {a} wrong {comparison['b_right_a_wrong']['count']}, "
        f"both right {comparison['both_right']}, both wrong {comparison['both_wrong']}",
    ]
    for pair in comparison["flip_pairs"]:
        lines.append(f"  {pair['from']} -> {pair['to']}: {pair['count']}")
    for example in comparison["flip_examples"]:
        lines.append(
            f"  flip {example['request_id']}: {a} {example[a]}, {b} {example[b]}, label {example['label'] or '-'}"
        )
    return lines
