"""Incremental OccuSeg on a growing map: only the changed region is recomputed.

A live map changes a few blocks at a time, so every stage works on the region that can
change and keeps the rest:

1. Voxels. Each voxel keeps integer sums of its points' colours and its point count, per
   persistent *slot*; a block replacement subtracts the block's old contributions and adds
   its new ones. A voxel changed when its count or colour sum did (it may appear or vanish).
2. Network. Let C be the changed voxels. Outputs are refreshed for every voxel in C's
   bounding box grown by ``refresh_margin_m``; the network runs on the voxels of the box
   grown by ``refresh_margin_m + context_margin_m``. Crops align the coarsest stride to the
   map's minimum corner (:func:`occuseg_ros.core.model.make_sparse_input`), so a refreshed
   voxel gets exactly the full-map output when its receptive field lies in the crop. The
   UNet's field is larger than any useful crop, so outside the margins outputs differ from a
   full recompute by what the far context contributes, and where the corner moved since they
   were computed, by the alignment; :func:`prediction_difference` and
   :func:`occuseg_ros.core.segmenter.compare_maps` measure it.
3. Super-voxels. The neighbour table and normals are recomputed for refreshed voxels (the
   refresh margin is at least the neighbour radius, so no other voxel's neighbourhood
   changed). Every super-voxel holding a refreshed voxel is dissolved; its voxels and the
   refreshed ones are segmented again (Felzenszwalb on the edges among them, then split by
   class), and get fresh super-voxel ids. Elsewhere super-voxels are kept, so a region is
   only ever re-cut along its own edges: a full recompute might join it with a kept neighbour
   instead.
4. Clustering (eqs. 12-14) uses statistics cached per super-voxel; its greedy merging is
   redone only in the merge graph's components that hold a re-cut super-voxel or lost one
   (merges never cross components, so the result is the global clustering's).
5. Persistent instance ids (:func:`occuseg_ros.core.tracking.match_ids`: greedy, one to
   one, by voxel overlap of at least ``min_overlap`` of the smaller instance), with the
   overlap counted per kept super-voxel and per voxel only in the re-cut region.

With ``full=True`` (or on the first update) everything is dirty and the result is exactly
:func:`occuseg_ros.core.pipeline.segment_points` on the same voxels.

Coordinates are metres in the map frame (REP-105); voxel keys are
:func:`occuseg_ros.core.surface_map.grid_keys` at the model's voxel size.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Mapping

import numba
import numpy as np

from .clustering import (SupervoxelClusters, SupervoxelStatistics, _statistics_kernel,
                         clusters_from_roots, graph_components, greedy_roots, merge_graph)
from .pipeline import PipelineConfig, Predictor
from .predictions import VoxelPredictions
from .supervoxels import (Guide, estimate_normals,
                          segment_supervoxels, split_by_label, voxel_knn)
from .surface_map import (BlockConcatenation, cells_from_keys, find_sorted, grid_keys,
                          insert_sorted, keys_from_cells)
from .tracking import match_ids
from .voxels import VoxelGrid, colour_from_sums

#: Half the packable range of cells per axis (see :func:`grid_keys`).
_FAR = 2 ** 20

#: A block's points: (N, 3) float32 metres and (N, 3) uint8 colours.
BlockContent = tuple[np.ndarray, np.ndarray]



#: Default margins per device kind, metres. On a CPU the network's crop dominates an
#: update, and 0.4 m keeps an update under 100 ms at p95 on 2 cores at any map size, at
#: 97-100 % class agreement with a full recompute (BENCHMARKS.md); on CUDA the crop costs
#: little and 0.8 m agrees 99-100 %.
DEVICE_MARGIN_M = {"cpu": 0.4, "cuda": 0.8}


@dataclass
class IncrementalConfig:
    """How far a change reaches (metres).

    Attributes:
        refresh_margin_m: network outputs, neighbour tables and super-voxels are recomputed
            within this distance of a changed voxel (at least the neighbour search radius).
        context_margin_m: the network also sees this much further context, so refreshed
            voxels near the margin get (nearly) their full-map outputs.
        colour_tolerance: a voxel whose mean colour (RGB in [0, 1]) moved by at most this
            since the network last saw it does not count as changed. 0 (exact) refreshes on
            any change; a fused map's colours drift a little with every frame, which a small
            tolerance ignores.
    """

    refresh_margin_m: float = 0.8
    context_margin_m: float = 0.8
    colour_tolerance: float = 0.0

    def __post_init__(self) -> None:
        if not (self.refresh_margin_m >= 0 and self.context_margin_m >= 0):
            raise ValueError("margins must be non-negative metres")
        if not 0 <= self.colour_tolerance <= 1:
            raise ValueError("colour_tolerance must be in [0, 1]")

    @classmethod
    def for_device(cls, device_type: str, refresh_margin_m: float | None = None,
                   context_margin_m: float | None = None,
                   colour_tolerance: float = 0.0) -> "IncrementalConfig":
        """Margins for a network on ``device_type`` ("cpu", "cuda"): each one not given (None)
        is that device's :data:`DEVICE_MARGIN_M`."""
        default = DEVICE_MARGIN_M.get(device_type, DEVICE_MARGIN_M["cuda"])
        return cls(default if refresh_margin_m is None else refresh_margin_m,
                   default if context_margin_m is None else context_margin_m,
                   colour_tolerance)


@dataclass
class UpdateStats:
    """What one :meth:`IncrementalSegmenter.update` did.

    Attributes:
        changed_voxels: voxels that appeared, vanished or changed colour.
        refreshed_voxels: voxels whose network outputs were replaced.
        network_voxels: voxels the network ran on (refreshed plus context).
        resegmented_voxels: voxels whose super-voxels were cut again.
        timings_s: seconds per stage: voxels, network, supervoxels, clustering, tracking,
            total.
    """

    changed_voxels: int
    refreshed_voxels: int
    network_voxels: int
    resegmented_voxels: int
    timings_s: dict[str, float]


