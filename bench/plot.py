"""The result plot: one bar chart per metric, contenders side by side."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.metrics import CONTENDERS, OPTIONAL_CONTENDERS


def write_png(doc: Mapping[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in CONTENDERS + OPTIONAL_CONTENDERS if n in doc]
    colors = {"job": "#4c72b0", "java_ceiling": "#dd8452", "python_loop": "#55a868"}
    fig, axes = plt.subplots(1, 4, figsize=(16, 4.2))
    panels: list[tuple[str, list[list[float]], list[str]]] = [
        ("events/s (higher is better)", [[doc[n].get("events_per_s") or 0 for n in names]], []),
        (
            "end-to-end latency, ms",
            [
                [(doc[n].get("latency_ms") or {}).get("p50") or 0 for n in names],
                [(doc[n].get("latency_ms") or {}).get("p99") or 0 for n in names],
            ],
            ["p50", "p99"],
        ),
        ("CPU s per million events", [[doc[n].get("cpu_s_per_million") or 0 for n in names]], []),
        ("peak RSS, MB", [[doc[n].get("peak_rss_mb") or 0 for n in names]], []),
    ]
    for ax, (title, series, labels) in zip(axes, panels, strict=True):
        width = 0.8 / len(series)
        for i, values in enumerate(series):
            xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(names))]
            bars = ax.bar(
                xs,
                values,
                width,
                color=[colors.get(n, "#8172b3") for n in names],
                alpha=1.0 if i == 0 else 0.55,
                label=labels[i] if labels else None,
            )
            ax.bar_label(bars, fmt="%.0f", fontsize=8)
        flat = [v for values in series for v in values if v > 0]
        if flat and max(flat) / min(flat) > 50:
            ax.set_yscale("log")  # a contender that fell behind must not flatten the others
            title += " (log scale)"
        ax.set_xticks(range(len(names)), names, rotation=15)
        ax.set_title(title, fontsize=10)
        if labels:
            ax.legend(fontsize=8)
    m, p = doc.get("machine", {}), doc.get("params", {})
    fig.suptitle(
        f"{doc.get('events', 0):,} events, checkpoint {p.get('checkpoint_seconds')} s, "
        f"parallelism {p.get('parallelism')}, paced {p.get('rate')} ev/s | "
        f"{m.get('cores')} cores {m.get('cpu_model')} | {doc.get('date')}",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
