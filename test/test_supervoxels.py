"""Tests of occuseg_ros.core.supervoxels: each kernel against a plain numpy/python reference."""

from __future__ import annotations

import time

import numpy as np
import pytest

from occuseg_ros.core import supervoxels as sv_mod
from occuseg_ros.core.supervoxels import (SupervoxelConfig, build_supervoxels,
                                          estimate_normals, felzenszwalb, graph_edges,
                                          Guide, segment_supervoxels, split_by_label,
                                          supervoxel_adjacency, voxel_knn)
from occuseg_ros.core.voxels import majority_vote, voxelize


# --------------------------------------------------------------------------------------------
# references
# --------------------------------------------------------------------------------------------

def knn_reference(coords: np.ndarray, k: int, radius: float) -> np.ndarray:
    """Brute force: rank all others by (squared distance, index), keep k within radius."""
    c = coords.astype(np.int64)
    m = c.shape[0]
    out = np.full((m, k), -1, np.int32)
    for i in range(m):
        d2 = ((c - c[i]) ** 2).sum(axis=1)
        d2[i] = np.iinfo(np.int64).max
        order = np.lexsort((np.arange(m), d2))
        near = order[d2[order] <= radius * radius + 1e-9][:k]
        out[i, :near.size] = near
    return out


def normals_reference(coords: np.ndarray, neighbors: np.ndarray) -> np.ndarray:
    """numpy PCA normals, made sign-canonical like the kernel (no fallback handling)."""
    out = np.zeros((coords.shape[0], 3))
    for i in range(coords.shape[0]):
        idx = np.r_[i, neighbors[i][neighbors[i] >= 0]]
        pts = coords[idx].astype(np.float64)
        cov = np.cov(pts.T, bias=True)
        n = np.linalg.eigh(cov)[1][:, 0]
        out[i] = n * np.sign(n[np.argmax(np.abs(n))])
    return out


def felzenszwalb_reference(num_nodes: int, edges: np.ndarray, weights: np.ndarray,
                           k_threshold: float, min_size: int) -> np.ndarray:
    """Textbook Felzenszwalb-Huttenlocher with explicit component sets."""
    comp = list(range(num_nodes))
    members = {i: {i} for i in range(num_nodes)}
    internal = {i: 0.0 for i in range(num_nodes)}
    order = np.argsort(weights, kind="stable")
    for e in order:
        a, b = comp[edges[e, 0]], comp[edges[e, 1]]
        if a == b:
            continue
        w = weights[e]
        tau_a = internal[a] + k_threshold / len(members[a])
        tau_b = internal[b] + k_threshold / len(members[b])
        if w <= min(tau_a, tau_b):
            for v in members[b]:
                comp[v] = a
            members[a] |= members.pop(b)
            internal[a] = w
            internal.pop(b)
    for e in order:
        a, b = comp[edges[e, 0]], comp[edges[e, 1]]
        if a != b and (len(members[a]) < min_size or len(members[b]) < min_size):
            for v in members[b]:
                comp[v] = a
            members[a] |= members.pop(b)
    return relabel(np.array(comp))


def relabel(labels: np.ndarray) -> np.ndarray:
    """Canonical ids: numbered by first occurrence."""
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    rank = np.empty(first.size, np.int64)
    rank[np.argsort(first)] = np.arange(first.size)
    return rank[inverse.ravel()]


def adjacency_reference(supervoxel: np.ndarray, neighbors: np.ndarray) -> np.ndarray:
    pairs = set()
    for i in range(neighbors.shape[0]):
        for j in neighbors[i]:
            if j >= 0 and supervoxel[i] != supervoxel[j]:
                a, b = sorted((int(supervoxel[i]), int(supervoxel[j])))
                pairs.add((a, b))
    return np.array(sorted(pairs), np.int64).reshape(-1, 2)


# --------------------------------------------------------------------------------------------
# fixtures: synthetic scenes
# --------------------------------------------------------------------------------------------

