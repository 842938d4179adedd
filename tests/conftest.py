"""Shared fixtures. Real data comes from ../shared beside the project root (read-only)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FACESIEVE_SHARED", ROOT.parent / "shared"))
WIDER_VAL_DEV = SHARED / "data" / "wider_val_dev"
WIDER_TRAIN_MINI = SHARED / "data" / "wider_train_mini"
VIDEOS = SHARED / "data" / "videos"
SHARED_WEIGHTS = SHARED / "weights"
EXAMPLE_IMAGE = ROOT / "examples" / "astronaut.jpg"


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared data not found: {path}")
    return path


@pytest.fixture(scope="session")
def wider_val_dev() -> Path:
    return _require(WIDER_VAL_DEV)


@pytest.fixture(scope="session")
def wider_train_mini() -> Path:
    return _require(WIDER_TRAIN_MINI)


@pytest.fixture(scope="session")
def videos_dir() -> Path:
    return _require(VIDEOS)


@pytest.fixture(scope="session")
def shared_weights() -> Path:
    return _require(SHARED_WEIGHTS)


@pytest.fixture(scope="session")
def example_image() -> Path:
    return EXAMPLE_IMAGE
