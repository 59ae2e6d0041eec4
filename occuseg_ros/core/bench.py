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
