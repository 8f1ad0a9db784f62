"""The embedded mini-Imagen: a frozen text encoder and a cascade of three pixel diffusion U-Nets.

Imagen (and so UniTune, Sec. 3) generates with a cascade: a *base* stage draws a small image from
text, then super-resolution stages (*sr1*, *sr2*) upsample it, each conditioned on the text and on
the noise-augmented, upsampled output of the stage before.  Ours is the same at toy scale:

========  ===========  ======================================================================
stage     size         conditioning
========  ===========  ======================================================================
base      32 x 32      text (cross-attention at 8x8 / 4x4 + pooled vector)
sr1       32 -> 64     text (cross-attention at the lowest level) + low-res image + aug. level
sr2       64 -> 128    same as sr1, smaller and trained on crops
========  ===========  ======================================================================

All three are diffusers :class:`~diffusers.UNet2DConditionModel` s, trained with v-prediction on a
cosine schedule (:class:`~diffusers.DDPMScheduler`) and sampled with :class:`~diffusers.DDIMScheduler`.
A weights folder holds ``unitune_nb.json`` (format and sampling defaults), ``scheduler/`` and one
diffusers folder per stage, each loadable by ``UNet2DConditionModel.from_pretrained(path, subfolder=stage)``.
"""
from __future__ import annotations

import contextlib
import json
import os
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers import DDIMScheduler, UNet2DConditionModel
from PIL import Image
from safetensors.torch import save_file

from .adapters import ResidualAdapter, StageAdapter
from .diffusion import Step, diffusion_loss, sample, train_scheduler
from .files import write_checksums
from .images import strip, to_pil
from .text import EMBED_DIM, TextEmbedding, TextEncoder

STAGES = ("base", "sr1", "sr2")
SIZE = {"base": 32, "sr1": 64, "sr2": 128}
FORMAT = "unitune_nb-embedded-cascade"
FORMAT_VERSION = 1
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"  # diffusers' file name

#: Sampling defaults per stage (guidance scale, DDIM steps, low-res augmentation level, what the U-Net predicts).
#: SR stages diffuse the residual ``(target - upsample(low)) * residual_scale`` and predict it clean
#: (``"sample"``), trained with the plain loss: at most noise levels the small residual is buried and the
#: prediction must come from the low-res image alone, a regression that x0-prediction learns directly.
#: Why these values: docs/training.md and docs/benchmarks.md.
DEFAULTS = {
    "base": {"guidance_scale": 2.0, "steps": 25, "prediction_type": "v_prediction"},
    "sr1": {"guidance_scale": 1.0, "steps": 4, "noise_level": 100, "residual_scale": 1.0, "prediction_type": "sample"},
    "sr2": {"guidance_scale": 1.0, "steps": 4, "noise_level": 100, "residual_scale": 1.0, "prediction_type": "sample"},
}


def default_snr_gamma(prediction_type: str) -> float:
    """The loss weighting a stage trains and tunes with: min-SNR (gamma 5) for v / noise prediction; none (0)
    for a stage that predicts the clean sample, whose high-noise steps are where it learns the mean detail."""
    return 0.0 if prediction_type == "sample" else 5.0


def stage_adapter(stage: str, stage_defaults: dict, schedule: dict | None = None,
                  snr_gamma: float | None = None) -> StageAdapter:
    """The adapter of an embedded stage: the base stage diffuses the image, SR stages the scaled residual
    over the upsampled low-res image; ``stage_defaults`` says what the U-Net predicts (and the scale)."""
    check_stage(stage)
    kind = stage_defaults.get("prediction_type", "v_prediction")
    gamma = default_snr_gamma(kind) if snr_gamma is None else snr_gamma
    schedule = dict(schedule or sampling_scheduler().config)
    if stage == "base":
        return StageAdapter(schedule, kind, gamma)
    return ResidualAdapter(schedule, kind, stage_defaults.get("residual_scale", 1.0), gamma)


def sampling_scheduler() -> DDIMScheduler:
    """The embedded model's DDIM sampling settings on its training schedule (trailing spacing, clipped x0)."""
    return DDIMScheduler.from_config(train_scheduler().config, timestep_spacing="trailing", clip_sample=True,
                                     set_alpha_to_one=False)


