"""Image files written and read back through OpenImageIO: formats, bit depths, metadata, bad files."""
import os

import numpy as np
import OpenImageIO as oiio
import pytest

from doublure.engine import imageio
from doublure.engine.errors import MediaError


def gradient(h=24, w=32, c=4):
    rng = np.random.default_rng(7)
    return rng.random((h, w, c), dtype=np.float32)


@pytest.mark.parametrize("compression", ["zip", "piz", "dwaa", "none"])
def test_exr_half_roundtrip_with_compression(tmp_path, compression):
    pixels = gradient() * 4.0  # scene-linear values above 1 survive in EXR
    path = tmp_path / "a.exr"
    imageio.write_image(path, pixels, datatype="half", compression=compression)
    img = imageio.read_image(path)
    assert img.channels == ("R", "G", "B", "A") and img.bits == 16 and img.float_data
    assert img.metadata["compression"].startswith(compression)
    if compression == "dwaa":  # lossy (DCT), worst on this noise: a few percent
        np.testing.assert_allclose(img.pixels, pixels, rtol=0.1, atol=0.02)
        assert np.abs(img.pixels - pixels).mean() < 0.01
    else:  # half has 10 mantissa bits
        np.testing.assert_allclose(img.pixels, pixels, atol=4.0 * 2 ** -10)


def test_exr_float_is_exact(tmp_path):
    pixels = gradient() * 100 - 50
    imageio.write_image(tmp_path / "f.exr", pixels, datatype="float")
    img = imageio.read_image(tmp_path / "f.exr")
    assert img.bits == 32
    np.testing.assert_array_equal(img.pixels, pixels)


@pytest.mark.parametrize("name,datatype,levels", [
    ("a.dpx", "10 bit", 1023), ("a.tif", "16 bit", 65535), ("a.png", "8 bit", 255), ("a.png", "16 bit", 65535),
])
def test_integer_formats_quantise_to_their_bit_depth(tmp_path, name, datatype, levels):
    pixels = gradient(c=3 if name.endswith("dpx") else 4)
    if pixels.shape[2] == 4:
        pixels[..., 3] = 1.0  # opaque: PNG stores straight alpha, see the premultiplied test below
    imageio.write_image(tmp_path / name, pixels, datatype=datatype)
    img = imageio.read_image(tmp_path / name)
    assert img.bits == {1023: 10, 65535: 16, 255: 8}[levels] and not img.float_data
    np.testing.assert_allclose(img.pixels, np.round(pixels * levels) / levels, atol=0.5 / levels + 2e-5)  # round, not floor


def test_png_alpha_is_stored_straight_and_read_premultiplied(tmp_path):
    straight = np.array([[[0.8, 0.4, 0.2, 0.5]]], np.float32)
    premultiplied = straight.copy()
    premultiplied[..., :3] *= 0.5
    imageio.write_image(tmp_path / "a.png", premultiplied, datatype="16 bit")
    config = oiio.ImageSpec()
    config.attribute("oiio:UnassociatedAlpha", 1)
    inp = oiio.ImageInput.open(str(tmp_path / "a.png"), config)
    stored = inp.read_image(0, 0, 0, 4, "float")
    inp.close()
    np.testing.assert_allclose(stored, straight, atol=1e-4)
    np.testing.assert_allclose(imageio.read_image(tmp_path / "a.png").pixels, premultiplied, atol=1e-4)


def test_jpeg_drops_alpha_and_is_close(tmp_path):
    pixels = np.full((16, 16, 4), 0.5, np.float32)
    imageio.write_image(tmp_path / "a.jpg", pixels)
    img = imageio.read_image(tmp_path / "a.jpg")
    assert img.pixels.shape == (16, 16, 3)
    np.testing.assert_allclose(img.pixels, 0.5, atol=2 / 255)


@pytest.mark.parametrize("name", ["m.exr", "m.dpx", "m.tif", "m.png", "m.jpg"])
def test_doublure_metadata_survives_every_format(tmp_path, name):
    provenance = {"synthetic_face": True, "model": "sha256:abc", "rights": "AGR-2024-17"}
    meta = {"doublure/provenance": provenance, "doublure/graph": "sh010", "doublure/frame": 1001}
    imageio.write_image(tmp_path / name, gradient(c=3), metadata=meta)
    read = imageio.read_image(tmp_path / name).metadata
    assert read["doublure/provenance"] == provenance
    assert read["doublure/graph"] == "sh010"
    assert read["doublure/frame"] == 1001


