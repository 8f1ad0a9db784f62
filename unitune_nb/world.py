"""A procedural toy world whose ground truth we know exactly.

Every scene is a small dataclass (:class:`Scene`) rendered deterministically to a PIL image at any
of the cascade's sizes (32, 64, 128 px).  Scenes are drawn once at a 256 px master resolution and
box-filtered down, so the same scene looks the same at every size.

What text describes (the *attributes*): time of day, ground, style, and one or two objects, each
with a kind and a colour.  What text does *not* describe (the *identity*): exact object positions
and sizes, window and door placement, tree shape, the sun / moon position, the stars and the small
texture noise.  UniTune (arXiv 2210.09477, Sec. 3) must keep the identity while changing attributes;
:func:`edit` gives the exact expected result of an edit and :func:`change_mask` where it may change.
"""
from __future__ import annotations

import dataclasses
import random
import re
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

TIMES = ("day", "sunset", "night")
GROUNDS = ("grass", "sand", "snow")
STYLES = ("photo", "drawing")
KINDS = ("house", "tree", "car")
COLOURS = ("red", "blue", "yellow", "purple")
SIZES = (32, 64, 128)

MASTER = 256  # master render size; every output size divides it
HORIZON = 0.6  # sky fills the top 60%

TIME_PHRASE = {"day": "during the day", "sunset": "at sunset", "night": "at night"}
GROUND_PHRASE = {"grass": "on grass", "sand": "on sand", "snow": "on snow"}
STYLE_PHRASE = {"photo": "a photo", "drawing": "a drawing"}

_RGB = {
    "red": (205, 35, 35),
    "blue": (35, 75, 215),
    "yellow": (235, 205, 30),
    "purple": (145, 45, 175),
}
_SKY = {  # (top, horizon)
    "day": ((95, 160, 235), (175, 215, 248)),
    "sunset": ((245, 105, 60), (255, 195, 115)),
    "night": ((8, 12, 40), (30, 38, 85)),
}
_GROUND = {"grass": (70, 150, 55), "sand": (222, 192, 125), "snow": (236, 241, 247)}
_LIGHT = {"day": (1.0, 1.0, 1.0), "sunset": (1.0, 0.82, 0.7), "night": (0.42, 0.45, 0.6)}
_OUTLINE = (35, 35, 40)


@dataclass
class Obj:
    """One object: attributes (kind, colour) and identity (position, size, detail seed).

    ``x`` is the horizontal centre and ``y`` the base line, both as fractions of the image;
    ``size`` is the height as a fraction of the image; ``detail`` seeds windows, tree shape, etc.
    """

    kind: str
    colour: str
    x: float
    y: float
    size: float
    detail: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown object kind {self.kind!r}; choose one of {KINDS}")
        if self.colour not in COLOURS:
            raise ValueError(f"unknown colour {self.colour!r}; choose one of {COLOURS}")


