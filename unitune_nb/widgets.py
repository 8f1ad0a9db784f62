"""The live editor: ipywidgets controls that re-edit with the model tuned in the kernel.

``Editor(ut)`` (or :func:`unitune_nb.editor`) shows a source picker (a world scene by seed, or an
uploaded picture), the rare token and a Tune button with a progress bar, the edit prompt, sliders
for the three knobs of UniTune (guidance scale, late start t0 and interpolation; Sec. 3),
an optional baseline prompt (prompt guidance), the seed, and the result beside the source with the
estimated edit mask.  Moving a slider runs a fast base-stage preview, debounced so that dragging
does not queue work; "Full resolution" runs the whole cascade.  Every edit lands in a history
strip whose buttons restore its settings.

Works with ipywidgets 7.7 (Colab) and 8.x.  Results live in widget values (``result.value`` holds
PNG bytes, ``status.value`` the last message), so tests can drive the editor without a browser.
"""
from __future__ import annotations

import contextlib
import io
import threading
import time
from pathlib import Path
from typing import Callable

import ipywidgets as W
import numpy as np
from PIL import Image

from . import world
from .settings import MASK_FROM, RARE_TOKEN
from .tune import UniTune

THUMB = 64  # px of a history thumbnail
VIEW = 192  # px of the source / result / mask views
HISTORY = 12  # edits kept in the history strip (the oldest drop out)


def png_bytes(im: Image.Image, size: int = VIEW) -> bytes:
    """PNG bytes of ``im`` upscaled (nearest neighbour, the pixels stay visible) to ``size``."""
    buf = io.BytesIO()
    im.convert("RGB").resize((size, size), Image.NEAREST).save(buf, format="PNG")
    return buf.getvalue()


def uploaded_image(value) -> Image.Image | None:
    """The picture in a ``FileUpload`` value, for ipywidgets 7 (dict by name) and 8 (tuple of dicts)."""
    if not value:
        return None
    if isinstance(value, dict):  # ipywidgets 7: {name: {"metadata": ..., "content": bytes}}
        item = list(value.values())[-1]
        name = item.get("metadata", {}).get("name", "upload")
    else:  # ipywidgets 8: ({"name", "type", "size", "content": memoryview, ...},)
        item = value[-1]
        name = item.get("name", "upload")
    try:
        with Image.open(io.BytesIO(bytes(item["content"]))) as f:
            im = f.copy()
            im.load()
    except Exception as e:  # PIL raises several types for broken files
        raise ValueError(f"{name} is not an image PIL can read ({e}); upload a PNG or JPEG") from e
    return im  # as uploaded: UniTune.set_source converts it (16-bit, transparency, ...) the way the API does


class Debouncer:
    """Run only the newest of a burst of requests, ``delay`` seconds after the burst ends.

    A request that is superseded before it starts never runs; one superseded while it runs has its
    result dropped by the caller (see ``current``).  ``delay=0`` runs requests synchronously.
    """

    def __init__(self, delay: float = 0.25):
        self.delay = delay
        self.generation = 0
        self.ran = 0  # how many requests actually ran (tests use it)
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()
        self._running = threading.Lock()

    def __call__(self, fn: Callable[[int], None]) -> None:
        with self._lock:
            self.generation += 1
            gen = self.generation
            if self._timer is not None:
                self._timer.cancel()
            if self.delay <= 0:
                self._timer = None
        if self.delay <= 0:
            self._run(fn, gen)
            return
        self._timer = threading.Timer(self.delay, self._run, args=(fn, gen))
        self._timer.daemon = True
        self._timer.start()

    def current(self, gen: int) -> bool:
        return gen == self.generation

    def _run(self, fn: Callable[[int], None], gen: int) -> None:
        with self._running:  # one preview at a time; a newer request waiting here makes this one stale
            if not self.current(gen):
                return
            self.ran += 1
            fn(gen)

    def wait(self, timeout: float = 30.0) -> None:
        """Block until the pending request (if any) has run (for tests and scripts)."""
        t = self._timer
        if t is not None:
            t.join(timeout)
        with self._running:
            pass


