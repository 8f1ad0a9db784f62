"""UniTune's edit (Sec. 3), in numbered steps like a diffusers pipeline's ``__call__``.

1. **check inputs**: the prompt, the :class:`~unitune_nb.settings.EditSettings` (once, in one place), the
   stages, a user mask;
2. **encode prompts**: "[rare token] edit prompt" and the guidance baseline (the empty prompt for
   classifier-free guidance, another prompt for prompt guidance);
3. **sample** the cascade, the first stage starting late from the source noised to ``t0`` (SDEdit);
4. **estimate the mask** of what the edit changed: against a reconstruction (the first stage's sample of
   the rare token alone with the same seed and late start, so the model's own reconstruction error
   cancels out), against the source, or the user's mask;
5. **blend** the source back in outside the mask: ``out = x + s (1 - m) (source - x)``.

:meth:`UniTune.edit <unitune_nb.tune.UniTune.edit>` is the public entry; this module holds the steps.
"""
from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .cascade import StageRun
from .diffusion import Step
from .images import strip, to_pil
from .interpolation import blend, estimate_mask, mask_to_tensor
from .settings import EditSettings
from .text import TextEmbedding

if TYPE_CHECKING:  # pragma: no cover
    from .tune import UniTune


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
    notes: list[str] = field(default_factory=list)  # what was done to the inputs (e.g. a mask's value range)

    def strip(self, size: int = 128) -> Image.Image:
        """Source, raw sample, mask and final image side by side."""
        m = Image.fromarray((self.mask * 255).round().astype(np.uint8)).convert("RGB")
        return strip([self.source, self.raw, m, self.image], size)


