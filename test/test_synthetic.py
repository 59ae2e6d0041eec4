"""The procedural room generator: determinism, variety, labels, geometry, density, speed."""

from __future__ import annotations

import time

import numpy as np
import open3d as o3d
import pytest

from occuseg_ros.core.labels import BENCHMARK_INSTANCE_IDS, NYU40_NAMES
from occuseg_ros.core.synthetic import ROOM_KINDS, generate_room, layout_room, sample_layout

SEEDS = range(30)
STRUCTURE = {1, 2, 22}


@pytest.fixture(scope="module")
def rooms():
    """Seeds 0..29: (layout, scene, generation seconds)."""
    out = []
    for seed in SEEDS:
        start = time.perf_counter()
        layout = layout_room(seed)
        scene = sample_layout(layout, seed)  # = generate_room(seed)
        out.append((layout, scene, time.perf_counter() - start))
    return out


def _solid_pairs(layout, reach_m: float):
    """(object a, object b, penetration depth in m) for the physical solids of different
    objects whose bounding boxes come within ``reach_m`` of each other."""
    items = [(i, p) for i, o in enumerate(layout.objects) for p in o.solids if not p.occluder]
    owner = np.array([i for i, _ in items])
    lo = np.array([p.lo for _, p in items])
    hi = np.array([p.hi for _, p in items])
    near = ((lo[:, None] < hi[None] + reach_m) & (lo[None] < hi[:, None] + reach_m)).all(axis=2)
    a, b = np.nonzero(np.triu(near, 1) & (owner[:, None] != owner[None]))
    return [(owner[x], owner[y], items[x][1].penetration(items[y][1])) for x, y in zip(a, b)]


def _points_inside_other_solids(layout, scene, shrink_m: float) -> int:
    """Number of points lying inside (shrunk by ``shrink_m``) a solid of another object."""
    order = np.argsort(scene.xyz[:, 0])
    xs = scene.xyz[order, 0]
    bad = 0
    for j, obj in enumerate(layout.objects):
        for prism in obj.solids:
            lo, hi = np.searchsorted(xs, [prism.lo[0], prism.hi[0]])
            idx = order[lo:hi]
            idx = idx[scene.instance[idx] != j]
            bad += int(prism.contains(scene.xyz[idx], -shrink_m).sum())
    return bad


def test_same_seed_same_room_and_different_seeds_differ():
    a, b, c = generate_room(5), sample_layout(layout_room(5), 5), generate_room(6)
    np.testing.assert_array_equal(a.xyz, b.xyz)
    np.testing.assert_array_equal(a.rgb, b.rgb)
    np.testing.assert_array_equal(a.semantic, b.semantic)
    np.testing.assert_array_equal(a.instance, b.instance)
    assert a.num_points != c.num_points or not np.array_equal(a.xyz, c.xyz)


def test_rooms_are_varied_and_cover_the_benchmark_classes(rooms):
    seen = set()
    for _, scene, _ in rooms:
        ids, counts = np.unique(scene.instance, return_counts=True)
        seen |= {int(scene.semantic[scene.instance == i][0]) for i in ids[counts >= 50]}
    missing = set(BENCHMARK_INSTANCE_IDS) - {28} - seen  # shower curtains are rare
    assert not missing, [NYU40_NAMES[m] for m in missing]
    assert {layout.kind for layout, _, _ in rooms} == set(ROOM_KINDS)
    assert any(len(layout.outline) == 6 for layout, _, _ in rooms)  # L-shaped rooms
    with_ceiling = [bool((scene.semantic == 22).any()) for _, scene, _ in rooms]
    assert 0 < sum(with_ceiling) < len(rooms)
    sizes = [scene.num_points for _, scene, _ in rooms]
    assert 15_000 < min(sizes) and max(sizes) < 250_000


def test_labels_and_instances_follow_the_layout(rooms):
    for layout, scene, _ in rooms:
        assert scene.has_ground_truth
        assert set(np.unique(scene.semantic)) <= set(NYU40_NAMES) - {0}
        labels = np.array([o.label for o in layout.objects])
        assert scene.instance.min() >= 0 and scene.instance.max() < len(labels)
        # Each instance carries its object's label, hence one label.
        np.testing.assert_array_equal(scene.semantic, labels[scene.instance])
        # Every straight wall segment is its own wall instance; one floor.
        assert (labels == 1).sum() == len(layout.outline)
        assert (labels == 2).sum() == 1 and (labels == 22).sum() == int(layout.has_ceiling)
        # Several instances of furniture, adjacent instances of one class included.
        assert (~np.isin(labels, list(STRUCTURE))).sum() >= 5


def test_floor_at_zero_and_points_inside_the_room(rooms):
    for layout, scene, _ in rooms:
        floor = scene.xyz[scene.semantic == 2]
        assert abs(float(np.median(floor[:, 2]))) < 0.005
        assert scene.xyz[:, 2].min() > -0.03
        assert scene.xyz[:, 2].max() < layout.height + 0.03
        # Only door and window openings (jambs, recessed glass) lie beyond the wall faces.
        lo, hi = layout.outline.min(axis=0), layout.outline.max(axis=0)
        outside = ((scene.xyz[:, :2] < lo - 0.03) | (scene.xyz[:, :2] > hi + 0.03)).any(axis=1)
        assert set(np.unique(scene.semantic[outside])) <= {1, 8, 9}
        assert (scene.xyz[:, :2] > lo - 0.25).all() and (scene.xyz[:, :2] < hi + 0.25).all()


def test_objects_touch_but_do_not_interpenetrate(rooms):
    touching_pairs = 0
    for layout, _, _ in rooms:
        labels = [o.label for o in layout.objects]
        for a, b, depth in _solid_pairs(layout, 0.02):
            if {labels[a], labels[b]} <= STRUCTURE:
                continue  # wall boxes meet at corners
            assert depth <= 0.005, (layout.kind, labels[a], labels[b], depth)
            touching_pairs += labels[a] == labels[b] and depth > -0.02
    # Same-class neighbours (chairs around a table, cabinets in a run) are common.
    assert touching_pairs > 100


@pytest.mark.parametrize("seed", [0, 3, 7, 13])
def test_no_points_inside_other_objects(seed):
    scene = generate_room(seed, noise_m=0.0)
    assert _points_inside_other_solids(layout_room(seed), scene, shrink_m=0.002) == 0


@pytest.mark.parametrize("seed", [1, 8, 9])
def test_density_like_a_scannet_mesh(seed):
    scene = generate_room(seed)
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(scene.xyz.astype(np.float64)))
    spacing = np.asarray(cloud.compute_nearest_neighbor_distance())
    assert 0.02 < float(np.median(spacing)) < 0.04


def test_generation_is_fast(rooms):
    timings = [elapsed for _, _, elapsed in rooms]
    assert max(timings) < 3.0
    assert float(np.mean(timings)) < 1.5
