"""The bundled demo shot: W009's plate with M030's face, through the whole finishing chain.

``resources/demo/demo.dbl`` is written by :func:`build_demo_graph` (``python -m doublure.app.demo --rebuild``).
``doublure demo`` never runs it in place: :func:`prepare_demo` saves a copy into a work folder (paths rebased),
analyses the faces and the grain there, and points the Writes into it, so the installed files stay untouched.
Headless, it then renders the shot to an EXR sequence and an H.264 preview; with a display it opens the copy.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

DEMO_DIR = Path(__file__).resolve().parents[1] / "resources" / "demo"
if not DEMO_DIR.is_dir():  # installed (not editable): resources live inside the package
    import doublure.resources

    DEMO_DIR = Path(doublure.resources.__file__).resolve().parent / "demo"
DEMO_PROJECT = DEMO_DIR / "demo.dbl"
DEMO_MODEL = DEMO_DIR / "demo_model.dbm"
PLATE = DEMO_DIR / "media" / "W009_front_happy_level3_001.mp4"
DOT_Y_OFFSET = 22  # a Dot's position is its top-left corner: this puts its centre level with a node's side input


def build_demo_graph():
    """The demo graph: Read -> FaceDetect -> SwapModel -> ColorMatch -> ShadowMatch -> EyeFix -> Grain ->
    Write (EXR) and Write (H.264 preview); the plate feeds every finishing node's reference input, and the
    viewer compares the plate (A) with the result (B)."""
    import doublure.nodes  # noqa: F401
    from doublure import engine

    g = engine.Graph(name="demo")
    # The main stream runs straight down x = 0; the plate comes in from the left through a column of Dots,
    # one level with each finishing node, into its side (reference) input, as a Nuke artist lays it out.
    step, dot_x = 90, -130
    read = g.create("Read", file=str(PLATE), position=(0, 0))
    first, last = read.action_detect_range(g)
    g.set_setting("last", last)
    g.set_setting("first", first)
    g.set_setting("fps", 25.0)
    g.set_setting("declared_use", "demonstration")  # the MEAD terms: research use; the model allows a demonstration
    detect = g.create("FaceDetect", inputs=[read], position=(0, step))
    swap = g.create("SwapModel", inputs=[detect], model=str(DEMO_MODEL), position=(0, 2 * step))
    node, plate = swap, read
    for i, type_name in enumerate(("ColorMatch", "ShadowMatch", "EyeFix", "Grain")):
        y = (3 + i) * step
        plate = g.create("Dot", inputs=[plate], position=(dot_x, y + DOT_Y_OFFSET))
        node = g.create(type_name, inputs=[node, plate], position=(0, y))
    # PIZ: lossless like zip, and on a grainy plate 40% smaller and a third cheaper to write (bench/RESULTS.md)
    g.create("Write", inputs=[node], file=str(DEMO_DIR / "render" / "demo.####.exr"), file_type="exr",
             compression="piz", position=(0, 7 * step + 20))
    g.create("Write", inputs=[node], file=str(DEMO_DIR / "render" / "demo_preview.mp4"), file_type="mp4",
             colorspace="srgb", preset="veryfast", position=(180, 7 * step + 20))
    g.ui["viewer"] = {"inputs": {"1": read.uuid, "2": node.uuid}, "a": "1", "b": "2", "mode": "wipe", "wipe": 0.5}
    g.ui["timeline"] = {"frame": first + (last - first) // 2}
    return g


def prepare_demo(work_dir: str | os.PathLike, log: Callable[[str], None] = print):
    """Copy the demo project into ``work_dir``, track its faces, analyse its grain and aim its Writes at
    ``work_dir/render``. Returns the saved graph (its ``project_path`` is the copy)."""
    import doublure.nodes  # noqa: F401
    from doublure import engine
    from doublure.engine.errors import DoublureError

    if not DEMO_MODEL.joinpath("model.json").is_file():
        raise DoublureError(f"the demo identity model is missing: {DEMO_MODEL} "
                            "(rebuild it with resources/demo/build_model.sh)")
    work_dir = Path(work_dir).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    g = engine.load(str(DEMO_PROJECT))
    project = work_dir / "demo.dbl"
    g.save(str(project))
    render_dir = work_dir / "render"
    g["Write1"]["file"] = str(render_dir / "demo.####.exr")
    g["Write2"]["file"] = str(render_dir / "demo_preview.mp4")
    start = time.perf_counter()
    g["FaceDetect1"].action_track(g)
    log(f"tracked faces over frames {g.settings['first']}-{g.settings['last']} "
        f"in {time.perf_counter() - start:.1f} s")
    start = time.perf_counter()
    g["Grain1"].action_analyse(g)
    log(f"analysed the plate's grain in {time.perf_counter() - start:.1f} s")
    g.save(str(project))
    g.undo_stack.clear()
    return g


def render_demo(work_dir: str | os.PathLike, log: Callable[[str], None] = print) -> dict:
    """Prepare the demo in ``work_dir`` and render every frame of both Writes. Returns the output paths."""
    from doublure.engine.progress import ProgressBar

    g = prepare_demo(work_dir, log)
    frames = list(range(g.settings["first"], g.settings["last"] + 1))
    bar = ProgressBar(len(frames), "frames")
    report = g.render(None, frames, progress=lambda done, total, frame: bar.update(done, f"frame {frame}"))
    bar.close()
    timings = sorted(g.timings.items(), key=lambda kv: -kv[1].seconds)
    log("time per node: " + ", ".join(f"{name} {t.seconds / max(t.computes, 1) * 1e3:.0f} ms"
                                      for name, t in timings))
    out = Path(work_dir).resolve()
    return {"project": str(out / "demo.dbl"), "exr": str(out / "render" / "demo.####.exr"),
            "preview": str(out / "render" / "demo_preview.mp4"), "frames": len(frames),
            "seconds": report.seconds}


def run_demo(headless: bool, out_dir: str | None = None) -> int:
    """``doublure demo``: open the demo in the app, or render it when ``headless``."""
    work_dir = out_dir or tempfile.mkdtemp(prefix="doublure-demo-")
    log = lambda text: print(f"doublure demo: {text}", file=sys.stderr)  # noqa: E731
    if headless:
        result = render_demo(work_dir, log)
        print(f"rendered {result['frames']} frames in {result['seconds']:.1f} s "
              f"({result['frames'] / result['seconds']:.1f} fps)")
        print(f"  EXR frames:     {result['exr']}")
        print(f"  H.264 preview:  {result['preview']}")
        print(f"  project:        {result['project']}")
        return 0
    graph = prepare_demo(work_dir, log)
    from doublure.app.main_window import run_app

    return run_app(project_path=graph.project_path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Rebuild resources/demo/demo.dbl from build_demo_graph().")
    parser.add_argument("--rebuild", action="store_true", required=True)
    parser.parse_args(argv)
    g = build_demo_graph()
    g.save(str(DEMO_PROJECT))
    print(f"wrote {DEMO_PROJECT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
