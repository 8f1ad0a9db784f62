import numpy as np

from unitune_nb import world
from unitune_nb.eval import (PARAPHRASES, encoder_neighbours, format_report, held_out_captions, paraphrase,
                             paraphrased_captions, super_resolution, text_following)
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


def test_encoder_neighbours_tell_which_paraphrases_the_encoder_places_right(text_encoder):
    rep = encoder_neighbours(text_encoder)
    assert set(rep["accuracy"]) == {"time", "ground", "style", "colour", "kind"}
    assert len(rep["phrases"]) == sum(len(v) for v in PARAPHRASES.values())
    for attr, (acc, n) in rep["accuracy"].items():
        assert 0.0 <= acc <= 1.0 and n > 0
    # a trained phrase asked again is its own nearest neighbour
    same = encoder_neighbours(text_encoder, paraphrases={k: [k] for k in ("red", "blue", "at night", "on sand")})
    assert all(meant == near_meant for _, meant, _, near_meant in same["phrases"])
    # swap two colours' words: the encoder still places them by what they mean, so now they count as wrong
    swapped = encoder_neighbours(text_encoder, paraphrases={"red": ["bright blue"], "blue": ["bright red"]}, synonyms={})
    assert swapped["accuracy"]["colour"] == (0.0, 2)
    assert swapped["linear"]["colour"] == (0.0, 2)  # the linear read, fit on the trained words, is fooled too
    right = encoder_neighbours(text_encoder, paraphrases={"red": ["bright red"], "blue": ["bright blue"]}, synonyms={})
    assert right["accuracy"]["colour"] == right["linear"]["colour"] == (1.0, 2)
    assert set(rep["linear"]) == set(rep["accuracy"]) and all(n > 0 for _, n in rep["linear"].values())


def test_report_puts_the_encoder_reference_beside_the_paraphrase_scores(cascade, text_encoder):
    para = paraphrased_captions(4)
    tf = text_following(cascade, n=4, steps=2, batch=4, progress=False)
    pa = text_following(cascade, steps=2, batch=4, progress=False, captions=[(s, c) for s, c, _ in para],
                        wanted=[w for *_, w in para])
    pa["examples"] = [c for _, c, _ in para]
    rep = {"text_following": tf, "paraphrases": pa, "encoder_neighbours": encoder_neighbours(text_encoder),
           "full_res_seconds": 1.0, "threads": 1}
    text = format_report(rep)
    assert "encoder's nearest trained phrase right" in text
    nb = rep["encoder_neighbours"]["accuracy"]
    assert set(pa["accuracy"]) & set(nb)
    for k in set(pa["accuracy"]) & set(nb):
        lin = rep["encoder_neighbours"]["linear"][k]
        assert f"| {nb[k][0]:.2f} of {nb[k][1]} | {lin[0]:.2f} of {lin[1]} |" in text
    wrong = [p for p, meant, _, near_meant in rep["encoder_neighbours"]["phrases"] if meant != near_meant]
    assert all(f"{p} -> " in text for p in wrong)
