"""The ``unitune-nb`` command line: generate, edit, demo, train, eval, bench-speed, bench-edit, export, doctor.

Each command's arguments and paths are checked before a model is loaded (:mod:`unitune_nb.cli_checks`); an
error the user can cause ends in one line and exit status 2 (``--debug`` or ``UNITUNE_NB_DEBUG=1`` shows the
traceback instead).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import cli_checks as checks
from .settings import MASK_FROM, RARE_TOKEN, SWEEP_GRID, TUNE_METHODS


def _threads(n: int | None) -> None:
    from .machine import use_threads

    use_threads(n)


def cmd_generate(a: argparse.Namespace) -> None:
    from .cascade import Cascade

    c = Cascade.from_pretrained(a.weights)
    out = c.generate(a.prompt, seed=a.seed, guidance_scale=a.guidance_scale, progress=True)
    path = Path(a.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    out.image.save(path)
    msg = f"wrote {path} ({out.image.width} px, {sum(out.seconds.values()):.2f} s)"
    if a.stages_strip:
        sp = path.with_name(path.stem + "_stages" + path.suffix)
        out.strip(128).save(sp)
        msg += f" and {sp}"
    print(msg)


def _raise_interrupt(signum, frame):  # SIGTERM (kill, session end) -> save a checkpoint, then stop
    raise KeyboardInterrupt


def cmd_train(a: argparse.Namespace) -> None:
    import signal

    from .train import train

    signal.signal(signal.SIGTERM, _raise_interrupt)

    summary = train(a.stage, a.out, minutes=a.minutes, steps=a.steps, resume=a.resume,
                    checkpoint_every=a.checkpoint_every, init_from=a.init_from, batch_size=a.batch_size, lr=a.lr,
                    seed=a.seed, synonyms=a.synonyms, only=a.only, snr_gamma=a.snr_gamma,
                    prediction_type=a.prediction_type, warmup=a.warmup, device=a.device, workers=a.workers, lr_end=a.lr_end)
    print(f"{a.stage}: {summary['step']} steps, {summary['seconds'] / 60:.1f} min in all, "
          f"recent loss {summary['recent_loss']:.4f}; weights in {Path(a.out) / a.stage}")


def cmd_eval(a: argparse.Namespace) -> None:
    from .eval import evaluate, format_report

    if a.guidance_sweep:
        from .cascade import Cascade
        from .eval import guidance_sweep, sweep_figure

        scales = [float(v) for v in a.guidance_sweep.split(",")]
        rows = guidance_sweep(Cascade.from_pretrained(a.weights), scales, n=a.n, seed=a.seed)
        print("| guidance | " + " | ".join(rows[0]["accuracy"]) + " | mean | diversity |")
        print("|---" * (len(rows[0]["accuracy"]) + 3) + "|")
        for r in rows:
            print(f"| {r['guidance_scale']:g} | " + " | ".join(f"{v:.3f}" for v in r["accuracy"].values())
                  + f" | {r['mean_accuracy']:.3f} | {r['diversity']:.3f} |")
        if a.figure:
            sweep_figure(rows).savefig(a.figure, bbox_inches="tight")
            print("wrote", a.figure)
        return

    report = evaluate(a.weights, n=a.n, sr_n=a.sr_n, guidance_scale=a.guidance_scale, seed=a.seed,
                      paraphrase_n=a.paraphrases)
    text = format_report(report)
    print(text)
    if a.json:
        import json

        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(report, indent=2))


def cmd_bench_speed(a: argparse.Namespace) -> None:
    from .bench import bench_speed, format_speed

    print(format_speed(bench_speed(a.weights, iters=a.iters, progress=True, method=a.tune_method,
                                   lora_rank=a.lora_rank)))


def cmd_bench_edit(a: argparse.Namespace) -> None:
    from . import bench

    if a.merge:  # runs made separately (e.g. halves of the case list in two processes) reported as one
        records, meta = bench.merge_edit_runs(a.merge.split(","))
    elif a.combine:  # runs of the same cases with different rows (e.g. one tuning method each) in one table
        records, meta = bench.combine_edit_runs(a.combine.split(","))
    else:
        records, meta = _run_bench_edit(a)
    out, text = bench.edit_report(records, meta)
    print(text)
    if a.out:
        print("wrote", bench.write_edit_report(out, records, a.out))


def _run_bench_edit(a: argparse.Namespace) -> tuple[list[dict], dict]:
    import numpy as np
    import torch
    from tqdm.auto import tqdm

    from . import bench

    cases = bench.load_cases(a.cases_file)
    if a.quick:  # one case of each of four kinds, short tuning, one seed: a smoke run
        a.seeds, a.iters, a.ti_iters = 1, 16, 16
        picked = {}
        for c in cases:
            picked.setdefault(c.kind, c)
        cases = [picked[k] for k in ("time", "ground", "recolour", "remove") if k in picked]
    elif a.cases:
        cases = cases[: a.cases]
    if a.iters is None:
        from .cascade import Cascade
        from .settings import defaults_for

        a.iters = defaults_for(Cascade).tune.iters
    a.ti_iters = a.iters if a.ti_iters is None else a.ti_iters
    sweep = None
    if a.sweep:
        sweep = {"guidance_scale": [float(x) for x in a.sweep_guidance.split(",")],
                 "t0": [float(x) for x in a.sweep_t0.split(",")],
                 "interpolation": [float(x) for x in a.sweep_interpolation.split(",")]}
    methods = None if a.methods is None else [m for m in a.methods.split(";") if m]
    sdedit_t0 = [float(x) for x in a.sdedit_t0.split(",")] if a.sdedit_t0 else None
    rows_n = len(bench.benchmark_rows(methods, sdedit_t0)) * a.seeds
    grid_n = int(np.prod([len(v) for v in sweep.values()])) * a.sweep_seeds if sweep else 0
    sweep_iters = [int(x) for x in a.sweep_iters.split(",")] if a.sweep_iters else None
    iters_n = len(set(sweep_iters or ())) * a.seeds
    scales = [float(x) for x in a.sweep_scale.split(",")] if a.sweep_scale else []
    tuned_n = sum(m.model == "tuned" for m in bench.benchmark_rows(methods, sdedit_t0)) * a.seeds * len(scales)
    tune = {k: v for k, v in (("method", a.tune_method), ("lora_rank", a.lora_rank), ("lr", a.tune_lr),
                              ("targets", a.tune_targets)) if v is not None}
    steps = bench.bench_edit_steps(cases, a.weights, seeds=a.seeds, iters=a.iters, ti_iters=a.ti_iters, full=a.full,
                                   sweep=sweep, methods=methods, sweep_iters=sweep_iters, sweep_seeds=a.sweep_seeds,
                                   sdedit_t0=sdedit_t0, tune=tune, sweep_scale=scales)
    records = list(tqdm(steps, total=len(cases) * (rows_n + grid_n + iters_n + tuned_n), desc="bench-edit"))
    return records, {"cases": len(cases), "seeds": a.seeds, "iters": a.iters, "ti_iters": a.ti_iters,
                     "full": a.full, "threads": torch.get_num_threads(), "tune": tune}


def cmd_export(a: argparse.Namespace) -> None:
    from .cascade import Cascade

    c = Cascade.from_pretrained(a.run)
    c.save_pretrained(a.out, fp16=True)
    size = sum(f.stat().st_size for f in Path(a.out).rglob("*") if f.is_file())
    print(f"wrote {a.out} ({size / 1e6:.1f} MB, stages {', '.join(c.stages)})")


def _slug(text: str) -> str:
    import re

    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:40] or "edit"


def _edit_settings(a: argparse.Namespace) -> dict:
    return dict(guidance_scale=a.guidance_scale, baseline_prompt=a.baseline_prompt, t0=a.t0,
                interpolation=a.interpolation, mask_from=a.mask_from, seed=a.seed, weight_scale=a.weight_scale)


def _run_edits(ut, prompts: list[str], out: Path, settings: dict, mask=None, targets=None) -> None:
    """Run each edit on the in-memory tuned model; write each result and a grid."""
    import json

    from .plots import edit_grid

    results = []
    for i, p in enumerate(prompts):
        full = p if ut.rare_token in p else f"{ut.rare_token} {p}"
        r = ut.edit(full, mask=mask, **settings)
        r.image.save(out / f"edit_{i}_{_slug(p)}.png")
        print(f"  {full!r}: {sum(r.seconds.values()):.2f} s -> {out / f'edit_{i}_{_slug(p)}.png'}")
        results.append(r)
    fig = edit_grid(ut.source, results, prompts, targets=targets)
    fig.savefig(out / "grid.png", dpi=100, bbox_inches="tight")
    (out / "settings.json").write_text(json.dumps([r.settings for r in results], indent=2, default=str))
    print(f"wrote {out / 'grid.png'}")


def _load_tuned(ut, a: argparse.Namespace) -> None:
    """Load a tuned file, and say what happens to the SOURCE and --rare-token given beside it."""
    import numpy as np

    from .images import load_image

    ut.load_tuned(a.load_tuned)
    print(f"loaded tuned weights from {a.load_tuned} (rare token {ut.rare_token!r})")
    given, _ = load_image(a.source, ut.source.width)
    if not np.array_equal(np.asarray(given), np.asarray(ut.source)):
        print(f"note: {a.source} differs from the source the file was tuned on; editing the tuned source "
              f"(saved in the file). To edit {a.source}, leave out --load-tuned so it is tuned on.")
    if a.rare_token != ut.rare_token:
        print(f"note: --rare-token {a.rare_token!r} ignored: the file was tuned under {ut.rare_token!r}, which the "
              "edit prompts use")


def cmd_edit(a: argparse.Namespace) -> None:
    from .cascade import Cascade
    from .tune import UniTune

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    ut = UniTune(Cascade.from_pretrained(a.weights))
    if a.load_tuned:
        _load_tuned(ut, a)
    else:
        report = ut.tune(a.source, rare_token=a.rare_token, iters=a.iters, lr=a.lr, seed=a.seed,
                         stages=tuple(a.tune_stages.split(",")), method=a.tune_method, lora_rank=a.lora_rank,
                         targets=a.tune_targets)
        for note in report.notes:
            print(f"note: source image {note}")
        print(report)
    ut.source.save(out / "source.png")
    if a.save_tuned:
        size = ut.save_tuned(a.save_tuned)
        print(f"saved the tuned weights to {a.save_tuned} ({size / 1e6:.1f} MB)")
    _run_edits(ut, a.prompts, out, _edit_settings(a), mask=a.mask)


def cmd_demo(a: argparse.Namespace) -> None:
    from . import world
    from .cascade import Cascade
    from .tune import UniTune

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    scene = world.random_scene(a.scene)
    source = world.render(scene, 128)
    source.save(out / "source.png")
    print(f"source scene: {world.caption(scene)!r} -> {out / 'source.png'}")
    obj = scene.objects[0]
    new_colour = next(c for c in ("blue", "red", "yellow", "purple") if c != obj.colour)
    edits = [world.Edit("time", "night" if scene.time != "night" else "day"),
             world.Edit("ground", "snow" if scene.ground != "snow" else "grass"),
             world.Edit("style", "drawing" if scene.style != "drawing" else "photo"),
             world.Edit("recolour", new_colour, 0)]
    prompts = [world.edit_prompt(scene, e) for e in edits]
    targets = [world.render(world.edit(scene, e), 128) for e in edits]
    ut = UniTune(Cascade.from_pretrained(a.weights))
    print(ut.tune(source, iters=a.iters, seed=a.seed))
    _run_edits(ut, prompts, out, _edit_settings(a), targets=targets)


def _add_edit_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--guidance-scale", type=float, default=None, help="first-stage guidance (default: the model's)")
    p.add_argument("--baseline-prompt", default=None, help="prompt guidance: guide away from this prompt instead of ''")
    p.add_argument("--t0", type=float, default=None, help="late start of the first stage, in (0, 1]; 1 = from noise "
                   "(default: the model's)")
    p.add_argument("--interpolation", type=float, default=None, help="blend the source back in, [0, 1] "
                   "(default: the model's)")
    p.add_argument("--mask-from", choices=MASK_FROM, default=None,
                   help="what the edit is compared with to estimate the interpolation mask (default: the model's)")
    p.add_argument("--weight-scale", type=float, default=None,
                   help="sample from pristine + s (tuned - pristine) weights, s in [0, 1] (default: 1, the tuned model)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--iters", type=int, default=None, help="tuning iterations per stage (default: the model's)")
    p.add_argument("--weights", default=None, help="cascade folder (default: the shipped weights)")


def _add_tuning_flags(p: argparse.ArgumentParser, targets: bool = True) -> None:
    """How UniTune tunes: the method, LoRA's rank and (``targets``) the modules to tune."""
    p.add_argument("--tune-method", default=None, choices=TUNE_METHODS,
                   help="full (default), attention (attention layers only) or lora (a low-rank delta, via peft)")
    p.add_argument("--lora-rank", type=int, default=None, help="rank of the LoRA delta (--tune-method lora)")
    if targets:
        p.add_argument("--tune-targets", default=None, help="comma-separated module names to tune: LoRA's "
                       "projections (default to_q,to_k,to_v,to_out.0) or the attention parts (e.g. attn2 = "
                       "cross-attention)")


