"""The oracle's ideal outputs: exact without noise, noisy at the documented scale."""

import numpy as np
import pytest

from occuseg_ros.core.predictions import (ORACLE_BANDWIDTH, VoxelPredictions, mixed_predictions,
                                          oracle_predictions)
from occuseg_ros.core.voxels import voxelize


def _two_boxes():
    rng = np.random.default_rng(0)
    a = rng.uniform([0, 0, 0], [0.4, 0.4, 0.4], (2000, 3))
    b = rng.uniform([1, 0, 0], [1.2, 0.2, 0.2], (500, 3))
    xyz = np.concatenate([a, b]).astype(np.float32)
    semantic = np.r_[np.full(2000, 5), np.full(500, 7)].astype(np.int32)
    instance = np.r_[np.zeros(2000), np.ones(500)].astype(np.int32)
    return xyz, semantic, instance


def test_noise_free_oracle_is_exact():
    xyz, semantic, instance = _two_boxes()
    grid = voxelize(xyz, 0.02)
    pred = oracle_predictions(grid, semantic, instance)
    assert pred.label_ids.tolist() == [5, 7]
    voxel_inst = np.bincount(grid.point_to_voxel, weights=instance) / grid.counts
    centres = grid.centers_m + pred.offset_m
    for k in (0, 1):
        members = voxel_inst == k
        target = np.broadcast_to(grid.centers_m[members].mean(0), centres[members].shape)
        np.testing.assert_allclose(centres[members], target, atol=1e-5)
        np.testing.assert_allclose(pred.log_occupancy[members], np.log(members.sum()), rtol=1e-6)
        assert np.ptp(pred.embedding[members], axis=0).max() == 0
    np.testing.assert_array_equal(pred.semantic[voxel_inst == 1], 7)
    np.testing.assert_allclose(pred.bandwidth, np.tile(ORACLE_BANDWIDTH, (grid.num_voxels, 1)))


def test_noise_scale_on_offsets():
    xyz, semantic, instance = _two_boxes()
    grid = voxelize(xyz, 0.02)
    exact = oracle_predictions(grid, semantic, instance)
    noisy = oracle_predictions(grid, semantic, instance, noise_m=0.05)
    assert np.std(noisy.offset_m - exact.offset_m) == pytest.approx(0.05, rel=0.1)
    assert np.std(noisy.embedding - exact.embedding) == pytest.approx(0.05, rel=0.1)
    assert (noisy.semantic == exact.semantic).all()
    with pytest.raises(ValueError, match="noise"):
        oracle_predictions(grid, semantic, instance, noise_m=-1.0)


def test_prediction_shapes_are_checked():
    with pytest.raises(ValueError, match="embedding"):
        VoxelPredictions(semantic_prob=np.ones((3, 1), np.float32), label_ids=np.array([5]),
                         embedding=np.zeros((2, 4)), offset_m=np.zeros((3, 3)),
                         bandwidth=np.ones((3, 2)), log_occupancy=np.zeros(3))


def test_mixed_predictions_take_each_half_from_its_source():
    xyz, semantic, instance = _two_boxes()
    grid = voxelize(xyz, 0.02)
    exact = oracle_predictions(grid, semantic, instance)
    noisy = oracle_predictions(grid, semantic, instance, noise_m=0.5)  # flips labels too
    assert (noisy.semantic != exact.semantic).mean() > 0.1
    mixed = mixed_predictions(semantics=exact, instances=noisy)
    np.testing.assert_array_equal(mixed.semantic, exact.semantic)
    for key in ("embedding", "offset_m", "bandwidth", "log_occupancy"):
        np.testing.assert_array_equal(getattr(mixed, key), getattr(noisy, key))
    reverse = mixed_predictions(semantics=noisy, instances=exact)
    np.testing.assert_array_equal(reverse.semantic, noisy.semantic)
    np.testing.assert_array_equal(reverse.offset_m, exact.offset_m)
    other = oracle_predictions(voxelize(xyz[:1000], 0.02), semantic[:1000], instance[:1000])
    with pytest.raises(ValueError, match="same voxel grid"):
        mixed_predictions(semantics=exact, instances=other)
