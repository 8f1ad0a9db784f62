"""Matplotlib figures used by the notebooks and the command line."""
from __future__ import annotations

from typing import Sequence

from matplotlib.figure import Figure  # no pyplot: works headless and shows inline in Jupyter
from PIL import Image


def edit_grid(source: Image.Image, results: Sequence, labels: Sequence[str],
              targets: Sequence[Image.Image] | None = None) -> Figure:
    """Source, then one column per edit: the edited image (and, for world scenes, the true target)."""
    rows = 2 if targets is not None else 1
    n = len(results) + 1
    fig = Figure(figsize=(1.9 * n, 2.1 * rows))
    axes = fig.subplots(rows, n, squeeze=False)
    for r in range(rows):
        for ax in axes[r]:
            ax.axis("off")
    axes[0][0].imshow(source)
    axes[0][0].set_title("source", fontsize=9)
    for i, (res, lab) in enumerate(zip(results, labels), start=1):
        axes[0][i].imshow(res.image)
        axes[0][i].set_title(lab, fontsize=9)
        if targets is not None:
            axes[1][i].imshow(targets[i - 1])
            axes[1][i].set_title("true target", fontsize=8)
    fig.tight_layout()
    return fig


def stage_grid(rows: Sequence[tuple[str, Sequence[Image.Image]]], size: int = 128) -> Figure:
    """One row per prompt: every stage's image (nearest-neighbour upscaled) for each seed."""
    ncols = max(len(ims) for _, ims in rows)
    fig = Figure(figsize=(1.6 * ncols, 1.75 * len(rows)))
    axes = fig.subplots(len(rows), ncols, squeeze=False)
    for r, (label, ims) in enumerate(rows):
        for c in range(ncols):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(ims):
                ax.imshow(ims[c].resize((size, size), Image.NEAREST))
        axes[r][0].set_title(label, fontsize=8, loc="left")
    fig.tight_layout()
    return fig
