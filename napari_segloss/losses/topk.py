"""Top-k selection masks for the TopK losses, without a full sort and without host sync.

``torch.topk`` selects a static number of elements per row; the TopK losses need a
data-dependent number per image *and class* (k % of that class's candidate pixels), which
with ``torch.topk`` meant one sorted selection of ``k % of N`` per (image, class) row: the
slowest part of a TopK loss on CPU. Here the k-th largest error of every group is found by a
radix select on the float32 bit patterns (non-negative floats order like their bits), three
digits of 11, 10 and 10 bits: a histogram of the top digit per group locates the bin that holds
the threshold, the next histogram (of the elements in that bin only) the next digit, and so on
to the exact threshold value. The histograms are ``scatter_add`` calls into fixed-size tensors,
so shapes are static (``torch.compile``, CUDA graphs) and nothing is read back to the host; the
groups share one pass, so all classes of an image are selected together.

Ties at the threshold value share the remaining slots equally (a fractional mask entry
``need / n_tied``): tied pixels have identical errors, hence identical loss terms, so the loss
equals that of any exact choice of ``need`` of them, the mask sums to exactly the requested
count, and the result does not depend on pixel order.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

#: radix digits (shift, width) of the 31 value bits of a non-negative float32, high to low
_DIGITS = ((20, 11), (10, 10), (0, 10))


def _threshold_bin(
    keys: Tensor, rows: int, bins: int, need: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Per row, the bin holding the ``need``-th largest key, the count still needed inside it
    and the bin's size.

    ``keys``: flat int64 ``row * (bins + 2) + bin``; key ``rows * (bins + 2)`` collects what is
    not counted. ``need``: (rows,) counts in the histogram's float dtype. ``need = 0`` gives
    ``top = bins``, above every digit, so nothing is kept.
    """
    stride = bins + 2
    one = torch.ones((), dtype=need.dtype, device=keys.device)
    hist = torch.zeros(rows * stride + 1, dtype=need.dtype, device=keys.device)
    hist = hist.scatter_add_(0, keys, one.expand_as(keys))[:-1].view(rows, stride)
    hist[:, bins:] = 0  # bin `bins` (top when need = 0) and `bins + 1` (above it) stay empty
    at_or_above = hist.flip(1).cumsum(1).flip(1)  # [r, j] = count of keys in bins >= j
    top = (at_or_above[:, : bins + 1] >= need.unsqueeze(1)).sum(1) - 1
    above = at_or_above.gather(1, (top + 1).unsqueeze(1)).squeeze(1)  # strictly above `top`
    size = hist.gather(1, top.unsqueeze(1)).squeeze(1)
    return top, need - above, size


class _Selection(NamedTuple):
    """Result of :func:`_radix_select`: per row the exact bit pattern of the ``count``-th
    largest error (int64, above every finite float where nothing is kept), the number of
    elements still to take at that value and how many share it; per element its bits, its row
    and whether it equals its row's threshold."""

    threshold: Tensor
    need: Tensor
    size: Tensor
    bits: Tensor
    row: Tensor
    tied: Tensor


def _radix_select(error: Tensor, group: Tensor, count: Tensor) -> _Selection:
    """The ``count[b, g]``-th largest ``error`` of every (image, group), digit by digit (see
    :func:`topk_keep` for the arguments)."""
    b, n = error.shape
    g = count.shape[1]
    rows = b * (g + 1)  # one row per (image, group); row g of each image holds the excluded
    dev = error.device
    # histogram counts in float32 are exact below 2^24 elements per image
    dtype = torch.float32 if n < 2**24 else torch.float64
    # int32 arithmetic is several times faster than int64 on CPU; keys become int64 only for
    # scatter_add (rows * 2050 < 2^31 for any batch that fits in memory)
    bits = error.detach().float().contiguous().view(torch.int32).view(-1)
    bits = (bits & 0x7FFFFFFF).clamp_max_(0x7F7FFFFF)
    offsets = torch.arange(b, dtype=torch.int32, device=dev).view(b, 1) * (g + 1)
    row = (group.int() + offsets).view(-1)
    row_idx = row.long()
    need = torch.zeros(b, g + 1, dtype=dtype, device=dev)
    need[:, :g] = count
    need = need.view(-1)
    threshold = torch.zeros(rows, dtype=torch.int64, device=dev)
    size = need
    row_keys: dict[int, Tensor] = {}
    off: Tensor | None = None  # elements whose higher digits differ from their row's threshold
    for shift, width in _DIGITS:
        bins = 1 << width
        stride = bins + 2
        if stride not in row_keys:
            row_keys[stride] = row * stride
        digit = bits >> shift if shift + width == 31 else (bits >> shift) & (bins - 1)
        keys = row_keys[stride] + digit
        if off is not None:
            keys.masked_fill_(off, rows * stride)
        top, need, size = _threshold_bin(keys.long(), rows, bins, need)
        threshold |= top << shift
        miss = digit != top.int().index_select(0, row_idx)
        off = miss if off is None else off.logical_or_(miss)
    assert off is not None
    return _Selection(threshold, need, size, bits, row_idx, ~off)


