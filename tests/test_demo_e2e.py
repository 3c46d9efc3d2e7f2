"""The demo shot end to end, headless: every frame written, the face changed, the plate kept bit for bit
wherever the new face did not land, and provenance in the EXR headers and the H.264 preview."""
import numpy as np
import OpenImageIO as oiio

import doublure.nodes  # noqa: F401  (registers the node library)
from doublure.app.demo import DEMO_PROJECT, build_demo_graph, render_demo
from doublure.engine import imageio, video


def test_demo_project_is_the_graph_the_builder_makes():
    from doublure import engine

    shipped = engine.load(str(DEMO_PROJECT))
    built = build_demo_graph()
    assert [(n.type_name, n.name) for n in shipped.nodes] == [(n.type_name, n.name) for n in built.nodes]
    # The plate reaches each finishing node's side (reference) input through a column of Dots (issue 23).
    assert [n.type_name for n in shipped.nodes] == ["Read", "FaceDetect", "SwapModel", "Dot", "ColorMatch", "Dot",
                                                    "ShadowMatch", "Dot", "EyeFix", "Dot", "Grain", "Write", "Write"]
    for name in ("ColorMatch1", "ShadowMatch1", "EyeFix1", "Grain1"):
        plate = shipped[name].input_nodes[1]
        while plate.type_name == "Dot":
            plate = plate.input_nodes[0]
        assert plate is shipped["Read1"], name
    assert shipped["SwapModel1"].path("model") == built["SwapModel1"].path("model")


def test_demo_renders_headless_with_the_face_replaced_and_provenance(tmp_path):
    result = render_demo(tmp_path, log=lambda text: None)
    from doublure import engine

    g = engine.load(result["project"])
    first, last = g.settings["first"], g.settings["last"]
    # The plate through an identical Write, to compare files with files.
    plate_write = g.create("Write", inputs=[g["Read1"]], file=str(tmp_path / "plate" / "plate.####.exr"),
                           file_type="exr", compression="zip")
    g.render([plate_write], f"{first}-{last}")
    changed = []
    for frame in range(first, last + 1):
        out = imageio.read_image(imageio.frame_path(result["exr"], frame), frame)
        plate = imageio.read_image(imageio.frame_path(str(tmp_path / "plate" / "plate.####.exr"), frame), frame)
        assert out.pixels.shape == plate.pixels.shape
        assert out.metadata["doublure/synthetic_face"] is True, f"frame {frame} lacks provenance"
        assert out.metadata["doublure/rights"], f"frame {frame} lacks the rights reference"
        faces = g.evaluate(g["FaceDetect1"], frame).faces
        assert len(faces) == 1
        # Wherever no new face landed (the swap's alpha is 0: beyond its feathered mask, and the forehead or
        # hair inside the face that the model's mask leaves out) the whole chain kept the plate, bit for bit.
        coverage = g.evaluate(g["SwapModel1"], frame).faces[0].coverage
        cy0, cy1, cx0, cx1 = coverage.window
        keep = np.ones(out.pixels.shape[:2], bool)
        keep[cy0:cy1, cx0:cx1] = coverage.alpha[0].cpu().numpy() == 0
        x0, y0, x1, y1 = faces[0].box
        assert keep[int(y0):int(y1), int(x0):int(x1)].mean() > 0.05   # some of the face box is plate too
        assert np.array_equal(out.pixels[keep], plate.pixels[keep]), f"frame {frame}: plate changed off the face"
        inner = (slice(int(y0 + 0.3 * (y1 - y0)), int(y1 - 0.2 * (y1 - y0))),
                 slice(int(x0 + 0.2 * (x1 - x0)), int(x1 - 0.2 * (x1 - x0))))
        changed.append(float(np.abs(out.pixels[inner] - plate.pixels[inner]).mean()))
    assert min(changed) > 0.005, f"the face is not replaced on some frame: {min(changed):.4f}"
    # Three frames computing at once, from an empty cache and empty memos, render the same files bit for bit
    # (the temporal nodes read their windows, and share memos, across the threads).
    from doublure.engine.cache import clear_memos

    g.cache.clear()
    clear_memos()
    g["Write1"]["file"] = str(tmp_path / "parallel" / "demo.####.exr")
    assert g.render(["Write1"], f"{first}-{last}", frame_workers=3).ok
    for frame in range(first, last + 1):
        parallel = imageio.read_image(imageio.frame_path(g["Write1"].path("file"), frame), frame)
        sequential = imageio.read_image(imageio.frame_path(result["exr"], frame), frame)
        assert np.array_equal(parallel.pixels, sequential.pixels), f"frame {frame} differs with 3 at once"
    reader = video.VideoReader(result["preview"])
    assert reader.frame_count == last - first + 1
    assert reader.metadata.get("doublure/synthetic_face") is True
    assert "research" in str(reader.metadata.get("doublure/rights")).lower()
