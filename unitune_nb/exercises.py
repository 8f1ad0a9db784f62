"""Self-checks for the notebooks' exercises and their "Check your understanding" questions.

Each ``check_*`` runs the learner's code against the package's own implementation (``diffusion.guide``,
``q_sample``, ``signal_fraction``, ``interpolation.blend`` / ``estimate_mask``, the cascade's loss, the text
encoder, ``bench.score``, ...) on small fixed inputs and prints either a pass or a hint saying *what* differs
(shape, sign, scale, a missing term, a swapped baseline), never the solution.  A stub not filled in yet
(``...``, ``None``, ``NotImplementedError``) prints "not done yet".  Every check also returns True / False.

>>> from unitune_nb.exercises import check_cfg
>>> check_cfg(lambda uncond, cond, w: ...)     # doctest: +SKIP
Exercise 03.1 (the CFG combination): not done yet: ...
"""
from __future__ import annotations

import functools
import math
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import torch

from . import world
from .diffusion import guide, noise_coefficients, q_sample, signal_fraction, train_scheduler, upsample
from .interpolation import blend, estimate_mask

__all__ = ["QUIZ", "answer", "check_blend", "check_capstone", "check_cfg", "check_choose_setting", "check_mask",
           "check_noise_augmentation", "check_prompt_guidance", "check_guidance_prediction", "check_q_sample",
           "check_rare_token", "check_removal", "check_signal_fraction", "check_tuning_step", "check_x0_from_v"]


class _NotDone(Exception):
    """The learner's code is still a stub."""


class _Hint(Exception):
    """The learner's answer differs; the message says how."""


def _exercise(number: str, title: str) -> Callable:
    """Turn a check that raises :class:`_Hint` / :class:`_NotDone` into one that prints and returns a bool."""
    def wrap(fn: Callable) -> Callable[..., bool]:
        @functools.wraps(fn)
        def run(*args, **kwargs) -> bool:
            head = f"Exercise {number} ({title})"
            try:
                msg = fn(*args, **kwargs)
            except _NotDone as e:
                print(f"{head}: not done yet: {e}")
                return False
            except _Hint as e:
                print(f"{head}: not quite. Hint: {e}")
                return False
            print(f"{head}: passed. {msg or ''}".rstrip())
            return True
        run.exercise = number  # type: ignore[attr-defined]
        return run
    return wrap


def _blank(x: Any) -> bool:
    return x is None or x is ... or (isinstance(x, str) and not x.strip())


def _call(fn: Any, *args, todo: str, on_error: str = "") -> Any:
    """Call the learner's function; a stub (or a ``None`` result) raises :class:`_NotDone`."""
    if _blank(fn):
        raise _NotDone(todo)
    if not callable(fn):
        raise _Hint(f"pass your function itself, not {type(fn).__name__}")
    try:
        out = fn(*args)
    except NotImplementedError:
        raise _NotDone(todo) from None
    except Exception as e:  # the learner's bug, reported as a hint
        raise _Hint(f"your function raised {type(e).__name__}: {e}. {on_error}".strip()) from None
    if out is None or out is ...:
        raise _NotDone(f"{todo} (your function returns {out!r} so far)")
    return out


def _compare(got: Any, ref: torch.Tensor, variants: dict[str, torch.Tensor], fallback: str,
             atol: float = 1e-5) -> None:
    """Pass silently when ``got`` matches ``ref``; else raise the hint of the wrong variant it matches."""
    if not torch.is_tensor(got):
        raise _Hint(f"return a torch tensor, not {type(got).__name__}")
    if tuple(got.shape) != tuple(ref.shape):
        raise _Hint(f"shape: yours is {tuple(got.shape)}, it should be {tuple(ref.shape)}")
    got = got.detach().float()
    if torch.allclose(got, ref, atol=atol):
        return
    for hint, v in variants.items():
        if tuple(v.shape) == tuple(got.shape) and torch.allclose(got, v, atol=atol):
            raise _Hint(hint)
    raise _Hint(f"{fallback} (largest difference {float((got - ref).abs().max()):.3g})")


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@functools.lru_cache(maxsize=1)
def _alphas_cumprod() -> torch.Tensor:
    return train_scheduler().alphas_cumprod


@functools.lru_cache(maxsize=1)
def _probe():
    from .probe import load_probe

    return load_probe()


