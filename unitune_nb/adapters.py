"""Per-stage prediction adapters: what a stage's U-Net predicts and what it diffuses.

A cascade's stages differ in what their U-Net outputs and in what they denoise: our base stage
predicts *v*, our SR stages predict the *clean residual* over the upsampled low-res image, DeepFloyd IF
predicts *noise* plus a learned variance, Stable Diffusion denoises VAE *latents*.  One
:class:`StageAdapter` per stage knows this, so the sampler and the objective in
:mod:`unitune_nb.diffusion` never branch on the model kind (in the spirit of smalldiffusion's
``PredX0`` / ``PredV`` modifiers).  The sampling scheduler that matches a stage is only to be had from
its adapter (:meth:`StageAdapter.scheduler`), so a stage cannot be sampled with another's.

With ``alpha = sqrt(abar_t)``, ``sigma = sqrt(1 - abar_t)`` and ``x_t = alpha x_0 + sigma eps``:

============  ==========================  ==================================  ===================================
prediction    target                      x_0 from the output ``f``           eps from the output ``f``
============  ==========================  ==================================  ===================================
eps           ``eps``                     ``(x_t - sigma f) / alpha``         ``f``
v             ``alpha eps - sigma x_0``   ``alpha x_t - sigma f``             ``sigma x_t + alpha f``
x0 (sample)   ``x_0``                     ``f``                               ``(x_t - alpha f) / sigma``
============  ==========================  ==================================  ===================================
"""
from __future__ import annotations

import torch
from diffusers import DDIMScheduler, DDPMScheduler

from .diffusion import noise_coefficients