def default_weights() -> Path:
    """The folder of the weights shipped inside the package."""
    return Path(__file__).parent / "weights" / "embedded"


def unet_config(stage: str) -> dict:
    """The architecture of one stage (small, CPU-friendly; attention only at low resolution)."""
    check_stage(stage)
    common = dict(out_channels=3, layers_per_block=1, cross_attention_dim=EMBED_DIM, attention_head_dim=4,
                  mid_block_type="UNetMidBlock2DCrossAttn")
    if stage == "base":
        return dict(common, sample_size=32, in_channels=3, block_out_channels=(32, 64, 128, 160),
                    down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
                    class_embed_type="projection", projection_class_embeddings_input_dim=EMBED_DIM)
    if stage == "sr1":
        return dict(common, sample_size=64, in_channels=6, block_out_channels=(32, 64, 96),
                    down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
                    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
                    class_embed_type="timestep")
    return dict(common, sample_size=128, in_channels=6, block_out_channels=(16, 32, 64, 96), norm_num_groups=16,
                down_block_types=("DownBlock2D", "DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D"),
                class_embed_type="timestep")


def make_unet(stage: str, seed: int = 0) -> UNet2DConditionModel:
    """A freshly initialised U-Net for ``stage``."""
    torch.manual_seed(seed)
    return UNet2DConditionModel(**unet_config(stage))


def check_stage(stage: str) -> str:
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; the stages are {', '.join(STAGES)}")
    return stage


