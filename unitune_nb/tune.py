"""UniTune: fine-tune the cascade on one image under a rare token, then edit by sampling.

Step 1 (UniTune Sec. 3.1): fine-tune the base stage and the first super-resolution stage on the
pair (source image, rare token), the pair duplicated into a batch, the text encoder frozen, with
Adafactor (the real models) or AdamW (the embedded model: the same edits, a tenth of the optimiser time
and the whole tune about a third faster on a CPU; docs/benchmarks.md).  The SR stage sees its low-res
input noise-augmented as in its training.  The last stage is left untuned.

Step 2 (Sec. 3.2): sample "rare token + edit prompt" from the tuned model, with classifier-free
guidance or *prompt guidance* (a baseline prompt instead of the empty one), optionally starting
the base stage late from the noised source (SDEdit, ``t0 < 1``), then *interpolate*: blend the
source back in where the edit did not change things.

The tuned weights live in memory; the pristine ones are kept aside, so ``reset()`` is a copy and
a new image can be tuned at once.
"""
from __future__ import annotations

import json
import os
import random
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file

from .cascade import FORMAT, Cascade, check_stage
from .images import read_image, square_image, strip, to_pil, to_tensor
from .interpolation import blend, estimate_mask, mask_to_tensor
from .sample import Step

RARE_TOKEN = "beikkpic"
# Edit settings used when edit() is not told otherwise; chosen on the edit benchmark's Pareto front
# (docs/benchmarks.md, `unitune-nb bench-edit --sweep`).  guidance_scale None would mean the weights'
# default for generation (2), which is too weak to pull a tuned model away from its source.
EDIT_DEFAULTS = {"guidance_scale": 3.0, "t0": 0.95, "interpolation": 1.0, "mask_from": "reconstruction"}
MASK_FROM = ("reconstruction", "source")
TRAINABLE = ("most", "all", "attention")
OPTIMIZERS = ("adafactor", "adamw")


@dataclass
class TuneStep:
    """One fine-tuning step: the stage, its step index and the loss."""

    stage: str
    index: int
    loss: float


@dataclass
class TuneReport:
    """What :meth:`UniTune.tune` did: losses per stage and step, seconds, how the rare token splits."""

    rare_token: str
    tokens: list[str]
    stages: tuple[str, ...]
    iters: int
    batch_size: int
    lr: float
    optimizer: str
    trainable_params: dict[str, int]
    losses: dict[str, list[float]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        parts = [f"{s}: {len(self.losses.get(s, []))} steps, loss {np.mean(self.losses[s][:8]):.4f} -> "
                 f"{np.mean(self.losses[s][-8:]):.4f}, {self.seconds.get(s, 0):.1f} s"
                 for s in self.stages if self.losses.get(s)]
        return f"tuned {self.rare_token!r} ({' + '.join(self.tokens)}): " + "; ".join(parts)


@dataclass
class EditResult:
    """One edit: the final image, every stage's image, the raw sample before interpolation, the mask."""

    prompt: str
    image: Image.Image
    images: dict[str, Image.Image]
    raw: Image.Image
    source: Image.Image
    mask: np.ndarray
    settings: dict
    seconds: dict[str, float]
    intermediates: dict[str, list[Step]] = field(default_factory=dict)
    reference: Image.Image | None = None  # the first stage's sample of the rare token alone (mask_from="reconstruction")

    def strip(self, size: int = 128) -> Image.Image:
        """Source, raw sample, mask and final image side by side."""
        m = Image.fromarray((self.mask * 255).round().astype(np.uint8)).convert("RGB")
        return strip([self.source, self.raw, m, self.image], size)


def _select(name: str, trainable: str | Callable[[str], bool]) -> bool:
    if callable(trainable):
        return bool(trainable(name))
    if trainable == "all":
        return True
    if trainable == "most":  # the U-Net body; the timestep / class embeddings stay as trained
        return not name.startswith(("time_embedding.", "class_embedding.", "add_embedding."))
    return ".attentions." in name or name.startswith("mid_block.attentions")


def make_optimizer(name: str, params: list[torch.nn.Parameter], lr: float) -> torch.optim.Optimizer:
    """The tuning optimiser: ``"adafactor"`` (transformers' Adafactor, the paper's choice: Sec. 3, small
    optimiser state for a large model) or ``"adamw"`` (torch's AdamW, its fused kernel where the torch
    build has one: one kernel for all parameters, where Adafactor runs a dozen small operations per
    tensor).  No weight decay: the tuning should move the weights towards the source, nothing else."""
    if name == "adafactor":
        from transformers.optimization import Adafactor

        return Adafactor(params, lr=lr, scale_parameter=False, relative_step=False, warmup_init=False)
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=0.0, fused=True)
    except (RuntimeError, TypeError, ValueError):  # an older torch or a device without the fused kernel
        return torch.optim.AdamW(params, lr=lr, weight_decay=0.0)


