"""What the Loss Explorer computes: per-pixel loss contributions and PM-Dice modulating maps.

Reproduces, for any prediction and ground truth, the PM-Dice paper's fig. 2 (Hosseini,
"Pixel-wise Modulated Dice loss", 2025): the modulating term ``m = |y - p|^gamma`` (eq. 5) for
several focusing parameters next to how much each pixel drives each chosen loss
(:func:`napari_segloss.maps.contribution_map`), plus the scalar loss values.

Qt-free and napari-free: the napari panel runs :func:`iter_explorer` in a thread worker (it
yields :class:`Step` progress and can be stopped between steps); :func:`compute_explorer`
runs it to the end, for scripts and notebooks.
"""

from __future__ import annotations

import contextlib
import inspect
import math
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch

from .losses import SHARED_PARAMS, get_loss, list_losses, loss_parameters
from .maps import (
    PROB_FLOOR,
    SOFTMAX_SUM_TOLERANCE,
    contribution_map,
    modulating_map,
    probabilities_to_logits,
)
from .metrics.inputs import as_labels

__all__ = [
    "CLIM_PERCENTILE",
    "FLAT_GRADIENT",
    "PLUMBING_PARAMS",
    "PROB_FLOOR",
    "SUM_TOLERANCE",
    "ExplorerLoss",
    "ExplorerResult",
    "Step",
    "check_target_fits",
    "colour_top",
    "compute_explorer",
    "editable_parameters",
    "format_value",
    "interactive_threads",
    "iter_explorer",
    "loss_catalog",
    "modulating_title",
    "probabilities_from_image",
    "probabilities_to_logits",
    "summary",
]

#: arguments every loss shares that make no sense to vary when exploring one prediction
PLUMBING_PARAMS = frozenset(SHARED_PARAMS)
#: contribution maps share one upper contrast limit: this percentile over all of them
CLIM_PERCENTILE = 99.5
#: how far the class probabilities of a pixel may sum from 1 (float16 softmax, tiled blending)
SUM_TOLERANCE = SOFTMAX_SUM_TOLERANCE  # the one rule, shared with maps.modulating_map
#: a probability this close to 0 or 1 is certain (a hard prediction)
_HARD = 1e-6
#: a contribution map at most this large everywhere is flat: no pixel drives the loss. A
#: hard 0/1 prediction (a labels layer) saturates the softmax/sigmoid, so the gradient of a
#: region loss is about 1e-43 at every pixel, right or wrong (cross-entropy's is not).
#: Such a map is returned as zeros
FLAT_GRADIENT = 1e-20
#: up to this many pixels, an interactive computation runs on one CPU thread (see
#: :func:`interactive_threads`)
ONE_THREAD_PIXELS = 4_000_000


def editable_parameters(name: str) -> dict[str, inspect.Parameter]:
    """The parameters of loss ``name`` worth editing (the registry's, minus shared plumbing).

    Read from :func:`napari_segloss.losses.loss_parameters` (defaults and annotations); a
    compound ``"a+b"`` has ``weights`` and one parameter per component (a dict of overrides).
    """
    return {k: p for k, p in loss_parameters(name).items() if k not in PLUMBING_PARAMS}


def loss_catalog() -> dict[str, dict[str, inspect.Parameter]]:
    """Every registered loss name with its :func:`editable_parameters`, in registry order."""
    return {name: editable_parameters(name) for name in list_losses()}


@contextlib.contextmanager
def interactive_threads(pixels: int) -> Iterator[None]:
    """Run the block on one torch CPU thread when ``pixels`` is at most ``ONE_THREAD_PIXELS``.

    The maps of a 2D image take tens of milliseconds on one thread; torch's intra-op threads
    gain nothing at that size, but their start-up and spinning cost up to a second on a busy
    machine and take CPU time from the GUI thread (napari's window) while they spin. Larger
    inputs (whole volumes) keep torch's setting. torch's thread count is process-wide: it is
    put back when the block ends.
    """
    before = torch.get_num_threads()
    if pixels > ONE_THREAD_PIXELS or before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def format_value(value: float) -> str:
    """A loss value as the Loss Explorer's table shows it: four decimals, or three significant
    digits below 0.001 (a focal loss of 2e-5 read 0.0000, as if the prediction were perfect)."""
    v = float(value)
    if v == 0 or not math.isfinite(v) or abs(v) >= 1e-3:
        return f"{v:.4f}"
    return f"{v:.3g}"


def modulating_title(gamma: float) -> str:
    """The display name of the modulating map for ``gamma``: ``"PM-Dice m, γ = 2"``."""
    return f"PM-Dice m, γ = {gamma:g}"


