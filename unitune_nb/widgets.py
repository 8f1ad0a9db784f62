"""The live editor: ipywidgets controls that re-edit with the model tuned in the kernel.

``Editor(ut)`` (or :func:`unitune_nb.editor`) shows a source picker (a world scene by seed, or an
uploaded picture), the rare token and a Tune button with a progress bar, the edit prompt, sliders
for the three knobs of UniTune (guidance scale, late start t0 and interpolation; Sec. 3) and the weight scale
(pristine 0 .. tuned 1), the tuning method (full, attention only, LoRA and its rank),
an optional baseline prompt (prompt guidance), the seed, and the result beside the source with the
estimated edit mask (or a mask you upload).  Letting go of a slider (or pressing Enter in a text box)
runs a fast base-stage preview; "Full resolution" runs the whole cascade; "Save" writes the edit at full
resolution with a download link, "Save tuned model" the tuned weights.  Every edit lands in a history strip
whose buttons restore its settings.

No threads: previews run in the widget's own callback, and tuning is a :class:`~unitune_nb.jobs.Job` that
takes one step per turn of the kernel's event loop, so *Cancel* is handled between steps and every widget
update comes from the kernel's main thread.  On Colab (or with ``tune_in_handler=True``) the job runs inside
the Tune click instead, since Colab's page is reported to drop widget updates sent after a handler returns
(googlecolab/colabtools#3373); the notebook's stop button cancels it there.  While the editor works, its
buttons are disabled and the status line says what it does.

Works with ipywidgets 7.7 (Colab) and 8.x.  Results live in widget values (``result.value`` holds
PNG bytes, ``status.value`` the last message), so tests can drive the editor without a browser; a script
that clicks *Tune* calls :meth:`Editor.wait` before reading the result.
"""
from __future__ import annotations

import base64
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
from .colab import on_colab
from .jobs import CANCELLED, DONE, Job
from .settings import MASK_FROM, RARE_TOKEN, TUNE_METHODS
from .tune import UniTune

THUMB = 64  # px of a history thumbnail
VIEW = 192  # px of the source / result / mask views
HISTORY = 12  # edits kept in the history strip (the oldest drop out)


def png_bytes(im: Image.Image, size: int = VIEW) -> bytes:
    """PNG bytes of ``im`` upscaled (nearest neighbour, the pixels stay visible) to ``size``."""
    buf = io.BytesIO()
    im.convert("RGB").resize((size, size), Image.NEAREST).save(buf, format="PNG")
    return buf.getvalue()


def mask_image(mask) -> Image.Image:
    """A mask in [0, 1] (H x W) as a greyscale picture, white = may change."""
    return Image.fromarray((np.asarray(mask) * 255).astype(np.uint8))


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


