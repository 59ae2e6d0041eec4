"""Shared test fixtures.

The real scans live in ``../shared/data`` beside the checkout (never in the repository);
tests that need them skip with a reason when that directory is absent. ``OCCUSEG_SHARED``
overrides the location.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    return Path(os.environ.get("OCCUSEG_SHARED", REPO_ROOT.parent / "shared"))


@pytest.fixture
def scannet_scene_path() -> Path:
    """Path of the real ScanNet scene0000_00 (81k points, nyu40 labels)."""
    path = shared_dir() / "data" / "scannet" / "scene0000_00.npz"
    if not path.is_file():
        pytest.skip(f"real ScanNet scene not available at {path} (../shared is absent)")
    return path


@pytest.fixture
def two_threads():
    """Run the test with torch at 2 threads (where spconv's own CPU kernels race)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)
