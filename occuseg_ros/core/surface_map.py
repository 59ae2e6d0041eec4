"""The live map: the coloured surface points of a growing reconstruction, kept in blocks.

Points are in metres in the map frame (REP-105 ``map``). They are grouped in cubic blocks of
``block_size_m`` whose integer coordinates are ``floor(p / block_size_m)``, the convention of
:mod:`occuseg_ros.core.tsdf` (blocks of ``block_resolution`` voxels). Three kinds of update:

- a snapshot replaces the whole map;
- a surface increment carries every point of the blocks that changed: each block it touches
  is replaced by the increment's points in it (a block that became empty cannot be expressed,
  so it keeps its points until the next snapshot);
- a TSDF increment carries changed voxels: each replaces the voxel of the same key, and a
  voxel that left the surface band is removed.

:meth:`SurfaceMap.points` lists the points in a canonical order (blocks by key, points within
a block in arrival order), so the same surface reached through any sequence of updates gives
the same arrays, and therefore the same segmentation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Integer grid coordinates are packed into one int64 key with 21 bits per axis.
_BITS = 21
_OFFSET = 1 << (_BITS - 1)
_MASK = (1 << _BITS) - 1


def grid_keys(xyz: np.ndarray, cell_m: float) -> np.ndarray:
    """(N,) int64 key of the cell ``floor(p / cell_m)`` of each point (N, 3), metres.

    Raises:
        ValueError: a coordinate beyond the packable range (about 2^20 cells from the origin).
    """
    cells = np.floor(np.asarray(xyz, np.float64) / cell_m).astype(np.int64)
    if cells.size and (cells.min() < -_OFFSET or cells.max() >= _OFFSET):
        raise ValueError(f"points lie beyond {_OFFSET * cell_m:.0f} m of the map origin")
    return keys_from_cells(cells)


def keys_from_cells(cells: np.ndarray) -> np.ndarray:
    """(N,) int64 keys of integer cells (N, 3), as :func:`grid_keys` packs them."""
    cells = np.asarray(cells, np.int64)
    if cells.size and (cells.min() < -_OFFSET or cells.max() >= _OFFSET):
        raise ValueError(f"cells beyond {_OFFSET} of the origin cannot be packed")
    cells = cells + _OFFSET
    return (cells[:, 0] << (2 * _BITS)) | (cells[:, 1] << _BITS) | cells[:, 2]


def cells_from_keys(keys: np.ndarray) -> np.ndarray:
    """Inverse of :func:`grid_keys`: (N, 3) int64 cell coordinates."""
    keys = np.asarray(keys, np.int64)
    return np.stack([(keys >> (2 * _BITS)) & _MASK, (keys >> _BITS) & _MASK, keys & _MASK],
                    axis=1) - _OFFSET


def find_sorted(keys: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where ``queries`` (M,) are in sorted unique ``keys`` (K,): each query's insertion
    position (M,) int64 (``np.searchsorted``) and whether the key there is the query (M,)."""
    queries = np.asarray(queries)
    pos = np.searchsorted(keys, queries)
    found = pos < keys.size
    found[found] = keys[pos[found]] == queries[found]
    return pos, found


def insert_sorted(keys: np.ndarray, new: np.ndarray) -> np.ndarray:
    """The sorted union of sorted unique ``keys`` (K,) and any ``new`` keys (M,).

    Unlike ``np.union1d`` it never sorts ``keys`` again: O(K) copying plus O(M log M), so a
    large index takes a few new keys cheaply.
    """
    new = np.unique(new)
    if keys.size == 0:
        return new.astype(keys.dtype)
    at, found = find_sorted(keys, new)
    return np.insert(keys, at[~found], new[~found])


@dataclass
class _Block:
    xyz: np.ndarray  # (n, 3) float32
    rgb: np.ndarray  # (n, 3) uint8


