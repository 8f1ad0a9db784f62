"""Benchmarks of the UniTune engine on the embedded cascade: speed (``unitune-nb bench-speed``) and
edits scored against the world's oracle (``unitune-nb bench-edit``).

The edit benchmark measures the paper's claim (Sec. 4.2) instead of judging pictures: each case is
a world scene and an edit whose exact answer the world renders.  Edit success is read by the
world's probe; preservation is PSNR / SSIM against the oracle target outside the change mask.

Targets on 2 CPU cores: tune base + sr1 with the paper's 128 iterations x batch 4 <= 30 s; one
full-resolution edit <= 5 s; a base-only preview <= 0.5 s; ``reset()`` <= 0.2 s; peak RSS <= 1.5 GB.
For reference, the paper reports about 3 minutes of tuning and ~30 s per edit on a T4-class GPU
with Imagen.  These are measurements, printed, not timed tests.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import platform
import random
import re
import resource
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from PIL import Image

from . import world
from .cascade import Cascade
from .images import psnr, ssim
from .tune import EDIT_DEFAULTS, RARE_TOKEN, UniTune

PREVIEW_STEPS = 12  # base-stage DDIM steps of a live preview


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def bench_speed(weights=None, iters: int = 128, batch_size: int = 4, repeats: int = 3, progress: bool = False) -> dict:
    """Measure tune, edit, preview and reset times; returns a dict of seconds and megabytes."""
    ut = UniTune(Cascade.from_pretrained(weights))
    source = world.render(world.random_scene(2), 128)
    ut.cascade.generate("warm up", stages=["base"], steps=2)
    report = ut.tune(source, iters=iters, batch_size=batch_size, progress=progress)
    res = {"threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
           "tune_iters": iters, "tune_batch": batch_size,
           "tune_base_s": report.seconds.get("base", 0.0), "tune_sr1_s": report.seconds.get("sr1", 0.0)}
    res["tune_total_s"] = res["tune_base_s"] + res["tune_sr1_s"]

    def timed(fn) -> float:
        ts = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
        return float(np.median(ts))

    res["edit_full_s"] = timed(lambda: ut.edit("beikkpic at night", t0=0.8, interpolation=0.5))
    res["preview_base_s"] = timed(lambda: ut.edit("beikkpic at night", stages=["base"], steps=PREVIEW_STEPS))
    res["generate_full_s"] = timed(lambda: ut.cascade.generate("a red house on snow at night"))
    with tempfile.TemporaryDirectory() as d:
        res["tuned_file_mb"] = ut.save_tuned(Path(d) / "tuned.safetensors") / 1e6
    t = time.perf_counter()
    ut.reset()  # the tuned base + sr1 back to pristine
    res["reset_s"] = time.perf_counter() - t
    res["peak_rss_mb"] = _peak_rss_mb()
    return res


TARGETS = {"tune_total_s": 30.0, "edit_full_s": 5.0, "preview_base_s": 0.5, "reset_s": 0.2, "peak_rss_mb": 1536.0,
           "generate_full_s": 3.0}


def format_speed(r: dict) -> str:
    lines = [f"threads {r['threads']}, tune {r['tune_iters']} iterations x batch {r['tune_batch']}",
             "| measure | measured | target |", "|---|---|---|"]
    for k, target in TARGETS.items():
        unit = "MB" if k.endswith("_mb") else "s"
        lines.append(f"| {k} | {r[k]:.2f} {unit} | <= {target:g} {unit} |")
    lines.append(f"| tune base / sr1 | {r['tune_base_s']:.1f} s / {r['tune_sr1_s']:.1f} s | |")
    lines.append(f"| tuned file (only what changed) | {r['tuned_file_mb']:.1f} MB | |")
    return "\n".join(lines)


# =========================================================================== the edit benchmark
CASES_FILE = Path(__file__).parent / "data" / "bench_cases.json"


@dataclass(frozen=True)
class Case:
    """One benchmark case: a world scene (by seed) and an edit of it, with the oracle answer."""

    seed: int
    kind: str
    value: object = None
    index: int = 0

    @property
    def scene(self) -> world.Scene:
        return world.random_scene(self.seed)

    @property
    def edit(self) -> world.Edit:
        v = tuple(self.value) if isinstance(self.value, list) else self.value
        return world.Edit(self.kind, v, self.index)

    @property
    def target(self) -> world.Scene:
        return world.edit(self.scene, self.edit)

    @property
    def prompt(self) -> str:
        """The edit prompt (UniTune adds the rare token in front)."""
        return world.edit_prompt(self.scene, self.edit)


def make_cases(n: int = 60, start_seed: int = 31_000_000) -> list[Case]:
    """``n`` cases, the six edit kinds in turn, each edit one that changes the scene."""
    cases: list[Case] = []
    seed = start_seed
    while len(cases) < n:
        kind = world.EDIT_KINDS[len(cases) % len(world.EDIT_KINDS)]
        s = world.random_scene(seed)
        rng = random.Random(seed)
        seed += 1
        if kind in ("time", "ground", "style"):
            options = {"time": world.TIMES, "ground": world.GROUNDS, "style": world.STYLES}[kind]
            cases.append(Case(seed - 1, kind, rng.choice([v for v in options if v != getattr(s, kind)])))
        elif kind == "recolour" and s.objects:
            i = rng.randrange(len(s.objects))
            cases.append(Case(seed - 1, kind, rng.choice([c for c in world.COLOURS if c != s.objects[i].colour]), i))
        elif kind == "add" and len(s.objects) == 1:
            cases.append(Case(seed - 1, kind, [rng.choice(world.KINDS), rng.choice(world.COLOURS)]))
        elif kind == "remove" and len(s.objects) == 2:
            cases.append(Case(seed - 1, kind, None, rng.randrange(2)))
    return cases


def load_cases(path: str | Path | None = None) -> list[Case]:
    """The fixed case list kept in the repository (so numbers compare between versions)."""
    data = json.loads(Path(path or CASES_FILE).read_text())
    return [Case(**c) for c in data["cases"]]


def save_cases(cases: Sequence[Case], path: str | Path | None = None) -> None:
    path = Path(path or CASES_FILE)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"version": 1, "cases": [dataclasses.asdict(c) for c in cases]}, indent=1))


def edit_succeeded(case: Case, read: dict) -> bool:
    """Does the probe's reading of a result show the intended edit?"""
    e, s = case.edit, case.scene
    if e.kind in ("time", "ground", "style"):
        return read[e.kind] == e.value
    if e.kind == "recolour":
        return (e.value, s.objects[e.index].kind) in read["pairs"]
    if e.kind == "add":
        kind, colour = e.value  # type: ignore[misc]
        return read["count"] == len(s.objects) + 1 and (colour, kind) in read["pairs"]
    return read["count"] == len(s.objects) - 1  # remove


