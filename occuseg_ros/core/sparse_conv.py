"""Correct, differentiable sparse convolution on the CPU for spconv 2.x.

Why this module exists: spconv's CPU build (2.3.8, the ``Native`` algorithm) has two defects.

1. Backward raises ``AssertionError: Torch not compiled with CUDA enabled``: its CPU backward
   first asks for the current CUDA stream.
2. Forward is silently wrong with more than one torch thread: the ``scatter_add_cpu`` kernel in
   its per-kernel-offset loop races, so outputs differ from run to run by up to ~0.5.

The fix keeps everything of spconv except the convolution arithmetic. spconv still builds the
rulebook (``indice_pairs`` [2, kv, N] int32: row 0 input rows, row 1 output rows, per kernel
offset ``k``; ``indice_pair_num`` [kv] pairs per offset) and still owns the modules, their
``indice_key`` caching and their KRSC weights ``[out, kD, kH, kW, in]``. The three functions
those modules look up at call time (``spconv.pytorch.functional.indice_subm_conv``,
``indice_conv``, ``indice_inverse_conv``) are replaced by dispatchers: CUDA tensors go to
spconv's original function unchanged; CPU tensors go to a ``torch.autograd.Function`` that, for
each kernel offset, gathers the input rows of its pairs, multiplies them by that offset's weight
slice and ``index_add_``s them into the output rows (backward: the same in reverse). One
state_dict therefore trains and infers on CPU and CUDA alike.

Small inputs (an incremental update's crop) take a fused forward instead: one product of the
features with every offset's weights side by side, ``(N, in) @ (in, kv * out)``, then one
gather of each pair's ``(src, k)`` row and one ``index_add_``. It does up to kv / (pairs per
site) times the arithmetic of the per-offset loop but three calls instead of three per offset,
which wins while the per-call overhead dominates (below :data:`FUSED_MAX_ELEMENTS`).

Call :func:`install_cpu_sparse_conv` once before running spconv modules on the CPU (importing
``occuseg_ros.core.model`` does it).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import spconv.pytorch.functional as Fsp
import torch
from cumm.tensorview.gemm import Activation
from spconv.core import ConvAlgo
from spconv.tools import CUDAKernelTimer

#: One kernel offset of a rulebook: (offset index k, input rows, output rows). ``None`` rows
#: mean the identity map (the centre offset of a submanifold convolution).
_Offset = tuple[int, torch.Tensor | None, torch.Tensor | None]

_INSTALLED_MARK = "_occuseg_cpu_dispatch"
_NO_TIMER = CUDAKernelTimer(False)


#: The fused forward runs where its product, N x kv x out floats, has at most this many
#: elements (2 CPU cores: it is faster up to about 10 k voxels at the first level's 16
#: channels, the per-offset loop beyond).
FUSED_MAX_ELEMENTS = 4_000_000


class _Rulebook:
    """One convolution's pairs: per offset for the loop, concatenated for the fused form."""

    def __init__(self, offsets: list[_Offset], kv: int) -> None:
        self.offsets = offsets
        self.kv = kv
        #: The offset that maps every site to itself (a submanifold's centre), if any.
        self.identity = next((k for k, src, _ in offsets if src is None), None)
        self._fused: tuple[torch.Tensor, torch.Tensor] | None = None

    def fused_pairs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows of the (N * kv, out) product to gather, output rows to add them to)."""
        if self._fused is None:
            pairs = [(k, src, dst) for k, src, dst in self.offsets if src is not None]
            if pairs:
                self._fused = (torch.cat([src * self.kv + k for k, src, _ in pairs]),
                               torch.cat([dst for _, _, dst in pairs]))
            else:
                empty = torch.zeros(0, dtype=torch.long)
                self._fused = (empty, empty)
        return self._fused


#: Rulebooks built from spconv's pair tensors that are still alive: id of the tensor ->
#: {(inverse, subm): rulebook}. Convolutions that share an ``indice_key`` share the pair
#: tensor, so within a forward pass each rulebook is converted once; an entry is dropped when
#: its tensor is freed (so an id is never reused while cached, and no memory outlives
#: spconv's own).
_BOOKS: dict[int, dict[tuple[bool, bool], _Rulebook]] = {}


def _cached_rulebook(indice_pairs: torch.Tensor, indice_pair_num: torch.Tensor,
                     inverse: bool, subm: bool) -> _Rulebook:
    """:func:`_rulebook`, converted once per live pair tensor (see ``_BOOKS``)."""
    books = _BOOKS.get(id(indice_pairs))
    if books is None:
        books = _BOOKS[id(indice_pairs)] = {}
        weakref.finalize(indice_pairs, _BOOKS.pop, id(indice_pairs), None)
    book = books.get((inverse, subm))
    if book is None:
        book = books[(inverse, subm)] = _rulebook(indice_pairs, indice_pair_num, inverse, subm)
    return book


def _rulebook(indice_pairs: torch.Tensor, indice_pair_num: torch.Tensor,
              inverse: bool, subm: bool) -> _Rulebook:
    """Per-offset (input rows, output rows) int64 index lists from spconv's rulebook.

    spconv quirks handled here: an inverse convolution reuses its downsampling layer's pairs
    with the two rows swapped; a submanifold rulebook fills ``indice_pair_num`` only for
    ``k < centre``, stores the pairs of offset ``k > centre`` mirrored (their count is
    ``indice_pair_num[kv - 1 - k]``) and leaves the centre implicit (every site to itself).
    """
    counts = indice_pair_num.tolist()
    kv = len(counts)
    centre = kv // 2
    src_row, dst_row = indice_pairs[int(inverse)], indice_pairs[int(not inverse)]
    book: list[_Offset] = [(centre, None, None)] if subm else []
    for k in range(kv):
        if subm and k == centre:
            continue
        n = counts[kv - 1 - k] if subm and k > centre else counts[k]
        if n > 0:
            book.append((k, src_row[k, :n].long(), dst_row[k, :n].long()))
    return _Rulebook(book, kv)


class _RulebookConv(torch.autograd.Function):
    """out[dst] += in[src] @ W[:, k, :].T for every offset k and pair (src, dst) of a rulebook.

    ``weight`` is spconv's KRSC layout ``[out, kD, kH, kW, in]``; features are (N_in, in) and
    the output is (num_out, out). Accumulation is torch's ``index_add_``, which (unlike spconv's
    ``scatter_add_cpu``) is correct at any number of threads.
    """

    @staticmethod
    def forward(ctx: Any, features: torch.Tensor, weight: torch.Tensor,
                rulebook: _Rulebook, num_out: int) -> torch.Tensor:
        w = weight.reshape(weight.shape[0], -1, weight.shape[-1])  # [out, kv, in]
        c_out, kv = w.shape[0], w.shape[1]
        out = features.new_zeros(num_out, c_out)
        if features.shape[0] * kv * c_out <= FUSED_MAX_ELEMENTS:
            # Every offset at once: products[n, k * out + o] = (features[n] @ W_k.T)[o].
            products = features @ w.permute(2, 1, 0).reshape(w.shape[2], kv * c_out)
            k = rulebook.identity
            if k is not None:
                out += products[:, k * c_out:(k + 1) * c_out]
            gather, scatter = rulebook.fused_pairs()
            out.index_add_(0, scatter, products.view(-1, c_out).index_select(0, gather))
        else:
            for k, src, dst in rulebook.offsets:
                if src is None:
                    out += features @ w[:, k].T
                else:
                    out.index_add_(0, dst, features.index_select(0, src) @ w[:, k].T)
        ctx.save_for_backward(features, weight)
        ctx.rulebook = rulebook
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor
                 ) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None]:
        features, weight = ctx.saved_tensors
        w = weight.reshape(weight.shape[0], -1, weight.shape[-1])
        need_in, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_in = torch.zeros_like(features) if need_in else None
        grad_w = torch.zeros_like(w) if need_w else None
        for k, src, dst in ctx.rulebook.offsets:
            g = grad_out if dst is None else grad_out.index_select(0, dst)
            if need_w:
                x = features if src is None else features.index_select(0, src)
                grad_w[:, k] = g.T @ x
            if need_in:
                if src is None:
                    grad_in += g @ w[:, k]
                else:
                    grad_in.index_add_(0, src, g @ w[:, k])
        return grad_in, None if grad_w is None else grad_w.reshape(weight.shape), None, None


def _activate(x: torch.Tensor, act_type: Activation) -> torch.Tensor:
    """spconv's fused inference activations (``act_type`` is always ``None_`` in training).

    LeakyReLU is refused: spconv's ``SparseConvolution`` passes ``act_type`` in the place of
    ``act_alpha`` to ``Fsp.indice_conv`` (conv.py:339-342), so its slope cannot be trusted.
    """
    if act_type == Activation.None_:
        return x
    if act_type == Activation.ReLU:
        return torch.relu(x)
    if act_type == Activation.Sigmoid:
        return torch.sigmoid(x)
    raise NotImplementedError(f"fused activation {act_type} is not supported on the CPU")


def _dispatcher(original: Callable[..., torch.Tensor], inverse: bool,
                subm: bool) -> Callable[..., torch.Tensor]:
    """A drop-in for one of spconv's ``Fsp.indice_*conv`` functions (same signature)."""

    def conv(features: torch.Tensor, filters: torch.Tensor, indice_pairs: torch.Tensor,
             indice_pair_num: torch.Tensor, num_activate_out: int,
             algo: ConvAlgo = ConvAlgo.Native, timer: CUDAKernelTimer = _NO_TIMER,
             bias: torch.Tensor | None = None, act_alpha: float = 0.0,
             act_beta: float = 0.0, act_type: Activation = Activation.None_) -> torch.Tensor:
        """CPU tensors: the rulebook path; any other device: spconv's original."""
        if features.device.type != "cpu":
            return original(features, filters, indice_pairs, indice_pair_num, num_activate_out,
                            algo, timer, bias, act_alpha, act_beta, act_type)
        # On a CPU build ``algo`` is always Native and ``timer`` times CUDA kernels only;
        # ``act_alpha``/``act_beta`` parametrise LeakyReLU alone, which _activate refuses.
        book = _cached_rulebook(indice_pairs, indice_pair_num, inverse, subm)
        out = _RulebookConv.apply(features, filters, book, num_activate_out)
        if bias is not None:  # spconv passes the bias in here in eval mode only
            out = out + bias
        return _activate(out, act_type)

    setattr(conv, _INSTALLED_MARK, True)
    return conv


def install_cpu_sparse_conv() -> None:
    """Route spconv's CPU sparse convolutions through :class:`_RulebookConv`. Idempotent."""
    if getattr(Fsp.indice_subm_conv, _INSTALLED_MARK, False):
        return
    Fsp.indice_subm_conv = _dispatcher(Fsp.indice_subm_conv, inverse=False, subm=True)
    Fsp.indice_conv = _dispatcher(Fsp.indice_conv, inverse=False, subm=False)
    Fsp.indice_inverse_conv = _dispatcher(Fsp.indice_inverse_conv, inverse=True, subm=False)
