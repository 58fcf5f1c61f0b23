"""PNG figures for the report: score histograms, ROC and precision-recall curves.

Figures are built on matplotlib's object API with the Agg canvas, never pyplot's global state,
so the report renders headless and does not change the backend of a notebook that imports this.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

from facebatch.scoring.polarity import ScoreSpec

MAX_BINS = 60
CLASS_COLOURS = {0: "tab:blue", 1: "tab:red"}


def png_bytes(fig: Figure, dpi: int = 100, tight: bool = True) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight" if tight else None)
    return buf.getvalue()


def _bins(values: np.ndarray) -> np.ndarray:
    if len(values) == 0 or np.ptp(values) == 0:
        centre = values[0] if len(values) else 0.0
        return np.linspace(centre - 0.5, centre + 0.5, 11)
    edges = np.histogram_bin_edges(values, bins="auto")
    return edges if len(edges) <= MAX_BINS + 1 else np.linspace(values.min(), values.max(), MAX_BINS + 1)


@dataclass
class Panel:
    spec: ScoreSpec
    values: np.ndarray
    y: np.ndarray | None = None  # 0/1 per value: histograms split by class
    threshold: float | None = None  # in the score's units: drawn as a dashed line


def histograms(panels: Sequence[Panel], class_names: Sequence[str] = ("negative", "positive")) -> bytes:
    """Every score's distribution in one figure (one savefig: matplotlib draws are the slow part)."""
    ncols = 2 if len(panels) > 1 else 1
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(5.4 * ncols, 3.3 * nrows))
    # Fixed margins, not constrained/tight layout: those redraw the figure several times.
    fig.subplots_adjust(
        left=0.08, right=0.98, bottom=0.6 / (3.3 * nrows), top=1 - 0.35 / (3.3 * nrows), wspace=0.22, hspace=0.55
    )
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, panel in zip(axes, panels):
        values = np.asarray(panel.values, dtype=np.float64)
        bins = _bins(values)
        if panel.y is None:
            ax.hist(values, bins=bins, color="tab:gray", alpha=0.85)
        else:
            for cls in (0, 1):
                ax.hist(
                    values[panel.y == cls],
                    bins=bins,
                    alpha=0.55,
                    color=CLASS_COLOURS[cls],
                    label=f"{class_names[cls]} (n={int((panel.y == cls).sum())})",
                )
        if panel.threshold is not None:
            ax.axvline(
                panel.threshold, color="black", linestyle="--", linewidth=1.2, label=f"threshold {panel.threshold:.4g}"
            )
        if panel.y is not None or panel.threshold is not None:
            ax.legend(fontsize=7)
        ax.set_xlabel(panel.spec.name)
        ax.set_ylabel("images")
        ax.set_title(panel.spec.describe(), fontsize=9)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    return png_bytes(fig, tight=False)


def _curve_axes(title: str, xlabel: str, ylabel: str) -> tuple[Figure, object]:
    fig = Figure(figsize=(5.2, 5))
    ax = fig.add_subplot()
    ax.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), xlabel=xlabel, ylabel=ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    return fig, ax


def _finish(fig: Figure, ax, point: tuple[float, float] | None, loc: str) -> bytes:
    if point is not None:
        ax.plot([point[0]], [point[1]], "ko", label="chosen threshold")
    ax.legend(fontsize=8, loc=loc)
    return png_bytes(fig)


Curves = dict[str, tuple[np.ndarray, np.ndarray]]  # score name -> (0/1 labels, oriented scores)


def roc(curves: Curves, primary: str, point: tuple[float, float] | None = None) -> bytes:
    """ROC of every oriented score (the primary one bold) with its operating point (fpr, tpr)."""
    fig, ax = _curve_axes("ROC (positive = the flagged class)", "false-positive rate", "true-positive rate")
    ax.plot([0, 1], [0, 1], color="gray", linestyle=":", linewidth=1, label="chance (AUROC 0.5)")
    for name, (y, oriented) in curves.items():
        fpr, tpr, _ = roc_curve(y, oriented)
        ax.plot(
            fpr,
            tpr,
            linewidth=2.4 if name == primary else 1.0,
            zorder=3 if name == primary else 2,
            label=f"{name} (AUROC {roc_auc_score(y, oriented):.3f})",
        )
    return _finish(fig, ax, point, "lower right")


def precision_recall(curves: Curves, primary: str, point: tuple[float, float] | None = None) -> bytes:
    """Precision-recall of every oriented score with the operating point (recall, precision)."""
    fig, ax = _curve_axes("Precision-recall", "recall", "precision")
    prevalence = float(np.mean(curves[primary][0]))
    ax.axhline(prevalence, color="gray", linestyle=":", linewidth=1, label=f"chance (AP {prevalence:.3f})")
    for name, (y, oriented) in curves.items():
        precision, recall, _ = precision_recall_curve(y, oriented)
        ax.step(
            recall,
            precision,
            where="post",
            linewidth=2.4 if name == primary else 1.0,
            zorder=3 if name == primary else 2,
            label=f"{name} (AP {average_precision_score(y, oriented):.3f})",
        )
    return _finish(fig, ax, point, "lower left")
