"""Drive the live editor in JupyterLab with Debian Chromium (Playwright); print the checks as JSON.

Run by tests/test_browser.py in its own process (Playwright's event loop stalled inside pytest's).
Usage: python tests/browser_editor.py SCREENSHOT.png [CHROMIUM [lab|notebook|classic|notebook6 [loop|handler]]]
(``notebook`` is Notebook 7; ``classic`` the classic Notebook front end, served by nbclassic; ``notebook6`` the
classic Notebook 6 server, Colab's.  ``handler``: the editor tunes inside the Tune click, as on Colab, and the
kernel interrupt cancels it.)
"""
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
CELLS = [
    "import torch\ntorch.set_num_threads(1)\nfrom unitune_nb import UniTune\nfrom unitune_nb.widgets import Editor",
    "ed = Editor(UniTune(), scene_seed=31000000, tune_iters=500, tune_in_handler={handler})\ned",
]
SETTINGS = {
    "@jupyterlab/notebook-extension/tracker": {"autoStartDefaultKernel": True},
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false"},
}
# JupyterLab and Notebook 7 share the application object: ask it, not app-specific DOM, about the kernel
LAB = {
    "ready": "!!(window.jupyterapp && document.querySelector('.jp-Notebook'))",
    "idle": "window.jupyterapp?.shell?.currentWidget?.sessionContext?.session?.kernel?.status === 'idle'",
    # do not await the command's promise: it can wait on a dialog forever
    "run_all": "() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); return true; }",
    "interrupt": "() => { window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.interrupt(); return true; }",
    "output": ".jp-OutputArea-output",
}
CLASSIC = {  # the classic Notebook front end (nbclassic: Notebook 6's jQuery UI)
    "ready": "!!(window.Jupyter && Jupyter.notebook && Jupyter.notebook.kernel)",
    "idle": "!!document.querySelector('#kernel_indicator_icon.kernel_idle_icon')",
    "run_all": "() => { Jupyter.notebook.execute_all_cells(); return true; }",
    "interrupt": "() => { Jupyter.notebook.kernel.interrupt(); return true; }",
    "output": ".output_subarea",
}
SERVER = ["--IdentityProvider.token={token}", "--ServerApp.root_dir={root}"]  # jupyter_server's options
APPS = {  # how to start each front end, where it opens a notebook, how to drive it
    "lab": (["jupyterlab", "--LabApp.expose_app_in_browser=True", *SERVER], "/lab/tree/editor.ipynb", LAB),
    "notebook": (["notebook", "--JupyterNotebookApp.expose_app_in_browser=True", *SERVER], "/notebooks/editor.ipynb",
                 LAB),
    "classic": (["nbclassic", *SERVER], "/nbclassic/notebooks/editor.ipynb", CLASSIC),
    # Notebook 6 (Colab's notebook package): its own server and options; the same classic page
    "notebook6": (["notebook", "--NotebookApp.token={token}", "--NotebookApp.notebook_dir={root}"],
                  "/notebooks/editor.ipynb", CLASSIC),
}
PROGRESS = "document.querySelector('.progress-bar')?.style.width || ''"  # ipywidgets 7 and 8 draw it so
DIALOG_ACCEPT = ".jp-Dialog .jp-mod-accept, .modal-dialog .btn-primary"
SRC = "document.querySelectorAll('.widget-image')[1].getAttribute('src')"


