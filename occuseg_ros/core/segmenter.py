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

from .incremental import IncrementalConfig, IncrementalSegmenter
from .pipeline import PipelineConfig, Predictor
from .scene import write_ply
from .surface_map import split_blocks


@dataclass
class InstanceTable:
    """One row per instance, in the map frame.

    Attributes:
        ids: (I,) uint32 persistent ids (>= 1).
        labels: (I,) int32 nyu40 class.
        scores: (I,) float32 confidence in [0, 1].
        voxels: (I,) int64 voxel count.
        centroid_m: (I, 3) float32 mean of the instance's voxel centres.
        box_min_m, box_max_m: (I, 3) float32 axis-aligned bounding box of its voxels.
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
        timings_s: seconds per stage (voxels, network, supervoxels, clustering, tracking,
            points, total; see :class:`occuseg_ros.core.incremental.UpdateStats`).
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
    """Segments the live map and keeps instance ids stable across updates.

    Built on :class:`occuseg_ros.core.incremental.IncrementalSegmenter`: :meth:`update` takes
    the blocks that changed and recomputes only around them; :meth:`segment` recomputes a
    whole snapshot from scratch (both keep instance ids).

    Args:
        predictor: the network (or any :data:`Predictor`).
        config: method parameters; ``config.voxel_size_m`` must be the predictor's.
        min_overlap: voxel share that keeps an instance's id (see
            :class:`occuseg_ros.core.tracking.InstanceTracker`).
        incremental: margins of the recomputed region.
        block_size_m: block edge of the map (:class:`occuseg_ros.core.surface_map.SurfaceMap`).
    """

    def __init__(self, predictor: Predictor, config: PipelineConfig,
                 min_overlap: float = 0.5, incremental: IncrementalConfig | None = None,
                 block_size_m: float = 0.16) -> None:
        self.predictor = predictor
        self.config = config
        self.block_size_m = float(block_size_m)
        self.engine = IncrementalSegmenter(predictor, config, incremental, min_overlap)
        self._broken = False

    def reset(self) -> None:
        """Forget the map and the instance ids."""
        self.engine.reset()
        self._broken = False

    def state_arrays(self) -> dict[str, np.ndarray]:
        """What the segmenter remembers (cached network outputs and instance ids per voxel),
        as named arrays for saving with the map; :meth:`load_state_arrays` restores it."""
        return self.engine.export_state()

    def load_state_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Restore :meth:`state_arrays`; the next update (of the same map, fed from scratch)
        reuses the cached outputs and gives back the saved instance ids.

        Raises:
            ValueError: arrays missing, of the wrong shape, or from another model.
        """
        self.engine.import_state(arrays)

    def segment(self, xyz: np.ndarray, rgb: np.ndarray) -> MapSegmentation:
        """Segment a snapshot of the map from scratch: points (N, 3) metres, colours (N, 3)
        uint8, N may be 0. The outputs follow the input order."""
        xyz = np.ascontiguousarray(xyz, np.float32)
        rgb = np.ascontiguousarray(rgb, np.uint8)
        keys, order, bounds = split_blocks(xyz, self.block_size_m)
        changes: dict[int, tuple[np.ndarray, np.ndarray] | None] = {
            k: None for k in self.engine.block_keys()}
        for k, lo, hi in zip(keys.tolist(), bounds[:-1], bounds[1:]):
            changes[k] = (xyz[order[lo:hi]], rgb[order[lo:hi]])
        seg = self.update(changes, xyz[order], rgb[order], full=True)
        inverse = np.empty_like(order)
        inverse[order] = np.arange(order.size)
        return MapSegmentation(xyz, rgb, seg.semantic[inverse], seg.instance[inverse],
                               seg.score[inverse], seg.instances, seg.num_voxels,
                               seg.timings_s)

    def update(self, changes: Mapping[int, tuple[np.ndarray, np.ndarray] | None],
               xyz: np.ndarray, rgb: np.ndarray, full: bool = False) -> MapSegmentation:
        """Bring the segmentation up to date after the map's blocks changed.

        Args:
            changes: block key -> content now (None: gone), e.g.
                :meth:`occuseg_ros.core.surface_map.SurfaceMap.take_changes`.
            xyz, rgb: the whole map in canonical order (blocks by key, points within a block
                in their order), e.g. :meth:`SurfaceMap.points`; the outputs follow it.
            full: recompute everything.

        When an update raises (e.g. the network failed), the next one rebuilds everything
        from ``xyz`` and ``rgb``, so one failure never leaves the segmentation behind the map.
        """
        if self._broken:
            # The last update failed half-way: rebuild from the whole map (ids restart).
            self.engine.reset()
            keys, order, bounds = split_blocks(xyz, self.block_size_m)
            changes = {k: (xyz[order[lo:hi]], rgb[order[lo:hi]])
                       for k, lo, hi in zip(keys.tolist(), bounds[:-1], bounds[1:])}
        self._broken = True
        stats = self.engine.update(changes, full)
        self._broken = False
        mark = time.perf_counter()
        engine = self.engine
        slots = engine.point_slots()
        if slots.shape[0] != xyz.shape[0]:
            raise ValueError(f"the map has {xyz.shape[0]} points but its blocks hold "
                             f"{slots.shape[0]}: changes were missed")
        order = np.argsort(engine.instance_ids)
        table = InstanceTable(
            ids=engine.instance_ids[order].astype(np.uint32),
            labels=engine.instance_labels[order], scores=engine.instance_scores[order],
            voxels=engine.instance_voxels[order], centroid_m=engine.instance_centroid_m[order],
            box_min_m=engine.instance_box_min_m[order],
            box_max_m=engine.instance_box_max_m[order])
        score_of_id = np.zeros(int(table.ids.max(initial=0)) + 1, np.float32)
        score_of_id[table.ids] = table.scores
        semantic, ids, scores = engine.point_outputs(score_of_id)
        timings = dict(stats.timings_s)
        timings["points"] = time.perf_counter() - mark
        timings["total"] += timings["points"]
        return MapSegmentation(xyz, rgb, semantic, ids, scores, table, engine.num_voxels,
                               timings)


