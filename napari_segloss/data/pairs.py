"""Training pairs from in-memory arrays (napari layers) and what a data folder holds.

What a new model must fit is read from the data: the input channels (grey or RGB) and the
classes (one output channel for binary masks, ``K`` for labels ``0..K-1``). Pure numpy and the
readers of :mod:`.io` (no torch): the napari Train panel and notebooks call these before any
model exists.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .io import find_pairs, read_image, read_mask, read_nifti

__all__ = ["FolderSummary", "inspect_folder", "layer_frames", "model_classes", "split_frames"]

Frames = tuple[list[np.ndarray], list[np.ndarray]]


def model_classes(top_label: int) -> int:
    """Output channels of a model for labels ``0..top_label``: 1 (sigmoid) for a binary mask,
    ``top_label + 1`` (softmax) otherwise."""
    return 1 if top_label <= 1 else int(top_label) + 1


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
    """``(train, validation)``: the last ``val_fraction`` of the pairs (at least one) validate.

    A single pair is used for both: fine-tuning on the image in view, validation then measures
    the fit.
    """
    images, masks = list(images), list(masks)
    n = len(images)
    if n == 0:
        raise ValueError("expected at least one image/mask pair, got none")
    if n == 1:
        return (images, masks), (images, masks)
    n_val = min(n - 1, max(1, round(n * val_fraction)))
    return (images[:-n_val], masks[:-n_val]), (images[-n_val:], masks[-n_val:])


@dataclass(frozen=True)
class FolderSummary:
    """What :func:`inspect_folder` read: image/mask pairs found, input channels of the first
    image, and the model classes of the probed masks."""

    pairs: int
    in_channels: int
    classes: int


def inspect_folder(
    root: str | Path,
    kind: str = "folder",
    *,
    images: str = "images",
    masks: str = "masks",
    probe: int = 8,
) -> FolderSummary:
    """Read the first ``probe`` pairs of a training folder (``kind`` ``"folder"``: 2D images,
    ``"nifti"``: NIfTI volumes, grey) so that a new model fits the data.

    Raises:
        ValueError: naming the folder and what was wrong (missing, unmatched or unreadable files).
    """
    root = Path(root).expanduser()
    try:
        pairs = find_pairs(root, images, masks, nifti=kind == "nifti")
        if kind == "nifti":
            in_channels = 1
            top = max(int(read_nifti(m)[0].max()) for _, m in pairs[:probe])
        else:
            first = read_image(pairs[0][0])
            in_channels = 3 if first.ndim == 3 else 1
            top = max(int(read_mask(m).max()) for _, m in pairs[:probe])
    except (OSError, ValueError) as exc:
        raise ValueError(f"folder {str(root)!r}: {exc}") from None
    return FolderSummary(pairs=len(pairs), in_channels=in_channels, classes=model_classes(top))
