"""The blink warp: thin-plate spline grids, and closed eyes that MediaPipe reads on a real MEAD face."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from doublure.faces.extract import expression_measures, extract_faceset
from doublure.models.augment import AugmentSettings, blink_grid, blink_warp, random_blink, thin_plate_grid
from doublure.models.data import FaceData


def pixel_centres(size: int) -> torch.Tensor:
    """(size, size, 2) grid_sample coords of the pixel centres (align_corners=False)."""
    axis = (torch.arange(size, dtype=torch.float64) + 0.5) / size * 2 - 1
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([xx, yy], -1)


def test_thin_plate_grid_reproduces_affine_maps_exactly():
    rng = np.random.default_rng(1)
    dst = torch.from_numpy(rng.uniform(-0.9, 0.9, (40, 2)))
    matrix = torch.tensor([[1.1, 0.2], [-0.1, 0.9]], dtype=torch.float64)
    shift = torch.tensor([0.05, -0.03], dtype=torch.float64)
    grid = thin_plate_grid(dst, dst @ matrix.T + shift, 48)
    expected = pixel_centres(48) @ matrix.T + shift
    torch.testing.assert_close(grid[0].double(), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(thin_plate_grid(dst, dst, 48)[0].double(), pixel_centres(48), atol=1e-6, rtol=0)


def test_thin_plate_grid_passes_through_its_control_points():
    size = 64
    rng = np.random.default_rng(2)
    cells = rng.choice(size * size, 30, replace=False)
    centres = pixel_centres(size).reshape(-1, 2)
    dst = centres[cells]
    src = dst + torch.from_numpy(rng.normal(0, 0.03, (30, 2)))
    grid = thin_plate_grid(dst, src, size)[0].reshape(-1, 2).double()
    # the regularisation lets the spline pass within a fraction of a pixel of each point
    assert float((grid[cells] - src).abs().max()) < 0.25 * 2 / size


@pytest.fixture(scope="module")
def m030_faces(media_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("blink") / "m030"
    extract_faceset([str(media_dir / "mead/M030_front_neutral_level1_001.mp4")], str(out), size=128, every=30)
    return FaceData([str(out)], 128)


def test_blink_closes_the_eyes_as_mediapipe_reads_them(m030_faces):
    from doublure.faces.detect import MediapipeBackend

    data = m030_faces
    assert len(data) >= 3
    before, after, moved_outside = [], [], []
    with MediapipeBackend("short+full", max_faces=1) as detector:
        for i in range(3):
            crop, masks, landmarks = data.get(i)
            image = torch.from_numpy(crop.astype(np.float32) / 65535.0)[None]
            mask = torch.from_numpy(masks.astype(np.float32) / 255.0)[None]
            grid = blink_grid(torch.from_numpy(landmarks), 128, 0.7)
            closed = F.grid_sample(torch.cat([image, mask], 1), grid, mode="bilinear", padding_mode="border",
                                   align_corners=False)
            for target, pixels in ((before, image), (after, closed[:, :3])):
                rgb8 = (pixels[0].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
                big = np.ascontiguousarray(np.repeat(np.repeat(rgb8, 4, 0), 4, 1))
                detector.reset()
                found = detector.detect(big)
                assert found, f"MediaPipe found no face in crop {i}"
                target.append(expression_measures(found[0].landmarks)["eyes_open"])
            # the warp is local to the eyes: the mouth and chin (from the upper lip down) keep their pixels
            below = int(landmarks[0, 1])
            moved_outside.append(float((closed[0, :3, below:] - image[0, :, below:]).abs().max()))
            assert closed.shape == (1, 6, 128, 128)
    assert min(before) > 0.2
    assert max(after) < 0.6 * min(before), (before, after)
    assert max(moved_outside) < 0.03       # a sub-pixel spread of the spline, resampled


def test_blink_warp_probability_and_random_stream(m030_faces):
    crop, masks, landmarks = m030_faces.get(0)
    image = torch.from_numpy(crop.astype(np.float32) / 65535.0)[None]
    mask = torch.from_numpy(masks.astype(np.float32) / 255.0)[None]
    lm = torch.from_numpy(landmarks)
    generator = torch.Generator().manual_seed(4)
    state = generator.get_state()
    assert random_blink(lm, 128, AugmentSettings(blink=0.0), generator) is None
    assert torch.equal(generator.get_state(), state)       # off: no draws, batches as before the warp existed
    grid = random_blink(lm, 128, AugmentSettings(blink=1.0), generator)
    both, both_masks = blink_warp(image.repeat(2, 1, 1, 1), mask.repeat(2, 1, 1, 1), grid.repeat(2, 1, 1, 1),
                                  torch.tensor([True, False]))
    assert (both[0] - image[0]).abs().max() > 0.1 and both_masks.shape == (2, *mask.shape[1:])
    # the eyes_mouth weight mask follows the lids (its channel changes where the eyes are)
    assert (both_masks[0, 2] - mask[0, 2]).abs().max() > 0.05
    assert torch.equal(both[1], image[0]) and torch.equal(both_masks[1], mask[0])   # a face that does not blink


def test_train_command_line_sets_the_blink_probability():
    from doublure.models.train import build_parser, config_from_args

    base = ["--target", "b/", "--source", "a/", "--out", "m.dbm"]
    assert config_from_args(build_parser().parse_args(base)).augment.blink == AugmentSettings().blink == 0.0
    config = config_from_args(build_parser().parse_args(base + ["--blink", "0.25"]))
    assert config.augment.blink == 0.25 and config.hyper()["augment"]["blink"] == 0.25
