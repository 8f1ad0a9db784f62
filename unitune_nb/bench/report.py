"""Reporting the edit benchmark: per-method summaries with spreads over seeds, the settings sweep's Pareto
front and the default chosen on it, the tuning-iteration table, figures and JSON files."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Sequence

import numpy as np

SHIPPED_SUMMARY = Path(__file__).resolve().parent.parent / "data" / "bench_edit_summary.json"


def shipped_summary() -> dict:
    """The edit benchmark's summary as measured on the shipped weights (a copy of
    ``docs/bench/bench_edit_summary.json`` inside the package, so notebooks read it on Colab too)."""
    return json.loads(SHIPPED_SUMMARY.read_text())


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
    for label in dict.fromkeys(r.get("tune", "") for r in rs):  # one curve per tuning setting ("" = the defaults)
        for k in sorted({r["iters"] for r in rs if r.get("tune", "") == label}):
            rk = [r for r in rs if r["iters"] == k and r.get("tune", "") == label]
            out.append({"iters": k, "tune": label, "n": len(rk), "prep_s": float(np.mean([r["prep_s"] for r in rk])),
                        **_over_seeds(rk)})
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


def pareto_figure(points: Sequence[dict], summary: dict | None = None, chosen: dict | None = None,
                  iters: Sequence[dict] | None = None):
    """Success against preservation PSNR: the swept UniTune settings (front joined), the benchmark rows (rows at
    several starts or weight scales as curves) and, from ``iters`` (:func:`summarize_iters` rows), one curve per
    tuning setting through its iteration counts."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=80)
    for label in dict.fromkeys(r.get("tune", "") for r in iters or ()):
        rs = sorted((r for r in iters if r.get("tune", "") == label), key=lambda r: r["iters"])
        line, = ax.plot([r["psnr"][0] for r in rs], [r["success"][0] for r in rs], "s-", ms=4, lw=1, alpha=0.7,
                        label=f"UniTune{', ' + label if label else ''} (iterations {rs[0]['iters']}-{rs[-1]['iters']})")
        for r in rs:
            ax.annotate(str(r["iters"]), (r["psnr"][0], r["success"][0]), fontsize=6, color=line.get_color(),
                        xytext=(3, -8), textcoords="offset points")
    if points:
        ax.scatter([p["psnr"] for p in points], [p["success"] for p in points], s=14, c="0.7",
                   label="UniTune settings (sweep)")
        front = sorted((p for p in points if p["front"]), key=lambda p: p["psnr"])
        ax.plot([p["psnr"] for p in front], [p["success"] for p in front], "-", c="0.4", lw=1, label="Pareto front")
    if chosen:
        ax.scatter([chosen["psnr"]], [chosen["success"]], s=120, facecolors="none", edgecolors="k",
                   label=f"default: g={chosen['guidance_scale']:g}, t0={chosen['t0']:g}, interp={chosen['interpolation']:g}")
    curves: dict[str, list] = {}  # rows run at several starts ("SDEdit (t0 0.6)", ...) drawn as one curve
    for name, st in (summary or {}).items():
        (s, ds), (p, dp) = st["success"], st["psnr"]
        m = re.fullmatch(r"(.+) \((t0|scale) ([\d.]+)\)", name)
        if m:
            curves.setdefault((m[1], m[2]), []).append((float(m[3]), p, s))
            continue
        ax.errorbar([p], [s], xerr=[dp], yerr=[ds], fmt="o", ms=5, capsize=2, label=name)
    for (name, knob), pts in curves.items():
        if knob == "scale" and name in (summary or {}):  # a weight-scale curve ends at its row (scale 1)
            (s1, _), (p1, _) = summary[name]["success"], summary[name]["psnr"]
            pts.append((1.0, p1, s1))
        pts.sort()
        line, = ax.plot([q[1] for q in pts], [q[2] for q in pts], "^:" if knob == "t0" else "v--", ms=5,
                        label=f"{name} ({knob} {pts[0][0]:g}-{pts[-1][0]:g})")
        for x, p, s in (pts[0], pts[-1]):
            ax.annotate(f"{knob} {x:g}", (p, s), fontsize=6, color=line.get_color(), xytext=(3, 3),
                        textcoords="offset points")
    ax.set_xlabel("preservation: PSNR vs oracle target outside the change mask (dB)")
    ax.set_ylabel("edit success (probe)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="best")
    fig.tight_layout()
    return fig


def iters_figure(rows: Sequence[dict]):
    """Success and preservation of UniTune's defaults against tuning iterations (:func:`summarize_iters` rows; of
    the first tuning setting when they hold several)."""
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r.get("tune", "") == rows[0].get("tune", "")]
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


def scale_curves(summary: dict) -> dict[str, list[tuple[float, dict]]]:
    """The rows scored at several weight scales ("UniTune, LoRA r16 (scale 0.5)" ...) as one curve per row:
    ``{row: [(scale, stats), ...]}`` sorted by scale, the row itself at scale 1."""
    curves: dict[str, list] = {}
    for name, st in summary.items():
        m = re.fullmatch(r"(.+) \(scale ([\d.]+)\)", name)
        if m and m[1] in summary:
            curves.setdefault(m[1], [(1.0, summary[m[1]])]).append((float(m[2]), st))
    return {k: sorted(v, key=lambda p: p[0]) for k, v in curves.items()}


