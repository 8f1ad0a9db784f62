"""Real-model backends on tiny random-weight IF and SD pipelines built here (nothing is downloaded)."""
import numpy as np
import pytest
import torch
from PIL import Image

from unitune_nb import world
from unitune_nb.backends import load_if, load_sd, make_tiny_if, make_tiny_sd
from unitune_nb.tune import UniTune

FAST = {"steps": 3}


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    d1, d2 = make_tiny_if(root / "if")
    return {"if1": d1, "if2": d2, "sd": make_tiny_sd(root / "sd")}


@pytest.fixture(scope="module")
def if_cascade(tiny_dirs):
    return load_if(tiny_dirs["if1"], tiny_dirs["if2"], device="cpu")


@pytest.fixture(scope="module")
def sd_cascade(tiny_dirs):
    return load_sd(tiny_dirs["sd"], device="cpu")


@pytest.fixture(scope="module")
def source():
    return world.render(world.random_scene(4), 128)


def _params(unet):
    return {n: p.detach().clone() for n, p in unet.named_parameters()}


def _arr(im):
    return np.asarray(im, dtype=np.float64)


def test_if_loads_as_a_two_stage_cascade(if_cascade):
    c = if_cascade
    assert c.stages == ("base", "sr1") and c.sizes == {"base": 16, "sr1": 32}
    assert c.unets["base"].config.out_channels == 6  # noise + learned variance
    assert c.unets["sr1"].config.class_embed_type == "timestep"  # else the noise level is silently ignored
    # the real model's own schedule (epsilon prediction, learned variance) in every stage's adapter
    assert all(c.stage_scheduler(s).config.prediction_type == "epsilon" for s in c.stages)
    assert all(c.adapter(s).learned_variance for s in c.stages)
    a = c.generate("a red house", seed=1, **FAST)
    b = c.generate("a red house", seed=1, **FAST)
    assert a.images["base"].size == (16, 16) and a.image.size == (32, 32)
    assert a.image.tobytes() == b.image.tobytes()


def test_if_stage_ii_uses_its_noise_level(if_cascade):
    from unitune_nb.diffusion import run, sample
    from unitune_nb.images import to_tensor

    c = if_cascade
    low = to_tensor(world.render(world.random_scene(1), 32).resize((16, 16)))
    text = c.encode("a red house")
    outs = [run(sample(c.unets["sr1"], c.adapter("sr1"), text, steps=2, size=32, generator=torch.Generator().manual_seed(0),
                       low_res=low, noise_level=lvl)).x for lvl in (0, 900)]
    assert not torch.allclose(outs[0], outs[1])


@pytest.mark.parametrize("which", ["if", "sd"])
def test_tune_lowers_loss_and_reset_is_exact(which, if_cascade, sd_cascade, source):
    c = if_cascade if which == "if" else sd_cascade
    ut = UniTune(c)
    ut.set_source(source)
    text = c.encode(["beikkpic"] * 4)
    x0 = ut.source_at(c.sizes["base"]).repeat(4, 1, 1, 1)

    def loss():
        with torch.no_grad():
            return float(np.mean([c.loss("base", x0, None, text, torch.Generator().manual_seed(i)).item() for i in range(6)]))

    pristine = _params(c.unets["base"])
    before = loss()
    report = ut.tune(None, stages=["base"], iters=20, lr=3e-3, progress=False)
    assert len(report.losses["base"]) == 20 and report.optimizer == "adafactor"  # real models: the paper's
    assert ut.default_iters == 128  # and the paper's iteration count
    assert loss() < before
    assert not all(torch.equal(p, pristine[n]) for n, p in c.unets["base"].named_parameters())
    ut.reset()
    assert all(torch.equal(p, pristine[n]) for n, p in c.unets["base"].named_parameters())


def test_if_tune_both_stages_and_every_edit_option(if_cascade, source):
    ut = UniTune(if_cascade)
    ut.tune(source, iters=3, progress=False)
    assert ut.tuned == ("base", "sr1")
    try:
        plain = ut.edit("beikkpic at night", t0=1.0, interpolation=0.0, seed=0, **FAST)
        assert plain.image.size == (32, 32) and set(plain.images) == {"base", "sr1"}
        late = ut.edit("beikkpic at night", t0=0.5, interpolation=0.0, seed=0, **FAST)
        assert _arr(late.image).tolist() != _arr(plain.image).tolist()
        cfg = ut.edit("beikkpic at night", t0=1.0, interpolation=0.0, seed=0, baseline_prompt="", **FAST)
        assert cfg.image.tobytes() == plain.image.tobytes()  # the empty baseline is CFG
        pg = ut.edit("beikkpic at night", t0=1.0, interpolation=0.0, seed=0, baseline_prompt="beikkpic", **FAST)
        assert pg.image.tobytes() != plain.image.tobytes()
        blended = ut.edit("beikkpic at night", t0=1.0, interpolation=1.0, seed=0, **FAST)
        src = _arr(blended.source)
        assert np.abs(_arr(blended.image) - src).mean() < np.abs(_arr(plain.image) - src).mean()
        mask = np.zeros((32, 32), bool)
        mask[:, :16] = True
        local = ut.edit("beikkpic at night", t0=1.0, mask=mask, seed=0, **FAST)
        assert np.array_equal(_arr(local.image)[:, 16:], src[:, 16:])  # outside the user mask: the source
    finally:
        ut.reset()


