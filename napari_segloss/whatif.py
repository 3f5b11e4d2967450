""" "What-if" predictions made from a ground truth, for exploring how losses react to errors.

The PM-Dice paper (Hosseini 2025, fig. 2 and section 4) shows that the plain Dice loss stays low
when a small object is missed while a large one is segmented well, whereas PM Dice (eq. 5) rises
because its modulating term ``m = |y - p|^gamma`` is close to one on the missed object and on
boundaries.  The generators below make such predictions on demand from any label image: blurred
boundaries, eroded or dilated objects, shifted objects, and the smallest objects removed.

Every generator returns probabilities in the channel convention of the losses
(``napari_segloss.losses``): shape ``(C, *spatial)`` float32 with ``C == 1`` (foreground
probability, sigmoid-style) for a binary problem and ``C == K`` (one channel per class, summing to
one) for ``K >= 3`` classes.  Pure numpy/scipy: no torch, Qt or napari.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy import ndimage as ndi

__all__ = [
    "WHATIF_KINDS",
    "blur_probabilities",
    "dilate_labels",
    "erode_labels",
    "labels_to_probabilities",
    "make_whatif",
    "num_classes_of",
    "remove_smallest_objects",
    "shift_labels",
    "whole",
]


def _check_labels(labels: np.ndarray, name: str = "labels") -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim not in (2, 3):
        raise ValueError(f"{name}: expected a 2D or 3D label array, got shape {arr.shape}")
    if arr.dtype == bool:
        return arr.astype(np.int64)
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.array_equal(arr, np.round(arr)):
            raise ValueError(f"{name}: expected integer class labels, got dtype {arr.dtype}")
        arr = arr.astype(np.int64)
    if arr.size and arr.min() < 0:
        raise ValueError(f"{name}: expected non-negative class labels, got minimum {arr.min()}")
    return arr.astype(np.int64, copy=False)


def num_classes_of(labels: np.ndarray) -> int:
    """Number of classes implied by a label image: ``max(2, max label + 1)``."""
    arr = _check_labels(labels)
    return max(2, int(arr.max(initial=0)) + 1)


def _resolve_classes(labels: np.ndarray, num_classes: int | None) -> int:
    k = num_classes_of(labels) if num_classes is None else int(num_classes)
    if k < 2:
        raise ValueError(f"num_classes: expected >= 2, got {num_classes}")
    if labels.size and int(labels.max()) >= k:
        raise ValueError(
            f"num_classes: expected more than the largest label {int(labels.max())}, got {k}"
        )
    return k


def labels_to_probabilities(labels: np.ndarray, num_classes: int | None = None) -> np.ndarray:
    """Hard probabilities from labels: ``(1, *spatial)`` for binary, one-hot ``(K, *spatial)``."""
    arr = _check_labels(labels)
    k = _resolve_classes(arr, num_classes)
    if k == 2:
        return (arr == 1)[None].astype(np.float32)
    onehot = np.zeros((k, *arr.shape), dtype=np.float32)
    for c in range(k):
        onehot[c] = arr == c
    return onehot


def blur_probabilities(
    labels: np.ndarray, sigma: float, num_classes: int | None = None
) -> np.ndarray:
    """Gaussian-blurred one-hot labels (soft boundaries, like an uncertain network).

    The filter is linear and normalised, so the class channels still sum to one and the
    foreground mass is preserved (up to the reflective border).  ``sigma`` is in pixels along
    every axis; ``sigma == 0`` returns the hard probabilities unchanged.
    """
    if not np.isfinite(sigma) or sigma < 0:
        raise ValueError(f"sigma: expected a finite value >= 0, got {sigma}")
    probs = labels_to_probabilities(labels, num_classes)
    if sigma == 0:
        return probs
    out = np.stack([ndi.gaussian_filter(ch, sigma=sigma, mode="nearest") for ch in probs])
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def _ball(ndim: int) -> np.ndarray:
    # Cross-shaped (face-connected) element: one iteration moves a boundary by exactly one pixel.
    return ndi.generate_binary_structure(ndim, 1)


def erode_labels(labels: np.ndarray, iterations: int) -> np.ndarray:
    """Erode every foreground class by ``iterations`` pixels; eroded pixels become background."""
    arr = _check_labels(labels)
    n = _check_iterations(iterations)
    if n == 0:
        return arr.copy()
    out = np.zeros_like(arr)
    for c in np.unique(arr):
        if c == 0:
            continue
        # border_value=1: objects touching the image edge are not eroded from the edge side.
        kept = ndi.binary_erosion(arr == c, structure=_ball(arr.ndim), iterations=n, border_value=1)
        out[kept] = c
    return out


def dilate_labels(labels: np.ndarray, iterations: int) -> np.ndarray:
    """Grow every foreground class by ``iterations`` pixels into the background only.

    All classes grow together, one pixel a step, each only through background: a class never
    overwrites another nor reaches past it (growing each class alone by ``iterations`` made
    class 1 appear beyond a thin class 2). A background pixel that two classes reach in the
    same step goes to the lower class id (deterministic).
    """
    arr = _check_labels(labels)
    n = _check_iterations(iterations)
    out = arr.copy()
    classes = [c for c in np.unique(arr)[::-1] if c != 0]  # lower ids written last: they win
    ball = _ball(arr.ndim)
    for _ in range(n):
        free = out == 0
        if not classes or not free.any():
            break
        step = out.copy()
        for c in classes:
            step[ndi.binary_dilation(out == c, structure=ball) & free] = c
        out = step
    return out


def _check_iterations(iterations: int) -> int:
    if int(iterations) != iterations or iterations < 0:
        raise ValueError(f"iterations: expected an integer >= 0, got {iterations}")
    return int(iterations)


def shift_labels(labels: np.ndarray, offset: tuple[int, ...]) -> np.ndarray:
    """Translate the labels by whole pixels; uncovered pixels become background (no wrap-around).

    ``offset`` gives one integer per trailing axis it applies to (e.g. ``(dy, dx)`` also works for
    a 3D volume, shifting every slice in-plane).
    """
    arr = _check_labels(labels)
    off = tuple(int(o) for o in offset)
    if (
        len(off) == 0
        or len(off) > arr.ndim
        or any(o != v for o, v in zip(off, offset, strict=True))
    ):
        raise ValueError(
            f"offset: expected 1 to {arr.ndim} integer pixel offsets, got {tuple(offset)}"
        )
    full = (0,) * (arr.ndim - len(off)) + off
    out = np.zeros_like(arr)
    src = []
    dst = []
    for o, size in zip(full, arr.shape, strict=True):
        if abs(o) >= size:
            return out
        src.append(slice(max(0, -o), size - max(0, o)))
        dst.append(slice(max(0, o), size - max(0, -o)))
    out[tuple(dst)] = arr[tuple(src)]
    return out


def remove_smallest_objects(labels: np.ndarray, count: int = 1) -> np.ndarray:
    """Set the ``count`` smallest connected objects (over all foreground classes) to background.

    Objects are face-connected components of one class; ties in size are broken by position
    (first in raster order is removed first).  This reproduces the "small polyp almost missed"
    situation of the PM-Dice paper's fig. 2 from any ground truth with two or more objects.
    """
    arr = _check_labels(labels)
    if int(count) != count or count < 0:
        raise ValueError(f"count: expected an integer >= 0, got {count}")
    objects: list[tuple[int, int, np.ndarray]] = []
    order = 0
    for c in np.unique(arr):
        if c == 0:
            continue
        comp, n = ndi.label(arr == c, structure=_ball(arr.ndim))
        sizes = np.bincount(comp.ravel(), minlength=n + 1)
        for i in range(1, n + 1):
            objects.append((int(sizes[i]), order, comp == i))
            order += 1
    out = arr.copy()
    # Sort by size then by discovery order; the key avoids comparing the mask arrays.
    for _, _, mask in sorted(objects, key=lambda t: (t[0], t[1]))[: int(count)]:
        out[mask] = 0
    return out


def _whatif_blur(labels: np.ndarray, strength: float) -> np.ndarray:
    return labels  # the blur itself is the softness step, see make_whatif


def whole(strength: float) -> int:
    """``strength`` as a count of pixels or objects: halves round up (Python's ``round``
    rounds them to even, so 0.5 did nothing and 1.5 and 2.5 both gave 2)."""
    return math.floor(strength + 0.5)


def _whatif_erode(labels: np.ndarray, strength: float) -> np.ndarray:
    return erode_labels(labels, whole(strength))


def _whatif_dilate(labels: np.ndarray, strength: float) -> np.ndarray:
    return dilate_labels(labels, whole(strength))


def _whatif_shift(labels: np.ndarray, strength: float) -> np.ndarray:
    s = whole(strength)
    return shift_labels(labels, (s, s))


def _whatif_remove(labels: np.ndarray, strength: float) -> np.ndarray:
    return remove_smallest_objects(labels, whole(strength))


#: kind -> (label transform, meaning of ``strength``)
WHATIF_KINDS: dict[str, tuple[Callable[[np.ndarray, float], np.ndarray], str]] = {
    "blur": (_whatif_blur, "Gaussian sigma in pixels"),
    "erode": (_whatif_erode, "whole pixels removed at every boundary"),
    "dilate": (_whatif_dilate, "whole pixels added at every boundary"),
    "shift": (_whatif_shift, "in-plane shift in whole pixels along both axes"),
    "remove small object": (_whatif_remove, "number of smallest objects removed"),
}


def make_whatif(
    labels: np.ndarray,
    kind: str,
    strength: float,
    *,
    softness: float = 1.0,
    num_classes: int | None = None,
    in_plane: bool = False,
) -> np.ndarray:
    """A synthetic prediction made from a ground truth.

    Parameters
    ----------
    labels
        Integer ground truth, 2D or 3D.
    kind
        One of :data:`WHATIF_KINDS`: ``"blur"``, ``"erode"``, ``"dilate"``, ``"shift"``,
        ``"remove small object"``.
    strength
        Size of the change (see ``WHATIF_KINDS[kind][1]``); for ``"blur"`` the Gaussian sigma.
    softness
        Gaussian sigma (pixels) applied after the transform so that boundaries are soft like a
        network's output; ``0`` keeps hard 0/1 probabilities.  For ``"blur"`` it adds to
        ``strength`` in quadrature.
    num_classes
        Number of classes; default from the labels (``max(2, max + 1)``).
    in_plane
        For 3D labels: transform and soften each 2D slice (axis 0) on its own.  Use it for
        stacks of frames and for anisotropic volumes (e.g. cine-MRI with thick slices), where
        growing or blurring across slices would mix unrelated images.

    Returns
    -------
    Probabilities ``(1, *spatial)`` for two classes, ``(K, *spatial)`` otherwise; float32 in
    [0, 1], class channels summing to one.
    """
    if kind not in WHATIF_KINDS:
        raise ValueError(f"kind: expected one of {sorted(WHATIF_KINDS)}, got {kind!r}")
    if not np.isfinite(strength) or strength < 0:
        raise ValueError(f"strength: expected a finite value >= 0, got {strength}")
    if not np.isfinite(softness) or softness < 0:
        raise ValueError(f"softness: expected a finite value >= 0, got {softness}")
    arr = _check_labels(labels)
    k = _resolve_classes(arr, num_classes)
    if in_plane and arr.ndim == 3:
        slices = [make_whatif(s, kind, strength, softness=softness, num_classes=k) for s in arr]
        return np.stack(slices, axis=1)  # (C, Z, Y, X)
    transform, _ = WHATIF_KINDS[kind]
    changed = transform(arr, float(strength))
    sigma = float(np.hypot(strength, softness)) if kind == "blur" else float(softness)
    return blur_probabilities(changed, sigma, num_classes=k)
