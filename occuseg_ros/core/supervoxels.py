"""Graph-based super-voxels (Felzenszwalb & Huttenlocher) on a sparse voxel grid.

OccuSeg (§3.2) groups voxels into super-voxels "using an efficient graph-based segmentation
scheme [9]" before clustering; the official code runs ScanNet's ``Segmentator`` on the mesh.
Here the same algorithm runs on a voxel neighbour graph:

1. :func:`voxel_knn` builds the graph: the ``k`` nearest occupied voxels of every voxel within
   a ball. On dense maps (TSDF or fused depth) these are 26-neighbours; on decimated meshes
   such as ScanNet's ``vh_clean_2`` (median vertex spacing 2.9 cm) the 26-neighbourhood of
   2 cm voxels leaves a quarter of the voxels isolated and 80 % in components of fewer than
   20 voxels, so a wider search is needed.
2. :func:`estimate_normals` fits a plane (PCA) to each voxel and its neighbours.
3. :func:`segment_supervoxels` weighs each edge by normal and colour difference, applies
   Felzenszwalb's merge criterion and absorbs segments smaller than ``min_size``.
4. :func:`supervoxel_adjacency` lists which super-voxels touch.

:func:`build_supervoxels` runs all four with a :class:`SupervoxelConfig`. Coordinates are
integer voxel indices and distances are in voxel units, so the parameters do not depend on
the voxel size (the defaults were tuned at 2 cm).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numba
import numpy as np

from .clustering import pair_affinity

# The neighbour table, normals and edge weights run on several threads. OpenMP (libgomp)
# first: numba tries TBB first by default and warns when the installed TBB is too old;
# workqueue last, as it cannot serve two calling threads at once.
# NUMBA_THREADING_LAYER_PRIORITY still decides where it is set.
if "NUMBA_THREADING_LAYER_PRIORITY" not in os.environ:
    numba.config.THREADING_LAYER_PRIORITY = ["omp", "tbb", "workqueue"]

#: Weight of the predicted-affinity term (see :func:`segment_supervoxels`); 0 gives the
#: paper's purely geometric super-voxels.
DEFAULT_AFFINITY_WEIGHT: float = 0.3
#: Neighbours per voxel in :func:`voxel_knn`.
DEFAULT_KNN: int = 12
#: Search radius of :func:`voxel_knn`, in voxels (8 cm at 2 cm voxels).
DEFAULT_MAX_RADIUS_VOXELS: float = 4.0
#: Felzenszwalb's ``k`` (ScanNet's ``kThresh``), in edge-weight units: larger gives larger
#: segments.
DEFAULT_K_THRESHOLD: float = 0.1
#: Weight of the colour term (Euclidean RGB distance in [0, 1]^3) against ``1 - |n_i . n_j|``.
DEFAULT_COLOUR_WEIGHT: float = 0.5
#: Segments with fewer voxels are merged into a neighbour along their cheapest edge.
DEFAULT_MIN_SIZE: int = 10

_FALLBACK_NORMAL = (0.0, 0.0, 1.0)


@dataclass
class SupervoxelConfig:
    """Parameters of :func:`build_supervoxels` (defaults: module constants above).

    The defaults were chosen on ScanNet scene0000_00 at 2 cm (80k voxels): about 2,300
    super-voxels, 94 % of labelled voxels in a super-voxel whose majority instance is their
    own. A larger ``k_threshold`` or ``min_size`` gives fewer, less pure super-voxels;
    ``min_size`` = 20 halves the count and costs about 2 points of purity.
    """

    knn: int = DEFAULT_KNN
    max_radius_voxels: float = DEFAULT_MAX_RADIUS_VOXELS
    k_threshold: float = DEFAULT_K_THRESHOLD
    colour_weight: float = DEFAULT_COLOUR_WEIGHT
    min_size: int = DEFAULT_MIN_SIZE
    affinity_weight: float = DEFAULT_AFFINITY_WEIGHT


@dataclass
class Guide:
    """Per-voxel network outputs that guide the super-voxels (see :func:`segment_supervoxels`).

    Attributes:
        embedding: (M, E) feature embedding s_i.
        centers_m: (M, 3) predicted instance centres (voxel centre + offset), metres.
        bandwidth: (M, 2) positive (sigma_s, sigma_d), sigma_d in metres.
    """

    embedding: np.ndarray
    centers_m: np.ndarray
    bandwidth: np.ndarray


@dataclass
class Supervoxels:
    """Output of :func:`build_supervoxels`.

    Attributes:
        supervoxel: (M,) int32 super-voxel id of each voxel, 0..S-1.
        adjacency: (E, 2) int32 pairs ``i < j`` of touching super-voxels.
        neighbors: (M, K) int32 the voxel neighbour graph used.
        normals: (M, 3) float32 unoriented unit normals.
    """

    supervoxel: np.ndarray
    adjacency: np.ndarray
    neighbors: np.ndarray
    normals: np.ndarray

    @property
    def num_supervoxels(self) -> int:
        return int(self.supervoxel.max(initial=-1)) + 1


# --------------------------------------------------------------------------------------------
# neighbour graph
# --------------------------------------------------------------------------------------------

#: Squared search radius (voxels^2) up to which :func:`voxel_knn` walks the ball shell by shell
#: on a dense local grid (at most 2,108 offsets); wider balls scan candidate lists instead.
_MAX_SHELL_R2: int = 64


@numba.njit(cache=True)
def _ball_offsets(r2: int) -> tuple[np.ndarray, np.ndarray]:
    # Integer offsets d with 0 < |d|^2 <= r2 in ascending |d|^2, as (n, 3) offsets and the
    # (S + 1,) starts of the shells of equal |d|^2.
    reach = 0
    while (reach + 1) * (reach + 1) <= r2:
        reach += 1
    side = 2 * reach + 1
    offs = np.empty((side * side * side, 3), np.int64)
    d2 = np.empty(side * side * side, np.int64)
    n = 0
    for dx in range(-reach, reach + 1):
        for dy in range(-reach, reach + 1):
            for dz in range(-reach, reach + 1):
                q = dx * dx + dy * dy + dz * dz
                if 0 < q <= r2:
                    offs[n, 0] = dx
                    offs[n, 1] = dy
                    offs[n, 2] = dz
                    d2[n] = q
                    n += 1
    order = np.argsort(d2[:n], kind="mergesort")
    offs = offs[order]
    d2 = d2[order]
    shells = np.empty(n + 1, np.int64)
    s = 0
    for t in range(n):
        if t == 0 or d2[t] != d2[t - 1]:
            shells[s] = t
            s += 1
    shells[s] = n
    return offs, shells[:s + 1]


@numba.njit(cache=True)
def _radix_order(keys: np.ndarray) -> np.ndarray:
    # np.argsort(keys, kind="stable") of uint64 keys: an LSD radix sort of (key, index) pairs
    # by 11-bit digits (each pass is stable); a digit all keys share is skipped.
    n = keys.shape[0]
    mask = np.uint64(2047)
    hist = np.zeros((6, 2048), np.int64)
    cur = np.empty((n, 2), np.uint64)
    for t in range(n):
        x = keys[t]
        cur[t, 0] = x
        cur[t, 1] = t
        for d in range(6):
            hist[d, (x >> np.uint64(11 * d)) & mask] += 1
    nxt = np.empty((n, 2), np.uint64)
    pos = np.empty(2048, np.int64)
    for d in range(6):
        if hist[d].max() == n:
            continue
        total = 0
        for b in range(2048):
            pos[b] = total
            total += hist[d, b]
        shift = np.uint64(11 * d)
        for t in range(n):
            x = cur[t, 0]
            b = (x >> shift) & mask
            p = pos[b]
            pos[b] = p + 1
            nxt[p, 0] = x
            nxt[p, 1] = cur[t, 1]
        cur, nxt = nxt, cur
    order = np.empty(n, np.int64)
    for t in range(n):
        order[t] = cur[t, 1]
    return order


@numba.njit(cache=True)
def _knn_cells(coords: np.ndarray, order: np.ndarray, starts: np.ndarray,
               cell_keys: np.ndarray, lo: np.ndarray, ext: np.ndarray, cell: int, r2: int,
               offs: np.ndarray, shells: np.ndarray, c0: int, c1: int, out: np.ndarray) -> None:
    # Rows of ``out`` for the voxels of cells c0..c1-1 (see _knn_kernel).
    m = coords.shape[0]
    k = out.shape[1]
    shell_walk = r2 <= _MAX_SHELL_R2
    side = 3 * cell if shell_walk else 1
    step = np.empty(offs.shape[0], np.int64)
    for t in range(offs.shape[0]):
        step[t] = (offs[t, 0] * side + offs[t, 1]) * side + offs[t, 2]
    grid = np.full(side * side * side, -1, np.int32)
    shell_idx = np.empty(offs.shape[0] + 1, np.int64)
    first = np.empty(9, np.int64)
    last = np.empty(9, np.int64)
    best_key = np.empty(k, np.int64)
    best_idx = np.empty(k, np.int64)
    for c in range(c0, c1):
        # The 9 columns (dx, dy) of neighbour cells, three consecutive keys each, found by
        # binary search.
        n_cand = 0
        for col in range(9):
            base = cell_keys[c] + ((col // 3 - 1) * ext[1] + (col % 3 - 1)) * ext[2]
            first[col] = np.searchsorted(cell_keys, base - 1)
            last[col] = np.searchsorted(cell_keys, base + 1, side="right")
            n_cand += starts[last[col]] - starts[first[col]]
        if shell_walk:
            # Small balls: the cell's 3x3x3 block of cells painted into a dense local grid of
            # voxel indices; each voxel walks the ball's shells outwards until it has k.
            ox = lo[0] + (cell_keys[c] // (ext[1] * ext[2]) - 2) * cell
            oy = lo[1] + (cell_keys[c] // ext[2] % ext[1] - 2) * cell
            oz = lo[2] + (cell_keys[c] % ext[2] - 2) * cell
            for col in range(9):
                for t in range(starts[first[col]], starts[last[col]]):
                    j = order[t]
                    grid[((coords[j, 0] - ox) * side + coords[j, 1] - oy) * side
                         + coords[j, 2] - oz] = j
            for t in range(starts[c], starts[c + 1]):
                i = order[t]
                here = ((coords[i, 0] - ox) * side + coords[i, 1] - oy) * side + coords[i, 2] - oz
                found = 0
                for s in range(shells.shape[0] - 1):
                    # The shell's voxels (one squared distance), then by ascending index.
                    n_shell = 0
                    for u in range(shells[s], shells[s + 1]):
                        j = grid[here + step[u]]
                        shell_idx[n_shell] = j
                        n_shell += j >= 0
                    for p in range(1, n_shell):
                        j = shell_idx[p]
                        q = p
                        while q > 0 and shell_idx[q - 1] > j:
                            shell_idx[q] = shell_idx[q - 1]
                            q -= 1
                        shell_idx[q] = j
                    for p in range(min(n_shell, k - found)):
                        out[i, found] = shell_idx[p]
                        found += 1
                    if found == k:
                        break
            for col in range(9):
                for t in range(starts[first[col]], starts[last[col]]):
                    j = order[t]
                    grid[((coords[j, 0] - ox) * side + coords[j, 1] - oy) * side
                         + coords[j, 2] - oz] = -1
            continue
        # Wide balls: each voxel scans the block's voxel list, keeping the k best.
        cand = np.empty(n_cand, np.int64)
        cand_xyz = np.empty((n_cand, 3), np.int64)
        u = 0
        for col in range(9):
            for t in range(starts[first[col]], starts[last[col]]):
                j = order[t]
                cand[u] = j
                cand_xyz[u, 0] = coords[j, 0]
                cand_xyz[u, 1] = coords[j, 1]
                cand_xyz[u, 2] = coords[j, 2]
                u += 1
        for t in range(starts[c], starts[c + 1]):
            i = order[t]
            xi = coords[i, 0]
            yi = coords[i, 1]
            zi = coords[i, 2]
            found = 0
            for u in range(n_cand):
                j = cand[u]
                if j == i:
                    continue
                ddx = cand_xyz[u, 0] - xi
                ddy = cand_xyz[u, 1] - yi
                ddz = cand_xyz[u, 2] - zi
                d2 = ddx * ddx + ddy * ddy + ddz * ddz
                if d2 > r2:
                    continue
                # Rank by (squared distance, index): deterministic whatever the order.
                rank = d2 * m + j
                if found == k and rank >= best_key[k - 1]:
                    continue
                p = found if found < k else k - 1
                while p > 0 and best_key[p - 1] > rank:
                    best_key[p] = best_key[p - 1]
                    best_idx[p] = best_idx[p - 1]
                    p -= 1
                best_key[p] = rank
                best_idx[p] = j
                if found < k:
                    found += 1
            for p in range(found):
                out[i, p] = best_idx[p]


@numba.njit(cache=True, parallel=True)
def _knn_kernel(coords: np.ndarray, k: int, radius: float, n_chunks: int) -> np.ndarray:
    m = coords.shape[0]
    out = np.full((m, k), -1, np.int32)
    if m == 0:
        return out
    # Bucket the voxels into cubic cells of edge ceil(radius): every voxel within ``radius``
    # of a voxel lies in its own cell or one of the 26 around it.
    cell = np.int64(np.ceil(radius))
    lo = np.empty(3, np.int64)
    ext = np.empty(3, np.int64)
    for a in range(3):
        lo[a] = coords[0, a]
        hi = coords[0, a]
        for i in range(m):
            lo[a] = min(lo[a], coords[i, a])
            hi = max(hi, coords[i, a])
        ext[a] = (hi - lo[a]) // cell + 3
    cell_key = np.empty(m, np.uint64)
    for i in range(m):
        cx = (coords[i, 0] - lo[0]) // cell + 1
        cy = (coords[i, 1] - lo[1]) // cell + 1
        cz = (coords[i, 2] - lo[2]) // cell + 1
        cell_key[i] = (cx * ext[1] + cy) * ext[2] + cz
    order = _radix_order(cell_key)
    starts = np.empty(m + 1, np.int64)
    n_cells = 0
    for t in range(m):
        if t == 0 or cell_key[order[t]] != cell_key[order[t - 1]]:
            starts[n_cells] = t
            n_cells += 1
    starts[n_cells] = m
    cell_keys = np.empty(n_cells, np.int64)
    for c in range(n_cells):
        cell_keys[c] = cell_key[order[starts[c]]]
    r2 = np.int64(np.floor(radius * radius + 1e-9))
    offs, shells = _ball_offsets(r2 if r2 <= _MAX_SHELL_R2 else 0)
    n_chunks = min(n_cells, n_chunks)
    for chunk in numba.prange(n_chunks):
        _knn_cells(coords, order, starts, cell_keys, lo, ext, cell, r2, offs, shells,
                   chunk * n_cells // n_chunks, (chunk + 1) * n_cells // n_chunks, out)
    return out


def _check_coords(coords: np.ndarray) -> np.ndarray:
    coords = np.asarray(coords)
    if coords.ndim != 2 or coords.shape[1] != 3:
        raise ValueError(f"coords must have shape (M, 3), got {coords.shape}")
    if coords.size and not np.issubdtype(coords.dtype, np.integer):
        raise ValueError(f"coords must be integer voxel indices, got dtype {coords.dtype}")
    return coords.astype(np.int64)


def _check_neighbors(neighbors: np.ndarray, m: int) -> np.ndarray:
    neighbors = np.asarray(neighbors)
    if neighbors.ndim != 2 or neighbors.shape[0] != m:
        raise ValueError(f"neighbors must have shape ({m}, K), got {neighbors.shape}")
    if neighbors.size and not np.issubdtype(neighbors.dtype, np.integer):
        raise ValueError(f"neighbors must be integer indices, got dtype {neighbors.dtype}")
    if neighbors.size and (neighbors.min() < -1 or neighbors.max() >= m):
        raise ValueError(f"neighbors must be -1 or indices in [0, {m})")
    return neighbors.astype(np.int32)


def voxel_knn(coords: np.ndarray, k: int = DEFAULT_KNN,
              max_radius_voxels: float = DEFAULT_MAX_RADIUS_VOXELS) -> np.ndarray:
    """The ``k`` nearest other occupied voxels of each voxel, within a ball.

    Distances are between voxel indices (voxel units); ties go to the smaller voxel index, so
    the table is deterministic. Voxels with fewer than ``k`` others within
    ``max_radius_voxels`` get -1 in the remaining columns. The relation is not symmetric;
    :func:`graph_edges` and :func:`supervoxel_adjacency` take every listed pair as an
    undirected edge. With ``k = 26`` and ``max_radius_voxels = sqrt(3)`` it lists the
    26-neighbourhood.

    Args:
        coords: (M, 3) unique integer voxel coordinates.
        k: neighbours per voxel.
        max_radius_voxels: search radius in voxels (metres / voxel size), inclusive.

    Returns:
        (M, k) int32 neighbour indices sorted by distance, -1 where fewer were found.
    """
    c = _check_coords(coords)
    if int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k}")
    if not (isinstance(max_radius_voxels, (int, float, np.number))
            and 1 <= max_radius_voxels < 1e6):
        raise ValueError(f"max_radius_voxels must be a number in [1, 1e6), got "
                         f"{max_radius_voxels!r}")
    if c.shape[0]:
        cells = (c.max(axis=0) - c.min(axis=0)) // int(np.ceil(max_radius_voxels)) + 3
        if float(np.prod(cells.astype(np.float64))) >= 2.0 ** 62:
            raise ValueError("voxel grid extent is too large to index")
    return _knn_kernel(c, int(k), float(max_radius_voxels), 4 * numba.get_num_threads())


# --------------------------------------------------------------------------------------------
# normals
# --------------------------------------------------------------------------------------------

@numba.njit(cache=True)
def _smallest_eigenvector(a00: float, a01: float, a02: float, a11: float, a12: float,
                          a22: float) -> tuple[float, float, float, bool]:
    # Smallest eigenvalue of a symmetric 3x3 matrix by the trigonometric solution of its
    # characteristic polynomial, then the null vector of (A - lambda I) as the largest cross
    # product of two of its rows. ``ok`` is False when that null space is not a line.
    scale = max(abs(a00), abs(a01), abs(a02), abs(a11), abs(a12), abs(a22))
    if scale == 0.0:
        return 0.0, 0.0, 0.0, False
    a00 /= scale
    a01 /= scale
    a02 /= scale
    a11 /= scale
    a12 /= scale
    a22 /= scale
    q = (a00 + a11 + a22) / 3.0
    b00 = a00 - q
    b11 = a11 - q
    b22 = a22 - q
    p2 = (b00 * b00 + b11 * b11 + b22 * b22 + 2.0 * (a01 * a01 + a02 * a02 + a12 * a12)) / 6.0
    if p2 <= 1e-30:
        return 0.0, 0.0, 0.0, False
    p = np.sqrt(p2)
    det = (b00 * (b11 * b22 - a12 * a12) - a01 * (a01 * b22 - a12 * a02)
           + a02 * (a01 * a12 - b11 * a02))
    half = det / (2.0 * p2 * p)
    half = min(1.0, max(-1.0, half))
    lam = q + 2.0 * p * np.cos(np.arccos(half) / 3.0 + 2.0 * np.pi / 3.0)
    r0x, r0y, r0z = a00 - lam, a01, a02
    r1x, r1y, r1z = a01, a11 - lam, a12
    r2x, r2y, r2z = a02, a12, a22 - lam
    c0x = r0y * r1z - r0z * r1y
    c0y = r0z * r1x - r0x * r1z
    c0z = r0x * r1y - r0y * r1x
    c1x = r0y * r2z - r0z * r2y
    c1y = r0z * r2x - r0x * r2z
    c1z = r0x * r2y - r0y * r2x
    c2x = r1y * r2z - r1z * r2y
    c2y = r1z * r2x - r1x * r2z
    c2z = r1x * r2y - r1y * r2x
    n0 = c0x * c0x + c0y * c0y + c0z * c0z
    n1 = c1x * c1x + c1y * c1y + c1z * c1z
    n2 = c2x * c2x + c2y * c2y + c2z * c2z
    if n0 >= n1 and n0 >= n2:
        vx, vy, vz, nn = c0x, c0y, c0z, n0
    elif n1 >= n2:
        vx, vy, vz, nn = c1x, c1y, c1z, n1
    else:
        vx, vy, vz, nn = c2x, c2y, c2z, n2
    # Rows of a rank-2 matrix scaled to ~1 give cross products of order p^2; far smaller
    # means the two smallest eigenvalues coincide (points on a line).
    if nn <= 1e-12 * p2 * p2:
        return 0.0, 0.0, 0.0, False
    inv = 1.0 / np.sqrt(nn)
    return vx * inv, vy * inv, vz * inv, True


@numba.njit(cache=True, parallel=True)
def _normals_kernel(coords: np.ndarray, neighbors: np.ndarray) -> np.ndarray:
    m = coords.shape[0]
    out = np.empty((m, 3), np.float32)
    for i in numba.prange(m):
        cnt = 1
        sx = 0.0
        sy = 0.0
        sz = 0.0
        sxx = 0.0
        sxy = 0.0
        sxz = 0.0
        syy = 0.0
        syz = 0.0
        szz = 0.0
        # Coordinates relative to voxel i keep the sums small and exact.
        for kk in range(neighbors.shape[1]):
            j = neighbors[i, kk]
            if j < 0:
                continue
            x = float(coords[j, 0] - coords[i, 0])
            y = float(coords[j, 1] - coords[i, 1])
            z = float(coords[j, 2] - coords[i, 2])
            cnt += 1
            sx += x
            sy += y
            sz += z
            sxx += x * x
            sxy += x * y
            sxz += x * z
            syy += y * y
            syz += y * z
            szz += z * z
        ok = False
        nx = 0.0
        ny = 0.0
        nz = 0.0
        if cnt >= 3:
            mx = sx / cnt
            my = sy / cnt
            mz = sz / cnt
            nx, ny, nz, ok = _smallest_eigenvector(
                sxx / cnt - mx * mx, sxy / cnt - mx * my, sxz / cnt - mx * mz,
                syy / cnt - my * my, syz / cnt - my * mz, szz / cnt - mz * mz)
        if not ok:
            nx, ny, nz = _FALLBACK_NORMAL
        # Canonical sign: the largest-magnitude component is positive (normals are unoriented).
        ax, ay, az = abs(nx), abs(ny), abs(nz)
        if (ax >= ay and ax >= az and nx < 0) or (ay > ax and ay >= az and ny < 0) \
                or (az > ax and az > ay and nz < 0):
            nx, ny, nz = -nx, -ny, -nz
        out[i, 0] = nx
        out[i, 1] = ny
        out[i, 2] = nz
    return out


def estimate_normals(coords: np.ndarray, neighbors: np.ndarray) -> np.ndarray:
    """Unit surface normals by PCA over each voxel and its listed neighbours.

    The normal is the eigenvector of the smallest eigenvalue of the covariance of the voxel
    centres. It is unoriented: the sign is made canonical (largest-magnitude component
    positive), and :func:`segment_supervoxels` only uses ``|n_i . n_j|``. Voxels with fewer
    than two neighbours, or whose neighbourhood is a line, get the fallback ``(0, 0, 1)``.

    Args:
        coords: (M, 3) integer voxel coordinates.
        neighbors: (M, K) int32 neighbour indices, -1 for none (e.g. :func:`voxel_knn`).

    Returns:
        (M, 3) float32 unit normals.
    """
    c = _check_coords(coords)
    nb = _check_neighbors(neighbors, c.shape[0])
    return _normals_kernel(c, nb)


# --------------------------------------------------------------------------------------------
# segmentation
# --------------------------------------------------------------------------------------------

@numba.njit(cache=True)
def _edges_kernel(neighbors: np.ndarray) -> np.ndarray:
    # Every listed pair once as (i, j), i < j: row i lists j > i, or j < i and row j lacks i.
    m, kk = neighbors.shape
    out = np.empty((m * kk, 2), np.int32)
    e = 0
    for i in range(m):
        for a in range(kk):
            j = neighbors[i, a]
            if j < 0 or j == i:
                continue
            if j > i:
                out[e, 0] = i
                out[e, 1] = j
                e += 1
            else:
                listed = False
                for b in range(kk):
                    if neighbors[j, b] == i:
                        listed = True
                        break
                if not listed:
                    out[e, 0] = j
                    out[e, 1] = i
                    e += 1
    return out[:e]


@numba.njit(cache=True, parallel=True)
def _edge_weights_kernel(edges: np.ndarray, rgb: np.ndarray, normals: np.ndarray,
                         colour_weight: float, embedding: np.ndarray, centers: np.ndarray,
                         bandwidth: np.ndarray, affinity_weight: float) -> np.ndarray:
    # Normal and colour term of every edge, plus affinity_weight * (1 - a_ij) with eq. (14)'s
    # exponential a_ij at the two voxels' mean bandwidths when affinity_weight > 0.
    w = np.empty(edges.shape[0], np.float64)
    for e in numba.prange(edges.shape[0]):
        i = edges[e, 0]
        j = edges[e, 1]
        dot = (normals[i, 0] * normals[j, 0] + normals[i, 1] * normals[j, 1]
               + normals[i, 2] * normals[j, 2])
        dr = rgb[i, 0] - rgb[j, 0]
        dg = rgb[i, 1] - rgb[j, 1]
        db = rgb[i, 2] - rgb[j, 2]
        w[e] = (1.0 - min(1.0, abs(dot))) + colour_weight * np.sqrt(dr * dr + dg * dg + db * db)
        if affinity_weight > 0:
            a = pair_affinity(embedding, centers, i, j,
                              0.5 * (bandwidth[i, 0] + bandwidth[j, 0]),
                              0.5 * (bandwidth[i, 1] + bandwidth[j, 1]))
            w[e] += affinity_weight * (1.0 - a)
    return w


@numba.njit(cache=True)
def _find(parent: np.ndarray, x: int) -> int:
    root = x
    while parent[root] != root:
        root = parent[root]
    while parent[x] != root:
        nxt = parent[x]
        parent[x] = root
        x = nxt
    return root


@numba.njit(cache=True)
def _float_order(weights: np.ndarray) -> np.ndarray:
    # np.argsort(weights, kind="stable") for finite float64 weights: a radix sort of their bit
    # patterns mapped to order-preserving uint64 (sign bit set for w >= 0, all bits flipped
    # for w < 0; -0.0 first becomes +0.0, as numpy ranks the two as equal).
    keys = np.empty(weights.shape[0], np.uint64)
    bits = keys.view(np.float64)
    for e in range(weights.shape[0]):
        bits[e] = weights[e] + 0.0
    sign = np.uint64(1) << np.uint64(63)
    for e in range(keys.shape[0]):
        x = keys[e]
        keys[e] = ~x if x & sign else x | sign
    return _radix_order(keys)


def _stable_order(weights: np.ndarray) -> np.ndarray:
    """``np.argsort(weights, kind="stable")`` of finite float64 weights, by radix sort."""
    return _float_order(np.ascontiguousarray(weights, dtype=np.float64))


@numba.njit(cache=True)
def _felzenszwalb_kernel(num_nodes: int, edges: np.ndarray, weights: np.ndarray,
                         order: np.ndarray, k_threshold: float, min_size: int) -> np.ndarray:
    # The edges in visiting order, contiguous: both passes below then stream through them.
    n_edges = order.shape[0]
    ea = np.empty(n_edges, np.int32)
    eb = np.empty(n_edges, np.int32)
    ew = np.empty(n_edges, np.float64)
    for t in range(n_edges):
        e = order[t]
        ea[t] = edges[e, 0]
        eb[t] = edges[e, 1]
        ew[t] = weights[e]
    parent = np.arange(num_nodes, dtype=np.int32)
    size = np.ones(num_nodes, np.int32)
    # threshold[c] = Int(C) + k / |C|, Int(C) being the largest MST edge inside C; since edges
    # come in ascending order that is the weight of the edge that last grew C.
    threshold = np.full(num_nodes, k_threshold)
    for t in range(n_edges):
        a = _find(parent, ea[t])
        b = _find(parent, eb[t])
        if a == b:
            continue
        w = ew[t]
        if w <= threshold[a] and w <= threshold[b]:
            if size[a] < size[b]:
                a, b = b, a
            parent[b] = a
            size[a] += size[b]
            threshold[a] = w + k_threshold / size[a]
    # Small segments join the neighbour across their cheapest edge (edges still ascending).
    # Segments only grow, so an edge between two nodes already in large segments never
    # qualifies and is skipped without a find.
    small = np.zeros(num_nodes, np.bool_)
    for v in range(num_nodes):
        small[v] = size[_find(parent, v)] < min_size
    for t in range(n_edges):
        if not (small[ea[t]] or small[eb[t]]):
            continue
        a = _find(parent, ea[t])
        b = _find(parent, eb[t])
        if a != b and (size[a] < min_size or size[b] < min_size):
            if size[a] < size[b]:
                a, b = b, a
            parent[b] = a
            size[a] += size[b]
    # Contiguous ids in order of each segment's first voxel.
    label = np.full(num_nodes, -1, np.int32)
    out = np.empty(num_nodes, np.int32)
    nxt = 0
    for i in range(num_nodes):
        r = _find(parent, i)
        if label[r] < 0:
            label[r] = nxt
            nxt += 1
        out[i] = label[r]
    return out


def graph_edges(neighbors: np.ndarray) -> np.ndarray:
    """Undirected edges of a neighbour table, each pair once as ``(i, j)`` with ``i < j``.

    Args:
        neighbors: (M, K) int32 neighbour indices, -1 for none; a row lists each
            neighbour at most once (as :func:`voxel_knn` does).

    Returns:
        (E, 2) int32 edges, in order of their first listing.
    """
    nb = np.asarray(neighbors)
    if nb.ndim != 2:
        raise ValueError(f"neighbors must have shape (M, K), got {nb.shape}")
    return _edges_kernel(_check_neighbors(nb, nb.shape[0]))


def felzenszwalb(num_nodes: int, edges: np.ndarray, weights: np.ndarray, k_threshold: float,
                 min_size: int) -> np.ndarray:
    """Felzenszwalb & Huttenlocher graph segmentation (as in ScanNet's Segmentator).

    Edges are visited by ascending weight (stable for ties); components A and B joined by an
    edge of weight w merge iff ``w <= min(Int(A) + k/|A|, Int(B) + k/|B|)``. Afterwards every
    component smaller than ``min_size`` merges across its cheapest edge.

    Args:
        num_nodes: number of graph nodes.
        edges: (E, 2) integer node pairs.
        weights: (E,) finite edge weights.
        k_threshold: Felzenszwalb's ``k``, in weight units.
        min_size: minimum component size in nodes (1 disables the second pass).

    Returns:
        (num_nodes,) int32 component ids 0..S-1, numbered by first node.
    """
    edges = np.asarray(edges)
    weights = np.asarray(weights, dtype=np.float64)
    if not 0 <= num_nodes < 2 ** 31:
        raise ValueError(f"num_nodes must be in [0, 2^31), got {num_nodes}")
    if edges.ndim != 2 or edges.shape[1] != 2:
        raise ValueError(f"edges must have shape (E, 2), got {edges.shape}")
    if weights.shape != (edges.shape[0],):
        raise ValueError(f"weights must have shape ({edges.shape[0]},), got {weights.shape}")
    if edges.size and (edges.min() < 0 or edges.max() >= num_nodes):
        raise ValueError(f"edges must index nodes in [0, {num_nodes})")
    if not np.isfinite(weights).all():
        raise ValueError("weights contain NaN or Inf")
    if not isinstance(k_threshold, (int, float, np.number)) or not k_threshold >= 0:
        raise ValueError(f"k_threshold must be a non-negative number, got {k_threshold!r}")
    if not isinstance(min_size, (int, np.integer)) or min_size < 1:
        raise ValueError(f"min_size must be a positive integer, got {min_size}")
    return _felzenszwalb_kernel(int(num_nodes), edges.astype(np.int32, copy=False), weights,
                                _stable_order(weights), float(k_threshold), int(min_size))


def segment_supervoxels(coords: np.ndarray, rgb: np.ndarray, normals: np.ndarray,
                        neighbors: np.ndarray, k_threshold: float = DEFAULT_K_THRESHOLD,
                        colour_weight: float = DEFAULT_COLOUR_WEIGHT,
                        min_size: int = DEFAULT_MIN_SIZE, guide: Guide | None = None,
                        affinity_weight: float = DEFAULT_AFFINITY_WEIGHT) -> np.ndarray:
    """Over-segment voxels into super-voxels (OccuSeg §3.2, Felzenszwalb & Huttenlocher [9]).

    Edges are the voxel pairs listed in ``neighbors`` (each once, :func:`graph_edges`). The
    weight of edge (i, j) is ``(1 - |n_i . n_j|) + colour_weight * ||rgb_i - rgb_j||``. PCA
    normals are unoriented, so the normal term uses ``|n_i . n_j|`` and is not
    convexity-aware: ScanNet's Segmentator squares the weight of convex edges, which needs
    outward normals; orienting them towards the room centre to do the same did not improve
    purity on ScanNet scene0000_00. See :func:`felzenszwalb` for the merge rule.

    With a ``guide`` (the network's outputs), each edge also weighs
    ``affinity_weight * (1 - a_ij)``, where ``a_ij`` is eq. (14)'s exponential between the two
    voxels (their embeddings and predicted centres over their mean bandwidths). This is our
    addition to the paper, whose super-voxels use geometry and colour alone: flush, identical
    units (a run of cabinets, desks pushed together) share normals and colour, so purely
    geometric super-voxels straddle them and no clustering can separate them again.

    Defaults: see :class:`SupervoxelConfig`.

    Args:
        coords: (M, 3) integer voxel coordinates (only validated; the graph is ``neighbors``).
        rgb: (M, 3) colours in [0, 1].
        normals: (M, 3) unit normals (:func:`estimate_normals`).
        neighbors: (M, K) int32 neighbour indices, -1 for none.
        k_threshold: Felzenszwalb's ``k``; larger gives fewer, larger super-voxels.
        colour_weight: weight of the RGB distance against the normal term.
        min_size: super-voxels smaller than this (in voxels) merge into a neighbour.
        guide: optional per-voxel network outputs for the affinity term.
        affinity_weight: weight of the affinity term (>= 0).

    Returns:
        (M,) int32 super-voxel ids 0..S-1, numbered by first voxel.
    """
    c = _check_coords(coords)
    m = c.shape[0]
    rgb = np.asarray(rgb)
    normals = np.asarray(normals)
    if rgb.shape != (m, 3):
        raise ValueError(f"rgb must have shape ({m}, 3), got {rgb.shape}")
    if normals.shape != (m, 3):
        raise ValueError(f"normals must have shape ({m}, 3), got {normals.shape}")
    if not (np.isfinite(rgb).all() and np.isfinite(normals).all()):
        raise ValueError("rgb and normals must be finite")
    if not isinstance(colour_weight, (int, float, np.number)) or not colour_weight >= 0:
        raise ValueError(f"colour_weight must be a non-negative number, got {colour_weight!r}")
    nb = _check_neighbors(neighbors, m)
    edges = _edges_kernel(nb)
    if not affinity_weight >= 0:
        raise ValueError(f"affinity_weight must be non-negative, got {affinity_weight!r}")
    emb = centres = bw = np.zeros((0, 3))
    if guide is not None and affinity_weight > 0:
        emb = np.asarray(guide.embedding, np.float64)
        centres = np.asarray(guide.centers_m, np.float64)
        bw = np.asarray(guide.bandwidth, np.float64)
        if emb.ndim != 2 or emb.shape[0] != m or centres.shape != (m, 3) or bw.shape != (m, 2):
            raise ValueError(f"guide arrays must have {m} rows: embedding (M, E), "
                             f"centers_m (M, 3), bandwidth (M, 2)")
        if not (bw > 0).all():
            raise ValueError("guide bandwidths must be positive")
    weights = _edge_weights_kernel(edges, rgb.astype(np.float64), normals.astype(np.float64),
                                   float(colour_weight), emb, centres, bw,
                                   float(affinity_weight) if emb.shape[0] else 0.0)
    return felzenszwalb(m, edges, weights, k_threshold, min_size)


# --------------------------------------------------------------------------------------------
# adjacency
# --------------------------------------------------------------------------------------------

@numba.njit(cache=True)
def _adjacency_kernel(supervoxel: np.ndarray, neighbors: np.ndarray,
                      num_supervoxels: int) -> np.ndarray:
    m, kk = neighbors.shape
    # Voxels grouped by super-voxel (counting sort), then one pass per super-voxel with a
    # "last seen" stamp per partner, so each super-voxel reports each partner once.
    start = np.zeros(num_supervoxels + 1, np.int64)
    for i in range(m):
        start[supervoxel[i] + 1] += 1
    for s in range(num_supervoxels):
        start[s + 1] += start[s]
    fill = start[:-1].copy()
    members = np.empty(m, np.int64)
    for i in range(m):
        s = supervoxel[i]
        members[fill[s]] = i
        fill[s] += 1
    seen = np.full(num_supervoxels, -1, np.int64)
    keys = np.empty(m * kk, np.int64)
    e = 0
    for a in range(num_supervoxels):
        for t in range(start[a], start[a + 1]):
            i = members[t]
            for q in range(kk):
                j = neighbors[i, q]
                if j < 0:
                    continue
                b = supervoxel[j]
                if b != a and seen[b] != a:
                    seen[b] = a
                    # A pair surfaces from both sides (or, for an asymmetric table, from
                    # either one): key it by (min, max) and deduplicate below.
                    keys[e] = min(a, b) * num_supervoxels + max(a, b)
                    e += 1
    uniq = np.unique(keys[:e])
    out = np.empty((uniq.shape[0], 2), np.int32)
    for t in range(uniq.shape[0]):
        out[t, 0] = uniq[t] // num_supervoxels
        out[t, 1] = uniq[t] % num_supervoxels
    return out


def supervoxel_adjacency(supervoxel: np.ndarray, neighbors: np.ndarray) -> np.ndarray:
    """Pairs of super-voxels that touch through at least one listed voxel pair.

    Args:
        supervoxel: (M,) super-voxel id of every voxel, 0..S-1.
        neighbors: (M, K) int32 neighbour indices, -1 for none (the table used to segment).

    Returns:
        (E, 2) int32 unique pairs ``(i, j)`` with ``i < j``, sorted.
    """
    sv = np.asarray(supervoxel)
    if sv.ndim != 1:
        raise ValueError(f"supervoxel must have shape (M,), got {sv.shape}")
    if sv.size and not np.issubdtype(sv.dtype, np.integer):
        raise ValueError(f"supervoxel must be integer ids, got dtype {sv.dtype}")
    if sv.size and sv.min() < 0:
        raise ValueError("supervoxel ids must be non-negative")
    nb = _check_neighbors(neighbors, sv.shape[0])
    num = int(sv.max()) + 1 if sv.size else 0
    return _adjacency_kernel(sv.astype(np.int64), nb, num)


def split_by_label(supervoxel: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Split every super-voxel into its parts of one label (e.g. the predicted class).

    OccuSeg's super-voxels are purely geometric, so one may straddle an object and the wall
    behind it; its averaged embeddings (eq. 12) then match neither instance and it is left
    out. Splitting along the predicted class keeps every clustering vertex to one class.

    Args:
        supervoxel: (M,) super-voxel id of every voxel, 0..S-1.
        labels: (M,) integer label of every voxel.

    Returns:
        (M,) int32 new ids 0..S'-1 (S' >= S), numbered in (super-voxel, label) order.
    """
    sv = np.asarray(supervoxel)
    lab = np.asarray(labels)
    if sv.ndim != 1 or lab.shape != sv.shape:
        raise ValueError(f"supervoxel and labels must be (M,) arrays of one length, got "
                         f"{sv.shape} and {lab.shape}")
    if sv.size == 0:
        return sv.astype(np.int32)
    if not (np.issubdtype(sv.dtype, np.integer) and np.issubdtype(lab.dtype, np.integer)):
        raise ValueError("supervoxel ids and labels must be integers")
    lab = lab.astype(np.int64) - int(lab.min())
    key = sv.astype(np.int64) * (int(lab.max()) + 1) + lab
    return np.unique(key, return_inverse=True)[1].astype(np.int32)


def build_supervoxels(coords: np.ndarray, rgb: np.ndarray,
                      config: SupervoxelConfig | None = None,
                      labels: np.ndarray | None = None,
                      guide: Guide | None = None) -> Supervoxels:
    """Neighbour graph, normals, super-voxels and their adjacency in one call.

    Args:
        coords: (M, 3) unique integer voxel coordinates.
        rgb: (M, 3) colours in [0, 1].
        config: parameters (defaults: :class:`SupervoxelConfig`).
        labels: optional (M,) per-voxel labels (the predicted class); when given, every
            super-voxel is cut into its parts of one label (:func:`split_by_label`).
        guide: optional network outputs for the affinity term of :func:`segment_supervoxels`.
    """
    config = SupervoxelConfig() if config is None else config
    neighbors = voxel_knn(coords, config.knn, config.max_radius_voxels)
    normals = estimate_normals(coords, neighbors)
    supervoxel = segment_supervoxels(coords, rgb, normals, neighbors, config.k_threshold,
                                     config.colour_weight, config.min_size, guide,
                                     config.affinity_weight)
    if labels is not None:
        supervoxel = split_by_label(supervoxel, labels)
    return Supervoxels(supervoxel=supervoxel,
                       adjacency=supervoxel_adjacency(supervoxel, neighbors),
                       neighbors=neighbors, normals=normals)
