"""Drive the live editor's widgets the way a user does: set values, click buttons."""
import io

import ipywidgets as W
import pytest
from PIL import Image

from unitune_nb import world
from unitune_nb.widgets import Editor, png_bytes, uploaded_image


@pytest.fixture
def ed(ut, tmp_path):
    e = Editor(ut, save_dir=tmp_path / "edits", tune_iters=3)
    e.guidance.value = 3.0
    return e


def _png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def test_editor_starts_with_a_world_scene_and_asks_for_tuning(ed):
    assert isinstance(ed.widget, W.VBox)
    assert ed.source_view.value == png_bytes(ed.ut.source)
    assert ed.needs_tuning
    blank = ed.result.value
    ed.full_button.click()  # editing before tuning: a message, not an exception
    assert "press Tune" in ed.status.value and "#b00020" in ed.status.value
    assert ed.result.value == blank


def test_tune_then_sliders_preview_and_full_resolution(ed):
    blank = ed.result.value
    ed.tune_button.click()
    assert ed.progress.value == ed.progress.max == 3 * 2  # base + sr1
    assert not ed.needs_tuning
    first = ed.result.value
    assert first != blank and ed.last.image.width == 32  # tuning ends with a base-stage preview
    ed.guidance.value = 8.0
    assert ed.result.value != first
    assert ed.history[-1]["guidance_scale"] == 8.0
    ed.full_button.click()
    assert ed.last.image.width == 128 and ed.history[-1]["full"]
    ed.tune_button.click()  # same source and token: no re-tuning
    assert "already tuned" in ed.status.value
    ed.rare_token.value = "zorbquix"
    assert ed.needs_tuning


def test_history_click_restores_settings(ed):
    ed.tune_button.click()
    ed.t0.value = 0.5
    ed.mask_from.value = "source"
    assert ed.last.settings["mask_from"] == "source" and ed.last.reference is None
    ed.prompt.value = "beikkpic on snow"
    n = len(ed.history)
    ed.history_box.children[2].children[1].click()  # the third entry: before the prompt change
    assert ed.prompt.value == ed.history[2]["prompt"] != "beikkpic on snow"
    assert ed.t0.value == 0.5 and ed.mask_from.value == "source"
    ed.history_box.children[0].children[1].click()  # the first: the default mask
    assert ed.mask_from.value == "reconstruction" and ed.last.reference is not None
    assert len(ed.history) == n + 2  # each restore previews the restored settings


def test_errors_show_in_the_panel(ed, tmp_path):
    ed.tune_button.click()
    ed.prompt.value = "   "
    assert "prompt is empty" in ed.status.value
    ed.save_button.click()
    assert "saved" in ed.status.value and len(list((tmp_path / "edits").glob("edit_*.png"))) == 1
    ed.rare_token.value = ""
    ed.tune_button.click()
    assert "rare_token" in ed.status.value and "#b00020" in ed.status.value


def test_upload_formats_of_ipywidgets_7_and_8():
    im = world.render(world.random_scene(5), 64)
    v8 = ({"name": "a.png", "type": "image/png", "size": 1, "content": memoryview(_png(im))},)
    v7 = {"a.png": {"metadata": {"name": "a.png"}, "content": _png(im)}}
    assert uploaded_image(v8).tobytes() == im.tobytes()
    assert uploaded_image(v7).tobytes() == im.tobytes()
    assert uploaded_image(()) is None
    with pytest.raises(ValueError, match="upload a PNG or JPEG"):
        uploaded_image(({"name": "x.txt", "content": b"not an image"},))


def test_bad_upload_is_a_message(ed):
    ed._guard(lambda: ed.set_source(uploaded_image(({"name": "x.txt", "content": b"nope"},))))
    assert "x.txt" in ed.status.value and "#b00020" in ed.status.value
    im = world.render(world.random_scene(9), 128).resize((150, 100))  # not square: converted with a note
    ed.set_source(im)
    assert "press Tune" in ed.status.value and "#b00020" not in ed.status.value
    assert ed.needs_tuning and ed.source_view.value == png_bytes(ed.ut.source)


