"""Shared test fixtures.

The real scans live in ``../shared/data`` beside the checkout (never in the repository);
tests that need them skip with a reason when that directory is absent. ``OCCUSEG_SHARED``
overrides the location.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
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


@pytest.fixture(scope="session")
def model_path(tmp_path_factory) -> Path:
    """The shipped model, or (before one ships) the default network with random weights at
    5 cm: real spconv passes either way; tests on it check plumbing, not accuracy."""
    from occuseg_ros.core.checkpoint import default_model_path, save_checkpoint
    from occuseg_ros.core.labels import SCANNET20_IDS
    from occuseg_ros.core.model import NetworkConfig, OccuSegNet

    shipped = default_model_path()
    if shipped is not None:
        return shipped
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "random.pt"
    save_checkpoint(path, OccuSegNet(NetworkConfig()), np.array(SCANNET20_IDS), 0.05)
    return path


@pytest.fixture(scope="session")
def ros_context():
    """rclpy, initialised once per test run on a domain of its own, discovery on localhost.

    Parallel test runs (and other ROS processes on this machine) then cannot hear each other.
    """
    os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ.setdefault("ROS_LOG_DIR", str(Path(os.environ.get("TMPDIR", "/tmp")) / "ros_log"))
    import rclpy

    rclpy.init()
    yield rclpy
    rclpy.shutdown()
