"""The CPU sparse convolution against dense torch references, with real spconv modules."""

from __future__ import annotations


import pytest
import spconv.pytorch as spconv
import spconv.pytorch.functional as Fsp
import torch
import torch.nn.functional as F
from cumm.tensorview.gemm import Activation
from spconv.core import ConvAlgo
from spconv.tools import CUDAKernelTimer

from occuseg_ros.core import sparse_conv
from occuseg_ros.core.sparse_conv import install_cpu_sparse_conv

install_cpu_sparse_conv()

GRID = 14  # even, so the k2 s2 convolution halves it exactly


# spconv's own CPU forward races at 2+ threads; everything here must hold at 2, in both
# forward forms (the per-offset loop and the fused product, chosen by input size).
pytestmark = pytest.mark.usefixtures("two_threads", "forward_form")


@pytest.fixture(params=["per_offset", "fused"])
def forward_form(request, monkeypatch) -> str:
    """Run the test with every convolution in one forward form."""
    monkeypatch.setattr(sparse_conv, "FUSED_MAX_ELEMENTS",
                        0 if request.param == "per_offset" else 10 ** 12)
    return request.param


def random_sparse(num: int, channels: int, grid: int = GRID, seed: int = 0,
                  dtype: torch.dtype = torch.float64) -> spconv.SparseConvTensor:
    """About ``num`` distinct random active voxels in a grid³ box, batch size 1."""
    gen = torch.Generator().manual_seed(seed)
    xyz = torch.unique(torch.randint(0, grid, (num, 3), generator=gen), dim=0)
    indices = torch.cat([torch.zeros(len(xyz), 1, dtype=torch.long), xyz], dim=1).int()
    features = torch.randn(len(xyz), channels, generator=gen, dtype=dtype)
    return spconv.SparseConvTensor(features, indices, [grid] * 3, 1)


def dense(x: spconv.SparseConvTensor) -> torch.Tensor:
    """(1, C, X, Y, Z) dense copy with zeros at inactive sites."""
    out = x.features.new_zeros(1, x.features.shape[1], *x.spatial_shape)
    i = x.indices.long()
    out[i[:, 0], :, i[:, 1], i[:, 2], i[:, 3]] = x.features
    return out


