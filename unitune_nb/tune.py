"""UniTune: fine-tune the cascade on one image under a rare token, then edit by sampling.

Step 1 (UniTune Sec. 3): fine-tune the base stage and the first super-resolution stage on the
pair (source image, rare token), the pair duplicated into a batch, the text encoder frozen.  The SR
stage sees its low-res input noise-augmented as in its training.  The last stage is left untuned.
How many iterations, which optimiser and learning rate: :class:`~unitune_nb.settings.TuneSettings`, per
model family in :data:`~unitune_nb.settings.MODEL_DEFAULTS`.

Step 2 (Sec. 3): sample "rare token + edit prompt" from the tuned model (:mod:`unitune_nb.edit`).

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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from . import edit as editing
from .cascade import FORMAT, Cascade, check_stage
from .edit import EditResult, ReferenceCache
from .images import read_image, square_image, to_tensor
from .settings import (EDIT_DEFAULTS, EDIT_KNOBS, MASK_FROM, OPTIMIZERS, RARE_TOKEN, TRAINABLE, EditSettings, ModelDefaults,
                       TuneSettings, defaults_for)

LORA_ADAPTER = "unitune"  # the peft adapter's name while a LoRA delta is tuned
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")  # the attention projections a LoRA delta adapts

__all__ = ["EDIT_DEFAULTS", "MASK_FROM", "OPTIMIZERS", "RARE_TOKEN", "TRAINABLE", "EditResult", "TuneReport", "TuneStep",
           "UniTune", "make_optimizer"]


class LoraDelta(NamedTuple):
    """A LoRA tune of one stage, kept after it was folded into the weights (what ``save_tuned`` writes)."""

    rank: int
    targets: list[str]  # peft's target_modules
    factors: dict[str, torch.Tensor]  # peft's state dict of the adapter (lora_A / lora_B per module)


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


def _select(name: str, trainable: str | Callable[[str], bool]) -> bool:
    if callable(trainable):
        return bool(trainable(name))
    if trainable == "all":
        return True
    if trainable == "most":  # the U-Net body; the timestep / class embeddings stay as trained
        return not name.startswith(("time_embedding.", "class_embedding.", "add_embedding."))
    return ".attentions." in name or name.startswith("mid_block.attentions")


def make_optimizer(name: str, params: list[torch.nn.Parameter], lr: float) -> torch.optim.Optimizer:
    """The tuning optimiser: ``"adafactor"`` (transformers' Adafactor, the paper's choice, Sec. 3: small
    optimiser state for a large model) or ``"adamw"`` (torch's AdamW, its fused kernel where the torch
    build has one: one kernel for all parameters, faster on a small model).  No weight decay: the tuning
    should move the weights towards the source, nothing else."""
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
        self._trained_sizes: dict[str, int] = {}  # parameters trained per stage in the last tune
        self._lora: dict[str, LoraDelta] = {}  # stage -> its LoRA delta, once folded into the weights
        self._tuned_copy: dict[str, dict[str, torch.Tensor]] = {}  # stage -> its tuned tensors (for weight scales, saving)
        self.weight_scale = 1.0  # where the tuned stages sit between pristine (0) and tuned (1) weights
        self.source: Image.Image | None = None
        self.source_shape: tuple[int, int] | None = None  # the source's size before squaring (a user mask may have it)
        self.rare_token: str | None = None
        self.tuned: tuple[str, ...] = ()
        self.source_notes: list[str] = []
        self.version = 0  # counts changes of the weights or source (keys the reference cache)
        self.references = ReferenceCache()

    # ------------------------------------------------------------------ defaults
    @property
    def defaults(self) -> ModelDefaults:
        """This model family's defaults (:data:`unitune_nb.settings.MODEL_DEFAULTS`)."""
        return defaults_for(self.cascade)

    @property
    def edit_defaults(self) -> dict:
        """The edit knobs :meth:`edit` uses when left at ``None`` (guidance ``None``: the model's own)."""
        e = self.defaults.edit
        return {k: getattr(e, k) for k in EDIT_KNOBS}

    @property
    def default_iters(self) -> int:
        """Tuning iterations per stage when none are given."""
        return self.defaults.tune.iters

    # ------------------------------------------------------------------ source and rare token
    def set_source(self, image) -> list[str]:
        """Use ``image`` (path, PIL, array or tensor) as the source; returns the conversion notes."""
        im, notes = read_image(image)
        self.version += 1
        self.source_shape = (im.height, im.width)
        self.source, more = square_image(im, self.cascade.sizes[self.cascade.stages[-1]])
        self.source_notes = notes + more
        return self.source_notes

    def source_at(self, size: int) -> torch.Tensor:
        """The source as a ``[1, 3, size, size]`` tensor in [-1, 1] (box-filtered down from the source)."""
        if self.source is None:
            raise ValueError("no source image: call tune(image) (or set_source(image)) first")
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
        self._merge_lora(stage, keep=False)
        self._lora.pop(stage, None)
        self._tuned_copy.pop(stage, None)
        self.version += 1
        if stage in self._pristine:
            for n, p in self.cascade.unets[stage].named_parameters():
                p.copy_(self._pristine[stage][n])
        self.cascade.release_tuning(stage)

    def tune_settings(self, **overrides) -> TuneSettings:
        """This model's :class:`TuneSettings` with the given (non-None) fields replaced, checked.  A LoRA tune
        without an ``lr`` takes ``lora_lr``."""
        given = {k: v for k, v in overrides.items() if v is not None}
        if isinstance(given.get("targets"), (list, str)):  # "attn2,to_k" or ["attn2"] as well as a tuple
            t = given["targets"]
            given["targets"] = tuple(x.strip() for x in (t.split(",") if isinstance(t, str) else t))
        cfg = replace(self.defaults.tune, **given)
        if cfg.method == "lora" and "lr" not in given:
            cfg = replace(cfg, lr=cfg.lora_lr)
        return cfg.check()

    def _tune_stages(self, stages: Sequence[str] | None) -> tuple[str, ...]:
        stages = tuple(stages) if stages is not None else self.cascade.stages[:2]  # base + first SR, as the paper
        for s in stages:
            check_stage(s)
            if s not in self.cascade.unets:
                raise ValueError(f"stage {s!r} is not loaded; this cascade has {self.cascade.stages}")
        if not stages:
            raise ValueError("stages is empty; tune at least 'base'")
        return stages

    def tune_steps(self, image=None, rare_token: str = RARE_TOKEN, stages: Sequence[str] | None = None,
                   iters: int | None = None, batch_size: int | None = None, lr: float | None = None,
                   optimizer: str | None = None, trainable: str | Callable[[str], bool] | None = None, seed: int = 0,
                   max_noise_level: int | None = None, sr_crops: bool | None = None, method: str | None = None,
                   lora_rank: int | None = None, targets: Sequence[str] | None = None) -> Iterator[TuneStep]:
        """Fine-tune stage after stage, yielding a :class:`TuneStep` after every optimiser step.

        Breaking out of the loop keeps what was tuned so far.  A ``KeyboardInterrupt`` or a
        non-finite loss puts the stage being tuned back to its pristine weights before the error
        propagates, so the model stays usable.  Always starts from the pristine weights.  Options left at
        ``None`` take the model's :class:`TuneSettings` (:meth:`tune_settings`); ``method`` is "full",
        "attention" (attention layers only) or "lora" (a rank-``lora_rank`` delta through peft, folded into the
        weights when the stage's loop ends); ``targets`` narrows either to some modules (:class:`TuneSettings`).
        """
        stages = self._tune_stages(stages)
        cfg = self.tune_settings(iters=iters, batch_size=batch_size, lr=lr, optimizer=optimizer, trainable=trainable,
                                 max_noise_level=max_noise_level, sr_crops=sr_crops, method=method, lora_rank=lora_rank,
                                 targets=targets)
        self.start_tuning(image, rare_token)
        self.rare_token = rare_token
        text = self.cascade.encode([rare_token] * cfg.batch_size)
        gen = torch.Generator().manual_seed(seed)
        rng = random.Random(seed)
        for stage in stages:
            yield from self._tune_stage(stage, cfg, text, gen, rng, seed)

    def _stage_batch(self, stage: str, cfg: TuneSettings) -> tuple[torch.Tensor, torch.Tensor | None, int | None]:
        """The source at the stage's size (and the stage before's, for an SR stage) as a batch, and the crop."""
        c = self.cascade
        x0 = self.source_at(c.sizes[stage]).repeat(cfg.batch_size, 1, 1, 1)
        i = c.stages.index(stage)
        low = self.source_at(c.sizes[c.stages[i - 1]]).repeat(cfg.batch_size, 1, 1, 1) if i > 0 else None
        crop = c.sizes[stage] // 2 if (low is not None and cfg.sr_crops) else None  # SR stages are fully convolutional
        return x0, low, crop

    def _tune_stage(self, stage: str, cfg: TuneSettings, text, gen: torch.Generator,
                    rng: random.Random, seed: int = 0) -> Iterator[TuneStep]:
        """One stage's tuning loop: ``loss = E||f(x_t, t, rare token) - target||^2``, one optimiser step each."""
        self.cascade.prepare_tuning(stage)
        self._snapshot(stage)
        params = self._trainable(stage, cfg, seed)
        opt = make_optimizer(cfg.optimizer, params, cfg.lr)
        x0, low, crop = self._stage_batch(stage, cfg)
        for p in params:
            p.requires_grad_(True)
        try:
            for i in range(cfg.iters):
                self.set_weight_scale(1.0)  # tuning goes on from the tuned weights, whatever an edit between steps set
                self._tuned_copy.pop(stage, None)
                loss = self.cascade.loss(stage, x0, low, text, gen, rng, crop, cfg.max_noise_level)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"the {stage} loss became {loss.item()} at step {i}; the stage was "
                                             f"reset to its pristine weights. Lower lr (now {cfg.lr}).")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                self.version += 1
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
            self.set_weight_scale(1.0)  # an edit after the last step may have scaled the weights
            self._merge_lora(stage)  # a LoRA delta becomes part of the weights: reset, save and load stay as they are

    def _trainable(self, stage: str, cfg: TuneSettings, seed: int = 0) -> list[torch.nn.Parameter]:
        """The parameters one tuning method trains: those ``cfg.trainable`` selects ("full"), the attention layers
        ("attention"), or a new rank-``cfg.lora_rank`` LoRA delta on the attention projections ("lora", via peft)."""
        unet = self.cascade.unets[stage]
        if cfg.method == "lora":
            with torch.random.fork_rng(devices=[]):  # peft draws A at random: the same seed, the same tune
                torch.manual_seed(seed)
                self._add_lora(stage, cfg.lora_rank, cfg.targets)
            params = [p for n, p in unet.named_parameters() if "lora_" in n]
        else:
            trainable = "attention" if cfg.method == "attention" else cfg.trainable
            params = [p for n, p in unet.named_parameters() if _select(n, trainable) and
                      (cfg.method != "attention" or cfg.targets is None or
                       any(f".{t.strip('.')}." in f".{n}" for t in cfg.targets))]
            if not params:
                raise ValueError(f"trainable={trainable!r}" + (f" with targets={cfg.targets}" if cfg.targets else "") +
                                 f" selects no parameter of stage {stage!r}")
        self._trained_sizes[stage] = sum(p.numel() for p in params)
        return params

    def _add_lora(self, stage: str, rank: int, targets: Sequence[str] | None = None) -> None:
        from peft import LoraConfig

        targets = list(targets or LORA_TARGETS)
        try:
            self.cascade.unets[stage].add_adapter(
                LoraConfig(r=rank, lora_alpha=rank, target_modules=targets), adapter_name=LORA_ADAPTER)
        except ValueError as e:  # peft: no module matched, or a module it cannot adapt (nothing was added)
            unet = self.cascade.unets[stage]
            if not getattr(unet, "peft_config", None):  # diffusers marked the U-Net as holding adapters: undo it
                unet._hf_peft_config_loaded = False
            raise ValueError(f"LoRA targets {targets} do not fit stage {stage!r} ({str(e).splitlines()[0][:160]}); "
                             f"name linear layers by the end of their names, e.g. {list(LORA_TARGETS)}") from e

    def _merge_lora(self, stage: str, keep: bool = True) -> None:
        """Fold a LoRA delta into ``stage``'s weights (``keep``: its low-rank factors are kept for save_tuned) or
        drop it, and take peft's layers out again."""
        unet = self.cascade.unets[stage]
        if LORA_ADAPTER in (getattr(unet, "peft_config", None) or {}):
            if keep:
                from peft.utils import get_peft_model_state_dict

                factors = get_peft_model_state_dict(unet, adapter_name=LORA_ADAPTER)
                cfg = unet.peft_config[LORA_ADAPTER]
                self._lora[stage] = LoraDelta(cfg.r, sorted(cfg.target_modules),
                                              {k: v.detach().cpu().clone() for k, v in factors.items()})
                unet.fuse_lora(adapter_names=[LORA_ADAPTER])
            unet.unload_lora()

    def _load_lora(self, stage: str, rank: int, factors: dict[str, torch.Tensor], path: Path,
                   targets: Sequence[str] | None = None) -> None:
        """Put saved LoRA factors onto ``stage``'s pristine weights and fold them in."""
        from peft.utils import set_peft_model_state_dict

        self.cascade.prepare_tuning(stage)
        self._snapshot(stage)
        self._add_lora(stage, rank, targets)
        try:
            res = set_peft_model_state_dict(self.cascade.unets[stage], factors, adapter_name=LORA_ADAPTER)
            misfits = [k for k in res.missing_keys if "lora_" in k] + list(res.unexpected_keys)
        except RuntimeError as e:  # shapes that do not fit this U-Net
            misfits = [str(e).splitlines()[0]]
        if misfits:
            self._merge_lora(stage, keep=False)
            raise ValueError(f"{path} holds LoRA factors that do not fit stage {stage!r} of this cascade ({misfits[0]})")
        self._merge_lora(stage)

    def tune(self, image, rare_token: str = RARE_TOKEN, stages: Sequence[str] | None = None, iters: int | None = None,
             batch_size: int | None = None, lr: float | None = None, optimizer: str | None = None,
             trainable: str | Callable[[str], bool] | None = None, seed: int = 0, progress: bool = True,
             method: str | None = None, lora_rank: int | None = None, targets: Sequence[str] | None = None) -> TuneReport:
        """Fine-tune on (``image``, ``rare_token``) (:meth:`tune_steps`) with a progress bar; returns a
        :class:`TuneReport`.  Options left at ``None`` take the model's :class:`TuneSettings`."""
        from tqdm.auto import tqdm

        stages = self._tune_stages(stages)
        cfg = self.tune_settings(iters=iters, batch_size=batch_size, lr=lr, optimizer=optimizer, trainable=trainable,
                                 method=method, lora_rank=lora_rank, targets=targets)
        steps = self.tune_steps(image, rare_token, stages, cfg.iters, cfg.batch_size, cfg.lr, cfg.optimizer,
                                cfg.trainable, seed, method=cfg.method, lora_rank=cfg.lora_rank, targets=cfg.targets)
        tokens = self.cascade.text_encoder.tokens(rare_token) if isinstance(rare_token, str) else []
        report = TuneReport(rare_token, tokens, stages, cfg.iters, cfg.batch_size, cfg.lr, cfg.optimizer, {})
        bar = tqdm(total=cfg.iters * len(stages), desc="tune", disable=not progress)
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
        report.notes = list(self.source_notes) + self._loss_warning(report)
        report.trainable_params = {s: self._trained_sizes[s] for s in stages}
        return report

    def _loss_warning(self, report: TuneReport) -> list[str]:
        """A warning (also as a note) when the first stage's loss stayed high: a picture unlike the model's world."""
        limit, first = self.defaults.high_loss, report.stages[0]
        losses = report.losses.get(first, [])
        if limit is None or len(losses) < 8 or float(np.mean(losses[-16:])) <= limit:
            return []
        msg = (f"the {first} tuning loss stayed high ({np.mean(losses[-16:]):.3f} > {limit:g}): this picture is unlike "
               "anything the model knows. The embedded model only knows its toy world (unitune_nb.world), so edits of "
               "other pictures come out as collages of world shapes; for photos use a real model (notebook 07, "
               "unitune_nb.backends.load_if).")
        warnings.warn(msg, stacklevel=3)
        return [msg]

    def reset(self) -> None:
        """Put every tuned stage back to its pristine weights (a copy: fast, exact)."""
        for s in list(self._pristine):
            self._restore(s)
        self.tuned = ()
        self.weight_scale = 1.0

    # ------------------------------------------------------------------ weight-space interpolation
    def _tuned_tensors(self, stage: str) -> dict[str, torch.Tensor]:
        """The tensors tuning changed in ``stage``, as tuned (scale 1), on the CPU."""
        if stage not in self._tuned_copy:
            if self.weight_scale != 1.0:
                raise RuntimeError("the tuned weights were not kept; reset() and tune again")
            pristine = self._pristine[stage]
            self._tuned_copy[stage] = {n: p.detach().to("cpu", copy=True)
                                       for n, p in self.cascade.unets[stage].named_parameters()
                                       if n in pristine and not torch.equal(p.detach().cpu(), pristine[n])}
        return self._tuned_copy[stage]

    @torch.no_grad()
    def set_weight_scale(self, scale: float) -> None:
        """Put every tuned stage at ``w = w_pristine + scale * (w_tuned - w_pristine)``: 0 is the pristine model,
        1 the tuned one.  Weight-space interpolation, a second knob beside the output-space ``interpolation``
        (for a LoRA tune it scales the low-rank delta).  The scale stays until the next edit, tune or reset;
        ``save_tuned`` always saves the tuned weights."""
        EditSettings(weight_scale=scale).check()  # the edit setting's own range check
        if scale == self.weight_scale:
            return
        for stage in self.tuned:
            unet = self.cascade.unets[stage]
            if LORA_ADAPTER in (getattr(unet, "peft_config", None) or {}):  # a LoRA tune not finished: scale its delta
                unet.set_adapters([LORA_ADAPTER], weights=[float(scale)])
                continue
            params = dict(self.cascade.unets[stage].named_parameters())
            for n, w in self._tuned_tensors(stage).items():
                p0 = self._pristine[stage][n]
                params[n].copy_(w if scale == 1.0 else p0 + (w - p0) * scale)
        self.weight_scale = float(scale)
        self.version += 1  # cached references were drawn with the other weights

    # ------------------------------------------------------------------ save / load the tuned delta
    def fingerprint(self, stage: str) -> str:
        """A hash of ``stage``'s pristine weights (a sample of every tensor, and its shape): a tuned file records
        it, so it only loads onto the very weights it was tuned from."""
        import hashlib

        params = self._pristine.get(stage) or {n: p.detach().cpu() for n, p in self.cascade.unets[stage].named_parameters()}
        h = hashlib.sha256()
        for n in sorted(params):
            flat = params[n].reshape(-1).float()
            h.update(n.encode() + str(tuple(params[n].shape)).encode())
            h.update(torch.cat([flat[:2048], flat[-2048:]]).numpy().tobytes())
        return h.hexdigest()[:32]

    def save_tuned(self, path: str | os.PathLike) -> int:
        """Save only the tensors tuning changed (and the source image) as one safetensors file, written whole
        (a temporary file moved into place) and only as a regular file; returns its size in bytes."""
        from .files import write_atomic

        if not self.tuned:
            raise ValueError("nothing is tuned; call tune() first")
        tensors, lora = {}, all(s in self._lora for s in self.tuned)  # a LoRA tune: only its low-rank factors
        for s in self.tuned:
            if lora:
                tensors.update({f"lora/{s}/{k}": v.contiguous() for k, v in self._lora[s].factors.items()})
                continue
            tensors.update({f"{s}/{n}": v.contiguous() for n, v in self._tuned_tensors(s).items()})
        tensors["source"] = torch.from_numpy(np.asarray(self.source).copy())
        meta = {"format": FORMAT + "-tuned", "rare_token": self.rare_token or "", "stages": json.dumps(self.tuned),
                "source_shape": json.dumps(self.source_shape),
                "fingerprint": json.dumps({s: self.fingerprint(s) for s in self.tuned}),
                "lora_ranks": json.dumps({s: self._lora[s].rank for s in self.tuned} if lora else {}),
                "lora_targets": json.dumps({s: self._lora[s].targets for s in self.tuned} if lora else {})}
        path = write_atomic(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta), "tuned file")
        return path.stat().st_size

    def _read_tuned(self, path: Path) -> tuple[dict, dict[str, torch.Tensor], dict]:
        """A tuned file's metadata and tensors, all checked against this cascade before anything changes; and the
        parameters they replace."""
        from safetensors import safe_open

        from .files import input_file

        input_file(path, "tuned file")
        try:
            with safe_open(str(path), "pt") as f:
                meta = f.metadata() or {}
            tensors = load_file(str(path))
        except Exception as e:  # safetensors raises its own error type for truncated or foreign files
            raise ValueError(f"{path} cannot be read as a safetensors file ({e}); save it again with save_tuned") from e
        if meta.get("format") != FORMAT + "-tuned":
            raise ValueError(f"{path} is not a unitune_nb tuned file (format {meta.get('format')!r})")
        if "source" not in tensors or "stages" not in meta:
            raise ValueError(f"{path} is incomplete (no source image or stage list); save it again with save_tuned")
        stages = tuple(json.loads(meta["stages"]))
        params = {s: dict(self.cascade.unets[s].named_parameters()) for s in stages if s in self.cascade.unets}
        self._check_tuned_tensors(path, tensors, params)
        saved = json.loads(meta.get("fingerprint", "{}"))
        for s, fp in saved.items():
            if s in params and fp != self.fingerprint(s):
                raise ValueError(f"{path} was tuned from other weights of stage {s!r} than this cascade's (same shapes, "
                                 "different values); load it onto the cascade it was tuned on")
        return meta, tensors, params

    @staticmethod
    def _check_tuned_tensors(path: Path, tensors: dict[str, torch.Tensor], params: dict) -> None:
        for key, v in tensors.items():
            if key == "source":
                continue
            s, _, n = key.partition("/")
            if s == "lora":  # LoRA factors (lora/stage/name): peft checks that they fit when they are loaded
                s, _, n = n.partition("/")
                if s not in params:
                    raise ValueError(f"{path} was tuned on a different cascade ({key} does not fit this one)")
            elif s not in params or n not in params[s] or params[s][n].shape != v.shape:
                raise ValueError(f"{path} was tuned on a different cascade ({key} does not fit this one)")
            if v.is_floating_point() and not torch.isfinite(v).all():
                raise ValueError(f"{path} holds NaN or infinite weights ({key}); tune again")

    def load_tuned(self, path: str | os.PathLike) -> None:
        """Load a file from :meth:`save_tuned` onto the pristine weights of this cascade: all of it or, when any
        check fails (format, shapes, finite values, the weights it was tuned from), nothing."""
        path = Path(path)
        meta, tensors, params = self._read_tuned(path)
        self.reset()
        targets = json.loads(meta.get("lora_targets") or "{}")
        for s, rank in json.loads(meta.get("lora_ranks") or "{}").items():
            prefix = f"lora/{s}/"
            try:
                self._load_lora(s, rank, {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}, path,
                                targets.get(s))
            except ValueError:
                self.reset()  # all or nothing
                raise
        with torch.no_grad():
            for key, v in tensors.items():
                if key != "source" and not key.startswith("lora/"):
                    s, n = key.split("/", 1)
                    self.cascade.prepare_tuning(s)  # tuned weights live in fp32, as after tune()
                    self._snapshot(s)
                    params[s][n].copy_(v)
        self.source = Image.fromarray(tensors["source"].numpy())
        shape = json.loads(meta.get("source_shape", "null"))
        self.source_shape = tuple(shape) if shape else (self.source.height, self.source.width)
        self.rare_token = meta.get("rare_token") or None
        self.tuned = tuple(json.loads(meta["stages"]))
        self.version += 1

    # ------------------------------------------------------------------ editing
    def edit(self, prompt: str, guidance_scale: float | None = None, baseline_prompt: str | None = None,
             t0: float | None = None, interpolation: float | None = None, mask=None, seed: int = 0,
             steps: int | dict[str, int] | None = None, stages: Sequence[str] | None = None,
             return_intermediates: bool = False, mask_from: str | None = None,
             weight_scale: float | None = None) -> EditResult:
        """Sample an edit of the source from the (tuned) cascade (:mod:`unitune_nb.edit`, steps 1-5).

        ``prompt``: "[rare token] edit prompt".  ``guidance_scale``: first-stage guidance.
        ``baseline_prompt``: prompt guidance, the guidance baseline is this prompt instead of the empty one.
        ``t0`` in (0, 1]: late start of the first stage from the source noised to ``t0`` (1 = from pure
        noise).  ``interpolation`` in [0, 1]: strength of blending the source back in outside the edit mask,
        estimated against ``mask_from``: ``"reconstruction"`` (the first stage's sample of the rare token
        alone, same seed and late start, so the model's own reconstruction error cancels out) or
        ``"source"``.  ``mask``: a user mask (white / 1 = may change) that confines the edit instead.  Same
        seed, same image.  ``weight_scale`` in [0, 1]: sample from ``w_pristine + weight_scale * (w_tuned -
        w_pristine)`` (:meth:`set_weight_scale`; 1 = the tuned model).  Options left at ``None`` take :attr:`edit_defaults`
        (:class:`~unitune_nb.settings.EditSettings` checks them all).
        """
        settings = EditSettings(guidance_scale, baseline_prompt, t0, interpolation, mask, mask_from, seed, steps,
                                weight_scale)
        return editing.edit(self, prompt, settings, stages, return_intermediates)
