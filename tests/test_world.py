import random

import numpy as np
import pytest

from unitune_nb import world
from unitune_nb.world import Edit, Obj, Scene


def arr(im):
    return np.asarray(im, dtype=np.int16)


def test_render_is_deterministic_and_sized():
    s = world.random_scene(3)
    for size in world.SIZES:
        a, b = world.render(s, size), world.render(s, size)
        assert a.size == (size, size) and a.mode == "RGB"
        assert np.array_equal(arr(a), arr(b))


def test_same_scene_consistent_across_sizes():
    s = world.random_scene(11)
    big = world.render(s, 128)
    small = world.render(s, 32)
    # box-filtering the 128 px render down gives the 32 px render up to rounding
    assert np.abs(arr(big.reduce(4)) - arr(small)).max() <= 2


def test_identity_detail_differs_between_seeds_with_same_caption():
    a = world.random_scene(5)
    b = a.replace(seed=a.seed + 1, objects=[Obj(**{**o.__dict__, "detail": o.detail + 1}) for o in a.objects])
    assert world.caption(a) == world.caption(b)
    assert not np.array_equal(arr(world.render(a, 64)), arr(world.render(b, 64)))


def _edits(scene):
    other = lambda vals, cur: next(v for v in vals if v != cur)  # noqa: E731
    out = [Edit("time", other(world.TIMES, scene.time)), Edit("ground", other(world.GROUNDS, scene.ground)),
           Edit("style", other(world.STYLES, scene.style)),
           Edit("recolour", other(world.COLOURS, scene.objects[0].colour), 0), Edit("remove", index=0)]
    if len(scene.objects) < 2:
        out.append(Edit("add", ("car", "blue")))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2, 7])
def test_edits_change_pixels_only_inside_their_mask(seed):
    src = world.random_scene(seed)
    for e in _edits(src):
        dst = world.edit(src, e)
        for size in (32, 64):
            diff = np.abs(arr(world.render(src, size)) - arr(world.render(dst, size))).max(axis=2) > 0
            mask = world.change_mask(src, e, size)
            assert diff.any(), f"{e} changed nothing"
            assert not (diff & ~mask).any(), f"{e} changed {int((diff & ~mask).sum())} pixels outside its mask"
            if e.kind in ("recolour", "remove", "add", "ground"):
                assert mask.mean() < 0.7, f"{e}: a local edit should have a local mask"


def test_edit_keeps_identity_and_source_untouched():
    src = world.random_scene(4)
    before = world.caption(src), [o.colour for o in src.objects]
    dst = world.edit(src, Edit("recolour", "purple" if src.objects[0].colour != "purple" else "red", 0))
    assert (world.caption(src), [o.colour for o in src.objects]) == before  # source not modified
    assert (dst.objects[0].x, dst.objects[0].size, dst.objects[0].detail, dst.seed) == (
        src.objects[0].x, src.objects[0].size, src.objects[0].detail, src.seed)


def test_caption_dropout():
    s = Scene("night", "snow", "drawing", [Obj("house", "red", 0.5, 0.85, 0.3)])
    assert world.caption(s) == "a drawing of a red house on snow at night"
    rng = random.Random(0)
    caps = [world.caption(s, drop=0.3, empty=0.1, rng=rng) for _ in range(2000)]
    empty = sum(c == "" for c in caps) / len(caps)
    assert 0.07 < empty < 0.13
    partial = [c for c in caps if c and c != world.caption(s)]
    assert len(set(partial)) > 20  # many distinct partial prompts
    assert any(c == "at night" for c in caps) or any(c.endswith("at night") and "house" not in c for c in caps)
    assert world.caption(s, drop=1.0) == ""


def test_parse_caption_inverts_caption():
    for seed in range(50):
        s = world.random_scene(seed)
        p = world.parse_caption(world.caption(s))
        assert p["time"] == s.time and p["ground"] == s.ground and p["style"] == s.style
        assert sorted(p["objects"]) == sorted((o.kind, o.colour) for o in s.objects)


def test_bad_values_are_clear_errors():
    with pytest.raises(ValueError, match="time"):
        Scene(time="noon")
    with pytest.raises(ValueError, match="colour"):
        Obj("house", "green", 0.5, 0.8, 0.3)
    with pytest.raises(ValueError, match="size"):
        world.render(world.random_scene(0), 48)
    with pytest.raises(ValueError, match="edit kind"):
        world.edit(world.random_scene(0), Edit("melt"))
    with pytest.raises(ValueError, match="region"):
        world.region_mask(world.random_scene(0), "moon")


def test_training_synonyms_rephrase_captions_and_stay_apart_from_the_eval_paraphrases():
    import random

    from unitune_nb.eval import PARAPHRASES

    scene = world.random_scene(5)
    assert world.caption(scene, rng=random.Random(1), synonyms=0.0) == world.caption(scene)
    said = world.caption(scene, rng=random.Random(1), synonyms=1.0)
    assert said != world.caption(scene)
    assert world.TIME_PHRASE[scene.time] not in said and world.GROUND_PHRASE[scene.ground] not in said
    assert set(world.SYNONYMS) == set(PARAPHRASES)  # the same phrases, in other words...
    train_words = {v for vs in world.SYNONYMS.values() for v in vs}
    assert not train_words & {v for vs in PARAPHRASES.values() for v in vs}  # ...never the evaluation's
    # nor any of the evaluation's one-word alternatives ("crimson", "cabin") inside a longer training phrase
    train_vocab = {w for v in train_words for w in v.split()}
    assert not train_vocab & {v for vs in PARAPHRASES.values() for v in vs if " " not in v}


def test_only_marks_one_object_scenes_and_parses_away():
    import random

    one = next(world.random_scene(s) for s in range(100) if len(world.random_scene(s).objects) == 1)
    two = next(world.random_scene(s) for s in range(100) if len(world.random_scene(s).objects) == 2)
    o = one.objects[0]
    said = world.caption(one, rng=random.Random(0), only=1.0)
    assert f"only a {o.colour} {o.kind}" in said
    assert world.parse_caption(said) == dict(world.parse_caption(world.caption(one)), only=True)
    assert "only" not in world.caption(two, rng=random.Random(0), only=1.0)  # two objects: never "only"
    assert world.caption(one, rng=random.Random(0), only=0.0) == world.caption(one)
