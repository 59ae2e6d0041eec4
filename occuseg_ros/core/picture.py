"""A PNG picture of a segmented room: an oblique view coloured by instance, with a legend.

Points are splatted into a z-buffer from a virtual camera above one corner of the room
looking down at its centre (the ceiling and anything above ``cut_height_m`` is left out so
the view reaches the floor). Points in an instance take its colour
(:func:`occuseg_ros.core.labels.instance_colours`); the rest keep a dimmed copy of their own.
The legend lists "class #id" per instance, drawn with open3d's text meshes rasterised here,
so no font or imaging library is needed beyond open3d.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import open3d as o3d

from .labels import colour_by_instance, dimmed, instance_colours, label_name
from .rendering import look_at

_BACKGROUND = 24
_LEGEND_WIDTH = 300
_ROW_PX = 22


def room_picture(xyz: np.ndarray, rgb: np.ndarray, instance: np.ndarray,
                 instance_ids: np.ndarray, instance_labels: np.ndarray,
                 size_px: tuple[int, int] = (960, 760), cut_height_m: float = 2.1
                 ) -> np.ndarray:
    """(H, W + legend, 3) uint8 picture of a labelled point cloud.

    Args:
        xyz: (N, 3) metres, z up. rgb: (N, 3) uint8.
        instance: (N,) instance id per point, 0 = none.
        instance_ids, instance_labels: the instances' ids and nyu40 classes (legend rows).
        size_px: width and height of the view in pixels.
        cut_height_m: points higher than this above the floor are left out.
    """
    width, height = size_px
    xyz = np.asarray(xyz, np.float64)
    floor = np.percentile(xyz[:, 2], 1) if len(xyz) else 0.0
    keep = xyz[:, 2] <= floor + cut_height_m
    xyz, rgb, instance = xyz[keep], np.asarray(rgb)[keep], np.asarray(instance)[keep]
    view = np.full((height, width, 3), _BACKGROUND, np.uint8)
    if len(xyz):
        _splat(view, xyz, colour_by_instance(instance, dimmed(rgb)))
    legend = _legend(np.asarray(instance_ids), np.asarray(instance_labels), height)
    return np.concatenate([view, legend], axis=1)


def _splat(image: np.ndarray, xyz: np.ndarray, colour: np.ndarray) -> None:
    """Draw points (3x3 pixel splats, nearest wins) from above a corner of their box."""
    height, width = image.shape[:2]
    lo, hi = xyz.min(axis=0), xyz.max(axis=0)
    centre = (lo + hi) / 2.0
    span = float(np.linalg.norm((hi - lo)[:2]))
    eye = np.array([lo[0] - 0.25 * span, lo[1] - 0.35 * span, hi[2] + 0.75 * span])
    T = look_at(eye, np.array([centre[0], centre[1], lo[2]]))
    cam = (xyz - T[:3, 3]) @ T[:3, :3]  # map -> optical frame
    z = cam[:, 2]
    front = z > 0.1
    f = 0.9 * width / max(2.0 * np.max(np.abs(cam[front, 0] / z[front])), 1e-6) \
        if front.any() else 1.0
    f = min(f, 0.9 * height / max(2.0 * np.max(np.abs(cam[front, 1] / z[front])), 1e-6))
    u = np.round(f * cam[:, 0] / np.maximum(z, 1e-6) + width / 2.0).astype(np.int64)
    v = np.round(f * cam[:, 1] / np.maximum(z, 1e-6) + height / 2.0).astype(np.int64)
    # Every point covers the 3x3 pixels around its projection; the nearest point wins.
    offsets = [(du, dv) for du in (-1, 0, 1) for dv in (-1, 0, 1)]
    uu = np.concatenate([u + du for du, _ in offsets])
    vv = np.concatenate([v + dv for _, dv in offsets])
    point = np.tile(np.arange(len(u)), len(offsets))
    ok = np.tile(front, len(offsets)) & (uu >= 0) & (uu < width) & (vv >= 0) & (vv < height)
    pixel, point = vv[ok] * width + uu[ok], point[ok]
    depth = np.full(height * width, np.inf)
    np.minimum.at(depth, pixel, z[point])
    owner = np.full(height * width, -1, np.int64)
    winner = z[point] <= depth[pixel]
    owner[pixel[winner]] = point[winner]
    drawn = owner >= 0
    image.reshape(-1, 3)[drawn] = colour[owner[drawn]]


def _legend(ids: np.ndarray, labels: np.ndarray, height: int) -> np.ndarray:
    """A legend panel: a colour square and "class #id" per instance, ordered by id."""
    panel = np.full((height, _LEGEND_WIDTH, 3), _BACKGROUND, np.uint8)
    order = np.argsort(ids)
    rows = max((height - 40) // _ROW_PX, 1)
    columns = 2 if len(ids) > rows else 1
    column_width = _LEGEND_WIDTH // columns
    _draw_text(panel, f"{len(ids)} instances", 10, 8, 16, (235, 235, 235))
    colours = instance_colours(ids[order]) if len(ids) else np.zeros((0, 3), np.uint8)
    for k, (i, label) in enumerate(zip(ids[order][:rows * columns],
                                       labels[order][:rows * columns])):
        x = 10 + (k // rows) * column_width
        y = 36 + (k % rows) * _ROW_PX
        panel[y + 3:y + 17, x:x + 14] = colours[k]
        _draw_text(panel, f"{label_name(int(label))} #{int(i)}", x + 20, y + 2, 14,
                   (225, 225, 225), max_width=column_width - 26)
    return panel


def _draw_text(image: np.ndarray, text: str, x: int, y: int, size_px: int,
               colour: tuple[int, int, int], max_width: int | None = None) -> None:
    """Rasterise ``text`` with its top-left corner at (x, y), about ``size_px`` tall."""
    mesh = o3d.t.geometry.TriangleMesh.create_text(text, depth=0.0)
    vertices = mesh.vertex.positions.numpy()[:, :2].astype(np.float64)
    triangles = mesh.triangle.indices.numpy()
    if len(triangles) == 0:
        return
    scale = size_px / 16.0  # open3d's glyphs are about 16 units from descender to cap
    top = vertices[:, 1].max()
    px = x + (vertices[:, 0] - vertices[:, 0].min()) * scale
    py = y + (top - vertices[:, 1]) * scale
    limit = image.shape[1] if max_width is None else min(image.shape[1], x + max_width)
    for a, b, c in triangles:
        xs, ys = px[[a, b, c]], py[[a, b, c]]
        x0, x1 = int(np.floor(xs.min())), int(np.ceil(xs.max()))
        y0, y1 = int(np.floor(ys.min())), int(np.ceil(ys.max()))
        x0, y0 = max(x0, 0), max(y0, 0)
        x1, y1 = min(x1, limit - 1), min(y1, image.shape[0] - 1)
        if x1 < x0 or y1 < y0:
            continue
        gx, gy = np.meshgrid(np.arange(x0, x1 + 1) + 0.5, np.arange(y0, y1 + 1) + 0.5)
        d1 = (gx - xs[1]) * (ys[0] - ys[1]) - (xs[0] - xs[1]) * (gy - ys[1])
        d2 = (gx - xs[2]) * (ys[1] - ys[2]) - (xs[1] - xs[2]) * (gy - ys[2])
        d3 = (gx - xs[0]) * (ys[2] - ys[0]) - (xs[2] - xs[0]) * (gy - ys[0])
        neg = (d1 < 0) | (d2 < 0) | (d3 < 0)
        pos = (d1 > 0) | (d2 > 0) | (d3 > 0)
        inside = ~(neg & pos)
        image[y0:y1 + 1, x0:x1 + 1][inside] = colour


def write_png(path: str | Path, image: np.ndarray) -> None:
    """Write an (H, W, 3) uint8 image as PNG."""
    if not o3d.io.write_image(str(path), o3d.geometry.Image(np.ascontiguousarray(image))):
        raise OSError(f"could not write {path}")