# ------------------------------------------------------------------------------------------ notebook 01
@_exercise("01.1", "x0 from a v-prediction")
def check_x0_from_v(x0_from_v: Callable) -> str:
    """``x0_from_v(v, x_t, abar)``: the clean image from the base stage's v-prediction (``PredV.to_x0``)."""
    from .adapters import PredV

    v, xt = _randn(2, 3, 4, 4, seed=1), _randn(2, 3, 4, 4, seed=2)
    abar = torch.tensor([0.9, 0.2]).reshape(2, 1, 1, 1)
    a, s = abar.sqrt(), (1 - abar).sqrt()
    ref = PredV().to_x0(v, xt, a, s)
    got = _call(x0_from_v, v, xt, abar, todo="write x0_from_v(v, x_t, abar), then run this cell again")
    _compare(got, ref, {
        "a square root is missing: the coefficients are sqrt(abar) and sqrt(1 - abar), not abar and 1 - abar":
            PredV().to_x0(v, xt, abar, 1 - abar),
        "sign: the v term is subtracted, not added": a * xt + s * v,
        "the two coefficients are swapped: x_t is weighted by sqrt(abar)": PredV().to_x0(v, xt, s, a),
        "that formula reads the output as the noise epsilon; the base stage predicts v": (xt - s * v) / a,
    }, "the values differ from the v-prediction formula")
    return "the same as PredV.to_x0 in unitune_nb/adapters.py."


@_exercise("01.2", "noise augmentation")
def check_noise_augmentation(augment: Callable) -> str:
    """``augment(low, size, level, alphas_cumprod, noise)``: upsample, then noise to ``level`` (``augment_low_res``)."""
    ac, low = _alphas_cumprod(), _randn(2, 3, 4, 4, seed=3)
    level, noise = torch.tensor([0, 250]), _randn(2, 3, 8, 8, seed=4)
    up = upsample(low, 8)
    ref = q_sample(ac, up, noise, level)
    got = _call(augment, low, 8, level, ac, noise, todo="write augment(low, size, level, alphas_cumprod, noise)",
                on_error="The noise is already at the output size: upsample first, then add it.")
    near = torch.nn.functional.interpolate(low, size=(8, 8), mode="nearest")
    a, s = noise_coefficients(ac, level, up)
    _compare(got, ref, {
        "upsampling: the SR stage's input is the bilinear upsample (a nearest-neighbour one is blockier)":
            q_sample(ac, near, noise, level),
        "the noise is not scaled: x = sqrt(abar) up + sqrt(1 - abar) noise": a * up + noise,
        "a square root is missing: the coefficients are sqrt(abar_level) and sqrt(1 - abar_level)":
            a**2 * up + s**2 * noise,
    }, "the values differ from q_sample applied to the upsampled image")
    return "upsample, then q_sample at the augmentation level: what diffusion.augment_low_res does."


# ------------------------------------------------------------------------------------------ notebook 02
@_exercise("02.1", "a rare token is rare")
def check_rare_token(is_rare: Callable, te=None) -> str:
    """``is_rare(te, word) -> bool``: True when the text encoder has no meaning for ``word`` yet."""
    if te is None:
        from .text import TextEncoder

        te = TextEncoder()
    words = ["beikkpic", "zorbquix", "sks", "house", "night", "tree", "snow"]
    want = {w: (not te.is_known_word(w)) and len(te.tokens(w)) > 1 for w in words}
    got = {w: _call(is_rare, te, w, todo="write is_rare(te, word) with te.tokens and te.is_known_word") for w in words}
    if not all(isinstance(g, bool) for g in got.values()):
        raise _Hint("return True or False (a bool), e.g. the result of a comparison")
    wrong = [w for w in words if got[w] != want[w]]
    if set(wrong) == set(words):
        raise _Hint("every answer is inverted: True should mean the encoder has NO meaning for the word")
    if wrong:
        parts = [f"{w!r} (pieces {te.tokens(w)}, a known word: {te.is_known_word(w)}) you call "
                 f"{'rare' if got[w] else 'not rare'}" for w in wrong]
        raise _Hint("; ".join(parts) + ". A known word is one whole token of the vocabulary and already means "
                    "something; a rare token is unknown and splits into pieces")
    return "unknown words split into pieces are free for tuning; known words already mean something."


