"""Training pairs from in-memory arrays (napari layers) and what a data folder holds.

What a new model must fit is read from the data: the input channels (grey or RGB) and the
classes (one output channel for binary masks, ``K`` for labels ``0..K-1``). Pure numpy and the
readers of :mod:`.io` (no torch): the napari Train panel and notebooks call these before any
model exists.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .io import find_pairs, read_image, read_mask, read_nifti

__all__ = [
    "FolderSummary",
    "check_mask_labels",
    "inspect_folder",
    "layer_frames",
    "mask_labels",
    "model_classes",
    "split_frames",
]

Frames = tuple[list[np.ndarray], list[np.ndarray]]


def model_classes(top_label: int) -> int:
    """Output channels of a model for labels ``0..top_label``: 1 (sigmoid) for a binary mask,
    ``top_label + 1`` (softmax) otherwise."""
    return 1 if top_label <= 1 else int(top_label) + 1


def mask_labels(mask: np.ndarray) -> list[int]:
    """The labels present in ``mask`` (non-negative integers), ascending."""
    mask = np.asarray(mask)
    if mask.size and int(mask.max()) < 1 << 16:
        return np.flatnonzero(np.bincount(mask.ravel())).tolist()  # faster than np.unique
    return np.unique(mask).tolist()


def _some(labels: Sequence[int], limit: int = 8) -> str:
    shown = ", ".join(str(v) for v in labels[:limit])
    return "{" + shown + (", …}" if len(labels) > limit else "}")


def check_mask_labels(labels: Sequence[int], name: str, model_classes: int | None = None) -> None:
    """Refuse mask ``labels`` (:func:`mask_labels`) a model would learn wrong.

    ``model_classes``: the classes of the model to fine-tune; a label it cannot predict is
    refused as ``segloss train`` refuses it. None: a new model, which gets one class per label
    ``0..max``: labels that skip values (``{0, 9}``, a binary mask times 9) would add classes
    that never appear, so they are refused too. ``name`` starts the message (the layer).

    Raises:
        ValueError: naming the labels found and how to relabel them.
    """
    top = max(labels, default=0)
    if model_classes is not None:
        k = max(model_classes, 2)  # one sigmoid channel predicts labels 0..1
        if top >= k:
            binary = " (a binary mask: mask > 0)" if k == 2 else ""
            raise ValueError(
                f"{name}: mask has label {top} but the model predicts {k} classes "
                f"(labels 0..{k - 1}); relabel the mask to 0..{k - 1}{binary}"
            )
        return
    missing = sorted(set(range(1, top + 1)) - set(labels))
    if missing:
        raise ValueError(
            f"{name}: mask has labels {_some(labels)}, expected 0..N-1: a new model would get "
            f"{top + 1} classes, {len(missing)} of them never in the mask ({_some(missing)}); "
            f"relabel the mask to 0..{len(labels) - 1} (a binary mask: mask > 0)"
        )


def layer_frames(image: np.ndarray, mask: np.ndarray, *, rgb: bool) -> Frames:
    """Training pairs from one image and its mask: one pair for a 2D image, one per frame for a
    stack (``(N, Y, X, 3)`` RGB frames, or a grey volume ``(Z, Y, X)`` sliced for 2D models).

    Frames without any label are kept (they teach background).
    """
    if image.ndim == (3 if rgb else 2):
        return [image], [mask]
    if len(image) != len(mask):
        raise ValueError(
            f"mask: expected one frame per image frame ({len(image)}), got {len(mask)}"
        )
    return list(image), list(mask)


def split_frames(
    images: Sequence[np.ndarray], masks: Sequence[np.ndarray], val_fraction: float
) -> tuple[Frames, Frames]:
    """``(train, validation)``: the last ``val_fraction`` of the pairs (at least one) validate;
    ``val_fraction = 0``: none (the validation lists are empty), as ``data.val_fraction: 0``
    does for folders.

    A single pair is used for both: fine-tuning on the image in view, validation then measures
    the fit.
    """
    images, masks = list(images), list(masks)
    n = len(images)
    if n == 0:
        raise ValueError("expected at least one image/mask pair, got none")
    if val_fraction <= 0:  # held one frame out while the run's config.yaml said 0
        return (images, masks), ([], [])
    if n == 1:
        return (images, masks), (images, masks)
    n_val = min(n - 1, max(1, round(n * val_fraction)))
    return (images[:-n_val], masks[:-n_val]), (images[-n_val:], masks[-n_val:])


@dataclass(frozen=True)
class FolderSummary:
    """What :func:`inspect_folder` read: image/mask pairs found, input channels of the first
    image, and the labels of every mask (ascending) with the model classes they need."""

    pairs: int
    in_channels: int
    classes: int
    labels: tuple[int, ...] = ()


def _labels_of(mask_path: Path, nifti: bool) -> list[int]:
    return mask_labels(read_nifti(mask_path)[0] if nifti else read_mask(mask_path))


def inspect_folder(
    root: str | Path,
    kind: str = "folder",
    *,
    images: str = "images",
    masks: str = "masks",
    workers: int = 2,
) -> FolderSummary:
    """Read a training folder (``kind`` ``"folder"``: 2D images, ``"nifti"``: NIfTI volumes,
    grey) so that a new model fits the data: the first image's channels and the labels of
    every mask (a class that only a later mask holds still gets its output channel).

    Raises:
        ValueError: naming the folder and what was wrong (missing, unmatched or unreadable files).
    """
    root = Path(root).expanduser()
    nifti = kind == "nifti"
    try:
        pairs = find_pairs(root, images, masks, nifti=nifti)
        in_channels = 1 if nifti or read_image(pairs[0][0]).ndim == 2 else 3
        with ThreadPoolExecutor(max_workers=workers) as pool:  # decoding releases the GIL
            found = set().union(*pool.map(lambda pair: _labels_of(pair[1], nifti), pairs))
    except (OSError, ValueError) as exc:
        raise ValueError(f"folder {str(root)!r}: {exc}") from None
    labels = tuple(sorted(found))
    return FolderSummary(
        pairs=len(pairs),
        in_channels=in_channels,
        classes=model_classes(max(labels, default=0)),
        labels=labels,
    )
