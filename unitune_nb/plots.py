"""Matplotlib figures used by the notebooks and the command line."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from matplotlib.figure import Figure  # no pyplot: works headless and shows inline in Jupyter
from PIL import Image

DPI = 64  # small inline figures keep notebooks light


def edit_grid(source: Image.Image, results: Sequence, labels: Sequence[str],
              targets: Sequence[Image.Image] | None = None) -> Figure:
    """Source, then one column per edit: the edited image (and, for world scenes, the true target)."""
    rows = 2 if targets is not None else 1
    n = len(results) + 1
    fig = Figure(figsize=(1.9 * n, 2.1 * rows), dpi=DPI)
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


def stage_grid(rows: Sequence[tuple[str, Sequence[Image.Image]]], size: int = 128, group: int = 3) -> Figure:
    """One row per prompt: images (nearest-neighbour upscaled to ``size``), a wider gap every ``group``."""
    strips = []
    for _, ims in rows:
        n = len(ims)
        gap, wide = 2, 12
        width = n * size + (n - 1) * gap + ((n - 1) // group) * (wide - gap)
        row = Image.new("RGB", (width, size), "white")
        x = 0
        for i, im in enumerate(ims):
            row.paste(im.convert("RGB").resize((size, size), Image.NEAREST), (x, 0))
            x += size + (wide if (i + 1) % group == 0 else gap)
        strips.append(row)
    w = max(s.width for s in strips)
    fig = Figure(figsize=(w / 90, len(rows) * (size + 28) / 90), dpi=DPI)
    axes = fig.subplots(len(rows), 1, squeeze=False)[:, 0]
    for ax, (label, _), st in zip(axes, rows, strips):
        ax.imshow(st)
        ax.set_title(label, fontsize=10, loc="left")
        ax.axis("off")
    fig.tight_layout()
    return fig


def trajectory(steps: Sequence, every: int = 1, size: int = 64) -> Figure:
    """Two rows over the denoising steps: the sample ``x_t`` and the model's predicted ``x0``."""
    from .images import to_pil

    picked = list(steps)[::every]
    if picked[-1] is not list(steps)[-1]:
        picked.append(list(steps)[-1])
    fig = Figure(figsize=(1.3 * len(picked), 2.9), dpi=DPI)
    axes = fig.subplots(2, len(picked), squeeze=False)
    for i, st in enumerate(picked):
        for r, (x, name) in enumerate(((st.x, "x_t"), (st.x0, "predicted x0"))):
            ax = axes[r][i]
            ax.imshow(to_pil(x[:1])[0].resize((size, size), Image.NEAREST))
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_ylabel(name, fontsize=8)
        axes[0][i].set_title(f"step {st.index + 1}\nt={st.t}", fontsize=7)
    fig.tight_layout()
    return fig


def images_row(images: Sequence[Image.Image], titles: Sequence[str], size: int = 128) -> Figure:
    """A row of images with titles (nearest-neighbour upscaled to ``size``)."""
    fig = Figure(figsize=(1.9 * len(images), 2.2), dpi=DPI)
    axes = fig.subplots(1, len(images), squeeze=False)[0]
    for ax, im, t in zip(axes, images, titles):
        ax.imshow(im.resize((size, size), Image.NEAREST))
        ax.set_title(t, fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    return fig


SHIPPED_TRAINING_CURVE = Path(__file__).resolve().parent / "data" / "training_curve.json"


def training_curve(points: Sequence[dict] | None = None, target: float = 0.9) -> Figure:
    """Attribute accuracy of the base stage against training minutes (one line per attribute).

    ``points``: dicts with ``minutes`` and ``accuracy`` (attribute -> accuracy), e.g. from
    ``unitune-nb eval --json`` of checkpoints (default: the shipped model's, a copy of
    ``docs/bench/training_curve.json`` inside the package); ``target`` draws the bar of the text-following goal.
    """
    if points is None:
        import json

        points = json.loads(SHIPPED_TRAINING_CURVE.read_text())
    pts = sorted(points, key=lambda p: p["minutes"])
    fig = Figure(figsize=(6.0, 3.4), dpi=80)
    ax = fig.subplots()
    attrs = list(dict.fromkeys(a for p in pts for a in p["accuracy"]))
    for a in attrs:
        xs = [p["minutes"] for p in pts if a in p["accuracy"]]
        ax.plot(xs, [p["accuracy"][a] for p in pts if a in p["accuracy"]], marker="o", label=a)
    ax.axhline(target, color="k", ls=":", lw=1, label=f"target {target:g}")
    ax.set_xlabel("base-stage training minutes (2-core CPU)")
    ax.set_ylabel("accuracy (probe)")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7, ncol=2, loc="lower right")
    fig.tight_layout()
    return fig
