"""What this machine can give torch: physical cores, and the one rule for torch's thread count.

``use_threads()`` is what every notebook and the ``unitune-nb`` command call: one torch thread per physical
core this process may run on (hyper-threads add little to matrix work and slow it down when busy), or the
number in the environment variable ``UNITUNE_NB_THREADS``.
"""
from __future__ import annotations

import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

THREADS_ENV = "UNITUNE_NB_THREADS"


def logical_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one, else all)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _cgroup_cpus() -> int | None:
    """The CPU quota of a Linux container (cgroup v2 ``cpu.max``), rounded up; None without one."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        return None if quota == "max" else max(1, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        return None


def _linux_cores(cpus: set[int]) -> int | None:
    """Distinct (package, core) pairs among ``cpus`` in /proc/cpuinfo; None where it does not list them."""
    try:
        blocks = Path("/proc/cpuinfo").read_text().strip().split("\n\n")
    except OSError:
        return None
    cores = set()
    for block in blocks:
        info = dict(line.split(":", 1) for line in block.splitlines() if ":" in line)
        info = {k.strip(): v.strip() for k, v in info.items()}
        if "core id" not in info or int(info.get("processor", -1)) not in cpus:
            continue
        cores.add((info.get("physical id", "0"), info["core id"]))
    return len(cores) or None


def _psutil_cores() -> int | None:
    try:
        import psutil

        return psutil.cpu_count(logical=False)
    except Exception:  # noqa: BLE001 - psutil is optional, and may not know
        return None


def _sysctl_cores() -> int | None:
    try:
        return int(subprocess.run(["sysctl", "-n", "hw.physicalcpu"], capture_output=True, text=True,
                                  timeout=5).stdout)
    except (OSError, ValueError, subprocess.SubprocessError):
        return None


def physical_cores() -> int:
    """Physical cores this process may use: /proc/cpuinfo on Linux (within the affinity mask), sysctl on macOS,
    psutil elsewhere (Windows); never more than :func:`logical_cpus` or a container's CPU quota."""
    logical = logical_cpus()
    if sys.platform.startswith("linux"):
        try:
            n = _linux_cores(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            n = None
    elif sys.platform == "darwin":
        n = _sysctl_cores()
    else:
        n = _psutil_cores()
    n = min(n or logical, logical)
    quota = _cgroup_cpus()
    return min(n, quota) if quota else n


def default_threads() -> int:
    """torch's thread count: ``UNITUNE_NB_THREADS`` if set, else one per physical core."""
    value = os.environ.get(THREADS_ENV, "").strip()
    if not value:
        return physical_cores()
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"{THREADS_ENV}={value!r} is not a whole number >= 1: set it to e.g. "
                         f"{physical_cores()} (this machine's physical cores) or unset it")
    return check_threads(n, THREADS_ENV)


def check_threads(n: int, name: str = "threads") -> int:
    """``n`` torch threads, refused above this machine's logical CPUs; a warning above its physical cores."""
    logical, physical = logical_cpus(), physical_cores()
    if n < 1 or n > logical:
        raise ValueError(f"{name} {n}: this machine has {logical} CPUs for this process ({physical} physical "
                         f"cores); use 1-{logical}, best {physical}")
    if n > physical:
        warnings.warn(f"{name} {n} is more than the {physical} physical cores: hyper-threads slow torch down "
                      f"more often than they help; {physical} is usually faster", stacklevel=2)
    return n


def use_threads(n: int | None = None) -> int:
    """Set torch's thread count (``n``, else :func:`default_threads`) and return it."""
    import torch

    n = default_threads() if n is None else check_threads(n)
    torch.set_num_threads(n)
    return n
