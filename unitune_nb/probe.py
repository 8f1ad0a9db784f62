"""A small probe classifier that reads the world's attributes back from an image.

Evaluation needs to know whether a generated or edited image shows "a red house at night".  The
probe is a tiny CNN trained on true renders (with blur, noise and colour jitter so it tolerates
model samples) and validated on held-out renders (``unitune-nb``'s eval prints that accuracy
next to the model's).  It reads at 32 px: larger images are box-filtered down first.

Heads: time, ground, style, object count (single-label) and, as multi-label presence, object
kinds, colours and (colour, kind) pairs, so scenes with two objects are read without an order.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file

from . import world
from .images import to_tensor

PAIRS = [(c, k) for c in world.COLOURS for k in world.KINDS]
HEADS = {"time": len(world.TIMES), "ground": len(world.GROUNDS), "style": len(world.STYLES), "count": 3,
         "kinds": len(world.KINDS), "colours": len(world.COLOURS), "pairs": len(PAIRS)}
MULTI = ("kinds", "colours", "pairs")


def probe_path() -> Path:
    return Path(__file__).parent / "weights" / "probe" / "probe.safetensors"


class Probe(nn.Module):
    """CNN over 32 px images with one output head per attribute group."""

    def __init__(self, width: int = 32):
        super().__init__()
        w = width

        def block(i, o):
            return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.GroupNorm(8, o), nn.SiLU(),
                                 nn.Conv2d(o, o, 3, padding=1), nn.GroupNorm(8, o), nn.SiLU())

        stem = nn.Sequential(nn.Conv2d(3, w, 3, padding=1), nn.GroupNorm(8, w), nn.SiLU())
        self.features = nn.Sequential(stem, nn.MaxPool2d(2), block(w, 2 * w), nn.MaxPool2d(2),
                                      block(2 * w, 4 * w), nn.MaxPool2d(2))  # 4x4
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(4 * w * 16, 256), nn.SiLU())
        self.heads = nn.ModuleDict({k: nn.Linear(256, n) for k, n in HEADS.items()})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.shape[-1] != 32:
            x = F.adaptive_avg_pool2d(x, 32)
        h = self.fc(self.features(x))
        return {k: head(h) for k, head in self.heads.items()}

    @torch.no_grad()
    def read(self, images: Sequence[Image.Image] | torch.Tensor) -> list[dict]:
        """Attributes of each image: ``{"time", "ground", "style", "count", "kinds", "colours", "pairs"}``."""
        x = images if torch.is_tensor(images) else to_tensor([im.convert("RGB").resize((32, 32), Image.BOX)
                                                              for im in images])
        self.eval()
        out = self(x)
        res = []
        for i in range(x.shape[0]):
            r = {"time": world.TIMES[int(out["time"][i].argmax())],
                 "ground": world.GROUNDS[int(out["ground"][i].argmax())],
                 "style": world.STYLES[int(out["style"][i].argmax())],
                 "count": int(out["count"][i].argmax()),
                 "kinds": {k for j, k in enumerate(world.KINDS) if out["kinds"][i, j] > 0},
                 "colours": {c for j, c in enumerate(world.COLOURS) if out["colours"][i, j] > 0},
                 "pairs": {p for j, p in enumerate(PAIRS) if out["pairs"][i, j] > 0}}
            res.append(r)
        return res


def labels(scene: world.Scene) -> dict[str, torch.Tensor]:
    kinds = torch.zeros(len(world.KINDS))
    colours = torch.zeros(len(world.COLOURS))
    pairs = torch.zeros(len(PAIRS))
    for o in scene.objects:
        kinds[world.KINDS.index(o.kind)] = 1
        colours[world.COLOURS.index(o.colour)] = 1
        pairs[PAIRS.index((o.colour, o.kind))] = 1
    return {"time": torch.tensor(world.TIMES.index(scene.time)), "ground": torch.tensor(world.GROUNDS.index(scene.ground)),
            "style": torch.tensor(world.STYLES.index(scene.style)), "count": torch.tensor(len(scene.objects)),
            "kinds": kinds, "colours": colours, "pairs": pairs}


def probe_scene(seed: int) -> world.Scene:
    """Training / validation scenes for the probe: the model's distribution plus 10% empty scenes."""
    s = world.random_scene(seed, two_objects_p=0.35)
    if random.Random(seed ^ 0x5EED).random() < 0.1:
        s.objects = []
    return s


