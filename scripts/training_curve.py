"""Accuracy of the base stage against training minutes, from `unitune-nb eval --json` reports.

    python scripts/training_curve.py 90.8=runs/eval_main.json 149.6=runs/eval_syn.json ... \
        --out docs/bench/training_curve

Each argument is MINUTES=REPORT[=LABEL] (training minutes of the evaluated base stage, the JSON of its
eval, an optional name for the checkpoint). `--extend` keeps the points already in OUT.json (their eval
reports need not exist any more) and adds the new ones.
Writes OUT.json (the points) and OUT.png (the figure, also used by the cascade-anatomy notebook).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from unitune_nb.plots import training_curve


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("points", nargs="+", help="MINUTES=eval_report.json[=label]")
    p.add_argument("--out", default="docs/bench/training_curve")
    p.add_argument("--extend", action="store_true", help="keep the points already in OUT.json")
    a = p.parse_args()
    out = Path(a.out)
    pts = json.loads(out.with_suffix(".json").read_text()) if a.extend and out.with_suffix(".json").is_file() else []
    for arg in a.points:
        minutes, path, *label = arg.split("=", 2)
        rep = json.loads(Path(path).read_text())
        tf = rep["text_following"]
        pts = [q for q in pts if q["minutes"] != float(minutes)]  # a point given again replaces the kept one
        pts.append({"minutes": float(minutes), "label": label[0] if label else path, "n": tf["n"],
                    "accuracy": {k: v[0] for k, v in tf["accuracy"].items()}})
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(sorted(pts, key=lambda q: q["minutes"]), indent=1))
    training_curve(pts).savefig(out.with_suffix(".png"), bbox_inches="tight")
    print("wrote", out.with_suffix(".json"), out.with_suffix(".png"))


if __name__ == "__main__":
    main()
