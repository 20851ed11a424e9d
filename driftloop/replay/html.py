"""The replay report as one self-contained HTML page with inline SVG plots.

The page loads nothing from elsewhere: styles and plots are inline. Every string from
the report is escaped. Request texts are not part of the report, so none appears.
"""

from __future__ import annotations

import html
import json
from typing import Any

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
PLOT_WIDTH = 860
PLOT_HEIGHT = 280
MARGIN_LEFT = 48
MARGIN_RIGHT = 16
MARGIN_TOP = 16
MARGIN_BOTTOM = 36

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 960px; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 2em; } h3 { font-size: 1em; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
th, td { border-bottom: 1px solid #ddd; padding: 2px 10px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
code { background: #f4f4f4; padding: 0 3px; }
.bad { color: #b00; font-weight: bold; } .ok { color: #070; }
svg text { font: 11px system-ui, sans-serif; fill: #333; }
details { margin: 0.5em 0; }
"""


def render_html(report: dict[str, Any]) -> str:
    """Return the report as a complete HTML document."""
    recording, replay = report["recording"], report["replay"]
    lanes = list(report["lanes"])
    colors = {name: COLORS[index % len(COLORS)] for index, name in enumerate(lanes)}
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>driftloop replay: {_e(recording['path'])}</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>Replay of <code>{_e(recording['path'])}</code></h1>",
        _run_table(recording, replay),
        "<h2>Accuracy over the stream</h2>",
        f"<p>Accuracy of the last {replay['accuracy_window']} labelled requests at each point of the stream. "
        "Dashed lines mark drift alarms, solid grey lines model version swaps.</p>",
        _accuracy_plot(report, colors),
        "<h2>Model versions</h2>",
        _lanes_table(report["lanes"]),
        "<h2>Recall per class</h2>",
        _class_plot(report["lanes"], colors),
    ]
    for name, lane in report["lanes"].items():
        parts.append(_lane_details(name, lane))
    if report["comparisons"]:
        parts.append("<h2>Comparisons</h2>")
        for comparison in report["comparisons"]:
            parts.append(_comparison(comparison))
    parts.append("<h2>Report as JSON</h2><details><summary>show</summary><pre>")
    parts.append(_e(json.dumps(report, indent=2, sort_keys=True)))
    parts.append("</pre></details></body></html>")
    return "\n".join(parts) + "\n"


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{_e(cell)}</th>" for cell in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(cell)}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _run_table(recording: dict[str, Any], replay: dict[str, Any]) -> str:
    status = '<span class="ok">complete</span>' if replay["complete"] else '<span class="bad">incomplete</span>'
    rows = [
        ["requests recorded", recording["requests"]],
        ["requests with feedback", recording["labelled_requests"]],
        ["records by topic", ", ".join(f"{k} {v}" for k, v in recording["counts"].items())],
        ["source prefix", recording["source_prefix"] or "-"],
        ["model versions in the recording", ", ".join(map(str, recording["model_versions"])) or "-"],
        ["speed", "as fast as possible" if replay["speed"] == "max" else f"{replay['speed']}x recorded"],
        ["seed", replay["seed"]],
        ["replay prefix", replay["topic_prefix"]],
        [
            "events published",
            f"{replay['events_published']} in {replay['publish_seconds']:.2f} s ({replay['events_per_s']:.0f}/s)",
        ],
        [
            "every request predicted after",
            "-" if replay["predictions_seconds"] is None else f"{replay['predictions_seconds']:.1f} s",
        ],
        ["every feedback joined after", f"{replay['seconds']:.1f} s"],
    ]
    return _table(["run", ""], rows) + f"<p>Status: {status}</p>"


def _lanes_table(lanes: dict[str, Any]) -> str:
    rows = []
    for name, lane in lanes.items():
        latency = lane["latency_ms"]
        rows.append(
            [
                name,
                lane["origin"],
                f"{lane['predicted']}/{lane['requests']}",
                lane["labelled"],
                _percent(lane["accuracy"]),
                "-" if lane["confidence"]["mean"] is None else f"{lane['confidence']['mean']:.3f}",
                "-"
                if latency["p50"] is None
                else f"{latency['p50']:.0f} / {latency['p95']:.0f} / {latency['p99']:.0f}",
                len(lane["drift_alarms"]) if lane["drift_checked"] else "not checked",
            ]
        )
    return _table(
        [
            "lane",
            "origin",
            "predicted",
            "labelled",
            "accuracy",
            "mean confidence",
            "latency p50/p95/p99 ms",
            "drift alarms",
        ],
        rows,
    )


def _svg_open(width: int, height: int, label: str) -> str:
    return f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="{_e(label)}">'


def _accuracy_plot(report: dict[str, Any], colors: dict[str, str]) -> str:
    total = max(1, report["recording"]["requests"] - 1)
    inner_w = PLOT_WIDTH - MARGIN_LEFT - MARGIN_RIGHT
    inner_h = PLOT_HEIGHT - MARGIN_TOP - MARGIN_BOTTOM

    def x(position: float) -> float:
        return MARGIN_LEFT + inner_w * position / total

    def y(value: float) -> float:
        return MARGIN_TOP + inner_h * (1.0 - value)

    parts = [_svg_open(PLOT_WIDTH, PLOT_HEIGHT, "accuracy over the stream")]
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        parts.append(
            f'<line x1="{MARGIN_LEFT}" x2="{PLOT_WIDTH - MARGIN_RIGHT}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" stroke="#eee"/>'
        )
        parts.append(f'<text x="{MARGIN_LEFT - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">{int(tick * 100)}%</text>')
    parts.append(
        f'<text x="{MARGIN_LEFT + inner_w / 2:.0f}" y="{PLOT_HEIGHT - 6}" text-anchor="middle">'
        f"request position in the stream (0 to {total})</text>"
    )
    for name, lane in report["lanes"].items():
        color = colors[name]
        for swap in lane["swaps"]:
            px = x(swap["position"])
            parts.append(
                f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{MARGIN_TOP}" y2="{MARGIN_TOP + inner_h}" stroke="#888">'
                f"<title>{_e(name)}: version {swap['from']} to {swap['to']} at request {swap['position']}</title></line>"
            )
        for alarm in lane["drift_alarms"]:
            px = x(alarm["position"])
            parts.append(
                f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{MARGIN_TOP}" y2="{MARGIN_TOP + inner_h}" stroke="{color}" '
                f'stroke-dasharray="4 3" opacity="0.6"><title>{_e(name)}: {_e(alarm["detector"])} on {_e(alarm["signal"])} '
                f"at request {alarm['position']}</title></line>"
            )
        points = " ".join(f"{x(p):.1f},{y(v):.1f}" for p, v in lane["accuracy_over_stream"])
        if points:
            parts.append(
                f'<polyline fill="none" stroke="{color}" stroke-width="1.6" points="{points}">'
                f"<title>{_e(name)}</title></polyline>"
            )
    for index, name in enumerate(report["lanes"]):
        lx = MARGIN_LEFT + 10 + 110 * index
        parts.append(f'<rect x="{lx}" y="{MARGIN_TOP + 4}" width="12" height="4" fill="{colors[name]}"/>')
        parts.append(f'<text x="{lx + 16}" y="{MARGIN_TOP + 10}">{_e(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _class_plot(lanes: dict[str, Any], colors: dict[str, str]) -> str:
    labels = sorted({label for lane in lanes.values() for label, c in lane["per_class"].items() if c["support"]})
    if not labels:
        return "<p>No labelled requests.</p>"
    bar, gap, label_w = 7, 6, 220
    group_h = bar * len(lanes) + gap
    height = MARGIN_TOP + group_h * len(labels) + 10
    inner_w = PLOT_WIDTH - label_w - MARGIN_RIGHT - 40
    parts = [_svg_open(PLOT_WIDTH, height, "recall per class")]
    for row, label in enumerate(labels):
        top = MARGIN_TOP + row * group_h
        parts.append(
            f'<text x="{label_w - 6}" y="{top + bar * len(lanes) / 2 + 4:.1f}" text-anchor="end">{_e(label)}</text>'
        )
        for index, (name, lane) in enumerate(lanes.items()):
            figures = lane["per_class"].get(label)
            recall = figures["recall"] if figures and figures["recall"] is not None else 0.0
            width = inner_w * recall
            parts.append(
                f'<rect x="{label_w}" y="{top + index * bar}" width="{width:.1f}" height="{bar - 1}" fill="{colors[name]}">'
                f"<title>{_e(name)} {_e(label)}: recall {_percent(recall)}</title></rect>"
            )
    parts.append("</svg>")
    return "".join(parts)


def _lane_details(name: str, lane: dict[str, Any]) -> str:
    parts = [
        f"<h3>Lane {_e(name)}</h3>",
        f"<p>{_e(lane['origin'])}: <code>{_e(lane['path'])}</code>, "
        f"topics under <code>{_e(lane['topic_prefix'])}</code></p>",
    ]
    if lane["missing"]:
        first = _e(", ".join(lane["missing_examples"]))
        parts.append(f'<p class="bad">{lane["missing"]} requests without a prediction, first: {first}</p>')
    class_rows = [
        [label, c["support"], c["predicted"], _percent(c["precision"]), _percent(c["recall"]), _percent(c["f1"])]
        for label, c in lane["per_class"].items()
    ]
    parts.append("<details><summary>per class</summary>")
    parts.append(_table(["class", "support", "predicted", "precision", "recall", "F1"], class_rows))
    parts.append("</details>")
    if lane["per_group"]:
        group_rows = [[group, g["n"], _percent(g["accuracy"])] for group, g in lane["per_group"].items()]
        parts.append(_table([lane["group_attribute"], "labelled", "accuracy"], group_rows))
    if lane["drift_alarms"]:
        alarm_rows = [
            [a["detector"], a["signal"], a["position"], a["request_id"], f"{a['statistic']:.4f}"]
            for a in lane["drift_alarms"]
        ]
        parts.append(_table(["drift detector", "signal", "request position", "request id", "statistic"], alarm_rows))
    return "".join(parts)


def _comparison(comparison: dict[str, Any]) -> str:
    a, b = comparison["a"], comparison["b"]
    parts = [
        f"<h3>{_e(a)} vs {_e(b)}</h3>",
        f"<p>{comparison['label_flips']} label flips in {comparison['compared']} requests ({_percent(comparison['flip_rate'])}). "
        f"Of {comparison['labelled']} labelled: {_e(a)} right and {_e(b)} wrong {comparison['a_right_b_wrong']['count']}, "
        f"{_e(b)} right and {_e(a)} wrong {comparison['b_right_a_wrong']['count']}, both right {comparison['both_right']}, "
        f"both wrong {comparison['both_wrong']}.</p>",
    ]
    if comparison["flip_examples"]:
        rows = [[ex["request_id"], ex[a], ex[b], ex["label"] or "-"] for ex in comparison["flip_examples"]]
        parts.append(_table(["request id", a, b, "label"], rows))
    for key, title in (("a_right_b_wrong", f"{a} right, {b} wrong"), ("b_right_a_wrong", f"{b} right, {a} wrong")):
        if comparison[key]["examples"]:
            parts.append(f"<p>{_e(title)}, first ids: {_e(', '.join(comparison[key]['examples']))}</p>")
    return "".join(parts)