def test_editor_displays_with_a_still_picture_for_pages_without_widgets(ed):
    """GitHub and PDF exports cannot run widgets: the display data carries a PNG of the views beside the widget."""
    import base64

    data = ed._mimebundle()
    if W.__version__.startswith("7."):  # ipywidgets 7 (Colab) displays the widget itself, without a picture
        assert data is None
        return
    assert "application/vnd.jupyter.widget-view+json" in data
    before = Image.open(io.BytesIO(base64.b64decode(data["image/png"])))
    assert before.size[1] == 192 and before.size[0] < 2 * 192  # the source alone
    ed.tune_button.click()
    ed.full_button.click()
    after = Image.open(io.BytesIO(base64.b64decode(ed._mimebundle()["image/png"])))
    assert after.size[0] > 2 * 192  # source, edit and mask


def test_history_is_capped_and_cleared_by_a_new_source(ed, monkeypatch):
    from unitune_nb import widgets

    monkeypatch.setattr(widgets, "HISTORY", 3)
    ed.interp.value = 0.0  # no reference sample: faster previews
    ed.tune_button.click()
    ed.history.clear()
    ed.history_box.children = ()
    ed._edits = 0
    for i in range(6):
        ed.seed.value = i + 1
    assert len(ed.history) == len(ed.history_box.children) == 3
    assert ed.history[0]["number"] == 4  # the oldest three dropped out
    ed.history_box.children[0].children[1].click()  # restores what its button shows
    assert ed.seed.value == 4 and ed.history[-1]["seed"] == 4
    ed.set_source(world.render(world.random_scene(4), 128))
    assert ed.history == [] and ed.history_box.children == () and ed.last is None
    ed.seed.value = 99  # a slider move before re-tuning says so
    assert "press Tune" in ed.status.value


def test_text_boxes_update_on_enter_and_warnings_reach_the_panel(ed):
    assert not ed.prompt.continuous_update and not ed.baseline.continuous_update
    ed.tune_button.click()
    ed.prompt.value = "at night"  # no rare token: the API's warning shows in the panel
    assert "warning" in ed.status.value and "rare token" in ed.status.value


def test_uploads_convert_like_the_api(ed):
    import numpy as np

    grey16 = Image.fromarray((np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16))
    buf = io.BytesIO()
    grey16.save(buf, format="PNG")
    value = ({"name": "g.png", "type": "image/png", "size": 1, "content": memoryview(buf.getvalue())},)
    ed._guard(lambda: ed.set_source(uploaded_image(value)))  # what the upload observer does
    assert "16-bit" in ed.status.value
    assert np.asarray(ed.ut.source).std() > 10  # not a white picture


def _upload(widget: W.FileUpload, content: bytes, name: str = "m.png") -> None:
    """What an upload does to a FileUpload, in ipywidgets 8's value format or 7's (read-only there: set_trait)."""
    import datetime

    if W.__version__.startswith("7."):
        widget.set_trait("value", {name: {"metadata": {"name": name, "type": "image/png"}, "content": content}})
    else:
        widget.value = ({"name": name, "type": "image/png", "size": len(content), "content": memoryview(content),
                         "last_modified": datetime.datetime.now()},)


