"""Per-voxel network outputs, and the oracle that derives ideal ones from ground truth."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .voxels import VoxelGrid, majority_vote, scatter_mean

#: The oracle's feature and spatial bandwidths (sigma_s, sigma_d in metres) of eq. (14).
ORACLE_BANDWIDTH = (1.0, 0.25)
#: Standard deviation of the oracle's per-instance embedding centres (feature units).
ORACLE_EMBEDDING_SPREAD = 1.5
#: The oracle's feature-embedding dimension.
ORACLE_EMBEDDING_DIM = 16


@dataclass
class VoxelPredictions:
    """What the network predicts for every voxel (paper §3.1), as numpy arrays.

    Attributes:
        semantic_prob: (M, K) float32 class probabilities over ``label_ids``.
        label_ids: (K,) int32 nyu40 id of each class column.
        embedding: (M, E) float32 feature embedding s_i.
        offset_m: (M, 3) float32 spatial embedding d_i in metres: the voxel's instance centre
            is predicted at voxel centre + d_i (eqs. 3 and 12).
        bandwidth: (M, 2) float32 (sigma_s, sigma_d): feature and spatial bandwidths
            (sigma_d in metres) that divide distances in eqs. (8) and (14).
        log_occupancy: (M,) float32 o_i, log of the voxel count of the voxel's instance.
    """

    semantic_prob: np.ndarray
    label_ids: np.ndarray
    embedding: np.ndarray
    offset_m: np.ndarray
    bandwidth: np.ndarray
    log_occupancy: np.ndarray

    def __post_init__(self) -> None:
        m = self.semantic_prob.shape[0]
        expected = {"embedding": 2, "offset_m": 2, "bandwidth": 2, "log_occupancy": 1}
        for key, ndim in expected.items():
            value = getattr(self, key)
            if value.ndim != ndim or value.shape[0] != m:
                raise ValueError(f"VoxelPredictions.{key} has shape {value.shape}, expected "
                                 f"{m} rows and {ndim} dimensions")
        if self.semantic_prob.shape[1] != self.label_ids.shape[0]:
            raise ValueError("semantic_prob columns and label_ids differ in length")

    @property
    def semantic(self) -> np.ndarray:
        """(M,) int32 nyu40 id of the most probable class of every voxel."""
        return self.label_ids[np.argmax(self.semantic_prob, axis=1)].astype(np.int32)


def oracle_predictions(grid: VoxelGrid, point_semantic: np.ndarray, point_instance: np.ndarray,
                       noise_m: float = 0.0, seed: int = 0) -> VoxelPredictions:
    """Ideal per-voxel outputs derived from ground truth: the clustering's upper bound.

    Every voxel takes the majority semantic label and instance of its points. Ideal outputs:
    the offset to the centroid of its instance's voxels, one embedding per instance, the log
    of its instance's voxel count, and fixed bandwidths :data:`ORACLE_BANDWIDTH`.

    ``noise_m`` is the scale of Gaussian noise, in metres, on every component of the offsets.
    The other outputs get noise of the same relative size, with ``nu = noise_m / 0.1 m``:
    embeddings N(0, (0.1 nu)^2) per component (nu times the paper's delta_v = 0.1); log
    occupancy N(0, (0.1 nu)^2), so about 10 nu % size error per voxel; semantic logits
    N(0, nu^2) on a one-hot margin of 5, so labels flip only for nu above about 2.
    Voxels without an instance get a zero offset and embedding (plus noise) and log(1).

    Args:
        grid: the voxelised scene.
        point_semantic: (N,) nyu40 ids of the grid's input points.
        point_instance: (N,) instance ids of the input points (-1 = none).
        noise_m: noise scale in metres (>= 0).
        seed: seed of the embedding centres and the noise.
    """
    if noise_m < 0 or not np.isfinite(noise_m):
        raise ValueError(f"oracle noise must be a finite scale >= 0, got {noise_m}")
    n = grid.point_to_voxel.shape[0]
    if point_semantic.shape != (n,) or point_instance.shape != (n,):
        raise ValueError("ground-truth arrays must have one entry per voxelised point")
    # Separate streams: the embedding centres do not depend on the noise scale.
    centre_rng, noise_rng = (np.random.default_rng([seed, k]) for k in (0, 1))
    m = grid.num_voxels
    nu = noise_m / 0.1
    semantic = majority_vote(point_semantic, grid.point_to_voxel, m)
    instance = majority_vote(point_instance, grid.point_to_voxel, m)
    label_ids, semantic_col = np.unique(semantic, return_inverse=True)
    logits = np.zeros((m, label_ids.size), np.float64)
    logits[np.arange(m), semantic_col] = 5.0
    logits += noise_rng.normal(0.0, nu, logits.shape) if nu > 0 else 0.0
    logits -= logits.max(axis=1, keepdims=True)
    prob = np.exp(logits)
    prob /= prob.sum(axis=1, keepdims=True)

    has_instance = instance >= 0
    inst_ids, inst_index = np.unique(instance[has_instance], return_inverse=True)
    centres = grid.centers_m.astype(np.float64)
    counts = np.bincount(inst_index, minlength=inst_ids.size).astype(np.float64)
    inst_centre = scatter_mean(centres[has_instance], inst_index, inst_ids.size)
    offset = np.zeros((m, 3))
    offset[has_instance] = inst_centre[inst_index] - centres[has_instance]
    embed_centres = centre_rng.normal(0.0, ORACLE_EMBEDDING_SPREAD, (inst_ids.size, ORACLE_EMBEDDING_DIM))
    embedding = np.zeros((m, ORACLE_EMBEDDING_DIM))
    embedding[has_instance] = embed_centres[inst_index]
    log_occupancy = np.zeros(m)
    log_occupancy[has_instance] = np.log(counts)[inst_index]
    if noise_m > 0:
        offset += noise_rng.normal(0.0, noise_m, offset.shape)
        embedding += noise_rng.normal(0.0, 0.1 * nu, embedding.shape)
        log_occupancy = np.maximum(log_occupancy + noise_rng.normal(0.0, 0.1 * nu, m), 0.0)
    bandwidth = np.tile(np.asarray(ORACLE_BANDWIDTH, np.float32), (m, 1))
    return VoxelPredictions(semantic_prob=prob.astype(np.float32),
                            label_ids=label_ids.astype(np.int32),
                            embedding=embedding.astype(np.float32),
                            offset_m=offset.astype(np.float32), bandwidth=bandwidth,
                            log_occupancy=log_occupancy.astype(np.float32))


def mixed_predictions(semantics: VoxelPredictions, instances: VoxelPredictions) -> VoxelPredictions:
    """The class probabilities of ``semantics`` with the instance outputs of ``instances``.

    Pairing the network with the oracle (:func:`oracle_predictions`) one half at a time says
    which half limits AP: ideal classes with the network's embedding, offsets, bandwidths and
    occupancy, or the network's classes with ideal instance outputs.

    Args:
        semantics: supplies ``semantic_prob`` and ``label_ids``.
        instances: supplies ``embedding``, ``offset_m``, ``bandwidth`` and ``log_occupancy``.
            Both must describe the same voxels, in the same order.
    """
    m = semantics.semantic_prob.shape[0]
    if instances.embedding.shape[0] != m:
        raise ValueError(f"cannot mix predictions for {m} and {instances.embedding.shape[0]} "
                         "voxels: both must come from the same voxel grid")
    return VoxelPredictions(semantic_prob=semantics.semantic_prob, label_ids=semantics.label_ids,
                            embedding=instances.embedding, offset_m=instances.offset_m,
                            bandwidth=instances.bandwidth,
                            log_occupancy=instances.log_occupancy)
