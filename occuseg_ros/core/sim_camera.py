"""A simulated RGB-D camera moving through a generated furnished room, with ground truth.

The room is the one of :func:`occuseg_ros.core.synthetic.layout_room` for a seed, turned
into a triangle mesh that keeps, per triangle, the nyu40 class and the instance of its
object. The camera flies a smooth closed loop inside the free floor space at about eye
height, always looking across the room through its centre, so over one loop every wall and
the furniture in front of it are seen from the opposite side. Frames are ray-cast
(:class:`occuseg_ros.core.rendering.MeshRenderer`) and degraded like a consumer depth camera:
axial noise growing with the square of the distance (the Kinect model of Nguyen et al.,
3DIMPVT 2012), dropped pixels at random and along depth discontinuities, nothing beyond
``depth_max_m``, millimetre quantisation; colour gets Lambertian shading and sensor noise.

Frames: map frame z up (REP-103/105); camera poses ``T_map_camera`` of the optical frame
(z forward, x right, y down). Times in seconds from the start of the run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .rendering import MeshRenderer, look_at
from .scene import Scene
from .synthetic import RoomLayout, layout_room, sample_layout

#: Triangle-table columns of the synthetic face rows (see synthetic._prism_faces).
_ORIGIN, _EDGE_A, _EDGE_B, _NORMAL, _COLOUR, _TRIANGLE = (slice(0, 3), slice(3, 6),
                                                          slice(6, 9), slice(9, 12),
                                                          slice(12, 15), 15)


@dataclass
class RoomMesh:
    """A room as triangles with their ground truth.

    Attributes:
        vertices: (V, 3) float32 metres, map frame.
        triangles: (T, 3) int32 vertex indices.
        colours: (T, 3) uint8 albedo per triangle.
        normals: (T, 3) float32 unit normals (pointing out of the surface's visible side).
        semantic: (T,) int32 nyu40 class per triangle.
        instance: (T,) int32 instance (object index) per triangle.
    """

    vertices: np.ndarray
    triangles: np.ndarray
    colours: np.ndarray
    normals: np.ndarray
    semantic: np.ndarray
    instance: np.ndarray


def room_mesh(layout: RoomLayout) -> RoomMesh:
    """Triangles of every face of every object of a generated room (holes not punched)."""
    faces, semantic, instance = [], [], []
    for index, obj in enumerate(layout.objects):
        faces.append(obj.faces)
        semantic.append(np.full(len(obj.faces), obj.label, np.int32))
        instance.append(np.full(len(obj.faces), index, np.int32))
    f = np.concatenate(faces)
    semantic, instance = np.concatenate(semantic), np.concatenate(instance)
    o, a, b = f[:, _ORIGIN], f[:, _EDGE_A], f[:, _EDGE_B]
    tri = f[:, _TRIANGLE] > 0.5
    # A parallelogram o, o+a, o+a+b, o+b is two triangles; a triangle face is o, o+a, o+b.
    first = np.stack([o, o + a, np.where(tri[:, None], o + b, o + a + b)], axis=1)
    second = np.stack([o, o + a + b, o + b], axis=1)[~tri]
    corners = np.concatenate([first, second])
    owner = np.concatenate([np.arange(len(f)), np.flatnonzero(~tri)])
    return RoomMesh(
        vertices=corners.reshape(-1, 3).astype(np.float32),
        triangles=np.arange(corners.shape[0] * 3, dtype=np.int32).reshape(-1, 3),
        colours=np.clip(f[owner, _COLOUR], 0, 255).astype(np.uint8),
        normals=f[owner, _NORMAL].astype(np.float32),
        semantic=semantic[owner], instance=instance[owner])


def camera_loop(layout: RoomLayout, num_frames: int, eye_height_m: float = 1.45,
                clearance_m: float = 0.35) -> np.ndarray:
    """(num_frames, 4, 4) poses ``T_map_camera`` on a smooth closed loop through the room.

    The loop is an ellipse about the centre of the floor outline, as large as fits inside
    the outline and outside every piece of furniture (with ``clearance_m``), at most 0.35 of
    the room's extent; it wobbles gently in height. The camera looks across the room at the
    point opposite it, 0.6 m above the floor.
    """
    if num_frames < 2:
        raise ValueError(f"num_frames must be at least 2, got {num_frames}")
    outline = layout.outline
    centre = _polygon_centroid(outline)
    extent = outline.max(axis=0) - outline.min(axis=0)
    solids = [p for obj in layout.objects if obj.label not in (1, 2, 22)
              for p in obj.solids if not p.occluder]
    theta = np.linspace(0.0, 2.0 * np.pi, num_frames, endpoint=False)
    ring = np.stack([np.cos(theta), np.sin(theta)], axis=1)
    for scale in np.linspace(0.35, 0.05, 13):
        xy = centre + ring * extent * scale
        xyz = np.column_stack([xy, np.full(len(xy), eye_height_m)])
        blocked = any(p.contains(xyz, clearance_m).any() for p in solids)
        if not blocked and _inside(outline, xy, clearance_m).all():
            break
    height = eye_height_m + 0.15 * np.sin(2.0 * theta)
    poses = np.empty((num_frames, 4, 4))
    for k in range(num_frames):
        eye = np.array([*xy[k], height[k]])
        opposite = centre - (xy[k] - centre) * 2.5
        poses[k] = look_at(eye, np.array([*opposite, 0.6]))
    return poses


def _polygon_centroid(poly: np.ndarray) -> np.ndarray:
    x, y = poly[:, 0], poly[:, 1]
    cross = x * np.roll(y, -1) - np.roll(x, -1) * y
    area = cross.sum() / 2.0
    return np.array([((x + np.roll(x, -1)) * cross).sum(),
                     ((y + np.roll(y, -1)) * cross).sum()]) / (6.0 * area)


def _inside(poly: np.ndarray, xy: np.ndarray, margin_m: float) -> np.ndarray:
    """Points inside a simple polygon and at least ``margin_m`` from its edges."""
    inside = np.zeros(len(xy), bool)
    a, b = poly, np.roll(poly, -1, axis=0)
    for (x0, y0), (x1, y1) in zip(a, b):
        crosses = (y0 > xy[:, 1]) != (y1 > xy[:, 1])
        x_at = x0 + (xy[:, 1] - y0) * (x1 - x0) / np.where(y1 == y0, 1e-12, y1 - y0)
        inside ^= crosses & (xy[:, 0] < x_at)
    edge = b - a
    t = np.clip(((xy[:, None, :] - a) * edge).sum(-1) / (edge * edge).sum(-1), 0.0, 1.0)
    distance = np.linalg.norm(xy[:, None, :] - (a + t[..., None] * edge), axis=-1).min(axis=1)
    return inside & (distance >= margin_m)


@dataclass
class RgbdFrame:
    """One simulated frame.

    Attributes:
        time_s: seconds from the start.
        depth_mm: (H, W) uint16 z-depth in millimetres, 0 = no measurement (16UC1).
        rgb: (H, W, 3) uint8.
        T_map_camera: (4, 4) float64 pose of the optical frame.
    """

    time_s: float
    depth_mm: np.ndarray
    rgb: np.ndarray
    T_map_camera: np.ndarray


class SimulatedRgbdCamera:
    """A consumer RGB-D camera (640x480 at 30 Hz by default) flying through room ``seed``.

    Args:
        seed: the generated room (:func:`layout_room`).
        width, height: image size in pixels; the focal length scales with the width
            (525 px at 640, a Kinect/RealSense-like 63 degree horizontal field of view).
        rate_hz: frames per second.
        loop_s: seconds for one loop of the trajectory.
        depth_max_m: no measurement beyond this range.
        dropout: share of pixels lost at random.
        noise_seed: seed of the sensor noise.
    """

    def __init__(self, seed: int, width: int = 640, height: int = 480, rate_hz: float = 30.0,
                 loop_s: float = 40.0, depth_max_m: float = 4.5, dropout: float = 0.02,
                 noise_seed: int = 0) -> None:
        if width < 16 or height < 16 or not rate_hz > 0 or not loop_s > 0:
            raise ValueError("need width, height >= 16 and positive rate_hz and loop_s")
        self.seed = seed
        self.layout = layout_room(seed)
        self.mesh = room_mesh(self.layout)
        self.width, self.height, self.rate_hz = int(width), int(height), float(rate_hz)
        self.loop_s, self.depth_max_m, self.dropout = float(loop_s), float(depth_max_m), dropout
        f = 525.0 * width / 640.0
        self.K = np.array([[f, 0.0, (width - 1) / 2.0], [0.0, f, (height - 1) / 2.0],
                           [0.0, 0.0, 1.0]])
        self._renderer = MeshRenderer(self.mesh.vertices, self.mesh.triangles,
                                      self.mesh.colours)
        self._poses = camera_loop(self.layout, max(int(round(loop_s * rate_hz)), 2))
        self._rng = np.random.default_rng([seed, noise_seed, 7])
        light = np.array([0.3, 0.2, 0.93])
        shade = 0.55 + 0.45 * np.abs(self.mesh.normals @ (light / np.linalg.norm(light)))
        self._shaded = np.clip(self.mesh.colours * shade[:, None], 0, 255).astype(np.uint8)

    @property
    def frames_per_loop(self) -> int:
        return len(self._poses)

    def pose_at(self, index: int) -> np.ndarray:
        """T_map_camera of frame ``index`` (the loop repeats)."""
        return self._poses[index % len(self._poses)]

    def frame(self, index: int) -> RgbdFrame:
        """Render frame ``index`` (at ``index / rate_hz`` seconds) with sensor effects."""
        T = self.pose_at(index)
        depth, primitive = self._renderer.render_ids(self.K, T, self.width, self.height)
        hit = primitive >= 0
        rgb = np.zeros((self.height, self.width, 3), np.uint8)
        rgb[hit] = self._shaded[primitive[hit]]
        rng = self._rng
        noisy = rgb.astype(np.int16) + rng.normal(0.0, 3.0, rgb.shape).astype(np.int16)
        rgb = np.clip(noisy, 0, 255).astype(np.uint8)
        sigma = 0.0012 + 0.0019 * np.square(np.maximum(depth - 0.4, 0.0))
        depth = depth + rng.standard_normal(depth.shape).astype(np.float32) * sigma
        lost = ~hit | (depth > self.depth_max_m) | (rng.random(depth.shape) < self.dropout)
        # Flying pixels at depth edges: a structured-light sensor drops about half of them.
        jump = np.zeros_like(hit)
        jump[:, 1:] |= np.abs(np.diff(depth, axis=1)) > 0.05
        jump[1:, :] |= np.abs(np.diff(depth, axis=0)) > 0.05
        lost |= jump & (rng.random(depth.shape) < 0.5)
        depth_mm = np.where(lost, 0, np.round(depth * 1000.0)).astype(np.uint16)
        return RgbdFrame(index / self.rate_hz, depth_mm, rgb, T)

    def ground_truth(self) -> Scene:
        """The room sampled like a reconstructed mesh (the scene of ``generate_room(seed)``)."""
        return sample_layout(self.layout, self.seed)

    def label_points(self, xyz: np.ndarray, max_distance_m: float = 0.05
                     ) -> tuple[np.ndarray, np.ndarray]:
        """Ground truth of reconstructed points: the class and instance of the nearest
        triangle, (0, -1) farther than ``max_distance_m``.

        Returns:
            (N,) int32 nyu40 ids and (N,) int32 instance ids.
        """
        primitive, distance = self._renderer.closest_triangles(xyz)
        near = distance <= max_distance_m
        semantic = np.where(near, self.mesh.semantic[primitive], 0).astype(np.int32)
        instance = np.where(near, self.mesh.instance[primitive], -1).astype(np.int32)
        return semantic, instance
