"""Base classes of the loss library and the checks of their arguments.

``SegLoss`` holds the arguments every loss shares (mode, reduction, ignore_index, validate) and
the call convention: ``forward`` prepares the inputs once (:func:`.inputs.prepare`), asks the
subclass for a per-image loss vector ``(B,)`` (``(1,)`` for ``batch_dice=True``) and reduces it.
``RegionLoss`` adds the Dice-family arguments (include_background, batch_dice, skip_absent, eps)
and the class mean.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from .inputs import MODES, REDUCTIONS, Prepared, prepare


def check_choice(name: str, value: object, allowed: Sequence[object]) -> None:
    """ValueError unless ``value`` is one of ``allowed``."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")


def check_bool(name: str, value: object) -> None:
    """ValueError unless ``value`` is a bool."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be a bool, got {value!r}")


def _as_scalar(value: object) -> object:
    """A one-element 0-d tensor or numpy array as its Python number (``alpha=torch.tensor(0.25)``
    is a scalar, not a list of one per-class value); anything else unchanged."""
    if isinstance(value, Tensor | np.ndarray) and value.ndim == 0:
        return value.item()
    return value


def check_optional_int(name: str, value: object) -> None:
    """ValueError unless ``value`` is an integer (Python or numpy, not a bool) or None."""
    if value is not None and (
        isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Integral)
    ):
        raise ValueError(f"{name} must be an int or None, got {value!r}")


def check_float(
    name: str,
    value: object,
    lo: float | None = None,
    hi: float | None = None,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
) -> float:
    """Validate a real number in [lo, hi] (open ends optional) and return it as float. numpy
    numbers and 0-d tensors count as numbers (values read from arrays or configs)."""
    value = _as_scalar(value)
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    v = float(value)
    lo_bad = lo is not None and (v <= lo if lo_open else v < lo)
    hi_bad = hi is not None and (v >= hi if hi_open else v > hi)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if lo_bad or hi_bad:
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        lo_s = "-inf" if lo is None else f"{lo:g}"
        hi_s = "inf" if hi is None else f"{hi:g}"
        raise ValueError(f"{name} must be in {left}{lo_s}, {hi_s}{right}, got {value!r}")
    return v


def check_float_or_seq(
    name: str, value: object, lo: float | None = None, hi: float | None = None
) -> float | tuple[float, ...]:
    """A float, or a non-empty sequence of floats (one per class), each in [lo, hi]; a 0-d
    tensor or array is a float, a 1-d one a sequence."""
    value = _as_scalar(value)
    if isinstance(value, Tensor):
        value = value.detach().cpu().flatten().tolist()
    elif isinstance(value, np.ndarray):
        value = value.ravel().tolist()
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) == 0:
            raise ValueError(f"{name} must be a float or a non-empty sequence, got {value!r}")
        return tuple(check_float(f"{name}[{i}]", v, lo, hi) for i, v in enumerate(value))
    return check_float(name, value, lo, hi)


def check_per_class(name: str, value: object) -> tuple[float, ...]:
    """A non-empty sequence of non-negative floats (one per class)."""
    v = check_float_or_seq(name, value, 0.0, None)
    if not isinstance(v, tuple):
        raise ValueError(f"{name} must be a sequence with one value per class, got {value!r}")
    return v


def reduce(per_image: Tensor, reduction: str, scored: Tensor | None = None) -> Tensor:
    """Apply ``reduction`` ("mean", "sum" or "none") to a per-image loss vector. ``scored``:
    0/1 (B,) of the images that have a loss (:attr:`.inputs.Prepared.scored_images`), the
    only ones "mean" averages over (0 when there is none)."""
    if reduction == "mean":
        if scored is not None:
            return (per_image * scored).sum() / scored.sum().clamp_min(1.0)
        return per_image.mean()
    if reduction == "sum":
        return per_image.sum()
    return per_image


def sum_terms(terms: Sequence[Tensor]) -> Tensor:
    """The per-image vector of a loss given as terms (B,) or (1,): a batch term (1,) is
    broadcast to every image."""
    total = terms[0]
    for t in terms[1:]:
        total = total + t
    return total


def reduce_terms(terms: Sequence[Tensor], reduction: str, scored: Tensor | None = None) -> Tensor:
    """Reduce a loss that is a sum of terms, each per image (B,) or one per batch (1,), a
    ``batch_dice`` term.

    "sum" adds the sum over the images of the per-image terms and each batch term once: the
    same as reducing each term as the loss alone would and adding the results (MONAI's
    ``DiceCELoss(batch=True, reduction="sum")`` does so), so a compound is the sum of its
    components whatever the batch size. "mean" is the mean of :func:`sum_terms` (a batch term
    counts once there too), over the ``scored`` images (see :func:`reduce`); "none" is
    :func:`sum_terms` itself (0 for a fully ignored image)."""
    if len(terms) == 1 or reduction != "sum":
        return reduce(sum_terms(terms), reduction, scored)
    images = [t for t in terms if t.numel() != 1]
    batch = [t for t in terms if t.numel() == 1]  # with B = 1 both kinds land here: same sum
    total = reduce(sum_terms(images), "sum") if images else None
    for t in batch:
        total = t.sum() if total is None else total + t.sum()
    assert total is not None
    return total


class SegLoss(nn.Module):
    """Common base: argument validation, input preparation and reduction.

    Args:
        mode: "auto" (C == 1 binary, C >= 2 multiclass softmax), "binary", "multiclass" or
            "multilabel" (sigmoid per channel, each channel its own binary problem).
        reduction: "mean" (default) | "sum" | "none" (per-image vector (B,), or (1,) with
            ``batch_dice=True``), for every loss so compounds can be added. "mean" leaves out
            an image whose pixels are all ``ignore_index`` (it has no loss of its own; "none"
            gives it 0, plus a ``batch_dice`` term where the loss has one). A loss that adds
            a per-image term (CE, focal) to a ``batch_dice`` term (combo, the focal mixtures,
            compounds) gives (B,) with the batch term in every entry for "none"; "mean" and
            "sum" count the batch term once, as the term alone would (see
            :func:`reduce_terms`).
        ignore_index: label value whose pixels contribute nothing (``None``: no ignoring).
        validate: run value checks (label range, NaN/Inf logits, soft targets in [0, 1]).
            With ``validate=False`` ``forward`` has no host-device synchronisation, and
            ``torch.compile(..., fullgraph=True)`` traces it (the checks read values back);
            labels must then be in range (the training data path checks the masks when it
            reads them): an out-of-range label gives an IndexError or a wrong value.

    Every loss computes in float32, whatever the logits' dtype (float16, bfloat16 and float64
    alike), and returns float32: half-precision sums overflow, and the precision of ``1 - p``
    comes from the other classes' share rather than from wider floats. ``gradcheck`` therefore
    needs a float32 step (``eps=1e-3``).
    """

    #: losses with a per-pixel value (``pixel_loss``) set this to True
    pixel_separable: bool = False
    #: base-class parameters a subclass fixes itself (not accepted by ``get_loss``)
    fixed_params: tuple[str, ...] = ()

    def __init__(
        self,
        *,
        mode: str = "auto",
        reduction: str = "mean",
        ignore_index: int | None = None,
        validate: bool = True,
    ) -> None:
        super().__init__()
        check_choice("mode", mode, MODES)
        check_choice("reduction", reduction, REDUCTIONS)
        check_optional_int("ignore_index", ignore_index)
        check_bool("validate", validate)
        self.mode = mode
        self.reduction = reduction
        self.ignore_index = None if ignore_index is None else int(ignore_index)  # type: ignore[call-overload]
        self.validate = validate

    def prepare(self, logits: Tensor, target: Tensor) -> Prepared:
        """Check and convert ``(logits, target)`` (see :func:`.inputs.prepare`)."""
        return prepare(
            logits, target, mode=self.mode, ignore_index=self.ignore_index, validate=self.validate
        )

    def per_image(self, inp: Prepared) -> Tensor:  # pragma: no cover - abstract
        """The loss of every image, (B,) float32 ((1,) for a batch-level loss)."""
        raise NotImplementedError

    def loss_terms(self, inp: Prepared) -> tuple[Tensor, ...]:
        """The loss as a sum of terms, each (B,) per image or (1,) per batch; a loss that
        mixes a per-image and a ``batch_dice`` term returns both (see :func:`reduce_terms`)."""
        return (self.per_image(inp),)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        inp = self.prepare(logits, target)
        return reduce_terms(self.loss_terms(inp), self.reduction, inp.scored_images)

    def extra_repr(self) -> str:
        keys = [k for k in self.__dict__ if not k.startswith("_") and k != "training"]
        return ", ".join(f"{k}={getattr(self, k)!r}" for k in keys)


class PixelLoss(SegLoss):
    """A loss that is a mean of per-pixel values (CE family): provides ``pixel_loss``."""

    pixel_separable = True

    def pixel_map(self, inp: Prepared) -> Tensor:  # pragma: no cover - abstract
        """Per-pixel loss (B, *spatial), zero at ignored pixels."""
        raise NotImplementedError

    def pixel_loss(self, logits: Tensor, target: Tensor) -> Tensor:
        """Per-pixel loss values ``(B, *spatial)`` (0 at ignored pixels) for contribution maps."""
        return self.pixel_map(self.prepare(logits, target))

    def per_image(self, inp: Prepared) -> Tensor:
        # eq. 1 normalises by N, the number of (valid) pixels of the image
        return self.pixel_map(inp).flatten(1).sum(1) / inp.valid_count()


class RegionLoss(SegLoss):
    """Base of the Dice/Tversky family (PM-Dice paper eq. 4 conventions).

    Args (in addition to :class:`SegLoss`):
        include_background: keep class channel 0 (background; ``1 - p`` for binary) in the class
            mean. No meaning in multilabel mode (there is no background channel).
        batch_dice: sum over the whole batch before the ratio (one score per batch) instead of
            one score per image.
        skip_absent: PM-Dice eq. 4 text: "C is the number of classes which are present in the
            image including the background class". True (default): classes with
            ``sum_i y_ic == 0`` in the image (batch with ``batch_dice``) leave the class mean;
            an image where no class enters has loss 0. False: mean over all classes (MONAI/smp).
        eps: smoothing added to numerator and denominator (default 1e-6).
    """

    def __init__(
        self,
        *,
        include_background: bool = True,
        batch_dice: bool = False,
        skip_absent: bool = True,
        eps: float = 1e-6,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        check_bool("include_background", include_background)
        check_bool("batch_dice", batch_dice)
        check_bool("skip_absent", skip_absent)
        self.include_background = include_background
        self.batch_dice = batch_dice
        self.skip_absent = skip_absent
        self.eps = check_float("eps", eps, 0.0, 1.0)

    def batch_sum(self, *sums: Tensor) -> tuple[Tensor, ...]:
        """Per-image (B, K) sums, summed over the batch to (1, K) with ``batch_dice``."""
        if not self.batch_dice:
            return sums
        return tuple(s.sum(0, keepdim=True) for s in sums)

    def drops_background(self, inp: Prepared) -> bool:
        """Whether class channel 0 is a background the settings leave out of the class mean."""
        return inp.has_background and not self.include_background

    def class_weights(self, inp: Prepared, y_sum: Tensor) -> Tensor:
        """0/1 float weights (B|1, K) of the classes that enter the class mean: all but the
        background without ``include_background``, and with ``skip_absent`` only the
        classes present (``y_sum > 0``)."""
        w = torch.ones(inp.num_channels, device=inp.logits.device)
        if self.drops_background(inp):
            w[0] = 0.0
        w = w.unsqueeze(0)
        if self.skip_absent:
            w = w * (y_sum > 0).float()
        return w

    def class_mean(self, per_class: Tensor, weights: Tensor) -> Tensor:
        """Weighted mean over classes (B|1, K) -> (B|1,); 0 when no class enters."""
        w = weights.expand_as(per_class)
        return (per_class * w).sum(1) / w.sum(1).clamp_min(1.0)


class AllClassesRegionLoss(RegionLoss):
    """A :class:`RegionLoss` whose class mean takes every class (``skip_absent`` fixed False)."""

    fixed_params = ("skip_absent",)

    def __init__(
        self,
        *,
        include_background: bool = True,
        batch_dice: bool = False,
        eps: float = 1e-6,
        **kwargs: object,
    ) -> None:
        super().__init__(
            include_background=include_background,
            batch_dice=batch_dice,
            skip_absent=False,
            eps=eps,
            **kwargs,
        )
