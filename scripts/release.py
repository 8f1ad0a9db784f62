"""Release unitune_nb: set the version, point every notebook's Colab badge and install cell at the release's tag,
commit and tag, then point them back at main.

    python scripts/release.py 0.2.0          # two commits and the tag v0.2.0; then: git push origin main v0.2.0
    python scripts/release.py --sync         # only rewrite the notebooks from unitune_nb/colab.py (no git)

The ref lives in one place, ``unitune_nb.colab.REF``; the version in ``unitune_nb.__version__`` (pyproject.toml
reads it).  tests/test_layout.py fails when a notebook's badge or install cell disagrees with them.
"""
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INIT, COLAB = ROOT / "unitune_nb" / "__init__.py", ROOT / "unitune_nb" / "colab.py"
BADGE = re.compile(r"\[!\[Open In Colab\]\([^)]*\)\]\([^)]*\)")


def _set(path: Path, name: str, value: str) -> None:
    text, n = re.subn(rf'^{name} = "[^"]*"', f'{name} = "{value}"', path.read_text(), count=1, flags=re.M)
    assert n == 1, f"no {name} = ... line in {path}"
    path.write_text(text)


def sync(version: str, ref: str, write: bool = True) -> list[str]:
    """Rewrite every notebook's badge and install cell for ``version`` at ``ref`` (``write=False``: only look);
    the names of the notebooks that change."""
    sys.path.insert(0, str(ROOT))
    from unitune_nb.colab import badge, install_cell

    changed = []
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        data = json.loads(nb.read_text())
        for cell in data["cells"]:
            src = "".join(cell["source"])
            if cell["cell_type"] == "markdown" and BADGE.search(src):
                src = BADGE.sub(badge(nb.name, ref), src, count=1)
            elif cell["cell_type"] == "code" and '"google.colab" in sys.modules' in src and "pip install" in src:
                src = install_cell(version, ref)
            cell["source"] = src.splitlines(keepends=True)
        text = json.dumps(data, indent=1, ensure_ascii=False) + "\n"
        if text != nb.read_text():
            if write:
                nb.write_text(text)
            changed.append(nb.name)
    return changed


def git(*args: str) -> None:
    subprocess.run(["git", *args], cwd=ROOT, check=True)


def release(version: str) -> None:
    if not re.fullmatch(r"\d+\.\d+\.\d+", version):
        sys.exit(f"version {version!r}: give MAJOR.MINOR.PATCH, e.g. 0.2.0")
    if subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout.strip():
        sys.exit("the work tree has changes: commit or stash them first")
    tag = f"v{version}"
    _set(INIT, "__version__", version)
    _set(COLAB, "REF", tag)
    sync(version, tag)
    git("commit", "-qam", f"Release {tag}: notebooks open and install {tag}")
    git("tag", "-a", tag, "-m", f"unitune_nb {version}")
    _set(COLAB, "REF", "main")
    sync(version, "main")
    git("commit", "-qam", f"After {tag}: notebooks open and install main again")
    print(f"tagged {tag}; publish with: git push origin main {tag}")


if __name__ == "__main__":
    if sys.argv[1:] == ["--sync"]:
        from unitune_nb import __version__
        from unitune_nb.colab import REF

        print("rewrote:", ", ".join(sync(__version__, REF)) or "nothing (in step)")
    elif len(sys.argv) == 2:
        release(sys.argv[1])
    else:
        sys.exit(__doc__)
