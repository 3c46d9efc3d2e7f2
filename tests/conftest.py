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
