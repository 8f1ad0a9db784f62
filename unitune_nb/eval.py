"""Evaluation of the embedded cascade against the world's ground truth.

* Text following (base stage): generate from held-out captions (scenes the training never drew,
  attribute dropout as in training, fixed seeds) and read the attributes back with the probe.
  Chance is measured, not assumed: the same captions checked against *other* random scenes.
* Super-resolution: from the true low-res render, each SR stage's PSNR against the true
  high-res render, next to bicubic upsampling of the same low-res input.
"""
from __future__ import annotations

import random
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from . import world
from .cascade import SIZE, Cascade
from .images import psnr, to_pil, to_tensor
from .probe import check, load_probe
from .diffusion import run

# Evaluation scenes come from fixed seeds from here on.  Training draws fresh random 31-bit seeds, so a
# given evaluation scene was seen in training with probability ~ steps * batch / 2**31 (< 1e-4 here);
# captions, being combinations of a few words, are of course shared with training.
HELD_OUT = 900_000_000


def held_out_captions(n: int, seed: int = 12345) -> list[tuple[world.Scene, str]]:
    """``n`` (scene, caption) pairs with non-empty captions, attribute dropout 0.3."""
    rng = random.Random(seed)
    out = []
    i = 0
    while len(out) < n:
        scene = world.random_scene(HELD_OUT + seed * 10_000 + i)
        i += 1
        cap = world.caption(scene, drop=0.3, rng=rng)
        if world.parse_caption(cap):
            out.append((scene, cap))
    return out


# The phrasings a user would type for the world's attributes, none of them in the training captions
# (those mix in ``world.SYNONYMS``, a disjoint list).
PARAPHRASES: dict[str, list[str]] = {
    "during the day": ["in daylight", "in the daytime", "at noon", "on a sunny day"],
    "at sunset": ["at dusk", "at sundown", "in the evening", "at twilight"],
    "at night": ["at midnight", "in the dark", "by night", "in the night"],
    "on grass": ["on a lawn", "in a meadow", "on green grass", "in a field"],
    "on sand": ["on the beach", "in the desert", "on sandy ground", "on a beach"],
    "on snow": ["in the snow", "on a snowy field", "in winter snow", "on snowy ground"],
    "a photo": ["a photograph", "a picture", "a realistic photo", "a snapshot"],
    "a drawing": ["a sketch", "an illustration", "a cartoon", "a line drawing"],
    "red": ["crimson", "scarlet", "bright red", "cherry red"],
    "blue": ["navy", "azure", "dark blue", "sky blue"],
    "yellow": ["golden", "lemon yellow", "bright yellow", "mustard"],
    "purple": ["violet", "lilac", "lavender", "magenta"],
    "house": ["cottage", "cabin", "home", "little house"],
    "tree": ["pine tree", "leafy tree", "oak", "big tree"],
    "car": ["automobile", "sedan", "vehicle", "small car"],
}


# Each phrase's attribute and the sentence it is read in (the phrase fills "{}"), for :func:`encoder_neighbours`.
_PHRASE_GROUPS = {
    "time": (list(world.TIME_PHRASE.values()), "a house {}"),
    "ground": (list(world.GROUND_PHRASE.values()), "a house {}"),
    "style": (list(world.STYLE_PHRASE.values()), "{} of a house"),
    "colour": (list(world.COLOURS), "a {} house"),
    "kind": (list(world.KINDS), "a red {}"),
}


