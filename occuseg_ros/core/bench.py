"""``occuseg bench``: per-stage timing of the whole method, printed as a Markdown table.

The network stage runs the given (or shipped) checkpoint; without one it runs the default
network with random weights, which costs the same time. Super-voxels and clustering then
work on the oracle's outputs (5 cm noise) where the scene has ground truth, so their timings
reflect a realistic number of instances whatever the weights; otherwise on the network's.
"""

from __future__ import annotations

import datetime
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from .checkpoint import NetworkPredictor, default_model_path, resolve_device
from .incremental import IncrementalConfig
from .model import NetworkConfig, OccuSegNet
from .labels import SCANNET20_IDS
from .pipeline import PipelineConfig, segment_points
from .predictions import VoxelPredictions, oracle_predictions
from .scene import Scene, load_scene
from .synthetic import generate_room
from .voxels import VoxelGrid

STAGES = ("voxelise", "network", "supervoxels", "clustering", "total")
#: The generated ScanNet-sized room: seed 2 at 6.5-7.5 m gives 78k points (scene0000_00: 81k).
BENCH_ROOM_SEED, BENCH_ROOM_SIZE_M = 2, (6.5, 7.5)


def machine_description(device: torch.device) -> str:
    """CPU model, core count, torch threads and the inference device."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    gpu = f", GPU {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} with "
            f"{torch.get_num_threads()} threads, device {device}{gpu}")


class _TimedPredictor:
    """Runs the network (timed on its own), then hands on oracle outputs when available."""

    def __init__(self, network: NetworkPredictor, scene: Scene) -> None:
        self.network = network
        self.scene = scene
        self.network_s = 0.0

    def __call__(self, grid: VoxelGrid) -> VoxelPredictions:
        start = time.perf_counter()
        if self.network.device.type == "cuda":
            torch.cuda.synchronize()
        pred = self.network(grid)
        if self.network.device.type == "cuda":
            torch.cuda.synchronize()
        self.network_s = time.perf_counter() - start
        if self.scene.has_ground_truth:
            return oracle_predictions(grid, self.scene.semantic, self.scene.instance, 0.05)
        return pred


def run_benchmark(scene_paths: list[Path], model: Path | None = None, device: str = "auto",
                  repeat: int = 3, include_generated: bool = True,
                  config: PipelineConfig | None = None) -> str:
    """Time every stage on a generated room and on the given scenes; return the table."""
    if repeat < 1:
        raise ValueError("repeat must be at least 1")
    torch_device = resolve_device(device)
    path = model or default_model_path()
    if path is not None:
        network = NetworkPredictor.from_checkpoint(path, device)
        model_note = f"model {path.name}"
    else:
        net = OccuSegNet(NetworkConfig(num_classes=len(SCANNET20_IDS)))
        network = NetworkPredictor(net, np.array(SCANNET20_IDS), 0.02, torch_device)
        model_note = "default network with random weights (no trained model shipped)"
    scenes = ([generate_room(BENCH_ROOM_SEED, size_range_m=BENCH_ROOM_SIZE_M)]
              if include_generated else [])
    scenes += [load_scene(p) for p in scene_paths]
    if not scenes:
        raise ValueError("nothing to benchmark: give scene files or drop --no-generated")
    config = config or PipelineConfig()
    config.voxel_size_m = network.voxel_size_m  # the model was trained at its voxel size
    rows = []
    for scene in scenes:
        predictor = _TimedPredictor(network, scene)
        segment_points(scene.xyz, scene.rgb, predictor, config)  # warm-up: JIT, allocator
        runs = []
        for _ in range(repeat):
            result = segment_points(scene.xyz, scene.rgb, predictor, config)
            timings = dict(result.timings_s)
            oracle_s = timings["network"] - predictor.network_s
            timings["network"] = predictor.network_s
            timings["total"] -= oracle_s
            runs.append(timings)
        median = {k: float(np.median([r[k] for r in runs])) for k in STAGES}
        rows.append((scene, result, median))
    lines = [
        f"occuseg bench, {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}",
        f"machine: {machine_description(torch_device)}",
        f"network: {model_note}; median of {repeat} runs after one warm-up",
        "",
        "| scene | points | voxels | super-voxels | instances | "
        + " | ".join(f"{s} ms" for s in STAGES) + " |",
        "|---|---:|---:|---:|---:|" + "---:|" * len(STAGES),
    ]
    for scene, result, median in rows:
        lines.append(f"| {scene.name} | {scene.num_points} | {result.num_voxels} | "
                     f"{result.num_supervoxels} | {result.num_instances} | "
                     + " | ".join(f"{median[s] * 1000:.0f}" for s in STAGES) + " |")
    return "\n".join(lines)


#: Map sizes of the scaling table, in voxels of the model's size.
SCALING_SIZES = (10_000, 30_000, 100_000, 300_000, 1_000_000)
#: Stages of one update, in the order they run (see :class:`UpdateStats` and
#: :meth:`occuseg_ros.core.segmenter.Segmenter.update`).
UPDATE_STAGES = ("voxels", "network", "supervoxels", "clustering", "tracking", "points",
                 "total")
#: Edge of the square column (full height) each timed increment brings in, metres.
PATCH_M = 1.0


def tiled_map(xyz: np.ndarray, rgb: np.ndarray, voxel_size_m: float, num_voxels: int,
              gap_m: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """A map of about ``num_voxels`` voxels: copies of one room on a square grid of
    rooms ``gap_m`` apart (x, y; metres), the last copy cut along x to hit the size."""
    base = xyz - xyz.min(axis=0)
    cells = np.floor(base / voxel_size_m).astype(np.int64)
    voxel_x = np.sort(np.unique(cells, axis=0)[:, 0])
    per_room = voxel_x.size
    extent = base.max(axis=0) + gap_m
    copies = int(np.ceil(num_voxels / per_room))
    side = int(np.ceil(np.sqrt(copies)))
    parts_xyz, parts_rgb, total = [], [], 0
    for k in range(copies):
        shifted = base + np.array([(k % side) * extent[0], (k // side) * extent[1], 0.0])
        take = np.ones(shifted.shape[0], bool)
        if total + per_room > num_voxels:  # the last copy: the voxel columns up to the size
            take = cells[:, 0] <= voxel_x[num_voxels - total - 1]
        parts_xyz.append(shifted[take].astype(np.float32))
        parts_rgb.append(rgb[take])
        total += per_room
    return np.concatenate(parts_xyz), np.concatenate(parts_rgb)


def disjoint_columns(xyz: np.ndarray, block_size_m: float, count: int,
                     rng: np.random.Generator, attempts: int = 200) -> list[np.ndarray]:
    """Up to ``count`` masks of ``xyz``, each the whole blocks (of ``block_size_m``) under a
    ``PATCH_M`` square column centred on a point of the map; no two share a block."""
    from .surface_map import grid_keys

    blocks = grid_keys(xyz, block_size_m)
    used = np.zeros(0, np.int64)
    columns: list[np.ndarray] = []
    for _ in range(attempts):
        if len(columns) == count:
            break
        centre = xyz[rng.integers(xyz.shape[0]), :2]
        under = np.unique(blocks[np.all(np.abs(xyz[:, :2] - centre) < PATCH_M / 2, axis=1)])
        if np.isin(under, used).any():
            continue
        used = np.concatenate([used, under])
        columns.append(np.isin(blocks, under))
    return columns


def run_scaling_benchmark(model: Path | None = None, device: str = "auto",
                          sizes: tuple[int, ...] = SCALING_SIZES, patches: int = 5,
                          config: PipelineConfig | None = None,
                          incremental: IncrementalConfig | None = None) -> str:
    """Latency of one map update against map size: a full recompute, and incremental updates
    as a live map gets them, per stage. The map is segmented with ``patches`` disjoint
    ``PATCH_M`` square columns missing (their points absent, as when the camera has not yet
    seen those corners); then the columns arrive one at a time, each one timed update of the
    same segmenter (p50 and p95 over them). Each update's result is then compared with a full
    recompute of the same map (:func:`occuseg_ros.core.segmenter.compare_maps`; the table
    gives the means over the updates of the share of points of the same class and of the
    share of the full recompute's instances matched at IoU 0.5). The full recomputes run after
    every update was timed, as the node never runs one between two updates.
    Returns the Markdown table."""
    from .segmenter import Segmenter, compare_maps
    from .surface_map import SurfaceMap

    torch_device = resolve_device(device)
    path = model or default_model_path()
    if path is None:
        raise ValueError("the scaling benchmark needs a model (none shipped or given)")
    network = NetworkPredictor.from_checkpoint(path, device)
    config = config or PipelineConfig()
    config.voxel_size_m = network.voxel_size_m
    incremental = incremental or IncrementalConfig.for_device(torch_device.type)
    room = generate_room(BENCH_ROOM_SEED, size_range_m=BENCH_ROOM_SIZE_M)
    room_xyz = room.xyz.astype(np.float32)
    rng = np.random.default_rng(0)
    block_size_m = 0.16
    rows = []
    for size in sizes:
        xyz, rgb = tiled_map(room_xyz, room.rgb, network.voxel_size_m, size)
        full_segmenter = Segmenter(network, config, incremental=incremental)
        if size == sizes[0]:
            full_segmenter.segment(xyz, rgb)  # JIT and allocator warm-up
        full_runs = [full_segmenter.segment(xyz, rgb).timings_s for _ in range(1 if size >
                                                                                 300_000 else 2)]
        full = {k: float(np.median([r.get(k, 0.0) for r in full_runs])) for k in UPDATE_STAGES}
        # The first map's first column is a warm-up (Numba loads the incremental kernels'
        # signatures on their first call in a process), not timed.
        first_size = size == sizes[0]
        columns = disjoint_columns(xyz, block_size_m, patches + int(first_size), rng)
        if not columns:
            raise ValueError(f"no {PATCH_M} m column fits a map of {size} voxels")
        missing = np.logical_or.reduce(columns)
        m = SurfaceMap(block_size_m, network.voxel_size_m, 10 ** 8)
        m.replace_all(xyz[~missing], rgb[~missing])
        segmenter = Segmenter(network, config, incremental=incremental)
        segmenter.update(m.take_changes(), *m.points())
        if first_size and len(columns) > 1:  # keep at least one column to time
            first = columns.pop(0)
            m.replace_blocks(xyz[first], rgb[first])
            segmenter.update(m.take_changes(), *m.points())
        inc_runs, results, network_voxels = [], [], []
        for column in columns:
            m.replace_blocks(xyz[column], rgb[column])
            seg = segmenter.update(m.take_changes(), *m.points())
            inc_runs.append(seg.timings_s)
            results.append(seg)
            network_voxels.append(segmenter.engine.last_update.network_voxels)
        num_voxels = segmenter.engine.num_voxels
        # How far each update is from a full recompute of the map it had.
        agreements = [compare_maps(seg, Segmenter(network, config).segment(seg.xyz, seg.rgb))
                      for seg in results]
        inc50 = {k: float(np.percentile([r.get(k, 0.0) for r in inc_runs], 50))
                 for k in UPDATE_STAGES}
        inc95 = float(np.percentile([r["total"] for r in inc_runs], 95))
        agreement = (float(np.mean([a.semantic for a in agreements])),
                     float(np.mean([a.instances_matched for a in agreements])))
        rows.append((num_voxels, full, inc50, inc95, int(np.median(network_voxels)), agreement,
                     len(columns)))
    lines = [
        f"occuseg bench --scaling, {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}",
        f"machine: {machine_description(torch_device)}",
        f"network: model {path.name} ({network.voxel_size_m * 100:.0f} cm voxels); map: copies "
        f"of generated room {BENCH_ROOM_SEED}; updates: new {PATCH_M:.0f} m square columns "
        f"arriving one after another ({', '.join(str(r[-1]) for r in rows)} per size); "
        f"margins refresh {incremental.refresh_margin_m} m, context "
        f"{incremental.context_margin_m} m",
        "",
        "| voxels | update | " + " | ".join(f"{s} ms" for s in UPDATE_STAGES)
        + " | p95 ms | network voxels | same class | instances matched |",
        "|---:|---|" + "---:|" * (len(UPDATE_STAGES) + 4),
    ]
    for num_voxels, full, inc50, inc95, network_voxels, agreement, _ in rows:
        lines.append(f"| {num_voxels} | full | " + " | ".join(
            f"{full[s] * 1000:.0f}" for s in UPDATE_STAGES) + f" | | {num_voxels} | | |")
        lines.append(f"| {num_voxels} | incremental (p50) | " + " | ".join(
            f"{inc50[s] * 1000:.0f}" for s in UPDATE_STAGES)
            + f" | {inc95 * 1000:.0f} | {network_voxels} | {agreement[0]:.1%} | "
            f"{agreement[1]:.0%} |")
    return "\n".join(lines)
