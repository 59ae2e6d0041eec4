"""Pinhole depth + colour rendering of a triangle mesh, for tests and a simulated RGB-D camera.

Frames: mesh vertices are in the map frame (metres, REP-103: z up). Cameras use the optical
frame convention (z forward, x right, y down); a pose ``T_map_camera`` (4, 4) maps
camera-frame points into the map frame. Pixel ``(u, v)`` (column, row) has its centre at the
integer coordinates ``K @ (x / z, y / z, 1)``, as in ROS ``CameraInfo`` and OpenCV.

Rendering uses open3d's ``t.geometry.RaycastingScene`` (Embree, CPU).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import open3d as o3d

# Default face colours of :func:`box_room_mesh`, in its face order.
BOX_FACE_COLOURS: tuple[tuple[int, int, int], ...] = (
    (150, 120, 90),   # floor, z = 0
    (235, 235, 230),  # ceiling, z = size_z
    (200, 80, 70),    # wall x = 0
    (70, 160, 90),    # wall x = size_x
    (80, 110, 200),   # wall y = 0
    (210, 190, 60),   # wall y = size_y
)


def _check_pose(T_map_camera: np.ndarray) -> np.ndarray:
    T = np.asarray(T_map_camera, dtype=np.float64)
    if T.shape != (4, 4):
        raise ValueError(f"T_map_camera must have shape (4, 4), got {T.shape}")
    if not np.all(np.isfinite(T)):
        raise ValueError("T_map_camera contains NaN or infinite values")
    return T


def _check_intrinsics(K: np.ndarray) -> np.ndarray:
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3):
        raise ValueError(f"K must have shape (3, 3), got {K.shape}")
    if not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise ValueError("K must be finite with positive focal lengths")
    return K


class MeshRenderer:
    """A triangle mesh in the map frame, rendered from pinhole cameras.

    Building the ray-casting scene once and rendering many views from it is what a simulated
    camera does; :func:`render_rgbd` is the one-shot form.
    """

    def __init__(self, vertices: np.ndarray, triangles: np.ndarray,
                 triangle_colours: np.ndarray) -> None:
        """Args:
            vertices: (V, 3) vertex positions in metres, map frame.
            triangles: (T, 3) vertex indices per triangle.
            triangle_colours: (T, 3) uint8 RGB colour of every triangle.
        """
        vertices = np.asarray(vertices, dtype=np.float32)
        triangles = np.asarray(triangles)
        colours = np.asarray(triangle_colours)
        if vertices.ndim != 2 or vertices.shape[1] != 3 or not np.all(np.isfinite(vertices)):
            raise ValueError(f"vertices must be finite with shape (V, 3), got {vertices.shape}")
        if triangles.ndim != 2 or triangles.shape[1] != 3 or triangles.shape[0] == 0:
            raise ValueError(f"triangles must have shape (T, 3) with T > 0, got {triangles.shape}")
        if triangles.min() < 0 or triangles.max() >= vertices.shape[0]:
            raise ValueError("triangles index vertices out of range")
        if colours.shape != triangles.shape or colours.dtype != np.uint8:
            raise ValueError(f"triangle_colours must be uint8 with shape {triangles.shape}, "
                             f"got {colours.dtype} {colours.shape}")
        self._colours = colours
        self._scene = o3d.t.geometry.RaycastingScene()
        self._scene.add_triangles(o3d.core.Tensor(vertices),
                                  o3d.core.Tensor(triangles.astype(np.uint32)))

    def render(self, K: np.ndarray, T_map_camera: np.ndarray, width: int,
               height: int) -> tuple[np.ndarray, np.ndarray]:
        """Render depth and colour seen by a pinhole camera.

        Args:
            K: (3, 3) camera intrinsics in pixels.
            T_map_camera: (4, 4) camera pose (optical frame to map).
            width, height: image size in pixels.

        Returns:
            depth_m (H, W) float32 z-depth along the optical axis in metres, 0 where no
            triangle is hit; rgb (H, W, 3) uint8, black where no triangle is hit.
        """
        depth_m, primitive = self.render_ids(K, T_map_camera, width, height)
        hit = primitive >= 0
        rgb = np.zeros((height, width, 3), np.uint8)
        rgb[hit] = self._colours[primitive[hit]]
        return depth_m, rgb

    def render_ids(self, K: np.ndarray, T_map_camera: np.ndarray, width: int,
                   height: int) -> tuple[np.ndarray, np.ndarray]:
        """Depth and the index of the triangle seen at every pixel.

        Returns:
            depth_m (H, W) float32 z-depth in metres, 0 where no triangle is hit; triangle
            (H, W) int64 index into the mesh's triangles, -1 where none is hit.
        """
        K = _check_intrinsics(K)
        T = _check_pose(T_map_camera)
        if width <= 0 or height <= 0:
            raise ValueError(f"image size must be positive, got {width} x {height}")
        u, v = np.meshgrid(np.arange(width, dtype=np.float64),
                           np.arange(height, dtype=np.float64))
        # Directions with unit z in the camera frame, so the hit distance is the z-depth.
        pixels = np.stack([u, v, np.ones_like(u)], axis=-1)
        directions = pixels @ np.linalg.inv(K).T @ T[:3, :3].T
        rays = np.concatenate([np.broadcast_to(T[:3, 3], directions.shape), directions],
                              axis=-1).astype(np.float32)
        hits = self._scene.cast_rays(o3d.core.Tensor(rays))
        t_hit = hits["t_hit"].numpy()
        hit = np.isfinite(t_hit)
        depth_m = np.where(hit, t_hit, 0.0).astype(np.float32)
        primitive = np.where(hit, hits["primitive_ids"].numpy().astype(np.int64), -1)
        return depth_m, primitive


    def closest_triangles(self, xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For points (N, 3) in the map frame, metres: the index of the nearest triangle
        (N,) int64 and the distance to it (N,) float32 metres."""
        query = np.ascontiguousarray(xyz, np.float32)
        closest = self._scene.compute_closest_points(o3d.core.Tensor(query))
        distance = np.linalg.norm(closest["points"].numpy() - query, axis=1)
        return closest["primitive_ids"].numpy().astype(np.int64), distance


