"""The simulated RGB-D camera, its ground truth, and the picture of a segmented room."""

from __future__ import annotations

import numpy as np
import open3d as o3d
import pytest

from occuseg_ros.core.picture import _draw_text, room_picture, write_png
from occuseg_ros.core.sim_camera import SimulatedRgbdCamera, camera_loop, room_mesh
from occuseg_ros.core.synthetic import layout_room


@pytest.fixture(scope="module")
def camera() -> SimulatedRgbdCamera:
    return SimulatedRgbdCamera(7, width=160, height=120, loop_s=4.0, rate_hz=10.0)


def test_room_mesh_covers_every_object_with_its_labels():
    layout = layout_room(3)
    mesh = room_mesh(layout)
    assert mesh.triangles.shape[1] == 3 and mesh.triangles.max() < len(mesh.vertices)
    assert set(np.unique(mesh.instance)) == set(range(len(layout.objects)))
    for index, obj in enumerate(layout.objects):
        assert np.all(mesh.semantic[mesh.instance == index] == obj.label)
    # Triangles are non-degenerate and their normals are unit length.
    v = mesh.vertices[mesh.triangles]
    area = np.linalg.norm(np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0]), axis=1) / 2
    assert area.min() > 0
    np.testing.assert_allclose(np.linalg.norm(mesh.normals, axis=1), 1.0, atol=1e-5)


def test_camera_loop_stays_in_free_space_and_closes_smoothly():
    layout = layout_room(3)
    poses = camera_loop(layout, 200)
    eyes = poses[:, :3, 3]
    solids = [p for o in layout.objects if o.label not in (1, 2, 22) for p in o.solids
              if not p.occluder]
    assert not any(p.contains(eyes).any() for p in solids)
    steps = np.linalg.norm(np.diff(np.vstack([eyes, eyes[:1]]), axis=0), axis=1)
    assert steps.max() < 3 * np.median(steps)  # no jumps, including the wrap-around
    # Rotations are proper and the optical axis points down a little, across the room.
    for T in poses[::20]:
        np.testing.assert_allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3), atol=1e-9)
        assert np.linalg.det(T[:3, :3]) == pytest.approx(1.0)
        assert T[2, 2] < 0  # camera z (forward) has a downward map component


def test_frames_look_like_a_depth_camera(camera):
    frame = camera.frame(5)
    assert frame.depth_mm.dtype == np.uint16 and frame.depth_mm.shape == (120, 160)
    assert frame.rgb.shape == (120, 160, 3) and frame.time_s == pytest.approx(0.5)
    clean, triangle = camera._renderer.render_ids(camera.K, frame.T_map_camera, 160, 120)
    measured = frame.depth_mm > 0
    assert 0.6 < measured.mean() <= (clean > 0).mean()
    error = frame.depth_mm[measured] / 1000.0 - clean[measured]
    # Axial noise of Nguyen et al.'s Kinect model (1.2 mm + 1.9 mm/m^2 (z - 0.4)^2), unbiased;
    # depth edges (where a neighbour pixel may be seen through) left out.
    sigma = 0.0012 + 0.0019 * np.maximum(clean[measured] - 0.4, 0) ** 2
    z = error / sigma
    z = z[np.abs(z) < 6]
    assert abs(np.median(z)) < 0.1 and 0.8 < z.std() < 1.2
    assert (frame.depth_mm[measured] / 1000.0).max() <= camera.depth_max_m + 0.01
    # Colour comes from the triangle seen.
    assert np.abs(frame.rgb[triangle >= 0].astype(int).mean() - 128) < 100


def test_ground_truth_labels_reconstructed_points(camera):
    truth = camera.ground_truth()
    semantic, instance = camera.label_points(truth.xyz)
    assert (semantic == truth.semantic).mean() > 0.97
    assert (instance == truth.instance).mean() > 0.95
    far = truth.xyz + np.array([0.0, 0.0, 50.0], np.float32)
    s, i = camera.label_points(far[:10])
    assert np.all(s == 0) and np.all(i == -1)


def test_room_picture_colours_instances_and_writes_a_legend(tmp_path):
    rng = np.random.default_rng(0)
    xyz = rng.uniform(0, 4, (5000, 3)).astype(np.float32)
    xyz[:, 2] *= 0.5
    instance = np.where(xyz[:, 0] < 1.0, 3, 0).astype(np.uint32)
    image = room_picture(xyz, np.full((5000, 3), 200, np.uint8), instance, np.array([3]),
                         np.array([5]), size_px=(320, 240))
    assert image.shape == (240, 320 + 300, 3)
    view, legend = image[:, :320], image[:, 320:]
    from occuseg_ros.core.labels import instance_colours
    colour = instance_colours([3])[0]
    assert np.all(view == colour, axis=-1).sum() > 500
    assert np.all(legend == colour, axis=-1).sum() == 14 * 14  # the legend's square
    text = np.zeros((30, 200, 3), np.uint8)
    _draw_text(text, "chair #3", 2, 2, 16, (255, 255, 255))
    assert 100 < (text[..., 0] == 255).sum() < 2000
    write_png(tmp_path / "p.png", image)
    back = np.asarray(o3d.io.read_image(str(tmp_path / "p.png")))
    np.testing.assert_array_equal(back, image)
