"""OccuSegNet on the CPU: real spconv forward/backward on a voxelised box surface."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from occuseg_ros.core.model import (MIN_BANDWIDTH, NetworkConfig, OccuSegNet, collate,
                                    count_parameters, make_sparse_input)
from occuseg_ros.core.voxels import VoxelGrid, voxelize

SMALL = NetworkConfig(base_channels=8, num_levels=3, num_classes=5, embedding_dim=4)


# spconv's own CPU forward races at 2+ threads; everything here must hold at 2.
pytestmark = pytest.mark.usefixtures("two_threads")


def box_surface(seed: int = 0, size_m: tuple[float, float, float] = (0.6, 0.5, 0.4),
                origin_m: tuple[float, float, float] = (-0.3, -0.2, 0.1)) -> VoxelGrid:
    """Coloured points on the six faces of a box, voxelised at 2 cm (~3.5k voxels)."""
    rng = np.random.default_rng(seed)
    size = np.asarray(size_m)
    faces = []
    for axis in range(3):
        for side in (0.0, 1.0):
            uvw = rng.random((8000, 3))
            uvw[:, axis] = side
            faces.append(uvw * size)
    xyz = np.concatenate(faces) + np.asarray(origin_m)
    rgb = rng.integers(0, 256, size=xyz.shape, dtype=np.uint8)
    return voxelize(xyz, 0.02, rgb)


def network_input(grid: VoxelGrid) -> tuple[torch.Tensor, torch.Tensor]:
    return make_sparse_input(grid.coords, grid.rgb * 2.0 - 1.0)


def small_net(seed: int = 0) -> OccuSegNet:
    torch.manual_seed(seed)
    return OccuSegNet(SMALL)


def test_forward_backward_on_a_surface() -> None:
    grid = box_surface()
    assert 2000 < grid.num_voxels < 6000
    features, coords = network_input(grid)
    net = small_net()
    out = net(features, coords, 1)
    m = grid.num_voxels
    shapes = {"semantic_logits": (m, 5), "embedding": (m, 4), "offset": (m, 3),
              "bandwidth": (m, 2), "log_occupancy": (m,)}
    assert {k: tuple(v.shape) for k, v in out.items()} == shapes
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in out.values())
    assert (out["bandwidth"] >= MIN_BANDWIDTH).all()
    assert (out["log_occupancy"] >= 0).all()

    sum(v.square().mean() for v in out.values()).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert net.stem.weight.grad.abs().sum() > 0


def test_one_adam_step_reduces_a_simple_loss() -> None:
    grid = box_surface(seed=1)
    features, coords = network_input(grid)
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, SMALL.num_classes, (grid.num_voxels,), generator=gen)
    centre = torch.from_numpy(grid.centers_m.mean(axis=0) - grid.centers_m)
    net = small_net()
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-3)

    def loss() -> torch.Tensor:
        out = net(features, coords, 1)
        return F.cross_entropy(out["semantic_logits"], labels) + F.mse_loss(out["offset"], centre)

    before = loss()
    before.backward()
    optimiser.step()
    assert loss().item() < before.item()


def test_eval_forward_is_deterministic_across_thread_counts() -> None:
    """spconv's own CPU kernels give different, wrong outputs at 2 threads."""
    features, coords = network_input(box_surface(seed=2))
    net = small_net().eval()
    runs = []
    for threads in (2, 2, 1):
        torch.set_num_threads(threads)
        with torch.no_grad():
            runs.append(net(features, coords, 1))
    for key, value in runs[0].items():
        assert torch.equal(value, runs[1][key]), key
        torch.testing.assert_close(value, runs[2][key], rtol=1e-5, atol=1e-6)


def test_output_rows_follow_input_rows() -> None:
    features, coords = network_input(box_surface(seed=3))
    net = small_net().eval()
    perm = torch.randperm(len(coords), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = net(features, coords, 1)
        shuffled = net(features[perm], coords[perm], 1)
    for key, value in out.items():
        torch.testing.assert_close(shuffled[key], value[perm], rtol=1e-4, atol=1e-5)


def test_batches_do_not_interact() -> None:
    a, b = box_surface(seed=4), box_surface(seed=5, size_m=(0.3, 0.4, 0.5))
    features, coords, batch_size = collate([(a.coords, a.rgb * 2 - 1), (b.coords, b.rgb * 2 - 1)])
    assert batch_size == 2
    assert coords[:, 0].tolist() == [0] * a.num_voxels + [1] * b.num_voxels
    net = small_net().eval()
    with torch.no_grad():
        joint = net(features, coords, batch_size)
        alone = [net(*network_input(grid), 1) for grid in (a, b)]
    for key, value in joint.items():
        torch.testing.assert_close(value, torch.cat([alone[0][key], alone[1][key]]),
                                   rtol=1e-4, atol=1e-5)


def test_state_dict_round_trip() -> None:
    features, coords = network_input(box_surface(seed=6))
    net = small_net()
    net(features, coords, 1)  # moves the BatchNorm running statistics
    buffer = io.BytesIO()
    torch.save({"config": net.config.to_dict(), "state_dict": net.state_dict()}, buffer)
    buffer.seek(0)
    checkpoint = torch.load(buffer)
    restored = OccuSegNet(NetworkConfig.from_dict(checkpoint["config"]))
    restored.load_state_dict(checkpoint["state_dict"])
    net.eval()
    restored.eval()
    with torch.no_grad():
        expected, actual = net(features, coords, 1), restored(features, coords, 1)
    for key, value in expected.items():
        assert torch.equal(value, actual[key]), key


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA and a CUDA spconv build")
def test_cpu_and_cuda_agree() -> None:
    """One state_dict: the CPU path (sparse_conv.py) and spconv's CUDA kernels."""
    features, coords = network_input(box_surface(seed=7))
    net = small_net().eval()
    with torch.no_grad():
        cpu = net(features, coords, 1)
        cuda = net.cuda()(features.cuda(), coords.cuda(), 1)
    for key, value in cpu.items():
        torch.testing.assert_close(cuda[key].cpu(), value, rtol=1e-3, atol=1e-3)


def test_make_sparse_input_shifts_to_non_negative() -> None:
    coords_xyz = np.array([[-3, 5, 0], [2, -1, 7]], np.int32)
    features, coords = make_sparse_input(coords_xyz, np.ones((2, 3)))
    assert features.dtype == torch.float32 and coords.dtype == torch.int32
    assert coords.tolist() == [[0, 0, 6, 0], [0, 5, 0, 7]]
    with pytest.raises(ValueError):
        make_sparse_input(np.zeros((0, 3), np.int32), np.zeros((0, 3)))


def test_spatial_shape_is_divisible_by_every_stride() -> None:
    net = small_net()  # 3 levels: two stride-2 steps, so multiples of 4
    coords = torch.tensor([[0, 16, 3, 0]], dtype=torch.int32)
    assert net.spatial_shape(coords) == [20, 4, 4]


def test_config_round_trip_and_validation() -> None:
    assert NetworkConfig.from_dict(SMALL.to_dict()) == SMALL
    assert NetworkConfig().widths == [16, 32, 48, 64, 80]
    with pytest.raises(ValueError):
        NetworkConfig.from_dict({**SMALL.to_dict(), "dropout": 0.1})
    with pytest.raises(ValueError):
        NetworkConfig(num_levels=0)


def test_count_parameters() -> None:
    net = small_net()
    assert count_parameters(net) == sum(p.numel() for p in net.parameters()) > 0
    assert count_parameters(OccuSegNet()) > count_parameters(net)
