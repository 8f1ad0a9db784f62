"""``unitune-nb doctor``: the pre-flight check a learner runs before a workshop (or notebook 00 runs first).

Each check gives PASS, WARN or FAIL with a one-line fix: Python and package versions against the ranges we test,
the torch build and its threads against the physical cores, free disk, the working folder writable, the shipped
weights against their checksums, a few-second tune + edit that projects each notebook's run time on this machine,
and which Jupyter front ends are installed with a widget extension that fits ipywidgets.  A check that errors is
a FAIL line with the reason, never a traceback.
"""
from __future__ import annotations

import importlib.metadata as md
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from . import __version__

PASS, WARN, FAIL = "PASS", "WARN", "FAIL"

# What CI runs: the oldest of each is Colab's (.ci/colab-pins.txt, CI's second environment), the newest what the
# main environment installed when these were last read (2026-12-07).  torch: only the CPU build of 2.13.0 is run.
TESTED = {
    "python": ("3.10", "3.13"),
    "torch": ("2.13.0", "2.13.0"),
    "diffusers": ("0.39.0", "0.42.1"),
    "transformers": ("5.15.0", "5.25.0"),
    "peft": ("0.20.0", "0.22.0"),
    "ipywidgets": ("7.7.1", "8.1.9"),
}
# ipywidgets' major version -> the major version of the front-end extension each kind of front end needs
WIDGET_EXTENSIONS = {7: {"jupyterlab_widgets": 1, "widgetsnbextension": 3},
                     8: {"jupyterlab_widgets": 3, "widgetsnbextension": 4}}
CPU_TORCH = "pip install torch --index-url https://download.pytorch.org/whl/cpu"
NOTEBOOK_TIMES = Path(__file__).parent / "data" / "notebook_times.json"  # written by scripts/notebook_times.py
SLOW = 180.0  # s: a notebook projected slower than this gets a warning (they take under 2 minutes here)


@dataclass
class Check:
    """One line of the report: ``status`` PASS / WARN / FAIL, what was found, and what to do (for WARN / FAIL)."""
    name: str
    status: str
    detail: str
    fix: str = ""


def _release(v: str) -> tuple[int, ...]:
    from packaging.version import Version

    return Version(v).release


def version_check(name: str, installed: str | None, tested: tuple[str, str] | None = None) -> Check:
    """``installed`` against the tested range: FAIL when missing, WARN outside the range (newer: by major.minor)."""
    low, high = tested or TESTED[name]
    if installed is None:
        return Check(name, FAIL, "not installed", f'pip install "{name}>={low}"')
    got = _release(installed)
    if got < _release(low) or got[:2] > _release(high)[:2]:
        span = low if low == high else f"{low} - {high}"
        return Check(name, WARN, f"{installed}: not a version we test (tested {span})",
                     f'if something breaks: pip install "{name}=={high}"')
    return Check(name, PASS, installed)


def installed_version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def check_versions() -> list[Check]:
    py = ".".join(map(str, sys.version_info[:3]))
    out = [version_check("python", py)]
    if sys.version_info < (3, 10):
        out[0] = Check("python", FAIL, f"{py}: unitune_nb needs 3.10 or newer", "install Python 3.11 or 3.12")
    return out + [version_check(d, installed_version(d)) for d in TESTED if d != "python"]


def check_torch_build() -> Check:
    import torch

    if torch.cuda.is_available():
        return Check("torch build", PASS, f"CUDA {torch.version.cuda}, GPU: {torch.cuda.get_device_name(0)}")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return Check("torch build", PASS, "MPS (Apple GPU) and CPU")
    if torch.version.cuda:
        return Check("torch build", WARN, f"a CUDA {torch.version.cuda} build on a machine without a usable GPU: "
                     "several GB of disk for nothing", f"for a laptop: {CPU_TORCH}")
    return Check("torch build", PASS, f"CPU ({torch.__version__})")


