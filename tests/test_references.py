"""The target's reference faces: the bank built from a real faceset and stored in the .dbm, the mesh warp and the
relighting against direct references, and SwapModel drawing plate faces from them."""
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from doublure.engine.ops import fast_gaussian_blur
from doublure.faces.extract import extract_faceset
from doublure.models.arch import IdentityModel, ModelConfig
from doublure.models.dbm import (ModelFileError, load_model, model_card, model_digest, read_meta, save_detail,
                                 save_model, save_references)
from doublure.models.detail import DetailConfig, DetailNet
from doublure.models.references import (FEATURES, POSE_SPREAD, ReferenceError, bank_from_bytes, bank_to_bytes,
                                        blend_faces, build_bank, carried_layout, choose_references, face_features,
                                        face_motion, feature_spread, forehead_fade, frown_index, furrow_excess, identity_layout,
                                        inset_fade, mesh_warp, motion_blur, reference_faces, relight, thin_plate,
                                        triangle_facing, unveiled_skin)

RIGHTS = {"subject": "MEAD actor M030", "consent_given_by": "MEAD participants", "consent_date": "2020-08-23",
          "agreement": "MEAD terms", "allowed_uses": ["research"], "expiry": "2030-12-31"}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def faceset(media_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref_faces") / "M030_256"
    extract_faceset([str(media_dir / "mead/M030_front_happy_level3_001.mp4"),
                     str(media_dir / "mead/M030_front_surprised_level3_001.mp4")], str(out), size=256, every=8)
    return str(out)


@pytest.fixture(scope="module")
def bank(faceset):
    return build_bank(faceset, count=12)


@pytest.fixture
def model_path(tmp_path):
    torch.manual_seed(0)
    path = str(tmp_path / "m.dbm")
    net = IdentityModel(ModelConfig(arch="liae", res=64, e_ch=8, d_ch=8, d_mask_ch=4, ae_dims=16))
    save_model(path, net, {"name": "tiny M030", "rights": RIGHTS, "face_type": "whole_face"})
    return path


def test_bank_covers_the_faceset_and_survives_its_file(faceset, bank):
    refs, card = bank
    index = json.load(open(os.path.join(faceset, "index.json")))
    assert len(refs) == card["count"] == 12 and refs.size == card["size"] == 256
    assert card["clips"] == ["M030_front_happy_level3_001.mp4", "M030_front_surprised_level3_001.mp4"]
    # farthest-point sampling spreads the choice: the chosen faces span most of the faceset's mouth openings
    feats = np.stack([face_features(np.array(it["landmarks"]), it["pose"]) for it in index["items"]])
    chosen = refs.features.numpy()[:, 2]
    assert chosen.max() - chosen.min() > 0.7 * (feats[:, 2].max() - feats[:, 2].min())
    # landmarks in unit crop coordinates: the first face's match its index entry
    first = refs.landmarks[0].numpy() * 256 - 0.5
    assert any(np.abs(first - np.array(it["landmarks"])).max() < 1e-3 for it in index["items"])
    back = bank_from_bytes(bank_to_bytes(refs), "test")
    assert torch.equal(back.landmarks, refs.landmarks) and torch.equal(back.triangles, refs.triangles)
    assert (back.images.float() - refs.images.float()).abs().mean() < 2.0      # JPEG at quality 95
    assert 800 < len(refs.triangles) < 1000                                     # the 478 points' Delaunay mesh


def test_sampling_leans_to_calm_faces_and_still_spans_the_expressions(faceset, monkeypatch):
    """Farthest-point sampling alone takes the extremes first, furrowed brows among them; a furrow counts against a
    face, so the bank holds fewer furrowed faces than plain sampling would and still spans the mouth's openings."""
    import doublure.models.references as references

    index = json.load(open(os.path.join(faceset, "index.json")))
    images = torch.stack([torch.from_numpy(cv2.cvtColor(cv2.imread(os.path.join(faceset, it["file"])),
                                                        cv2.COLOR_BGR2RGB)).permute(2, 0, 1) for it in index["items"]])
    lms = (np.array([it["landmarks"] for it in index["items"]]) + 0.5) / 256
    excess = furrow_excess(frown_index(images.float() / 255.0, lms))
    by_features = {tuple(np.round(face_features(lm * 256 - 0.5, it["pose"]), 5)): e
                   for lm, it, e in zip(lms, index["items"], excess)}

    def furrowed_in(refs):
        return sum(by_features[tuple(np.round(f, 5))] > 0.5 for f in refs.features.double().numpy())
    assert references.SAMPLE_FURROW_COST > 0.0
    monkeypatch.setattr(references, "SAMPLE_FURROW_COST", 0.0)
    plain = build_bank(faceset, count=12)[0]
    monkeypatch.setattr(references, "SAMPLE_FURROW_COST", 1.0)    # this small faceset's 12 differ from 1 on
    calm = build_bank(faceset, count=12)[0]
    assert furrowed_in(calm) < furrowed_in(plain), (furrowed_in(calm), furrowed_in(plain))
    assert (excess > 0.5).sum() >= 4                   # the faceset has furrowed faces to leave out
    mouth = calm.features.numpy()[:, 2]
    feats = np.stack([face_features(np.array(it["landmarks"]), it["pose"]) for it in index["items"]])
    assert mouth.max() - mouth.min() > 0.7 * (feats[:, 2].max() - feats[:, 2].min())


def test_bad_banks_are_refused_naming_the_file(faceset, bank, tmp_path):
    data = bank_to_bytes(bank[0])
    with pytest.raises(ReferenceError, match="refs.safetensors: not a reference bank"):
        bank_from_bytes(data[: len(data) // 2], "refs.safetensors")
    from safetensors.torch import load, save
    t = load(data)
    t["triangles"][0, 0] = 9999
    with pytest.raises(ReferenceError, match="do not describe 12 reference faces"):
        bank_from_bytes(save(t), "refs.safetensors")
    with pytest.raises(ReferenceError, match=f"faceset {tmp_path}"):
        build_bank(str(tmp_path), 4)


def test_mesh_warp_matches_a_direct_affine_warp(bank):
    refs = bank[0]
    image = refs.images[:1].float() / 255.0
    src = refs.landmarks[:1]
    # the whole layout moved by one affine: the piecewise warp is that affine, which OpenCV applies directly
    m = np.array([[0.9, 0.1, 0.02], [-0.08, 0.95, 0.05]])
    dst = src[0].double().numpy() @ m[:, :2].T + m[:, 2]
    warped, owner = mesh_warp(image, src, dst, refs.triangles, 256)
    to_px = np.vstack([np.hstack([np.eye(2) * 256, [[-0.5], [-0.5]]]), [0, 0, 1]])
    full = to_px @ np.vstack([m, [0, 0, 1]]) @ np.linalg.inv(to_px)
    direct = cv2.warpAffine(image[0].permute(1, 2, 0).numpy(), full[:2], (256, 256), flags=cv2.INTER_CUBIC,
                            borderMode=cv2.BORDER_REPLICATE)
    inside = cv2.erode((owner >= 0).numpy().astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
    diff = np.abs(warped[0].permute(1, 2, 0).numpy() - direct)[inside]
    assert inside.mean() > 0.3
    assert diff.mean() < 0.01 and np.percentile(diff, 99) < 0.06


def test_a_turned_faces_far_side_faces_away(bank):
    refs = bank[0]
    centre_x = refs.landmarks.mean(0)[refs.triangles].mean(1)[:, 0].numpy()
    left, right = centre_x < 0.3, centre_x > 0.7           # image left: the subject's right cheek
    facing = triangle_facing(refs.normals, np.array([0.0, -30.0, 30.0]))
    # looking at the camera both cheeks face it alike; turned 30 degrees toward the image's left (yaw < 0) the
    # image-left cheek turns away, and the other way round
    assert abs(facing[0, left].mean() - facing[0, right].mean()) < 0.1
    assert facing[1, left].mean() < facing[1, right].mean() - 0.3
    assert facing[2, right].mean() < facing[2, left].mean() - 0.3
    assert np.all(facing <= 1.0 + 1e-9)


def test_relight_takes_the_plates_low_frequencies():
    torch.manual_seed(1)
    face = torch.rand(1, 3, 64, 64) * 0.5 + 0.25
    light = torch.linspace(0.5, 2.0, 64).view(1, 1, 1, 64).expand(1, 3, 64, 64)
    skin = torch.ones(1, 1, 64, 64)
    out = relight(face, face * light, skin, 4.0)
    # a slowly varying light on the plate is carried over: away from the borders the ratio is the light's
    inner = (out / face)[..., 8:-8, 8:-8]
    assert torch.allclose(inner, light[..., 8:-8, 8:-8], rtol=0.05)


def test_relight_leaves_the_eyes_their_colour():
    torch.manual_seed(5)
    face = torch.rand(1, 3, 64, 64) * 0.5 + 0.25
    cast = torch.tensor([0.8, 1.0, 1.6]).view(1, 3, 1, 1)               # a paler, bluer plate skin
    neutral = torch.zeros(1, 1, 64, 64)
    neutral[..., 24:40, 24:40] = 1.0
    out = relight(face, face * cast, torch.ones(1, 1, 64, 64), 4.0, neutral)
    gain = out / face
    # outside, the plate's colour is taken; inside, only its level: the channels' gains agree, at their
    # geometric mean
    assert torch.allclose(gain[0, :, 4, 4], cast.view(3), rtol=0.02)
    inside = gain[0, :, 28:36, 28:36]
    level = float(cast.log().mean().exp())
    assert torch.allclose(inside, torch.full_like(inside, level), rtol=0.02)


def test_relight_leaves_hair_and_stubble_their_colour():
    torch.manual_seed(6)
    face = torch.rand(1, 3, 64, 64) * 0.1 + 0.45
    face[..., 20:24, 8:56] = torch.tensor([0.06, 0.04, 0.03]).view(1, 3, 1, 1)   # a dark brown brow over the skin
    cast = torch.tensor([0.8, 1.0, 1.6]).view(1, 3, 1, 1)               # a paler, bluer plate skin
    skin = torch.ones(1, 1, 64, 64)
    skin[..., 18:26, :] = 0.0                                            # the brow is not skin
    out = relight(face, face * cast, skin, 4.0)
    gain = out / face
    # the skin takes the plate's tone; the brow, far darker than the skin around it, only its level: it stays
    # brown rather than turning grey-blue
    assert torch.allclose(gain[0, :, 40, 32], cast.view(3), rtol=0.03)
    brow = gain[0, :, 21:23, 12:52].reshape(3, -1)
    level = float(cast.log().mean().exp())
    assert torch.allclose(brow, torch.full_like(brow, level), rtol=0.03)


def test_a_pose_counts_in_degrees_where_the_bank_hardly_turns(bank):
    refs = bank[0]
    feats = refs.features.double().numpy()
    spread = feature_spread(feats)
    yaw, pitch = FEATURES.index("yaw"), FEATURES.index("pitch")
    assert feats[:, yaw].std() < POSE_SPREAD and spread[yaw] == spread[pitch] == POSE_SPREAD
    assert np.allclose(spread[2:], feats[:, 2:].std(0) + 1e-6)
    # a plate face turned well past every reference: its expression, not the turn, picks the reference (in the
    # bank's own spreads the turn chose the most turned faces, whatever their expression)
    target = int(np.argmin(np.abs(feats[:, yaw] - np.median(feats[:, yaw]))))
    plate = feats[target].copy()
    plate[yaw] = feats[:, yaw].min() - 15.0
    calm = refs.furrowed == 0
    idx, _ = choose_references(refs, [(1.0, plate)])
    assert calm[target] and idx[0] == target
    # the expression measures' distance decides among the calm faces
    expr = np.sqrt((((feats[:, 2:] - plate[2:]) / spread[2:]) ** 2).sum(1))
    assert expr[idx[0]] <= np.sort(expr[calm])[1] + 1e-9


def test_blended_faces_keep_their_fine_detail():
    torch.manual_seed(7)
    base = torch.full((1, 3, 96, 96), 0.5)
    faces = base + 0.1 * torch.randn(3, 3, 96, 96)           # three faces: one light, uncorrelated pores
    weights = torch.tensor([0.4, 0.35, 0.25]).view(3, 1, 1, 1).expand(3, 1, 96, 96)
    sigma = 2.0

    def detail(image):
        return float((image - fast_gaussian_blur(image[None], sigma)[0]).std())
    blend = blend_faces(faces, weights, sigma)
    mean = (faces * weights).sum(0)
    one = detail(faces[0])
    # a plain weighted mean loses about half the detail; the blend keeps it
    assert detail(mean) < 0.7 * one and abs(detail(blend) / one - 1.0) < 0.1
    # the coarse picture is the weighted mean's; one face weighing all is that face
    assert torch.allclose(fast_gaussian_blur(blend[None], 4.0), fast_gaussian_blur(mean[None], 4.0), atol=0.02)
    alone = torch.zeros(3, 1, 96, 96)
    alone[1] = 1.0
    assert torch.allclose(blend_faces(faces, alone, sigma), faces[1], atol=1e-5)


def test_motion_blur_is_the_mean_of_the_shifted_image():
    torch.manual_seed(2)
    image = torch.rand(3, 40, 40)
    # 8 px a frame along x, shutter half open: the mean of copies shifted evenly over -2..+2 px (5 taps)
    out = motion_blur(image, np.array([8.0, 0.0]))
    direct = torch.stack([torch.roll(image, -s, dims=2) for s in range(-2, 3)]).mean(0)
    assert torch.allclose(out[:, :, 4:-4], direct[:, :, 4:-4], atol=1e-5)
    assert motion_blur(image, np.array([0.3, 0.4])) is image              # under half a pixel: untouched


def test_layouts_are_carried_by_the_flow_and_averaged():
    from doublure.faces.face import Face
    rng = np.random.default_rng(3)
    lm = rng.uniform(80, 120, (478, 3))

    def face(dx: float) -> Face:
        return Face(track_id=0, box=(70.0, 70.0, 130.0, 130.0), landmarks=lm + [dx, 0.0, 0.0], iris=np.zeros((2, 3)),
                    pose=(0.0, 0.0, 0.0),
                    to_crop=np.array([[1 / 100, 0.0, -0.5], [0.0, 1 / 100, -0.5]]))

    # the neighbours' landmarks slid 2 crop px (at R = 50: 4 plate px) either way; the flow says the skin did not
    window = [(-1, 0.25, face(-4.0)), (0, 0.5, face(0.0)), (1, 0.25, face(4.0))]
    r = 50
    still = {0: None, -1: (torch.zeros(r, r, 2), torch.ones(r, r)), 1: (torch.zeros(r, r, 2), torch.ones(r, r))}
    assert np.allclose(carried_layout(window, still), window[1][2].landmarks[:, :2] / 100 - 0.5)
    # a flow that follows the slide carries each neighbour's points back onto this frame's
    slid = [(-1, 0.25, face(-4.0)), (0, 0.5, face(0.0)), (1, 0.25, face(-4.0))]
    moved = {0: None, -1: (torch.full((r, r, 2), 0.0).index_fill_(2, torch.tensor([0]), -2.0), torch.ones(r, r)),
             1: (torch.full((r, r, 2), 0.0).index_fill_(2, torch.tensor([0]), -2.0), torch.ones(r, r))}
    assert np.allclose(carried_layout(slid, moved), slid[1][2].landmarks[:, :2] / 100 - 0.5, atol=1e-6)
    # motion: 4 plate px a frame along x is 2 crop px at R = 50
    assert np.allclose(face_motion({-1: face(-4.0), 0: face(0.0), 1: face(4.0)}, face(0.0), r), [2.0, 0.0])


def test_choice_follows_the_window(bank):
    refs = bank[0]
    feats = refs.features.double().numpy()
    a, b = np.flatnonzero(refs.furrowed == 0)[:2]               # two calm faces (a frown counts as a distance)
    idx, w = choose_references(refs, [(1.0, feats[a])])
    assert idx[0] == a and abs(w.sum() - 1.0) < 1e-9
    # a window whose frames are mostly another face's picks that one
    idx, _ = choose_references(refs, [(0.2, feats[a]), (0.4, feats[b]), (0.4, feats[b])])
    assert idx[0] == b


def test_frown_index_reads_the_furrows_between_the_brows(media_dir, bank, tmp_path):
    # M030 frowning (his angry clip) against M030 smiling and surprised (the bank's clips), same camera
    angry = tmp_path / "angry"
    extract_faceset([str(media_dir / "mead/M030_front_angry_level3_001.mp4")], str(angry), size=256, every=8)
    items = json.load(open(angry / "index.json"))["items"]
    faces = torch.stack([torch.from_numpy(cv2.cvtColor(cv2.imread(str(angry / it["file"])), cv2.COLOR_BGR2RGB))
                         for it in items]).permute(0, 3, 1, 2).float() / 255.0
    frowning = frown_index(faces, (np.array([it["landmarks"] for it in items])[..., :2] + 0.5) / 256)
    calm = bank[0].frowns
    assert len(frowning) >= 4 and np.median(frowning) > np.median(calm) + 0.5
    # the same face blurred is no more furrowed: the measure reads the brow against the same face's forehead
    lm = bank[0].landmarks[:4].numpy()
    sharp = frown_index(bank[0].images[:4].float() / 255.0, lm)
    soft = frown_index(box_blur_3px(bank[0].images[:4].float() / 255.0), lm)
    assert np.abs(sharp - soft).max() < 0.5


def box_blur_3px(images: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.avg_pool2d(images, 3, stride=1, padding=1)


def test_a_furrowed_reference_gives_way_to_a_calm_one_about_as_near(bank):
    import dataclasses
    refs = bank[0]
    assert (refs.furrowed == 0).sum() >= len(refs) // 4
    # two references posed and moved alike (the second a hair further from the face), the first frowning
    features = refs.features.clone()
    features[1] = features[0] + 0.01 * torch.from_numpy(feature_spread(features.double().numpy())).float()
    twins = dataclasses.replace(refs, features=features)
    frowns = np.zeros(len(refs))
    frowns[0] = 3.0
    twins.__dict__["frowns"] = frowns                           # the cached property, as measured
    window = [(1.0, features[0].double().numpy())]
    assert choose_references(twins, window)[0][0] == 1
    calm = dataclasses.replace(refs, features=features)
    calm.__dict__["frowns"] = np.zeros(len(refs))
    assert choose_references(calm, window)[0][0] == 0


def test_hair_over_a_references_forehead_is_found(bank):
    refs = bank[0]
    face = int(np.argmax(refs.landmarks[:, [105, 334], 1].mean(1)))     # the lowest brows: the most forehead
    image = refs.images[face:face + 1].clone()
    lm = refs.landmarks[face].numpy()
    size = refs.size
    brow_y = int(lm[[105, 334], 1].mean() * size)
    lids_y = int(lm[[159, 386], 1].mean() * size)
    # dark strands hung over the forehead, down to 8 px above the brows
    x0, x1 = int(lm[10, 0] * size) - 30, int(lm[10, 0] * size) + 30
    for x in range(x0, x1, 6):
        image[0, :, :brow_y - 8, x:x + 3] = 20
    unveiled = unveiled_skin(image, lm[None])[0, 0].numpy()
    as_filmed = unveiled_skin(refs.images[face:face + 1], lm[None])[0, 0].numpy()
    assert brow_y > 14 and unveiled[:brow_y - 10, x0 + 6:x1 - 6].mean() < 0.3
    assert as_filmed[:brow_y - 10, x0 + 6:x1 - 6].mean() > unveiled[:brow_y - 10, x0 + 6:x1 - 6].mean() + 0.3
    # the brows (their middles) are not taken for hair by the strands above them; the nostrils and cheeks never
    # are, nor anything below the eyes' lids
    from doublure.faces.masks import LEFT_BROW, RIGHT_BROW
    for name, (x, y) in {"left brow": lm[list(LEFT_BROW)].mean(0), "right brow": lm[list(RIGHT_BROW)].mean(0)}.items():
        at = int(y * size), int(x * size)
        assert unveiled[at] > as_filmed[at] - 0.15, name
    for name, (x, y) in {"nostril": lm[98], "cheek": lm[205]}.items():
        assert unveiled[int(y * size), int(x * size)] > 0.99, name
    assert unveiled[lids_y + int(0.08 * size):].min() > 0.99          # past the hair's margin


def test_thin_plate_reproduces_an_affine_map_and_its_points():
    rng = np.random.default_rng(4)
    points, at = rng.uniform(0, 1, (40, 2)), rng.uniform(0, 1, (25, 2))
    m = np.array([[0.9, 0.2], [-0.1, 1.1]])
    out = thin_plate(points, points @ m + [0.3, -0.2], at)
    assert np.allclose(out, at @ m + [0.3, -0.2], atol=1e-6)
    values = rng.normal(size=(40, 2))
    assert np.allclose(thin_plate(points, values, points), values, atol=1e-4)


def test_identity_layout_moves_the_features_and_keeps_the_outline(bank):
    from doublure.faces.masks import FACE_OVAL
    lm = bank[0].landmarks[0].double().numpy()
    target = lm.copy()
    # the target's eyes 4% of the crop further apart and its mouth 2% lower
    for eye, dx in (((33, 133, 7, 163, 144, 145, 153, 154, 155, 157, 158, 159, 160, 161, 173, 246), -0.02),
                    ((362, 263, 249, 390, 373, 374, 380, 381, 382, 384, 385, 386, 387, 388, 398, 466), 0.02)):
        target[list(eye), 0] += dx
    target[[61, 291, 0, 17, 13, 14], 1] += 0.02
    moved = identity_layout(lm, lm, target, amount=1.0)
    assert np.allclose(moved[list(FACE_OVAL)], lm[list(FACE_OVAL)], atol=1e-6)
    spread = lambda p: np.linalg.norm(p[133] - p[362])            # noqa: E731  the inner corners
    assert spread(moved) > spread(lm) + 0.035
    assert (moved[61, 1] + moved[291, 1]) / 2 > (lm[61, 1] + lm[291, 1]) / 2 + 0.015
    assert np.allclose(identity_layout(lm, lm, target, amount=0.0), lm)
    # half way is about half the move
    half = identity_layout(lm, lm, target, amount=0.5)
    assert abs(spread(half) - (spread(lm) + spread(moved)) / 2) < 0.005


def test_the_shape_moves_only_where_the_poses_agree(bank):
    refs = bank[0]
    feats = refs.features.double().numpy()
    layout = refs.landmarks[0].double().numpy()
    plate_shape = layout.copy()
    plate_shape[[33, 133, 362, 263], 0] *= 0.97                  # a plate actor with other proportions
    same = [(1.0, feats[0])]
    turned = feats[0].copy()
    turned[0] += 25.0                                            # the plate turned 25 degrees from every reference
    still, _, _ = reference_faces(refs, [layout], [same], 128, [float(feats[0, 0])], None)
    shaped, _, _ = reference_faces(refs, [layout], [same], 128, [float(feats[0, 0])], [plate_shape])
    assert (shaped - still).abs().mean() > 1e-3
    still_t, _, _ = reference_faces(refs, [layout], [[(1.0, turned)]], 128, [float(turned[0])], None)
    shaped_t, _, _ = reference_faces(refs, [layout], [[(1.0, turned)]], 128, [float(turned[0])], [plate_shape])
    assert torch.equal(still_t, shaped_t)


def test_the_references_give_way_at_the_outline_and_the_forehead(bank):
    inside = torch.zeros(64, 64, dtype=torch.bool)
    inside[8:56, 8:56] = True
    fade = inset_fade(inside, 6.0)
    assert fade[8, 30] < 0.1 and fade[32, 32] == 1.0 and fade[0, 0] == 0.0
    assert torch.all(fade[14:50, 14:50] > 0.99)
    # a face whose whole forehead is in the crop: the bank's first, shrunk about the crop's middle
    lm = (bank[0].landmarks[0].double().numpy() - 0.5) * 0.6 + 0.5
    fore = forehead_fade(lm, 128).numpy()
    brow_y = lm[[105, 334, 66, 296, 107, 336], 1].mean() * 128
    top_y = lm[10, 1] * 128
    x = int(lm[10, 0] * 128)
    assert 0 < top_y < brow_y - 10
    assert fore[int(brow_y) + 2, x] == 1.0 and fore[int(top_y) + 1, x] == 0.0
    mid = int(brow_y + 0.475 * (top_y - brow_y))                 # half way through the fade
    assert 0.2 < fore[mid, x] < 0.8


def test_references_live_in_the_model_file(model_path, bank, capsys):
    before = model_digest(model_path)
    save_references(model_path, bank_to_bytes(bank[0]), bank[1])
    assert model_digest(model_path) != before                # a SwapModel's hash follows the bank
    assert len(load_model(model_path).references) == 12
    assert "reference faces: 12 of the target at 256 px, from M030_256" in model_card(model_path)
    # a detail stage added later and more training keep them
    save_detail(model_path, DetailNet(DetailConfig(res=64, scale=2, channels=16, blocks=1)), {})
    meta = read_meta(model_path)
    meta.pop("schema")
    meta["training"] = {"iterations": 10}
    net = load_model(model_path).model
    written = save_model(model_path, net, meta)
    assert written["references"]["count"] == 12 and len(load_model(model_path).references) == 12
    # an altered bank is refused by name
    with open(os.path.join(model_path, "references.safetensors"), "r+b") as f:
        f.seek(200)
        f.write(b"\0\0\0\0")
    with pytest.raises(ModelFileError, match="references.safetensors is missing or does not match its checksum"):
        load_model(model_path)


def test_command_line_adds_references(model_path, faceset):
    env = dict(os.environ, PYTHONPATH=os.path.dirname(ROOT))
    run = subprocess.run([sys.executable, "-m", "doublure.app.cli", "references", model_path, "--faceset", faceset,
                          "--count", "6"], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "6 reference faces of M030_256 at 256 px" in run.stdout
    run = subprocess.run([sys.executable, "-m", "doublure.app.cli", "references", model_path, "--faceset",
                          model_path], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 1 and f"faceset {model_path}" in run.stderr and "Traceback" not in run.stderr


def test_swapmodel_draws_the_face_from_the_references(media_dir, model_path, bank):
    import doublure.nodes  # noqa: F401  (registers the node library)
    from doublure import engine
    from doublure.faces.align import warp_to_crop
    from doublure.faces.extract import laplacian_variance
    from doublure.faces.masks import render_crop_mask

    save_references(model_path, bank_to_bytes(bank[0]), bank[1])
    g = engine.Graph()
    read = g.create("Read", file=str(media_dir / "people/d0.mp4"), first=1, last=3)
    fd = g.create("FaceDetect")
    fd.set_input(0, read)
    sw = g.create("SwapModel", model=model_path, output="swapped crop", temporal=1, stabilise=0)
    sw.set_input(0, fd)
    plate = g.evaluate(fd, frame=2)
    face = plate.faces[0]
    side = 1.0 / np.sqrt(abs(np.linalg.det(face.to_crop[:, :2])))
    crop = g.evaluate(sw, frame=2).tensor
    # drawn at the plate face's own size (rounded up to 8), not the model's 64 px
    assert crop.shape[-1] == 8 * int(np.ceil(side / 8)) and crop.shape[-1] > 200
    sw["output"] = "composite"
    drawn = g.evaluate(sw, frame=2)
    sw["references"] = "off"
    plain = g.evaluate(sw, frame=2)
    # the model alone draws the 280 px face at its 64 px and says so; the references draw it at its size
    assert "has no detail stage" in engine.warnings_of(plain)["SwapModel1"]
    assert engine.warnings_of(drawn) == {}
    changed = (drawn.tensor - plain.tensor).abs().sum(0) > 1e-3
    x0, y0, x1, y1 = face.box
    grow = 0.2 * max(x1 - x0, y1 - y0)
    ys, xs = torch.nonzero(changed, as_tuple=True)
    assert xs.min() >= x0 - grow and xs.max() <= x1 + grow and ys.min() >= y0 - grow and ys.max() <= y1 + grow
    # the untrained 4-channel model draws a flat blur; the references draw a face: far more fine detail
    hull = render_crop_mask(face, "face_hull", 128)[0].numpy()
    hull = cv2.erode(hull, np.ones((9, 9), np.uint8))

    def sharpness(image):
        crop = warp_to_crop(image.tensor[:3].float(), face.to_crop, 128)[0].mean(0).numpy()
        return laplacian_variance(crop * 255.0, hull)
    assert sharpness(drawn) > 2 * sharpness(plain)
    assert drawn.metadata["doublure/synthetic_face"] is True
    # the target's proportions are a knob: at 0 the face keeps the plate actor's shape
    sw["references"] = "auto"
    sw["target_shape"] = 0.0
    plate_shaped = g.evaluate(sw, frame=2)
    moved = (plate_shaped.tensor - drawn.tensor).abs().sum(0) > 0.02
    assert 0.001 < moved.float().mean() and not moved[: int(y0)].any()     # within the face, not above it


def test_training_gives_a_model_its_targets_faces_and_keeps_them_for_that_target(identity_model, faceset, tmp_path):
    from doublure.models.train import TrainConfig, Trainer

    model, m030_64 = identity_model
    # the fixture's training ended by adding the target's faces: its first (only) target faceset's
    assert read_meta(model)["references"]["faceset"] == os.path.basename(m030_64)

    def continued(out, target):
        w009 = os.path.join(os.path.dirname(model), "w009")          # the fixture's plate faces, beside it
        Trainer(TrainConfig(out=str(tmp_path / out), from_model=model, source=[w009], target=[target], iters=2, batch=4,
                            warmup=1, threads=2, workers=1)).run()
        return read_meta(str(tmp_path / out))["references"]

    same = continued("same.dbm", m030_64)                 # continued on its own target: the bank it has
    assert same["sha256"] == read_meta(model)["references"]["sha256"]
    other = continued("other.dbm", faceset)               # continued on another faceset: that one's faces
    assert other["faceset"] == "M030_256" and other["size"] == 256
