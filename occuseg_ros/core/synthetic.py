"""Procedural furnished rooms with exact ground truth, deterministic by seed.

This is the training world of the shipped network, so it aims at variety and at the look
of a ScanNet reconstruction rather than at photorealism.

* A room is a rectangle or an L (the union of two rectangles) of one *type*: office,
  bedroom, living room, kitchen or bathroom (a home bathroom or a public restroom), which
  picks a plausible set of objects. Every straight wall segment is its own wall instance;
  the floor and the ceiling (present in about 30 % of rooms, as real scans often lack it)
  are one instance each. Walls have openings for doors (closed or open, single or double)
  and windows (frame, recessed pane, sill); pleated curtains hang in front of some windows.
* Objects are built from convex vertical prisms (boxes and polygonal cylinders) in a local
  frame by parametrised part builders (several designs of chairs, tables, desks, beds,
  sofas, cabinets, bookshelves, counters with inset sinks, toilets, refrigerators,
  bathtubs, ...), in room-wide styles so that identical chairs surround a table and
  cabinets stand side by side. Placement accepts a candidate only if none of its solid
  parts penetrates an already placed one by more than a few millimetres: objects touch,
  chairs tuck under tables with the seat below the top, but nothing interpenetrates.
* Surfaces are sampled like a reconstructed mesh: a jittered grid whose median
  nearest-neighbour distance is ``spacing_m`` (2.9 cm by default, like ScanNet's
  ``_vh_clean_2`` meshes: floor and walls sparser, objects denser), with what a camera
  cannot see removed: bottoms, anything within 1 cm of another solid (backs against
  walls, contact faces, joints), the floor under low furniture, the space behind curtains,
  closed doors and glass; plus random dropout patches, patchy ceilings and unscanned upper
  walls. Colours carry a per-object texture, directional shading, darker creases where
  objects meet, uneven lighting, a colour cast and per-point noise; positions carry
  isotropic noise of ``noise_m``.

Labels are nyu40 ids (see ``labels.py``); non-benchmark clutter (pillows, books, lamps,
monitors, ...) carries its own nyu40 id. Instance ids index :attr:`RoomLayout.objects`:
every object, wall segment, floor and ceiling is its own instance (objects that end up
fully hidden have no points). Frame: metres, z up, floor at z = 0, the room's bounding
rectangle spans ``[0, size_x] x [0, size_y]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np

from .scene import Scene

# nyu40 ids used here.
WALL, FLOOR, CABINET, BED, CHAIR, SOFA, TABLE, DOOR, WINDOW, BOOKSHELF = range(1, 11)
PICTURE, COUNTER, DESK, CURTAIN, PILLOW, MIRROR, CEILING, BOOKS = 11, 12, 14, 16, 18, 19, 22, 23
REFRIGERATOR, TELEVISION, TOWEL, SHOWER_CURTAIN, BOX, WHITEBOARD = 24, 25, 27, 28, 29, 30
NIGHT_STAND, TOILET, SINK, LAMP, BATHTUB, BAG = 32, 33, 34, 35, 36, 37
OTHERSTRUCTURE, OTHERFURNITURE, OTHERPROP = 38, 39, 40
_STRUCTURE = (WALL, FLOOR, CEILING)

ROOM_KINDS: tuple[str, ...] = ("office", "bedroom", "living", "kitchen", "bathroom")
_KIND_WEIGHTS = (0.22, 0.2, 0.2, 0.18, 0.2)

_HIDE_MARGIN_M = 0.01      # a point this close to another object's solid is not seen
_SELF_MARGIN_M = 0.004     # ... and this close to another solid part of its own object
_TOUCH_M = 0.004           # placed solids may overlap this much (they touch)
_SHADOW_CLEARANCE_M = 0.2  # the floor under a solid whose bottom is lower is not seen
_CONTACT_M = 0.02          # points this close to another object are in a (darker) crease
_GAP_M = 0.003             # gap between cabinet doors, drawers, adjacent units
_JITTER = 0.3              # sample jitter in grid cells; the median nearest-neighbour
_NN_PER_PITCH = 0.76       # distance of such a jittered grid is 0.76 of its pitch

# Columns of the face table: origin (3), edge a (3), edge b (3), normal (3), colour (3),
# triangle flag, index of the owning solid in its object (-1: a sheet), keep probability.
_F_COLS = 18
_F_TRI, _F_SOLID, _F_KEEP = 15, 16, 17

_FAMILIES: dict[str, tuple[tuple[int, int, int], ...]] = {
    "wall": ((232, 228, 218), (242, 240, 235), (214, 206, 190), (196, 204, 208), (222, 210, 188),
             (205, 215, 200), (182, 180, 176), (238, 225, 205), (170, 190, 200)),
    "floor": ((168, 128, 86), (135, 98, 66), (196, 170, 132), (110, 80, 58), (150, 150, 148),
              (200, 196, 186), (96, 96, 104), (120, 110, 96), (170, 160, 150), (84, 92, 110)),
    "ceiling": ((240, 240, 236), (226, 226, 220), (212, 212, 206)),
    "wood": ((170, 128, 86), (128, 90, 58), (196, 164, 122), (94, 64, 44), (216, 196, 164),
             (72, 52, 38), (150, 100, 60)),
    "laminate": ((238, 238, 234), (205, 205, 200), (60, 60, 64), (150, 150, 152), (225, 215, 195)),
    "fabric": ((88, 90, 98), (140, 62, 52), (60, 82, 124), (176, 164, 142), (84, 112, 84),
               (124, 124, 130), (205, 196, 176), (48, 48, 54), (150, 120, 90), (110, 70, 100)),
    "metal": ((185, 186, 190), (125, 126, 130), (42, 42, 46), (215, 215, 215)),
    "ceramic": ((238, 238, 235), (246, 246, 246), (228, 230, 232)),
    "bright": ((200, 60, 50), (60, 120, 190), (230, 190, 60), (70, 150, 90), (230, 230, 230),
               (30, 30, 30), (220, 120, 40)),
    "glass": ((170, 190, 205), (120, 140, 150), (205, 215, 225), (80, 90, 100)),
    "dark": ((28, 28, 30), (40, 40, 44), (55, 55, 60)),
}


# --------------------------------------------------------------------------- geometry


@dataclass
class Prism:
    """A convex vertical prism: a counter-clockwise polygon in the xy plane (world frame,
    metres) extruded from ``z0`` to ``z1``.

    ``occluder`` marks a volume that hides what lies in it (the space behind a curtain or a
    closed door) without being a physical part of its object.
    """

    poly: np.ndarray
    z0: float
    z1: float
    occluder: bool = False
    normals: np.ndarray = field(init=False, repr=False)
    offsets: np.ndarray = field(init=False, repr=False)
    lo: np.ndarray = field(init=False, repr=False)
    hi: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        edge = np.roll(self.poly, -1, axis=0) - self.poly
        normals = np.stack([edge[:, 1], -edge[:, 0]], axis=1)
        self.normals = normals / np.linalg.norm(normals, axis=1, keepdims=True)
        self.offsets = (self.normals * self.poly).sum(axis=1)
        self.lo = np.array([*self.poly.min(axis=0), self.z0])
        self.hi = np.array([*self.poly.max(axis=0), self.z1])

    def contains(self, xyz: np.ndarray, margin_m: float = 0.0) -> np.ndarray:
        """Points inside the prism grown by ``margin_m`` (shrunk when negative)."""
        inside = (xyz[:, 2] >= self.z0 - margin_m) & (xyz[:, 2] <= self.z1 + margin_m)
        return inside & (_project(xyz, self.normals) <= self.offsets + margin_m).all(axis=1)

    def penetration(self, other: Prism) -> float:
        """Depth (m) by which two prisms overlap along their best separating axis; <= 0
        when they are apart or touch."""
        depth = min(self.z1, other.z1) - max(self.z0, other.z0)
        for axes in (self.normals, other.normals):
            a, b = self.poly @ axes.T, other.poly @ axes.T
            overlap = np.minimum(a.max(axis=0), b.max(axis=0)) - np.maximum(a.min(axis=0),
                                                                            b.min(axis=0))
            depth = min(depth, float(overlap.min()))
        return depth


@dataclass
class RoomObject:
    """One instance: nyu40 ``label``, solid parts and the table of faces to sample."""

    label: int
    solids: list[Prism]
    faces: np.ndarray


@dataclass
class RoomLayout:
    """A furnished room before sampling: ``objects[i]`` becomes instance ``i``.

    Attributes:
        kind: one of :data:`ROOM_KINDS`.
        outline: (K, 2) counter-clockwise floor outline in metres.
        height: wall height in metres.
        has_ceiling: whether a ceiling instance exists.
    """

    kind: str
    outline: np.ndarray
    height: float
    has_ceiling: bool
    objects: list[RoomObject]


def _project(xyz: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """(N, K) dot products of the points' xy with K unit 2D normals. (Written out: OpenBLAS
    is slow on such thin matrix products.)"""
    return xyz[:, 0:1] * normals[:, 0] + xyz[:, 1:2] * normals[:, 1]


def _rot(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s], [s, c]])


def _shift(origin: np.ndarray, yaw: float, dx: float, dy: float) -> np.ndarray:
    """World xy of the point ``(dx, dy)`` of a frame at ``origin`` turned by ``yaw``."""
    return origin + _rot(yaw) @ np.array([dx, dy])


def _frame_box(origin: np.ndarray, yaw: float, x0: float, x1: float, y0: float, y1: float,
               z0: float, z1: float) -> Prism:
    """A box given by its extents in a local frame (metres), as a world prism."""
    corners = np.array([(x0, y0), (x1, y0), (x1, y1), (x0, y1)])
    return Prism(corners @ _rot(yaw).T + origin, z0, z1)


def _prism_faces(poly: np.ndarray, z0: float, z1: float, sides: np.ndarray, top: bool,
                 bottom: bool, colour: np.ndarray, keep: float, solid: int) -> np.ndarray:
    """Face-table rows for the chosen faces of a prism (world frame)."""
    rows = []
    edge = np.roll(poly, -1, axis=0) - poly
    idx = np.flatnonzero(sides)
    if idx.size:
        f = np.zeros((idx.size, _F_COLS))
        f[:, 0:2], f[:, 2] = poly[idx], z0
        f[:, 3:5], f[:, 8] = edge[idx], z1 - z0
        length = np.linalg.norm(edge[idx], axis=1)
        f[:, 9], f[:, 10] = edge[idx, 1] / length, -edge[idx, 0] / length
        rows.append(f)
    for z, up, wanted in ((z1, 1.0, top), (z0, -1.0, bottom)):
        if not wanted:
            continue
        if len(poly) == 4:  # boxes: one rectangle
            f = np.zeros((1, _F_COLS))
            f[0, 0:2], f[0, 3:5], f[0, 6:8] = poly[0], poly[1] - poly[0], poly[3] - poly[0]
        else:  # a fan of triangles
            f = np.zeros((len(poly) - 2, _F_COLS))
            f[:, 0:2], f[:, 3:5], f[:, 6:8] = poly[0], poly[1:-1] - poly[0], poly[2:] - poly[0]
            f[:, _F_TRI] = 1.0
        f[:, 2], f[:, 11] = z, up
        rows.append(f)
    out = np.concatenate(rows) if rows else np.zeros((0, _F_COLS))
    out[:, 12:15], out[:, _F_SOLID], out[:, _F_KEEP] = colour, solid, keep
    return out


class _Builder:
    """Collects one object's parts, given in a local frame (x right, y forward, z up;
    metres) placed at world ``origin`` and turned by ``yaw`` (rad).

    ``skip`` names the faces not to sample: ``d`` bottom, ``u`` top, ``s`` all sides, and
    for boxes ``b``/``f`` the -y/+y sides and ``l``/``r`` the -x/+x sides.
    """

    def __init__(self, label: int, origin: Iterable[float] = (0.0, 0.0), yaw: float = 0.0):
        self.label = label
        self.origin = np.asarray(origin, float)
        self.yaw = float(yaw)
        self._rot = _rot(yaw)
        self.solids: list[Prism] = []
        self._faces: list[np.ndarray] = []

    def prism(self, poly: np.ndarray, z0: float, z1: float, colour: np.ndarray,
              skip: str = "d", keep: float = 1.0) -> None:
        world = np.asarray(poly, float) @ self._rot.T + self.origin
        sides = np.full(len(world), "s" not in skip)
        if len(world) == 4:
            sides &= np.array([c not in skip for c in "brfl"])
        self._faces.append(_prism_faces(world, z0, z1, sides, "u" not in skip, "d" not in skip,
                                        colour, keep, len(self.solids)))
        self.solids.append(Prism(world, float(z0), float(z1)))

    def box(self, x0: float, x1: float, y0: float, y1: float, z0: float, z1: float,
            colour: np.ndarray, skip: str = "d", keep: float = 1.0) -> None:
        """An axis-aligned box by its local extents."""
        self.prism(np.array([(x0, y0), (x1, y0), (x1, y1), (x0, y1)]), z0, z1, colour, skip, keep)

    def rbox(self, cx: float, cy: float, hx: float, hy: float, yaw: float, z0: float,
             z1: float, colour: np.ndarray, skip: str = "d") -> None:
        """A box centred at ``(cx, cy)`` with half sizes ``hx, hy``, turned by ``yaw``."""
        corners = np.array([(-hx, -hy), (hx, -hy), (hx, hy), (-hx, hy)]) @ _rot(yaw).T
        self.prism(corners + (cx, cy), z0, z1, colour, skip)

    def cyl(self, cx: float, cy: float, rx: float, ry: float, z0: float, z1: float,
            colour: np.ndarray, n: int = 8, skip: str = "d") -> None:
        """A vertical polygonal cylinder (``n`` >= 5 sides) with radii ``rx, ry``."""
        angle = (np.arange(n) + 0.5) * 2 * np.pi / n
        self.prism(np.stack([cx + rx * np.cos(angle), cy + ry * np.sin(angle)], 1), z0, z1,
                   colour, skip)

    def sheet(self, xy: np.ndarray, z0: float, z1: float, colour: np.ndarray) -> None:
        """A thin non-solid surface: the vertical extrusion of a local polyline."""
        world = np.asarray(xy, float) @ self._rot.T + self.origin
        edge = np.diff(world, axis=0)
        f = np.zeros((len(edge), _F_COLS))
        f[:, 0:2], f[:, 2], f[:, 3:5], f[:, 8] = world[:-1], z0, edge, z1 - z0
        length = np.linalg.norm(edge, axis=1)
        f[:, 9], f[:, 10] = -edge[:, 1] / length, edge[:, 0] / length
        f[:, 12:15], f[:, _F_SOLID], f[:, _F_KEEP] = colour, -1, 1.0
        self._faces.append(f)

    def occluder(self, x0: float, x1: float, y0: float, y1: float, z0: float, z1: float) -> None:
        """A volume that hides other objects' points inside it (not a physical part)."""
        prism = _frame_box(self.origin, self.yaw, x0, x1, y0, y1, z0, z1)
        prism.occluder = True
        self.solids.append(prism)

    def build(self) -> RoomObject:
        faces = np.concatenate(self._faces) if self._faces else np.zeros((0, _F_COLS))
        return RoomObject(self.label, self.solids, faces)


