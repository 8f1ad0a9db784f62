"""Speed and memory benchmark of the UniTune engine on the embedded cascade (``unitune-nb bench-speed``).

Targets on 2 CPU cores: tune base + sr1 with the paper's 128 iterations x batch 4 <= 30 s; one
full-resolution edit <= 5 s; a base-only preview <= 0.5 s; ``reset()`` <= 0.2 s; peak RSS <= 1.5 GB.
For reference, the paper reports about 3 minutes of tuning and ~30 s per edit on a T4-class GPU
with Imagen.  These are measurements, printed, not timed tests.
"""
from __future__ import annotations

import platform
import tempfile
from pathlib import Path
import resource
import time

import numpy as np
import torch

from . import world
from .cascade import Cascade
from .tune import UniTune

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