def box_on_floor() -> tuple[np.ndarray, np.ndarray]:
    """A 60x60 floor at z=0 and the hollow surface of a 20x20x11 box standing on it."""
    floor = [(x, y, 0) for x in range(60) for y in range(60)]
    box = [(x, y, z) for x in range(20, 40) for y in range(20, 40) for z in range(1, 12)
           if x in (20, 39) or y in (20, 39) or z == 11]
    coords = np.array(floor + box, np.int32)
    label = np.r_[np.zeros(len(floor), int), np.ones(len(box), int)]
    return coords, label


def random_cloud(seed: int, m: int = 400, span: int = 12) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pts = rng.integers(0, span, size=(3 * m, 3))
    return np.unique(pts, axis=0)[:m].astype(np.int32)


# --------------------------------------------------------------------------------------------
# neighbour graph
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed,k,radius", [(0, 6, 2), (1, 12, 4), (2, 3, 1), (3, 20, 3),
                                           (4, 8, 2.5)])
def test_knn_matches_brute_force(seed: int, k: int, radius: float) -> None:
    coords = random_cloud(seed, m=300, span=10 + 3 * seed)
    np.testing.assert_array_equal(voxel_knn(coords, k, radius), knn_reference(coords, k, radius))


def test_knn_with_unit_radius_is_the_26_neighbourhood() -> None:
    coords = random_cloud(4, m=500, span=10)
    ours = voxel_knn(coords, 26, np.sqrt(3.0))
    lookup = {tuple(c): i for i, c in enumerate(coords.tolist())}
    offsets = [(dx, dy, dz) for dx in (-1, 0, 1) for dy in (-1, 0, 1) for dz in (-1, 0, 1)
               if (dx, dy, dz) != (0, 0, 0)]
    for i, c in enumerate(coords.tolist()):
        ref = {lookup[n] for n in (tuple(np.add(c, o)) for o in offsets) if n in lookup}
        assert set(ours[i][ours[i] >= 0].tolist()) == ref


def test_knn_edge_cases() -> None:
    assert voxel_knn(np.zeros((0, 3), np.int32)).shape == (0, sv_mod.DEFAULT_KNN)
    np.testing.assert_array_equal(voxel_knn(np.array([[5, 5, 5]]), 4, 2), [[-1, -1, -1, -1]])
    far = np.array([[0, 0, 0], [100, 0, 0], [-7, 3, 1_000_000]])
    assert (voxel_knn(far, 2, 4) == -1).all()
    with pytest.raises(ValueError, match="coords"):
        voxel_knn(np.zeros((3, 2), np.int32))
    with pytest.raises(ValueError, match="integer"):
        voxel_knn(np.zeros((3, 3), np.float32))
    with pytest.raises(ValueError, match="k must"):
        voxel_knn(np.zeros((3, 3), np.int32), k=0)
    with pytest.raises(ValueError, match="max_radius_voxels"):
        voxel_knn(np.zeros((3, 3), np.int32), max_radius_voxels=0.5)


def test_graph_edges_lists_every_pair_once() -> None:
    coords = random_cloud(5, m=300)
    nb = voxel_knn(coords, 5, 3)  # asymmetric table
    edges = graph_edges(nb)
    assert (edges[:, 0] < edges[:, 1]).all()
    expected = {(min(i, int(j)), max(i, int(j))) for i in range(nb.shape[0]) for j in nb[i]
                if j >= 0}
    got = [tuple(e) for e in edges.tolist()]
    assert len(got) == len(set(got)) and set(got) == expected


# --------------------------------------------------------------------------------------------
# normals
# --------------------------------------------------------------------------------------------

