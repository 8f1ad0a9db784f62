"""DeepFloyd IF behind the embedded cascade's API: stage I (``base``, 64 px) and stage II (``sr1``, 256 px).

IF is the closest open relative of Imagen, the model UniTune was built on (Sec. 3).  What differs from the
embedded cascade is said once, in the stage adapter (:meth:`RealCascade._make_adapter`): the U-Nets
predict noise *and* a variance (we guide and train the noise half and sample with DDIM, a fixed
variance), and stage II diffuses the image itself, not a residual.  Prompts are encoded with T5 once,
without IF's caption cleaning (which would alter a rare token), cached, and T5 can then be freed.
Weights can load in fp16; a stage is up-cast to fp32 while it is tuned.  ``offload=True`` keeps the
U-Nets on the CPU and moves one stage at a time to the GPU.

Licence: the DeepFloyd IF licence (accept it on the model's Hugging Face page, then log in).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from .common import IF_STAGE_I, IF_STAGE_II, PromptEncoder, RealCascade, _device, _load, _text_encoder_kw

#: Per-stage sampling settings of IF (guidance, DDIM steps, stage II's augmentation level).
IF_DEFAULTS = {"base": {"guidance_scale": 7.0, "steps": 30},
               "sr1": {"guidance_scale": 4.0, "steps": 25, "noise_level": 250}}


class IFCascade(RealCascade):
    """DeepFloyd IF stage I (``base``) and stage II (``sr1``) with a shared T5 prompt encoder."""

    family = "deepfloyd-if"


def _load_stage_2(stage_2: str | os.PathLike, dtype: torch.dtype, variant: str | None):
    from diffusers import IFSuperResolutionPipeline

    v2 = variant if variant and not Path(str(stage_2)).is_dir() else None
    return _load(IFSuperResolutionPipeline, str(stage_2), text_encoder=None, tokenizer=None, torch_dtype=dtype,
                 variant=v2, safety_checker=None, feature_extractor=None, watermarker=None,
                 requires_safety_checker=False)


def load_if(stage_1: str | os.PathLike = IF_STAGE_I, stage_2: str | os.PathLike | None = IF_STAGE_II,
            device: str | torch.device | None = None, dtype: torch.dtype | None = None, variant: str | None = None,
            text_encoder_8bit: bool = False, offload: bool = False, defaults: dict | None = None) -> IFCascade:
    """Load DeepFloyd IF stage I (and II) from hub ids or local folders as a cascade UniTune can tune.

    On a GPU the default is fp16 weights (``variant="fp16"`` for hub ids); ``text_encoder_8bit`` loads
    T5 in 8 bits through bitsandbytes; ``offload`` keeps the U-Nets on the CPU between uses.
    ``stage_2=None`` loads stage I only (64 px).
    """
    from diffusers import IFPipeline

    dev = _device(device)
    dtype = dtype or (torch.float16 if dev.type == "cuda" else torch.float32)
    if variant is None and dtype == torch.float16 and not Path(str(stage_1)).is_dir():
        variant = "fp16"
    te_kw = _text_encoder_kw(text_encoder_8bit)
    pipe = _load(IFPipeline, str(stage_1), torch_dtype=dtype, variant=variant, safety_checker=None,
                 feature_extractor=None, watermarker=None, requires_safety_checker=False)
    text_encoder = pipe.text_encoder
    if te_kw:
        from transformers import T5EncoderModel

        text_encoder = _load(T5EncoderModel, str(stage_1), subfolder="text_encoder", **te_kw)
    elif text_encoder is not None:
        text_encoder.to(dev)
    unets = {"base": pipe.unet}
    if stage_2 is not None:
        unets["sr1"] = _load_stage_2(stage_2, dtype, variant).unet
    sizes = {s: u.config.sample_size for s, u in unets.items()}
    d = {s: dict(IF_DEFAULTS[s], **(defaults or {}).get(s, {})) for s in unets}
    enc = PromptEncoder(pipe.tokenizer, text_encoder, max_length=77, device=dev)
    return IFCascade(unets, enc, dict(pipe.scheduler.config), d, sizes, device=dev, offload=offload)
