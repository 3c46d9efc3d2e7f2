"""Identity model building blocks: architectures, SSIM against a direct reference, augmentation, the .dbm file."""
import datetime
import json
import os
import zipfile

import numpy as np
import pytest
import torch

from doublure.engine.errors import DoublureError
from doublure.models.arch import IdentityModel, ModelConfig, config_for
from doublure.models.augment import (AugmentSettings, apply_colour, augment_pair, colour_transfer, degrade_inputs,
                                     jpeg_quantise, random_colour, random_degradation, random_similarity, random_warp)
from doublure.models.dbm import (ModelFileError, load_model, model_card, model_digest, optimizer_from_files,
                                 optimizer_to_files, read_training_state, rights_problems, rights_record,
                                 save_model, zip_model)
from doublure.models.losses import ssim, ssim_window

RIGHTS = rights_record("M030", "M030 (the actor)", "2024-01-10", "AGR-0042", "film,trailer", "2099-12-31")


def tiny(arch="df", res=64):
    torch.manual_seed(0)
    return IdentityModel(config_for(res, arch, 0.125))


def faces(n=2, res=64, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, res, res, generator=g).contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("arch", ["df", "liae"])
@pytest.mark.parametrize("res", [64, 96])
def test_shapes_and_paths(arch, res):
    model = tiny(arch, res).eval()
    a, b = faces(2, res), faces(3, res, seed=2)
    with torch.no_grad():
        (aa, maa), (bb, mbb) = model.reconstruct_both(a, b)
        ab, mab = model.swap(a)
        aa2, _ = model.reconstruct_a(a)
        bb2, _ = model.reconstruct_b(b)
    assert aa.shape == (2, 3, res, res) and maa.shape == (2, 1, res, res) and bb.shape == (3, 3, res, res)
    assert ab.is_contiguous(memory_format=torch.channels_last)
    assert 0 <= float(ab.min()) and float(ab.max()) <= 1 and 0 <= float(mab.min()) and float(mab.max()) <= 1
    # the batched training pass decodes each identity exactly as the single-identity paths do
    torch.testing.assert_close(aa, aa2, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(bb, bb2, rtol=1e-4, atol=1e-5)
    # A->B differs from A->A: the swap goes through B's path
    assert (ab - aa).abs().mean() > 1e-4


def test_shared_expression_gives_each_plate_face_the_same_private_code():
    """liae with shared_expression: the decoder's input for A's faces carries one private half, her batch's
    mean, so what differs between her faces is in the shared half alone; B's codes are untouched."""
    model = tiny("liae").eval()
    a, b = faces(3), faces(2, seed=2)
    codes = []
    hook = model.decoder.register_forward_hook(lambda module, args, out: codes.append(args[0]))
    with torch.no_grad():
        per_face = model.reconstruct_both(a, b)
        shared = model.reconstruct_both(a, b, shared_expression=True)
    hook.remove()
    half = model.cfg.ae_dims
    free, averaged = codes[0][:3, :half], codes[1][:3, :half]
    assert (free[1:] - free[:1]).abs().amax() > 1e-4       # without it each face has its own private code
    assert torch.equal(averaged, free.mean(0, keepdim=True).expand_as(free))
    assert torch.equal(codes[1][:3, half:], codes[0][:3, half:]) and torch.equal(codes[1][3:], codes[0][3:])
    torch.testing.assert_close(shared[1][0], per_face[1][0])
    assert not torch.equal(shared[0][0], per_face[0][0])


def test_config_validation():
    with pytest.raises(DoublureError, match="steps of 32"):
        ModelConfig(res=80)
    with pytest.raises(DoublureError, match="steps of 32"):
        ModelConfig(res=1056)
    with pytest.raises(DoublureError, match="unknown model architecture"):
        ModelConfig(arch="sae")
    assert ModelConfig(res=256).stages == 5 and ModelConfig(res=224).stages == 4
    assert ModelConfig(res=1024).lowest_res == 32
    assert ModelConfig.from_json(ModelConfig(res=160).to_json()) == ModelConfig(res=160)


def _ssim_reference(x, y, window, sigma=1.5):
    """Direct per-window SSIM (Wang et al. 2004) with a Gaussian-weighted window, in float64 numpy."""
    r = window // 2
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    w = np.outer(k, k) / np.outer(k, k).sum()
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    h, wd = x.shape
    out = np.zeros((h - 2 * r, wd - 2 * r))
    for i in range(h - 2 * r):
        for j in range(wd - 2 * r):
            px, py = x[i:i + window, j:j + window], y[i:i + window, j:j + window]
            mx, my = (w * px).sum(), (w * py).sum()
            vx, vy = (w * (px - mx) ** 2).sum(), (w * (py - my) ** 2).sum()
            cxy = (w * (px - mx) * (py - my)).sum()
            out[i, j] = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    return out


def test_ssim_matches_direct_reference():
    rng = np.random.default_rng(0)
    x = rng.random((20, 24))
    y = np.clip(x + rng.normal(0, 0.1, x.shape), 0, 1)
    got = ssim(torch.tensor(x)[None, None], torch.tensor(y)[None, None], window=7)[0, 0].numpy()
    np.testing.assert_allclose(got, _ssim_reference(x, y, 7), rtol=1e-9, atol=1e-9)
    assert ssim_window(64) == 5 and ssim_window(128) == 11 and ssim_window(1024) % 2 == 1


def test_augment_target_follows_input_without_warp():
    imgs = faces(3)
    masks = torch.rand(3, 2, 64, 64)
    g = torch.Generator().manual_seed(3)
    theta = random_similarity(3, AugmentSettings(), g)
    inp, target, tmasks = augment_pair(imgs, masks, theta)
    assert torch.equal(inp, target) and tmasks.shape == (3, 2, 64, 64)
    inp_w, target_w, _ = augment_pair(imgs, masks, theta, random_warp(3, AugmentSettings(), g))
    assert torch.equal(target_w, target)               # the same similarity transform
    assert (inp_w - target_w).abs().mean() > 1e-3      # the warp moves the input only
    # zero ranges: the identity transform (grid_sample at pixel centres returns the pixels)
    still = AugmentSettings(rotation=0, scale=0, translation=0, flip=0)
    _, same, _ = augment_pair(imgs, masks, random_similarity(3, still, g))
    torch.testing.assert_close(same, imgs, atol=1e-5, rtol=0)


def test_batched_augmentation_is_each_face_augmented_alone():
    """A face's augmentation does not depend on the faces beside it in the batch (its draws come with it)."""
    imgs, masks = faces(4), torch.rand(4, 3, 64, 64)
    g = torch.Generator().manual_seed(8)
    s = AugmentSettings()
    colour = random_colour(4, 1.0, g)
    theta, warp = random_similarity(4, s, g), random_warp(4, s, g)
    batched = augment_pair(apply_colour(imgs, *colour), masks, theta, warp)
    for i in range(4):
        alone = augment_pair(apply_colour(imgs[i:i + 1], *(c[i:i + 1] for c in colour)), masks[i:i + 1],
                             theta[i:i + 1], warp[i:i + 1])
        for whole, one in zip(batched, alone):
            torch.testing.assert_close(whole[i:i + 1], one, atol=1e-6, rtol=0)


def test_colour_augmentation_and_transfer():
    imgs = faces(4)
    g = torch.Generator().manual_seed(5)
    changed = apply_colour(imgs, *random_colour(4, 1.0, g))
    assert changed.shape == imgs.shape and 0 <= float(changed.min()) and float(changed.max()) <= 1
    assert (changed - imgs).abs().mean() > 1e-3
    state = g.get_state()
    assert torch.equal(apply_colour(imgs, *random_colour(4, 0.0, g)), imgs)
    assert torch.equal(g.get_state(), state)   # strength 0 draws nothing
    ref = (faces(4, seed=9) * 0.3 + 0.4)
    mask = torch.ones(4, 1, 64, 64)
    moved = colour_transfer(imgs * 0.5 + 0.2, ref, mask, mask)
    torch.testing.assert_close(moved.mean((2, 3)), ref.mean((2, 3)), atol=1e-4, rtol=0)
    torch.testing.assert_close(moved.std((2, 3), unbiased=False), ref.std((2, 3), unbiased=False), atol=1e-4, rtol=0)


def real_face_rgb8(media_dir, side=128) -> np.ndarray:
    """A real face: the centre of a MEAD frame, (side, side, 3) uint8 RGB."""
    from doublure.engine.video import VideoReader

    with VideoReader(str(media_dir / "mead/M030_front_happy_level3_001.mp4")) as reader:
        frame = reader.read(20)
    h, w = frame.shape[:2]
    crop = frame[h // 2 - side // 2:h // 2 + side // 2, w // 2 - side // 2:w // 2 + side // 2, :3]
    return np.ascontiguousarray((crop * 255 + 0.5).astype(np.uint8))


@pytest.mark.parametrize("quality", [25, 50, 85])
def test_jpeg_quantise_matches_libjpeg_at_444(media_dir, quality):
    """The training's compression is what a baseline JPEG does: OpenCV's libjpeg at 4:4:4 differs from it far
    less than either differs from the original."""
    import cv2

    rgb8 = real_face_rgb8(media_dir)
    ok, encoded = cv2.imencode(".jpg", rgb8[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality,
                                                         cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
                                                         cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444])
    libjpeg = cv2.imdecode(encoded, cv2.IMREAD_COLOR)[..., ::-1].astype(np.float32) / 255.0
    original = rgb8.astype(np.float32) / 255.0
    ours = jpeg_quantise(torch.from_numpy(original).permute(2, 0, 1)[None], torch.tensor([float(quality)]))
    ours = ours[0].permute(1, 2, 0).numpy()

    def psnr(a, b):
        return 10 * np.log10(1.0 / np.mean((a - b) ** 2))

    assert psnr(ours, libjpeg) > 42 and psnr(ours, libjpeg) > psnr(original, libjpeg) + 3
    assert psnr(ours, original) < 46   # it does degrade


def test_input_degradations_leave_the_target_and_undrawn_faces_alone(media_dir):
    from doublure.engine.ops import gaussian_blur

    imgs = torch.from_numpy(real_face_rgb8(media_dir, 64)).permute(2, 0, 1)[None].float().repeat(3, 1, 1, 1) / 255
    sigma, quality = torch.tensor([0.0, 1.0, 0.0]), torch.tensor([0.0, 0.0, 40.0])
    out = degrade_inputs(imgs, sigma, quality)
    assert torch.equal(out[0], imgs[0])
    torch.testing.assert_close(out[1], gaussian_blur(imgs[1], 1.0))
    torch.testing.assert_close(out[2], jpeg_quantise(imgs[2:], torch.tensor([40.0]))[0])
    g = torch.Generator().manual_seed(4)
    sigma, quality = random_degradation(2000, AugmentSettings(), 64, g)
    assert 0.2 < float((sigma > 0).float().mean()) < 0.3 and 0.2 < float((quality > 0).float().mean()) < 0.3
    assert float(sigma.max()) <= 1.2 * 64 / 128 and set(quality[quality > 0].long().tolist()) <= set(range(25, 86))
    off = AugmentSettings(blur=0, compression=0)
    sigma, quality = random_degradation(100, off, 64, g)
    assert not sigma.any() and not quality.any()


# --------------------------------------------------------------------------------------- .dbm files

@pytest.mark.parametrize("as_zip", [False, True])
def test_save_load_round_trip(tmp_path, as_zip):
    model = tiny("liae").eval()
    path = str(tmp_path / "m.dbm")
    meta = save_model(path, model, {"name": "m", "rights": RIGHTS, "face_type": "whole_face"}, as_zip=as_zip)
    assert os.path.isdir(path) != as_zip
    loaded = load_model(path)
    assert loaded.rights_warning == "" and loaded.name == "m" and loaded.meta["weights_sha256"] == meta["weights_sha256"]
    x = faces(2)
    with torch.no_grad():
        assert torch.equal(loaded.model.swap(x)[0], model.swap(x)[0])
    assert loaded.digest == model_digest(path)
    card = model_card(path)
    assert "liae at 64 px" in card and "AGR-0042" in card and "RIGHTS WARNING" not in card
    if not as_zip:
        zipped = str(tmp_path / "z.dbm")
        zip_model(path, zipped)
        assert zipfile.is_zipfile(zipped) and model_digest(zipped) == model_digest(path)
    # rewriting the model changes its digest; nothing is left behind
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    save_model(path, model, {"name": "m"})
    assert model_digest(path) != loaded.digest
    assert sorted(os.listdir(tmp_path)) == sorted(["m.dbm"] + (["z.dbm"] if not as_zip else []))


def test_same_weights_under_other_rights_are_another_model(tmp_path):
    """The shared cache must not hand one file's name and rights record to another file with equal weights:
    they go into every rendered frame's provenance."""
    from doublure.models.infer import shared_model

    model = tiny().eval()
    first, second = str(tmp_path / "a.dbm"), str(tmp_path / "b.dbm")
    save_model(first, model, {"name": "actor A", "rights": RIGHTS, "face_type": "whole_face"})
    save_model(second, model, {"name": "actor B", "rights": {**RIGHTS, "agreement": "AGR-0043"},
                               "face_type": "whole_face"})
    assert model_digest(first) != model_digest(second)
    a, b = shared_model(first), shared_model(second)
    assert (a.name, a.rights["agreement"]) == ("actor A", "AGR-0042")
    assert (b.name, b.rights["agreement"]) == ("actor B", "AGR-0043")


def test_optimizer_state_round_trip_without_pickles(tmp_path):
    model = tiny()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.5, 0.999))
    out = model.reconstruct_both(faces(1), faces(1))
    sum(o[0].mean() for o in out).backward()
    opt.step()
    data, meta = optimizer_to_files(opt.state_dict())
    json.dumps(meta)                                   # the non-tensor part is plain JSON
    restored = torch.optim.Adam(model.parameters(), lr=0.5)
    restored.load_state_dict(optimizer_from_files(data, meta))
    a, b = opt.state_dict(), restored.state_dict()
    assert a["param_groups"] == b["param_groups"]
    for idx in a["state"]:
        for k in a["state"][idx]:
            assert torch.equal(a["state"][idx][k], b["state"][idx][k])
    path = str(tmp_path / "ck.dbm")
    save_model(path, model, {}, optimizer_state=opt.state_dict(), train_state={"iteration": 7})
    state, opt_state = read_training_state(path)
    assert state["iteration"] == 7 and len(opt_state["state"]) == len(a["state"])
    assert not any(name.endswith((".pt", ".pth", ".pkl")) for name in os.listdir(path))


