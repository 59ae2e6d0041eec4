"""Tests of occuseg_ros.core.clustering (OccuSeg §3.2, eqs. 12-14)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from occuseg_ros.core.clustering import (ClusteringConfig, cluster_supervoxels,
                                         supervoxel_statistics)

SIGMA = (1.0, 0.25)


# --------------------------------------------------------------------------------------------
# reference: recompute every weight after every merge, take the maximum
# --------------------------------------------------------------------------------------------

def reference_clusters(supervoxel, edges, centers_m, embedding, bandwidth, log_occupancy,
                       semantic, config: ClusteringConfig) -> np.ndarray:
    """Cluster of each super-voxel (-1 for ignored), by the naive greedy loop of §3.2."""
    s_num = int(supervoxel.max()) + 1
    members = {s: list(np.flatnonzero(supervoxel == s)) for s in range(s_num)}
    sem = {}
    for s, vox in members.items():
        if vox:
            labels, counts = np.unique(semantic[vox], return_counts=True)
            sem[s] = int(labels[np.argmax(counts)])  # ties: smallest label
    active = {s for s, vox in members.items()
              if vox and sem[s] not in config.ignore_label_ids}
    vertex = {s: s for s in active}  # super-voxel -> current vertex
    voxels = {s: list(members[s]) for s in active}  # vertex -> its voxels
    pairs = {(min(a, b), max(a, b)) for a, b in edges.tolist()
             if a != b and a in active and b in active and sem[a] == sem[b]}

    def weight(a: int, b: int) -> float:
        va, vb = voxels[a], voxels[b]
        union = va + vb
        sigma_s = bandwidth[union, 0].mean()
        sigma_d = bandwidth[union, 1].mean()
        ds = np.linalg.norm(embedding[va].mean(axis=0) - embedding[vb].mean(axis=0))
        dd = np.linalg.norm(centers_m[va].mean(axis=0) - centers_m[vb].mean(axis=0))
        w = math.exp(-(ds / sigma_s) ** 2 - (dd / sigma_d) ** 2)
        if config.use_occupancy:
            r = len(union) / math.exp(log_occupancy[union].mean())
            w /= max(r, config.r_floor)
        return w

    while pairs:
        best = max(pairs, key=lambda p: (weight(*p), -p[0], -p[1]))
        if weight(*best) <= config.merge_threshold:
            break
        a, b = best
        voxels[a] = voxels[a] + voxels.pop(b)
        for s, v in vertex.items():
            if v == b:
                vertex[s] = a
        pairs = {(min(a if x == b else x, a if y == b else y),
                  max(a if x == b else x, a if y == b else y)) for x, y in pairs}
        pairs = {p for p in pairs if p[0] != p[1]}
    out = np.full(s_num, -1, np.int64)
    roots = sorted(set(vertex.values()))
    for s, v in vertex.items():
        out[s] = roots.index(v)
    return out


def random_problem(seed: int):
    """A random super-voxel graph over a few latent instances, with ambiguous weights.

    Embeddings and centres of different instances overlap, and the predicted sizes are off by
    up to 3x, so eq. (14) weights spread over (0, 2) and the occupancy term changes merges.
    """
    rng = np.random.default_rng(seed)
    s_num = int(rng.integers(5, 61))
    n_inst = int(rng.integers(1, max(2, s_num // 3)))
    inst_of_sv = rng.integers(0, n_inst, s_num)
    sizes = rng.integers(1, 25, s_num)
    supervoxel = np.repeat(np.arange(s_num), sizes)
    m = supervoxel.size
    inst = inst_of_sv[supervoxel]
    inst_size = np.bincount(inst, minlength=n_inst)
    embedding = rng.normal(0, 0.6, (n_inst, 4))[inst] + rng.normal(0, 0.3, (s_num, 4))[supervoxel]
    centers = rng.uniform(0, 0.5, (n_inst, 3))[inst] + rng.normal(0, 0.05, (m, 3))
    bandwidth = np.stack([rng.uniform(0.6, 1.4, m), rng.uniform(0.15, 0.4, m)], axis=1)
    log_occ = np.log(inst_size[inst] * rng.uniform(0.3, 3.0, n_inst)[inst]) \
        + rng.normal(0, 0.3, s_num)[supervoxel]
    classes = np.array([1, 5, 5, 5, 7, 7, 0])
    semantic = classes[rng.integers(0, classes.size, n_inst)][inst]
    # Some voxels of other classes inside a super-voxel: majority vote decides.
    flip = rng.random(m) < 0.1
    semantic[flip] = rng.choice([5, 7], flip.sum())
    # A spanning tree plus random extra edges (some duplicated or reversed, some self-loops).
    tree = np.stack([np.arange(1, s_num), rng.integers(0, np.arange(1, s_num))], axis=1)
    extra = rng.integers(0, s_num, (2 * s_num, 2))
    edges = np.concatenate([tree, extra, tree[:3, ::-1]])
    return supervoxel, edges, centers, embedding, bandwidth, log_occ, semantic


@pytest.mark.parametrize("seed", range(16))
@pytest.mark.parametrize("use_occupancy", [True, False])
def test_matches_naive_reference(seed: int, use_occupancy: bool) -> None:
    problem = random_problem(seed)
    config = ClusteringConfig(use_occupancy=use_occupancy, min_instance_voxels=5)
    result = cluster_supervoxels(*problem, config)
    expected = reference_clusters(*problem, config)
    np.testing.assert_array_equal(result.supervoxel_cluster, expected)
    # Instances: the clusters passing the filter, in cluster order.
    supervoxel, _, _, _, _, log_occ, semantic = problem
    cluster_of_voxel = expected[supervoxel]
    kept = []
    for c in range(expected.max() + 1):
        vox = cluster_of_voxel == c
        n = int(vox.sum())
        r = n / math.exp(log_occ[vox].mean())
        if n >= config.min_instance_voxels and (not use_occupancy
                                                or config.r_min < r < config.r_max):
            kept.append((c, n, r))
    assert result.num_instances == len(kept)
    np.testing.assert_array_equal(result.instance_voxels, [n for _, n, _ in kept])
    np.testing.assert_allclose(result.instance_ratio, [r for _, _, r in kept], rtol=1e-5)
    for i, (c, _, _) in enumerate(kept):
        np.testing.assert_array_equal(result.voxel_instance == i, cluster_of_voxel == c)
        labels, counts = np.unique(semantic[cluster_of_voxel == c], return_counts=True)
        assert result.instance_label[i] in labels
    assert (result.voxel_instance[~np.isin(cluster_of_voxel, [c for c, _, _ in kept])]
            == -1).all()


def test_random_problems_exercise_the_occupancy_term() -> None:
    differ = 0
    merges = 0
    for seed in range(16):
        problem = random_problem(seed)
        with_occ = cluster_supervoxels(*problem, ClusteringConfig()).supervoxel_cluster
        without = cluster_supervoxels(*problem, ClusteringConfig(use_occupancy=False))
        differ += not np.array_equal(with_occ, without.supervoxel_cluster)
        merges += int((with_occ >= 0).sum() - (with_occ.max() + 1))
    assert differ >= 4 and merges >= 50


def test_scales_to_many_supervoxels() -> None:
    rng = np.random.default_rng(0)
    side = 150  # a 150 x 150 grid of super-voxels: 22,500 vertices, 44,700 edges
    s_num = side * side
    idx = np.arange(s_num).reshape(side, side)
    edges = np.concatenate([np.stack([idx[:, :-1].ravel(), idx[:, 1:].ravel()], 1),
                            np.stack([idx[:-1].ravel(), idx[1:].ravel()], 1)])
    supervoxel = np.repeat(np.arange(s_num), 4)
    row, col = np.divmod(np.arange(s_num), side)
    inst = ((row // 10) * (side // 10) + col // 10)[supervoxel]  # 10 x 10 blocks
    emb = rng.normal(0, 1.5, (inst.max() + 1, 8))[inst] \
        + rng.normal(0, 0.05, (supervoxel.size, 8))
    centers = np.zeros((supervoxel.size, 3))
    log_occ = np.full(supervoxel.size, np.log(400.0))
    result = cluster_supervoxels(supervoxel, edges, centers, emb,
                                 np.tile(SIGMA, (supervoxel.size, 1)), log_occ,
                                 np.full(supervoxel.size, 5))
    assert result.num_instances == 225
    assert (result.instance_voxels == 400).all()
    for i in range(225):
        assert len(np.unique(inst[result.voxel_instance == i])) == 1


# --------------------------------------------------------------------------------------------
# eq. (14) cases
# --------------------------------------------------------------------------------------------

def build(parts, classes=None):
    """Voxel arrays for super-voxels given as (size, instance centre, embedding, log occ)."""
    supervoxel = np.concatenate([np.full(p[0], i) for i, p in enumerate(parts)])
    centers = np.concatenate([np.tile(p[1], (p[0], 1)) for p in parts]).astype(float)
    emb = np.concatenate([np.tile(p[2], (p[0], 1)) for p in parts]).astype(float)
    log_occ = np.concatenate([np.full(p[0], p[3]) for p in parts]).astype(float)
    if classes is None:
        classes = [5] * len(parts)
    semantic = np.concatenate([np.full(p[0], c) for p, c in zip(parts, classes)])
    bandwidth = np.tile(SIGMA, (supervoxel.size, 1))
    return supervoxel, centers, emb, bandwidth, log_occ, semantic


def run(parts, edges, config=None, classes=None):
    sv, centers, emb, bw, occ, sem = build(parts, classes)
    return cluster_supervoxels(sv, np.array(edges).reshape(-1, 2), centers, emb, bw, occ,
                               sem, config or ClusteringConfig())


def test_over_segmented_instance_is_merged() -> None:
    # (a) Three fragments of one 300-voxel instance; each predicts the full size.
    occ = math.log(300)
    parts = [(100, [1, 1, 0.5], [0, 0], occ), (120, [1, 1, 0.5], [0, 0], occ),
             (80, [1.02, 1, 0.5], [0.05, 0], occ)]
    result = run(parts, [[0, 1], [1, 2]])
    np.testing.assert_array_equal(result.supervoxel_cluster, [0, 0, 0])
    assert result.num_instances == 1
    assert result.instance_voxels[0] == 300
    assert result.instance_ratio[0] == pytest.approx(1.0)


def test_touching_instances_with_different_embeddings_stay_apart() -> None:
    # (b) Two right-sized instances side by side, embeddings 3 sigma apart.
    parts = [(200, [1, 1, 0.5], [0, 0], math.log(200)),
             (150, [1.2, 1, 0.5], [3, 0], math.log(150))]
    result = run(parts, [[0, 1]])
    np.testing.assert_array_equal(result.supervoxel_cluster, [0, 1])
    assert result.num_instances == 2


def test_occupancy_keeps_complete_instances_apart() -> None:
    # (c) Similar embeddings and centres: w without occupancy ~ exp(-0.02 - 0.16) > 0.5, but
    # the union would have r = 2 (each alone r = 1), so eq. (14) divides it by 2.
    parts = [(200, [1, 1, 0.5], [0, 0], math.log(200)),
             (200, [1.1, 1, 0.5], [0.15, 0], math.log(200))]
    with_occ = run(parts, [[0, 1]])
    np.testing.assert_array_equal(with_occ.supervoxel_cluster, [0, 1])
    np.testing.assert_allclose(with_occ.instance_ratio, [1.0, 1.0], rtol=1e-6)
    without = run(parts, [[0, 1]], ClusteringConfig(use_occupancy=False))
    np.testing.assert_array_equal(without.supervoxel_cluster, [0, 0])
    assert without.num_instances == 1 and without.instance_voxels[0] == 400


def test_ratio_filter_rejects_fragments() -> None:
    # (d) A 50-voxel fragment predicting a 400-voxel instance: r = 0.125 < 0.3; and a
    # 300-voxel blob predicting 100 voxels: r = 3 > 2. Both are kept without occupancy.
    parts = [(50, [0, 0, 0], [0, 0], math.log(400)),
             (300, [3, 0, 0], [5, 0], math.log(100)),
             (100, [6, 0, 0], [-5, 0], math.log(100))]
    result = run(parts, [[0, 1], [1, 2]])
    np.testing.assert_array_equal(result.supervoxel_cluster, [0, 1, 2])
    assert result.num_instances == 1
    assert result.instance_voxels[0] == 100
    np.testing.assert_array_equal(result.voxel_instance,
                                  np.r_[np.full(350, -1), np.zeros(100)])
    ablation = run(parts, [[0, 1], [1, 2]], ClusteringConfig(use_occupancy=False))
    assert ablation.num_instances == 3
    np.testing.assert_allclose(ablation.instance_ratio, [0.125, 3.0, 1.0], rtol=1e-6)


def test_min_instance_voxels() -> None:
    parts = [(10, [0, 0, 0], [0, 0], math.log(10)), (30, [5, 0, 0], [5, 0], math.log(30))]
    result = run(parts, [[0, 1]], ClusteringConfig(min_instance_voxels=20))
    assert result.num_instances == 1 and result.instance_voxels[0] == 30


def test_different_classes_never_merge() -> None:
    # (e) Identical predictions, fragments of a 200-voxel instance, different classes.
    occ = math.log(200)
    parts = [(100, [1, 1, 0.5], [0, 0], occ), (100, [1, 1, 0.5], [0, 0], occ)]
    result = run(parts, [[0, 1]], classes=[5, 7])
    np.testing.assert_array_equal(result.supervoxel_cluster, [0, 1])
    assert result.instance_label.tolist() == [5, 7]
    assert run(parts, [[0, 1]], classes=[5, 5]).num_instances == 1


def test_ignored_classes_get_no_instance() -> None:
    # (f) Unannotated and stuff super-voxels are never clustered.
    occ = math.log(100)
    parts = [(100, [0, 0, 0], [0, 0], occ), (100, [0, 0, 0], [0, 0], occ),
             (100, [0, 0, 0], [0, 0], occ), (100, [0, 0, 0], [0, 0], occ),
             (100, [0, 0, 0], [0, 0], occ)]
    result = run(parts, [[0, 1], [1, 2], [2, 3], [3, 4]], classes=[0, 1, 2, 22, 5])
    np.testing.assert_array_equal(result.supervoxel_cluster, [-1, -1, -1, -1, 0])
    assert result.num_instances == 1
    np.testing.assert_array_equal(result.voxel_instance, np.r_[np.full(400, -1), np.zeros(100)])
    assert result.instance_label.tolist() == [5]


# --------------------------------------------------------------------------------------------
# statistics and validation
# --------------------------------------------------------------------------------------------

def test_supervoxel_statistics_are_means() -> None:
    rng = np.random.default_rng(3)
    m = 200
    sv = rng.integers(0, 7, m)
    centers, emb = rng.normal(size=(m, 3)), rng.normal(size=(m, 5))
    bw, occ = rng.uniform(0.1, 1, (m, 2)), rng.normal(size=m)
    sem = rng.choice([3, 5, 7], m)
    stats = supervoxel_statistics(sv, centers, emb, bw, occ, sem, num_supervoxels=9)
    for s in range(9):
        vox = sv == s
        assert stats.count[s] == vox.sum()
        if vox.any():
            np.testing.assert_allclose(stats.center_m[s], centers[vox].mean(0))
            np.testing.assert_allclose(stats.embedding[s], emb[vox].mean(0))
            np.testing.assert_allclose(stats.bandwidth[s], bw[vox].mean(0))
            np.testing.assert_allclose(stats.log_occupancy[s], occ[vox].mean())
            labels, counts = np.unique(sem[vox], return_counts=True)
            assert stats.semantic[s] == labels[np.argmax(counts)]
            assert stats.occupancy_ratio[s] == pytest.approx(vox.sum() / np.exp(occ[vox].mean()))
        else:
            assert stats.semantic[s] == -1


def test_validation() -> None:
    sv, centers, emb, bw, occ, sem = build([(5, [0, 0, 0], [0, 0], 1.0)])
    ok = (sv, np.zeros((0, 2), int), centers, emb, bw, occ, sem)
    assert cluster_supervoxels(*ok).num_instances == 0  # 5 voxels < min_instance_voxels
    with pytest.raises(ValueError, match="bandwidth"):
        cluster_supervoxels(sv, ok[1], centers, emb, -bw, occ, sem)
    with pytest.raises(ValueError, match="centers_m"):
        cluster_supervoxels(sv, ok[1], centers[:, :2], emb, bw, occ, sem)
    with pytest.raises(ValueError, match="NaN"):
        cluster_supervoxels(sv, ok[1], centers, emb * np.nan, bw, occ, sem)
    with pytest.raises(ValueError, match="edges"):
        cluster_supervoxels(sv, np.array([[0, 1]]), centers, emb, bw, occ, sem)
    with pytest.raises(ValueError, match="semantic"):
        cluster_supervoxels(sv, ok[1], centers, emb, bw, occ, sem.astype(float))
    with pytest.raises(ValueError, match="r_min"):
        ClusteringConfig(r_min=2.0, r_max=1.0)
    with pytest.raises(ValueError, match="merge_threshold"):
        ClusteringConfig(merge_threshold=float("nan"))
    empty = cluster_supervoxels(np.zeros(0, int), np.zeros((0, 2), int), np.zeros((0, 3)),
                                np.zeros((0, 4)), np.zeros((0, 2)), np.zeros(0),
                                np.zeros(0, int))
    assert empty.voxel_instance.shape == (0,) and empty.supervoxel_cluster.shape == (0,)