def test_normals_match_numpy_pca() -> None:
    coords = random_cloud(6, m=400, span=9)
    nb = voxel_knn(coords, 8, 3)
    ours = estimate_normals(coords, nb)
    ref = normals_reference(coords, nb)
    ok = (nb >= 0).sum(axis=1) >= 2
    # Compare only well-posed neighbourhoods (a distinct smallest eigenvalue).
    for i in np.flatnonzero(ok):
        idx = np.r_[i, nb[i][nb[i] >= 0]]
        ev = np.linalg.eigvalsh(np.cov(coords[idx].T.astype(float), bias=True))
        if ev[1] - ev[0] > 1e-3 * max(ev[2], 1e-12):
            assert abs(abs(float(ours[i] @ ref[i])) - 1.0) < 1e-4, i
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_normals_on_planes() -> None:
    plane = np.array([(x, y, 3) for x in range(15) for y in range(15)], np.int32)
    n = estimate_normals(plane, voxel_knn(plane))
    np.testing.assert_allclose(n, np.tile([0, 0, 1], (plane.shape[0], 1)), atol=1e-6)
    # A tilted plane x + y + z = 0, voxelised: normals within a few degrees of (1,1,1)/sqrt(3).
    u, v = np.meshgrid(np.linspace(-0.4, 0.4, 80), np.linspace(-0.4, 0.4, 80))
    a = np.array([1.0, -1.0, 0.0]) / np.sqrt(2)
    b = np.array([1.0, 1.0, -2.0]) / np.sqrt(6)
    pts = u.reshape(-1, 1) * a + v.reshape(-1, 1) * b
    grid = voxelize(pts, 0.02)
    n = estimate_normals(grid.coords, voxel_knn(grid.coords))
    cos = np.abs(n @ (np.ones(3) / np.sqrt(3)))
    assert np.median(cos) > np.cos(np.radians(3)) and cos.min() > np.cos(np.radians(15))


def test_normals_on_box_faces() -> None:
    coords, label = box_on_floor()
    n = estimate_normals(coords, voxel_knn(coords))
    c = coords
    # Away from edges (by more than the 4-voxel search radius), faces are exact.
    top = (c[:, 2] == 11) & (c[:, 0] >= 25) & (c[:, 0] <= 34) & (c[:, 1] >= 25) & (c[:, 1] <= 34)
    side = (c[:, 0] == 20) & (c[:, 1] >= 25) & (c[:, 1] <= 34) & (c[:, 2] >= 5) & (c[:, 2] <= 6)
    floor = (c[:, 2] == 0) & ((c[:, 0] < 15) | (c[:, 0] > 44))
    assert top.sum() and side.sum() and floor.sum()
    np.testing.assert_allclose(n[top], np.tile([0, 0, 1], (top.sum(), 1)), atol=1e-6)
    np.testing.assert_allclose(n[side], np.tile([1, 0, 0], (side.sum(), 1)), atol=1e-6)
    np.testing.assert_allclose(n[floor], np.tile([0, 0, 1], (floor.sum(), 1)), atol=1e-6)


def test_normals_fallback() -> None:
    line = np.array([(x, 0, 0) for x in range(6)] + [(50, 50, 50)], np.int32)
    n = estimate_normals(line, voxel_knn(line, 4, 2))
    np.testing.assert_allclose(n, np.tile([0, 0, 1], (7, 1)))
    with pytest.raises(ValueError, match="neighbors"):
        estimate_normals(line, np.zeros((3, 4), np.int32))
    with pytest.raises(ValueError, match="neighbors"):
        estimate_normals(line, np.full((7, 4), 7, np.int32))


# --------------------------------------------------------------------------------------------
# Felzenszwalb
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(6))
def test_felzenszwalb_matches_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 200))
    e = int(rng.integers(n, 4 * n))
    edges = rng.integers(0, n, size=(e, 2))
    edges = edges[edges[:, 0] != edges[:, 1]]
    # Quantised weights create ties: both sides sort stably.
    weights = np.round(rng.random(edges.shape[0]) ** 2, 2)
    k = float(rng.choice([0.05, 0.3, 1.0]))
    min_size = int(rng.choice([1, 3, 8]))
    ours = felzenszwalb(n, edges, weights, k, min_size)
    np.testing.assert_array_equal(ours, felzenszwalb_reference(n, edges, weights, k, min_size))


