"""The Colab install cell, run as IPython would run it on Colab (its %pip recorded, not run)."""
import sys
import types

from IPython.core.inputtransformer2 import TransformerManager

from unitune_nb import __version__, colab


def run_install_cell(monkeypatch, installed: str, loaded_version: str | None):
    """Run the cell with google.colab present; ``loaded_version``: the unitune_nb already imported (None: none)."""
    calls = []
    shell = types.SimpleNamespace(run_line_magic=lambda magic, line: calls.append((magic, line)))
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    if loaded_version is None:
        monkeypatch.delitem(sys.modules, "unitune_nb")
    else:
        monkeypatch.setattr(sys.modules["unitune_nb"], "__version__", loaded_version)
    monkeypatch.setattr("importlib.metadata.version", lambda name: installed)
    code = TransformerManager().transform_cell(colab.install_cell())
    exec(compile(code, "install cell", "exec"), {"get_ipython": lambda: shell})
    return calls


def test_the_install_cell_installs_the_ref_the_badge_opens(monkeypatch, capsys):
    calls = run_install_cell(monkeypatch, __version__, None)
    assert calls == [("pip", f'install -q "unitune_nb @ git+https://github.com/{colab.REPO}@{colab.REF}"')]
    assert f"blob/{colab.REF}/notebooks/00_quickstart.ipynb" in colab.badge("00_quickstart.ipynb")
    assert f"unitune_nb {__version__} from {colab.REF} is ready" in capsys.readouterr().out


def test_an_older_copy_still_loaded_asks_for_a_restart(monkeypatch, capsys):
    run_install_cell(monkeypatch, __version__, "0.0.1")
    assert "Restart session" in capsys.readouterr().out


def test_a_package_of_another_version_is_named(monkeypatch, capsys):
    run_install_cell(monkeypatch, "9.9.9", None)
    out = capsys.readouterr().out
    assert f"unitune_nb 9.9.9 got installed, but this notebook is for {__version__}" in out


def test_off_colab_the_cell_does_nothing(monkeypatch):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    calls = []
    code = TransformerManager().transform_cell(colab.install_cell())
    exec(compile(code, "install cell", "exec"),
         {"get_ipython": lambda: types.SimpleNamespace(run_line_magic=lambda *a: calls.append(a))})
    assert calls == []


def test_release_sync_leaves_the_notebooks_as_they_are():
    """The notebooks are in step: the release script's rewrite (for this version and ref) changes nothing."""
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "scripts" / "release.py"
    spec = importlib.util.spec_from_file_location("release", script)
    release = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(release)
    assert release.sync(__version__, colab.REF, write=False) == []
    assert len(release.sync("9.9.9", "v9.9.9", write=False)) == 8  # a release rewrites every notebook


def test_release_tags_a_commit_whose_notebooks_name_the_tag_and_main_names_main(tmp_path):
    """scripts/release.py on a clone: the tag's notebooks open and install the tag at the new version; main's
    open and install main again."""
    import json
    import os
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(root), str(clone)], check=True)
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.org", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@example.org")
    subprocess.run([sys.executable, "scripts/release.py", "9.8.7"], cwd=clone, env=env, check=True,
                   capture_output=True)

    def at(ref: str, path: str) -> str:
        return subprocess.run(["git", "show", f"{ref}:{path}"], cwd=clone, capture_output=True, text=True,
                              check=True).stdout

    for ref, want in (("v9.8.7", "v9.8.7"), ("HEAD", "main")):
        assert '__version__ = "9.8.7"' in at(ref, "unitune_nb/__init__.py")
        cells = json.loads(at(ref, "notebooks/03_cfg_vs_prompt_guidance.ipynb"))["cells"]
        text = "".join("".join(c["source"]) for c in cells[:2])
        assert f"blob/{want}/notebooks/03_cfg_vs_prompt_guidance.ipynb" in text
        assert f'@{want}"' in text and 'VERSION, loaded = "9.8.7"' in text
