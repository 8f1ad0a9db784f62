"""Running the edit benchmark: UniTune and the baselines on the fixed cases, in the same engine.

Each case tunes once (UniTune), inverts once (Textual Inversion) and reuses the pristine model for
SDEdit and plain text-to-image; every result is scored (:mod:`.cases`) and yielded as a record.
"""
from __future__ import annotations

import dataclasses
import itertools
import time
import warnings
from typing import Iterator, Sequence

from PIL import Image

from .. import world
from ..cascade import Cascade
from ..settings import EDIT_DEFAULTS, RARE_TOKEN, SWEEP_GRID, EditSettings  # noqa: F401  (SWEEP_GRID re-exported)
from ..tune import UniTune
from .cases import Case, score


def _edit(ut: UniTune, prompt: str, settings: dict, seed: int, stages: tuple[str, ...]) -> tuple[Image.Image, float]:
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        im = ut.edit(prompt, seed=seed, stages=stages, **settings).image
    return im, time.perf_counter() - t


SDEDIT_T0 = 0.7  # SDEdit's start when the engine's default t0 is 1 (no late start)


def method_settings(m, defaults: dict, rare_token: str) -> dict:
    """The edit options of a benchmark row (a :class:`~unitune_nb.baselines.Method`); ``defaults`` holds
    the edit defaults and, under ``"model_guidance"``, the model's text-to-image guidance scale."""
    t0 = defaults["t0"] if m.t0 is None else m.t0
    if m.name == "SDEdit" and t0 >= 1.0:
        t0 = SDEDIT_T0  # SDEdit is a late start by definition
    g = {None: defaults["guidance_scale"], "model": defaults.get("model_guidance")}.get(m.guidance_scale, m.guidance_scale)
    if g is None:
        raise ValueError(f"method {m.name!r} samples at the model's guidance; pass defaults['model_guidance']")
    return {"guidance_scale": g, "t0": t0,
            "interpolation": defaults["interpolation"] if m.interpolation is None else m.interpolation,
            "baseline_prompt": rare_token if m.prompt_guidance else None,
            "mask_from": m.mask_from or defaults.get("mask_from", EDIT_DEFAULTS["mask_from"])}


def sdedit_rows(rows: Sequence, t0s: Sequence[float] | None) -> list:
    """``rows`` with the SDEdit row (if any) replaced by one row per start in ``t0s``, named
    "SDEdit (t0 0.6)" and so on: SDEdit's only knob is its start, so the fair comparison is its whole
    curve, not one point that follows the engine's t0 (UniTune paper, Sec. 4: the SDEdit comparison)."""
    if not t0s:
        return list(rows)
    bad = [t for t in t0s if not 0.0 < t < 1.0]
    if bad:
        raise ValueError(f"SDEdit starts need 0 < t0 < 1 (a late start), got {bad}")
    out = []
    for m in rows:
        out += ([dataclasses.replace(m, name=f"SDEdit (t0 {t:g})", t0=float(t)) for t in t0s]
                if m.name == "SDEdit" else [m])
    return out


def benchmark_rows(methods: Sequence[str] | None = None, sdedit_t0: Sequence[float] | None = None) -> list:
    """The rows a run scores: every :data:`~unitune_nb.baselines.METHODS` row (or those named in ``methods``),
    SDEdit once per start in ``sdedit_t0`` (:func:`sdedit_rows`)."""
    from ..baselines import METHODS

    unknown = set(methods or ()) - {m.name for m in METHODS}
    if unknown:
        raise ValueError(f"unknown method(s) {sorted(unknown)}; choose from {[m.name for m in METHODS]}")
    return sdedit_rows([m for m in METHODS if methods is None or m.name in methods], sdedit_t0)


def tune_label(tune: dict | None) -> str:
    """A short name for tuning options that differ from the model's defaults, e.g. ``"LoRA r16, lr 0.001"``
    (``""`` for the defaults): benchmark rows of a tuned model carry it."""
    tune = dict(tune or {})
    method = tune.pop("method", "full") or "full"
    rank = tune.pop("lora_rank", None)
    head = {"full": "", "attention": "attention only", "lora": f"LoRA r{rank or '?'}"}[method]
    if isinstance(tune.get("targets"), (list, tuple)):
        tune["targets"] = ",".join(tune["targets"])
    rest = [f"{k.replace('_', ' ')} {v:g}" if isinstance(v, float) else f"{k.replace('_', ' ')} {v}"
            for k, v in sorted(tune.items()) if v is not None]
    return ", ".join([head] * bool(head) + rest)


