"""Dice family: Dice, PM Dice, Generalized Dice, Log Dice, Focal Dice (two variants), TopK Dice
and WSDice.

Notation (PM-Dice paper, Hosseini 2025): ``p_ic`` probability of class c at pixel i, ``y_ic``
one-hot/soft target, sums over the pixels of one image (of the batch with ``batch_dice``), all
accumulated in float32. "Class mean" is the mean over the classes that enter (see
:class:`~napari_segloss.losses._base.RegionLoss`: ``include_background``, ``skip_absent``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ._base import (
    TINY,
    RegionLoss,
    _AllClassesRegionLoss,
    check_bool,
    check_float,
    check_float_or_seq,
    class_sums,
    label_class_counts,
    per_channel,
)
from ._base import view_channels as _vc
from ._input import Prepared, label_logits
from ._topk import topk_count, topk_keep, topk_mask, topk_rows
from .registry import register


def modulated_dice(
    p: Tensor,
    y: Tensor,
    m: Tensor | None,
    *,
    squared: bool,
    eps: float,
    batch: bool,
) -> tuple[Tensor, Tensor]:
    """Per-class Dice coefficient in the PM-Dice eq. 5 form (eq. 4 when ``m is None``).

    ``(2 sum m y p + eps) / (sum m (y^2 + p^2) + eps)``; ``squared=False`` uses ``y + p``.
    Returns ``(dsc, y_sum)``, both (B|1, K) float32; ``y_sum = sum_i y_ic`` decides presence.
    """
    red = (0, *range(2, p.ndim)) if batch else tuple(range(2, p.ndim))
    yp = y * p
    if squared:
        den_px = y * y + p * p
    else:
        den_px = y + p
    if m is not None:
        yp = m * yp
        den_px = m * den_px
    inter = yp.sum(red)
    den = den_px.sum(red)
    y_sum = y.sum(red)
    if batch:
        inter, den, y_sum = inter.unsqueeze(0), den.unsqueeze(0), y_sum.unsqueeze(0)
    return (2.0 * inter + eps) / (den + eps), y_sum


def _label_power(py: Tensor, gamma: float) -> Tensor:
    """``(1 - p_y)^gamma`` (a new tensor): the modulating term at the label entry."""
    if gamma == 1.0:
        return 1.0 - py
    return (1.0 - py).pow(gamma)


def _power(p: Tensor, e: float) -> Tensor:
    """A new tensor ``p^e`` (torch has fast kernels for the exponents 2 and 3)."""
    if e == 1.0:
        return p.clone()
    return p.square() if e == 2.0 else p.pow(e)


class _SoftmaxHardLabelDice(torch.autograd.Function):
    """Per-class sums of the PM-Dice eq. 5 form for hard integer labels, straight from the
    logits: ``p = softmax(x)`` over the classes, ``p' = p v`` (``v``: 0/1 validity mask or
    None), ``I = sum m y p'``, ``S = sum m p'^s`` and ``Y = sum m y^2`` with ``s = 2``
    (squared) or 1 and ``m = |y - p'|^gamma`` held constant (eq. 5: no gradient through m).

    Why one hand-written function: softmax, modulation and sums all pass over the (B, K, N)
    tensor, and each autograd node would allocate its own full-size temporary (on CPU large
    allocations are fresh pages, so every one costs page faults). Here the forward makes two
    full-size tensors, ``p`` and ``t = m p'^s``, and the backward reuses ``t`` for its result.

    * Off the label ``m = p'^gamma`` so ``t = p'^(gamma + s)``; at the label entry
      ``m = (1 - p'_y)^gamma`` and ``t_y = m p'_y^s`` is written in (``scatter_``).
      Summing ``p'^(gamma + s)`` and subtracting the label entries afterwards would save the
      scatter but cancels catastrophically in float32 for confident predictions.
    * Backward: with ``g = dL/dp'`` the softmax backward needs only ``p g``, and off the label
      ``p g = s (dL/dS) t``, so ``t`` scaled per class is ``p g`` there; the label entries are
      ``m p'_y (dL/dI + s (dL/dS) p'_y^(s-1))``. Then ``dL/dx = p g - p sum_k p g``.
      ``Y`` carries no gradient. Binary logits come in as ``[0, x]`` (softmax of that is
      ``[1 - sigmoid(x), sigmoid(x)]``).
    * The TopK losses pass fixed masks in [0, 1] (no gradient): ``label_m`` (B, 1, N) scales m at
      the label entries, ``off_m`` (B, K, N) elsewhere; ``probs`` is ``softmax(x)`` when the
      caller already computed it (to rank the pixels), so it is not computed twice.

    On CPU, for float32 logits, :class:`_FusedCPULabelDice` computes the same sums and
    gradient with numba kernels instead (:func:`label_dice` chooses); this function serves the
    GPU, other dtypes and ``torch.compile``.
    """

    @staticmethod
    def forward(ctx, x, labels, v, gamma, squared, probs, label_m, off_m):  # type: ignore[override]
        b, k, n = x.shape
        sq = 2 if squared else 1
        p = torch.softmax(x, dim=1) if probs is None else probs
        py = p.gather(1, labels)  # probability of the labelled class, (B, 1, N)
        flat = labels.view(b, n)
        if v is not None:
            py.mul_(v)  # ignored pixels: label 0 and p' = 0, so m = 1 and y = 0 there
        if gamma == 0.0 and label_m is None:  # m = 1: u = m p'_y = p'_y, Y = pixel count
            u = py
            y2 = label_class_counts(labels, v, k)
        else:
            a = _label_power(py, gamma) if gamma != 0.0 else label_m.clone()  # m at the label
            if gamma != 0.0 and label_m is not None:
                a.mul_(label_m)
            if v is not None:
                a.mul_(v)
            y2 = class_sums(flat, a.view(b, n), k)
            u = a.mul_(py)  # m p'_y
        if gamma == 0.0 and v is None and label_m is None and off_m is None:
            t = None  # t = p^s, label entries included: nothing to write in
            if squared:  # squared L2 norm: a fused reduction, no temporary
                s_total = torch.linalg.vector_norm(p, 2, dim=-1).square()
            else:
                s_total = p.sum(-1)
        else:
            t = _off_label_terms(p, gamma + sq, v, off_m)
            s_total = t.scatter_(1, labels, u * py if squared else u).sum(-1)
        ctx.save_for_backward(p, labels, u, py, v, off_m)
        # t is consumed in place by the first backward, so it is kept outside save_for_backward
        # (whose version check would reject a second backward); a second one rebuilds it
        ctx.t, ctx.gamma, ctx.sq = t, gamma, sq
        ctx.mark_non_differentiable(y2)
        return class_sums(flat, u.view(b, n), k), s_total, y2

    @staticmethod
    @once_differentiable  # m is a constant of eq. 5; no double backward through this path
    def backward(ctx, g_inter, g_s, _g_y2):  # type: ignore[override]
        p, labels, u, py, v, off_m = ctx.saved_tensors
        sq = ctx.sq
        b, k, n = p.shape
        coef = (sq * g_s).unsqueeze(-1)  # (B, K, 1)
        pg, ctx.t = ctx.t, None  # used up in place below: saves a full-size allocation
        if pg is None:  # gamma 0 (no t kept), or a second backward (retain_graph=True)
            pg = _off_label_terms(p, ctx.gamma + sq, v, off_m)
        pg.mul_(coef)
        # label entries: m p'_y (dL/dI + s dL/dS p'_y^(s-1)), built in one (B, 1, N) buffer
        flat = labels.view(b, n)
        lab = coef.view(b, k).gather(1, flat).view(b, 1, n)
        if sq == 2:
            lab.mul_(py)
        lab.add_(g_inter.gather(1, flat).view(b, 1, n)).mul_(u)
        pg.scatter_(1, labels, lab)
        # softmax backward: dL/dx = p g - p sum_k p g
        grad = pg.addcmul_(p, pg.sum(1, keepdim=True), value=-1.0)
        return grad, None, None, None, None, None, None, None


def _off_label_terms(p: Tensor, e: float, v: Tensor | None, off_m: Tensor | None) -> Tensor:
    """``m p'^s`` off the label: ``p^(gamma + s)``, times the validity and extra masks."""
    t = _power(p, e)
    if v is not None:
        t.mul_(v)
    if off_m is not None:
        t.mul_(off_m)
    return t


