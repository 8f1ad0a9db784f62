"""``unitune-nb bench-speed``: how long tuning, an edit, a preview and a reset take, and peak memory.

Targets on 2 CPU cores (printed beside the measurements, never asserted in tests): tune base + sr1 at
batch 4 <= 30 s; one full-resolution edit <= 5 s; a first-stage preview <= 0.5 s; ``reset()`` <= 0.2 s;
peak RSS <= 1.5 GB.  Measured numbers: docs/benchmarks.md.
"""
from __future__ import annotations

import platform
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from .. import world
from ..cascade import Cascade
from ..tune import UniTune


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def bench_speed(weights=None, iters: int | None = None, batch_size: int | None = None, repeats: int = 3,
                progress: bool = False, method: str | None = None, lora_rank: int | None = None) -> dict:
    """Measure tune, edit, preview and reset times; returns a dict of seconds and megabytes.  ``iters``,
    ``batch_size``, ``method`` and ``lora_rank`` default to the model's tuning settings.  Peak RSS is the
    process's: measure one method per process."""
    ut = UniTune(Cascade.from_pretrained(weights))
    cfg = ut.tune_settings(iters=iters, batch_size=batch_size, method=method, lora_rank=lora_rank)
    iters, batch_size = cfg.iters, cfg.batch_size
    source = world.render(world.random_scene(2), 128)
    ut.cascade.generate("warm up", stages=["base"], steps=2)
    report = ut.tune(source, iters=iters, batch_size=batch_size, progress=progress, method=cfg.method,
                     lora_rank=cfg.lora_rank)
    res = {"threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
           "tune_iters": iters, "tune_batch": batch_size, "tune_method": cfg.method,
           "lora_rank": cfg.lora_rank if cfg.method == "lora" else None, "tune_lr": cfg.lr,
           "trained_params": sum(report.trainable_params.values()),
           "tune_base_s": report.seconds.get("base", 0.0), "tune_sr1_s": report.seconds.get("sr1", 0.0)}
    res["tune_total_s"] = res["tune_base_s"] + res["tune_sr1_s"]

    def timed(fn) -> float:
        ts = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
        return float(np.median(ts))

    prompt = f"{ut.rare_token} at night"
    res["edit_full_s"] = timed(lambda: ut.edit(prompt, t0=0.8, interpolation=0.5))  # the settings timed so far
    res["preview_base_s"] = timed(lambda: ut.edit(prompt, stages=["base"], steps=ut.defaults.preview_steps))
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
    how = r.get("tune_method", "full") + (f" rank {r['lora_rank']}" if r.get("lora_rank") else "")
    lines = [f"threads {r['threads']}, tune {r['tune_iters']} iterations x batch {r['tune_batch']}, method {how}, "
             f"lr {r.get('tune_lr', 0):g}, {r.get('trained_params', 0) / 1e6:.2f} M trained parameters",
             "| measure | measured | target |", "|---|---|---|"]
    for k, target in TARGETS.items():
        unit = "MB" if k.endswith("_mb") else "s"
        lines.append(f"| {k} | {r[k]:.2f} {unit} | <= {target:g} {unit} |")
    lines.append(f"| tune base / sr1 | {r['tune_base_s']:.1f} s / {r['tune_sr1_s']:.1f} s | |")
    lines.append(f"| tuned file (only what changed) | {r['tuned_file_mb']:.1f} MB | |")
    return "\n".join(lines)