def _reference_step(ut, opt: torch.optim.Optimizer, x0: torch.Tensor, text, generator: torch.Generator) -> float:
    """One step of ``UniTune._tune_stage`` on the base stage."""
    loss = ut.cascade.loss("base", x0, None, text, generator)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.item()


def _one_step(step: Callable, ut, params: list, start: list, x0: torch.Tensor, text) -> tuple[Any, torch.Tensor]:
    """Run ``step`` from the ``start`` weights, with stale gradients left in place; returns its result and
    how far the weights moved (flattened)."""
    from .tune import make_optimizer

    with torch.no_grad():
        for p, s in zip(params, start):
            p.copy_(s)
    for p in params:
        p.requires_grad_(True)
        p.grad = torch.full_like(p, 1e-3)  # an earlier step's gradient, still there
    opt = make_optimizer("adamw", params, 1e-4)
    out = step(ut, opt, x0, text, torch.Generator().manual_seed(0))
    return out, torch.cat([(p.detach() - s).flatten() for p, s in zip(params, start)])


@_exercise("02.2", "one rare-token tuning step")
def check_tuning_step(tuning_step: Callable, ut) -> str:
    """``tuning_step(ut, opt, x0, text, generator) -> float``: the base stage's loss, then one optimiser step."""
    from .images import to_tensor

    if _blank(tuning_step):
        raise _NotDone("write tuning_step(ut, opt, x0, text, generator)")
    ut.cascade.prepare_tuning("base")
    params = list(ut.cascade.unets["base"].parameters())
    start = [p.detach().clone() for p in params]
    x0 = to_tensor(world.render(world.random_scene(2), 32)).repeat(2, 1, 1, 1)
    text = ut.cascade.encode(["beikkpic"] * 2)
    try:
        got, moved = _one_step(lambda *a: _call(tuning_step, *a, todo="write tuning_step(...)"), ut, params, start,
                               x0, text)
        ref, ref_moved = _one_step(_reference_step, ut, params, start, x0, text)
    finally:
        with torch.no_grad():
            for p, s in zip(params, start):
                p.copy_(s)
                p.requires_grad_(False)
                p.grad = None
    try:
        got = float(got)
    except (TypeError, ValueError):
        raise _Hint(f"return the loss as a number (a float), not {type(got).__name__}") from None
    if not math.isclose(got, ref, rel_tol=1e-4, abs_tol=1e-7):
        raise _Hint(f"your loss is {got:.6f}, the base stage's training loss on this batch is {ref:.6f}: use the "
                    "cascade's loss for stage 'base' and pass it the generator you are given (it draws t and the noise)")
    if not moved.abs().max() > 0:
        raise _Hint("the loss is right but the weights did not move: after backward(), step the optimiser")
    cos = float(torch.nn.functional.cosine_similarity(moved, ref_moved, dim=0))
    if cos < -0.5:
        raise _Hint("the weights moved up the loss, not down: back-propagate the loss itself (not -loss)")
    if cos < 0.999:
        raise _Hint("the step differs from one clean step: gradients from an earlier step were still there; "
                    "clear them (zero_grad) before backward()")
    return f"loss {got:.5f} and the same weight update as UniTune's tuning loop."


# ------------------------------------------------------------------------------------------ notebook 03
@_exercise("03.1", "the CFG combination")
def check_cfg(cfg: Callable) -> str:
    """``cfg(out_baseline, out_prompt, w)``: classifier-free guidance (``diffusion.guide``)."""
    base, cond = _randn(2, 3, 4, 4, seed=5), _randn(2, 3, 4, 4, seed=6)
    for w in (0.0, 1.0, 3.0, 7.5):
        x = torch.cat([base, cond])
        got = _call(cfg, base, cond, w, todo="write cfg(out_baseline, out_prompt, w)")
        _compare(got, guide(x, w), {
            "baseline and prompt are swapped: at w = 0 the result should be the baseline's prediction":
                guide(torch.cat([cond, base]), w),
            "sign: you step away from the prompt; w > 1 should push further towards it": guide(x, -w),
            "the baseline term is missing: at w = 0 the result should be the baseline's prediction, not zeros":
                guide(x, w) - base,
            "w multiplies the prompt's prediction; it should multiply the difference (prompt - baseline)":
                base + w * cond,
        }, f"at w = {w:g} the values differ from the guidance formula")
    return "the same as diffusion.guide at w = 0, 1, 3 and 7.5."