def check_threads() -> Check:
    import torch

    from .machine import default_threads, logical_cpus, physical_cores

    physical, logical = physical_cores(), logical_cpus()
    try:
        n = default_threads()
    except ValueError as e:
        return Check("threads", FAIL, str(e).split(":")[0], "unset UNITUNE_NB_THREADS or set it to a whole number")
    detail = f"{n} torch threads on {physical} physical cores ({logical} logical CPUs)"
    if n > physical:
        return Check("threads", WARN, detail + ": more threads than cores slows torch down",
                     "unset UNITUNE_NB_THREADS (then the notebooks use one thread per physical core)")
    return Check("threads", PASS, detail + f" (torch uses {torch.get_num_threads()} now)")


def check_disk(folder: Path) -> Check:
    free = shutil.disk_usage(folder).free / 2**30
    detail = f"{free:.1f} GB free in {folder}"
    if free < 0.2:
        return Check("disk", FAIL, detail + ": too little to save an edit or a tuned model",
                     "free some disk space, or run from another folder (--dir)")
    if free < 1.0:
        return Check("disk", WARN, detail + ": tuned full models take about 45 MB each",
                     "free some space before the workshop")
    return Check("disk", PASS, detail)


def check_writable(folder: Path) -> Check:
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".unitune-doctor-"):
            pass
    except OSError as e:
        return Check("working folder", FAIL, f"cannot write in {folder} ({e.strerror or e})",
                     "start Jupyter from a folder you can write in (e.g. your home folder), or pass --dir")
    return Check("working folder", PASS, f"{folder} is writable")


def check_weights(folder: Path | None = None) -> Check:
    from .cascade import Cascade, default_weights
    from .files import check_checksums

    folder = folder or default_weights()
    fix = "reinstall: pip install --force-reinstall --no-deps unitune_nb (or git checkout the weights folder)"
    bad = check_checksums(folder)
    if bad:
        return Check("embedded weights", FAIL, f"{len(bad)} file(s) differ from their checksums: {', '.join(bad)}",
                     fix)
    c = Cascade.from_pretrained(folder)
    params = sum(p.numel() for u in c.unets.values() for p in u.parameters())
    return Check("embedded weights", PASS, f"{len(c.stages)} stages, {params / 1e6:.1f} M parameters, "
                 "checksums match")


def probe_seconds() -> float:
    """Seconds for the probe the notebook times are projected from: a 4-iteration tune of base + sr1 and one
    full edit on world scene 2 (model loading left out)."""
    from . import world
    from .tune import UniTune

    ut = UniTune()
    source = world.render(world.random_scene(2), 128)
    ut.cascade.generate("a red house", seed=0)  # warm-up: first calls pay one-off costs
    t = time.perf_counter()
    ut.tune(source, iters=4, progress=False)
    ut.edit("beikkpic at night", seed=0)
    return time.perf_counter() - t


def project_notebooks(seconds: float, reference: Mapping | None = None) -> Check:
    """Each notebook's time here, projected from its time on the reference machine and the probe's ratio."""
    ref = reference or json.loads(NOTEBOOK_TIMES.read_text())
    ratio = seconds / ref["probe_seconds"]
    times = {name: t * ratio for name, t in ref["notebooks"].items()}
    slowest = max(times, key=times.get)
    detail = (f"probe {seconds:.1f} s ({ratio:.1f}x the reference machine); notebooks about "
              + ", ".join(f"{name[:2]} {t:.0f} s" for name, t in times.items()))
    if times[slowest] > SLOW:
        return Check("speed", WARN, detail + f"; {slowest} would take {times[slowest] / 60:.1f} min",
                     "close other programs, plug the laptop in, or use Colab")
    return Check("speed", PASS, detail)


