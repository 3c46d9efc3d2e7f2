"""Shared fixtures: the real footage folder, and headless Qt."""
import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

ROOT = Path(__file__).resolve().parents[1]
MEDIA = ROOT.parent / "shared" / "media"


@pytest.fixture(scope="session")
def media_dir() -> Path:
    """``../shared/media`` beside the checkout (see its SOURCES.md)."""
    if not MEDIA.is_dir():
        raise RuntimeError(f"test footage not found at {MEDIA}: the checkout needs ../shared/media beside it")
    return MEDIA
