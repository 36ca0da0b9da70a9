"""Pictures of a pruning run: how often rows were trained, what they scored, how much each epoch kept.

Figures are built with `matplotlib.figure.Figure` and rendered by Agg: no pyplot state, no display needed.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

try:
    from matplotlib.figure import Figure
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError("emp_hf.records.plots needs matplotlib: pip install 'emp_hf[plots]'") from error

from ..core.tracker import PruningState
from ..integration.checkpoint import atomic_write
from .record import PruningRecord

FULL_COLOR = "#4c72b0"
PRUNED_COLOR = "#dd8452"


def _as_record(obj: PruningRecord | PruningState) -> PruningRecord:
    return PruningRecord.from_state(obj) if isinstance(obj, PruningState) else obj


def plot_frequency_histogram(record: PruningRecord | PruningState) -> Figure:
    """How many rows were trained k times, k = 0..epochs (the picture of low-frequency learning).

    The dashed mean line is broken where it would cross a bar's count; the legend sits below the axes, off the
    bars."""
    record = _as_record(record)
    frequency = record.column("frequency")
    counts = np.bincount(frequency, minlength=record.num_epochs + 1)
    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = fig.add_subplot()
    ks = np.arange(len(counts))
    bars = ax.bar(ks, counts, color=FULL_COLOR)
    labels = ax.bar_label(bars, fontsize=8)
    ax.margins(y=0.1)
    ax.set_xticks(ks)
    ax.set_xlabel("times trained (epochs)")
    ax.set_ylabel("rows")
    ax.set_title(f"{_method(record)}: how often each of the {record.num_rows} rows was trained")
    mean = float(frequency.mean())
    (line,) = ax.plot([], [], color="black", linestyle="--", linewidth=1, label=f"mean {mean:.2f}")
    fig.legend(loc="outside lower center")
    fig.draw_without_rendering()  # lay out, so the labels have their final extents
    line.set_data(*_vertical_avoiding(ax, mean, labels))
    return fig


def _vertical_avoiding(ax: Any, x: float, texts: Any, pad_px: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """The points of a vertical line at data `x` across the axes, with a gap (NaN) wherever it would cross one of
    `texts` (e.g. bar labels)."""
    to_data = ax.transData.inverted()
    x_px = ax.transData.transform((x, 0))[0]
    bottom, top = ax.get_ylim()
    gaps = []
    for text in texts:
        box = text.get_window_extent()
        if box.x0 - pad_px <= x_px <= box.x1 + pad_px:
            low = to_data.transform((x_px, box.y0 - pad_px))[1]
            high = to_data.transform((x_px, box.y1 + pad_px))[1]
            gaps.append((low, high))
    ys, start = [], bottom
    for low, high in sorted(gaps):
        if low > start:
            ys += [start, low, np.nan]
        start = max(start, high)
    if start < top:
        ys += [start, top]
    ys_array = np.asarray(ys, dtype=np.float64)
    return np.where(np.isnan(ys_array), np.nan, x), ys_array


def plot_score_distribution(record: PruningRecord | PruningState, bins: int = 40) -> Figure:
    """Histogram of the per-row score; kept and pruned rows of the last pruned epoch apart. The x-axis says what
    the score is (`metadata["score_definition"]`).

    Falls back to the last observed loss when no row has a score (a record written before scores were derived).
    """
    record = _as_record(record)
    name, what = "score", record.metadata.get("score_definition") or "what the method ranked by"
    values = record.column("score").astype(np.float64)
    if not np.isfinite(values).any():
        name, what, values = "loss", "last observed loss", record.column("loss").astype(np.float64)
    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = fig.add_subplot()
    finite = np.isfinite(values)
    if not finite.any():
        ax.text(0.5, 0.5, "no finite scores or losses recorded", ha="center", va="center")
        ax.set_axis_off()
        return fig
    edges = np.histogram_bin_edges(values[finite], bins=bins)
    pruned_epochs = [e for e, size in enumerate(record.plan_sizes) if size < record.num_rows]
    if pruned_epochs:
        epoch = pruned_epochs[-1]
        kept = np.zeros(record.num_rows, dtype=bool)
        kept[record.plan(epoch)] = True
        kept = kept[record.column("row_index")]
        ax.hist(values[finite & kept], bins=edges, color=FULL_COLOR, alpha=0.7, label=f"kept in epoch {epoch}")
        ax.hist(
            values[finite & ~kept],
            bins=edges,
            color=PRUNED_COLOR,
            alpha=0.7,
            label=f"pruned in epoch {epoch}",
        )
        fig.legend(loc="outside lower center", ncols=2)
    else:
        ax.hist(values[finite], bins=edges, color=FULL_COLOR)
    ax.set_xlabel(f"{name}: {what}" if name == "score" else what)
    ax.set_ylabel("rows")
    missing = int((~finite).sum())
    ax.set_title(f"{_method(record)}: per-row {name}" + (f" ({missing} rows without one)" if missing else ""))
    return fig


def plot_kept_fraction(record: PruningRecord | PruningState) -> Figure:
    """Fraction of the rows each epoch trained on, with the realised saving."""
    record = _as_record(record)
    sizes = np.asarray(record.plan_sizes, dtype=np.float64)
    fractions = sizes / record.num_rows
    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = fig.add_subplot()
    epochs = np.arange(len(sizes))
    colors = [FULL_COLOR if s >= record.num_rows else PRUNED_COLOR for s in sizes]
    ax.bar(epochs, fractions, color=colors)
    ratio = record.metadata.get("prune_ratio")
    if isinstance(ratio, (int, float)) and ratio > 0:
        ax.axhline(1 - ratio, color="black", linestyle="--", linewidth=1, label=f"1 - prune_ratio = {1 - ratio:g}")
        fig.legend(loc="outside lower center")
    ax.set_ylim(0, 1.05)
    ax.set_xticks(epochs)
    ax.set_xlabel("epoch")
    ax.set_ylabel("fraction of rows trained")
    ax.set_title(f"{_method(record)}: kept fraction by epoch (realised saving {record.realized_saving:.1%})")
    return fig


PLOTS = {
    "frequency_histogram": plot_frequency_histogram,
    "score_distribution": plot_score_distribution,
    "kept_fraction": plot_kept_fraction,
}


def save_pruning_plots(
    state_or_record: PruningRecord | PruningState, directory: str | os.PathLike, *, dpi: int = 100
) -> list[str]:
    """Write `frequency_histogram.png`, `score_distribution.png` and `kept_fraction.png` into `directory`;
    returns their paths."""
    record = _as_record(state_or_record)
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    paths = []
    for name, plot in PLOTS.items():
        path = os.path.join(directory, f"{name}.png")
        figure = plot(record)
        atomic_write(path, lambda tmp, figure=figure: figure.savefig(tmp, dpi=dpi, format="png"))
        paths.append(path)
    return paths


def _method(record: Any) -> str:
    return str(record.metadata.get("pruning_method") or "pruning")
