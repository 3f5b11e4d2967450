"""Per-pixel maps: PM-Dice modulating maps and loss contribution maps (what the panel draws).

- :func:`modulating_map` is the PM-Dice modulating term ``m_ic = |y_ic - p_ic|^gamma_c``
  (Hosseini 2025, eq. 5 and fig. 1), the map of the paper's fig. 2.
- :func:`contribution_map` says how much each pixel drives a loss: the L1 norm over channels of
  ``dLoss/dlogits`` (any loss, compounds included), or a per-pixel value.

Pure torch; no Qt or napari.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .losses import CompoundLoss, SegLoss, get_loss, prepare
from .losses.base import check_optional_int
from .losses.functional import abs_error
from .losses.inputs import mask_ignored, other_share

__all__ = [
    "MAP_KINDS",
    "PROB_FLOOR",
    "SOFTMAX_SUM_TOLERANCE",
    "contribution_map",
    "error_map",
    "modulating_map",
    "probabilities_to_logits",
]

MAP_KINDS: tuple[str, ...] = ("gradient", "value")


def _shape(t: Tensor) -> str:
    return "(" + ", ".join(str(s) for s in t.shape) + ")"


def _check_inputs(name: str, x: Any, target: Any, expected: str) -> None:
    # Both tensors; ``x`` (named ``name``) floating point with at least (B, C, one spatial axis).
    if not isinstance(x, Tensor) or not isinstance(target, Tensor):
        raise ValueError(
            f"{name} and target: expected torch.Tensor, got "
            f"{type(x).__name__} and {type(target).__name__}"
        )
    if x.ndim < 3 or not x.is_floating_point():
        raise ValueError(f"{name}: expected {expected}, got dtype {x.dtype} and shape {_shape(x)}")


def _target_channels(target: Tensor, b: int, c: int, spatial: tuple[int, ...]) -> Tensor:
    """Integer labels ``(B, *sp)`` / ``(B, 1, *sp)`` or one-hot/soft ``(B, C, *sp)`` -> float (B, K, *sp).

    Binary (``C == 1``) gives ``[1 - y, y]``, matching the losses' binary expansion.
    """
    label_shapes = ((b, *spatial), (b, 1, *spatial))
    tshape = tuple(target.shape)
    if c == 1:
        if tshape not in label_shapes:
            raise ValueError(
                f"target: binary probs (B, 1, *spatial) need a target of shape {label_shapes[0]} "
                f"or {label_shapes[1]}, got {_shape(target)}"
            )
        y = target.reshape(b, 1, *spatial).float()
        if y.numel() and (float(y.min()) < 0.0 or float(y.max()) > 1.0):
            raise ValueError(
                f"target: binary targets must be 0/1 labels or soft values in [0, 1], got values "
                f"in [{float(y.min()):g}, {float(y.max()):g}]"
            )
        return torch.cat([1.0 - y, y], dim=1)
    if tshape in label_shapes:
        t = target.reshape(b, *spatial)
        if t.is_floating_point():
            if bool((t != t.round()).any()):
                raise ValueError(
                    "target: label targets (B, *spatial) must hold integer class indices, got "
                    "non-integer float values"
                )
        t = t.long()
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= c):
            raise ValueError(
                f"target: labels must be in [0, {c - 1}] for {c} channels, got values in "
                f"[{int(t.min())}, {int(t.max())}]"
            )
        classes = torch.arange(c, device=t.device).view(1, c, *([1] * len(spatial)))
        return (t.unsqueeze(1) == classes).float()
    if tshape == (b, c, *spatial):
        y = target.float()
        if y.numel() and (float(y.min()) < 0.0 or float(y.max()) > 1.0):
            raise ValueError(
                f"target: one-hot/soft targets must be in [0, 1], got values in "
                f"[{float(y.min()):g}, {float(y.max()):g}]"
            )
        return y
    raise ValueError(
        f"target: expected labels {label_shapes[0]} or {label_shapes[1]}, or one-hot/soft "
        f"{(b, c, *spatial)}, got {_shape(target)}"
    )


def _gamma_tensor(gamma: float | Sequence[float] | Tensor, k: int, ref: Tensor) -> Tensor:
    """gamma as a (1, K, 1, ...) float32 tensor (scalar or one value per class channel, >= 0)."""
    if isinstance(gamma, Tensor):
        gamma = gamma.detach().cpu().flatten().tolist()
        if len(gamma) == 1:
            gamma = gamma[0]
    if isinstance(gamma, Sequence) and not isinstance(gamma, str):
        values = list(gamma)
        if len(values) != k:
            hint = " ([gamma_BG, gamma_FG] for binary probs)" if k == 2 else ""
            raise ValueError(
                f"gamma: expected a number or {k} values (one per class channel){hint}, got "
                f"{len(values)} values"
            )
    elif isinstance(gamma, bool) or not isinstance(gamma, (int, float)):
        raise ValueError(f"gamma: expected a number >= 0 or a sequence of them, got {gamma!r}")
    else:
        values = [gamma] * k
    for i, g in enumerate(values):
        if (
            isinstance(g, bool)
            or not isinstance(g, (int, float))
            or not g >= 0
            or g == float("inf")
        ):
            raise ValueError(f"gamma[{i}]: expected a finite number >= 0, got {g!r}")
    return torch.tensor(values, dtype=torch.float32, device=ref.device).view(
        1, k, *([1] * (ref.ndim - 2))
    )


def _split_ignored(
    target: Tensor, ignore_index: int | None, b: int, c: int, spatial: tuple[int, ...]
) -> tuple[Tensor, Tensor | None]:
    """``(target with its ignored values set to 0, float validity mask or None)``. As the
    losses read ``ignore_index``: a label map ignores whole pixels (mask (B, 1, *sp)); a
    one-hot/soft (B, C, *sp) target ignores the entries that hold it (mask (B, C, *sp)), and
    there 0 and 1 are target values, not markers."""
    check_optional_int("ignore_index", ignore_index)
    if ignore_index is None:
        return target, None
    one_hot = c >= 2 and tuple(target.shape) == (b, c, *spatial)
    if one_hot and 0 <= ignore_index <= 1:
        raise ValueError(
            f"ignore_index={ignore_index} cannot mark entries of a one-hot/soft target: 0 and 1 "
            "are target values; use a value outside [0, 1] (e.g. 255) or integer labels"
        )
    kept, valid = mask_ignored(target, ignore_index)
    if not one_hot and valid.numel() == b * math.prod(spatial):
        valid = valid.reshape(b, 1, *spatial)  # labels: one mask for every channel
    return kept, valid


def modulating_map(
    probs: Tensor,
    target: Tensor,
    gamma: float | Sequence[float] | Tensor = 1.0,
    *,
    ignore_index: int | None = None,
) -> Tensor:
    """PM-Dice modulating term ``m_ic = |y_ic - p_ic|^gamma_c`` (Hosseini 2025, eq. 5, fig. 1).

    Args:
        probs: probabilities ``(B, C, *spatial)`` (softmax output, or sigmoid for ``C == 1``).
        target: integer labels ``(B, *spatial)`` / ``(B, 1, *spatial)`` or one-hot/soft
            ``(B, C, *spatial)``.
        gamma: focusing parameter >= 0, one number or one per class channel.
        ignore_index: target value that marks ignored pixels (labels) or entries (one-hot/soft
            targets; a value in [0, 1] is refused there, it is a target value). They get
            ``m = 0`` in every channel they cover: the losses leave them out and
            :func:`contribution_map` (built with the same ``ignore_index``) gives them 0.

    Returns:
        float32 ``(B, K, *spatial)`` without gradient (the paper treats m as a hyperparameter).
        ``K = C``, except binary ``C == 1`` probs, which are expanded to ``[1 - p, p]`` as in the
        losses, so ``K = 2`` (background, foreground) and ``gamma`` may be ``[gamma_BG, gamma_FG]``.
        ``gamma = 0`` gives all ones (``0 ** 0 = 1``: PM Dice reduces to Dice).
    """
    _check_inputs("probs", probs, target, "floating point probabilities (B, C, *spatial)")
    # float64 probs stay float64 until the end: a confident p = 1 - 1e-12 rounds to 1 in
    # float32 and its m (1e-12) to 0
    p = probs.detach().to(torch.promote_types(probs.dtype, torch.float32))
    if p.numel():
        lo, hi = (float(v) for v in torch.aminmax(p))  # one pass for both bounds
        if not (lo >= 0.0 and hi <= 1.0):  # also catches NaN
            raise ValueError(
                f"probs: expected probabilities in [0, 1] (apply softmax/sigmoid to logits "
                f"first), got values in [{lo:g}, {hi:g}]"
            )
    b, c = p.shape[:2]
    spatial = tuple(p.shape[2:])
    t, valid = _split_ignored(target.detach().to(p.device), ignore_index, b, c, spatial)
    y = _target_channels(t, b, c, spatial).to(p.dtype)
    if c == 1:
        # both classes share |y - p|: the background's |(1 - y) - (1 - p)| computed as
        # written rounds 1 - p, and is 0 instead of p = 1e-10 on a confident background pixel
        err = (y[:, 1:] - p).abs_().float()
        err = torch.cat([err, err], dim=1)
    else:
        err = _softmax_error(y, p).float()
    g = _gamma_tensor(gamma, err.shape[1], err)
    first = float(g.flatten()[0])
    if bool((g == first).all()):  # one gamma: scalar pow is much cheaper than a broadcast pow
        m = err if first == 1.0 else err.pow_(first)
    else:
        m = err.pow_(g)
    return m if valid is None else m.mul_(valid)


#: the smallest probability the logits of :func:`probabilities_to_logits` give back (the
#: smallest normal float32): a probability of exactly 0 becomes this, every other one stays
PROB_FLOOR = float(torch.finfo(torch.float32).tiny)


def probabilities_to_logits(probs: torch.Tensor) -> torch.Tensor:
    """Logits whose activation gives back ``probs``: logit for one channel, log for softmax.

    Only probabilities of exactly 0 or 1 change: 0 becomes ``PROB_FLOOR`` (1 its complement),
    so the logits are finite. A coarser floor (1e-6) would change the PM-Dice values of
    small gammas: ``m = |y - p|^0.5`` is 1e-3 instead of 0 on every confidently right pixel
    (acdc, eroded: 0.503 instead of 0.554), while the modulating map drawn is that of ``probs``.
    The price: cross-entropy of a hard, wrong pixel (``p = 0``, infinite) is ``-ln PROB_FLOOR``
    (87.3).
    """
    p = probs.float()
    if p.shape[1] == 1:  # log(p) - log(1 - p), each floored: logit(1) stays finite
        return torch.log(p.clamp_min(PROB_FLOOR)) - torch.log((1.0 - p).clamp_min(PROB_FLOOR))
    return torch.log(p.clamp_min(PROB_FLOOR))


#: how far from 1 a pixel's probabilities may sum and still be read as a softmax output (the
#: Loss Explorer accepts probability images within the same tolerance)
SOFTMAX_SUM_TOLERANCE = 5e-3


def _softmax_error(y: Tensor, p: Tensor) -> Tensor:
    """``|y - p|`` of softmax probabilities with ``1 - p`` from the other channels' share, as
    the losses take it: a confident ``p = 1 - 2e-35`` is 1.0 in float32, and ``m = 0`` where
    PM Dice's own ``m`` is ``(2e-35)^gamma``. Each pixel is taken as the losses see it once
    turned into logits (:func:`probabilities_to_logits`, then softmax): divided by its sum.
    A pixel whose channels do not sum to 1 within ``SOFTMAX_SUM_TOLERANCE`` (not a softmax
    output) keeps the plain subtraction."""
    sums = p.sum(1, keepdim=True)
    exact = abs_error(y, p / sums, other_share(p) / sums)
    plain = (y - p).abs_()
    return torch.where((sums - 1.0).abs() <= SOFTMAX_SUM_TOLERANCE, exact, plain)


def _resolve_loss(loss: str | nn.Module, params: dict[str, Any]) -> nn.Module:
    if isinstance(loss, str):
        # reduction="none": per-image losses, so an image's map does not depend on the batch
        params = {"reduction": "none", **params}
        return get_loss(loss, **params)
    if isinstance(loss, nn.Module):
        if params:
            raise ValueError(
                f"loss params {sorted(params)} are only accepted with a loss name; got an "
                f"already built {type(loss).__name__}"
            )
        return loss
    raise ValueError(
        f"loss: expected a registered loss name (str) or an nn.Module, got {type(loss).__name__}"
    )


def _prepared(module: nn.Module, logits: Tensor, target: Tensor) -> Any:
    """The losses' own input preparation (probabilities, binary expansion, one-hot, ignore)."""
    if hasattr(module, "prepare"):
        return module.prepare(logits, target)
    comps = getattr(module, "components", None)
    if comps is not None and len(comps) and hasattr(comps[0], "prepare"):
        return comps[0].prepare(logits, target)
    return prepare(logits, target)