def read(volume: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """(M, C) values of a (1, C, X, Y, Z) volume at indices [b, x, y, z]."""
    i = indices.long()
    return volume[i[:, 0], :, i[:, 1], i[:, 2], i[:, 3]]


def torch_weight(conv: spconv.SparseConvolution) -> torch.Tensor:
    """spconv's KRSC [out, kD, kH, kW, in] as torch's [out, in, kD, kH, kW]."""
    return conv.weight.permute(0, 4, 1, 2, 3)


def bias_of(conv: spconv.SparseConvolution) -> torch.Tensor | None:
    return None if conv.bias is None else conv.bias.detach()


def make_chain(bias: bool) -> tuple[spconv.SubMConv3d, spconv.SparseConv3d,
                                    spconv.SparseInverseConv3d]:
    torch.manual_seed(1)
    subm = spconv.SubMConv3d(4, 5, 3, bias=bias, indice_key="s0").double()
    down = spconv.SparseConv3d(5, 6, 2, stride=2, bias=bias, indice_key="d0").double()
    up = spconv.SparseInverseConv3d(6, 3, 2, bias=bias, indice_key="d0").double()
    if bias:
        for conv in (subm, down, up):
            torch.nn.init.normal_(conv.bias)
    return subm, down, up


def check_chain(subm: spconv.SubMConv3d, down: spconv.SparseConv3d,
                up: spconv.SparseInverseConv3d) -> None:
    """Each layer, and the chain, equals the dense reference to 1e-10 (float64)."""
    x = random_sparse(400, 4)
    with torch.no_grad():
        y1 = subm(x)
        ref1 = read(F.conv3d(dense(x), torch_weight(subm), bias_of(subm), padding=1),
                    x.indices)
        assert torch.equal(y1.indices, x.indices)
        assert (y1.features - ref1).abs().max() < 1e-10

        y2 = down(y1)
        ref2 = read(F.conv3d(dense(y1), torch_weight(down), bias_of(down), stride=2),
                    y2.indices)
        assert y2.spatial_shape == [GRID // 2] * 3
        assert (y2.features - ref2).abs().max() < 1e-10

        y3 = up(y2)
        ref3 = read(F.conv_transpose3d(dense(y2), up.weight.permute(4, 0, 1, 2, 3),
                                       bias_of(up), stride=2), x.indices)
        assert torch.equal(y3.indices, x.indices)
        assert (y3.features - ref3).abs().max() < 1e-10


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("train", [True, False])
def test_chain_matches_dense_reference(train: bool, bias: bool) -> None:
    # In eval mode spconv hands the bias to the conv function (bias_for_infer).
    modules = make_chain(bias)
    for module in modules:
        module.train(train)
    check_chain(*modules)


def test_results_do_not_depend_on_thread_count() -> None:
    subm, down, up = make_chain(bias=False)
    x = random_sparse(400, 4, seed=3)
    outputs = []
    for threads in (1, 2, 2):
        torch.set_num_threads(threads)
        with torch.no_grad():
            outputs.append(up(down(subm(x))).features)
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-12, atol=1e-12)
    assert torch.equal(outputs[1], outputs[2])


def test_fused_relu_in_eval_mode() -> None:
    """The extra arguments of Fsp.indice_subm_conv (algo, timer, bias, activation)."""
    subm, _, _ = make_chain(bias=True)
    subm.eval()
    x = random_sparse(300, 4)
    with torch.no_grad():
        plain = subm(x)
        pairs = plain.indice_dict["s0"]
        fused = Fsp.indice_subm_conv(x.features, subm.weight, pairs.indice_pairs,
                                     pairs.indice_pair_num, x.features.shape[0],
                                     ConvAlgo.Native, CUDAKernelTimer(False), subm.bias, 0.0, 0.0,
                                     Activation.ReLU)
    assert torch.equal(fused, torch.relu(plain.features))


def gradcheck_conv(conv: spconv.SparseConvolution, x: spconv.SparseConvTensor) -> None:
    """gradcheck of conv(x).features in x.features and in conv.weight (float64)."""
    def apply(features: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        out = torch.func.functional_call(conv, {"weight": weight}, (x.replace_feature(features),))
        return out.features

    inputs = (x.features.detach().clone().requires_grad_(),
              conv.weight.detach().clone().requires_grad_())
    assert torch.autograd.gradcheck(apply, inputs)


def test_gradcheck_submanifold() -> None:
    torch.manual_seed(2)
    gradcheck_conv(spconv.SubMConv3d(2, 3, 3, bias=False).double(), random_sparse(40, 2, 6))


def test_gradcheck_downsampling() -> None:
    torch.manual_seed(2)
    gradcheck_conv(spconv.SparseConv3d(2, 3, 2, stride=2, bias=False).double(),
                   random_sparse(40, 2, 6))


def test_gradcheck_inverse() -> None:
    torch.manual_seed(2)
    down = spconv.SparseConv3d(2, 3, 2, stride=2, bias=False, indice_key="d").double()
    up = spconv.SparseInverseConv3d(3, 2, 2, bias=False, indice_key="d").double()
    with torch.no_grad():
        coarse = down(random_sparse(40, 2, 6))
    gradcheck_conv(up, coarse)


def test_both_forward_forms_agree_on_a_real_network_crop(monkeypatch) -> None:
    """The size rule in the network: a crop of a generated room through the default UNet
    gives the same outputs whichever form each convolution takes."""
    from occuseg_ros.core.model import NetworkConfig, OccuSegNet, make_sparse_input
    from occuseg_ros.core.synthetic import generate_room
    from occuseg_ros.core.voxels import voxelize

    room = generate_room(2, size_range_m=(3.0, 3.5))
    grid = voxelize(room.xyz, 0.05, room.rgb)
    torch.manual_seed(0)
    net = OccuSegNet(NetworkConfig()).eval()
    feats, coords = make_sparse_input(grid.coords, grid.rgb * 2.0 - 1.0, anchor=None, step=16)
    outputs = {}
    for form, limit in (("per_offset", 0), ("fused", 10 ** 12), ("by_size", 200_000)):
        monkeypatch.setattr(sparse_conv, "FUSED_MAX_ELEMENTS", limit)
        with torch.inference_mode():
            outputs[form] = net(feats, coords, 1)
    for form in ("fused", "by_size"):
        for name, value in outputs["per_offset"].items():
            torch.testing.assert_close(outputs[form][name], value, rtol=1e-4, atol=1e-5)


def test_install_is_idempotent_and_backward_runs() -> None:
    functions = (Fsp.indice_subm_conv, Fsp.indice_conv, Fsp.indice_inverse_conv)
    install_cpu_sparse_conv()
    install_cpu_sparse_conv()
    assert (Fsp.indice_subm_conv, Fsp.indice_conv, Fsp.indice_inverse_conv) == functions

    subm, down, up = (m.float() for m in make_chain(bias=True))
    x = random_sparse(300, 4, dtype=torch.float32)
    x = x.replace_feature(x.features.requires_grad_())
    up(down(subm(x))).features.square().sum().backward()  # raised AssertionError before
    for tensor in (x.features, subm.weight, down.weight, up.weight, up.bias):
        assert tensor.grad is not None and torch.isfinite(tensor.grad).all()
        assert tensor.grad.abs().sum() > 0
