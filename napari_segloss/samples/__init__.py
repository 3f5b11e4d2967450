"""Small sample datasets shipped inside the package (see ``NOTICE.md`` for sources and terms).

* ``kvasir``: 3 Kvasir-SEG colonoscopy frames (320 x 273 RGB) with binary polyp masks {0, 1};
  polyps of 11 %, 2.4 % and 44 % of the frame (index 0, 1, 2: sorted by file name).
* ``acdc``: 1 ACDC cardiac cine-MRI volume with labels 0 background, 1 RV, 2 MYO, 3 LV.
* ``kvasir_train``: 32 other Kvasir-SEG pairs, 192 px wide (heights vary), masks {0, 1}: enough
  for the quickstart to train a small model in a minute and score it on the ``kvasir`` frames,
  which it never sees (``data.root: bundled:kvasir_train``). Not a napari sample.

Arrays come back in napari axis order: Kvasir ``(H, W, 3)`` / ``(H, W)``, ACDC ``(Z, Y, X)``
(short-axis slice first, so ``image[z]`` is one 2D slice). Only numpy and the readers in
:mod:`napari_segloss.data.io` are used.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.io import (
    find_pairs,
    nifti_to_napari,
    read_image,
    read_mask,
    read_nifti,
)

__all__ = [
    "SAMPLES_DIR",
    "list_samples",
    "load_sample",
    "sample_class_names",
    "sample_files",
    "sample_pairs_dir",
]

#: Folder holding the shipped sample data (inside the installed package).
SAMPLES_DIR: Path = Path(__file__).resolve().parent

# name -> (sub-folder, images folder, masks folder, volumetric?)
_LAYOUT: dict[str, tuple[str, str, str, bool]] = {
    "acdc": ("acdc", "images", "labels", True),
    "kvasir": ("kvasir", "images", "masks", False),
    "kvasir_train": ("kvasir_train", "images", "masks", False),
}


#: each sample's class names, indexed by label value (background first), as ``data.class_names``
_CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "acdc": ("background", "RV", "MYO", "LV"),
    "kvasir": ("background", "polyp"),
    "kvasir_train": ("background", "polyp"),
}


def sample_class_names(name: str) -> list[str]:
    """The class names of sample ``name`` by label value, background first: ``["background",
    "RV", "MYO", "LV"]`` for ``acdc`` (what a config's ``data.class_names`` takes)."""
    _check_name(name)
    return list(_CLASS_NAMES[name])


def list_samples() -> list[str]:
    """Names accepted by :func:`load_sample`: ``["acdc", "kvasir", "kvasir_train"]``."""
    return sorted(_LAYOUT)


def _check_name(name: str) -> tuple[str, str, str, bool]:
    if name not in _LAYOUT:
        raise ValueError(f"name must be one of {list_samples()}, got {name!r}")
    return _LAYOUT[name]


def sample_pairs_dir(name: str = "kvasir") -> Path:
    """Folder with ``images/`` + ``masks/`` (``labels/`` for ``acdc``) of the sample ``name``.

    Usable directly as ``data.root`` of the engine's ``folder`` (kvasir) or ``nifti`` (acdc)
    dataset and by :func:`napari_segloss.data.io.find_pairs`.
    """
    sub, _, _, _ = _check_name(name)
    return SAMPLES_DIR / sub


def sample_files(name: str) -> list[tuple[Path, Path]]:
    """``(image, mask)`` file paths of the sample ``name``, sorted by file name."""
    sub, images, masks, volumetric = _check_name(name)
    return find_pairs(SAMPLES_DIR / sub, images, masks, nifti=volumetric)


def load_sample(name: str, index: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Load pair ``index`` of the sample ``name`` as ``(image, mask)`` numpy arrays.

    ``kvasir``: ``uint8`` image ``(H, W, 3)`` and ``uint8`` mask ``(H, W)`` in {0, 1}.
    ``acdc``: ``uint8`` image and ``uint8`` labels ``(Z, Y, X)`` in {0, 1, 2, 3}.
    """
    files = sample_files(name)
    if isinstance(index, bool) or not isinstance(index, int | np.integer):
        raise ValueError(f"index must be an int, got {type(index).__name__}")
    if not -len(files) <= index < len(files):
        raise ValueError(
            f"index must be in [-{len(files)}, {len(files) - 1}] for sample {name!r} "
            f"({len(files)} pair(s)), got {index}"
        )
    image_path, mask_path = files[index]
    if _LAYOUT[name][3]:
        image, _ = nifti_to_napari(*read_nifti(image_path))
        mask, _ = nifti_to_napari(*read_nifti(mask_path))
        return np.ascontiguousarray(image), np.ascontiguousarray(mask, dtype=np.uint8)
    return read_image(image_path), read_mask(mask_path)