def dataset(seeds: Sequence[int]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    scenes = [probe_scene(s) for s in seeds]
    x = to_tensor([world.render(s, 32) for s in scenes])
    ys = [labels(s) for s in scenes]
    return x, {k: torch.stack([y[k] for y in ys]) for k in HEADS}


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Blur, noise and colour jitter, so the probe also reads imperfect model samples."""
    b = x.shape[0]
    blur = torch.rand(b, 1, 1, 1, generator=g) < 0.5
    k = torch.tensor([1.0, 2.0, 1.0])
    k = (k[:, None] * k[None, :] / 16).repeat(3, 1, 1, 1)
    xb = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k, groups=3)
    x = torch.where(blur, xb, x)
    x = x * (1 + 0.08 * torch.randn(b, 3, 1, 1, generator=g)) + 0.06 * torch.randn(b, 3, 1, 1, generator=g)
    x = x + torch.rand(b, 1, 1, 1, generator=g) * 0.12 * torch.randn(x.shape, generator=g)
    return x.clamp(-1, 1)


def loss_fn(out: dict[str, torch.Tensor], y: dict[str, torch.Tensor]) -> torch.Tensor:
    loss = 0.0
    for k in HEADS:
        loss = loss + (F.binary_cross_entropy_with_logits(out[k], y[k]) if k in MULTI else F.cross_entropy(out[k], y[k]))
    return loss


@torch.no_grad()
def accuracy(model: Probe, x: torch.Tensor, y: dict[str, torch.Tensor]) -> dict[str, float]:
    model.eval()
    out = model(x)
    acc = {}
    for k in HEADS:
        if k in MULTI:
            acc[k] = float(((out[k] > 0).float() == y[k]).all(dim=1).float().mean())
        else:
            acc[k] = float((out[k].argmax(1) == y[k]).float().mean())
    return acc


def train_probe(n_train: int = 20000, steps: int = 2500, batch: int = 64, seed: int = 0,
                progress: bool = True) -> tuple[Probe, dict[str, float]]:
    """Train the probe on fresh renders; returns it and its accuracy on 2,000 held-out renders."""
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    x, y = dataset(range(10_000_000 + seed, 10_000_000 + seed + n_train))
    xv, yv = dataset(range(20_000_000, 20_002_000))
    model = Probe()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    g = torch.Generator().manual_seed(seed)
    for _ in tqdm(range(steps), desc="probe", disable=not progress):
        model.train()
        idx = torch.randint(0, n_train, (batch,), generator=g)
        out = model(augment(x[idx], g))
        loss = loss_fn(out, {k: v[idx] for k, v in y.items()})
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return model, accuracy(model, xv, yv)


_CACHED: Probe | None = None


def load_probe(path: str | Path | None = None) -> Probe:
    """The shipped probe (cached)."""
    global _CACHED
    if path is None and _CACHED is not None:
        return _CACHED
    p = Path(path) if path else probe_path()
    if not p.is_file():
        raise FileNotFoundError(f"probe weights not found at {p}; train them with `python -m unitune_nb.probe`")
    m = Probe()
    m.load_state_dict(load_file(str(p)))
    m.eval().requires_grad_(False)
    if path is None:
        _CACHED = m
    return m


def check(read: dict, wanted: dict) -> dict[str, bool]:
    """Which attributes a caption asks for (``world.parse_caption``) the probe's reading shows."""
    res = {}
    for k in ("time", "ground", "style"):
        if k in wanted:
            res[k] = read[k] == wanted[k]
    objs = wanted.get("objects", [])
    if objs:
        kinds = [k for k, _ in objs if k]
        colours = [(c, k) for k, c in objs if c]
        if kinds:
            res["kind"] = all(k in read["kinds"] for k in kinds)
        if colours:
            res["colour"] = all((c, k) in read["pairs"] if k else c in read["colours"] for c, k in colours)
        if len(objs) == 2 or wanted.get("only"):
            res["count"] = read["count"] == len(objs)
    return res


if __name__ == "__main__":  # python -m unitune_nb.probe : retrain and save the probe
    import sys

    torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
    model, acc = train_probe()
    print("held-out accuracy on true renders:", {k: round(v, 4) for k, v in acc.items()})
    probe_path().parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(probe_path()))
    print("saved", probe_path())
