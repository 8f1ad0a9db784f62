"""UniTune's interpolation: blend the source back in where the edit did not change things.

After sampling, UniTune (Sec. 3, "interpolation") mixes the result with the source image through a
mask estimated from where the edit changed the image, so untouched regions keep their exact
detail.  Our estimator is an image-difference one, between the result and a *reference*:
:meth:`UniTune.edit` passes either the source itself (``mask_from="source"``) or, by default, a
reconstruction: the tuned model's sample of the rare token alone with the same seed and late start
(``mask_from="reconstruction"``), which shares the model's reconstruction error with the edit, so
the difference isolates what the edit words changed.

1. ``d`` = per-pixel colour distance between result and reference (RGB in [-1, 1], L2 over channels);
2. smooth ``d`` with a Gaussian blur (sigma = 1.5% of the image side) so the mask follows regions,
   not single noisy pixels;
3. map it to [0, 1] with a smoothstep between ``low`` and ``high`` (defaults 0.15 and 0.45:
   differences below ``low`` count as "unchanged", above ``high`` as "edited").

With strength ``s`` the output is ``result + s * (1 - mask) * (source - result)``: ``s = 0``
returns the raw sample; ``s = 1`` keeps the source exactly wherever the mask is 0.
A user-given mask replaces the estimate and confines the edit to it.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    if sigma <= 0:
        return x
    r = max(1, int(round(3 * sigma)))
    k = torch.exp(-(torch.arange(-r, r + 1, dtype=x.dtype) ** 2) / (2 * sigma**2))
    k = k / k.sum()
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def estimate_mask(result: torch.Tensor, source: torch.Tensor, low: float = 0.15, high: float = 0.45,
                  blur: float = 0.015) -> torch.Tensor:
    """Soft edit mask ``[B, 1, H, W]`` in [0, 1]: 1 where the result differs from ``source`` (the reference)."""
    if result.shape != source.shape:
        raise ValueError(f"result {tuple(result.shape)} and source {tuple(source.shape)} differ in shape")
    d = (result - source).pow(2).sum(dim=1, keepdim=True).sqrt()
    d = _gaussian_blur(d, blur * result.shape[-1])
    t = ((d - low) / max(high - low, 1e-6)).clamp(0, 1)
    return t * t * (3 - 2 * t)


def blend(result: torch.Tensor, source: torch.Tensor, mask: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
    """``result + strength * (1 - mask) * (source - result)``."""
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"interpolation strength must be in [0, 1], got {strength}")
    return result + strength * (1 - mask) * (source - result)


def _mask_array(mask, notes: list[str]) -> np.ndarray:
    """A user mask as a 2-D float array in [0, 1]: PIL images and paths by their grey level, integer arrays as
    0/1 or 8-bit 0-255 (with a note), float arrays as they are (they must lie in [0, 1])."""
    import os

    from PIL import Image

    if isinstance(mask, (str, os.PathLike)):
        from .images import read_image

        mask = read_image(mask)[0]
    if isinstance(mask, Image.Image):
        return np.asarray(mask.convert("L"), dtype=np.float32) / 255.0
    a = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    a = np.squeeze(a)
    if a.ndim == 3:
        a = a.mean(axis=-1 if a.shape[-1] in (3, 4) else 0)
    if a.dtype == bool:
        return a.astype(np.float32)
    if a.dtype.kind in "iu":
        if a.max(initial=0) > 1:
            if a.max() > 255:
                raise ValueError(f"integer mask values go up to {a.max()}; give 0-255 (8-bit) or 0/1")
            notes.append("mask values 0-255 read as 8-bit (255 = may change)")
            return a.astype(np.float32) / 255.0
        return a.astype(np.float32)
    a = a.astype(np.float32)
    if not np.isfinite(a).all():
        raise ValueError("mask holds NaN or infinite values; give values in [0, 1] (1 / white = may change)")
    if a.size and (a.min() < 0 or a.max() > 1):
        raise ValueError(f"float mask values must lie in [0, 1] (got {a.min():.3g} to {a.max():.3g}); for an 8-bit "
                         "mask pass integers 0-255 (e.g. a uint8 array) or a PIL image")
    return a


def mask_to_tensor(mask, size: int) -> tuple[torch.Tensor, list[str]]:
    """A user mask (a path, PIL image, array or tensor; nonzero / white = editable) as ``[1, 1, size, size]`` in
    [0, 1], cropped to its centre square and resized like the source image; and notes on what was done."""
    notes: list[str] = []
    a = _mask_array(mask, notes)
    if a.ndim != 2 or min(a.shape) < 1:
        raise ValueError(f"mask has shape {tuple(a.shape)}; give a 2-D mask (HxW), an image, or HxWx3")
    t = torch.from_numpy(np.ascontiguousarray(a))[None, None]
    h, w = a.shape
    if h != w:
        notes.append(f"mask cropped to its centre square ({h}x{w} -> {min(h, w)}x{min(h, w)}), as the source is")
    if a.shape != (size, size):
        s = min(h, w)
        top, left = (h - s) // 2, (w - s) // 2  # the same centre crop as the source image
        t = F.interpolate(t[..., top:top + s, left:left + s], size=(size, size), mode="area")
    return t, notes
