"""Attention heatmaps as matplotlib figures, for TensorBoard (``add_figure``) and PNG files."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display needed: figures go to TensorBoard or files

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from attnlstm.contracts import AttentionMap


def attention_figure(attention: AttentionMap, max_cell_inches: float = 0.35) -> Figure:
    """A heatmap of ``attention.weights`` (Tq, T): keys along the x axis (e.g. the source
    tokens), queries down the y axis (e.g. the output tokens), one labelled cell per weight,
    the colour scale fixed to [0, 1] so figures compare."""
    weights = attention.weights.detach().float().cpu().numpy()
    rows, columns = weights.shape
    width = min(max(3.0, 1.5 + columns * max_cell_inches), 16.0)
    height = min(max(2.5, 1.2 + rows * max_cell_inches), 16.0)
    figure, axes = plt.subplots(figsize=(width, height))
    image = axes.imshow(weights, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    axes.set_xticks(range(columns), attention.key_labels[:columns], rotation=90, fontsize=8)
    axes.set_yticks(range(rows), attention.query_labels[:rows], fontsize=8)
    axes.set_xlabel("source")
    axes.set_ylabel("output")
    if attention.title:
        axes.set_title(attention.title, fontsize=9)
    figure.colorbar(image, ax=axes, fraction=0.04)
    figure.tight_layout()
    return figure


def save_attention_png(attention: AttentionMap, path: Path) -> Path:
    """Write the heatmap of ``attention`` to ``path`` (PNG) and return the path."""
    figure = attention_figure(attention)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    figure.savefig(tmp, dpi=120)
    plt.close(figure)
    tmp.replace(path)  # atomic: a reader never sees half a file
    return path