class SurfaceMap:
    """Coloured surface points in the map frame, stored per block; see the module docstring.

    Args:
        block_size_m: block edge in metres; increments replace whole blocks of this size.
        voxel_size_m: voxel edge of TSDF increments (their points are voxel centres).
        max_points: most points the map holds; an update that would exceed it is refused.
    """

    def __init__(self, block_size_m: float = 0.16, voxel_size_m: float = 0.02,
                 max_points: int = 5_000_000) -> None:
        if not 0 < voxel_size_m <= block_size_m:
            raise ValueError(f"need 0 < voxel_size_m <= block_size_m, got {voxel_size_m} "
                             f"and {block_size_m}")
        if max_points < 1:
            raise ValueError(f"max_points must be positive, got {max_points}")
        self.block_size_m = float(block_size_m)
        self.voxel_size_m = float(voxel_size_m)
        self.max_points = int(max_points)
        self._blocks: dict[int, _Block] = {}
        self._num_points = 0
        self._cache: tuple[np.ndarray, np.ndarray] | None = None
        self._changed: set[int] = set()  # blocks changed since the last take_changes
        self._unlisted: set[int] = set()  # blocks changed since the last points()
        self._listing = BlockConcatenation((np.zeros((0, 3), np.float32),
                                            np.zeros((0, 3), np.uint8)))
        #: Incremented by every update that changes the map.
        self.version = 0

    @property
    def num_points(self) -> int:
        return self._num_points

    @property
    def num_blocks(self) -> int:
        return len(self._blocks)

    def take_changes(self) -> dict[int, tuple[np.ndarray, np.ndarray] | None]:
        """The blocks changed since the previous call: key -> (points (n, 3) float32 metres,
        colours (n, 3) uint8) now, None where the block is gone. Feeds
        :meth:`occuseg_ros.core.incremental.IncrementalSegmenter.update`."""
        changes = {}
        for key in self._changed:
            block = self._blocks.get(key)
            changes[key] = None if block is None else (block.xyz, block.rgb)
        self._changed = set()
        return changes

    def clear(self) -> None:
        """Forget every point."""
        if self._blocks:
            self._mark(self._blocks)
            self._blocks.clear()
            self._num_points = 0
            self._touch()

    def replace_all(self, xyz: np.ndarray, rgb: np.ndarray) -> None:
        """A snapshot: the map becomes exactly these points (N, 3) metres, (N, 3) uint8."""
        xyz, rgb = self._check(xyz, rgb)
        self._check_size(xyz.shape[0])
        parts = dict(self._split(xyz, rgb))
        self._mark(self._blocks)
        self._mark(parts)
        self._blocks = parts
        self._num_points = xyz.shape[0]
        self._touch()

    def replace_blocks(self, xyz: np.ndarray, rgb: np.ndarray) -> int:
        """A surface increment: every block holding one of these points is replaced by them.

        Returns:
            The number of blocks replaced.
        """
        xyz, rgb = self._check(xyz, rgb)
        if xyz.shape[0] == 0:
            return 0
        parts = self._split(xyz, rgb)
        removed = sum(self._blocks[k].xyz.shape[0] for k, _ in parts if k in self._blocks)
        self._check_size(self._num_points - removed + xyz.shape[0])
        self._mark(k for k, _ in parts)
        self._blocks.update(parts)
        self._num_points += xyz.shape[0] - removed
        self._touch()
        return len(parts)

    def update_voxels(self, xyz: np.ndarray, rgb: np.ndarray, keep: np.ndarray) -> int:
        """A TSDF increment: the voxels at these centres (N, 3) are replaced, and removed where
        ``keep`` (N,) bool is False (the voxel left the surface band).

        Returns:
            The number of blocks touched.
        """
        xyz, rgb = self._check(xyz, rgb)
        keep = np.asarray(keep, bool)
        if keep.shape != (xyz.shape[0],):
            raise ValueError(f"keep has shape {keep.shape}, expected ({xyz.shape[0]},)")
        if xyz.shape[0] == 0:
            return 0
        new_parts = dict(self._split(xyz[keep], rgb[keep]))
        changed_keys = np.unique(grid_keys(xyz, self.block_size_m))
        changed_voxels = np.unique(grid_keys(xyz, self.voxel_size_m))
        updated: dict[int, _Block] = {}
        for key in changed_keys.tolist():
            old = self._blocks.get(key)
            new = new_parts.get(key)
            if old is not None:
                stale = np.isin(grid_keys(old.xyz, self.voxel_size_m), changed_voxels)
                old = _Block(old.xyz[~stale], old.rgb[~stale])
                if new is not None:
                    new = _Block(np.concatenate([old.xyz, new.xyz]),
                                 np.concatenate([old.rgb, new.rgb]))
                else:
                    new = old
            if new is not None:
                updated[key] = new
        total = self._num_points + sum(b.xyz.shape[0] for b in updated.values()) - sum(
            self._blocks[k].xyz.shape[0] for k in changed_keys.tolist() if k in self._blocks)
        self._check_size(total)
        self._mark(changed_keys.tolist())
        for key in changed_keys.tolist():
            block = updated.get(key)
            if block is None or block.xyz.shape[0] == 0:
                self._blocks.pop(key, None)
            else:
                self._blocks[key] = block
        self._num_points = total
        self._touch()
        return int(changed_keys.size)

    def points(self) -> tuple[np.ndarray, np.ndarray]:
        """All points in canonical order: (N, 3) float32 metres and (N, 3) uint8 colours.

        The arrays are shared with the map until its next update; do not modify them.
        """
        if self._cache is None:
            self._listing.update({k: None if k not in self._blocks else
                                  (self._blocks[k].xyz, self._blocks[k].rgb)
                                  for k in self._unlisted})
            self._unlisted = set()
            xyz, rgb = self._listing.arrays
            xyz.flags.writeable = False
            rgb.flags.writeable = False
            self._cache = (xyz, rgb)
        return self._cache

    def _touch(self) -> None:
        self._cache = None
        self.version += 1

    def _mark(self, keys) -> None:
        """Note blocks about to change, for take_changes and points."""
        keys = list(keys)
        self._changed.update(keys)
        self._unlisted.update(keys)

    def _check_size(self, total: int) -> None:
        if total > self.max_points:
            raise ValueError(f"the map would hold {total} points, more than max_points "
                             f"{self.max_points}")

    @staticmethod
    def _check(xyz: np.ndarray, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        xyz = np.ascontiguousarray(xyz, np.float32)
        rgb = np.ascontiguousarray(rgb, np.uint8)
        if xyz.ndim != 2 or xyz.shape[1] != 3 or rgb.shape != xyz.shape:
            raise ValueError(f"expected (N, 3) points and colours, got {xyz.shape} and "
                             f"{rgb.shape}")
        if not np.isfinite(xyz).all():
            raise ValueError("points must be finite")
        return xyz, rgb

    def _split(self, xyz: np.ndarray, rgb: np.ndarray) -> list[tuple[int, _Block]]:
        """The points grouped by block, arrival order kept within each block."""
        keys, order, bounds = split_blocks(xyz, self.block_size_m)
        return [(int(k), _Block(xyz[order[a:b]], rgb[order[a:b]]))
                for k, a, b in zip(keys.tolist(), bounds[:-1], bounds[1:])]


def split_blocks(xyz: np.ndarray, block_size_m: float
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Group points (N, 3) metres by block, keeping their order within each block.

    Returns:
        the sorted unique block keys (B,), the permutation (N,) that sorts the points by
        block (stable), and the bounds (B + 1,) of each block's run in that order; the
        permuted points are the canonical order of :meth:`SurfaceMap.points`.
    """
    if xyz.shape[0] == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(1, np.int64)
    keys = grid_keys(xyz, block_size_m)
    order = np.argsort(keys, kind="stable")
    unique, starts = np.unique(keys[order], return_index=True)
    return unique, order, np.append(starts, order.size).astype(np.int64)


class BlockConcatenation:
    """Per-block arrays kept concatenated in block-key order, updated by splicing.

    Holds one or more parallel arrays per block (e.g. points and colours); after
    :meth:`update` with the changed blocks, :attr:`arrays` is what concatenating every block's
    arrays in key order gives, at the cost of one copy of the data plus work in the number
    of changed blocks (no loop over all blocks).

    Args:
        templates: one empty array per part, giving its dtype and trailing shape.
    """

    def __init__(self, templates: tuple[np.ndarray, ...]) -> None:
        self.templates = tuple(np.asarray(t)[:0] for t in templates)
        self.clear()

    def clear(self) -> None:
        self.keys = np.zeros(0, np.int64)  # sorted block keys
        self.offsets = np.zeros(1, np.int64)  # run of block k: offsets[k]:offsets[k + 1]
        self.arrays: tuple[np.ndarray, ...] = tuple(t.copy() for t in self.templates)

    def update(self, changed: dict[int, tuple[np.ndarray, ...] | None]) -> None:
        """Replace the arrays of the changed blocks (None: the block is gone)."""
        if not changed:
            return
        keys_changed = np.array(sorted(changed), np.int64)
        # Sorted-key searches only: no pass sorts or hashes every block's key.
        pos, hit = find_sorted(self.keys, keys_changed)
        present = np.zeros(self.keys.size, bool)
        present[pos[hit]] = True
        kept_keys = self.keys[~present]
        kept_starts, kept_ends = self.offsets[:-1][~present], self.offsets[1:][~present]
        new_keys = np.array([k for k in keys_changed.tolist() if changed[k] is not None],
                            np.int64)
        # The new keys are absent from kept_keys; each lands at its position plus the number
        # of new keys before it.
        insert_at = np.searchsorted(kept_keys, new_keys)
        keys = np.insert(kept_keys, insert_at, new_keys)
        from_old = np.ones(keys.size, bool)
        from_old[insert_at + np.arange(new_keys.size)] = False
        lengths = np.empty(keys.size, np.int64)
        lengths[from_old] = kept_ends - kept_starts
        new_parts = [changed[k] for k in new_keys.tolist()]
        lengths[~from_old] = [p[0].shape[0] for p in new_parts]
        offsets = np.zeros(keys.size + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        # Kept blocks are copied in runs: consecutive in the result and in the old arrays.
        out = tuple(np.empty((int(offsets[-1]),) + t.shape[1:], t.dtype)
                    for t in self.templates)
        at = np.flatnonzero(from_old)
        if at.size:
            breaks = np.flatnonzero((np.diff(at) != 1) | (kept_starts[1:] != kept_ends[:-1])) + 1
            for lo, hi in zip(np.r_[0, breaks].tolist(), np.r_[breaks, at.size].tolist()):
                dst_lo, dst_hi = offsets[at[lo]], offsets[at[hi - 1] + 1]
                for dst, src in zip(out, self.arrays):
                    dst[dst_lo:dst_hi] = src[kept_starts[lo]:kept_ends[hi - 1]]
        for k, part in zip(np.flatnonzero(~from_old).tolist(), new_parts):
            for dst, src in zip(out, part):
                dst[offsets[k]:offsets[k + 1]] = src
        self.keys, self.offsets, self.arrays = keys, offsets, out
