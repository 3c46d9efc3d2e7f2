"""OCIO colour management checked against colour-science's reference implementation."""
import colour
import numpy as np
import pytest
import torch

from doublure.engine import colour as C
from doublure.engine.errors import DoublureError

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def srgb_eotf(v):
    return colour.cctf_decoding(np.asarray(v, dtype=np.float64), function="sRGB")


def test_srgb_mid_grey_both_ways():
    grey = np.full((1, 1, 3), 0.18, np.float32)
    encoded = C.convert(grey, "linear", "sRGB")
    expected = colour.cctf_encoding(0.18, function="sRGB")
    assert abs(expected - 0.4614) < 1e-4
    np.testing.assert_allclose(encoded, expected, atol=1e-4)
    np.testing.assert_allclose(C.convert(encoded, "sRGB", "linear"), 0.18, atol=1e-4)


def test_srgb_ramp_matches_colour_science():
    ramp = np.linspace(0.0, 1.0, 256, dtype=np.float32)
    pixels = np.repeat(ramp[None, :, None], 3, axis=2)
    linear = C.convert(pixels, "sRGB", "linear")
    np.testing.assert_allclose(linear[0, :, 1], srgb_eotf(ramp), atol=5e-5)
    back = C.convert(linear, "linear", "sRGB")
    np.testing.assert_allclose(back, pixels, atol=5e-5)


def test_rec709_primaries_in_acescg_match_colour_science():
    primaries = np.eye(3, dtype=np.float32).reshape(1, 3, 3)  # red, green, blue pixels
    acescg = C.convert(primaries, "linear", "ACEScg")[0]
    # OCIO's ACES config adapts D65 -> ACES white with Bradford.
    expected = colour.RGB_to_RGB(np.eye(3), "sRGB", "ACEScg", chromatic_adaptation_transform="Bradford")
    np.testing.assert_allclose(acescg, expected, atol=2e-4)
    np.testing.assert_allclose(C.convert(acescg[None], "ACEScg", "linear")[0], np.eye(3), atol=1e-5)


def test_acescct_matches_colour_science():
    values = np.array([-0.01, 0.0, 0.0078125, 0.18, 1.0, 16.0], np.float32)
    pixels = np.repeat(values[None, :, None], 3, axis=2)
    cct = C.convert(pixels, "ACEScg", "ACEScct")[0, :, 0]
    with np.errstate(divide="ignore", invalid="ignore"):  # colour evaluates log2 on both branches
        expected = colour.models.log_encoding_ACEScct(values)
    np.testing.assert_allclose(cct, expected, atol=2e-5)


def test_numpy_inplace_and_copy():
    pixels = np.full((2, 2, 4), 0.18, np.float32)
    copy = C.convert(pixels, "linear", "sRGB")
    assert copy is not pixels and pixels[0, 0, 0] == np.float32(0.18)
    same = C.convert(pixels, "linear", "sRGB", inplace=True)
    assert same is pixels
    np.testing.assert_allclose(pixels[..., :3], 0.4613546, atol=1e-4)
    assert np.all(pixels[..., 3] == np.float32(0.18)), "alpha must not be converted"


@pytest.mark.parametrize("device", DEVICES)
def test_tensor_conversion_keeps_alpha_and_input(device):
    t = torch.full((4, 3, 5), 0.18, device=device)
    out = C.convert(t, "linear", "sRGB")
    assert out.shape == t.shape and out.device == t.device
    assert torch.allclose(out[:3], torch.tensor(0.4613546, device=device), atol=1e-4)
    assert torch.all(out[3] == 0.18) and torch.all(t == 0.18), "input tensor is left alone"


@pytest.mark.parametrize("dst", ["sRGB", "ACEScct", "ACES2065-1", "Linear Rec.2020", "ARRI LogC3 (EI800)",
                                 "S-Log3 S-Gamut3", "Log3G10 REDWideGamutRGB", "Gamma 2.2 Encoded Rec.709",
                                 "rec709"])
def test_torch_ops_match_ocio_cpu(dst):
    """The GPU path's closed forms reproduce OCIO's CPU processor, forward and back."""
    x = torch.linspace(-0.05, 8.0, 3 * 40 * 40).view(3, 40, 40)
    for src, target in (("ACEScg", dst), (dst, "ACEScg")):
        source = x if src == "ACEScg" else C.convert(x, "ACEScg", src).clamp(-0.1, 1.2)
        ops = C._conversion(src, target).torch_ops
        assert ops is not None, f"{src} -> {target} has no torch form"
        y = source
        for op in ops:
            y = op(y)
        ref = C.convert(source, src, target)
        torch.testing.assert_close(y, ref, rtol=1e-3, atol=1e-4)


def test_torch_ops_copy_their_constants_to_a_device_once():
    """Each conversion's constants go to a device on first use and stay there: a copy per call would make
    the GPU path wait for the stream several times per conversion. (The meta device stands for a GPU.)"""
    x = torch.empty(3, 4, 4, device="meta")
    conv = C._conversion("ACEScg", "sRGB")
    constants = [c for op in conv.torch_ops for c in op.__closure__ or ()
                 if isinstance(c.cell_contents, C._Constant)]
    assert constants, "the sRGB conversion's ops hold no constants"
    for op in conv.torch_ops:
        x = op(x)
    first = [c.cell_contents.to(torch.device("meta")) for c in constants]
    assert all(t.device.type == "meta" for t in first)
    assert all(a is b for a, b in zip(first, [c.cell_contents.to(torch.device("meta")) for c in constants]))