class _Palette:
    """Colour picks (RGB floats, 0..255) for one room: material families with jitter and
    the room's dominant furniture finish."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.finish = self.pick("wood" if rng.random() < 0.6 else "laminate")

    def pick(self, family: str) -> np.ndarray:
        options = _FAMILIES[family]
        base = np.array(options[self.rng.integers(len(options))], float)
        return np.clip(base * self.rng.uniform(0.88, 1.08) + self.rng.normal(0, 8, 3), 8, 250)

    def near(self, colour: np.ndarray, sigma: float = 10.0) -> np.ndarray:
        return np.clip(colour + self.rng.normal(0, sigma, 3), 8, 250)

    def furniture(self) -> np.ndarray:
        """The room's finish most of the time, otherwise another wood, laminate or metal."""
        if self.rng.random() < 0.6:
            return self.near(self.finish, 8)
        return self.pick(("wood", "laminate", "metal")[self.rng.integers(3)])


# --------------------------------------------------------------------------- the room


@dataclass
class _Wall:
    """A straight wall segment: start ``p0``, unit direction ``d``, inward normal ``n``."""

    p0: np.ndarray
    d: np.ndarray
    n: np.ndarray
    length: float
    openings: list[tuple[float, float, float, float]] = field(default_factory=list)

    @property
    def yaw(self) -> float:
        """Yaw of the wall frame: local x along the wall, local y into the room."""
        return float(np.arctan2(self.d[1], self.d[0]))

    def free(self, t0: float, t1: float, gap: float) -> bool:
        return all(t1 + gap <= a or t0 - gap >= b for a, b, _, _ in self.openings)


@dataclass
class _Spot:
    """Where a wall-anchored object goes: the back centre on the wall and its yaw."""

    origin: np.ndarray
    yaw: float


class _Room:
    """The placement helper: the room's outline, walls and placed objects, with collision
    checks of candidate solids against placed solids and keep-out volumes."""

    def __init__(self, rng: np.random.Generator, kind: str, rects: list[tuple[float, ...]],
                 outline: np.ndarray, height: float, has_ceiling: bool):
        self.rng, self.kind, self.rects, self.outline = rng, kind, rects, outline
        self.height, self.has_ceiling = height, has_ceiling
        self.walls = []
        for i in range(len(outline)):
            p0, p1 = outline[i], outline[(i + 1) % len(outline)]
            length = float(np.linalg.norm(p1 - p0))
            d = (p1 - p0) / length
            self.walls.append(_Wall(p0, d, np.array([-d[1], d[0]]), length))
        self.objects: list[RoomObject] = []
        self._blockers: list[Prism] = []
        self._lo = self._hi = np.zeros((0, 3))

    def blocked(self, prisms: Iterable[Prism]) -> bool:
        """Whether any prism penetrates a placed solid or keep-out, or nears the ceiling."""
        if len(self._lo) != len(self._blockers):
            self._lo = np.array([p.lo for p in self._blockers])
            self._hi = np.array([p.hi for p in self._blockers])
        for p in prisms:
            if p.occluder:
                continue
            if p.z1 > self.height - 0.02:
                return True
            near = np.flatnonzero(((self._lo < p.hi - _TOUCH_M) & (self._hi > p.lo + _TOUCH_M))
                                  .all(axis=1))
            if any(p.penetration(self._blockers[i]) > _TOUCH_M for i in near):
                return True
        return False

    def add(self, *builders: _Builder) -> None:
        """Add objects without checks (structure, or parts already known to fit)."""
        for b in builders:
            obj = b.build()
            self.objects.append(obj)
            self._blockers.extend(p for p in obj.solids if not p.occluder)

    def try_add(self, *builders: _Builder) -> bool:
        """Add the objects if none of their solids collides; all or nothing."""
        if self.blocked(p for b in builders for p in b.solids):
            return False
        self.add(*builders)
        return True

    def keep_out(self, prism: Prism) -> None:
        """Reserve a volume (a door's swing, the space in front of a window)."""
        self._blockers.append(prism)

    def on_wall(self, width: float, depth: float, z1: float, z0: float = 0.0, front: float = 0.0,
                corner: bool = False, tries: int = 25) -> _Spot | None:
        """A free spot against a wall for an object ``width`` x ``depth`` spanning z0..z1,
        with ``front`` metres clear in front of it (up to 1 m high); ``corner`` puts it at
        a wall end."""
        walls = [i for i, w in enumerate(self.walls) if w.length > width + 0.05]
        if not walls:
            return None
        weight = np.array([self.walls[i].length for i in walls])
        for _ in range(tries):
            i = walls[self.rng.choice(len(walls), p=weight / weight.sum())]
            wall = self.walls[i]
            lo, hi = width / 2 + 0.01, wall.length - width / 2 - 0.01
            along = (lo if self.rng.random() < 0.5 else hi) if corner else self.rng.uniform(lo, hi)
            origin = wall.p0 + wall.d * along + wall.n * self.rng.uniform(0.001, 0.008)
            test = [_frame_box(origin, wall.yaw, -width / 2, width / 2, 0, depth, z0, z1)]
            if front > 0:
                test.append(_frame_box(origin, wall.yaw, -width / 2, width / 2, depth,
                                       depth + front, max(z0, 0.05), max(min(z1, 1.0), 0.1)))
            if not self.blocked(test):
                return _Spot(origin, wall.yaw)
        return None

    def in_open(self, hx: float, hy: float, z1: float, free_yaw: float = 0.15,
                tries: int = 30) -> tuple[np.ndarray, float] | None:
        """A free centre and yaw for a footprint of half sizes ``hx, hy`` (m) away from walls;
        axis-aligned (with a little jitter) unless drawn free with probability ``free_yaw``."""
        area = np.array([(r[2] - r[0]) * (r[3] - r[1]) for r in self.rects])
        for _ in range(tries):
            x0, y0, x1, y1 = self.rects[self.rng.choice(len(area), p=area / area.sum())]
            yaw = (self.rng.uniform(0, np.pi) if self.rng.random() < free_yaw
                   else self.rng.integers(2) * np.pi / 2 + self.rng.normal(0, 0.03))
            c, s = abs(np.cos(yaw)), abs(np.sin(yaw))
            ex, ey = c * hx + s * hy, s * hx + c * hy  # half extents of the turned footprint
            if x1 - x0 < 2 * ex or y1 - y0 < 2 * ey:
                continue
            centre = self.rng.uniform((x0 + ex, y0 + ey), (x1 - ex, y1 - ey))
            if not self.blocked([_frame_box(centre, yaw, -hx, hx, -hy, hy, 0.0, z1)]):
                return centre, float(yaw)
        return None

    @property
    def area(self) -> float:
        """Floor area in square metres."""
        return float(sum((r[2] - r[0]) * (r[3] - r[1]) for r in self.rects))

    def layout(self) -> RoomLayout:
        return RoomLayout(self.kind, self.outline, self.height, self.has_ceiling, self.objects)


def _room_shape(rng: np.random.Generator, kind: str, size_range_m: tuple[float, float]
                ) -> tuple[list[tuple[float, ...]], np.ndarray]:
    """Rectangles whose union is the floor and the counter-clockwise outline (metres)."""
    lo, hi = size_range_m
    if kind == "bathroom":  # bathrooms are small
        lo, hi = 0.65 * lo, lo
    sx, sy = rng.uniform(lo, hi, 2)
    if kind == "bathroom" or rng.random() > 0.35:
        return [(0.0, 0.0, sx, sy)], np.array([(0, 0), (sx, 0), (sx, sy), (0, sy)], float)
    nx, ny = sx * rng.uniform(0.3, 0.55), sy * rng.uniform(0.3, 0.55)
    outline = np.array([(0, 0), (sx, 0), (sx, sy - ny), (sx - nx, sy - ny), (sx - nx, sy),
                        (0, sy)], float)
    rects = [(0.0, 0.0, sx, sy - ny), (0.0, sy - ny, sx - nx, sy)]
    flip_x, flip_y = rng.random() < 0.5, rng.random() < 0.5
    if flip_x:
        outline[:, 0] = sx - outline[:, 0]
        rects = [(sx - r[2], r[1], sx - r[0], r[3]) for r in rects]
    if flip_y:
        outline[:, 1] = sy - outline[:, 1]
        rects = [(r[0], sy - r[3], r[2], sy - r[1]) for r in rects]
    if flip_x != flip_y:
        outline = outline[::-1].copy()
    return rects, outline


# --------------------------------------------------------------------------- structure


def _plan_openings(room: _Room) -> list[tuple[int, str, float, float, float, float]]:
    """Choose doors and windows: (wall, kind, t0, t1, z0, z1) in wall coordinates (m)."""
    rng, height = room.rng, room.height
    plan = []

    def find(width: float, z0: float, z1: float, kind: str, margin: float) -> bool:
        walls = [i for i, w in enumerate(room.walls) if w.length > width + 2 * margin]
        if not walls:
            return False
        for _ in range(10):
            i = walls[rng.integers(len(walls))]
            wall = room.walls[i]
            t0 = rng.uniform(margin, wall.length - width - margin)
            if wall.free(t0, t0 + width, 0.25):
                wall.openings.append((t0, t0 + width, z0, z1))
                plan.append((i, kind, t0, t0 + width, z0, z1))
                return True
        return False

    for k in range(1 + int(room.kind != "bathroom" and rng.random() < 0.25)):
        double = k == 0 and room.kind != "bathroom" and rng.random() < 0.15
        width = rng.uniform(1.3, 1.7) if double else rng.uniform(0.75, 1.0)
        door_h = min(rng.uniform(2.0, 2.2), height - 0.15)
        find(width, 0.0, door_h, "double" if double else "door", 0.2)
    groups = {"bathroom": (0, 2), "kitchen": (0, 3)}.get(room.kind, (1, 4))
    for _ in range(int(rng.integers(*groups))):
        wet = room.kind in ("kitchen", "bathroom")
        sill = rng.uniform(0.95, 1.25) if wet else rng.uniform(0.6, 1.05)
        top = min(height - rng.uniform(0.15, 0.45), sill + rng.uniform(0.8, 1.6))
        count = 1 if room.kind == "bathroom" else int(rng.integers(1, 4))
        widths = rng.uniform(0.5, 1.3, count)
        piers = rng.uniform(0.08, 0.4, count - 1)
        total = widths.sum() + piers.sum()
        walls = [i for i, w in enumerate(room.walls) if w.length > total + 0.5]
        if not walls:
            continue
        i = walls[rng.integers(len(walls))]
        wall = room.walls[i]
        t = rng.uniform(0.25, wall.length - total - 0.25)
        if not wall.free(t, t + total, 0.3):
            continue
        for j, w in enumerate(widths):
            wall.openings.append((t, t + w, sill, top))
            plan.append((i, "window", t, t + w, sill, top))
            t += w + (piers[j] if j < count - 1 else 0.0)
    return plan


def _add_structure(room: _Room, pal: _Palette, thickness: float) -> None:
    """Floor, ceiling, walls with openings, doors, windows, curtains and radiators."""
    rng, height = room.rng, room.height
    floor = _Builder(FLOOR)
    floor_colour = pal.pick("floor")
    for x0, y0, x1, y1 in room.rects:
        floor.box(x0, x1, y0, y1, -0.1, 0.0, floor_colour, skip="brfld")
    room.add(floor)
    if room.has_ceiling:
        ceiling = _Builder(CEILING)
        ceiling_colour = pal.pick("ceiling")
        for x0, y0, x1, y1 in room.rects:
            ceiling.box(x0, x1, y0, y1, height, height + 0.1, ceiling_colour, skip="brflu")
        room.add(ceiling)
    plan = _plan_openings(room)
    wall_colour = pal.pick("wall")
    for wall in room.walls:
        b = _Builder(WALL, wall.p0, wall.yaw)
        colour = pal.pick("wall") if rng.random() < 0.12 else pal.near(wall_colour, 4)
        cuts = sorted({0.0, wall.length, *(t for o in wall.openings for t in o[:2])})
        after, before = {o[1] for o in wall.openings}, {o[0] for o in wall.openings}
        for xa, xb in zip(cuts[:-1], cuts[1:]):
            # Sample the side faces that line an opening (the jambs), skip the others.
            jamb = ("" if xa in after else "l") + ("" if xb in before else "r")
            hole = [o for o in wall.openings if o[0] <= (xa + xb) / 2 <= o[1]]
            if not hole:
                b.box(xa, xb, -thickness, 0, 0, height, colour, skip="bdu" + jamb)
                continue
            z0, z1 = hole[0][2:]
            if z0 > 0:
                b.box(xa, xb, -thickness, 0, 0, z0, colour, skip="bd" + jamb)
            if z1 < height:
                b.box(xa, xb, -thickness, 0, z1, height, colour, skip="bu" + jamb)
        room.add(b)
    door_colour = pal.pick("wood" if rng.random() < 0.6 else "laminate")
    for i, kind, t0, t1, z0, z1 in plan:
        wall = room.walls[i]
        if kind == "window":
            _add_window(room, pal, wall, t0, t1, z0, z1, thickness)
        else:
            mid = (t0 + t1) / 2
            leaves = [(t0, t1, 0)] if kind == "door" else [(t0, mid, -1), (mid, t1, 1)]
            for start, end, side in leaves:
                room.add(_door(rng, pal.near(door_colour, 6), wall, start, end, z1, side,
                               thickness))
            room.keep_out(_frame_box(wall.p0, wall.yaw, t0 - 0.05, t1 + 0.05, 0,
                                     (t1 - t0) / len(leaves) + 0.05, 0, height))
    _add_curtains(room, pal, plan, thickness)
    for i, kind, t0, t1, z0, z1 in plan:
        if kind == "window":  # keep the space in front of windows free
            wall = room.walls[i]
            room.keep_out(_frame_box(wall.p0, wall.yaw, t0 - 0.05, t1 + 0.05, 0, 0.3, z0 - 0.04,
                                     z1 + 0.02))
    if room.kind != "kitchen":
        for i, kind, t0, t1, z0, z1 in plan:
            if kind == "window" and z0 > 0.5 and rng.random() < 0.3:
                room.try_add(_radiator(rng, pal, room.walls[i], t0, t1, z0))


def _door(rng: np.random.Generator, colour: np.ndarray, wall: _Wall, t0: float, t1: float,
          top: float, side: int, thickness: float) -> _Builder:
    """A door leaf in the opening ``t0..t1`` (wall coordinates), closed or swung open into
    the room, with its casing; ``side`` -1/1 is the half of a double door (0: single)."""
    b = _Builder(DOOR, wall.p0, wall.yaw)
    trim, depth = rng.uniform(0.04, 0.08), rng.uniform(0.01, 0.02)
    casing = colour * rng.uniform(0.9, 1.1)
    if side <= 0:
        b.box(t0 - trim, t0, 0, depth, 0, top + trim, casing)
    if side >= 0:
        b.box(t1, t1 + trim, 0, depth, 0, top + trim, casing)
    b.box(t0 - (trim if side <= 0 else 0), t1 + (trim if side >= 0 else 0), 0, depth, top,
          top + trim, casing)
    hinge_left = side < 0 or (side == 0 and rng.random() < 0.5)
    width = t1 - t0
    handle = colour * 0.5 if rng.random() < 0.5 else np.array([190.0, 190, 185])
    if rng.random() < 0.6:  # closed, recessed 5 mm behind the wall plane
        b.box(t0 + 0.004, t1 - 0.004, -0.045, -0.005, 0.005, top - 0.004, colour, skip="bd")
        hx = t1 - 0.1 if hinge_left else t0 + 0.04
        b.box(hx, hx + 0.06, -0.005, 0.05, 0.95, 0.99, handle)
        b.occluder(t0, t1, -thickness - 0.02, -0.06, 0, top)
    else:  # open: the leaf turned about its hinge into the room
        angle = rng.uniform(0.4, 1.7)
        direction = angle if hinge_left else np.pi - angle
        hinge = np.array([t0 + 0.02 if hinge_left else t1 - 0.02, 0.025])
        centre = hinge + (width / 2 - 0.02) * np.array([np.cos(direction), np.sin(direction)])
        b.rbox(centre[0], centre[1], width / 2 - 0.02, 0.02, direction, 0.005, top - 0.004, colour)
    return b


