"""Occupancy-aware greedy clustering of super-voxels (OccuSeg §3.2, eqs. 12-14).

Every super-voxel ``v_i`` is summarised by the means over its voxels (eqs. 12-13) of the
network outputs: predicted instance centre ``D_i`` (metres), feature embedding ``S_i``,
bandwidths ``(sigma_s, sigma_d)`` and log occupancy, plus its voxel count ``|Omega_i|`` and
its majority semantic class. Adjacent super-voxels of the same class are joined by edges
weighted with eq. (14); the heaviest edge is merged while its weight exceeds ``T0`` and the
weights around the merged vertex are recomputed. Clusters whose occupancy ratio lies in
``(r_min, r_max)`` become instances.

Occupancy ratio. The printed eq. (13) reads ``r_i = O_i / |Omega_i|``, but the paper's text
("r_i > 1 indicates that there are too many voxels in v_i"; eq. 14 divides by max(r, 0.5) to
"punish over-segmented instances and encourage partial instances to be merged") and the
authors' code (``r = n / exp(mean log occupancy)``) both mean actual over predicted voxels,
which is what is implemented: ``r = |Omega| / exp(mean log occupancy)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from occuseg_ros.core.voxels import majority_vote


@dataclass
class ClusteringConfig:
    """Parameters of the greedy clustering.

    Attributes:
        merge_threshold: ``T0``; edges merge while their weight exceeds it (paper: 0.5).
        r_min, r_max: a cluster becomes an instance iff ``r_min < r < r_max`` (paper: 0.3, 2).
        r_floor: the ``max(r, 0.5)`` floor in eq. (14) (paper: 0.5).
        use_occupancy: False gives the paper's "w/o occupancy" ablation: the eq. (14)
            denominator is 1 and the ``r`` filter is off.
        ignore_label_ids: nyu40 classes never clustered (unannotated, wall, floor, ceiling).
        min_instance_voxels: smallest instance kept, in voxels. The paper gives no value;
            20 voxels (80 cm^2 of surface at 2 cm voxels) is two minimum-size super-voxels
            (:data:`occuseg_ros.core.supervoxels.DEFAULT_MIN_SIZE`): smaller clusters are
            scraps cut off from their object, not objects.
    """

    merge_threshold: float = 0.5
    r_min: float = 0.3
    r_max: float = 2.0
    r_floor: float = 0.5
    use_occupancy: bool = True
    ignore_label_ids: tuple[int, ...] = (0, 1, 2, 22)
    min_instance_voxels: int = 20

    def __post_init__(self) -> None:
        if not np.isfinite(self.merge_threshold) or self.merge_threshold < 0:
            raise ValueError(f"merge_threshold must be finite and >= 0, got "
                             f"{self.merge_threshold}")
        if not 0 <= self.r_min < self.r_max:
            raise ValueError(f"need 0 <= r_min < r_max, got {self.r_min}, {self.r_max}")
        if not self.r_floor > 0:
            raise ValueError(f"r_floor must be positive, got {self.r_floor}")
        if int(self.min_instance_voxels) != self.min_instance_voxels \
                or self.min_instance_voxels < 0:
            raise ValueError(f"min_instance_voxels must be a non-negative integer, got "
                             f"{self.min_instance_voxels}")
        self.ignore_label_ids = tuple(int(x) for x in self.ignore_label_ids)


@dataclass
class SupervoxelStatistics:
    """Per-super-voxel means of the network outputs (eqs. 12-13).

    Attributes:
        count: (S,) int64 voxels per super-voxel, ``|Omega_i|`` (0 for unused ids).
        center_m: (S, 3) float64 mean predicted instance centre ``D_i`` in metres.
        embedding: (S, F) float64 mean feature embedding ``S_i``.
        bandwidth: (S, 2) float64 mean ``(sigma_s, sigma_d)``; sigma_d in metres.
        log_occupancy: (S,) float64 mean predicted log voxel count of the instance.
        semantic: (S,) int32 majority nyu40 label (ties to the smaller id; -1 if empty).
    """

    count: np.ndarray
    center_m: np.ndarray
    embedding: np.ndarray
    bandwidth: np.ndarray
    log_occupancy: np.ndarray
    semantic: np.ndarray

    @property
    def occupancy_ratio(self) -> np.ndarray:
        """(S,) ``r = |Omega| / exp(mean log occupancy)``: actual over predicted voxels."""
        return self.count * np.exp(-self.log_occupancy)


@dataclass
class ClusteringResult:
    """Instances found by :func:`cluster_supervoxels`.

    Attributes:
        voxel_instance: (M,) int32 instance of each voxel, -1 for none, else 0..I-1.
        instance_label: (I,) int32 nyu40 class of each instance.
        instance_voxels: (I,) int64 voxels in each instance.
        instance_ratio: (I,) float32 occupancy ratio r of each instance.
        supervoxel_cluster: (S,) int32 cluster of each super-voxel before the final filter
            (0..C-1, numbered by smallest super-voxel), -1 for ignored super-voxels.
    """

    voxel_instance: np.ndarray
    instance_label: np.ndarray
    instance_voxels: np.ndarray
    instance_ratio: np.ndarray
    supervoxel_cluster: np.ndarray

    @property
    def num_instances(self) -> int:
        return int(self.instance_label.shape[0])


# --------------------------------------------------------------------------------------------
# statistics
# --------------------------------------------------------------------------------------------

@numba.njit(cache=True)
def _statistics_kernel(supervoxel: np.ndarray, num: int, centers: np.ndarray,
                       embedding: np.ndarray, bandwidth: np.ndarray,
                       log_occupancy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                           np.ndarray, np.ndarray]:
    f = embedding.shape[1]
    count = np.zeros(num, np.int64)
    cen = np.zeros((num, 3))
    emb = np.zeros((num, f))
    bw = np.zeros((num, 2))
    occ = np.zeros(num)
    for v in range(supervoxel.shape[0]):
        s = supervoxel[v]
        count[s] += 1
        for a in range(3):
            cen[s, a] += centers[v, a]
        for a in range(f):
            emb[s, a] += embedding[v, a]
        bw[s, 0] += bandwidth[v, 0]
        bw[s, 1] += bandwidth[v, 1]
        occ[s] += log_occupancy[v]
    for s in range(num):
        if count[s] > 0:
            inv = 1.0 / count[s]
            cen[s] *= inv
            emb[s] *= inv
            bw[s] *= inv
            occ[s] *= inv
    return count, cen, emb, bw, occ


def _check_voxel_inputs(supervoxel: np.ndarray, centers_m: np.ndarray, embedding: np.ndarray,
                        bandwidth: np.ndarray, log_occupancy: np.ndarray,
                        semantic: np.ndarray) -> tuple[np.ndarray, ...]:
    sv = np.asarray(supervoxel)
    if sv.ndim != 1:
        raise ValueError(f"supervoxel must have shape (M,), got {sv.shape}")
    m = sv.shape[0]
    if m and not np.issubdtype(sv.dtype, np.integer):
        raise ValueError(f"supervoxel must be integer ids, got dtype {sv.dtype}")
    if m and sv.min() < 0:
        raise ValueError("supervoxel ids must be non-negative")
    centers_m = np.asarray(centers_m, dtype=np.float64)
    embedding = np.asarray(embedding, dtype=np.float64)
    bandwidth = np.asarray(bandwidth, dtype=np.float64)
    log_occupancy = np.asarray(log_occupancy, dtype=np.float64)
    semantic = np.asarray(semantic)
    if centers_m.shape != (m, 3):
        raise ValueError(f"centers_m must have shape ({m}, 3), got {centers_m.shape}")
    if embedding.ndim != 2 or embedding.shape[0] != m:
        raise ValueError(f"embedding must have shape ({m}, F), got {embedding.shape}")
    if bandwidth.shape != (m, 2):
        raise ValueError(f"bandwidth must have shape ({m}, 2), got {bandwidth.shape}")
    if log_occupancy.shape != (m,):
        raise ValueError(f"log_occupancy must have shape ({m},), got {log_occupancy.shape}")
    if semantic.shape != (m,):
        raise ValueError(f"semantic must have shape ({m},), got {semantic.shape}")
    if m and not np.issubdtype(semantic.dtype, np.integer):
        raise ValueError(f"semantic must be integer nyu40 ids, got dtype {semantic.dtype}")
    for name, arr in (("centers_m", centers_m), ("embedding", embedding),
                      ("bandwidth", bandwidth), ("log_occupancy", log_occupancy)):
        if not np.isfinite(arr).all():
            raise ValueError(f"{name} contains NaN or Inf")
    if m and bandwidth.min() <= 0:
        raise ValueError("bandwidth (sigma_s, sigma_d) must be positive")
    return (sv.astype(np.int64), centers_m, embedding, bandwidth, log_occupancy,
            semantic.astype(np.int64))


def supervoxel_statistics(supervoxel: np.ndarray, centers_m: np.ndarray, embedding: np.ndarray,
                          bandwidth: np.ndarray, log_occupancy: np.ndarray,
                          semantic: np.ndarray,
                          num_supervoxels: int | None = None) -> SupervoxelStatistics:
    """Average the per-voxel predictions over each super-voxel (eqs. 12-13).

    Args:
        supervoxel: (M,) super-voxel id of every voxel.
        centers_m: (M, 3) predicted instance centre per voxel, metres (voxel centre + offset).
        embedding: (M, F) feature embedding per voxel.
        bandwidth: (M, 2) positive ``(sigma_s, sigma_d)`` per voxel; sigma_d in metres.
        log_occupancy: (M,) predicted log of the voxel count of the voxel's instance.
        semantic: (M,) integer nyu40 label per voxel.
        num_supervoxels: S; defaults to ``supervoxel.max() + 1``.
    """
    sv, centers_m, embedding, bandwidth, log_occupancy, semantic = _check_voxel_inputs(
        supervoxel, centers_m, embedding, bandwidth, log_occupancy, semantic)
    needed = int(sv.max()) + 1 if sv.size else 0
    num = needed if num_supervoxels is None else int(num_supervoxels)
    if num < needed:
        raise ValueError(f"num_supervoxels={num} but supervoxel ids go up to {needed - 1}")
    count, cen, emb, bw, occ = _statistics_kernel(sv, num, centers_m, embedding, bandwidth,
                                                  log_occupancy)
    return SupervoxelStatistics(count=count, center_m=cen, embedding=emb, bandwidth=bw,
                                log_occupancy=occ,
                                semantic=majority_vote(semantic, sv, num).astype(np.int32))


# --------------------------------------------------------------------------------------------
# greedy merging
# --------------------------------------------------------------------------------------------

@numba.njit(cache=True)
def pair_affinity(emb: np.ndarray, cen: np.ndarray, i: int, j: int, sigma_s: float,
                  sigma_d: float) -> float:
    """exp(-(||S_i - S_j|| / sigma_s)^2 - (||D_i - D_j|| / sigma_d)^2): eq. (14) before the
    occupancy term, for rows i and j of embeddings ``emb`` and centres ``cen`` (metres)."""
    de = 0.0
    for a in range(emb.shape[1]):
        t = emb[i, a] - emb[j, a]
        de += t * t
    dd = 0.0
    for a in range(3):
        t = cen[i, a] - cen[j, a]
        dd += t * t
    return np.exp(-de / (sigma_s * sigma_s) - dd / (sigma_d * sigma_d))


@numba.njit(cache=True)
def _weight(i: int, j: int, count: np.ndarray, cen: np.ndarray, emb: np.ndarray,
            bw: np.ndarray, occ: np.ndarray, r_floor: float, use_occupancy: bool) -> float:
    # Eq. (14) with sigma_s, sigma_d and r of the virtual super-voxel merging i and j.
    n = count[i] + count[j]
    fi = count[i] / n
    fj = count[j] / n
    sigma_s = fi * bw[i, 0] + fj * bw[j, 0]
    sigma_d = fi * bw[i, 1] + fj * bw[j, 1]
    w = pair_affinity(emb, cen, i, j, sigma_s, sigma_d)
    if use_occupancy:
        # Eq. (13) as actual / predicted voxels (see the module docstring).
        r = n * np.exp(-(fi * occ[i] + fj * occ[j]))
        w /= max(r, r_floor)
    return w


@numba.njit(cache=True)
def _before(hw: np.ndarray, ha: np.ndarray, hb: np.ndarray, x: int, y: int) -> bool:
    # Heap order: heavier first, ties to the lexicographically smaller pair.
    if hw[x] != hw[y]:
        return hw[x] > hw[y]
    if ha[x] != ha[y]:
        return ha[x] < ha[y]
    return hb[x] < hb[y]


@numba.njit(cache=True)
def _heap_swap(hw: np.ndarray, ha: np.ndarray, hb: np.ndarray, hva: np.ndarray,
               hvb: np.ndarray, x: int, y: int) -> None:
    hw[x], hw[y] = hw[y], hw[x]
    ha[x], ha[y] = ha[y], ha[x]
    hb[x], hb[y] = hb[y], hb[x]
    hva[x], hva[y] = hva[y], hva[x]
    hvb[x], hvb[y] = hvb[y], hvb[x]


@numba.njit(cache=True)
def _sift_down(hw: np.ndarray, ha: np.ndarray, hb: np.ndarray, hva: np.ndarray,
               hvb: np.ndarray, x: int, size: int) -> None:
    """Restore the heap order below entry ``x`` of a heap of ``size`` entries."""
    while True:
        best = x
        left = 2 * x + 1
        if left < size and _before(hw, ha, hb, left, best):
            best = left
        if left + 1 < size and _before(hw, ha, hb, left + 1, best):
            best = left + 1
        if best == x:
            return
        _heap_swap(hw, ha, hb, hva, hvb, x, best)
        x = best


@numba.njit(cache=True)
def _greedy_kernel(count: np.ndarray, cen: np.ndarray, emb: np.ndarray, bw: np.ndarray,
                   occ: np.ndarray, edges: np.ndarray, threshold: float, r_floor: float,
                   use_occupancy: bool) -> np.ndarray:
    """Merge along the heaviest edge while it exceeds ``threshold``; returns each vertex's root.

    ``count``, ``cen``, ``emb``, ``bw`` and ``occ`` are updated in place: at a root they hold
    the statistics of its whole cluster. Edges must be pairs of distinct active vertices.
    """
    s = count.shape[0]
    e_num = edges.shape[0]
    # Neighbour lists: slices of a pool; a merged vertex gets a fresh slice at the pool end.
    deg = np.zeros(s, np.int64)
    for e in range(e_num):
        deg[edges[e, 0]] += 1
        deg[edges[e, 1]] += 1
    nb_start = np.zeros(s, np.int64)
    for v in range(1, s):
        nb_start[v] = nb_start[v - 1] + deg[v - 1]
    pool = np.empty(max(4 * e_num, 16), np.int64)
    pool_end = 2 * e_num
    nb_len = np.zeros(s, np.int64)
    stamp = np.full(s, -1, np.int64)
    for e in range(e_num):
        a = edges[e, 0]
        b = edges[e, 1]
        pool[nb_start[a] + nb_len[a]] = b
        nb_len[a] += 1
        pool[nb_start[b] + nb_len[b]] = a
        nb_len[b] += 1
    # Drop duplicate edges.
    for v in range(s):
        k = 0
        for t in range(nb_len[v]):
            u = pool[nb_start[v] + t]
            if stamp[u] != v:
                stamp[u] = v
                pool[nb_start[v] + k] = u
                k += 1
        nb_len[v] = k
    stamp[:] = -1

    alive = np.ones(s, np.bool_)
    version = np.zeros(s, np.int64)
    parent = np.arange(s)
    cap = max(2 * e_num, 16)
    hw = np.empty(cap)
    ha = np.empty(cap, np.int64)
    hb = np.empty(cap, np.int64)
    hva = np.empty(cap, np.int64)
    hvb = np.empty(cap, np.int64)
    size = 0
    for a in range(s):
        for t in range(nb_len[a]):
            b = pool[nb_start[a] + t]
            if b <= a:
                continue
            w = _weight(a, b, count, cen, emb, bw, occ, r_floor, use_occupancy)
            if w > threshold:
                hw[size] = w
                ha[size] = a
                hb[size] = b
                hva[size] = 0
                hvb[size] = 0
                size += 1
    # Heapify.
    for start in range(size // 2 - 1, -1, -1):
        _sift_down(hw, ha, hb, hva, hvb, start, size)

    merge_id = 0
    while size > 0:
        a = ha[0]
        b = hb[0]
        va = hva[0]
        vb = hvb[0]
        # Pop the top.
        size -= 1
        if size > 0:
            _heap_swap(hw, ha, hb, hva, hvb, 0, size)
            _sift_down(hw, ha, hb, hva, hvb, 0, size)
        if not (alive[a] and alive[b] and version[a] == va and version[b] == vb):
            continue  # stale: an endpoint changed since this weight was computed
        # Merge b into a (a < b): the union's statistics are voxel-count-weighted means.
        n = count[a] + count[b]
        fa = count[a] / n
        fb = count[b] / n
        for t in range(3):
            cen[a, t] = fa * cen[a, t] + fb * cen[b, t]
        for t in range(emb.shape[1]):
            emb[a, t] = fa * emb[a, t] + fb * emb[b, t]
        bw[a, 0] = fa * bw[a, 0] + fb * bw[b, 0]
        bw[a, 1] = fa * bw[a, 1] + fb * bw[b, 1]
        occ[a] = fa * occ[a] + fb * occ[b]
        count[a] = n
        alive[b] = False
        parent[b] = a
        version[a] += 1
        # N(a) <- N(a) u N(b) \ {a, b}; in each neighbour of b, b becomes a.
        merge_id += 1
        need = nb_len[a] + nb_len[b]
        if pool_end + need > pool.shape[0]:
            grown = np.empty(max(2 * pool.shape[0], pool_end + need), np.int64)
            grown[:pool_end] = pool[:pool_end]
            pool = grown
        new_start = pool_end
        k = 0
        for t in range(nb_len[a]):
            u = pool[nb_start[a] + t]
            if u != b:
                stamp[u] = merge_id
                pool[new_start + k] = u
                k += 1
        for t in range(nb_len[b]):
            u = pool[nb_start[b] + t]
            if u == a:
                continue
            shared = stamp[u] == merge_id
            # Fix u's own list: drop b if u already lists a, else rename b to a.
            base = nb_start[u]
            for q in range(nb_len[u]):
                if pool[base + q] == b:
                    if shared:
                        pool[base + q] = pool[base + nb_len[u] - 1]
                        nb_len[u] -= 1
                    else:
                        pool[base + q] = a
                    break
            if not shared:
                stamp[u] = merge_id
                pool[new_start + k] = u
                k += 1
        nb_start[a] = new_start
        nb_len[a] = k
        nb_len[b] = 0
        pool_end = new_start + k
        # Re-weigh every edge at a.
        for t in range(k):
            u = pool[new_start + t]
            w = _weight(a, u, count, cen, emb, bw, occ, r_floor, use_occupancy)
            if w <= threshold:
                continue
            if size == hw.shape[0]:
                cap = 2 * hw.shape[0]
                hw2 = np.empty(cap)
                ha2 = np.empty(cap, np.int64)
                hb2 = np.empty(cap, np.int64)
                hva2 = np.empty(cap, np.int64)
                hvb2 = np.empty(cap, np.int64)
                hw2[:size] = hw[:size]
                ha2[:size] = ha[:size]
                hb2[:size] = hb[:size]
                hva2[:size] = hva[:size]
                hvb2[:size] = hvb[:size]
                hw, ha, hb, hva, hvb = hw2, ha2, hb2, hva2, hvb2
            lo = min(a, u)
            hi = max(a, u)
            hw[size] = w
            ha[size] = lo
            hb[size] = hi
            hva[size] = version[lo]
            hvb[size] = version[hi]
            x = size
            size += 1
            while x > 0:
                up = (x - 1) // 2
                if not _before(hw, ha, hb, x, up):
                    break
                _heap_swap(hw, ha, hb, hva, hvb, x, up)
                x = up
    # Roots: parent chains only point to smaller ids, so one pass in id order resolves them.
    for v in range(s):
        parent[v] = parent[parent[v]]
    return parent


def cluster_supervoxels(supervoxel: np.ndarray, edges: np.ndarray, centers_m: np.ndarray,
                        embedding: np.ndarray, bandwidth: np.ndarray,
                        log_occupancy: np.ndarray, semantic: np.ndarray,
                        config: ClusteringConfig | None = None) -> ClusteringResult:
    """Occupancy-aware greedy clustering of super-voxels into instances (§3.2).

    Vertices are the super-voxels whose majority class is not in
    ``config.ignore_label_ids``; edges are the given adjacent pairs whose two super-voxels
    have the same class (different classes never merge). The heaviest edge (eq. 14) is merged
    while its weight exceeds ``T0``; the merged vertex takes voxel-count-weighted means of
    ``S``, ``D``, sigma and log occupancy and the summed voxel count, and all its edges are
    re-weighed. Ties go to the lexicographically smaller pair; the merged vertex keeps the
    smaller id. A cluster is an instance iff ``r_min < r < r_max`` (skipped when
    ``use_occupancy`` is False) and it has at least ``min_instance_voxels`` voxels.

    Args:
        supervoxel: (M,) super-voxel id of every voxel, 0..S-1.
        edges: (E, 2) integer pairs of adjacent super-voxels
            (:func:`occuseg_ros.core.supervoxels.supervoxel_adjacency`).
        centers_m: (M, 3) predicted instance centre per voxel in metres (voxel centre plus
            predicted offset d).
        embedding: (M, F) feature embedding per voxel.
        bandwidth: (M, 2) positive ``(sigma_s, sigma_d)`` per voxel; sigma_d in metres.
        log_occupancy: (M,) predicted log voxel count of each voxel's instance.
        semantic: (M,) integer nyu40 label per voxel.
        config: clustering parameters (defaults: the paper's).

    Returns:
        The instances, see :class:`ClusteringResult`.
    """
    config = ClusteringConfig() if config is None else config
    stats = supervoxel_statistics(supervoxel, centers_m, embedding, bandwidth, log_occupancy,
                                  semantic)
    sv = np.asarray(supervoxel).astype(np.int64)
    clusters = cluster_statistics(stats, edges, config)
    # Index -1 (ignored or dropped super-voxels) maps to the trailing -1 entry.
    voxel_instance = clusters.supervoxel_instance[sv] if sv.size else np.zeros(0, np.int64)
    return ClusteringResult(
        voxel_instance=voxel_instance.astype(np.int32),
        instance_label=clusters.instance_label, instance_voxels=clusters.instance_voxels,
        instance_ratio=clusters.instance_ratio,
        supervoxel_cluster=clusters.supervoxel_cluster)


@dataclass
class SupervoxelClusters:
    """Instances of :func:`cluster_statistics`, per super-voxel.

    Attributes:
        supervoxel_instance: (S,) int32 instance of each super-voxel, -1 for none.
        supervoxel_cluster: (S,) int32 cluster before the final filter (0..C-1, numbered by
            smallest super-voxel), -1 for ignored super-voxels.
        instance_label, instance_voxels, instance_ratio: as in :class:`ClusteringResult`.
    """

    supervoxel_instance: np.ndarray
    supervoxel_cluster: np.ndarray
    instance_label: np.ndarray
    instance_voxels: np.ndarray
    instance_ratio: np.ndarray


def cluster_statistics(stats: SupervoxelStatistics, edges: np.ndarray,
                       config: ClusteringConfig | None = None) -> SupervoxelClusters:
    """The greedy clustering of :func:`cluster_supervoxels` on super-voxel statistics.

    Super-voxels with ``count == 0`` are unused ids and never join anything, so a caller
    that keeps statistics per persistent id (:mod:`occuseg_ros.core.incremental`) can pass
    its whole id space.

    Args:
        stats: per-super-voxel means (eqs. 12-13); not modified.
        edges: (E, 2) integer pairs of adjacent super-voxels.
        config: clustering parameters (defaults: the paper's).
    """
    config = ClusteringConfig() if config is None else config
    active, graph = merge_graph(stats, edges, config)
    root, count, occ = greedy_roots(stats, graph, config)
    return clusters_from_roots(active, root, count, occ, stats.semantic, config)


def merge_graph(stats: SupervoxelStatistics, edges: np.ndarray,
                config: ClusteringConfig) -> tuple[np.ndarray, np.ndarray]:
    """The vertices (``active``: used ids of a clustered class) and the edges (pairs
    ``lo < hi`` of adjacent active super-voxels of one class) that the greedy merging may
    take. Merges never leave a connected component of this graph, so each component can be
    clustered on its own with the same result."""
    s = stats.count.shape[0]
    edges = np.asarray(edges)
    if edges.ndim != 2 or edges.shape[1] != 2:
        raise ValueError(f"edges must have shape (E, 2), got {edges.shape}")
    if edges.size and not np.issubdtype(edges.dtype, np.integer):
        raise ValueError(f"edges must be integer super-voxel ids, got dtype {edges.dtype}")
    if edges.size and (edges.min() < 0 or edges.max() >= s):
        raise ValueError(f"edges must index super-voxels in [0, {s})")
    edges = edges.astype(np.int64)
    active = (stats.count > 0) & ~np.isin(stats.semantic, config.ignore_label_ids)
    lo = np.minimum(edges[:, 0], edges[:, 1])
    hi = np.maximum(edges[:, 0], edges[:, 1])
    keep = (lo != hi) & active[lo] & active[hi] & (stats.semantic[lo] == stats.semantic[hi])
    return active, np.stack([lo[keep], hi[keep]], axis=1)


def greedy_roots(stats: SupervoxelStatistics, graph: np.ndarray,
                 config: ClusteringConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run the greedy merging (eq. 14) on ``graph`` (:func:`merge_graph`).

    Returns:
        the root (smallest id) of every super-voxel's cluster, and per id the voxel count
        and mean log occupancy, which at a root are its whole cluster's.
    """
    count = stats.count.copy()
    occ = stats.log_occupancy.copy()
    root = _greedy_kernel(count, stats.center_m.copy(), stats.embedding.copy(),
                          stats.bandwidth.copy(), occ, graph,
                          float(config.merge_threshold), float(config.r_floor),
                          bool(config.use_occupancy))
    return root, count, occ


@numba.njit(cache=True)
def _components_kernel(num: int, graph: np.ndarray) -> np.ndarray:
    parent = np.arange(num)
    for e in range(graph.shape[0]):
        a = graph[e, 0]
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        b = graph[e, 1]
        while parent[b] != b:
            parent[b] = parent[parent[b]]
            b = parent[b]
        if a != b:
            parent[max(a, b)] = min(a, b)
    for v in range(num):
        parent[v] = parent[parent[v]]  # parents are smaller ids: one pass in order resolves
    return parent


def graph_components(num: int, graph: np.ndarray) -> np.ndarray:
    """(num,) int64 connected component of every vertex of ``graph`` (E, 2), labelled by its
    smallest vertex."""
    graph = np.asarray(graph, np.int64).reshape(-1, 2)
    if graph.size and (graph.min() < 0 or graph.max() >= num):
        raise ValueError(f"graph must index vertices in [0, {num})")
    return _components_kernel(int(num), graph)


def clusters_from_roots(active: np.ndarray, root: np.ndarray, count: np.ndarray,
                        occ: np.ndarray, semantic: np.ndarray,
                        config: ClusteringConfig) -> SupervoxelClusters:
    """Clusters (numbered by root) and the instances among them (the r filter and the
    minimum size) from :func:`greedy_roots`' output."""
    s = root.shape[0]
    roots = np.flatnonzero(active & (root == np.arange(s)))
    cluster_of_root = np.full(s, -1, np.int64)
    cluster_of_root[roots] = np.arange(roots.size)
    supervoxel_cluster = np.where(active, cluster_of_root[root], -1).astype(np.int32)

    size = count[roots]
    # Eq. (13) prints r = O_i / |Omega_i|, but the text ("r_i > 1 indicates that there are too
    # many voxels in v_i"), eq. (14) and the authors' code all mean actual / predicted voxels.
    ratio = size * np.exp(-occ[roots])
    kept = size >= config.min_instance_voxels
    if config.use_occupancy:
        kept &= (ratio > config.r_min) & (ratio < config.r_max)
    instance_of_cluster = np.full(roots.size + 1, -1, np.int64)
    instance_of_cluster[np.flatnonzero(kept)] = np.arange(int(kept.sum()))
    return SupervoxelClusters(
        supervoxel_instance=instance_of_cluster[supervoxel_cluster].astype(np.int32),
        supervoxel_cluster=supervoxel_cluster,
        instance_label=semantic[roots[kept]].astype(np.int32),
        instance_voxels=size[kept].astype(np.int64),
        instance_ratio=ratio[kept].astype(np.float32))
