import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from unitune_nb import world
from unitune_nb.images import load_image, to_tensor
from unitune_nb.diffusion import diffusion_loss
from unitune_nb.tune import UniTune

FAST = dict(steps=3)


@pytest.fixture(scope="module")
def source():
    return world.render(world.random_scene(2), 128)


def _params(cascade, stage):
    return {n: p.detach().clone() for n, p in cascade.unets[stage].named_parameters()}


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def _interrupt_at_step(cascade, monkeypatch, n: int) -> None:
    """Make the ``n``-th tuning loss raise KeyboardInterrupt (Ctrl-C in the middle of a tune)."""
    real, calls = cascade.loss, {"n": 0}

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(cascade, "loss", flaky)


def test_tune_lowers_loss_on_the_image_and_reset_is_exact(ut, cascade, source):
    pristine = _params(cascade, "base")
    x0 = to_tensor(source.resize((32, 32), Image.BOX)).repeat(32, 1, 1, 1)  # 32 noise draws: a steady estimate
    text = cascade.encode(["beikkpic"] * 32)

    def loss():
        with torch.no_grad():
            return float(diffusion_loss(cascade.unets["base"], cascade.adapter("base"), x0, text,
                                        generator=torch.Generator().manual_seed(0)))

    before = loss()
    report = ut.tune(source, stages=("base",), iters=24, progress=False)  # the default lr, 1e-4
    assert report.optimizer == ut.defaults.tune.optimizer == "adamw"  # the embedded model's default
    assert report.tokens == ["bei", "##kk", "##pic"] and len(report.losses["base"]) == 24
    assert report.trainable_params["base"] > 0.9 * sum(p.numel() for p in cascade.unets["base"].parameters())
    after = loss()
    assert after < before, (before, after)
    assert not _same(pristine, _params(cascade, "base"))
    ut.reset()
    assert _same(pristine, _params(cascade, "base"))
    assert ut.tuned == ()


def test_tune_iterations_default_to_the_models_own(ut, cascade, source, monkeypatch):
    import dataclasses

    from unitune_nb import settings

    assert ut.default_iters == settings.MODEL_DEFAULTS["embedded"].tune.iters == 64  # from the edit benchmark
    other = settings.MODEL_DEFAULTS["embedded"]
    other = dataclasses.replace(other, tune=dataclasses.replace(other.tune, iters=3))
    monkeypatch.setitem(settings.MODEL_DEFAULTS, "embedded", other)  # a model with another default
    report = ut.tune(source, stages=("base",), progress=False)
    assert report.iters == 3 and len(report.losses["base"]) == 3
    assert sum(1 for _ in ut.tune_steps(source, stages=("base",))) == 3
    assert len(ut.tune(source, stages=("base",), iters=2, progress=False).losses["base"]) == 2  # given: used


def test_tune_never_modifies_the_callers_image(ut):
    arr = np.asarray(world.render(world.random_scene(9), 64)).copy()
    keep = arr.copy()
    ut.tune(arr, stages=("base",), iters=1, progress=False)
    assert np.array_equal(arr, keep)
    assert ut.source.size == (128, 128)


def test_prompt_guidance_with_empty_baseline_is_cfg(ut, source):
    ut.set_source(source)
    with pytest.warns(UserWarning):
        a = ut.edit("a red car at night", stages=["base"], guidance_scale=3.0, **FAST)
        b = ut.edit("a red car at night", stages=["base"], guidance_scale=3.0, baseline_prompt="", **FAST)
        c = ut.edit("a red car at night", stages=["base"], guidance_scale=3.0, baseline_prompt="a house", **FAST)
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    assert not np.array_equal(np.asarray(a.image), np.asarray(c.image))
    # guidance towards the baseline itself does nothing: any scale equals scale 1
    with pytest.warns(UserWarning):
        d = ut.edit("at night", stages=["base"], guidance_scale=5.0, baseline_prompt="at night", **FAST)
        e = ut.edit("at night", stages=["base"], guidance_scale=1.0, **FAST)
    assert np.abs(np.asarray(d.raw, float) - np.asarray(e.raw, float)).max() <= 1  # the samples, before interpolation