@dataclass
class CascadeOutput:
    """What :meth:`Cascade.generate` returns: one PIL image per stage run, and optional trajectories."""

    prompt: str
    images: dict[str, Image.Image]
    intermediates: dict[str, list[Step]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def image(self) -> Image.Image:
        """The final (highest-resolution) image."""
        return list(self.images.values())[-1]

    def strip(self, size: int = 128) -> Image.Image:
        """All stages side by side at ``size`` px (nearest-neighbour, so low-res pixels show)."""
        return strip(list(self.images.values()), size)


class Cascade:
    """A text encoder plus the U-Nets of the stages present, and one sampling scheduler.

    Load the shipped model with ``Cascade.from_pretrained()``; a training run folder loads the same
    way.  ``generate`` runs the stages in order.
    """

    family = "embedded"  # which entry of unitune_nb.settings.MODEL_DEFAULTS holds this model's defaults

    def __init__(self, unets: dict[str, UNet2DConditionModel], text_encoder: TextEncoder | None = None,
                 scheduler: DDIMScheduler | None = None, defaults: dict | None = None):
        if not unets:
            raise ValueError("a cascade needs at least one stage")
        for s in unets:
            check_stage(s)
        present = [s for s in STAGES if s in unets]
        if present != list(STAGES[: len(present)]):
            raise ValueError(f"stages must start at 'base' with none skipped; got {present}")
        self.unets = {s: unets[s].eval() for s in present}
        for u in self.unets.values():
            u.requires_grad_(False)
        self.text_encoder = text_encoder or TextEncoder()
        self._scheduler = scheduler or sampling_scheduler()  # the schedule and DDIM settings; see adapter()
        self.defaults = {s: dict(DEFAULTS[s], **(defaults or {}).get(s, {})) for s in STAGES}
        self._adapters: dict[str, tuple[str, StageAdapter]] = {}

    @property
    def stages(self) -> tuple[str, ...]:
        return tuple(self.unets)

    @property
    def sizes(self) -> dict[str, int]:
        """Output size in pixels of each loaded stage."""
        return {s: SIZE[s] for s in self.unets}

    @property
    def sample_sizes(self) -> dict[str, int]:
        """Size of what each stage's sampler denoises (pixels here; latents in a latent model)."""
        return self.sizes

    def stage_context(self, stage: str):
        """A context in which ``stage`` runs (backends that offload move it to the GPU here)."""
        return contextlib.nullcontext()

    def prepare_tuning(self, stage: str) -> None:
        """Called before ``stage`` is fine-tuned (backends up-cast half-precision weights here)."""

    def release_tuning(self, stage: str) -> None:
        """Called after ``stage`` got its pristine weights back (backends cast it back to the precision it was
        loaded in)."""

    def adapter(self, stage: str) -> StageAdapter:
        """The stage's :class:`~unitune_nb.adapters.StageAdapter`: what its U-Net predicts and diffuses, and
        the only source of its sampling scheduler (built from the stage's defaults, rebuilt when they change)."""
        key = json.dumps(self.defaults[stage], sort_keys=True, default=str)
        if self._adapters.get(stage, ("",))[0] != key:
            self._adapters[stage] = (key, self._make_adapter(stage))
        return self._adapters[stage][1]

    def _make_adapter(self, stage: str) -> StageAdapter:
        return stage_adapter(stage, self.defaults[stage], self._scheduler.config)

    def loss(self, stage: str, x0: torch.Tensor, low: torch.Tensor | None, text: TextEmbedding,
             generator: torch.Generator | None = None, rng=None, crop: int | None = None,
             max_noise_level: int = 350) -> torch.Tensor:
        """The stage's training loss on images ``x0`` in [-1, 1] (UniTune fine-tunes with it)."""
        with self.stage_context(stage):
            return diffusion_loss(self.unets[stage], self.adapter(stage), x0, text, low, generator, max_noise_level,
                                  crop=crop, rng=rng)

    # ------------------------------------------------------------------ persistence
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike | None = None, stages: Sequence[str] | None = None,
                        text_encoder: TextEncoder | None = None) -> Cascade:
        """Load a cascade folder (default: the weights shipped in the package)."""
        path = Path(path) if path is not None else default_weights()
        meta_file = path / "unitune_nb.json"
        if not meta_file.is_file():
            hint = ("The shipped weights are missing from this install; reinstall unitune_nb "
                    "(`pip install -e .` in a full checkout)." if path == default_weights() else
                    "Pass a folder written by `Cascade.save_pretrained` or `unitune-nb train --out`.")
            raise FileNotFoundError(f"{meta_file} not found: {path} is not a unitune_nb cascade folder. {hint}")
        meta = json.loads(meta_file.read_text())
        if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{path} holds weights of format {meta.get('format')!r} version {meta.get('format_version')!r}, "
                f"but this unitune_nb reads {FORMAT!r} version {FORMAT_VERSION}. Use the unitune_nb version "
                "that wrote them, or retrain with `unitune-nb train`.")
        available = [s for s in STAGES if (path / s / "config.json").is_file()]
        for s in available:
            if not (path / s / WEIGHTS_NAME).is_file():
                raise FileNotFoundError(f"{path / s} has a config.json but no {WEIGHTS_NAME}: the weights are incomplete. "
                                        "Reinstall unitune_nb, re-export them with `unitune-nb export`, or retrain the stage.")
        wanted = list(stages) if stages is not None else available
        for s in wanted:
            check_stage(s)
            if s not in available:
                raise FileNotFoundError(f"stage {s!r} has no weights in {path} (found: {available or 'none'}). "
                                        f"Train it with `unitune-nb train --stage {s} --out {path}`.")
        unets = {}
        for s in wanted:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                unets[s] = UNet2DConditionModel.from_pretrained(path, subfolder=s, torch_dtype=torch.float32,
                                                                low_cpu_mem_usage=False)  # small: no accelerate needed
        sched = None
        if (path / "scheduler" / "scheduler_config.json").is_file():
            sched = DDIMScheduler.from_pretrained(path, subfolder="scheduler")
        defaults = meta.get("defaults") or {}
        for s in STAGES[1:]:  # folders written before the residual scale existed diffused the plain residual
            defaults.setdefault(s, {}).setdefault("residual_scale", 1.0)
        for s in STAGES:  # ... and before SR stages predicted the clean residual, every stage predicted v
            defaults.setdefault(s, {}).setdefault("prediction_type", "v_prediction")
        return cls(unets, text_encoder=text_encoder, scheduler=sched, defaults=defaults)

    def save_pretrained(self, path: str | os.PathLike, fp16: bool = True) -> None:
        """Write the cascade (fp16 safetensors by default) in the layout ``from_pretrained`` reads."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        for s, u in self.unets.items():
            # the layout of UNet2DConditionModel.save_pretrained, written directly so the weights
            # can be cast without a second model in memory
            (path / s).mkdir(exist_ok=True)
            u.save_config(path / s)
            sd = {k: (v.half() if fp16 and v.is_floating_point() else v).contiguous() for k, v in u.state_dict().items()}
            save_file(sd, str(path / s / WEIGHTS_NAME), metadata={"format": "pt"})
        self._scheduler.save_pretrained(path / "scheduler")
        write_meta(path, self.defaults)
        write_checksums(path)  # `unitune-nb doctor` checks an install's weights against them

    # ------------------------------------------------------------------ generation
    def encode(self, prompts: str | Sequence[str]) -> TextEmbedding:
        return self.text_encoder(prompts)

    def check_prompt(self, prompt: str) -> str:
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a string, got {type(prompt).__name__}")
        if not prompt.strip():
            raise ValueError("the prompt is empty; describe the image, e.g. 'a red house on snow at night'")
        return prompt  # over-long prompts are cut to the encoder's token limit with a warning

    def generate(self, prompt: str, seed: int = 0, stages: Iterable[str] | None = None,
                 guidance_scale: float | None = None, steps: dict[str, int] | int | None = None,
                 return_intermediates: bool = False, num_images: int = 1,
                 progress: bool = False) -> CascadeOutput | list[CascadeOutput]:
        """Generate from ``prompt`` through the cascade.

        ``stages`` limits the stages run (default: all present); ``guidance_scale`` sets the base
        stage's classifier-free guidance (default from the weights' metadata); ``steps`` is the
        number of DDIM steps, one int for every stage or a dict per stage.  The same seed gives the
        same images.  With ``num_images > 1`` a list of outputs is returned (seeds ``seed``,
        ``seed + 1``, ...).  ``progress`` shows a tqdm bar per stage.
        """
        self.check_prompt(prompt)
        stages = self.check_stages(stages)
        text = self.encode(prompt)
        empty = self.encode("")
        outs = []
        for i in range(num_images):  # one generator per image: image i is the image of seed + i alone
            run = self.run(text, empty, torch.Generator().manual_seed(seed + i), stages, guidance_scale, steps,
                           return_intermediates, progress=progress)
            outs.append(CascadeOutput(prompt, {s: to_pil(x)[0] for s, x in run.images.items()},
                                      run.intermediates, run.seconds))
        return outs[0] if num_images == 1 else outs

    def check_stages(self, stages: Iterable[str] | None) -> tuple[str, ...]:
        """Validate a stage list: known, loaded, in cascade order from 'base' (default: all loaded)."""
        stages = tuple(stages) if stages is not None else self.stages
        for s in stages:
            check_stage(s)
            if s not in self.unets:
                raise ValueError(f"stage {s!r} is not loaded; this cascade has {self.stages}")
        if not stages or stages != self.stages[: len(stages)]:
            raise ValueError(f"stages run in order from 'base'; this cascade has {self.stages}, got {stages}")
        return stages

    def prediction_type(self, stage: str) -> str:
        """What ``stage``'s U-Net predicts (diffusers' name: ``v_prediction``, ``epsilon`` or ``sample``)."""
        return self.adapter(stage).prediction.name

    def stage_scheduler(self, stage: str) -> DDIMScheduler:
        """A sampling scheduler for ``stage`` (its adapter's: the stage's prediction type and clip range)."""
        return self.adapter(stage).scheduler()

    def stage_sampler(self, stage: str, text: TextEmbedding, baseline: TextEmbedding | None,
                      generator: torch.Generator, low: torch.Tensor | None = None, guidance_scale: float | None = None,
                      steps: int | None = None, x_init: torch.Tensor | None = None,
                      t0: float = 1.0) -> tuple[Iterator, dict]:
        """The DDIM sampler of one stage with that stage's settings (noise level, residual, sizes), and the
        guidance scale / step count it uses (``None``: the stage's defaults).  ``low`` is the previous
        stage's output for an SR stage; ``x_init`` / ``t0 < 1`` start late (SDEdit).  The one place a
        stage's sampling is set up: ``run`` and the SR evaluation both call it.
        """
        d = self.defaults[stage]
        g = d["guidance_scale"] if guidance_scale is None else guidance_scale
        k = d["steps"] if steps is None else steps
        it = sample(self.unets[stage], self.adapter(stage), text, baseline, guidance_scale=g, steps=k,
                    size=self.sample_sizes[stage], generator=generator, low_res=low,
                    noise_level=d.get("noise_level", 0), x_init=x_init, t0=t0)
        return it, {"guidance_scale": g, "steps": k}

    def run(self, text: TextEmbedding, baseline: TextEmbedding, generator: torch.Generator,
            stages: Sequence[str], guidance_scale: float | None = None, steps: dict[str, int] | int | None = None,
            return_intermediates: bool = False, x_init: torch.Tensor | None = None, t0: float = 1.0,
            progress: bool = False) -> StageRun:
        """Run ``stages`` in order for already-encoded text (one image).

        ``guidance_scale`` applies to the first stage (the SR stages use their defaults);
        ``baseline`` is the guidance baseline (the empty prompt for CFG); ``x_init`` (an image in [-1, 1])
        and ``t0 < 1`` start the first stage late from it (SDEdit).  Shared by ``generate`` and UniTune's edit.
        """
        out = StageRun()
        low = None
        for s in stages:
            first = s == self.stages[0]
            start = self.adapter(s).encode(x_init) if first and x_init is not None else None
            stage_steps = steps if isinstance(steps, int) else (steps or {}).get(s)
            it, out.settings[s] = self.stage_sampler(s, text, baseline, generator, low, guidance_scale if first else None,
                                                     stage_steps, start, t0 if first else 1.0)
            low = self._run_stage(s, it, out, return_intermediates, progress)
        return out

    def _run_stage(self, stage: str, it: Iterator[Step], out: StageRun, return_intermediates: bool,
                   progress: bool) -> torch.Tensor:
        """Exhaust one stage's sampler into ``out`` (image, seconds, trajectory); returns the image in [-1, 1]."""
        from tqdm.auto import tqdm

        adapter = self.adapter(stage)
        t = time.perf_counter()
        traj = []
        with self.stage_context(stage):
            for st in tqdm(it, total=out.settings[stage]["steps"], desc=stage, disable=not progress, leave=False):
                if return_intermediates:
                    traj.append(Step(st.index, st.t, adapter.view(st.x.clone()).cpu(), adapter.view(st.x0.clone()).cpu()))
                last = st
            image = adapter.decode(last.x)
        out.images[stage] = image.cpu()
        out.seconds[stage] = time.perf_counter() - t
        if return_intermediates:
            out.intermediates[stage] = traj
        return image


@dataclass
class StageRun:
    """Tensors in [-1, 1] per stage, trajectories, seconds and the settings each stage used."""

    images: dict[str, torch.Tensor] = field(default_factory=dict)
    intermediates: dict[str, list[Step]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    settings: dict[str, dict] = field(default_factory=dict)


def read_defaults(path: Path) -> dict:
    """The per-stage sampling defaults a folder's ``unitune_nb.json`` records ({} where it has none)."""
    f = path / "unitune_nb.json"
    return (json.loads(f.read_text()).get("defaults") or {}) if f.is_file() else {}


def write_meta(path: Path, defaults: dict | None = None, extra: dict | None = None) -> None:
    """Write ``unitune_nb.json`` (format, version, sampling defaults, text encoder) into ``path``."""
    f = path / "unitune_nb.json"
    meta = json.loads(f.read_text()) if f.is_file() else {}
    meta.update({"format": FORMAT, "format_version": FORMAT_VERSION, "text_encoder": "all-MiniLM-L6-v2",
                 "defaults": defaults or DEFAULTS})
    meta.update(extra or {})
    f.write_text(json.dumps(meta, indent=2))