def _add_window(room: _Room, pal: _Palette, wall: _Wall, t0: float, t1: float, z0: float,
                z1: float, thickness: float) -> None:
    """A window in its wall opening: frame, mullions, recessed glass and an optional sill."""
    rng = room.rng
    b = _Builder(WINDOW, wall.p0, wall.yaw)
    frame = pal.pick("laminate" if rng.random() < 0.6 else "wood")
    fw, yp = rng.uniform(0.04, 0.07), -thickness * rng.uniform(0.35, 0.65)
    y0, y1 = yp - 0.025, yp + 0.025
    b.box(t0, t0 + fw, y0, y1, z0, z1, frame)
    b.box(t1 - fw, t1, y0, y1, z0, z1, frame)
    b.box(t0 + fw, t1 - fw, y0, y1, z0, z0 + fw, frame)
    b.box(t0 + fw, t1 - fw, y0, y1, z1 - fw, z1, frame)
    for k in range(1, int(rng.integers(1, 3)) if t1 - t0 > 0.8 else 1):
        x = t0 + (t1 - t0) * k / 2
        b.box(x - fw / 2, x + fw / 2, y0, y1, z0 + fw, z1 - fw, frame)
    b.box(t0 + fw, t1 - fw, yp - 0.005, yp + 0.005, z0 + fw, z1 - fw, pal.pick("glass"),
          keep=rng.uniform(0.3, 0.7))
    b.occluder(t0, t1, -thickness - 0.02, yp - 0.03, z0, z1)
    if rng.random() < 0.7:
        b.box(t0 - 0.04, t1 + 0.04, 0, rng.uniform(0.03, 0.07), z0 - 0.03, z0, pal.near(frame))
    room.add(b)


def _add_curtains(room: _Room, pal: _Palette, plan: list, thickness: float) -> None:
    """Pleated curtain panels in front of some window groups (adjacent windows on a wall)."""
    rng = room.rng
    chance = {"bedroom": 0.75, "living": 0.7, "office": 0.35, "kitchen": 0.25}.get(room.kind, 0.1)
    groups: dict[int, list] = {}
    for i, kind, t0, t1, z0, z1 in plan:
        if kind == "window":
            groups.setdefault(i, []).append((t0, t1, z0, z1))
    for i, windows in groups.items():
        if rng.random() > chance:
            continue
        wall = room.walls[i]
        g0, g1 = min(w[0] for w in windows), max(w[1] for w in windows)
        sill, top = min(w[2] for w in windows), max(w[3] for w in windows)
        z_top = min(room.height - 0.03, top + rng.uniform(0.05, 0.3))
        if rng.random() < 0.6:  # to the floor
            z_bottom = rng.uniform(0.01, 0.04)
        else:  # to below the sill
            z_bottom = max(0.1, sill - rng.uniform(0.05, 0.25))
        amp, wavelength = rng.uniform(0.012, 0.035), rng.uniform(0.08, 0.18)
        y0 = 0.08 + amp + rng.uniform(0.01, 0.06)
        ext = rng.uniform(0.05, 0.3)
        a, c = max(0.05, g0 - ext), min(wall.length - 0.05, g1 + ext)
        if rng.random() < 0.35:  # drawn closed
            mid = (a + c) / 2
            panels = [(a, c)] if rng.random() < 0.25 else [(a, mid - 0.01), (mid + 0.01, c)]
        else:  # open, gathered at the sides
            width = min(rng.uniform(0.25, 0.5), (c - a) / 2 - 0.02)
            panels = [(a, a + width), (c - width, c)]
        colour = pal.pick("fabric" if rng.random() < 0.7 else "wall")
        for xa, xb in panels:
            b = _Builder(CURTAIN, wall.p0, wall.yaw)
            x = np.linspace(xa, xb, max(int((xb - xa) / (wavelength / 5)), 2))
            y = y0 + amp * np.sin(2 * np.pi * (x - xa) / wavelength + rng.uniform(0, 2 * np.pi))
            b.sheet(np.stack([x, y], 1), z_bottom, z_top, colour)
            b.occluder(xa, xb, -thickness - 0.02, y0 - amp - 0.012, z_bottom, z_top)
            body = _frame_box(wall.p0, wall.yaw, xa, xb, y0 - amp, y0 + amp, z_bottom, z_top)
            if not room.blocked([body]):
                room.add(b)
                room.keep_out(_frame_box(wall.p0, wall.yaw, xa - 0.02, xb + 0.02, 0.0,
                                         y0 + amp + 0.03, z_bottom, z_top))


def _radiator(rng: np.random.Generator, pal: _Palette, wall: _Wall, t0: float, t1: float,
              sill: float) -> _Builder:
    """A finned radiator (otherfurniture) under a window."""
    b = _Builder(OTHERFURNITURE, wall.p0, wall.yaw)
    colour = pal.pick("ceramic")
    x0 = t0 + rng.uniform(0.0, 0.1)
    x1 = max(x0 + 0.3, t1 - rng.uniform(0.0, 0.1))
    z0, z1 = rng.uniform(0.08, 0.15), min(sill - 0.1, rng.uniform(0.45, 0.75))
    depth = rng.uniform(0.06, 0.12)
    b.box(x0, x1, 0.02, 0.04, z0, z1, colour)
    pitch = rng.uniform(0.05, 0.08)
    for x in np.arange(x0, x1 - 0.02, pitch):
        b.box(x, x + 0.02, 0.04, 0.04 + depth, z0, z1, colour)
    return b


# --------------------------------------------------------------------------- seating


@dataclass
class _ChairDesign:
    """One chair model (sizes in metres, colours RGB), shared by the chairs of a group."""

    kind: str          # "legs", "office" or "lounge"
    width: float
    depth: float
    seat_h: float
    seat_t: float
    back_h: float
    back_t: float
    arms: bool
    arm_h: float
    leg: float
    round_legs: bool
    rails: int         # horizontal back rails between posts; 0 = a solid back panel
    frame: np.ndarray
    seat: np.ndarray
    back: np.ndarray


def _chair_design(rng: np.random.Generator, pal: _Palette, kind: str) -> _ChairDesign:
    """A random chair model of a kind: ``legs`` (four legs, solid or railed back, sometimes
    arms), ``office`` (five-star base, column, padded seat and back, often arms) or
    ``lounge`` (an upholstered armchair)."""
    frame = pal.pick("metal") if kind == "office" else pal.furniture()
    fabric = pal.pick("fabric")
    seat = fabric if kind != "legs" or rng.random() < 0.5 else pal.near(frame, 6)
    back = seat if rng.random() < 0.7 else pal.near(frame, 6)
    if kind == "lounge":
        return _ChairDesign(
            kind, width=rng.uniform(0.7, 0.9), depth=rng.uniform(0.7, 0.85),
            seat_h=rng.uniform(0.38, 0.46), seat_t=rng.uniform(0.08, 0.13),
            back_h=rng.uniform(0.7, 0.95), back_t=rng.uniform(0.14, 0.22),
            arms=rng.random() < 0.85, arm_h=rng.uniform(0.55, 0.66),
            leg=rng.choice([0.0, rng.uniform(0.06, 0.14)]), round_legs=True, rails=0,
            frame=pal.near(fabric, 4) * 0.7, seat=fabric, back=fabric)
    office = kind == "office"
    return _ChairDesign(
        kind, width=rng.uniform(0.44, 0.52) if office else rng.uniform(0.4, 0.5),
        depth=rng.uniform(0.44, 0.5) if office else rng.uniform(0.4, 0.5),
        seat_h=rng.uniform(0.44, 0.5),
        seat_t=rng.uniform(0.06, 0.1) if office else rng.uniform(0.03, 0.06),
        back_h=rng.uniform(0.35, 0.6) if office else rng.uniform(0.3, 0.48),
        back_t=rng.uniform(0.04, 0.08) if office else rng.uniform(0.02, 0.045),
        arms=rng.random() < (0.6 if office else 0.25), arm_h=rng.uniform(0.18, 0.24),
        leg=rng.uniform(0.025, 0.045), round_legs=rng.random() < 0.4,
        rails=0 if office or rng.random() < 0.55 else int(rng.integers(1, 4)),
        frame=frame, seat=seat, back=back)


def _chair(d: _ChairDesign, origin: np.ndarray, yaw: float, base_turn: float = 0.0
           ) -> _Builder:
    """A chair (nyu40 chair) with the seat centred at ``origin``, facing local +y;
    ``base_turn`` (rad) turns an office chair's star base."""
    b = _Builder(CHAIR, origin, yaw)
    w, dp, sh = d.width / 2, d.depth / 2, d.seat_h
    if d.kind == "lounge":
        arm = (0.18 if d.width > 0.8 else 0.1) if d.arms else 0.0
        if d.leg > 0:
            for sx in (-1, 1):
                for sy in (-1, 1):
                    b.cyl(sx * (w - 0.05), sy * (dp - 0.05), 0.025, 0.025, 0, d.leg, d.frame, n=6)
        b.box(-w, w, -dp, dp, d.leg, sh - d.seat_t, d.seat)
        b.box(-w + arm, w - arm, -dp + d.back_t, dp - 0.01, sh - d.seat_t, sh, d.seat * 1.05)
        b.box(-w, w, -dp, -dp + d.back_t, sh - d.seat_t, d.back_h, d.back)
        if d.arms:
            for x0 in (-w, w - arm):
                b.box(x0, x0 + arm, -dp + d.back_t, dp, sh - d.seat_t, d.arm_h, d.seat * 0.97)
        return b
    if d.kind == "office":
        base_r = 0.3
        for k in range(5):
            a = base_turn + 2 * np.pi * k / 5
            b.rbox(np.cos(a) * base_r / 2, np.sin(a) * base_r / 2, base_r / 2, 0.02, a, 0.04,
                   0.08, d.frame)
            b.cyl(np.cos(a) * (base_r - 0.025), np.sin(a) * (base_r - 0.025), 0.022, 0.022, 0,
                  0.04, d.frame * 0.4, n=6)
        b.cyl(0, 0, 0.03, 0.03, 0.08, sh - d.seat_t - 0.04, d.frame)
        b.box(-0.1, 0.1, -0.1, 0.1, sh - d.seat_t - 0.04, sh - d.seat_t, d.frame * 0.5)
        b.box(-w, w, -dp, dp, sh - d.seat_t, sh, d.seat)
        b.box(-0.03, 0.03, -dp - 0.03, -dp + 0.01, sh - d.seat_t - 0.02, sh + 0.1, d.frame * 0.5)
        b.box(-w + 0.02, w - 0.02, -dp - 0.02 - d.back_t, -dp - 0.02, sh + 0.06,
              sh + 0.06 + d.back_h, d.back)
        if d.arms:
            for sx in (-1, 1):
                b.box(sx * w - 0.02 - 0.01 * sx, sx * w + 0.02 - 0.01 * sx, -0.04, 0.04, sh,
                      sh + d.arm_h - 0.03, d.frame * 0.5)
                b.box(sx * w - 0.04, sx * w + 0.03, -0.16, 0.12, sh + d.arm_h - 0.03,
                      sh + d.arm_h, d.frame * 0.4)
        return b
    leg = d.leg
    for sx in (-1, 1):
        for sy in (-1, 1):
            cx, cy = sx * (w - leg / 2 - 0.005), sy * (dp - leg / 2 - 0.005)
            top = sh + d.back_h if (sy < 0 and d.rails) else sh - d.seat_t
            if d.round_legs:
                b.cyl(cx, cy, leg / 2, leg / 2, 0, top, d.frame, n=6)
            else:
                b.box(cx - leg / 2, cx + leg / 2, cy - leg / 2, cy + leg / 2, 0, top, d.frame)
    b.box(-w, w, -dp, dp, sh - d.seat_t, sh, d.seat)
    if d.rails:
        y = -dp + 0.005 + leg / 2
        for k in range(d.rails):
            z = sh + d.back_h * (1 - 0.3 * k)
            b.box(-w + 0.005 + leg, w - 0.005 - leg, y - d.back_t / 2, y + d.back_t / 2,
                  z - 0.06, z, d.back)
    else:
        b.box(-w + 0.005, w - 0.005, -dp, -dp + d.back_t, sh, sh + d.back_h, d.back)
    if d.arms:
        for x0 in (-w, w - 0.045):
            b.box(x0, x0 + 0.045, -dp + d.back_t, dp - 0.02, sh + d.arm_h - 0.03, sh + d.arm_h,
                  d.frame)
            b.box(x0 + 0.005, x0 + 0.04, dp - 0.06, dp - 0.025, sh, sh + d.arm_h - 0.03, d.frame)
    return b


def _seat_chair(room: _Room, design: _ChairDesign, edge: np.ndarray, yaw: float,
                tucked: bool) -> bool:
    """Place a chair facing ``yaw`` whose front edge is at ``edge`` (xy): pushed in under a
    table or desk as far as it goes without collision, or pulled out and turned."""
    rng = room.rng
    forward = np.array([-np.sin(yaw), np.cos(yaw)])
    centre = edge - forward * (design.depth / 2 + 0.03)
    if tucked:
        options = [(t, yaw + rng.normal(0, 0.03)) for t in (0.8, 0.55, 0.3, 0.0)]
    else:
        options = [(-rng.uniform(0.05, 0.4), yaw + rng.normal(0, 0.35)), (0.0, yaw)]
    for tuck, turn in options:
        chair = _chair(design, centre + forward * tuck * design.depth, turn,
                       rng.uniform(0, 2 * np.pi))
        if room.try_add(chair):
            return True
    return False


