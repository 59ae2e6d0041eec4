"""Procedural furnished rooms with exact ground truth, deterministic by seed.

A room is a floor and walls with doors, windows and pictures, furnished with objects built
from boxes (tables with chairs tucked in, desks, beds, sofas, cabinets and bookshelves
against walls). Surfaces are sampled like a reconstructed mesh (about 3 cm spacing),
with sensor-like noise, colour noise and holes. Frame: metres, z up, floor at z = 0,
the room spans ``[0, size_x] x [0, size_y]``. Labels are nyu40 ids.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .scene import Scene


@dataclass
class Box:
    """An oriented box: centre (m), half extents (m) and yaw about z (rad)."""

    center: np.ndarray
    half: np.ndarray
    yaw: float = 0.0

    def to_local(self, xyz: np.ndarray) -> np.ndarray:
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        d = xyz - self.center
        return np.stack([c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1], d[:, 2]], axis=1)

    def contains(self, xyz: np.ndarray, margin_m: float) -> np.ndarray:
        """Points strictly inside the box shrunk by ``margin_m``."""
        return (np.abs(self.to_local(xyz)) < self.half - margin_m).all(axis=1)


@dataclass
class SceneObject:
    label: int
    boxes: list[Box]
    colour: np.ndarray
    skip_bottom: bool = True


def _sample_box(box: Box, spacing_m: float, rng: np.random.Generator,
                skip_bottom: bool) -> np.ndarray:
    """Jittered grid samples on the faces of a box (world frame, metres)."""
    parts = []
    for axis in range(3):
        u, v = [a for a in range(3) if a != axis]
        for sign in (-1.0, 1.0):
            if axis == 2 and sign < 0 and skip_bottom:
                continue
            nu = max(int(np.ceil(2 * box.half[u] / spacing_m)), 1)
            nv = max(int(np.ceil(2 * box.half[v] / spacing_m)), 1)
            gu, gv = np.meshgrid((np.arange(nu) + 0.5) / nu, (np.arange(nv) + 0.5) / nv)
            count = gu.size
            local = np.empty((count, 3))
            jitter = rng.uniform(-0.35, 0.35, (count, 2))
            local[:, u] = (gu.ravel() + jitter[:, 0] / nu - 0.5) * 2 * box.half[u]
            local[:, v] = (gv.ravel() + jitter[:, 1] / nv - 0.5) * 2 * box.half[v]
            local[:, axis] = sign * box.half[axis]
            parts.append(local)
    local = np.concatenate(parts)
    c, s = np.cos(box.yaw), np.sin(box.yaw)
    world = np.empty_like(local)
    world[:, 0] = c * local[:, 0] - s * local[:, 1] + box.center[0]
    world[:, 1] = s * local[:, 0] + c * local[:, 1] + box.center[1]
    world[:, 2] = local[:, 2] + box.center[2]
    return world


def _rotated(parts: list[tuple[tuple[float, float, float], tuple[float, float, float]]],
             origin: np.ndarray, yaw: float) -> list[Box]:
    """Boxes given in an object's local frame (centre, half size), placed at origin with yaw."""
    c, s = np.cos(yaw), np.sin(yaw)
    out = []
    for (cx, cy, cz), half in parts:
        centre = np.array([origin[0] + c * cx - s * cy, origin[1] + s * cx + c * cy, cz])
        out.append(Box(centre, np.array(half, float), yaw))
    return out


def _table(rng, origin, yaw, label=7):
    lx, ly, h = rng.uniform(0.5, 0.9), rng.uniform(0.35, 0.55), rng.uniform(0.70, 0.78)
    t, leg = 0.02, 0.025
    parts = [((0, 0, h - t), (lx, ly, t))]
    for sx in (-1, 1):
        for sy in (-1, 1):
            parts.append(((sx * (lx - 0.05), sy * (ly - 0.05), (h - 2 * t) / 2),
                          (leg, leg, (h - 2 * t) / 2)))
    return _rotated(parts, origin, yaw), (lx, ly)


def _chair(rng, origin, yaw):
    w, seat_h, back_h = rng.uniform(0.2, 0.26), rng.uniform(0.42, 0.48), rng.uniform(0.35, 0.5)
    leg = 0.018
    parts = [((0, 0, seat_h), (w, w, 0.025)),
             ((0, -w + 0.02, seat_h + back_h / 2), (w, 0.02, back_h / 2))]
    for sx in (-1, 1):
        for sy in (-1, 1):
            parts.append(((sx * (w - 0.03), sy * (w - 0.03), (seat_h - 0.025) / 2),
                          (leg, leg, (seat_h - 0.025) / 2)))
    return _rotated(parts, origin, yaw)


def _block(rng, origin, yaw, size_ranges):
    half = [rng.uniform(*r) / 2 for r in size_ranges]
    return _rotated([((0, 0, half[2]), tuple(half))], origin, yaw), half