class Prediction:
    """What a U-Net's output means; :attr:`name` is diffusers' ``prediction_type``."""

    name = ""

    def target(self, x0: torch.Tensor, noise: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def to_x0(self, out: torch.Tensor, xt: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def to_eps(self, out: torch.Tensor, xt: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def snr_weight(self, snr: torch.Tensor, gamma: float) -> torch.Tensor:
        """Min-SNR-gamma loss weight (Hang et al. 2023) for this parameterisation."""
        raise NotImplementedError


class PredEps(Prediction):
    name = "epsilon"

    def target(self, x0, noise, alpha, sigma):
        return noise

    def to_x0(self, out, xt, alpha, sigma):
        return (xt - sigma * out) / alpha

    def to_eps(self, out, xt, alpha, sigma):
        return out

    def snr_weight(self, snr, gamma):
        return torch.clamp(snr, max=gamma) / snr


class PredV(Prediction):
    name = "v_prediction"

    def target(self, x0, noise, alpha, sigma):
        return alpha * noise - sigma * x0

    def to_x0(self, out, xt, alpha, sigma):
        return alpha * xt - sigma * out

    def to_eps(self, out, xt, alpha, sigma):
        return sigma * xt + alpha * out

    def snr_weight(self, snr, gamma):
        return torch.clamp(snr, max=gamma) / (snr + 1)


class PredX0(Prediction):
    name = "sample"

    def target(self, x0, noise, alpha, sigma):
        return x0

    def to_x0(self, out, xt, alpha, sigma):
        return out

    def to_eps(self, out, xt, alpha, sigma):
        return (xt - alpha * out) / sigma

    def snr_weight(self, snr, gamma):
        return torch.clamp(snr, max=gamma)


PREDICTIONS = {p.name: p for p in (PredEps(), PredV(), PredX0())}


def prediction(name: str) -> Prediction:
    """The :class:`Prediction` for diffusers' ``prediction_type`` name."""
    if name not in PREDICTIONS:
        raise ValueError(f"prediction_type must be one of {', '.join(PREDICTIONS)}, got {name!r}")
    return PREDICTIONS[name]


class StageAdapter:
    """A pixel stage that diffuses the image itself (our base stage, IF stage I and II).

    ``schedule`` is the scheduler config of the model (noise schedule and DDIM settings);
    ``snr_gamma`` > 0 weighs the loss with min-SNR; ``learned_variance`` says the U-Net also outputs a
    variance (IF): sampling and training use the first half of its channels, i.e. a fixed variance.
    """

    clip_range = 1.0  # where the scheduler clips its x0 estimate (images live in [-1, 1])

    def __init__(self, schedule: dict, prediction_type: str, snr_gamma: float = 0.0, learned_variance: bool = False):
        self.prediction = prediction(prediction_type)
        self.schedule = dict(schedule)
        self.snr_gamma = float(snr_gamma or 0.0)
        self.learned_variance = learned_variance
        self.noise_schedule = DDPMScheduler.from_config(self.schedule, prediction_type=self.prediction.name)
        self.alphas_cumprod = self.noise_schedule.alphas_cumprod
        self.num_train_timesteps = self.noise_schedule.config.num_train_timesteps

    def __repr__(self) -> str:
        return f"{type(self).__name__}(prediction={self.prediction.name!r}, snr_gamma={self.snr_gamma:g})"

    # -- sampling
    def scheduler(self) -> DDIMScheduler:
        """A fresh DDIM scheduler for this stage: the model's schedule, this stage's prediction type and clip range."""
        return DDIMScheduler.from_config(self.schedule, prediction_type=self.prediction.name,
                                         **self._clip_settings())

    def _clip_settings(self) -> dict:
        return {}

    def output(self, out: torch.Tensor) -> torch.Tensor:
        """The U-Net's prediction (its noise half where it also predicts a variance)."""
        return out[:, : out.shape[1] // 2] if self.learned_variance else out

    # -- what is diffused
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] -> the stage's image space (pixels here; latents in a latent stage)."""
        return images

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """The stage's final sample -> an image in [-1, 1]."""
        return x.clamp(-1, 1)

    def view(self, x: torch.Tensor) -> torch.Tensor:
        """A step of the trajectory as an image to look at (as it is for pixels; decoded for latents)."""
        return x

    def to_diffused(self, x: torch.Tensor, up: torch.Tensor | None) -> torch.Tensor:
        """What the diffusion runs on, given the upsampled low-res image ``up`` of an SR stage (or None)."""
        return x

    def from_diffused(self, z: torch.Tensor, up: torch.Tensor | None) -> torch.Tensor:
        return z

    # -- training
    def target(self, z0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The training target for ``z_t = alpha z0 + sigma noise``."""
        alpha, sigma = noise_coefficients(self.alphas_cumprod, t, z0)
        return self.prediction.target(z0, noise, alpha, sigma)

    def to_x0(self, out: torch.Tensor, zt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        alpha, sigma = noise_coefficients(self.alphas_cumprod, t, zt)
        return self.prediction.to_x0(out, zt, alpha, sigma)

    def to_eps(self, out: torch.Tensor, zt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        alpha, sigma = noise_coefficients(self.alphas_cumprod, t, zt)
        return self.prediction.to_eps(out, zt, alpha, sigma)

    def loss_weight(self, t: torch.Tensor) -> torch.Tensor | None:
        """Per-item loss weights (min-SNR), or None for the plain mean."""
        if not self.snr_gamma:
            return None
        ac = self.alphas_cumprod.to(t.device)
        snr = ac[t] / (1 - ac[t])
        return self.prediction.snr_weight(snr, self.snr_gamma)


class ResidualAdapter(StageAdapter):
    """An SR stage that diffuses ``(image - upsample(low_res)) * residual_scale`` (our sr1 / sr2): it starts
    from a blurry but right-coloured image and only learns the detail."""

    def __init__(self, schedule: dict, prediction_type: str, residual_scale: float = 1.0, snr_gamma: float = 0.0,
                 learned_variance: bool = False):
        if not residual_scale > 0:
            raise ValueError(f"residual_scale must be > 0, got {residual_scale}")
        super().__init__(schedule, prediction_type, snr_gamma, learned_variance)
        self.residual_scale = float(residual_scale)

    def _clip_settings(self) -> dict:
        # a residual spans [-2, 2] (times its scale): clip the estimate there, not to the image's [-1, 1]
        return {"clip_sample_range": 2.0 * self.residual_scale}

    def to_diffused(self, x, up):
        return (x - up) * self.residual_scale

    def from_diffused(self, z, up):
        return z / self.residual_scale + up