def _sofa(rng: np.random.Generator, pal: _Palette, origin: np.ndarray, yaw: float,
          width: float, depth: float, chaise: float = 0.0) -> list[_Builder]:
    """A sofa (back against local y = 0, facing +y) with seat and back cushions, arms, an
    optional chaise of ``chaise`` metres on the +x end (an L sofa), and pillows."""
    b = _Builder(SOFA, origin, yaw)
    fabric = pal.pick("fabric")
    leg = 0.0 if rng.random() < 0.5 else rng.uniform(0.05, 0.14)
    seat_z, cushion = rng.uniform(0.26, 0.34), rng.uniform(0.09, 0.14)
    back_t, back_h = rng.uniform(0.15, 0.24), rng.uniform(0.72, 0.92)
    arm_w, arm_h = rng.uniform(0.1, 0.24), rng.uniform(0.52, 0.66)
    arms = rng.random() < 0.9
    w = width / 2
    inner = w - (arm_w if arms else 0.0)
    if leg:
        feet = [(-w + 0.05, 0.05), (w - 0.05, 0.05), (-w + 0.05, depth - 0.05),
                (w - 0.05, depth - 0.05)]
        if chaise:
            feet[3] = (w - 0.05, depth + chaise - 0.05)
        for x, y in feet:
            b.cyl(x, y, 0.025, 0.025, 0, leg, fabric * 0.4, n=6)
    b.box(-w, w, 0, depth, leg, seat_z, fabric)
    b.box(-w, w, 0, back_t, seat_z, back_h, fabric)
    n = max(1, int(round(2 * inner / 0.62)))
    xs = np.linspace(-inner, inner, n + 1)
    back_cushions = rng.random() < 0.5
    front_of_back = back_t + (0.12 if back_cushions else 0.0)
    for xa, xb in zip(xs[:-1], xs[1:]):
        b.box(xa + _GAP_M, xb - _GAP_M, back_t, depth - 0.01, seat_z, seat_z + cushion,
              fabric * 1.04)
        if back_cushions:
            b.box(xa + _GAP_M, xb - _GAP_M, back_t, front_of_back, seat_z + cushion,
                  back_h - 0.04, fabric * 1.02)
    if arms:
        b.box(-w, -w + arm_w, back_t, depth, seat_z, arm_h, fabric * 0.97)
    if chaise:
        b.box(w - depth, w, depth, depth + chaise, leg, seat_z, fabric)
        b.box(w - depth + 0.01, w - (arm_w if arms else 0.0), depth, depth + chaise - 0.01,
              seat_z, seat_z + cushion, fabric * 1.04)
        if arms:
            b.box(w - arm_w, w, back_t, depth + chaise, seat_z, arm_h, fabric * 0.97)
    elif arms:
        b.box(w - arm_w, w, back_t, depth, seat_z, arm_h, fabric * 0.97)
    out = [b]
    pillow = pal.pick("bright" if rng.random() < 0.5 else "fabric")
    for x in rng.choice(xs[:-1] + np.diff(xs) / 2, size=int(rng.integers(0, min(3, n) + 1)),
                        replace=False):
        p = _Builder(PILLOW, origin, yaw)
        top = seat_z + cushion
        p.box(x - 0.2, x + 0.2, front_of_back + 0.005, front_of_back + 0.13, top, top + 0.36,
              pal.near(pillow, 6))
        out.append(p)
    return out


# --------------------------------------------------------------------------- tables, desks


def _table(rng: np.random.Generator, pal: _Palette, origin: np.ndarray, yaw: float, hx: float,
           hy: float, height: float, label: int = TABLE, round_top: bool = False) -> _Builder:
    """A table centred at ``origin``: rectangular (legs, optional apron, lower shelf or end
    panels) or round/elliptic (pedestal or four legs); ``hx, hy`` half sizes (m)."""
    b = _Builder(label, origin, yaw)
    top_colour = pal.furniture()
    leg_colour = top_colour if rng.random() < 0.6 else pal.pick("metal")
    t = rng.uniform(0.025, 0.05)
    under = height - t
    if round_top:
        b.cyl(0, 0, hx, hy, under, height, top_colour, n=int(rng.choice([10, 12, 16])))
        if rng.random() < 0.6:
            b.cyl(0, 0, 0.05, 0.05, 0.04, under, leg_colour)
            b.cyl(0, 0, min(hx, hy) * 0.55, min(hx, hy) * 0.55, 0, 0.04, leg_colour, n=10)
        else:
            for k in range(4):
                a = np.pi / 4 + k * np.pi / 2
                b.cyl(0.6 * hx * np.cos(a), 0.6 * hy * np.sin(a), 0.025, 0.025, 0, under,
                      leg_colour, n=6)
        return b
    b.box(-hx, hx, -hy, hy, under, height, top_colour)
    leg, inset = rng.uniform(0.035, 0.07), rng.uniform(0.02, 0.08)
    lx, ly = hx - inset - leg / 2, hy - inset - leg / 2
    if rng.random() < 0.2 and hx > 0.4:  # two end panels and a stretcher
        for sx in (-1, 1):
            b.box(sx * lx - 0.015, sx * lx + 0.015, -ly, ly, 0, under, leg_colour)
        b.box(-lx, lx, -0.02, 0.02, 0.15, 0.3, leg_colour)
        return b
    round_legs = rng.random() < 0.35
    for sx in (-1, 1):
        for sy in (-1, 1):
            if round_legs:
                b.cyl(sx * lx, sy * ly, leg / 2, leg / 2, 0, under, leg_colour, n=8)
            else:
                b.box(sx * lx - leg / 2, sx * lx + leg / 2, sy * ly - leg / 2, sy * ly + leg / 2,
                      0, under, leg_colour)
    if rng.random() < 0.4:
        apron = rng.uniform(0.05, 0.1)
        b.box(-lx, lx, ly - 0.01, ly + 0.01, under - apron, under, leg_colour)
        b.box(-lx, lx, -ly - 0.01, -ly + 0.01, under - apron, under, leg_colour)
        b.box(-lx - 0.01, -lx + 0.01, -ly, ly, under - apron, under, leg_colour)
        b.box(lx - 0.01, lx + 0.01, -ly, ly, under - apron, under, leg_colour)
    if height < 0.55 and rng.random() < 0.5:
        b.box(-lx, lx, -ly, ly, 0.1, 0.13, top_colour)
    return b


def _desk(rng: np.random.Generator, pal: _Palette, origin: np.ndarray, yaw: float, width: float,
          depth: float, height: float, colour: np.ndarray, support: str) -> tuple[_Builder, float]:
    """A desk with its back at local y = 0: a top on legs, on side panels with a modesty
    panel, or on one drawer pedestal. Returns the desk and the x of its knee space."""
    b = _Builder(DESK, origin, yaw)
    t = rng.uniform(0.025, 0.04)
    under, w = height - t, width / 2
    b.box(-w, w, 0, depth, under, height, colour)
    knee = 0.0
    if support == "legs":
        for sx in (-1, 1):
            for y in (0.05, depth - 0.05):
                b.box(sx * (w - 0.05) - 0.025, sx * (w - 0.05) + 0.025, y - 0.025, y + 0.025, 0,
                      under, pal.near(colour * 0.8))
        return b, knee
    if support == "pedestal":
        side = 1 if rng.random() < 0.5 else -1
        pw = min(rng.uniform(0.38, 0.45), w)
        x0, x1 = sorted((side * (w - 0.01), side * (w - 0.01 - pw)))
        b.box(x0, x1, 0.02, depth - 0.03, 0, under, colour)
        drawers = int(rng.integers(2, 4))
        for k in range(drawers):
            za, zb = under * k / drawers, under * (k + 1) / drawers
            b.box(x0 + _GAP_M, x1 - _GAP_M, depth - 0.03, depth - 0.01, za + _GAP_M, zb - _GAP_M,
                  pal.near(colour, 5))
        b.box(-side * (w - 0.01) - 0.015, -side * (w - 0.01) + 0.015, 0.02, depth - 0.02, 0,
              under, colour)
        return b, -side * pw / 2
    for sx in (-1, 1):
        b.box(sx * (w - 0.015) - 0.015, sx * (w - 0.015) + 0.015, 0.01, depth - 0.01, 0, under,
              colour)
    b.box(-w + 0.03, w - 0.03, 0.02, 0.04, 0.3, under, colour)
    return b, knee


# --------------------------------------------------------------------------- storage


@dataclass
class _CabinetDesign:
    """A cabinet style shared by a run of units."""

    body: np.ndarray
    front: np.ndarray
    handle: np.ndarray
    fronts: str        # "doors", "drawers" or "mixed"
    plinth: float
    top_board: bool


def _cabinet_design(rng: np.random.Generator, pal: _Palette, fronts: str | None = None,
                    metal: bool = False) -> _CabinetDesign:
    """A random cabinet style: colours, fronts (random unless given), plinth, top board."""
    body = pal.pick("metal") if metal else pal.furniture()
    front = body if rng.random() < 0.7 else pal.furniture()
    return _CabinetDesign(
        body=body, front=front,
        handle=pal.pick("metal") if rng.random() < 0.6 else body * 0.7,
        fronts=fronts or ("doors", "drawers", "mixed")[rng.integers(3)],
        plinth=float(rng.choice([0.0, rng.uniform(0.05, 0.1)])), top_board=rng.random() < 0.3)


def _cabinet(d: _CabinetDesign, origin: np.ndarray, yaw: float, width: float, depth: float,
             height: float, label: int = CABINET) -> _Builder:
    """A free-standing cabinet unit (see :func:`_cabinet_parts`) centred at ``origin``."""
    return _cabinet_parts(_Builder(label, origin, yaw), d, 0.0, width, depth, height)


def _cabinet_parts(b: _Builder, d: _CabinetDesign, cx: float, width: float, depth: float,
                   height: float, z0: float = 0.0, cavity: float = 0.0) -> _Builder:
    """Add a cabinet unit centred at local x = ``cx`` with its back at local y = 0 to ``b``
    (one unit, or one of a run annotated as a single instance): carcass, plinth, door or
    drawer fronts with handles. ``z0`` lifts it (wall cabinets); ``cavity`` leaves the top
    that many metres open behind a front apron (the space for an inset sink basin)."""
    w, ft = width / 2, 0.02
    plinth = d.plinth if z0 == 0 else 0.0
    top = z0 + height
    body_top = top - cavity
    if plinth:
        b.box(cx - w + 0.01, cx + w - 0.01, 0, depth - ft - 0.05, z0, z0 + plinth, d.body * 0.6)
    b.box(cx - w, cx + w, 0, depth - ft, z0 + plinth, body_top, d.body)
    zf = z0 + plinth
    rows: list[tuple[float, float, int]] = []  # (bottom, top, columns)
    cols = 1 if width < 0.6 else 2
    if d.fronts == "drawers" or (d.fronts == "mixed" and body_top - zf < 0.5):
        n = max(1, int(round((body_top - zf) / 0.25)))
        rows = [(zf + (body_top - zf) * k / n, zf + (body_top - zf) * (k + 1) / n, 1)
                for k in range(n)]
    elif d.fronts == "mixed":
        rows = [(zf, body_top - 0.18, cols), (body_top - 0.18, body_top, 1)]
    else:
        rows = [(zf, body_top, cols)]
    for za, zb, n in rows:
        for c in range(n):
            xa, xb = cx - w + width * c / n, cx - w + width * (c + 1) / n
            b.box(xa + _GAP_M, xb - _GAP_M, depth - ft, depth, za + _GAP_M, zb - _GAP_M, d.front)
            if n == 1 and zb - za < 0.45:  # drawer: a horizontal handle
                zc = (za + zb) / 2 if zb - za < 0.3 else zb - 0.08
                b.box(cx - 0.07, cx + 0.07, depth, depth + 0.025, zc - 0.012, zc + 0.012,
                      d.handle)
            else:  # door: a vertical handle by the free edge
                hx = xb - 0.05 if (n == 1 or c == 0) else xa + 0.03
                zc = (za + 0.15 if z0 > 0 else zb - 0.15 if zb < 1.2 else (za + zb) / 2)
                zc = min(max(zc, za + 0.08), zb - 0.08)
                b.box(hx, hx + 0.02, depth, depth + 0.025, zc - 0.06, zc + 0.06, d.handle)
    if cavity:
        b.box(cx - w, cx + w, depth - ft, depth, body_top, top, d.front)
    elif d.top_board and z0 == 0:
        b.box(cx - w, cx + w, 0, depth + 0.01, top, top + 0.025, d.body * 0.9)
    return b


def _add_cabinet_run(room: _Room, d: _CabinetDesign, origin: np.ndarray, yaw: float,
                     units: list[tuple[float, float]], depth: float, height: float,
                     z0: float = 0.0, merge: bool = False) -> None:
    """Identical cabinets side by side, given as (centre x, width) in the frame (origin,
    yaw): separate instances, or with ``merge`` one instance (as ScanNet's annotators often
    label a flush run) if every unit fits. Units that do not fit are left out."""
    singles = [_cabinet_parts(_Builder(CABINET, origin, yaw), d, cx, w, depth, height, z0)
               for cx, w in units]
    fits = [not room.blocked(unit.solids) for unit in singles]
    if merge and len(units) > 1 and all(fits):
        run = _Builder(CABINET, origin, yaw)
        for cx, w in units:
            _cabinet_parts(run, d, cx, w, depth, height, z0)
        room.add(run)
        return
    for unit, fit in zip(singles, fits):
        if fit:
            room.try_add(unit)


def _bookshelf(rng: np.random.Generator, pal: _Palette, origin: np.ndarray, yaw: float,
               width: float, depth: float, height: float, colour: np.ndarray
               ) -> list[_Builder]:
    """An open bookshelf (sides, back, top, kick board, shelf boards) with rows of books."""
    b = _Builder(BOOKSHELF, origin, yaw)
    bt, w = rng.uniform(0.018, 0.03), width / 2
    kick = rng.uniform(0.04, 0.1)
    b.box(-w, -w + bt, 0, depth, 0, height, colour)
    b.box(w - bt, w, 0, depth, 0, height, colour)
    back = 0.012 if rng.random() < 0.85 else 0.0
    if back:
        b.box(-w + bt, w - bt, 0, back, 0, height, pal.near(colour, 8))
    b.box(-w + bt, w - bt, 0, depth, height - bt, height, colour)
    b.box(-w + bt, w - bt, back, depth, 0, kick, colour)
    levels = max(1, int((height - kick) / rng.uniform(0.28, 0.4)))
    boards = kick + (height - bt - kick) * np.arange(1, levels) / levels
    for z in boards:
        b.box(-w + bt, w - bt, back, depth, z - bt, z, colour)
    out = [b]
    floors = np.concatenate([[kick], boards])
    ceilings = np.concatenate([boards - bt, [height - bt]])
    for zf, zc in zip(floors, ceilings):
        if rng.random() > 0.65 or zc - zf < 0.15:
            continue
        books = _Builder(BOOKS, origin, yaw)
        x = rng.uniform(-w + bt, -w + bt + 0.3 * (width - 2 * bt))
        end = rng.uniform(x + 0.1, w - bt)
        while x < end - 0.03:
            dx = min(rng.uniform(0.04, 0.15), end - x)
            deep = back + 0.005 + rng.uniform(0.15, max(0.16, depth - back - 0.03))
            books.box(x, x + dx - 0.002, back + 0.005, deep, zf,
                      zf + rng.uniform(0.55, 0.92) * (zc - zf), pal.pick("bright"))
            x += dx
        out.append(books)
    return out


def _fridge(rng: np.random.Generator, pal: _Palette, origin: np.ndarray, yaw: float,
            width: float, depth: float, height: float) -> _Builder:
    """A refrigerator: body, two doors (freezer above or below, or side by side), handles."""
    b = _Builder(REFRIGERATOR, origin, yaw)
    colour = pal.pick("ceramic" if rng.random() < 0.5 else "metal")
    w = width / 2
    b.box(-w, w, 0, depth - 0.04, 0, height, colour)
    handle = pal.pick("metal")
    if width > 0.8 and rng.random() < 0.6:
        for xa, xb, hx in ((-w, 0.0, -0.05), (0.0, w, 0.03)):
            b.box(xa + _GAP_M, xb - _GAP_M, depth - 0.04, depth, 0.05, height - _GAP_M, colour)
            b.box(hx, hx + 0.02, depth, depth + 0.04, 0.8, 1.4, handle)
        return b
    split = height * (0.68 if rng.random() < 0.5 else 0.32)
    for za, zb in ((0.05, split), (split, height)):
        b.box(-w + _GAP_M, w - _GAP_M, depth - 0.04, depth, za + _GAP_M, zb - _GAP_M, colour)
        b.box(w - 0.07, w - 0.05, depth, depth + 0.04, za + 0.1 * (zb - za),
              zb - 0.1 * (zb - za), handle)
    return b


