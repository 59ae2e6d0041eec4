"""Voxelisation, neighbour lookup and group reductions against plain references."""

import numpy as np
import pytest

from occuseg_ros.core.voxels import majority_vote, scatter_mean, voxelize


def test_voxelize_round_trip_and_colour_mean():
    xyz = np.array([[0.001, 0.001, 0.001], [0.019, 0.0, 0.0], [0.021, 0.0, 0.0],
                    [-0.001, 0.0, 0.0]], np.float32)
    rgb = np.array([[0, 0, 0], [255, 255, 255], [10, 20, 30], [0, 0, 255]], np.uint8)
    grid = voxelize(xyz, 0.02, rgb)
    assert grid.num_voxels == 3
    assert grid.coords.tolist() == [[-1, 0, 0], [0, 0, 0], [1, 0, 0]]
    assert grid.point_to_voxel.tolist() == [1, 1, 2, 0]
    assert grid.counts.tolist() == [1, 2, 1]
    np.testing.assert_allclose(grid.rgb[1], [0.5, 0.5, 0.5], atol=1e-6)
    np.testing.assert_allclose(grid.centers_m[2], [0.03, 0.01, 0.01], atol=1e-6)
    # Every point lies inside its voxel.
    back = grid.to_points(grid.centers_m)
    assert np.abs(back - xyz).max() <= 0.01 + 1e-6


def test_voxelize_rejects_bad_input():
    with pytest.raises(ValueError, match="shape"):
        voxelize(np.zeros((4, 2)), 0.02)
    with pytest.raises(ValueError, match="NaN"):
        voxelize(np.array([[0.0, np.nan, 0.0]]), 0.02)
    with pytest.raises(ValueError, match="positive"):
        voxelize(np.zeros((1, 3)), 0.0)
    with pytest.raises(ValueError, match="rgb"):
        voxelize(np.zeros((2, 3)), 0.02, np.zeros((3, 3), np.uint8))


def test_scatter_mean_and_majority_vote():
    index = np.array([0, 0, 2, 2, 2])
    np.testing.assert_allclose(scatter_mean(np.array([1.0, 3.0, 2.0, 4.0, 6.0]), index, 3),
                               [2.0, 0.0, 4.0])
    labels = np.array([5, -1, 7, 7, 3])
    # Group 0 ties 5 and -1: the smaller label wins; group 1 is empty.
    assert majority_vote(labels, index, 3).tolist() == [-1, -1, 7]