def test_aliases_and_unknown_name():
    assert C.resolve_colorspace("raw") == "Raw"
    assert C.resolve_colorspace("lin_rec709") == "Linear Rec.709 (sRGB)"  # a config alias
    assert C.resolve_colorspace("ACEScg") == "ACEScg"
    raw = np.random.default_rng(0).random((3, 3, 3), dtype=np.float32)
    assert np.array_equal(C.convert(raw, "raw", "ACEScg"), raw)
    with pytest.raises(DoublureError, match="Rec.9999"):
        C.resolve_colorspace("Rec.9999")


def test_display_transform_aces_sdr():
    t = torch.tensor([0.0, 0.18, 1.0, 100.0]).view(1, 1, 4).expand(3, 1, 4).contiguous()
    out = C.display_transform(t)
    # ACES 1.0 SDR video on an sRGB display: black stays black, grey 0.18 lands near code value 0.39,
    # highlights roll off to about 1 instead of clipping at scene value 1.
    assert out[:, 0, 0].abs().max() < 1e-3
    assert 0.35 < out[0, 0, 1] < 0.42
    assert torch.all(out[:, 0, 2] < out[:, 0, 3]) and torch.all((out[:, 0, 3] - 1).abs() < 0.05)
    with pytest.raises(DoublureError, match="unknown view"):
        C.display_transform(t, view="Nope")


def test_config_cache_id_is_stable_and_names_config():
    assert C.config_cache_id() == C.config_cache_id()
    assert C.CONFIG_NAME in C.config_cache_id()


def test_premultiplied_conversion_unpremultiplies_around_curves():
    # Straight sRGB 0.4614 (linear 0.18) at alpha 0.5, premultiplied: linear premultiplied is 0.09.
    hwc = np.array([[[0.4613546 * 0.5] * 3 + [0.5], [0.3, 0.3, 0.3, 0.0]]], np.float32)
    out = C.convert_premultiplied(hwc, "sRGB", "linear", alpha_index=3)
    np.testing.assert_allclose(out[0, 0], [0.09, 0.09, 0.09, 0.5], atol=1e-4)
    np.testing.assert_allclose(out[0, 1, :3], C.convert(hwc[:, 1:, :3], "sRGB", "linear")[0, 0], atol=1e-6)
    chw = torch.from_numpy(hwc.transpose(2, 0, 1).copy())
    torch.testing.assert_close(C.convert_premultiplied(chw, "sRGB", "linear", alpha_index=3),
                               torch.from_numpy(out.transpose(2, 0, 1).copy()), atol=1e-6, rtol=0)
    assert C._conversion("linear", "ACEScg").is_matrix and not C._conversion("sRGB", "linear").is_matrix


@pytest.mark.parametrize("src", ["sRGB", "rec709", "Gamma 2.2 Encoded Rec.709", "ARRI LogC3 (EI800)", "linear",
                                 "sRGB - Display", "ADX10"])
def test_code_tables_match_the_full_conversion(src):
    """Decoded video codes through a table per code value and one matrix give what OCIO gives per pixel,
    within float32 rounding of the matrix product (a few units in the last place of the sum of the terms'
    magnitudes: OpenCV and OCIO may add the three products in another order), and a conversion that is not
    curves-then-matrix (ADX10: a 1D table between matrices) takes OCIO's path."""
    rng = np.random.default_rng(1)
    for dtype, scale in ((np.uint8, np.float32(1 / 255)), (np.uint16, np.float32(1 / 65535))):
        codes = rng.integers(0, np.iinfo(dtype).max + 1, (48, 40, 3), dtype=dtype)
        codes[0, :, :] = np.linspace(0, np.iinfo(dtype).max, 40).astype(dtype)[:, None]  # both ends included
        planes = torch.from_numpy(codes.transpose(2, 0, 1).astype(np.float32)) * float(scale)
        ref = C.convert(planes, src, "ACEScg")
        got = C.codes_to_planes(codes, scale, src, "ACEScg")
        assert got.shape == (3, 48, 40) and got.dtype == torch.float32
        # the same made on the last device the machine has (a GPU's way where there is one)
        on_device = C.codes_to_planes(codes, scale, src, "ACEScg", torch.device(DEVICES[-1]))
        assert on_device.device.type == DEVICES[-1]
        conv = C._conversion(src, "ACEScg")
        if conv.matrix is None:
            torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-7)
            torch.testing.assert_close(on_device.cpu(), ref, rtol=1e-6, atol=1e-7)
        else:
            curve = C._code_table(conv, np.iinfo(dtype).max + 1, float(scale))
            curved = torch.from_numpy(curve[codes.transpose(2, 0, 1)]) if curve is not None else planes
            magnitude = torch.einsum("ij,jhw->ihw", conv.matrix.abs(), curved.abs())
            within = lambda planes: ((planes - ref).abs() <= 4 * torch.finfo(torch.float32).eps * magnitude + 1e-9).all()  # noqa: E731
            assert within(got) and within(on_device.cpu())
            if curve is not None:
                # the GPU's way (codes copied, looked up and mixed there), here on each device the machine has
                for device in DEVICES:
                    assert within(C._table_planes_on(codes, conv, float(scale), torch.device(device)).cpu())
    assert (C._conversion(src, "ACEScg").matrix is None) == (src == "ADX10")


def test_matrix_conversion_of_a_tensor_matches_ocio_and_keeps_alpha():
    x = torch.from_numpy(np.random.default_rng(2).normal(0.3, 0.5, (4, 30, 20)).astype(np.float32))
    got = C.convert(x, "ACEScg", "linear")
    ref = torch.from_numpy(C.convert(np.ascontiguousarray(x.numpy().transpose(1, 2, 0)), "ACEScg", "linear")
                           .transpose(2, 0, 1).copy())
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-7)
    assert torch.equal(got[3], x[3]) and got.data_ptr() != x.data_ptr()
