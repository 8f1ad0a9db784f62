"""The diffusion core: the noise schedule, the training objective and the sampler, for every stage.

Everything that depends on *what a stage's U-Net predicts* (v, noise, the clean sample, a residual over
the upsampled low-res image, a learned variance, latents) is asked of the stage's
:class:`~unitune_nb.adapters.StageAdapter`; nothing here branches on the kind of model.  Cascade, training,
UniTune's tuning and the baselines all use these functions.

The formulas (DDPM, Ho et al. 2020; classifier-free guidance, Ho & Salimans 2022; Imagen Sec. 2;
UniTune Sec. 3):

* forward noising ``x_t = sqrt(abar_t) * x_0 + sqrt(1 - abar_t) * eps``  (:func:`q_sample`);
* guidance ``pred = pred(baseline) + w * (pred(prompt) - pred(baseline))``  (:func:`guide`): the empty
  prompt as baseline is classifier-free guidance, another prompt is UniTune's *prompt guidance*;
* the objective ``E || f(x_t, t, text) - target ||^2``, min-SNR weighted where the adapter says
  (:func:`diffusion_loss`);
* late start (SDEdit): begin denoising at ``t0 * T`` from the source noised to that time.

The sampler :func:`sample` is a generator that *yields* a :class:`Step` after every denoising step, so
a notebook or widget can draw the trajectory, show a progress bar or stop early without callbacks.
"""
from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, SchedulerMixin, UNet2DConditionModel

from .text import TextEmbedding

if TYPE_CHECKING:  # pragma: no cover
    from .adapters import StageAdapter

NUM_TRAIN_TIMESTEPS = 1000


# ---------------------------------------------------------------------------------------- noise schedule
def train_scheduler(prediction_type: str = "v_prediction") -> DDPMScheduler:
    """The embedded model's noise schedule: 1000 steps, cosine (``squaredcos_cap_v2``)."""
    return DDPMScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS, beta_schedule="squaredcos_cap_v2",
                         prediction_type=prediction_type, clip_sample=False)


