"""The screenshot entry point (``doublure --screenshot out.png shot.dbl``) under a real X server.

The test starts Xvfb itself when the binary is installed (Debian: xvfb libxcb-cursor0 libxcb-icccm4
libxcb-keysyms1) and otherwise grabs on Qt's offscreen platform. The PNG is kept in ``test-artifacts/``.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import doublure.nodes  # noqa: F401
from doublure.app.demo import prepare_demo
from doublure.engine.imageio import read_image

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"


def shot_project(tmp_path: Path) -> Path:
    """A working copy of the bundled demo shot (faces tracked, grain analysed, Writes aimed into
    ``tmp_path``), so the app's autosaves and track files never land in the repository. Its viewer wipes
    between the plate (A) and the finished swap (B)."""
    graph = prepare_demo(tmp_path / "demo", log=lambda text: None)
    return Path(graph.project_path)


def start_xvfb(size: str = "1600x1000x24") -> tuple[subprocess.Popen | None, dict]:
    env = dict(os.environ)
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        env["QT_QPA_PLATFORM"] = "offscreen"
        return None, env
    display = f":{90 + os.getpid() % 500}"
    proc = subprocess.Popen([xvfb, display, "-screen", "0", size, "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lock = Path(f"/tmp/.X{display[1:]}-lock")
    deadline = time.time() + 20
    while not lock.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "Xvfb did not start"
    env.update(DISPLAY=display, QT_QPA_PLATFORM="xcb")
    return proc, env


def test_screenshot_of_the_main_window_with_the_shot(tmp_path):
    project = shot_project(tmp_path)
    ARTIFACTS.mkdir(exist_ok=True)
    png = ARTIFACTS / "app_screenshot.png"
    if png.exists():
        png.unlink()
    xvfb, env = start_xvfb()
    env["DOUBLURE_AUTOSAVE_DIR"] = str(tmp_path / "autosave")
    try:
        run = subprocess.run([sys.executable, "-c", "import sys; from doublure.app.main_window import run_app; "
                              "sys.exit(run_app(sys.argv[1], screenshot=sys.argv[2]))", str(project), str(png)],
                             env=env, capture_output=True, text=True, timeout=300)
    finally:
        if xvfb is not None:
            xvfb.terminate()
            xvfb.wait(timeout=10)
    assert run.returncode == 0, run.stderr[-3000:]
    pixels = read_image(str(png)).pixels
    assert pixels.shape[0] >= 600 and pixels.shape[1] >= 1000
    grey = pixels[..., :3].astype(np.float64).mean(axis=2)
    assert grey.std() > 0.05, "the screenshot is blank"
    # The viewer drew footage: its area holds far more distinct colours than flat UI chrome does.
    top = (pixels[: pixels.shape[0] // 2, : pixels.shape[1] * 2 // 3, :3] * 255).astype(np.uint8)
    assert len(np.unique(top.reshape(-1, 3), axis=0)) > 2000