def _add_generate(sub) -> None:
    g = sub.add_parser("generate", help="text -> 128 px image through the embedded cascade")
    g.add_argument("prompt")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--out", default="out.png")
    g.add_argument("--guidance-scale", type=float, default=None)
    g.add_argument("--stages-strip", action="store_true", help="also write NAME_stages.png with every stage")
    g.add_argument("--weights", default=None, help="cascade folder (default: the shipped weights)")
    g.set_defaults(func=cmd_generate, check=checks.check_generate)


def _add_train(sub) -> None:
    t = sub.add_parser("train", help="train one stage of the cascade (checkpoints, --resume)")
    t.add_argument("--stage", required=True, help="base, sr1 or sr2")
    t.add_argument("--out", required=True, help="run folder (a cascade folder once trained)")
    t.add_argument("--minutes", type=float, default=None)
    t.add_argument("--steps", type=int, default=None)
    t.add_argument("--resume", action="store_true")
    t.add_argument("--init-from", default=None,
                   help="start a new run from this cascade folder's weights (e.g. unitune_nb/weights/embedded)")
    t.add_argument("--checkpoint-every", type=float, default=5.0, help="minutes between checkpoints")
    t.add_argument("--batch-size", type=int, default=None)
    t.add_argument("--lr", type=float, default=None)
    t.add_argument("--warmup", type=int, default=None, help="steps of linear learning-rate warm-up (default 200)")
    t.add_argument("--lr-end", type=float, default=None,
                   help="decay the learning rate to this along a cosine over the run's --steps / --minutes")
    t.add_argument("--device", default=None, help="cpu or cuda (default: cuda where there is one)")
    t.add_argument("--workers", type=int, default=0,
                   help="processes that draw the training scenes (on a GPU: about the number of CPU cores)")
    t.add_argument("--synonyms", type=float, default=None,
                   help="probability of saying each caption phrase in other words (e.g. 0.3; default 0 = canonical)")
    t.add_argument("--only", type=float, default=None,
                   help="probability of 'only' before the object of a one-object scene's caption ('only a red "
                        "car': exactly one object; e.g. 0.3; default 0)")
    t.add_argument("--prediction-type", default=None, choices=["v_prediction", "epsilon", "sample"],
                   help="what the U-Net predicts (default: base v_prediction, SR stages sample, i.e. the clean "
                        "residual; with --init-from, what those weights predict)")
    t.add_argument("--snr-gamma", type=float, default=None,
                   help="min-SNR loss weighting (default 5 for v / epsilon, 0 for sample); 0 weighs every "
                        "timestep alike")
    t.add_argument("--seed", type=int, default=None)
    t.set_defaults(func=cmd_train, check=checks.check_train)


