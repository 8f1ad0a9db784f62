"""docs/editor.png: the live editor in JupyterLab (Chromium), tuned on world scene 2, "beikkpic on snow" at full
resolution.  Usage: python scripts/editor_screenshot.py [OUT.png]  (needs /usr/bin/chromium and playwright)."""
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
import browser_editor as be  # noqa: E402  (its helpers: start a front end, run all cells, find buttons)

OUT = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "editor.png"

be.CELLS = [
    "import torch\ntorch.set_num_threads(2)\nfrom unitune_nb import UniTune, world\nfrom unitune_nb.widgets import Editor\n"
    "ut = UniTune()\nut.tune(world.render(world.random_scene(2), 128), progress=False)",
    "ed = Editor(ut)\ned.prompt.value = 'beikkpic on snow'\ned",
]
from playwright.sync_api import sync_playwright
tmp = Path(tempfile.mkdtemp())
nb = {"cells": [{"cell_type": "code", "metadata": {}, "source": c, "outputs": [], "execution_count": None} for c in be.CELLS],
      "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}, "nbformat": 4, "nbformat_minor": 5}
(tmp / "editor.ipynb").write_text(json.dumps(nb))
settings = tmp / "lab-settings"
for name, value in be.SETTINGS.items():
    f = settings / f"{name}.jupyterlab-settings"; f.parent.mkdir(parents=True, exist_ok=True); f.write_text(json.dumps(value))
env = dict(os.environ, JUPYTERLAB_SETTINGS_DIR=str(settings), JUPYTERLAB_WORKSPACES_DIR=str(tmp / "lab-ws"))
with socket.socket() as s:
    s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
(module, *options), path, js = be.APPS["lab"]
lab = subprocess.Popen([sys.executable, "-m", module, "--no-browser", f"--port={port}", "--allow-root",
                        "--IdentityProvider.token=t", f"--ServerApp.root_dir={tmp}", *options],
                       stdout=open(tmp / "lab.log", "w"), stderr=subprocess.STDOUT, env=env)
url = f"http://127.0.0.1:{port}"
try:
    for _ in range(240):
        try:
            urllib.request.urlopen(f"{url}/api/status?token=t", timeout=1); break
        except OSError:
            time.sleep(0.5)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=be.CHROMIUM, args=be.FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1100})
        page.goto(f"{url}{path}?token=t")
        be.wait_js(page, js["ready"], 120); be.wait_js(page, js["idle"], 120)
        be.run_all(page, OUT, js)
        be.wait_js(page, "document.body.innerText.includes('preview (32 px)')", 120)
        be.button(page, "Full resolution").click()
        be.wait_js(page, "document.body.innerText.includes('full resolution (128 px)')", 120)
        time.sleep(1)
        page.locator(js["output"]).last.screenshot(path=str(OUT))
        browser.close()
finally:
    lab.terminate()
print(f"wrote {OUT}")