def test_felzenszwalb_validation() -> None:
    with pytest.raises(ValueError, match="edges"):
        felzenszwalb(3, np.array([[0, 3]]), np.array([0.1]), 1.0, 1)
    with pytest.raises(ValueError, match="weights"):
        felzenszwalb(3, np.array([[0, 1]]), np.array([np.nan]), 1.0, 1)
    with pytest.raises(ValueError, match="min_size"):
        felzenszwalb(3, np.array([[0, 1]]), np.array([0.1]), 1.0, 0)


def test_two_coloured_planes_are_separated() -> None:
    coords = np.array([(x, y, 0) for x in range(40) for y in range(40)], np.int32)
    left = coords[:, 0] < 20
    rgb = np.where(left[:, None], [[0.8, 0.2, 0.2]], [[0.2, 0.2, 0.8]]).astype(np.float32)
    nb = voxel_knn(coords)
    sv = segment_supervoxels(coords, rgb, estimate_normals(coords, nb), nb)
    assert sv.max() + 1 >= 2
    for s in range(sv.max() + 1):
        assert len(set(left[sv == s])) == 1


def test_box_on_floor_is_separated() -> None:
    coords, label = box_on_floor()
    rgb = np.full((coords.shape[0], 3), 0.5, np.float32)
    nb = voxel_knn(coords)
    sv = segment_supervoxels(coords, rgb, estimate_normals(coords, nb), nb)
    for s in range(sv.max() + 1):
        assert len(set(label[sv == s])) == 1
    assert sv.max() + 1 < 60
    np.testing.assert_array_equal(np.unique(sv), np.arange(sv.max() + 1))


def test_build_supervoxels_chains_the_steps() -> None:
    coords, _ = box_on_floor()
    rgb = np.random.default_rng(0).random((coords.shape[0], 3)).astype(np.float32)
    config = SupervoxelConfig(knn=8, max_radius_voxels=3, k_threshold=0.3, colour_weight=0.2,
                              min_size=5)
    result = build_supervoxels(coords, rgb, config)
    nb = voxel_knn(coords, 8, 3)
    normals = estimate_normals(coords, nb)
    sv = segment_supervoxels(coords, rgb, normals, nb, 0.3, 0.2, 5)
    np.testing.assert_array_equal(result.neighbors, nb)
    np.testing.assert_array_equal(result.normals, normals)
    np.testing.assert_array_equal(result.supervoxel, sv)
    np.testing.assert_array_equal(result.adjacency, supervoxel_adjacency(sv, nb))
    assert result.num_supervoxels == sv.max() + 1


def test_segment_validation() -> None:
    coords, _ = box_on_floor()
    nb = voxel_knn(coords)
    n = estimate_normals(coords, nb)
    rgb = np.zeros((coords.shape[0], 3), np.float32)
    with pytest.raises(ValueError, match="rgb"):
        segment_supervoxels(coords, rgb[:-1], n, nb)
    with pytest.raises(ValueError, match="normals"):
        segment_supervoxels(coords, rgb, n[:, :2], nb)
    with pytest.raises(ValueError, match="colour_weight"):
        segment_supervoxels(coords, rgb, n, nb, colour_weight=-1.0)


# --------------------------------------------------------------------------------------------
# adjacency
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(3))
def test_adjacency_matches_reference(seed: int) -> None:
    coords = random_cloud(10 + seed, m=400)
    nb = voxel_knn(coords, 6, 2)
    rng = np.random.default_rng(seed)
    supervoxel = rng.integers(0, 30, coords.shape[0])
    np.testing.assert_array_equal(supervoxel_adjacency(supervoxel, nb),
                                  adjacency_reference(supervoxel, nb))
    assert supervoxel_adjacency(np.zeros(0, np.int64), np.zeros((0, 6), np.int32)).shape == (0, 2)
    with pytest.raises(ValueError, match="non-negative"):
        supervoxel_adjacency(supervoxel - 1, nb)


# --------------------------------------------------------------------------------------------
# real scene
# --------------------------------------------------------------------------------------------

