"""Attention weights as pictures: grey images (H, W) of pooling weights and attention
matrices, and labelled matplotlib heatmaps for loggers and PNG files. matplotlib is imported
only when a figure is drawn (it costs start-up time)."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from attnlstm.contracts import AttentionMap

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _pyplot() -> ModuleType:
    """matplotlib.pyplot with the Agg backend, imported on first use."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed: figures go to loggers or files
    import matplotlib.pyplot as plt

    return plt


def attention_figure(attention: AttentionMap, max_cell_inches: float = 0.35) -> Figure:
    """A heatmap of ``attention.weights`` (Tq, T): keys along the x axis (e.g. the source
    tokens), queries down the y axis (e.g. the output tokens), one labelled cell per weight,
    the colour scale fixed to [0, 1] so figures compare."""
    weights = attention.weights.detach().float().cpu().numpy()
    rows, columns = weights.shape
    width = min(max(3.0, 1.5 + columns * max_cell_inches), 16.0)
    height = min(max(2.5, 1.2 + rows * max_cell_inches), 16.0)
    figure, axes = _pyplot().subplots(figsize=(width, height))
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
    _pyplot().close(figure)
    tmp.replace(path)  # atomic: a reader never sees half a file
    return path


def attention_image(weights: Tensor, lengths: Tensor | None, row_height: int = 12) -> Tensor:
    """Attention weights of a few examples as a grey image (H, W) in [0, 1].

    Each example is one band of ``row_height`` pixels, scaled by its own maximum so that
    peaked and flat distributions are both visible; steps beyond its length stay black.

    Args:
        weights: (K, T).
        lengths: (K,) or None.
    """
    weights = weights.detach().float().cpu()
    if lengths is not None:
        steps = torch.arange(weights.size(1))
        weights = weights * (steps.unsqueeze(0) < lengths.cpu().unsqueeze(1))
    scaled = weights / weights.amax(dim=1, keepdim=True).clamp(min=1e-12)
    bands = scaled.repeat_interleave(row_height, dim=0)  # (K * row_height) x T
    separators = torch.arange(bands.size(0)) % row_height == row_height - 1
    bands[separators] = 0.25
    return bands


def attention_matrix_image(weights: Tensor, cell: int = 8) -> Tensor:
    """One example's attention as a grey image (H, W) in [0, 1]: a (Tq, T) matrix, each query
    row scaled by its own maximum, every weight drawn as a ``cell`` x ``cell`` square.

    Args:
        weights: (Tq, T), row i the weights of query step i over the T keys.
    """
    weights = weights.detach().float().cpu()
    scaled = weights / weights.amax(dim=1, keepdim=True).clamp(min=1e-12)
    return scaled.repeat_interleave(cell, dim=0).repeat_interleave(cell, dim=1)
