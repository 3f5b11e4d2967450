"""Loss landscapes: controlled-error predictions and loss surfaces around trained weights.

Two complementary views of a segmentation loss (used by the Jupyter notebooks 01-03):

* **Prediction space** — the loss as a function of *controlled* prediction errors: a fixed
  ground truth, and predictions with a requested fraction of false negatives / false
  positives, a requested confidence, an object of a requested size, or a boundary moved by a
  requested number of pixels, or a correct object with an uncertain boundary
  (:func:`controlled_prediction`, :func:`disk_target`, :func:`boundary_shift`,
  :func:`soft_boundary_prediction`, :func:`loss_grid`, :func:`logit_gradient`).
* **Parameter space** — the loss of a trained network evaluated on a plane through its weights
  spanned by two *filter-normalised* random directions (Li, Xu, Taylor, Studer & Goldstein,
  "Visualizing the Loss Landscape of Neural Nets", NeurIPS 2018, sec. 4):
  ``f(a, b) = L(theta + a * d1 + b * d2)`` where every filter ``d_ij`` of a Gaussian direction is
  rescaled to the norm of the matching filter of the weights, ``d_ij <- d_ij / ||d_ij|| *
  ||theta_ij||`` (:func:`filter_normalized_direction`, :func:`loss_surface`).

Pure numpy/scipy/torch: no Qt, no napari.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from .maps import probabilities_to_logits

__all__ = [
    "LossSurface",
    "as_logits",
    "boundary_shift",
    "controlled_prediction",
    "disk_target",
    "evaluate_losses",
    "filter_normalized_direction",
    "logit_gradient",
    "loss_grid",
    "loss_surface",
    "random_directions",
    "soft_boundary_prediction",
]


# --------------------------------------------------------------------------------------------
# argument checks
# --------------------------------------------------------------------------------------------
def _binary_target(target: np.ndarray | torch.Tensor, name: str = "target") -> np.ndarray:
    """Return ``target`` as a boolean numpy array, rejecting anything that is not 0/1."""
    arr = target.detach().cpu().numpy() if isinstance(target, torch.Tensor) else np.asarray(target)
    if arr.ndim not in (2, 3):
        raise ValueError(
            f"{name} must be a 2D or 3D binary mask, got an array of shape {arr.shape}"
        )
    if arr.dtype != bool:
        values = np.unique(arr)
        if not np.isin(values, (0, 1)).all():
            raise ValueError(
                f"{name} must be binary (values 0/1), got values {values[:6].tolist()}"
                + (" ..." if values.size > 6 else "")
            )
    return arr.astype(bool)


def _check_fraction(value: float, name: str, *, upper: float | None = 1.0) -> float:
    value = float(value)
    if not np.isfinite(value) or value < 0 or (upper is not None and value > upper):
        bound = f"[0, {upper}]" if upper is not None else ">= 0"
        raise ValueError(f"{name} must be a number in {bound}, got {value!r}")
    return value


def _check_probability(value: float, name: str) -> float:
    value = float(value)
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must be strictly between 0 and 1, got {value!r}")
    return value


# --------------------------------------------------------------------------------------------
# prediction space
# --------------------------------------------------------------------------------------------
def disk_target(
    shape: Sequence[int], fraction: float, center: Sequence[float] | None = None
) -> np.ndarray:
    """A disk (2D) or ball (3D) mask covering ``round(fraction * N)`` pixels exactly.

    The pixels nearest to ``center`` (default: the image centre) are taken, so the object is
    the best digital disk of that area and its size is exact: this is the "object size / class
    imbalance" axis of the prediction-space landscapes.

    Args:
        shape: (H, W) or (D, H, W).
        fraction: foreground fraction of the image, in (0, 1].
        center: optional centre in pixel coordinates.

    Returns:
        Boolean array of ``shape``.
    """
    if np.ndim(shape) != 1:  # disk_target(64, 0.1): a bare TypeError before
        raise ValueError(f"shape must be (H, W) or (D, H, W), got {shape!r}")
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise ValueError(f"shape must be 2 or 3 positive sizes, got {shape}")
    fraction = _check_fraction(fraction, "fraction")
    n_total = int(np.prod(shape))
    count = round(fraction * n_total)
    if count < 1:
        raise ValueError(
            f"fraction must cover at least one pixel of a {shape} image, got {fraction!r}"
        )
    if center is None:
        center = [(s - 1) / 2.0 for s in shape]
    if len(center) != len(shape):
        raise ValueError(f"center must have {len(shape)} coordinates, got {len(center)}")
    grids = np.meshgrid(*[np.arange(s, dtype=np.float64) for s in shape], indexing="ij")
    dist2 = sum((g - c) ** 2 for g, c in zip(grids, center, strict=True))
    # stable sort: ties (same radius) are broken by raster order, deterministic.
    order = np.argsort(dist2.ravel(), kind="stable")
    mask = np.zeros(n_total, dtype=bool)
    mask[order[:count]] = True
    return mask.reshape(shape)


def boundary_shift(target: np.ndarray | torch.Tensor, shift: float) -> np.ndarray:
    """Move the object boundary of a binary mask by ``shift`` pixels (Euclidean).

    ``shift > 0`` grows the object by every background pixel within ``shift`` of it (a
    Euclidean dilation, so the added pixels are all false positives); ``shift < 0`` shrinks it
    to the pixels deeper than ``|shift|`` (erosion, all false negatives). ``shift = 0``
    returns the mask unchanged. Distances are between pixel centres.
    """
    mask = _binary_target(target)
    shift = float(shift)
    if not np.isfinite(shift):
        raise ValueError(f"shift must be a finite number of pixels, got {shift!r}")
    if shift == 0 or not mask.any() or mask.all():
        return mask.copy()
    if shift > 0:
        outside = ndimage.distance_transform_edt(~mask)
        return mask | (outside <= shift)
    inside = ndimage.distance_transform_edt(mask)
    return mask & (inside > -shift)


def _pick(
    candidates: np.ndarray, count: int, rank: np.ndarray | None, rng: np.random.Generator
) -> np.ndarray:
    """Flat indices of ``count`` pixels among ``candidates`` (lowest ``rank`` first)."""
    idx = np.flatnonzero(candidates)
    if count == 0:
        return idx[:0]
    jitter = rng.random(idx.size)
    if rank is None:
        order = np.argsort(jitter, kind="stable")
    else:
        # ties (same distance to the boundary) are broken at random but reproducibly.
        order = np.lexsort((jitter, rank.ravel()[idx]))
    return idx[order[:count]]


def controlled_prediction(
    target: np.ndarray | torch.Tensor,
    *,
    fn_fraction: float = 0.0,
    fp_fraction: float = 0.0,
    confidence: float = 0.9,
    fp_reference: Literal["foreground", "background"] = "foreground",
    order: Literal["boundary", "random"] = "boundary",
    seed: int = 0,
) -> np.ndarray:
    """Foreground probabilities for ``target`` with an exactly controlled amount of error.

    * ``round(fn_fraction * |fg|)`` foreground pixels are missed (false negatives), i.e. the
      recall of the thresholded prediction is ``1 - fn_fraction``.
    * ``round(fp_fraction * |ref|)`` background pixels are predicted as foreground (false
      positives), where ``|ref|`` is the foreground size (``fp_reference="foreground"``, the
      default: ``fp_fraction = 1`` adds as many false positives as the object has pixels,
      which keeps the axis meaningful at any class imbalance) or the background size
      (``"background"``: the false-positive rate).
    * Pixels predicted as foreground get probability ``confidence``; the others
      ``1 - confidence``. So ``confidence`` > 0.5 is a confidently wrong/right prediction and
      0.5 is maximal uncertainty.

    ``order="boundary"`` takes the errors where real networks make them: false negatives from
    the object boundary inwards (an erosion) and false positives from the boundary outwards
    (a dilation); ``"random"`` scatters them uniformly. Ties are broken with ``seed``.

    Args:
        target: binary 2D or 3D ground-truth mask.

    Returns:
        float32 array of the target's shape with the foreground probability of every pixel.
    """
    mask = _binary_target(target)
    fn_fraction = _check_fraction(fn_fraction, "fn_fraction")
    confidence = _check_probability(confidence, "confidence")
    if confidence < 0.5:  # every pixel's prediction flipped: an "error-free" one all wrong
        raise ValueError(
            f"confidence must be in [0.5, 1) (the probability of the predicted class), got "
            f"{confidence!r}"
        )
    if fp_reference not in ("foreground", "background"):
        raise ValueError(f"fp_reference must be 'foreground' or 'background', got {fp_reference!r}")
    if order not in ("boundary", "random"):
        raise ValueError(f"order must be 'boundary' or 'random', got {order!r}")
    fp_fraction = _check_fraction(
        fp_fraction, "fp_fraction", upper=1.0 if fp_reference == "background" else None
    )
    n_fg = int(mask.sum())
    n_bg = mask.size - n_fg
    n_fn = round(fn_fraction * n_fg)
    n_fp = round(fp_fraction * (n_fg if fp_reference == "foreground" else n_bg))
    if n_fp > n_bg:
        raise ValueError(
            f"fp_fraction={fp_fraction!r} asks for {n_fp} false positives but the target has "
            f"only {n_bg} background pixels"
        )
    rng = np.random.default_rng(seed)
    if order == "boundary":
        rank_fg = ndimage.distance_transform_edt(mask) if n_fn else None
        rank_bg = ndimage.distance_transform_edt(~mask) if n_fp and n_fg else None
    else:
        rank_fg = rank_bg = None
    predicted = mask.ravel().copy()
    predicted[_pick(mask, n_fn, rank_fg, rng)] = False
    predicted[_pick(~mask, n_fp, rank_bg, rng)] = True
    probs = np.where(predicted, confidence, 1.0 - confidence).astype(np.float32)
    return probs.reshape(mask.shape)


def soft_boundary_prediction(
    target: np.ndarray | torch.Tensor, width: float = 1.0, confidence: float = 0.99
) -> np.ndarray:
    """A correct but boundary-uncertain prediction: a sigmoid of the signed boundary distance.

    ``p = (1 - c) + (2c - 1) * sigmoid(s / width)`` where ``s`` is the signed Euclidean distance
    to the object boundary (positive inside; the pixels on either side of the boundary sit at
    +-0.5) and ``c = confidence``. Deep inside ``p -> c``, far outside ``p -> 1 - c``, and the
    ``width`` (pixels) sets how many pixels around the boundary are uncertain — what a trained
    network typically outputs for an object it has found.

    Returns:
        float32 foreground probabilities of the target's shape.
    """
    mask = _binary_target(target)
    width = float(width)
    if not width > 0 or not np.isfinite(width):
        raise ValueError(f"width must be a positive number of pixels, got {width!r}")
    confidence = _check_probability(confidence, "confidence")
    if mask.all() or not mask.any():
        s = np.full(mask.shape, np.inf if mask.all() else -np.inf)
    else:
        s = np.where(
            mask,
            ndimage.distance_transform_edt(mask) - 0.5,
            0.5 - ndimage.distance_transform_edt(~mask),
        )
    sig = 1.0 / (1.0 + np.exp(-s / width))
    return ((1.0 - confidence) + (2.0 * confidence - 1.0) * sig).astype(np.float32)


def as_logits(probs: np.ndarray | torch.Tensor, eps: float | None = None) -> torch.Tensor:
    """Foreground probabilities ``(*spatial)`` -> binary logits ``(1, 1, *spatial)`` float32.

    The losses take raw network outputs; ``logit(p)`` is the output a sigmoid network would
    need to produce ``p``. Exactly 0 and 1 become finite logits as in the Loss Explorer
    (:func:`~napari_segloss.maps.probabilities_to_logits`: the smallest normal float32 and its
    complement), so both give the same loss values for a hard prediction; ``eps`` clamps ``p``
    to ``[eps, 1 - eps]`` instead (a floor of 1e-6 turns PM Dice's ``m = 0`` of a confidently
    right pixel into ``1e-6^gamma``: 0.9855 instead of 1.0 for an eroded 0/1 mask, gamma 0.5).
    """
    p = torch.as_tensor(np.asarray(probs) if not isinstance(probs, torch.Tensor) else probs)
    if p.ndim not in (2, 3):
        raise ValueError(f"probs must be a 2D or 3D probability map, got shape {tuple(p.shape)}")
    p = p.to(torch.float32)
    if torch.any((p < 0) | (p > 1)) or torch.isnan(p).any():
        raise ValueError("probs must be probabilities in [0, 1]")
    if eps is None:
        return probabilities_to_logits(p[None, None])
    return torch.logit(p.clamp(eps, 1 - eps))[None, None]


def _target_tensor(target: np.ndarray | torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(_binary_target(target).astype(np.int64))[None]


def evaluate_losses(
    losses: Mapping[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]],
    probs: np.ndarray | torch.Tensor,
    target: np.ndarray | torch.Tensor,
) -> dict[str, float]:
    """Value of every loss for one binary prediction (foreground probabilities) and target."""
    logits = as_logits(probs)
    tgt = _target_tensor(target)
    if tuple(tgt.shape[1:]) != tuple(logits.shape[2:]):
        raise ValueError(
            f"probs and target must have the same shape, got {tuple(logits.shape[2:])} "
            f"and {tuple(tgt.shape[1:])}"
        )
    with torch.no_grad():
        return {name: float(fn(logits, tgt)) for name, fn in losses.items()}


def loss_grid(
    losses: Mapping[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]],
    target: np.ndarray | torch.Tensor,
    fn_fractions: Sequence[float],
    fp_fractions: Sequence[float],
    **prediction_kwargs: Any,
) -> dict[str, np.ndarray]:
    """Every loss on a grid of controlled errors.

    Returns ``{name: array (len(fn_fractions), len(fp_fractions))}`` where entry ``[i, j]`` is
    the loss of ``controlled_prediction(target, fn_fraction=fn_fractions[i],
    fp_fraction=fp_fractions[j], **prediction_kwargs)`` — rows are the y axis of a contour plot.
    """
    fn_fractions = list(fn_fractions)
    fp_fractions = list(fp_fractions)
    if not fn_fractions or not fp_fractions:
        raise ValueError("fn_fractions and fp_fractions must each hold at least one value")
    out = {name: np.empty((len(fn_fractions), len(fp_fractions))) for name in losses}
    for i, fn in enumerate(fn_fractions):
        for j, fp in enumerate(fp_fractions):
            probs = controlled_prediction(
                target, fn_fraction=fn, fp_fraction=fp, **prediction_kwargs
            )
            for name, value in evaluate_losses(losses, probs, target).items():
                out[name][i, j] = value
    return out


def logit_gradient(
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    probs: np.ndarray | torch.Tensor,
    target: np.ndarray | torch.Tensor,
) -> np.ndarray:
    """Signed ``dLoss / dlogit`` of every pixel of a binary prediction, shape ``(*spatial)``.

    The gradient with respect to the network output is what the loss actually "says" to the
    network about each pixel; comparing it at a hard pixel (e.g. a missed foreground pixel)
    and an easy one shows how strongly a loss focuses on difficult pixels. For a
    missed foreground pixel a useful loss gives a negative value (raise the logit).
    """
    logits = as_logits(probs).requires_grad_(True)
    tgt = _target_tensor(target)
    if tuple(tgt.shape[1:]) != tuple(logits.shape[2:]):
        raise ValueError(
            f"probs and target must have the same shape, got {tuple(logits.shape[2:])} "
            f"and {tuple(tgt.shape[1:])}"
        )
    value = loss(logits, tgt)
    if value.ndim != 0:
        raise ValueError(f"loss must return a scalar (reduction='mean'), got shape {value.shape}")
    (grad,) = torch.autograd.grad(value, logits)
    return grad[0, 0].numpy()


# --------------------------------------------------------------------------------------------
# parameter space (Li et al. 2018)
# --------------------------------------------------------------------------------------------
def filter_normalized_direction(
    model: nn.Module,
    *,
    generator: torch.Generator | None = None,
    ignore_bias_bn: bool = True,
) -> list[torch.Tensor]:
    """One Gaussian direction in weight space, filter-normalised (Li et al. 2018, sec. 4).

    For every parameter tensor with two or more dimensions (conv / linear / transposed conv
    weights) each filter — a slice along the first dimension — is rescaled to the norm of the
    matching filter of the weights, ``d_ij <- d_ij / ||d_ij|| * ||theta_ij||``. This removes the
    scale invariance of ReLU networks so that landscapes of different networks or losses are
    comparable. One-dimensional parameters (biases, batch-norm affine) are set to zero when
    ``ignore_bias_bn`` (Li et al.'s default, ``--xignore biasbn``); otherwise they are treated
    as a single filter. Buffers (batch-norm running statistics) are never perturbed.

    Returns:
        One tensor per ``model.parameters()`` entry, same shapes, devices and dtypes.
    """
    direction: list[torch.Tensor] = []
    for w in model.parameters():
        w_cpu = w.detach().to("cpu", torch.float64)
        if w.dim() <= 1 and ignore_bias_bn:
            direction.append(torch.zeros_like(w))
            continue
        d = torch.randn(w_cpu.shape, generator=generator, dtype=torch.float64)
        filters_d = d.reshape(d.shape[0], -1) if w.dim() > 1 else d.reshape(1, -1)
        filters_w = w_cpu.reshape(filters_d.shape)
        # the 1e-10 keeps an all-zero random filter (practically impossible) from dividing by 0
        scale = filters_w.norm(dim=1, keepdim=True) / (filters_d.norm(dim=1, keepdim=True) + 1e-10)
        direction.append((filters_d * scale).reshape(w.shape).to(w.device, w.dtype))
    return direction


def random_directions(
    model: nn.Module, n: int = 2, *, seed: int = 0, ignore_bias_bn: bool = True
) -> list[list[torch.Tensor]]:
    """``n`` independent filter-normalised directions drawn from one seeded generator."""
    if int(n) < 1:
        raise ValueError(f"n must be a positive number of directions, got {n!r}")
    gen = torch.Generator().manual_seed(int(seed))
    return [
        filter_normalized_direction(model, generator=gen, ignore_bias_bn=ignore_bias_bn)
        for _ in range(int(n))
    ]


@dataclass
class LossSurface:
    """Loss values on a plane ``theta + a * d1 + b * d2``.

    ``values[name]`` has shape ``(len(betas), len(alphas))``: rows follow ``b`` (the y axis of a
    contour plot), columns ``a``; ``(a, b) = (0, 0)`` is the trained network.
    """

    alphas: np.ndarray
    betas: np.ndarray
    values: dict[str, np.ndarray] = field(default_factory=dict)


@contextmanager
def _restored_parameters(model: nn.Module) -> Iterator[list[torch.Tensor]]:
    originals = [p.detach().clone() for p in model.parameters()]
    try:
        yield originals
    finally:
        with torch.no_grad():
            for p, w in zip(model.parameters(), originals, strict=True):
                p.copy_(w)


def loss_surface(
    model: nn.Module,
    losses: Mapping[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]],
    images: torch.Tensor,
    targets: torch.Tensor,
    directions: Sequence[Sequence[torch.Tensor]],
    alphas: Sequence[float] | np.ndarray,
    betas: Sequence[float] | np.ndarray | None = None,
    *,
    batch_size: int = 8,
    progress: Callable[[int, int], None] | None = None,
) -> LossSurface:
    """Evaluate losses on the plane through the model's weights spanned by two directions.

    All losses are computed from the same forward pass at every grid point (so surfaces of
    different losses share model, data and directions exactly). The model is put in eval mode
    (batch norm uses its running statistics, as in Li et al.'s evaluation) and its weights and
    the train/eval mode of each submodule are restored afterwards, even on error.

    Args:
        model: the trained network.
        losses: name -> loss module (``loss(logits, target)`` returning a scalar mean).
        images: ``(N, C, *spatial)`` inputs, already normalised like in training.
        targets: ``(N, *spatial)`` integer labels.
        directions: two directions from :func:`random_directions`.
        alphas, betas: grid coordinates along ``d1`` / ``d2`` (``betas`` defaults to ``alphas``).
        batch_size: images per forward pass.
        progress: optional callback ``progress(done, total)`` after each grid point.

    Returns:
        A :class:`LossSurface`; values are means over the images (weighted by batch size).
    """
    if len(directions) != 2:
        raise ValueError(f"directions must hold exactly 2 directions, got {len(directions)}")
    params = list(model.parameters())
    for k, d in enumerate(directions):
        if len(d) != len(params) or any(
            a.shape != p.shape for a, p in zip(d, params, strict=False)
        ):
            raise ValueError(
                f"directions[{k}] must match model.parameters() "
                f"({len(params)} tensors of the same shapes), got {len(d)} tensors"
            )
    if not losses:
        raise ValueError("losses must name at least one loss")
    if images.shape[0] != targets.shape[0] or images.shape[0] == 0:
        raise ValueError(
            f"images and targets must hold the same non-zero number of samples, got "
            f"{images.shape[0]} and {targets.shape[0]}"
        )
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    alphas = np.asarray(alphas, dtype=np.float64)
    betas = alphas if betas is None else np.asarray(betas, dtype=np.float64)
    if alphas.ndim != 1 or betas.ndim != 1 or alphas.size == 0 or betas.size == 0:
        raise ValueError("alphas and betas must be non-empty 1D sequences of coordinates")

    device = params[0].device if params else torch.device("cpu")
    values = {name: np.empty((betas.size, alphas.size)) for name in losses}
    # every submodule's own mode: model.train(True) afterwards would also switch on the
    # batch norms a fine-tuning run keeps frozen in eval mode
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    total = alphas.size * betas.size
    try:
        with _restored_parameters(model) as originals, torch.no_grad():
            done = 0
            for i, b in enumerate(betas):
                for j, a in enumerate(alphas):
                    for p, w, d1, d2 in zip(params, originals, *directions, strict=True):
                        p.copy_(w + float(a) * d1 + float(b) * d2)
                    sums = dict.fromkeys(losses, 0.0)
                    for start in range(0, images.shape[0], int(batch_size)):
                        x = images[start : start + int(batch_size)].to(device)
                        y = targets[start : start + int(batch_size)].to(device)
                        logits = model(x)
                        for name, fn in losses.items():
                            sums[name] += float(fn(logits, y)) * x.shape[0]
                    for name in losses:
                        values[name][i, j] = sums[name] / images.shape[0]
                    done += 1
                    if progress is not None:
                        progress(done, total)
    finally:
        for m, mode in modes:
            m.training = mode
    return LossSurface(alphas=alphas, betas=betas, values=values)