def test_real_scene_count_and_purity(scannet_scene_path) -> None:
    data = np.load(scannet_scene_path)
    grid = voxelize(data["xyz"], 0.02, data["rgb"])
    instance = majority_vote(data["instance"], grid.point_to_voxel, grid.num_voxels)
    build_supervoxels(grid.coords, grid.rgb)  # compile, or load the numba cache
    start = time.perf_counter()
    result = build_supervoxels(grid.coords, grid.rgb)
    elapsed = time.perf_counter() - start
    sv = result.supervoxel
    count = result.num_supervoxels
    labelled = instance >= 0
    majority = majority_vote(instance[labelled], sv[labelled], count)
    purity = float((majority[sv[labelled]] == instance[labelled]).mean())
    # Measured: 2,260 super-voxels, purity 0.938, 0.2 s.
    assert 500 <= count <= 3000, count
    assert purity >= 0.93, purity
    assert result.adjacency.shape[0] > count
    assert elapsed < 2.0, elapsed  # generous for loaded CI machines


def test_split_by_label_matches_reference():
    rng = np.random.default_rng(5)
    supervoxel = rng.integers(0, 6, 200)
    labels = rng.choice([-1, 3, 5, 40], 200)
    split = split_by_label(supervoxel, labels)
    # Reference: one new id per distinct (super-voxel, label) pair, in sorted pair order.
    pairs = sorted({(int(s), int(l)) for s, l in zip(supervoxel, labels)})
    expected = np.array([pairs.index((int(s), int(l))) for s, l in zip(supervoxel, labels)])
    np.testing.assert_array_equal(split, expected)
    with pytest.raises(ValueError, match="one length"):
        split_by_label(supervoxel, labels[:-1])


def test_build_supervoxels_cuts_along_labels():
    # A flat, uniformly coloured floor is one super-voxel; labels cut it in two halves.
    coords = np.array([(x, y, 0) for x in range(20) for y in range(10)], np.int32)
    rgb = np.full((coords.shape[0], 3), 0.5)
    whole = build_supervoxels(coords, rgb)
    assert np.unique(whole.supervoxel).size == 1
    labels = (coords[:, 0] >= 10).astype(np.int64)
    cut = build_supervoxels(coords, rgb, labels=labels)
    assert np.unique(cut.supervoxel).size == 2
    assert cut.adjacency.tolist() == [[0, 1]]
    assert (cut.supervoxel == labels).all()


def test_guide_cuts_flush_identical_units():
    # Two identical cabinets side by side form one flat, uniformly coloured front: geometry
    # cannot tell them apart, the predicted embeddings can.
    coords = np.array([(x, 0, z) for x in range(30) for z in range(15)], np.int32)
    rgb = np.full((coords.shape[0], 3), 0.4)
    neighbors = voxel_knn(coords)
    normals = estimate_normals(coords, neighbors)
    left = coords[:, 0] < 15
    plain = segment_supervoxels(coords, rgb, normals, neighbors)
    assert np.unique(plain).size == 1
    embedding = np.where(left[:, None], [0.0, 0.0], [3.0, 0.0])
    centres = np.where(left[:, None], [0.15, 0.0, 0.15], [0.45, 0.0, 0.15])
    guide = Guide(embedding, centres, np.tile([1.0, 0.25], (coords.shape[0], 1)))
    guided = segment_supervoxels(coords, rgb, normals, neighbors, guide=guide)
    assert np.unique(guided).size == 2
    assert all(np.unique(guided[side]).size == 1 for side in (left, ~left))
    # Weight 0 is the paper's purely geometric segmentation.
    np.testing.assert_array_equal(
        segment_supervoxels(coords, rgb, normals, neighbors, guide=guide, affinity_weight=0.0),
        plain)
    with pytest.raises(ValueError, match="guide arrays"):
        segment_supervoxels(coords, rgb, normals, neighbors,
                            guide=Guide(embedding[:-1], centres, guide.bandwidth))


