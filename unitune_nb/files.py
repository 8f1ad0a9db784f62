"""Checked file paths: inputs that exist and are files, outputs that can be written, written whole.

Every check raises a ``FileNotFoundError`` / ``IsADirectoryError`` / ``PermissionError`` / ``ValueError`` whose
message says what to do, so the command line can check all its paths before it loads a model, and nothing
half-written or written over a device is ever left behind.
"""
from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path


def input_file(path: str | os.PathLike, what: str = "file") -> Path:
    """``path`` exists and is a regular file."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise IsADirectoryError(f"{what} {p} is a directory; give a file")
    if not p.exists():
        raise FileNotFoundError(f"{what} {p} does not exist")
    if not p.is_file():
        raise ValueError(f"{what} {p} is not a regular file")
    if not os.access(p, os.R_OK):
        raise PermissionError(f"{what} {p} cannot be read (check its permissions)")
    return p


def _writable_dir(d: Path, what: str) -> None:
    while not d.exists():  # the nearest folder that exists must let us create the rest
        d = d.parent
    if not d.is_dir():
        raise NotADirectoryError(f"cannot write the {what}: {d} is a file, not a folder")
    if not os.access(d, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write the {what} into {d}: the folder is read-only; choose another place")


def output_file(path: str | os.PathLike, what: str = "output file") -> Path:
    """``path`` can be written as a regular file: not a folder, not a device, its folder writable or creatable."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise IsADirectoryError(f"the {what} {p} is a folder; give a file name, e.g. {p / 'out.png'}")
    if p.exists() and not stat.S_ISREG(p.stat().st_mode):
        raise ValueError(f"the {what} {p} exists and is not a regular file (a device or a pipe); choose a file name")
    if p.exists() and not os.access(p, os.W_OK):
        raise PermissionError(f"the {what} {p} is read-only; choose another name")
    _writable_dir(p.parent, what)
    return p


def output_dir(path: str | os.PathLike, what: str = "output folder") -> Path:
    """``path`` is a folder that exists or can be created, and can be written."""
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise NotADirectoryError(f"the {what} {p} is a file; give a folder")
    _writable_dir(p, what)
    return p


def write_atomic(path: str | os.PathLike, write: Callable[[Path], None], what: str = "output file") -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then move it into place: a crash or a full disk
    leaves the old file (or none), never half of one."""
    p = output_file(path, what)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # the permissions a plain open() would give, not mkstemp's private 0600
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


CHECKSUMS = "checksums.json"  # a cascade folder's SHA-256 of each file, written by Cascade.save_pretrained


def sha256(path: str | os.PathLike) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_checksums(folder: str | os.PathLike) -> Path:
    """Record the SHA-256 of every file in ``folder`` (its subfolders too) in ``folder/checksums.json``."""
    import json

    root = Path(folder)
    sums = {p.relative_to(root).as_posix(): sha256(p) for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != CHECKSUMS}
    return write_atomic(root / CHECKSUMS, lambda t: t.write_text(json.dumps(sums, indent=1) + "\n"), "checksums")


def check_checksums(folder: str | os.PathLike) -> list[str]:
    """The files of ``folder`` that are missing or differ from its ``checksums.json`` ([] when all match).
    Raises FileNotFoundError when the folder has no checksums file."""
    import json

    root = Path(folder)
    sums = json.loads((root / CHECKSUMS).read_text())
    return [name for name, digest in sums.items() if not (root / name).is_file() or sha256(root / name) != digest]