def test_late_start(ut, source):
    from unitune_nb.images import psnr

    ut.set_source(source)
    src32 = source.resize((32, 32), Image.BOX)
    with pytest.warns(UserWarning):
        full = ut.edit("a drawing", stages=["base"], t0=1.0, steps=10)
        again = ut.edit("a drawing", stages=["base"], t0=1.0, steps=10)
        late = ut.edit("a drawing", stages=["base"], t0=0.1, steps=10)
    assert np.array_equal(np.asarray(full.image), np.asarray(again.image))  # deterministic
    assert psnr(late.image, src32) > 18
    assert psnr(late.image, src32) > psnr(full.image, src32) + 5


def test_interpolation_and_user_mask(ut, source):
    ut.set_source(source)
    with pytest.warns(UserWarning):
        r = ut.edit("at night", stages=["base"], interpolation=1.0, **FAST)
    src = np.asarray(r.source)
    out = np.asarray(r.image)
    untouched = r.mask == 0
    assert np.array_equal(out[untouched], src[untouched])
    assert r.mask.shape == (32, 32) and 0 <= r.mask.min() and r.mask.max() <= 1
    zero = np.zeros((128, 128), np.uint8)
    with pytest.warns(UserWarning):
        z = ut.edit("at night", mask=Image.fromarray(zero), **FAST)
    assert np.array_equal(np.asarray(z.image), np.asarray(z.source))  # nothing may change
    half = zero.copy()
    half[:, 64:] = 255
    with pytest.warns(UserWarning):
        h = ut.edit("at night", mask=half, **FAST)
    assert np.array_equal(np.asarray(h.image)[:, :64], np.asarray(h.source)[:, :64])
    assert not np.array_equal(np.asarray(h.image)[:, 64:], np.asarray(h.source)[:, 64:])


def test_mask_from_the_reconstruction_keeps_what_the_edit_words_did_not_ask_for(ut, source):
    # 4 Adafactor steps: a lightly tuned model that still follows "at night" in 4 sampling steps (4 AdamW
    # steps move every weight by a full lr each and already bind the scene)
    ut.tune(source, stages=("base",), iters=4, optimizer="adafactor", progress=False)
    fast = dict(stages=["base"], steps=4, t0=0.9, interpolation=1.0, guidance_scale=7.0)
    # the rare token alone asks for no change: the edit equals its reconstruction, the mask is empty, the
    # output is the source itself; compared with the source instead, the model's reconstruction error leaks in
    same = ut.edit("beikkpic", mask_from="reconstruction", **fast)
    assert same.mask.max() == 0 and same.reference is not None
    assert np.array_equal(np.asarray(same.image), np.asarray(same.source))
    leaky = ut.edit("beikkpic", mask_from="source", **fast)
    assert leaky.reference is None and leaky.settings["mask_from"] == "source"
    assert not np.array_equal(np.asarray(leaky.image), np.asarray(leaky.source))
    # an edit with other words changes something, and the reference is reused while nothing changed
    night = ut.edit("beikkpic at night", **fast)
    assert night.settings["mask_from"] == "reconstruction" and night.mask.max() > 0
    assert np.array_equal(np.asarray(night.reference), np.asarray(same.reference))
    assert night.seconds["reference"] < same.seconds["reference"]
    # new weights, new reference
    ut.tune(source, stages=("base",), iters=4, lr=1e-3, seed=1, optimizer="adafactor", progress=False)
    again = ut.edit("beikkpic at night", **fast)
    assert not np.array_equal(np.asarray(again.reference), np.asarray(same.reference))
    # the mask of a full-resolution edit is the first stage's, upsampled
    full = ut.edit("beikkpic at night", steps=2, t0=0.6)
    assert full.mask.shape == (128, 128) and full.reference.size == (32, 32)
    with pytest.raises(ValueError, match="mask_from"):
        ut.edit("beikkpic", mask_from="edges", **fast)


def test_save_and_load_tuned_round_trip(ut, cascade, source, tmp_path):
    ut.tune(source, stages=("base",), iters=2, trainable="attention", progress=False)
    a = ut.edit("beikkpic at night", stages=["base"], **FAST)
    size = ut.save_tuned(tmp_path / "t.safetensors")
    full = sum(p.numel() * 4 for p in cascade.unets["base"].parameters())
    assert size < 0.5 * full  # only what changed
    ut.reset()
    other = UniTune(cascade)
    other.load_tuned(tmp_path / "t.safetensors")
    assert other.rare_token == "beikkpic" and other.tuned == ("base",)
    b = other.edit("beikkpic at night", stages=["base"], **FAST)
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    other.reset()
    with pytest.raises(ValueError, match="not a unitune_nb tuned file"):
        from safetensors.torch import save_file

        save_file({"x": torch.zeros(1)}, str(tmp_path / "bad.safetensors"))
        other.load_tuned(tmp_path / "bad.safetensors")