class Editor:
    """The live UniTune editor.  ``Editor(ut).show()`` (or just ``Editor(ut)`` as a cell's last line).

    ``ut`` is a :class:`UniTune` (its tuned model is reused); ``source`` an optional first image;
    ``debounce`` the seconds a slider must rest before the preview runs (0 = synchronous).
    """

    def __init__(self, ut: UniTune | None = None, source=None, scene_seed: int = 2, debounce: float = 0.25,
                 save_dir: str | Path = "unitune_edits", tune_iters: int | None = None):
        self.ut = ut or UniTune()
        self.save_dir = Path(save_dir)
        self.debouncer = Debouncer(debounce)
        self.history: list[dict] = []  # the settings of the last HISTORY edits, oldest first
        self._edits = 0  # edits made since the source was set (numbers the history buttons)
        self.last = None  # the last EditResult shown
        self._tuned_key: tuple | None = None
        self._source_id = 0
        self._holding = False
        self._controls(scene_seed, tune_iters)
        self._views()
        self._connect()
        if source is not None:
            self._guard(lambda: self.set_source(source))
        elif self.ut.source is not None:
            self._show_source()
            if self.ut.tuned:
                self._tuned_key = (self._source_id, self.ut.rare_token)
                self.rare_token.value = self.ut.rare_token or self.rare_token.value
        else:
            self._guard(self.render_scene)
        self.widget = self._layout()

    def _controls(self, scene_seed: int, tune_iters: int | None) -> None:
        """The source, tuning and editing controls, starting at the model's defaults."""
        style = {"description_width": "initial"}
        d = self.ut.edit_defaults  # a real model's own defaults
        g0 = d["guidance_scale"] or self.ut.cascade.defaults["base"]["guidance_scale"]
        # source
        self.scene_seed = W.IntText(value=scene_seed, description="world scene", style=style, layout=W.Layout(width="160px"))
        self.new_scene = W.Button(description="Render scene", icon="image")
        self.upload = W.FileUpload(accept="image/*", multiple=False, description="Upload")
        # tuning
        self.rare_token = W.Text(value=self.ut.rare_token or RARE_TOKEN, description="rare token", style=style,
                                 continuous_update=False)
        self.tune_iters = W.IntText(value=self.ut.default_iters if tune_iters is None else tune_iters,
                                    description="iterations", style=style, layout=W.Layout(width="160px"))
        self.tune_button = W.Button(description="Tune", button_style="primary", icon="cogs")
        self.progress = W.IntProgress(value=0, min=0, max=1, description="tuning", style=style)
        # editing
        # text boxes report on Enter / leaving the box, not on every key (no previews of "at n")
        self.prompt = W.Text(value=f"{self.rare_token.value} at night", description="edit prompt", style=style,
                             layout=W.Layout(width="420px"), continuous_update=False)
        self.baseline = W.Text(value="", description="baseline prompt (prompt guidance)", style=style,
                               placeholder="empty = classifier-free guidance", layout=W.Layout(width="420px"),
                               continuous_update=False)
        self.guidance = W.FloatSlider(value=g0, min=0.0, max=10.0, step=0.5, description="guidance scale",
                                      continuous_update=False, style=style)
        self.t0 = W.FloatSlider(value=d["t0"], min=0.05, max=1.0, step=0.05, description="late start t0",
                                continuous_update=False, style=style)
        self.interp = W.FloatSlider(value=d["interpolation"], min=0.0, max=1.0, step=0.1,
                                    description="interpolation", continuous_update=False, style=style)
        self.mask_from = W.Dropdown(options=list(MASK_FROM), value=d["mask_from"], description="mask from",
                                    style=style, layout=W.Layout(width="240px"))
        self.seed = W.IntText(value=0, description="seed", style=style, layout=W.Layout(width="140px"))
        self.full_button = W.Button(description="Full resolution", icon="expand")
        self.save_button = W.Button(description="Save", icon="save")

    def _views(self) -> None:
        blank = png_bytes(Image.new("RGB", (8, 8), (235, 235, 235)))
        self.source_view = W.Image(value=blank, format="png", width=VIEW, height=VIEW)
        self.result = W.Image(value=blank, format="png", width=VIEW, height=VIEW)
        self.mask_view = W.Image(value=blank, format="png", width=VIEW, height=VIEW)
        self.status = W.HTML(value="")
        self.history_box = W.HBox([], layout=W.Layout(overflow_x="auto"))

    def _connect(self) -> None:
        self.new_scene.on_click(lambda _: self._guard(self.render_scene))
        self.upload.observe(lambda ch: self._guard(self._on_upload), names="value")
        self.tune_button.on_click(lambda _: self._guard(self.tune))
        self.full_button.on_click(lambda _: self._guard(lambda: self.edit(full=True)))
        self.save_button.on_click(lambda _: self._guard(self.save))
        for w in (self.guidance, self.t0, self.interp, self.mask_from, self.seed, self.prompt, self.baseline):
            w.observe(lambda ch: self.request_preview(), names="value")

    def _layout(self) -> W.VBox:
        col = W.Layout(align_items="center")
        views = W.HBox([W.VBox([W.Label("source"), self.source_view], layout=col),
                        W.VBox([W.Label("edit"), self.result], layout=col),
                        W.VBox([W.Label("estimated edit mask"), self.mask_view], layout=col)])
        return W.VBox([
            W.HTML("<b>UniTune live editor</b>: tune once, then move the sliders (base-stage preview); "
                   "<i>Full resolution</i> runs the whole cascade."),
            W.HBox([self.scene_seed, self.new_scene, self.upload]),
            W.HBox([self.rare_token, self.tune_iters, self.tune_button, self.progress]),
            self.prompt, self.baseline,
            W.HBox([self.guidance, self.t0, self.interp, self.mask_from]),
            W.HBox([self.seed, self.full_button, self.save_button]),
            views, self.status, W.Label("history (click to restore):"), self.history_box])

    # ------------------------------------------------------------------ display
    def snapshot(self) -> Image.Image:
        """A still picture of the editor's views: the source, the last edit and its mask (what was shown last)."""
        from .images import strip

        ims = [self.ut.source] if self.ut.source is not None else [Image.new("RGB", (8, 8), (235, 235, 235))]
        if self.last is not None:
            ims += [self.last.image, Image.fromarray((np.asarray(self.last.mask) * 255).astype(np.uint8))]
        return strip([im.convert("RGB") for im in ims], VIEW)

    def _mimebundle(self) -> dict | None:
        """The widget's display data plus a PNG of :meth:`snapshot`, so a page that cannot run widgets (GitHub,
        a PDF export) shows the editor as a picture instead of ``VBox(...)`` text; None on ipywidgets 7."""
        bundle = getattr(self.widget, "_repr_mimebundle_", None)
        data = bundle() if bundle is not None else None
        if not data:
            return None
        import base64

        buf = io.BytesIO()
        self.snapshot().save(buf, format="PNG")
        return {**data, "image/png": base64.b64encode(buf.getvalue()).decode("ascii")}

    def _ipython_display_(self):  # ipywidgets 7 and 8 both display a VBox; 8 also gets a still picture
        from IPython.display import display

        data = self._mimebundle()
        if data is None:
            display(self.widget)
        else:
            display(data, raw=True)

    def show(self) -> "Editor":
        self._ipython_display_()
        return self

    def message(self, text: str, error: bool = False) -> None:
        colour = "#b00020" if error else "#333"
        self.status.value = f'<span style="color:{colour}">{_escape(text)}</span>'

    def _guard(self, fn: Callable[[], object]) -> None:
        """Run a callback; any error becomes a message in the panel instead of killing the widget, and warnings
        (a prompt without the rare token, a picture outside the world) are added to the panel's message."""
        import warnings

        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                fn()
        except Exception as e:  # noqa: BLE001 - the panel must survive every user error
            self.message(f"{type(e).__name__}: {e}", error=True)
            return
        for w in dict.fromkeys(str(w.message) for w in caught):
            self.status.value += f'<br><span style="color:#a15c00">warning: {_escape(w)}</span>'

    # ------------------------------------------------------------------ source and tuning
    def _show_source(self) -> None:
        self.source_view.value = png_bytes(self.ut.source)

    def set_source(self, image) -> None:
        notes = self.ut.set_source(image)
        self._source_id += 1
        self._show_source()
        self.history.clear()  # edits of another picture
        self.history_box.children = ()
        self._edits = 0
        self.last = None
        self.message("new source" + (f" ({'; '.join(notes)})" if notes else "") + ": press Tune")

    def render_scene(self) -> None:
        self.set_source(world.render(world.random_scene(int(self.scene_seed.value)), 128))

    def _on_upload(self) -> None:
        im = uploaded_image(self.upload.value)
        if im is not None:
            self.set_source(im)

    @property
    def needs_tuning(self) -> bool:
        return self._tuned_key != (self._source_id, self.rare_token.value)

    def tune(self, force: bool = False) -> None:
        """Tune on the current source and rare token (skipped when already tuned on exactly those)."""
        if self.ut.source is None:
            raise ValueError("no source yet: render a world scene or upload a picture")
        if not force and not self.needs_tuning:
            self.message("already tuned on this source and rare token; edit away")
            return
        token = self.rare_token.value.strip()
        iters = int(self.tune_iters.value)
        if iters < 1:
            raise ValueError("iterations must be >= 1")
        stages = ("base", "sr1") if "sr1" in self.ut.cascade.stages else ("base",)
        self.progress.max, self.progress.value = iters * len(stages), 0
        self.message(f"tuning {'+'.join(stages)} on the source with {token!r}...")
        t = time.perf_counter()
        self._tuned_key = None
        for _ in self.ut.tune_steps(None, token, stages=stages, iters=iters):
            self.progress.value += 1
        self._tuned_key = (self._source_id, self.rare_token.value)
        self.message(f"tuned in {time.perf_counter() - t:.1f} s; move a slider or edit the prompt")
        self.request_preview()

    # ------------------------------------------------------------------ editing
    def settings(self) -> dict:
        return {"prompt": self.prompt.value, "guidance_scale": float(self.guidance.value), "t0": float(self.t0.value),
                "interpolation": float(self.interp.value), "mask_from": self.mask_from.value,
                "baseline_prompt": self.baseline.value or None, "seed": int(self.seed.value)}

    def request_preview(self) -> None:
        """Schedule a base-stage preview of the current settings (debounced)."""
        if self._holding:
            return
        if self._tuned_key is None or self.needs_tuning:  # nothing to preview with yet
            self.message("the source or rare token changed since tuning: press Tune to tune on it")
            return
        self.debouncer(lambda gen: self._guard(lambda: self.edit(full=False, generation=gen)))

    def edit(self, full: bool = False, generation: int | None = None):
        """Edit with the current settings: base-stage preview, or the whole cascade with ``full``."""
        if self.needs_tuning:
            raise ValueError("the source or rare token changed since tuning: press Tune first")
        s = self.settings()
        if not s["prompt"].strip():
            raise ValueError("the edit prompt is empty: type e.g. "
                             f"'{self.rare_token.value} at night'")
        stages = self.ut.cascade.stages if full else ("base",)
        res = self.ut.edit(s["prompt"], guidance_scale=s["guidance_scale"], baseline_prompt=s["baseline_prompt"],
                           t0=s["t0"], interpolation=s["interpolation"], mask_from=s["mask_from"], seed=s["seed"], stages=stages,
                           steps=None if full else self.ut.defaults.preview_steps)
        if generation is not None and not self.debouncer.current(generation):
            return None  # a newer request came in while this one ran: drop the stale preview
        self.last = res
        self.result.value = png_bytes(res.image)
        self.mask_view.value = png_bytes(Image.fromarray((np.asarray(res.mask) * 255).astype(np.uint8)))
        secs = sum(v for k, v in res.seconds.items())
        kind = "full resolution" if full else "preview"
        self.message(f"{kind} ({res.image.width} px) in {secs:.2f} s")
        self._add_history(res, s, full)
        return res

    def _add_history(self, res, s: dict, full: bool) -> None:
        self._edits += 1
        entry = dict(s, full=full, number=self._edits)
        self.history.append(entry)
        thumb = W.Image(value=png_bytes(res.image, THUMB), format="png", width=THUMB, height=THUMB)
        label = s["prompt"].replace(self.rare_token.value, "").strip()[:14] or "edit"
        b = W.Button(description=f"{self._edits}: {label}", tooltip=str(s), layout=W.Layout(width=f"{THUMB + 40}px"))
        b.on_click(lambda _, e=entry: self._guard(lambda: self._restore_entry(e)))
        self.history_box.children = (tuple(self.history_box.children) + (W.VBox([thumb, b]),))[-HISTORY:]
        if len(self.history) > HISTORY:  # keep the entries the strip shows
            self.history[:] = self.history[-HISTORY:]

    def restore(self, index: int) -> None:
        """Put the settings of history entry ``index`` (0 = the oldest kept) back on the controls, and preview."""
        self._restore_entry(self.history[index])

    def _restore_entry(self, e: dict) -> None:
        with self._quiet():
            self.prompt.value, self.baseline.value = e["prompt"], e["baseline_prompt"] or ""
            self.guidance.value, self.t0.value, self.interp.value = e["guidance_scale"], e["t0"], e["interpolation"]
            self.mask_from.value = e["mask_from"]
            self.seed.value = e["seed"]
        self.message(f"restored edit {e['number']}")
        self.request_preview()

    @contextlib.contextmanager
    def _quiet(self):
        """Hold previews while several controls change at once."""
        self._holding = True
        try:
            yield
        finally:
            self._holding = False

    def save(self) -> Path:
        """Write the last result (and its settings) as PNG into ``save_dir``."""
        if self.last is None:
            raise ValueError("nothing to save yet: make an edit first")
        self.save_dir.mkdir(parents=True, exist_ok=True)
        path = self.save_dir / f"edit_{len(list(self.save_dir.glob('edit_*.png'))) + 1:03d}.png"
        from PIL.PngImagePlugin import PngInfo

        info = PngInfo()
        info.add_text("unitune_nb", repr(self.last.settings))
        self.last.image.save(path, pnginfo=info)
        self.message(f"saved {path}")
        return path


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def editor(ut: UniTune | None = None, **kw) -> Editor:
    """Build and display the live editor in one call."""
    return Editor(ut, **kw).show()