def _add_eval(sub) -> None:
    e = sub.add_parser("eval", help="text-following accuracy and SR PSNR of a cascade")
    e.add_argument("--weights", default=None)
    e.add_argument("--n", type=int, default=240, help="held-out captions for the base stage")
    e.add_argument("--sr-n", type=int, default=32, help="scenes for the SR PSNR check")
    e.add_argument("--paraphrases", type=int, default=120,
                   help="paraphrased prompts (\"a crimson car at dusk\") scored separately; 0 = skip")
    e.add_argument("--guidance-scale", type=float, default=None)
    e.add_argument("--seed", type=int, default=12345)
    e.add_argument("--json", default=None, help="also write the report as JSON here")
    e.add_argument("--guidance-sweep", default=None, help="comma-separated guidance scales: accuracy and diversity per scale")
    e.add_argument("--figure", default=None, help="with --guidance-sweep: write the plot here")
    e.set_defaults(func=cmd_eval, check=checks.check_eval)


def _add_edit_and_demo(sub) -> None:
    ed = sub.add_parser("edit", help="tune on SOURCE once, then run each edit prompt (UniTune)")
    ed.add_argument("source", help="image file (PNG, JPEG, ...)")
    ed.add_argument("prompts", nargs="+", help="edit prompts; the rare token is put in front unless present")
    ed.add_argument("--out", default="edits")
    ed.add_argument("--rare-token", default=RARE_TOKEN)
    ed.add_argument("--lr", type=float, default=None, help="tuning learning rate (default: the model's)")
    ed.add_argument("--tune-stages", default="base,sr1", help="comma-separated stages to tune")
    _add_tuning_flags(ed)
    ed.add_argument("--mask", default=None, help="image whose white part may change (confines the edit)")
    ed.add_argument("--save-tuned", default=None, help="also save what tuning changed (safetensors)")
    ed.add_argument("--load-tuned", default=None, help="skip tuning: load a file from --save-tuned")
    _add_edit_flags(ed)
    ed.set_defaults(func=cmd_edit, check=checks.check_edit)

    dm = sub.add_parser("demo", help="render a world scene, tune, and write a grid of edits with their true targets")
    dm.add_argument("--out", default="demo")
    dm.add_argument("--scene", type=int, default=2, help="world scene seed")
    _add_edit_flags(dm)
    dm.set_defaults(func=cmd_demo, check=checks.check_demo)