def test_bad_model_files_name_the_file(tmp_path):
    missing = str(tmp_path / "none.dbm")
    with pytest.raises(ModelFileError, match="none.dbm"):
        load_model(missing)
    path = str(tmp_path / "m.dbm")
    save_model(path, tiny(), {"rights": RIGHTS})
    weights = os.path.join(path, "weights.safetensors")
    data = bytearray(open(weights, "rb").read())
    data[-100:] = b"\0" * 100
    open(weights, "wb").write(bytes(data))
    with pytest.raises(ModelFileError, match=r"m\.dbm.*checksum"):
        load_model(path)
    save_model(path, tiny(), {"rights": RIGHTS})
    meta_path = os.path.join(path, "model.json")
    meta = json.load(open(meta_path))
    meta["architecture"]["arch"] = "quaternion"
    open(meta_path, "w").write(json.dumps(meta))
    with pytest.raises(ModelFileError, match=r"m\.dbm.*unknown model architecture"):
        load_model(path)
    open(meta_path, "w").write("{not json")
    with pytest.raises(ModelFileError, match=r"m\.dbm.*corrupt"):
        load_model(path)
    junk = tmp_path / "junk.dbm"
    junk.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ModelFileError, match="junk.dbm"):
        load_model(str(junk))


def test_rights_warnings(tmp_path, caplog):
    assert rights_problems(RIGHTS) == []
    expired = dict(RIGHTS, expiry="2020-01-01")
    assert rights_problems(expired) == ["rights expired on 2020-01-01"]
    assert rights_problems(RIGHTS, today=datetime.date(2100, 1, 1)) == ["rights expired on 2099-12-31"]
    assert "no rights record" in rights_problems({})[0]
    with pytest.raises(DoublureError, match="not a date"):
        rights_record(expiry="next year")
    with pytest.raises(DoublureError, match=r"consent_date '20240110' is not a date \(YYYY-MM-DD\)"):
        rights_record(consent_date="20240110")  # Python's own parser takes it
    with pytest.raises(DoublureError, match="expiry 2024-01-10 is not after consent_date 2024-01-10"):
        rights_record(consent_date="2024-01-10", expiry="2024-01-10")
    path = str(tmp_path / "old.dbm")
    save_model(path, tiny(), {"rights": expired})
    with caplog.at_level("WARNING", logger="doublure.models"):
        loaded = load_model(path)
    assert "expired" in loaded.rights_warning
    assert any("RIGHTS WARNING" in r.getMessage() for r in caplog.records)
    assert "!! RIGHTS WARNING: rights expired on 2020-01-01" in model_card(path)


def test_data_workers_take_half_the_cores_shared_among_local_ranks(monkeypatch):
    from doublure.models.data import default_workers

    for cores, ranks, workers in ((2, 1, 2), (16, 1, 8), (16, 2, 4), (16, 8, 2), (64, 1, 8), (None, 1, 2)):
        monkeypatch.setattr(os, "cpu_count", lambda: cores)
        assert default_workers(ranks) == workers, (cores, ranks)
