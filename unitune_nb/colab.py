"""Colab: the one git ref a notebook's badge opens and its install cell installs, and the install cell itself.

Between releases both name ``main``; ``scripts/release.py`` sets :data:`REF` to the release's tag, rewrites every
notebook from :func:`badge` and :func:`install_cell`, commits and tags, then puts ``main`` back.  A test keeps
every notebook in step with this module.
"""
from __future__ import annotations

import sys

from . import __version__

REPO = "unitune-nb/unitune_nb"  # on GitHub
REF = "main"  # the branch or tag the notebooks open and install (scripts/release.py sets it)
BADGE = "[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"

INSTALL_CELL = '''\
# On Colab, install unitune_nb first (elsewhere: follow the README; this cell does nothing)
import sys
if "google.colab" in sys.modules:
    VERSION, loaded = "{version}", "unitune_nb" in sys.modules  # the version this notebook is written for
    %pip install -q "unitune_nb @ git+https://github.com/{repo}@{ref}"
    from importlib.metadata import version
    if version("unitune_nb") != VERSION:
        print(f"unitune_nb {{version('unitune_nb')}} got installed, but this notebook is for {{VERSION}}: "
              "open the notebook from the same release as the package (the badge in the README)")
    elif loaded and sys.modules["unitune_nb"].__version__ != VERSION:
        print("an older unitune_nb is still loaded: Runtime > Restart session, then run from the top")
    else:
        import unitune_nb
        print(f"unitune_nb {{unitune_nb.__version__}} from {ref} is ready")'''


def on_colab() -> bool:
    """True inside a Google Colab runtime."""
    return "google.colab" in sys.modules


def badge(notebook: str, ref: str = REF) -> str:
    """The "Open in Colab" badge of ``notebook`` (a file name in notebooks/), opening it at ``ref``."""
    return f"{BADGE}(https://colab.research.google.com/github/{REPO}/blob/{ref}/notebooks/{notebook})"


def install_cell(version: str = __version__, ref: str = REF) -> str:
    """The source of every notebook's first code cell: install ``ref`` on Colab and check the version."""
    return INSTALL_CELL.format(version=version, repo=REPO, ref=ref)