class UniTune:
    """Rare-token fine-tuning and editing on a cascade (the embedded one by default).

    >>> ut = UniTune()
    >>> ut.tune(image)                          # doctest: +SKIP
    >>> ut.edit("beikkpic at night").image      # doctest: +SKIP
    """

    def __init__(self, cascade: Cascade | None = None):
        self.cascade = cascade or Cascade.from_pretrained()
        self._pristine: dict[str, dict[str, torch.Tensor]] = {}
        self.source: Image.Image | None = None
        self._source_shape: tuple[int, int] | None = None
        self.rare_token: str | None = None
        self.tuned: tuple[str, ...] = ()
        self.source_notes: list[str] = []
        self._changes = 0  # counts changes of the weights or source (keys the reference cache)
        self._reference: tuple[tuple, torch.Tensor] | None = None

    # ------------------------------------------------------------------ source and rare token
    def set_source(self, image) -> list[str]:
        """Use ``image`` (path, PIL, array or tensor) as the source; returns the conversion notes."""
        im, notes = read_image(image)
        self._changes += 1
        self._source_shape = (im.height, im.width)  # a user mask may come at this size
        self.source, more = square_image(im, self.cascade.sizes[self.cascade.stages[-1]])
        notes = notes + more
        self.source_notes = notes
        return notes

    def _source_at(self, size: int) -> torch.Tensor:
        assert self.source is not None
        im = self.source if self.source.width == size else self.source.resize((size, size), Image.BOX)
        return to_tensor(im)

    def check_rare_token(self, rare_token: str) -> list[str]:
        """How the tokenizer splits the rare token; warns when it is a word the encoder knows."""
        if not isinstance(rare_token, str) or not rare_token.strip():
            raise ValueError("rare_token must be a non-empty string, e.g. 'beikkpic'")
        te = self.cascade.text_encoder
        tokens = te.tokens(rare_token)
        known = [w for w in rare_token.split() if te.is_known_word(w)]
        if known:
            warnings.warn(f"rare token {rare_token!r} contains word(s) the text encoder knows ({', '.join(known)}): "
                          "tuning will mix the image with that meaning. Pick a nonsense word such as 'beikkpic'.",
                          stacklevel=3)
        return tokens

    # ------------------------------------------------------------------ tuning
    def start_tuning(self, image, rare_token: str) -> None:
        """Checks shared by every tuning method: the rare token, the source (``image`` or the current
        one), then the pristine weights back."""
        self.check_rare_token(rare_token)
        if image is not None:
            self.set_source(image)
        if self.source is None:
            raise ValueError("no source image: pass image= (a path, PIL image, array or tensor)")
        self.reset()

    def _snapshot(self, stage: str) -> None:
        if stage not in self._pristine:
            self._pristine[stage] = {n: p.detach().to("cpu", copy=True)  # on the CPU: no extra GPU memory
                                     for n, p in self.cascade.unets[stage].named_parameters()}

    @torch.no_grad()
    def _restore(self, stage: str) -> None:
        self._changes += 1
        if stage in self._pristine:
            for n, p in self.cascade.unets[stage].named_parameters():
                p.copy_(self._pristine[stage][n])
        self.cascade.release_tuning(stage)

    @property
    def edit_defaults(self) -> dict:
        """The options :meth:`edit` takes when left at ``None``: :data:`EDIT_DEFAULTS` for the embedded model,
        a real model's own ``edit_defaults`` (its mask estimated against the source unless they say otherwise)."""
        own = getattr(self.cascade, "edit_defaults", None)
        return dict(EDIT_DEFAULTS) if own is None else {"mask_from": "source", **own}

    @property
    def default_iters(self) -> int:
        """Tuning iterations per stage when none are given: the cascade's ``tune_iters`` (else the paper's 128)."""
        return int(getattr(self.cascade, "tune_iters", 128))

    def tune_steps(self, image=None, rare_token: str = RARE_TOKEN, stages: Sequence[str] | None = None,
                   iters: int | None = None, batch_size: int = 4, lr: float = 1e-4, optimizer: str | None = None,
                   trainable: str | Callable[[str], bool] = "most", seed: int = 0,
                   max_noise_level: int = 350, sr_crops: bool = True) -> Iterator[TuneStep]:
        """Fine-tune stage after stage, yielding a :class:`TuneStep` after every optimiser step.

        Breaking out of the loop keeps what was tuned so far.  A ``KeyboardInterrupt`` or a
        non-finite loss puts the stage being tuned back to its pristine weights before the error
        propagates, so the model stays usable.  Always starts from the pristine weights.
        ``iters``: optimiser steps per stage, ``None`` for the cascade's ``tune_iters`` (the embedded model: 64,
        chosen on the edit benchmark; real models: the paper's 128).
        ``optimizer``: ``"adafactor"``, ``"adamw"`` or ``None`` for the cascade's ``tune_optimizer``
        (:func:`make_optimizer`).  With ``sr_crops`` (default) SR stages tune on random half-size crops, as
        they were trained: about 3x less time per SR step on a CPU (0.50 -> 0.16 s at batch 4, one thread).
        """
        stages = tuple(stages) if stages is not None else self.cascade.stages[:2]  # base + first SR, as the paper
        for s in stages:
            check_stage(s)
            if s not in self.cascade.unets:
                raise ValueError(f"stage {s!r} is not loaded; this cascade has {self.cascade.stages}")
        if not stages:
            raise ValueError("stages is empty; tune at least 'base'")
        iters = self.default_iters if iters is None else iters
        if iters < 1 or batch_size < 1:
            raise ValueError(f"iters and batch_size must be >= 1, got iters={iters}, batch_size={batch_size}")
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        optimizer = optimizer or self.cascade.tune_optimizer
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
        if not callable(trainable) and trainable not in TRAINABLE:
            raise ValueError(f"trainable must be one of {TRAINABLE} or a function of the parameter name")
        self.start_tuning(image, rare_token)
        self.rare_token = rare_token
        text = self.cascade.encode([rare_token] * batch_size)
        gen = torch.Generator().manual_seed(seed)
        rng = random.Random(seed)
        for stage in stages:
            self.cascade.prepare_tuning(stage)
            unet = self.cascade.unets[stage]
            self._snapshot(stage)
            params = [p for n, p in unet.named_parameters() if _select(n, trainable)]
            if not params:
                raise ValueError(f"trainable={trainable!r} selects no parameter of stage {stage!r}")
            opt = make_optimizer(optimizer, params, lr)
            size = self.cascade.sizes[stage]
            x0 = self._source_at(size).repeat(batch_size, 1, 1, 1)
            order = self.cascade.stages
            prev = order[order.index(stage) - 1] if order.index(stage) > 0 else None
            low = self._source_at(self.cascade.sizes[prev]).repeat(batch_size, 1, 1, 1) if prev else None
            crop = size // 2 if (low is not None and sr_crops) else None  # SR stages are fully convolutional
            for p in params:
                p.requires_grad_(True)
            try:
                for i in range(iters):
                    loss = self.cascade.loss(stage, x0, low, text, gen, rng, crop, max_noise_level)
                    if not torch.isfinite(loss):
                        raise FloatingPointError(f"the {stage} loss became {loss.item()} at step {i}; the stage was "
                                                 f"reset to its pristine weights. Lower lr (now {lr}).")
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    self._changes += 1
                    self.tuned = tuple(dict.fromkeys(self.tuned + (stage,)))
                    yield TuneStep(stage, i, loss.item())
            except (KeyboardInterrupt, FloatingPointError):
                self._restore(stage)
                self.tuned = tuple(s for s in self.tuned if s != stage)
                raise
            finally:
                for p in params:
                    p.requires_grad_(False)
                    p.grad = None

    def tune(self, image, rare_token: str = RARE_TOKEN, stages: Sequence[str] | None = None, iters: int | None = None,
             batch_size: int = 4, lr: float = 1e-4, optimizer: str | None = None,
             trainable: str | Callable[[str], bool] = "most", seed: int = 0, progress: bool = True) -> TuneReport:
        """Fine-tune on (``image``, ``rare_token``) with the paper's settings (Sec. 3: batch 4, lr 1e-4) and the
        cascade's iteration count and optimiser (:meth:`tune_steps`); returns a :class:`TuneReport`."""
        from tqdm.auto import tqdm

        stages = tuple(stages) if stages is not None else self.cascade.stages[:2]
        optimizer = optimizer or self.cascade.tune_optimizer
        iters = self.default_iters if iters is None else iters
        steps = self.tune_steps(image, rare_token, stages, iters, batch_size, lr, optimizer, trainable, seed)
        report = TuneReport(rare_token, self.cascade.text_encoder.tokens(rare_token) if isinstance(rare_token, str)
                            else [], stages, iters, batch_size, lr, optimizer, {})
        bar = tqdm(total=iters * len(stages), desc="tune", disable=not progress)
        last = time.perf_counter()
        try:
            for st in steps:
                now = time.perf_counter()
                report.losses.setdefault(st.stage, []).append(st.loss)
                report.seconds[st.stage] = report.seconds.get(st.stage, 0.0) + now - last
                last = now
                bar.update(1)
                bar.set_postfix(stage=st.stage, loss=f"{st.loss:.4f}")
        finally:
            bar.close()
        report.notes = list(self.source_notes)
        report.trainable_params = {s: sum(p.numel() for n, p in self.cascade.unets[s].named_parameters()
                                          if _select(n, trainable)) for s in stages}
        return report

    def reset(self) -> None:
        """Put every tuned stage back to its pristine weights (a copy: fast, exact)."""
        for s in list(self._pristine):
            self._restore(s)
        self.tuned = ()

    # ------------------------------------------------------------------ save / load the tuned delta
    def save_tuned(self, path: str | os.PathLike) -> int:
        """Save only the tensors tuning changed (and the source image) as one safetensors file; returns bytes."""
        if not self.tuned:
            raise ValueError("nothing is tuned; call tune() first")
        tensors = {}
        for s in self.tuned:
            for n, p in self.cascade.unets[s].named_parameters():
                if not torch.equal(p, self._pristine[s][n]):
                    tensors[f"{s}/{n}"] = p.detach().contiguous()
        tensors["source"] = torch.from_numpy(np.asarray(self.source).copy())
        meta = {"format": FORMAT + "-tuned", "rare_token": self.rare_token or "", "stages": json.dumps(self.tuned),
                "source_shape": json.dumps(self._source_shape)}
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(path), metadata=meta)
        return path.stat().st_size

    def load_tuned(self, path: str | os.PathLike) -> None:
        """Load a file from :meth:`save_tuned` onto the pristine weights of this cascade."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"tuned file {path} does not exist")
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        if meta.get("format") != FORMAT + "-tuned":
            raise ValueError(f"{path} is not a unitune_nb tuned file (format {meta.get('format')!r})")
        tensors = load_file(str(path))
        stages = tuple(json.loads(meta["stages"]))
        params = {s: dict(self.cascade.unets[s].named_parameters()) for s in stages if s in self.cascade.unets}
        for key, v in tensors.items():
            if key == "source":
                continue
            s, n = key.split("/", 1)
            if s not in params or n not in params[s] or params[s][n].shape != v.shape:
                raise ValueError(f"{path} was tuned on a different cascade ({key} does not fit this one)")
        self.reset()
        with torch.no_grad():
            for key, v in tensors.items():
                if key != "source":
                    s, n = key.split("/", 1)
                    self.cascade.prepare_tuning(s)  # tuned weights live in fp32, as after tune()
                    self._snapshot(s)
                    params[s][n].copy_(v)
        self.source = Image.fromarray(tensors["source"].numpy())
        shape = json.loads(meta.get("source_shape", "null"))
        self._source_shape = tuple(shape) if shape else (self.source.height, self.source.width)
        self.rare_token = meta.get("rare_token") or None
        self.tuned = stages
        self._changes += 1

    # ------------------------------------------------------------------ editing
    def edit(self, prompt: str, guidance_scale: float | None = None, baseline_prompt: str | None = None,
             t0: float | None = None, interpolation: float | None = None, mask=None, seed: int = 0,
             steps: int | dict[str, int] | None = None, stages: Sequence[str] | None = None,
             return_intermediates: bool = False, mask_from: str | None = None) -> EditResult:
        """Sample an edit of the source from the (tuned) cascade.

        ``prompt``: "[rare token] edit prompt".  ``guidance_scale``: base-stage guidance (default
        from the weights).  ``baseline_prompt``: prompt guidance — the guidance baseline is this
        prompt instead of the empty one.  ``t0`` in (0, 1]: late start of the base stage from the
        source noised to ``t0`` (1 = from pure noise).  ``interpolation`` in [0, 1]: strength of
        blending the source back in outside the estimated edit mask.  ``mask_from`` says what the
        edit is compared with to estimate that mask: ``"reconstruction"`` (default) — the first stage's
        sample of the rare token alone, same seed, same late start, so the model's own reconstruction
        error cancels out and only what the edit words changed counts (one more first-stage sample,
        reused while the weights, source and settings stay the same); ``"source"`` — the source image.
        ``mask``: a user mask (white / 1 = may change) that confines the edit instead.  Same seed, same
        image.  Options left at ``None`` take :attr:`edit_defaults` (the embedded model's chosen on the edit
        benchmark).
        """
        c = self.cascade
        if self.source is None:
            raise ValueError("no source image: call tune(image) (or set_source(image)) first")
        d = self.edit_defaults
        guidance_scale = d["guidance_scale"] if guidance_scale is None else guidance_scale
        t0 = d["t0"] if t0 is None else t0
        interpolation = d["interpolation"] if interpolation is None else interpolation
        mask_from = d["mask_from"] if mask_from is None else mask_from
        if mask_from not in MASK_FROM:
            raise ValueError(f"mask_from must be one of {MASK_FROM}, got {mask_from!r}")
        c.check_prompt(prompt)
        if baseline_prompt is not None:
            if not isinstance(baseline_prompt, str):
                raise TypeError("baseline_prompt must be a string ('' is the empty prompt of plain CFG)")
        if guidance_scale is not None and not guidance_scale >= 0:
            raise ValueError(f"guidance_scale must be >= 0 (1 = no guidance), got {guidance_scale}")
        if not 0.0 < t0 <= 1.0:
            raise ValueError(f"t0 must be in (0, 1] (1 = start from pure noise), got {t0}")
        if not 0.0 <= interpolation <= 1.0:
            raise ValueError(f"interpolation must be in [0, 1] (0 = off), got {interpolation}")
        if self.rare_token and self.rare_token not in prompt:
            warnings.warn(f"the prompt does not contain the rare token {self.rare_token!r}, so the edit is not tied "
                          f"to the source image; write e.g. '{self.rare_token} {prompt}'", stacklevel=2)
        if not self.tuned:
            warnings.warn("the model is not tuned on the source image: this is plain text-to-image (or SDEdit "
                          "with t0 < 1); call tune(image) first", stacklevel=2)
        stages = c.check_stages(stages)
        size = self.cascade.sizes[stages[-1]]
        m_user = None
        if mask is not None:
            m_user = mask_to_tensor(mask, size, allowed=(self._source_shape or (size, size), (size, size)))
        baseline = c.encode(baseline_prompt if baseline_prompt is not None else "")
        x_init = self._source_at(self.cascade.sizes[stages[0]]) if t0 < 1.0 else None
        run = c.run(c.encode(prompt), baseline, torch.Generator().manual_seed(seed), stages, guidance_scale, steps,
                    return_intermediates, x_init=x_init, t0=t0)
        imgs, secs, used, inter = run.images, run.seconds, run.settings, run.intermediates
        raw = imgs[stages[-1]]
        src = self._source_at(size)
        ref = None
        t = time.perf_counter()
        if m_user is not None:
            m = m_user
            final = blend(raw, src, m, 1.0)
        elif interpolation > 0 and mask_from == "reconstruction":
            ref_prompt = self.rare_token if self.rare_token and self.rare_token in prompt else ""
            ref = self._reconstruction(ref_prompt, baseline, seed, stages[0], guidance_scale, steps, x_init, t0)
            secs["reference"] = time.perf_counter() - t  # ~0 when the last reference still holds
            t = time.perf_counter()
            m = estimate_mask(imgs[stages[0]], ref)
            if m.shape[-1] != size:
                m = F.interpolate(m, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
            final = blend(raw, src, m, interpolation)
        else:  # compared with the source (also the mask shown when interpolation is off)
            m = estimate_mask(raw, src)
            final = blend(raw, src, m, interpolation) if interpolation > 0 else raw
        secs["interpolation"] = time.perf_counter() - t
        settings = {"prompt": prompt, "guidance_scale": used["base"]["guidance_scale"], "baseline_prompt": baseline_prompt,
                    "t0": t0, "interpolation": interpolation, "user_mask": mask is not None, "seed": seed,
                    "mask_from": "user" if mask is not None else mask_from,
                    "stages": used, "tuned": self.tuned, "rare_token": self.rare_token}
        return EditResult(prompt, to_pil(final)[0], {s: to_pil(v)[0] for s, v in imgs.items()}, to_pil(raw)[0],
                          to_pil(src)[0], m[0, 0].numpy(), settings, secs, inter,
                          to_pil(ref)[0] if ref is not None else None)

    def _reconstruction(self, prompt: str, baseline, seed: int, stage: str, guidance_scale: float | None,
                        steps, x_init: torch.Tensor | None, t0: float) -> torch.Tensor:
        """The first stage's sample of ``prompt`` (the rare token) with an edit's seed and settings: what the
        tuned model draws for the source alone.  The last one is kept while nothing it depends on changed."""
        text = self.cascade.encode(prompt)
        def fp(e) -> bytes:  # a changed word embedding (Textual Inversion) changes the encoding
            return e.pooled.detach().float().cpu().numpy().tobytes()

        key = (self._changes, prompt, fp(text), fp(baseline), seed, stage, guidance_scale,
               json.dumps(steps, sort_keys=True), t0)
        if self._reference is None or self._reference[0] != key:
            r = self.cascade.run(text, baseline, torch.Generator().manual_seed(seed), (stage,), guidance_scale,
                                 steps, x_init=x_init, t0=t0)
            self._reference = (key, r.images[stage])
        return self._reference[1]
