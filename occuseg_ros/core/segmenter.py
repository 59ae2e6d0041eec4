"""Segmentation of a live map: the pipeline plus persistent instance ids and an instance table.

ROS-free; the node (:mod:`occuseg_ros.ros.segmentation_node`), ``occuseg live`` and bag replay
share it. Coordinates are metres in the map frame (REP-105).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from .pipeline import PipelineConfig, Predictor, segment_points
from .scene import write_ply
from .surface_map import grid_keys
from .tracking import InstanceTracker, TrackerState


@dataclass
class InstanceTable:
    """One row per instance, in the map frame.

    Attributes:
        ids: (I,) uint32 persistent ids (>= 1).
        labels: (I,) int32 nyu40 class.
        scores: (I,) float32 confidence in [0, 1].
        voxels: (I,) int64 voxel count.
        centroid_m: (I, 3) float32 mean of the instance's points.
        box_min_m, box_max_m: (I, 3) float32 axis-aligned bounding box.
    """

    ids: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    voxels: np.ndarray
    centroid_m: np.ndarray
    box_min_m: np.ndarray
    box_max_m: np.ndarray

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def to_json(self) -> list[dict]:
        """Plain records (for ``instances.json`` and logs)."""
        from .labels import label_name

        return [{"id": int(self.ids[k]), "label": int(self.labels[k]),
                 "class": label_name(int(self.labels[k])), "score": float(self.scores[k]),
                 "voxels": int(self.voxels[k]),
                 "centroid_m": [float(v) for v in self.centroid_m[k]],
                 "box_min_m": [float(v) for v in self.box_min_m[k]],
                 "box_max_m": [float(v) for v in self.box_max_m[k]]}
                for k in range(len(self))]


@dataclass
class MapSegmentation:
    """The labelled map.

    Attributes:
        xyz: (N, 3) float32 metres, the map's points in canonical order.
        rgb: (N, 3) uint8 their colours.
        semantic: (N,) int32 nyu40 id per point.
        instance: (N,) uint32 persistent instance id per point (0 = none).
        score: (N,) float32 score of the point's instance (0 = none).
        instances: the instance table, ordered by id.
        num_voxels: voxels the network saw.
        timings_s: seconds per stage (voxelise, network, supervoxels, clustering, tracking).
    """

    xyz: np.ndarray
    rgb: np.ndarray
    semantic: np.ndarray
    instance: np.ndarray
    score: np.ndarray
    instances: InstanceTable
    num_voxels: int
    timings_s: dict[str, float]

    def evaluate(self, semantic_gt: np.ndarray, instance_gt: np.ndarray):
        """ScanNet AP of this map against per-point ground truth (nyu40 ids, instance ids
        with -1 = none): an :class:`occuseg_ros.core.evaluation.EvaluationResult`."""
        from .evaluation import evaluate_scenes

        # Table rows are ordered by id, so a point's row is where its id sorts in.
        row = np.searchsorted(self.instances.ids, self.instance).astype(np.int32)
        pred = np.where(self.instance > 0, row, -1).astype(np.int32)
        return evaluate_scenes([(semantic_gt, instance_gt, pred, self.instances.labels,
                                 self.instances.scores)])


class Segmenter:
    """Runs the whole method on the map and keeps instance ids stable across runs.

    Args:
        predictor: the network (or any :data:`Predictor`).
        config: method parameters; ``config.voxel_size_m`` must be the predictor's.
        min_overlap: see :class:`InstanceTracker`.
    """

    def __init__(self, predictor: Predictor, config: PipelineConfig,
                 min_overlap: float = 0.5) -> None:
        self.predictor = predictor
        self.config = config
        self.tracker = InstanceTracker(min_overlap)

    def reset(self) -> None:
        """Forget instance ids (a new map)."""
        self.tracker.reset()

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Everything the segmenter remembers between updates, as named arrays (for saving
        with the map; :meth:`load_state_arrays` restores it)."""
        state = self.tracker.state
        return {"tracker_voxel_keys": state.voxel_keys, "tracker_voxel_ids": state.voxel_ids,
                "tracker_next_id": np.array(state.next_id, np.int64)}

    def load_state_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Restore what :meth:`state_arrays` returned.

        Raises:
            ValueError: arrays missing or of the wrong shape.
        """
        try:
            keys = np.asarray(arrays["tracker_voxel_keys"], np.int64)
            ids = np.asarray(arrays["tracker_voxel_ids"], np.uint32)
            next_id = int(arrays["tracker_next_id"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"segmenter state incomplete: {exc}") from exc
        if keys.ndim != 1 or ids.shape != keys.shape or next_id < 1 or \
                (ids.size and int(ids.max()) >= next_id):
            raise ValueError("segmenter state inconsistent")
        self.tracker.state = TrackerState(keys, ids, next_id)

    def segment(self, xyz: np.ndarray, rgb: np.ndarray) -> MapSegmentation:
        """Segment the points (N, 3) metres with colours (N, 3) uint8; N may be 0."""
        xyz = np.asarray(xyz, np.float32)
        rgb = np.asarray(rgb, np.uint8)
        n = xyz.shape[0]
        if n == 0:
            empty = np.zeros(0, np.uint32)
            return MapSegmentation(xyz, rgb, np.zeros(0, np.int32), empty,
                                   np.zeros(0, np.float32), _table(xyz, empty, empty, None),
                                   0, {})
        result = segment_points(xyz, rgb, self.predictor, self.config)
        mark = time.perf_counter()
        keys = grid_keys(xyz, self.config.voxel_size_m)
        unique_keys, first = np.unique(keys, return_index=True)
        ids = self.tracker.assign(unique_keys, result.instance[first], result.num_instances)
        inside = result.instance >= 0
        point_ids = np.zeros(n, np.uint32)
        point_ids[inside] = ids[result.instance[inside]]
        score = np.zeros(n, np.float32)
        score[inside] = result.instance_scores[result.instance[inside]]
        table = _table(xyz, point_ids, ids, result)
        timings = dict(result.timings_s)
        timings["tracking"] = time.perf_counter() - mark
        return MapSegmentation(xyz, rgb, result.semantic, point_ids, score, table,
                               result.num_voxels, timings)


def _table(xyz: np.ndarray, point_ids: np.ndarray, ids: np.ndarray, result) -> InstanceTable:
    """The instance table, rows ordered by id."""
    order = np.argsort(ids)
    ids = ids[order]
    k = ids.shape[0]
    centroid = np.zeros((k, 3), np.float32)
    box_min = np.zeros((k, 3), np.float32)
    box_max = np.zeros((k, 3), np.float32)
    if k:
        inside = point_ids > 0
        row = np.searchsorted(ids, point_ids[inside])
        pts = xyz[inside].astype(np.float64)
        counts = np.bincount(row, minlength=k)
        for axis in range(3):
            centroid[:, axis] = np.bincount(row, pts[:, axis], minlength=k) / np.maximum(counts, 1)
            lo = np.full(k, np.inf)
            hi = np.full(k, -np.inf)
            np.minimum.at(lo, row, pts[:, axis])
            np.maximum.at(hi, row, pts[:, axis])
            box_min[:, axis], box_max[:, axis] = lo, hi
    return InstanceTable(
        ids=ids.astype(np.uint32),
        labels=(result.instance_labels[order] if k else np.zeros(0)).astype(np.int32),
        scores=(result.instance_scores[order] if k else np.zeros(0)).astype(np.float32),
        voxels=(result.instance_voxels[order] if k else np.zeros(0)).astype(np.int64),
        centroid_m=centroid, box_min_m=box_min, box_max_m=box_max)


def save_labelled_map(out_dir: str | Path, seg: MapSegmentation) -> list[Path]:
    """Write ``occuseg_map.ply`` (x y z rgb label instance score), ``occuseg_map.npz`` (the
    scene format: xyz rgb semantic instance, -1 = none) and ``instances.json``.

    Each file is written under a temporary name in ``out_dir`` and renamed over the old one,
    so a reader never sees half a file.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    instance = np.where(seg.instance > 0, seg.instance.astype(np.int64), -1).astype(np.int32)
    semantic = seg.semantic.astype(np.int32)
    writers: dict[str, Callable[[Path], None]] = {
        "occuseg_map.ply": lambda p: write_ply(p, seg.xyz, seg.rgb, {
            "label": semantic, "instance": instance, "score": seg.score.astype(np.float32)}),
        "occuseg_map.npz": lambda p: np.savez_compressed(
            p, xyz=seg.xyz, rgb=seg.rgb, semantic=semantic, instance=instance),
        "instances.json": lambda p: p.write_text(json.dumps(seg.instances.to_json(), indent=1)),
    }
    paths = []
    for name, write in writers.items():
        path = out / name
        tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
        write(tmp)
        os.replace(tmp, path)
        paths.append(path)
    return paths