def render_rgbd(vertices: np.ndarray, triangles: np.ndarray, triangle_colours: np.ndarray,
                K: np.ndarray, T_map_camera: np.ndarray, width: int,
                height: int) -> tuple[np.ndarray, np.ndarray]:
    """Render one depth + colour image of a mesh; see :meth:`MeshRenderer.render`."""
    return MeshRenderer(vertices, triangles, triangle_colours).render(K, T_map_camera, width,
                                                                     height)


def box_room_mesh(size_m: tuple[float, float, float] = (4.0, 3.0, 2.5),
                  face_colours: Sequence[tuple[int, int, int]] = BOX_FACE_COLOURS,
                  divisions: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The inside of an axis-aligned box room, map frame, one corner at the origin.

    The room spans ``[0, size_x] x [0, size_y] x [0, size_z]`` metres with the floor at
    z = 0 (REP-103, z up). Each face is a ``divisions x divisions`` grid of quads, two
    triangles each, wound so that normals point into the room.

    Args:
        size_m: room extent (x, y, z) in metres.
        face_colours: six RGB colours in the order floor, ceiling, wall x = 0,
            wall x = size_x, wall y = 0, wall y = size_y.
        divisions: quads per face edge (>= 1).

    Returns:
        vertices (V, 3) float64 metres, triangles (T, 3) int32, triangle_colours (T, 3) uint8.
    """
    size = np.asarray(size_m, dtype=np.float64)
    if size.shape != (3,) or not np.all(size > 0):
        raise ValueError(f"size_m must be three positive lengths, got {size_m}")
    colours = np.asarray(face_colours)
    if colours.shape != (6, 3):
        raise ValueError(f"face_colours must be six RGB triples, got shape {colours.shape}")
    if divisions < 1:
        raise ValueError(f"divisions must be >= 1, got {divisions}")
    sx, sy, sz = size
    # Each face: origin, edge a, edge b with a x b pointing into the room.
    faces = (
        ((0, 0, 0), (sx, 0, 0), (0, sy, 0)),      # floor, normal +z
        ((0, 0, sz), (0, sy, 0), (sx, 0, 0)),     # ceiling, normal -z
        ((0, 0, 0), (0, sy, 0), (0, 0, sz)),      # x = 0, normal +x
        ((sx, 0, 0), (0, 0, sz), (0, sy, 0)),     # x = sx, normal -x
        ((0, 0, 0), (0, 0, sz), (sx, 0, 0)),      # y = 0, normal +y
        ((0, sy, 0), (sx, 0, 0), (0, 0, sz)),     # y = sy, normal -y
    )
    n = divisions
    steps = np.linspace(0.0, 1.0, n + 1)
    grid_i, grid_j = np.meshgrid(steps, steps, indexing="ij")
    i0, j0 = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    corner = (i0 * (n + 1) + j0).ravel()
    local = np.concatenate([
        np.stack([corner, corner + n + 1, corner + n + 2], axis=1),
        np.stack([corner, corner + n + 2, corner + 1], axis=1),
    ])
    vertices, triangles, triangle_colours = [], [], []
    for index, (origin, edge_a, edge_b) in enumerate(faces):
        points = (np.asarray(origin, np.float64)
                  + grid_i.reshape(-1, 1) * np.asarray(edge_a, np.float64)
                  + grid_j.reshape(-1, 1) * np.asarray(edge_b, np.float64))
        triangles.append(local + index * (n + 1) ** 2)
        vertices.append(points)
        triangle_colours.append(np.broadcast_to(colours[index], (local.shape[0], 3)))
    return (np.concatenate(vertices), np.concatenate(triangles).astype(np.int32),
            np.concatenate(triangle_colours).astype(np.uint8))


def look_at(eye: Sequence[float], target: Sequence[float],
            up: Sequence[float] = (0.0, 0.0, 1.0)) -> np.ndarray:
    """Pose of a camera at ``eye`` looking at ``target``, both in metres in the map frame.

    Returns:
        T_map_camera (4, 4) float64 for the optical frame: z towards the target, x to the
        right in the image, y down (towards ``-up``).
    """
    eye_v = np.asarray(eye, dtype=np.float64)
    forward = np.asarray(target, dtype=np.float64) - eye_v
    up_v = np.asarray(up, dtype=np.float64)
    norm = np.linalg.norm(forward)
    if norm == 0.0 or not np.isfinite(norm):
        raise ValueError("eye and target must be distinct finite points")
    z = forward / norm
    x = np.cross(z, up_v)
    if np.linalg.norm(x) < 1e-9:
        raise ValueError("viewing direction is parallel to up")
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    T = np.eye(4)
    T[:3, 0], T[:3, 1], T[:3, 2], T[:3, 3] = x, y, z, eye_v
    return T
