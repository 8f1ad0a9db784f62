"""Regenerate the figures in docs/ from the shipped (or given) weights.

    python scripts/make_figures.py [WEIGHTS]

docs/cascade_grid.png: for several prompts and seeds, the base (32 px), sr1 (64 px) and sr2 (128 px)
images side by side.
"""
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from unitune_nb.cascade import Cascade  # noqa: E402
from unitune_nb.plots import stage_grid  # noqa: E402

PROMPTS = ["a red house on snow at night", "a photo of a blue car on sand during the day",
           "a drawing of a yellow tree on grass at sunset", "a purple car and a red tree on snow during the day"]


def main() -> None:
    weights = sys.argv[1] if len(sys.argv) > 1 else None
    docs = Path(__file__).resolve().parent.parent / "docs"
    c = Cascade.from_pretrained(weights)
    rows = []
    for p in PROMPTS:
        ims = []
        for seed in range(3):
            out = c.generate(p, seed=seed)
            ims += list(out.images.values())
        rows.append((f'"{p}"   base 32 / sr1 64 / sr2 128 px, seeds 0, 1, 2', ims))
    fig = stage_grid(rows, size=96)
    fig.savefig(docs / "cascade_grid.png", dpi=72, bbox_inches="tight")
    print("wrote", docs / "cascade_grid.png")


if __name__ == "__main__":
    main()
