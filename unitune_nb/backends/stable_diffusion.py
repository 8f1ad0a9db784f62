"""Stable Diffusion behind the same API: one latent stage (``base``) between a VAE encoder and decoder.

What differs from a pixel cascade is said once, in :class:`LatentAdapter`: the stage diffuses VAE
latents, so a late start encodes the source first (img2img strength = ``t0``), and the sample is
decoded to pixels.  Stable Diffusion is here for comparison: UniTune was built on a pixel cascade.
Licence of v1.5: CreativeML OpenRAIL-M.
"""
from __future__ import annotations

import os

import torch

from ..adapters import StageAdapter
from .common import SD_MODEL, PromptEncoder, RealCascade, _device, _load

#: Sampling settings of Stable Diffusion's one stage (guidance, DDIM steps).
SD_DEFAULTS = {"base": {"guidance_scale": 7.5, "steps": 30}}


class LatentAdapter(StageAdapter):
    """A stage that denoises VAE latents: images are encoded before and decoded after."""

    def __init__(self, vae, device: torch.device, schedule: dict, prediction_type: str):
        super().__init__(schedule, prediction_type)
        self.vae = vae
        self.device = device

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] -> scaled latents (the VAE posterior's mean)."""
        v = self.vae
        lat = v.encode(images.to(self.device, v.dtype)).latent_dist.mean
        return lat.float() * v.config.scaling_factor

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        v = self.vae
        return v.decode(latents.to(self.device, v.dtype) / v.config.scaling_factor).sample.float().clamp(-1, 1).cpu()

    def view(self, latents: torch.Tensor) -> torch.Tensor:
        return self.decode(latents)


class SDCascade(RealCascade):
    """Stable Diffusion: one latent stage (``base``)."""

    family = "stable-diffusion"

    def __init__(self, vae, *args, **kw):
        super().__init__(*args, **kw)
        self.vae = vae.eval().requires_grad_(False).to(self.device)
        self.latent_factor = 2 ** (len(vae.config.block_out_channels) - 1)

    def _make_adapter(self, stage: str) -> StageAdapter:
        return LatentAdapter(self.vae, self.device, self.schedule, self.schedule.get("prediction_type", "epsilon"))

    def to_latents(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] -> scaled latents."""
        return self.adapter("base").encode(images)

    def to_images(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> images in [-1, 1]."""
        return self.adapter("base").decode(latents)

    @property
    def sample_sizes(self) -> dict[str, int]:
        return {"base": self._sizes["base"] // self.latent_factor}


def load_sd(model: str | os.PathLike = SD_MODEL, device: str | torch.device | None = None,
            dtype: torch.dtype | None = None, variant: str | None = None, offload: bool = False,
            defaults: dict | None = None) -> SDCascade:
    """Load a Stable Diffusion checkpoint (hub id or local folder) as a one-stage latent cascade."""
    from diffusers import StableDiffusionPipeline

    dev = _device(device)
    dtype = dtype or (torch.float16 if dev.type == "cuda" else torch.float32)
    pipe = _load(StableDiffusionPipeline, str(model), torch_dtype=dtype, variant=variant, safety_checker=None,
                 feature_extractor=None, requires_safety_checker=False)
    pipe.text_encoder.to(dev)
    factor = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    sizes = {"base": pipe.unet.config.sample_size * factor}
    schedule = dict(pipe.scheduler.config, clip_sample=False)  # latents are not bounded to [-1, 1]
    d = {"base": dict(SD_DEFAULTS["base"], **(defaults or {}).get("base", {}))}
    enc = PromptEncoder(pipe.tokenizer, pipe.text_encoder, max_length=pipe.tokenizer.model_max_length, device=dev)
    return SDCascade(pipe.vae, {"base": pipe.unet}, enc, schedule, d, sizes, device=dev, offload=offload)