def _sofa(rng, origin, yaw):
    lx, ly = rng.uniform(0.7, 1.1), rng.uniform(0.4, 0.48)
    parts = [((0, 0, 0.2), (lx, ly, 0.2)),
             ((0, -ly + 0.1, 0.55), (lx, 0.1, 0.2)),
             ((-lx + 0.08, 0, 0.5), (0.08, ly, 0.1)),
             ((lx - 0.08, 0, 0.5), (0.08, ly, 0.1))]
    return _rotated(parts, origin, yaw), (lx, ly)


def _bed(rng, origin, yaw):
    lx, ly = rng.uniform(0.45, 0.85), rng.uniform(0.95, 1.05)
    parts = [((0, 0, 0.25), (lx, ly, 0.25)),
             ((0, -ly - 0.03, 0.45), (lx, 0.03, 0.45))]
    return _rotated(parts, origin, yaw), (lx, ly)


def generate_room(seed: int, spacing_m: float = 0.03, noise_m: float = 0.004,
                  size_range_m: tuple[float, float] = (4.0, 7.0)) -> Scene:
    """Generate one furnished room.

    Args:
        seed: random seed; the same seed gives the same scene.
        spacing_m: surface sample spacing in metres (ScanNet meshes: ~0.03 median).
        noise_m: standard deviation of isotropic positional noise in metres.
        size_range_m: range of the room's side lengths in metres.
    """
    rng = np.random.default_rng(seed)
    sx, sy = rng.uniform(*size_range_m, size=2)
    height = rng.uniform(2.5, 3.0)
    objects: list[SceneObject] = []

    def colour(base=None):
        return (rng.uniform(40, 230, 3) if base is None else np.asarray(base, float))

    floor_colour = colour()
    objects.append(SceneObject(2, [Box(np.array([sx / 2, sy / 2, -0.01]),
                                       np.array([sx / 2, sy / 2, 0.01]))], floor_colour))
    wall_colour = colour()
    t = 0.05
    walls = [(np.array([sx / 2, -t, height / 2]), np.array([sx / 2 + t, t, height / 2])),
             (np.array([sx / 2, sy + t, height / 2]), np.array([sx / 2 + t, t, height / 2])),
             (np.array([-t, sy / 2, height / 2]), np.array([t, sy / 2, height / 2])),
             (np.array([sx + t, sy / 2, height / 2]), np.array([t, sy / 2, height / 2]))]
    for centre, half in walls:
        objects.append(SceneObject(1, [Box(centre, half)], wall_colour + rng.normal(0, 8, 3)))

    # Wall-mounted items: door, windows, pictures (thin boxes proud of the wall surface).
    def wall_item(wall: int, along: float, z_lo: float, width: float, height_m: float,
                  depth: float) -> Box:
        z = z_lo + height_m / 2
        if wall == 0:
            return Box(np.array([along, depth / 2, z]), np.array([width / 2, depth / 2, height_m / 2]))
        if wall == 1:
            return Box(np.array([along, sy - depth / 2, z]), np.array([width / 2, depth / 2, height_m / 2]))
        if wall == 2:
            return Box(np.array([depth / 2, along, z]), np.array([depth / 2, width / 2, height_m / 2]))
        return Box(np.array([sx - depth / 2, along, z]), np.array([depth / 2, width / 2, height_m / 2]))

    wall_len = [sx, sx, sy, sy]
    door_wall = int(rng.integers(4))
    door_at = rng.uniform(0.8, wall_len[door_wall] - 0.8)
    objects.append(SceneObject(8, [wall_item(door_wall, door_at, 0.0, 0.9, 2.05, 0.04)], colour()))
    for _ in range(int(rng.integers(1, 3))):
        w = int(rng.integers(4))
        objects.append(SceneObject(9, [wall_item(w, rng.uniform(0.8, wall_len[w] - 0.8), 0.9,
                                                 rng.uniform(0.8, 1.4), 1.1, 0.06)], colour()))
    for _ in range(int(rng.integers(1, 4))):
        w = int(rng.integers(4))
        objects.append(SceneObject(11, [wall_item(w, rng.uniform(0.5, wall_len[w] - 0.5),
                                                  rng.uniform(1.3, 1.6), rng.uniform(0.3, 0.8),
                                                  rng.uniform(0.3, 0.6), 0.03)], colour()))

    footprints: list[tuple[np.ndarray, float]] = [(np.array([door_wall, door_at]), -1.0)]

    def free(xy: np.ndarray, radius: float, wall_margin: float) -> bool:
        """No overlap with placed footprints; at least ``wall_margin`` from every wall."""
        if min(xy[0], xy[1], sx - xy[0], sy - xy[1]) < wall_margin:
            return False
        for centre, r in footprints:
            if r < 0:  # the door: keep 1 m in front of it clear
                wall, along = int(centre[0]), centre[1]
                door_xy = [np.array([along, 0]), np.array([along, sy]),
                           np.array([0, along]), np.array([sx, along])][wall]
                if np.linalg.norm(xy - door_xy) < radius + 1.0:
                    return False
            elif np.linalg.norm(xy - centre) < radius + r:
                return False
        return True

    def against_wall(depth: float, width: float) -> tuple[np.ndarray, float] | None:
        for _ in range(30):
            wall = int(rng.integers(4))
            along = rng.uniform(width, wall_len[wall] - width)
            gap = depth + 0.02
            xy, yaw = [(np.array([along, gap]), 0.0), (np.array([along, sy - gap]), np.pi),
                       (np.array([gap, along]), -np.pi / 2), (np.array([sx - gap, along]), np.pi / 2)][wall]
            if free(xy, max(depth, width), wall_margin=depth):
                return xy, yaw
        return None

    # Furniture against walls.
    for label, count, sizes in ((3, (1, 4), ((0.5, 1.2), (0.4, 0.6), (0.6, 1.0))),
                                (10, (0, 3), ((0.7, 1.1), (0.3, 0.4), (1.6, 2.0))),
                                (39, (0, 2), ((0.4, 0.9), (0.3, 0.5), (0.4, 1.2)))):
        for _ in range(int(rng.integers(*count))):
            depth, width = sizes[1][1] / 2, sizes[0][1] / 2
            spot = against_wall(depth, width)
            if spot is None:
                continue
            boxes, half = _block(rng, spot[0], spot[1], sizes)
            footprints.append((spot[0], float(np.hypot(half[0], half[1]))))
            objects.append(SceneObject(label, boxes, colour()))
    for maker, label, depth in ((_bed, 4, 1.05), (_sofa, 6, 0.48)):
        if rng.random() < 0.5:
            spot = against_wall(depth, 0.9)
            if spot is not None:
                boxes, (lx, ly) = maker(rng, spot[0], spot[1] + np.pi)
                footprints.append((spot[0], float(np.hypot(lx, ly))))
                objects.append(SceneObject(label, boxes, colour()))

    # Tables and desks in the open with chairs tucked in.
    for _ in range(int(rng.integers(1, 4))):
        for _attempt in range(30):
            xy = rng.uniform([0.8, 0.8], [sx - 0.8, sy - 0.8])
            if free(xy, 1.0, wall_margin=0.8):
                break
        else:
            continue
        yaw = rng.choice([0.0, np.pi / 2]) + rng.normal(0, 0.05)
        label = 7 if rng.random() < 0.6 else 14
        boxes, (lx, ly) = _table(rng, xy, yaw, label)
        footprints.append((xy, float(np.hypot(lx, ly)) + 0.3))
        objects.append(SceneObject(label, boxes, colour()))
        c, s = np.cos(yaw), np.sin(yaw)
        for side in (-1, 1):
            for k in range(int(rng.integers(0, 3))):
                offset_x = (k - 0.5) * lx * 0.9 if k < 2 else 0.0
                tuck = ly + rng.uniform(-0.15, 0.1)
                local = np.array([offset_x, side * tuck])
                cxy = xy + np.array([c * local[0] - s * local[1], s * local[0] + c * local[1]])
                chair_yaw = yaw + (0.0 if side > 0 else np.pi) + np.pi + rng.normal(0, 0.25)
                objects.append(SceneObject(5, _chair(rng, cxy, chair_yaw), colour()))

    # Sample, remove samples hidden inside other objects, add holes and noise.
    xyz, rgb, sem, ins = [], [], [], []
    all_boxes = [(i, b) for i, o in enumerate(objects) for b in o.boxes]
    for inst, obj in enumerate(objects):
        for box in obj.boxes:
            pts = _sample_box(box, spacing_m, rng, obj.skip_bottom and obj.label != 2)
            hidden = np.zeros(len(pts), bool)
            for other_inst, other in all_boxes:
                if other_inst != inst:
                    hidden |= other.contains(pts, margin_m=0.005)
            if obj.label == 1:  # nothing outside the room
                hidden |= (pts[:, 0] < -0.005) | (pts[:, 0] > sx + 0.005) | \
                          (pts[:, 1] < -0.005) | (pts[:, 1] > sy + 0.005)
            pts = pts[~hidden & (pts[:, 2] > -0.005)]
            xyz.append(pts)
            shade = obj.colour + rng.normal(0, 6, (len(pts), 3))
            rgb.append(shade)
            sem.append(np.full(len(pts), obj.label, np.int32))
            ins.append(np.full(len(pts), inst, np.int32))
    xyz = np.concatenate(xyz)
    rgb, sem, ins = np.concatenate(rgb), np.concatenate(sem), np.concatenate(ins)
    keep = np.ones(len(xyz), bool)
    for _ in range(int(rng.integers(3, 8))):
        centre = xyz[rng.integers(len(xyz))]
        keep &= np.linalg.norm(xyz - centre, axis=1) > rng.uniform(0.05, 0.2)
    xyz, rgb, sem, ins = xyz[keep], rgb[keep], sem[keep], ins[keep]
    xyz = xyz + rng.normal(0, noise_m, xyz.shape)
    return Scene(xyz=xyz.astype(np.float32),
                 rgb=np.clip(rgb + rng.normal(0, 4, rgb.shape), 0, 255).astype(np.uint8),
                 semantic=sem, instance=ins, name=f"room_{seed}")