def check_frontends(versions: Mapping[str, str | None] | None = None, colab: bool | None = None) -> Check:
    """The Jupyter front ends installed, and whether each has the widget extension of ipywidgets' major version."""
    v = dict(versions) if versions is not None else {
        d: installed_version(d) for d in ("ipywidgets", "jupyterlab", "notebook", "nbclassic",
                                          "jupyterlab_widgets", "widgetsnbextension")}
    colab = ("google.colab" in sys.modules or installed_version("google-colab") is not None) if colab is None else colab
    if colab:
        return Check("front ends", PASS, "Google Colab (its page brings its own widget manager)")
    if v.get("ipywidgets") is None:
        return Check("front ends", FAIL, "ipywidgets is not installed", 'pip install "ipywidgets>=7.7,<9"')
    major = _release(v["ipywidgets"])[0]
    need = WIDGET_EXTENSIONS.get(major, WIDGET_EXTENSIONS[8])
    apps = []  # (front end, the extension it uses)
    if v.get("jupyterlab"):
        apps.append((f"JupyterLab {v['jupyterlab']}", "jupyterlab_widgets"))
    if v.get("notebook"):
        nb7 = _release(v["notebook"])[0] >= 7
        apps.append((f"Notebook {v['notebook']}", "jupyterlab_widgets" if nb7 else "widgetsnbextension"))
    if v.get("nbclassic"):
        apps.append((f"nbclassic {v['nbclassic']}", "widgetsnbextension"))
    if not apps:
        return Check("front ends", WARN, "no Jupyter front end installed", 'pip install "unitune_nb[notebooks]" '
                     "(JupyterLab and Notebook 7), or open the notebooks on Colab")
    wrong = []
    for app, ext in apps:
        got = v.get(ext)
        if got is None or _release(got)[0] != need[ext]:
            wrong.append(f"{app} needs {ext} {need[ext]}.x for ipywidgets {major}, found {got or 'none'}")
    names = ", ".join(app for app, _ in apps)
    if wrong:
        fixes = " ".join(sorted({f'"{ext}=={need[ext]}.*"' for app, ext in apps}))
        return Check("front ends", FAIL, f"{names}: " + "; ".join(wrong), f"pip install {fixes}")
    exts = ", ".join(sorted({f"{ext} {v[ext]}" for _, ext in apps}))
    return Check("front ends", PASS, f"{names}; widget extensions fit ipywidgets {v['ipywidgets']} ({exts})")


def _safely(name: str, fn: Callable[[], Check | list[Check]]) -> list[Check]:
    try:
        out = fn()
    except Exception as e:  # noqa: BLE001 - a check that errors is a FAIL line, never a traceback
        return [Check(name, FAIL, f"the check itself failed: {type(e).__name__}: {e}",
                      "rerun with --debug and report the traceback")]
    return out if isinstance(out, list) else [out]


def run_checks(folder: str | Path = ".", speed: bool = True) -> list[Check]:
    """Every check, in order; ``speed=False`` leaves out the few-second tune + edit."""
    folder = Path(folder).expanduser().resolve()
    checks: list[tuple[str, Callable]] = [
        ("versions", check_versions), ("torch build", check_torch_build), ("threads", check_threads),
        ("disk", lambda: check_disk(folder)), ("working folder", lambda: check_writable(folder)),
        ("embedded weights", check_weights), ("front ends", check_frontends)]
    if speed:
        checks.insert(6, ("speed", lambda: project_notebooks(probe_seconds())))
    return [c for name, fn in checks for c in _safely(name, fn)]


def report(checks: list[Check]) -> str:
    """The checks as a table, each WARN / FAIL with its fix on the line below."""
    counts = {s: sum(c.status == s for c in checks) for s in (PASS, WARN, FAIL)}
    lines = [f"unitune_nb {__version__} doctor: " + ", ".join(f"{n} {s}" for s, n in counts.items())]
    width = max(len(c.name) for c in checks)
    for c in checks:
        lines.append(f"{c.status}  {c.name:<{width}}  {c.detail}")
        if c.fix and c.status != PASS:
            lines.append(f"{'':6}{'':<{width}}  fix: {c.fix}")
    return "\n".join(lines)


def doctor(folder: str | Path = ".", speed: bool = True, as_json: bool = False) -> list[Check]:
    """Run the checks and print the table (or JSON); returns the checks."""
    checks = run_checks(folder, speed)
    if as_json:
        print(json.dumps({"version": __version__, "ok": not any(c.status == FAIL for c in checks),
                          "checks": [asdict(c) for c in checks]}, indent=1))
    else:
        print(report(checks))
    return checks
