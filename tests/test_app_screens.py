"""Screenshots of the real window under a real X server (issue 23): the layout, the pipe labels and node names
of the demo graph, the error state that replaces a picture the graph can no longer make, and the training
panel with a live loss curve and preview.

The PNGs are kept in ``test-artifacts/``. Without Xvfb the driver runs on Qt's offscreen platform."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from doublure.engine.imageio import read_image

from test_app_screenshot import ARTIFACTS, shot_project, start_xvfb

DRIVER = Path(__file__).resolve().parent / "screens_driver.py"


def region(pixels: np.ndarray, rect) -> np.ndarray:
    x, y, w, h = (int(v) for v in rect)
    return pixels[y:y + h, x:x + w, :3]


def test_layout_pipe_labels_error_state_and_training_in_the_real_window(tmp_path):
    project = shot_project(tmp_path)
    out = ARTIFACTS / "screens"
    out.mkdir(parents=True, exist_ok=True)
    xvfb, env = start_xvfb(size="1920x1080x24")
    env["DOUBLURE_AUTOSAVE_DIR"] = str(tmp_path / "autosave")
    try:
        run = subprocess.run([sys.executable, str(DRIVER), str(project), str(out)], env=env, capture_output=True,
                             text=True, timeout=400)
    finally:
        if xvfb is not None:
            xvfb.terminate()
            xvfb.wait(timeout=10)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["drawn"]
    # Layout: a large viewer; the properties bin runs the full height on the right.
    _, _, cw, ch = report["canvas"]
    assert cw >= 1300 and ch >= 500, report["canvas"]
    px, _, _, ph = report["properties"]
    assert px >= cw and ph >= 0.85 * report["window"][1]
    layout = read_image(str(out / "layout.png")).pixels
    # Pipe labels: light text on the dark graph where each of ColorMatch1's inputs is labelled.
    assert set(report["labels"]) == {"source", "reference", "mask"}
    for name, rect in report["labels"].items():
        text = region(layout, rect)
        assert text.size and text.max() > 0.6, name
    assert report["name_inside"]
    # Error: the message names the node and the file; the viewer shows a red-framed box, no footage.
    assert "Read1" in report["message"] and "missing_plate.mp4" in report["message"]
    error = read_image(str(out / "error.png")).pixels
    canvas = region(error, report["canvas"])
    red = (canvas[..., 0] > 0.6) & (canvas[..., 1] < 0.35)
    assert red.sum() > 500
    assert len(np.unique((canvas * 255).astype(np.uint8).reshape(-1, 3), axis=0)) < 1500
    # Read1 is drawn red in the node graph.
    node = region(error, report["read_node"])
    assert node[..., 0].mean() > node[..., 1].mean() + 0.15
    # Training: the loss curve is drawn (QtCharts' first series is blue) and the preview grid shows faces.
    assert report["trained"], report["training_state"]
    training = read_image(str(out / "training.png")).pixels
    chart = region(training, report["chart"])
    blue = (chart[..., 2] > 0.7) & (chart[..., 0] < 0.35) & (chart[..., 1] > 0.45)
    assert blue.sum() > 40
    preview = region(training, report["preview"])
    assert len(np.unique((preview * 255).astype(np.uint8).reshape(-1, 3), axis=0)) > 500
