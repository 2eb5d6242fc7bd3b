"""Attention weights as pictures: labelled matplotlib heatmaps (an encoder-decoder's attention
matrix, or the pooling weights of a few examples with their padding and marked steps) for
loggers and PNG files, and plain grey images (H, W). matplotlib is imported only when a figure
is drawn (it costs start-up time)."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from attnlstm.contracts import AttentionMap, lengths_to_mask

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _pyplot() -> ModuleType:
    """matplotlib.pyplot with the Agg backend, imported on first use."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed: figures go to loggers or files
    import matplotlib.pyplot as plt

    return plt


#: how masked padding is drawn (a light grey, far from every colour of viridis)
PADDING_COLOUR = "0.85"
#: how the entries of :attr:`AttentionMap.marks` are drawn, in turn
MARK_STYLES: tuple[dict[str, Any], ...] = (
    {"marker": "o", "s": 40, "facecolors": "none", "edgecolors": "red", "linewidths": 1.5},
    {"marker": "D", "s": 24, "facecolors": "white", "edgecolors": "black", "linewidths": 1.0},
    {"marker": "x", "s": 30, "color": "orange", "linewidths": 1.5},
)
#: the least width of one tick label along the x axis (rotated text at font size 8)
_TICK_INCHES = 0.16


def _tick_step(columns: int, axis_inches: float) -> int:
    """Label every key, or every 2nd, 5th, 10th, 20th, ... when they would not fit."""
    fits = max(1, int(axis_inches / _TICK_INCHES))
    step = 1
    while math.ceil(columns / step) > fits:
        step = step * 5 // 2 if str(step)[0] == "2" else step * 2  # 1, 2, 5, 10, 20, 50, ...
    return step


def attention_figure(attention: AttentionMap, max_cell_inches: float = 0.35) -> Figure:
    """A heatmap of ``attention.weights`` (R, T): keys along the x axis (e.g. the source
    tokens, or time steps), rows down the y axis (e.g. the output tokens, or examples), one
    labelled cell per weight (every n-th key labelled when they are too many to read).

    Keys after a row's ``attention.lengths`` are padding: drawn grey (and left out when no row
    reaches them); ``attention.marks`` are drawn over the cells, each with a legend entry; a
    colour bar shows the scale, [0, ``colour_max``] (fixed [0, 1] by default so that figures
    compare; the largest weight shown when None).
    """
    plt = _pyplot()
    weights = attention.weights.detach().float().cpu()
    rows, columns = weights.shape
    padding = None
    if attention.lengths is not None:
        lengths = attention.lengths.cpu().long().clamp(0, columns)
        columns = int(lengths.max()) if rows else columns  # padding of every row is not drawn
        weights = weights[:, :columns]
        padding = ~lengths_to_mask(lengths, columns)
    values = np.ma.masked_array(weights.numpy(), mask=None if padding is None else padding.numpy())
    top = attention.colour_max
    if top is None:
        top = max(float(values.max()) if values.count() else 0.0, 1e-6)

    # wide enough for the title too (about 0.07 inches a character at font size 9)
    width = min(max(3.0, 1.5 + columns * max_cell_inches, 0.5 + 0.07 * len(attention.title)), 16.0)
    height = min(max(2.5, 1.2 + rows * max_cell_inches), 16.0)
    has_legend = bool(attention.marks) or (padding is not None and bool(padding.any()))
    figure, axes = plt.subplots(
        figsize=(width, height + (0.4 if has_legend else 0.0)), layout="constrained"
    )
    from matplotlib import colormaps

    palette = colormaps["viridis"].with_extremes(bad=PADDING_COLOUR)
    image = axes.imshow(
        values, cmap=palette, vmin=0.0, vmax=top, aspect="auto", interpolation="nearest"
    )
    step = _tick_step(columns, width - 2.0)
    ticks = range(0, columns, step)
    labels = [attention.key_labels[t] for t in ticks]
    axes.set_xticks(ticks, labels, rotation=90, fontsize=8)
    axes.set_yticks(range(rows), attention.query_labels[:rows], fontsize=8)
    axes.set_xlabel(attention.x_label)
    axes.set_ylabel(attention.y_label)
    if attention.title:
        axes.set_title(attention.title, fontsize=9)

    handles: list[Any] = []
    for style, (label, positions) in zip(itertools.cycle(MARK_STYLES), attention.marks.items()):
        positions = positions.detach().cpu().long()
        row_index = torch.arange(positions.size(0)).unsqueeze(1).expand_as(positions)
        shown = (positions >= 0) & (positions < columns)
        # x: the key (column), y: the row, as imshow places cell (row, column)
        handles.append(
            axes.scatter(positions[shown].numpy(), row_index[shown].numpy(), label=label, **style)
        )
    if padding is not None and bool(padding.any()):
        from matplotlib.patches import Patch

        handles.append(Patch(facecolor=PADDING_COLOUR, edgecolor="0.5", label="padding"))
    if handles:
        figure.legend(
            handles=handles,
            loc="outside lower center",
            ncols=len(handles),
            fontsize=8,
            frameon=False,
        )
    bar = figure.colorbar(image, ax=axes, fraction=0.04)
    bar.set_label("attention weight", fontsize=8)
    bar.ax.tick_params(labelsize=8)
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
