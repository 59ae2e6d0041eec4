"""TSDF reconstruction of a rendered box room, its block increments, and the renderer itself."""

from __future__ import annotations

import numpy as np
import open3d as o3d
import pytest

from occuseg_ros.core.rendering import (BOX_FACE_COLOURS, MeshRenderer, box_room_mesh, look_at,
                                        render_rgbd)
from occuseg_ros.core.tsdf import (TsdfConfig, TsdfReconstructor, block_coordinates,
                                    resolve_device)

ROOM_M = (4.0, 3.0, 2.5)
WIDTH, HEIGHT = 320, 240
K = np.array([[250.0, 0.0, (WIDTH - 1) / 2], [0.0, 250.0, (HEIGHT - 1) / 2], [0.0, 0.0, 1.0]])
# (axis, plane coordinate) of each face, in box_room_mesh's face order.
FACES = ((2, 0.0), (2, ROOM_M[2]), (0, 0.0), (0, ROOM_M[0]), (1, 0.0), (1, ROOM_M[1]))


def face_distances(xyz: np.ndarray) -> np.ndarray:
    """(N, 6) distance in metres of every point to each face plane of the room."""
    return np.stack([np.abs(xyz[:, axis] - value) for axis, value in FACES], axis=1)


def keys(blocks: np.ndarray) -> np.ndarray:
    """(B,) int64 keys of (B, 3) block coordinates within 500 blocks of the origin."""
    return np.ravel_multi_index(tuple((blocks + 500).T), (1000, 1000, 1000))


