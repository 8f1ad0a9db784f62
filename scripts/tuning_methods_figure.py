"""The tuning-methods figure of docs/benchmarks.md: every tuning method's rows, weight scales and iteration counts
on one success / preservation plane, with full tuning's iteration curve and SDEdit's starts from the shipped edit
benchmark (same 50 cases and seeds) and the targets of the parameter-efficient tuning issue.

    unitune-nb bench-edit --combine runs/full,runs/attn,runs/lora16,... --out runs/methods
    python scripts/tuning_methods_figure.py runs/methods docs/bench/methods.png
"""
import json
import sys
from pathlib import Path

from unitune_nb import bench


def main() -> None:
    run, out = Path(sys.argv[1]), Path(sys.argv[2])
    combined = json.loads((run / "bench_edit_summary.json").read_text())
    shipped = bench.shipped_summary()
    summary = {k: v for k, v in combined["summary"].items()  # the weight scales of full tuning only (scale.png: all)
               if "(scale" not in k or k.startswith("UniTune (scale")}
    summary.update({k: v for k, v in shipped["summary"].items() if k.startswith("SDEdit")})
    iters = [dict(r, tune=r.get("tune") or "full") for r in shipped["iters_sweep"]] + combined.get("iters_sweep", [])
    fig = bench.pareto_figure([], summary, iters=iters)
    ax = fig.axes[0]
    ax.axhline(0.75, ls=":", c="k", lw=0.8)
    ax.axvline(25.7, ls=":", c="k", lw=0.8)
    ax.annotate("target: success >= 0.75 at >= 25.7 dB", (25.8, 0.755), fontsize=6)
    fig.set_size_inches(7.5, 5.0)
    fig.tight_layout()
    fig.savefig(out, bbox_inches="tight")
    print("wrote", out)


if __name__ == "__main__":
    main()
