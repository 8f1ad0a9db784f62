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


def mask_to_tensor(mask, size: int, allowed: tuple[tuple[int, int], ...]) -> torch.Tensor:
    """A user mask (a path, PIL image, array or tensor; nonzero / white = editable) as ``[1, 1, size, size]`` in [0, 1].

    ``allowed`` lists the (height, width) shapes accepted, e.g. the source's original size and the
    output size; anything else is a ValueError.
    """
    import os

    from PIL import Image

    if isinstance(mask, (str, os.PathLike)):
        from .images import read_image

        mask = read_image(mask)[0]
    if isinstance(mask, Image.Image):
        a = np.asarray(mask.convert("L"), dtype=np.float32) / 255.0
    else:
        a = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
        a = np.squeeze(a).astype(np.float32)
        if a.ndim == 3:
            a = a.mean(axis=-1 if a.shape[-1] in (3, 4) else 0)
        if a.max() > 1.0:
            a = a / 255.0
    if a.ndim != 2 or tuple(a.shape) not in allowed:
        raise ValueError(f"mask has shape {tuple(a.shape)}; it must be one of {sorted(set(allowed))} "
                         "(the source image's size or the output size)")
    if a.min() < 0 or a.max() > 1:
        raise ValueError("mask values must lie in [0, 1] (or 0-255 for 8-bit images)")
    t = torch.from_numpy(np.ascontiguousarray(a))[None, None]
    if a.shape != (size, size):
        h, w = a.shape
        s = min(h, w)
        top, left = (h - s) // 2, (w - s) // 2  # the same centre crop as the source image
        t = F.interpolate(t[..., top:top + s, left:left + s], size=(size, size), mode="area")
    return t
