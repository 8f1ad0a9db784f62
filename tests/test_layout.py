"""The package's shape: no import cycle, no function over 60 lines, one home for the defaults."""
import ast
import inspect
from pathlib import Path

import pytest

import unitune_nb

PACKAGE = Path(unitune_nb.__file__).parent
MAX_LINES = 60


def _modules() -> dict[str, Path]:
    out = {}
    for f in PACKAGE.rglob("*.py"):
        parts = list(f.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Package modules that ``name`` imports anywhere (functions included), leaving out TYPE_CHECKING blocks."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and _is_type_checking(node)
            for n in ast.walk(node)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}
    return {m for m in found if m in modules and m != name}


def test_no_import_cycle():
    modules = _modules()
    graph = {m: _imports(m, p, modules) for m, p in modules.items()}
    # a package's __init__ re-exporting its own submodules is not a cycle through them
    for m in graph:
        graph[m] = {d for d in graph[m] if not (m.startswith(d + ".") and modules[d].name == "__init__.py")}
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(d):] + [d]))
            if d not in state:
                visit(d)
        path.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert {"unitune_nb.diffusion", "unitune_nb.adapters", "unitune_nb.edit", "unitune_nb.settings"} <= set(graph)


def test_no_function_over_60_lines():
    long = []
    for f in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_LINES:
                    long.append(f"{f.relative_to(PACKAGE)}:{node.lineno} {node.name} ({n} lines)")
    assert not long, "split these: " + "; ".join(long)


def test_the_sampler_takes_an_adapter_not_a_scheduler():
    from unitune_nb.diffusion import diffusion_loss, sample

    assert "adapter" in inspect.signature(sample).parameters and "scheduler" not in inspect.signature(sample).parameters
    assert "adapter" in inspect.signature(diffusion_loss).parameters


def test_cli_defaults_come_from_settings():
    from unitune_nb.cli import build_parser
    from unitune_nb.settings import RARE_TOKEN, SWEEP_GRID

    p = build_parser()
    edit = p.parse_args(["edit", "x.png", "at night"])
    assert edit.rare_token == RARE_TOKEN
    assert all(getattr(edit, k) is None for k in ("guidance_scale", "t0", "interpolation", "mask_from", "iters", "lr"))
    assert p.parse_args(["bench-speed"]).iters is None
    be = p.parse_args(["bench-edit"])
    assert [float(x) for x in be.sweep_guidance.split(",")] == SWEEP_GRID["guidance_scale"]
    assert [float(x) for x in be.sweep_t0.split(",")] == SWEEP_GRID["t0"]


def test_each_model_family_has_its_defaults(cascade):
    from unitune_nb.backends import IFCascade, SDCascade
    from unitune_nb.settings import MODEL_DEFAULTS, defaults_for

    assert defaults_for(cascade) is MODEL_DEFAULTS["embedded"]
    for cls in (IFCascade, SDCascade):
        assert cls.family in MODEL_DEFAULTS and defaults_for(cls).tune.optimizer == "adafactor"


@pytest.mark.parametrize("kw,error,match", [
    (dict(guidance_scale=float("nan")), ValueError, "finite"), (dict(guidance_scale=float("inf")), ValueError, "finite"),
    (dict(t0=float("nan")), ValueError, "finite"), (dict(interpolation=-0.1), ValueError, r"in \[0, 1\]"),
    (dict(seed=1.5), TypeError, "whole number"), (dict(seed="3"), TypeError, "whole number"),
    (dict(seed=-1), ValueError, "seed"), (dict(steps=0), ValueError, "steps"), (dict(guidance_scale=True), TypeError, "number"),
    (dict(mask_from="oracle"), ValueError, "mask_from"), (dict(baseline_prompt=3), TypeError, "baseline_prompt"),
    (dict(mask=[[float("nan")]]), TypeError, "mask"),
])
def test_edit_settings_refuse_bad_values(kw, error, match):
    from unitune_nb.settings import EditSettings

    with pytest.raises(error, match=match):
        EditSettings(**kw).check()


