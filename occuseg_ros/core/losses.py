"""OccuSeg training losses, paper Sec. 3.1, eqs. (1)-(11).

The paper (Han et al., "OccuSeg: Occupancy-aware 3D Instance Segmentation", CVPR 2020) is the
specification. Where the authors' released code (THU-luvision/OccuSeg) differs, this module
follows the paper and says so next to the term concerned.

Every tensor is per voxel, M voxels, on any one device, float32:

* ``semantic_logits`` (M, K) class scores (unnormalised).
* ``embedding`` s (M, E) feature embedding, dimensionless.
* ``offset`` d (M, 3) metres; the predicted instance centre of voxel i is ``mu_i + d_i``.
* ``bandwidth`` (M, 2) = (sigma_s, sigma_d), positive: the feature bandwidth (embedding units)
  and the spatial bandwidth (metres). They DIVIDE distances, eq. (8).
* ``log_occupancy`` o (M,) predicted log of the voxel count of the voxel's instance, eq. (10).
* ``positions`` mu (M, 3) voxel centres in metres.
* ``semantic_target`` (M,) int64 class in [0, K), or -100 to ignore the voxel.
* ``instance_target`` (M,) int64 instance id; any negative id (conventionally -1) marks a voxel
  that belongs to no instance seen by the instance terms. Ids need not be contiguous. The caller
  decides which voxels count (e.g. whether wall and floor are instances).

"Instance" below means a distinct non-negative id in ``instance_target``; C is their number and
N_c the number of voxels of instance c. Terms that average over instances are 0 (with the autograd
graph intact, so ``backward()`` gives zero gradients) when there are no instances.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

#: Semantic target value that is ignored by the cross entropy.
IGNORE_INDEX: int = -100


@dataclass
class LossConfig:
    """Hyper-parameters of the joint loss, eq. (1).

    The paper's sums, eqs. (1), (2) and (4), carry no weights, so every weight defaults to 1.0.
    The authors' training used ``regularisation_weight=0.001`` and ``covariance_weight=10``; set
    those here to reproduce it.

    Attributes:
        delta_v: pull margin of eq. (5), embedding units. Paper 0.1 (the authors' code uses 0.2).
        delta_d: push margin of eq. (6), embedding units; instance means are pushed 2*delta_d
            apart. Paper 1.5.
        semantic_weight: weight of L_c, eq. (1).
        spatial_weight: weight of L_sp, eq. (2).
        variance_weight: weight of L_var, eq. (4).
        distance_weight: weight of L_dist, eq. (4).
        regularisation_weight: weight of L_reg, eq. (4).
        covariance_weight: weight of L_cov, eq. (2).
        occupancy_weight: weight of L_o, eq. (1).
        covariance_eps: p_i of eq. (8) is capped at 1 - covariance_eps in the non-member part of
            the cross entropy, eq. (9), so log(1 - p_i) stays finite; in (0, 1).
        covariance_chunk_elements: most (instances x voxels) entries the covariance term builds
            at once; more instances than that are processed in chunks, each recomputed in the
            backward pass, so memory stays O(covariance_chunk_elements).
        class_weights: one weight per class of L_c (the cross entropy becomes the weighted mean
            over voxels); None = unweighted, as in the paper. See
            :func:`occuseg_ros.core.training.class_balance_weights`.
    """

    delta_v: float = 0.1
    delta_d: float = 1.5
    semantic_weight: float = 1.0
    spatial_weight: float = 1.0
    variance_weight: float = 1.0
    distance_weight: float = 1.0
    regularisation_weight: float = 1.0
    covariance_weight: float = 1.0
    occupancy_weight: float = 1.0
    covariance_eps: float = 1e-6
    covariance_chunk_elements: int = 1 << 22
    class_weights: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.delta_v < 0.0 or self.delta_d < 0.0:
            raise ValueError(f"margins must be >= 0, got delta_v={self.delta_v}, "
                             f"delta_d={self.delta_d}")
        weights = (self.semantic_weight, self.spatial_weight, self.variance_weight,
                   self.distance_weight, self.regularisation_weight, self.covariance_weight,
                   self.occupancy_weight)
        if min(weights) < 0.0:
            raise ValueError(f"loss weights must be >= 0, got {weights}")
        if not 0.0 < self.covariance_eps < 1.0:
            raise ValueError(f"covariance_eps must be in (0, 1), got {self.covariance_eps}")
        if self.covariance_chunk_elements < 1:
            raise ValueError("covariance_chunk_elements must be >= 1, got "
                             f"{self.covariance_chunk_elements}")
        if self.class_weights is not None:
            weights = tuple(float(w) for w in self.class_weights)
            if not weights or not all(math.isfinite(w) and w > 0.0 for w in weights):
                raise ValueError(f"class_weights must be positive and finite, got {weights}")
            self.class_weights = weights


@dataclass(frozen=True)
class _Instances:
    """Voxel-to-instance assignment with compact ids.

    Attributes:
        voxels: (M_inst,) int64 indices of the voxels that belong to an instance.
        index: (M_inst,) int64 compact instance index in [0, C) of each of those voxels; compact
            indices follow ascending instance id.
        counts: (C,) float voxel count N_c of each instance.
    """

    voxels: Tensor
    index: Tensor
    counts: Tensor

    @property
    def num(self) -> int:
        return int(self.counts.shape[0])


def _instances(instance_target: Tensor, dtype: torch.dtype) -> _Instances:
    voxels = torch.nonzero(instance_target >= 0).squeeze(1)
    _, index, counts = torch.unique(instance_target[voxels], sorted=True, return_inverse=True,
                                    return_counts=True)
    return _Instances(voxels=voxels, index=index, counts=counts.to(dtype))


def _segment_mean(values: Tensor, inst: _Instances) -> Tensor:
    """Per-instance mean of ``values`` (M_inst, ...) over its voxels: (C, ...)."""
    total = values.new_zeros((inst.num,) + tuple(values.shape[1:]))
    total = total.index_add(0, inst.index, values)
    return total / inst.counts.view((-1,) + (1,) * (values.dim() - 1))


def _zero(*tensors: Tensor) -> Tensor:
    """A scalar 0 that depends on ``tensors``, so ``backward()`` reaches them (with 0)."""
    return sum(t.sum() for t in tensors) * 0.0


def semantic_loss(semantic_logits: Tensor, semantic_target: Tensor,
                  class_weights: Sequence[float] | None = None) -> Tensor:
    """L_c of eq. (1): cross entropy, mean over voxels whose target is not -100.

    Args:
        semantic_logits: (M, K) unnormalised class scores.
        semantic_target: (M,) int64 class index in [0, K), or -100 (ignored).
        class_weights: K weights; the mean then weighs each voxel by its target class's
            weight (torch's weighted cross entropy). None: unweighted.

    Returns:
        Scalar loss in nats; 0 (graph intact) when every voxel is ignored.
    """
    if not bool((semantic_target != IGNORE_INDEX).any()):
        return _zero(semantic_logits)
    weight = None
    if class_weights is not None:
        if len(class_weights) != semantic_logits.shape[1]:
            raise ValueError(f"{len(class_weights)} class weights for "
                             f"{semantic_logits.shape[1]} classes")
        weight = semantic_logits.new_tensor(class_weights)
    return F.cross_entropy(semantic_logits, semantic_target, weight=weight,
                           ignore_index=IGNORE_INDEX)


def _spatial(offset: Tensor, positions: Tensor, inst: _Instances) -> Tensor:
    """``spatial_loss`` on precomputed instances."""
    if inst.num == 0:
        return _zero(offset)
    mu = positions[inst.voxels]
    centroid = _segment_mean(mu, inst)
    error = torch.linalg.vector_norm(offset[inst.voxels] + mu - centroid[inst.index], dim=1)
    return _segment_mean(error, inst).mean()


def spatial_loss(offset: Tensor, positions: Tensor, instance_target: Tensor) -> Tensor:
    """L_sp, eq. (3): mean over instances of the mean L2 error of the predicted centre.

    L_sp = 1/C sum_c 1/N_c sum_{i in c} || d_i + mu_i - (1/N_c) sum_{k in c} mu_k ||.

    Args:
        offset: (M, 3) predicted offset d_i from the voxel centre to its instance centre, metres.
        positions: (M, 3) voxel centres mu_i, metres.
        instance_target: (M,) int64 instance ids, negative = no instance.

    Returns:
        Scalar loss in metres.
    """
    return _spatial(offset, positions, _instances(instance_target, offset.dtype))


def _variance(embedding: Tensor, inst: _Instances, delta_v: float) -> Tensor:
    """``variance_loss`` on precomputed instances."""
    if inst.num == 0:
        return _zero(embedding)
    s = embedding[inst.voxels]
    u = _segment_mean(s, inst)
    dist = torch.linalg.vector_norm(u[inst.index] - s, dim=1)
    return _segment_mean(torch.clamp(dist - delta_v, min=0.0) ** 2, inst).mean()


def variance_loss(embedding: Tensor, instance_target: Tensor, delta_v: float = 0.1) -> Tensor:
    """L_var, eq. (5): hinged pull of each embedding towards its instance mean.

    L_var = 1/C sum_c 1/N_c sum_{i in c} [ ||u_c - s_i|| - delta_v ]_+^2,
    with u_c the mean embedding of instance c.

    Paper vs code: the authors' code takes one mean over all voxels (large instances dominate)
    and uses delta_v = 0.2; this follows the paper, a mean per instance, then over instances,
    with delta_v = 0.1 by default.

    Args:
        embedding: (M, E) feature embedding s_i.
        instance_target: (M,) int64 instance ids, negative = no instance.
        delta_v: pull margin, embedding units.

    Returns:
        Scalar loss, squared embedding units.
    """
    return _variance(embedding, _instances(instance_target, embedding.dtype), delta_v)


def _distance(embedding: Tensor, inst: _Instances, delta_d: float) -> Tensor:
    """``distance_loss`` on precomputed instances."""
    if inst.num < 2:
        return _zero(embedding)
    u = _segment_mean(embedding[inst.voxels], inst)
    a, b = torch.triu_indices(inst.num, inst.num, offset=1, device=u.device)
    gap = torch.linalg.vector_norm(u[a] - u[b], dim=1)
    return (torch.clamp(2.0 * delta_d - gap, min=0.0) ** 2).sum() / (inst.num * (inst.num - 1))


def distance_loss(embedding: Tensor, instance_target: Tensor, delta_d: float = 1.5) -> Tensor:
    """L_dist, eq. (6): hinged push between the mean embeddings of every pair of instances.

    L_dist = 1/(C(C-1)) sum_{cA} sum_{cB > cA} [ 2 delta_d - ||u_cA - u_cB|| ]_+^2,
    exactly as printed: each unordered pair is counted once but the sum is divided by C(C-1),
    which is half the mean over pairs. (The authors' code, like the original discriminative
    loss, sums over ordered pairs, i.e. twice this value.)

    Args:
        embedding: (M, E) feature embedding s_i.
        instance_target: (M,) int64 instance ids, negative = no instance.
        delta_d: push margin, embedding units.

    Returns:
        Scalar loss, squared embedding units; 0 (graph intact) with fewer than two instances.
    """
    return _distance(embedding, _instances(instance_target, embedding.dtype), delta_d)


def _regularisation(embedding: Tensor, inst: _Instances) -> Tensor:
    """``regularisation_loss`` on precomputed instances."""
    if inst.num == 0:
        return _zero(embedding)
    u = _segment_mean(embedding[inst.voxels], inst)
    return torch.linalg.vector_norm(u, dim=1).mean()


def regularisation_loss(embedding: Tensor, instance_target: Tensor) -> Tensor:
    """L_reg, eq. (7): mean over instances of the L2 norm (not squared) of the mean embedding.

    Args:
        embedding: (M, E) feature embedding s_i.
        instance_target: (M,) int64 instance ids, negative = no instance.

    Returns:
        Scalar loss, embedding units.
    """
    return _regularisation(embedding, _instances(instance_target, embedding.dtype))


def _feature_terms(embedding: Tensor, inst: _Instances, cfg: LossConfig) -> dict[str, Tensor]:
    """The unweighted terms of eq. (4)."""
    return {"variance": _variance(embedding, inst, cfg.delta_v),
            "distance": _distance(embedding, inst, cfg.delta_d),
            "regularisation": _regularisation(embedding, inst)}


def _feature_sum(cfg: LossConfig, terms: dict[str, Tensor]) -> Tensor:
    """L_se, eq. (4): the weighted sum of its terms."""
    return (cfg.variance_weight * terms["variance"] + cfg.distance_weight * terms["distance"]
            + cfg.regularisation_weight * terms["regularisation"])


def _embedding_sum(cfg: LossConfig, terms: dict[str, Tensor], feature: Tensor) -> Tensor:
    """L_e, eq. (2): weighted L_sp + L_se (``feature``) + weighted L_cov."""
    return (cfg.spatial_weight * terms["spatial"] + feature
            + cfg.covariance_weight * terms["covariance"])


def feature_loss(embedding: Tensor, instance_target: Tensor,
                 config: LossConfig | None = None) -> Tensor:
    """L_se, eq. (4): L_var + L_dist + L_reg (eqs. 5-7), each scaled by its config weight.

    The paper's eq. (4) is unweighted, so are the defaults. (The authors' code weights L_reg by
    0.001.)

    Args:
        embedding: (M, E) feature embedding s_i.
        instance_target: (M,) int64 instance ids, negative = no instance.
        config: margins and weights; ``LossConfig()`` when None.

    Returns:
        Scalar loss.
    """
    cfg = config if config is not None else LossConfig()
    inst = _instances(instance_target, embedding.dtype)
    return _feature_sum(cfg, _feature_terms(embedding, inst, cfg))


def _covariance_chunk(s: Tensor, s_sq: Tensor, x: Tensor, x_sq: Tensor, voxel_instance: Tensor,
                      first: int, u: Tensor, e: Tensor, sigma_s: Tensor, sigma_d: Tensor,
                      eps: float) -> Tensor:
    """Sum over a chunk of instances of the voxel-mean cross entropy of eq. (9).

    Args:
        s: (M, E) embeddings and ``s_sq`` (M,) their squared norms.
        x: (M, 3) predicted centres and ``x_sq`` (M,) their squared norms, metres.
        voxel_instance: (M,) compact instance index of every voxel, -1 for none.
        first: compact index of the chunk's first instance.
        u, e: (Cc, E) mean embeddings and (Cc, 3) mean predicted centres of the chunk.
        sigma_s, sigma_d: (Cc,) instance bandwidths.
        eps: cap 1 - eps on p for the non-member part.
    """
    # Squared distances by expansion, (Cc, M): no (Cc, M, E) difference tensor is built.
    feat_sq = torch.clamp(s_sq + (u * u).sum(1, keepdim=True) - 2.0 * u @ s.T, min=0.0)
    space_sq = torch.clamp(x_sq + (e * e).sum(1, keepdim=True) - 2.0 * e @ x.T, min=0.0)
    # q = -log p_i, eq. (8).
    q = feat_sq / sigma_s[:, None] ** 2 + space_sq / sigma_d[:, None] ** 2
    ids = torch.arange(first, first + u.shape[0], device=s.device)
    member = voxel_instance[None, :] == ids[:, None]
    # -log p is q itself, exact and finite, so the member part needs no clamp. The non-member
    # part -log(1 - p) = -log(-expm1(-q)) caps p at 1 - eps (q >= -log(1 - eps)).
    non_member = -torch.log(-torch.expm1(-torch.clamp(q, min=-math.log1p(-eps))))
    return torch.where(member, q, non_member).mean(dim=1).sum()


def _covariance(embedding: Tensor, offset: Tensor, bandwidth: Tensor, positions: Tensor,
                inst: _Instances, eps: float, chunk_elements: int) -> Tensor:
    """``covariance_loss`` on precomputed instances."""
    if inst.num == 0:
        return _zero(embedding, offset, bandwidth)
    centre = positions + offset
    u = _segment_mean(embedding[inst.voxels], inst)
    e = _segment_mean(centre[inst.voxels], inst)
    sigma = _segment_mean(bandwidth[inst.voxels], inst)
    # Translating both sides of a difference changes nothing; centring keeps the expanded
    # squared distances free of cancellation when coordinates are large.
    s_origin = embedding.detach().mean(0)
    x_origin = centre.detach().mean(0)
    s, u = embedding - s_origin, u - s_origin
    x, e = centre - x_origin, e - x_origin
    s_sq, x_sq = (s * s).sum(1), (x * x).sum(1)
    voxel_instance = torch.full((embedding.shape[0],), -1, dtype=torch.int64,
                                device=embedding.device)
    voxel_instance[inst.voxels] = inst.index
    step = max(1, chunk_elements // max(1, embedding.shape[0]))
    run = _covariance_chunk if step >= inst.num else partial(checkpoint, _covariance_chunk,
                                                             use_reentrant=False)
    total = sum(run(s, s_sq, x, x_sq, voxel_instance, lo, u[lo:lo + step], e[lo:lo + step],
                    sigma[lo:lo + step, 0], sigma[lo:lo + step, 1], eps)
                for lo in range(0, inst.num, step))
    return total / inst.num


def covariance_loss(embedding: Tensor, offset: Tensor, bandwidth: Tensor, positions: Tensor,
                    instance_target: Tensor, eps: float = 1e-6,
                    chunk_elements: int = 1 << 22) -> Tensor:
    """L_cov, eqs. (8)-(9): cross entropy of the soft membership p_i of every voxel in every
    instance.

    For instance c, with u_c its mean embedding, e_c = 1/N_c sum_{k in c} (mu_k + d_k) its mean
    predicted centre (metres) and (sigma_s^c, sigma_d^c) the mean of b_k = bandwidth_k over its
    voxels,

        p_i = exp( -(||s_i - u_c|| / sigma_s^c)^2 - (||mu_i + d_i - e_c|| / sigma_d^c)^2 ), (8)
        L_cov = -1/C sum_c 1/N sum_{i=1..N} [ y_i log p_i + (1 - y_i) log(1 - p_i) ],     (9)

    y_i = 1 iff voxel i belongs to c. i runs over ALL M voxels (N in the paper), so voxels of
    other instances and voxels with a negative instance id are negatives of every instance.
    Gradients reach the embedding, offset and bandwidth heads, through u_c, e_c and sigma^c too.

    Paper vs code: the authors' code multiplies distances by the bandwidth head (a precision),
    scores only voxels near the instance (4x its radius), skips instances under 30 points and
    weights the term by 10; this follows eqs. (8)-(9): the bandwidth divides, every voxel is
    scored, weight 1 (see ``LossConfig.covariance_weight``).

    Numerics: log p_i = -q is used directly (never underflows); p_i is capped at 1 - eps in
    log(1 - p_i). Cost is O(C M); instances are processed ``chunk_elements // M`` at a time, each
    chunk checkpointed (recomputed in backward) when there is more than one.

    Args:
        embedding: (M, E) feature embedding s_i.
        offset: (M, 3) predicted offsets d_i, metres.
        bandwidth: (M, 2) positive (sigma_s, sigma_d): embedding units, metres.
        positions: (M, 3) voxel centres mu_i, metres.
        instance_target: (M,) int64 instance ids, negative = no instance.
        eps: p_i <= 1 - eps in the non-member part, in (0, 1).
        chunk_elements: most (instances x voxels) entries built at once, >= 1.

    Returns:
        Scalar loss in nats.
    """
    return _covariance(embedding, offset, bandwidth, positions,
                       _instances(instance_target, embedding.dtype), eps, chunk_elements)


def _occupancy(log_occupancy: Tensor, inst: _Instances) -> Tensor:
    """``occupancy_loss`` on precomputed instances."""
    if inst.num == 0:
        return _zero(log_occupancy)
    target = torch.log(inst.counts)[inst.index]
    return _segment_mean(torch.abs(log_occupancy[inst.voxels] - target), inst).mean()


def occupancy_loss(log_occupancy: Tensor, instance_target: Tensor) -> Tensor:
    """L_o, eq. (10): mean over instances of the mean |o_i - log N_c| over the instance.

    N_c is the voxel count of instance c in ``instance_target``. Paper vs code: the authors'
    code counts mesh points instead of voxels and adds the std of o_i within the instance; this
    follows eq. (10) alone.

    Args:
        log_occupancy: (M,) predicted log voxel count o_i.
        instance_target: (M,) int64 instance ids, negative = no instance.

    Returns:
        Scalar loss in log voxel-count units.
    """
    return _occupancy(log_occupancy, _instances(instance_target, log_occupancy.dtype))


def embedding_loss(embedding: Tensor, offset: Tensor, bandwidth: Tensor, positions: Tensor,
                   instance_target: Tensor, config: LossConfig | None = None) -> Tensor:
    """L_e, eq. (2): weighted L_sp (eq. 3) + L_se (eq. 4) + weighted L_cov (eqs. 8-9).

    Args:
        embedding: (M, E) feature embedding s_i.
        offset: (M, 3) predicted offsets d_i, metres.
        bandwidth: (M, 2) positive (sigma_s, sigma_d): embedding units, metres.
        positions: (M, 3) voxel centres mu_i, metres.
        instance_target: (M,) int64 instance ids, negative = no instance.
        config: margins, weights, numerics; ``LossConfig()`` when None.

    Returns:
        Scalar loss.
    """
    cfg = config if config is not None else LossConfig()
    inst = _instances(instance_target, embedding.dtype)
    terms = {**_feature_terms(embedding, inst, cfg),
             "spatial": _spatial(offset, positions, inst),
             "covariance": _covariance(embedding, offset, bandwidth, positions, inst,
                                       cfg.covariance_eps, cfg.covariance_chunk_elements)}
    return _embedding_sum(cfg, terms, _feature_sum(cfg, terms))


def joint_loss(semantic_logits: Tensor, embedding: Tensor, offset: Tensor, bandwidth: Tensor,
               log_occupancy: Tensor, *, semantic_target: Tensor, instance_target: Tensor,
               positions: Tensor, config: LossConfig | None = None
               ) -> tuple[Tensor, dict[str, float]]:
    """L_joint, eq. (1): weighted L_c + L_e + weighted L_o.

    Args:
        semantic_logits: (M, K) class scores.
        embedding: (M, E) feature embedding.
        offset: (M, 3) predicted offsets to the instance centre, metres.
        bandwidth: (M, 2) positive (sigma_s, sigma_d): embedding units, metres.
        log_occupancy: (M,) predicted log instance voxel count.
        semantic_target: (M,) int64 class in [0, K) or -100.
        instance_target: (M,) int64 instance id, negative = no instance.
        positions: (M, 3) voxel centres, metres.
        config: margins, weights, numerics; ``LossConfig()`` when None.

    Returns:
        The total (scalar tensor with grad) and the unweighted value of every term as a Python
        float: ``semantic``, ``spatial``, ``variance``, ``distance``, ``regularisation``,
        ``covariance``, ``occupancy``; the weighted sums ``feature`` (eq. 4), ``embedding``
        (eq. 2) and ``total`` (eq. 1).
    """
    m = semantic_logits.shape[0]
    shapes = {"semantic_logits": (semantic_logits, 2), "embedding": (embedding, 2),
              "offset": (offset, 2), "bandwidth": (bandwidth, 2),
              "log_occupancy": (log_occupancy, 1), "semantic_target": (semantic_target, 1),
              "instance_target": (instance_target, 1), "positions": (positions, 2)}
    for name, (t, dims) in shapes.items():
        if t.dim() != dims or t.shape[0] != m:
            raise ValueError(f"{name} must have {dims} dims and {m} rows, got {tuple(t.shape)}")
    if offset.shape[1] != 3 or positions.shape[1] != 3 or bandwidth.shape[1] != 2:
        raise ValueError("offset and positions must be (M, 3) and bandwidth (M, 2), got "
                         f"{tuple(offset.shape)}, {tuple(positions.shape)}, "
                         f"{tuple(bandwidth.shape)}")
    cfg = config if config is not None else LossConfig()
    inst = _instances(instance_target, embedding.dtype)
    terms = {
        "semantic": semantic_loss(semantic_logits, semantic_target, cfg.class_weights),
        "spatial": _spatial(offset, positions, inst),
        **_feature_terms(embedding, inst, cfg),
        "covariance": _covariance(embedding, offset, bandwidth, positions, inst,
                                  cfg.covariance_eps, cfg.covariance_chunk_elements),
        "occupancy": _occupancy(log_occupancy, inst),
    }
    feature = _feature_sum(cfg, terms)
    embed = _embedding_sum(cfg, terms, feature)
    total = (cfg.semantic_weight * terms["semantic"] + embed
             + cfg.occupancy_weight * terms["occupancy"])
    report = {name: float(value.detach()) for name, value in terms.items()}
    report.update(feature=float(feature.detach()), embedding=float(embed.detach()),
                  total=float(total.detach()))
    return total, report


def occupancy_relative_error(log_occupancy: Tensor, instance_target: Tensor) -> Tensor:
    """R_c, eq. (11): |N_c - exp(mean_{i in c} o_i)| / N_c for every instance, for reporting.

    Args:
        log_occupancy: (M,) predicted log voxel count o_i.
        instance_target: (M,) int64 instance ids, negative = no instance.

    Returns:
        (C,) dimensionless relative errors, detached, in ascending instance-id order; empty
        when there are no instances.
    """
    o = log_occupancy.detach()
    inst = _instances(instance_target, o.dtype)
    if inst.num == 0:
        return o.new_zeros(0)
    predicted = torch.exp(_segment_mean(o[inst.voxels], inst))
    return torch.abs(inst.counts - predicted) / inst.counts
