"""Tests of occuseg_ros.core.losses against values worked out by hand (paper eqs. 1-11)."""

from __future__ import annotations

import math

import pytest
import torch

from occuseg_ros.core.losses import (
    LossConfig,
    covariance_loss,
    distance_loss,
    embedding_loss,
    feature_loss,
    joint_loss,
    occupancy_loss,
    occupancy_relative_error,
    regularisation_loss,
    semantic_loss,
    spatial_loss,
    variance_loss,
)


def t(values: list) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def ids(values: list[int]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.int64)


def bce_negative(q: float) -> float:
    """-log(1 - p) for p = exp(-q): the cross entropy of a non-member."""
    return -math.log(1.0 - math.exp(-q))


# ---------------------------------------------------------------- semantic, eq. (1) L_c

def test_semantic_cross_entropy_ignores_minus_100() -> None:
    # Voxel 0: logits (0, 0), target 0 -> p = 1/2, loss ln 2.
    # Voxel 1: logits (ln 3, 0), target 0 -> p = 3/4, loss -ln(3/4).
    # Voxel 2: target -100, ignored whatever its logits.
    logits = t([[0.0, 0.0], [math.log(3.0), 0.0], [50.0, -50.0]])
    target = ids([0, 0, -100])
    expected = (math.log(2.0) - math.log(0.75)) / 2.0
    assert semantic_loss(logits, target).item() == pytest.approx(expected, rel=1e-6)


def test_semantic_class_weights_give_the_weighted_mean() -> None:
    # Same voxels as above, class weights (2, 5): voxels 0 and 1 are class 0 (weight 2) and
    # a class-1 voxel with logits (0, ln 4) has p = 4/5 (weight 5). Weighted mean over voxels:
    # (2 ln 2 - 2 ln(3/4) - 5 ln(4/5)) / (2 + 2 + 5).
    logits = t([[0.0, 0.0], [math.log(3.0), 0.0], [0.0, math.log(4.0)], [50.0, -50.0]])
    target = ids([0, 0, 1, -100])
    expected = (2 * math.log(2.0) - 2 * math.log(0.75) - 5 * math.log(0.8)) / 9.0
    assert semantic_loss(logits, target, (2.0, 5.0)).item() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="3 class weights for 2 classes"):
        semantic_loss(logits, target, (1.0, 1.0, 1.0))


def test_joint_uses_the_configs_class_weights() -> None:
    logits = t([[0.0, 0.0], [0.0, math.log(4.0)]])
    zeros = torch.zeros(2, 3)
    kwargs = dict(semantic_target=ids([0, 1]), instance_target=ids([-1, -1]), positions=zeros)
    _, parts = joint_loss(logits, torch.zeros(2, 4), zeros, torch.ones(2, 2), torch.zeros(2),
                          config=LossConfig(class_weights=(1.0, 3.0)), **kwargs)
    assert parts["semantic"] == pytest.approx((math.log(2.0) - 3 * math.log(0.8)) / 4.0,
                                              rel=1e-6)


@pytest.mark.parametrize("weights", [(), (1.0, 0.0), (1.0, -2.0), (1.0, math.nan)])
def test_config_rejects_bad_class_weights(weights) -> None:
    with pytest.raises(ValueError, match="class_weights"):
        LossConfig(class_weights=weights)


def test_semantic_all_ignored_is_zero_with_graph() -> None:
    logits = t([[1.0, 2.0]]).requires_grad_()
    loss = semantic_loss(logits, ids([-100]))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(logits.grad, torch.zeros_like(logits))


# ---------------------------------------------------------------- spatial, eq. (3)

def test_spatial_by_hand() -> None:
    # Instance 4: mu = (0,0,0), (2,0,0), centroid (1,0,0).
    #   d = (1,0,0) -> predicted centre (1,0,0), error 0; d = 0 -> centre (2,0,0), error 1.
    #   mean 0.5.
    # Instance 9: mu = (0,0,0), (0,3,0), (0,0,3), centroid (0,1,1), d = 0:
    #   errors ||(0,-1,-1)|| = sqrt 2, ||(0,2,-1)|| = sqrt 5, ||(0,-1,2)|| = sqrt 5.
    # Voxel 5 has no instance: its wild offset must not count.
    positions = t([[0, 0, 0], [2, 0, 0], [0, 0, 0], [0, 3, 0], [0, 0, 3], [7, 7, 7]])
    offset = t([[1, 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0], [99, 99, 99]])
    inst = ids([4, 4, 9, 9, 9, -1])
    expected = (0.5 + (math.sqrt(2.0) + 2.0 * math.sqrt(5.0)) / 3.0) / 2.0
    assert spatial_loss(offset, positions, inst).item() == pytest.approx(expected, rel=1e-6)