def _rows(ut: UniTune, case: Case, ci: int, model: str, rows, d: dict, seeds: int, stages: tuple[str, ...], probe,
          rare_token: str, prep: float, sweep: dict | None, sweep_seeds: int = 1, label: str = "",
          scales: Sequence[float] = ()) -> Iterator[dict]:
    """The benchmark rows that edit with ``model`` (and, on the tuned one, the settings grid and the UniTune rows
    at each weight scale in ``scales``, named "... (scale 0.5)"; ``label`` names the tuning options)."""
    pristine_prompt = world.caption(case.target)
    for m in rows:
        if m.model != model:
            continue
        prompt = f"{rare_token} {case.prompt}" if m.rare else pristine_prompt
        st = method_settings(m, d, rare_token)
        name = f"{m.name}, {label}" if label and model == "tuned" else m.name
        for scale in ([None] + [float(x) for x in scales] if model == "tuned" else [None]):
            scaled = {} if scale is None else {"weight_scale": scale}
            for seed in range(seeds):
                im, secs = _edit(ut, prompt, {**st, **scaled}, seed, stages)
                yield {"case": ci, "kind": case.kind, "seed": seed, "prep_s": prep, "edit_s": secs,
                       "method": name if scale is None else f"{name} (scale {scale:g})", **scaled,
                       **score(case, im, probe)}
    if model == "tuned" and sweep:
        grid = itertools.product(sweep.get("guidance_scale", [d["guidance_scale"]]),
                                 sweep.get("t0", [d["t0"]]), sweep.get("interpolation", [d["interpolation"]]))
        for (g, t0, a), seed in itertools.product(grid, range(sweep_seeds)):
            st = {"guidance_scale": g, "t0": t0, "interpolation": a, "baseline_prompt": None}
            im, secs = _edit(ut, f"{rare_token} {case.prompt}", st, seed, stages)
            yield {"case": ci, "kind": case.kind, "method": "sweep", "seed": seed, "guidance_scale": g,
                   "t0": t0, "interpolation": a, "edit_s": secs, **score(case, im, probe)}


def _tuned_rows(ut: UniTune, case: Case, ci: int, rows, d: dict, seeds: int, stages: tuple[str, ...], probe,
                rare_token: str, iters: int, sweep: dict | None, sweep_iters: list[int],
                sweep_seeds: int, tune: dict | None = None, scales: Sequence[float] = ()) -> Iterator[dict]:
    """The rows on the tuned model: one tuning run (options ``tune``, e.g. ``{"method": "lora", "lora_rank": 16}``),
    read after each count of ``sweep_iters`` (records ``method="iters"``) and at ``iters`` for the rows, the
    weight scales and the settings sweep."""
    from ..baselines import METHODS, UNITUNE

    marks = sorted(set(sweep_iters) | {iters})
    label = tune_label(tune)
    tuning = ut.tune_steps(None, rare_token, stages=stages[:2], iters=marks[-1], **(tune or {}))
    prep, done = 0.0, 0
    for k in marks:
        t = time.perf_counter()
        for _ in tuning:  # the last mark runs the loop to its end (its clean-up included)
            done += 1
            if done >= k and k != marks[-1]:
                break
        prep += time.perf_counter() - t  # tuning seconds so far; edits do not count
        if k in sweep_iters:
            st = method_settings(next(m for m in METHODS if m.name == UNITUNE), d, rare_token)
            for seed in range(seeds):
                im, secs = _edit(ut, f"{rare_token} {case.prompt}", st, seed, stages)
                yield {"case": ci, "kind": case.kind, "method": "iters", "iters": k, "seed": seed, "tune": label,
                       "prep_s": prep, "edit_s": secs, **score(case, im, probe)}
        if k == iters:
            yield from _rows(ut, case, ci, "tuned", rows, d, seeds, stages, probe, rare_token, prep, sweep, sweep_seeds,
                             label, scales)


