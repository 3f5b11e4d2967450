"""Data access: file readers (:mod:`.io`), image/mask datasets and augmentation.

Only the readers are imported eagerly; they need numpy, Pillow, tifffile and nibabel, never torch,
Qt or napari.
"""

from __future__ import annotations

from .io import (
    IMAGE_EXTENSIONS,
    MASK_EXTENSIONS,
    NIFTI_EXTENSIONS,
    find_pairs,
    is_nifti,
    nifti_to_napari,
    path_stem,
    read_image,
    read_mask,
    read_nifti,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "MASK_EXTENSIONS",
    "NIFTI_EXTENSIONS",
    "find_pairs",
    "is_nifti",
    "nifti_to_napari",
    "path_stem",
    "read_image",
    "read_mask",
    "read_nifti",
]