@dataclass
class MapAgreement:
    """Two segmentations of the same points compared (:func:`compare_maps`).

    Attributes:
        semantic: share of points with the same class.
        instances_matched: share of the reference's instances that one of the other's
            overlaps with IoU >= 0.5 (over points; such a match is unique).
        instances_extra: the other's instances that match none of the reference's.
        mean_iou: mean over the reference's instances of the best IoU.
    """

    semantic: float
    instances_matched: float
    instances_extra: int
    mean_iou: float


def compare_maps(seg: MapSegmentation, reference: MapSegmentation) -> MapAgreement:
    """Compare ``seg`` (e.g. an incremental result) with ``reference`` (e.g. a full
    recompute), point by point; both must list the same points in the same order.

    Raises:
        ValueError: the two have different points.
    """
    if seg.xyz.shape != reference.xyz.shape or not np.array_equal(seg.xyz, reference.xyz):
        raise ValueError("the segmentations are of different points")
    n = seg.xyz.shape[0]
    semantic = float((seg.semantic == reference.semantic).mean()) if n else 1.0
    a = seg.instance.astype(np.int64)
    b = reference.instance.astype(np.int64)
    ids_a, size_a = np.unique(a[a > 0], return_counts=True)
    ids_b, size_b = np.unique(b[b > 0], return_counts=True)
    if ids_b.size == 0:
        return MapAgreement(semantic, 1.0, int(ids_a.size), 1.0)
    both = (a > 0) & (b > 0)
    pair, inter = np.unique(np.stack([a[both], b[both]], axis=1), axis=0, return_counts=True)
    best = np.zeros(ids_b.size)
    matched_a = set()
    for (ia, ib), count in zip(pair.tolist(), inter.tolist()):
        ra, rb = np.searchsorted(ids_a, ia), np.searchsorted(ids_b, ib)
        iou = count / (size_a[ra] + size_b[rb] - count)
        best[rb] = max(best[rb], iou)
        if iou >= 0.5:
            matched_a.add(ia)
    return MapAgreement(semantic, float((best >= 0.5).mean()),
                        int(ids_a.size - len(matched_a)), float(best.mean()))


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