def test_spatial_zero_for_exact_offsets() -> None:
    gen = torch.Generator().manual_seed(0)
    positions = torch.rand(12, 3, generator=gen) * 5.0
    inst = ids([0, 0, 0, 1, 1, 2, 2, 2, 2, 3, -1, -1])
    offset = torch.zeros(12, 3)
    for c in range(4):
        members = inst == c
        offset[members] = positions[members].mean(0) - positions[members]
    assert spatial_loss(offset, positions, inst).item() == pytest.approx(0.0, abs=1e-6)


# ---------------------------------------------------------------- variance, eq. (5)

def test_variance_by_hand_is_per_instance_mean() -> None:
    # A: s = (0,0), (1,0); u = (0.5,0); distances 0.5, 0.5 -> (0.5-0.1)^2 = 0.16 each, mean 0.16.
    # B: s = (3,0), (3,0.4), (3,0.8); u = (3,0.4); distances 0.4, 0, 0.4
    #    -> 0.09, 0, 0.09, mean 0.06.
    # L_var = (0.16 + 0.06) / 2 = 0.11. (A per-voxel mean, as in the authors' code, would give
    # (0.32 + 0.18) / 5 = 0.10.)
    s = t([[0, 0], [1, 0], [3, 0], [3, 0.4], [3, 0.8], [50, 50]])
    inst = ids([0, 0, 1, 1, 1, -1])
    assert variance_loss(s, inst, delta_v=0.1).item() == pytest.approx(0.11, rel=1e-5)


def test_variance_zero_within_delta_v() -> None:
    # Every embedding lies within 0.05 < delta_v of its instance mean.
    s = t([[0, 0], [0.05, 0], [-0.05, 0], [5, 5], [5, 5.08]])
    inst = ids([0, 0, 0, 1, 1])
    assert variance_loss(s, inst, delta_v=0.1).item() == 0.0


# ---------------------------------------------------------------- distance, eq. (6)

def test_distance_by_hand_as_printed() -> None:
    # Means: u_A = mean((-1,0), (1,0)) = (0,0), u_B = (1,0), u_C = (0,4); 2 delta_d = 3.
    #   |AB| = 1 -> (3-1)^2 = 4; |AC| = 4 -> 0; |BC| = sqrt 17 > 3 -> 0.
    # Eq. (6) as printed: sum over unordered pairs / (C (C-1)) = 4 / 6.
    s = t([[-1, 0], [1, 0], [1, 0], [0, 4], [0, 0]])
    inst = ids([0, 0, 1, 2, -1])
    assert distance_loss(s, inst, delta_d=1.5).item() == pytest.approx(4.0 / 6.0, rel=1e-6)


def test_distance_zero_beyond_two_delta_d() -> None:
    s = t([[0, 0], [3.01, 0], [0, 3.01]])
    assert distance_loss(s, ids([0, 1, 2]), delta_d=1.5).item() == 0.0


# ---------------------------------------------------------------- regularisation, eq. (7)

def test_regularisation_is_mean_norm_of_means() -> None:
    # u_A = mean((2,4), (4,4)) = (3,4), norm 5; u_B = (0,1), norm 1; mean 3.
    s = t([[2, 4], [4, 4], [0, 1], [100, 100]])
    assert regularisation_loss(s, ids([5, 5, 2, -1])).item() == pytest.approx(3.0, rel=1e-6)


# ---------------------------------------------------------------- covariance, eqs. (8)-(9)

def covariance_example() -> dict[str, torch.Tensor]:
    """Two instances, three voxels, 2-d embedding; see test_covariance_by_hand."""
    return {
        "embedding": t([[-1, 0], [1, 0], [0, 1]]),
        "offset": t([[0.5, 0, 0], [-0.5, 0, 0], [0, 0, 0]]),
        "bandwidth": t([[0.5, 2.0], [1.5, 3.0], [2.0, 1.0]]),
        "positions": t([[0, 0, 0], [1, 0, 0], [3, 0, 0]]),
        "instance_target": ids([0, 0, 1]),
    }