def _fake_unet(x: torch.Tensor, prompt: str) -> torch.Tensor:
    """A stand-in U-Net: a fixed random output per prompt."""
    g = torch.Generator().manual_seed(zlib.crc32(prompt.encode()))
    return 0.5 * x + torch.randn(x.shape, generator=g)


@_exercise("03.3", "prompt guidance")
def check_prompt_guidance(prompt_guided: Callable) -> str:
    """``prompt_guided(predict, x, rare_token, words, w)``: guidance with the rare token alone as the baseline."""
    x, rare, words, w = _randn(1, 3, 4, 4, seed=7), "beikkpic", "a yellow house", 3.0
    full = f"{rare} {words}"
    got = _call(prompt_guided, _fake_unet, x, rare, words, w, todo="write prompt_guided(predict, x, rare_token, words, w)")

    def g(baseline: str, prompt: str) -> torch.Tensor:
        return guide(torch.cat([_fake_unet(x, baseline), _fake_unet(x, prompt)]), w)
    _compare(got, g(rare, full), {
        "your baseline is the empty prompt: that is classifier-free guidance; prompt guidance's baseline is "
        "the rare token alone": g("", full),
        "your prompt lacks the rare token: the prompt is the rare token followed by the edit words": g(rare, words),
        "baseline and prompt are swapped": g(full, rare),
    }, "the values differ from guidance with baseline = the rare token and prompt = rare token + words")
    return "the baseline is the rare token, so guidance pushes only along what the edit words add."


@_exercise("03.2", "predict, then run")
def check_guidance_prediction(prediction: str, image) -> str:
    """``prediction``: the house colour you expect at w = 0.5, written before running; ``image``: the edit."""
    if _blank(prediction):
        raise _NotDone("write your prediction first (a colour, e.g. 'purple' or 'yellow'), then run the edit")
    if not isinstance(prediction, str) or prediction.strip().lower() not in world.COLOURS:
        raise _Hint(f"name one colour of the world: {', '.join(world.COLOURS)}")
    if _blank(image):
        raise _NotDone("now run the edit at guidance_scale=0.5 and pass its image")
    houses = sorted(c for c, k in _probe().read([image])[0]["pairs"] if k == "house")
    if prediction.strip().lower() not in houses:
        raise _Hint(f"the probe reads {' and '.join(houses) or 'no'} house(s), you predicted {prediction}. With "
                    "w < 1 the formula moves the sample towards the baseline, away from what the words add")
    return f"the probe reads a {prediction.strip().lower()} house, as you predicted."


# ------------------------------------------------------------------------------------------ notebook 04
@_exercise("04.1", "q_sample")
def check_q_sample(my_q_sample: Callable) -> str:
    """``my_q_sample(alphas_cumprod, x0, noise, t)``: noise ``x0`` to timestep ``t`` per batch item."""
    ac, x0, noise = _alphas_cumprod(), _randn(2, 3, 4, 4, seed=8), _randn(2, 3, 4, 4, seed=9)
    t = torch.tensor([100, 900])
    got = _call(my_q_sample, ac, x0, noise, t, todo="write my_q_sample(alphas_cumprod, x0, noise, t)",
                on_error="abar_t has one value per batch item: reshape it to [B, 1, 1, 1] to broadcast.")
    a, s = noise_coefficients(ac, t, x0)
    _compare(got, q_sample(ac, x0, noise, t), {
        "a square root is missing: the coefficients are sqrt(abar_t) and sqrt(1 - abar_t)": a**2 * x0 + s**2 * noise,
        "the two coefficients are swapped: the source is scaled by sqrt(abar_t)": s * x0 + a * noise,
        "sign: the noise is added, not subtracted": a * x0 - s * noise,
        "both items got the first item's t: each batch item has its own timestep":
            q_sample(ac, x0, noise, t[:1].repeat(2)),
    }, "the values differ from x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps")
    return "the same as diffusion.q_sample."


