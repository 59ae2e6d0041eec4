"""SurfaceMap (snapshots, block increments, TSDF voxel increments) and InstanceTracker."""

from __future__ import annotations

import numpy as np
import pytest

from occuseg_ros.core.surface_map import SurfaceMap, cells_from_keys, grid_keys, insert_sorted
from occuseg_ros.core.tracking import InstanceTracker, match_ids


def random_surface(n: int = 5000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    xyz = rng.uniform(-2.0, 3.0, (n, 3)).astype(np.float32)
    rgb = rng.integers(0, 256, (n, 3), dtype=np.uint8)
    return xyz, rgb


def test_grid_keys_round_trip_and_range():
    cells = np.array([[0, 0, 0], [-1, 5, -7], [2**20 - 1, -(2**20), 3]])
    keys = grid_keys((cells + 0.5) * 0.16, 0.16)
    np.testing.assert_array_equal(cells_from_keys(keys), cells)
    with pytest.raises(ValueError, match="beyond"):
        grid_keys(np.array([[2.0**21 * 0.16, 0, 0]]), 0.16)


def test_increments_in_any_order_equal_the_snapshot():
    xyz, rgb = random_surface()
    snapshot = SurfaceMap(0.16)
    snapshot.replace_all(xyz, rgb)
    blocks = grid_keys(xyz, 0.16)
    unique = np.unique(blocks)
    rng = np.random.default_rng(1)
    incremental = SurfaceMap(0.16)
    for chunk in np.array_split(rng.permutation(unique), 7):
        mine = np.isin(blocks, chunk)
        incremental.replace_blocks(xyz[mine], rgb[mine])
    for a, b in zip(snapshot.points(), incremental.points()):
        np.testing.assert_array_equal(a, b)
    assert incremental.num_points == xyz.shape[0] == snapshot.num_points
    assert incremental.num_blocks == unique.size


def test_an_increment_replaces_whole_blocks_only():
    xyz, rgb = random_surface()
    m = SurfaceMap(0.16)
    m.replace_all(xyz, rgb)
    version = m.version
    target = grid_keys(xyz[:1], 0.16)[0]
    in_block = grid_keys(xyz, 0.16) == target
    new_xyz = np.repeat(xyz[:1], 3, axis=0)
    new_rgb = np.zeros((3, 3), np.uint8)
    assert m.replace_blocks(new_xyz, new_rgb) == 1
    assert m.version == version + 1
    assert m.num_points == xyz.shape[0] - in_block.sum() + 3
    got_xyz, got_rgb = m.points()
    assert (grid_keys(got_xyz, 0.16) == target).sum() == 3
    # Every other point is untouched.
    others = {tuple(p) for p in xyz[~in_block].tolist()}
    assert others <= {tuple(p) for p in got_xyz.tolist()}


def test_tsdf_voxel_updates_replace_and_remove_voxels():
    m = SurfaceMap(0.16, voxel_size_m=0.02)
    centres = (np.stack(np.meshgrid(np.arange(10), np.arange(10), [0], indexing="ij"),
                        -1).reshape(-1, 3) + 0.5) * 0.02
    rgb = np.full(centres.shape, 100, np.uint8)
    m.update_voxels(centres, rgb, np.ones(100, bool))
    assert m.num_points == 100
    keep = np.arange(100) % 2 == 0
    m.update_voxels(centres, np.full(centres.shape, 200, np.uint8), keep)
    assert m.num_points == 50
    xyz, colours = m.points()
    assert np.all(colours == 200)
    assert {tuple(p) for p in xyz.tolist()} == {tuple(p) for p in centres[keep].astype(
        np.float32).tolist()}


def test_the_map_refuses_bad_updates_and_stays_intact():
    xyz, rgb = random_surface(1000)
    m = SurfaceMap(0.16, max_points=1500)
    m.replace_all(xyz, rgb)
    before = [a.copy() for a in m.points()]
    bad_xyz = xyz.copy()
    bad_xyz[0, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        m.replace_blocks(bad_xyz, rgb)
    with pytest.raises(ValueError, match="max_points"):
        m.replace_all(*random_surface(2000))
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        m.replace_blocks(xyz, rgb[:10])
    for a, b in zip(before, m.points()):
        np.testing.assert_array_equal(a, b)


def _reference_match_ids(now, before, weight, new_size, min_overlap, next_id):
    """The matching rule written plainly: every (new, previous) pair with its overlap, taken
    largest first (ties by new index, then previous id), one to one, above the threshold."""
    old_size, overlap = {}, {}
    for n, b, w in zip(now.tolist(), before.tolist(), weight.tolist()):
        if b > 0:
            old_size[b] = old_size.get(b, 0) + w
            if n >= 0:
                overlap[(n, b)] = overlap.get((n, b), 0) + w
    ids = [0] * len(new_size)
    taken = set()
    for (n, b), count in sorted(overlap.items(), key=lambda kv: (-kv[1], kv[0])):
        if ids[n] or b in taken:
            continue
        if count >= min_overlap * min(int(new_size[n]), old_size[b]):
            ids[n] = b
            taken.add(b)
    for n in range(len(ids)):
        if not ids[n]:
            ids[n], next_id = next_id, next_id + 1
    return ids, next_id


def test_match_ids_is_the_plain_rule():
    rng = np.random.default_rng(5)
    for trial in range(300):
        entries, instances = int(rng.integers(0, 60)), int(rng.integers(0, 8))
        now = rng.integers(-1, max(instances, 1), entries) if instances else \
            np.full(entries, -1)
        before = rng.integers(0, 6, entries) * (rng.random(entries) < 0.8)
        weight = rng.integers(1, 4, entries)
        new_size = np.bincount(now[now >= 0], weight[now >= 0], instances).astype(np.int64) + \
            rng.integers(0, 3, instances)
        min_overlap = float(rng.choice([0.2, 0.5, 1.0]))
        ids, next_id = match_ids(now, before, weight, new_size, min_overlap, 10)
        expected, expected_next = _reference_match_ids(now, before, weight, new_size,
                                                       min_overlap, 10)
        assert ids.dtype == np.uint32 and ids.tolist() == expected, trial
        assert next_id == expected_next


def test_tracker_keeps_ids_while_instances_grow_and_gives_new_ones():
    tracker = InstanceTracker(0.5)
    keys = np.arange(100, dtype=np.int64)
    inst = np.repeat([0, 1, -1, 2], 25)
    first = tracker.assign(keys, inst, 3)
    np.testing.assert_array_equal(first, [1, 2, 3])
    # The map grows; instance order changes; instance 0 (was id 2) grew, a new one appears,
    # the old id 3 disappears (its voxels became background).
    keys2 = np.arange(160, dtype=np.int64)
    inst2 = np.full(160, -1)
    inst2[25:50] = 0          # old id 2
    inst2[100:130] = 0        # grew
    inst2[0:25] = 1           # old id 1
    inst2[130:160] = 2        # new
    second = tracker.assign(keys2, inst2, 3)
    np.testing.assert_array_equal(second, [2, 1, 4])
    # Ids are never reused after an instance vanishes.
    third = tracker.assign(keys2, np.where(inst2 == 2, 0, -1), 1)
    np.testing.assert_array_equal(third, [4])
    fourth = tracker.assign(keys2, np.where(inst2 == 1, 0, -1), 1)
    np.testing.assert_array_equal(fourth, [5])


def test_tracker_splits_and_merges_keep_one_id():
    tracker = InstanceTracker(0.5)
    keys = np.arange(100, dtype=np.int64)
    tracker.assign(keys, np.zeros(100, np.int64), 1)  # one instance, id 1
    split = np.where(np.arange(100) < 70, 0, 1)
    ids = tracker.assign(keys, split, 2)
    np.testing.assert_array_equal(ids, [1, 2])  # the larger part keeps the id
    merged = tracker.assign(keys, np.zeros(100, np.int64), 1)
    np.testing.assert_array_equal(merged, [1])


def test_tracker_ignores_small_overlaps_and_checks_input():
    tracker = InstanceTracker(0.5)
    keys = np.arange(100, dtype=np.int64)
    tracker.assign(keys, np.where(keys < 50, 0, -1), 1)  # id 1 on voxels 0-49
    ids = tracker.assign(keys, np.where(keys >= 40, 0, -1), 1)  # overlaps 10 of 50 / 60
    np.testing.assert_array_equal(ids, [2])
    with pytest.raises(ValueError, match="range"):
        tracker.assign(keys, np.full(100, 3), 2)
    with pytest.raises(ValueError, match="min_overlap"):
        InstanceTracker(0.0)


def test_map_segmentation_scores_its_persistent_ids():
    from occuseg_ros.core.evaluation import evaluate_scenes
    from occuseg_ros.core.segmenter import InstanceTable, MapSegmentation

    rng = np.random.default_rng(0)
    n = 3000
    truth = np.repeat([0, 1, 2], n // 3).astype(np.int32)
    semantic = np.full(n, 5, np.int32)  # chairs
    ids = np.array([4, 9, 17], np.uint32)  # persistent ids, rows ordered by id
    instance = ids[truth].copy()
    instance[rng.random(n) < 0.1] = 0  # some points in no instance
    zeros = np.zeros((3, 3), np.float32)
    table = InstanceTable(ids, np.full(3, 5, np.int32), np.array([0.9, 0.5, 0.7], np.float32),
                          np.full(3, 100), zeros, zeros, zeros)
    seg = MapSegmentation(np.zeros((n, 3), np.float32), np.zeros((n, 3), np.uint8), semantic,
                          instance, np.zeros(n, np.float32), table, n, {})
    rows = np.where(instance > 0, np.searchsorted(ids, instance), -1)
    expected = evaluate_scenes([(semantic, truth, rows, table.labels, table.scores)])
    got = seg.evaluate(semantic, truth)
    assert (got.ap, got.ap50, got.ap25) == (expected.ap, expected.ap50, expected.ap25)
    assert got.ap50 == pytest.approx(1.0)


def test_insert_sorted_is_numpys_union():
    rng = np.random.default_rng(1)
    keys = np.zeros(0, np.int64)
    for _ in range(200):
        new = rng.integers(-50, 50, int(rng.integers(0, 6))).astype(np.int64)  # repeats too
        reference = np.union1d(keys, new)
        keys = insert_sorted(keys, new)
        assert keys.dtype == np.int64
        np.testing.assert_array_equal(keys, reference)


def test_block_concatenation_splices_like_a_full_concatenation():
    """Random block replacements and removals: the spliced arrays always equal the blocks'
    arrays concatenated in key order (the numpy reference)."""
    from occuseg_ros.core.surface_map import BlockConcatenation

    rng = np.random.default_rng(0)
    listing = BlockConcatenation((np.zeros((0, 3), np.float32), np.zeros(0, np.int32)))
    blocks: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for _ in range(300):
        changed = {}
        for _ in range(int(rng.integers(1, 6))):
            key = int(rng.integers(-20, 20))
            if rng.random() < 0.3:
                changed[key] = None
                blocks.pop(key, None)
            else:
                n = int(rng.integers(0, 5))
                changed[key] = blocks[key] = (rng.random((n, 3)).astype(np.float32),
                                              rng.integers(0, 100, n).astype(np.int32))
        listing.update(changed)
        keys = sorted(blocks)
        assert listing.keys.tolist() == keys
        for part in range(2):
            reference = (np.concatenate([blocks[k][part] for k in keys]) if keys
                         else listing.templates[part])
            np.testing.assert_array_equal(listing.arrays[part], reference)


def test_take_changes_lists_each_changed_block_once():
    m = SurfaceMap(0.16, 0.02)
    xyz = np.array([[0.01, 0.01, 0.01], [0.5, 0.5, 0.5]], np.float32)
    rgb = np.zeros((2, 3), np.uint8)
    m.replace_all(xyz, rgb)
    first = m.take_changes()
    assert len(first) == 2 and all(v is not None for v in first.values())
    assert m.take_changes() == {}
    m.replace_blocks(xyz[:1] + 0.001, rgb[:1])
    m.replace_all(xyz[1:], rgb[1:])  # the first block is gone
    changes = m.take_changes()
    assert len(changes) == 2
    assert sum(v is None for v in changes.values()) == 1
