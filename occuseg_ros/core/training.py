"""Training of the OccuSeg network: data, augmentation, the joint loss (eq. 1), validation.

Data are generated rooms (by seed) or scene files (for example ScanNet scenes converted with
:mod:`occuseg_ros.core.scannet`). Each step draws scenes, augments them (rotation about z,
flips, scaling, colour jitter), optionally crops a square window, voxelises at the model's
voxel size and minimises eq. (1) with Adam (initial learning rate 1e-3, as in the paper).
Instances cut by the crop window take no part in the instance terms: their visible size is
not their occupancy. Runs on CPU and CUDA, and on several GPUs or machines under ``torchrun``
(DistributedDataParallel; rank 0 validates and writes checkpoints).
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.distributed as dist

from .checkpoint import NetworkPredictor, load_checkpoint, save_checkpoint
from .labels import SCANNET20_IDS, STUFF_IDS
from .losses import IGNORE_INDEX, LossConfig, joint_loss
from .model import NetworkConfig, OccuSegNet, collate
from .pipeline import PipelineConfig
from .scene import Scene, load_scene
from .synthetic import generate_room
from .validation import ValidationResult, validate_scenes
from .voxels import majority_vote, voxelize


@dataclass
class TrainConfig:
    """Everything a training run needs; stored in its checkpoints for resuming.

    Attributes:
        out_dir: where ``last.pt``, ``best.pt`` and ``log.tsv`` go.
        steps: optimiser steps.
        batch_size: scenes per step (per process under torchrun).
        lr: Adam's initial learning rate (paper: 1e-3); cosine decay to ``lr * 0.01``.
        crop_m: side of the random square crop in metres; 0 = whole scenes.
        train_seeds: generated rooms to train on (``(first, last + 1)``), when no files.
        val_seeds: generated rooms to validate on (never overlapping the training seeds).
        train_files, val_files: scene files instead of generated rooms.
        val_every: steps between validations (and checkpoints).
        voxel_size_m: voxel edge in metres.
        network: the network's shape.
        loss: :class:`LossConfig` fields. The default weighs L_reg of eq. (4) by 0.001, as
            De Brabandere et al. [7] and the authors' code do, not by 1 as eq. (4) reads: at
            weight 1 the pull towards the origin keeps instance means packed together (median
            distance between means 1.15 after 200 steps, against 2.41 at 0.001; margin
            2 delta_d = 3).
        seed: seed of sampling, augmentation and initialisation.
        class_balance: exponent p of the semantic class weights (frequency / median
            frequency)^-p over the training scenes (:func:`class_balance_weights`); 0 = the
            paper's unweighted cross entropy, 0.5 = inverse square root of the frequency.
        init_from: a checkpoint whose weights start the run (fine-tuning, e.g. the shipped
            model on ScanNet scans): a fresh optimiser and schedule, and the checkpoint's
            network shape in place of ``network``. ``resume`` continues a run instead.
    """

    out_dir: str = "training_out"
    steps: int = 2000
    batch_size: int = 2
    lr: float = 1e-3
    crop_m: float = 3.5
    train_seeds: tuple[int, int] = (0, 200)
    val_seeds: tuple[int, int] = (200_000, 200_005)
    train_files: list[str] = field(default_factory=list)
    val_files: list[str] = field(default_factory=list)
    val_every: int = 250
    voxel_size_m: float = 0.02
    network: dict = field(default_factory=lambda: NetworkConfig().to_dict())
    loss: dict = field(default_factory=lambda: {"regularisation_weight": 0.001})
    seed: int = 0
    class_balance: float = 0.0
    init_from: str | None = None

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.val_every < 1:
            raise ValueError("steps, batch_size and val_every must be positive")
        if not self.lr > 0 or self.crop_m < 0 or not 0 <= self.class_balance <= 2:
            raise ValueError("lr must be positive, crop_m non-negative and class_balance in "
                             "[0, 2]")
        self.train_seeds, self.val_seeds = tuple(self.train_seeds), tuple(self.val_seeds)
        if not 0 < self.voxel_size_m < 1:
            raise ValueError(f"voxel_size_m must be in (0, 1) metres, got {self.voxel_size_m}")
        unknown = set(self.loss) - set(LossConfig.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown loss settings {sorted(unknown)}")
        LossConfig(**self.loss)  # validates the values
        if not self.train_files:
            lo, hi = self.train_seeds
            vlo, vhi = self.val_seeds
            if hi <= lo:
                raise ValueError(f"empty training seed range {self.train_seeds}")
            if max(lo, vlo) < min(hi, vhi):
                raise ValueError(f"validation seeds {self.val_seeds} overlap training seeds "
                                 f"{self.train_seeds}")


class SceneSource:
    """Scenes by index: generated rooms from a seed range, or files; cached after first use."""

    def __init__(self, seeds: tuple[int, int], files: Sequence[str]) -> None:
        self.files = [Path(f) for f in files]
        self.seeds = range(*seeds)
        self._cache: dict[int, Scene] = {}

    def __len__(self) -> int:
        return len(self.files) if self.files else len(self.seeds)

    def __getitem__(self, index: int) -> Scene:
        if index not in self._cache:
            scene = (load_scene(self.files[index]) if self.files
                     else generate_room(self.seeds[index]))
            if not scene.has_ground_truth:
                raise ValueError(f"{scene.name}: training needs 'semantic' and 'instance'")
            self._cache[index] = scene
        return self._cache[index]


#: Class weights of :func:`class_balance_weights` stay within this factor of the median's.
CLASS_WEIGHT_RANGE = 10.0
#: Training scenes whose labels :func:`class_balance_weights` counts (the first ones).
CLASS_COUNT_SCENES = 64


def class_balance_weights(source: SceneSource, label_ids: Sequence[int],
                          exponent: float) -> tuple[float, ...]:
    """Semantic class weights ``(f_c / median f)^-exponent`` from the training scenes' labels.

    ``f_c`` is the share of labelled points of class ``c`` over the first
    :data:`CLASS_COUNT_SCENES` scenes of ``source``; the median is over the classes present.
    Weights are clipped to ``[1 / CLASS_WEIGHT_RANGE, CLASS_WEIGHT_RANGE]``; classes absent
    from those scenes get 1 (they are never a target there).
    """
    ids = np.asarray(label_ids)
    column = {int(v): k for k, v in enumerate(ids)}
    counts = np.zeros(ids.size)
    for i in range(min(len(source), CLASS_COUNT_SCENES)):
        labels = source[i].semantic
        present, n = np.unique(labels[np.isin(labels, ids)], return_counts=True)
        counts[[column[int(v)] for v in present]] += n
    seen = counts > 0
    if not seen.any():
        raise ValueError("no training scene has a label of the training label set")
    weights = np.ones(ids.size)
    weights[seen] = (counts[seen] / np.median(counts[seen])) ** -exponent
    return tuple(float(w) for w in np.clip(weights, 1 / CLASS_WEIGHT_RANGE, CLASS_WEIGHT_RANGE))


@dataclass
class Sample:
    """One augmented, voxelised training scene (numpy, CPU)."""

    coords: np.ndarray          # (M, 3) int32 voxel indices
    features: np.ndarray        # (M, 3) float32 colour in [-1, 1]
    positions: np.ndarray       # (M, 3) float32 voxel centres, metres
    semantic: np.ndarray        # (M,) int64 class index or IGNORE_INDEX
    instance: np.ndarray        # (M,) int64 instance id, -1 = not in the instance terms


def augment(scene: Scene, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random rotation about z, flips of x and y, scaling 0.9-1.1 and colour jitter.

    Returns the new xyz (metres) and rgb in [0, 1].
    """
    angle = rng.uniform(0.0, 2.0 * np.pi)
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    flips = np.diag([rng.choice([-1.0, 1.0]), rng.choice([-1.0, 1.0]), 1.0])
    xyz = scene.xyz.astype(np.float64) @ (rot @ flips).T * rng.uniform(0.9, 1.1)
    rgb = scene.rgb.astype(np.float64) / 255.0
    rgb = rgb * rng.uniform(0.8, 1.2) + rng.normal(0.0, 0.05, 3)  # brightness, colour cast
    rgb += rng.normal(0.0, 0.02, rgb.shape)
    return xyz, np.clip(rgb, 0.0, 1.0)