def topk_keep(error: Tensor, group: Tensor, count: Tensor) -> Tensor:
    """Keep mask (B, N) float32: in every image b and group g, the ``count[b, g]`` elements
    of largest ``error`` among those with ``group == g``.

    Args:
        error: (B, N) float, >= 0 (the sign bit is ignored; inf and NaN rank as the largest
            finite float).
        group: (B, N) integer in ``[0, G]``; ``G`` (= ``count.shape[1]``) marks excluded
            elements.
        count: (B, G) number to keep per group (integer values), at most the group's size.

    Ties at the threshold get ``remaining / n_tied`` (see the module docstring).
    """
    sel = _radix_select(error, group, count)
    # rows with nothing to keep got top = bins on the first digit: above every finite float
    t = sel.threshold.clamp_max(2**31 - 1).int().index_select(0, sel.row)
    share = (sel.need / sel.size.clamp_min(1.0)).float().index_select(0, sel.row)
    keep = torch.addcmul((sel.bits > t).float(), sel.tied.float(), share)
    return keep.view(error.shape)


def topk_rows(scores: Tensor, count: Tensor, k_static: int) -> Tensor:
    """Keep mask shaped like ``scores`` (..., N): in every row the ``count`` (shape (...))
    largest non-negative scores; negative scores are excluded. ``count <= k_static`` must hold.

    An unsorted ``torch.topk`` narrows each row to ``k_static`` entries and
    :func:`topk_keep` picks the data-dependent count among them (ties there share the
    remaining slots); a sorted ``torch.topk`` with an ``index < count`` mask costs more. Only
    when values tie across the ``k_static`` cut itself (saturated predictions) does
    ``torch.topk`` decide which of the tied pixels are candidates: the loss value is the same
    either way, the gradient lands on those pixels.
    """
    shape = scores.shape
    # + 0.0 turns -0.0 into 0.0; then non-negative floats order like their int32 bit
    # patterns (and the negative excluded ones rank below), and torch.topk is faster on int32
    # than on float32 on CPU
    s = (scores.reshape(-1, shape[-1]).float() + 0.0).view(torch.int32)
    vals, idx = torch.topk(s, min(k_static, s.shape[1]), dim=1, sorted=False)
    vals = vals.view(torch.float32)
    keep = topk_keep(vals, (vals < 0).long(), count.reshape(-1, 1))
    return keep.new_zeros(s.shape).scatter_(1, idx, keep).view(shape)


def topk_mask(candidate: Tensor, error: Tensor, k: float) -> Tensor:
    """Mask (B, K, *sp): among ``candidate`` pixels (0/1 float) of each image and class keep
    the ``ceil(k/100 * n_candidates)`` with the largest ``error`` (in [0, 1]); others get 0."""
    shape = error.shape
    c = candidate.flatten(2)
    scores = error.flatten(2) * c + (c - 1.0)  # non-candidates -> -1: excluded
    k_static = max(1, math.ceil(k * c.shape[-1] / 100.0))
    return topk_rows(scores, topk_count(c.sum(-1), k), k_static).view(shape)


def topk_count(n: Tensor, k: float) -> Tensor:
    """``ceil(k/100 * n)`` (float): how many of ``n`` candidates a k % selection keeps."""
    return torch.ceil(k * n / 100.0)
