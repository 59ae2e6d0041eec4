"""Scoring a model on held-out generated rooms: ScanNet AP and occupancy accuracy (Fig. 4).

Occupancy accuracy is the share of ground-truth instances whose relative occupancy error
R_c of eq. (11), |N_c - exp(mean of o_i over the instance)| / N_c with N_c its voxel count,
is under 0.3 (the paper reports 68 % on ScanNet v2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np

from .evaluation import EvaluationResult, evaluate_scenes
from .labels import BENCHMARK_INSTANCE_IDS
from .pipeline import PipelineConfig, Predictor, segment_points
from .predictions import VoxelPredictions
from .scene import Scene
from .voxels import VoxelGrid, majority_vote, scatter_mean

#: R_c below this counts as a correct occupancy prediction (paper §3.1.2).
OCCUPANCY_TOLERANCE = 0.3


def relative_occupancy_errors(grid: VoxelGrid, pred: VoxelPredictions, scene: Scene,
                              class_ids: Iterable[int] = BENCHMARK_INSTANCE_IDS) -> np.ndarray:
    """R_c of eq. (11) for every ground-truth instance of the given classes."""
    m = grid.num_voxels
    instance = majority_vote(scene.instance, grid.point_to_voxel, m)
    semantic = majority_vote(scene.semantic, grid.point_to_voxel, m)
    keep = (instance >= 0) & np.isin(semantic, list(class_ids))
    ids, index, counts = np.unique(instance[keep], return_inverse=True, return_counts=True)
    if ids.size == 0:
        return np.zeros(0)
    mean_log = scatter_mean(pred.log_occupancy[keep], index, ids.size)
    return np.abs(counts - np.exp(mean_log)) / counts


@dataclass
class ValidationResult:
    """AP over the scenes and the eq. (11) error of every ground-truth instance."""

    metrics: EvaluationResult
    occupancy_errors: np.ndarray

    @property
    def occupancy_accuracy(self) -> float:
        """Share of instances with R_c < 0.3 (nan when there are none)."""
        if self.occupancy_errors.size == 0:
            return float("nan")
        return float(np.mean(self.occupancy_errors < OCCUPANCY_TOLERANCE))


def validate_scenes(scenes: Iterable[Scene], make_predictor: Callable[[Scene], Predictor],
                    config: PipelineConfig) -> ValidationResult:
    """Segment every scene with its predictor and score the lot.

    Args:
        scenes: scenes with ground truth.
        make_predictor: the predictor for a scene (the network ignores the scene; the oracle
            reads its ground truth).
        config: the method's parameters.
    """
    rows, errors = [], []
    for scene in scenes:
        if not scene.has_ground_truth:
            raise ValueError(f"{scene.name}: validation needs 'semantic' and 'instance'")
        predictor = make_predictor(scene)
        seen: list[tuple[VoxelGrid, VoxelPredictions]] = []

        def recording(grid: VoxelGrid, predictor: Predictor = predictor) -> VoxelPredictions:
            pred = predictor(grid)
            seen.append((grid, pred))
            return pred

        result = segment_points(scene.xyz, scene.rgb, recording, config)
        rows.append((scene.semantic, scene.instance, result.instance, result.instance_labels,
                     result.instance_scores))
        errors.append(relative_occupancy_errors(*seen[0], scene))
    return ValidationResult(metrics=evaluate_scenes(rows),
                            occupancy_errors=np.concatenate(errors) if errors else np.zeros(0))