def noise_coefficients(alphas_cumprod: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``sqrt(abar_t)`` and ``sqrt(1 - abar_t)`` per batch item, shaped to broadcast against ``like``."""
    ac = alphas_cumprod.to(device=like.device, dtype=like.dtype)
    t = t.to(like.device)
    shape = (-1,) + (1,) * (like.ndim - 1)
    return (ac[t] ** 0.5).reshape(shape), ((1 - ac[t]) ** 0.5).reshape(shape)


def q_sample(alphas_cumprod: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Noise ``x0`` to timestep ``t`` (DDPM's q(x_t | x_0)): ``sqrt(abar_t) x0 + sqrt(1 - abar_t) eps``."""
    alpha, sigma = noise_coefficients(alphas_cumprod, t, x0)
    return alpha * x0 + sigma * noise


def signal_fraction(alphas_cumprod: torch.Tensor, t0: float) -> float:
    """How much of the source's amplitude, ``sqrt(abar_t)``, is left at the late start ``t0`` in (0, 1]."""
    t = min(len(alphas_cumprod) - 1, max(0, int(round(t0 * len(alphas_cumprod))) - 1))
    return float(alphas_cumprod[t] ** 0.5)


def start_timesteps(scheduler: SchedulerMixin, steps: int, t0: float) -> torch.Tensor:
    """The timesteps to run: all of them for ``t0 == 1``, else those at or below ``t0 * T`` (late start)."""
    if not 0.0 < t0 <= 1.0:
        raise ValueError(f"t0 must be in (0, 1], got {t0}")
    scheduler.set_timesteps(steps)
    ts = scheduler.timesteps
    if t0 < 1.0:
        ts = ts[ts <= t0 * scheduler.config.num_train_timesteps]
        if len(ts) == 0:
            ts = scheduler.timesteps[-1:]
    return ts


# ---------------------------------------------------------------------------------------- conditioning
def unet_forward(unet: UNet2DConditionModel, x: torch.Tensor, t: torch.Tensor | int, text: TextEmbedding,
                 low_res: torch.Tensor | None = None, noise_level: torch.Tensor | None = None) -> torch.Tensor:
    """One U-Net call with our conditioning conventions.

    The base stage gets the pooled text through ``class_labels`` (as Imagen adds pooled text to the
    timestep embedding).  Super-resolution stages get the upsampled, noise-augmented low-res image as
    extra input channels and its noise level through ``class_labels`` (as DeepFloyd IF stage II).
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


def augment_low_res(low_res: torch.Tensor, size: int, level: torch.Tensor, alphas_cumprod: torch.Tensor,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """Upsample a low-res image and noise it to the augmentation ``level`` per item (Imagen Sec. 2.5)."""
    up = upsample(low_res, size)
    noise = torch.randn(up.shape, generator=generator, dtype=torch.float32).to(up.device, up.dtype)
    return q_sample(alphas_cumprod, up, noise, level)


def prepare_low_res(low_res: torch.Tensor, size: int, noise_level: int, adapter: StageAdapter,
                    generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The SR stage's low-res input at sampling: upsampled, noised to ``noise_level`` (0 = clean), and the level."""
    lvl = torch.full((low_res.shape[0],), int(noise_level), dtype=torch.long, device=low_res.device)
    if noise_level > 0:
        return augment_low_res(low_res, size, lvl, adapter.alphas_cumprod, generator), lvl
    return upsample(low_res, size), lvl


# ---------------------------------------------------------------------------------------- objective
def _random_crop(rng: random.Random | None, crop: int | None, *xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The same random ``crop`` x ``crop`` window of each tensor (SR stages are fully convolutional)."""
    size = xs[0].shape[-1]
    if not crop or crop >= size:
        return xs
    rng = rng or random.Random()
    i, j = rng.randrange(size - crop + 1), rng.randrange(size - crop + 1)
    return tuple(x[..., i:i + crop, j:j + crop] for x in xs)


def diffusion_loss(unet: UNet2DConditionModel, adapter: StageAdapter, x0: torch.Tensor, text: TextEmbedding,
                   low: torch.Tensor | None = None, generator: torch.Generator | None = None,
                   max_noise_level: int = 350, crop: int | None = None, rng: random.Random | None = None) -> torch.Tensor:
    """A stage's training objective on images ``x0`` in [-1, 1]: ``mean_t w(t) || f(x_t) - target ||^2``.

    ``low`` (SR stages) is the low-res image; it is upsampled and noised to a random augmentation level
    in ``[0, max_noise_level]`` that the U-Net is told (Imagen Sec. 2.5).  What is diffused, the target
    and the weight ``w(t)`` come from ``adapter``.  ``crop`` trains on a random window of that size.
    Used by training and by UniTune's fine-tuning alike.
    """
    param = next(unet.parameters())
    device, dtype = param.device, param.dtype
    b = x0.shape[0]
    images = adapter.encode(x0.to(device, torch.float32))
    lr_in = lvl = up = None
    if low is not None:
        lvl = torch.randint(0, max_noise_level + 1, (b,), generator=generator)
        up = upsample(low.to(device, torch.float32), images.shape[-1])
        lr_in = q_sample(adapter.alphas_cumprod, up, torch.randn(up.shape, generator=generator).to(device), lvl)
        lvl = lvl.to(device)
    z0 = adapter.to_diffused(images, up)
    if lr_in is not None:
        z0, lr_in = _random_crop(rng, crop, z0, lr_in)
    noise = torch.randn(z0.shape, generator=generator).to(device)
    t = torch.randint(0, adapter.num_train_timesteps, (b,), generator=generator).to(device)
    zt = q_sample(adapter.alphas_cumprod, z0, noise, t)
    target = adapter.target(z0, noise, t)
    pred = adapter.output(unet_forward(unet, zt.to(dtype), t, text.to(device, dtype),
                                       None if lr_in is None else lr_in.to(dtype), lvl))
    err = F.mse_loss(pred.float(), target, reduction="none").mean(dim=(1, 2, 3))
    weight = adapter.loss_weight(t)
    return err.mean() if weight is None else (weight * err).mean()


# ---------------------------------------------------------------------------------------- sampler
@dataclass
class Step:
    """State after one denoising step: ``x`` is the new (less noisy) sample, ``x0`` the model's
    current estimate of the clean image, both in the stage's image space ([-1, 1]; latents for a latent stage)."""

    index: int
    t: int
    x: torch.Tensor
    x0: torch.Tensor


def guide(out: torch.Tensor, guidance_scale: float) -> torch.Tensor:
    """Guidance on a batch stacked ``[baseline; prompt]``: ``base + w * (cond - base)`` (CFG / prompt guidance)."""
    base, cond = out.chunk(2)
    return base + guidance_scale * (cond - base)


def _check_sampling(guidance_scale: float, steps: int) -> None:
    if not guidance_scale >= 0:
        raise ValueError(f"guidance_scale must be >= 0, got {guidance_scale}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")


@torch.no_grad()
def sample(unet: UNet2DConditionModel, adapter: StageAdapter, text: TextEmbedding,
           baseline: TextEmbedding | None = None, guidance_scale: float = 1.0, steps: int = 25,
           size: int = 32, generator: torch.Generator | None = None, low_res: torch.Tensor | None = None,
           noise_level: int = 0, x_init: torch.Tensor | None = None, t0: float = 1.0) -> Iterator[Step]:
    """Denoise one stage with DDIM, yielding a :class:`Step` after each scheduler step.

    ``adapter`` is the stage's (:meth:`Cascade.adapter`): it gives the sampling scheduler that matches what
    the U-Net predicts.  ``text`` is the prompt (batch B); ``baseline`` the guidance baseline (the empty
    prompt for CFG, another prompt for prompt guidance), used when ``guidance_scale != 1``.  SR stages
    take ``low_res`` (B, 3, h, w in [-1, 1]) and its augmentation ``noise_level``.  ``x_init`` with
    ``t0 < 1`` starts late from ``x_init`` noised to ``t0`` (SDEdit).
    """
    _check_sampling(guidance_scale, steps)
    param = next(unet.parameters())
    device, dtype = param.device, param.dtype
    scheduler = adapter.scheduler()
    channels = unet.config.in_channels - (low_res.shape[1] if low_res is not None else 0)
    timesteps = start_timesteps(scheduler, steps, t0 if x_init is not None else 1.0)
    x = torch.randn((len(text), channels, size, size), generator=generator, dtype=torch.float32).to(device, dtype)
    up = cond_lr = lvl = None
    if low_res is not None:
        up = upsample(low_res.to(device, dtype), size)
        cond_lr, lvl = prepare_low_res(low_res.to(device, dtype), size, noise_level, adapter, generator)
    if x_init is not None and t0 < 1.0:
        x = scheduler.add_noise(adapter.to_diffused(x_init.to(device, dtype), up), x, timesteps[:1].repeat(len(text)))
    guided = guidance_scale != 1.0 and baseline is not None
    both = TextEmbedding.cat([baseline, text]).to(device, dtype) if guided else text.to(device, dtype)
    twice = (lambda v: torch.cat([v, v]) if guided and v is not None else v)  # noqa: E731
    for i, t in enumerate(timesteps):
        out = adapter.output(unet_forward(unet, twice(x), t, both, twice(cond_lr), twice(lvl)))
        if guided:
            out = guide(out, guidance_scale)
        res = scheduler.step(out, t, x, generator=generator)
        x = res.prev_sample
        yield Step(i, int(t), adapter.from_diffused(x, up), adapter.from_diffused(res.pred_original_sample, up))


def run(steps: Iterator[Step]) -> Step:
    """Exhaust a sampler and return its last step."""
    last = None
    for last in steps:
        pass
    if last is None:
        raise RuntimeError("the sampler ran no step")
    return last
