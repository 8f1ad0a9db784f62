"""A notebook whose demo breaks must fail: its cells assert what its text claims.  Here the package is broken on
purpose and a notebook's code cells are run in-process until the first error (nbval runs them for real in CI)."""
import json
import os
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def run_cells(name: str) -> None:
    """Execute a notebook's code cells in order (IPython magics and the Colab install cell left out)."""
    cells = json.loads((NOTEBOOKS / name).read_text())["cells"]
    ns: dict = {"__name__": "__main__"}
    cwd = os.getcwd()
    os.chdir(NOTEBOOKS)
    try:
        for i, c in enumerate(cells):
            src = "".join(c["source"])
            if c["cell_type"] != "code" or "google.colab" in src:
                continue
            code = "\n".join(line for line in src.splitlines() if not line.lstrip().startswith(("%", "!")))
            exec(compile(code, f"{name} cell {i}", "exec"), ns)
    finally:
        os.chdir(cwd)


def test_notebook_01_fails_when_sr1_samples_with_the_wrong_scheduler(monkeypatch):
    """The mistake notebook 01 once made, sampling sr1 with the base stage's v-prediction scheduler, now fails it."""
    import matplotlib

    matplotlib.use("Agg")
    from unitune_nb.cascade import Cascade

    right = Cascade.adapter
    monkeypatch.setattr(Cascade, "adapter", lambda self, stage: right(self, "base" if stage == "sr1" else stage))
    with pytest.raises(AssertionError, match="sr1 at level 0 should beat bicubic"):
        run_cells("01_cascade_anatomy.ipynb")


def test_notebook_03_fails_when_tuning_writes_nothing(monkeypatch):
    """If tuning stops storing the picture (here: every optimiser step has learning rate 0), notebook 03's check
    that the rare token alone redraws the source fails before any guidance demo is shown."""
    import matplotlib

    matplotlib.use("Agg")
    from unitune_nb import tune

    right = tune.make_optimizer
    monkeypatch.setattr(tune, "make_optimizer", lambda name, params, lr: right(name, params, 0.0))
    with pytest.raises(AssertionError, match="'beikkpic' alone"):
        run_cells("03_cfg_vs_prompt_guidance.ipynb")