def error_map(loss: nn.Module, logits: Tensor, target: Tensor) -> Tensor:
    """Per-pixel error ``(B, *spatial)`` used as the "value" map of region (Dice-family) losses.

    ``sum_c w_c |y_c - p_c| / 2`` over the loss's class channels (binary: ``|y - p|``; in
    [0, 1]: 0 = correct and confident, 1 = confidently wrong). ``w_c = 1`` except for PM Dice,
    where ``w`` is its modulating term ``|y_c - p_c|^gamma_c`` (the modulated error the PM-Dice
    loss sees, eq. 5). Multilabel: the mean over the (not ignored) labels of ``|y_c - p_c|``.
    Ignored pixels: 0.
    """
    if not isinstance(loss, nn.Module):  # a name gave the plain error, PM Dice's m dropped
        raise ValueError(
            f"loss: expected a loss module such as get_loss('pm_dice', gamma=2.0), got {loss!r}"
        )
    inp = _prepared(loss, logits, target)
    err = abs_error(inp.target, inp.probs, inp.complement)
    if hasattr(loss, "modulating_term"):
        err = err * loss.modulating_term(inp)
    if inp.valid is not None:
        # multilabel ignores entries: an ignored label's target reads 0, its error p is no error
        err = err * inp.valid
    if inp.mode != "multilabel":
        return err.sum(1) / 2.0
    if inp.valid is None or inp.valid.shape[1] == 1:
        return err.sum(1) / inp.num_channels
    return err.sum(1) / inp.valid.sum(1).clamp_min(1.0)