@_exercise("04.2", "the signal fraction at t0")
def check_signal_fraction(fraction: Callable) -> str:
    """``fraction(alphas_cumprod, t0) -> float``: the source's amplitude left at the late start ``t0``."""
    ac = _alphas_cumprod()
    for t0 in (0.3, 0.5, 0.8, 0.95, 1.0):
        got = _call(fraction, ac, t0, todo="write fraction(alphas_cumprod, t0)",
                    on_error="t0 = 1 is the last timestep, T - 1.")
        try:
            got = float(got)
        except (TypeError, ValueError):
            raise _Hint(f"return one number (a float), not {type(got).__name__}") from None
        ref = signal_fraction(ac, t0)
        if abs(got - ref) < 1e-4:
            continue
        if abs(got - ref**2) < 1e-4:
            raise _Hint(f"at t0 = {t0} you return abar itself; the amplitude is its square root")
        if abs(got - math.sqrt(1 - ref**2)) < 1e-4:
            raise _Hint(f"at t0 = {t0} that is the noise's amplitude; the source's is the other coefficient")
        if abs(got - (1 - t0)) < 1e-4 or abs(got - t0) < 1e-4:
            raise _Hint(f"at t0 = {t0} you return a linear guess; read abar from the schedule at t0's timestep")
        if abs(got - ref) < 0.01:
            raise _Hint(f"at t0 = {t0} close ({got:.4f}), not equal: check which timestep t0 maps to (t0 = 1 is the last, T - 1)")
        raise _Hint(f"at t0 = {t0} the value differs ({got:.4f})")
    return "the same as diffusion.signal_fraction at t0 = 0.3 ... 1."


@_exercise("04.3", "the interpolation blend")
def check_blend(my_blend: Callable) -> str:
    """``my_blend(result, source, mask, strength)``: blend the source back where the mask is 0."""
    result, source = _randn(1, 3, 4, 4, seed=10), _randn(1, 3, 4, 4, seed=11)
    mask = torch.rand(1, 1, 4, 4, generator=torch.Generator().manual_seed(12))
    for s in (1.0, 0.5, 0.0):
        got = _call(my_blend, result, source, mask, s, todo="write my_blend(result, source, mask, strength)")
        variants = {
            "the mask is inverted: m = 1 marks what the edit changed, where the result should stay":
                blend(result, source, 1 - mask, s),
            "result and source are swapped": blend(source, result, mask, s),
            "the mask is missing: the source should come back only where m is 0":
                blend(result, source, torch.zeros_like(mask), s),
        }
        if s < 1:
            variants[f"at strength {s} the strength is ignored: it scales how much of the source comes back"] = \
                blend(result, source, mask, 1.0)
        _compare(got, blend(result, source, mask, s), variants, f"at strength {s} the values differ")
    return "the same as interpolation.blend at strengths 1, 0.5 and 0."


@_exercise("04.4", "estimating the edit mask")
def check_mask(my_mask: Callable) -> str:
    """``my_mask(result, reference, low, high)``: colour distance, then a smoothstep from ``low`` to ``high``
    (``estimate_mask`` without its blur)."""
    ref_img = _randn(1, 3, 6, 6, seed=13) * 0.3
    result = ref_img + _randn(1, 3, 6, 6, seed=14) * 0.2
    low, high = 0.15, 0.45
    got = _call(my_mask, result, ref_img, low, high, todo="write my_mask(result, reference, low, high)")
    want = estimate_mask(result, ref_img, low, high, blur=0)
    d = (result - ref_img).pow(2).sum(dim=1, keepdim=True).sqrt()
    t = (d - low) / (high - low)
    tc = t.clamp(0, 1)
    d1 = (result - ref_img).abs().mean(dim=1, keepdim=True)
    t1 = ((d1 - low) / (high - low)).clamp(0, 1)
    _compare(got, want, {
        "the mask is inverted: 1 should mark where the result differs from the reference": 1 - want,
        "the ramp is linear; the package uses a smoothstep, 3t^2 - 2t^3, so no seam shows": tc,
        "clamp t to [0, 1] before the smoothstep: differences above `high` give exactly 1": t * t * (3 - 2 * t),
        "the distance: use the colour distance, the L2 norm over the 3 channels": t1 * t1 * (3 - 2 * t1),
    }, "the values differ from the smoothstep of the colour distance between `low` and `high`")
    return "the same as interpolation.estimate_mask (with blur=0)."


