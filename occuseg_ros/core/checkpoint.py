"""Model checkpoints that carry everything needed to run them, and the network predictor.

A checkpoint is a ``torch.save`` dict: ``format``, ``network`` (NetworkConfig as a dict),
``state_dict``, ``label_ids`` (nyu40 id of each semantic output), ``voxel_size_m``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .model import NetworkConfig, OccuSegNet, make_sparse_input
from .paths import share_file
from .predictions import VoxelPredictions
from .voxels import VoxelGrid

CHECKPOINT_FORMAT = "occuseg_ros/checkpoint-1"
#: File name of the model shipped in ``models/``.
DEFAULT_MODEL_NAME = "occuseg_default.pt"


class CheckpointError(ValueError):
    """A checkpoint that is missing or cannot be used."""


def default_model_path() -> Path | None:
    """The model to use when none is given: ``$OCCUSEG_MODEL`` if set, else the shipped
    ``models/occuseg_default.pt`` (:func:`share_file`); None when there is none."""
    if os.environ.get("OCCUSEG_MODEL"):
        return Path(os.environ["OCCUSEG_MODEL"])
    return share_file("models", DEFAULT_MODEL_NAME)


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise CheckpointError("device 'cuda' requested but torch sees no CUDA device "
                              "(install the [cuda] extra on a machine with a GPU)")
    if device not in ("cpu", "cuda"):
        raise CheckpointError(f"unknown device {device!r} (use auto, cpu or cuda)")
    return torch.device(device)


def save_checkpoint(path: str | Path, model: OccuSegNet, label_ids: np.ndarray,
                    voxel_size_m: float, extra: dict[str, Any] | None = None) -> None:
    """Write a self-describing checkpoint (atomically: temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": CHECKPOINT_FORMAT, "network": model.config.to_dict(),
               "state_dict": model.state_dict(),
               "label_ids": [int(x) for x in label_ids], "voxel_size_m": float(voxel_size_m)}
    payload.update(extra or {})
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path, device: torch.device) -> tuple[OccuSegNet, dict[str, Any]]:
    """Load a checkpoint into an eval-mode network on ``device``.

    Returns the model and the checkpoint dict (without the weights).

    Raises:
        CheckpointError: missing file, wrong format, or weights that do not fit the config.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"model file not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt file
        raise CheckpointError(f"{path}: not a readable checkpoint ({exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not an occuseg_ros checkpoint ({CHECKPOINT_FORMAT})")
    config = NetworkConfig.from_dict(payload["network"])
    if len(payload["label_ids"]) != config.num_classes:
        raise CheckpointError(f"{path}: {len(payload['label_ids'])} label ids for "
                              f"{config.num_classes} classes")
    model = OccuSegNet(config)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not match the network config ({exc})") from exc
    meta = {k: v for k, v in payload.items() if k != "state_dict"}
    return model.to(device).eval(), meta


#: What :func:`export_checkpoint` keeps besides the weights: the run's provenance.
PROVENANCE_KEYS = ("step", "validation", "train_config")


def export_checkpoint(source: str | Path, out: str | Path) -> dict[str, Any]:
    """Write an inference-only copy of a training checkpoint (the model a release ships).

    Keeps the weights, network config, label ids, voxel size and :data:`PROVENANCE_KEYS`; drops
    the optimizer state (two thirds of a training checkpoint). Returns the kept metadata.
    """
    model, meta = load_checkpoint(source, torch.device("cpu"))
    kept = {key: meta[key] for key in PROVENANCE_KEYS if key in meta}
    save_checkpoint(out, model, np.asarray(meta["label_ids"]), meta["voxel_size_m"], kept)
    return {**{k: meta[k] for k in ("network", "label_ids", "voxel_size_m")}, **kept}


class NetworkPredictor:
    """Runs the sparse UNet on a voxel grid and returns :class:`VoxelPredictions`.

    Args:
        half_precision: on CUDA, run the network under float16 autocast (spconv's fp16
            kernels; outputs come back as float32). Ignored on the CPU, where float16 sparse
            convolutions are slower than float32.
    """

    def __init__(self, model: OccuSegNet, label_ids: np.ndarray, voxel_size_m: float,
                 device: torch.device, half_precision: bool = False) -> None:
        self.model = model.to(device).eval()
        self.label_ids = np.asarray(label_ids, np.int32)
        self.voxel_size_m = float(voxel_size_m)
        self.device = device
        self.half_precision = bool(half_precision) and device.type == "cuda"

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "auto",
                        half_precision: bool = False) -> "NetworkPredictor":
        torch_device = resolve_device(device)
        model, meta = load_checkpoint(path, torch_device)
        return cls(model, np.asarray(meta["label_ids"]), meta["voxel_size_m"], torch_device,
                   half_precision)

    @torch.inference_mode()
    def __call__(self, grid: VoxelGrid) -> VoxelPredictions:
        if abs(grid.voxel_size_m - self.voxel_size_m) > 1e-9:
            raise ValueError(f"the model expects {self.voxel_size_m} m voxels, "
                             f"the grid has {grid.voxel_size_m} m")
        features = grid.rgb * 2.0 - 1.0  # colour in [-1, 1], as the authors' input
        feats, coords = make_sparse_input(grid.coords, features, anchor=grid.anchor,
                                          step=2 ** (self.model.config.num_levels - 1))
        with torch.autocast(self.device.type, dtype=torch.float16,
                            enabled=self.half_precision):
            out = self.model(feats.to(self.device), coords.to(self.device), 1)
        prob = torch.softmax(out["semantic_logits"].float(), dim=1)
        return VoxelPredictions(
            semantic_prob=prob.cpu().numpy(), label_ids=self.label_ids,
            embedding=out["embedding"].float().cpu().numpy(),
            offset_m=out["offset"].float().cpu().numpy(),
            bandwidth=out["bandwidth"].float().cpu().numpy(),
            log_occupancy=out["log_occupancy"].float().cpu().numpy().reshape(-1))