@dataclass
class Scene:
    """A full scene.  ``seed`` fixes the identity detail that no caption mentions."""

    time: str = "day"
    ground: str = "grass"
    style: str = "photo"
    objects: list[Obj] = field(default_factory=list)
    seed: int = 0

    def __post_init__(self) -> None:
        for name, allowed in (("time", TIMES), ("ground", GROUNDS), ("style", STYLES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"unknown {name} {getattr(self, name)!r}; choose one of {allowed}")
        if not 0 <= len(self.objects) <= 2:
            raise ValueError(f"a scene holds 0 to 2 objects, got {len(self.objects)}")

    def replace(self, **kw) -> "Scene":
        """A copy with some fields changed (objects are copied too)."""
        d = dict(time=self.time, ground=self.ground, style=self.style, seed=self.seed,
                 objects=[dataclasses.replace(o) for o in self.objects])
        d.update(kw)
        return Scene(**d)


# --------------------------------------------------------------------------- sampling scenes
def _random_obj(rng: random.Random, avoid: Obj | None = None) -> Obj:
    for _ in range(50):
        size = rng.uniform(0.24, 0.38)
        x = rng.uniform(0.2, 0.8)
        if avoid is None or abs(x - avoid.x) > 0.5 * (size + avoid.size) + 0.02:
            break
    return Obj(kind=rng.choice(KINDS), colour=rng.choice(COLOURS), x=x,
               y=rng.uniform(0.78, 0.93), size=size, detail=rng.randrange(1 << 30))


def random_scene(seed: int, two_objects_p: float = 0.25) -> Scene:
    """A random scene, fully determined by ``seed``."""
    rng = random.Random(seed)
    first = _random_obj(rng)
    objects = [first]
    if rng.random() < two_objects_p:
        second = _random_obj(rng, avoid=first)
        objects.append(second)
    return Scene(time=rng.choice(TIMES), ground=rng.choice(GROUNDS), style=rng.choice(STYLES),
                 objects=objects, seed=rng.randrange(1 << 30))


# --------------------------------------------------------------------------- rendering
def _mix(a: Sequence[float], b: Sequence[float], t: float) -> tuple[int, int, int]:
    return tuple(int(round(x * (1 - t) + y * t)) for x, y in zip(a, b))  # type: ignore[return-value]


def _lit(c: Sequence[float], scene: Scene) -> tuple[int, int, int]:
    out = tuple(min(255, int(round(v * k))) for v, k in zip(c, _LIGHT[scene.time]))
    return _mix(out, (255, 255, 255), 0.4) if scene.style == "drawing" else out  # type: ignore[return-value]


def object_colour(obj: Obj, scene: Scene) -> tuple[int, int, int]:
    """The flat colour an object is painted with under the scene's light and style."""
    c = _RGB[obj.colour]
    out = tuple(min(255, int(round(v * k))) for v, k in zip(c, _LIGHT[scene.time]))
    if scene.time == "night":  # keep night objects readable
        out = tuple(min(255, int(v * 1.25)) for v in out)
    return _mix(out, (255, 255, 255), 0.25) if scene.style == "drawing" else out  # type: ignore[return-value]


def sky_colour(scene: Scene) -> tuple[int, int, int]:
    """Mean sky colour (the probe of time and style reads this)."""
    top, bottom = _SKY[scene.time]
    c = _mix(top, bottom, 0.5)
    return _mix(c, (255, 255, 255), 0.45) if scene.style == "drawing" else c


def ground_colour(scene: Scene) -> tuple[int, int, int]:
    """Mean ground colour."""
    return _lit(_GROUND[scene.ground], scene)


def _obj_box(obj: Obj, s: int) -> tuple[float, float, float, float]:
    h = obj.size * s
    w = h * {"house": 0.9, "tree": 0.7, "car": 1.5}[obj.kind]
    x0 = obj.x * s - w / 2
    return (x0, obj.y * s - h, x0 + w, obj.y * s)


@dataclass
class _Pen:
    """How one object is drawn: colours, outline, shading (a silhouette in ``fill`` when drawing masks)."""

    col: tuple
    dark: tuple
    light: tuple
    outline: tuple | None
    ow: int
    photo: bool
    fill: tuple | None


def _draw_house(d: ImageDraw.ImageDraw, box, rng: random.Random, pen: _Pen, scene: Scene) -> None:
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    col, outline, ow, fill = pen.col, pen.outline, pen.ow, pen.fill
    roof_h = h * rng.uniform(0.3, 0.42)
    d.rectangle((x0, y0 + roof_h, x1, y1), fill=col, outline=outline, width=ow)
    if pen.photo:  # shaded right third
        d.rectangle((x0 + w * 0.68, y0 + roof_h, x1, y1), fill=pen.dark)
    over = w * 0.08
    d.polygon([(x0 - over, y0 + roof_h), (x1 + over, y0 + roof_h), (x0 + w * rng.uniform(0.4, 0.6), y0)],
              fill=pen.dark if fill is None else fill, outline=outline, width=ow)
    if fill is None:
        n_win = rng.randint(1, 3)
        win_c = (250, 230, 120) if scene.time == "night" else _mix((200, 225, 245), col, 0.2)
        wy0 = y0 + roof_h + (h - roof_h) * 0.18
        ws = w * 0.16
        for i in range(n_win):
            wx = x0 + w * (0.12 + i * 0.26)
            d.rectangle((wx, wy0, wx + ws, wy0 + ws), fill=win_c, outline=outline, width=max(1, ow // 2))
        door_x = x0 + w * rng.uniform(0.5, 0.7)
        d.rectangle((door_x, y1 - (h - roof_h) * 0.5, door_x + w * 0.18, y1), fill=_mix(col, (60, 30, 10), 0.6),
                    outline=outline, width=max(1, ow // 2))


def _draw_tree(d: ImageDraw.ImageDraw, box, rng: random.Random, pen: _Pen, scene: Scene) -> None:
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    trunk_w = w * rng.uniform(0.16, 0.24)
    cx = (x0 + x1) / 2
    trunk_c = pen.fill if pen.fill is not None else _lit((110, 70, 35), scene)
    d.rectangle((cx - trunk_w / 2, y1 - h * 0.38, cx + trunk_w / 2, y1), fill=trunk_c, outline=pen.outline, width=pen.ow)
    for _ in range(rng.randint(2, 4)):
        r = w * rng.uniform(0.3, 0.45)
        bx = cx + w * rng.uniform(-0.18, 0.18)
        by = y0 + r + h * rng.uniform(0.0, 0.2)
        d.ellipse((bx - r, by - r, bx + r, by + r), fill=pen.col, outline=pen.outline, width=pen.ow)
    if pen.photo:
        r = w * 0.18
        d.ellipse((cx - w * 0.2 - r, y0 + h * 0.2 - r / 2, cx - w * 0.2 + r, y0 + h * 0.2 + r), fill=pen.light)


def _draw_car(d: ImageDraw.ImageDraw, box, rng: random.Random, pen: _Pen, scene: Scene) -> None:
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    col, outline, ow = pen.col, pen.outline, pen.ow
    cab_x = x0 + w * rng.uniform(0.2, 0.35)
    wheel_r = h * 0.22
    d.rectangle((x0, y0 + h * 0.45, x1, y1 - wheel_r * 0.8), fill=col, outline=outline, width=ow)
    d.polygon([(cab_x, y0 + h * 0.45), (cab_x + w * 0.12, y0 + h * 0.05), (cab_x + w * 0.45, y0 + h * 0.05),
               (cab_x + w * 0.55, y0 + h * 0.45)], fill=col, outline=outline, width=ow)
    if pen.fill is None:
        glass = (250, 230, 140) if scene.time == "night" else _mix((190, 215, 235), col, 0.15)
        d.polygon([(cab_x + w * 0.05, y0 + h * 0.42), (cab_x + w * 0.14, y0 + h * 0.12),
                   (cab_x + w * 0.42, y0 + h * 0.12), (cab_x + w * 0.5, y0 + h * 0.42)], fill=glass)
    if pen.photo:
        d.rectangle((x0, y1 - wheel_r * 1.4, x1, y1 - wheel_r * 0.8), fill=pen.dark)
    for wx in (x0 + w * 0.22, x1 - w * 0.22):
        d.ellipse((wx - wheel_r, y1 - 2 * wheel_r, wx + wheel_r, y1),
                  fill=pen.fill if pen.fill is not None else (25, 25, 28), outline=outline, width=ow)


_DRAW = {"house": _draw_house, "tree": _draw_tree, "car": _draw_car}


def _draw_object(d: ImageDraw.ImageDraw, obj: Obj, scene: Scene, s: int, fill=None) -> None:
    """Draw one object; with ``fill`` given, draw its silhouette in that colour (for masks)."""
    rng = random.Random(obj.detail)
    col = fill if fill is not None else object_colour(obj, scene)
    drawing = scene.style == "drawing" and fill is None
    pen = _Pen(col, fill if fill is not None else _mix(col, (0, 0, 0), 0.45),
               fill if fill is not None else _mix(col, (255, 255, 255), 0.3),
               _OUTLINE if drawing else None, max(2, s // 64) if drawing else 0,
               scene.style == "photo" and fill is None, fill)
    _DRAW[obj.kind](d, _obj_box(obj, s), rng, pen, scene)


def _background(scene: Scene, s: int) -> np.ndarray:
    hz = int(HORIZON * s)
    img = np.zeros((s, s, 3), np.float32)
    if scene.style == "drawing":
        img[:hz] = sky_colour(scene)
        img[hz:] = ground_colour(scene)
        return img
    top, bottom = (np.array(c, np.float32) for c in _SKY[scene.time])
    t = np.linspace(0, 1, hz, dtype=np.float32)[:, None, None]
    img[:hz] = top * (1 - t) + bottom * t
    g = np.array(ground_colour(scene), np.float32)
    t = np.linspace(0, 1, s - hz, dtype=np.float32)[:, None, None]
    img[hz:] = g * (1.08 - 0.16 * t)  # lighter far away, darker near
    return img


def _sky_decor(d: ImageDraw.ImageDraw, scene: Scene, s: int) -> None:
    rng = random.Random(scene.seed * 7 + 1)
    hz = HORIZON * s
    outline = _OUTLINE if scene.style == "drawing" else None
    ow = max(2, s // 64) if outline else 0
    sx = rng.uniform(0.1, 0.9) * s
    if scene.time == "night":
        for _ in range(rng.randint(8, 16)):
            x, y, r = rng.uniform(0, s), rng.uniform(0, hz * 0.8), s / 200
            d.ellipse((x - r, y - r, x + r, y + r), fill=(235, 235, 210))
        r = s * 0.06
        sy = rng.uniform(0.12, 0.3) * s
        d.ellipse((sx - r, sy - r, sx + r, sy + r), fill=(235, 235, 215), outline=outline, width=ow)
    elif scene.time == "day":
        r = s * 0.06
        sy = rng.uniform(0.1, 0.25) * s
        d.ellipse((sx - r, sy - r, sx + r, sy + r), fill=(255, 240, 150), outline=outline, width=ow)
    else:
        r = s * 0.1
        sy = hz - r * 0.4  # half hidden: the ground is pasted over it
        d.ellipse((sx - r, sy - r, sx + r, sy + r), fill=(255, 150, 60), outline=outline, width=ow)


def _texture(scene: Scene, s: int) -> np.ndarray:
    """Small fixed-seed texture noise (photo style only): identity detail no caption mentions."""
    rng = np.random.default_rng(scene.seed)
    n = rng.normal(0, 7.0, (s // 2, s // 2, 1)).astype(np.float32)
    return np.repeat(np.repeat(n, 2, 0), 2, 1)


def _render_master(scene: Scene) -> Image.Image:
    s = MASTER
    bg = _background(scene, s)
    im = Image.fromarray(bg.clip(0, 255).astype(np.uint8))
    d = ImageDraw.Draw(im)
    _sky_decor(d, scene, s)
    hz = int(HORIZON * s)
    # redraw the ground over anything that fell below the horizon (setting sun)
    ground = Image.fromarray(bg[hz:].clip(0, 255).astype(np.uint8))
    im.paste(ground, (0, hz))
    d = ImageDraw.Draw(im)
    if scene.style == "drawing":
        d.line((0, hz, s, hz), fill=_OUTLINE, width=max(2, s // 64))
    for obj in sorted(scene.objects, key=lambda o: o.y):
        _draw_object(d, obj, scene, s)
    arr = np.asarray(im, np.float32)
    if scene.style == "photo":
        arr = arr + _texture(scene, s)
    return Image.fromarray(arr.clip(0, 255).round().astype(np.uint8))


def render(scene: Scene, size: int = 64) -> Image.Image:
    """Render ``scene`` as an RGB PIL image of ``size`` x ``size`` (one of 32, 64, 128, 256)."""
    if size not in SIZES + (MASTER,):
        raise ValueError(f"size must be one of {SIZES + (MASTER,)}, got {size}")
    im = _render_master(scene)
    return im if size == MASTER else im.reduce(MASTER // size)


# --------------------------------------------------------------------------- masks
def region_mask(scene: Scene, region: str, size: int = 64) -> np.ndarray:
    """Boolean mask of a region: ``"sky"``, ``"ground"``, ``"all"`` or ``"object:i"``.

    A pixel belongs to the mask if any part of it (at the master resolution) does.
    """
    s = MASTER
    m = Image.new("L", (s, s), 0)
    d = ImageDraw.Draw(m)
    hz = int(HORIZON * s)
    if region == "all":
        d.rectangle((0, 0, s, s), fill=255)
    elif region in ("sky", "ground"):
        box = (0, 0, s, hz + max(2, s // 64)) if region == "sky" else (0, hz - max(2, s // 64), s, s)
        d.rectangle(box, fill=255)
        for obj in scene.objects:  # objects cover parts of sky and ground
            _draw_object(d, obj, scene, s, fill=0)
    elif region.startswith("object:"):
        i = int(region.split(":")[1])
        if not 0 <= i < len(scene.objects):
            raise ValueError(f"{region!r}: the scene has {len(scene.objects)} object(s)")
        obj = dataclasses.replace(scene.objects[i])
        _draw_object(d, obj, scene.replace(style="drawing"), s, fill=255)
        # outlines: grow the silhouette by the outline width
        from PIL import ImageFilter
        m = m.filter(ImageFilter.MaxFilter(5))
        d = ImageDraw.Draw(m)
        for other in scene.objects:  # objects in front hide it
            if other.y > obj.y:
                _draw_object(d, other, scene, s, fill=0)
    else:
        raise ValueError(f"unknown region {region!r}; use 'sky', 'ground', 'all' or 'object:i'")
    a = np.asarray(m) > 0
    k = s // size
    return a.reshape(size, k, size, k).any(axis=(1, 3))


# --------------------------------------------------------------------------- edits
@dataclass(frozen=True)
class Edit:
    """One edit of a scene.

    ``kind`` is one of ``"time"``, ``"ground"``, ``"style"`` (``value`` the new attribute),
    ``"recolour"`` (``value`` a colour, ``index`` the object), ``"add"`` (``value`` an
    ``(kind, colour)`` pair) or ``"remove"`` (``index`` the object).
    """

    kind: str
    value: object = None
    index: int = 0

    @property
    def prompt(self) -> str:  # the edit prompt a user would type
        k, v = self.kind, self.value
        if k == "time":
            return TIME_PHRASE[v]  # type: ignore[index]
        if k == "ground":
            return GROUND_PHRASE[v]  # type: ignore[index]
        if k == "style":
            return STYLE_PHRASE[v]  # type: ignore[index]
        if k == "add":
            kind, colour = v  # type: ignore[misc]
            return f"and a {colour} {kind}"
        raise ValueError(f"edit kind {k!r} has no object-free prompt; use edit_prompt(scene, edit)")


EDIT_KINDS = ("time", "ground", "style", "recolour", "add", "remove")


def edit_prompt(scene: Scene, e: Edit) -> str:
    """The edit prompt for ``e`` applied to ``scene`` (recolour / remove name the object)."""
    if e.kind == "recolour":
        return f"a {e.value} {scene.objects[e.index].kind}"
    if e.kind == "remove":
        keep = [o for i, o in enumerate(scene.objects) if i != e.index]
        return " and ".join(f"a {o.colour} {o.kind}" for o in keep) if keep else "no objects"
    return e.prompt


def edit(scene: Scene, e: Edit) -> Scene:
    """The exact scene an edit should produce; identity detail is kept."""
    if e.kind not in EDIT_KINDS:
        raise ValueError(f"unknown edit kind {e.kind!r}; choose one of {EDIT_KINDS}")
    if e.kind in ("time", "ground", "style"):
        return scene.replace(**{e.kind: e.value})
    out = scene.replace()
    if e.kind == "recolour":
        out.objects[e.index].colour = e.value  # type: ignore[assignment]
        Obj.__post_init__(out.objects[e.index])
    elif e.kind == "remove":
        if len(out.objects) < 1:
            raise ValueError("the scene has no object to remove")
        del out.objects[e.index]
    else:  # add
        if len(out.objects) >= 2:
            raise ValueError("the scene already holds 2 objects; remove one first")
        kind, colour = e.value  # type: ignore[misc]
        rng = random.Random(scene.seed + 99)
        new = _random_obj(rng, avoid=out.objects[0] if out.objects else None)
        out.objects.append(dataclasses.replace(new, kind=kind, colour=colour))
    return out


def change_mask(scene: Scene, e: Edit, size: int = 64) -> np.ndarray:
    """Where an edit is allowed to change pixels (boolean, ``size`` x ``size``)."""
    if e.kind in ("time", "style"):
        return region_mask(scene, "all", size)
    if e.kind == "ground":
        return region_mask(scene, "ground", size)
    if e.kind == "recolour" or e.kind == "remove":
        return region_mask(scene, f"object:{e.index}", size)
    after = edit(scene, e)
    return region_mask(after, f"object:{len(after.objects) - 1}", size)


# --------------------------------------------------------------------------- captions
def object_phrase(obj: Obj, drop_colour: bool = False, drop_kind: bool = False) -> str:
    if drop_colour and drop_kind:
        return ""
    if drop_kind:
        return f"something {obj.colour}"
    return f"a {obj.kind}" if drop_colour else f"a {obj.colour} {obj.kind}"


# Other words for the caption phrases, mixed into training captions (``caption(..., synonyms=p)``) so the
# model learns that the frozen encoder's neighbours mean the same thing.  Evaluation paraphrases with a
# disjoint list (``unitune_nb.eval.PARAPHRASES``), so what it measures is generalisation.
SYNONYMS: dict[str, list[str]] = {
    "during the day": ["in the day", "by day", "in the morning", "at midday", "at lunchtime", "in the sunshine",
                       "in the afternoon", "on a clear day"],
    "at sunset": ["as the sun sets", "at nightfall", "under an orange sky", "as the sun goes down", "at last light",
                  "at the end of the day", "under a red sky", "at the close of day"],
    "at night": ["after dark", "at nighttime", "under the stars", "on a dark night", "under the moon",
                 "late at night"],
    "on grass": ["on the grass", "on a green field", "in a park", "on grassland", "on turf", "on the green"],
    "on sand": ["on the sand", "on dunes", "on a sandy beach", "on desert sand", "on the shore", "on sandy soil"],
    "on snow": ["on the snow", "in a snowy landscape", "on snowy land", "on fresh snow", "on a snowfield",
                "in deep snow"],
    "a photo": ["a photo image", "a real photo", "a colour photo", "a camera shot", "a digital photo"],
    "a drawing": ["a doodle", "a pencil drawing", "a comic", "a hand drawing", "a crayon drawing", "an ink drawing"],
    "red": ["ruby", "dark red", "rose red", "blood red", "cardinal", "maroon", "vermilion", "brick red", "fire-engine red",
            "tomato red", "carmine"],
    "blue": ["cobalt", "royal blue", "light blue", "sapphire", "ultramarine", "cerulean", "denim", "ocean blue",
             "cornflower blue", "steel blue", "prussian blue"],
    "yellow": ["amber", "gold", "sunny yellow", "canary yellow", "sunflower yellow", "saffron", "butter yellow", "honey",
               "dandelion yellow", "banana yellow", "buttercup"],
    "purple": ["plum", "mauve", "dark purple", "indigo", "amethyst", "orchid", "grape", "fuchsia", "heather",
               "aubergine", "royal purple"],
    "house": ["hut", "building", "small house", "villa", "bungalow", "farmhouse", "dwelling", "chalet"],
    "tree": ["fir tree", "tall tree", "maple", "green tree", "birch", "elm", "spruce", "willow"],
    "car": ["motorcar", "hatchback", "coupe", "little car", "taxi", "convertible", "roadster", "station wagon"],
}


def rephrase(text: str, table: dict[str, list[str]], rng: random.Random, p: float = 1.0) -> str:
    """Replace each phrase of ``table`` found in ``text`` (longest first, one pass) with probability ``p``
    by one of its alternatives, then make "a" / "an" agree with the next word."""
    pattern = r"\b(" + "|".join(re.escape(k) for k in sorted(table, key=len, reverse=True)) + r")\b"
    text = re.sub(pattern, lambda m: rng.choice(table[m.group(1)]) if rng.random() < p else m.group(1), text)
    return re.sub(r"\b(a|an) (\w)", lambda m: ("an " if m.group(2) in "aeiou" else "a ") + m.group(2), text)


def caption(scene: Scene, drop: float = 0.0, empty: float = 0.0, rng: random.Random | None = None,
            synonyms: float = 0.0, only: float = 0.0) -> str:
    """A caption of ``scene``.

    Each attribute (style, each object's colour and kind, ground, time) is dropped with
    probability ``drop``, and the whole caption with probability ``empty`` (for classifier-free
    guidance training); each phrase is said in other words (:data:`SYNONYMS`) with probability
    ``synonyms``.  With probability ``only`` the caption of a one-object scene that names its object says
    "only" before it ("a drawing of only a red car"): with attribute dropout a plain "a red car" may
    describe a scene whose second object went unnamed, "only" says there is one (how a user asks for an
    object to be removed).  ``caption(scene)`` gives the full canonical caption.
    """
    rng = rng or random.Random()
    if empty and rng.random() < empty:
        return ""
    keep = lambda: not (drop and rng.random() < drop)  # noqa: E731
    subject = " and ".join(p for p in (object_phrase(o, not keep(), not keep()) for o in scene.objects) if p)
    if only and len(scene.objects) == 1 and subject and rng.random() < only:
        subject = "only " + subject
    head = ""
    if keep():
        head = STYLE_PHRASE[scene.style] + (f" of {subject}" if subject else "")
    else:
        head = subject
    parts = [head, GROUND_PHRASE[scene.ground] if keep() else "", TIME_PHRASE[scene.time] if keep() else ""]
    text = " ".join(p for p in parts if p)
    return rephrase(text, SYNONYMS, rng, synonyms) if synonyms else text


def parse_caption(text: str) -> dict:
    """Read the attributes a canonical caption mentions (the inverse of :func:`caption`).

    Returns a dict with any of ``time``, ``ground``, ``style`` and ``objects`` (a list of
    ``(kind or None, colour or None)``), and ``only: True`` when the caption says there is one object.
    Used by evaluation to know what to check.
    """
    t = " " + text.lower().strip() + " "
    out: dict = {}
    for k, p in TIME_PHRASE.items():
        if p in t:
            out["time"] = k
    for k, p in GROUND_PHRASE.items():
        if p in t:
            out["ground"] = k
    for k, p in STYLE_PHRASE.items():
        if t.strip().startswith(p):
            out["style"] = k
    objs = []
    words = t.replace(" and ", " , ").split()
    for i, w in enumerate(words):
        if w in KINDS:
            c = words[i - 1] if i and words[i - 1] in COLOURS else None
            objs.append((w, c))
        elif w in COLOURS and (i + 1 >= len(words) or words[i + 1] not in KINDS):
            objs.append((None, w))
    if objs:
        out["objects"] = objs
        if " only " in t and len(objs) == 1:
            out["only"] = True  # exactly one object
    return out