@torch.no_grad()
def encoder_neighbours(encoder, paraphrases: dict[str, list[str]] | None = None,
                       synonyms: dict[str, list[str]] | None = None) -> dict:
    """How far the frozen text encoder alone tells the evaluation's paraphrases apart.

    Each paraphrase (default :data:`PARAPHRASES`) and every phrase the model was trained on (the
    canonical phrase and its ``world.SYNONYMS``) is encoded in the same short sentence; the token
    states over the phrase's own word pieces (what cross-attention reads) are averaged, and the
    paraphrase counts as *told apart* when its nearest trained phrase (cosine) means the same thing.
    A U-Net trained on those phrases can read a paraphrase only through where the encoder puts it, so
    this is a reference for the paraphrase scores of :func:`text_following`, not a bound.  ``"linear"``
    is a second reference: a linear classifier (multinomial logistic regression) fit on the trained
    phrases' states, asked for each paraphrase's meaning (the best a linear read of those states learns
    from the training phrases alone).
    Returns ``{"accuracy": {attribute: (fraction, n)}, "linear": {attribute: (fraction, n)}, "phrases":
    [(paraphrase, meant, nearest trained phrase, its meaning), ...]}``.
    """
    paraphrases = PARAPHRASES if paraphrases is None else paraphrases
    synonyms = world.SYNONYMS if synonyms is None else synonyms

    def phrase_states(template: str, phrases: list[str]) -> torch.Tensor:
        emb = encoder([template.format(p) for p in phrases])
        out = []
        for i, p in enumerate(phrases):
            ids = encoder.tokenizer(template.format(p))["input_ids"]
            piece = encoder.tokenizer(p, add_special_tokens=False)["input_ids"]
            j = next(j for j in range(len(ids)) if ids[j:j + len(piece)] == piece)
            out.append(emb.states[i, j:j + len(piece)].float().mean(0))
        return torch.nn.functional.normalize(torch.stack(out), dim=-1)

    rows, acc, linear = [], {}, {}
    for attr, (canon, template) in _PHRASE_GROUPS.items():
        trained = [(c, t) for c in canon for t in [c, *synonyms.get(c, [])]]
        tests = [(c, p) for c in canon for p in paraphrases.get(c, [])]
        if not tests:
            continue
        xs, xt = phrase_states(template, [t for _, t in trained]), phrase_states(template, [p for _, p in tests])
        nearest = (xt @ xs.T).argmax(1).tolist()
        hits = []
        for (meant, p), k in zip(tests, nearest):
            rows.append((p, meant, trained[k][1], trained[k][0]))
            hits.append(trained[k][0] == meant)
        acc[attr] = (float(np.mean(hits)), len(hits))
        read = _linear_read(xs, torch.tensor([canon.index(c) for c, _ in trained]), len(canon))
        linear[attr] = (float(np.mean([canon[k] == c for (c, _), k in zip(tests, read(xt).tolist())])), len(tests))
    return {"accuracy": acc, "linear": linear, "phrases": rows}


def _linear_read(x: torch.Tensor, y: torch.Tensor, classes: int, l2: float = 1e-3):
    """Multinomial logistic regression on unit-length features ``x`` (L-BFGS, small L2 penalty); returns
    the classifier, features -> class index."""
    with torch.enable_grad():
        w = torch.zeros(x.shape[1], classes, requires_grad=True)
        b = torch.zeros(classes, requires_grad=True)
        opt = torch.optim.LBFGS([w, b], max_iter=500)

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(10 * x @ w + b, y) + l2 * (w ** 2).sum()
            loss.backward()
            return loss

        opt.step(closure)
    w, b = w.detach(), b.detach()
    return lambda z: (10 * z @ w + b).argmax(1)


def paraphrase(caption: str, rng: random.Random) -> str:
    """Say a canonical caption in other words: each phrase of :data:`PARAPHRASES` it contains becomes one
    of its alternatives, drawn at random."""
    return world.rephrase(caption, PARAPHRASES, rng)


def paraphrased_captions(n: int, seed: int = 2468) -> list[tuple[world.Scene, str, dict]]:
    """``n`` held-out (scene, paraphrased prompt, what it asks for): canonical captions with attribute
    dropout (so many are partial, e.g. "a crimson car" or "at midnight"), rewritten by :func:`paraphrase`."""
    rng = random.Random(seed)
    return [(s, paraphrase(c, rng), world.parse_caption(c)) for s, c in held_out_captions(n, seed)]


def _truth(scene: world.Scene) -> dict:
    """A scene's attributes in the form ``Probe.read`` returns them."""
    return {"time": scene.time, "ground": scene.ground, "style": scene.style, "count": len(scene.objects),
            "kinds": {o.kind for o in scene.objects}, "colours": {o.colour for o in scene.objects},
            "pairs": {(o.colour, o.kind) for o in scene.objects}}


def _tally(rows: list[dict[str, bool]]) -> dict[str, tuple[float, int]]:
    keys = sorted({k for r in rows for k in r})
    return {k: (float(np.mean([r[k] for r in rows if k in r])), sum(k in r for r in rows)) for k in keys}