def test_edit_settings_take_the_models_defaults():
    import numpy as np

    from unitune_nb.settings import MODEL_DEFAULTS, EditSettings

    d = MODEL_DEFAULTS["embedded"].edit
    s = EditSettings(t0=0.5, seed=np.int64(3)).check().resolved(d)
    assert s.t0 == 0.5 and s.guidance_scale == d.guidance_scale and s.interpolation == d.interpolation
    assert s.seed == 3 and s.mask_from == d.mask_from
    with pytest.raises(ValueError, match="NaN"):
        EditSettings(mask=np.full((4, 4), np.nan)).check()


def test_notebooks_read_shipped_data_and_open_and_install_one_ref():
    """Colab: what a notebook reads ships inside the package (no ../docs); its badge opens and its install cell
    installs the one ref of unitune_nb.colab, for this version (scripts/release.py --sync rewrites them)."""
    import json

    from unitune_nb import colab
    from unitune_nb.bench import SHIPPED_SUMMARY
    from unitune_nb.plots import SHIPPED_TRAINING_CURVE

    root = PACKAGE.parent
    for shipped in (SHIPPED_SUMMARY, SHIPPED_TRAINING_CURVE):
        assert shipped.read_text() == (root / "docs" / "bench" / shipped.name).read_text(), \
            f"copy docs/bench/{shipped.name} into unitune_nb/data/ after re-running the benchmark"
    for nb in sorted((root / "notebooks").glob("*.ipynb")):
        cells = json.loads(nb.read_text())["cells"]
        code = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
        assert not any("../docs" in c for c in code), f"{nb.name} reads ../docs, which Colab does not have"
        assert colab.badge(nb.name) in "".join(cells[0]["source"]), f"{nb.name}: its badge is not at {colab.REF}"
        installs = [c for c in code if "pip install" in c]
        assert installs == [colab.install_cell()], f"{nb.name}: run `python scripts/release.py --sync`"
    assert f'VERSION, loaded = "{unitune_nb.__version__}"' in colab.install_cell()
    assert f"@{colab.REF}\"" in colab.install_cell()


def test_notebooks_stay_small_and_each_figure_is_explained():
    """Notebook files stay small (under 1.5 MB together, no saved widget state: the editor's output carries a
    still picture), and every code cell that draws a figure is followed by a "What to notice" paragraph."""
    import json

    notebooks = sorted((PACKAGE.parent / "notebooks").glob("*.ipynb"))
    assert sum(nb.stat().st_size for nb in notebooks) < 1.5e6, "the notebooks together exceed 1.5 MB"
    for nb in notebooks:
        data = json.loads(nb.read_text())
        assert "widgets" not in data["metadata"], f"{nb.name} saved widget state: strip metadata.widgets"
        cells = data["cells"]
        for i, c in enumerate(cells):
            drawn = any(k in o.get("data", {}) for o in c.get("outputs", []) for k in ("image/png", "image/jpeg"))
            widget = any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in c.get("outputs", []))
            if c["cell_type"] != "code" or not drawn or widget:
                continue
            after = "".join("".join(d["source"]) for d in cells[i + 1:i + 3] if d["cell_type"] == "markdown")
            assert "What to notice" in after, f"{nb.name} cell {i}: a figure without 'What to notice' below it"


def test_a_plain_install_ships_every_subpackage():
    """A non-editable install (Colab's `pip install git+...`) gets every package folder, not only the top one."""
    import tomllib

    from setuptools import find_packages

    root = PACKAGE.parent
    cfg = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    shipped = set(find_packages(str(root), include=cfg["packages"]["find"]["include"]))
    folders = {".".join(p.parent.relative_to(root).parts) for p in PACKAGE.rglob("__init__.py")}
    assert folders <= shipped, f"not installed by a plain pip install: {sorted(folders - shipped)}"
