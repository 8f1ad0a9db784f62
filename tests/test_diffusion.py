"""The maths of the diffusion core and the stage adapters, on small fixed inputs and a stub U-Net whose
outputs are known, checked against diffusers' own implementations where there is one."""
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler

from unitune_nb.adapters import PredEps, PredV, PredX0, ResidualAdapter, StageAdapter, prediction
from unitune_nb.diffusion import guide, q_sample, sample, signal_fraction, start_timesteps, train_scheduler
from unitune_nb.interpolation import blend
from unitune_nb.text import TextEmbedding

SCHEDULE = dict(train_scheduler().config, clip_sample=False)


def _text(value: float, b: int = 1) -> TextEmbedding:
    """A prompt whose pooled vector starts with ``value``: the stub U-Net answers with it."""
    pooled = torch.zeros(b, 4)
    pooled[:, 0] = value
    return TextEmbedding(torch.zeros(b, 2, 4), torch.ones(b, 2, dtype=torch.long), pooled)


class StubUNet(torch.nn.Module):
    """Predicts a constant image: the first pooled-text value (the base stage gets pooled text as class labels).
    Records its inputs."""

    def __init__(self, channels: int = 3, out_channels: int | None = None):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.config = SimpleNamespace(in_channels=channels, out_channels=out_channels or channels)
        self.inputs = []

    def forward(self, x, t, encoder_hidden_states=None, encoder_attention_mask=None, class_labels=None):
        self.inputs.append((x.clone(), t.clone()))
        v = class_labels[:, :1, None, None] + 0 * self.w
        out = v.expand(x.shape[0], self.config.out_channels, *x.shape[2:])
        return SimpleNamespace(sample=out)


@pytest.mark.parametrize("baseline_value", [0.0, 0.3])  # 0: the empty prompt (CFG); 0.3: prompt guidance
@pytest.mark.parametrize("w", [1.0, 3.0, 7.5])
def test_sampler_guides_with_base_plus_w_times_difference(baseline_value, w):
    unet = StubUNet()
    adapter = StageAdapter(SCHEDULE, "epsilon")
    step = next(sample(unet, adapter, _text(1.0), _text(baseline_value), guidance_scale=w, steps=1, size=4,
                       generator=torch.Generator().manual_seed(0)))
    eps = baseline_value + w * (1.0 - baseline_value) if w != 1.0 else 1.0  # w = 1: the prompt alone
    x_t = torch.randn((1, 3, 4, 4), generator=torch.Generator().manual_seed(0))
    t = torch.tensor([step.t])
    expected_x0 = adapter.to_x0(torch.full_like(x_t, eps), x_t, t)
    assert torch.allclose(step.x0, expected_x0, atol=1e-5)
    assert len(unet.inputs[0][0]) == (2 if w != 1.0 else 1)  # the baseline costs a second batch half only when used


def test_guide_is_the_cfg_line():
    out = torch.stack([torch.full((3,), 2.0), torch.full((3,), 5.0)])  # [baseline; prompt]
    assert torch.equal(guide(out, 0.0), out[0:1]) and torch.equal(guide(out, 1.0), out[1:2])
    assert torch.allclose(guide(out, 3.0), torch.full((1, 3), 2.0 + 3.0 * 3.0))


def test_q_sample_matches_diffusers_add_noise_and_the_formula():
    sched = DDPMScheduler.from_config(SCHEDULE)
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(4, 3, 8, 8, generator=g), torch.randn(4, 3, 8, 8, generator=g)
    t = torch.tensor([0, 250, 700, 999])
    ours = q_sample(sched.alphas_cumprod, x0, noise, t)
    assert torch.equal(ours, sched.add_noise(x0, noise, t))
    ab = sched.alphas_cumprod[t].view(-1, 1, 1, 1)
    assert torch.allclose(ours, ab.sqrt() * x0 + (1 - ab).sqrt() * noise, atol=1e-6)


