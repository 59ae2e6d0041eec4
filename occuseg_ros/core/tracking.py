"""Instance ids that stay the same while the map grows (as panoptic_mapping and voxblox++ do).

Each segmentation of the map clusters from scratch, so its instance indices mean nothing
from one update to the next. :class:`InstanceTracker` matches the new instances to the
previous ones by voxel overlap and hands out persistent ids: pairs (new, previous) are taken
greedily by overlap, largest first, one to one, when the overlap covers at least
``min_overlap`` of the smaller of the two (the previous instance counted over its voxels
still in the map), and the new instance takes the previous id.
Unmatched instances get fresh ids, never reused. Ids start at 1; 0 means "no instance".
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from .surface_map import find_sorted


@dataclass
class TrackerState:
    """What the tracker remembers (saved with the map).

    Attributes:
        voxel_keys: (V,) int64 sorted keys of the voxels inside an instance last time.
        voxel_ids: (V,) uint32 their instance ids.
        next_id: the id the next new instance gets.
    """

    voxel_keys: np.ndarray
    voxel_ids: np.ndarray
    next_id: int


class InstanceTracker:
    """Persistent instance ids by voxel overlap; see the module docstring.

    Args:
        min_overlap: share of the smaller instance that must overlap, in (0, 1].
    """

    def __init__(self, min_overlap: float = 0.5) -> None:
        if not 0.0 < min_overlap <= 1.0:
            raise ValueError(f"min_overlap must be in (0, 1], got {min_overlap}")
        self.min_overlap = float(min_overlap)
        self.reset()

    def reset(self) -> None:
        """Forget every instance; ids restart at 1."""
        self.state = TrackerState(np.zeros(0, np.int64), np.zeros(0, np.uint32), 1)

    def assign(self, voxel_keys: np.ndarray, voxel_instance: np.ndarray,
               num_instances: int) -> np.ndarray:
        """Persistent ids for one segmentation.

        Args:
            voxel_keys: (V,) int64 unique keys of the map's voxels (any fixed-origin packing,
                the same on every call, e.g. :func:`occuseg_ros.core.surface_map.grid_keys`).
            voxel_instance: (V,) instance index of each voxel in [0, num_instances), -1 = none.
            num_instances: number of instances of this segmentation.

        Returns:
            (num_instances,) uint32 ids, all >= 1 and distinct.
        """
        keys = np.asarray(voxel_keys, np.int64)
        inst = np.asarray(voxel_instance, np.int64)
        if keys.shape != inst.shape or keys.ndim != 1:
            raise ValueError(f"voxel_keys {keys.shape} and voxel_instance {inst.shape} must be "
                             "equal-length vectors")
        if inst.size and (inst.max() >= num_instances or inst.min() < -1):
            raise ValueError(f"voxel_instance out of range for {num_instances} instances")
        old = self.state
        inside = inst >= 0
        keys_in, inst_in = keys[inside], inst[inside]
        # Previous id of every current voxel (0 where it had none or is new).
        before = np.zeros(keys.size, np.int64)
        pos, found = find_sorted(old.voxel_keys, keys)
        before[found] = old.voxel_ids[pos[found]]
        ids, next_id = match_ids(inst, before, np.ones(keys.size, np.int64),
                                 np.bincount(inst_in, minlength=num_instances),
                                 self.min_overlap, old.next_id)
        order = np.argsort(keys_in)
        self.state = TrackerState(keys_in[order], ids[inst_in[order]], next_id)
        return ids


@numba.njit(cache=True)
def _greedy_match_kernel(a: np.ndarray, b: np.ndarray, num_instances: int,
                         id_bound: int) -> np.ndarray:
    # Pairs (new a, previous id b) in priority order: each new instance and each previous id
    # is taken at most once. Returns (num_instances,) int64 ids, 0 where unmatched.
    ids = np.zeros(num_instances, np.int64)
    taken = np.zeros(id_bound, np.bool_)
    for t in range(a.shape[0]):
        if ids[a[t]] == 0 and not taken[b[t]]:
            ids[a[t]] = b[t]
            taken[b[t]] = True
    return ids


def match_ids(now: np.ndarray, before: np.ndarray, weight: np.ndarray, new_size: np.ndarray,
              min_overlap: float, next_id: int) -> tuple[np.ndarray, int]:
    """The matching rule of the module docstring, on weighted entries of the map.

    Each entry stands for ``weight`` voxels that belong to instance ``now`` of this
    segmentation (-1: none) and had id ``before`` (0: none) last time: one voxel each for
    :class:`InstanceTracker`, a whole kept super-voxel for
    :class:`occuseg_ros.core.incremental.IncrementalSegmenter`. Every voxel still in the map
    must be covered once, since previous instances are measured over them.

    Args:
        now, before, weight: (n,) int arrays as above.
        new_size: (I,) voxels of each current instance.
        min_overlap: share of the smaller instance that must overlap, in (0, 1].
        next_id: the id the next new instance gets.

    Returns:
        (I,) uint32 ids, all >= 1 and distinct, and the next id to hand out.
    """
    now = np.asarray(now, np.int64)
    before = np.asarray(before, np.int64)
    weight = np.asarray(weight, np.int64)
    new_size = np.asarray(new_size, np.int64)
    num_instances = int(new_size.shape[0])
    ids = np.zeros(num_instances, np.int64)
    seen = before > 0
    if seen.any():
        # Previous instances' sizes over their voxels still in the map, and the overlaps.
        base = int(before.max()) + 1
        old_size = np.bincount(before[seen], weight[seen], base)
        pairs = seen & (now >= 0)
        key, inv = np.unique(now[pairs] * base + before[pairs], return_inverse=True)
        count = np.bincount(inv, weight[pairs], key.size)
        a, b = key // base, key % base
        # Pairs below the overlap threshold never match; the others are taken greedily,
        # largest overlap first (ties: smaller new index, then smaller previous id).
        enough = count >= min_overlap * np.minimum(new_size[a], old_size[b])
        order = np.lexsort((b, a, -count))
        order = order[enough[order]]
        ids = _greedy_match_kernel(a[order], b[order], num_instances, base)
    fresh = ids == 0
    ids[fresh] = next_id + np.arange(int(fresh.sum()))
    next_id += int(fresh.sum())
    ids = ids.astype(np.uint32)
    return ids, next_id