def test_sd_edits_in_latent_space(sd_cascade, source):
    c = sd_cascade
    assert c.stages == ("base",) and c.sizes == {"base": 32} and c.sample_sizes == {"base": 16}
    assert c.prediction_type("base") == c.schedule["prediction_type"]  # SD's own prediction type, whatever it is
    ut = UniTune(c)
    ut.tune(source, iters=2, progress=False)  # default stages: just the one SD has
    assert ut.tuned == ("base",)
    try:
        a = ut.edit("beikkpic at night", t0=1.0, interpolation=0.0, seed=0, return_intermediates=True, **FAST)
        b = ut.edit("beikkpic at night", t0=0.3, interpolation=0.0, seed=0, **FAST)  # img2img strength 0.3
        assert a.image.size == (32, 32) and a.intermediates["base"][0].x.shape[-1] == 32  # decoded to pixels
        src = _arr(a.source)
        assert np.abs(_arr(b.image) - src).mean() < np.abs(_arr(a.image) - src).mean()
    finally:
        ut.reset()


def test_free_text_encoder_keeps_encoded_prompts(tiny_dirs):
    c = load_if(tiny_dirs["if1"], None, device="cpu")
    assert c.stages == ("base",)
    before = c.encode(["beikkpic", "beikkpic at night", ""])
    c.text_encoder.free()
    after = c.encode(["beikkpic", "beikkpic at night", ""])
    assert torch.equal(before.states, after.states)
    with pytest.raises(RuntimeError, match="freed"):
        c.encode("a prompt never encoded")


def test_half_precision_stage_is_upcast_for_tuning(tiny_dirs):
    c = load_if(tiny_dirs["if1"], None, device="cpu", dtype=torch.float16)
    assert next(c.unets["base"].parameters()).dtype == torch.float16
    c.prepare_tuning("base")
    assert next(c.unets["base"].parameters()).dtype == torch.float32


def test_missing_model_says_how_to_get_access(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="no model folder"):
        load_if(tmp_path / "no-such-model", None, device="cpu")
    with pytest.raises(OSError, match="notebook_login"):  # a hub id, offline: how to get access on Colab
        load_sd("someone/not-a-real-model-xyz", device="cpu")


def test_rare_token_checks_use_the_backend_tokenizer(if_cascade):
    ut = UniTune(if_cascade)
    assert len(ut.check_rare_token("beikkpic")) > 1
    with pytest.warns(UserWarning, match="knows"):
        ut.check_rare_token("house")
    img = Image.new("RGB", (40, 30), (200, 10, 10))
    ut.set_source(img)
    assert ut.source.size == (32, 32)


def test_half_precision_stage_is_tuned_in_fp32_and_reset_to_its_precision(tiny_dirs, source, tmp_path):
    """On a GPU the loaders default to fp16: tuning up-casts the stage, reset() gives back the loaded precision
    (else the stage would keep twice its memory), and a saved tune loads back in fp32 as it was tuned."""
    c = load_if(tiny_dirs["if1"], None, device="cpu", dtype=torch.float16)
    pristine = _params(c.unets["base"])
    assert all(p.dtype == torch.float16 for p in pristine.values())
    ut = UniTune(c)
    ut.tune(source, iters=2, lr=3e-3, progress=False)
    tuned = _params(c.unets["base"])
    assert all(p.dtype == torch.float32 for p in tuned.values())
    ut.save_tuned(tmp_path / "t.safetensors")
    ut.reset()
    back = _params(c.unets["base"])
    assert all(back[n].dtype == torch.float16 and torch.equal(back[n], pristine[n]) for n in pristine)
    ut.load_tuned(tmp_path / "t.safetensors")
    assert all(torch.equal(p, tuned[n]) for n, p in c.unets["base"].named_parameters())  # exact: loaded in fp32
    ut.reset()
    assert all(p.dtype == torch.float16 for p in c.unets["base"].parameters())


def test_editor_starts_from_a_real_models_own_defaults(sd_cascade, tmp_path):
    from unitune_nb.widgets import Editor

    ut = UniTune(sd_cascade)
    e = Editor(ut, save_dir=tmp_path)
    from unitune_nb.settings import defaults_for

    d = defaults_for(sd_cascade).edit.as_dict()
    assert e.t0.value == pytest.approx(d["t0"]) and e.interp.value == pytest.approx(d["interpolation"])
    assert e.mask_from.value == ut.edit_defaults["mask_from"] == "source"  # what ut.edit uses when not told
    assert e.tune_iters.value == ut.default_iters == 128  # the paper's count for real models


@pytest.mark.parametrize("which", ["if", "sd"])
def test_lora_tuning_on_real_model_classes(which, if_cascade, sd_cascade, source):
    """method="lora" on diffusers' IF and SD U-Nets (tiny stand-ins): only attention projections change, the
    names stay, the weight scale interpolates, and reset is exact."""
    c = if_cascade if which == "if" else sd_cascade
    ut = UniTune(c)
    pristine = _params(c.unets["base"])
    ut.tune(source, stages=["base"], iters=3, lr=1e-2, progress=False, method="lora", lora_rank=2)
    now = _params(c.unets["base"])
    changed = [n for n in now if not torch.equal(now[n], pristine[n])]
    assert set(now) == set(pristine) and changed and all(".attn" in n or "attention" in n for n in changed)
    ut.set_weight_scale(0.5)  # the weight-space knob works on the real model classes too
    half = _params(c.unets["base"])
    assert all(torch.allclose(half[n], (pristine[n] + now[n]) / 2, atol=1e-6) for n in changed)
    ut.set_weight_scale(1.0)
    assert all(torch.equal(p, now[n]) for n, p in c.unets["base"].named_parameters())
    ut.reset()
    assert all(torch.equal(p, pristine[n]) for n, p in c.unets["base"].named_parameters())
