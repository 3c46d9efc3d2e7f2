"""Shared fixtures: the real footage folder, and headless Qt."""
import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# OpenMP threads that spin while waiting make small torch ops 20-30x slower when the cores are shared (CI,
# several test runs at once); passive waiting costs nothing when they are not. Must precede importing torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]
MEDIA = ROOT.parent / "shared" / "media"


@pytest.fixture(scope="session")
def media_dir() -> Path:
    """``../shared/media`` beside the checkout (see its SOURCES.md)."""
    if not MEDIA.is_dir():
        raise RuntimeError(f"test footage not found at {MEDIA}: the checkout needs ../shared/media beside it")
    return MEDIA


@pytest.fixture(scope="session")
def identity_model(media_dir, tmp_path_factory) -> tuple[str, str]:
    """(model, target faceset): a tiny 64 px liae identity model (A: W009 happy, B: M030 happy, 4 iterations)
    whose card names its facesets and carries a rights record, for tests that adapt or load one."""
    from doublure.faces.extract import extract_faceset
    from doublure.models.dbm import rights_record
    from doublure.models.train import TrainConfig, Trainer

    root = tmp_path_factory.mktemp("identity")
    a, b = str(root / "w009"), str(root / "m030")
    extract_faceset([str(media_dir / "mead/W009_front_happy_level3_001.mp4")], a, size=64, every=6)
    extract_faceset([str(media_dir / "mead/M030_front_happy_level3_001.mp4")], b, size=64, every=6)
    model = str(root / "m030.dbm")
    rights = rights_record("M030", "M030 (the actor)", "2024-01-10", "AGR-0042", "film", "2099-12-31")
    Trainer(TrainConfig(out=model, source=[a], target=[b], iters=4, rights=rights, arch="liae", res=64, width=0.125,
                        batch=4, lr=5e-4, warmup=5, threads=2, workers=1)).run()
    return model, b
