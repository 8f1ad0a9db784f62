"""Edit and tuning settings, checked in one place, and the one home of every model's defaults.

:class:`EditSettings` holds the knobs of one UniTune edit (Sec. 3: guidance scale, prompt guidance's
baseline prompt, the late start ``t0``, interpolation and its mask, seed, steps); :class:`TuneSettings`
those of the rare-token fine-tuning (Sec. 3: iterations, batch, learning rate, optimiser).
:data:`MODEL_DEFAULTS` gives each model family its defaults; the engine, the CLI, the editor, the
benchmarks and the notebooks all read them from here (:func:`defaults_for`).  The embedded model's edit
defaults and iteration count were chosen on its edit benchmark (docs/benchmarks.md); the real models
keep the paper's tuning recipe.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

RARE_TOKEN = "beikkpic"  # the paper's rare token
MASK_FROM = ("reconstruction", "source")
OPTIMIZERS = ("adafactor", "adamw")
TRAINABLE = ("most", "all", "attention")
TUNE_METHODS = ("full", "attention", "lora")  # every weight of `trainable`; attention only; a low-rank (LoRA) delta
EDIT_KNOBS = ("guidance_scale", "t0", "interpolation", "mask_from", "weight_scale")  # what a model's defaults fill in
MASK_TYPES = "a path, a PIL image, a NumPy array or a torch tensor"


def _number(name: str, value, low: float, high: float, low_open: bool = False, hint: str = "") -> None:
    """``value`` must be a finite real number in [low, high] (``(low, high]`` when ``low_open``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number{hint}, got {value}")
    if not ((value > low if low_open else value >= low) and value <= high):
        where = (f"in ({low:g}, {high:g}]" if low_open else f"in [{low:g}, {high:g}]") if math.isfinite(high) else \
            (f"> {low:g}" if low_open else f">= {low:g}")
        raise ValueError(f"{name} must be {where}{hint}, got {value}")


def check_int(name: str, value, low: int = 0) -> int:
    """``value`` must be a whole number >= ``low`` (NumPy integers welcome; floats and bools refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a whole number, got {type(value).__name__} {value!r}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return int(value)


def _check_mask(mask) -> None:
    import os

    import numpy as np
    import torch
    from PIL import Image

    if mask is None or isinstance(mask, (str, os.PathLike, Image.Image)):
        return
    if isinstance(mask, (np.ndarray, torch.Tensor)):
        a = mask.detach().cpu().float().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
        if a.dtype.kind not in "biuf":
            raise TypeError(f"mask must hold numbers, got an array of {a.dtype}")
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise ValueError("mask holds NaN or infinite values; give values in [0, 1] (1 / white = may change)")
        return
    raise TypeError(f"mask must be {MASK_TYPES}, got {type(mask).__name__}")


@dataclass(frozen=True)
class EditSettings:
    """The settings of one edit; ``None`` means "the model's default" (:meth:`resolved`).

    ``guidance_scale`` (>= 0; 1 = no guidance) guides away from ``baseline_prompt`` (None / "" = the
    empty prompt: classifier-free guidance; another prompt: prompt guidance).  ``t0`` in (0, 1] starts
    the first stage late from the source noised to ``t0`` (1 = from pure noise).  ``interpolation`` in
    [0, 1] blends the source back in outside the edit mask, estimated against ``mask_from``
    ("reconstruction" or "source") unless a user ``mask`` (white / 1 = may change) is given.  ``seed``
    fixes the noise; ``steps`` sets the DDIM steps (one int, or a dict per stage).  ``weight_scale`` in
    [0, 1] interpolates in weight space between the pristine (0) and the tuned (1) weights of every tuned
    stage before sampling: a second "how much of the source" knob beside ``interpolation``.
    """

    guidance_scale: float | None = None
    baseline_prompt: str | None = None
    t0: float | None = None
    interpolation: float | None = None
    mask: object = None
    mask_from: str | None = None
    seed: int = 0
    steps: int | dict | None = None
    weight_scale: float | None = None

    def resolved(self, defaults: EditSettings) -> EditSettings:
        """These settings with every ``None`` knob taken from ``defaults``."""
        fill = {k: getattr(defaults, k) for k in EDIT_KNOBS if getattr(self, k) is None}
        return replace(self, **fill)

    def check(self) -> EditSettings:
        """Refuse anything out of range, non-finite or of the wrong type, with what to do; returns self."""
        if self.guidance_scale is not None:
            _number("guidance_scale", self.guidance_scale, 0, math.inf, hint=" (1 = no guidance)")
        if self.t0 is not None:
            _number("t0", self.t0, 0, 1, low_open=True, hint=" (1 = start from pure noise)")
        if self.interpolation is not None:
            _number("interpolation", self.interpolation, 0, 1, hint=" (0 = off)")
        if self.weight_scale is not None:
            _number("weight_scale", self.weight_scale, 0, 1, hint=" (0 = the pristine model, 1 = as tuned)")
        if self.baseline_prompt is not None and not isinstance(self.baseline_prompt, str):
            raise TypeError("baseline_prompt must be a string ('' is the empty prompt of plain CFG)")
        if self.mask_from is not None and self.mask_from not in MASK_FROM:
            raise ValueError(f"mask_from must be one of {MASK_FROM}, got {self.mask_from!r}")
        check_int("seed", self.seed)
        steps = self.steps.values() if isinstance(self.steps, dict) else [] if self.steps is None else [self.steps]
        for k in steps:
            check_int("steps", k, 1)
        _check_mask(self.mask)
        return self

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "mask"}


@dataclass(frozen=True)
class TuneSettings:
    """Rare-token fine-tuning settings (Sec. 3): optimiser steps per stage, batch (the pair duplicated),
    learning rate, optimiser ("adafactor" as the paper, or "adamw"), which weights train ("most": the U-Net
    body; "all"; "attention"; or a function of the parameter name), the SR stages' augmentation levels and
    whether they tune on random half-size crops as they were trained.  ``method`` restricts the update (the paper
    tunes everything): "attention" trains the attention blocks only, "lora" a rank-``lora_rank`` delta
    ``W0 + B A`` on the attention projections (at ``lora_lr`` unless ``lr`` is given); ``targets`` narrows
    either.  The same settings apply to every tuned stage."""

    iters: int = 128
    batch_size: int = 4
    lr: float = 1e-4
    optimizer: str = "adafactor"
    trainable: str | Callable[[str], bool] = "most"
    max_noise_level: int = 350
    sr_crops: bool = True
    method: str = "full"  # "full" (the weights `trainable` selects), "attention" (attention layers only), "lora"
    lora_rank: int = 16  # the rank of the LoRA delta on the attention projections (method "lora")
    lora_lr: float = 1e-3  # the learning rate of a LoRA tune when none is given: B starts at zero and only the small factors train
    #: Module-name endings a LoRA delta adapts (peft's target_modules; None: to_q, to_k, to_v, to_out.0), or the
    #: parts of the attention blocks attention-only tuning trains (e.g. ("attn2",): cross-attention; None: all).
    targets: tuple[str, ...] | None = None

    def check(self) -> TuneSettings:
        check_int("iters", self.iters, 1)
        check_int("batch_size", self.batch_size, 1)
        check_int("max_noise_level", self.max_noise_level, 0)
        _number("lr", self.lr, 0, math.inf, low_open=True)
        _number("lora_lr", self.lora_lr, 0, math.inf, low_open=True)
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        check_int("lora_rank", self.lora_rank, 1)
        if self.targets is not None and (not isinstance(self.targets, tuple) or not self.targets or
                                         not all(isinstance(t, str) and t.strip(". ") for t in self.targets)):
            raise ValueError(f"targets must be a non-empty tuple of module names such as ('attn2',) or "
                             f"('to_k', 'to_v'), got {self.targets!r}")
        if self.method not in TUNE_METHODS:
            raise ValueError(f"method must be one of {TUNE_METHODS}, got {self.method!r}")
        if not callable(self.trainable) and self.trainable not in TRAINABLE:
            raise ValueError(f"trainable must be one of {TRAINABLE} or a function of the parameter name")
        return self


@dataclass(frozen=True)
class ModelDefaults:
    """Everything a model family does when not told otherwise."""

    edit: EditSettings
    tune: TuneSettings
    preview_steps: int = 12  # first-stage DDIM steps of a live preview
    rare_token: str = RARE_TOKEN
    #: A first-stage tuning loss still above this at the end means the picture is unlike anything the model
    #: knows (the embedded model knows only its toy world); None: no such check.
    high_loss: float | None = None


_REAL = ModelDefaults(  # the model's own guidance, a late start that keeps the layout, half-strength blend
    edit=EditSettings(guidance_scale=None, t0=0.9, interpolation=0.5, mask_from="source", weight_scale=1.0),
    tune=TuneSettings(iters=128, optimizer="adafactor"))

MODEL_DEFAULTS: dict[str, ModelDefaults] = {
    "embedded": ModelDefaults(
        edit=EditSettings(guidance_scale=3.0, t0=0.95, interpolation=1.0, mask_from="reconstruction",
                          weight_scale=1.0),
        tune=TuneSettings(iters=64, optimizer="adamw"),
        high_loss=0.01),  # world scenes end near 0.002, a photo near 0.04 (docs/benchmarks.md)
    "deepfloyd-if": _REAL,
    "stable-diffusion": _REAL,
}

#: The embedded model's edit knobs as a dict (read them; change a model's defaults in MODEL_DEFAULTS).
EDIT_DEFAULTS = {k: getattr(MODEL_DEFAULTS["embedded"].edit, k) for k in EDIT_KNOBS}


#: The grid of edit settings ``unitune-nb bench-edit --sweep`` scores by default (the embedded defaults were
#: chosen on it).
SWEEP_GRID = {"guidance_scale": [3.0, 4.0, 5.0], "t0": [0.8, 0.9, 0.95], "interpolation": [0.75, 1.0]}


def defaults_for(cascade) -> ModelDefaults:
    """The defaults of ``cascade``'s model family (its ``family`` attribute)."""
    family = getattr(cascade, "family", "embedded")
    if family not in MODEL_DEFAULTS:
        raise ValueError(f"no defaults for model family {family!r}; add them with "
                         f"unitune_nb.settings.register_defaults({family!r}, ModelDefaults(...))")
    return MODEL_DEFAULTS[family]


def register_defaults(family: str, defaults: ModelDefaults) -> None:
    """Give a new model family (a cascade class with that ``family``) its defaults."""
    MODEL_DEFAULTS[family] = defaults
