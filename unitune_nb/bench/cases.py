"""The edit benchmark's cases and scoring: world scenes with an edit whose exact answer the world renders.

The benchmark measures the paper's claim (Sec. 4) instead of judging pictures: edit success is read by
the world's probe; preservation is PSNR / SSIM against the oracle target outside the change mask;
identity is PSNR inside the objects the edit keeps.
"""
from __future__ import annotations

import dataclasses
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from .. import world
from ..images import psnr, ssim

CASES_FILE = Path(__file__).resolve().parent.parent / "data" / "bench_cases.json"


@dataclass(frozen=True)
class Case:
    """One benchmark case: a world scene (by seed) and an edit of it, with the oracle answer."""

    seed: int
    kind: str
    value: object = None
    index: int = 0

    @property
    def scene(self) -> world.Scene:
        return world.random_scene(self.seed)

    @property
    def edit(self) -> world.Edit:
        v = tuple(self.value) if isinstance(self.value, list) else self.value
        return world.Edit(self.kind, v, self.index)

    @property
    def target(self) -> world.Scene:
        return world.edit(self.scene, self.edit)

    @property
    def prompt(self) -> str:
        """The edit prompt (UniTune adds the rare token in front)."""
        return world.edit_prompt(self.scene, self.edit)


def make_cases(n: int = 60, start_seed: int = 31_000_000) -> list[Case]:
    """``n`` cases, the six edit kinds in turn, each edit one that changes the scene."""
    cases: list[Case] = []
    seed = start_seed
    while len(cases) < n:
        kind = world.EDIT_KINDS[len(cases) % len(world.EDIT_KINDS)]
        s = world.random_scene(seed)
        rng = random.Random(seed)
        seed += 1
        if kind in ("time", "ground", "style"):
            options = {"time": world.TIMES, "ground": world.GROUNDS, "style": world.STYLES}[kind]
            cases.append(Case(seed - 1, kind, rng.choice([v for v in options if v != getattr(s, kind)])))
        elif kind == "recolour" and s.objects:
            i = rng.randrange(len(s.objects))
            cases.append(Case(seed - 1, kind, rng.choice([c for c in world.COLOURS if c != s.objects[i].colour]), i))
        elif kind == "add" and len(s.objects) == 1:
            cases.append(Case(seed - 1, kind, [rng.choice(world.KINDS), rng.choice(world.COLOURS)]))
        elif kind == "remove" and len(s.objects) == 2:
            cases.append(Case(seed - 1, kind, None, rng.randrange(2)))
    return cases


def load_cases(path: str | Path | None = None) -> list[Case]:
    """The fixed case list kept in the repository (so numbers compare between versions)."""
    data = json.loads(Path(path or CASES_FILE).read_text())
    return [Case(**c) for c in data["cases"]]


def save_cases(cases: Sequence[Case], path: str | Path | None = None) -> None:
    path = Path(path or CASES_FILE)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"version": 1, "cases": [dataclasses.asdict(c) for c in cases]}, indent=1))


def edit_succeeded(case: Case, read: dict) -> bool:
    """Does the probe's reading of a result show the intended edit?"""
    e, s = case.edit, case.scene
    if e.kind in ("time", "ground", "style"):
        return read[e.kind] == e.value
    if e.kind == "recolour":
        return (e.value, s.objects[e.index].kind) in read["pairs"]
    if e.kind == "add":
        kind, colour = e.value  # type: ignore[misc]
        return read["count"] == len(s.objects) + 1 and (colour, kind) in read["pairs"]
    return read["count"] == len(s.objects) - 1  # remove


def score(case: Case, image: Image.Image, probe) -> dict:
    """Success, preservation (PSNR/SSIM against the oracle outside the change mask; the whole image for
    global edits), identity (PSNR inside the objects the edit keeps) of one result."""
    size = image.width
    target = world.render(case.target, size)
    change = world.change_mask(case.scene, case.edit, size)
    keep = ~change if (~change).any() else np.ones_like(change)
    after = case.target
    k = case.edit.kind
    edited = {case.edit.index} if k == "recolour" else {len(after.objects) - 1} if k == "add" else set()
    objs = np.zeros_like(change)
    for i in range(len(after.objects)):
        if i not in edited:
            objs |= world.region_mask(after, f"object:{i}", size)
    return {"success": float(edit_succeeded(case, probe.read([image])[0])),
            "psnr": psnr(image, target, keep), "ssim": ssim(image, target, keep),
            "identity": psnr(image, target, objs) if objs.any() else float("nan")}