def test_edge_order_is_numpys_stable_order():
    """The Felzenszwalb edge order (a radix sort of the weights' bit patterns) equals numpy's
    stable argsort, ties included (weights rounded to make many)."""
    from occuseg_ros.core.supervoxels import _stable_order

    weights = np.round(np.random.default_rng(0).random(250_000), 3)
    np.testing.assert_array_equal(_stable_order(weights), np.argsort(weights, kind="stable"))


def test_radix_order_of_integer_keys_is_stable():
    """The radix argsort (also the cell sort of the neighbour table) on 64-bit keys."""
    rng = np.random.default_rng(3)
    keys = rng.integers(0, 2 ** 63, 5_000, dtype=np.uint64) | np.uint64(2 ** 63)
    keys[::3] = keys[1::3][:keys[::3].size]
    np.testing.assert_array_equal(sv_mod._radix_order(keys), np.argsort(keys, kind="stable"))
    small = rng.integers(0, 4, 5_000).astype(np.uint64)
    np.testing.assert_array_equal(sv_mod._radix_order(small), np.argsort(small, kind="stable"))


def test_edge_order_matches_numpy_with_signs_zeros_and_ties():
    """The radix edge order equals numpy's stable argsort for negative weights, -0.0 beside
    +0.0 (equal for numpy) and many ties."""
    from occuseg_ros.core.supervoxels import _stable_order

    rng = np.random.default_rng(1)
    weights = np.round(rng.normal(size=20_000), 2)
    weights[rng.random(weights.size) < 0.1] = -0.0
    weights[rng.random(weights.size) < 0.1] = 0.0
    weights[:3] = [np.finfo(np.float64).max, -np.finfo(np.float64).max, 5e-324]
    np.testing.assert_array_equal(_stable_order(weights), np.argsort(weights, kind="stable"))
    assert _stable_order(np.zeros(0)).shape == (0,)


@pytest.mark.parametrize("seed,k,radius", [(5, 12, 9.0), (6, 5, 8.5)])
def test_knn_wide_ball_matches_brute_force(seed: int, k: int, radius: float) -> None:
    """Balls wider than the shell walk's limit scan candidate lists (the other code path)."""
    assert radius ** 2 > sv_mod._MAX_SHELL_R2
    coords = random_cloud(seed, m=300, span=40)
    np.testing.assert_array_equal(voxel_knn(coords, k, radius), knn_reference(coords, k, radius))


def test_edge_weights_match_numpy():
    """Normal, colour and affinity terms of every edge against a numpy evaluation."""
    rng = np.random.default_rng(2)
    coords = random_cloud(7, m=300, span=10)
    m = coords.shape[0]
    neighbors = voxel_knn(coords, 8, 2)
    normals = estimate_normals(coords, neighbors)
    rgb = rng.random((m, 3))
    emb = rng.normal(size=(m, 4))
    centres = rng.normal(size=(m, 3))
    bw = rng.uniform(0.5, 2.0, size=(m, 2))
    edges = graph_edges(neighbors)
    i, j = edges[:, 0], edges[:, 1]
    n64 = normals.astype(np.float64)
    geometric = (1.0 - np.minimum(1.0, np.abs((n64[i] * n64[j]).sum(axis=1)))
                 + 0.5 * np.linalg.norm(rgb[i] - rgb[j], axis=1))
    affinity = np.exp(-((emb[i] - emb[j]) ** 2).sum(axis=1) / (0.5 * (bw[i, 0] + bw[j, 0])) ** 2
                      - ((centres[i] - centres[j]) ** 2).sum(axis=1)
                      / (0.5 * (bw[i, 1] + bw[j, 1])) ** 2)
    ours = sv_mod._edge_weights_kernel(edges, rgb, n64, 0.5, emb, centres, bw, 0.3)
    np.testing.assert_allclose(ours, geometric + 0.3 * (1.0 - affinity), rtol=1e-12, atol=1e-15)
    plain = sv_mod._edge_weights_kernel(edges, rgb, n64, 0.5, emb, centres, bw, 0.0)
    np.testing.assert_allclose(plain, geometric, rtol=1e-12, atol=1e-15)
