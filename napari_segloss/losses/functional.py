"""Pure functions shared by the loss families: per-class sums, the Dice / Tversky / WSDice
statistics and the cross-entropy terms, for integer-label targets (one-hot-free) and for
one-hot / soft targets.

Two rules run through the module:

* **No ``1 - p`` by subtraction.** Errors and false negatives use the complements of
  :class:`~.inputs.Prepared` (the other classes' share, ``sigmoid(-x)``), and each loss is
  written as a ratio of sums of non-negative terms: ``1 - Dice = sum m e^2 / (sum m (y^2 + p^2)
  + eps)`` instead of ``1 - (2 sum m y p + eps) / (...)``, which is 0 in float32 for a nearly
  perfect prediction.
* **Sums in float32 without drift.** Per-class sums over labels add runs of 16 pixels and then
  the run totals in float64 (:func:`class_sums`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from .binary import binary_dice_sums, binary_tversky_sums, binary_wsdice_sums
from .inputs import (
    LabelProbs,
    Prepared,
    at_least,
    first_order_only,
    log_prob_from_complement,
    log_sigmoid,
    power,
)

#: floor of the bases of fractional powers (``(1 - p)^gamma``, ``(1 - TI)^gamma``): the smallest
#: normal float32, so the derivative ``gamma x^(gamma - 1)`` stays finite
TINY = float(torch.finfo(torch.float32).tiny)

#: pixels per sequential scatter_add run in :func:`class_sums`
_SUM_CHUNK = 16


# ----- sums ----------------------------------------------------------------------------------
def class_sums(labels: Tensor, values: Tensor | None, num_classes: int) -> Tensor:
    """Per-class sums ``out[b, c] = sum_n values[b, n] [labels[b, n] == c]`` of (B, N)
    (or (B, 1, N)) tensors, float32 (B, K); ``values=None`` counts the pixels."""
    b = labels.shape[0]
    if values is None:
        values = torch.ones((), device=labels.device).expand(b, labels[0].numel())
    return class_sums_rows(labels, values.reshape(b, 1, -1), num_classes)[:, 0]


def class_sums_rows(labels: Tensor, values: Tensor, num_classes: int) -> Tensor:
    """:func:`class_sums` of several rows of values at once: (B, V, N) -> (B, V, K).

    scatter_add accumulates one element after the other, so in float32 its relative error
    grows with N (about 1e-4 on a 256x256 image). Summing runs of 16 pixels per class and
    adding the run totals in float64 keeps the error at float32 rounding without a float64 copy
    of the inputs.
    """
    b, v, n = values.shape
    labels = labels.reshape(b, 1, n)
    m = n // _SUM_CHUNK
    n0 = m * _SUM_CHUNK
    runs = values.new_zeros(b, v, m, num_classes).scatter_add_(
        3,
        labels[..., :n0].reshape(b, 1, m, _SUM_CHUNK).expand(b, v, m, _SUM_CHUNK),
        values[..., :n0].reshape(b, v, m, _SUM_CHUNK),
    )
    total = runs.sum(2, dtype=torch.float64)
    if n0 < n:
        total = total.scatter_add(
            2, labels[..., n0:].expand(b, v, n - n0), values[..., n0:].double()
        )
    return total.float()


def label_counts(lp: LabelProbs, num_classes: int) -> Tensor:
    """Valid pixels per class (B, K) of a hard-label input."""
    return class_sums(lp.labels, lp.valid, num_classes)


def spatial_sum(x: Tensor, batch: bool = False) -> Tensor:
    """Sum a (B, K, *sp) tensor over space (and batch when ``batch``) -> (B|1, K) float32."""
    s = x.float().flatten(2).sum(-1)
    return s.sum(0, keepdim=True) if batch else s


# ----- per-class parameters -----------------------------------------------------------------
_CONST_CACHE: dict[tuple[tuple[float, ...], torch.device], Tensor] = {}


def per_channel(
    name: str, value: float | tuple[float, ...], n: int, ref: Tensor, hint: str = ""
) -> Tensor:
    """Broadcast a float or a per-class tuple to a float32 (n,) tensor on ``ref``'s device;
    ValueError if a tuple does not have ``n`` values."""
    if isinstance(value, tuple):
        if len(value) != n:
            raise ValueError(
                f"{name} has {len(value)} values but the loss sees {n} class channels{hint}"
            )
        if torch.compiler.is_compiling():  # dynamo bakes it into the graph as a constant
            return torch.tensor(value, dtype=torch.float32, device=ref.device)
        # cached per device: no host-to-device copy per forward after the first call
        key = (value, ref.device)
        t = _CONST_CACHE.get(key)
        if t is None:
            t = _CONST_CACHE[key] = torch.tensor(value, dtype=torch.float32, device=ref.device)
        return t
    return torch.full((n,), float(value), dtype=torch.float32, device=ref.device)


def view_channels(v: Tensor, ndim: int) -> Tensor:
    """(K,) -> (1, K, 1, ...) for broadcasting against a (B, K, *sp) tensor of ``ndim`` dims."""
    return v.view(1, -1, *([1] * (ndim - 2)))


def per_label(values: Tensor, labels: Tensor) -> Tensor:
    """``values[labels]`` for a small per-class table (index_select: faster than indexing)."""
    return values.index_select(0, labels.reshape(-1)).view(labels.shape)


# ----- errors ---------------------------------------------------------------------------------
def abs_error(y: Tensor, p: Tensor, q: Tensor) -> Tensor:
    """``|y - p|`` from the target ``y``, the probability ``p`` and its complement
    ``q = 1 - p``: ``|y q - (1 - y) p|``, which is ``q`` at ``y = 1`` and ``p`` at ``y = 0``
    exactly (no cancellation for a confident prediction)."""
    return (y * q - (1.0 - y) * p).abs()


def ratio(err: Tensor, den: Tensor, eps: float) -> Tensor:
    """``err / (den + eps)``: one minus a Dice-type score written without cancellation."""
    return err / (den + eps)


#: floor of a Dice score before its log (-log(1e-12) = 27.6)
_SCORE_FLOOR = 1e-12


def log_score(score: Tensor, complement: Tensor) -> Tensor:
    """``log(score)`` of a score in [0, 1] given both ``score`` and ``1 - score`` computed
    without cancellation: ``log1p(-complement)`` near 1, ``log(score)`` (floored at 1e-12)
    near 0."""
    near_one = complement < 0.5
    return torch.where(
        near_one,
        torch.log1p(-complement.clamp_max(0.5)),
        torch.log(score.clamp(_SCORE_FLOOR, 1.0)),
    )


# ----- Dice (PM-Dice paper eqs. 4-5) ---------------------------------------------------------
class DiceSums(NamedTuple):
    """Per-class sums of the modulated Dice, each (B, K) float32 (see :func:`dice_sums`)."""

    err: Tensor
    den: Tensor
    y_sum: Tensor
    #: ``2 sum m y p`` when asked for (the score itself, accurate when it is small)
    overlap: Tensor | None = None


def dice_sums(
    inp: Prepared,
    gamma: float | Tensor = 0.0,
    *,
    squared: bool = True,
    overlap: bool = False,
    mask: Tensor | None = None,
    label_mask: Tensor | None = None,
    off_mask: Tensor | None = None,
) -> DiceSums:
    """Per-class sums of the modulated Dice (eq. 5; eq. 4 for ``gamma = 0``):
    ``1 - Dice_c = err_c / (den_c + eps)`` and ``Dice_c = (overlap_c + eps) / (den_c + eps)``
    with

    ``err_c = sum_i m_ic (y_ic - p_ic)^2``, ``den_c = sum_i m_ic (y_ic^2 + p_ic^2)`` (``squared``;
    else ``y + p - 2 y p`` and ``y + p``), ``overlap_c = 2 sum_i m_ic y_ic p_ic`` (only with
    ``overlap=True``), ``m_ic = |y_ic - p_ic|^gamma_c`` held constant (no gradient, eq. 5) and
    ``y_sum_c = sum_i y_ic``.

    ``gamma``: a float or a (K,) tensor (one per class). Extra constant modulation (TopK
    Dice): ``mask`` (B, K, *sp) for one-hot/soft targets and binary outputs; for multi-class
    integer labels ``label_mask`` (B, 1, N) at the label entries and ``off_mask`` (B, K, N)
    elsewhere. Binary outputs are summed from their one channel (:mod:`.binary`).
    """
    if inp.mode == "binary":
        return DiceSums(*binary_dice_sums(inp.binary, gamma, squared, overlap, mask))
    if inp.labels is not None:
        return _label_dice_sums(inp, gamma, squared, overlap, label_mask, off_mask)
    return _dense_dice_sums(inp, gamma, squared, overlap, mask)


class _LabelDiceSums(torch.autograd.Function):
    """The eq. 5 sums ``(err, den, overlap)`` of integer-label inputs, with the gradient
    written out.

    Off the label (``y = 0``) an entry adds ``m p^s = p^(gamma + s)`` (``s`` = 2 squared, 1
    plain; ``m = p^gamma`` constant) to both ``err`` and ``den``; at the label (``y = 1``,
    ``q = 1 - p_y`` from the other classes' share) it adds ``m q^s`` to ``err``,
    ``m (1 + p_y^s)`` to ``den`` and ``2 m p_y`` to ``overlap``, with ``m = q^gamma``.

    Why by hand: the softmax backward needs only ``p * dL/dp``, and off the label that is
    ``s * dL/dT * t`` with ``t = p^(gamma + s)`` the forward already made, so the backward
    reuses ``t`` in place; autograd would keep and re-read several full-size temporaries. The
    probabilities and their split at the label come in detached from
    :attr:`Prepared.label_probs` (shared with the other losses of a compound).
    """

    @staticmethod
    def forward(ctx, x, probs, lp, gamma, sq, overlap, label_mask, off_mask):  # type: ignore[override]
        k = probs.shape[1]
        q, py = lp.label_complement, lp.label_prob
        if isinstance(gamma, Tensor):
            m = q.pow(per_label(gamma, lp.labels))
            exponent: float | Tensor = view_channels(gamma, 3) + sq
        else:
            m = q.clone() if gamma == 1.0 else power(q, gamma)
            exponent = gamma + sq
        if lp.valid is not None:  # q is 0 at ignored pixels, but 0 ** 0 == 1
            m.mul_(lp.valid)
        if label_mask is not None:
            m.mul_(label_mask)
        t = _off_label_terms(lp.off_label, exponent, off_mask)
        # err: the off-label terms (t is 0 at the label entries, which the backward relies
        # on) plus the label terms m q^s, summed per class with the other label rows
        # den = err + 2 sum m p_y over the labelled pixels: at the label m (1 + p_y^s) -
        # m q^s = 2 m p_y with q = 1 - p_y, a sum of non-negative terms
        ones = torch.ones_like(q) if lp.valid is None else lp.valid
        rows = torch.cat([(2.0 * m).mul_(py), m * power(q, sq), ones], 1)
        sums = class_sums_rows(lp.labels, rows, k)
        err = t.sum(-1).add_(sums[:, 1])
        den = err + sums[:, 0]
        ctx.mark_non_differentiable(sums)
        ctx.save_for_backward(probs, m, off_mask, *lp)
        # t is consumed in place by the first backward, so it is kept outside
        # save_for_backward (whose version check would refuse a second backward, which
        # rebuilds it)
        ctx.t, ctx.exponent, ctx.sq, ctx.binary = t, exponent, sq, x.shape[1] == 1
        both = sums[:, 0] if overlap else None
        return err, den, sums[:, 2], both

    @staticmethod
    @first_order_only  # m is a constant of eq. 5; no double backward through this path
    def backward(ctx, g_err, g_den, _g_counts, g_both):  # type: ignore[override]
        probs, m, off_mask, *saved = ctx.saved_tensors
        lp = LabelProbs(*saved)
        sq = ctx.sq
        pg, ctx.t = ctx.t, None
        if pg is None:  # a second backward (retain_graph=True)
            pg = _off_label_terms(lp.off_label, ctx.exponent, off_mask)
        # off the label: p dL/dp = s dL/dT t (the label entries are written below)
        pg.mul_((sq * (g_err + g_den)).unsqueeze(-1))
        # at the label: p_y dL/dp_y with dq/dp_y = -1
        # the (B, K) incoming gradients at each pixel's class (1-D index_select: several
        # times faster than selecting rows of a stacked tensor)
        g_e, g_d, g_b = (
            None if g is None else g.reshape(-1).index_select(0, lp.class_entry).view_as(m)
            for g in (g_err, g_den, g_both)
        )
        q, py = lp.label_complement, lp.label_prob
        at_label = 2.0 * (g_d * py - g_e * q) if sq == 2.0 else g_d - g_e
        if g_b is not None:
            at_label = at_label + 2.0 * g_b
        at_label = at_label.mul_(m).mul_(py)
        # softmax backward dL/dx = p g - p sum_k p g; for binary logits [0, x] the second
        # channel's share, p_0 (p_1 g_1) - p_1 (p_0 g_0), without the cancellation
        if ctx.binary:
            pg.view(-1).index_copy_(0, lp.entry, at_label.view(-1))
            grad = probs[:, :1] * pg[:, 1:] - probs[:, 1:] * pg[:, :1]
            return grad, *([None] * 7)
        off_sum = pg.sum(1, keepdim=True)  # pg is still 0 at the label entries
        two = probs.shape[1] == 2
        # (read before the in-place exact below; two classes do not need it)
        grad = pg if two else pg.addcmul_(probs, off_sum + at_label, value=-1.0)
        # at the label p_y g_y (1 - p_y) - p_y sum_(c != y) p_c g_c, with 1 - p_y the other
        # classes' share: p g - p sum p g cancels to 0 there once p_y rounds to 1
        exact = at_label.mul_(q).addcmul_(py, off_sum, value=-1.0)
        if two:
            # the other channel's gradient is minus the label's (softmax gradients sum to 0
            # over the channels): p g - p sum p g cancels to 0 there too once a confidently
            # wrong p rounds to 1
            grad.copy_(exact.neg().expand_as(pg))
        grad.view(-1).index_copy_(0, lp.entry, exact.view(-1))
        return grad, *([None] * 7)


def _off_label_terms(off: Tensor, exponent: float | Tensor, off_mask: Tensor | None) -> Tensor:
    """A new tensor ``off^exponent`` (times the TopK mask): the off-label terms of eq. 5."""
    if isinstance(exponent, float) and exponent == 2.0:
        t = off.square()
    else:
        t = off.pow(exponent)
    return t if off_mask is None else t.mul_(off_mask)


def _label_dice_sums(
    inp: Prepared,
    gamma: float | Tensor,
    squared: bool,
    overlap: bool,
    label_mask: Tensor | None,
    off_mask: Tensor | None,
) -> DiceSums:
    lp = inp.label_probs
    b, c = inp.logits.shape[:2]
    probs = inp.probs.detach().reshape(b, inp.num_channels, -1)
    consts = LabelProbs(*(None if t is None else t.detach() for t in lp))
    sq = 2.0 if squared else 1.0
    err, den, counts, both = _LabelDiceSums.apply(
        inp.logits.reshape(b, c, -1), probs, consts, gamma, sq, overlap, label_mask, off_mask
    )
    return DiceSums(err, den, counts, both)


def _dense_dice_sums(
    inp: Prepared, gamma: float | Tensor, squared: bool, overlap: bool, mask: Tensor | None
) -> DiceSums:
    y, p, q = inp.target, inp.probs, inp.complement
    e = abs_error(y, p, q)
    with torch.no_grad():
        g = view_channels(gamma, e.ndim) if isinstance(gamma, Tensor) else gamma
        m = None if isinstance(g, float) and g == 0.0 else power(e.detach(), g)
        if mask is not None:
            m = mask if m is None else m * mask
        if inp.valid is not None:
            m = inp.valid if m is None else m * inp.valid
    if squared:
        err_px, den_px = e.square(), y.square() + p.square()
    else:  # y + p - 2 y p, as a sum of non-negative terms
        err_px, den_px = y * q + (1.0 - y) * p, y + p
    both_px = 2.0 * y * p if overlap else None
    if m is not None:
        err_px, den_px = m * err_px, m * den_px
        both_px = None if both_px is None else m * both_px
    both = None if both_px is None else spatial_sum(both_px)
    return DiceSums(spatial_sum(err_px), spatial_sum(den_px), spatial_sum(y), both)


# ----- Tversky (Yeung et al. 2021 eq. 12) ------------------------------------------------------
def tversky_sums(inp: Prepared) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-class ``(TP, FP, FN, y_sum)``, each (B, K) float32, over the region channels:
    ``TP = sum y p``, ``FP = sum (1 - y) p``, ``FN = sum y (1 - p)`` (from the complement)."""
    if inp.mode == "binary":
        return binary_tversky_sums(inp.binary)
    if inp.labels is not None:
        lp = inp.label_probs
        k = inp.num_channels
        tp = class_sums(lp.labels, lp.label_prob, k)
        fn = class_sums(lp.labels, lp.label_complement, k)
        return tp, lp.off_label.sum(-1), fn, label_counts(lp, k)
    return dense_tversky_sums(inp.probs, inp.complement, inp.target, inp.valid)


def dense_tversky_sums(
    p: Tensor, q: Tensor, y: Tensor, valid: Tensor | None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """:func:`tversky_sums` of dense (B, K, *sp) probabilities, complements and targets."""
    if valid is not None:
        p = p * valid  # y is already 0 at ignored pixels
    return spatial_sum(y * p), spatial_sum((1.0 - y) * p), spatial_sum(y * q), spatial_sum(y)


def tversky_complement(
    tp: Tensor, fp: Tensor, fn: Tensor, alpha: float, beta: float, eps: float
) -> Tensor:
    """``1 - TI`` with ``TI = (TP + eps) / (TP + alpha FP + beta FN + eps)``, written as
    ``(alpha FP + beta FN) / (TP + alpha FP + beta FN + eps)`` (no cancellation at TI ~ 1)."""
    miss = alpha * fp + beta * fn
    return miss / (tp + miss + eps)


# ----- WSDice (Wang et al. 2020 eq. 4) ---------------------------------------------------------
def wsdice_sums(inp: Prepared, v1: float, v2: float) -> tuple[Tensor, Tensor]:
    """Per-class ``(err, den)`` (B, K) of the WSDice coefficient, ``1 - WSDice_c =
    err_c / (den_c + eps)``: with ``G = w (2y - 1)``, ``Ghat = w (2p - 1)``,
    ``w = y (v2 - v1) + v1``, ``err = sum (Ghat - G)^2 = 4 sum w^2 (y - p)^2`` and
    ``den = sum Ghat^2 + G^2``. Ignored pixels get ``w = 0``."""
    if inp.mode == "binary":
        return binary_wsdice_sums(inp.binary, v1, v2)
    if inp.labels is None:
        y, p = inp.target, inp.probs
        w = y * (v2 - v1) + v1
        if inp.valid is not None:
            w = w * inp.valid
        w2 = w.square()
        err = 4.0 * spatial_sum(w2 * abs_error(y, p, inp.complement).square())
        den = spatial_sum(w2 * ((2.0 * p - 1.0).square() + (2.0 * y - 1.0).square()))
        return err, den
    # integer labels: w = v2 at the label entries (y = 1, error q), v1 elsewhere (y = 0,
    # error p); off the label sum (2p - 1)^2 + 1 = 4 p^2 - 4 p + 2 over the valid pixels
    lp = inp.label_probs
    k = inp.num_channels
    off = lp.off_label
    off_sq = off.square().sum(-1)
    n = label_counts(lp, k)
    n_valid = lp.labels.new_full((1, 1), lp.labels.shape[-1], dtype=torch.float32)
    if lp.valid is not None:
        n_valid = lp.valid.sum(-1)
    at_label = class_sums(lp.labels, lp.label_complement.square(), k)
    err = 4.0 * (v2 * v2 * at_label + v1 * v1 * off_sq)
    label_den_px = (2.0 * lp.label_prob - 1.0).square() + 1.0
    if lp.valid is not None:
        label_den_px = label_den_px * lp.valid
    label_den = class_sums(lp.labels, label_den_px, k)
    off_den = 4.0 * off_sq - 4.0 * off.sum(-1) + 2.0 * (n_valid - n)
    return err, v2 * v2 * label_den + v1 * v1 * off_den


# ----- cross-entropy terms (PM-Dice paper eqs. 1, 3) ---------------------------------------------
def label_log_prob(inp: Prepared) -> tuple[Tensor, Tensor]:
    """``(log p_t, 1 - p_t)`` of the labelled class, each (B, 1, *spatial), for integer
    labels, both accurate for confident predictions (logsigmoid / the other classes' share)."""
    assert inp.labels is not None
    x = inp.logits
    if inp.mode == "binary":
        s = x * (2.0 * inp.labels - 1.0)  # +x for label 1, -x for label 0
        return log_sigmoid(s), torch.sigmoid(-s)
    lp = inp.label_probs
    log_p = softmax_label_log_prob(x.reshape(x.shape[0], x.shape[1], -1), lp)
    return log_p.view(inp.labels.shape), lp.label_complement.view(inp.labels.shape)


def softmax_label_log_prob(x: Tensor, lp: LabelProbs) -> Tensor:
    """``log p_t`` (B, 1, N) of (B, K, N) logits: ``log1p(-q)`` near 1, the log-softmax
    (exact for small p_t, no underflow) elsewhere."""
    b, _, n = x.shape
    log_softmax = torch.log_softmax(x, 1).reshape(-1).index_select(0, lp.entry).view(b, 1, n)
    return log_prob_from_complement(log_softmax, lp.label_complement)


def focal_factor(q: Tensor, gamma: float | Tensor) -> Tensor:
    """``q^gamma`` (``q = 1 - p``) with ``q`` floored at the smallest normal float so that a
    fractional gamma keeps a finite gradient; gamma may be a tensor of exponents."""
    if not isinstance(gamma, Tensor) and gamma == 0.0:
        return torch.ones_like(q)
    return power(q.clamp_min(TINY), gamma)


class _SoftmaxLabelFocal(torch.autograd.Function):
    """``-w_t (1 - p_t)^gamma log p_t`` per pixel (B, 1, N) of softmax logits and integer
    labels, with the gradient written out: ``dL/dx = w_t c (p - e_t)`` with
    ``c = q^gamma (1 - gamma p_t log(p_t) / q)``, ``q = 1 - p_t`` (``c = 1`` for CE), whose
    label entry ``p_t - 1 = -q`` comes from the other classes' share. One (B, K, N) pass in
    the backward, where autograd would run the log-softmax, gather and where/log1p chain
    backwards."""

    @staticmethod
    def forward(ctx, x, probs, lp, gamma, weights):  # type: ignore[override]
        log_p = softmax_label_log_prob(x, lp)
        q = lp.label_complement
        focus = focal_factor(q, gamma)
        scale = focus if weights is None else focus * weights
        if lp.valid is not None:
            scale = scale * lp.valid
        ctx.save_for_backward(probs, log_p, scale, *lp)
        ctx.gamma = gamma
        return -log_p * scale

    @staticmethod
    @first_order_only
    def backward(ctx, g_out):  # type: ignore[override]
        probs, log_p, scale, *saved = ctx.saved_tensors
        lp = LabelProbs(*saved)
        q, py = lp.label_complement, lp.label_prob
        coef = g_out * scale
        gamma = ctx.gamma
        if isinstance(gamma, Tensor) or gamma != 0.0:
            # log(p_t) / q -> -1 as q -> 0 (log p_t = log1p(-q)); q = 0 only past float range
            # (a subnormal q takes the limit too: log_p / TINY would not be the ratio)
            kept = at_least(q, TINY)
            ratio = (log_p / q.clamp_min(TINY)).mul_(kept).add_(kept - 1.0)  # exact blend
            coef = coef * (1.0 - gamma * py * ratio)
        grad = probs * coef
        grad.view(-1).index_copy_(0, lp.entry, (-coef * q).view(-1))
        return grad, None, None, None, None


def label_pixel_loss(inp: Prepared, gamma: float | Tensor, weights: Tensor | None) -> Tensor:
    """``-w_t (1 - p_t)^gamma_t log p_t`` per pixel (B, *spatial) for integer labels (binary /
    multiclass; eqs. 1 and 3 without the one-hot sum); 0 at ignored pixels. ``gamma`` is a
    float or a (K,) tensor (one exponent per class), ``weights`` None or (K,)."""
    assert inp.labels is not None
    if isinstance(gamma, Tensor):
        gamma = per_label(gamma, inp.labels)
    w = None if weights is None else per_label(weights, inp.labels)
    if inp.mode == "multiclass":
        b, k = inp.logits.shape[:2]
        lp = inp.label_probs
        consts = LabelProbs(*(None if t is None else t.detach() for t in lp))
        g = gamma.reshape(b, 1, -1) if isinstance(gamma, Tensor) else gamma
        out = _SoftmaxLabelFocal.apply(
            inp.logits.reshape(b, k, -1),
            inp.probs.detach().reshape(b, k, -1),
            consts,
            g,
            None if w is None else w.reshape(b, 1, -1),
        )
        return out.view(inp.labels.shape)[:, 0]
    log_p, q = label_log_prob(inp)
    out = -log_p
    if isinstance(gamma, Tensor) or gamma != 0.0:
        out = out * focal_factor(q, gamma)
    if w is not None:
        out = out * w
    if inp.valid is not None:
        out = out * inp.valid
    return out[:, 0]


def pixel_terms(inp: Prepared, gamma: float | Tensor = 0.0) -> Tensor:
    """``-(1 - p_c)^gamma y_c log p_c`` per pixel channel (B, P, *sp) for one-hot / soft
    targets (0 at ignored pixels, whose targets are 0); gamma per pixel channel as a
    broadcastable tensor or a float."""
    ce = -(inp.pix_target * inp.pix_logp)
    if not isinstance(gamma, Tensor) and gamma == 0.0:
        return ce
    return focal_factor(inp.pix_complement, gamma) * ce


def channel_mean(inp: Prepared, terms: Tensor, weights: Tensor | None = None) -> Tensor:
    """Pixel-channel terms (B, P, *sp) -> per-pixel values (B, *sp): weighted sum over the
    channels (mean over the labels in multilabel mode)."""
    if weights is not None:
        terms = terms * view_channels(weights, terms.ndim)
    out = terms.sum(1)
    return out / inp.pix_div if inp.pix_div != 1 else out
