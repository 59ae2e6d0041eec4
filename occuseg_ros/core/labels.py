"""Label ids used throughout: ScanNet nyu40 ids, so outputs score with ScanNet's evaluator.

Id 0 means "unannotated" everywhere.
"""

from __future__ import annotations

import numpy as np

NYU40_NAMES: dict[int, str] = {
    0: "unannotated", 1: "wall", 2: "floor", 3: "cabinet", 4: "bed", 5: "chair", 6: "sofa",
    7: "table", 8: "door", 9: "window", 10: "bookshelf", 11: "picture", 12: "counter",
    13: "blinds", 14: "desk", 15: "shelves", 16: "curtain", 17: "dresser", 18: "pillow",
    19: "mirror", 20: "floor mat", 21: "clothes", 22: "ceiling", 23: "books",
    24: "refrigerator", 25: "television", 26: "paper", 27: "towel", 28: "shower curtain",
    29: "box", 30: "whiteboard", 31: "person", 32: "night stand", 33: "toilet", 34: "sink",
    35: "lamp", 36: "bathtub", 37: "bag", 38: "otherstructure", 39: "otherfurniture",
    40: "otherprop",
}

#: The 18 classes scored by the ScanNet instance benchmark.
BENCHMARK_INSTANCE_IDS: tuple[int, ...] = (
    3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39,
)

#: The 20 classes of the ScanNet semantic benchmark: the network's default output set.
SCANNET20_IDS: tuple[int, ...] = (1, 2) + BENCHMARK_INSTANCE_IDS

#: "Stuff" classes that are never clustered into instances (wall, floor, ceiling).
STUFF_IDS: tuple[int, ...] = (1, 2, 22)


def label_name(label_id: int) -> str:
    """Human-readable nyu40 class name (``"class<id>"`` for ids outside nyu40)."""
    return NYU40_NAMES.get(int(label_id), f"class{int(label_id)}")


def instance_colours(ids: np.ndarray) -> np.ndarray:
    """A saturated RGB colour (uint8, (n, 3)) per instance id; the same id always gets the
    same colour, and consecutive ids get distant hues (golden-ratio steps)."""
    ids = np.asarray(ids, np.int64).reshape(-1)
    n = ids.size
    hue = (ids * 0.618033988749895) % 1.0
    mixed = (ids * 2654435761) & 0xFFFF  # Knuth's multiplicative hash: varied sat/val
    sat = 0.65 + 0.35 * (mixed & 0xFF) / 255.0
    val = 0.75 + 0.25 * (mixed >> 8) / 255.0
    h6 = hue * 6.0
    c = val * sat
    x = c * (1.0 - np.abs(h6 % 2.0 - 1.0))
    zeros = np.zeros(n)
    sector = h6.astype(int) % 6
    rgb = np.select(
        [sector[:, None] == k for k in range(6)],
        [np.stack(t, axis=1) for t in (
            (c, x, zeros), (x, c, zeros), (zeros, c, x),
            (zeros, x, c), (x, zeros, c), (c, zeros, x))],
    ) if n else np.zeros((0, 3))
    return np.clip((rgb + (val - c)[:, None]) * 255.0, 0, 255).astype(np.uint8)


def colour_by_instance(instance: np.ndarray, others: np.ndarray) -> np.ndarray:
    """(N, 3) uint8 display colours: points with an instance id (> 0) take
    :func:`instance_colours` of it, the rest keep ``others`` (N, 3)."""
    colour = np.array(others, np.uint8)
    inside = np.asarray(instance) > 0
    if inside.any():
        ids, inverse = np.unique(np.asarray(instance)[inside], return_inverse=True)
        colour[inside] = instance_colours(ids)[inverse]
    return colour


def dimmed(rgb: np.ndarray) -> np.ndarray:
    """A darker, flatter copy of (N, 3) uint8 colours: context behind instance colours."""
    return (np.asarray(rgb, np.float32) * 0.45 + 60).astype(np.uint8)
