"""Training an occlusion head: unpainted pixels unlike the painted occluder are taken for face (the weak prior
that keeps a network from calling them occluder on some seeds), while the painted occluder's own unpainted rim
stays occluder."""
from __future__ import annotations

import numpy as np
import torch

from doublure.faces.occlusion import COARSE_UNLABELLED_WEIGHT, predict_crops, train_head


def painted_crops() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Three 32 px crops: a grey noisy face, a red occluder painted inside (its 2 px rim unpainted), the face
    painted in a band and a column, and a green patch nobody painted.

    Returns:
        crops (3, 3, 32, 32), labels (3, 2, 32, 32) (occluder, face), the red rims and the green patches
        (3, 32, 32) bool.
    """
    rng = np.random.default_rng(0)
    crops, labels, rims, greens = [], [], [], []
    for _ in range(3):
        img = 0.5 + 0.05 * rng.standard_normal((32, 32, 3))
        occluder, face, red, green = (np.zeros((32, 32), bool) for _ in range(4))
        y, x = rng.integers(2, 12, 2)
        red[y:y + 10, x:x + 8] = True
        occluder[y + 2:y + 8, x + 2:x + 6] = True
        face[y + 12:y + 16, :] = face[:, 28:] = True
        green[20:28, 2:12] = True
        img[red], img[green] = [0.8, 0.15, 0.1], [0.1, 0.75, 0.2]
        crops.append(torch.from_numpy(img.clip(0, 1).transpose(2, 0, 1).astype(np.float32)))
        labels.append(torch.from_numpy(np.stack([occluder, face]).astype(np.float32)))
        rims.append(red & ~occluder)
        greens.append(green & ~face)
    return (torch.stack(crops), torch.stack(labels), torch.from_numpy(np.stack(rims)),
            torch.from_numpy(np.stack(greens)))


def test_unpainted_pixels_unlike_the_occluder_are_taken_for_face():
    crops, labels, rims, greens = painted_crops()
    for seed in (0, 1):
        net, _ = train_head(crops, labels, 100, 4, 4, seed, unlabelled_weight=COARSE_UNLABELLED_WEIGHT)
        prob = predict_crops(net, crops)[:, 0]
        assert prob[greens].mean() < 0.1
        # the rim is most of this small object (56 of 80 px): pulled down by the prior, still occluder
        assert prob[labels[:, 0] > 0].mean() > 0.95 and prob[rims].mean() > 0.5