def score(case: Case, image: Image.Image, probe) -> dict:
    """Success, preservation (PSNR/SSIM against the oracle outside the change mask; the whole image for
    global edits), identity (PSNR inside the objects the edit keeps) of one result."""
    size = image.width
    target = world.render(case.target, size)
    change = world.change_mask(case.scene, case.edit, size)
    keep = ~change if (~change).any() else np.ones_like(change)
    after = case.target
    k = case.edit.kind
    edited = {case.edit.index} if k == "recolour" else {len(after.objects) - 1} if k == "add" else set()
    objs = np.zeros_like(change)
    for i in range(len(after.objects)):
        if i not in edited:
            objs |= world.region_mask(after, f"object:{i}", size)
    return {"success": float(edit_succeeded(case, probe.read([image])[0])),
            "psnr": psnr(image, target, keep), "ssim": ssim(image, target, keep),
            "identity": psnr(image, target, objs) if objs.any() else float("nan")}


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
    curve, not one point that follows the engine's t0 (UniTune paper, Sec. 4.2: the SDEdit comparison)."""
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
    from .baselines import METHODS

    unknown = set(methods or ()) - {m.name for m in METHODS}
    if unknown:
        raise ValueError(f"unknown method(s) {sorted(unknown)}; choose from {[m.name for m in METHODS]}")
    return sdedit_rows([m for m in METHODS if methods is None or m.name in methods], sdedit_t0)