def make_sample(scene: Scene, rng: np.random.Generator, voxel_size_m: float,
                crop_m: float, label_ids: Sequence[int], augmentation: bool = True) -> Sample:
    """Augment, voxelise and crop a scene and derive per-voxel targets.

    Targets: the majority label of each voxel's points as a class index (IGNORE_INDEX for
    labels outside ``label_ids``), and the majority instance (-1 for stuff classes, for
    unlabelled voxels and for instances cut by the crop window).
    """
    if augmentation:
        xyz, rgb = augment(scene, rng)
    else:
        xyz, rgb = scene.xyz.astype(np.float64), scene.rgb / 255.0
    grid = voxelize(xyz, voxel_size_m, rgb)
    m = grid.num_voxels
    semantic = majority_vote(scene.semantic, grid.point_to_voxel, m)
    instance = majority_vote(scene.instance, grid.point_to_voxel, m)
    keep = np.ones(m, bool)
    if crop_m > 0:
        centres = grid.centers_m
        lo, hi = centres[:, :2].min(axis=0), centres[:, :2].max(axis=0)
        corner = rng.uniform(lo, np.maximum(lo, hi - crop_m))
        keep = ((centres[:, :2] >= corner) & (centres[:, :2] < corner + crop_m)).all(axis=1)
        if not keep.any():
            keep[:] = True
    class_of = np.full(max(int(semantic.max(initial=0)), max(label_ids)) + 1, IGNORE_INDEX,
                       np.int64)
    class_of[np.asarray(label_ids)] = np.arange(len(label_ids))
    target_sem = np.where(semantic >= 0, class_of[np.maximum(semantic, 0)], IGNORE_INDEX)
    target_inst = np.where(np.isin(semantic, STUFF_IDS) | (semantic <= 0), -1, instance)
    if not keep.all():
        ids, full = np.unique(target_inst[target_inst >= 0], return_counts=True)
        inside = np.bincount(np.searchsorted(ids, target_inst[keep & (target_inst >= 0)]),
                             minlength=ids.size)
        cut = ids[inside < full]
        target_inst[np.isin(target_inst, cut)] = -1
    return Sample(coords=grid.coords[keep], features=(grid.rgb[keep] * 2.0 - 1.0).astype(np.float32),
                  positions=grid.centers_m[keep], semantic=target_sem[keep].astype(np.int64),
                  instance=target_inst[keep].astype(np.int64))