@dataclass
class ExplorerLoss:
    """One loss to draw: registry ``name`` and the ``params`` that differ from its defaults."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """``name`` or ``name(p=v, ...)``: the title of its map and its row in the table, short
        enough for a grid cell: ``ce+pm_dice(weights=(0.5, 1), pm_dice.gamma=2)``."""
        if not self.params:
            return self.name
        args = []
        for k, v in self.params.items():
            if isinstance(v, dict):  # a compound's term: its parameters as term.key=value
                args += [f"{k}.{kk}={_shown(vv)}" for kk, vv in v.items()]
            else:
                args.append(f"{k}={_shown(v)}")
        return f"{self.name}({', '.join(args)})"

    def build(self) -> torch.nn.Module:
        """The loss module; ``ValueError`` naming the loss when a parameter is rejected."""
        try:
            return get_loss(self.name, **self.params)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{self.name}: {exc}") from None


def _shown(value: Any) -> str:
    """A parameter value in a label: floats as ``%g`` (``2`` for ``2.0``), sequences of them
    in brackets, anything else as ``repr``."""
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple | list):
        inner = ", ".join(_shown(v) for v in value)
        return f"({inner})" if isinstance(value, tuple) else f"[{inner}]"
    return repr(value)


class Step(NamedTuple):
    """Progress of a computation: ``done`` of ``total`` steps, ``what`` comes next."""

    done: int
    total: int
    what: str


@dataclass
class ExplorerResult:
    """Maps (all ``(*spatial)`` float32) and values of one prediction."""

    #: loss name -> map; keyed by ``ExplorerLoss.label`` instead when two specs share a name
    contributions: dict[str, np.ndarray] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)  # same keys -> ExplorerLoss.label
    #: (gamma, map), one per distinct gamma, ascending
    modulating: list[tuple[float, np.ndarray]] = field(default_factory=list)
    values: list[tuple[str, float]] = field(default_factory=list)  # (label, loss value)
    prediction: np.ndarray | None = None  # probability of the displayed class
    clim: tuple[float, float] = (0.0, 1.0)  # shared colour scale of the contribution maps
    num_classes: int = 2
    #: labels of the losses whose gradient is zero at every pixel (see FLAT_GRADIENT)
    flat: list[str] = field(default_factory=list)
    #: every pixel predicts the same class with certainty (no edge that softness could blur)
    uniform: bool = False
    #: every probability is 0 or 1 (a labels layer, a what-if without softness)
    hard: bool = False


def _checked_inputs(
    probs: Any, target: Any, losses: Sequence[ExplorerLoss], gammas: Any
) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """``(labels, (C, *spatial) probabilities, gammas)``; ValueError for what the maps would
    silently misread: a (H, W) map taken as (C, N), a float mask truncated, a loss name."""
    labels = as_labels(target, "target")
    probs = probabilities_from_image(probs, labels.shape)
    bad = [spec for spec in losses if not isinstance(spec, ExplorerLoss)]
    if bad:
        raise ValueError(
            f"losses: expected ExplorerLoss items such as ExplorerLoss('pm_dice', {{'gamma': 2.0}}), "
            f"got {bad[0]!r}"
        )
    try:
        return labels, probs, [float(g) for g in gammas]
    except (TypeError, ValueError):
        raise ValueError(f"gammas: expected a list of numbers, got {gammas!r}") from None


def iter_explorer(
    probs: np.ndarray,
    target: np.ndarray,
    losses: Sequence[ExplorerLoss],
    gammas: Sequence[float],
    *,
    cls: int = 1,
    relative: bool = True,
) -> Generator[Step, None, ExplorerResult]:
    """:func:`compute_explorer` one loss or gamma at a time: yields a :class:`Step` before each
    and returns the :class:`ExplorerResult` (``StopIteration.value``)."""
    target, probs, gammas = _checked_inputs(probs, target, losses, gammas)
    p = torch.from_numpy(np.ascontiguousarray(probs, dtype=np.float32))[None]
    t = torch.from_numpy(np.ascontiguousarray(target, dtype=np.int64))[None]
    c = p.shape[1]
    k = 2 if c == 1 else c
    if not 0 <= cls < k:
        raise ValueError(f"class: expected 0 to {k - 1}, got {cls}")
    distinct = sorted({float(g) for g in gammas})
    total = len(losses) + len(distinct)
    logits = probabilities_to_logits(p)
    res = ExplorerResult(num_classes=k)
    names = [spec.name for spec in losses]
    res.prediction = (p[0, 0] if c == 1 else p[0, cls]).numpy().copy()
    if c == 1 and cls == 0:
        res.prediction = 1.0 - res.prediction
    flat_p = p.flatten(2)  # (1, C, pixels)
    res.hard = bool(((flat_p <= _HARD) | (flat_p >= 1 - _HARD)).all())
    res.uniform = res.hard and bool((flat_p.amax(-1) - flat_p.amin(-1) <= _HARD).all())
    for i, spec in enumerate(losses):
        yield Step(i, total, spec.label)
        module = spec.build()
        with torch.no_grad():
            res.values.append((spec.label, float(module(logits, t))))
        cmap = contribution_map(module, logits, t, kind="gradient")[0].detach().float().numpy()
        if float(cmap.max(initial=0.0)) <= FLAT_GRADIENT:  # NaN: not flat, left visible
            res.flat.append(spec.label)
            # drawn blank, as the status line says: divided by its mean, 1e-38 noise of a
            # saturated softmax read like a real map (up to 22 x the mean)
            cmap = np.zeros_like(cmap)
        elif relative:
            mean = float(cmap.mean())
            cmap = cmap / mean if mean > 0 else cmap
        key = spec.name if names.count(spec.name) == 1 else spec.label
        res.contributions[key] = cmap.astype(np.float32, copy=False)
        res.labels[key] = spec.label
    # binary: both channels hold the same |y - p|; the foreground one is drawn
    ch = 1 if c == 1 else cls
    ticked = {_plain_pm_dice_gamma(spec) for spec in losses} - {None}
    for j, g in enumerate(distinct):
        yield Step(len(losses) + j, total, modulating_title(g))
        m = modulating_map(p, t, g)[0, ch].detach().float().numpy()
        res.modulating.append((g, m.astype(np.float32, copy=False)))
        if g in ticked:  # the same loss is ticked: its value is listed once
            continue
        with torch.no_grad():
            value = float(get_loss("pm_dice", gamma=g)(logits, t))
        res.values.append((f"pm_dice(gamma={g:g})", value))
    if res.contributions:
        hi = max(colour_top(m) for m in res.contributions.values())
        res.clim = (0.0, hi if hi > 0 and math.isfinite(hi) else 1.0)
    return res


def _plain_pm_dice_gamma(spec: ExplorerLoss) -> float | None:
    """The γ of ``spec`` when it is PM Dice with a γ and default parameters otherwise (the loss
    a γ-list entry computes), else None."""
    gamma = spec.params.get("gamma") if spec.name == "pm_dice" else None
    plain = set(spec.params) == {"gamma"} and isinstance(gamma, int | float)
    return float(gamma) if plain and not isinstance(gamma, bool) else None


def colour_top(cmap: np.ndarray) -> float:
    """Upper colour limit of one contribution map: its ``CLIM_PERCENTILE`` percentile, but
    never below its mean pixel.

    When fewer than 0.5 % of the pixels carry the loss (a hard prediction wrong on a few
    pixels: every other pixel's gradient is about 1e-38), the percentile lands among the
    near-zero pixels: the scale read 0–5e-36 and the whole map was one saturated colour.
    """
    if not cmap.size:
        return 0.0
    return max(float(np.percentile(cmap, CLIM_PERCENTILE)), float(cmap.mean(dtype=np.float64)))


def summary(res: ExplorerResult, relative: bool = True, z: int | None = None) -> str:
    """What the maps of ``res`` show, in one sentence (the Loss Explorer's status line);
    ``z``: the slice they were computed on, if one."""
    units = "|dL/dlogits| / its mean, 1 = an average pixel" if relative else "|dL/dlogits|"
    why = (
        "the prediction is one class at every pixel with certainty (e.g. a what-if that "
        "removed every object), which saturates the softmax/sigmoid and has no edge to soften"
        if res.uniform
        else "a hard 0/1 prediction saturates the softmax/sigmoid; a soft one (a network's, "
        "or a what-if with softness > 0) has a gradient"
    )
    where = f" (slice {z})" if z is not None else ""
    # several classes: the class box picks the prediction and m maps, not the contributions
    classes = f" summed over the {res.num_classes} classes" if res.num_classes > 2 else ""
    of_class = " of the class picked" if res.num_classes > 2 else ""
    return (
        (
            f"{len(res.contributions)} contribution map(s) |∂L/∂z|{classes} ({units}; one "
            f"shared colour scale 0–{res.clim[1]:.3g}) and {len(res.modulating)} PM-Dice "
            f"modulating map(s) m = |y − p|^γ{of_class}{where}"
        )
        + (
            f". {', '.join(res.flat)}: no gradient at any pixel (blank map): " + why
            if res.flat
            else ""
        )
        + (_HARD_VALUES if res.hard and not res.uniform else "")
    )


#: what the values of a hard 0/1 prediction mean (they look broken otherwise: PM Dice 1.0 at
#: every gamma, cross-entropy in the tens)
_HARD_VALUES = (
    ". A hard 0/1 prediction: m is 0 on right pixels and 1 on wrong ones, so every class with a "
    "wrong pixel scores 1 in PM Dice whatever γ (binary: 1 as soon as one pixel is wrong), and "
    f"a wrong pixel's cross-entropy is −ln {PROB_FLOOR:.2g} = {-math.log(PROB_FLOOR):.1f}"
)


def compute_explorer(
    probs: np.ndarray,
    target: np.ndarray,
    losses: Sequence[ExplorerLoss],
    gammas: Sequence[float],
    *,
    cls: int = 1,
    relative: bool = True,
) -> ExplorerResult:
    """Contribution maps, modulating maps and loss values for one prediction.

    Args:
        probs: ``(C, *spatial)`` probabilities, ``C == 1`` binary (foreground), else softmax
            (summing to 1); a ``(*spatial)`` array is a binary foreground probability.
        target: integer ground truth ``(*spatial)``.
        losses: losses whose gradient contribution maps and values are computed.
        gammas: PM-Dice focusing parameters; one modulating map ``|y - p|^gamma`` (eq. 5) of
            class ``cls`` and one ``pm_dice`` value per distinct value, in ascending order.
        cls: class whose modulating map is drawn (binary: both classes give the same map).
        relative: divide each contribution map by its mean, so 1 means "an average pixel" and
            maps of losses with different scales can share one colour scale.

    Raises:
        ValueError: ``cls`` out of range, probabilities or labels of another shape, outside
            [0, 1] or fractional, or a loss rejected its parameters.
    """
    steps = iter_explorer(probs, target, losses, gammas, cls=cls, relative=relative)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


def probabilities_from_image(data: np.ndarray, gt_shape: tuple[int, ...]) -> np.ndarray:
    """Validate a probability image and return it as ``(C, *spatial)`` float32.

    Accepted: ``(*spatial)`` (foreground probability of a binary problem) or ``(K, *spatial)``
    (class probabilities, ``K >= 2``, summing to 1 within ``SUM_TOLERANCE``), values in [0, 1].
    """
    arr = np.asarray(data)
    if tuple(arr.shape) == tuple(gt_shape):
        arr = arr[None]
    elif not (arr.ndim == len(gt_shape) + 1 and tuple(arr.shape[1:]) == tuple(gt_shape)):
        raise ValueError(
            f"prediction: expected probabilities of shape {tuple(gt_shape)} or (K, "
            f"{', '.join(map(str, gt_shape))}) like the ground truth, got {tuple(arr.shape)}"
        )
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"prediction: expected a numeric probability image, got dtype {arr.dtype}")
    arr = arr.astype(np.float32, copy=False)
    lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
    if not (np.isfinite(arr).all() and lo >= 0.0 and hi <= 1.0):
        raise ValueError(
            f"prediction: expected probabilities in [0, 1], got values in [{lo:g}, {hi:g}] "
            "(pick a probability map, or use 'labels layer' for a segmentation)"
        )
    if arr.shape[0] > 1 and arr.size:
        total = arr.sum(axis=0, dtype=np.float64)
        lo, hi = float(total.min()), float(total.max())
        if not (abs(lo - 1.0) <= SUM_TOLERANCE and abs(hi - 1.0) <= SUM_TOLERANCE):
            raise ValueError(
                f"prediction: the {arr.shape[0]} class probabilities must sum to 1 at every "
                f"pixel (softmax), got sums in [{lo:.4g}, {hi:.4g}]; the losses would see them "
                "renormalised, unlike the maps drawn (a single class's probability: pick it "
                "alone with a two-class ground truth)"
            )
    return arr


def check_target_fits(probs: np.ndarray, target: np.ndarray) -> None:
    """The ground truth's labels must exist in the prediction's classes (``ValueError``)."""
    k = 2 if probs.shape[0] == 1 else probs.shape[0]
    top = int(target.max(initial=0))
    if top >= k:
        # one channel: e.g. one class's probability layer of Predict & Compare
        hint = (
            f"; a single probability is a two-class prediction: for classes 0–{top} pick a "
            f"stack of the {top + 1} class probabilities (class axis first), or the checkpoint"
            if probs.shape[0] == 1
            else ""
        )
        raise ValueError(
            f"ground truth: has label {top} but the prediction has only {k} classes "
            f"({probs.shape[0]} channel{'s' if probs.shape[0] > 1 else ''}){hint}"
        )