def _rows(ut: UniTune, case: Case, ci: int, model: str, rows, d: dict, seeds: int, stages: tuple[str, ...], probe,
          rare_token: str, prep: float, sweep: dict | None, sweep_seeds: int = 1) -> Iterator[dict]:
    """The benchmark rows that edit with ``model`` (and the settings grid on the tuned one)."""
    pristine_prompt = world.caption(case.target)
    for m in rows:
        if m.model != model:
            continue
        prompt = f"{rare_token} {case.prompt}" if m.rare else pristine_prompt
        st = method_settings(m, d, rare_token)
        for seed in range(seeds):
            im, secs = _edit(ut, prompt, st, seed, stages)
            yield {"case": ci, "kind": case.kind, "method": m.name, "seed": seed, "prep_s": prep,
                   "edit_s": secs, **score(case, im, probe)}
    if model == "tuned" and sweep:
        grid = itertools.product(sweep.get("guidance_scale", [d["guidance_scale"]]),
                                 sweep.get("t0", [d["t0"]]), sweep.get("interpolation", [d["interpolation"]]))
        for (g, t0, a), seed in itertools.product(grid, range(sweep_seeds)):
            st = {"guidance_scale": g, "t0": t0, "interpolation": a, "baseline_prompt": None}
            im, secs = _edit(ut, f"{rare_token} {case.prompt}", st, seed, stages)
            yield {"case": ci, "kind": case.kind, "method": "sweep", "seed": seed, "guidance_scale": g,
                   "t0": t0, "interpolation": a, "edit_s": secs, **score(case, im, probe)}


def bench_edit_steps(cases: Sequence[Case], weights=None, seeds: int = 3, iters: int | None = None,
                     ti_iters: int | None = None, full: bool = False, sweep: dict | None = None, defaults: dict | None = None,
                     rare_token: str = RARE_TOKEN, methods: Sequence[str] | None = None,
                     sweep_iters: Sequence[int] | None = None, sweep_seeds: int = 1,
                     sdedit_t0: Sequence[float] | None = None) -> Iterator[dict]:
    """Run every benchmark row on every case; yields one record per (case, method, seed) result.

    ``iters`` / ``ti_iters``: UniTune's tuning and Textual Inversion's iterations per case (default: the
    engine's ``tune_iters``, both).  Each case tunes once (UniTune), inverts once (Textual Inversion) and
    reuses the pristine model for SDEdit and plain text-to-image.  ``full`` tunes base + sr1 and edits at 128 px; by default
    the benchmark tunes and edits the base stage (32 px), which is where the edit is decided.
    ``sweep`` (``{"guidance_scale": [...], "t0": [...], "interpolation": [...]}``) also scores that
    grid of UniTune settings (seeds ``0 .. sweep_seeds - 1``) on the tuned model, records marked ``method="sweep"``.
    ``methods`` restricts the rows (names from :data:`~unitune_nb.baselines.METHODS`; ``[]`` = sweep only).
    ``sweep_iters`` (e.g. ``[16, 32, 64, 128]``) scores UniTune's default settings, every seed, after that
    many tuning iterations, records marked ``method="iters"``: one tuning run per case, read at each count
    (the tuning loop is a generator), so the sweep costs the longest count, not the sum.
    ``sdedit_t0`` (e.g. ``[0.5, 0.6, 0.7, 0.8]``) runs SDEdit once per start (:func:`sdedit_rows`).
    """
    from .baselines import METHODS, UNITUNE, forget_inversion, textual_inversion
    from .probe import load_probe

    ut = UniTune(Cascade.from_pretrained(weights))
    iters = ut.default_iters if iters is None else iters
    ti_iters = iters if ti_iters is None else ti_iters
    probe = load_probe()
    d = dict(EDIT_DEFAULTS, **(defaults or {}))
    d.setdefault("model_guidance", ut.cascade.defaults["base"]["guidance_scale"])
    if d["guidance_scale"] is None:
        d["guidance_scale"] = d["model_guidance"]
    stages = ("base", "sr1", "sr2") if full else ("base",)
    stages = tuple(s for s in stages if s in ut.cascade.stages)
    rows = benchmark_rows(methods, sdedit_t0)
    sweep_iters = sorted({int(k) for k in sweep_iters or ()})
    if sweep_iters and (full or sweep_iters[0] < 1):
        raise ValueError("sweep_iters needs positive counts and works on the base stage only (leave out full=True)")
    models = [x for x in ("pristine", "inverted", "tuned")
              if any(m.model == x for m in rows) or (x == "tuned" and (sweep or sweep_iters))]
    for ci, case in enumerate(cases):
        source = world.render(case.scene, 128)
        for model in models:
            forget_inversion(ut, rare_token)
            ut.reset()
            ut.set_source(source)
            if model != "tuned":
                t = time.perf_counter()
                if model == "inverted":
                    textual_inversion(ut, None, rare_token, iters=ti_iters)
                yield from _rows(ut, case, ci, model, rows, d, seeds, stages, probe, rare_token,
                                 time.perf_counter() - t, sweep)
                continue
            # one tuning run, read after each count of sweep_iters and at `iters` for the rows
            marks = sorted(set(sweep_iters) | {iters})
            tuning = ut.tune_steps(None, rare_token, stages=stages[:2], iters=marks[-1])
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
                        yield {"case": ci, "kind": case.kind, "method": "iters", "iters": k, "seed": seed,
                               "prep_s": prep, "edit_s": secs, **score(case, im, probe)}
                if k == iters:
                    yield from _rows(ut, case, ci, model, rows, d, seeds, stages, probe, rare_token, prep, sweep,
                                     sweep_seeds)
        forget_inversion(ut, rare_token)
        ut.reset()


