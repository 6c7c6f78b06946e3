"""Drawing images as figures: the display conversion and the one grid of faces every figure uses."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def to_display(images: torch.Tensor) -> np.ndarray:
    """(N, 3, S, S) float in [-1, 1] -> (N, S, S, 3) float in [0, 1] for imshow."""
    return images.detach().float().cpu().add(1).div(2).clamp(0, 1).permute(0, 2, 3, 1).numpy()


def image_grid_figure(
    images: torch.Tensor,
    column_labels: Sequence[str],
    row_labels: Sequence[str] | None = None,
    title: str | None = None,
    pad: int = 2,
    cell_notes: Sequence[Sequence[str]] | None = None,
    inch: float = 0.95,
):
    """A matplotlib figure of images (R, C, 3, S, S) in [-1, 1] as one mosaic with column headers, row labels and an
    optional note on each cell (R x C strings, "" for none; e.g. "already Smiling"), `inch` inches a tile.

    Headers are rotated when the columns are many or the labels long, so they never overlap.
    """
    import matplotlib.pyplot as plt

    r, c, _, s, _ = images.shape
    cell = s + pad
    mosaic = np.ones((r * cell + pad, c * cell + pad, 3))
    tiles = to_display(images.reshape(r * c, *images.shape[2:])).reshape(r, c, s, s, 3)
    for i in range(r):
        for j in range(c):
            mosaic[pad + i * cell : pad + i * cell + s, pad + j * cell : pad + j * cell + s] = tiles[i, j]
    if cell_notes is not None and (len(cell_notes) != r or any(len(row) != c for row in cell_notes)):
        raise ValueError(f"{r}x{c} cell notes expected for images of {tuple(images.shape)}")
    longest = max((len(str(label)) for label in column_labels), default=0)
    rotate = longest * 0.075 > inch  # ~0.075 in per character at 8 pt
    header = 0.2 + (0.07 * longest * 0.71 if rotate else 0.25)
    fig_w, fig_h = c * inch + (0.9 if row_labels is not None else 0.2), r * inch + header + (0.35 if title else 0)
    fig = plt.figure(figsize=(fig_w, fig_h))
    ax = fig.add_axes([(0.9 if row_labels is not None else 0.1) / fig_w, 0.05 / fig_h, c * inch / fig_w, r * inch / fig_h])
    ax.imshow(mosaic, interpolation="nearest")
    ax.set_xticks([pad + j * cell + s / 2 for j in range(c)])
    ax.set_xticklabels([str(x) for x in column_labels], rotation=45 if rotate else 0,
                       ha="left" if rotate else "center", fontsize=8)
    ax.xaxis.tick_top()
    if row_labels is not None:
        ax.set_yticks([pad + i * cell + s / 2 for i in range(r)])
        ax.set_yticklabels([str(x) for x in row_labels], fontsize=7)
    else:
        ax.set_yticks([])
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    for i, row in enumerate(cell_notes or ()):
        for j, note in enumerate(row):
            if note:
                ax.text(pad + j * cell + s / 2, pad + i * cell + s - 1, note, ha="center", va="bottom", fontsize=7,
                        color="firebrick", bbox={"facecolor": "white", "alpha": 0.8, "pad": 1, "linewidth": 0})
    if title:
        fig.suptitle(title, fontsize=10, y=1 - 0.12 / fig_h, va="top")
    return fig