class Editor:
    """The live UniTune editor.  ``Editor(ut).show()`` (or just ``Editor(ut)`` as a cell's last line).

    ``ut`` is a :class:`UniTune` (its tuned model is reused); ``source`` an optional first image; ``save_dir``
    the folder (on the kernel's machine) that *Save* and *Save tuned model* write to.  ``tune_in_handler``: run
    *Tune* inside its click handler, progress sent from there and the notebook's stop button as cancel (default:
    on Colab, whose page is reported to drop updates sent after a handler returns); else a job on the event loop
    that *Cancel* stops.
    """

    def __init__(self, ut: UniTune | None = None, source=None, scene_seed: int = 2,
                 save_dir: str | Path = "unitune_edits", tune_iters: int | None = None,
                 tune_in_handler: bool | None = None):
        self.ut = ut or UniTune()
        self.tune_in_handler = on_colab() if tune_in_handler is None else bool(tune_in_handler)
        self.save_dir = Path(save_dir)
        self.history: list[dict] = []  # the settings of the last HISTORY edits, oldest first
        self._edits = 0  # edits made since the source was set (numbers the history buttons)
        self.last = None  # the last EditResult shown
        self.last_entry: dict | None = None  # its settings (a history entry)
        self.user_mask: Image.Image | None = None  # an uploaded mask (white = may change), or None
        self.job: Job | None = None  # the tuning job, while and after it runs
        self.busy: str | None = None  # what the editor is doing ("tuning", "preview", ...), None when idle
        self._tuned_key: tuple | None = None
        self._source_id = 0
        self._holding = False
        # JupyterLab 4 + ipykernel 7 run widget callbacks on a subshell thread, beside the kernel's main thread
        # (which runs the tuning job): one piece of work at a time
        self._work = threading.RLock()
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
        tune = self.ut.defaults.tune
        self.tune_method = W.Dropdown(options=list(TUNE_METHODS), value=tune.method, description="method", style=style,
                                      layout=W.Layout(width="190px"))
        self.lora_rank = W.IntText(value=tune.lora_rank, description="LoRA rank", style=style,
                                   layout=W.Layout(width="130px"), disabled=tune.method != "lora")
        self.cancel_button = W.Button(description="Cancel", icon="stop", disabled=True,
                                      tooltip="stop tuning; the model goes back to its pristine weights")
        self.progress = W.IntProgress(value=0, min=0, max=1, description="tuning", style=style)
        # editing
        # text boxes report on Enter / leaving the box, not on every key (no previews of "at n")
        self.prompt = W.Text(value=f"{self.rare_token.value} at night", description="edit prompt", style=style,
                             layout=W.Layout(width="420px"), continuous_update=False)
        self.baseline = W.Text(value="", description="baseline prompt (prompt guidance)", style=style,
                               placeholder="empty = classifier-free guidance", layout=W.Layout(width="420px"),
                               continuous_update=False)
        # sliders report when let go (continuous_update=False): one preview per move, nothing queues up
        self.guidance = W.FloatSlider(value=g0, min=0.0, max=10.0, step=0.5, description="guidance scale",
                                      continuous_update=False, style=style)
        self.t0 = W.FloatSlider(value=d["t0"], min=0.05, max=1.0, step=0.05, description="late start t0",
                                continuous_update=False, style=style)
        self.interp = W.FloatSlider(value=d["interpolation"], min=0.0, max=1.0, step=0.1,
                                    description="interpolation", continuous_update=False, style=style)
        self.weight_scale = W.FloatSlider(value=d["weight_scale"], min=0.0, max=1.0, step=0.05,
                                          description="weight scale (0 = pristine, 1 = tuned)", continuous_update=False,
                                          style=style, layout=W.Layout(width="440px"))
        self.mask_from = W.Dropdown(options=list(MASK_FROM), value=d["mask_from"], description="mask from",
                                    style=style, layout=W.Layout(width="240px"))
        self.mask_upload = W.FileUpload(accept="image/*", multiple=False, description="Upload mask")
        self.clear_mask = W.Button(description="No mask", icon="times", disabled=True,
                                   tooltip="forget the uploaded mask: estimate the mask again")
        self.seed = W.IntText(value=0, description="seed", style=style, layout=W.Layout(width="140px"))
        self.full_button = W.Button(description="Full resolution", icon="expand")
        self.save_button = W.Button(description="Save", icon="save", tooltip="the last edit at full resolution, PNG")
        self.save_tuned_button = W.Button(description="Save tuned model", icon="download",
                                          tooltip="the tuned weights, one safetensors file")

    def _views(self) -> None:
        blank = png_bytes(Image.new("RGB", (8, 8), (235, 235, 235)))
        self.source_view = W.Image(value=blank, format="png", width=VIEW, height=VIEW)
        self.result = W.Image(value=blank, format="png", width=VIEW, height=VIEW)
        self.mask_view = W.Image(value=blank, format="png", width=VIEW, height=VIEW)
        self.status = W.HTML(value="")
        self.download = W.HTML(value="")  # a link to the last saved file
        self.history_box = W.HBox([], layout=W.Layout(overflow_x="auto"))

    def _connect(self) -> None:
        self.new_scene.on_click(lambda _: self._guard(self.render_scene))
        self.upload.observe(lambda ch: self._guard(self._on_upload), names="value")
        self.mask_upload.observe(lambda ch: self._guard(self._on_mask_upload), names="value")
        self.clear_mask.on_click(lambda _: self._guard(lambda: self.set_mask(None)))
        self.tune_button.on_click(lambda _: self._guard(self.tune))
        self.cancel_button.on_click(lambda _: self._guard(self.cancel))
        self.full_button.on_click(lambda _: self._guard(lambda: self.edit(full=True)))
        self.save_button.on_click(lambda _: self._guard(self.save))
        self.save_tuned_button.on_click(lambda _: self._guard(self.save_tuned))
        self.tune_method.observe(lambda ch: setattr(self.lora_rank, "disabled", ch["new"] != "lora"), names="value")
        for w in (self.guidance, self.t0, self.interp, self.weight_scale, self.mask_from, self.seed, self.prompt,
                  self.baseline):
            w.observe(lambda ch: self.request_preview(), names="value")

    @property
    def _actions(self) -> tuple:
        """The controls that start work: disabled while the editor is busy."""
        return (self.new_scene, self.upload, self.tune_button, self.full_button, self.save_button,
                self.save_tuned_button, self.mask_upload)

    def _layout(self) -> W.VBox:
        col = W.Layout(align_items="center")
        views = W.HBox([W.VBox([W.Label("source"), self.source_view], layout=col),
                        W.VBox([W.Label("edit"), self.result], layout=col),
                        W.VBox([W.Label("edit mask (estimated, or yours)"), self.mask_view], layout=col)])
        return W.VBox([
            W.HTML("<b>UniTune live editor</b>: tune once, then move the sliders (base-stage preview); "
                   "<i>Full resolution</i> runs the whole cascade."),
            W.HBox([self.scene_seed, self.new_scene, self.upload]),
            W.HBox([self.rare_token, self.tune_iters, self.tune_method, self.lora_rank]),
            W.HBox([self.tune_button, self.cancel_button, self.progress]),
            self.prompt, self.baseline,
            W.HBox([self.guidance, self.t0, self.interp]),
            self.weight_scale,
            W.HBox([self.mask_from, self.mask_upload, self.clear_mask]),
            W.HBox([self.seed, self.full_button, self.save_button, self.save_tuned_button]),
            views, self.status, self.download, W.Label("history (click to restore):"), self.history_box])

    # ------------------------------------------------------------------ display
    def snapshot(self) -> Image.Image:
        """A still picture of the editor's views: the source, the last edit and its mask (what was shown last)."""
        from .images import strip

        ims = [self.ut.source] if self.ut.source is not None else [Image.new("RGB", (8, 8), (235, 235, 235))]
        if self.last is not None:
            ims += [self.last.image, mask_image(self.last.mask)]
        return strip([im.convert("RGB") for im in ims], VIEW)

    def _mimebundle(self) -> dict | None:
        """The widget's display data plus a PNG of :meth:`snapshot`, so a page that cannot run widgets (GitHub,
        a PDF export) shows the editor as a picture instead of ``VBox(...)`` text; None on ipywidgets 7."""
        bundle = getattr(self.widget, "_repr_mimebundle_", None)
        data = bundle() if bundle is not None else None
        if not data:
            return None
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
        self._warn([str(w.message) for w in caught])

    def _warn(self, warnings_: list[str]) -> None:
        for w in dict.fromkeys(warnings_):
            self.status.value += f'<br><span style="color:#a15c00">warning: {_escape(w)}</span>'

    @contextlib.contextmanager
    def _working(self, what: str):
        """Busy state: buttons disabled and a "working" line while ``what`` runs (the page shows it at once)."""
        busy = self.busy
        if busy is not None or not self._work.acquire(blocking=False):
            raise RuntimeError(f"the editor is busy ({busy or 'working'}): wait for it" +
                               (" or press Cancel" if busy == "tuning" else ""))
        self.busy = what
        for w in self._actions:
            w.disabled = True
        self.cancel_button.disabled = what != "tuning"
        self.message(f"working: {what}...")
        try:
            yield
        finally:
            if what != "tuning" or not (self.job and self.job.running):
                self._idle()
            self._work.release()

    def _idle(self) -> None:
        self.busy = None
        for w in self._actions:
            w.disabled = False
        self.cancel_button.disabled = True

    # ------------------------------------------------------------------ source and mask
    def _show_source(self) -> None:
        self.source_view.value = png_bytes(self.ut.source)

    def set_source(self, image) -> None:
        if self.busy == "tuning":
            raise RuntimeError("tuning is running: press Cancel before changing the picture")
        notes = self.ut.set_source(image)
        self._source_id += 1
        self._show_source()
        self.history.clear()  # edits of another picture
        self.history_box.children = ()
        self._edits = 0
        self.last = self.last_entry = None
        self.user_mask = None  # a mask drawn for another picture
        self.clear_mask.disabled = True
        self.message("new source" + (f" ({'; '.join(notes)})" if notes else "") + ": press Tune")

    def render_scene(self) -> None:
        self.set_source(world.render(world.random_scene(int(self.scene_seed.value)), 128))

    def _on_upload(self) -> None:
        im = uploaded_image(self.upload.value)
        if im is not None:
            self.set_source(im)

    def _on_mask_upload(self) -> None:
        im = uploaded_image(self.mask_upload.value)
        if im is not None:
            self.set_mask(im)

    def set_mask(self, mask) -> None:
        """Use ``mask`` (white / 1 = may change; a path, PIL image or array, read as the API reads it) instead of
        the estimated mask for the following edits; ``None`` goes back to estimating it."""
        from .interpolation import mask_to_tensor

        if mask is None:
            self.user_mask = None
            self.clear_mask.disabled = True
            self.message("no mask: the edit mask is estimated again")
        else:
            t, notes = mask_to_tensor(mask, VIEW)  # the API's reader: its checks and notes
            self.user_mask = mask
            self.clear_mask.disabled = False
            self.mask_view.value = png_bytes(mask_image(t[0, 0].numpy()))
            self.message("your mask is used for the next edits (white = may change)" +
                         (f" ({'; '.join(notes)})" if notes else ""))
        if not self.needs_tuning:
            self.request_preview()

    # ------------------------------------------------------------------ tuning
    @property
    def needs_tuning(self) -> bool:
        return self._tuned_key != (self._source_id, self.rare_token.value)

    def tune(self, force: bool = False) -> Job | None:
        """Start tuning on the current source and rare token (skipped when already tuned on exactly those).

        In a kernel the tuning runs one step per event-loop turn (Cancel works meanwhile) and the call returns at
        once; call :meth:`wait` for the result.  Ends with a preview of the current settings."""
        if self.ut.source is None:
            raise ValueError("no source yet: render a world scene or upload a picture")
        if not force and not self.needs_tuning:
            self.message("already tuned on this source and rare token; edit away")
            return None
        token = self.rare_token.value.strip()
        iters = int(self.tune_iters.value)
        if iters < 1:
            raise ValueError("iterations must be >= 1")
        stages = ("base", "sr1") if "sr1" in self.ut.cascade.stages else ("base",)
        steps = self.ut.tune_steps(None, token, stages=stages, iters=iters, method=self.tune_method.value,  # checked
                                   lora_rank=int(self.lora_rank.value) if self.tune_method.value == "lora" else None)
        self.progress.max, self.progress.value = iters * len(stages), 0
        self._tuned_key = None
        with self._working("tuning"):
            stop = ("the notebook's stop button (Interrupt) stops it" if self.tune_in_handler else "Cancel stops it")
            self.message(f"tuning {'+'.join(stages)} ({self.tune_method.value}) on the source with {token!r} "
                         f"({stop})...")
            started = time.perf_counter()
            self.job = Job(steps, self._tune_step, lambda job: self._guard(lambda: self._tuned(job, started)))
            self.job.run_here() if self.tune_in_handler else self.job.start()
        return self.job

    def _tune_step(self, step) -> None:
        self.progress.value += 1

    def _tuned(self, job: Job, started: float) -> None:
        self._idle()
        if job.state == DONE:
            self._tuned_key = (self._source_id, self.rare_token.value)
            self.message(f"tuned in {time.perf_counter() - started:.1f} s; move a slider or edit the prompt")
        elif job.state == CANCELLED:
            self.ut.reset()
            self.message(f"tuning cancelled after {job.count} of {self.progress.max} steps; the model is back to "
                         "its pristine weights: press Tune to tune again")
        else:
            self.ut.reset()
            self.message(f"tuning failed: {type(job.error).__name__}: {job.error}", error=True)
        self._warn(job.warnings)
        if job.state == DONE:
            said = self.status.value
            self.request_preview()
            self.status.value = said + "<br>" + self.status.value  # "tuned in ..." stays above the preview's line

    def cancel(self) -> None:
        """Stop the running tuning (the model goes back to its pristine weights)."""
        if self.job is None or not self.job.cancel():
            self.message("nothing to cancel")

    def wait(self) -> "Editor":
        """Finish the running tuning now (scripts and notebook cells that click Tune, then read the result)."""
        if self.job is not None:
            self.job.wait()
        return self

    # ------------------------------------------------------------------ editing
    def settings(self) -> dict:
        return {"prompt": self.prompt.value, "guidance_scale": float(self.guidance.value), "t0": float(self.t0.value),
                "interpolation": float(self.interp.value), "weight_scale": float(self.weight_scale.value),
                "mask_from": self.mask_from.value,
                "baseline_prompt": self.baseline.value or None, "seed": int(self.seed.value),
                "mask": self.user_mask}

    def request_preview(self) -> None:
        """A base-stage preview of the current settings, in this callback (nothing is queued or threaded)."""
        if self._holding or self.busy == "tuning":
            return  # tuning ends with a preview of the settings then
        if self._tuned_key is None or self.needs_tuning:  # nothing to preview with yet
            self.message("the source or rare token changed since tuning: press Tune to tune on it")
            return
        self._guard(lambda: self.edit(full=False))

    def edit(self, full: bool = False, settings: dict | None = None):
        """Edit with the current settings (or ``settings``): base-stage preview, or the whole cascade with ``full``."""
        if self.needs_tuning:
            raise ValueError("the source or rare token changed since tuning: press Tune first")
        s = settings or self.settings()
        if not s["prompt"].strip():
            raise ValueError(f"the edit prompt is empty: type e.g. '{self.rare_token.value} at night'")
        if full and self.last_entry is not None and self.last_entry["full"] and _same(self.last_entry, s):
            self.message("already shown at full resolution")  # e.g. a second click queued behind the first
            return self.last
        stages = self.ut.cascade.stages if full else ("base",)
        with self._working("full resolution" if full else "preview"):
            res = self.ut.edit(s["prompt"], guidance_scale=s["guidance_scale"], baseline_prompt=s["baseline_prompt"],
                               t0=s["t0"], interpolation=s["interpolation"], mask_from=s["mask_from"], mask=s["mask"],
                               weight_scale=s["weight_scale"],
                               seed=s["seed"], stages=stages, steps=None if full else self.ut.defaults.preview_steps)
        self.last = res
        self.result.value = png_bytes(res.image)
        self.mask_view.value = png_bytes(mask_image(res.mask))
        kind = "full resolution" if full else "preview"
        self.message(f"{kind} ({res.image.width} px) in {sum(res.seconds.values()):.2f} s" +
                     (" with your mask" if s["mask"] is not None else ""))
        self._add_history(res, s, full)
        return res

    def _add_history(self, res, s: dict, full: bool) -> None:
        self._edits += 1
        entry = dict(s, full=full, number=self._edits)
        self.last_entry = entry
        self.history.append(entry)
        thumb = W.Image(value=png_bytes(res.image, THUMB), format="png", width=THUMB, height=THUMB)
        label = s["prompt"].replace(self.rare_token.value, "").strip()[:14] or "edit"
        tip = str({k: v for k, v in s.items() if k != "mask"}) + (" + your mask" if s["mask"] is not None else "")
        b = W.Button(description=f"{self._edits}: {label}", tooltip=tip, layout=W.Layout(width=f"{THUMB + 40}px"))
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
            self.weight_scale.value = e["weight_scale"]
            self.mask_from.value = e["mask_from"]
            self.seed.value = e["seed"]
            self.user_mask = e["mask"]
            self.clear_mask.disabled = e["mask"] is None
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

    # ------------------------------------------------------------------ saving
    def save(self) -> Path:
        """Write the last edit at full resolution (rendered first if a preview was shown) as a PNG with its
        settings into ``save_dir``, and offer it as a download link (and Colab's download)."""
        from PIL.PngImagePlugin import PngInfo

        from .files import output_dir, write_atomic

        if self.last is None:
            raise ValueError("nothing to save yet: make an edit first")
        if not self.last_entry["full"]:
            self.edit(full=True, settings=self.last_entry)
        info = PngInfo()
        info.add_text("unitune_nb", repr(self.last.settings))
        output_dir(self.save_dir, "save folder")
        path = self.save_dir / f"edit_{len(list(self.save_dir.glob('edit_*.png'))) + 1:03d}.png"
        write_atomic(path, lambda tmp: self.last.image.save(tmp, format="PNG", pnginfo=info), "edit")
        self._offer(path, inline=True)
        self.message(f"saved {path} ({self.last.image.width} px)")
        return path

    def save_tuned(self) -> Path:
        """Write the tuned weights (only the tensors tuning changed, and the source) into ``save_dir``."""
        if self.needs_tuning or not self.ut.tuned:
            raise ValueError("nothing tuned on this source yet: press Tune first")
        path = self.save_dir / f"tuned_{_file_safe(self.rare_token.value)}.safetensors"
        size = self.ut.save_tuned(path)
        self._offer(path, inline=False)
        self.message(f"saved the tuned model to {path} ({size / 2**20:.1f} MB); load it with "
                     "ut.load_tuned(path) or unitune-nb edit --load-tuned")
        return path

    def _offer(self, path: Path, inline: bool) -> None:
        """A link to download ``path``: the bytes inline for small files (works on Colab and JupyterLab alike),
        else the path on the kernel's machine; on Colab also its own download of the file."""
        if inline:
            data = base64.b64encode(path.read_bytes()).decode("ascii")
            self.download.value = (f'<a download="{_escape(path.name)}" href="data:image/png;base64,{data}">'
                                   f"download {_escape(path.name)}</a>")
        else:
            self.download.value = f"on the kernel's machine: <code>{_escape(str(path.resolve()))}</code>"
        if on_colab():
            with contextlib.suppress(Exception):  # outside a browser session Colab's download cannot run
                from google.colab import files  # type: ignore[import-not-found]

                files.download(str(path))


def _same(entry: dict, settings: dict) -> bool:
    return all(entry[k] is v if k == "mask" else entry[k] == v for k, v in settings.items())


def _file_safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)[:40] or "token"


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def editor(ut: UniTune | None = None, **kw) -> Editor:
    """Build and display the live editor in one call."""
    return Editor(ut, **kw).show()