def _over_seeds(rs: Sequence[dict], keys: Sequence[str] = ("success", "psnr", "ssim", "identity")) -> dict:
    """Each metric as (mean, std) over seeds of its per-seed mean over cases."""
    seeds = sorted({r["seed"] for r in rs})
    out = {}
    for k in keys:
        v = np.array([np.nanmean([r[k] for r in rs if r["seed"] == s]) for s in seeds])
        out[k] = (float(v.mean()), float(v.std()))
    return out


def summarize(records: Sequence[dict]) -> dict:
    """Per method: mean and spread (std over seeds) of success, PSNR, SSIM, identity, seconds."""
    out = {}
    rows = [r for r in records if r["method"] not in ("sweep", "iters")]
    for name in dict.fromkeys(r["method"] for r in rows):
        rs = [r for r in rows if r["method"] == name]
        stats = _over_seeds(rs)
        stats["edit_s"] = float(np.mean([r["edit_s"] for r in rs]))
        stats["prep_s"] = float(np.mean([r["prep_s"] for r in rs if r["seed"] == 0]))
        stats["cases"] = len({r["case"] for r in rs})
        stats["seeds"] = len({r["seed"] for r in rs})
        stats["by_kind"] = {k: float(np.mean([r["success"] for r in rs if r["kind"] == k]))
                            for k in dict.fromkeys(r["kind"] for r in rs)}
        out[name] = stats
    return out


def summarize_iters(records: Sequence[dict]) -> list[dict]:
    """Per tuning-iteration count: UniTune's default-settings success and PSNR (mean, std over seeds), tune seconds."""
    out = []
    rs = [r for r in records if r["method"] == "iters"]
    for k in sorted({r["iters"] for r in rs}):
        rk = [r for r in rs if r["iters"] == k]
        out.append({"iters": k, "n": len(rk), "prep_s": float(np.mean([r["prep_s"] for r in rk])), **_over_seeds(rk)})
    return out


def summarize_sweep(records: Sequence[dict]) -> list[dict]:
    """Mean success and preservation of each swept setting, with ``front`` marking the Pareto front."""
    rows = [r for r in records if r["method"] == "sweep"]
    pts = []
    for key in dict.fromkeys((r["guidance_scale"], r["t0"], r["interpolation"]) for r in rows):
        rs = [r for r in rows if (r["guidance_scale"], r["t0"], r["interpolation"]) == key]
        (success, success_std), (psnr, psnr_std) = _over_seeds(rs, ("success", "psnr")).values()
        pts.append({"guidance_scale": key[0], "t0": key[1], "interpolation": key[2], "n": len(rs),
                    "seeds": len({r["seed"] for r in rs}), "success": success, "psnr": psnr,
                    "success_std": success_std, "psnr_std": psnr_std})
    for p in pts:
        p["front"] = not any(q["success"] >= p["success"] and q["psnr"] >= p["psnr"] and
                             (q["success"] > p["success"] or q["psnr"] > p["psnr"]) for q in pts)
    return pts


