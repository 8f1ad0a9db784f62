"""Measure what `unitune-nb doctor` projects notebook times from: its probe (a 4-iteration tune + one edit) and
each notebook run top to bottom (jupyter nbconvert --execute), on this machine, nothing else running.

    python scripts/notebook_times.py            # writes unitune_nb/data/notebook_times.json
    python scripts/notebook_times.py --probe    # re-measure the probe only, keep the notebook times
"""
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from unitune_nb.doctor import NOTEBOOK_TIMES, probe_seconds
from unitune_nb.machine import physical_cores, use_threads

ROOT = Path(__file__).resolve().parent.parent


def main(probe_only: bool = False) -> None:
    threads = use_threads()
    probe = min(probe_seconds() for _ in range(3))
    times = json.loads(NOTEBOOK_TIMES.read_text())["notebooks"] if probe_only else {}
    if not probe_only:
        for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
            t = time.perf_counter()
            with tempfile.TemporaryDirectory() as out:
                subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute",
                                "--ExecutePreprocessor.timeout=600", f"--output-dir={out}", str(nb)],
                               check=True, capture_output=True, cwd=nb.parent)
            times[nb.stem] = round(time.perf_counter() - t, 1)
            print(f"{nb.stem}: {times[nb.stem]} s", flush=True)
    data = {"measured": time.strftime("%Y-%m-%d"),
            "machine": f"{platform.processor() or platform.machine()}, {physical_cores()} physical cores, "
                       f"{threads} torch threads, torch {torch.__version__}",
            "probe_seconds": round(probe, 2), "notebooks": times}
    NOTEBOOK_TIMES.write_text(json.dumps(data, indent=1) + "\n")
    print(json.dumps(data, indent=1))


if __name__ == "__main__":
    main("--probe" in sys.argv)
