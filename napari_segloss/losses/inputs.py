"""The one place where loss inputs are checked and converted.

Every loss in :mod:`napari_segloss.losses` calls :func:`prepare` and then works on float32
probabilities, their complements, float32 targets of the same shape and an optional float32
validity mask.

Conventions:

* ``logits`` ``(B, C, *spatial)``; ``C == 1`` is a binary problem (sigmoid), ``C >= 2`` is
  multi-class (softmax) unless ``mode="multilabel"`` (sigmoid per channel).
* Binary outputs are expanded to two channels ``[1 - p, p]`` (background, foreground) so that
  the Dice-family "mean over classes including background" of the PM-Dice paper (eq. 4) holds.
* Targets: integer labels ``(B, *spatial)`` / ``(B, 1, *spatial)`` or one-hot / soft
  ``(B, C, *spatial)``. For binary outputs any ``(B, *spatial)`` / ``(B, 1, *spatial)`` target
  is the foreground probability (labels 0/1 or soft values in [0, 1]).
* ``ignore_index`` becomes a float mask that multiplies every sum, so ignored pixels contribute
  nothing without boolean indexing (no host-device synchronisation).
* ``1 - p`` is never formed by subtraction: in float32 it is 0 for ``p > 1 - 6e-8`` (a logit
  margin above about 17), which erases the modulating term of PM Dice, the focal factor and the
  false negatives of a confident prediction. :attr:`Prepared.complement` takes it from the
  other classes' share (softmax) or ``sigmoid(-x)``.

Shape checks always run. Value checks (label range, NaN/Inf logits, soft targets in [0, 1])
run only when ``validate=True``; they are the only code here that synchronises with the device.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

MODES = ("auto", "binary", "multiclass", "multilabel")
REDUCTIONS = ("mean", "sum", "none")


class cached_property:
    """Lock-free cached property: functools' version (Python 3.11) takes an RLock, which
    ``torch.compile`` (dynamo) cannot trace."""

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn = fn
        self.name = fn.__name__
        self.__doc__ = fn.__doc__

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        cache = obj.__dict__
        if self.name not in cache:
            cache[self.name] = self.fn(obj)
        return cache[self.name]


def _shape(t: Tensor) -> str:
    return "(" + ", ".join(str(s) for s in t.shape) + ")"


def other_share(p: Tensor) -> Tensor:
    """``1 - p`` along dim 1 of softmax probabilities, as the sum of the other channels.

    ``1 - p_c`` by subtraction is 0 in float32 once ``p_c > 1 - 6e-8``; the other channels'
    probabilities are small but exact, so their sum keeps the complement to float32
    precision. Few channels: one sum of channel slices per channel (cheaper than two
    cumulative sums, forward and backward); many: exclusive prefix + suffix sums."""
    k = p.shape[1]
    if k == 2:
        return p.flip(1)
    if k <= _SLICE_SUM_MAX_CHANNELS:
        channels = p.unbind(1)
        rest = [sum(channels[j] for j in range(k) if j != c) for c in range(k)]
        return torch.stack(rest, dim=1)
    zero = torch.zeros_like(p.narrow(1, 0, 1))
    before = torch.cat([zero, p.narrow(1, 0, k - 1).cumsum(1)], dim=1)
    after = torch.cat([p.narrow(1, 1, k - 1).flip(1).cumsum(1).flip(1), zero], dim=1)
    return before + after


#: up to this many channels :func:`other_share` sums channel slices directly
_SLICE_SUM_MAX_CHANNELS = 6


def power(base: Tensor, exponent: float | Tensor) -> Tensor:
    """``base ** exponent`` for a float or a broadcastable tensor of exponents, with the cheap
    kernels for 0, 1 and 2 (``0 ** 0 == 1``, as eq. 5 needs for gamma = 0)."""
    if isinstance(exponent, Tensor):
        return base.pow(exponent)
    if exponent == 0.0:
        return torch.ones_like(base)
    if exponent == 1.0:
        return base
    return base.square() if exponent == 2.0 else base.pow(exponent)


def log1p(z: Tensor) -> Tensor:
    """``log(1 + z)`` for ``z > -1`` to float32 precision, from the vectorised ``log``.

    ``u = 1 + z`` is rounded; ``log(u) - ((u - 1) - z) / u`` removes that rounding error to
    first order (``u - 1`` is exact for the ``z`` in [-1/2, 1] the losses pass), and gives ``z``
    where ``u`` rounds to 1. torch's CPU ``log1p`` kernel is several times slower than ``log``
    (benchmarks/RESULTS.md)."""
    u = 1.0 + z
    return torch.log(u) - ((u - 1.0) - z) / u


SECOND_ORDER_HELP = (
    "this loss's gradient on integer labels is written by hand and is first-order only: "
    "double backward (create_graph=True, e.g. a gradient penalty) would silently miss its "
    "second-order terms. Pass a one-hot target (F.one_hot(labels, C).movedim(-1, 1).float()) "
    "for plain autograd"
)


def first_order_only(backward: Callable[..., Any]) -> Callable[..., Any]:
    """``once_differentiable`` that also refuses ``create_graph=True``: when the incoming
    gradient is a constant (a mean of per-pixel values), ``once_differentiable`` returns a
    gradient that silently does not depend on the logits, and a gradient penalty built on it
    added nothing."""
    inner = once_differentiable(backward)

    @functools.wraps(backward)
    def guarded(ctx: Any, *grads: Any) -> Any:
        if torch.is_grad_enabled():  # only under create_graph=True
            raise RuntimeError(SECOND_ORDER_HELP)
        return inner(ctx, *grads)

    return guarded


class _LogSigmoid(torch.autograd.Function):
    """``log sigmoid(x) = min(x, 0) - log1p(exp(-|x|))`` from vectorised operations (torch's
    CPU ``log_sigmoid`` kernel is scalar code); the gradient is ``sigmoid(-x)``."""

    @staticmethod
    def forward(ctx, x):  # type: ignore[override]
        ctx.save_for_backward(x)
        return x.clamp_max(0.0).sub_(log1p(torch.exp(-x.abs())))

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: differentiable through x, exactly
            return sigmoid_pair(x)[1] * g  # (autograd's sigmoid backward rounds 1 - q to 0)
        return torch.sigmoid(-x).mul_(g)


class _SigmoidPair(torch.autograd.Function):
    """``(sigmoid(x), sigmoid(-x))`` with the gradient ``p q`` from both exact halves:
    autograd's ``sigmoid`` backward forms ``p (1 - p)``, 0 in float32 once ``p`` rounds to 1
    (logit 17 and more), so a confidently wrong pixel got a gradient 1e9 times too small, and
    the smallest of the image instead of the largest."""

    @staticmethod
    def forward(ctx, x):  # type: ignore[override]
        p, q = torch.sigmoid(x), torch.sigmoid(-x)
        ctx.save_for_backward(p, q)
        return p, q

    @staticmethod
    def backward(ctx, g_p, g_q):  # type: ignore[override]
        p, q = ctx.saved_tensors  # differentiable: create_graph=True works through it
        g = g_p if g_q is None else (-g_q if g_p is None else g_p - g_q)
        return p * q * g


class _TwoClassSoftmax(torch.autograd.Function):
    """``softmax(x, 1)`` of two channels with the gradient ``p_0 p_1 (g_1 - g_0)`` (minus it
    for channel 0): autograd's ``p g - p sum p g`` cancels to 0 once a confidently wrong
    ``p`` rounds to 1, where both ``p_0`` and ``p_1`` are still exact."""

    @staticmethod
    def forward(ctx, x):  # type: ignore[override]
        p = torch.softmax(x, dim=1)
        ctx.save_for_backward(p)
        return p

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        (p,) = ctx.saved_tensors  # differentiable: create_graph=True works through it
        p0, p1 = p.unbind(1)
        g0, g1 = g.unbind(1)
        d = p0 * p1 * (g1 - g0)
        return torch.stack([-d, d], dim=1)


def sigmoid_pair(x: Tensor) -> tuple[Tensor, Tensor]:
    """``(sigmoid(x), sigmoid(-x))``, each exact, with an exact gradient (:class:`_SigmoidPair`)."""
    return _SigmoidPair.apply(x)


def log_sigmoid(x: Tensor) -> Tensor:
    """``log(sigmoid(x))``, accurate for any float32 ``x`` (``-exp(-x)`` for large ``x``)."""
    return _LogSigmoid.apply(x)


def at_least(x: Tensor, threshold: float) -> Tensor:
    """The float 0/1 mask ``x >= threshold`` by arithmetic: ``sign(x - threshold) + 1``
    clamped at 1 (exact for every finite ``x``, subnormal differences included). A boolean
    mask with ``torch.where`` costs several times more on CPU; arithmetic masks also blend two
    finite branches exactly (``1 a + 0 b = a``)."""
    return torch.sub(x, threshold).sign_().add_(1.0).clamp_max_(1.0)


def log_prob_from_complement(log_p: Tensor, complement: Tensor) -> Tensor:
    """``log p`` accurate near ``p = 1``: ``log1p(-(1 - p))`` where the complement is below
    1/2, else ``log_p`` (a log-softmax, exact for small ``p`` but rounded to 0 near 1)."""
    far = at_least(complement, 0.5)
    # the clamp keeps the unused branch finite, so its zero weight gives 0 (not 0 * inf)
    near = log1p(-complement.clamp_max(0.5))
    return near.mul(1.0 - far).add_(log_p * far)


class BinaryParts(NamedTuple):
    """The one channel of a binary problem, all (B, 1, *spatial) float32: target ``y`` (hard
    labels as 0/1 or soft values; 0 at ignored pixels), ``p = sigmoid(x)``, its complement
    ``q = sigmoid(-x)`` and the validity mask (None without ``ignore_index``). The background
    class is ``(1 - y, q)``: the two classes share the error ``|y - p|``."""

    target: Tensor
    prob: Tensor
    complement: Tensor
    valid: Tensor | None


class LabelProbs(NamedTuple):
    """Region probabilities of hard-label inputs split at each pixel's label, flattened to
    ``N`` pixels; all zero at ignored pixels.

    Attributes:
        label_prob: ``p_y`` (B, 1, N), the probability of the labelled class.
        label_complement: ``1 - p_y`` (B, 1, N), the other classes' share (no cancellation).
        off_label: (B, K, N) the probabilities with the label entry set to 0.
        labels: (B, 1, N) int64 labels (ignored pixels hold 0).
        valid: (B, 1, N) 0/1 float mask, or None without ``ignore_index``.
        entry: (B * N,) int64 flat index of each pixel's label entry in a (B, K, N) tensor.
        class_entry: (B * N,) int64 flat index of each pixel's class in a (B, K) tensor.
    """

    label_prob: Tensor
    label_complement: Tensor
    off_label: Tensor
    labels: Tensor
    valid: Tensor | None
    entry: Tensor
    class_entry: Tensor


def label_entries(labels: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """Flat indices ``(entry, class_entry)`` of (B, 1, N) int64 labels: of the label entry in
    a (B, K, N) tensor and of the label class in a (B, K) tensor, each (B * N,).

    index_select / index_fill_ on these run several times faster on CPU than gather /
    scatter along the class axis."""
    b, _, n = labels.shape
    flat = labels.view(b, n)
    pixel_base, image_base = _entry_bases(b, num_classes, n, labels.device)
    entry = torch.add(pixel_base, flat, alpha=n).view(-1)
    return entry, torch.add(image_base, flat).view(-1)


def _entry_bases(b: int, k: int, n: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """``(b * k * n + i)`` (B, N) and ``(b * k)`` (B, 1) as int64: the parts of the flat
    indices that depend on the shape only (cached: a training loop repeats its shapes)."""
    key = (b, k, n, device)
    cached = None if torch.compiler.is_compiling() else _ENTRY_BASES.get(key)
    if cached is not None:
        return cached
    image = torch.arange(b, device=device).view(b, 1)
    bases = (image * (k * n) + torch.arange(n, device=device), image * k)
    if not torch.compiler.is_compiling():  # dynamo bakes shapes in; nothing to cache there
        if len(_ENTRY_BASES) >= 8:
            _ENTRY_BASES.pop(next(iter(_ENTRY_BASES)))
        _ENTRY_BASES[key] = bases
    return bases


_ENTRY_BASES: dict[tuple[int, int, int, torch.device], tuple[Tensor, Tensor]] = {}


class Prepared:
    """Converted inputs of one loss call (all float32).

    Region channels (``probs``, ``complement``, ``target``, ``valid``), ``K`` of them:
      binary: 2 (``[1 - p, p]``); multiclass: C; multilabel: C (no background channel).

    Pixel channels (``pix_*``) are what per-pixel losses sum over: binary and multiclass use
    the region channels; multilabel interleaves ``[1 - p_c, p_c]`` for every label ``c`` so
    each label is its own binary problem (``pix_div = C`` averages over labels).
    """

    def __init__(
        self,
        logits: Tensor,
        target: Tensor | None,
        valid: Tensor | None,
        mode: str,
        labels: Tensor | None = None,
    ) -> None:
        self.logits = logits  # float32 (B, C, *sp)
        self.valid = valid  # float32 (B, 1|K, *sp) or None
        self.mode = mode
        #: hard integer labels (B, 1, *sp) with ignored pixels set to 0, when the target was
        #: given as labels (binary or multiclass); lets region losses skip the one-hot tensor
        self.labels = labels
        if target is not None:
            self.__dict__["target"] = target
        elif labels is None:
            raise ValueError("Prepared needs a target or labels")
        self.spatial_dims = tuple(range(2, logits.ndim))

    @cached_property
    def target(self) -> Tensor:
        """float32 one-hot/soft target (B, K, *sp), zero at ignored pixels."""
        assert self.labels is not None
        k = self.num_channels
        classes = torch.arange(k, device=self.labels.device).view(
            1, k, *([1] * (self.logits.ndim - 2))
        )
        # comparison instead of F.one_hot: no value check / sync
        y = (self.labels == classes).float()
        return y * self.valid if self.valid is not None else y

    # ----- region channels -------------------------------------------------------------
    @cached_property
    def probs(self) -> Tensor:
        x = self.logits
        if self.mode == "multiclass" and x.shape[1] == 2:
            return _TwoClassSoftmax.apply(x)
        if self.mode == "multiclass":
            return torch.softmax(x, dim=1)
        if self.mode == "binary":
            return torch.cat(self._sigmoids[::-1], dim=1)
        return self._sigmoids[0]

    @cached_property
    def _sigmoids(self) -> tuple[Tensor, Tensor]:
        """``(sigmoid(x), sigmoid(-x))`` of binary and multilabel logits, once per call."""
        return sigmoid_pair(self.logits)

    @cached_property
    def complement(self) -> Tensor:
        """``1 - probs`` of every region channel, without cancellation (see module doc)."""
        if self.mode == "multiclass":
            return other_share(self.probs)
        if self.mode == "binary":
            return self.probs.flip(1)
        return self._sigmoids[1]

    @cached_property
    def binary(self) -> BinaryParts:
        """The single channel of binary logits (see :class:`BinaryParts`)."""
        assert self.mode == "binary"
        y = self.labels.float() if self.labels is not None else self.target[:, 1:]
        return BinaryParts(y, *self._sigmoids, self.valid)

    @cached_property
    def label_probs(self) -> LabelProbs:
        """The hard-label split of the region probabilities (integer-label targets only)."""
        assert self.labels is not None
        b, k = self.logits.shape[0], self.num_channels
        p = self.probs.reshape(b, k, -1).contiguous()
        labels = self.labels.reshape(b, 1, -1)
        n = labels.shape[-1]
        v = None if self.valid is None else self.valid.reshape(b, 1, -1)
        entry, class_entry = label_entries(labels, k)
        off = p.clone()
        off.view(-1).index_fill_(0, entry, 0.0)
        label_prob = p.view(-1).index_select(0, entry).view(b, 1, n)
        if v is not None:
            off = off * v
            label_prob = label_prob * v
        q = off.sum(1, keepdim=True)
        return LabelProbs(label_prob, q, off, labels, v, entry, class_entry)

    @property
    def num_channels(self) -> int:
        """Number of region channels K (2 for binary logits)."""
        return 2 if self.mode == "binary" else self.logits.shape[1]

    @property
    def has_background(self) -> bool:
        """Whether region channel 0 is a background class (not in multilabel mode)."""
        return self.mode != "multilabel"

    # ----- pixel channels --------------------------------------------------------------
    @cached_property
    def pix_logp(self) -> Tensor:
        """Log-probabilities of the pixel channels, accurate at both ends of (0, 1)."""
        x = self.logits
        if self.mode == "multiclass":
            return log_prob_from_complement(F.log_softmax(x, dim=1), self.complement)
        if self.mode == "binary":
            return torch.cat([log_sigmoid(-x), log_sigmoid(x)], dim=1)
        return _interleave(log_sigmoid(-x), log_sigmoid(x))

    @cached_property
    def pix_probs(self) -> Tensor:
        if self.mode != "multilabel":
            return self.probs
        return _interleave(self.complement, self.probs)

    @cached_property
    def pix_complement(self) -> Tensor:
        """``1 - pix_probs`` without cancellation."""
        if self.mode != "multilabel":
            return self.complement
        return _interleave(self.probs, self.complement)

    @cached_property
    def pix_target(self) -> Tensor:
        """Targets of the pixel channels, zero at ignored entries."""
        if self.mode != "multilabel":
            return self.target
        # the target is 0 at an ignored entry, so 1 - target would make it a negative
        negative = 1.0 - self.target
        if self.valid is not None:
            negative = negative * self.valid
        return _interleave(negative, self.target)

    @cached_property
    def pix_valid(self) -> Tensor | None:
        """Validity mask broadcastable to the pixel channels."""
        if self.valid is None or self.mode != "multilabel" or self.valid.shape[1] == 1:
            return self.valid
        return self.valid.repeat_interleave(2, dim=1)

    @property
    def pix_div(self) -> int:
        """Divisor that turns the pixel-channel sum into a mean over labels (multilabel)."""
        return self.logits.shape[1] if self.mode == "multilabel" else 1

    @cached_property
    def pix_is_background(self) -> Tensor:
        """Float (P,) vector: 1 for background pixel channels, 0 for foreground ones."""
        n = 2 * self.logits.shape[1] if self.mode == "multilabel" else self.num_channels
        dev = self.logits.device
        if self.mode == "multilabel":
            return (torch.arange(n, device=dev) % 2 == 0).float()
        bg = torch.zeros(n, device=dev)
        bg[0] = 1.0
        return bg

    # ----- pixel counts ----------------------------------------------------------------
    @cached_property
    def scored_images(self) -> Tensor | None:
        """Float 0/1 (B,): the images with at least one valid pixel (None without
        ``ignore_index``). A fully ignored image has no loss to give: the batch mean leaves it
        out, as ``cross_entropy(ignore_index=...)`` averages over the kept pixels only, instead
        of counting a 0 that scaled the other images' loss and gradients down."""
        if self.valid is None:
            return None
        return self.valid.flatten(1).amax(1)

    def valid_count(self) -> Tensor:
        """Divisor of an image's sum of per-pixel values, float32 (B,): its number of valid
        pixels (at least 1, avoids 0/0).

        Multilabel targets are ignored entry by entry and a pixel's value is the sum over its
        valid labels divided by ``C`` (:attr:`pix_div`); the divisor is then the number of valid
        entries over ``C``, so the image's loss is the mean over its valid (pixel, label)
        entries, as ``binary_cross_entropy_with_logits`` averaged over the non-ignored
        elements (the number of pixels with some valid label would count an ignored entry
        as a zero loss)."""
        b = self.logits.shape[0]
        n = self.logits[0, 0].numel()
        if self.valid is None:
            return torch.full((b,), float(n), device=self.logits.device)
        if self.valid.shape[1] == 1:
            return self.valid.flatten(1).sum(1).clamp_min(1.0)
        return self.valid.flatten(1).sum(1).clamp_min(1.0) / self.valid.shape[1]


