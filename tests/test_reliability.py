"""Bad input gets a clear, early error and nothing is lost (docs/reliability.md lists every case)."""
import copy

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from unitune_nb import world
from unitune_nb.cli import main
from unitune_nb.tune import UniTune

FAST = dict(stages=["base"], steps=2)


@pytest.fixture(scope="module")
def src_png(tmp_path_factory):
    p = tmp_path_factory.mktemp("src") / "src.png"
    world.render(world.random_scene(2), 128).save(p)
    return p


def _cli(capsys, *args):
    rc = main([str(a) for a in args])
    err = capsys.readouterr().err
    return rc, err


@pytest.mark.parametrize("args,message", [
    (["generate", "x", "--out", "{tmp}"], "is a folder"),
    (["generate", "x", "--guidance-scale", "nan"], "finite"),
    (["generate", "x", "--guidance-scale", "inf"], "finite"),
    (["--threads", "-1", "generate", "x"], "--threads must be >= 1"),
    (["edit", "{tmp}", "at night"], "is a directory"),
    (["edit", "{tmp}/none.png", "at night"], "does not exist"),
    (["edit", "{src}", "at night", "--t0", "3"], "t0 must be in (0, 1]"),
    (["edit", "{src}", "at night", "--interpolation", "nan"], "interpolation must be a finite number"),
    (["edit", "{src}", "at night", "--seed", "-1"], "seed must be >= 0"),
    (["edit", "{src}", "at night", "--mask", "{tmp}/none.png"], "--mask"),
    (["edit", "{src}", "at night", "--mask", "{bad_mask}"], "cannot read"),
    (["edit", "{src}", "at night", "--save-tuned", "/dev/null"], "not a regular file"),
    (["edit", "{src}", "at night", "--save-tuned", "{tmp}"], "is a folder"),
    (["edit", "{src}", "at night", "--out", "{src}"], "is a file"),
    (["edit", "{src}", "at night", "--load-tuned", "{tmp}/none.safetensors"], "does not exist"),
    (["edit", "{src}", "at night", "--tune-stages", "base,sr9"], "unknown stage"),
    (["edit", "{src}", "at night", "--lr", "0"], "--lr must be a finite number > 0"),
    (["edit", "{src}", "at night", "--tune-method", "lora", "--lora-rank", "0"], "--lora-rank must be >= 1"),
    (["edit", "{src}", "at night", "--weight-scale", "1.5"], "weight_scale must be in [0, 1]"),
    (["bench-edit", "--quick", "--sweep-scale", "0.5,-1"], "weight_scale must be in [0, 1]"),
    (["bench-edit", "--merge", "{tmp}", "--combine", "{tmp}"], "not both"),
    (["bench-edit", "--quick", "--tune-lr", "-1"], "--tune-lr must be a finite number > 0"),
    (["edit", "{src}", "  "], "prompt is empty"),
    (["eval", "--n", "0"], "--n must be >= 1"),
    (["eval", "--guidance-sweep", "1,x"], "comma-separated"),
    (["bench-edit", "--seeds", "0"], "--seeds must be >= 1"),
    (["bench-edit", "--merge", "{tmp}/nothing"], "does not exist"),
    (["train", "--stage", "base", "--out", "{tmp}/run", "--minutes", "-1"], "--minutes"),
    (["export", "{tmp}/nothing", "--out", "{tmp}/x"], "no such run folder"),
])
def test_cli_refuses_bad_arguments_before_loading_a_model(capsys, tmp_path, src_png, monkeypatch, args, message):
    from unitune_nb import cascade

    def no_loading(*a, **k):
        raise AssertionError("a model was loaded before the arguments were checked")

    monkeypatch.setattr(cascade.Cascade, "from_pretrained", no_loading)
    (tmp_path / "bad.png").write_bytes(b"not a png")
    fill = {"tmp": tmp_path, "src": src_png, "bad_mask": tmp_path / "bad.png"}
    rc, err = _cli(capsys, *[a.format(**fill) for a in args])
    assert rc == 2 and message in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_cli_debug_shows_the_traceback(capsys):
    with pytest.raises(ValueError, match="finite"):
        main(["--debug", "generate", "x", "--guidance-scale", "nan"])


def test_cli_edit_with_a_mask_file_and_load_tuned_notes(capsys, tmp_path, src_png):
    mask = np.zeros((128, 128), np.uint8)
    mask[:, 64:] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    rc, err = _cli(capsys, "edit", src_png, "at night", "--iters", "2", "--tune-stages", "base", "--mask",
                   tmp_path / "mask.png", "--out", tmp_path / "o", "--save-tuned", tmp_path / "t.safetensors")
    assert rc == 0, err
    out = np.asarray(Image.open(tmp_path / "o" / "edit_0_at_night.png"), dtype=float)
    src = np.asarray(Image.open(src_png).convert("RGB"), dtype=float)
    assert np.abs(out[:, :60] - src[:, :60]).max() < 2  # outside the mask: the source
    other = tmp_path / "other.png"
    world.render(world.random_scene(5), 128).save(other)
    rc = main(["edit", str(other), "at night", "--load-tuned", str(tmp_path / "t.safetensors"), "--rare-token", "zqx",
               "--out", str(tmp_path / "o2")])
    printed = capsys.readouterr().out
    assert rc == 0 and "differs from the source the file was tuned on" in printed and "--rare-token 'zqx' ignored" in printed