# ------------------------------------------------------------------------------------------ notebook 06
@_exercise("06.1", "choosing t0 from the sweep")
def check_choose_setting(choose: Callable, points: Sequence[dict] | None = None) -> str:
    """``choose(points, min_psnr) -> dict``: the sweep point that edits most often while keeping ``min_psnr`` dB."""
    from .bench import choose_default, shipped_summary

    points = list(points if points is not None else shipped_summary()["sweep"])

    def key(p: dict) -> tuple:
        return p["guidance_scale"], p["t0"], p["interpolation"]
    for need in (25.0, 28.0, 30.0, 33.0):
        got = _call(choose, [dict(p) for p in points], need, todo="write choose(points, min_psnr)")
        want = choose_default(points, need)
        if not isinstance(got, dict) or "psnr" not in got:
            raise _Hint("return one of the points (a dict with 'success', 'psnr', 't0', ...)")
        if key(got) == key(want):
            continue
        if got["psnr"] < need:
            raise _Hint(f"at min_psnr {need:g} your setting keeps only {got['psnr']:.1f} dB, less than asked")
        if got["success"] < want["success"]:
            raise _Hint(f"at min_psnr {need:g} another setting that keeps enough edits more often "
                        f"({want['success']:.2f} > {got['success']:.2f}): among those, take the most successful")
        raise _Hint(f"at min_psnr {need:g} a tie on success: prefer the setting that keeps more")
    return "the same choice as bench.choose_default: the stricter the PSNR, the lower the t0."


@_exercise("06.2", "the removal challenge")
def check_removal(case, images: dict) -> str:
    """``images``: {tuning iterations: the edit's image} for one ``remove`` case; prints what the probe reads."""
    from .bench import score
    from .images import psnr

    if _blank(images) or _blank(case):
        raise _NotDone("pick a remove case, tune with two iteration counts and edit after each")
    if getattr(case, "kind", None) != "remove":
        raise _Hint("pick a case whose kind is 'remove' (c.kind == 'remove')")
    if not isinstance(images, dict) or len(images) < 2:
        raise _Hint("pass a dict {iterations: image} with at least two iteration counts, e.g. 16 and 64")
    if not all(hasattr(im, "convert") for im in images.values()):
        raise _Hint("the values should be the edits' PIL images (ut.edit(...).image)")
    ims = list(images.values())
    if any(ims[i].tobytes() == ims[j].tobytes() for i in range(len(ims)) for j in range(i)):
        raise _Hint("two iteration counts gave the same picture: re-tune (iters=n) before each edit")
    if any(psnr(im, world.render(case.target, im.width)) > 45 for im in ims):
        raise _Hint("that is the world's exact answer; pass the model's edit")
    lines = []
    for n, im in sorted(images.items()):
        s, read = score(case, im, _probe()), _probe().read([im])[0]
        lines.append(f"{n} iterations: {read['count']} object(s), success {s['success']:.0f}, {s['psnr']:.1f} dB")
    return "\n  " + "\n  ".join(lines)


# ------------------------------------------------------------------------------------------ capstone
@_exercise("00.C", "capstone")
def check_capstone(report: Sequence[dict]) -> str:
    """``report``: three dicts ``{"case", "image", "success", "psnr"}`` for three edits of one world scene;
    the reported scores are recomputed with ``bench.score``."""
    from .bench import score
    from .images import psnr

    if _blank(report) or (isinstance(report, (list, tuple)) and not report):
        raise _NotDone("tune on a scene, make three edits and fill in the report")
    if not isinstance(report, (list, tuple)) or len(report) != 3:
        raise _Hint("report exactly three edits, as a list of three dicts")
    if not all(isinstance(r, dict) and {"case", "image", "success", "psnr"} <= set(r) for r in report):
        raise _Hint("each entry needs the keys 'case', 'image', 'success' and 'psnr'")
    if len({r["case"].seed for r in report}) != 1:
        raise _Hint("tune once, on one scene: all three cases should share a scene seed")
    if len({(r["case"].kind, str(r["case"].value), r["case"].index) for r in report}) != 3:
        raise _Hint("make three different edits")
    for i, r in enumerate(report, 1):
        c, im = r["case"], r["image"]
        if psnr(im, world.render(c.target, im.width)) > 45:
            raise _Hint(f"edit {i} is the world's exact answer; report the model's edit")
        s = score(c, im, _probe())
        if float(r["success"]) != s["success"]:
            raise _Hint(f"edit {i}: you report success {r['success']}, the probe reads {s['success']:.0f}")
        if not math.isclose(float(r["psnr"]), s["psnr"], abs_tol=0.05):
            raise _Hint(f"edit {i}: you report {float(r['psnr']):.2f} dB, the recomputation gives {s['psnr']:.2f} dB: "
                        "score against the case's exact answer (bench.score), not the source")
    ok = sum(r["success"] for r in report)
    return f"{ok:.0f} of 3 edits succeeded, mean preservation {sum(r['psnr'] for r in report) / 3:.1f} dB."