def _interleave(a: Tensor, b: Tensor) -> Tensor:
    """(B, C, *sp) x 2 -> (B, 2C, *sp) ordered a0, b0, a1, b1, ..."""
    return torch.stack([a, b], dim=2).flatten(1, 2)


def resolve_mode(mode: str, num_channels: int) -> str:
    """Return the effective mode ("binary", "multiclass" or "multilabel") for ``C`` channels."""
    if mode == "auto":
        return "binary" if num_channels == 1 else "multiclass"
    if mode == "binary" and num_channels != 1:
        raise ValueError(
            f"mode='binary' expects logits with 1 channel (B, 1, *spatial), got {num_channels} channels"
        )
    if mode == "multiclass" and num_channels < 2:
        raise ValueError(
            f"mode='multiclass' expects logits with >= 2 channels, got {num_channels}; "
            "use mode='binary' (or 'auto') for a single sigmoid channel"
        )
    return mode


def mask_ignored(t: Tensor, ignore_index: int) -> tuple[Tensor, Tensor]:
    """``(t with the entries equal to ignore_index set to 0, float 0/1 mask of the others)``,
    from one comparison."""
    hit = t == ignore_index
    return torch.where(hit, torch.zeros((), dtype=t.dtype, device=t.device), t), (~hit).float()