def _tray(b: _Builder, x0: float, x1: float, y0: float, y1: float, z0: float, z1: float,
          wall: float, colour: np.ndarray) -> None:
    """An open-topped box (a basin or tub): bottom plate and four walls ``wall`` thick."""
    b.box(x0, x1, y0, y1, z0, z0 + wall, colour)
    b.box(x0, x0 + wall, y0, y1, z0, z1, colour)
    b.box(x1 - wall, x1, y0, y1, z0, z1, colour)
    b.box(x0 + wall, x1 - wall, y0, y0 + wall, z0, z1, colour)
    b.box(x0 + wall, x1 - wall, y1 - wall, y1, z0, z1, colour)


def _counter_run(rng: np.random.Generator, pal: _Palette, spot: _Spot,
                 units: list[tuple[str, float]], depth: float, height: float) -> list[_Builder]:
    """A counter along a wall over a run of units: ``cabinet`` (a base cabinet), ``sink``
    (a cabinet under a sink basin inset in the top), ``stove`` (otherfurniture; it splits
    the counter into two instances) and ``open`` (knee space). The base cabinets are
    separate instances or, as ScanNet's annotators often have them, a single one.
    Returns counters, cabinets, sinks and stove."""
    top_t, overhang = rng.uniform(0.03, 0.045), rng.uniform(0.02, 0.04)
    top_colour = pal.pick(("laminate", "wood", "metal", "dark")[rng.integers(4)])
    design = _cabinet_design(rng, pal, "mixed" if rng.random() < 0.5 else "doors")
    design.top_board = False
    ceramic = pal.pick("ceramic" if rng.random() < 0.7 else "metal")
    shared = _Builder(CABINET, spot.origin, spot.yaw) if rng.random() < 0.5 else None
    cabinets: list[_Builder] = [shared] if shared else []
    out: list[_Builder] = []
    tops: list[list[tuple[float, float, float, float]]] = [[]]  # (x0, x1, y0, y1) per counter
    front = depth + overhang
    under = height - top_t
    x = -sum(w for _, w in units) / 2
    for kind, width in units:
        cx = x + width / 2
        if kind == "stove":
            out.append(_stove(rng, pal, spot, x, width, depth, height))
            tops.append([])
        elif kind == "sink":
            bx = min(rng.uniform(0.17, 0.28), width / 2 - 0.07)
            # Basin between a 9 cm strip for the tap and the cabinet's front apron.
            by = min(rng.uniform(0.15, 0.2), (depth - 0.12) / 2)
            cy = 0.09 + by + rng.uniform(0, max(0.0, depth - 0.115 - 2 * by))
            bottom = under - rng.uniform(0.12, 0.2)
            out.append(_inset_sink(rng, pal, spot, ceramic, cx, cy, bx, by, bottom, height))
            unit = shared or _Builder(CABINET, spot.origin, spot.yaw)
            _cabinet_parts(unit, design, cx, width - 2 * _GAP_M, depth, under,
                           cavity=under - bottom + 0.03)
            cabinets += [] if shared else [unit]
            tops[-1] += [(x, cx - bx, 0, front), (cx + bx, x + width, 0, front),
                         (cx - bx, cx + bx, 0, cy - by), (cx - bx, cx + bx, cy + by, front)]
        else:
            if kind == "cabinet":
                unit = shared or _Builder(CABINET, spot.origin, spot.yaw)
                _cabinet_parts(unit, design, cx, width - 2 * _GAP_M, depth, under)
                cabinets += [] if shared else [unit]
            tops[-1].append((x, x + width, 0, front))
        x += width
    for boxes in tops:
        if boxes:
            counter = _Builder(COUNTER, spot.origin, spot.yaw)
            for x0, x1, y0, y1 in boxes:
                counter.box(x0, x1, y0, y1, under, height, top_colour)
            out.append(counter)
    return out + [c for c in cabinets if c.solids]


def _stove(rng: np.random.Generator, pal: _Palette, spot: _Spot, x: float, width: float,
           depth: float, height: float) -> _Builder:
    """A cooker (otherfurniture) in a counter run, from local x to x + width: body, hob
    with burners at counter height, oven door and handle."""
    stove = _Builder(OTHERFURNITURE, spot.origin, spot.yaw)
    body = pal.pick("metal" if rng.random() < 0.6 else "ceramic")
    x0, x1 = x + _GAP_M, x + width - _GAP_M
    stove.box(x0, x1, 0, depth, 0, height - 0.02, body)
    stove.box(x0, x1, 0, depth, height - 0.02, height, pal.pick("dark"))
    for bx in (0.25, 0.75):
        for by in (0.3, 0.7):
            stove.cyl(x + width * bx, depth * by, 0.07, 0.07, height, height + 0.012,
                      pal.pick("dark") * 0.6, n=8)
    stove.box(x + 0.04, x + width - 0.04, depth, depth + 0.015, 0.12, height - 0.18, body * 0.8)
    stove.box(x + 0.08, x + width - 0.08, depth + 0.015, depth + 0.04, height - 0.22,
              height - 0.2, pal.pick("metal"))
    return stove


def _inset_sink(rng: np.random.Generator, pal: _Palette, spot: _Spot, colour: np.ndarray,
                cx: float, cy: float, bx: float, by: float, bottom: float, height: float
                ) -> _Builder:
    """A sink basin (centre cx, cy, half sizes bx, by; metres) set into a counter top at
    ``height`` with its bottom at ``bottom``, and a tap behind it."""
    sink = _Builder(SINK, spot.origin, spot.yaw)
    wt, rim = 0.01, height + 0.004  # basin walls: only inner faces and rims are seen
    sink.box(cx - bx, cx + bx, cy - by, cy + by, bottom - wt, bottom, colour, skip="sd")
    sink.box(cx - bx, cx - bx + wt, cy - by, cy + by, bottom, rim, colour, skip="bfld")
    sink.box(cx + bx - wt, cx + bx, cy - by, cy + by, bottom, rim, colour, skip="bfrd")
    sink.box(cx - bx + wt, cx + bx - wt, cy - by, cy - by + wt, bottom, rim, colour, skip="blrd")
    sink.box(cx - bx + wt, cx + bx - wt, cy + by - wt, cy + by, bottom, rim, colour, skip="flrd")
    tap, tap_h = pal.pick("metal"), rng.uniform(0.15, 0.3)
    sink.cyl(cx, cy - by - 0.04, 0.018, 0.018, height, height + tap_h, tap, n=6)
    sink.box(cx - 0.012, cx + 0.012, cy - by - 0.04, cy - by + 0.07, height + tap_h - 0.025,
             height + tap_h, tap)
    return sink


# --------------------------------------------------------------------------- bathroom


def _toilet(rng: np.random.Generator, pal: _Palette, origin: np.ndarray, yaw: float) -> _Builder:
    """A toilet against the wall: cistern (or a wall-hung bowl and flush plate), bowl on a
    pedestal and seat."""
    b = _Builder(TOILET, origin, yaw)
    white = pal.pick("ceramic")
    rx, ry = rng.uniform(0.17, 0.2), rng.uniform(0.23, 0.28)
    rim = rng.uniform(0.38, 0.42)
    if rng.random() < 0.75:
        tw, td = rng.uniform(0.36, 0.48), rng.uniform(0.15, 0.22)
        b.box(-tw / 2, tw / 2, 0, td, rim - 0.02, rng.uniform(0.72, 0.85), white)
        back, low = td - 0.03, 0.0
    else:
        b.box(-0.12, 0.12, 0, 0.012, 0.9, 1.05, pal.pick("metal"))
        back, low = 0.0, rng.uniform(0.22, 0.28)
    cy = back + ry
    if low == 0.0:
        b.cyl(0, cy - 0.04, rx * 0.6, ry * 0.6, 0, 0.16, white, n=10)
    b.box(-rx * 0.6, rx * 0.6, 0 if low else back - 0.01, cy, max(low, 0.16), rim, white)
    b.cyl(0, cy, rx, ry, max(low, 0.16), rim, white, n=12)
    seat = white if rng.random() < 0.7 else pal.pick("dark")
    b.cyl(0, cy + 0.01, rx + 0.01, ry + 0.01, rim, rim + 0.03, seat, n=12)
    return b


def _basin(rng: np.random.Generator, pal: _Palette, origin: np.ndarray, yaw: float) -> _Builder:
    """A standalone wash basin against the wall, on a pedestal or wall hung, with a tap."""
    b = _Builder(SINK, origin, yaw)
    white = pal.pick("ceramic")
    w, d = rng.uniform(0.45, 0.65), rng.uniform(0.35, 0.5)
    top, bh = rng.uniform(0.8, 0.9), rng.uniform(0.15, 0.22)
    _tray(b, -w / 2, w / 2, 0, d, top - bh, top, rng.uniform(0.03, 0.05), white)
    if rng.random() < 0.6:
        b.cyl(0, d / 2 - 0.03, 0.09, 0.07, 0, top - bh, white, n=10)
    tap = pal.pick("metal")
    b.cyl(0, 0.02, 0.016, 0.016, top, top + 0.12, tap, n=6)
    b.box(-0.012, 0.012, 0.0, 0.12, top + 0.095, top + 0.12, tap)
    return b


def _bathtub(rng: np.random.Generator, pal: _Palette, origin: np.ndarray, yaw: float,
             length: float, width: float) -> list[_Builder]:
    """A bathtub along the wall, sometimes with a pleated shower curtain on its front rim."""
    b = _Builder(BATHTUB, origin, yaw)
    height, wall = rng.uniform(0.5, 0.6), rng.uniform(0.06, 0.1)
    _tray(b, -length / 2, length / 2, 0, width, 0, height, wall, pal.pick("ceramic"))
    out = [b]
    if rng.random() < 0.5:
        c = _Builder(SHOWER_CURTAIN, origin, yaw)
        amp, wavelength = rng.uniform(0.01, 0.025), rng.uniform(0.08, 0.15)
        span = length * rng.uniform(0.3, 1.0)
        xa = -length / 2 + 0.02 if rng.random() < 0.5 else length / 2 - 0.02 - span
        x = np.linspace(xa, xa + span, max(int(span / (wavelength / 5)), 2))
        yc = width - wall / 2
        top = rng.uniform(1.85, 2.0)
        c.sheet(np.stack([x, yc + amp * np.sin(2 * np.pi * x / wavelength)], 1), height + 0.05,
                top, pal.pick("bright" if rng.random() < 0.5 else "ceramic"))
        c.occluder(xa, xa + span, wall, yc - amp - 0.012, height + 0.05, top)
        out.append(c)
    return out


def _add_bathtub(room: _Room, pal: _Palette) -> None:
    """A bathtub in a corner; its shower curtain's volume is kept free."""
    rng = room.rng
    length, width = rng.uniform(1.5, 1.8), rng.uniform(0.7, 0.8)
    spot = room.on_wall(length, width, 0.65, corner=True, front=0.4)
    if spot is None:
        return
    parts = _bathtub(rng, pal, spot.origin, spot.yaw, length, width)
    if room.try_add(*parts) and len(parts) > 1:
        room.keep_out(_frame_box(spot.origin, spot.yaw, -length / 2, length / 2, width - 0.15,
                                 width + 0.05, 0.62, 2.0))


# --------------------------------------------------------------------------- small things


def _bed(rng: np.random.Generator, pal: _Palette, origin: np.ndarray, yaw: float, width: float,
         length: float) -> list[_Builder]:
    """A bed with its headboard at local y = 0: frame (on legs or a plinth), mattress,
    blanket, optional footboard, and pillows (nyu40 pillow)."""
    b = _Builder(BED, origin, yaw)
    frame = pal.furniture()
    bedding = pal.pick("fabric" if rng.random() < 0.6 else "ceramic")
    w = width / 2
    leg = rng.uniform(0.08, 0.2) if rng.random() < 0.5 else 0.0
    frame_top, mattress = rng.uniform(0.25, 0.4), rng.uniform(0.15, 0.25)
    head_t, head_h = rng.uniform(0.04, 0.1), rng.uniform(0.8, 1.2)
    b.box(-w - 0.02, w + 0.02, 0, head_t, 0, head_h, frame)
    if leg:
        for sx in (-1, 1):
            for y in (head_t + 0.03, length - 0.03):
                b.box(sx * (w - 0.03) - 0.025, sx * (w - 0.03) + 0.025, y - 0.025, y + 0.025, 0,
                      leg, frame)
    b.box(-w, w, head_t, length, leg, frame_top, frame)
    top = frame_top + mattress
    b.box(-w + 0.015, w - 0.015, head_t + 0.015, length - 0.015, frame_top, top,
          pal.pick("ceramic"))
    foot = rng.random() < 0.3
    pillow_end = head_t + 0.04 + rng.uniform(0.3, 0.42)
    if rng.random() < 0.75:
        b.box(-w, w, pillow_end + rng.uniform(0.02, 0.3), length - (0.06 if foot else 0.0),
              frame_top - 0.05, top + 0.03, bedding)
    if foot:
        b.box(-w, w, length - 0.05, length, 0, top + rng.uniform(0.05, 0.2), frame)
    out = [b]
    n = 1 if width < 1.25 else 2
    pillow = pal.pick("ceramic" if rng.random() < 0.5 else "fabric")
    for k in range(n):
        x0 = -w + 0.05 + (width - 0.1) * k / n
        p = _Builder(PILLOW, origin, yaw)
        p.box(x0 + 0.02, x0 + (width - 0.1) / n - 0.02, head_t + 0.04, pillow_end, top,
              top + rng.uniform(0.1, 0.16), pal.near(pillow, 5))
        out.append(p)
    return out


def _lamp(rng: np.random.Generator, pal: _Palette, origin: np.ndarray, z0: float,
          floor_lamp: bool = False) -> _Builder:
    """A table lamp (base, stem, shade) or a floor lamp standing at height ``z0``."""
    b = _Builder(LAMP, origin, 0.0)
    base, shade = pal.pick("metal"), pal.pick("ceramic" if rng.random() < 0.6 else "fabric")
    stem = rng.uniform(1.3, 1.6) if floor_lamp else rng.uniform(0.2, 0.35)
    r = rng.uniform(0.12, 0.2) if floor_lamp else rng.uniform(0.09, 0.15)
    b.cyl(0, 0, r * 0.8, r * 0.8, z0, z0 + 0.03, base, n=8)
    b.cyl(0, 0, 0.012, 0.012, z0 + 0.03, z0 + stem, base, n=6)
    b.cyl(0, 0, r, r, z0 + stem, z0 + stem + rng.uniform(0.15, 0.25), shade, n=10)
    return b