def test_interrupted_tune_leaves_pristine_weights(ut, cascade, source, monkeypatch):
    pristine = _params(cascade, "base")
    _interrupt_at_step(cascade, monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        ut.tune(source, stages=("base",), iters=10, progress=False)
    assert _same(pristine, _params(cascade, "base")) and ut.tuned == ()
    monkeypatch.undo()
    r = ut.edit("beikkpic", stages=["base"], **FAST)  # still usable
    assert r.image.size == (32, 32)


def test_exploding_tune_stops_with_message(ut, cascade, source):
    pristine = _params(cascade, "base")
    with pytest.raises(FloatingPointError, match="Lower lr"):
        ut.tune(source, stages=("base",), iters=30, lr=1e12, optimizer="adamw", progress=False)
    assert _same(pristine, _params(cascade, "base"))


def test_rare_token_checks(ut, source):
    with pytest.warns(UserWarning, match="knows"):
        ut.tune(source, rare_token="house", stages=("base",), iters=1, progress=False)
    with pytest.raises(ValueError, match="rare_token"):
        ut.tune(source, rare_token="  ", iters=1, progress=False)
    ut.tune(source, stages=("base",), iters=1, progress=False)
    with pytest.warns(UserWarning, match="does not contain the rare token"):
        ut.edit("at night", stages=["base"], **FAST)
    r = ut.edit("beikkpic la nuit, très sombre ☃", stages=["base"], **FAST)  # non-ASCII is fine
    assert r.image.size == (32, 32)
    with pytest.warns(UserWarning, match="only the first"):
        ut.edit("beikkpic " + "at night " * 30, stages=["base"], **FAST)


@pytest.mark.parametrize("kw,match", [(dict(t0=0.0), "t0"), (dict(t0=1.5), "t0"), (dict(guidance_scale=-1), "guidance_scale"),
                                      (dict(interpolation=2.0), "interpolation"), (dict(mask=np.full((50, 50), 2.0)), "mask")])
def test_bad_edit_settings(ut, source, kw, match):
    ut.set_source(source)
    with pytest.raises(ValueError, match=match):
        ut.edit("beikkpic at night", **kw)


def test_bad_tune_settings(ut, source):
    with pytest.raises(ValueError, match="unknown stage"):
        ut.tune(source, stages=("base", "sr5"), iters=1, progress=False)
    with pytest.raises(ValueError, match="iters"):
        ut.tune(source, iters=0, progress=False)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        ut.tune(source, iters=1, optimizer="sgd", progress=False)
    with pytest.raises(ValueError, match="no source image"):
        UniTune(ut.cascade).edit("beikkpic")


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P", "L", "CMYK", "I;16", "1"])
def test_image_modes_are_converted(mode):
    im = world.render(world.random_scene(1), 128)
    src = im.convert(mode) if mode != "I;16" else Image.fromarray((np.asarray(im.convert("L"), np.uint16) * 257))
    out, notes = load_image(src, 128)
    assert out.mode == "RGB" and out.size == (128, 128) and notes


def test_image_sizes_and_types(tmp_path):
    wide = Image.new("RGB", (300, 100), "red")
    out, notes = load_image(wide, 128)
    assert out.size == (128, 128) and any("centre-cropped" in n for n in notes)
    tiny, _ = load_image(Image.new("RGB", (1, 1), "blue"), 128)
    assert tiny.size == (128, 128) and tiny.getpixel((5, 5)) == (0, 0, 255)
    huge, _ = load_image(Image.new("RGB", (4000, 3000), "green"), 128)
    assert huge.size == (128, 128)
    t = torch.rand(3, 64, 64)
    assert load_image(t, 128)[0].size == (128, 128)
    assert load_image(np.zeros((64, 64, 3), np.uint8), 128)[0].size == (128, 128)
    with pytest.raises(FileNotFoundError):
        load_image(tmp_path / "missing.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(ValueError, match="cannot read"):
        load_image(tmp_path / "broken.png")
    with pytest.raises(ValueError, match="shape"):
        load_image(np.zeros((4, 5, 6, 7)))
    with pytest.raises(TypeError):
        load_image(42)


def test_cli_edit_end_to_end(tmp_path, source):
    source.save(tmp_path / "src.png")
    r = subprocess.run([sys.executable, "-m", "unitune_nb.cli", "edit", str(tmp_path / "src.png"), "at night",
                        "a drawing", "--iters", "2", "--out", str(tmp_path / "out"), "--t0", "0.8",
                        "--save-tuned", str(tmp_path / "t.safetensors")], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "out"
    assert (out / "grid.png").is_file() and (out / "edit_0_at_night.png").is_file() and (out / "edit_1_a_drawing.png").is_file()
    assert Image.open(out / "edit_0_at_night.png").size == (128, 128)
    assert (tmp_path / "t.safetensors").is_file()
    assert [e["mask_from"] for e in json.loads((out / "settings.json").read_text())] == ["reconstruction"] * 2
    src = subprocess.run([sys.executable, "-m", "unitune_nb.cli", "edit", str(tmp_path / "src.png"), "at night",
                          "--load-tuned", str(tmp_path / "t.safetensors"), "--out", str(tmp_path / "o1"),
                          "--mask-from", "source"], capture_output=True, text=True, timeout=300)
    assert src.returncode == 0, src.stderr
    assert json.loads((tmp_path / "o1" / "settings.json").read_text())[0]["mask_from"] == "source"
    bad = subprocess.run([sys.executable, "-m", "unitune_nb.cli", "edit", str(tmp_path / "src.png"), "x", "--t0", "3",
                          "--load-tuned", str(tmp_path / "t.safetensors"), "--out", str(tmp_path / "o2")],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "t0 must be in (0, 1]" in bad.stderr and "Traceback" not in bad.stderr


def test_tune_warns_when_the_picture_is_outside_the_world(ut, source):
    """A photo (matplotlib's sample portrait) keeps the base loss far above a world scene's: the report says so."""
    from matplotlib import cbook

    report = ut.tune(source, stages=("base",), iters=16, progress=False)
    assert not any("stayed high" in n for n in report.notes)
    photo = Image.open(cbook.get_sample_data("grace_hopper.jpg"))
    with pytest.warns(UserWarning, match="stayed high"):
        report = ut.tune(photo, stages=("base",), iters=16, progress=False)
    assert any("notebook 07" in n for n in report.notes)
    ut.reset()


@pytest.mark.parametrize("method", ["attention", "lora"])
def test_tuning_methods_change_only_their_weights_and_reset_exactly(ut, cascade, source, method):
    """method="attention" trains the attention layers only; "lora" a low-rank delta on the attention projections
    (peft), folded into the weights when the loop ends: the U-Net keeps its parameter names, reset is exact."""
    from unitune_nb.tune import LORA_TARGETS

    pristine = _params(cascade, "base")
    rep = ut.tune(source, stages=("base",), iters=12, lr=1e-3, optimizer="adamw", progress=False, method=method)
    now = _params(cascade, "base")
    assert set(now) == set(pristine)  # no peft layer left behind
    changed = {n for n in now if not torch.equal(now[n], pristine[n])}
    assert changed and all(".attentions." in n for n in changed)
    if method == "lora":
        assert all(any(f".{t}." in n for t in LORA_TARGETS) and n.endswith(".weight") for n in changed)
        assert rep.trainable_params["base"] < 0.05 * sum(p.numel() for p in pristine.values())  # rank 16
    assert ut.edit("beikkpic", stages=["base"], **FAST).image.size == (32, 32)
    ut.reset()
    assert _same(pristine, _params(cascade, "base"))


def test_an_interrupted_lora_tune_drops_the_adapter(ut, cascade, source, monkeypatch):
    pristine = _params(cascade, "base")
    _interrupt_at_step(cascade, monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        ut.tune(source, stages=("base",), iters=10, progress=False, method="lora")
    assert _same(pristine, _params(cascade, "base")) and ut.tuned == ()
    assert not getattr(cascade.unets["base"], "peft_config", None)


def test_bad_tuning_method(ut, source):
    with pytest.raises(ValueError, match="method must be one of"):
        ut.tune(source, method="dora", progress=False)
    with pytest.raises(ValueError, match="lora_rank"):
        ut.tune(source, method="lora", lora_rank=0, progress=False)


def test_a_lora_tune_saves_only_its_factors_and_loads_back_exactly(ut, cascade, source, tmp_path):
    """save_tuned after a LoRA tune writes the low-rank factors (a small file); load_tuned puts them onto the pristine
    weights of another UniTune and folds them in: the same weights as after the tune.  Factors that do not fit are
    refused with nothing changed."""
    from safetensors.torch import load_file, save_file

    from unitune_nb.tune import UniTune

    ut.tune(source, stages=("base",), iters=4, lr=1e-3, optimizer="adamw", progress=False, method="lora", lora_rank=4)
    tuned = _params(cascade, "base")
    path = tmp_path / "lora.safetensors"
    size = ut.save_tuned(path)
    keys = [k for k in load_file(str(path)) if k != "source"]
    assert keys and all(k.startswith("lora/base/") and ".lora_" in k for k in keys) and size < 2 * 2**20
    ut.reset()
    pristine = _params(cascade, "base")
    other = UniTune(cascade)
    other.load_tuned(path)
    assert other.tuned == ("base",) and _same(tuned, _params(cascade, "base"))
    other.reset()
    assert _same(pristine, _params(cascade, "base"))
    bad = load_file(str(path))
    k = keys[0]
    bad[k] = torch.zeros(bad[k].shape[0] + 1, *bad[k].shape[1:])  # a factor of another rank
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    save_file(bad, str(tmp_path / "bad.safetensors"), metadata=meta)
    with pytest.raises(ValueError, match="do not fit"):
        other.load_tuned(tmp_path / "bad.safetensors")
    assert other.tuned == () and _same(pristine, _params(cascade, "base"))
    assert not getattr(cascade.unets["base"], "peft_config", None)


@pytest.mark.parametrize("method", ["full", "lora"])
def test_weight_scale_interpolates_between_pristine_and_tuned_weights(ut, cascade, source, tmp_path, method):
    """weight_scale s puts every tuned weight at w0 + s * (w1 - w0): 0 samples the pristine model, 1 the tuned one,
    and nothing is lost going back and forth; save_tuned saves the tuned weights whatever the scale."""
    pristine = _params(cascade, "base")
    ut.tune(source, stages=("base",), iters=6, lr=1e-3, optimizer="adamw", progress=False, method=method)
    tuned = _params(cascade, "base")
    half = ut.edit("beikkpic", stages=["base"], weight_scale=0.5, **FAST)
    assert half.settings["weight_scale"] == 0.5 and ut.weight_scale == 0.5
    now = _params(cascade, "base")
    changed = [n for n in tuned if not torch.equal(tuned[n], pristine[n])]
    assert changed
    for n in changed:
        assert torch.allclose(now[n], pristine[n] + 0.5 * (tuned[n] - pristine[n]), atol=1e-6)
    # scale 0 samples what the untuned model samples (same seed and settings)
    zero = ut.edit("beikkpic", stages=["base"], weight_scale=0.0, **FAST).raw
    ut.save_tuned(tmp_path / "t.safetensors")  # while at scale 0
    ut.set_weight_scale(1.0)
    assert _same(tuned, _params(cascade, "base"))
    full = ut.edit("beikkpic", stages=["base"], **FAST).raw  # the default scale is 1
    assert ut.weight_scale == 1.0 and _same(tuned, _params(cascade, "base"))
    ut.reset()
    other = UniTune(cascade)
    other.load_tuned(tmp_path / "t.safetensors")
    assert _same(tuned, _params(cascade, "base"))  # the file holds the tuned weights, not the scaled ones
    other.reset()
    plain = UniTune(cascade)
    plain.set_source(source)
    with pytest.warns(UserWarning, match="not tuned"):
        untuned = plain.edit("beikkpic", stages=["base"], **FAST).raw
    assert np.array_equal(np.asarray(zero), np.asarray(untuned))
    assert not np.array_equal(np.asarray(full), np.asarray(untuned))
    ut.load_tuned(tmp_path / "t.safetensors")
    ut.reset()
    assert ut.weight_scale == 1.0 and _same(pristine, _params(cascade, "base"))


def test_weight_scale_during_a_tune_and_bad_scales(ut, cascade, source):
    """An edit between tuning steps may scale the weights; the next step tunes on from the tuned weights.  A LoRA tune
    that is still running scales peft's adapter.  Scales outside [0, 1] are refused."""
    pristine = _params(cascade, "base")
    steps = ut.tune_steps(source, stages=("base",), iters=4, lr=1e-3, optimizer="adamw")
    next(steps)
    after_one = _params(cascade, "base")
    ut.edit("beikkpic", stages=["base"], weight_scale=0.25, **FAST)
    ut.set_weight_scale(1.0)
    assert _same(after_one, _params(cascade, "base"))
    ut.set_weight_scale(0.25)
    assert list(steps) and ut.weight_scale == 1.0  # tuning went on from the tuned weights
    ut.set_weight_scale(0.0)
    ut.set_weight_scale(1.0)  # the copy kept for scaling is of the finished tune, not of step one
    assert not _same(after_one, _params(cascade, "base"))
    ut.reset()
    with pytest.warns(UserWarning, match="not tuned"):
        plain = ut.edit("beikkpic", stages=["base"], **FAST).raw
    lora = ut.tune_steps(source, stages=("base",), iters=3, lr=1e-2, optimizer="adamw", method="lora")
    next(lora)
    next(lora)
    # a LoRA tune not finished yet: the scale goes to peft's adapter weight; 0 is the pristine model
    assert np.array_equal(np.asarray(ut.edit("beikkpic", stages=["base"], weight_scale=0.0, **FAST).raw),
                          np.asarray(plain))
    assert list(lora) and ut.weight_scale == 1.0  # the last step and the fold ran at scale 1
    lora_tuned = _params(cascade, "base")
    ut.set_weight_scale(0.0)
    assert _same(pristine, _params(cascade, "base"))
    ut.set_weight_scale(1.0)
    assert _same(lora_tuned, _params(cascade, "base"))
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="weight_scale"):
            ut.edit("beikkpic", stages=["base"], weight_scale=bad, **FAST)
    ut.reset()


def test_tuning_targets_narrow_attention_and_lora_tuning(ut, cascade, source, tmp_path):
    """targets=("attn2",) tunes cross-attention only; LoRA targets go to peft and are saved with the factors, so
    load_tuned rebuilds the same delta.  Targets that match nothing are refused with what to write."""
    pristine = _params(cascade, "base")
    ut.tune(source, stages=("base",), iters=3, lr=1e-3, optimizer="adamw", progress=False, method="attention",
            targets="attn2")
    changed = {n for n, p in _params(cascade, "base").items() if not torch.equal(p, pristine[n])}
    assert changed and all(".attn2." in n for n in changed)
    ut.tune(source, stages=("base",), iters=3, optimizer="adamw", progress=False, method="lora", lora_rank=2,
            targets=["attn2.to_k", "attn2.to_v"])
    tuned = _params(cascade, "base")
    changed = {n for n in tuned if not torch.equal(tuned[n], pristine[n])}
    assert changed and all(n.endswith(("attn2.to_k.weight", "attn2.to_v.weight")) for n in changed)
    ut.save_tuned(tmp_path / "kv.safetensors")
    ut.reset()
    ut.load_tuned(tmp_path / "kv.safetensors")
    assert _same(tuned, _params(cascade, "base"))
    ut.reset()
    with pytest.raises(ValueError, match="do not fit stage 'base'"):
        ut.tune(source, stages=("base",), iters=1, progress=False, method="lora", targets="nothing_like_this")
    with pytest.raises(ValueError, match="selects no parameter"):
        ut.tune(source, stages=("base",), iters=1, progress=False, method="attention", targets="nothing_like_this")
    with pytest.raises(ValueError, match="targets must be"):
        ut.tune(source, stages=("base",), iters=1, progress=False, method="attention", targets=[""])
    assert _same(pristine, _params(cascade, "base")) and not getattr(cascade.unets["base"], "peft_config", None)
    ut.tune(source, stages=("base",), iters=1, progress=False, method="lora")  # a refused tune leaves no trace
    ut.reset()


def test_a_lora_tune_is_reproducible(ut, cascade, source):
    """peft draws LoRA's A at random: the tune's seed fixes it, so the same call gives the same weights."""
    runs = []
    for _ in range(2):
        ut.tune(source, stages=("base",), iters=2, progress=False, method="lora", lora_rank=2)
        runs.append(_params(cascade, "base"))
        torch.randn(8)  # whatever else used the global generator in between
    assert _same(runs[0], runs[1])
    ut.reset()