def _add_bench(sub) -> None:
    grid = {k: ",".join(f"{x:g}" for x in v) for k, v in SWEEP_GRID.items()}
    bs = sub.add_parser("bench-speed", help="time tuning, editing, preview and reset; peak memory")
    bs.add_argument("--weights", default=None)
    bs.add_argument("--iters", type=int, default=None, help="tuning iterations per stage (default: the model's)")
    _add_tuning_flags(bs, targets=False)
    bs.set_defaults(func=cmd_bench_speed, check=checks.check_bench_speed)

    be = sub.add_parser("bench-edit", help="UniTune and the baselines on the fixed edit cases, scored by the world's oracle")
    be.add_argument("--weights", default=None)
    be.add_argument("--cases", type=int, default=None, help="use the first N cases of the fixed list (default: all)")
    be.add_argument("--cases-file", default=None, help="a case list (JSON) instead of the shipped one")
    be.add_argument("--quick", action="store_true", help="4 cases, 16 tuning steps, 1 seed: a smoke run")
    be.add_argument("--seeds", type=int, default=3, help="edit seeds per case (the spread is over them)")
    be.add_argument("--iters", type=int, default=None, help="UniTune tuning iterations per case (default: the model's)")
    be.add_argument("--ti-iters", type=int, default=None, help="Textual Inversion iterations per case (default: --iters)")
    be.add_argument("--full", action="store_true", help="tune base + sr1 and score 128 px edits (slower)")
    be.add_argument("--methods", default=None, help="';'-separated row names (default: all); '' = sweep only")
    be.add_argument("--sweep", action="store_true", help="also sweep UniTune's guidance, t0 and interpolation")
    be.add_argument("--sweep-guidance", default=grid["guidance_scale"])
    be.add_argument("--sweep-t0", default=grid["t0"])
    be.add_argument("--sweep-interpolation", default=grid["interpolation"])
    be.add_argument("--sweep-seeds", type=int, default=1, help="edit seeds per swept setting (default 1: seed 0)")
    be.add_argument("--sweep-iters", default=None,
                    help="comma-separated tuning iteration counts (e.g. 16,32,64,128): UniTune's defaults scored "
                         "after each, from one tuning run per case (base stage only)")
    be.add_argument("--sdedit-t0", default=None,
                    help="comma-separated starts (e.g. 0.5,0.6,0.7,0.8): one SDEdit row per start instead of one row "
                         "at the engine's t0")
    _add_tuning_flags(be)  # UniTune's rows are named after the tuning
    be.add_argument("--tune-lr", type=float, default=None, help="UniTune's tuning learning rate (default: the model's)")
    be.add_argument("--sweep-scale", default=None,
                    help="comma-separated weight scales in [0, 1] (e.g. 0.5,0.75): the tuned-model rows again at each")
    be.add_argument("--out", default=None, help="folder for bench_edit.json (every record), bench_edit_summary.json "
                    "and pareto.png")
    be.add_argument("--merge", default=None, help="comma-separated --out folders of earlier runs (e.g. the case list "
                    "split over processes): report them as one run instead of running")
    be.add_argument("--combine", default=None, help="comma-separated --out folders run on the same cases with other "
                    "rows (e.g. one tuning method each): report them in one table and figure instead of running")
    be.set_defaults(func=cmd_bench_edit, check=checks.check_bench_edit)


