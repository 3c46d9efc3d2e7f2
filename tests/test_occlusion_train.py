"""Training an occlusion head: with the prior on unpainted pixels, those unlike the painted occluder are taken
for face (what keeps a network from calling them occluder on some seeds); the painted occluder stays occluder."""
from __future__ import annotations

import numpy as np
import torch

from doublure.faces.occlusion import predict_crops, train_head


def painted_crops() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Three 32 px crops: a grey noisy face, a red occluder painted inside (its 1 px rim unpainted), the face
    painted in a band and a column, and a green patch nobody painted.

    Returns:
        crops (3, 3, 32, 32), labels (3, 2, 32, 32) (occluder, face), the green patches (3, 32, 32) bool.
    """
    rng = np.random.default_rng(0)
    crops, labels, greens = [], [], []
    for _ in range(3):
        img = 0.5 + 0.05 * rng.standard_normal((32, 32, 3))
        occluder, face, red, green = (np.zeros((32, 32), bool) for _ in range(4))
        y, x = rng.integers(2, 12, 2)
        red[y:y + 10, x:x + 8] = True
        occluder[y + 1:y + 9, x + 1:x + 7] = True
        face[y + 12:y + 16, :] = face[:, 28:] = True
        green[20:28, 2:12] = True
        img[red], img[green] = [0.8, 0.15, 0.1], [0.1, 0.75, 0.2]
        crops.append(torch.from_numpy(img.clip(0, 1).transpose(2, 0, 1).astype(np.float32)))
        labels.append(torch.from_numpy(np.stack([occluder, face]).astype(np.float32)))
        greens.append(green & ~face)
    return torch.stack(crops), torch.stack(labels), torch.from_numpy(np.stack(greens))


def test_unpainted_pixels_unlike_the_occluder_are_taken_for_face():
    crops, labels, greens = painted_crops()
    # a weight of 1 (the node's coarse head: 0.1 over 400 steps of real crops) to show in 200 steps of a toy
    # what it does: without it this seed calls the green about 0.35 occluder. (The prior's risk: on seed 0 the
    # same toy falls to "face" everywhere, the painted occluder too, as seed 0 of the synthetic shot partly did.)
    net, _ = train_head(crops, labels, 200, 4, 4, 1, unlabelled_weight=1.0)
    prob = predict_crops(net, crops)[:, 0]
    assert prob[greens].mean() < 0.1
    assert prob[labels[:, 0] > 0].mean() > 0.95
