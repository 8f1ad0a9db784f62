"""Sampling one cascade stage as a generator that yields every step.

The loop follows DDIM (diffusers' :class:`~diffusers.DDIMScheduler`) with classifier-free guidance
(Imagen, Sec. 2.2; UniTune, Sec. 3).  Because it *yields* a :class:`Step` per denoising step, a
notebook or widget can draw the trajectory (``x_t`` and the predicted ``x0``), show a progress
bar, or stop early, without callbacks.

Guidance is written with a general *baseline*: ``pred = pred(baseline) + w * (pred(prompt) -
pred(baseline))``.  With the empty prompt as baseline this is classifier-free guidance; with
another prompt it is UniTune's *prompt guidance*.  ``t0 < 1`` starts late from a noised
``x_init`` (SDEdit, used by UniTune's base stage).
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import SchedulerMixin, UNet2DConditionModel

from .text import TextEmbedding


@dataclass
class Step:
    """State after one denoising step: ``x`` is the new (less noisy) sample, ``x0`` the model's
    current estimate of the clean image, both in [-1, 1]."""

    index: int
    t: int
    x: torch.Tensor
    x0: torch.Tensor


def unet_forward(unet: UNet2DConditionModel, x: torch.Tensor, t: torch.Tensor | int, text: TextEmbedding,
                 low_res: torch.Tensor | None = None, noise_level: torch.Tensor | None = None) -> torch.Tensor:
    """One U-Net call with our conditioning conventions.

    The base stage gets the pooled text through ``class_labels`` (a projection class embedding,
    as Imagen adds pooled text to the timestep embedding).  Super-resolution stages get the
    upsampled, noise-augmented low-res image as extra input channels and its noise level through
    ``class_labels`` (a timestep class embedding, as in DeepFloyd IF stage II).
    """
    if low_res is None:
        class_labels = text.pooled
    else:
        x = torch.cat([x, low_res], dim=1)
        class_labels = noise_level
    if not torch.is_tensor(t) or t.ndim == 0:
        t = torch.full((x.shape[0],), int(t), device=x.device, dtype=torch.long)
    return unet(x, t, encoder_hidden_states=text.states, encoder_attention_mask=text.mask,
                class_labels=class_labels).sample


def upsample(low_res: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear upsampling of a low-res image to ``size`` px: what an SR stage builds on."""
    return F.interpolate(low_res, size=(size, size), mode="bilinear", align_corners=False)


def prepare_low_res(low_res: torch.Tensor, size: int, noise_level: int, scheduler: SchedulerMixin,
                    generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Upsample a low-res image and noise it to ``noise_level`` (augmentation, Imagen Sec. 2.5)."""
    up = upsample(low_res, size)
    lvl = torch.full((up.shape[0],), int(noise_level), dtype=torch.long, device=up.device)
    if noise_level > 0:
        noise = torch.randn(up.shape, generator=generator, dtype=torch.float32).to(up.device, up.dtype)
        up = scheduler.add_noise(up, noise, lvl)
    return up, lvl


def start_timesteps(scheduler: SchedulerMixin, steps: int, t0: float) -> torch.Tensor:
    """The timesteps to run: all of them for ``t0 == 1``, else those at or below ``t0 * T``."""
    if not 0.0 < t0 <= 1.0:
        raise ValueError(f"t0 must be in (0, 1], got {t0}")
    scheduler.set_timesteps(steps)
    ts = scheduler.timesteps
    if t0 < 1.0:
        limit = t0 * scheduler.config.num_train_timesteps
        ts = ts[ts <= limit]
        if len(ts) == 0:
            ts = scheduler.timesteps[-1:]
    return ts


@torch.no_grad()
def sample(unet: UNet2DConditionModel, scheduler: SchedulerMixin, text: TextEmbedding,
           baseline: TextEmbedding | None = None, guidance_scale: float = 1.0, steps: int = 25,
           size: int = 32, generator: torch.Generator | None = None, low_res: torch.Tensor | None = None,
           noise_level: int = 0, residual_scale: float = 1.0, x_init: torch.Tensor | None = None,
           t0: float = 1.0, residual: bool = True) -> Iterator[Step]:
    """Denoise one stage, yielding a :class:`Step` after each scheduler step.

    ``text`` is the prompt (batch B); ``baseline`` the guidance baseline (the empty prompt for
    CFG, another prompt for prompt guidance), used only when ``guidance_scale != 1``.  For SR
    stages pass ``low_res`` (B, 3, h, w in [-1, 1]), ``noise_level`` and the stage's ``residual_scale``
    (they diffuse ``(image - upsample(low_res)) * residual_scale``; ``residual=False`` diffuses the
    image itself, as DeepFloyd IF's stage II does).  A U-Net that also predicts a variance (twice the
    channels, as IF's) is guided and stepped on its noise half only, i.e. with a fixed variance.  ``x_init`` and ``t0 < 1``
    start late from ``x_init`` noised to ``t0`` (SDEdit).
    """
    if guidance_scale < 0:
        raise ValueError(f"guidance_scale must be >= 0, got {guidance_scale}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if residual_scale <= 0:
        raise ValueError(f"residual_scale must be > 0, got {residual_scale}")
    b = len(text)
    dtype = next(unet.parameters()).dtype
    device = next(unet.parameters()).device
    channels = unet.config.in_channels - (low_res.shape[1] if low_res is not None else 0)
    shape = (b, channels, size, size)
    timesteps = start_timesteps(scheduler, steps, t0 if x_init is not None else 1.0)
    x = torch.randn(shape, generator=generator, dtype=torch.float32).to(device, dtype)
    cond_lr = None
    offset = torch.zeros((), device=device, dtype=dtype)  # SR stages denoise the residual over the upsample
    if low_res is not None:
        if residual:
            offset = upsample(low_res.to(device, dtype), size)
        cond_lr, lvl = prepare_low_res(low_res.to(device, dtype), size, noise_level, scheduler, generator)
    if x_init is not None and t0 < 1.0:
        x = scheduler.add_noise((x_init.to(device, dtype) - offset) * residual_scale, x, timesteps[:1].repeat(b))
    guided = guidance_scale != 1.0 and baseline is not None
    both = TextEmbedding.cat([baseline, text]).to(device, dtype) if guided else text.to(device, dtype)
    for i, t in enumerate(timesteps):
        xin = torch.cat([x, x]) if guided else x
        lr_in = (torch.cat([cond_lr, cond_lr]) if guided else cond_lr) if cond_lr is not None else None
        lv_in = (torch.cat([lvl, lvl]) if guided else lvl) if cond_lr is not None else None
        out = unet_forward(unet, xin, t, both, lr_in, lv_in)
        if out.shape[1] == 2 * x.shape[1]:  # learned variance (IF): keep the noise prediction
            out = out[:, : x.shape[1]]
        if guided:
            base, cond = out.chunk(2)
            out = base + guidance_scale * (cond - base)
        res = scheduler.step(out, t, x, generator=generator)
        x = res.prev_sample
        yield Step(i, int(t), x / residual_scale + offset, res.pred_original_sample / residual_scale + offset)


def run(steps: Iterator[Step]) -> Step:
    """Exhaust a sampler and return its last step."""
    last = None
    for last in steps:
        pass
    if last is None:
        raise RuntimeError("the sampler ran no step")
    return last