def _case_rows(ut: UniTune, case: Case, ci: int, models: list[str], rows, d: dict, seeds: int,
               stages: tuple[str, ...], probe, rare_token: str, iters: int, ti_iters: int, sweep: dict | None,
               sweep_iters: list[int], sweep_seeds: int, tune: dict | None = None,
               scales: Sequence[float] = ()) -> Iterator[dict]:
    """Every record of one case: each model state prepared once from the pristine weights, then its rows."""
    from ..baselines import forget_inversion, textual_inversion

    source = world.render(case.scene, 128)
    for model in models:
        forget_inversion(ut, rare_token)
        ut.reset()
        ut.set_source(source)
        if model == "tuned":
            yield from _tuned_rows(ut, case, ci, rows, d, seeds, stages, probe, rare_token, iters, sweep, sweep_iters,
                                   sweep_seeds, tune, scales)
            continue
        t = time.perf_counter()
        if model == "inverted":
            textual_inversion(ut, None, rare_token, iters=ti_iters)
        yield from _rows(ut, case, ci, model, rows, d, seeds, stages, probe, rare_token, time.perf_counter() - t, sweep)
    forget_inversion(ut, rare_token)
    ut.reset()


def bench_edit_steps(cases: Sequence[Case], weights=None, seeds: int = 3, iters: int | None = None,
                     ti_iters: int | None = None, full: bool = False, sweep: dict | None = None, defaults: dict | None = None,
                     rare_token: str = RARE_TOKEN, methods: Sequence[str] | None = None,
                     sweep_iters: Sequence[int] | None = None, sweep_seeds: int = 1,
                     sdedit_t0: Sequence[float] | None = None, tune: dict | None = None,
                     sweep_scale: Sequence[float] | None = None) -> Iterator[dict]:
    """Run every benchmark row on every case; yields one record per (case, method, seed) result.

    ``iters`` / ``ti_iters``: UniTune's tuning and Textual Inversion's iterations per case (default: the
    model's tuning iterations, both).  ``full`` tunes base + sr1 and edits at 128 px; by default the
    benchmark tunes and edits the base stage (32 px), which is where the edit is decided.
    ``sweep`` (``{"guidance_scale": [...], "t0": [...], "interpolation": [...]}``) also scores that
    grid of UniTune settings (seeds ``0 .. sweep_seeds - 1``) on the tuned model, records marked ``method="sweep"``.
    ``methods`` restricts the rows (names from :data:`~unitune_nb.baselines.METHODS`; ``[]`` = sweep only).
    ``sweep_iters`` (e.g. ``[16, 32, 64, 128]``) scores UniTune's default settings, every seed, after that
    many tuning iterations, records marked ``method="iters"``, from one tuning run per case.
    ``sdedit_t0`` (e.g. ``[0.5, 0.6, 0.7, 0.8]``) runs SDEdit once per start (:func:`sdedit_rows`).
    ``tune``: UniTune's tuning options other than the model's (``method``, ``lora_rank``, ``lr``, ...: those of
    :meth:`~unitune_nb.tune.UniTune.tune_steps`); its rows are then named after them (:func:`tune_label`).
    ``sweep_scale`` (e.g. ``[0.5, 0.75]``) also scores the tuned-model rows at those weight scales.
    """
    from ..probe import load_probe

    ut = UniTune(Cascade.from_pretrained(weights))
    iters = ut.default_iters if iters is None else iters
    ti_iters = iters if ti_iters is None else ti_iters
    d = dict(ut.edit_defaults, **(defaults or {}))
    d.setdefault("model_guidance", ut.cascade.defaults["base"]["guidance_scale"])
    if d["guidance_scale"] is None:
        d["guidance_scale"] = d["model_guidance"]
    stages = tuple(s for s in (("base", "sr1", "sr2") if full else ("base",)) if s in ut.cascade.stages)
    rows = benchmark_rows(methods, sdedit_t0)
    sweep_iters = sorted({int(k) for k in sweep_iters or ()})
    if sweep_iters and (full or sweep_iters[0] < 1):
        raise ValueError("sweep_iters needs positive counts and works on the base stage only (leave out full=True)")
    scales = [float(x) for x in sweep_scale or ()]
    if tune:
        ut.tune_settings(**tune)  # refuse bad options before the first case
    for x in scales:
        EditSettings(weight_scale=x).check()
    models = [x for x in ("pristine", "inverted", "tuned")
              if any(m.model == x for m in rows) or (x == "tuned" and (sweep or sweep_iters))]
    probe = load_probe()
    for ci, case in enumerate(cases):
        yield from _case_rows(ut, case, ci, models, rows, d, seeds, stages, probe, rare_token, iters, ti_iters, sweep,
                              sweep_iters, sweep_seeds, tune, scales)