def hard_label_dice(
    inp: Prepared,
    gamma: float | tuple[float, ...],
    *,
    squared: bool,
    eps: float,
    batch: bool,
) -> tuple[Tensor, Tensor]:
    """Fast path of :func:`modulated_dice` for integer labels (binary or multiclass) with
    ``m = |y - p|^gamma``: :func:`label_dice` on :func:`label_logits`."""
    x, lab, v = label_logits(inp)
    return label_dice(x, lab, v, gamma, squared=squared, eps=eps, batch=batch)


def label_dice(
    x: Tensor,
    labels: Tensor,
    valid: Tensor | None,
    gamma: float | tuple[float, ...],
    *,
    squared: bool,
    eps: float,
    batch: bool,
    probs: Tensor | None = None,
    label_m: Tensor | None = None,
    off_m: Tensor | None = None,
    label_counts: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Per-class Dice ``(dsc, y_sum)`` in the eq. 5 form for hard labels, from the
    :func:`label_logits` tensors (see :class:`_SoftmaxHardLabelDice`): ``m = |y - p|^gamma``,
    times ``label_m`` (B, 1, N) at the label entries and ``off_m`` (B, K, N) elsewhere when
    given (no gradient through either). ``probs``: ``softmax(x)`` already computed (without
    gradient); ``label_counts``: the (B, K) valid label counts, when the caller has them.
    A per-class ``gamma`` (one value per channel of ``x``) needs the fused CPU kernels
    (``_fused_cpu.applies(x)``).

    Same values and gradients as the one-hot form (checked in the tests), fewer passes over the
    (B, K, N) tensors and no one-hot target.
    """
    k = x.shape[1]
    if isinstance(gamma, tuple):
        raise ValueError("a per-class gamma on this path is not supported")
    else:
        inter, s, y2 = _SoftmaxHardLabelDice.apply(
            x, labels, valid, float(gamma), squared, probs, label_m, off_m
        )
    if gamma == 0.0 and label_m is None:
        y_sum = y2  # sum of y^2 = sum of y = pixel count per class for hard labels
    elif label_counts is not None:
        y_sum = label_counts
    else:
        y_sum = label_class_counts(labels, valid, k)
    den = s + y2
    if batch:
        inter, den, y_sum = (t.sum(0, keepdim=True) for t in (inter, den, y_sum))
    return (2.0 * inter + eps) / (den + eps), y_sum


class _DiceBase(RegionLoss):
    """Shared ``squared`` argument and the plain per-class Dice of eq. 4."""

    def __init__(self, *, squared: bool = True, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        check_bool("squared", squared)
        self.squared = squared

    def dice_per_class(self, inp: Prepared, m: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if m is None and inp.labels is not None:
            return hard_label_dice(
                inp,
                0.0,
                squared=self.squared,
                eps=self.eps,
                batch=self.batch_dice,
            )
        return modulated_dice(
            self.masked_probs(inp),
            inp.target,
            m,
            squared=self.squared,
            eps=self.eps,
            batch=self.batch_dice,
        )


@register("dice")
class DiceLoss(_DiceBase):
    """Dice loss, PM-Dice paper eq. 4 (V-Net, Milletari et al. 2016; Liu et al. 2018 DSC loss):
    ``1 - mean_c (2 sum_i y_ic p_ic + eps) / (sum_i (y_ic^2 + p_ic^2) + eps)``.

    Args:
        squared: squared denominator (V-Net, eq. 4; default) or ``sum_i (y_ic + p_ic)``.
        include_background, batch_dice, skip_absent, eps: see :class:`RegionLoss`. The class
            mean runs over the classes present in the image (eq. 4 text) unless
            ``skip_absent=False``.
        mode, reduction, ignore_index, validate: see :class:`SegLoss`.
    """

    def per_image(self, inp: Prepared) -> Tensor:
        dsc, y_sum = self.dice_per_class(inp)
        return self.class_mean(1.0 - dsc, self.class_weights(inp, y_sum))


@register("pm_dice")
class PMDiceLoss(_DiceBase):
    """Pixel-wise Modulated Dice loss, PM-Dice paper (Hosseini 2025) eq. 5:
    ``1 - mean_c (2 sum_i m_ic y_ic p_ic + eps) / (sum_i m_ic (y_ic^2 + p_ic^2) + eps)`` with the
    modulating term ``m_ic = |y_ic - p_ic|^gamma_c`` computed from **detached** probabilities:
    the paper treats m as a hyperparameter, no gradient flows through it.

    ``gamma = 0`` gives ``dice`` exactly (``0 ** 0 == 1`` in torch), with either
    ``skip_absent`` setting.

    Integer-label targets use a one-hot-free path with a hand-written backward (same values
    and gradients as the one-hot form, fewer passes; on CPU one fused numba pass each way, see
    :mod:`napari_segloss.losses._fused_cpu`), for a per-class gamma only there (float32 CPU
    logits); it does not support double backward (one-hot/soft targets do).

    Args:
        gamma: float >= 0 (default 1.0) or one value per class channel (after binary
            expansion: ``[gamma_BG, gamma_FG]`` for a one-channel binary output); a length
            mismatch raises ValueError at forward.
        squared, include_background, batch_dice, skip_absent, eps: see :class:`DiceLoss`.
        mode, reduction, ignore_index, validate: see :class:`SegLoss`.
    """

    def __init__(self, *, gamma: float | Sequence[float] = 1.0, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.gamma = check_float_or_seq("gamma", gamma, 0.0, None)

    def class_gammas(self, inp: Prepared) -> Tensor:
        """The per-class gamma as a (K,) tensor; ValueError if its length is not K."""
        hint = " ([gamma_BG, gamma_FG] for binary logits)" if inp.mode == "binary" else ""
        return per_channel("gamma", self.gamma, inp.num_channels, inp.logits, hint)

    def modulating_term(self, inp: Prepared) -> Tensor:
        """``|y - p.detach()|^gamma_c`` (B, K, *spatial), no gradient."""
        err = (inp.target - inp.probs.detach()).abs()
        g = self.gamma
        if isinstance(g, tuple):
            return err.pow(_vc(self.class_gammas(inp), err.ndim))
        if g == 1.0:
            return err
        return err.pow(g)

    def per_image(self, inp: Prepared) -> Tensor:
        per_class = isinstance(self.gamma, tuple)
        # integer labels elsewhere (GPU, half precision, compile): the one-hot-free eager
        # path, for one gamma; a per-class gamma there takes the one-hot form
        if inp.labels is not None and not per_class:
            dsc, y_sum = hard_label_dice(
                inp,
                self.gamma,
                squared=self.squared,
                eps=self.eps,
                batch=self.batch_dice,
            )
        else:
            dsc, y_sum = self.dice_per_class(inp, self.modulating_term(inp))
        return self.class_mean(1.0 - dsc, self.class_weights(inp, y_sum))


@register("generalized_dice", "gdl")
class GeneralizedDiceLoss(_AllClassesRegionLoss):
    """Generalized Dice loss (Sudre et al. 2017):
    ``1 - (2 sum_c w_c sum_i y_ic p_ic + eps) / (sum_c w_c sum_i (y_ic + p_ic) + eps)`` with
    ``w_c = 1 / (sum_i y_ic)^2``. Weights of absent classes (infinite) are replaced by the
    largest finite weight of that image (as MONAI's GeneralizedDiceLoss), so the class weights
    themselves handle absent classes (``skip_absent`` is not a parameter here). If no class is
    present all weights are 0 and the loss is 0.

    Args:
        include_background, batch_dice, eps: see :class:`RegionLoss`.
        mode, reduction, ignore_index, validate: see :class:`SegLoss`.
    """

    def per_image(self, inp: Prepared) -> Tensor:
        p = self.masked_probs(inp)
        y = inp.target
        inter = self.ssum(y * p)
        y_sum = self.ssum(y)
        den = y_sum + self.ssum(p)
        w = 1.0 / (y_sum * y_sum)
        inf = torch.isinf(w)
        w = torch.where(inf, torch.zeros_like(w), w)
        w_max = w.amax(dim=1, keepdim=True)
        w = torch.where(inf, w_max.expand_as(w), w)
        w = w * self.class_weights(inp, y_sum)  # drops background if requested
        return 1.0 - (2.0 * (w * inter).sum(1) + self.eps) / ((w * den).sum(1) + self.eps)


@register("log_dice", "exp_log_dice")
class LogDiceLoss(_DiceBase):
    """Exponential logarithmic Dice term (Wong et al. 2018): ``mean_c (-ln Dice_c)^gamma``.

    ``-ln Dice_c`` is clamped at 1e-30 before the power so the gradient stays finite when
    ``Dice_c = 1`` (for ``gamma < 1`` the derivative of ``x^gamma`` is infinite at 0).
    Dice_c is the eq. 4 form of this library (squared denominator by default; Wong et al. use
    ``squared=False``).

    Args:
        gamma: exponent > 0 (default 0.3, Wong et al.).
        squared, include_background, batch_dice, skip_absent, eps: see :class:`DiceLoss`.
        mode, reduction, ignore_index, validate: see :class:`SegLoss`.
    """

    def __init__(self, *, gamma: float = 0.3, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.gamma = check_float("gamma", gamma, 0.0, None, lo_open=True)

    def per_image(self, inp: Prepared) -> Tensor:
        dsc, y_sum = self.dice_per_class(inp)
        # floor 1e-30 (not TINY): x^0.3 at 1e-12 would leave a 2.5e-4 loss at a perfect score
        t = (-torch.log(dsc.clamp(TINY, 1.0))).clamp_min(1e-30).pow(self.gamma)
        return self.class_mean(t, self.class_weights(inp, y_sum))


@register("focal_dice")
class FocalDiceLoss(_DiceBase):
    """Focal Dice of Wang & Chung 2018 ("Focal Dice [40]" in the PM-Dice tables):
    ``1 - mean_c Dice_c^(1/beta)``. Dice_c is clamped at 1e-12 before the root so the gradient
    stays finite at Dice_c = 0.

    Args:
        beta: >= 1 (default 2); beta = 1 is the Dice loss.
        squared, include_background, batch_dice, skip_absent, eps: see :class:`DiceLoss`.
        mode, reduction, ignore_index, validate: see :class:`SegLoss`.
    """

    def __init__(self, *, beta: float = 2.0, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.beta = check_float("beta", beta, 1.0, None)

    def per_image(self, inp: Prepared) -> Tensor:
        dsc, y_sum = self.dice_per_class(inp)
        t = 1.0 - dsc.clamp_min(TINY).pow(1.0 / self.beta)
        return self.class_mean(t, self.class_weights(inp, y_sum))


class _TopKDiceBase(_DiceBase):
    def __init__(self, *, k: float = 10.0, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.k = check_float("k", k, 0.0, 100.0, lo_open=True)

    def mask(self, inp: Prepared) -> Tensor:  # pragma: no cover - abstract
        """0/1 modulation (B, K, *sp) for one-hot/soft targets."""
        raise NotImplementedError

    def label_masks(
        self, p: Tensor, labels: Tensor, valid: Tensor | None, counts: Tensor
    ) -> tuple[Tensor | None, Tensor | None]:  # pragma: no cover - abstract
        """The same modulation for hard labels, as ``(label_m, off_m)`` of
        :func:`label_dice`, from detached probabilities (B, K, N) and the valid label counts
        per class (B, K)."""
        raise NotImplementedError

    def per_image(self, inp: Prepared) -> Tensor:
        if inp.labels is not None:
            x, lab, v = label_logits(inp)
            counts = label_class_counts(lab, v, x.shape[1])  # ranks the pixels and is y_sum
            with torch.no_grad():
                p = torch.softmax(x, dim=1)
            label_m, off_m = self.label_masks(p, lab, v, counts)
            dsc, y_sum = label_dice(
                x,
                lab,
                v,
                0.0,
                squared=self.squared,
                eps=self.eps,
                batch=self.batch_dice,
                probs=p,
                label_m=label_m,
                off_m=off_m,
                label_counts=counts,
            )
        else:
            dsc, y_sum = self.dice_per_class(inp, self.mask(inp))
        return self.class_mean(1.0 - dsc, self.class_weights(inp, y_sum))


def _valid_for(inp: Prepared) -> Tensor:
    if inp.valid is None:
        return torch.ones((), device=inp.logits.device)
    return inp.valid


@register("focal_dice_zhao")
class FocalDiceZhaoLoss(_TopKDiceBase):
    """Focal Dice of Zhao et al. 2020 (ICDM) as the PM-Dice paper describes it ("Focal Dice
    [41]": "true negatives are ranked based on their error values and the ones that are not in
    top K% are ignored"; it "focuses on false positives and true negatives with low
    confidence").

    Dice in the eq. 5 form with a binary mask ``m_ic``: negatives of class c (``y_ic < 0.5``)
    enter only if their error ``p_ic`` is among the top k % of that image's negatives of class
    c; positives always enter. The mask is computed from detached probabilities.
    Exactly ``ceil(k/100 * n_neg)`` negatives are kept per image and class (unsorted
    ``torch.topk`` plus an exact count, :func:`~napari_segloss.losses._topk.topk_rows`).

    Args:
        k: percentage of negatives kept per image and class, in (0, 100] (default 10; the
            PM-Dice paper does not state it for [41]).
        squared, include_background, batch_dice, skip_absent, eps: see :class:`DiceLoss`.
        mode, reduction, ignore_index, validate: see :class:`SegLoss`.
    """

    def mask(self, inp: Prepared) -> Tensor:
        y = inp.target
        neg = (y < 0.5).float() * _valid_for(inp)
        keep = topk_mask(neg, inp.probs.detach(), self.k)
        return keep + (1.0 - neg)  # negatives: kept or not; everything else: 1 (keep is 0 there)

    def label_masks(
        self, p: Tensor, labels: Tensor, valid: Tensor | None, counts: Tensor
    ) -> tuple[Tensor | None, Tensor | None]:
        # negatives of class c: the valid pixels not labelled c, ranked by p_c; label entries
        # keep m = 1 (positives always enter)
        n = p.shape[2]
        scores = p.clone().scatter_(1, labels, -1.0)  # p >= 0: -1 marks the excluded
        if valid is not None:
            scores.mul_(valid).add_(valid - 1.0)
        n_valid = float(n) if valid is None else valid.sum(2)
        count = topk_count(n_valid - counts, self.k)
        return None, topk_rows(scores, count, max(1, math.ceil(self.k * n / 100.0)))


@register("topk_dice")
class TopKDiceLoss(_TopKDiceBase):
    """TopK Dice (Hosseini, BMVC 2024; "TopK Dice [42]" in the PM-Dice tables): "false
    negatives and true positives are ranked based on their error values and the ones that are
    not in top K% are ignored".

    Dice in the eq. 5 form with a binary mask ``m_ic``: positives of class c (``y_ic >= 0.5``)
    enter only if their error ``1 - p_ic`` is among the top k % of that image's positives of
    class c; negatives always enter. The mask is computed from detached probabilities.
    Exactly ``ceil(k/100 * n_c)`` positives are kept, without sorting and without host sync
    (integer labels: one radix selection over the label pixels for all classes at once,
    :mod:`~napari_segloss.losses._topk`); pixels whose error ties the threshold value share the
    remaining slots (mask value ``remaining / n_tied``: the loss equals that of any exact
    choice, and does not depend on pixel order).

    Args:
        k: percentage of positives kept per image and class, in (0, 100] (default 10).
        squared, include_background, batch_dice, skip_absent, eps: see :class:`DiceLoss`.
        mode, reduction, ignore_index, validate: see :class:`SegLoss`.
    """

    def mask(self, inp: Prepared) -> Tensor:
        y = inp.target
        pos = (y >= 0.5).float() * _valid_for(inp)
        keep = topk_mask(pos, 1.0 - inp.probs.detach(), self.k)
        return keep + (1.0 - pos)  # positives: kept or not; everything else: 1 (keep is 0 there)

    def label_masks(
        self, p: Tensor, labels: Tensor, valid: Tensor | None, counts: Tensor
    ) -> tuple[Tensor | None, Tensor | None]:
        # positives are the label entries: one selection per class over the (B, N) label
        # errors 1 - p_y, grouped by label (ignored pixels excluded); negatives keep m = 1
        b, k, n = p.shape
        flat = labels.view(b, n)
        error = 1.0 - p.gather(1, labels).view(b, n)
        group = flat if valid is None else flat + (k - flat) * (1 - valid.view(b, n).long())
        return topk_keep(error, group, topk_count(counts, self.k)).view(b, 1, n), None


def wsdice_coefficient(
    p: Tensor, y: Tensor, valid: Tensor | None, v1: float, v2: float, eps: float, batch: bool
) -> Tensor:
    """Per-class WSDice coefficient (Wang et al. 2020 eq. 4), (B|1, K), in [-1, 1].

    ``G = w (2y - 1)``, ``Ghat = w (2p - 1)``, ``w = y (v2 - v1) + v1``;
    ``(2 sum Ghat G + eps) / (sum Ghat^2 + sum G^2 + eps)``. Ignored pixels get w = 0.
    """
    w = y * (v2 - v1) + v1
    if valid is not None:
        w = w * valid
    g = w * (2.0 * y - 1.0)
    gh = w * (2.0 * p - 1.0)
    red = (0, *range(2, p.ndim)) if batch else tuple(range(2, p.ndim))
    num = (g * gh).sum(red)
    den = (gh * gh + g * g).sum(red)
    if batch:
        num, den = num.unsqueeze(0), den.unsqueeze(0)
    return (2.0 * num + eps) / (den + eps)


def wsdice_label_coefficient(
    inp: Prepared, v1: float, v2: float, eps: float, batch: bool
) -> Tensor:
    """:func:`wsdice_coefficient` of every class channel for hard integer labels, (B|1, K).

    With ``q = 2p - 1``, a label entry has ``G = v2``, ``Ghat = v2 q`` and any other entry
    ``G = -v1``, ``Ghat = v1 q``, so per class
    ``sum Ghat G = v2^2 L1 - v1^2 (Q1 - L1)`` and
    ``sum Ghat^2 + G^2 = v2^2 (L2 + n) + v1^2 (Q2 - L2 + n_valid - n)`` with ``Q1``, ``Q2``
    the sums of ``q``, ``q^2`` over the valid pixels, ``L1``, ``L2`` those over the class's
    label pixels and ``n`` their count. Two full-size tensors (``p``, ``q``) instead of the
    one-hot target and a dozen weighted products.
    """
    assert inp.labels is not None
    p = inp.probs
    b, k = p.shape[:2]
    q = torch.add(p, p).sub_(1.0).flatten(2)  # 2p - 1, one new tensor
    labels = inp.labels.reshape(b, 1, -1)
    flat = labels.view(b, -1)
    v = None if inp.valid is None else inp.valid.reshape(b, 1, -1)
    if v is None:
        q1 = q.sum(-1)
        q2 = torch.linalg.vector_norm(q, 2, dim=-1).square()
        n_valid = torch.full((b, 1), float(flat.shape[1]), device=p.device)
    else:
        qv = q * v
        q1 = qv.sum(-1)
        q2 = torch.linalg.vecdot(qv, q, dim=-1)
        n_valid = v.sum(-1)
    qy = q.gather(1, labels)
    if v is not None:
        qy = qy * v
    l1 = class_sums(flat, qy.view(b, -1), k)
    l2 = class_sums(flat, (qy * qy).view(b, -1), k)
    n = label_class_counts(labels, v, k)
    num = v2 * v2 * l1 - v1 * v1 * (q1 - l1)
    den = v2 * v2 * (l2 + n) + v1 * v1 * (q2 - l2 + n_valid - n)
    if batch:
        num, den = num.sum(0, keepdim=True), den.sum(0, keepdim=True)
    return (2.0 * num + eps) / (den + eps)


class _WSDiceBase(_AllClassesRegionLoss):
    """Shared WSDice weights and the class-mean coefficient."""

    def __init__(
        self,
        *,
        v1: float = 0.15,
        v2: float | None = None,
        include_background: bool = True,
        batch_dice: bool = False,
        eps: float = 1e-6,
        **kwargs: object,
    ) -> None:
        super().__init__(
            include_background=include_background, batch_dice=batch_dice, eps=eps, **kwargs
        )
        self.v1 = check_float("v1", v1, 0.0, 0.5)
        self.v2 = 1.0 - self.v1 if v2 is None else check_float("v2", v2, 0.0, 1.0)

    def wsdice_mean(self, inp: Prepared) -> Tensor:
        """Class-mean WSDice coefficient per image (B|1,)."""
        # binary: the 2y-1 trick already includes the negatives -> foreground channel only
        first = int(inp.mode == "binary" or (inp.has_background and not self.include_background))
        if inp.labels is not None:
            coef = wsdice_label_coefficient(inp, self.v1, self.v2, self.eps, self.batch_dice)
            return coef[:, first:].mean(1)
        p, y, valid = inp.probs[:, first:], inp.target[:, first:], inp.valid
        coef = wsdice_coefficient(p, y, valid, self.v1, self.v2, self.eps, self.batch_dice)
        return coef.mean(1)


@register("wsdice")
class WSDiceLoss(_WSDiceBase):
    """Weighted soft Dice, WSDice (Wang et al. 2020, eq. 4):
    ``1 - mean_c (2 sum Ghat G + eps) / (sum Ghat^2 + sum G^2 + eps)`` with
    ``G = w (2y - 1)``, ``Ghat = w (2p - 1)``, ``w = y (v2 - v1) + v1``.

    The coefficient lies in [-1, 1] (so the loss in [0, 2]). Because ``2y - 1`` already
    counts the negatives, a one-channel binary output is scored on the foreground channel only
    (the paper's binary formulation); multi-class is one-vs-rest per class ("for each class ...
    regard it as foreground and the rest as background"), mean over classes respecting
    ``include_background``. Absent classes keep a meaningful score (their negatives count), so
    every class enters the mean (no ``skip_absent``).

    Args:
        v1: weight of negatives, in [0, 0.5] (default 0.15, the paper's ChestX-ray8 setting).
        v2: weight of positives (default ``1 - v1``).
        include_background, batch_dice, eps: see :class:`RegionLoss`.
        mode, reduction, ignore_index, validate: see :class:`SegLoss`.
    """

    def per_image(self, inp: Prepared) -> Tensor:
        return 1.0 - self.wsdice_mean(inp)