def test_covariance_by_hand() -> None:
    # Instance A (voxels 0, 1): u_A = (0,0); predicted centres mu + d = (0.5,0,0) for both, so
    #   e_A = (0.5,0,0); sigma_s^A = mean(0.5, 1.5) = 1, sigma_d^A = mean(2, 3) = 2.5.
    #   q = -log p:  voxel 0: 1/1 + 0 = 1;  voxel 1: 1;
    #                voxel 2 (non-member): ||(0,1)||^2/1 + ||(2.5,0,0)||^2/2.5^2 = 1 + 1 = 2.
    #   L_A = (1 + 1 - log(1 - e^-2)) / 3.
    # Instance B (voxel 2): u_B = (0,1), e_B = (3,0,0), sigma^B = (2, 1).
    #   voxel 2 is at the mean: p = 1, contributes 0.
    #   voxels 0, 1: ||(-+1,-1)||^2/4 + 2.5^2/1 = 0.5 + 6.25 = 6.75.
    #   L_B = (0 + 2 * (-log(1 - e^-6.75))) / 3.
    # L_cov = (L_A + L_B) / 2.
    l_a = (1.0 + 1.0 + bce_negative(2.0)) / 3.0
    l_b = 2.0 * bce_negative(6.75) / 3.0
    loss = covariance_loss(**covariance_example())
    assert loss.item() == pytest.approx((l_a + l_b) / 2.0, rel=1e-5)


def test_covariance_member_at_mean_contributes_zero() -> None:
    # One instance of two identical voxels, one far non-member: both members sit at u_c and e_c,
    # so p = 1 for them (0 loss); the non-member has q = 100^2 and p ~ 0 (0 loss).
    loss = covariance_loss(
        embedding=t([[1, 2], [1, 2], [101, 2]]),
        offset=torch.zeros(3, 3),
        bandwidth=torch.ones(3, 2),
        positions=t([[1, 1, 1], [1, 1, 1], [1, 1, 1]]),
        instance_target=ids([3, 3, -1]),
    )
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


def test_covariance_larger_bandwidth_lowers_member_loss() -> None:
    # The bandwidth divides the distances (eq. 8): doubling it quarters q for the members.
    # A lone instance with no non-members: L = mean q = (1 + 1) / 2 / sigma_s^2.
    s = t([[-1, 0], [1, 0]])
    zeros = torch.zeros(2, 3)
    inst = ids([0, 0])
    narrow = covariance_loss(s, zeros, torch.ones(2, 2), zeros, inst)
    wide = covariance_loss(s, zeros, 2.0 * torch.ones(2, 2), zeros, inst)
    assert narrow.item() == pytest.approx(1.0, rel=1e-6)
    assert wide.item() == pytest.approx(0.25, rel=1e-6)


def test_covariance_non_member_at_mean_is_finite() -> None:
    # A non-member exactly at the instance mean has p = 1; the cap p <= 1 - eps keeps the loss
    # at -log(eps) and the gradient finite.
    s = t([[0, 0], [0, 0]]).requires_grad_()
    loss = covariance_loss(s, torch.zeros(2, 3), torch.ones(2, 2), torch.zeros(2, 3),
                           ids([0, -1]), eps=1e-6)
    loss.backward()
    assert loss.item() == pytest.approx(-math.log(1e-6) / 2.0, rel=1e-3)
    assert torch.isfinite(s.grad).all()


