"""The procedural room generator: determinism, labels, geometry."""

import numpy as np

from occuseg_ros.core.labels import NYU40_NAMES
from occuseg_ros.core.synthetic import generate_room


def test_same_seed_same_room_and_different_seeds_differ():
    a, b, c = generate_room(5), generate_room(5), generate_room(6)
    np.testing.assert_array_equal(a.xyz, b.xyz)
    np.testing.assert_array_equal(a.instance, b.instance)
    assert a.num_points != c.num_points or not np.array_equal(a.xyz, c.xyz)


def test_room_is_furnished_with_labelled_instances():
    scene = generate_room(2)
    assert scene.has_ground_truth
    assert set(np.unique(scene.semantic)) <= set(NYU40_NAMES)
    labels = {int(scene.semantic[scene.instance == i][0]) for i in np.unique(scene.instance)}
    assert {1, 2, 8} <= labels  # wall, floor, door
    assert len(labels - {1, 2, 8, 9, 11}) >= 2  # at least two kinds of furniture
    # Each instance carries one label.
    for i in np.unique(scene.instance):
        assert np.unique(scene.semantic[scene.instance == i]).size == 1
    # Floor at z = 0, nothing below it, points on a ~3 cm lattice (median spacing).
    assert scene.xyz[:, 2].min() > -0.03
    floor = scene.xyz[scene.semantic == 2]
    assert abs(float(np.median(floor[:, 2]))) < 0.02