def cmd_doctor(a: argparse.Namespace) -> int:
    from .doctor import FAIL, doctor

    checks = doctor(a.dir, speed=not a.no_speed, as_json=a.json)
    return 1 if any(c.status == FAIL for c in checks) else 0


def _add_doctor(sub) -> None:
    d = sub.add_parser("doctor", help="pre-flight check before a workshop: versions, torch build and threads, disk, "
                       "the shipped weights, a few-second tune + edit projecting each notebook's time, Jupyter front "
                       "ends and their widget extensions; exit 1 on any FAIL")
    d.add_argument("--json", action="store_true", help="print the checks as JSON (for scripts)")
    d.add_argument("--no-speed", action="store_true", help="leave out the few-second tune + edit")
    d.add_argument("--dir", default=".", help="the working folder to check (default: this one)")
    d.set_defaults(func=cmd_doctor, check=checks.check_doctor)


def _add_export(sub) -> None:
    x = sub.add_parser("export", help="copy a training run into a shippable fp16 cascade folder")
    x.add_argument("run")
    x.add_argument("--out", required=True)
    x.set_defaults(func=cmd_export, check=checks.check_export)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="unitune-nb", description="UniTune teaching toolkit on an embedded mini-Imagen.")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: one per "
                   "physical core, or $UNITUNE_NB_THREADS)")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error instead of one line")
    sub = p.add_subparsers(dest="command", required=True)
    for add in (_add_generate, _add_train, _add_eval, _add_edit_and_demo, _add_bench, _add_export, _add_doctor):
        add(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    a = build_parser().parse_args(argv)
    debug = a.debug or os.environ.get("UNITUNE_NB_DEBUG", "") not in ("", "0")
    try:
        checks.check_common(a)
        a.check(a)  # every argument and path, before a model is loaded
        _threads(a.threads)
        rc = a.func(a)
    except KeyboardInterrupt:
        print(f"unitune-nb {a.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - one clear line for whatever the user caused
        if debug:
            raise
        known = isinstance(err, (ValueError, TypeError, OSError, FloatingPointError))
        what = str(err) if known else f"{type(err).__name__}: {err} (rerun with --debug for the traceback)"
        print(f"unitune-nb {a.command}: error: {what}", file=sys.stderr)
        return 2
    return rc if isinstance(rc, int) else 0


if __name__ == "__main__":
    sys.exit(main())
