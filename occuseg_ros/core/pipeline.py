"""The whole OccuSeg method on one point cloud: voxelise, predict, super-voxels, cluster.

Input points are in metres in any metric frame (REP-103); outputs are per input point.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import yaml

from .clustering import ClusteringConfig, cluster_supervoxels
from .predictions import VoxelPredictions
from .supervoxels import Guide, SupervoxelConfig, build_supervoxels
from .voxels import VoxelGrid, scatter_mean, voxelize

Predictor = Callable[[VoxelGrid], VoxelPredictions]


#: Flat parameter names (as in ``config/occuseg.yaml`` and the ROS node) -> config fields.
PARAMETERS: dict[str, tuple[str, str]] = {
    "voxel_size_m": ("", "voxel_size_m"),
    "supervoxel_k_threshold": ("supervoxels", "k_threshold"),
    "supervoxel_colour_weight": ("supervoxels", "colour_weight"),
    "supervoxel_min_voxels": ("supervoxels", "min_size"),
    "supervoxel_neighbors": ("supervoxels", "knn"),
    "supervoxel_radius_voxels": ("supervoxels", "max_radius_voxels"),
    "supervoxel_affinity_weight": ("supervoxels", "affinity_weight"),
    "merge_threshold": ("clustering", "merge_threshold"),
    "occupancy_ratio_min": ("clustering", "r_min"),
    "occupancy_ratio_max": ("clustering", "r_max"),
    "occupancy_ratio_floor": ("clustering", "r_floor"),
    "use_occupancy": ("clustering", "use_occupancy"),
    "min_instance_voxels": ("clustering", "min_instance_voxels"),
}


@dataclass
class PipelineConfig:
    """Parameters of the whole method (defaults are the paper's)."""

    voxel_size_m: float = 0.02
    supervoxels: SupervoxelConfig = field(default_factory=SupervoxelConfig)
    clustering: ClusteringConfig = field(default_factory=ClusteringConfig)

    def to_params(self) -> dict[str, Any]:
        """The flat, unit-named parameters (the keys of ``config/occuseg.yaml``)."""
        return {name: getattr(getattr(self, part) if part else self, attr)
                for name, (part, attr) in PARAMETERS.items()}

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> "PipelineConfig":
        """Build from flat parameters; missing ones keep their defaults.

        Raises:
            ValueError: an unknown name, or a value of the wrong type or range.
        """
        unknown = sorted(set(params) - set(PARAMETERS))
        if unknown:
            raise ValueError(f"unknown parameters {unknown}; known: {sorted(PARAMETERS)}")
        defaults = cls().to_params()
        values: dict[str, dict[str, Any]] = {"": {}, "supervoxels": {}, "clustering": {}}
        for name, value in params.items():
            kind = type(defaults[name])
            if kind is bool and not isinstance(value, bool) or \
                    kind is int and (isinstance(value, bool) or not isinstance(value, int)) or \
                    kind is float and (isinstance(value, bool) or
                                       not isinstance(value, (int, float))):
                raise ValueError(f"parameter {name} must be {kind.__name__}, got {value!r}")
            part, attr = PARAMETERS[name]
            values[part][attr] = kind(value)
        voxel_size = values[""].get("voxel_size_m", cls.voxel_size_m)
        if not 0 < voxel_size < 1:
            raise ValueError(f"voxel_size_m must be in (0, 1) metres, got {voxel_size}")
        return cls(voxel_size_m=voxel_size,
                   supervoxels=SupervoxelConfig(**values["supervoxels"]),
                   clustering=ClusteringConfig(**values["clustering"]))

    @classmethod
    def from_yaml(cls, path: str | Path, node_name: str = "occuseg") -> "PipelineConfig":
        """Read a ROS 2 parameter file (``<node or /**>: ros__parameters: {...}``).

        The sections for every node (``/**``) and for ``node_name`` are read, in file order;
        of those only the parameters of :data:`PARAMETERS` are taken.
        """
        with open(path, encoding="utf-8") as fh:
            document = yaml.safe_load(fh) or {}
        if not isinstance(document, dict):
            raise ValueError(f"{path}: not a ROS 2 parameter file")
        params: dict[str, Any] = {}
        for name, node in document.items():
            if str(name).lstrip("/") not in ("**", node_name):
                continue
            if isinstance(node, dict) and isinstance(node.get("ros__parameters"), dict):
                params.update({k: v for k, v in node["ros__parameters"].items()
                               if k in PARAMETERS})
        return cls.from_params(params)


@dataclass
class SegmentationResult:
    """Instance segmentation of a point cloud.

    Attributes:
        semantic: (N,) int32 nyu40 id per input point.
        instance: (N,) int32 instance index per input point (-1 = none).
        instance_labels: (I,) int32 nyu40 class per instance.
        instance_scores: (I,) float32 confidence in [0, 1]: the mean probability of the
            instance's class over its voxels, times min(r, 1/r) for its occupancy ratio r.
        instance_voxels: (I,) int64 voxel count per instance.
        instance_ratio: (I,) float32 occupancy ratio r of eq. (13).
        num_voxels: number of voxels.
        num_supervoxels: number of super-voxels after the cut along the predicted class.
        timings_s: seconds per stage: voxelise, network, supervoxels, clustering, total.
    """

    semantic: np.ndarray
    instance: np.ndarray
    instance_labels: np.ndarray
    instance_scores: np.ndarray
    instance_voxels: np.ndarray
    instance_ratio: np.ndarray
    num_voxels: int
    num_supervoxels: int
    timings_s: dict[str, float]

    @property
    def num_instances(self) -> int:
        return int(self.instance_labels.shape[0])


def segment_points(xyz: np.ndarray, rgb: np.ndarray, predictor: Predictor,
                   config: PipelineConfig | None = None) -> SegmentationResult:
    """Segment a coloured point cloud into instances (paper §3).

    Args:
        xyz: (N, 3) float32 finite coordinates in metres.
        rgb: (N, 3) uint8 colours.
        predictor: maps a voxel grid to per-voxel predictions (the network, or the oracle).
        config: method parameters.
    """
    config = config or PipelineConfig()
    timings: dict[str, float] = {}
    start = time.perf_counter()
    grid = voxelize(xyz, config.voxel_size_m, rgb)
    timings["voxelise"] = time.perf_counter() - start

    mark = time.perf_counter()
    pred = predictor(grid)
    if pred.semantic_prob.shape[0] != grid.num_voxels:
        raise ValueError(f"predictor returned {pred.semantic_prob.shape[0]} rows for "
                         f"{grid.num_voxels} voxels")
    timings["network"] = time.perf_counter() - mark

    mark = time.perf_counter()
    voxel_semantic = pred.semantic
    centres = grid.centers_m + pred.offset_m
    # Clustering vertices: super-voxels guided by the predicted affinities, cut along the
    # predicted class (both our additions; see build_supervoxels).
    supervoxels = build_supervoxels(grid.coords, grid.rgb, config.supervoxels, voxel_semantic,
                                    Guide(pred.embedding, centres, pred.bandwidth))
    supervoxel, edges = supervoxels.supervoxel, supervoxels.adjacency
    timings["supervoxels"] = time.perf_counter() - mark

    mark = time.perf_counter()
    clusters = cluster_supervoxels(supervoxel, edges, centres,
                                   pred.embedding, pred.bandwidth, pred.log_occupancy,
                                   voxel_semantic, config.clustering)
    scores = instance_scores(pred, clusters.voxel_instance, clusters.instance_label,
                             clusters.instance_ratio, config.clustering.use_occupancy)
    # Voxels inside an instance take the instance's class.
    inside = clusters.voxel_instance >= 0
    voxel_semantic = voxel_semantic.copy()
    voxel_semantic[inside] = clusters.instance_label[clusters.voxel_instance[inside]]
    timings["clustering"] = time.perf_counter() - mark

    result = SegmentationResult(
        semantic=grid.to_points(voxel_semantic).astype(np.int32),
        instance=grid.to_points(clusters.voxel_instance).astype(np.int32),
        instance_labels=clusters.instance_label.astype(np.int32),
        instance_scores=scores, instance_voxels=clusters.instance_voxels.astype(np.int64),
        instance_ratio=clusters.instance_ratio.astype(np.float32),
        num_voxels=grid.num_voxels, num_supervoxels=int(supervoxel.max(initial=-1)) + 1,
        timings_s=timings)
    timings["total"] = time.perf_counter() - start
    return result


def instance_scores(pred: VoxelPredictions, voxel_instance: np.ndarray,
                    instance_label: np.ndarray, instance_ratio: np.ndarray,
                    use_occupancy: bool) -> np.ndarray:
    """Confidence of each instance in [0, 1].

    The mean probability of the instance's class over its voxels, multiplied (with
    occupancy) by min(r, 1/r): 1 when the cluster has exactly the predicted size.
    """
    n_inst = instance_label.shape[0]
    if n_inst == 0:
        return np.zeros(0, np.float32)
    column = {int(label): k for k, label in enumerate(pred.label_ids)}
    cols = np.array([column.get(int(label), -1) for label in instance_label])
    inside = voxel_instance >= 0
    inst = voxel_instance[inside]
    voxel_cols = cols[inst]
    prob = np.where(voxel_cols >= 0,
                    pred.semantic_prob[np.flatnonzero(inside), np.maximum(voxel_cols, 0)], 0.0)
    score = scatter_mean(prob, inst, n_inst)
    if use_occupancy:
        ratio = np.maximum(instance_ratio.astype(np.float64), 1e-6)
        score = score * np.minimum(ratio, 1.0 / ratio)
    return np.clip(score, 0.0, 1.0).astype(np.float32)