def test_signal_fraction_follows_the_cosine_schedule():
    ac = DDPMScheduler.from_config(SCHEDULE).alphas_cumprod
    s = 0.008  # Nichol & Dhariwal's offset
    f = lambda u: math.cos((u + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    for t0 in (0.5, 0.8, 0.95):
        assert signal_fraction(ac, t0) == pytest.approx(math.sqrt(f(t0) / f(0.0)), abs=0.01)
    assert signal_fraction(ac, 0.8) < 0.8  # "noised to 80%" keeps far less than 20% of the source


def test_late_start_begins_at_t0_from_the_noised_source():
    unet = StubUNet()
    adapter = StageAdapter(SCHEDULE, "epsilon")
    x_init = torch.linspace(-1, 1, 48).view(1, 3, 4, 4)
    next(sample(unet, adapter, _text(0.0), None, steps=10, size=4, generator=torch.Generator().manual_seed(1),
                x_init=x_init, t0=0.6))
    x_in, t_in = unet.inputs[0]
    ts = start_timesteps(adapter.scheduler(), 10, 0.6)
    assert int(t_in[0]) == int(ts[0]) <= 600 and len(ts) < 10
    noise = torch.randn((1, 3, 4, 4), generator=torch.Generator().manual_seed(1))
    assert torch.allclose(x_in, q_sample(adapter.alphas_cumprod, x_init, noise, ts[:1]), atol=1e-6)


def test_interpolation_blend():
    result, source = torch.full((1, 3, 2, 2), 1.0), torch.full((1, 3, 2, 2), -1.0)
    mask = torch.tensor([[[[0.0, 1.0], [0.5, 0.0]]]])
    assert torch.equal(blend(result, source, mask, 0.0), result)  # strength 0: the raw sample
    out = blend(result, source, mask, 1.0)
    assert torch.allclose(out[0, :, 0, 0], torch.tensor(-1.0)) and torch.allclose(out[0, :, 0, 1], torch.tensor(1.0))
    assert torch.allclose(out[0, :, 1, 0], torch.tensor(0.0))  # half-edited: half way
    assert torch.allclose(blend(result, source, mask, 0.5)[0, :, 0, 0], torch.tensor(0.0))
    with pytest.raises(ValueError, match="strength"):
        blend(result, source, mask, 1.5)


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction", "sample"])
def test_adapter_target_and_predictions_round_trip(kind):
    adapter = StageAdapter(SCHEDULE, kind)
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(3, 3, 4, 4, generator=g), torch.randn(3, 3, 4, 4, generator=g)
    t = torch.tensor([10, 400, 900])
    xt = q_sample(adapter.alphas_cumprod, x0, noise, t)
    target = adapter.target(x0, noise, t)
    assert torch.allclose(adapter.to_x0(target, xt, t), x0, atol=1e-4)
    assert torch.allclose(adapter.to_eps(target, xt, t), noise, atol=1e-3)
    # diffusers reads the same output the same way: a DDIM step's x0 estimate is x0
    sched = adapter.scheduler()
    sched.set_timesteps(10)
    for i in range(3):
        step = sched.step(target[i:i + 1], int(t[i]), xt[i:i + 1])
        assert torch.allclose(step.pred_original_sample, x0[i:i + 1], atol=1e-3)  # SCHEDULE does not clip


def test_min_snr_weights():
    snr = torch.tensor([0.5, 5.0, 50.0])
    assert torch.allclose(PredEps().snr_weight(snr, 5.0), torch.tensor([1.0, 1.0, 0.1]))
    assert torch.allclose(PredV().snr_weight(snr, 5.0), torch.tensor([0.5 / 1.5, 5 / 6, 5 / 51]))
    assert torch.allclose(PredX0().snr_weight(snr, 5.0), torch.tensor([0.5, 5.0, 5.0]))
    assert StageAdapter(SCHEDULE, "v_prediction", snr_gamma=0).loss_weight(torch.tensor([1, 2])) is None
    with pytest.raises(ValueError, match="prediction_type"):
        prediction("x0")


def test_residual_adapter_and_learned_variance():
    r = ResidualAdapter(SCHEDULE, "sample", residual_scale=2.0)
    x, up = torch.rand(1, 3, 4, 4), torch.rand(1, 3, 4, 4)
    assert torch.allclose(r.from_diffused(r.to_diffused(x, up), up), x, atol=1e-6)
    assert torch.allclose(r.to_diffused(x, up), (x - up) * 2.0)
    assert r.scheduler().config.clip_sample_range == 4.0 and r.scheduler().config.prediction_type == "sample"
    assert StageAdapter(SCHEDULE, "v_prediction").scheduler().config.clip_sample_range == SCHEDULE["clip_sample_range"]
    with pytest.raises(ValueError, match="residual_scale"):
        ResidualAdapter(SCHEDULE, "sample", residual_scale=0.0)
    lv = StageAdapter(SCHEDULE, "epsilon", learned_variance=True)
    out = torch.cat([torch.zeros(1, 3, 2, 2), torch.ones(1, 3, 2, 2)], dim=1)
    assert torch.equal(lv.output(out), out[:, :3])
    # a learned-variance U-Net samples like one that predicts the noise half alone
    a = next(sample(StubUNet(3, 6), lv, _text(0.4), size=4, steps=2, generator=torch.Generator().manual_seed(0)))
    b = next(sample(StubUNet(3, 3), StageAdapter(SCHEDULE, "epsilon"), _text(0.4), size=4, steps=2,
                    generator=torch.Generator().manual_seed(0)))
    assert torch.equal(a.x, b.x)


def test_each_stage_samples_only_through_its_adapter(cascade):
    """The embedded base stage predicts v, its SR stages the clean residual: each adapter's scheduler says so."""
    assert cascade.adapter("base").scheduler().config.prediction_type == cascade.defaults["base"]["prediction_type"]
    for s in ("sr1", "sr2"):
        a = cascade.adapter(s)
        assert isinstance(a, ResidualAdapter) and a.scheduler().config.prediction_type == "sample"
    assert cascade.adapter("sr1") is cascade.adapter("sr1")  # built once while the stage's defaults stay


def test_sr1_at_level_0_beats_bicubic_only_with_its_own_adapter(cascade):
    """What notebook 01 shows: sr1 sampled with its adapter beats bicubic upsampling; with the base stage's
    (v-prediction) adapter the same U-Net gives noise, far below bicubic."""
    from PIL import Image

    from unitune_nb import world
    from unitune_nb.diffusion import run
    from unitune_nb.images import psnr, to_pil, to_tensor

    scenes = [world.random_scene(77 + i) for i in range(4)]
    low = to_tensor([world.render(s, 32) for s in scenes])
    hi = [world.render(s, 64) for s in scenes]
    text = cascade.encode([world.caption(s) for s in scenes])

    def score(adapter) -> float:
        x = run(sample(cascade.unets["sr1"], adapter, text, steps=4, size=64, low_res=low, noise_level=0,
                       generator=torch.Generator().manual_seed(0))).x
        return float(np.mean([psnr(a, b) for a, b in zip(to_pil(x.clamp(-1, 1)), hi)]))

    bicubic = float(np.mean([psnr(world.render(s, 32).resize((64, 64), Image.BICUBIC), h) for s, h in zip(scenes, hi)]))
    assert score(cascade.adapter("sr1")) > bicubic
    assert score(cascade.adapter("base")) < bicubic - 5
