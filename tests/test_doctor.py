"""`unitune-nb doctor` and the thread rule: every check can fail, says how to fix it, and never raises."""
import json
import os
import shutil
from pathlib import Path

import pytest

from unitune_nb import doctor as dr
from unitune_nb import machine
from unitune_nb.cli import main


def test_physical_cores_are_within_the_cpus_this_process_may_use():
    assert 1 <= machine.physical_cores() <= machine.logical_cpus() <= (os.cpu_count() or 1)


def test_threads_follow_the_environment_variable_and_refuse_bad_values(monkeypatch):
    monkeypatch.setenv(machine.THREADS_ENV, "1")
    assert machine.default_threads() == 1
    monkeypatch.delenv(machine.THREADS_ENV)
    assert machine.default_threads() == machine.physical_cores()
    for bad in ("zero", "0", "-3"):
        monkeypatch.setenv(machine.THREADS_ENV, bad)
        with pytest.raises(ValueError, match="UNITUNE_NB_THREADS"):
            machine.default_threads()
    with pytest.raises(ValueError, match="this machine has"):
        machine.check_threads(machine.logical_cpus() + 1)


def test_cli_refuses_too_many_threads_before_loading_a_model(capsys):
    assert main(["--threads", str(machine.logical_cpus() + 1000), "generate", "x", "--out", "x.png"]) == 2
    assert "this machine has" in capsys.readouterr().err


@pytest.mark.parametrize("installed, status", [("0.42.1", dr.PASS), ("0.39.0", dr.PASS), ("0.42.9", dr.PASS),
                                               ("0.30.0", dr.WARN), ("0.50.0", dr.WARN), (None, dr.FAIL)])
def test_versions_against_the_tested_range(installed, status):
    c = dr.version_check("diffusers", installed, ("0.39.0", "0.42.1"))
    assert c.status == status
    assert (c.fix != "") == (status != dr.PASS)


def test_colab_pins_lie_in_the_tested_ranges():
    """The oldest tested versions are the ones CI's Colab environment installs."""
    root = Path(__file__).resolve().parent.parent
    pins = dict(line.split("==") for line in (root / ".ci" / "colab-pins.txt").read_text().splitlines()
                if line and not line.startswith("#"))
    for name, (low, _) in dr.TESTED.items():
        if name in pins:
            assert pins[name] == low, f"{name}: TESTED starts at {low}, Colab's pin is {pins[name]}"


@pytest.mark.parametrize("versions, status, fix", [
    ({"ipywidgets": "8.1.9", "jupyterlab": "4.6.6", "jupyterlab_widgets": "3.0.17"}, dr.PASS, None),
    ({"ipywidgets": "7.7.1", "notebook": "6.5.7", "widgetsnbextension": "3.6.10"}, dr.PASS, None),
    ({"ipywidgets": "8.1.9", "jupyterlab": "4.6.6", "jupyterlab_widgets": "1.1.11"}, dr.FAIL, "jupyterlab_widgets==3.*"),
    ({"ipywidgets": "7.7.1", "notebook": "6.5.7", "widgetsnbextension": "4.0.16"}, dr.FAIL, "widgetsnbextension==3.*"),
    ({"ipywidgets": "8.1.9", "notebook": "7.6.5"}, dr.FAIL, "jupyterlab_widgets==3.*"),
    ({"ipywidgets": "8.1.9"}, dr.WARN, "unitune_nb[notebooks]"),
    ({}, dr.FAIL, "ipywidgets"),
])
def test_front_ends_need_the_widget_extension_of_ipywidgets_major(versions, status, fix):
    c = dr.check_frontends(versions, colab=False)
    assert c.status == status, c
    if fix:
        assert fix in c.fix


def test_this_environment_front_ends_pass():
    assert dr.check_frontends().status == dr.PASS


def test_a_read_only_folder_fails_with_a_fix(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    if os.access(folder, os.W_OK):  # root writes anyway: /proc is a folder nobody can create files in
        folder = Path("/proc")
    c = dr.check_writable(folder)
    assert c.status == dr.FAIL and "folder you can write" in c.fix
    assert dr.check_writable(tmp_path).status == dr.PASS


def test_changed_weights_fail_their_checksum(tmp_path):
    from unitune_nb.cascade import default_weights

    copy = tmp_path / "w"
    shutil.copytree(default_weights(), copy)
    assert dr.check_weights(copy).status == dr.PASS
    f = copy / "sr1" / "diffusion_pytorch_model.safetensors"
    data = bytearray(f.read_bytes())
    data[-1] ^= 1
    f.write_bytes(bytes(data))
    c = dr.check_weights(copy)
    assert c.status == dr.FAIL and "sr1/diffusion_pytorch_model.safetensors" in c.detail and "reinstall" in c.fix


def test_export_writes_checksums_that_match(tmp_path, cascade):
    from unitune_nb.files import CHECKSUMS, check_checksums

    cascade.save_pretrained(tmp_path)
    assert (tmp_path / CHECKSUMS).is_file() and check_checksums(tmp_path) == []


def test_a_slow_machine_is_warned_with_its_projection():
    ref = {"probe_seconds": 2.0, "notebooks": {"00_quickstart": 40, "02_rare_token_tuning": 90}}
    assert dr.project_notebooks(2.2, ref).status == dr.PASS
    slow = dr.project_notebooks(8.0, ref)  # 4x slower: 02 takes 6 min
    assert slow.status == dr.WARN and "02_rare_token_tuning would take 6.0 min" in slow.detail


def test_a_check_that_errors_is_a_fail_line_not_a_traceback(monkeypatch, capsys):
    def broken():
        raise RuntimeError("boom")

    monkeypatch.setattr(dr, "check_torch_build", broken)
    assert main(["doctor", "--no-speed", "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    bad = [c for c in out["checks"] if c["status"] == dr.FAIL]
    assert not out["ok"] and len(bad) == 1 and "RuntimeError: boom" in bad[0]["detail"]


def test_doctor_passes_here_with_the_speed_probe(capsys, tmp_path):
    """This machine is where the package is tested: every check passes or only warns (a newer package)."""
    rc = main(["doctor", "--dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "FAIL" not in out.split("\n", 1)[1] and "speed" in out and "embedded weights" in out


def test_doctor_refuses_a_missing_folder(capsys, tmp_path):
    assert main(["doctor", "--dir", str(tmp_path / "nope")]) == 2
    assert "no such folder" in capsys.readouterr().err