def _value_map(module: nn.Module, logits: Tensor, target: Tensor) -> Tensor:
    if isinstance(module, CompoundLoss):
        # weighted sum of the components' value maps (pixel loss or error)
        total = None
        for w, comp in zip(module.weights, module.components, strict=True):
            v = w * _value_map(comp, logits, target)
            total = v if total is None else total + v
        return total
    if not isinstance(module, SegLoss):
        # its per-pixel loss is unknown here: the error map of a torch CrossEntropyLoss read
        # 0.43 where its per-pixel CE is 0.56, and 0.95 for 2.94
        raise ValueError(
            f'kind="value" needs a loss from get_loss (its per-pixel loss or error map), got '
            f'{type(module).__name__}; kind="gradient" works for any loss module'
        )
    if hasattr(module, "pixel_loss"):
        return module.pixel_loss(logits, target)
    return error_map(module, logits, target)


def contribution_map(
    loss: str | nn.Module,
    logits: Tensor,
    target: Tensor,
    kind: str = "gradient",
    **params: Any,
) -> Tensor:
    """How much each pixel drives a loss, ``(B, *spatial)`` float32 without gradient.

    Args:
        loss: a registered loss name (built with ``get_loss(loss, reduction="none", **params)``)
            or a loss module from ``get_loss``.
        logits: raw network outputs ``(B, C, *spatial)``, 2D or 3D.
        target: labels ``(B, *spatial)`` / ``(B, 1, *spatial)`` or one-hot ``(B, C, *spatial)``.
        kind: ``"gradient"``: ``sum_c |dL/dlogit_c|`` (autograd; every loss, compounds too):
            the gradient training applies, so what a loss detaches stays constant (pm_dice's
            m, as the paper trains it; the top-k masks), unlike finite differences of the value.
            The per-image loss is differentiated, so a map does not depend on the batch size
            (a module from ``get_loss`` is differentiated with ``reduction="sum"``: the sum
            of the per-image losses, a ``batch_dice`` term counted once; another module with
            ``reduction="mean"`` is rescaled by B; ``batch_dice=True`` couples the images of
            the batch by definition).
            ``"value"`` (losses from ``get_loss`` only): for pixel-separable losses
            (``pixel_loss``: ce, focal, topk_ce) the per-pixel loss, whose sum over an image
            divided by its valid pixels (multilabel: its valid entries over C) is that image's
            loss (topk_ce: the CE of the kept
            pixels, 0 elsewhere; with ``normalize="selected"`` divide by the kept count).
            A region loss (a ratio of sums) has no per-pixel share: its map is the per-pixel
            error of :func:`error_map`, which does not add up to the loss and takes none of
            the loss's settings except pm_dice's modulating term (tversky, generalized_dice,
            topk_dice, combo, ... give dice's map). Compounds: the weighted sum of the
            components' maps (a CE in nats plus an error in [0, 1]).
        **params: loss parameters, only with a loss name.
    """
    if kind not in MAP_KINDS:
        raise ValueError(f"kind: expected one of {list(MAP_KINDS)}, got {kind!r}")
    _check_inputs("logits", logits, target, "floating point (B, C, *spatial)")
    module = _resolve_loss(loss, params)
    x = logits.detach().float()
    if kind == "value":
        with torch.no_grad():
            return _value_map(module, x, target).detach().float()
    x = x.requires_grad_(True)  # detach() made a new leaf: the caller's tensor is untouched
    if isinstance(module, SegLoss | CompoundLoss) and module.reduction != "sum":
        # the sum of the per-image losses, each batch_dice term once (the sum of the (B,)
        # vector of "none" counts it B times next to a per-image CE; a rescaling of the mean
        # by B would count a batch_dice loss alone B times)
        module = copy.copy(module)  # a shallow copy: the caller's module keeps its reduction
        module.reduction = "sum"
    with torch.enable_grad():
        out = module(x, target)
        # Sum of per-image losses: image b's gradient is the gradient of its own loss.
        total = out.sum() if out.ndim else out
        if out.ndim == 0 and getattr(module, "reduction", None) == "mean":
            total = total * x.shape[0]
        (grad,) = torch.autograd.grad(total, x)
    # the gradient is a fresh tensor: take |.| in place when it is a plain one (not a view)
    return (grad.abs_() if grad.is_contiguous() else grad.abs()).sum(1)