def trajectory(num_frames: int = 48) -> list[np.ndarray]:
    """Poses of a camera at 1.4 m turning three times inside the room, looking down at the
    floor, level, then up at the ceiling, while drifting on a small ellipse."""
    poses = []
    for k in range(num_frames):
        yaw = 2.0 * np.pi * k / 16
        target_z, ahead_m = ((0.0, 1.0), (1.4, 1.5), (2.5, 1.0))[k * 3 // num_frames]
        eye = np.array([2.0 + 0.4 * np.cos(0.7 * yaw), 1.5 + 0.3 * np.sin(0.7 * yaw), 1.4])
        target = eye + ahead_m * np.array([np.cos(yaw), np.sin(yaw), 0.0])
        target[2] = target_z
        poses.append(look_at(eye, target))
    return poses


@pytest.fixture(scope="module")
def room():
    """The room integrated from 48 noisy frames, with increments taken every third frame.

    Returns the reconstructor and the map rebuilt from increments alone, the way the
    segmentation node keeps it: block key -> that block's latest points.
    """
    renderer = MeshRenderer(*box_room_mesh(ROOM_M))
    rng = np.random.default_rng(0)
    reconstructor = TsdfReconstructor(TsdfConfig(device="cpu"))
    rebuilt: dict[tuple[int, int, int], np.ndarray] = {}
    for k, pose in enumerate(trajectory()):
        depth, rgb = renderer.render(K, pose, WIDTH, HEIGHT)
        depth = np.where(depth > 0, depth + rng.normal(0.0, 0.002, depth.shape), 0.0)
        reconstructor.integrate(depth.astype(np.float32), rgb, K, pose)
        if k % 3 == 2:
            xyz, _, blocks = reconstructor.changed_surface()
            rebuilt.update({tuple(block): np.zeros((0, 3), np.float32) for block in blocks})
            point_blocks = block_coordinates(xyz, reconstructor.config.block_size_m)
            keys, counts = np.unique(point_blocks, axis=0, return_counts=True)
            order = np.lexsort(point_blocks.T[::-1])
            for key, start, count in zip(keys, np.cumsum(counts) - counts, counts):
                rebuilt[tuple(key)] = xyz[order[start:start + count]]
    return reconstructor, rebuilt


def test_surface_lies_on_the_box(room):
    reconstructor, _ = room
    xyz, rgb = reconstructor.surface()
    assert xyz.dtype == np.float32 and rgb.dtype == np.uint8 and xyz.shape == rgb.shape
    assert xyz.shape[0] > 100_000
    nearest = face_distances(xyz).min(axis=1)
    assert nearest.max() < 0.02
    assert np.percentile(nearest, 95) < 0.006


def test_surface_covers_and_colours_every_face(room):
    reconstructor, _ = room
    xyz, rgb = reconstructor.surface()
    distances = face_distances(xyz)
    size = np.asarray(ROOM_M)
    for face, (axis, _) in enumerate(FACES):
        on_face = distances[:, face] < 0.02
        # Cover: 25 cm cells over the face, away from its edges, nearly all hold points.
        in_plane = [a for a in range(3) if a != axis]
        cells = np.floor(xyz[on_face][:, in_plane] / 0.25).astype(int)
        counts = np.zeros(np.ceil(size[in_plane] / 0.25).astype(int), int)
        np.add.at(counts, tuple(np.clip(cells, 0, np.array(counts.shape) - 1).T), 1)
        assert (counts[1:-1, 1:-1] > 0).mean() > 0.95, f"face {face} poorly covered"
        # Colour: points of this face away from the others carry its colour.
        others = np.delete(distances, face, axis=1).min(axis=1)
        median = np.median(rgb[on_face & (others > 0.1)], axis=0)
        np.testing.assert_allclose(median, BOX_FACE_COLOURS[face], atol=3)


def test_increments_rebuild_the_surface(room):
    reconstructor, rebuilt = room
    reconstructor.changed_surface()  # drain the frames after the last increment
    xyz, _ = reconstructor.surface()
    from_increments = np.concatenate([points for points in rebuilt.values()])
    assert from_increments.shape == xyz.shape
    assert set(map(tuple, from_increments.tolist())) == set(map(tuple, xyz.tolist()))


def test_changed_surface_holds_only_what_the_frame_touched():
    renderer = MeshRenderer(*box_room_mesh(ROOM_M))
    config = TsdfConfig(device="cpu")
    reconstructor = TsdfReconstructor(config)
    east = look_at((1.0, 1.5, 1.4), (4.0, 1.5, 1.4))
    reconstructor.integrate(*renderer.render(K, east, WIDTH, HEIGHT), K, east)
    xyz_east, _, blocks_east = reconstructor.changed_surface()
    assert xyz_east.shape[0] > 10_000 and blocks_east.shape[0] > 0

    west = look_at((3.0, 1.5, 1.4), (0.0, 1.5, 1.4))
    depth, rgb = renderer.render(K, west, WIDTH, HEIGHT)
    reconstructor.integrate(depth, rgb, K, west)
    xyz, colours, blocks = reconstructor.changed_surface()
    assert xyz.shape[0] > 10_000 and colours.shape == xyz.shape
    assert blocks.dtype == np.int32 and len({tuple(b) for b in blocks}) == blocks.shape[0]
    # Every point is in a returned block, and the increment is the whole surface there.
    point_blocks = block_coordinates(xyz, config.block_size_m)
    assert {tuple(b) for b in point_blocks} <= {tuple(b) for b in blocks}
    all_xyz, _ = reconstructor.surface()
    all_blocks = block_coordinates(all_xyz, config.block_size_m)
    assert np.isin(keys(all_blocks), keys(blocks)).sum() == xyz.shape[0]
    # Every returned block is the frame's doing: a block the frame touched (within the
    # truncation distance of a measured point), or a face neighbour of one, whose points
    # may end on that block's voxels.
    v, u = np.nonzero(depth[::4, ::4] > 0)
    z = depth[::4, ::4][v, u]
    camera = np.stack([(4 * u - K[0, 2]) * z / K[0, 0], (4 * v - K[1, 2]) * z / K[1, 1], z], 1)
    measured = camera @ west[:3, :3].T + west[:3, 3]
    low = (blocks - 1) * config.block_size_m
    high = (blocks + 2) * config.block_size_m
    gap = np.maximum(np.maximum(low[:, None] - measured[None], measured[None] - high[:, None]), 0)
    reach = np.linalg.norm(gap, axis=2).min(axis=1)
    assert reach.max() <= config.sdf_trunc_m + 0.05
    # Nothing near the east wall, which this frame cannot see, is re-sent.
    assert blocks[:, 0].max() * config.block_size_m < 2.0
    # Drained: the next call returns nothing.
    xyz, colours, blocks = reconstructor.changed_surface()
    assert xyz.shape == (0, 3) and colours.shape == (0, 3) and blocks.shape == (0, 3)


def test_bad_input_raises_and_changes_nothing():
    reconstructor = TsdfReconstructor(TsdfConfig(device="cpu"))
    depth = np.full((HEIGHT, WIDTH), 2.0, np.float32)
    rgb = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    pose = look_at((1.0, 1.5, 1.4), (4.0, 1.5, 1.4))
    nan_pose = pose.copy()
    nan_pose[0, 3] = np.nan
    skewed = pose.copy()
    skewed[:3, :3] *= 1.1
    cases = [
        ((depth[..., None], rgb, K, pose), "depth must have shape"),
        ((depth.astype(np.uint16), rgb, K, pose), "floating point"),
        ((depth, rgb[:-1], K, pose), "rgb must have shape"),
        ((depth, rgb.astype(np.float32), K, pose), "uint8"),
        ((depth, rgb, K[:2], pose), "K must be"),
        ((depth, rgb, K, pose[:3]), r"shape \(4, 4\)"),
        ((depth, rgb, K, nan_pose), "NaN"),
        ((depth, rgb, K, skewed), "rigid"),
    ]
    for args, reason in cases:
        with pytest.raises(ValueError, match=reason):
            reconstructor.integrate(*args)
    assert reconstructor.num_blocks == 0
    # Pixels without a measurement (NaN, 0, beyond range) are skipped, not errors.
    no_return = np.full((HEIGHT, WIDTH), np.nan, np.float32)
    no_return[0, :10] = 0.0
    no_return[1, :10] = 9.0
    reconstructor.integrate(no_return, rgb, K, pose)
    assert reconstructor.num_blocks == 0
    assert reconstructor.changed_surface()[2].shape == (0, 3)
    with pytest.raises(ValueError, match="device"):
        TsdfConfig(device="tpu")
    with pytest.raises(ValueError, match="sdf_trunc_m"):
        TsdfConfig(sdf_trunc_m=0.01)


def test_reset_forgets_everything():
    reconstructor = TsdfReconstructor(TsdfConfig(device="cpu"))
    pose = look_at((1.0, 1.5, 1.4), (4.0, 1.5, 1.4))
    vertices, triangles, colours = box_room_mesh(ROOM_M)
    reconstructor.integrate(*render_rgbd(vertices, triangles, colours, K, pose, WIDTH, HEIGHT),
                            K, pose)
    assert reconstructor.num_blocks > 0
    reconstructor.reset()
    assert reconstructor.num_blocks == 0
    assert reconstructor.surface()[0].shape == (0, 3)
    assert reconstructor.changed_surface()[2].shape == (0, 3)


def test_render_depth_is_z_depth_to_the_wall():
    vertices, triangles, colours = box_room_mesh(ROOM_M)
    # 3 m in front of the x = 4 wall, looking straight at it: every pixel on that wall has
    # z-depth 3 m (not the longer ray length).
    pose = look_at((1.0, 1.5, 1.4), (4.0, 1.5, 1.4))
    depth, rgb = render_rgbd(vertices, triangles, colours, K, pose, WIDTH, HEIGHT)
    assert depth.shape == (HEIGHT, WIDTH) and depth.dtype == np.float32
    assert rgb.shape == (HEIGHT, WIDTH, 3) and rgb.dtype == np.uint8
    assert abs(depth[HEIGHT // 2, WIDTH // 2] - 3.0) < 0.001
    on_wall = (rgb == BOX_FACE_COLOURS[3]).all(axis=2)
    assert on_wall.mean() > 0.5
    np.testing.assert_allclose(depth[on_wall], 3.0, atol=0.001)
    # A pixel's colour is the face it sees: top rows the ceiling, bottom rows the floor.
    assert tuple(rgb[0, WIDTH // 2]) == BOX_FACE_COLOURS[1]
    assert tuple(rgb[-1, WIDTH // 2]) == BOX_FACE_COLOURS[0]
    # A wall at a known distance along a tilted view: floor seen 1.4 m below, straight down.
    down = look_at((2.0, 1.5, 1.4), (2.0, 1.5, 0.0), up=(1.0, 0.0, 0.0))
    depth, _ = render_rgbd(vertices, triangles, colours, K, down, WIDTH, HEIGHT)
    assert abs(depth[HEIGHT // 2, WIDTH // 2] - 1.4) < 0.001
    # Outside the room, looking away: no hits.
    away = look_at((-1.0, 1.5, 1.4), (-4.0, 1.5, 1.4))
    depth, rgb = render_rgbd(vertices, triangles, colours, K, away, WIDTH, HEIGHT)
    assert not depth.any() and not rgb.any()


def test_look_at_uses_the_optical_frame():
    pose = look_at((1.0, 2.0, 1.4), (4.0, 2.0, 1.4))
    np.testing.assert_allclose(pose[:3, 3], [1.0, 2.0, 1.4])
    np.testing.assert_allclose(pose[:3, 2], [1.0, 0.0, 0.0], atol=1e-12)  # z forward
    np.testing.assert_allclose(pose[:3, 0], [0.0, -1.0, 0.0], atol=1e-12)  # x right
    np.testing.assert_allclose(pose[:3, 1], [0.0, 0.0, -1.0], atol=1e-12)  # y down
    with pytest.raises(ValueError, match="parallel"):
        look_at((0.0, 0.0, 0.0), (0.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="distinct"):
        look_at((1.0, 1.0, 1.0), (1.0, 1.0, 1.0))


def test_box_room_mesh_faces_inwards():
    vertices, triangles, colours = box_room_mesh(ROOM_M, divisions=3)
    assert triangles.shape == (6 * 2 * 9, 3) and colours.shape == triangles.shape
    np.testing.assert_allclose(vertices.min(axis=0), 0.0)
    np.testing.assert_allclose(vertices.max(axis=0), ROOM_M)
    corners = vertices[triangles]
    normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    to_centre = np.asarray(ROOM_M) / 2 - corners.mean(axis=1)
    assert (np.einsum("ij,ij->i", normals, to_centre) > 0).all()
    with pytest.raises(ValueError):
        MeshRenderer(vertices, triangles + 1000, colours)


def test_device_auto_falls_back_to_the_cpu_and_cuda_needs_one():
    cuda = o3d.core.cuda.is_available()
    assert resolve_device("cpu") == o3d.core.Device("CPU:0")
    assert resolve_device("auto") == o3d.core.Device("CUDA:0" if cuda else "CPU:0")
    if cuda:
        assert resolve_device("cuda") == o3d.core.Device("CUDA:0")
    else:
        with pytest.raises(ValueError, match="cuda.*is_available.*'auto' or 'cpu'"):
            resolve_device("cuda")
        with pytest.raises(ValueError, match="is_available"):
            TsdfReconstructor(TsdfConfig(device="cuda"))
    with pytest.raises(ValueError, match="device"):
        resolve_device("gpu")
    # auto integrates and extracts on whatever it picked, results as numpy on the host.
    reconstructor = TsdfReconstructor(TsdfConfig(device="auto"))
    assert reconstructor.device == resolve_device("auto")
    pose = look_at((1.0, 1.5, 1.4), (4.0, 1.5, 1.4))
    vertices, triangles, colours = box_room_mesh(ROOM_M)
    reconstructor.integrate(*render_rgbd(vertices, triangles, colours, K, pose, WIDTH, HEIGHT),
                            K, pose)
    xyz, rgb, blocks = reconstructor.changed_surface()
    assert isinstance(xyz, np.ndarray) and xyz.shape[0] > 10_000 and rgb.dtype == np.uint8
    assert np.abs(xyz[:, 0] - ROOM_M[0]).min() < 0.02 and blocks.shape[0] > 0


def test_changed_blocks_stay_bounded_when_nobody_drains_them():
    """Integrating without ever calling changed_surface (an offline bag replay) keeps one
    entry per changed block, not one array per frame."""
    reconstructor = TsdfReconstructor(TsdfConfig(device="cpu"))
    pose = look_at((1.0, 1.5, 1.4), (4.0, 1.5, 1.4))
    vertices, triangles, colours = box_room_mesh(ROOM_M)
    frame = render_rgbd(vertices, triangles, colours, K, pose, WIDTH, HEIGHT)
    reconstructor.integrate(*frame, K, pose)
    once = reconstructor._changed.size
    for _ in range(5):
        reconstructor.integrate(*frame, K, pose)
    assert reconstructor._changed.size == once <= reconstructor.num_blocks
    xyz, _, blocks = reconstructor.changed_surface()
    assert xyz.shape[0] > 10_000 and blocks.shape[0] >= once