def choose_default(points: Sequence[dict], min_psnr: float = 25.0) -> dict:
    """The front point with the highest success among those preserving >= ``min_psnr`` dB (else the
    front point with the best success + PSNR/25 balance)."""
    front = [p for p in points if p["front"]]
    ok = [p for p in front if p["psnr"] >= min_psnr]
    if ok:
        return max(ok, key=lambda p: (p["success"], p["psnr"]))
    return max(front, key=lambda p: p["success"] + p["psnr"] / 25.0)


def pareto_figure(points: Sequence[dict], summary: dict | None = None, chosen: dict | None = None):
    """Success against preservation PSNR: the swept UniTune settings (front joined) and the benchmark rows."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=80)
    ax.scatter([p["psnr"] for p in points], [p["success"] for p in points], s=14, c="0.7", label="UniTune settings (sweep)")
    front = sorted((p for p in points if p["front"]), key=lambda p: p["psnr"])
    ax.plot([p["psnr"] for p in front], [p["success"] for p in front], "-", c="0.4", lw=1, label="Pareto front")
    if chosen:
        ax.scatter([chosen["psnr"]], [chosen["success"]], s=120, facecolors="none", edgecolors="k",
                   label=f"default: g={chosen['guidance_scale']:g}, t0={chosen['t0']:g}, interp={chosen['interpolation']:g}")
    curves: dict[str, list] = {}  # rows run at several starts ("SDEdit (t0 0.6)", ...) drawn as one curve
    for name, st in (summary or {}).items():
        (s, ds), (p, dp) = st["success"], st["psnr"]
        m = re.fullmatch(r"(.+) \(t0 ([\d.]+)\)", name)
        if m:
            curves.setdefault(m[1], []).append((float(m[2]), p, s))
            continue
        ax.errorbar([p], [s], xerr=[dp], yerr=[ds], fmt="o", ms=5, capsize=2, label=name)
    for name, pts in curves.items():
        pts.sort()
        line, = ax.plot([q[1] for q in pts], [q[2] for q in pts], "^:", ms=5,
                        label=f"{name} (t0 {pts[0][0]:g}-{pts[-1][0]:g})")
        for t0, p, s in (pts[0], pts[-1]):
            ax.annotate(f"t0 {t0:g}", (p, s), fontsize=6, color=line.get_color(), xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("preservation: PSNR vs oracle target outside the change mask (dB)")
    ax.set_ylabel("edit success (probe)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="best")
    fig.tight_layout()
    return fig


def iters_figure(rows: Sequence[dict]):
    """Success and preservation of UniTune's defaults against tuning iterations (:func:`summarize_iters` rows)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.6, 3.4), dpi=80)
    k = [r["iters"] for r in rows]
    ax.errorbar(k, [r["success"][0] for r in rows], yerr=[r["success"][1] for r in rows], fmt="o-", c="C0", capsize=2)
    ax.set_xscale("log", base=2)
    ax.set_xticks(k, [str(v) for v in k])
    ax.set_xlabel("tuning iterations (batch 4)")
    ax.set_ylabel("edit success", color="C0")
    ax2 = ax.twinx()
    ax2.errorbar(k, [r["psnr"][0] for r in rows], yerr=[r["psnr"][1] for r in rows], fmt="s--", c="C1", capsize=2)
    ax2.set_ylabel("PSNR outside mask (dB)", color="C1")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def format_edit(summary: dict) -> str:
    lines = ["| method | success | PSNR outside mask (dB) | SSIM | identity PSNR (dB) | prep s | edit s |",
             "|---|---|---|---|---|---|---|"]
    for name, st in summary.items():
        f = lambda k, d=2: f"{st[k][0]:.{d}f} ± {st[k][1]:.{d}f}"  # noqa: E731
        lines.append(f"| {name} | {f('success')} | {f('psnr', 1)} | {f('ssim')} | {f('identity', 1)} | "
                     f"{st['prep_s']:.1f} | {st['edit_s']:.2f} |")
    any_st = next(iter(summary.values()), None)
    if any_st:
        lines.append(f"\n{any_st['cases']} cases x {any_st['seeds']} seeds; ± is the std over seeds.")
    return "\n".join(lines)


