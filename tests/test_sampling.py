"""How training draws faces from several facesets: each person weighs the same, however many faces they have."""
import numpy as np
import pytest
import torch

from doublure.faces.extract import extract_faceset
from doublure.models.data import FaceData


@pytest.fixture(scope="module")
def two_people(media_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("people")
    many, few = str(root / "many"), str(root / "few")
    extract_faceset([str(media_dir / "mead/M030_front_happy_level3_001.mp4")], many, size=64, every=3)
    extract_faceset([str(media_dir / "mead/W009_front_happy_level3_001.mp4")], few, size=64, every=12)
    return many, few


def test_each_faceset_weighs_the_same(two_people):
    many, few = two_people
    assert FaceData([many], 64).sampling_weights() is None          # one person: uniform, the draws as before
    data = FaceData([many, few], 64)
    n_many = data.facesets[0]["items"]
    assert n_many > 2 * data.facesets[1]["items"]
    weights = data.sampling_weights()
    assert float(weights.sum()) == pytest.approx(1.0)
    assert float(weights[:n_many].sum()) == pytest.approx(0.5)
    assert torch.allclose(weights[:n_many], weights[:n_many].mean().expand(n_many))
    drawn = torch.multinomial(weights, 4000, replacement=True, generator=torch.Generator().manual_seed(0))
    assert 0.46 < float((drawn < n_many).float().mean()) < 0.54
    # balanced by expression within each person, each person still half of the draws
    balanced = data.sampling_weights(balance_expressions=True)
    assert float(balanced[:n_many].sum()) == pytest.approx(0.5)
    assert float(balanced[:n_many].std()) > 0
    single = FaceData([many], 64)
    assert torch.allclose(single.sampling_weights(True), single.expression_weights())
