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


def load_image(src, size: int = 128) -> tuple[Image.Image, list[str]]:
    """Read a source image from a path, PIL image, NumPy array or tensor; return an RGB ``size`` px copy.

    Non-RGB modes (RGBA, LA, P, L, I;16, CMYK, ...) are converted (transparent pixels onto white),
    non-square images are centre-cropped to a square, and the square is resized with a box /
    bicubic filter.  The caller's object is never modified.  The second value lists what was done,
    so a user can be told.
    """
    im, notes = read_image(src)
    im, more = square_image(im, size)
    return im, notes + more


def _open(src) -> Image.Image:
    from pathlib import Path

    p = Path(src)
    if not p.is_file():
        raise FileNotFoundError(f"source image {p} does not exist")
    try:
        with Image.open(p) as f:
            im = f.copy()
            im.load()
    except Exception as e:  # PIL raises several types for broken files
        raise ValueError(f"cannot read {p} as an image ({e}); pass a PNG or JPEG file") from e
    return im


def _from_array(src, notes: list[str]) -> Image.Image:
    """An HxW, HxWxC or CxHxW array / tensor (uint8, uint16 or float in [0, 1], [-1, 1] or [0, 255]) as an image."""
    a = src.detach().cpu().numpy() if isinstance(src, torch.Tensor) else np.array(src)
    if a.ndim == 4 and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[-1] not in (1, 3, 4):
        a = np.moveaxis(a, 0, -1)  # CHW -> HWC
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] not in (3, 4)):
        raise ValueError(f"an image array must be HxW, HxWx3/4 or 3/4xHxW; got shape {tuple(src.shape)}")
    if a.dtype.kind == "f":
        if not np.isfinite(a).all():
            raise ValueError("the image array holds NaN or infinite values; give finite pixel values")
        lo, hi = float(a.min()), float(a.max())
        if lo < -1.001 or hi > 255.5:
            raise ValueError(f"float image values must lie in [0, 1], [-1, 1] or [0, 255]; got [{lo:.3g}, {hi:.3g}]")
        if lo < 0:
            a, note = (a + 1) * 127.5, "float values in [-1, 1] read as model range"
        elif hi <= 1.0:
            a, note = a * 255.0, "float values in [0, 1] scaled to 0-255"
        else:
            note = "float values read as 0-255"
        notes.append(note)
    elif a.dtype == np.uint16:
        a = a / 257.0
        notes.append("16-bit values scaled to 8 bits")
    elif a.dtype != np.uint8:
        a = a.astype(np.float64)
    return Image.fromarray(np.clip(np.round(a), 0, 255).astype(np.uint8))


def _to_rgb(im: Image.Image, notes: list[str]) -> Image.Image:
    """16-bit / integer greyscale to 8 bits, transparency flattened onto white, any other mode to RGB."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im, dtype=np.float64)
        im = Image.fromarray(np.clip(a / (257.0 if a.max() > 255 else 1.0), 0, 255).astype(np.uint8))
        notes.append(f"{'16-bit' if a.max() > 255 else 'integer'} greyscale converted to RGB")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, rgba).convert("RGB")
        notes.append("transparency flattened onto white")
    elif im.mode != "RGB":
        notes.append(f"{im.mode} image converted to RGB")
        im = im.convert("RGB")
    return im


def read_image(src) -> tuple[Image.Image, list[str]]:
    """The conversion part of :func:`load_image`: an RGB copy at the source's own size, and notes."""
    import os

    notes: list[str] = []
    if isinstance(src, (str, os.PathLike)):
        im = _open(src)
    elif isinstance(src, Image.Image):
        im = src.copy()
    elif isinstance(src, (np.ndarray, torch.Tensor)):
        im = _from_array(src, notes)
    else:
        raise TypeError(f"source image must be a path, PIL image, NumPy array or tensor; got {type(src).__name__}")
    if im.width < 1 or im.height < 1:
        raise ValueError("the source image is empty (0 pixels)")
    return _to_rgb(im, notes), notes


def square_image(im: Image.Image, size: int) -> tuple[Image.Image, list[str]]:
    """Centre-crop an RGB image to a square and resize it to ``size`` px; notes say what was done."""
    notes: list[str] = []
    if im.width != im.height:
        s = min(im.width, im.height)
        left, top = (im.width - s) // 2, (im.height - s) // 2
        im = im.crop((left, top, left + s, top + s))
        notes.append(f"centre-cropped to {s}x{s}")
    if im.width != size:
        notes.append(f"resized from {im.width} to {size} px")
        im = im.resize((size, size), Image.BOX if im.width > size else Image.BICUBIC)
    return im, notes


def ssim(a: Image.Image | np.ndarray, b: Image.Image | np.ndarray, mask: np.ndarray | None = None,
         sigma: float = 1.5) -> float:
    """Structural similarity (Wang et al., 2004; Gaussian window, per channel) averaged over ``mask``."""
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"images differ in shape: {x.shape} vs {y.shape}")
    r = max(1, int(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()

    def blur(z: np.ndarray) -> np.ndarray:
        pad = np.pad(z, ((r, r), (r, r), (0, 0)) if z.ndim == 3 else ((r, r), (r, r)), mode="reflect")
        z = np.apply_along_axis(lambda v: np.convolve(v, k, mode="valid"), 0, pad)
        return np.apply_along_axis(lambda v: np.convolve(v, k, mode="valid"), 1, z)

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    m = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    if m.ndim == 3:
        m = m.mean(axis=2)
    if mask is not None:
        m = m[np.asarray(mask, bool)]
    return float(m.mean()) if m.size else float("nan")