def wait_js(page, expr: str, timeout: float = 60.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = page.evaluate(expr)
        if value:
            return value
        time.sleep(0.3)
    raise TimeoutError(f"still false after {timeout:.0f} s: {expr}")


def run_all(page, shot: Path, js: dict, timeout: float = 300.0) -> None:
    """Run every cell until the editor is displayed.

    Accepts any dialog (e.g. a kernel chooser) with its default, and sends run-all again when the kernel
    is idle but the editor is not there (a run-all sent while the kernel still starts can be lost).
    """
    end = time.monotonic() + timeout
    sent = -1e9
    while time.monotonic() < end:
        if page.evaluate("document.querySelectorAll('.widget-image').length >= 3"):
            return
        accept = page.locator(DIALOG_ACCEPT)
        if accept.count():
            accept.first.click()
        idle = page.evaluate(f"{js['idle']} && !document.body.innerText.includes('[*]')")
        if idle and time.monotonic() - sent > 30:
            page.evaluate(js["run_all"])
            sent = time.monotonic()
        time.sleep(1.0)
    page.screenshot(path=str(shot.with_suffix(".failed.png")))
    raise TimeoutError(f"the editor did not appear within {timeout:.0f} s")


def button(page, text: str):
    """The widget button whose label is exactly ``text`` (its icon makes the accessible name differ)."""
    return page.locator("button").filter(has_text=re.compile(rf"^\s*{re.escape(text)}\s*$"))


BUSY = ("[...document.querySelectorAll('button')].filter(b => ['Full resolution', 'Save', 'Tune']"
        ".includes(b.innerText.trim()) && b.disabled).length")


def tune_then_stop(page, js: dict, mode: str) -> dict:
    """Click Tune (500 iterations: minutes) and see the panel busy, then stop it.  ``loop``: the steps run on the
    event loop and a click on Cancel stops them.  ``handler`` (Colab's path): they run inside the click, the progress
    bar moves meanwhile, and the kernel interrupt (the notebook's stop button) cancels."""
    button(page, "Tune").click()
    said = "stop button (Interrupt) stops it" if mode == "handler" else "Cancel stops it"
    wait_js(page, f"document.body.innerText.includes('{said}')", 60)
    out = {"busy_buttons_disabled": wait_js(page, BUSY, 30)}
    if mode == "handler":
        out["progress_during_click"] = wait_js(page, f"parseFloat({PROGRESS}) > 0 && {PROGRESS}", 60)
    else:
        time.sleep(2.0)  # a few steps run, while the page stays responsive
    t = time.monotonic()
    page.evaluate(js["interrupt"]) if mode == "handler" else button(page, "Cancel").click()
    wait_js(page, "document.body.innerText.includes('tuning cancelled after')", 60)
    out["cancel_seconds"] = round(time.monotonic() - t, 2)
    out["cancel_status"] = page.evaluate("[...document.querySelectorAll('.widget-html')].map(e => e.innerText)"
                                         ".find(t => t.includes('cancelled'))")
    out["idle_after_cancel"] = page.evaluate(BUSY) == 0
    return out


def main(shot: Path, chromium: str = CHROMIUM, app: str = "lab", mode: str = "loop") -> dict:
    from playwright.sync_api import sync_playwright

    tmp = Path(tempfile.mkdtemp())
    nb = {"cells": [{"cell_type": "code", "metadata": {}, "source": c, "outputs": [], "execution_count": None}
                    for c in (CELLS[0], CELLS[1].format(handler=mode == "handler"))],
          "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
          "nbformat": 4, "nbformat_minor": 5}
    (tmp / "editor.ipynb").write_text(json.dumps(nb))
    # a fresh, isolated JupyterLab profile: no saved workspace, no news pop-up, and the notebook's kernel
    # starts without the "Select Kernel" dialog (which appeared, under load, and blocked run-all)
    settings = tmp / "lab-settings"
    for name, value in SETTINGS.items():
        f = settings / f"{name}.jupyterlab-settings"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(json.dumps(value))
    env = dict(os.environ, JUPYTERLAB_SETTINGS_DIR=str(settings), JUPYTERLAB_WORKSPACES_DIR=str(tmp / "lab-ws"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = "unitune-test"
    (module, *options), path, js = APPS[app]
    options = [o.format(token=token, root=tmp) for o in options]
    lab = subprocess.Popen([sys.executable, "-m", module, "--no-browser", f"--port={port}", "--allow-root", *options],
                           stdout=open(tmp / "lab.log", "w"), stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    res = {}
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=FLAGS)
            page = browser.new_page(viewport={"width": 1280, "height": 1100})
            page.goto(f"{url}{path}?token={token}")
            wait_js(page, js["ready"], 120)
            wait_js(page, js["idle"], 120)
            run_all(page, shot, js)
            before = page.evaluate(SRC)
            res.update(tune_then_stop(page, js, mode))
            iters = page.locator(".widget-inline-hbox:has-text('iterations') input").first
            iters.fill("4")
            iters.press("Enter")
            time.sleep(1.0)
            button(page, "Tune").click()
            wait_js(page, "document.body.innerText.includes('tuned in')", 300)
            after_tune = wait_js(page, f"{SRC} !== {json.dumps(before)} && {SRC}", 120)
            res["image_changed_after_tune"] = after_tune != before
            handle = page.locator(".widget-slider .noUi-handle, .widget-slider .ui-slider-handle").first
            box = handle.bounding_box()  # drag the guidance-scale handle to the right, as a user would
            page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            page.mouse.down()
            for dx in (10, 20, 30, 40):
                page.mouse.move(box["x"] + box["width"] / 2 + dx, box["y"] + box["height"] / 2)
            page.mouse.up()
            after_slider = wait_js(page, f"{SRC} !== {json.dumps(after_tune)} && {SRC}", 120)
            res["image_changed_after_slider"] = after_slider != after_tune
            button(page, "Full resolution").click()
            wait_js(page, "document.body.innerText.includes('full resolution (128 px)')", 120)
            button(page, "Save").click()
            wait_js(page, "document.body.innerText.includes('saved ')", 60)
            res["download_link"] = wait_js(page, "document.querySelector('a[download]')?.getAttribute('href')"
                                                 "?.slice(0, 22)", 30)
            res["status"] = wait_js(page, "Array.from(document.querySelectorAll('.widget-html'))"
                                          ".map(e => e.innerText).join(' | ')", 10)
            shot.parent.mkdir(parents=True, exist_ok=True)
            page.locator(js["output"]).last.screenshot(path=str(shot))
            res["screenshot_bytes"] = shot.stat().st_size
            browser.close()
    finally:
        lab.terminate()
        try:
            lab.wait(20)
        except subprocess.TimeoutExpired:
            lab.kill()
    return res


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), *sys.argv[2:5])))