def prepare(
    logits: Tensor,
    target: Tensor,
    *,
    mode: str = "auto",
    ignore_index: int | None = None,
    validate: bool = True,
) -> Prepared:
    """Check and convert ``(logits, target)`` into a :class:`Prepared` bundle (float32)."""
    if not isinstance(logits, Tensor) or not isinstance(target, Tensor):
        raise ValueError(
            "logits and target must be torch.Tensor, got "
            f"{type(logits).__name__} and {type(target).__name__}"
        )
    if logits.ndim < 3:
        raise ValueError(
            f"logits must have shape (B, C, *spatial) with one or more spatial dims, got shape {_shape(logits)}"
        )
    if not logits.is_floating_point():
        raise ValueError(f"logits must be a floating point tensor, got dtype {logits.dtype}")
    if logits.numel() == 0:
        raise ValueError(
            f"logits are empty (shape {_shape(logits)}): a loss needs at least one image (B >= 1), "
            "one channel and one pixel"
        )
    b, c = logits.shape[:2]
    spatial = tuple(logits.shape[2:])
    eff = resolve_mode(mode, c)
    x = logits.float()  # float32 from here on: fp16/bf16 sums overflow or lose precision

    if target.device != logits.device:
        raise ValueError(f"target is on {target.device} but logits are on {logits.device}")
    label_shapes = ((b, *spatial), (b, 1, *spatial))
    onehot_shape = (b, c, *spatial)
    tshape = tuple(target.shape)

    valid: Tensor | None = None
    if eff == "binary":
        if tshape not in label_shapes:
            raise ValueError(
                f"binary logits {_shape(logits)} need a target of shape {label_shapes[0]} or "
                f"{label_shapes[1]}, got {_shape(target)}"
            )
        t = target.reshape(b, 1, *spatial)
        if ignore_index is not None:
            t, valid = mask_ignored(t, ignore_index)
        if not t.is_floating_point():  # hard 0/1 labels: keep them as labels
            if validate:
                _check_labels(t, 2, None, "for binary (1-channel) logits")
            if validate:
                _check_finite(x)
            return Prepared(x, None, valid, eff, labels=t.long())
        y = t.float()
        if validate:
            _check_soft(y, valid, "binary target (foreground probability)")
        y = torch.cat([1.0 - y, y], dim=1)
        if valid is not None:
            y = y * valid
    elif eff == "multiclass" and tshape in label_shapes:
        t = target.reshape(b, *spatial)
        if t.is_floating_point():
            if validate and bool((t != t.round()).any()):
                raise ValueError(
                    "label targets of shape (B, *spatial) must hold integer class indices, got "
                    "non-integer float values"
                )
        t = t.long()  # gather/scatter need int64 (uint8 / int32 / bool label maps are common)
        if validate:
            _check_labels(t, c, ignore_index)
            _check_finite(x)
        t = t.unsqueeze(1)
        if ignore_index is not None:
            t, valid = mask_ignored(t, ignore_index)
        return Prepared(x, None, valid, eff, labels=t)
    else:
        if tshape != onehot_shape:
            if eff == "multilabel":
                raise ValueError(
                    f"multilabel logits {_shape(logits)} need a target of the same shape "
                    f"{onehot_shape}, got {_shape(target)}"
                )
            raise ValueError(
                f"target shape {_shape(target)} does not match logits {_shape(logits)}: expected "
                f"labels {label_shapes[0]} or {label_shapes[1]}, or one-hot/soft {onehot_shape}"
            )
        t = target
        if ignore_index is not None and eff == "multiclass" and 0 <= ignore_index <= 1:
            # every one-hot pixel has a 0 and a 1 among its channels: all would be ignored
            raise ValueError(
                f"ignore_index={ignore_index} cannot mark pixels of a one-hot/soft target: 0 "
                "and 1 are target values (every one-hot pixel would be ignored); use a value "
                "outside [0, 1] (e.g. 255) or integer labels (B, *spatial)"
            )
        if ignore_index is not None:
            kept, valid = mask_ignored(t, ignore_index)
            if eff != "multilabel":  # a pixel whose channels carry ignore_index is ignored whole
                valid = valid.amin(dim=1, keepdim=True)
            y = kept.float() * valid
        else:
            y = t.float()
        if validate:
            _check_soft(y, valid, "one-hot/soft target")
            if eff == "multiclass":
                _check_sums(y, valid)

    if validate:
        _check_finite(x)
    return Prepared(x, y, valid, eff)


