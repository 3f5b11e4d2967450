"""Cross-entropy + region cascades: Combo (Taghanaki et al. 2019) and ``beta * Focal -
log(WSDice)`` (Wang et al. 2020)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from .base import RegionLoss, check_float, check_float_or_seq, sum_terms
from .cross_entropy import focal_per_image
from .dice import WSDiceLoss
from .functional import dice_sums, ratio, softmax_label_log_prob
from .inputs import (
    LabelProbs,
    Prepared,
    at_least,
    first_order_only,
    log_prob_from_complement,
    log_sigmoid,
    other_share,
)
from .registry import register

#: ``log(1 - p)`` is floored at ``log(1e-7)`` as in the reference implementations, which clip
#: ``p`` to ``1 - 1e-7``: a saturated wrong class then costs 16.1, not infinity
_COMPLEMENT_FLOOR = -math.expm1(-1e-7)


def _log_complement(p: Tensor, q: Tensor) -> Tensor:
    """``log(1 - p)``: ``log1p(-p)`` for ``p <= 1/2`` (``q`` rounds to 1 below ``p`` ~ 6e-8 and
    its log to 0), else the log of the complement ``q``, floored (no gradient where floored)."""
    # each branch clamped to its own range: the unused one stays finite, so its zero weight in
    # the backward of torch.where gives 0 (not 0 * inf = nan)
    far = torch.log1p(-p.clamp_max(0.5))
    near = torch.log(q.clamp(_COMPLEMENT_FLOOR, 0.5))
    return torch.where(q >= 0.5, far, near)


def _label_beta(labels: Tensor, beta: float, dtype: torch.dtype) -> Tensor:
    """``beta`` at pixels with a foreground label, 0 at background (and ignored) pixels."""
    return labels.ne(0).to(dtype).mul_(beta)


class _LabelComboCE(torch.autograd.Function):
    """The Combo CE term per pixel (B, 1, N) of softmax logits and integer labels over the
    foreground channels c >= 1, ``-(b_y log p_y + (1 - beta) sum_{c != y, c >= 1} log max(1 -
    p_c, floor))`` with ``b_y = beta`` for a foreground label and 0 for background, with the
    gradient written out.

    With ``r_c = (1 - beta) p_c / (1 - p_c)`` off the label (0 at the label, at channel 0 and
    where the log is floored), the softmax gradient off the label is ``p_c (1 - beta + b_y -
    sum_{j != c} r_j)``, or ``p_c (b_y - sum_{j != c} r_j)`` where there is no own term (channel
    0, floored), and ``-b_y (1 - p_y) - p_y sum_j r_j`` at the label. Both sums exclude a term
    instead of subtracting it (``r_c`` of a saturated wrong class is about 1e7 and would cancel
    in float32), and ``1 - p_y`` is the other classes' share. Autograd would run the
    complement's channel sums, the clamp, the log and the log-softmax backwards, each over the
    (B, K, N) tensor.
    """

    @staticmethod
    def forward(ctx, x, probs, complement, lp, beta):  # type: ignore[override]
        log_py = softmax_label_log_prob(x, lp)
        floored = complement.clamp_min(_COMPLEMENT_FLOOR)
        log_q = _log_complement(probs, complement)
        log_q.view(-1).index_fill_(0, lp.entry, 0.0)  # the label's own term is log p_y
        log_q[:, 0].zero_()  # background is no eq. 17 problem of its own
        beta_y = _label_beta(lp.labels, beta, log_py.dtype)
        out = log_q.sum(1, keepdim=True).mul_(-(1.0 - beta)).sub_(beta_y * log_py)
        if lp.valid is not None:
            out.mul_(lp.valid)
        ctx.save_for_backward(probs, complement, floored, *lp)
        ctx.beta = beta
        return out

    @staticmethod
    @first_order_only
    def backward(ctx, g_out):  # type: ignore[override]
        probs, complement, floored, *saved = ctx.saved_tensors
        lp = LabelProbs(*saved)
        beta = ctx.beta
        kept = at_least(complement, _COMPLEMENT_FLOOR)  # a floored log has no gradient
        kept[:, 0] = 0.0  # nor has the background channel (no term)
        beta_y = _label_beta(lp.labels, beta, probs.dtype)
        r = probs.div(floored).mul_(kept).mul_(1.0 - beta)
        r.view(-1).index_fill_(0, lp.entry, 0.0)
        grad = kept.mul_(1.0 - beta).add_(beta_y).sub_(other_share(r)).mul_(probs)
        at_label = -(beta_y * lp.label_complement + lp.label_prob * r.sum(1, keepdim=True))
        grad.view(-1).index_copy_(0, lp.entry, at_label.view(-1))
        coef = g_out if lp.valid is None else g_out * lp.valid
        return grad.mul_(coef), None, None, None, None


@register("combo")
class ComboLoss(RegionLoss):
    """Combo loss (Taghanaki et al. 2019; Yeung et al. 2021 eqs. 16-17):
    ``alpha * L_mCE - (1 - alpha) * DSC`` with the weighted CE
    ``L_mCE = -1/N sum_i [beta y log p + (1 - beta)(1 - y) log(1 - p)]`` (eq. 17) and ``DSC``
    the class-mean plain Dice coefficient
    ``(2 sum y p + eps) / (sum (y + p) + eps)`` (eq. 10 form, not squared). For a one-channel
    binary output the class mean includes the background ``1 - p`` by default;
    ``include_background=False`` gives eq. 16's foreground-only Dice.

    Eq. 17 is the binary CE of a foreground probability: binary outputs use the foreground
    channel, multi-class outputs sum it over the foreground classes c >= 1 (one-vs-rest, class 0
    is the background), multilabel outputs average it over the labels. The background channel
    is left out of ``L_mCE``: with it, a missed object pixel would cost ``beta (-log p_fg)`` in
    its own channel plus ``(1 - beta)(-log(1 - p_bg))`` in the background channel, and for a
    softmax over ``[bg, fg]`` (``1 - p_bg = p_fg``) the two add up to plain BCE whatever beta.
    So two-channel softmax logits ``[0, x]`` give the same loss as the one-channel logit ``x``.

    For softmax outputs ``log(1 - p)`` is floored at ``log(1e-7)`` (the reference code clips
    ``p`` to ``[1e-7, 1 - 1e-7]``); binary and multilabel outputs use ``logsigmoid(-x)``. The
    loss can be negative (its minimum is ``-(1 - alpha)``).

    Args:
        alpha: weight of the CE term in [0, 1] (default 0.5).
        beta: weight of positives inside the CE term in [0, 1] (default 0.5; beta > 0.5
            penalises false negatives more).
        include_background, batch_dice, skip_absent, eps: see :class:`RegionLoss` (they shape
            the DSC term).
        mode, reduction, ignore_index, validate: see :class:`SegLoss`.
    """

    def __init__(self, *, alpha: float = 0.5, beta: float = 0.5, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.alpha = check_float("alpha", alpha, 0.0, 1.0)
        self.beta = check_float("beta", beta, 0.0, 1.0)

    def weighted_ce(self, inp: Prepared) -> Tensor:
        """Per-pixel ``L_mCE`` terms summed over the foreground channels, (B, *sp)."""
        b = self.beta
        x = inp.logits
        if inp.labels is not None and inp.mode == "multiclass":
            # one-hot-free: b log p_y + (1 - b) sum_{c != y} log(1 - p_c)
            n, k = x.shape[:2]
            consts = LabelProbs(*(None if t is None else t.detach() for t in inp.label_probs))
            px = _LabelComboCE.apply(
                x.reshape(n, k, -1),
                inp.probs.detach().reshape(n, k, -1),
                inp.complement.detach().reshape(n, k, -1),
                consts,
                b,
            )
            return px.view(inp.labels.shape)[:, 0]
        # eq. 17 is the binary CE of a foreground probability: the foreground channels
        # (class 0 is the background: a softmax over [bg, fg] is the one-channel binary case)
        fg = slice(None) if inp.mode == "multilabel" else slice(1, None)
        y = inp.target[:, fg]
        if inp.mode == "multiclass":
            log_p = inp.pix_logp[:, fg]
            log_q = _log_complement(inp.probs[:, fg], inp.complement[:, fg])
        else:
            log_p, log_q = log_sigmoid(x), log_sigmoid(-x)
        px = -(b * y * log_p + (1.0 - b) * (1.0 - y) * log_q)
        if inp.valid is not None:
            px = px * inp.valid
        return px.sum(1) / (x.shape[1] if inp.mode == "multilabel" else 1)

    def loss_terms(self, inp: Prepared) -> tuple[Tensor, Tensor]:
        mce = self.weighted_ce(inp).flatten(1).sum(1) / inp.valid_count()
        s = dice_sums(inp, squared=False)
        err, den, y_sum = self.batch_sum(s.err, s.den, s.y_sum)
        dsc = 1.0 - ratio(err, den, self.eps)
        dsc_mean = self.class_mean(dsc, self.class_weights(inp, y_sum))
        return self.alpha * mce, -(1.0 - self.alpha) * dsc_mean

    def per_image(self, inp: Prepared) -> Tensor:
        return sum_terms(self.loss_terms(inp))


@register("focal_log_wsdice")
class FocalLogWSDiceLoss(WSDiceLoss):
    """Cascade ``beta * FL - log(WSDice)`` (Wang et al. 2020, Fig. 7 and Table 1).

    FL is the focal loss (eq. 1; Lin's alpha_t: alpha for foreground, 1 - alpha for
    background) and WSDice the class-mean WSDice coefficient of :class:`WSDiceLoss`. That
    coefficient lies in [-1, 1]; it is clamped below at ``eps`` before the log so the loss stays
    finite. While the coefficient is <= eps the log term gives no gradient and the focal term
    drives training.

    Args:
        beta: weight of the focal term >= 0 (default 7, the paper's ChestX-ray8 optimum).
        alpha: focal alpha_t in [0, 1] (default 0.3). gamma: focal exponent >= 0 (default 3.5).
        v1, v2: WSDice weights (default 0.15, 1 - v1).
        include_background, batch_dice, eps: see :class:`RegionLoss`.
        mode, reduction, ignore_index, validate: see :class:`SegLoss`.
    """

    def __init__(
        self,
        *,
        beta: float = 7.0,
        alpha: float | Sequence[float] | None = 0.3,
        gamma: float = 3.5,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.beta = check_float("beta", beta, 0.0)
        self.alpha = None if alpha is None else check_float_or_seq("alpha", alpha, 0.0, 1.0)
        self.gamma = check_float("gamma", gamma, 0.0)

    def loss_terms(self, inp: Prepared) -> tuple[Tensor, Tensor]:
        fl = focal_per_image(inp, self.gamma, self.alpha)
        # -log(max(WSDice, eps)) with WSDice = 1 - r, its complement: log1p(-r) near WSDice = 1
        # (log_prob_from_complement); from r = 1/2 on 1 - r is exact, so the floor is eps
        # itself (a clamp of r at 1 - eps would round in float32)
        r = self.coefficient_complement(inp)
        low = torch.log((1.0 - r).clamp_min(self.eps))
        return self.beta * fl, -log_prob_from_complement(low, r)

    def per_image(self, inp: Prepared) -> Tensor:
        return sum_terms(self.loss_terms(inp))