def test_covariance_chunked_matches_unchunked() -> None:
    gen = torch.Generator().manual_seed(3)
    m = 40
    inst = torch.randint(-1, 7, (m,), generator=gen)
    inputs = {"embedding": torch.randn(m, 4, generator=gen),
              "offset": torch.randn(m, 3, generator=gen) * 0.3,
              "bandwidth": torch.rand(m, 2, generator=gen) + 0.5}
    positions = torch.rand(m, 3, generator=gen) * 3.0
    grads = []
    values = []
    for chunk_elements in (1 << 22, 2 * m):  # one chunk; chunks of two instances
        leaves = {k: v.clone().requires_grad_() for k, v in inputs.items()}
        loss = covariance_loss(**leaves, positions=positions, instance_target=inst,
                               chunk_elements=chunk_elements)
        loss.backward()
        values.append(loss.item())
        grads.append([leaves[k].grad for k in inputs])
    assert values[1] == pytest.approx(values[0], rel=1e-6)
    for g_full, g_chunk in zip(*grads):
        torch.testing.assert_close(g_chunk, g_full, rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------- occupancy, eqs. (10)-(11)

def test_occupancy_l1_by_hand() -> None:
    # A: N = 2, log 2; o = (1, 0): |1 - ln 2| + |0 - ln 2| = 1, mean 0.5.
    # B: N = 4, log 4; o = ln 4 everywhere except one ln 4 + 1: mean 1/4.
    # L_o = (0.5 + 0.25) / 2 = 0.375.
    ln4 = math.log(4.0)
    o = t([1.0, 0.0, ln4, ln4, ln4, ln4 + 1.0, 9.0])
    inst = ids([0, 0, 1, 1, 1, 1, -1])
    assert occupancy_loss(o, inst).item() == pytest.approx(0.375, rel=1e-5)


def test_occupancy_relative_error_by_hand() -> None:
    # Id 3: N = 4, o = ln 5 -> exp(mean) = 5 -> R = |4 - 5| / 4 = 0.25.
    # Id 7: N = 2, o = (0, 2 ln 3) -> mean ln 3 -> 3 -> R = |2 - 3| / 2 = 0.5.
    # Output follows ascending id: (R_3, R_7).
    ln5, ln3 = math.log(5.0), math.log(3.0)
    o = t([0.0, ln5, 2.0 * ln3, ln5, ln5, ln5, 4.0]).requires_grad_()
    inst = ids([7, 3, 7, 3, 3, 3, -1])
    r = occupancy_relative_error(o, inst)
    assert r.tolist() == pytest.approx([0.25, 0.5], rel=1e-5)
    assert not r.requires_grad
    assert occupancy_relative_error(o, ids([-1] * 7)).shape == (0,)


# ---------------------------------------------------------------- composites, eqs. (1), (2), (4)

def random_example(m: int = 200, k: int = 5, e: int = 4, num_instances: int = 4,
                   seed: int = 0) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Random network outputs (leaves requiring grad) and targets; ~1/5 voxels no instance."""
    gen = torch.Generator().manual_seed(seed)
    outputs = {
        "semantic_logits": torch.randn(m, k, generator=gen),
        "embedding": torch.randn(m, e, generator=gen),
        "offset": torch.randn(m, 3, generator=gen) * 0.2,
        "bandwidth": torch.rand(m, 2, generator=gen) + 0.2,
        "log_occupancy": torch.randn(m, generator=gen) + 3.0,
    }
    outputs = {name: v.requires_grad_() for name, v in outputs.items()}
    semantic = torch.randint(0, k, (m,), generator=gen)
    semantic[::7] = -100
    targets = {
        "semantic_target": semantic,
        "instance_target": torch.randint(-1, num_instances, (m,), generator=gen),
        "positions": torch.rand(m, 3, generator=gen) * 4.0,
    }
    return outputs, targets


def test_joint_is_weighted_sum_of_terms() -> None:
    outputs, targets = random_example()
    cfg = LossConfig(semantic_weight=0.5, spatial_weight=2.0, variance_weight=3.0,
                     distance_weight=0.25, regularisation_weight=0.001, covariance_weight=10.0,
                     occupancy_weight=1.5)
    total, terms = joint_loss(**outputs, **targets, config=cfg)
    s, inst, pos = outputs["embedding"], targets["instance_target"], targets["positions"]
    by_hand = {
        "semantic": semantic_loss(outputs["semantic_logits"], targets["semantic_target"]),
        "spatial": spatial_loss(outputs["offset"], pos, inst),
        "variance": variance_loss(s, inst, cfg.delta_v),
        "distance": distance_loss(s, inst, cfg.delta_d),
        "regularisation": regularisation_loss(s, inst),
        "covariance": covariance_loss(s, outputs["offset"], outputs["bandwidth"], pos, inst),
        "occupancy": occupancy_loss(outputs["log_occupancy"], inst),
    }
    for name, value in by_hand.items():
        assert terms[name] == pytest.approx(value.item(), rel=1e-6)
    feature = (3.0 * terms["variance"] + 0.25 * terms["distance"]
               + 0.001 * terms["regularisation"])
    embed = 2.0 * terms["spatial"] + feature + 10.0 * terms["covariance"]
    expected = 0.5 * terms["semantic"] + embed + 1.5 * terms["occupancy"]
    assert terms["feature"] == pytest.approx(feature, rel=1e-5)
    assert feature_loss(s, inst, cfg).item() == pytest.approx(feature, rel=1e-5)
    assert terms["embedding"] == pytest.approx(embed, rel=1e-5)
    assert embedding_loss(s, outputs["offset"], outputs["bandwidth"], pos, inst,
                          cfg).item() == pytest.approx(embed, rel=1e-5)
    assert total.item() == pytest.approx(expected, rel=1e-5)
    assert terms["total"] == pytest.approx(expected, rel=1e-5)


def test_joint_default_config_is_unweighted_paper_sum() -> None:
    outputs, targets = random_example(seed=1)
    total, terms = joint_loss(**outputs, **targets)
    unweighted = sum(terms[name] for name in ("semantic", "spatial", "variance", "distance",
                                              "regularisation", "covariance", "occupancy"))
    assert total.item() == pytest.approx(unweighted, rel=1e-5)
    assert LossConfig().delta_v == 0.1 and LossConfig().delta_d == 1.5


def test_joint_gradient_reaches_every_head() -> None:
    outputs, targets = random_example(seed=2)
    total, _ = joint_loss(**outputs, **targets)
    total.backward()
    for name, leaf in outputs.items():
        assert leaf.grad is not None, name
        assert torch.isfinite(leaf.grad).all(), name
        assert leaf.grad.abs().sum().item() > 0.0, name


def test_joint_without_instances() -> None:
    outputs, targets = random_example(seed=4)
    targets["instance_target"] = torch.full_like(targets["instance_target"], -1)
    total, terms = joint_loss(**outputs, **targets)
    for name in ("spatial", "variance", "distance", "regularisation", "covariance",
                 "occupancy", "feature", "embedding"):
        assert terms[name] == 0.0, name
    assert total.item() == pytest.approx(terms["semantic"], rel=1e-6)
    total.backward()
    for name in ("embedding", "offset", "bandwidth", "log_occupancy"):
        assert torch.equal(outputs[name].grad, torch.zeros_like(outputs[name])), name
    assert outputs["semantic_logits"].grad.abs().sum().item() > 0.0


def test_joint_with_one_instance() -> None:
    outputs, targets = random_example(seed=5)
    inst = targets["instance_target"]
    targets["instance_target"] = torch.where(inst >= 0, torch.full_like(inst, 2), inst)
    total, terms = joint_loss(**outputs, **targets)
    assert terms["distance"] == 0.0
    for name in ("spatial", "variance", "regularisation", "covariance", "occupancy"):
        assert terms[name] > 0.0, name
    total.backward()
    for name, leaf in outputs.items():
        assert leaf.grad.abs().sum().item() > 0.0, name


def test_joint_rejects_mismatched_shapes() -> None:
    outputs, targets = random_example(m=10)
    outputs["offset"] = outputs["offset"].detach()[:9]
    with pytest.raises(ValueError, match="offset"):
        joint_loss(**outputs, **targets)


def test_config_rejects_negative_weight() -> None:
    with pytest.raises(ValueError):
        LossConfig(covariance_weight=-1.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_joint_on_cuda_matches_cpu() -> None:
    outputs, targets = random_example(seed=6)
    cpu_total, cpu_terms = joint_loss(**outputs, **targets)
    gpu_outputs = {k: v.detach().cuda().requires_grad_() for k, v in outputs.items()}
    gpu_targets = {k: v.cuda() for k, v in targets.items()}
    gpu_total, gpu_terms = joint_loss(**gpu_outputs, **gpu_targets,
                                      config=LossConfig(covariance_chunk_elements=400))
    assert gpu_total.device.type == "cuda"
    for name, value in cpu_terms.items():
        assert gpu_terms[name] == pytest.approx(value, rel=1e-4, abs=1e-6), name
    cpu_total.backward()
    gpu_total.backward()
    for name, leaf in outputs.items():
        torch.testing.assert_close(gpu_outputs[name].grad.cpu(), leaf.grad, rtol=1e-4,
                                   atol=1e-6)
