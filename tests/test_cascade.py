import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from diffusers import UNet2DConditionModel

from unitune_nb.cascade import SIZE, STAGES, Cascade, default_weights


def test_shipped_weights_load_through_diffusers_and_fit_budget():
    root = default_weights()
    total = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
    assert total <= 60e6, f"shipped model is {total / 1e6:.1f} MB"
    for s in STAGES:
        u = UNet2DConditionModel.from_pretrained(root, subfolder=s)
        assert u.config.sample_size == SIZE[s]
        assert u.config.in_channels == (3 if s == "base" else 6)
        assert all(torch.isfinite(p).all() for p in u.parameters())


def test_generate_shapes_and_determinism(cascade):
    a = cascade.generate("a red house on snow at night", seed=3, steps=4)
    assert list(a.images) == list(STAGES)
    assert [im.size for im in a.images.values()] == [(32, 32), (64, 64), (128, 128)]
    b = cascade.generate("a red house on snow at night", seed=3, steps=4)
    c = cascade.generate("a red house on snow at night", seed=4, steps=4)
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    assert not np.array_equal(np.asarray(a.image), np.asarray(c.image))
    assert a.strip(64).size[1] == 64


def test_generate_intermediates_and_stage_subset(cascade):
    out = cascade.generate("a blue car", seed=0, stages=["base"], steps=5, return_intermediates=True)
    assert list(out.images) == ["base"]
    traj = out.intermediates["base"]
    assert len(traj) == 5 and traj[0].x.shape == (1, 3, 32, 32) and traj[-1].x0.shape == (1, 3, 32, 32)
    # the trajectory goes from noise towards the final image
    final = traj[-1].x
    assert (traj[0].x - final).abs().mean() > (traj[-2].x - final).abs().mean()
    many = cascade.generate("a blue car", seed=0, stages=["base"], steps=3, num_images=2)
    assert len(many) == 2
    # image i of a batch is the image of seed + i alone
    single = cascade.generate("a blue car", seed=1, stages=["base"], steps=3)
    assert np.array_equal(np.asarray(many[1].image), np.asarray(single.image))


def test_bad_generate_input(cascade):
    with pytest.raises(ValueError, match="empty"):
        cascade.generate("   ")
    with pytest.warns(UserWarning, match="only the first"):
        out = cascade.generate("a red house " * 200, stages=["base"], steps=2)
    assert out.image.size == (32, 32)
    with pytest.raises(ValueError, match="unknown stage 'sr3'"):
        cascade.generate("a house", stages=["base", "sr3"])
    with pytest.raises(ValueError, match="in order"):
        cascade.generate("a house", stages=["sr1"])
    with pytest.raises(TypeError):
        cascade.generate(None)


def test_bad_weight_folders(tmp_path, text_encoder):
    with pytest.raises(FileNotFoundError, match="not a unitune_nb cascade folder"):
        Cascade.from_pretrained(tmp_path, text_encoder=text_encoder)
    shutil.copytree(default_weights(), tmp_path / "w")
    meta = json.loads((tmp_path / "w" / "unitune_nb.json").read_text())
    meta["format_version"] = 999
    (tmp_path / "w" / "unitune_nb.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="version 999"):
        Cascade.from_pretrained(tmp_path / "w", text_encoder=text_encoder)
    meta["format_version"] = 1
    (tmp_path / "w" / "unitune_nb.json").write_text(json.dumps(meta))
    (tmp_path / "w" / "sr2" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="weights are incomplete"):
        Cascade.from_pretrained(tmp_path / "w", text_encoder=text_encoder)
    shutil.rmtree(tmp_path / "w" / "sr2")
    c = Cascade.from_pretrained(tmp_path / "w", text_encoder=text_encoder)
    assert c.stages == ("base", "sr1")
    with pytest.raises(FileNotFoundError, match="stage 'sr2' has no weights"):
        Cascade.from_pretrained(tmp_path / "w", stages=["base", "sr1", "sr2"], text_encoder=text_encoder)


def test_save_pretrained_round_trip(tmp_path, cascade):
    cascade.save_pretrained(tmp_path / "c")
    again = Cascade.from_pretrained(tmp_path / "c", text_encoder=cascade.text_encoder)
    for s in STAGES:
        a, b = cascade.unets[s].state_dict(), again.unets[s].state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)  # shipped weights are fp16-exact already


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "unitune_nb.cli", *args], capture_output=True, text=True, timeout=300)


def test_cli_generate_and_errors(tmp_path):
    r = _cli("generate", "a yellow tree on sand at sunset", "--out", str(tmp_path / "x.png"), "--stages-strip")
    assert r.returncode == 0, r.stderr
    from PIL import Image

    assert Image.open(tmp_path / "x.png").size == (128, 128)
    assert (tmp_path / "x_stages.png").is_file()
    r = _cli("generate", "", "--out", str(tmp_path / "y.png"))
    assert r.returncode == 2 and "prompt is empty" in r.stderr and "Traceback" not in r.stderr
    r = _cli("train", "--stage", "sr9", "--out", str(tmp_path / "run"), "--steps", "1")
    assert r.returncode == 2 and "unknown stage 'sr9'" in r.stderr and "Traceback" not in r.stderr
    r = _cli("generate", "a car", "--weights", str(tmp_path / "nothing"))
    assert r.returncode == 2 and "not a unitune_nb cascade folder" in r.stderr


def test_each_stage_samples_with_its_own_prediction_type(cascade, tmp_path):
    """An SR stage that predicts the clean residual samples with a ``"sample"`` scheduler, the base stage
    with the cascade's (v); sampling follows the stage's setting."""
    import copy

    assert cascade.stage_scheduler("base").config.prediction_type == cascade.defaults["base"]["prediction_type"]
    assert cascade.stage_scheduler("sr1").config.prediction_type == cascade.defaults["sr1"]["prediction_type"]
    c = copy.copy(cascade)
    c.defaults = {s: dict(d) for s, d in cascade.defaults.items()}
    other = "v_prediction" if cascade.defaults["sr1"]["prediction_type"] == "sample" else "sample"
    c.defaults["sr1"]["prediction_type"] = other
    assert c.stage_scheduler("sr1").config.prediction_type == other
    a = c.generate("a red car on sand at night", seed=3, stages=["base", "sr1"]).images
    b = cascade.generate("a red car on sand at night", seed=3, stages=["base", "sr1"]).images
    assert a["base"].tobytes() == b["base"].tobytes() and a["sr1"].tobytes() != b["sr1"].tobytes()
    # folders written before prediction types were recorded predicted v in every stage
    cascade.save_pretrained(tmp_path / "old")
    meta = json.loads((tmp_path / "old" / "unitune_nb.json").read_text())
    for d in meta["defaults"].values():
        d.pop("prediction_type", None)
    (tmp_path / "old" / "unitune_nb.json").write_text(json.dumps(meta))
    old = Cascade.from_pretrained(tmp_path / "old", text_encoder=cascade.text_encoder)
    assert all(old.defaults[s]["prediction_type"] == "v_prediction" for s in old.stages)