def batch_loss(model: torch.nn.Module, samples: Sequence[Sample], device: torch.device,
               loss_config: LossConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """Eq. (1) averaged over the scenes of a batch (each scene's instances on their own)."""
    feats, coords, batch = collate([(s.coords, s.features) for s in samples], device)
    out = model(feats, coords, batch)
    total = torch.zeros((), device=device)
    terms: dict[str, float] = {}
    start = 0
    for sample in samples:
        rows = slice(start, start + sample.coords.shape[0])
        start = rows.stop
        loss, parts = joint_loss(
            out["semantic_logits"][rows], out["embedding"][rows], out["offset"][rows],
            out["bandwidth"][rows], out["log_occupancy"][rows],
            semantic_target=torch.from_numpy(sample.semantic).to(device),
            instance_target=torch.from_numpy(sample.instance).to(device),
            positions=torch.from_numpy(sample.positions).to(device), config=loss_config)
        total = total + loss / len(samples)
        for key, value in parts.items():
            terms[key] = terms.get(key, 0.0) + value / len(samples)
    return total, terms


def validate(model: OccuSegNet, scenes: Sequence[Scene], voxel_size_m: float,
             device: torch.device) -> ValidationResult:
    """ScanNet AP and occupancy accuracy of the whole method on whole scenes.

    The model is put in eval mode for this and back in train mode afterwards.
    """
    predictor = NetworkPredictor(model, np.array(SCANNET20_IDS), voxel_size_m, device)
    result = validate_scenes(scenes, lambda scene: predictor,
                             PipelineConfig(voxel_size_m=voxel_size_m))
    model.train()
    return result


class Progress:
    """A one-line progress bar on a terminal; a log line every ``every`` steps otherwise."""

    def __init__(self, total: int, start: int, every: int = 50) -> None:
        self.total, self.start, self.every = total, start, every
        self.t0 = time.perf_counter()
        self.tty = sys.stderr.isatty()

    def update(self, step: int, loss: float, lr: float) -> None:
        done = step + 1 - self.start
        rate = (time.perf_counter() - self.t0) / max(done, 1)
        eta = rate * (self.total - step - 1)
        bar = "#" * int(30 * (step + 1) / self.total)
        line = (f"[{bar:<30}] step {step + 1}/{self.total} loss {loss:.3f} lr {lr:.1e} "
                f"{rate:.2f} s/step ETA {eta / 60:.1f} min")
        if self.tty:
            print("\r" + line, end="", file=sys.stderr, flush=True)
        elif (step + 1) % self.every == 0 or step + 1 == self.total:
            print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.tty:
            print(file=sys.stderr)


def _distributed() -> tuple[int, int]:
    """(rank, world size), initialising the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def train(config: TrainConfig, device: torch.device, resume: Path | None = None,
          log=print) -> Path:
    """Run training; return the path of the best checkpoint (by validation AP50)."""
    rank, world = _distributed()
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    out_dir = Path(config.out_dir)
    torch.manual_seed(config.seed)
    label_ids = list(SCANNET20_IDS)
    net_config = NetworkConfig.from_dict(config.network)
    if net_config.num_classes != len(label_ids):
        raise ValueError(f"the network has {net_config.num_classes} classes, "
                         f"the label set {len(label_ids)}")
    if config.init_from is None or resume is not None:
        model = OccuSegNet(net_config).to(device)
    else:
        model, meta = load_checkpoint(config.init_from, device)
        if list(meta["label_ids"]) != label_ids:
            raise ValueError(f"{config.init_from}: its label ids are not the training set's")
        if not math.isclose(float(meta["voxel_size_m"]), config.voxel_size_m):
            log(f"warning: {config.init_from} was trained at {meta['voxel_size_m']} m voxels, "
                f"this run uses {config.voxel_size_m} m")
        config.network = model.config.to_dict()
        log(f"starting from the weights of {config.init_from}")
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr)
    start_step, best_ap50 = 0, -1.0
    if resume is not None:
        model_loaded, meta = load_checkpoint(resume, device)
        model.load_state_dict(model_loaded.state_dict())
        optimiser.load_state_dict(meta["optimizer"])
        for group in optimiser.param_groups:  # the schedule below scales the initial lr
            group["lr"] = config.lr
        start_step, best_ap50 = int(meta["step"]), float(meta["best_ap50"])
        log(f"resumed from {resume} at step {start_step}")
    wrapped = (torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None)
        if world > 1 else model)
    # Cosine decay from lr to lr / 100 over the run; a resumed run continues the curve.
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda k: 0.01 + 0.495 * (1 + math.cos(math.pi * (k + start_step) / config.steps)))
    train_source = SceneSource(config.train_seeds, config.train_files)
    val_source = SceneSource(config.val_seeds, config.val_files)
    val_scenes = [val_source[i] for i in range(len(val_source))] if rank == 0 else []
    rng = np.random.default_rng([config.seed, rank, start_step])
    if config.class_balance > 0 and config.loss.get("class_weights") is None:
        config.loss["class_weights"] = list(class_balance_weights(train_source, label_ids,
                                                                  config.class_balance))
        if rank == 0:
            log("semantic class weights " + " ".join(
                f"{i}:{w:.2f}" for i, w in zip(label_ids, config.loss["class_weights"])))
    loss_config = LossConfig(**config.loss)
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        log(f"training {sum(p.numel() for p in model.parameters())} parameters on {device} "
            f"x{world}, {len(train_source)} training and {len(val_scenes)} validation scenes")
    progress = Progress(config.steps, start_step)
    wrapped.train()
    for step in range(start_step, config.steps):
        picks = rng.integers(0, len(train_source), config.batch_size)
        samples = [make_sample(train_source[int(i)], rng, config.voxel_size_m, config.crop_m,
                               label_ids) for i in picks]
        loss, terms = batch_loss(wrapped, samples, device, loss_config)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        scheduler.step()
        if rank == 0:
            progress.update(step, terms["total"], scheduler.get_last_lr()[0])
        if rank == 0 and ((step + 1) % config.val_every == 0 or step + 1 == config.steps):
            validation = validate(model, val_scenes, config.voxel_size_m, device)
            metrics = validation.metrics
            improved = metrics.ap50 > best_ap50
            best_ap50 = max(best_ap50, metrics.ap50)
            extra = {"optimizer": optimiser.state_dict(), "step": step + 1,
                     "best_ap50": best_ap50, "train_config": asdict(config),
                     "validation": metrics.to_dict()}
            save_checkpoint(out_dir / "last.pt", model, np.array(label_ids),
                            config.voxel_size_m, extra)
            if improved:
                save_checkpoint(out_dir / "best.pt", model, np.array(label_ids),
                                config.voxel_size_m, extra)
            with open(out_dir / "log.tsv", "a", encoding="utf-8") as fh:
                fh.write(f"{step + 1}\t{terms['total']:.4f}\t{metrics.ap:.4f}\t"
                         f"{metrics.ap50:.4f}\t{metrics.ap25:.4f}\t"
                         f"{validation.occupancy_accuracy:.4f}\n")
            progress.close()
            log(f"step {step + 1}: loss {terms['total']:.3f} "
                + " ".join(f"{k} {v:.3f}" for k, v in terms.items() if k != "total")
                + f" | validation AP {metrics.ap:.3f} AP50 {metrics.ap50:.3f} "
                f"AP25 {metrics.ap25:.3f} R_c<0.3 {validation.occupancy_accuracy:.2f}"
                f"{' (best)' if improved else ''}")
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return out_dir / "best.pt"