@pytest.mark.parametrize("kw,error,match", [
    (dict(guidance_scale=float("inf")), ValueError, "finite"),
    (dict(seed=1.0), TypeError, "whole number"),
    (dict(seed="1"), TypeError, "whole number"),
    (dict(mask=np.full((32, 32), np.nan)), ValueError, "NaN"),
    (dict(mask=np.full((32, 32), 2.0)), ValueError, r"\[0, 1\]"),
    (dict(mask=torch.full((32, 32), -0.5)), ValueError, r"\[0, 1\]"),
    (dict(mask=[[1, 0]]), TypeError, "mask must be"),
])
def test_edit_refuses_bad_settings(ut, kw, error, match):
    ut.set_source(world.render(world.random_scene(2), 128))
    with pytest.raises(error, match=match):
        ut.edit("beikkpic at night", **kw, **FAST)


def test_masks_of_any_size_and_value_range(ut, tmp_path):
    ut.set_source(world.render(world.random_scene(2), 128))
    wide = np.zeros((40, 80), np.uint8)
    wide[:, 40:] = 255  # right half of the centre square
    r = ut.edit("beikkpic at night", mask=wide, t0=1.0, **FAST)
    assert any("0-255" in n for n in r.notes) and any("centre square" in n for n in r.notes)
    assert r.mask[:, :14].max() == 0 and r.mask[:, 18:].min() == 1
    Image.fromarray(wide).save(tmp_path / "m.png")
    by_path = ut.edit("beikkpic at night", mask=tmp_path / "m.png", t0=1.0, **FAST)
    assert np.allclose(by_path.mask, r.mask)
    as_float = ut.edit("beikkpic at night", mask=torch.from_numpy(wide / 255.0), t0=1.0, **FAST)
    assert np.allclose(as_float.mask, r.mask) and not any("0-255" in n for n in as_float.notes)


def test_a_nan_source_array_is_refused(ut):
    a = np.zeros((16, 16, 3), np.float32)
    a[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        ut.set_source(a)


def _tuned_file(ut, tmp_path):
    ut.tune(world.render(world.random_scene(2), 128), stages=("base",), iters=2, progress=False)
    path = tmp_path / "t.safetensors"
    ut.save_tuned(path)
    return path


def test_tuned_files_load_all_or_nothing(ut, cascade, tmp_path):
    path = _tuned_file(ut, tmp_path)
    tuned = {n: p.detach().clone() for n, p in cascade.unets["base"].named_parameters()}
    ut.reset()
    pristine = {n: p.detach().clone() for n, p in cascade.unets["base"].named_parameters()}
    tensors = load_file(str(path))
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    broken = dict(tensors)
    key = next(k for k in broken if k != "source")
    broken[key] = broken[key].clone()
    broken[key].view(-1)[0] = float("nan")
    save_file(broken, str(tmp_path / "nan.safetensors"), metadata=meta)
    save_file({k: v for k, v in tensors.items() if k != "source"}, str(tmp_path / "nosrc.safetensors"), metadata=meta)
    (tmp_path / "cut.safetensors").write_bytes(path.read_bytes()[:1000])
    for name, match in [("nan", "NaN"), ("nosrc", "incomplete"), ("cut", "cannot be read")]:
        with pytest.raises(ValueError, match=match):
            ut.load_tuned(tmp_path / f"{name}.safetensors")
        assert not ut.tuned and all(torch.equal(p, pristine[n]) for n, p in cascade.unets["base"].named_parameters())
    ut.load_tuned(path)
    assert ut.tuned == ("base",) and all(torch.equal(p, tuned[n]) for n, p in cascade.unets["base"].named_parameters())


def test_a_tuned_file_only_loads_onto_the_weights_it_was_tuned_from(ut, cascade, tmp_path):
    path = _tuned_file(ut, tmp_path)
    ut.reset()
    other = copy.copy(cascade)
    other.unets = dict(cascade.unets, base=copy.deepcopy(cascade.unets["base"]))
    with torch.no_grad():
        for p in other.unets["base"].parameters():
            p.add_(1e-3)
    with pytest.raises(ValueError, match="other weights"):
        UniTune(other).load_tuned(path)


def test_save_tuned_writes_only_regular_files_and_whole(ut, tmp_path):
    path = _tuned_file(ut, tmp_path)
    with pytest.raises(ValueError, match="not a regular file"):
        ut.save_tuned("/dev/null")
    with pytest.raises(IsADirectoryError):
        ut.save_tuned(tmp_path)
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind
    assert path.stat().st_size > 0


def test_files_written_whole_get_ordinary_permissions(tmp_path):
    """write_atomic's temporary file is private (0600) while written; the finished file gets what open() would give."""
    import os

    from unitune_nb.files import write_atomic

    path = write_atomic(tmp_path / "a.bin", lambda tmp: tmp.write_bytes(b"x"))
    umask = os.umask(0)
    os.umask(umask)
    assert path.read_bytes() == b"x" and (path.stat().st_mode & 0o777) == 0o666 & ~umask
