import json
import math
import random

import pytest
import torch
from diffusers import UNet2DConditionModel

from unitune_nb.cascade import default_snr_gamma
from unitune_nb.train import TrainConfig, make_batch, train


def test_make_batch_shapes():
    import random

    x, low, caps = make_batch(TrainConfig(stage="sr1", batch_size=3), random.Random(0))
    assert x.shape == (3, 3, 64, 64) and low.shape == (3, 3, 32, 32) and len(caps) == 3
    assert x.min() >= -1 and x.max() <= 1


@pytest.mark.parametrize("stage", ["base", "sr1"])
def test_two_step_training_writes_a_loadable_stage_and_resumes(tmp_path, text_encoder, stage):
    run = tmp_path / "run"
    s = train(stage, run, steps=2, batch_size=2, progress=False, text_encoder=text_encoder, warmup=1)
    assert s["step"] == 2 and s["recent_loss"] > 0
    state = json.loads((run / "train_state" / stage / "state.json").read_text())
    assert state["step"] == 2 and state["config"]["batch_size"] == 2
    before = UNet2DConditionModel.from_pretrained(run, subfolder=stage).state_dict()
    s2 = train(stage, run, steps=1, resume=True, progress=False, text_encoder=text_encoder)
    assert s2["step"] == 3 and s2["config"]["batch_size"] == 2  # config comes back from the checkpoint
    after = UNet2DConditionModel.from_pretrained(run, subfolder=stage).state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the EMA weights moved on
    cfg = TrainConfig(stage=stage)
    meta = json.loads((run / "unitune_nb.json").read_text())  # sampling reads how the stage was trained
    assert meta["defaults"][stage]["prediction_type"] == cfg.prediction_type
    assert state["config"]["snr_gamma"] == default_snr_gamma(cfg.prediction_type)


def test_prediction_type_is_checked_and_sets_the_loss_weighting():
    assert TrainConfig(stage="sr1", prediction_type="sample").snr_gamma == 0
    assert TrainConfig(stage="base", prediction_type="v_prediction").snr_gamma == 5
    with pytest.raises(ValueError, match="prediction_type"):
        TrainConfig(stage="sr1", prediction_type="x0")


def test_train_needs_a_stop_condition(tmp_path):
    with pytest.raises(ValueError, match="--minutes or --steps"):
        train("base", tmp_path, progress=False)


def test_init_from_shipped_weights(tmp_path, text_encoder):
    from unitune_nb.cascade import default_weights

    shipped = UNet2DConditionModel.from_pretrained(default_weights(), subfolder="sr2").state_dict()
    train("sr2", tmp_path, steps=1, batch_size=1, lr=1e-9, progress=False, text_encoder=text_encoder,
          init_from=default_weights())
    got = UNet2DConditionModel.from_pretrained(tmp_path, subfolder="sr2").state_dict()
    assert all(torch.allclose(shipped[k], got[k], atol=1e-4) for k in shipped)
    # trained further the way the shipped stage was trained, and the run folder says so for sampling
    was = json.loads((default_weights() / "unitune_nb.json").read_text())["defaults"]["sr2"]
    now = json.loads((tmp_path / "unitune_nb.json").read_text())["defaults"]["sr2"]
    assert now["residual_scale"] == was["residual_scale"]
    assert now["prediction_type"] == was.get("prediction_type", "v_prediction")
    with pytest.raises(FileNotFoundError, match="no stage"):
        train("sr2", tmp_path / "x", steps=1, progress=False, text_encoder=text_encoder, init_from=tmp_path / "none")


def test_snr_gamma_zero_weighs_every_timestep_alike(text_encoder):
    """``snr_gamma=0`` (the CLI's ``--snr-gamma 0``) is the plain loss; min-SNR weighting changes it."""
    from unitune_nb.cascade import make_unet, stage_adapter
    from unitune_nb.diffusion import diffusion_loss

    unet = make_unet("sr1")
    cfg = TrainConfig(stage="sr1", batch_size=4)
    x0, low, caps = make_batch(cfg, random.Random(0))
    text = text_encoder(caps)

    def loss(gamma):
        with torch.no_grad():
            adapter = stage_adapter("sr1", {"prediction_type": "v_prediction"}, snr_gamma=gamma)
            return diffusion_loss(unet, adapter, x0, text, low, torch.Generator().manual_seed(1), crop=cfg.crop,
                                  rng=random.Random(2)).item()

    assert stage_adapter("sr1", {"prediction_type": "v_prediction"}, snr_gamma=0).loss_weight(torch.arange(5)) is None
    assert loss(None) == pytest.approx(loss(5.0))  # None: the default for v-prediction
    assert loss(5.0) != pytest.approx(loss(0), rel=1e-3)


def test_batches_are_the_same_with_worker_processes():
    """Each batch is drawn from its own seed, so scene-drawing workers (for GPU training) change nothing."""
    from unitune_nb.train import batches

    cfg = TrainConfig(stage="sr1", batch_size=2, synonyms=0.3)
    here = batches(cfg, start_step=5)
    there = batches(cfg, start_step=5, workers=2)
    try:
        for _ in range(3):
            (x, low, caps), (x2, low2, caps2) = next(here), next(there)
            assert torch.equal(x, x2) and torch.equal(low, low2) and caps == caps2
        assert not torch.equal(x, next(batches(cfg, start_step=6))[0])  # and each step draws other scenes
    finally:
        there.close()  # stops the workers


def test_lr_end_decays_the_learning_rate_along_the_run(tmp_path, text_encoder):
    s = train("base", tmp_path, steps=4, batch_size=1, lr=1e-3, lr_end=1e-5, warmup=1, progress=False,
              text_encoder=text_encoder, device="cpu", spike_factor=1e9)  # no update skipped as a loss spike
    # the rate of the last step: a quarter of the run left on the cosine from 1e-3 to 1e-5
    assert s["lr"] == pytest.approx(1e-5 + (1e-3 - 1e-5) * 0.5 * (1 + math.cos(0.75 * math.pi)))
    assert s["device"] == "cpu"
    flat = train("base", tmp_path / "flat", steps=2, batch_size=1, lr=1e-3, warmup=1, progress=False,
                 text_encoder=text_encoder)
    assert flat["lr"] == pytest.approx(1e-3)
