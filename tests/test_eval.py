import numpy as np

from unitune_nb import world
from unitune_nb.eval import (PARAPHRASES, held_out_captions, paraphrase, paraphrased_captions, super_resolution,
                             text_following)
from unitune_nb.probe import check, load_probe


def test_probe_reads_true_renders():
    probe = load_probe()
    scenes = [world.random_scene(300_000 + i) for i in range(200)]
    reads = probe.read([world.render(s, 64) for s in scenes])
    rows = [check(r, world.parse_caption(world.caption(s))) for r, s in zip(reads, scenes)]
    for key in ("time", "ground", "style", "kind", "colour"):
        acc = np.mean([r[key] for r in rows if key in r])
        assert acc >= 0.95, f"probe reads {key} at {acc:.2f} on true renders"


def test_probe_check_fails_on_wrong_attributes():
    probe = load_probe()
    s = world.Scene("night", "snow", "photo", [world.Obj("house", "red", 0.5, 0.85, 0.32, 1)], seed=1)
    r = probe.read([world.render(s, 32)])[0]
    assert check(r, world.parse_caption("a photo of a red house on snow at night")) == {
        "time": True, "ground": True, "style": True, "kind": True, "colour": True}
    wrong = check(r, world.parse_caption("a drawing of a blue car on grass during the day"))
    assert not any(wrong.values())
    # "only" asks for exactly one object: right for this scene, wrong for a two-object one
    assert check(r, world.parse_caption("only a red house"))["count"]
    two = s.replace(objects=s.objects + [world.Obj("car", "blue", 0.2, 0.85, 0.25, 2)])
    assert not check(probe.read([world.render(two, 32)])[0], world.parse_caption("a photo of only a red house"))["count"]


def test_held_out_captions_are_non_empty_and_fixed():
    a, b = held_out_captions(20), held_out_captions(20)
    assert [c for _, c in a] == [c for _, c in b] and all(c for _, c in a)


def test_eval_harness_on_a_few_samples(cascade):
    rep = text_following(cascade, n=6, steps=2, batch=3, progress=False)
    assert rep["n"] == 6 and len(rep["images"]) == 6
    for table in ("accuracy", "chance", "probe_on_renders"):
        assert rep[table] and all(0 <= acc <= 1 for acc, _ in rep[table].values())
    sr = super_resolution(cascade, n=2)
    assert set(sr) == {"sr1", "sr2"} and all(np.isfinite(v["psnr"]) for v in sr.values())


def test_diversity_measures_spread_over_seeds(cascade):
    from unitune_nb.eval import diversity

    d = diversity(cascade, 2.0, n_captions=2, seeds=2)
    assert 0 < d < 2


def test_paraphrases_say_the_same_thing_in_other_words():
    import random

    assert paraphrase("a drawing of a red house on snow at night", random.Random(0)) != \
        "a drawing of a red house on snow at night"
    para = paraphrased_captions(40)
    canonical = held_out_captions(40, 2468)
    canon_phrases = [k for k in PARAPHRASES if " " in k]  # time, ground and style phrases
    for (scene, text, wanted), (scene2, cap) in zip(para, canonical):
        assert scene == scene2 and wanted == world.parse_caption(cap) and wanted
        assert text != cap and not any(f" {k} " in f" {text} " for k in canon_phrases)
        for a, b in zip(text.split()[:-1], text.split()[1:]):  # articles still agree
            assert (a, b[0] in "aeiou") not in (("a", True), ("an", False)), text
    assert paraphrased_captions(40) == para  # a fixed set


def test_text_following_scores_paraphrases_by_what_they_ask(cascade):
    para = paraphrased_captions(4)
    rep = text_following(cascade, steps=2, batch=4, progress=False, captions=[(s, c) for s, c, _ in para],
                         wanted=[w for *_, w in para])
    asked = {k for _, _, w in para for k in w if k != "objects"}
    assert rep["n"] == 4 and asked <= set(rep["accuracy"])  # e.g. "at midnight" is checked as time of day


def test_training_curve_plots_each_attribute_in_minute_order():
    from unitune_nb.plots import training_curve

    pts = [{"minutes": 150, "accuracy": {"kind": 0.87, "colour": 0.83}},
           {"minutes": 90, "accuracy": {"kind": 0.83, "colour": 0.77}},
           {"minutes": 200, "accuracy": {"kind": 0.9}}]
    ax = training_curve(pts).axes[0]
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    assert list(lines["kind"].get_xdata()) == [90, 150, 200]
    assert list(lines["kind"].get_ydata()) == [0.83, 0.87, 0.9]
    assert list(lines["colour"].get_xdata()) == [90, 150]  # a point without the attribute is skipped
    assert "target 0.9" in lines
