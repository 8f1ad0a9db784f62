"""What the real-model backends share: a prompt encoder with a cache, the cascade base class (stage sizes
from the U-Nets, fp32 tuning of half-precision weights, offload) and loading with clear errors."""
from __future__ import annotations

import contextlib
import importlib.util
import os
import warnings
from pathlib import Path
from typing import Sequence

import torch
from diffusers import DDIMScheduler, UNet2DConditionModel

from ..adapters import StageAdapter
from ..cascade import Cascade
from ..text import TextEmbedding, prompt_list

IF_STAGE_I = "DeepFloyd/IF-I-M-v1.0"
IF_STAGE_II = "DeepFloyd/IF-II-M-v1.0"
SD_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"

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


class RealCascade(Cascade):
    """What IF and SD share: stage sizes from the U-Nets, the pipeline's noise schedule, fp32 tuning, offload.

    A subclass says what each stage predicts and diffuses in :meth:`_make_adapter`; its defaults live in
    :data:`unitune_nb.settings.MODEL_DEFAULTS` under its :attr:`family`.
    """

    def __init__(self, unets: dict[str, UNet2DConditionModel], text_encoder: PromptEncoder, schedule: dict,
                 defaults: dict, sizes: dict[str, int], device: str | torch.device = "cpu", offload: bool = False):
        self.unets = {s: u.eval().requires_grad_(False) for s, u in unets.items()}
        self.text_encoder = text_encoder
        self.schedule = dict(schedule)  # the pipeline's scheduler config: noise schedule and prediction type
        self._scheduler = DDIMScheduler.from_config(self.schedule)  # deterministic DDIM, fixed variance
        self.defaults = {s: dict(defaults.get(s, {})) for s in unets}
        self._adapters = {}
        self._sizes = dict(sizes)
        self.device = torch.device(device)
        self.offload = offload
        self._loaded_dtype: dict[str, torch.dtype] = {}  # stages up-cast for tuning -> their loaded dtype
        for u in self.unets.values():
            u.to("cpu" if offload else self.device)

    def _make_adapter(self, stage: str) -> StageAdapter:
        """A pixel stage that predicts what the pipeline's scheduler says; where the scheduler's variance is
        learned (IF) the U-Net's second half of channels is that variance, and sampling keeps it fixed."""
        learned = self.schedule.get("variance_type") in ("learned", "learned_range")
        return StageAdapter(self.schedule, self.schedule.get("prediction_type", "epsilon"), learned_variance=learned)

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