def _item(rng: np.random.Generator, pal: _Palette, kind: str, origin: np.ndarray, yaw: float,
          z0: float) -> _Builder:
    """A small object standing at height ``z0`` (m): ``monitor``, ``keyboard``, ``box``,
    ``plant``, ``microwave``, ``laptop``, ``paper``, ``bag``, ``bin`` or ``tv``."""
    if kind == "monitor":
        b = _Builder(OTHERPROP, origin, yaw)
        dark = pal.pick("dark")
        w, h = rng.uniform(0.25, 0.35), rng.uniform(0.3, 0.4)
        b.box(-0.1, 0.1, -0.08, 0.08, z0, z0 + 0.015, dark)
        b.box(-0.03, 0.03, -0.06, -0.03, z0 + 0.015, z0 + 0.12, dark)
        b.box(-w, w, -0.03, 0.0, z0 + 0.1, z0 + 0.1 + h, dark)
    elif kind == "tv":
        b = _Builder(TELEVISION, origin, yaw)
        dark = pal.pick("dark")
        w, h = rng.uniform(0.45, 0.8), rng.uniform(0.45, 0.75)
        b.box(-0.15, 0.15, -0.1, 0.1, z0, z0 + 0.02, dark)
        b.box(-0.04, 0.04, -0.04, 0.0, z0 + 0.02, z0 + 0.1, dark)
        b.box(-w, w, -0.04, 0.02, z0 + 0.08, z0 + 0.08 + h, dark)
    elif kind == "plant":
        b = _Builder(OTHERPROP, origin, yaw)
        r = rng.uniform(0.08, 0.2)
        pot = rng.uniform(0.12, 0.35)
        b.cyl(0, 0, r, r, z0, z0 + pot, pal.pick("ceramic" if rng.random() < 0.5 else "bright"))
        b.cyl(0, 0, r * 1.6, r * 1.6, z0 + pot, z0 + pot + rng.uniform(0.2, 0.7),
              np.array([60.0, 110, 50]) * rng.uniform(0.7, 1.2), n=7)
    elif kind == "bin":
        b = _Builder(OTHERFURNITURE, origin, yaw)
        r = rng.uniform(0.12, 0.2)
        b.cyl(0, 0, r, r, z0, z0 + rng.uniform(0.3, 0.6),
              pal.pick(("metal", "bright", "laminate")[rng.integers(3)]), n=10)
    else:
        label, (sx, sy, sz), family = {
            "keyboard": (OTHERPROP, (0.22, 0.08, 0.025), "dark"),
            "box": (BOX, rng.uniform((0.1, 0.1, 0.1), (0.3, 0.25, 0.4)), "wood"),
            "microwave": (OTHERPROP, (0.25, 0.18, 0.28), "metal"),
            "laptop": (OTHERPROP, (0.17, 0.12, 0.02), "metal"),
            "paper": (OTHERPROP, (0.11, 0.15, 0.01), "ceramic"),
            "bag": (BAG, rng.uniform((0.15, 0.08, 0.25), (0.25, 0.15, 0.45)), "fabric"),
        }[kind]
        b = _Builder(label, origin, yaw)
        b.box(-sx, sx, -sy, sy, z0, z0 + sz, pal.pick(family))
    return b


def _decorate(room: _Room, pal: _Palette, origin: np.ndarray, yaw: float, x0: float, x1: float,
              y0: float, y1: float, z: float, kinds: tuple[str, ...], count: int) -> None:
    """Try to put ``count`` small items of the given kinds on a surface at height ``z``
    spanning ``x0..x1, y0..y1`` in the frame (origin, yaw)."""
    rng = room.rng
    if x1 - x0 < 0.3 or y1 - y0 < 0.2:
        return
    surface = _frame_box(origin, yaw, x0, x1, y0, y1, z - 0.01, z)
    for _ in range(count):
        kind = kinds[rng.integers(len(kinds))]
        local = rng.uniform((x0 + 0.12, y0 + 0.1),
                            (max(x0 + 0.12, x1 - 0.12), max(y0 + 0.1, y1 - 0.1)))
        where = _shift(origin, yaw, *local)
        turn = yaw + (np.pi if kind in ("monitor", "tv") else 0.0) + rng.normal(0, 0.25)
        item = (_lamp(rng, pal, where, z) if kind == "lamp"
                else _item(rng, pal, kind, where, turn, z))
        on_top = all(surface.contains(np.c_[p.poly, np.full(len(p.poly), z)], 0.005).all()
                     for p in item.solids)
        if on_top:
            room.try_add(item)


def _wall_art(room: _Room, pal: _Palette, label: int, count: int, z_range: tuple[float, float],
              width: tuple[float, float], height: tuple[float, float]) -> None:
    """Pictures, mirrors, whiteboards or wall-mounted TVs: thin framed boards on free
    stretches of wall, sometimes in a row of two or three (adjacent instances)."""
    rng = room.rng
    for _ in range(count):
        n = int(rng.integers(1, 4)) if label == PICTURE and rng.random() < 0.4 else 1
        sizes = [(rng.uniform(*width), rng.uniform(*height)) for _ in range(n)]
        gap = rng.uniform(0.05, 0.25)
        total = sum(w for w, _ in sizes) + gap * (n - 1)
        h_max = max(h for _, h in sizes)
        z0 = rng.uniform(*z_range)
        depth = rng.uniform(0.015, 0.04) if label != TELEVISION else rng.uniform(0.04, 0.08)
        spot = room.on_wall(total, depth + 0.01, z0 + h_max, z0=z0 - 0.02, tries=10)
        if spot is None:
            continue
        x = -total / 2
        for w, h in sizes:
            b = _Builder(label, spot.origin, spot.yaw)
            face = pal.pick({MIRROR: "glass", TELEVISION: "dark",
                             WHITEBOARD: "ceramic"}.get(label, "bright"))
            frame = pal.pick("metal" if label != PICTURE
                             else ("wood", "dark", "ceramic")[rng.integers(3)])
            border = rng.uniform(0.01, 0.04)
            b.box(x, x + w, 0, depth, z0, z0 + h, face)
            if label != TELEVISION:
                b.box(x, x + w, 0, depth + 0.008, z0, z0 + border, frame)
                b.box(x, x + w, 0, depth + 0.008, z0 + h - border, z0 + h, frame)
            room.try_add(b)
            x += w + gap


# --------------------------------------------------------------------------- room types


def _wall_run(room: _Room, widths: list[float], depth: float, height: float,
              make: Callable[[np.ndarray, float, float], list[_Builder]], gap: float = 0.0,
              front: float = 0.5) -> None:
    """Units of the given widths side by side along a wall, ``gap`` metres apart (0: they
    touch); ``make(origin, yaw, width)`` builds one unit with its back centre at origin."""
    total = sum(widths) + gap * (len(widths) - 1)
    spot = room.on_wall(total, depth, height, front=front)
    if spot is None:
        return
    x = -total / 2
    for w in widths:
        room.try_add(*make(_shift(spot.origin, spot.yaw, x + w / 2, 0), spot.yaw, w))
        x += w + gap


