"""Voxelisation: points in metres to a sparse grid (2 cm by default) and back.

Frames: coordinates are in whatever metric frame the points are in (REP-103, z up for rooms);
voxel ``(i, j, k)`` covers ``[i, i+1) * voxel_size_m`` along x, and likewise for y and z.
Axis order is (x, y, z) everywhere, for coordinates and for the spconv indices built from them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

@dataclass
class VoxelGrid:
    """A sparse voxel grid built from a point cloud.

    Attributes:
        coords: (M, 3) int32 voxel indices (x, y, z), ``floor(xyz / voxel_size_m)``; sorted
            lexicographically, unique.
        voxel_size_m: edge length of a voxel in metres.
        point_to_voxel: (N,) int64 index into ``coords`` for every input point.
        counts: (M,) int32 number of input points in each voxel.
        rgb: (M, 3) float32 mean colour of the voxel's points in [0, 1] (zeros if no colour).
        anchor: (3,) int cell the network's strided levels align to when this grid is a crop
            of a larger map (the map's minimum corner); None: this grid's own minimum.
    """

    coords: np.ndarray
    voxel_size_m: float
    point_to_voxel: np.ndarray
    counts: np.ndarray
    rgb: np.ndarray
    anchor: np.ndarray | None = None

    @property
    def num_voxels(self) -> int:
        return int(self.coords.shape[0])

    @property
    def centers_m(self) -> np.ndarray:
        """(M, 3) float32 voxel centres in metres."""
        return ((self.coords.astype(np.float64) + 0.5) * self.voxel_size_m).astype(np.float32)

    def to_points(self, per_voxel: np.ndarray) -> np.ndarray:
        """Copy a per-voxel array back to every input point (the inverse of voxelisation)."""
        return per_voxel[self.point_to_voxel]


def pack_coords(coords: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pack (M, 3) integer coordinates into sortable int64 keys.

    Returns:
        keys (M,) int64, the per-axis origin (3,) int64 and the per-axis extent (3,) int64.
    """
    c = np.asarray(coords, dtype=np.int64)
    if c.size == 0:
        return np.zeros(0, np.int64), np.zeros(3, np.int64), np.ones(3, np.int64)
    origin = c.min(axis=0) - 1
    extent = c.max(axis=0) - origin + 2
    if float(np.prod(extent.astype(np.float64))) >= 2.0 ** 62:
        raise ValueError(f"voxel grid extent {extent.tolist()} is too large to index")
    rel = c - origin
    keys = (rel[:, 0] * extent[1] + rel[:, 1]) * extent[2] + rel[:, 2]
    return keys, origin, extent


def voxelize(xyz: np.ndarray, voxel_size_m: float = 0.02,
             rgb: np.ndarray | None = None) -> VoxelGrid:
    """Quantise points (metres) to a sparse grid, averaging colour per voxel.

    Args:
        xyz: (N, 3) finite coordinates in metres.
        voxel_size_m: voxel edge in metres (the paper uses 0.02).
        rgb: optional (N, 3) colours, uint8 0-255 or float 0-1.

    Raises:
        ValueError: on wrong shapes, non-finite coordinates or a non-positive voxel size.
    """
    xyz = np.asarray(xyz)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise ValueError(f"xyz must have shape (N, 3), got {xyz.shape}")
    if not voxel_size_m > 0:
        raise ValueError(f"voxel_size_m must be positive, got {voxel_size_m}")
    if not np.isfinite(xyz).all():
        raise ValueError("xyz contains NaN or Inf; drop those points first")
    n = xyz.shape[0]
    grid_coords = np.floor(xyz.astype(np.float64) / voxel_size_m).astype(np.int64)
    keys, origin, extent = pack_coords(grid_coords)
    unique_keys, point_to_voxel, counts = np.unique(keys, return_inverse=True, return_counts=True)
    rel = np.empty((unique_keys.size, 3), np.int64)
    rel[:, 2] = unique_keys % extent[2]
    rest = unique_keys // extent[2]
    rel[:, 1] = rest % extent[1]
    rel[:, 0] = rest // extent[1]
    coords = (rel + origin).astype(np.int32)
    m = coords.shape[0]
    if rgb is None:
        colour = np.zeros((m, 3), np.float32)
    else:
        rgb = np.asarray(rgb)
        if rgb.shape != (n, 3):
            raise ValueError(f"rgb must have shape ({n}, 3), got {rgb.shape}")
        colour = mean_colour(rgb, point_to_voxel, m)
    return VoxelGrid(coords=coords, voxel_size_m=float(voxel_size_m),
                     point_to_voxel=point_to_voxel.astype(np.int64),
                     counts=counts.astype(np.int32), rgb=colour)


def mean_colour(rgb: np.ndarray, index: np.ndarray, size: int) -> np.ndarray:
    """(size, 3) float32 mean colour in [0, 1] of the points (N, 3) grouped by ``index``.

    uint8 colours are summed exactly and divided once, ``sum / count / 255``: the
    incremental segmenter (:mod:`occuseg_ros.core.incremental`) keeps the same integer sums,
    so both give bit-identical voxel colours.
    """
    if rgb.dtype != np.uint8:
        return scatter_mean(rgb.astype(np.float64), index, size).astype(np.float32)
    sums = np.stack([np.bincount(index, weights=rgb[:, c], minlength=size) for c in range(3)],
                    axis=1)
    return colour_from_sums(sums, np.bincount(index, minlength=size))


def colour_from_sums(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(M, 3) float32 colour in [0, 1] from per-voxel sums of uint8 colours and counts."""
    return (np.asarray(sums, np.float64) / np.maximum(counts, 1)[:, None] / 255.0
            ).astype(np.float32)


def scatter_mean(values: np.ndarray, index: np.ndarray, size: int) -> np.ndarray:
    """Mean of ``values`` (N,) or (N, C) grouped by ``index`` (N,) into ``size`` rows.

    Empty groups get 0.
    """
    values = np.asarray(values, dtype=np.float64)
    count = np.bincount(index, minlength=size).astype(np.float64)
    denom = np.maximum(count, 1.0)
    if values.ndim == 1:
        return np.bincount(index, weights=values, minlength=size) / denom
    out = np.empty((size, values.shape[1]), np.float64)
    for c in range(values.shape[1]):
        out[:, c] = np.bincount(index, weights=values[:, c], minlength=size) / denom
    return out


def majority_vote(labels: np.ndarray, index: np.ndarray, size: int) -> np.ndarray:
    """Most frequent integer label per group (ties go to the smallest label).

    Args:
        labels: (N,) integer labels (may be negative, e.g. -1 for "no instance").
        index: (N,) group of each element in [0, size).
        size: number of groups; empty groups get -1.
    """
    labels = np.asarray(labels, dtype=np.int64)
    index = np.asarray(index, dtype=np.int64)
    out = np.full(size, -1, np.int64)
    if labels.size == 0:
        return out
    values, code = np.unique(labels, return_inverse=True)
    pair = index * values.size + code
    pair_ids, pair_counts = np.unique(pair, return_counts=True)
    group = pair_ids // values.size
    # Sort by group, then by count descending, then label ascending: first row per group wins.
    order = np.lexsort((pair_ids % values.size, -pair_counts, group))
    group_sorted = group[order]
    first = np.ones(order.size, bool)
    first[1:] = group_sorted[1:] != group_sorted[:-1]
    winners = order[first]
    out[group[winners]] = values[pair_ids[winners] % values.size]
    return out