# ------------------------------------------------------------------------------------------ quizzes
#: question id -> (the right letter, the section to read again, why it is right)
QUIZ: dict[str, tuple[str, str, str]] = {
    "00.1": ("b", "Step 1: tune", "tuning writes the source picture into the rare token"),
    "00.2": ("a", "the introduction", "the toy world knows the exact edited picture, so edits are measured"),
    "00.3": ("c", "Step 2: edit", "sqrt(abar) at t0 = 0.95 is about 0.08 on the cosine schedule"),
    "01.1": ("b", "Where the time goes", "the base stage runs the most steps, each a guided batch of two"),
    "01.2": ("a", "What a super-resolution stage sees", "the upsampled input is noised and the level is told"),
    "01.3": ("b", "Denoising, step by step", "the predicted x0 shows the layout after a few steps"),
    "02.1": ("b", "Choosing a rare token", "a known word already means something; tuning would tie the picture to it"),
    "02.2": ("a", "Iterations and learning rate", "over-tuning stores the source firmly and drowns the edit words"),
    "02.3": ("b", "Does tuning sr1 matter here?", "the pretrained sr1 already infers this world's detail"),
    "02.4": ("b", "The weight-space knob", "w = w0 + s (w1 - w0): at s = 0 every tuned weight is back at w0"),
    "03.1": ("a", "Prompt guidance against CFG, same seed", "at w = 1 both formulas reduce to the prompt's prediction"),
    "03.2": ("b", "Prompt guidance against CFG, same seed", "tuning moved shared weights: even '' draws the source"),
    "03.3": ("b", "Sweeping the guidance scale", "too much guidance overshoots (a second house) and then breaks down"),
    "04.1": ("b", "Late start: what x_t0 is", "only about 31% of the source's amplitude is left at t0 = 0.8"),
    "04.2": ("b", "The estimated mask and interpolation", "edit and reconstruction share the model's own errors"),
    "04.3": ("b", "The estimated mask and interpolation", "half of the source comes back where m = 0: a ghost"),
    "05.1": ("b", "What the editor keeps", "only Tune tunes; a slider previews with the model tuned in the kernel"),
    "05.2": ("b", "Your own mask, Save, Cancel", "a cancelled tune puts the pristine weights back"),
    "05.3": ("a", "Your own mask, Save, Cancel", "out = x + s(1 - m)(source - x) is the source where m = 0 and s = 1"),
    "06.1": ("c", "The full benchmark", "UniTune at its defaults is the only row over 25 dB"),
    "06.2": ("b", "One removal, live", "tuning binds the rare token to the layout: two objects in place"),
    "06.3": ("b", "How long to tune?", "more iterations keep more of the source and edit less often"),
    "07.1": ("b", "What runs where", "the tiny stand-ins have random weights: the run checks calls, not pictures"),
    "07.2": ("a", "Encode the prompts once, then free T5", "T5-XXL's encoder alone is about 9.5 GB in fp16"),
    "07.3": ("a", "Under the hood", "Adafactor on fp16 weights is unstable, so tuned stages run in fp32"),
}


def answer(question: str, choice: str | None) -> bool:
    """Check an answer to a "Check your understanding" question, e.g. ``answer("03.1", "b")``."""
    if question not in QUIZ:
        raise KeyError(f"no question {question!r}; the questions are {', '.join(QUIZ)}")
    right, section, why = QUIZ[question]
    if _blank(choice):
        print(f"Question {question}: not answered yet (write your letter between the quotes).")
        return False
    c = str(choice).strip().lower().strip("()")
    if c == right:
        print(f"Question {question}: correct: {why}.")
        return True
    if c not in ("a", "b", "c", "d"):
        print(f"Question {question}: answer with one letter, a, b or c.")
        return False
    print(f"Question {question}: not this one. Read the section \"{section}\" again.")
    return False