def scale_figure(summary: dict):
    """Success and preservation against the weight scale (0 = pristine, 1 = tuned), one line per tuning method."""
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(8.0, 3.2), dpi=80)
    for i, (name, pts) in enumerate(scale_curves(summary).items()):
        x = [p[0] for p in pts]
        for ax, k in ((a1, "success"), (a2, "psnr")):
            ax.errorbar(x, [p[1][k][0] for p in pts], yerr=[p[1][k][1] for p in pts], fmt="o-", c=f"C{i}",
                        capsize=2, label=name)
    a1.set_ylabel("edit success (probe)")
    a2.set_ylabel("PSNR outside mask (dB)")
    for ax in (a1, a2):
        ax.set_xlabel("weight scale (0 = pristine, 1 = tuned)")
        ax.grid(alpha=0.3)
    a1.legend(fontsize=6, loc="best")
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
        lines = ["| tuning | iterations | success | PSNR outside mask (dB) | SSIM | tune s |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['tune'] or 'default'} | {r['iters']} | {r['success'][0]:.2f} ± {r['success'][1]:.2f} | "
                  f"{r['psnr'][0]:.1f} ± {r['psnr'][1]:.1f} | {r['ssim'][0]:.2f} | {r['prep_s']:.1f} |" for r in its]
        parts.append("\n".join(lines))
    return out, "\n\n".join(parts)


def write_edit_report(out: dict, records: Sequence[dict], folder: str | Path) -> Path:
    """Write ``bench_edit.json`` (with every record), ``bench_edit_summary.json`` and the figures
    (``pareto.png``; ``iters.png`` when there is a tuning-iteration sweep, ``scale.png`` when rows were scored at
    several weight scales) into ``folder``."""
    import matplotlib.pyplot as plt

    d = Path(folder)
    d.mkdir(parents=True, exist_ok=True)
    (d / "bench_edit.json").write_text(json.dumps({**out, "records": list(records)}, indent=1))
    (d / "bench_edit_summary.json").write_text(json.dumps(out, indent=1))
    if out.get("sweep") or out.get("summary"):
        fig = pareto_figure(out.get("sweep", []), out.get("summary"), out.get("chosen"), out.get("iters_sweep"))
        fig.savefig(d / "pareto.png", bbox_inches="tight")
        plt.close(fig)
    if scale_curves(out.get("summary") or {}):
        fig = scale_figure(out["summary"])
        fig.savefig(d / "scale.png", bbox_inches="tight")
        plt.close(fig)
    if out.get("iters_sweep"):
        fig = iters_figure(out["iters_sweep"])
        fig.savefig(d / "iters.png", bbox_inches="tight")
        plt.close(fig)
    return d / "bench_edit.json"


def _runs(folders: Sequence[str | Path]):
    """Each ``bench-edit --out`` folder's run (its records and settings) and the settings that must agree to report
    runs together."""
    for f in folders:
        path = Path(f) / "bench_edit.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: pass folders written by `unitune-nb bench-edit --out`")
        run = json.loads(path.read_text())
        yield f, run, {k: run[k] for k in ("cases", "seeds", "iters", "ti_iters", "full", "threads", "tune") if k in run}


def combine_edit_runs(folders: Sequence[str | Path]) -> tuple[list[dict], dict]:
    """The records of several ``bench-edit --out`` folders run on the *same* cases with different rows (e.g. one
    tuning method each) as one run, for one table and one figure.  Refuses runs on other cases or seeds, and a
    row that two of them both hold."""
    records: list[dict] = []
    meta: dict = {}
    for f, run, m in _runs(folders):
        if meta and any(meta.get(k) != m.get(k) for k in ("cases", "seeds", "full")):
            raise ValueError(f"{f} ran other cases or seeds than {folders[0]}; combine runs of the same case list "
                             "(use --merge for parts of one case list)")
        twice = {r["method"] for r in run["records"]} & {r["method"] for r in records} - {"iters", "sweep"}
        if twice:
            raise ValueError(f"{f} holds row(s) {sorted(twice)} that an earlier folder holds too")
        records += run["records"]
        meta = meta or {k: v for k, v in m.items() if k != "tune"}  # the rows name their tuning
    return records, meta


def merge_edit_runs(folders: Sequence[str | Path]) -> tuple[list[dict], dict]:
    """The records of several ``bench-edit --out`` folders (e.g. a case list split over processes or
    machines) as one run: case numbers are offset so they stay distinct; ``cases`` adds up."""
    records: list[dict] = []
    meta: dict = {}
    for f, run, m in _runs(folders):
        offset = meta.get("cases", 0)
        records += [dict(r, case=r["case"] + offset) for r in run["records"]]
        if meta and any(meta.get(k) != m.get(k) for k in ("seeds", "iters", "ti_iters", "full", "tune")):
            raise ValueError(f"{f} was run with other settings than {folders[0]}; only like runs can be merged")
        meta = {**m, "cases": offset + m.get("cases", 0)}
    return records, meta