def test_tuning_is_a_job_that_cancel_stops_and_leaves_the_model_pristine(ed):
    """In a kernel (a running event loop) Tune returns at once and tunes one step per loop turn: the panel is
    busy (buttons disabled, Cancel enabled) and a Cancel click between steps stops it, back to pristine weights."""
    import asyncio
    import threading

    import torch

    pristine = {n: p.detach().clone() for n, p in ed.ut.cascade.unets["base"].named_parameters()}
    threads = threading.active_count()
    ed.tune_iters.value = 50

    async def click_tune_then_cancel():
        job = ed.tune()
        assert job.running and job.count == 0  # nothing ran yet: the click's callback returned at once
        assert ed.busy == "tuning" and ed.tune_button.disabled and ed.full_button.disabled
        assert not ed.cancel_button.disabled
        while job.count < 3:
            await asyncio.sleep(0)  # the kernel handles other messages between steps
        ed.guidance.value = 5.0  # a slider move during tuning does not preview
        ed.cancel_button.click()
        return job

    job = asyncio.run(click_tune_then_cancel())
    assert job.state == "cancelled" and 3 <= job.count < 100
    assert "cancelled" in ed.status.value and "pristine" in ed.status.value
    assert ed.busy is None and not ed.tune_button.disabled and ed.cancel_button.disabled
    assert ed.ut.tuned == () and ed.needs_tuning and ed.last is None
    assert all(torch.equal(p, pristine[n]) for n, p in ed.ut.cascade.unets["base"].named_parameters())
    assert threading.active_count() == threads  # no thread was started

    async def click_tune_then_wait():
        ed.tune_iters.value = 2
        ed.tune_button.click()
        ed.wait()  # what a notebook cell does after clicking Tune
        return ed.last

    assert asyncio.run(click_tune_then_wait()) is not None and not ed.needs_tuning  # tuned, then a preview


def test_busy_while_editing_and_a_second_full_click_does_not_render_again(ed, monkeypatch):
    ed.tune_button.click()
    seen = []
    edit = ed.ut.edit

    def watch(*a, **kw):
        seen.append((ed.busy, ed.full_button.disabled, ed.save_button.disabled, "working" in ed.status.value))
        return edit(*a, **kw)

    monkeypatch.setattr(ed.ut, "edit", watch)
    ed.full_button.click()
    assert seen == [("full resolution", True, True, True)]
    assert not ed.full_button.disabled and ed.busy is None and ed.last.image.width == 128
    n = len(ed.history)
    ed.full_button.click()  # a double click: the second arrives after the first render
    assert len(seen) == 1 and len(ed.history) == n and "already shown" in ed.status.value


def test_save_writes_full_resolution_with_a_download_link(ed, tmp_path):
    import base64

    ed.tune_button.click()
    assert ed.last.image.width == 32  # a preview is shown
    path = ed.save()
    with Image.open(path) as im:
        assert im.size == (128, 128) and "unitune_nb" in im.text  # rendered at full resolution, settings inside
    assert ed.history[-1]["full"] and path.parent == tmp_path / "edits"
    link = ed.download.value
    assert f'download="{path.name}"' in link and "data:image/png;base64," in link
    assert base64.b64decode(link.split("base64,")[1].split('"')[0]) == path.read_bytes()


def test_save_tuned_model_button(ed, tmp_path):
    ed.save_tuned_button.click()
    assert "press Tune" in ed.status.value and "#b00020" in ed.status.value
    ed.tune_button.click()
    ed.save_tuned_button.click()
    path = tmp_path / "edits" / "tuned_beikkpic.safetensors"
    assert path.is_file() and "saved the tuned model" in ed.status.value and str(path.resolve()) in ed.download.value
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        assert f.metadata()["rare_token"] == "beikkpic" and "source" in f.keys()


def test_a_mask_upload_limits_the_edit_and_no_mask_estimates_again(ed):
    import numpy as np

    ed.tune_button.click()
    ed.prompt.value = "beikkpic on snow"
    m = Image.new("L", (128, 128), 0)
    m.paste(255, (0, 64, 128, 128))  # the lower half may change
    _upload(ed.mask_upload, _png(m))
    assert ed.user_mask is not None and not ed.clear_mask.disabled and "your mask" in ed.status.value
    res, h = ed.last, ed.last.mask.shape[0] // 2  # a 32 px preview
    assert np.allclose(res.mask[:h], 0) and np.allclose(res.mask[h:], 1)
    assert np.abs(np.asarray(res.image, float)[:h] - np.asarray(res.source, float)[:h]).max() <= 1  # the source's
    ed.clear_mask.click()
    assert ed.user_mask is None and ed.clear_mask.disabled and not np.allclose(ed.last.mask[h:], 1)
    _upload(ed.mask_upload, b"not an image", "x.txt")  # a file that is no image: a message, no mask
    assert "x.txt" in ed.status.value and "#b00020" in ed.status.value and ed.user_mask is None
    ed._guard(lambda: ed.set_mask(np.full((8, 8), 2.0)))  # float values above 1: the API refuses
    assert "[0, 1]" in ed.status.value and "#b00020" in ed.status.value and ed.user_mask is None


