"""The methods UniTune is compared with (UniTune paper, Sec. 4), in the same engine.

Every baseline edits through :meth:`UniTune.edit`, so sampling, guidance and seeds are shared and
the comparison is fair:

* **plain text-to-image** — no tuning, no late start: the edit prompt alone;
* **SDEdit** — no tuning; the base stage starts late from the noised source (``t0 < 1``);
* **Textual Inversion** — the U-Net stays frozen; only the rare token's input embedding in the
  frozen text encoder is optimised on the source image (Gal et al., 2022);
* **DreamBooth-like** — UniTune's fine-tuning, sampled from pure noise without interpolation.

:data:`METHODS` names each row of the edit benchmark with the edit options it uses.
"""
from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from .tune import RARE_TOKEN, UniTune


@dataclass(frozen=True)
class Method:
    """One row of the benchmark: which model state it needs and which edit options it uses.

    ``model`` is ``"tuned"`` (UniTune fine-tuning), ``"inverted"`` (Textual Inversion) or
    ``"pristine"``; ``rare`` says whether the prompt carries the rare token; ``None`` options take
    the model's edit defaults (:mod:`unitune_nb.settings`).  ``guidance_scale="model"`` samples
    with the model's own text-to-image guidance (the rows that draw from pure noise without tuning:
    the edit guidance, chosen for a tuned model, over-saturates them).
    """

    name: str
    model: str
    rare: bool = True
    t0: float | None = None
    interpolation: float | None = None
    prompt_guidance: bool = False
    guidance_scale: float | str | None = None
    mask_from: str | None = None


UNITUNE = "UniTune"  # the row with the engine's defaults

METHODS = (
    Method(UNITUNE, "tuned"),
    Method("UniTune, no late start", "tuned", t0=1.0),
    Method("UniTune, no interpolation", "tuned", interpolation=0.0),
    Method("UniTune, prompt guidance", "tuned", prompt_guidance=True),
    Method("UniTune, mask from the source", "tuned", mask_from="source"),
    Method("DreamBooth-like", "tuned", t0=1.0, interpolation=0.0),
    Method("Textual Inversion", "inverted", t0=1.0, interpolation=0.0, guidance_scale="model"),
    Method("SDEdit", "pristine", rare=False, interpolation=0.0),
    Method("plain text-to-image", "pristine", rare=False, t0=1.0, interpolation=0.0, guidance_scale="model"),
)


def textual_inversion_steps(ut: UniTune, image=None, rare_token: str = RARE_TOKEN, iters: int = 128,
                            batch_size: int = 4, lr: float = 5e-3, seed: int = 0) -> Iterator[float]:
    """Optimise only ``rare_token``'s input embedding so the frozen base stage reconstructs the source.

    Yields the loss after each step and leaves the learned embedding registered on the cascade's
    text encoder (``text_encoder.learned``), so ``ut.edit("<rare_token> ...")`` uses it.  The U-Net
    weights are not touched (the model is reset to its pristine weights first).
    """
    if iters < 1 or batch_size < 1:
        raise ValueError(f"iters and batch_size must be >= 1, got iters={iters}, batch_size={batch_size}")
    ut.start_tuning(image, rare_token)
    te = ut.cascade.text_encoder
    te.set_learned(rare_token, None)
    vec = te.word_embeddings(rare_token).requires_grad_(True)
    opt = torch.optim.AdamW([vec], lr=lr, weight_decay=0.0)
    unet = ut.cascade.unets["base"]
    x0 = ut.source_at(ut.cascade.sizes["base"]).repeat(batch_size, 1, 1, 1)
    gen = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)
    unet.requires_grad_(False)
    try:
        for _ in range(iters):
            text = te.encode_with([rare_token] * batch_size, rare_token, vec)
            loss = ut.cascade.loss("base", x0, None, text, gen, rng)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            te.set_learned(rare_token, vec)
            yield loss.item()
    finally:
        unet.requires_grad_(True)
    ut.rare_token = rare_token


def textual_inversion(ut: UniTune, image, rare_token: str = RARE_TOKEN, iters: int = 128, batch_size: int = 4,
                      lr: float = 5e-3, seed: int = 0) -> list[float]:
    """Run :func:`textual_inversion_steps` to the end; returns the losses."""
    return list(textual_inversion_steps(ut, image, rare_token, iters, batch_size, lr, seed))


def forget_inversion(ut: UniTune, rare_token: str = RARE_TOKEN) -> None:
    """Drop a learned rare-token embedding, so the token means what the tokenizer makes of it again."""
    ut.cascade.text_encoder.set_learned(rare_token, None)