class _Growable:
    """Arrays indexed by slot that grow by doubling."""

    def __init__(self, specs: Mapping[str, tuple[tuple[int, ...], type, float]]) -> None:
        self.specs = dict(specs)
        self.capacity = 0
        self.arrays: dict[str, np.ndarray] = {}
        self.reserve(1024)

    def reserve(self, capacity: int) -> None:
        """Room for ``capacity`` slots. Growing copies every array, so it leaves half as much
        again spare (at least doubling): a map that filled its arrays in one update does not
        pay the copy again on the next few."""
        if capacity <= self.capacity:
            return
        capacity = max(capacity + capacity // 2, 2 * self.capacity)
        for name, (shape, dtype, fill) in self.specs.items():
            grown = np.full((capacity,) + shape, fill, dtype)
            if name in self.arrays:
                grown[:self.capacity] = self.arrays[name]
            self.arrays[name] = grown
        self.capacity = capacity

    def widen(self, name: str, shape: tuple[int, ...]) -> None:
        """Give one array a new per-slot shape (contents reset to its fill value)."""
        _, dtype, fill = self.specs[name]
        self.specs[name] = (shape, dtype, fill)
        self.arrays[name] = np.full((self.capacity,) + shape, fill, dtype)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]


@numba.njit(cache=True, parallel=True)
def _point_outputs_kernel(slots: np.ndarray, semantic: np.ndarray, supervoxel: np.ndarray,
                          instance_id: np.ndarray, score_of_id: np.ndarray
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # Class, instance id and score of each point's voxel (gathers fused over the points).
    n = slots.shape[0]
    point_semantic = np.empty(n, np.int32)
    point_id = np.zeros(n, np.uint32)
    point_score = np.zeros(n, np.float32)
    for i in numba.prange(n):
        slot = slots[i]
        point_semantic[i] = semantic[slot]
        sv = supervoxel[slot]
        if sv >= 0:
            point_id[i] = instance_id[sv]
            point_score[i] = score_of_id[instance_id[sv]]
    return point_semantic, point_id, point_score


@numba.njit(cache=True)
def _group_boxes_kernel(group: np.ndarray, lo_cells: np.ndarray, hi_cells: np.ndarray,
                        n: int) -> tuple[np.ndarray, np.ndarray]:
    # Per group g < n: the smallest lo_cells and largest hi_cells of its rows (int64 cells;
    # int32 extremes where a group has no row).
    lo = np.full((n, 3), np.iinfo(np.int32).max, np.int64)
    hi = np.full((n, 3), np.iinfo(np.int32).min, np.int64)
    for r in range(group.shape[0]):
        g = group[r]
        for a in range(3):
            lo[g, a] = min(lo[g, a], lo_cells[r, a])
            hi[g, a] = max(hi[g, a], hi_cells[r, a])
    return lo, hi


def group_boxes(group: np.ndarray, lo_cells: np.ndarray, hi_cells: np.ndarray,
                n: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer boxes of groups: for each group g in [0, n), the per-axis minimum of
    ``lo_cells`` (R, 3) and maximum of ``hi_cells`` (R, 3) over the rows with ``group == g``
    ((R,) ints in [0, n)). Returns two (n, 3) int64 arrays."""
    group = np.ascontiguousarray(group, np.int64)
    lo_cells = np.ascontiguousarray(lo_cells, np.int64)
    hi_cells = np.ascontiguousarray(hi_cells, np.int64)
    if lo_cells.shape != (group.shape[0], 3) or hi_cells.shape != lo_cells.shape:
        raise ValueError(f"expected ({group.shape[0]}, 3) cells, got {lo_cells.shape} and "
                         f"{hi_cells.shape}")
    if group.size and (group.min() < 0 or group.max() >= n):
        raise ValueError(f"group ids must lie in [0, {n})")
    return _group_boxes_kernel(group, lo_cells, hi_cells, int(n))


class _AxisCounts:
    """Live voxels per cell coordinate along each axis, so the map's minimum corner costs
    time in the map's extent (cells along an axis), not in its number of voxels."""

    def __init__(self) -> None:
        self.origin = np.zeros(3, np.int64)
        self.counts = [np.zeros(0, np.int64) for _ in range(3)]

    def add(self, cells: np.ndarray, delta: int) -> None:
        """Count ``cells`` (N, 3) in (``delta`` +1) or out (-1)."""
        if cells.shape[0] == 0:
            return
        for axis in range(3):
            c = cells[:, axis].astype(np.int64)
            lo, hi = int(c.min()), int(c.max())
            counts, origin = self.counts[axis], int(self.origin[axis])
            if counts.size == 0:
                counts, origin = np.zeros(hi - lo + 1, np.int64), lo
            elif lo < origin or hi >= origin + counts.size:
                start, end = min(lo, origin), max(hi + 1, origin + counts.size)
                grown = np.zeros(end - start, np.int64)
                grown[origin - start:origin - start + counts.size] = counts
                counts, origin = grown, start
            counts += delta * np.bincount(c - origin, minlength=counts.size)
            self.counts[axis], self.origin[axis] = counts, origin

    def minimum(self) -> np.ndarray:
        """(3,) int64 smallest occupied cell coordinate per axis (the map must be non-empty)."""
        return np.array([self.origin[a] + np.flatnonzero(self.counts[a])[0] for a in range(3)],
                        np.int64)


class IncrementalSegmenter:
    """The method of :func:`occuseg_ros.core.pipeline.segment_points`, kept up to date as
    blocks of the map change; see the module docstring.

    Args:
        predictor: the network (or any :data:`Predictor`).
        config: method parameters; ``config.voxel_size_m`` must be the predictor's.
        incremental: margins of the recomputed region.
        min_overlap: voxel share that keeps an instance's id (see
            :class:`occuseg_ros.core.tracking.InstanceTracker`).
    """

    def __init__(self, predictor: Predictor, config: PipelineConfig,
                 incremental: IncrementalConfig | None = None,
                 min_overlap: float = 0.5) -> None:
        if not 0.0 < min_overlap <= 1.0:
            raise ValueError(f"min_overlap must be in (0, 1], got {min_overlap}")
        self.predictor = predictor
        self.config = config
        self.incremental = incremental or IncrementalConfig()
        self.min_overlap = float(min_overlap)
        radius_m = config.supervoxels.max_radius_voxels * config.voxel_size_m
        if self.incremental.refresh_margin_m < radius_m:
            raise ValueError(f"refresh_margin_m must be at least the neighbour search radius "
                             f"{radius_m:.3f} m")
        self.reset()

    # ------------------------------------------------------------------ state

    def reset(self) -> None:
        """Forget the map, every cache and every instance id."""
        knn = self.config.supervoxels.knn
        self._voxels = _Growable({
            "key": ((), np.int64, 0), "coords": ((3,), np.int32, 0),
            "count": ((), np.int64, 0), "rgb_sum": ((3,), np.int64, 0),
            "semantic": ((), np.int32, 0), "neighbors": ((knn,), np.int32, -1),
            "normal": ((3,), np.float32, 0), "supervoxel": ((), np.int32, -1),
            "prior_id": ((), np.uint32, 0), "seen_colour": ((3,), np.float32, -1),
            "embedding": ((0,), np.float32, 0), "center": ((3,), np.float32, 0),
            "bandwidth": ((2,), np.float32, 1), "log_occupancy": ((), np.float32, 0),
            "prob": ((0,), np.float32, 0),
            # Scratch: a slot's row in the region being re-cut, -1 outside it (kept -1
            # between updates, so the lookup costs the region, not the map).
            "region_row": ((), np.int32, -1)})
        self._free_slots: list[int] = []
        self._orphaned: list[np.ndarray] = []  # super-voxels that lost a voxel
        self._slot_end = 0
        self._index_keys = np.zeros(0, np.int64)  # sorted keys of live voxels
        self._index_slots = np.zeros(0, np.int32)
        self._extent = _AxisCounts()  # for the map's minimum corner
        self._blocks: dict[int, BlockContent] = {}  # what the voxel sums hold
        # Voxel slot of every point, blocks in key order (a voxel keeps its slot while it
        # lives, so unchanged blocks' entries stay valid).
        self._point_slots = BlockConcatenation((np.zeros(0, np.int32),))
        self._label_ids: np.ndarray | None = None
        self._restored: dict[str, np.ndarray] | None = None
        self._supervoxels: _Growable | None = None
        self._free_ids: list[int] = []
        self._id_end = 0
        self._adjacency = np.zeros(0, np.int64)  # sorted keys a << 32 | b, a < b
        # The last clustering, per super-voxel id: the root of its cluster, and at roots the
        # cluster's voxel count and mean log occupancy (None: cluster everything next time).
        self._root: np.ndarray | None = None
        self._root_count = np.zeros(0, np.int64)
        self._root_occ = np.zeros(0, np.float64)
        self._cluster_seeds: list[np.ndarray] = []
        self._dirty_roots: list[np.ndarray] = []
        self._fresh_ids = np.zeros(0, np.int64)
        self._next_instance_id = 1
        self._clear_segmentation()
        #: What the last :meth:`update` did.
        self.last_update = UpdateStats(0, 0, 0, 0, {})

    @property
    def num_voxels(self) -> int:
        return int(self._index_keys.shape[0])

    @property
    def num_supervoxels(self) -> int:
        if self._supervoxels is None:
            return 0
        return int(self._supervoxels["alive"][:self._id_end].sum())

    # ------------------------------------------------------------------ update

    def update(self, blocks: Mapping[int, BlockContent | None],
               full: bool = False) -> UpdateStats:
        """Apply block changes and bring the segmentation up to date.

        Args:
            blocks: block key -> the block's whole content now, None where it is gone (as
                :meth:`occuseg_ros.core.surface_map.SurfaceMap.take_changes` gives them). Any
                block key scheme works as long as it stays the same between updates.
            full: recompute everything (the result of a from-scratch segmentation; instance
                ids are kept).
        """
        start = time.perf_counter()
        timings: dict[str, float] = {}
        changed = self._apply_blocks(blocks)
        restored = self._restored is not None
        cached, saved_labels = self._restore_cache() if restored else (None, None)
        full = full or restored or self._supervoxels is None
        timings["voxels"] = time.perf_counter() - start
        if self.num_voxels == 0:
            self._clear_segmentation()
        if (changed.size == 0 and not full) or self.num_voxels == 0:
            timings.update(network=0.0, supervoxels=0.0, clustering=0.0, tracking=0.0,
                           total=time.perf_counter() - start)
            self.last_update = UpdateStats(int(changed.size), 0, 0, 0, timings)
            return self.last_update

        mark = time.perf_counter()
        vs = self.config.voxel_size_m
        if full:
            refresh = crop = self._index_slots.astype(np.int64)
        else:
            cells = cells_from_keys(changed)
            lo, hi = cells.min(axis=0), cells.max(axis=0)
            r_refresh = int(np.ceil(self.incremental.refresh_margin_m / vs - 1e-9))
            r_crop = r_refresh + int(np.ceil(self.incremental.context_margin_m / vs - 1e-9))
            refresh = self._box_slots(lo - r_refresh, hi + r_refresh)
            crop = self._box_slots(lo - r_crop, hi + r_crop)
        predict = refresh if cached is None else refresh[~cached]
        if predict.size:
            self._run_network(predict, crop)
        timings["network"] = time.perf_counter() - mark

        mark = time.perf_counter()
        resegmented = self._resegment(refresh, full, saved_labels)
        timings["supervoxels"] = time.perf_counter() - mark

        mark = time.perf_counter()
        clusters, stats = self._cluster(full)
        timings["clustering"] = time.perf_counter() - mark

        mark = time.perf_counter()
        self._assign_ids(clusters, stats, resegmented)
        timings["tracking"] = time.perf_counter() - mark
        timings["total"] = time.perf_counter() - start
        self.last_update = UpdateStats(int(changed.size), int(refresh.size),
                                       int(crop.size) if predict.size else 0,
                                       int(resegmented[0].size), timings)
        return self.last_update

    # ------------------------------------------------------------------ 1. voxels

    def _apply_blocks(self, blocks: Mapping[int, BlockContent | None]) -> np.ndarray:
        """Update the voxel sums; returns the sorted keys of the changed voxels."""
        vs = self.config.voxel_size_m
        olds = [self._blocks[block] for block in blocks if block in self._blocks]
        news = []
        for block, new in blocks.items():
            if new is None or new[0].shape[0] == 0:
                self._blocks.pop(block, None)
            else:
                new = (np.asarray(new[0], np.float32), np.asarray(new[1], np.uint8))
                self._blocks[block] = new
                news.append((block, new))
        old_xyz = [xyz for xyz, _ in olds]
        new_xyz = [xyz for _, (xyz, _) in news]
        xyz = np.concatenate(old_xyz + new_xyz) if olds or news else np.zeros((0, 3), np.float32)
        rgb = np.concatenate([c for _, c in olds] + [c for _, (_, c) in news]) if olds or news \
            else np.zeros((0, 3), np.uint8)
        n_old = sum(x.shape[0] for x in old_xyz)
        point_keys = grid_keys(xyz, vs)
        sign = np.ones(xyz.shape[0])
        sign[:n_old] = -1.0
        keys, inverse = np.unique(point_keys, return_inverse=True)
        d_count = np.rint(np.bincount(inverse, sign, keys.size)).astype(np.int64)
        d_rgb = np.stack([np.rint(np.bincount(inverse, sign * rgb[:, c], keys.size))
                          for c in range(3)], axis=1).astype(np.int64)
        moved = (d_count != 0) | (d_rgb != 0).any(axis=1)
        keys, d_count, d_rgb = keys[moved], d_count[moved], d_rgb[moved]
        changed = self._apply_voxel_deltas(keys, d_count, d_rgb)

        # Voxel slot of every point of the new blocks, for the per-point outputs.
        listing: dict[int, tuple[np.ndarray] | None] = {
            block: None for block in blocks if block not in self._blocks}
        if news:
            at = np.searchsorted(self._index_keys, point_keys[n_old:])
            slots = self._index_slots[np.minimum(at, max(self._index_keys.size - 1, 0))]
            bounds = np.cumsum([x.shape[0] for x in new_xyz])[:-1]
            for (block, _), part in zip(news, np.split(slots, bounds)):
                listing[block] = (part,)
        self._point_slots.update(listing)
        return changed

    def _apply_voxel_deltas(self, keys: np.ndarray, d_count: np.ndarray,
                            d_rgb: np.ndarray) -> np.ndarray:
        """Add point counts and colour sums to the voxels of ``keys`` (sorted).

        Returns the keys (sorted) of the voxels whose network input changed: those that
        appeared or vanished, and those whose mean colour (the network's only feature) moved
        by more than ``colour_tolerance`` from the colour the network last saw. A change of
        point count alone changes nothing the network sees.
        """
        v = self._voxels
        pos, exists = find_sorted(self._index_keys, keys)
        slots = np.full(keys.size, -1, np.int64)
        slots[exists] = self._index_slots[pos[exists]]
        new = ~exists
        if new.any():
            slots[new] = self._allocate_slots(int(new.sum()))
            s = slots[new]
            v["key"][s] = keys[new]
            v["coords"][s] = cells_from_keys(keys[new])
            v["count"][s] = 0
            v["rgb_sum"][s] = 0
            v["supervoxel"][s] = -1
            v["prior_id"][s] = 0
            v["seen_colour"][s] = -1.0
        v["count"][slots] += d_count
        v["rgb_sum"][slots] += d_rgb
        if (v["count"][slots] < 0).any():
            raise RuntimeError("voxel counts went negative: block bookkeeping is corrupt")
        dead = v["count"][slots] == 0
        # Index: drop vanished keys, insert new ones (both lists are sorted; each copies the
        # whole index, so only when there is something to drop or insert).
        died = exists & dead
        if died.any():
            self._index_keys = np.delete(self._index_keys, pos[died])
            self._index_slots = np.delete(self._index_slots, pos[died])
        born = new & ~dead
        if born.any():
            at = np.searchsorted(self._index_keys, keys[born])
            self._index_keys = np.insert(self._index_keys, at, keys[born])
            self._index_slots = np.insert(self._index_slots, at, slots[born].astype(np.int32))
        self._extent.add(v["coords"][slots[born]], 1)
        self._extent.add(v["coords"][slots[died]], -1)
        live = ~dead & ~new
        colour = colour_from_sums(v["rgb_sum"][slots[live]], v["count"][slots[live]])
        moved = np.abs(colour - v["seen_colour"][slots[live]]).max(axis=1, initial=0.0) \
            > self.incremental.colour_tolerance
        changed = new | dead
        changed[np.flatnonzero(live)[moved]] = True
        if dead.any():
            gone = slots[dead]
            old_sv = v["supervoxel"][gone]
            # Their super-voxels are re-cut with the next region (see _resegment).
            self._orphaned.append(old_sv[old_sv >= 0])
            v["supervoxel"][gone] = -1
            self._free_slots.extend(int(x) for x in gone)
        return keys[changed]

    def _allocate_slots(self, n: int) -> np.ndarray:
        reuse = min(n, len(self._free_slots))
        taken = [self._free_slots.pop() for _ in range(reuse)]
        fresh = np.arange(self._slot_end, self._slot_end + n - reuse)
        self._slot_end += n - reuse
        self._voxels.reserve(self._slot_end)
        return np.concatenate([np.asarray(taken, np.int64), fresh]).astype(np.int64)

    def _box_slots(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Slots of the live voxels with cells in [lo, hi] (inclusive), in key order.

        Keys order cells by x, then y, then z, so for each x the cells with y in [lo, hi]
        are one run of the index: one search per x, then a filter on z. The cost grows with
        the box, not the map.
        """
        lo = np.clip(np.asarray(lo, np.int64), -_FAR, _FAR - 1)
        hi = np.clip(np.asarray(hi, np.int64), -_FAR, _FAR - 1)
        if np.any(hi < lo) or self._index_keys.size == 0:
            return np.zeros(0, np.int64)
        xs = np.arange(lo[0], hi[0] + 1)
        first = keys_from_cells(np.stack([xs, np.full_like(xs, lo[1]), np.full_like(xs, lo[2])],
                                         axis=1))
        last = keys_from_cells(np.stack([xs, np.full_like(xs, hi[1]), np.full_like(xs, hi[2])],
                                        axis=1))
        a = np.searchsorted(self._index_keys, first, side="left")
        b = np.searchsorted(self._index_keys, last, side="right")
        lengths = b - a
        ends = np.cumsum(lengths)
        positions = np.arange(int(ends[-1])) + np.repeat(a - (ends - lengths), lengths)
        slots = self._index_slots[positions]
        z = self._voxels["coords"][slots, 2]
        return slots[(z >= lo[2]) & (z <= hi[2])].astype(np.int64)

    # ------------------------------------------------------------------ 2. network

    def _run_network(self, refresh: np.ndarray, crop: np.ndarray) -> None:
        v = self._voxels
        vs = self.config.voxel_size_m
        coords = v["coords"][crop]
        n = crop.size
        # The crop's strided levels align to the map's minimum corner now, as in training.
        # Outputs computed when the corner was elsewhere are kept (each in the alignment the
        # network learnt): recomputing the whole map whenever a robot's map grows towards -x,
        # -y or -z would cost a full recompute per step of exploration. `occuseg bench
        # --scaling` measures the total difference from a full recompute.
        grid = VoxelGrid(coords=coords, voxel_size_m=vs, point_to_voxel=np.arange(n),
                         counts=v["count"][crop].astype(np.int32),
                         rgb=colour_from_sums(v["rgb_sum"][crop], v["count"][crop]),
                         anchor=self._extent.minimum())
        colour = grid.rgb
        pred: VoxelPredictions = self.predictor(grid)
        if pred.semantic_prob.shape[0] != n:
            raise ValueError(f"predictor returned {pred.semantic_prob.shape[0]} rows for "
                             f"{n} voxels")
        if self._label_ids is None:
            self._init_outputs(pred.label_ids, pred.embedding.shape[1])
        elif not np.array_equal(pred.label_ids, self._label_ids):
            raise ValueError("the predictor's classes changed between updates")
        # Both lists are in key order, so the refreshed voxels' rows are found by search.
        rows = np.searchsorted(v["key"][crop], v["key"][refresh])
        v["seen_colour"][refresh] = colour[rows]
        v["prob"][refresh] = pred.semantic_prob[rows]
        v["semantic"][refresh] = pred.label_ids[np.argmax(pred.semantic_prob[rows], axis=1)]
        v["embedding"][refresh] = pred.embedding[rows]
        centres = (coords[rows].astype(np.float64) + 0.5) * vs
        v["center"][refresh] = (centres.astype(np.float32) + pred.offset_m[rows])
        v["bandwidth"][refresh] = pred.bandwidth[rows]
        v["log_occupancy"][refresh] = pred.log_occupancy[rows]

    # ------------------------------------------------------------------ 3. super-voxels

    def _init_outputs(self, label_ids: np.ndarray, embedding_dim: int) -> None:
        """Size the per-voxel outputs and the super-voxel table for the model's classes."""
        self._label_ids = np.asarray(label_ids, np.int32).copy()
        k, e = self._label_ids.shape[0], int(embedding_dim)
        self._voxels.widen("prob", (k,))
        self._voxels.widen("embedding", (e,))
        self._supervoxels = _Growable({
            "alive": ((), bool, False), "count": ((), np.int64, 0),
            "center": ((3,), np.float64, 0), "embedding": ((e,), np.float64, 0),
            "bandwidth": ((2,), np.float64, 1), "log_occupancy": ((), np.float64, 0),
            "semantic": ((), np.int32, -1), "prob_sum": ((k,), np.float64, 0),
            "cell_sum": ((3,), np.float64, 0), "cell_min": ((3,), np.int32, 0),
            "cell_max": ((3,), np.int32, 0), "instance_id": ((), np.uint32, 0)})

    def _dissolve(self, ids: np.ndarray) -> None:
        """Free super-voxel ids and their adjacency pairs."""
        if ids.size == 0 or self._supervoxels is None:
            return
        sv = self._supervoxels
        sv["alive"][ids] = False
        sv["count"][ids] = 0
        self._free_ids.extend(int(x) for x in ids)
        dead = np.zeros(self._id_end, bool)
        dead[ids] = True
        a, b = self._adjacency >> 32, self._adjacency & 0xFFFFFFFF
        gone = dead[a] | dead[b]
        # The clustering around them is redone: their neighbours and their old clusters.
        self._cluster_seeds.append(np.concatenate([a[gone], b[gone]]))
        if self._root is not None:
            self._dirty_roots.append(self._root[ids[ids < self._root.size]])
        self._adjacency = self._adjacency[~gone]

    def _resegment(self, refresh: np.ndarray, full: bool, labels: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
        """Neighbours, normals and super-voxels of the region around ``refresh``.

        ``labels`` (full only): saved super-voxel labels of every voxel, used instead of
        segmenting again, so a resumed map has the super-voxels it was saved with.

        Returns the re-cut voxels (slots, key order) and each one's previous instance id.
        """
        v = self._voxels
        sv_cfg = self.config.supervoxels
        rad = int(np.ceil(sv_cfg.max_radius_voxels))
        if refresh.size:
            # Neighbour tables of the refreshed voxels, among every voxel within the radius.
            if full:
                cand = refresh
            else:
                c = v["coords"][refresh]
                cand = self._box_slots(c.min(axis=0) - rad, c.max(axis=0) + rad)
            table = voxel_knn(v["coords"][cand], sv_cfg.knn, sv_cfg.max_radius_voxels)
            normals = estimate_normals(v["coords"][cand], table)
            rows = np.searchsorted(v["key"][cand], v["key"][refresh])
            local = table[rows]
            v["neighbors"][refresh] = np.where(local >= 0, cand[np.maximum(local, 0)], -1)
            v["normal"][refresh] = normals[rows]

        # The region: refreshed voxels plus every super-voxel holding one or losing one.
        old_ids = np.unique(np.concatenate([v["supervoxel"][refresh], *self._orphaned]))
        old_ids = old_ids[old_ids >= 0]
        self._orphaned = []
        if old_ids.size and not full:
            # Their voxels lie in their cell boxes: search the boxes' hull, not the map.
            svt = self._supervoxels
            held = np.zeros(self._id_end, bool)
            held[old_ids] = True
            lo, hi = svt["cell_min"][old_ids].min(axis=0), svt["cell_max"][old_ids].max(axis=0)
            if refresh.size:
                c = v["coords"][refresh]
                lo, hi = np.minimum(lo, c.min(axis=0)), np.maximum(hi, c.max(axis=0))
            near = self._box_slots(lo, hi)
            sv_near = v["supervoxel"][near]
            _, refreshed = find_sorted(v["key"][refresh], v["key"][near])
            region = near[refreshed | ((sv_near >= 0) & held[np.maximum(sv_near, 0)])]
        else:
            region = refresh
        if region.size == 0:
            self._dissolve(old_ids)
            return np.zeros(0, np.int64), np.zeros(0, np.uint32)
        svt = self._supervoxels
        had = v["supervoxel"][region]
        previous = np.where(had >= 0, svt["instance_id"][np.maximum(had, 0)],
                            v["prior_id"][region]).astype(np.uint32)
        v["prior_id"][region] = 0
        self._dissolve(old_ids)

        # Felzenszwalb on the edges among the region's voxels (the full kernel's edge list
        # restricted to them, in the same order).
        nb = v["neighbors"][region]
        region_row = v["region_row"]
        region_row[region] = np.arange(region.size, dtype=np.int32)
        local_nb = np.where(nb >= 0, region_row[np.maximum(nb, 0)], -1).astype(np.int32)
        region_row[region] = -1
        if labels is None:
            colour = colour_from_sums(v["rgb_sum"][region], v["count"][region])
            guide = Guide(v["embedding"][region], v["center"][region], v["bandwidth"][region])
            cut = segment_supervoxels(v["coords"][region], colour, v["normal"][region],
                                      local_nb, sv_cfg.k_threshold, sv_cfg.colour_weight,
                                      sv_cfg.min_size, guide, sv_cfg.affinity_weight)
            local_sv = split_by_label(cut, v["semantic"][region])
        else:
            local_sv = split_by_label(labels, v["semantic"][region])
        n_new = int(local_sv.max()) + 1
        ids = self._allocate_ids(n_new)
        self._fresh_ids = ids
        v["supervoxel"][region] = ids[local_sv]
        self._supervoxel_statistics(region, local_sv, ids)

        # Adjacency of the new super-voxels: pairs listed by any voxel within the radius.
        c = v["coords"][region]
        near = region if full else self._box_slots(c.min(axis=0) - rad, c.max(axis=0) + rad)
        nb = v["neighbors"][near]
        own = v["supervoxel"][near]
        other = np.where(nb >= 0, v["supervoxel"][np.maximum(nb, 0)], -1)
        is_new = np.zeros(self._id_end, bool)
        is_new[ids] = True
        a = np.broadcast_to(own[:, None], other.shape)
        keep = (other >= 0) & (other != a) & (is_new[np.maximum(other, 0)] | is_new[a])
        lo = np.minimum(a[keep], other[keep]).astype(np.int64)
        hi = np.maximum(a[keep], other[keep]).astype(np.int64)
        self._adjacency = insert_sorted(self._adjacency, (lo << 32) | hi)
        return region, previous

    def _allocate_ids(self, n: int) -> np.ndarray:
        """Super-voxel ids for ``n`` new super-voxels, ascending (fresh ones when none were
        freed, so a from-scratch segmentation numbers them 0..n-1 like the pipeline)."""
        self._free_ids.sort(reverse=True)
        reuse = min(n, len(self._free_ids))
        taken = [self._free_ids.pop() for _ in range(reuse)]
        fresh = list(range(self._id_end, self._id_end + n - reuse))
        self._id_end += n - reuse
        self._supervoxels.reserve(self._id_end)
        return np.asarray(taken + fresh, np.int64)

    def _supervoxel_statistics(self, region: np.ndarray, local_sv: np.ndarray,
                               ids: np.ndarray) -> None:
        """Means of eqs. (12-13) and the bookkeeping sums of the new super-voxels."""
        v, sv = self._voxels, self._supervoxels
        n = ids.size
        count, cen, emb, bw, occ = _statistics_kernel(
            local_sv.astype(np.int64), n, v["center"][region].astype(np.float64),
            v["embedding"][region].astype(np.float64),
            v["bandwidth"][region].astype(np.float64),
            v["log_occupancy"][region].astype(np.float64))
        sv["alive"][ids] = True
        sv["count"][ids] = count
        sv["center"][ids] = cen
        sv["embedding"][ids] = emb
        sv["bandwidth"][ids] = bw
        sv["log_occupancy"][ids] = occ
        member = np.zeros(n, np.int64)
        member[local_sv] = np.arange(region.size)
        sv["semantic"][ids] = v["semantic"][region][member]  # one class per super-voxel
        prob = v["prob"][region].astype(np.float64)
        sv["prob_sum"][ids] = np.stack(
            [np.bincount(local_sv, prob[:, k], n) for k in range(prob.shape[1])], axis=1)
        cells = v["coords"][region]
        sv["cell_sum"][ids] = np.stack(
            [np.bincount(local_sv, cells[:, a].astype(np.float64), n) for a in range(3)], axis=1)
        lo, hi = group_boxes(local_sv, cells, cells, n)
        sv["cell_min"][ids] = lo
        sv["cell_max"][ids] = hi

    # ------------------------------------------------------------------ 4. clustering

    def _cluster(self, full: bool) -> tuple[SupervoxelClusters, SupervoxelStatistics]:
        """Eqs. (12-14) on every super-voxel, the greedy merging redone only in the
        components of the merge graph that hold a new super-voxel, a neighbour of a dissolved
        one, or a member of a cluster that lost one. Merges never cross components, so the
        others keep their clusters and the result is the global clustering's."""
        sv = self._supervoxels
        s = self._id_end
        cfg = self.config.clustering
        stats = SupervoxelStatistics(
            count=sv["count"][:s], center_m=sv["center"][:s], embedding=sv["embedding"][:s],
            bandwidth=sv["bandwidth"][:s], log_occupancy=sv["log_occupancy"][:s],
            semantic=sv["semantic"][:s])
        edges = np.stack([self._adjacency >> 32, self._adjacency & 0xFFFFFFFF], axis=1)
        active, graph = merge_graph(stats, edges, cfg)
        seeds, self._cluster_seeds = self._cluster_seeds, []
        dirty_roots, self._dirty_roots = self._dirty_roots, []
        if full or self._root is None:
            root, count, occ = greedy_roots(stats, graph, cfg)
        else:
            old = self._root.size
            root = np.concatenate([self._root, np.arange(old, s)])[:s]
            count = np.concatenate([self._root_count, stats.count[old:]])[:s]
            occ = np.concatenate([self._root_occ, stats.log_occupancy[old:]])[:s]
            seed = np.zeros(s, bool)
            seed[self._fresh_ids] = True
            for part in seeds:
                seed[part[part < s]] = True
            if dirty_roots:
                lost = np.zeros(s, bool)
                lost[np.concatenate(dirty_roots)] = True
                seed |= lost[root]
            component = graph_components(s, graph)
            hit = np.zeros(s, bool)
            hit[component[seed]] = True
            local = np.flatnonzero(hit[component])  # ascending ids: the same tie-breaking
            if local.size:
                sub = SupervoxelStatistics(
                    count=stats.count[local], center_m=stats.center_m[local],
                    embedding=stats.embedding[local], bandwidth=stats.bandwidth[local],
                    log_occupancy=stats.log_occupancy[local], semantic=stats.semantic[local])
                inside = hit[component[graph[:, 0]]]
                sub_graph = np.searchsorted(local, graph[inside])
                sub_root, sub_count, sub_occ = greedy_roots(sub, sub_graph, cfg)
                root[local] = local[sub_root]
                count[local] = sub_count
                occ[local] = sub_occ
        self._root, self._root_count, self._root_occ = root, count, occ
        return clusters_from_roots(active, root, count, occ, stats.semantic, cfg), stats

    # ------------------------------------------------------------------ 5. ids

    def _assign_ids(self, clusters, stats: SupervoxelStatistics,
                    resegmented: tuple[np.ndarray, np.ndarray]) -> None:
        """Persistent ids (:func:`match_ids`), instance scores, centroids and boxes."""
        sv = self._supervoxels
        s = self._id_end
        inst = clusters.supervoxel_instance.astype(np.int64)
        n_inst = clusters.instance_label.shape[0]
        region, region_prev = resegmented
        new_ids = np.zeros(s, bool)
        new_ids[self._fresh_ids] = True  # the re-cut region's super-voxels
        self._fresh_ids = np.zeros(0, np.int64)
        kept = sv["alive"][:s] & ~new_ids
        prev_sv = sv["instance_id"][:s].astype(np.int64)
        # Overlap (instance now, id before): kept super-voxels count whole, re-cut voxels
        # one by one.
        region_inst = inst[self._voxels["supervoxel"][region]] if region.size else \
            np.zeros(0, np.int64)
        now = np.concatenate([inst[kept], region_inst])
        before = np.concatenate([prev_sv[kept], region_prev.astype(np.int64)])
        weight = np.concatenate([stats.count[kept], np.ones(region.size, np.int64)])
        new_size = clusters.instance_voxels
        ids, self._next_instance_id = match_ids(now, before, weight, new_size,
                                                self.min_overlap, self._next_instance_id)
        sv["instance_id"][:s] = np.where(inst >= 0, ids[np.maximum(inst, 0)], 0) if n_inst \
            else 0

        # Instance table rows (in instance order; the caller sorts by id).
        label = clusters.instance_label
        # Each instance's class as a column of the probabilities (-1: not a model class).
        col_of = np.full(int(max(self._label_ids.max(), label.max(initial=0))) + 1, -1, np.int64)
        col_of[self._label_ids] = np.arange(self._label_ids.size)
        cols = np.where(label >= 0, col_of[np.maximum(label, 0)], -1)
        member = inst >= 0
        owner = inst[member]
        prob = np.where(cols[owner] >= 0,
                        sv["prob_sum"][:s][np.flatnonzero(member), np.maximum(cols[owner], 0)],
                        0.0)
        voxels = np.maximum(new_size, 1).astype(np.float64)
        score = np.bincount(owner, prob, n_inst) / voxels
        if self.config.clustering.use_occupancy:
            ratio = np.maximum(clusters.instance_ratio.astype(np.float64), 1e-6)
            score = score * np.minimum(ratio, 1.0 / ratio)
        centroid = np.stack([np.bincount(owner, sv["cell_sum"][:s][member, a], n_inst)
                             for a in range(3)], axis=1) / voxels[:, None]
        lo, hi = group_boxes(owner, sv["cell_min"][:s][member], sv["cell_max"][:s][member],
                             n_inst)
        self._set_instances(ids, label, score, new_size, clusters.instance_ratio, centroid,
                            lo, hi + 1)

    def _set_instances(self, ids: np.ndarray, labels: np.ndarray, scores: np.ndarray,
                       voxels: np.ndarray, ratio: np.ndarray, centroid_cells: np.ndarray,
                       lo_cells: np.ndarray, hi_cells: np.ndarray) -> None:
        """The instance table, in instance order; positions in voxel units."""
        vs = self.config.voxel_size_m
        self.instance_ids = ids.astype(np.uint32)
        self.instance_labels = labels.astype(np.int32)
        self.instance_scores = np.clip(scores, 0.0, 1.0).astype(np.float32)
        self.instance_voxels = voxels.astype(np.int64)
        self.instance_ratio = ratio.astype(np.float32)
        self.instance_centroid_m = ((centroid_cells + 0.5) * vs).astype(np.float32)
        self.instance_box_min_m = (lo_cells * vs).astype(np.float32)
        self.instance_box_max_m = (hi_cells * vs).astype(np.float32)

    # ------------------------------------------------------------------ saved state

    def export_state(self) -> dict[str, np.ndarray]:
        """The cached network outputs and the instance id of every voxel, by voxel key, and
        the next instance id (what :meth:`import_state` needs to resume)."""
        state = {"next_instance_id": np.array(self._next_instance_id, np.int64)}
        if self._label_ids is None or self.num_voxels == 0:
            return {**state, "voxel_keys": np.zeros(0, np.int64)}
        v = self._voxels
        s = self._index_slots
        return {**state, "voxel_keys": self._index_keys.copy(),
                "label_ids": self._label_ids.copy(), "prob": v["prob"][s],
                "semantic": v["semantic"][s], "embedding": v["embedding"][s],
                "center": v["center"][s], "bandwidth": v["bandwidth"][s],
                "log_occupancy": v["log_occupancy"][s],
                "supervoxel": np.unique(v["supervoxel"][s], return_inverse=True)[1].astype(
                    np.int32),
                "instance_id": self.slot_instance_id(s)}

    def import_state(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Forget everything, then resume from :meth:`export_state`'s arrays: the next
        update must bring the same map in (from scratch); its voxels found in the state take
        their cached outputs instead of running the network, and their saved instance ids.

        Raises:
            ValueError: arrays missing or inconsistent.
        """
        try:
            keys = np.asarray(arrays["voxel_keys"], np.int64)
            next_id = int(arrays["next_instance_id"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"segmenter state incomplete: {exc}") from exc
        n = keys.size
        if keys.ndim != 1 or next_id < 1 or (n and np.any(np.diff(keys) <= 0)):
            raise ValueError("segmenter state: voxel keys must be sorted and unique, the next "
                             "instance id positive")
        state = {"voxel_keys": keys}
        try:
            if n:
                state.update({name: np.asarray(arrays[name]) for name in (
                    "label_ids", "prob", "semantic", "embedding", "center", "bandwidth",
                    "log_occupancy", "supervoxel", "instance_id")})
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"segmenter state incomplete: {exc}") from exc
        if n:
            k = state["label_ids"].shape[0]
            shapes = {"prob": (n, k), "semantic": (n,), "center": (n, 3),
                      "bandwidth": (n, 2), "log_occupancy": (n,), "supervoxel": (n,),
                      "instance_id": (n,)}
            for name, shape in shapes.items():
                if state[name].shape != shape:
                    raise ValueError(f"segmenter state: {name} has shape "
                                     f"{state[name].shape}, expected {shape}")
            if state["embedding"].ndim != 2 or state["embedding"].shape[0] != n:
                raise ValueError("segmenter state: embedding must be (V, E)")
            if int(state["instance_id"].max()) >= next_id:
                raise ValueError("segmenter state: instance ids beyond next_instance_id")
            if int(state["supervoxel"].min()) < 0:
                raise ValueError("segmenter state: negative super-voxel labels")
        self.reset()
        self._next_instance_id = next_id
        self._restored = state

    def _restore_cache(self) -> tuple[np.ndarray, np.ndarray | None]:
        """Apply a pending imported state to the live voxels.

        Returns:
            True per live voxel (key order) where the state had it, and the saved
            super-voxel labels of the live voxels when it had all of them (else None).
        """
        state, self._restored = self._restored, None
        slots = self._index_slots.astype(np.int64)
        keys = state["voxel_keys"]
        found = np.zeros(slots.size, bool)
        if keys.size == 0 or slots.size == 0:
            return found, None
        pos, found = find_sorted(keys, self._index_keys)
        rows, hit = pos[found], slots[found]
        v = self._voxels
        if self._label_ids is None:
            self._init_outputs(state["label_ids"].astype(np.int32),
                               state["embedding"].shape[1])
        elif not np.array_equal(state["label_ids"], self._label_ids):
            raise ValueError("the saved state is of a model with other classes")
        for name in ("prob", "semantic", "embedding", "center", "bandwidth",
                     "log_occupancy"):
            v[name][hit] = state[name][rows]
        v["prior_id"][hit] = state["instance_id"][rows]
        v["seen_colour"][hit] = colour_from_sums(v["rgb_sum"][hit], v["count"][hit])
        labels = state["supervoxel"][pos] if found.all() else None
        return found, labels

    def _clear_segmentation(self) -> None:
        """No voxels left: no super-voxels, no instances (ids are not reused)."""
        if self._supervoxels is not None and self._id_end:
            self._dissolve(np.flatnonzero(self._supervoxels["alive"][:self._id_end]))
        self._orphaned = []
        self._root = None  # the next clustering starts from scratch
        self._cluster_seeds, self._dirty_roots = [], []
        self._set_instances(np.zeros(0, np.uint32), np.zeros(0, np.int32),
                            np.zeros(0, np.float32), np.zeros(0, np.int64),
                            np.zeros(0, np.float32), np.zeros((0, 3)), np.zeros((0, 3)),
                            np.zeros((0, 3)))

    # ------------------------------------------------------------------ outputs

    def block_keys(self) -> list[int]:
        """The keys of the blocks the voxels hold."""
        return list(self._blocks)

    def point_slots(self) -> np.ndarray:
        """(N,) voxel slot of every point, blocks by key, points in block order (the
        canonical order of :meth:`occuseg_ros.core.surface_map.SurfaceMap.points`)."""
        return self._point_slots.arrays[0]

    def point_outputs(self, score_of_id: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per point of :meth:`point_slots`: (N,) int32 nyu40 class, (N,) uint32 persistent
        instance id (0 = none) and (N,) float32 ``score_of_id[id]``, in one parallel pass."""
        score_of_id = np.asarray(score_of_id, np.float32)
        if score_of_id.shape[0] < int(self.instance_ids.max(initial=0)) + 1:
            raise ValueError("score_of_id must cover every instance id")
        if self._supervoxels is None:  # nothing segmented yet: the map is empty
            n = self.point_slots().shape[0]
            return np.zeros(n, np.int32), np.zeros(n, np.uint32), np.zeros(n, np.float32)
        return _point_outputs_kernel(self.point_slots(), self._voxels["semantic"],
                                     self._voxels["supervoxel"],
                                     self._supervoxels["instance_id"], score_of_id)

    def slot_instance_id(self, slots: np.ndarray) -> np.ndarray:
        """(n,) uint32 persistent instance id of the voxels at ``slots`` (0 = none)."""
        return self._supervoxels["instance_id"][self._voxels["supervoxel"][slots]]

    def voxel_predictions(self) -> tuple[np.ndarray, VoxelPredictions]:
        """The cached network outputs of every voxel: keys (V,) sorted, and predictions in
        that order (offsets re-derived from the cached centres)."""
        v = self._voxels
        s = self._index_slots
        centres = ((v["coords"][s].astype(np.float64) + 0.5) * self.config.voxel_size_m
                   ).astype(np.float32)
        return self._index_keys.copy(), VoxelPredictions(
            semantic_prob=v["prob"][s], label_ids=self._label_ids,
            embedding=v["embedding"][s], offset_m=v["center"][s] - centres,
            bandwidth=v["bandwidth"][s], log_occupancy=v["log_occupancy"][s])


@dataclass
class PredictionDifference:
    """Per-voxel network outputs of two segmenters of the same map, compared.

    Attributes:
        voxels: voxels compared.
        max_abs_probability: largest difference of any class probability.
        class_disagreement: share of voxels whose most probable class differs.
        max_centre_m: largest distance between predicted instance centres, metres.
        max_abs_log_occupancy: largest difference of the log occupancy (eq. 10).
    """

    voxels: int
    max_abs_probability: float
    class_disagreement: float
    max_centre_m: float
    max_abs_log_occupancy: float


def prediction_difference(a: IncrementalSegmenter,
                          b: IncrementalSegmenter) -> PredictionDifference:
    """How far the cached outputs of ``a`` (e.g. incremental) are from ``b``'s (e.g. a full
    recompute of the same map).

    Raises:
        ValueError: the two hold different voxels.
    """
    keys_a, pa = a.voxel_predictions()
    keys_b, pb = b.voxel_predictions()
    if not np.array_equal(keys_a, keys_b):
        raise ValueError("the segmenters hold different voxels")
    if keys_a.size == 0:
        return PredictionDifference(0, 0.0, 0.0, 0.0, 0.0)
    centre_a = pa.offset_m.astype(np.float64)
    centre_b = pb.offset_m.astype(np.float64)  # same voxel centres: offsets compare centres
    return PredictionDifference(
        voxels=int(keys_a.size),
        max_abs_probability=float(np.abs(pa.semantic_prob - pb.semantic_prob).max()),
        class_disagreement=float((pa.semantic != pb.semantic).mean()),
        max_centre_m=float(np.linalg.norm(centre_a - centre_b, axis=1).max()),
        max_abs_log_occupancy=float(np.abs(pa.log_occupancy - pb.log_occupancy).max()))
