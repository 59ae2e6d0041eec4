"""Occupancy accuracy (eq. 11) and the validation loop."""

import numpy as np

from occuseg_ros.core.pipeline import PipelineConfig
from occuseg_ros.core.predictions import oracle_predictions
from occuseg_ros.core.scene import make_scene
from occuseg_ros.core.synthetic import generate_room
from occuseg_ros.core.validation import relative_occupancy_errors, validate_scenes
from occuseg_ros.core.voxels import voxelize


def test_relative_occupancy_error_by_hand():
    # Two chairs (nyu40 5) of 4 and 2 voxels, one voxel of wall (not scored).
    xyz = np.array([[0.01, 0.01, 0.01], [0.03, 0.01, 0.01], [0.05, 0.01, 0.01],
                    [0.07, 0.01, 0.01], [1.01, 0.01, 0.01], [1.03, 0.01, 0.01],
                    [2.01, 0.01, 0.01]], np.float32)
    scene = make_scene(xyz, None, np.array([5, 5, 5, 5, 5, 5, 1]), np.array([0, 0, 0, 0, 1, 1, 2]))
    grid = voxelize(scene.xyz, 0.02)
    pred = oracle_predictions(grid, scene.semantic, scene.instance)
    # Chair 0 predicts log 2 on every voxel: exp = 2 for N = 4, R = |4 - 2| / 4 = 0.5.
    # Chair 1 predicts log 1 and log 3: mean log 3 / 2 -> exp = 3**0.5, R = |2 - 1.732| / 2.
    pred.log_occupancy[:] = np.log([2, 2, 2, 2, 1, 3, 1])
    errors = relative_occupancy_errors(grid, pred, scene)
    np.testing.assert_allclose(errors, [0.5, (2 - 3 ** 0.5) / 2], rtol=1e-6)


def test_oracle_validation_on_generated_rooms():
    scenes = [generate_room(seed) for seed in (100_000, 100_001)]
    result = validate_scenes(
        scenes, lambda s: (lambda grid: oracle_predictions(grid, s.semantic, s.instance, 0.02)),
        PipelineConfig())
    assert result.metrics.ap50 >= 0.9
    assert result.occupancy_errors.size > 5
    assert result.occupancy_accuracy == 1.0
