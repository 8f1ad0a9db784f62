"""Conversions between PIL images, NumPy arrays and model tensors in [-1, 1]."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from PIL import Image


def to_tensor(images: Image.Image | Sequence[Image.Image]) -> torch.Tensor:
    """PIL image(s) -> float tensor ``[B, 3, H, W]`` in [-1, 1]."""
    if isinstance(images, Image.Image):
        images = [images]
    arr = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) for im in images])
    return torch.from_numpy(arr).permute(0, 3, 1, 2) / 127.5 - 1.0


def to_pil(x: torch.Tensor) -> list[Image.Image]:
    """Tensor ``[B, 3, H, W]`` in [-1, 1] -> list of PIL images."""
    arr = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a) for a in arr]


def strip(images: Sequence[Image.Image], size: int | None = None, pad: int = 2) -> Image.Image:
    """Images side by side (resized with nearest neighbour to ``size`` so pixels stay visible)."""
    size = size or max(im.width for im in images)
    out = Image.new("RGB", (len(images) * (size + pad) - pad, size), "white")
    for i, im in enumerate(images):
        out.paste(im.resize((size, size), Image.NEAREST), (i * (size + pad), 0))
    return out


def psnr(a: Image.Image | np.ndarray, b: Image.Image | np.ndarray, mask: np.ndarray | None = None) -> float:
    """Peak signal-to-noise ratio in dB between two 8-bit images (optionally inside a boolean mask)."""
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"images differ in shape: {x.shape} vs {y.shape}")
    err = (x - y) ** 2
    if mask is not None:
        err = err[np.asarray(mask, bool)]
    mse = float(err.mean()) if err.size else 0.0
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)
