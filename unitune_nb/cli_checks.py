"""Checks of every ``unitune-nb`` command's arguments and paths, run before any model is loaded.

A typo must not cost a 20-second tune: each ``check_<command>`` raises a ``ValueError`` / ``TypeError`` /
``OSError`` whose message says what to do, and ``cli.main`` prints it as one line.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

from . import files
from .machine import check_threads, default_threads
from .settings import EditSettings, check_int


def _positive(name: str, value, integer: bool = True) -> None:
    if value is None:
        return
    if integer:
        check_int(name, value, 1)
    elif not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value}")


def _floats(name: str, text: str | None) -> list[float] | None:
    """A comma-separated list of finite numbers."""
    if text is None:
        return None
    try:
        vals = [float(x) for x in text.split(",") if x.strip()]
    except ValueError as e:
        raise ValueError(f"{name} must be comma-separated numbers, e.g. 3,4,5; got {text!r}") from e
    if not vals or not all(math.isfinite(v) for v in vals):
        raise ValueError(f"{name} must be comma-separated finite numbers, got {text!r}")
    return vals


def _weights(a: argparse.Namespace) -> None:
    w = getattr(a, "weights", None)
    if w is not None and not Path(w).is_dir():
        raise FileNotFoundError(f"--weights {w}: no such folder, so not a unitune_nb cascade folder; give one written "
                                "by `unitune-nb train --out` or `export`")


def _edit_settings(a: argparse.Namespace, mask=None) -> None:
    EditSettings(a.guidance_scale, a.baseline_prompt, a.t0, a.interpolation, mask, a.mask_from, a.seed,
                 weight_scale=a.weight_scale).check()
    _positive("--iters", a.iters)


def _targets(text: str | None) -> None:
    if text is not None and not all(t.strip(". ") for t in text.split(",")):
        raise ValueError(f"--tune-targets {text!r}: give comma-separated module names, e.g. attn2 or to_k,to_v")


def _prompt(p: str) -> None:
    if not p.strip():
        raise ValueError("the prompt is empty; describe the image, e.g. 'a red house on snow at night'")


def check_common(a: argparse.Namespace) -> None:
    if a.threads is not None:
        _positive("--threads", a.threads)
        check_threads(a.threads, "--threads")
    default_threads()  # a bad UNITUNE_NB_THREADS is refused here too, before any model loads
    _weights(a)


def check_generate(a: argparse.Namespace) -> None:
    _prompt(a.prompt)
    EditSettings(guidance_scale=a.guidance_scale, seed=a.seed).check()
    files.output_file(a.out, "--out image")


def check_edit(a: argparse.Namespace) -> None:
    from .cascade import STAGES
    from .interpolation import mask_to_tensor

    files.input_file(a.source, "source image")
    for p in a.prompts:
        _prompt(p)
    if a.mask is not None:
        files.input_file(a.mask, "--mask")
        mask_to_tensor(a.mask, 32)  # readable, and values that mean something
    _edit_settings(a)
    _positive("--lr", a.lr, integer=False)
    _positive("--lora-rank", a.lora_rank)
    _targets(a.tune_targets)
    if not a.rare_token.strip():
        raise ValueError("--rare-token is empty; give a nonsense word such as 'beikkpic'")
    bad = [s for s in a.tune_stages.split(",") if s not in STAGES]
    if bad:
        raise ValueError(f"--tune-stages: unknown stage(s) {bad}; the stages are {', '.join(STAGES)}")
    files.output_dir(a.out, "--out folder")
    if a.save_tuned:
        files.output_file(a.save_tuned, "--save-tuned file")
    if a.load_tuned:
        files.input_file(a.load_tuned, "--load-tuned file")


def check_demo(a: argparse.Namespace) -> None:
    _edit_settings(a)
    check_int("--scene", a.scene)
    files.output_dir(a.out, "--out folder")


def check_train(a: argparse.Namespace) -> None:
    from .cascade import check_stage

    check_stage(a.stage)
    _positive("--minutes", a.minutes, integer=False)
    _positive("--steps", a.steps)
    _positive("--batch-size", a.batch_size)
    _positive("--lr", a.lr, integer=False)
    _positive("--checkpoint-every", a.checkpoint_every, integer=False)
    check_int("--workers", a.workers)
    files.output_dir(a.out, "--out run folder")


def check_eval(a: argparse.Namespace) -> None:
    _positive("--n", a.n)
    check_int("--sr-n", a.sr_n)
    check_int("--paraphrases", a.paraphrases)
    EditSettings(guidance_scale=a.guidance_scale, seed=a.seed).check()
    for g in _floats("--guidance-sweep", a.guidance_sweep) or ():
        EditSettings(guidance_scale=g).check()
    if a.json:
        files.output_file(a.json, "--json report")
    if a.figure:
        files.output_file(a.figure, "--figure")


def check_bench_speed(a: argparse.Namespace) -> None:
    _positive("--iters", a.iters)
    _positive("--lora-rank", a.lora_rank)


def check_bench_edit(a: argparse.Namespace) -> None:
    _targets(a.tune_targets)
    for name in ("seeds", "cases", "iters", "ti_iters", "sweep_seeds", "lora_rank"):
        _positive(f"--{name.replace('_', '-')}", getattr(a, name))
    for name in ("sweep_guidance", "sweep_t0", "sweep_interpolation", "sdedit_t0", "sweep_scale"):
        _floats(f"--{name.replace('_', '-')}", getattr(a, name))
    for x in (a.sweep_scale or "").split(","):
        if x:
            EditSettings(weight_scale=float(x)).check()
    _positive("--tune-lr", a.tune_lr, integer=False)
    if a.sweep_iters:
        for k in a.sweep_iters.split(","):
            check_int("--sweep-iters", int(k) if k.strip().isdigit() else k, 1)
    if a.cases_file:
        files.input_file(a.cases_file, "--cases-file")
    if a.merge and a.combine:
        raise ValueError("give --merge (parts of one case list) or --combine (one case list, other rows), not both")
    for folder in ((a.merge or "") + "," + (a.combine or "")).split(","):
        if folder:
            files.input_file(Path(folder) / "bench_edit.json", "--merge run")
    if a.out:
        files.output_dir(a.out, "--out folder")


def check_export(a: argparse.Namespace) -> None:
    if not Path(a.run).is_dir():
        raise FileNotFoundError(f"{a.run}: no such run folder; give a folder written by `unitune-nb train --out`")
    files.output_dir(a.out, "--out folder")


def check_doctor(a: argparse.Namespace) -> None:
    if not Path(a.dir).expanduser().is_dir():
        raise NotADirectoryError(f"--dir {a.dir}: no such folder; give the folder you will run the notebooks in")