def edit_report(records: Sequence[dict], meta: dict) -> tuple[dict, str]:
    """Everything ``bench-edit`` reports from its records: the rows' summary, the settings sweep with its
    Pareto front and chosen default, the tuning-iteration table (each when present), as a dict (``meta``
    merged in) and as markdown text."""
    out = {**meta, "summary": summarize(records)}
    parts = [format_edit(out["summary"])] if out["summary"] else []
    pts = summarize_sweep(records)
    if pts:
        chosen = choose_default(pts)
        out.update(sweep=pts, chosen=chosen)
        lines = ["| guidance | t0 | interpolation | success | PSNR | front |", "|---|---|---|---|---|---|"]
        lines += [f"| {p['guidance_scale']:g} | {p['t0']:g} | {p['interpolation']:g} | {p['success']:.2f} ± "
                  f"{p['success_std']:.2f} | {p['psnr']:.1f} ± {p['psnr_std']:.1f} | {'*' if p['front'] else ''} |"
                  for p in pts]
        lines.append(f"\ndefault chosen on the front: guidance {chosen['guidance_scale']:g}, t0 {chosen['t0']:g}, "
                     f"interpolation {chosen['interpolation']:g} (success {chosen['success']:.2f}, "
                     f"PSNR {chosen['psnr']:.1f})")
        parts.append("\n".join(lines))
    its = summarize_iters(records)
    if its:
        out["iters_sweep"] = its
        lines = ["| tuning iterations | success | PSNR outside mask (dB) | SSIM | tune s |", "|---|---|---|---|---|"]
        lines += [f"| {r['iters']} | {r['success'][0]:.2f} ± {r['success'][1]:.2f} | {r['psnr'][0]:.1f} ± "
                  f"{r['psnr'][1]:.1f} | {r['ssim'][0]:.2f} | {r['prep_s']:.1f} |" for r in its]
        parts.append("\n".join(lines))
    return out, "\n\n".join(parts)


def write_edit_report(out: dict, records: Sequence[dict], folder: str | Path) -> Path:
    """Write ``bench_edit.json`` (with every record), ``bench_edit_summary.json`` and the figures
    (``pareto.png``, ``iters.png`` when there is a tuning-iteration sweep) into ``folder``."""
    import matplotlib.pyplot as plt

    d = Path(folder)
    d.mkdir(parents=True, exist_ok=True)
    (d / "bench_edit.json").write_text(json.dumps({**out, "records": list(records)}, indent=1))
    (d / "bench_edit_summary.json").write_text(json.dumps(out, indent=1))
    if out.get("sweep") or out.get("summary"):
        fig = pareto_figure(out.get("sweep", []), out.get("summary"), out.get("chosen"))
        fig.savefig(d / "pareto.png", bbox_inches="tight")
        plt.close(fig)
    if out.get("iters_sweep"):
        fig = iters_figure(out["iters_sweep"])
        fig.savefig(d / "iters.png", bbox_inches="tight")
        plt.close(fig)
    return d / "bench_edit.json"


def merge_edit_runs(folders: Sequence[str | Path]) -> tuple[list[dict], dict]:
    """The records of several ``bench-edit --out`` folders (e.g. a case list split over processes or
    machines) as one run: case numbers are offset so they stay distinct; ``cases`` adds up."""
    records: list[dict] = []
    meta: dict = {}
    for f in folders:
        path = Path(f) / "bench_edit.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: pass folders written by `unitune-nb bench-edit --out`")
        run = json.loads(path.read_text())
        offset = meta.get("cases", 0)
        records += [dict(r, case=r["case"] + offset) for r in run["records"]]
        m = {k: run[k] for k in ("cases", "seeds", "iters", "ti_iters", "full", "threads") if k in run}
        if meta and any(meta.get(k) != m.get(k) for k in ("seeds", "iters", "ti_iters", "full")):
            raise ValueError(f"{f} was run with other settings than {folders[0]}; only like runs can be merged")
        meta = {**m, "cases": offset + m.get("cases", 0)}
    return records, meta
