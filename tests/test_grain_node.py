"""Grain on a real MEAD plate carrying known synthetic grain: analyse, then regrain the clean face."""
import numpy as np
import pytest
import torch

import doublure.nodes  # noqa: F401
from doublure import engine
from doublure.engine import DoublureError, warnings_of
from doublure.faces.masks import render_mask
from doublure.finish import grain as grain_mod
from doublure.finish.colour import luma_weights
from doublure.nodes import _finish

import finish_nodes  # noqa: F401


@pytest.fixture(scope="module")
def shot(media_dir):
    g = engine.Graph()
    g.set_setting("first", 1)
    g.set_setting("last", 40)
    read = g.create("Read", file=str(media_dir / "mead" / "W009_front_neutral_level1_001.mp4"), first=1, last=40)
    clean = g.create("FaceDetect")  # the clean face stands in for the swap
    clean.set_input(0, read)
    plate = g.create("TestFinishGrain")
    plate.set_input(0, clean)
    node = g.create("Grain", analysis_samples=4)
    node.set_input(0, clean)
    node.set_input(1, plate)
    node.action_analyse()
    return g, clean, plate, node


def _tiles_power(noise, skin, tile=16):
    """Radial power profile of (3, H, W) noise over tiles fully inside the skin mask."""
    c, h, w = noise.shape
    spectra = []
    for y in range(0, h - tile + 1, tile // 2):
        for x in range(0, w - tile + 1, tile // 2):
            if skin[y : y + tile, x : x + tile].all():
                t = noise[:, y : y + tile, x : x + tile].double()
                t = t - t.mean(dim=(1, 2), keepdim=True)
                spectra.append(torch.fft.fft2(t).abs().pow(2))
    assert len(spectra) >= 8
    return grain_mod.radial_profile(torch.stack(spectra).mean(0), bins=tile // 2)


def test_analysis_is_stored_undoably_with_its_frames(shot):
    g, clean, plate, node = shot
    a = node["analysis"]
    assert a["schema"] == grain_mod.ANALYSIS_SCHEMA and a["frames"] == [1, 14, 27, 40]
    assert len(a["std"]) >= 2 and len(a["spectrum"]) == 3
    g.undo()
    assert node["analysis"] is None
    g.redo()
    assert node["analysis"] == a


def test_regrained_face_matches_the_plate_grain(shot):
    g, clean, plate, node = shot
    frame = 20
    c = g.evaluate(clean, frame)
    p = g.evaluate(plate, frame)
    out = g.evaluate(node, frame)
    skin = render_mask(c.faces, "skin", (c.height, c.width), grow=-8)[0] > 0.999
    known = (p.tensor - c.tensor)[:3].cpu()
    added = (out.tensor - c.tensor)[:3].cpu()
    std_plate = known[:, skin].std(dim=1)
    std_out = added[:, skin].std(dim=1)
    np.testing.assert_allclose(std_out.numpy(), std_plate.numpy(), rtol=0.10)
    prof_plate = _tiles_power(known, skin)
    prof_out = _tiles_power(added, skin)
    for a, b in zip(prof_plate, prof_out):
        assert np.corrcoef(a[1:].numpy(), b[1:].numpy())[0, 1] >= 0.9
    # only where the swap replaced the plate: far from the face nothing is added
    assert torch.equal(out.tensor[:, :, :20], c.tensor[:, :, :20])


def test_grain_is_seeded_by_frame(shot):
    g, clean, plate, node = shot
    a1, a2 = g.evaluate(node, 20).tensor, g.evaluate(node, 21).tensor
    c1, c2 = g.evaluate(clean, 20).tensor, g.evaluate(clean, 21).tensor
    assert g.hash_of(node, g.context(20)) != g.hash_of(node, g.context(21))
    n1, n2 = (a1 - c1).flatten().cpu(), (a2 - c2).flatten().cpu()
    keep = (n1 != 0) & (n2 != 0)
    assert abs(np.corrcoef(n1[keep].numpy(), n2[keep].numpy())[0, 1]) < 0.1


def test_no_analysis_passes_the_input_through_with_a_warning(shot):
    g, clean, plate, _ = shot
    fresh = g.create("Grain")
    fresh.set_input(0, clean)
    out, source = g.evaluate(fresh, 5), g.evaluate(clean, 5)
    assert torch.equal(out.tensor, source.tensor) and out.faces == source.faces
    assert "Analyse" in warnings_of(out)[fresh.name] and not warnings_of(source)


def test_renewal_is_measured_on_the_plate_and_the_grain_stays_on_the_face(shot):
    g, clean, plate, node = shot
    # the fixture's plate carries synthetic grain that is new every frame
    assert min(node["analysis"]["renewal"]) > 0.7
    # the MEAD plate itself (H.264): what looks like grain in one frame mostly stays
    own = g.create("Grain", analysis_samples=4)
    own.set_input(0, clean)
    own.set_input(1, clean.input(0))  # the Read
    analysis = own.action_analyse()
    assert max(analysis["renewal"]) < 0.1
    c1, c2 = g.evaluate(clean, 20), g.evaluate(clean, 21)
    skin = render_mask(c1.faces, "skin", (c1.height, c1.width), grow=-8)[0] > 0.999
    n1 = (g.evaluate(own, 20).tensor - c1.tensor)[:3, skin].cpu()
    n2 = (g.evaluate(own, 21).tensor - c2.tensor)[:3, skin].cpu()
    # the face barely moves between these frames: the attached grain is nearly the same
    assert np.corrcoef(n1.flatten().numpy(), n2.flatten().numpy())[0, 1] > 0.6
    np.testing.assert_allclose(n1.std(dim=1).numpy(), n2.std(dim=1).numpy(), rtol=0.1)
    own["renewal_mode"] = "manual"
    own["renewal"] = 1.0
    m1 = (g.evaluate(own, 20).tensor - c1.tensor)[:3, skin].cpu()
    m2 = (g.evaluate(own, 21).tensor - c2.tensor)[:3, skin].cpu()
    assert abs(np.corrcoef(m1.flatten().numpy(), m2.flatten().numpy())[0, 1]) < 0.1
    # the same spatial strength either way
    np.testing.assert_allclose(m1.std(dim=1).numpy(), n1.std(dim=1).numpy(), rtol=0.1)


def test_an_analysis_of_schema_1_renders_as_it_did(shot):
    g, clean, plate, node = shot
    old = dict(node["analysis"], schema="doublure.grain/1")
    for key in ("renewal", "renewing_spectrum", "renewal_tiles"):
        old.pop(key)
    legacy = g.create("Grain", analysis=old)
    legacy.set_input(0, clean)
    c = g.evaluate(clean, 20)
    face = c.faces[0]
    window = _finish.swap_window(face, (c.height, c.width))
    lum = torch.einsum("c,chw->hw", luma_weights("ACEScg", c.device), c.tensor[:3].float())[None]
    y0, y1, x0, x1 = window
    expect = grain_mod.synthesise_grain(lum[:, y0:y1, x0:x1], old, _finish.frame_seed(20, 0, 0))
    added = (g.evaluate(legacy, 20).tensor - c.tensor)[:3, y0:y1, x0:x1]
    weight = _finish.swap_region(face, window, c.device)
    torch.testing.assert_close(added, expect * weight, atol=2e-6, rtol=0)
    legacy["analysis"] = dict(old, schema="doublure.grain/0")
    with pytest.raises(DoublureError, match="analyse again"):
        g.evaluate(legacy, 20)