@torch.no_grad()
def text_following(cascade: Cascade, n: int = 240, guidance_scale: float | None = None, seed: int = 12345,
                   batch: int = 48, steps: int | None = None, progress: bool = True,
                   captions: list[tuple[world.Scene, str]] | None = None,
                   wanted: list[dict] | None = None) -> dict:
    """Per-attribute accuracy of base-stage samples read by the probe, with chance and probe accuracy.

    ``captions`` replaces the held-out (scene, caption) pairs; ``wanted`` then says what each caption
    asks for (default: ``world.parse_caption`` of it, which reads canonical captions only).
    """
    from tqdm.auto import tqdm

    probe = load_probe()
    pairs = captions or held_out_captions(n, seed)
    d = cascade.defaults["base"]
    g = d["guidance_scale"] if guidance_scale is None else guidance_scale
    k = steps or d["steps"]
    gen = torch.Generator().manual_seed(seed)
    samples = []
    t = time.perf_counter()
    for i in tqdm(range(0, len(pairs), batch), desc="eval base", disable=not progress):
        caps = [c for _, c in pairs[i:i + batch]]
        text = cascade.encode(caps)
        empty = cascade.encode([""] * len(caps))
        last = run(cascade.stage_sampler("base", text, empty, gen, guidance_scale=g, steps=k)[0])
        samples.append(last.x.clamp(-1, 1))
    secs = time.perf_counter() - t
    x = torch.cat(samples)
    reads = probe.read(x)
    wanted = wanted or [world.parse_caption(c) for _, c in pairs]
    model_rows = [check(r, w) for r, w in zip(reads, wanted)]
    truth_reads = probe.read([world.render(s, 32) for s, _ in pairs])
    probe_rows = [check(r, world.parse_caption(world.caption(s))) for r, (s, _) in zip(truth_reads, pairs)]
    rng = random.Random(seed + 1)
    others = [_truth(world.random_scene(HELD_OUT // 2 + rng.randrange(10**6))) for _ in pairs]
    chance_rows = [check(o, w) for o, w in zip(others, wanted)]
    return {"guidance_scale": g, "steps": k, "n": len(pairs), "seconds": secs,
            "accuracy": _tally(model_rows), "chance": _tally(chance_rows), "probe_on_renders": _tally(probe_rows),
            "images": to_pil(x[:64])}


@torch.no_grad()
def diversity(cascade: Cascade, guidance_scale: float, n_captions: int = 8, seeds: int = 4, seed: int = 4242) -> float:
    """Sample diversity: per-pixel standard deviation over seeds of the same caption, averaged."""
    pairs = held_out_captions(n_captions, seed)
    caps = [c for _, c in pairs for _ in range(seeds)]
    text, empty = cascade.encode(caps), cascade.encode([""] * len(caps))
    x = run(cascade.stage_sampler("base", text, empty, torch.Generator().manual_seed(seed),
                                  guidance_scale=guidance_scale)[0]).x.clamp(-1, 1)
    return float(x.view(n_captions, seeds, -1).std(dim=1).mean())


def guidance_sweep(cascade: Cascade, scales: list[float], n: int = 120, seed: int = 12345,
                   progress: bool = True) -> list[dict]:
    """Attribute accuracy and sample diversity for each guidance scale (to choose the default from data)."""
    rows = []
    for g in scales:
        tf = text_following(cascade, n=n, guidance_scale=g, seed=seed, progress=progress)
        acc = {k: a for k, (a, _) in tf["accuracy"].items()}
        rows.append({"guidance_scale": g, "accuracy": acc, "mean_accuracy": float(np.mean(list(acc.values()))),
                     "diversity": diversity(cascade, g), "n": tf["n"]})
    return rows


def sweep_figure(rows: list[dict]):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 3), dpi=80)
    a1, a2 = fig.subplots(1, 2)
    gs = [r["guidance_scale"] for r in rows]
    for k in rows[0]["accuracy"]:
        a1.plot(gs, [r["accuracy"].get(k, np.nan) for r in rows], marker="o", label=k)
    a1.set_xlabel("guidance scale")
    a1.set_ylabel("accuracy (probe)")
    a1.legend(fontsize=7)
    a2.plot(gs, [r["diversity"] for r in rows], marker="o", color="k")
    a2.set_xlabel("guidance scale")
    a2.set_ylabel("diversity (pixel std over seeds)")
    fig.tight_layout()
    return fig


@torch.no_grad()
def super_resolution(cascade: Cascade, n: int = 32, seed: int = 777) -> dict:
    """PSNR (dB) of each SR stage from the true low-res render, and of bicubic upsampling."""
    out = {}
    scenes = [world.random_scene(HELD_OUT + 5_000_000 + seed + i) for i in range(n)]
    caps = [world.caption(s) for s in scenes]
    for stage in cascade.stages[1:]:
        size = SIZE[stage]
        lo = [world.render(s, size // 2) for s in scenes]
        hi = [world.render(s, size) for s in scenes]
        text = cascade.encode(caps)
        gen = torch.Generator().manual_seed(seed)
        t = time.perf_counter()
        last = run(cascade.stage_sampler(stage, text, None, gen, low=to_tensor(lo), guidance_scale=1.0)[0])
        secs = time.perf_counter() - t
        ims = to_pil(last.x)
        model = float(np.mean([psnr(a, b) for a, b in zip(ims, hi)]))
        bicubic = float(np.mean([psnr(l.resize((size, size), Image.BICUBIC), h) for l, h in zip(lo, hi)]))
        out[stage] = {"psnr": model, "bicubic_psnr": bicubic, "n": n, "seconds": secs}
    return out


def evaluate(weights: str | Path | None = None, n: int = 240, sr_n: int = 32, guidance_scale: float | None = None,
             seed: int = 12345, progress: bool = True, paraphrase_n: int = 0) -> dict:
    """Full evaluation report of a cascade folder (default: the shipped weights); ``paraphrase_n`` adds the
    text following of that many paraphrased prompts (:func:`paraphrased_captions`)."""
    c = Cascade.from_pretrained(weights)
    tf = text_following(c, n=n, guidance_scale=guidance_scale, seed=seed, progress=progress)
    tf.pop("images")
    rep = {"weights": str(weights or "shipped"), "text_following": tf}
    if paraphrase_n:
        para = paraphrased_captions(paraphrase_n)
        rep["paraphrases"] = text_following(c, guidance_scale=guidance_scale, seed=seed, progress=progress,
                                            captions=[(s, cap) for s, cap, _ in para], wanted=[w for *_, w in para])
        rep["paraphrases"].pop("images")
        rep["paraphrases"]["examples"] = [cap for _, cap, _ in para[:8]]
        rep["encoder_neighbours"] = encoder_neighbours(c.text_encoder)
    if len(c.stages) > 1 and sr_n:
        rep["super_resolution"] = super_resolution(c, n=sr_n)
    t = time.perf_counter()
    c.generate("a red house on snow at night", seed=0)
    rep["full_res_seconds"] = time.perf_counter() - t
    rep["threads"] = torch.get_num_threads()
    return rep


def format_report(rep: dict) -> str:
    tf = rep["text_following"]
    lines = [f"text following: {tf['n']} held-out captions, guidance {tf['guidance_scale']}, "
             f"{tf['steps']} DDIM steps, {tf['seconds']:.1f} s",
             "| attribute | model | chance | probe on true renders | captions |", "|---|---|---|---|---|"]
    for k, (acc, cnt) in tf["accuracy"].items():
        ch = tf["chance"].get(k, (float("nan"), 0))[0]
        pr = tf["probe_on_renders"].get(k, (float("nan"), 0))[0]
        lines.append(f"| {k} | {acc:.3f} | {ch:.3f} | {pr:.3f} | {cnt} |")
    if "paraphrases" in rep:
        pa = rep["paraphrases"]
        lines += ["", f"paraphrased prompts: {pa['n']} (e.g. " + "; ".join(f'"{e}"' for e in pa["examples"][:4]) + ")",
                  "| attribute | model | chance | prompts | encoder's nearest trained phrase right | "
                  "linear read of the encoder right |", "|---|---|---|---|---|---|"]
        nb = rep.get("encoder_neighbours", {}).get("accuracy", {})
        lin = rep.get("encoder_neighbours", {}).get("linear", {})
        for k, (acc, cnt) in pa["accuracy"].items():
            enc, lr = (f"{d[k][0]:.2f} of {d[k][1]}" if k in d else "-" for d in (nb, lin))
            lines.append(f"| {k} | {acc:.3f} | {pa['chance'].get(k, (float('nan'), 0))[0]:.3f} | {cnt} | {enc} | {lr} |")
        wrong = [f"{p} -> {near}" for p, meant, near, near_meant in rep.get("encoder_neighbours", {}).get("phrases", [])
                 if meant != near_meant]
        if wrong:
            lines.append("paraphrases the encoder puts nearest a trained phrase of another meaning: " + "; ".join(wrong))
    for s, r in rep.get("super_resolution", {}).items():
        lines.append(f"{s}: PSNR {r['psnr']:.2f} dB vs bicubic {r['bicubic_psnr']:.2f} dB "
                     f"({r['psnr'] - r['bicubic_psnr']:+.2f} dB, n={r['n']}, {r['seconds']:.1f} s)")
    lines.append(f"one full-resolution generation: {rep['full_res_seconds']:.2f} s on {rep['threads']} thread(s)")
    return "\n".join(lines)