class ReferenceCache:
    """The last reconstruction sample, kept while nothing it depends on changed (weights, source, settings)."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._value: torch.Tensor | None = None

    def get(self, key: tuple, make) -> torch.Tensor:
        if self._key != key:
            self._key, self._value = key, make()
        return self._value

    def clear(self) -> None:
        self._key = self._value = None


# ------------------------------------------------------------------ 1. check inputs
def check_inputs(ut: UniTune, prompt: str, settings: EditSettings, stages: Sequence[str] | None,
                 notes: list[str]) -> tuple[EditSettings, tuple[str, ...], torch.Tensor | None]:
    """The settings with the model's defaults filled in and checked, the stages to run, the user mask
    (``[1, 1, size, size]`` or None; what was done to it goes into ``notes``); warns where the edit will not do
    what the user may expect."""
    c = ut.cascade
    if ut.source is None:
        raise ValueError("no source image: call tune(image) (or set_source(image)) first")
    c.check_prompt(prompt)
    s = settings.check().resolved(ut.defaults.edit).check()
    if ut.rare_token and ut.rare_token not in prompt:
        warnings.warn(f"the prompt does not contain the rare token {ut.rare_token!r}, so the edit is not tied "
                      f"to the source image; write e.g. '{ut.rare_token} {prompt}'", stacklevel=4)
    if not ut.tuned:
        warnings.warn("the model is not tuned on the source image: this is plain text-to-image (or SDEdit "
                      "with t0 < 1); call tune(image) first", stacklevel=4)
    stages = c.check_stages(stages)
    size = c.sizes[stages[-1]]
    user_mask = None
    if s.mask is not None:
        user_mask, more = mask_to_tensor(s.mask, size)
        notes += more
    return s, stages, user_mask


# ------------------------------------------------------------------ 2. encode prompts
def encode_prompts(ut: UniTune, prompt: str, settings: EditSettings) -> tuple[TextEmbedding, TextEmbedding]:
    """The prompt's encoding and the guidance baseline's (the empty prompt unless prompt guidance)."""
    c = ut.cascade
    return c.encode(prompt), c.encode(settings.baseline_prompt if settings.baseline_prompt is not None else "")


# ------------------------------------------------------------------ 3. sample
def sample_edit(ut: UniTune, text: TextEmbedding, baseline: TextEmbedding, s: EditSettings, stages: tuple[str, ...],
                return_intermediates: bool) -> tuple[StageRun, torch.Tensor | None]:
    """Run the cascade; the first stage starts late from the source (``x_init``) when ``t0 < 1``."""
    c = ut.cascade
    x_init = ut.source_at(c.sizes[stages[0]]) if s.t0 < 1.0 else None
    run = c.run(text, baseline, torch.Generator().manual_seed(s.seed), stages, s.guidance_scale, s.steps,
                return_intermediates, x_init=x_init, t0=s.t0)
    return run, x_init


# ------------------------------------------------------------------ 4. estimate the mask
def reconstruction(ut: UniTune, prompt: str, baseline: TextEmbedding, s: EditSettings, stage: str,
                   x_init: torch.Tensor | None) -> torch.Tensor:
    """The first stage's sample of ``prompt`` (the rare token alone) with the edit's seed and settings: what
    the tuned model draws for the source alone.  Cached while nothing it depends on changed."""
    c = ut.cascade
    text = c.encode(prompt)

    def fp(e: TextEmbedding) -> bytes:  # a changed word embedding (Textual Inversion) changes the encoding
        return e.pooled.detach().float().cpu().numpy().tobytes()

    key = (ut.version, prompt, fp(text), fp(baseline), s.seed, stage, s.guidance_scale,
           json.dumps(s.steps, sort_keys=True), s.t0)

    def make() -> torch.Tensor:
        r = c.run(text, baseline, torch.Generator().manual_seed(s.seed), (stage,), s.guidance_scale, s.steps,
                  x_init=x_init, t0=s.t0)
        return r.images[stage]

    return ut.references.get(key, make)


def edit_mask(ut: UniTune, prompt: str, s: EditSettings, run: StageRun, stages: tuple[str, ...],
              baseline: TextEmbedding, x_init: torch.Tensor | None, user_mask: torch.Tensor | None,
              ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The mask (``[1, 1, size, size]`` in [0, 1], 1 = edited) and the reference it was estimated against."""
    size = ut.cascade.sizes[stages[-1]]
    if user_mask is not None:
        return user_mask, None
    if s.interpolation > 0 and s.mask_from == "reconstruction":
        ref_prompt = ut.rare_token if ut.rare_token and ut.rare_token in prompt else ""
        t = time.perf_counter()
        ref = reconstruction(ut, ref_prompt, baseline, s, stages[0], x_init)
        run.seconds["reference"] = time.perf_counter() - t  # ~0 when the last reference still holds
        m = estimate_mask(run.images[stages[0]], ref)
        if m.shape[-1] != size:
            m = F.interpolate(m, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
        return m, ref
    # compared with the source (also the mask shown when interpolation is off)
    return estimate_mask(run.images[stages[-1]], ut.source_at(size)), None


# ------------------------------------------------------------------ the whole edit
def edit(ut: UniTune, prompt: str, settings: EditSettings, stages: Sequence[str] | None = None,
         return_intermediates: bool = False) -> EditResult:
    """Edit ``ut``'s source with ``prompt`` (steps 1-5 above)."""
    notes: list[str] = []
    s, stages, user_mask = check_inputs(ut, prompt, settings, stages, notes)     # 1. check inputs
    ut.set_weight_scale(1.0 if s.weight_scale is None else s.weight_scale)      # w = w0 + weight_scale (w1 - w0)
    text, baseline = encode_prompts(ut, prompt, s)                               # 2. encode prompts
    run, x_init = sample_edit(ut, text, baseline, s, stages, return_intermediates)  # 3. sample
    m, ref = edit_mask(ut, prompt, s, run, stages, baseline, x_init, user_mask)  # 4. estimate the mask
    t = time.perf_counter()
    raw, src = run.images[stages[-1]], ut.source_at(ut.cascade.sizes[stages[-1]])
    strength = 1.0 if user_mask is not None else s.interpolation
    final = blend(raw, src, m, strength) if strength > 0 else raw                # 5. blend
    run.seconds["interpolation"] = time.perf_counter() - t
    used = run.settings
    info = {"prompt": prompt, "guidance_scale": used[stages[0]]["guidance_scale"], "baseline_prompt": s.baseline_prompt,
            "t0": s.t0, "interpolation": s.interpolation, "weight_scale": s.weight_scale,
            "user_mask": user_mask is not None, "seed": s.seed,
            "mask_from": "user" if user_mask is not None else s.mask_from,
            "stages": used, "tuned": ut.tuned, "rare_token": ut.rare_token}
    return EditResult(prompt, to_pil(final)[0], {k: to_pil(v)[0] for k, v in run.images.items()}, to_pil(raw)[0],
                      to_pil(src)[0], m[0, 0].numpy(), info, run.seconds, run.intermediates,
                      to_pil(ref)[0] if ref is not None else None, notes)
