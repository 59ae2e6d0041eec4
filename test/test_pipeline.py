"""The whole method on real and generated rooms, with oracle per-voxel outputs."""

import numpy as np
import pytest

from occuseg_ros.core.evaluation import evaluate_scenes
from occuseg_ros.core.pipeline import PipelineConfig, segment_points
from occuseg_ros.core.predictions import oracle_predictions
from occuseg_ros.core.scene import load_scene
from occuseg_ros.core.synthetic import generate_room


def _segment_oracle(scene, noise_m, use_occupancy=True):
    config = PipelineConfig()
    config.clustering.use_occupancy = use_occupancy
    predictor = lambda grid: oracle_predictions(grid, scene.semantic, scene.instance, noise_m)
    result = segment_points(scene.xyz, scene.rgb, predictor, config)
    metrics = evaluate_scenes([(scene.semantic, scene.instance, result.instance,
                                result.instance_labels, result.instance_scores)])
    return result, metrics


def test_oracle_on_real_scannet_scene(scannet_scene_path):
    scene = load_scene(scannet_scene_path)
    result, full = _segment_oracle(scene, 0.05)
    assert result.semantic.shape == (scene.num_points,)
    assert result.instance.shape == (scene.num_points,)
    assert full.ap50 >= 0.9, full
    _, without = _segment_oracle(scene, 0.05, use_occupancy=False)
    assert full.ap >= without.ap - 1e-9
    assert full.ap50 >= without.ap50 - 1e-9


def test_oracle_on_generated_room_and_output_contract():
    scene = generate_room(11)
    result, metrics = _segment_oracle(scene, 0.02)
    assert metrics.ap50 >= 0.9, metrics
    n_inst = result.num_instances
    assert n_inst > 3
    assert result.instance.max() == n_inst - 1 and result.instance.min() == -1
    assert ((result.instance_scores > 0) & (result.instance_scores <= 1)).all()
    # Points inside an instance carry its class; stuff (wall, floor) is never an instance.
    inside = result.instance >= 0
    np.testing.assert_array_equal(result.semantic[inside],
                                  result.instance_labels[result.instance[inside]])
    assert not np.isin(result.instance_labels, [0, 1, 2, 22]).any()
    assert set(result.timings_s) == {"voxelise", "network", "supervoxels", "clustering", "total"}


def test_predictor_size_mismatch_is_an_error():
    scene = generate_room(1)

    def wrong(grid):
        pred = oracle_predictions(grid, scene.semantic, scene.instance)
        pred.semantic_prob = pred.semantic_prob[:-1]
        return pred

    with pytest.raises(ValueError, match="rows for"):
        segment_points(scene.xyz, scene.rgb, wrong)


def test_shipped_parameter_file_matches_defaults_and_is_validated(tmp_path):
    from conftest import REPO_ROOT

    shipped = PipelineConfig.from_yaml(REPO_ROOT / "config" / "occuseg.yaml")
    assert shipped.to_params() == PipelineConfig().to_params()
    assert PipelineConfig.from_params({"merge_threshold": 0.7}).clustering.merge_threshold == 0.7
    with pytest.raises(ValueError, match="unknown parameters"):
        PipelineConfig.from_params({"merge_treshold": 0.7})
    with pytest.raises(ValueError, match="must be bool"):
        PipelineConfig.from_params({"use_occupancy": "yes"})
    with pytest.raises(ValueError, match="r_min < r_max"):
        PipelineConfig.from_params({"occupancy_ratio_min": 3.0})
    # The node's section is read (its own keys skipped); other nodes' sections are not.
    (tmp_path / "p.yaml").write_text(
        "occuseg:\n  ros__parameters:\n    voxel_size_m: 0.03\n    segment_rate_hz: 2.0\n"
        "rgbd_reconstructor:\n  ros__parameters:\n    voxel_size_m: 0.01\n")
    assert PipelineConfig.from_yaml(tmp_path / "p.yaml").voxel_size_m == 0.03