def _check_finite(x: Tensor) -> None:
    if x.numel() == 0:
        return
    # the sum is finite when every element is, unless it overflowed (then the elements are
    # counted): one read pass, the cheapest one, no boolean copy
    if bool(torch.isfinite(x.sum())):
        return
    n_bad = int((~torch.isfinite(x)).sum())
    if n_bad:
        raise ValueError(f"logits must be finite, got {n_bad} NaN/Inf values")


def _check_labels(t: Tensor, c: int, ignore_index: int | None, what: str = "") -> None:
    if ignore_index is not None:
        t = torch.where(t == ignore_index, torch.zeros((), dtype=t.dtype, device=t.device), t)
    if t.numel() == 0:
        return
    lo, hi = (int(v) for v in torch.aminmax(t))
    if lo < 0 or hi >= c:
        extra = f" (or ignore_index={ignore_index})" if ignore_index is not None else ""
        what = what or f"for {c}-channel logits"
        raise ValueError(
            f"target labels must be in [0, {c - 1}]{extra} {what}, got values in [{lo}, {hi}]"
        )


def _check_sums(y: Tensor, valid: Tensor | None) -> None:
    """A softmax target sums to 1 over its channels at every kept pixel: a binary mask
    ``(B, H, W)`` next to batch-less logits ``(C, H, W)`` read as ``(B, C, W)`` passed the
    [0, 1] check and gave a loss of nothing in particular."""
    if y.numel() == 0:
        return
    sums = y.detach().sum(1)
    if valid is not None:  # ignored pixels are 0 in every channel
        sums = torch.where(valid[:, 0] > 0, sums, torch.ones_like(sums))
    lo, hi = (float(v) for v in torch.aminmax(sums))
    if abs(lo - 1.0) > 1e-3 or abs(hi - 1.0) > 1e-3:
        raise ValueError(
            f"one-hot/soft target of {y.shape[1]}-channel softmax logits must sum to 1 over "
            f"its channels at every pixel, got sums in [{lo:g}, {hi:g}]: logits (B, C, "
            "*spatial) need labels (B, *spatial) or a one-hot target (B, C, *spatial); for a "
            "binary mask and a batch of one, add the batch axis: logits[None]"
        )


def _check_soft(y: Tensor, valid: Tensor | None, what: str) -> None:
    if y.numel() == 0:
        return
    if not bool(torch.isfinite(y.detach()).all()):
        raise ValueError(f"{what} must be finite, got NaN/Inf values")
    lo, hi = (float(v) for v in torch.aminmax(y.detach()))  # a target may require grad
    if lo < 0.0 or hi > 1.0:
        raise ValueError(f"{what} values must be in [0, 1], got values in [{lo:g}, {hi:g}]")
