"""The HTML report's plots (matplotlib, Agg): each function draws one PNG from plain data that
``report.build_summary`` gathered, and returns its path, or None when there is nothing to draw."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

_THUMB = 128  # pixels: the side of a test photo's thumbnail
_SETS = {"car": ("cars of known models", "tab:green"), "non_car": ("photos without a car", "tab:red"),
         "unknown_model": ("cars of unknown models", "tab:orange")}


@contextmanager
def _figure(path: Path, rows: int, cols: int, size: tuple[float, float]) -> Iterator[np.ndarray]:
    """A figure of ``rows`` x ``cols`` axes (a 2-d array), saved to ``path`` when the block ends."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(rows, cols, figsize=size, squeeze=False)
    try:
        yield axes
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)


def plot_examples(examples: Sequence[dict], path: Path, *, per_row: int = 6) -> Path | None:
    """Thumbnails of test photos, each titled with its true class, the answer and its probability
    (green when right, red when wrong). Photos no longer on disk are left out."""
    from PIL import Image

    shown = [e for e in examples if Path(e["path"]).is_file()]
    if not shown:
        return None
    rows = -(-len(shown) // per_row)
    with _figure(path, rows, per_row, (2.2 * per_row, 2.6 * rows)) as axes:
        for ax in axes.flat:
            ax.axis("off")
        for ax, e in zip(axes.flat, shown):
            with Image.open(e["path"]) as img:
                ax.imshow(img.convert("RGB").resize((_THUMB, _THUMB)))
            right = e["true"] == e["predicted"]
            ax.set_title(f"{e['true']}\n-> {e['predicted']} {e['p']:.2f}", fontsize=7,
                         color="darkgreen" if right else "darkred")
    return path


def plot_ood_histogram(histogram: dict | None, path: Path, *, threshold: float | None, score: str) -> Path | None:
    """The OOD score of the held-out sets (shares of each set per bin), with the "no car" threshold."""
    if not histogram or not histogram.get("counts"):
        return None
    edges = np.asarray(histogram["edges"], np.float64)
    with _figure(path, 1, 1, (7.5, 3.6)) as axes:
        ax = axes[0, 0]
        for name, counts in histogram["counts"].items():
            counts = np.asarray(counts, np.float64)
            label, colour = _SETS.get(name, (name, None))
            ax.stairs(counts / max(counts.sum(), 1.0), edges, label=f"{label} ({int(counts.sum())})",
                      color=colour, fill=True, alpha=0.35)
        if threshold is not None:
            ax.axvline(threshold, color="black", linestyle="--", label="no car below")
        ax.set_xlabel(f"OOD score ({score}; higher: more like the training photos)")
        ax.set_ylabel("share of the set")
        ax.legend(fontsize=8)
    return path


def plot_price_fits(panels: Sequence[dict[str, Any]], path: Path, *, per_row: int = 3) -> Path | None:
    """Per class: asking prices against age, and the fair-price curve at typical mileage."""
    if not panels:
        return None
    rows = -(-len(panels) // per_row)
    with _figure(path, rows, per_row, (4.0 * per_row, 3.0 * rows)) as axes:
        for ax in axes.flat[len(panels):]:
            ax.axis("off")
        for ax, p in zip(axes.flat, panels):
            ax.scatter(p["ages"], p["prices"], s=10, alpha=0.5, label="asking prices")
            ax.plot(p["curve_ages"], p["curve_prices"], color="black", label=f"fair price ({p['pooled']} curve)")
            ax.set_title(f"{p['class']} ({len(p['prices'])} offers)", fontsize=9)
            ax.set_xlabel("age (years)", fontsize=8)
            ax.set_ylabel(p["currency"], fontsize=8)
            ax.legend(fontsize=7)
    return path


def plot_training_curves(history: Sequence[dict], path: Path) -> Path | None:
    """Loss and accuracy per epoch, training and validation; a dotted line where a phase begins."""
    if not history:
        return None
    epochs = [row["epoch"] for row in history]
    starts = [row["epoch"] for row in history[1:] if row.get("phase_epoch") == 1]
    with _figure(path, 1, 2, (10.0, 3.6)) as axes:
        for ax, (metric, title) in zip(axes.flat, (("loss", "loss"), ("accuracy", "accuracy"))):
            for key, label in ((metric, "training"), (f"val_{metric}", "validation")):
                values = [row.get(key) for row in history]
                if any(v is not None for v in values):
                    ax.plot(epochs, [np.nan if v is None else v for v in values], marker=".", label=label)
            for start in starts:
                ax.axvline(start - 0.5, color="grey", linestyle=":")
            ax.set_xlabel("epoch")
            ax.set_title(title)
            ax.legend(fontsize=8)
    return path
