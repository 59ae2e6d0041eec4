"""OccuSeg network: a submanifold sparse 3D UNet with the five per-voxel heads of Sec. 3.1.

The trunk follows the authors' code (``LearningBWDenseUNet``; SparseConvNet's residual
``UNet``): a 3x3x3 submanifold stem, then per level pre-activation residual blocks, a
kernel-2 stride-2 sparse convolution down, the inner levels, the paired inverse convolution up,
concatenation with the skip and a residual block from 2C back to C; widths grow linearly
(m, 2m, 3m, ...), no convolution has a bias. The trunk feature (m channels after a final
BN-ReLU) is "decoded through a fully connected layer" per task (paper Sec. 3); the authors stack
two linear layers with no nonlinearity between them, which is the same function class as the
single linear layer used here.

Runs unchanged on CPU and CUDA with ``spconv.pytorch``; on the CPU the convolution arithmetic
goes through :mod:`occuseg_ros.core.sparse_conv` (installed on import), which fixes the CPU
build's broken backward and its multi-threaded forward race.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import spconv.pytorch as spconv
import torch
import torch.nn.functional as F
from torch import nn

from occuseg_ros.core.sparse_conv import install_cpu_sparse_conv

install_cpu_sparse_conv()
# spconv's SparseConvTensor is an fx-proxyable class, so every construction asks
# torch.fx whether it is tracing; torch 2.13 answers with a deprecation warning meant for
# tracing code. We never trace: keep that one logger quiet.
logging.getLogger("torch.fx._symbolic_trace").setLevel(logging.ERROR)

#: Added to the softplus of the bandwidth head so that the bandwidths that divide distances
#: (paper eqs. 8 and 14) stay away from zero.
MIN_BANDWIDTH: float = 1e-3

#: BatchNorm epsilon of the authors' code (SparseConvNet); torch's momentum 0.1 is SCN's 0.9.
BN_EPS: float = 1e-4
BN_MOMENTUM: float = 0.1


@dataclass
class NetworkConfig:
    """Shape of :class:`OccuSegNet`; stored in checkpoints via :meth:`to_dict`.

    Attributes:
        in_channels: input feature channels per voxel (3: RGB in [-1, 1]).
        base_channels: m, the width of the first level; level l has (l + 1) * m channels.
        num_levels: resolutions in the UNet (num_levels - 1 stride-2 downsamplings).
        reps: residual blocks per level, in the encoder and in the decoder.
        num_classes: semantic classes (20 for ScanNet).
        embedding_dim: length of the feature embedding s (paper eqs. 5-8).
    """

    in_channels: int = 3
    base_channels: int = 16
    num_levels: int = 5
    reps: int = 1
    num_classes: int = 20
    embedding_dim: int = 16

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"NetworkConfig.{f.name} must be a positive int, got {value!r}")

    @property
    def widths(self) -> list[int]:
        """Channels of each level, m, 2m, 3m, ..."""
        return [self.base_channels * (level + 1) for level in range(self.num_levels)]

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> NetworkConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown NetworkConfig keys: {sorted(unknown)}")
        return cls(**values)


def _batch_norm(channels: int) -> nn.BatchNorm1d:
    return nn.BatchNorm1d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class _NormActConv(nn.Module):
    """BN-ReLU on the features, then a sparse convolution (pre-activation)."""

    def __init__(self, channels: int, conv: spconv.SparseModule) -> None:
        super().__init__()
        self.norm = _batch_norm(channels)
        self.conv = conv

    def forward(self, x: spconv.SparseConvTensor) -> spconv.SparseConvTensor:
        return self.conv(x.replace_feature(F.relu(self.norm(x.features))))


class ResidualBlock(nn.Module):
    """BN-ReLU-SubMConv3-BN-ReLU-SubMConv3 plus a skip (identity, or 1x1 when widths differ)."""

    def __init__(self, in_channels: int, out_channels: int, indice_key: str) -> None:
        super().__init__()
        self.conv1 = _NormActConv(in_channels, spconv.SubMConv3d(
            in_channels, out_channels, 3, bias=False, indice_key=indice_key))
        self.conv2 = _NormActConv(out_channels, spconv.SubMConv3d(
            out_channels, out_channels, 3, bias=False, indice_key=indice_key))
        # A 1x1x1 convolution is a per-voxel linear map (SparseConvNet's NetworkInNetwork).
        self.skip = (nn.Identity() if in_channels == out_channels
                     else nn.Linear(in_channels, out_channels, bias=False))

    def forward(self, x: spconv.SparseConvTensor) -> spconv.SparseConvTensor:
        skip = self.skip(x.features)
        y = self.conv2(self.conv1(x))
        return y.replace_feature(y.features + skip)


def _residual_stack(in_channels: int, out_channels: int, reps: int,
                    indice_key: str) -> nn.Sequential:
    return nn.Sequential(*(ResidualBlock(in_channels if i == 0 else out_channels, out_channels,
                                         indice_key) for i in range(reps)))


class OccuSegNet(nn.Module):
    """Sparse 3D UNet with semantic, embedding, offset, bandwidth and occupancy heads.

    Voxel coordinates are ``[batch, x, y, z]`` throughout (spconv's index layout, x first).
    """

    def __init__(self, config: NetworkConfig | None = None) -> None:
        super().__init__()
        self.config = config or NetworkConfig()
        cfg = self.config
        widths = cfg.widths
        levels = range(cfg.num_levels - 1)
        self.stem = spconv.SubMConv3d(cfg.in_channels, widths[0], 3, bias=False,
                                      indice_key="subm0")
        self.encoders = nn.ModuleList(
            _residual_stack(w, w, cfg.reps, f"subm{level}") for level, w in enumerate(widths))
        self.downs = nn.ModuleList(
            _NormActConv(widths[level], spconv.SparseConv3d(
                widths[level], widths[level + 1], 2, stride=2, bias=False,
                indice_key=f"down{level}")) for level in levels)
        self.ups = nn.ModuleList(
            _NormActConv(widths[level + 1], spconv.SparseInverseConv3d(
                widths[level + 1], widths[level], 2, bias=False, indice_key=f"down{level}"))
            for level in levels)
        self.decoders = nn.ModuleList(
            _residual_stack(2 * widths[level], widths[level], cfg.reps, f"subm{level}")
            for level in levels)
        self.out_norm = _batch_norm(widths[0])
        m = widths[0]
        # One fully connected layer per task on the trunk feature (see the module docstring).
        self.semantic_head = nn.Linear(m, cfg.num_classes)
        self.embedding_head = nn.Linear(m, cfg.embedding_dim)
        self.offset_head = nn.Linear(m, 3)
        self.bandwidth_head = nn.Linear(m, 2)
        self.occupancy_head = nn.Linear(m, 1)

    def spatial_shape(self, coords: torch.Tensor) -> list[int]:
        """Grid extent (x, y, z) in voxels: max coordinate + 1, rounded up to a multiple of
        2**(num_levels - 1) so that every stride-2 level halves it exactly."""
        step = 2 ** (self.config.num_levels - 1)
        extent = coords[:, 1:].amax(dim=0).cpu().long() + 1
        return (((extent + step - 1) // step) * step).tolist()

    def trunk(self, features: torch.Tensor, coords: torch.Tensor,
              batch_size: int) -> torch.Tensor:
        """(M, m) per-voxel UNet features after the final BN-ReLU, rows as in ``coords``."""
        x = spconv.SparseConvTensor(features, coords, self.spatial_shape(coords), batch_size)
        x = self.stem(x)
        skips: list[spconv.SparseConvTensor] = []
        for level, encoder in enumerate(self.encoders):
            x = encoder(x)
            if level < len(self.downs):
                skips.append(x)
                x = self.downs[level](x)
        for level in reversed(range(len(self.ups))):
            x = self.ups[level](x)  # rows come back in the order of skips[level]
            x = x.replace_feature(torch.cat([skips[level].features, x.features], dim=1))
            x = self.decoders[level](x)
        return F.relu(self.out_norm(x.features))

    def forward(self, features: torch.Tensor, coords: torch.Tensor,
                batch_size: int) -> dict[str, torch.Tensor]:
        """Per-voxel predictions.

        Args:
            features: (M, in_channels) float32 voxel features (RGB in [-1, 1]).
            coords: (M, 4) int32 voxel indices ``[batch, x, y, z]``, x, y, z >= 0, unique.
            batch_size: number of scenes; batch indices lie in [0, batch_size).

        Returns:
            ``semantic_logits`` (M, num_classes): class scores c (eq. 1, cross-entropy).
            ``embedding`` (M, embedding_dim): feature embedding s, no activation (eqs. 5-8).
            ``offset`` (M, 3) metres: spatial embedding d, from the voxel centre to its
            instance centre, so the predicted centre is voxel centre + d (eqs. 3, 12; the
            authors' code regresses the opposite sign).
            ``bandwidth`` (M, 2): b = (sigma_s, sigma_d) > 0, sigma_s in embedding units and
            sigma_d in metres; they divide the distances of eqs. 8 and 14. (The authors' code
            multiplies distances by its ``bw`` output, i.e. uses precisions; we follow the
            paper.)
            ``log_occupancy`` (M,): o >= 0, log of the voxel count of the instance (eq. 10).
        """
        if features.ndim != 2 or features.shape[1] != self.config.in_channels:
            raise ValueError(f"features must be (M, {self.config.in_channels}), "
                             f"got {tuple(features.shape)}")
        if coords.shape != (features.shape[0], 4):
            raise ValueError(f"coords must be ({features.shape[0]}, 4), got {tuple(coords.shape)}")
        if features.shape[0] == 0:
            raise ValueError("no voxels")
        coords = coords.to(torch.int32).contiguous()
        if int(coords.min()) < 0 or int(coords[:, 0].max()) >= batch_size:
            raise ValueError("coords must be non-negative with batch index < batch_size")
        h = self.trunk(features, coords, batch_size)
        return {
            "semantic_logits": self.semantic_head(h),
            "embedding": self.embedding_head(h),
            "offset": self.offset_head(h),
            "bandwidth": F.softplus(self.bandwidth_head(h)) + MIN_BANDWIDTH,
            "log_occupancy": F.softplus(self.occupancy_head(h)).squeeze(1),
        }


def make_sparse_input(coords_xyz: np.ndarray, features: np.ndarray | torch.Tensor,
                      device: torch.device | str = "cpu", anchor: np.ndarray | None = None,
                      step: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """One scene as network input.

    Args:
        coords_xyz: (M, 3) integer voxel indices (x, y, z), unique, possibly negative.
        features: (M, C) per-voxel features.
        device: where the tensors go.
        anchor: (3,) cell that lands on a multiple of ``step`` after the shift; None: the
            minimum of each axis. Training always shifts the minimum to 0, which the network
            learnt (at another alignment of the strided levels the shipped model loses about
            half its AP); a crop of a map anchored at the map's minimum with ``step`` =
            ``2 ** (num_levels - 1)`` pools exactly the voxels the whole map pools, so it gets
            the whole map's outputs wherever its receptive field lies inside the crop.
        step: see ``anchor``.

    Returns:
        features (M, C) float32 and coords (M, 4) int32 ``[0, x, y, z]``, shifted to be
        non-negative.
    """
    coords_xyz = np.asarray(coords_xyz)
    if coords_xyz.ndim != 2 or coords_xyz.shape[1] != 3 or coords_xyz.shape[0] == 0:
        raise ValueError(f"coords_xyz must be (M, 3) with M > 0, got {coords_xyz.shape}")
    feats = (features.float() if isinstance(features, torch.Tensor)
             else torch.as_tensor(np.asarray(features), dtype=torch.float32))
    if feats.ndim != 2 or feats.shape[0] != coords_xyz.shape[0]:
        raise ValueError(f"features must be ({coords_xyz.shape[0]}, C), got {tuple(feats.shape)}")
    low = coords_xyz.min(axis=0).astype(np.int64)
    if anchor is None:
        origin = low
    else:
        anchor = np.asarray(anchor, np.int64)
        if anchor.shape != (3,) or step < 1:
            raise ValueError(f"anchor must be (3,) and step positive, got {anchor.shape}, {step}")
        origin = anchor + (low - anchor) // step * step
    shifted = coords_xyz.astype(np.int64) - origin
    coords = np.concatenate([np.zeros((shifted.shape[0], 1), np.int64), shifted], axis=1)
    return feats.to(device), torch.from_numpy(coords.astype(np.int32)).to(device)


def collate(samples: Sequence[tuple[np.ndarray, np.ndarray | torch.Tensor]],
            device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor, int]:
    """Several scenes ``(coords_xyz (M_i, 3), features (M_i, C))`` as one batch.

    Each scene is shifted as in :func:`make_sparse_input` and gets batch index i.

    Returns:
        features (sum M_i, C) float32, coords (sum M_i, 4) int32 ``[i, x, y, z]``, batch size.
    """
    if not samples:
        raise ValueError("collate needs at least one sample")
    parts = [make_sparse_input(coords, feats) for coords, feats in samples]
    coords = torch.cat([c for _, c in parts])
    coords[:, 0] = torch.repeat_interleave(
        torch.arange(len(parts), dtype=torch.int32),
        torch.tensor([c.shape[0] for _, c in parts]))
    return torch.cat([f for f, _ in parts]).to(device), coords.to(device), len(parts)


def count_parameters(model: nn.Module) -> int:
    """Number of scalar parameters (trainable or not)."""
    return sum(p.numel() for p in model.parameters())