def test_write_is_atomic_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "out.exr"
    imageio.write_image(target, gradient())
    before = target.read_bytes()
    with pytest.raises(MediaError, match="out.exr"):
        imageio.write_image(target, gradient(), datatype="8 bit")  # EXR takes half/float only
    with pytest.raises(Exception):
        imageio.write_image(target, np.zeros((0, 0, 3), np.float32))
    assert target.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["out.exr"]


def test_missing_corrupt_and_truncated_files_name_file_and_frame(tmp_path):
    with pytest.raises(MediaError, match=r"missing image file .*nope\.exr \(frame 12\)"):
        imageio.read_image(tmp_path / "nope.exr", frame=12)

    garbage = tmp_path / "garbage.exr"
    garbage.write_bytes(b"not an image at all" * 20)
    with pytest.raises(MediaError, match=r"garbage\.exr \(frame 3\)"):
        imageio.read_image(garbage, frame=3)

    whole = tmp_path / "whole.exr"
    imageio.write_image(whole, gradient(256, 256), compression="zip")
    truncated = tmp_path / "truncated.exr"
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size * 2 // 3])
    with pytest.raises(MediaError, match=r"truncated image .*truncated\.exr \(frame 5\)"):
        imageio.read_image(truncated, frame=5)
    assert imageio.is_complete_image(whole) and not imageio.is_complete_image(truncated)


def test_exr_data_window_is_placed_in_display_window(tmp_path):
    spec = oiio.ImageSpec(4, 3, 3, "float")
    spec.x, spec.y = 2, 1
    spec.full_x, spec.full_y, spec.full_width, spec.full_height = 0, 0, 8, 6
    path = str(tmp_path / "dw.exr")
    out = oiio.ImageOutput.create(path)
    out.open(path, spec)
    out.write_image(np.ones((3, 4, 3), np.float32))
    out.close()
    img = imageio.read_image(path)
    assert img.pixels.shape == (6, 8, 3)
    assert img.pixels.sum() == 4 * 3 * 3 and np.all(img.pixels[1:4, 2:6] == 1)


def test_frame_patterns():
    assert imageio.frame_path("/p/plate.####.exr", 12) == "/p/plate.0012.exr"
    assert imageio.frame_path("/p/plate.%04d.exr", 1001) == "/p/plate.1001.exr"
    assert imageio.frame_path("plate.#.exr", 7) == "plate.7.exr"
    assert imageio.frame_path("plate.%d.exr", 123) == "plate.123.exr"
    assert imageio.frame_path("/p/still.exr", 5) == "/p/still.exr"
    assert imageio.frame_path("/v1.2/plate.##.png", 3) == "/v1.2/plate.03.png"
    assert imageio.is_sequence_pattern("a.####.exr") and imageio.is_sequence_pattern("a.%04d.exr")
    assert not imageio.is_sequence_pattern("/shots/sh#01/a.exr".replace("#", "_"))


def test_detect_sequences(tmp_path):
    for f in (8, 9, 10, 12):
        (tmp_path / f"plate.{f:04d}.exr").write_bytes(b"")
    for f in (1001, 1002):
        (tmp_path / f"other_{f}.png").write_bytes(b"")
    for f in (9, 10):
        (tmp_path / f"loose.{f}.tif").write_bytes(b"")
    (tmp_path / ".plate.0011.tmp-1234.exr").write_bytes(b"")  # an unfinished write is not a frame
    (tmp_path / "notes.txt").write_bytes(b"")
    found = {os.path.basename(s.pattern): s for s in imageio.detect_sequences(tmp_path)}
    assert set(found) == {"plate.####.exr", "other_####.png", "loose.#.tif"}
    plate = found["plate.####.exr"]
    assert (plate.first, plate.last, plate.missing) == (8, 12, (11,))
    assert found["loose.#.tif"].frames == (9, 10)
    assert imageio.frame_path(plate.pattern, 8) == str(tmp_path / "plate.0008.exr")


def test_exr_half_given_as_half_is_written_as_it_is(tmp_path):
    pixels = gradient() * 4.0
    imageio.write_image(tmp_path / "f.exr", pixels, datatype="half")
    imageio.write_image(tmp_path / "h.exr", pixels.astype(np.float16), datatype="half")
    a, b = imageio.read_image(tmp_path / "f.exr"), imageio.read_image(tmp_path / "h.exr")
    assert np.array_equal(a.pixels, b.pixels) and b.bits == 16