def _dining(room: _Room, pal: _Palette, chairs: str = "legs", size: float = 1.0) -> None:
    """A dining or meeting table in the open with identical chairs around it."""
    rng = room.rng
    round_top = rng.random() < 0.3
    if round_top:
        hx = hy = rng.uniform(0.45, 0.7) * size
        hx *= rng.uniform(1.0, 1.3)
    else:
        hx, hy = rng.uniform(0.55, 1.1) * size, rng.uniform(0.4, 0.55) * min(size, 1.3)
    design = _chair_design(rng, pal, chairs)
    for shrink in (1.0, 0.8, 0.65):
        spot = room.in_open(hx * shrink + 0.45, hy * shrink + 0.45, 1.0, tries=15)
        if spot is not None:
            hx, hy = hx * shrink, hy * shrink
            break
    else:
        return
    centre, yaw = spot
    height = rng.uniform(0.72, 0.77)
    room.add(_table(rng, pal, centre, yaw, hx, hy, height, TABLE, round_top))
    tucked = rng.random() < 0.6
    if round_top:
        n = int(rng.integers(2, max(3, int(2 * np.pi * hx / (design.width + 0.12))) + 1))
        phase = rng.uniform(0, 2 * np.pi)
        for k in range(n):
            a = phase + 2 * np.pi * k / n
            radial = np.array([np.cos(a), np.sin(a)])
            edge = centre + _rot(yaw) @ (radial * [hx, hy])
            _seat_chair(room, design, edge, yaw + a + np.pi / 2, tucked or rng.random() < 0.3)
        return
    for side in (-1, 1):
        n = int((2 * hx - 0.2) // (design.width + 0.1))
        used = rng.integers(max(0, n - 2), n + 1)
        xs = (np.arange(n) - (n - 1) / 2) * (2 * hx - 0.2) / max(n, 1)
        for x in rng.choice(xs, size=used, replace=False) if n else []:
            edge = _shift(centre, yaw, x, side * hy)
            _seat_chair(room, design, edge, yaw + (0 if side < 0 else np.pi),
                        tucked or rng.random() < 0.3)
    for side in (-1, 1):
        if hy * 2 > design.width + 0.1 and rng.random() < 0.35:
            edge = _shift(centre, yaw, side * hx, 0)
            _seat_chair(room, design, edge, yaw + side * np.pi / 2, tucked)


def _desks(room: _Room, pal: _Palette, count: int, chair_kind: str, on_wall: bool) -> None:
    """``count`` identical desks side by side along a wall (``on_wall``) or as an island of
    two back-to-back rows in the open, with a chair at each place and things on top.

    Desks a few centimetres apart are separate instances; desks pushed flush together make
    one surface and one instance, as in ScanNet, whose annotators label mesh segments.
    """
    rng = room.rng
    width, depth = rng.uniform(1.0, 1.6), rng.uniform(0.6, 0.8)
    height = rng.uniform(0.72, 0.76)
    colour, support = pal.furniture(), ("legs", "panels", "pedestal")[rng.integers(3)]
    design = _chair_design(rng, pal, chair_kind)
    flush = rng.random() < 0.3
    pitch = width + (0.0 if flush else rng.uniform(0.03, 0.12))
    if on_wall:
        n = count
        spot = room.on_wall(n * pitch, depth, 0.8, front=0.9)
        if spot is None:
            return
        rows = [(spot.origin, spot.yaw, depth)]
    else:
        for n in range(max(1, count // 2), 0, -1):
            found = room.in_open(n * pitch / 2 + 0.15, depth + 0.6, 0.8, tries=15)
            if found is not None:
                break
        else:
            return
        centre, yaw = found
        if flush:  # one deep desk with places on both sides
            rows = [(_shift(centre, yaw, 0, -depth), yaw, 2 * depth)]
        else:
            back = rng.uniform(0.015, 0.05)
            rows = [(_shift(centre, yaw, 0, back), yaw, depth),
                    (_shift(centre, yaw, 0, -back), yaw + np.pi, depth)]
    xs = (np.arange(n) - (n - 1) / 2) * pitch
    stuff = ("monitor", "keyboard", "laptop", "paper", "box", "lamp")
    for origin, yaw, deep in rows:
        places = []  # (chair's front edge, chair yaw)
        tops = []  # (frame origin, x0, x1) of each desk surface
        units = [(0.0, n * width)] if flush else [(x, width) for x in xs]
        for x, w in units:
            centre = _shift(origin, yaw, x, 0)
            desk, knee = _desk(rng, pal, centre, yaw, w - 2 * _GAP_M, deep, height, colour,
                               support)
            if not room.try_add(desk):
                continue
            tops.append((centre, -w / 2, w / 2))
            seats = xs if flush else [x + knee]
            places += [(_shift(origin, yaw, sx, deep), yaw + np.pi) for sx in seats]
            if deep > depth:
                places += [(_shift(origin, yaw, sx, 0), yaw) for sx in seats]
        for edge, chair_yaw in places:
            if rng.random() < 0.85:
                _seat_chair(room, design, edge, chair_yaw, rng.random() < 0.5)
        for centre, x0, x1 in tops:
            _decorate(room, pal, centre, yaw, x0, x1, 0.02, deep - 0.05, height, stuff,
                      int(rng.integers(0, 3 * len(xs) if flush else 4)))


def _storage(room: _Room, pal: _Palette, label: int, runs: int, max_units: int) -> None:
    """Runs of identical cabinets or bookshelves standing side by side against walls."""
    rng = room.rng
    for _ in range(runs):
        n = int(rng.integers(1, max_units + 1))
        gap = 0.0 if rng.random() < 0.6 else rng.uniform(0.01, 0.05)
        if label == BOOKSHELF:
            w, d, h = rng.uniform(0.6, 1.1), rng.uniform(0.25, 0.4), rng.uniform(0.8, 2.2)
            colour = pal.furniture()
            _wall_run(room, [w] * n, d, h,
                      lambda o, y, ww: _bookshelf(rng, pal, o, y, ww - _GAP_M, d, h, colour), gap)
            continue
        tall = rng.random() < 0.35
        w = rng.uniform(0.4, 0.6) if rng.random() < 0.4 else rng.uniform(0.6, 1.1)
        d = rng.uniform(0.4, 0.65) if tall else rng.uniform(0.35, 0.6)
        h = rng.uniform(1.7, 2.2) if tall else rng.uniform(0.5, 1.3)
        design = _cabinet_design(rng, pal, metal=room.kind == "office" and rng.random() < 0.5)
        total = n * w + (n - 1) * gap
        spot = room.on_wall(total, d, h, front=0.5)
        if spot is None:
            continue
        units = [(-total / 2 + k * (w + gap) + w / 2, w - _GAP_M) for k in range(n)]
        _add_cabinet_run(room, design, spot.origin, spot.yaw, units, d, h,
                         merge=gap == 0 and rng.random() < 0.35)
        if h < 1.3 and rng.random() < 0.6:
            kinds = ("plant", "box", "lamp") + (("tv",) if room.kind == "living" else ())
            _decorate(room, pal, spot.origin, spot.yaw, -total / 2, total / 2, 0.02, d - 0.02,
                      h + 0.025 * design.top_board, kinds, int(rng.integers(1, 3)))


def _scatter(room: _Room, pal: _Palette, kinds: tuple[str, ...], count: int) -> None:
    """Small free-standing things on the floor, against walls or in the open."""
    rng = room.rng
    for _ in range(count):
        kind = kinds[rng.integers(len(kinds))]
        if kind in ("ottoman", "coat", "bench"):
            _add_otherfurniture(room, pal, kind)
            continue
        spot = room.on_wall(0.45, 0.45, 1.0, tries=8) if rng.random() < 0.6 else None
        if spot is not None:
            where, yaw = _shift(spot.origin, spot.yaw, 0, 0.23), spot.yaw
        else:
            spot_open = room.in_open(0.3, 0.3, 1.0, free_yaw=1.0, tries=8)
            if spot_open is None:
                continue
            where, yaw = spot_open
        item = (_lamp(rng, pal, where, 0.0, floor_lamp=True) if kind == "lamp"
                else _item(rng, pal, kind, where, yaw, 0.0))
        room.try_add(item)


def _add_otherfurniture(room: _Room, pal: _Palette, kind: str) -> None:
    """An ottoman, a coat stand or a bench (nyu40 otherfurniture)."""
    rng = room.rng
    b = None
    if kind == "ottoman":
        r = rng.uniform(0.2, 0.3)
        spot = room.in_open(r, r, 0.5, free_yaw=1.0, tries=10)
        if spot:
            b = _Builder(OTHERFURNITURE, *spot)
            if rng.random() < 0.5:
                b.cyl(0, 0, r, r, 0, rng.uniform(0.35, 0.45), pal.pick("fabric"), n=12)
            else:
                b.box(-r, r, -r, r, 0, rng.uniform(0.35, 0.45), pal.pick("fabric"))
    elif kind == "coat":
        spot = room.on_wall(0.5, 0.5, 1.9, tries=10)
        if spot:
            b = _Builder(OTHERFURNITURE, _shift(spot.origin, spot.yaw, 0, 0.25), spot.yaw)
            colour = pal.furniture()
            b.cyl(0, 0, 0.2, 0.2, 0, 0.03, colour, n=8)
            b.cyl(0, 0, 0.02, 0.02, 0.03, 1.75, colour, n=6)
            for k in range(4):
                a = k * np.pi / 2
                b.rbox(0.06 * np.cos(a), 0.06 * np.sin(a), 0.06, 0.01, a, 1.6, 1.62, colour)
    else:
        w, d = rng.uniform(0.8, 1.4), rng.uniform(0.3, 0.4)
        spot = room.on_wall(w, d, 0.5, front=0.3, tries=10)
        if spot:
            b = _Builder(OTHERFURNITURE, spot.origin, spot.yaw)
            colour, h = pal.furniture(), rng.uniform(0.4, 0.5)
            b.box(-w / 2, w / 2, 0, d, h - 0.04, h, colour)
            for sx in (-1, 1):
                b.box(sx * (w / 2 - 0.05) - 0.02, sx * (w / 2 - 0.05) + 0.02, 0.02, d - 0.02, 0,
                      h - 0.04, colour)
    if b is not None:
        room.try_add(b)


def _chair_row(room: _Room, pal: _Palette) -> None:
    """Two to five identical chairs side by side against a wall (a waiting row)."""
    rng = room.rng
    design = _chair_design(rng, pal, "legs" if rng.random() < 0.7 else "office")
    n, gap = int(rng.integers(2, 6)), rng.uniform(0.02, 0.12)
    pitch = design.width + gap
    spot = room.on_wall(n * pitch, design.depth + 0.05, 1.0, front=0.4, tries=10)
    if spot is None:
        return
    for k in range(n):
        centre = _shift(spot.origin, spot.yaw, (k - (n - 1) / 2) * pitch,
                        design.depth / 2 + 0.03 + rng.uniform(0, 0.04))
        room.try_add(_chair(design, centre, spot.yaw + rng.normal(0, 0.04)))


def _small_table(room: _Room, pal: _Palette) -> None:
    """A small table (side, coffee or café table) in the open with zero to two chairs."""
    rng = room.rng
    round_top = rng.random() < 0.5
    hx = rng.uniform(0.25, 0.45)
    hy = hx if round_top else rng.uniform(0.25, 0.45)
    height = rng.uniform(0.45, 0.76)
    spot = room.in_open(hx + 0.1, hy + 0.1, 0.9, free_yaw=0.3, tries=10)
    if spot is None:
        return
    centre, yaw = spot
    table = _table(rng, pal, centre, yaw, hx, hy, height, TABLE, round_top)
    if room.try_add(table) and height > 0.65:
        design = _chair_design(rng, pal, "legs")
        for side in (-1, 1)[:int(rng.integers(0, 3))]:
            _seat_chair(room, design, _shift(centre, yaw, 0, side * hy),
                        yaw + (np.pi if side > 0 else 0), rng.random() < 0.5)


def _finish(room: _Room, pal: _Palette, fill: dict[str, Callable[[], None]], per_m2: float,
            scatter: tuple[str, ...], scatter_count: int) -> None:
    """Complete a room: pictures on free walls, then more furniture from ``fill`` (picked
    at random, about ``per_m2`` tries per square metre of floor), then small things."""
    rng = room.rng
    n_art = int(rng.integers(0, 4)) if room.kind != "bathroom" else int(rng.integers(0, 2))
    _wall_art(room, pal, PICTURE, n_art, (1.1, 1.6), (0.25, 1.0), (0.2, 0.8))
    names = sorted(fill)
    for _ in range(int(room.area * per_m2)):
        fill[names[rng.integers(len(names))]]()
    _scatter(room, pal, scatter, scatter_count)


def _furnish_office(room: _Room, pal: _Palette) -> None:
    rng = room.rng
    chair = "office" if rng.random() < 0.75 else "legs"
    if rng.random() < 0.5:
        _dining(room, pal, chair, size=1.3)
    if rng.random() < 0.6:
        _desks(room, pal, 2 * int(rng.integers(1, 4)), chair, on_wall=False)
    for _ in range(int(rng.integers(1, 3))):
        _desks(room, pal, int(rng.integers(1, 5)), chair, on_wall=True)
    _storage(room, pal, CABINET, int(rng.integers(1, 3)), 4)
    _storage(room, pal, BOOKSHELF, int(rng.integers(0, 3)), 3)
    if rng.random() < 0.15:
        spot = room.on_wall(2.0, 0.9, 1.0, front=0.5)
        if spot:
            room.try_add(*_sofa(rng, pal, spot.origin, spot.yaw, rng.uniform(1.4, 2.0), 0.85))
    _wall_art(room, pal, WHITEBOARD, int(rng.random() < 0.4), (0.8, 1.0), (1.2, 2.4), (0.9, 1.2))
    _finish(room, pal, {
        "desks": lambda: _desks(room, pal, int(rng.integers(1, 4)), chair,
                                on_wall=rng.random() < 0.6),
        "cabinets": lambda: _storage(room, pal, CABINET, 1, 3),
        "shelves": lambda: _storage(room, pal, BOOKSHELF, 1, 3),
        "chairs": lambda: _chair_row(room, pal),
        "table": lambda: _small_table(room, pal),
    }, 0.15, ("bin", "bin", "plant", "box", "coat", "bag"), int(rng.integers(1, 5)))


def _furnish_bedroom(room: _Room, pal: _Palette) -> None:
    rng = room.rng
    for k in range(1 + int(rng.random() < 0.2)):
        single = k > 0 or rng.random() < 0.4
        width = rng.uniform(0.9, 1.05) if single else rng.uniform(1.4, 1.9)
        length = rng.uniform(1.95, 2.15)
        spot = room.on_wall(width + 1.1, length + 0.05, 1.2, front=0.4)
        if spot is None:
            continue
        if room.try_add(*_bed(rng, pal, spot.origin, spot.yaw, width, length)):
            stand = _cabinet_design(rng, pal, "drawers")
            sw, sd, sh = rng.uniform(0.4, 0.55), rng.uniform(0.35, 0.45), rng.uniform(0.45, 0.65)
            for side in (-1, 1):
                if rng.random() < 0.75:
                    origin = _shift(spot.origin, spot.yaw, side * (width / 2 + 0.04 + sw / 2), 0)
                    unit = _cabinet(stand, origin, spot.yaw, sw, sd, sh, label=NIGHT_STAND)
                    if room.try_add(unit) and rng.random() < 0.6:
                        room.try_add(_lamp(rng, pal, _shift(origin, spot.yaw, 0, sd / 2), sh))
    _storage(room, pal, CABINET, int(rng.integers(1, 3)), 3)
    if rng.random() < 0.5:
        _desks(room, pal, 1, "legs" if rng.random() < 0.6 else "office", on_wall=True)
    _storage(room, pal, BOOKSHELF, int(rng.random() < 0.4), 2)
    if rng.random() < 0.25:
        _place_lounge_chair(room, pal)
    _finish(room, pal, {
        "cabinets": lambda: _storage(room, pal, CABINET, 1, 3),
        "shelves": lambda: _storage(room, pal, BOOKSHELF, 1, 2),
        "lounge": lambda: _place_lounge_chair(room, pal),
        "desk": lambda: _desks(room, pal, 1, "legs", on_wall=True),
        "table": lambda: _small_table(room, pal),
    }, 0.12, ("ottoman", "bench", "bin", "bag", "box", "plant", "lamp"), int(rng.integers(0, 4)))


def _place_lounge_chair(room: _Room, pal: _Palette) -> None:
    design = _chair_design(room.rng, pal, "lounge")
    spot = room.on_wall(design.width, design.depth, 1.0, front=0.3)
    if spot:
        room.try_add(_chair(design, _shift(spot.origin, spot.yaw, 0, design.depth / 2), spot.yaw))


def _furnish_living(room: _Room, pal: _Palette) -> None:
    rng = room.rng
    for k in range(1 + int(rng.random() < 0.35)):
        width, depth = rng.uniform(1.5, 2.5), rng.uniform(0.8, 1.0)
        chaise = rng.uniform(0.7, 1.2) if k == 0 and rng.random() < 0.3 else 0.0
        spot = room.on_wall(width, depth + chaise, 1.0, front=0.6)
        if spot is None or not room.try_add(*_sofa(rng, pal, spot.origin, spot.yaw, width, depth,
                                                   chaise)):
            continue
        if k == 0:
            hx, hy = rng.uniform(0.4, 0.65), rng.uniform(0.25, 0.4)
            centre = _shift(spot.origin, spot.yaw, rng.normal(0, 0.1),
                            depth + rng.uniform(0.35, 0.5) + hy)
            room.try_add(_table(rng, pal, centre, spot.yaw, hx, hy, rng.uniform(0.35, 0.5), TABLE,
                                rng.random() < 0.25))
            design = _chair_design(rng, pal, "lounge" if rng.random() < 0.7 else "legs")
            for side in (-1, 1):
                if rng.random() < 0.45:
                    seat = _shift(centre, spot.yaw, side * (hx + 0.2 + design.depth / 2), 0)
                    room.try_add(_chair(design, seat, spot.yaw - side * np.pi / 2))
            for side in (-1, 1):
                if rng.random() < 0.35:
                    r = rng.uniform(0.2, 0.3)
                    origin = _shift(spot.origin, spot.yaw, side * (width / 2 + r + 0.05), r + 0.03)
                    table = _table(rng, pal, origin, spot.yaw, r, r, rng.uniform(0.5, 0.65), TABLE,
                                   rng.random() < 0.5)
                    if room.try_add(table) and rng.random() < 0.5:
                        room.try_add(_lamp(rng, pal, origin, table.solids[0].z1))
    w, d = rng.uniform(1.2, 2.0), rng.uniform(0.35, 0.5)
    spot = room.on_wall(w, d, 0.6, front=0.5)
    if spot:
        stand = _cabinet(_cabinet_design(rng, pal), spot.origin, spot.yaw, w, d,
                         rng.uniform(0.4, 0.6),
                         label=CABINET if rng.random() < 0.6 else OTHERFURNITURE)
        if room.try_add(stand):
            top = max(p.z1 for p in stand.solids)
            room.try_add(_item(rng, pal, "tv", _shift(spot.origin, spot.yaw, 0, d / 2),
                               spot.yaw + np.pi, top))
    else:
        _wall_art(room, pal, TELEVISION, 1, (0.9, 1.2), (0.9, 1.5), (0.5, 0.8))
    _storage(room, pal, BOOKSHELF, int(rng.integers(0, 3)), 3)
    _storage(room, pal, CABINET, int(rng.integers(0, 2)), 3)
    if rng.random() < 0.5:
        _dining(room, pal)
    if rng.random() < 0.3:
        _place_lounge_chair(room, pal)
    _finish(room, pal, {
        "cabinets": lambda: _storage(room, pal, CABINET, 1, 3),
        "shelves": lambda: _storage(room, pal, BOOKSHELF, 1, 3),
        "lounge": lambda: _place_lounge_chair(room, pal),
        "table": lambda: _small_table(room, pal),
        "chairs": lambda: _chair_row(room, pal),
        "dining": lambda: _dining(room, pal, size=0.8),
    }, 0.12, ("ottoman", "plant", "plant", "lamp", "box", "bin"), int(rng.integers(1, 4)))


def _furnish_kitchen(room: _Room, pal: _Palette) -> None:
    rng = room.rng
    height, depth = rng.uniform(0.86, 0.92), rng.uniform(0.55, 0.65)
    for k in range(1 + int(rng.random() < 0.4)):
        n = int(rng.integers(3, 7)) if k == 0 else int(rng.integers(2, 5))
        units = [("cabinet", float(rng.choice([0.4, 0.5, 0.6, 0.8, 0.9]))) for _ in range(n)]
        if k == 0 or rng.random() < 0.3:
            units[int(rng.integers(n))] = ("sink", float(rng.uniform(0.7, 0.9)))
        if k == 0 and rng.random() < 0.7:
            free = [i for i, u in enumerate(units) if u[0] == "cabinet"]
            units[free[int(rng.integers(len(free)))]] = ("stove", 0.6)
        corner = rng.random() < 0.5
        while True:
            total = sum(w for _, w in units)
            spot = room.on_wall(total, depth + 0.04, height + 0.3, front=0.8, corner=corner,
                                tries=15)
            if spot is not None or len(units) <= 2:
                break
            units = units[1:] if units[0][0] == "cabinet" else units[:-1]
        if spot is None:
            continue
        room.try_add(*_counter_run(rng, pal, spot, units, depth, height))
        _decorate(room, pal, spot.origin, spot.yaw, -total / 2, total / 2, 0.02, depth - 0.05,
                  height, ("microwave", "box", "plant", "paper"), int(rng.integers(0, 3)))
        if rng.random() < 0.6:
            design = _cabinet_design(rng, pal, "doors")
            z0 = height + rng.uniform(0.45, 0.6)
            h = min(rng.uniform(0.6, 0.85), room.height - 0.05 - z0)
            edges = -total / 2 + np.cumsum([0.0] + [w for _, w in units])
            uppers = [((a + b) / 2, b - a - 2 * _GAP_M) for a, b in zip(edges[:-1], edges[1:])
                      if rng.random() < 0.85]
            if h > 0.3:
                _add_cabinet_run(room, design, spot.origin, spot.yaw, uppers,
                                 rng.uniform(0.3, 0.36), h, z0=z0, merge=rng.random() < 0.5)
        if k == 0 and rng.random() < 0.9:
            fw = rng.uniform(0.6, 0.9)
            side = 1 if rng.random() < 0.5 else -1
            origin = _shift(spot.origin, spot.yaw, side * (total / 2 + fw / 2 + 0.01), 0)
            fridge = _fridge(rng, pal, origin, spot.yaw, fw, rng.uniform(0.62, 0.72),
                             rng.uniform(1.5, 1.9))
            if not room.try_add(fridge):
                _place_fridge(room, pal)
    if rng.random() < 0.25:
        hx, hy = rng.uniform(0.5, 0.9), rng.uniform(0.4, 0.5)
        spot = room.in_open(hx + 0.5, hy + 0.5, 1.0)
        if spot:
            centre, yaw = spot
            island = _Builder(COUNTER, centre, yaw)
            island.box(-hx, hx, -hy, hy, height - 0.04, height, pal.pick("laminate"))
            design = _cabinet_design(rng, pal, "doors")
            design.top_board = False
            n = max(1, int(2 * hx / 0.6))
            units = [(-hx + (k + 0.5) * 2 * hx / n, 2 * hx / n - 2 * _GAP_M) for k in range(n)]
            if room.try_add(island):
                _add_cabinet_run(room, design, _shift(centre, yaw, 0, -hy + 0.03), yaw, units,
                                 2 * hy - 0.09, height - 0.04, merge=rng.random() < 0.5)
    if rng.random() < 0.7:
        _dining(room, pal, size=rng.uniform(0.8, 1.1))
    _storage(room, pal, CABINET, int(rng.random() < 0.3), 2)
    _finish(room, pal, {
        "cabinets": lambda: _storage(room, pal, CABINET, 1, 3),
        "table": lambda: _small_table(room, pal),
        "chairs": lambda: _chair_row(room, pal),
        "fridge": lambda: _place_fridge(room, pal),
    }, 0.1, ("bin", "bin", "box", "bag"), int(rng.integers(1, 3)))


def _place_fridge(room: _Room, pal: _Palette) -> None:
    rng = room.rng
    w, d, h = rng.uniform(0.6, 0.9), rng.uniform(0.62, 0.72), rng.uniform(1.5, 1.9)
    spot = room.on_wall(w, d, h, front=0.6)
    if spot:
        room.try_add(_fridge(rng, pal, spot.origin, spot.yaw, w, d, h))


def _furnish_bathroom(room: _Room, pal: _Palette) -> None:
    rng = room.rng
    public = rng.random() < 0.35
    if public:
        stalls = int(rng.integers(2, 5))
        sw = rng.uniform(0.85, 1.0)
        depth, height = rng.uniform(1.3, 1.6), rng.uniform(1.8, 2.0)
        spot = room.on_wall(stalls * sw + 0.05, depth, height, front=0.6)
        if spot:
            panel = pal.pick("laminate")
            for k in range(stalls + 1):
                x = (k - stalls / 2) * sw
                if k in (0, stalls) and rng.random() < 0.5:
                    continue
                part = _Builder(OTHERSTRUCTURE, spot.origin, spot.yaw)
                part.box(x - 0.015, x + 0.015, 0.0, depth, 0.15, height, panel)
                room.try_add(part)
            for k in range(stalls):
                origin = _shift(spot.origin, spot.yaw, (k + 0.5 - stalls / 2) * sw, 0)
                room.try_add(_toilet(rng, pal, origin, spot.yaw))
        n = int(rng.integers(2, 5))
        units = [("sink", float(rng.uniform(0.6, 0.8))) for _ in range(n)]
    else:
        if rng.random() < 0.6:
            _add_bathtub(room, pal)
        spot = room.on_wall(0.55, 0.75, 0.9, front=0.35)
        if spot:
            room.try_add(_toilet(rng, pal, spot.origin, spot.yaw))
        units = [("sink", float(rng.uniform(0.6, 0.8)))] * int(rng.integers(1, 3))
        units += [("cabinet", float(rng.uniform(0.4, 0.6)))] * int(rng.integers(0, 2))
        rng.shuffle(units)
    if public or rng.random() < 0.65:
        depth, height = rng.uniform(0.45, 0.55), rng.uniform(0.8, 0.9)
        total = sum(w for _, w in units)
        spot = room.on_wall(total, depth + 0.04, height + 0.3, front=0.6)
        if spot and room.try_add(*_counter_run(rng, pal, spot, units, depth, height)):
            z0 = height + rng.uniform(0.25, 0.4)
            x = -total / 2
            for _, w in units:
                m = _Builder(MIRROR, _shift(spot.origin, spot.yaw, x + w / 2, 0), spot.yaw)
                m.box(-w / 2 + 0.03, w / 2 - 0.03, 0, 0.015, z0, z0 + rng.uniform(0.6, 0.9),
                      pal.pick("glass"))
                if public or x == -total / 2:
                    room.try_add(m)
                x += w
    else:
        spot = room.on_wall(0.65, 0.5, 1.0, front=0.5)
        if spot:
            room.try_add(_basin(rng, pal, spot.origin, spot.yaw))
            _wall_art(room, pal, MIRROR, 1, (1.2, 1.3), (0.4, 0.6), (0.5, 0.8))
    if rng.random() < 0.4:
        _storage(room, pal, CABINET, 1, 2)
    if rng.random() < 0.5:
        _wall_art(room, pal, TOWEL, int(rng.integers(1, 3)), (0.9, 1.3), (0.3, 0.6), (0.4, 0.7))
    _finish(room, pal, {}, 0.0, ("bin", "box", "bag"), int(rng.integers(1, 3)))


_FURNISH: dict[str, Callable[[_Room, _Palette], None]] = {
    "office": _furnish_office, "bedroom": _furnish_bedroom, "living": _furnish_living,
    "kitchen": _furnish_kitchen, "bathroom": _furnish_bathroom,
}


def layout_room(seed: int, size_range_m: tuple[float, float] = (4.0, 7.0)) -> RoomLayout:
    """The furnished room of ``seed`` before sampling (same seed, same room).

    Args:
        seed: random seed (non-negative).
        size_range_m: range of the side lengths of the room's bounding rectangle in metres;
            bathrooms take 0.65 to 1 times its lower end.
    """
    rng = np.random.default_rng([seed, 0])
    kind = ROOM_KINDS[rng.choice(len(ROOM_KINDS), p=_KIND_WEIGHTS)]
    rects, outline = _room_shape(rng, kind, size_range_m)
    room = _Room(rng, kind, rects, outline, rng.uniform(2.4, 3.1), rng.random() < 0.3)
    pal = _Palette(rng)
    _add_structure(room, pal, rng.uniform(0.1, 0.22))
    _FURNISH[kind](room, pal)
    return room.layout()


# --------------------------------------------------------------------------- sampling


def _sample_faces(faces: np.ndarray, spacing: np.ndarray, rng: np.random.Generator
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Jittered-grid samples on every face (about one per ``spacing`` x ``spacing``).

    Returns (N, 3) points and the (N,) index of each point's face.
    """
    a, b = faces[:, 3:6], faces[:, 6:9]
    len_a = np.linalg.norm(a, axis=1)
    height_b = np.linalg.norm(np.cross(a, b), axis=1) / np.maximum(len_a, 1e-9)
    nu = np.maximum(np.rint(len_a / spacing), 1).astype(np.int64)
    nv = np.maximum(np.rint(height_b / spacing), 1).astype(np.int64)
    count = nu * nv
    face = np.repeat(np.arange(len(faces)), count)
    k = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
    jitter = rng.uniform(-_JITTER, _JITTER, (len(k), 2))
    u = (k % nu[face] + 0.5 + jitter[:, 0]) / nu[face]
    v = (k // nu[face] + 0.5 + jitter[:, 1]) / nv[face]
    keep = (faces[face, _F_TRI] == 0) | (u + v <= 1.0)
    keep &= rng.random(len(k)) < faces[face, _F_KEEP]
    face, u, v = face[keep], u[keep], v[keep]
    xyz = faces[face, 0:3] + u[:, None] * a[face] + v[:, None] * b[face]
    return xyz, face


def _visibility(xyz: np.ndarray, obj: np.ndarray, solid: np.ndarray, floor: np.ndarray,
                solids: list[tuple[Prism, int, bool]]) -> tuple[np.ndarray, np.ndarray]:
    """Which points a camera in the room would not see, and which lie in a crease.

    Hidden: inside (or within the hide margin of) a solid of another object, inside
    another solid of their own object, or on the floor under a low solid. In a crease:
    within :data:`_CONTACT_M` of another object's physical solid (seams between adjacent
    units, contact with floor and walls), which a scan shows darker.

    Args:
        solid: (N,) each point's own solid (global index, -1 none).
        floor: (N,) whether each point is a floor point.
        solids: (prism, object, whether it casts a floor shadow) for every solid.
    """
    order = np.argsort(xyz[:, 0], kind="stable")
    xs = xyz[order, 0]
    hidden = np.zeros(len(xyz), bool)
    crease = np.zeros(len(xyz), bool)
    reach = max(_HIDE_MARGIN_M, _CONTACT_M)
    for q, (prism, owner, shadow) in enumerate(solids):
        lo, hi = np.searchsorted(xs, [prism.lo[0] - reach, prism.hi[0] + reach])
        idx = order[lo:hi]
        p = xyz[idx]
        near = ((p[:, 1] >= prism.lo[1] - reach) & (p[:, 1] <= prism.hi[1] + reach)
                & (p[:, 2] <= prism.z1 + reach))
        if not shadow:
            near &= p[:, 2] >= prism.z0 - reach
        idx, p = idx[near], p[near]
        if not len(idx):
            continue
        other = obj[idx] != owner
        plane = (_project(p, prism.normals) - prism.offsets).max(axis=1)
        height = np.maximum(prism.z0 - p[:, 2], p[:, 2] - prism.z1)
        distance = np.maximum(plane, height)  # <= 0 inside; a lower bound of the distance
        margin = np.where(other, _HIDE_MARGIN_M, _SELF_MARGIN_M)
        inside = (distance <= margin) | (shadow & floor[idx] & (plane <= margin))
        hidden[idx[inside & (solid[idx] != q)]] = True
        if not prism.occluder:
            crease[idx[other & (distance <= _CONTACT_M)]] = True
    return hidden, crease


def sample_layout(layout: RoomLayout, seed: int, spacing_m: float = 0.03,
                  noise_m: float = 0.004) -> Scene:
    """Sample a layout like a reconstructed mesh: faces, visibility, holes, colour, noise.

    Args:
        layout: from :func:`layout_room`.
        seed: random seed of the sampling (the room's seed in :func:`generate_room`).
        spacing_m: target median nearest-neighbour distance in metres (ScanNet's meshes:
            ~0.029); floor, ceiling and walls come out a little sparser, objects denser.
        noise_m: standard deviation of isotropic positional noise in metres.
    """
    rng = np.random.default_rng([seed, 1])
    faces, face_obj, solids, solid_offset = [], [], [], []
    for i, obj in enumerate(layout.objects):
        solid_offset.append(len(solids))
        casts = obj.label not in _STRUCTURE
        solids += [(p, i, casts and not p.occluder and p.z0 < _SHADOW_CLEARANCE_M)
                   for p in obj.solids]
        faces.append(obj.faces)
        face_obj.append(np.full(len(obj.faces), i))
    faces, face_obj = np.concatenate(faces), np.concatenate(face_obj)
    labels = np.array([o.label for o in layout.objects])
    face_label = labels[face_obj]
    # Like ScanNet's meshes: floor, ceiling and walls sparser than objects.
    scale = np.select([face_label == FLOOR, face_label == CEILING, face_label == WALL],
                      [1.2, 1.2, 1.05], 0.9) / _NN_PER_PITCH
    # Tops above eye level are rarely seen.
    high_top = (faces[:, 11] > 0.5) & (faces[:, 2] > 1.9) & (face_label != FLOOR)
    faces[high_top, _F_KEEP] *= 0.3
    xyz, face = _sample_faces(faces, spacing_m * scale, rng)
    obj = face_obj[face]
    own = faces[face, _F_SOLID].astype(np.int64)
    own = np.where(own >= 0, np.array(solid_offset)[obj] + own, -1)
    label = labels[obj]
    hidden, crease = _visibility(xyz, obj, own, label == FLOOR, solids)
    keep = ~hidden & _holes(xyz, label, layout, rng)
    xyz, face, obj, label, crease = xyz[keep], face[keep], obj[keep], label[keep], crease[keep]
    rgb = _colours(xyz, faces[face], obj, label, crease, len(layout.objects), rng)
    xyz = xyz + rng.normal(0, noise_m, xyz.shape)
    return Scene(xyz=xyz.astype(np.float32), rgb=rgb, semantic=label.astype(np.int32),
                 instance=obj.astype(np.int32), name=f"room_{seed}")


def _holes(xyz: np.ndarray, label: np.ndarray, layout: RoomLayout, rng: np.random.Generator
           ) -> np.ndarray:
    """Points kept after scanning holes: random dropout patches, unscanned tops of some
    walls, and a patchy ceiling."""
    keep = np.ones(len(xyz), bool)
    lo, hi = layout.outline.min(axis=0), layout.outline.max(axis=0)
    area = float(np.prod(hi - lo))
    for _ in range(int(rng.integers(3, 6 + area / 4))):
        centre = xyz[rng.integers(len(xyz))]
        keep &= ((xyz - centre) ** 2).sum(axis=1) > rng.uniform(0.06, 0.35) ** 2
    wall = label == WALL
    if rng.random() < 0.5:
        cut = rng.uniform(1.9, 2.6) + 0.15 * np.sin(xyz[:, :2] @ rng.uniform(1, 4, 2))
        keep &= ~(wall & (xyz[:, 2] > cut))
    ceiling = label == CEILING
    if ceiling.any():
        f = rng.uniform(0.5, 2.0, 2)
        phase = rng.uniform(0, 2 * np.pi, 2)
        field_ = np.sin(f[0] * xyz[:, 0] + phase[0]) * np.sin(f[1] * xyz[:, 1] + phase[1])
        keep &= ~(ceiling & (field_ < rng.uniform(-0.6, 0.0)))
    return keep


def _smooth_field(xyz: np.ndarray, rng: np.random.Generator, waves: int,
                  freq: tuple[float, float], amplitude: tuple[float, float]) -> np.ndarray:
    """A random smooth scalar field around 0: a sum of plane waves with spatial
    frequencies in ``freq`` (rad/m) and amplitudes in ``amplitude``."""
    direction = rng.normal(0, 1, (waves, 3))
    direction *= rng.uniform(*freq, (waves, 1)) / np.linalg.norm(direction, axis=1, keepdims=True)
    phase = rng.uniform(0, 2 * np.pi, waves)
    angle = sum(xyz[:, k:k + 1] * direction[:, k] for k in range(3)) + phase
    return np.sin(angle) @ rng.uniform(*amplitude, waves)


def _colours(xyz: np.ndarray, faces: np.ndarray, obj: np.ndarray, label: np.ndarray,
             crease: np.ndarray, n_objects: int, rng: np.random.Generator) -> np.ndarray:
    """Per-point colour: the part's colour with a per-object texture (grain, planks or a
    picture's content), directional shading darkened in creases, uneven room lighting and
    exposure, a colour cast, and noise."""
    base = faces[:, 12:15]
    normal = faces[:, 9:12]
    direction = rng.normal(0, 1, (n_objects, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    freq = rng.uniform(2, 30, n_objects)
    phase = rng.uniform(0, 2 * np.pi, n_objects)
    amount = rng.uniform(0.0, 0.3, n_objects) * (rng.random(n_objects) < 0.7)
    second = np.clip(rng.uniform(20, 235, (n_objects, 3)), 0, 255)
    art = np.isin(label, (PICTURE, BOOKS, BOX))
    wave = 0.5 + 0.5 * np.sin(freq[obj] * (xyz * direction[obj]).sum(axis=1) + phase[obj])
    busy = np.where(art, rng.uniform(0.5, 1.0, n_objects)[obj], 0.0)
    other = np.where(art[:, None], second[obj], base * 0.7)
    colour = base + (wave * np.maximum(amount[obj], busy))[:, None] * (other - base)
    light = np.array([rng.normal(0, 0.5), rng.normal(0, 0.5), 1.0])
    light /= np.linalg.norm(light)
    ambient = rng.uniform(0.6, 0.8)
    shade = ambient + (1 - ambient) * np.clip(normal @ light, 0, 1)
    shade *= np.where(crease, rng.uniform(0.6, 0.8), 1.0)
    lighting = (1 + _smooth_field(xyz, rng, 3, (0.3, 1.5), (0.03, 0.18))
                + _smooth_field(xyz, rng, 3, (1.5, 5.0), (0.0, 0.07)))
    cast = rng.uniform(0.85, 1.12) * (1 + rng.normal(0, 0.04, 3))
    colour = colour * (shade * lighting)[:, None] * cast
    colour += rng.normal(0, rng.uniform(4, 12), colour.shape)
    return np.clip(np.rint(colour), 0, 255).astype(np.uint8)


def generate_room(seed: int, spacing_m: float = 0.03, noise_m: float = 0.004,
                  size_range_m: tuple[float, float] = (4.0, 7.0)) -> Scene:
    """Generate one furnished room as a labelled point cloud (see the module docstring).

    Args:
        seed: random seed; the same seed gives the same scene.
        spacing_m: target median nearest-neighbour distance of the points in metres
            (ScanNet's meshes: ~0.029); floor, ceiling and walls come out a little sparser,
            objects denser.
        noise_m: standard deviation of isotropic positional noise in metres.
        size_range_m: range of the side lengths of the room's bounding rectangle in metres
            (home bathrooms are smaller, see :func:`layout_room`).
    """
    return sample_layout(layout_room(seed, size_range_m), seed, spacing_m, noise_m)