def test_lora_tuning_and_the_weight_scale_slider(ed, tmp_path):
    """The method dropdown tunes a LoRA delta of the rank in its box (the rank box is live only for LoRA); the weight
    scale slider previews between the pristine (0) and tuned (1) model, and a history click restores it."""
    assert ed.lora_rank.disabled and ed.weight_scale.value == ed.ut.edit_defaults["weight_scale"] == 1.0
    ed.tune_method.value = "lora"
    assert not ed.lora_rank.disabled
    ed.lora_rank.value = 2
    ed.tune_button.click()
    assert ed.ut._lora["base"][0] == 2 and not ed.needs_tuning
    tuned = ed.result.value
    ed.weight_scale.value = 0.0
    assert ed.last.settings["weight_scale"] == 0.0 and ed.ut.weight_scale == 0.0 and ed.result.value != tuned
    ed.history_box.children[0].children[1].click()  # the preview that ended the tune, at scale 1
    assert ed.weight_scale.value == 1.0 and ed.result.value == tuned
    size = ed.save_tuned().stat().st_size
    assert size < 2 * 2**20  # a LoRA tune saves its factors only
    ed.lora_rank.value = 0
    ed.rare_token.value = "zorbquix"
    ed.tune_button.click()
    assert "lora_rank" in ed.status.value and "#b00020" in ed.status.value


def test_tune_in_the_click_handler_reports_progress_there_and_the_stop_button_cancels(ut, tmp_path, monkeypatch):
    """Colab's path: inside a running event loop, the Tune click still tunes to the end before it returns, the
    progress bar moving during the click; a KeyboardInterrupt (the notebook's stop button) half-way cancels back
    to the pristine weights and leaves the panel usable."""
    import asyncio

    import torch

    import unitune_nb.widgets as widgets

    monkeypatch.setattr(widgets, "on_colab", lambda: True)
    ed = Editor(ut, save_dir=tmp_path, tune_iters=6)
    assert ed.tune_in_handler and not Editor(ut, tune_in_handler=False).tune_in_handler
    seen = []
    ed.progress.observe(lambda ch: seen.append((ch["new"], ed.busy)), "value")
    pristine = {n: p.detach().clone() for n, p in ut.cascade.unets["base"].named_parameters()}
    real, calls = ut.cascade.loss, {"n": 0}

    def stop_at_4(*a, **k):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(ut.cascade, "loss", stop_at_4)

    async def click():  # a kernel: an event loop is running, as in Jupyter
        ed.tune_button.click()
        return ed.job

    job = asyncio.run(click())
    assert job.state == "cancelled" and job.count == 3 and [v for v, _ in seen] == [1, 2, 3]
    assert all(busy == "tuning" for v, busy in seen if v)  # sent while the click was still running
    assert "cancelled after 3" in ed.status.value and "stop button" not in ed.status.value
    assert ed.busy is None and not ed.tune_button.disabled and ut.tuned == ()
    assert all(torch.equal(p, pristine[n]) for n, p in ut.cascade.unets["base"].named_parameters())

    monkeypatch.setattr(ut.cascade, "loss", real)
    job = asyncio.run(click())
    assert job.state == "done" and job.count == 12 and ed.progress.value == 12 and not ed.needs_tuning
    assert ed.last is not None and "tuned in" in ed.status.value
