"""napari reader and sample-data contributions (wired in ``napari.yaml``).

Everything here returns plain ``LayerData`` tuples ``(data, kwargs, layer_type)`` and imports
nothing from napari or Qt, so it is testable headless and costs nothing at plugin discovery.

Reader rules (documented in the README):

* **Pair folder** — a folder with ``images/`` and ``masks/`` (or ``labels/``) whose files match by
  stem (extensions may differ). If every image has the same shape, all pairs are stacked into one
  Image layer ``(N, H, W[, 3])`` and one Labels layer ``(N, H, W)`` (napari shows a slider). If
  shapes differ, nothing is resized or padded: up to :data:`MAX_SEPARATE_PAIRS` pairs open as
  separate layers named after each file; more than that raises a ``ValueError`` saying so. A
  folder of NIfTI pairs opens each volume as its own pair of layers (same limit). Of separate
  pairs only the last (top) one is visible, so masks are not drawn over another file's image.
* **NIfTI** (``.nii``, ``.nii.gz``) — opens as Labels when the file name has a token containing
  ``label``, ``seg`` or ``mask`` or equal to ``gt`` (e.g. ``case_gt.nii.gz``,
  ``patient1_seg.nii``) or the file sits in a ``labels``/``masks`` folder; otherwise as Image.
  A labels layer whose file name does not say so is named ``"<stem> labels"`` (an image and its
  labels often share a file name). Axes go from file order ``(X, Y, Z)`` to napari order
  ``(Z, Y, X)``; the header spacing becomes the layer ``scale`` and, for an axis-aligned affine,
  its origin the ``translate`` (both reversed accordingly; see
  :func:`~napari_segloss.data.io.nifti_origin` for why not the full affine). The two files of a
  NIfTI pair folder both take the image's geometry, so they overlay voxel for voxel.
* Folders that are not pair folders but look like part of one (an ``images/``/``masks/``/
  ``labels/`` sub-folder, a folder with ``images/`` and no masks, a folder of NIfTI files) are
  claimed only to say what the reader expects, instead of a bare "refused the file".
* Masks open in colours that stand out on tissue (see :data:`MASK_COLORS`) for up to 3 classes.
* Masks are read with :func:`napari_segloss.data.io.read_mask` (JPEG masks binarised at > 127).
  Every file is read before any layer is returned: a bad file raises a ``ValueError`` naming it and
  nothing is half-loaded.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .data.io import (
    IMAGE_EXTENSIONS,
    NIFTI_EXTENSIONS,
    find_pairs,
    integer_labels,
    is_nifti,
    nifti_to_napari,
    path_stem,
    read_image_like_mask,
    read_mask,
    read_nifti_geometry,
)
from .samples import sample_class_names, sample_files, sample_pairs_dir

__all__ = [
    "FRAMES_KEY",
    "MASK_COLORS",
    "MAX_SEPARATE_PAIRS",
    "READER_EXPECTS",
    "acdc_sample",
    "class_names_kwargs",
    "folder_problem",
    "get_reader",
    "is_labels_path",
    "kvasir_sample",
    "mask_colormap",
    "read_nifti_layers",
    "read_pair_folder",
]

#: layer metadata key: True for a stack of unrelated 2D frames (a folder of same-size images),
#: which the Predict & Compare panel scores frame by frame, not as one 3D volume
FRAMES_KEY = "frames"

LayerData = tuple[Any, dict[str, Any], str]
PathLike = str | os.PathLike[str]

#: Most image/mask pairs of differing shapes opened as separate layers before the reader refuses.
MAX_SEPARATE_PAIRS = 10

_MASK_FOLDERS = ("masks", "labels")
_LABEL_TOKENS = ("label", "seg", "mask")
_LABELS_OPACITY = 0.6

#: Ground-truth colours (RGBA) for masks with labels 1..3: bright yellow, cyan and magenta stand
#: out on red endoscopy tissue and on grey MRI (napari's default first colour, dark brown at
#: half opacity, is nearly invisible on tissue). Masks with more classes keep napari's colours.
MASK_COLORS: dict[int | None, tuple[float, float, float, float]] = {
    None: (0.0, 0.0, 0.0, 0.0),
    0: (0.0, 0.0, 0.0, 0.0),
    1: (1.0, 0.9, 0.0, 1.0),
    2: (0.0, 0.9, 1.0, 1.0),
    3: (1.0, 0.25, 1.0, 1.0),
}

#: what the reader opens, for the messages of folders and files it cannot open
READER_EXPECTS = (
    "the napari-segloss reader opens a folder with images/ and masks/ (or labels/) sub-folders "
    "whose files match by name, or a NIfTI file (.nii, .nii.gz)"
)


def is_labels_path(path: PathLike) -> bool:
    """Whether a NIfTI file holds labels: a name token with label/seg/mask, a ``gt`` token, or a
    ``labels``/``masks`` parent folder. Tokens avoid false hits such as ``gt`` in ``length``."""
    p = Path(path)
    tokens = [t for t in re.split(r"[^a-z0-9]+", path_stem(p).lower()) if t]
    if any(any(key in t for key in _LABEL_TOKENS) or t == "gt" for t in tokens):
        return True
    return p.parent.name.lower() in _MASK_FOLDERS


def _as_labels(arr: np.ndarray, path: Path) -> np.ndarray:
    """Integer labels for a napari Labels layer (:func:`~napari_segloss.data.io.integer_labels`:
    0.99999 is 1); fractional values mean it is not a label map."""
    if arr.dtype.kind in "ui":
        return arr
    try:
        return integer_labels(arr, path)
    except ValueError as exc:
        raise ValueError(f"cannot open {str(path)!r} as labels: {exc}") from None


def _image_kwargs(
    name: str,
    image: np.ndarray,
    scale: Sequence[float],
    paths: list[str],
    translate: Sequence[float] | None = None,
) -> dict:
    rgb = image.ndim >= 3 and image.shape[-1] == 3 and len(scale) == image.ndim - 1
    kwargs: dict[str, Any] = {"name": name, "rgb": bool(rgb), "metadata": {"paths": paths}}
    if not rgb:
        kwargs["colormap"] = "gray"
    kwargs["scale"] = tuple(float(s) for s in scale)
    if translate is not None:
        kwargs["translate"] = tuple(float(t) for t in translate)
    return kwargs


def _labels_kwargs(
    name: str,
    scale: Sequence[float],
    paths: list[str],
    labels: np.ndarray | None = None,
    translate: Sequence[float] | None = None,
) -> dict:
    kwargs: dict[str, Any] = {
        "name": name,
        "opacity": _LABELS_OPACITY,
        "scale": tuple(float(s) for s in scale),
        "metadata": {"paths": paths},
    }
    if translate is not None:
        kwargs["translate"] = tuple(float(t) for t in translate)
    colormap = mask_colormap(labels)
    if colormap is not None:
        kwargs["colormap"] = colormap
    return kwargs


def mask_colormap(labels: np.ndarray | None) -> list[tuple[float, ...]] | None:
    """The colours of :data:`MASK_COLORS` for labels 0-3 (None for more labels: napari's own
    cycle): masks and the predictions compared with them colour a class alike."""
    if labels is None or not labels.size or int(labels.max()) >= len(MASK_COLORS) - 1:
        return None
    # a list (napari's cyclic colormap) gives labels 0..3 the colours of the dict; a dict
    # (direct colormap) would cost a numba compile in napari when the first layer opens
    return [MASK_COLORS[label] for label in range(len(MASK_COLORS) - 1)]


def _labels_name(path: Path) -> str:
    """``stem`` when the file name says it holds labels, else ``"stem labels"``."""
    stem = path_stem(path)
    tokens = [t for t in re.split(r"[^a-z0-9]+", stem.lower()) if t]
    named = any(any(key in t for key in _LABEL_TOKENS) or t == "gt" for t in tokens)
    return stem if named else f"{stem} labels"


def read_nifti_layers(path: PathLike) -> list[LayerData]:
    """One NIfTI file as a single Image or Labels layer in napari order ``([Z,] Y, X)``."""
    p = Path(path)
    arr, spacing, origin = read_nifti_geometry(p)
    data, scale = nifti_to_napari(arr, spacing)
    translate = origin[::-1]  # napari order, like scale
    if is_labels_path(p):
        labels = _as_labels(data, p)
        kwargs = _labels_kwargs(_labels_name(p), scale, [str(p)], labels, translate)
        return [(labels, kwargs, "labels")]
    return [(data, _image_kwargs(path_stem(p), data, scale, [str(p)], translate), "image")]


def _mask_folder(root: Path) -> str | None:
    if not (root / "images").is_dir():
        return None
    for name in _MASK_FOLDERS:
        if (root / name).is_dir():
            return name
    return None


def _folder_has(folder: Path, extensions: Sequence[str]) -> bool:
    return any(
        p.is_file() and not p.name.startswith(".") and p.name.lower().endswith(extensions)
        for p in folder.iterdir()
    )


def read_pair_folder(
    root: PathLike, *, name: str | None = None, mask_name: str | None = None
) -> list[LayerData]:
    """Open ``root/images`` + ``root/masks`` (or ``labels``) as Image + Labels layers.

    Same-shape pairs are stacked (``(N, H, W[, 3])`` + ``(N, H, W)``); differing shapes open as
    separate layers, at most :data:`MAX_SEPARATE_PAIRS` pairs. ``name``/``mask_name`` override the
    stacked layer names (default ``"<folder> images"`` / ``"<folder> masks"``, or
    ``"<folder> labels"`` for a ``labels/`` sub-folder: the name says which folder it came from).
    """
    root = Path(root)
    masks = _mask_folder(root)
    if masks is None:
        raise ValueError(
            f"folder {str(root)!r} must contain 'images/' and 'masks/' (or 'labels/') sub-folders"
        )
    flat, volumetric = (
        _folder_has(root / "images", ext) for ext in (IMAGE_EXTENSIONS, NIFTI_EXTENSIONS)
    )
    if flat and volumetric:
        raise ValueError(
            f"folder {str(root / 'images')!r} holds both NIfTI volumes and 2D image files; "
            "the reader opens one kind: move the other files out"
        )
    pairs = find_pairs(root, "images", masks, nifti=volumetric)

    if volumetric:
        if len(pairs) > MAX_SEPARATE_PAIRS:
            image_path, mask_path = pairs[0]
            raise ValueError(
                f"folder {str(root)!r} has {len(pairs)} NIfTI volume pairs; the reader opens "
                f"each volume as its own image + labels layer pair, at most {MAX_SEPARATE_PAIRS} "
                f"at once. To look at one volume, open its two files (e.g. {str(image_path)!r} "
                f"and {str(mask_path)!r}); to train on all of them, use the Train / Fine-tune "
                "panel's folder mode or `segloss train` with data.kind: nifti."
            )
        layers: list[LayerData] = []
        for image_path, mask_path in pairs:
            layers += _nifti_pair(image_path, mask_path)
        return _show_last_pair(layers)

    labels = [read_mask(p) for _, p in pairs]
    # oriented as its mask was drawn (an EXIF tag), as training reads the pair
    images = [
        read_image_like_mask(p, label.shape) for (p, _), label in zip(pairs, labels, strict=True)
    ]
    for (image_path, mask_path), image, label in zip(pairs, images, labels, strict=True):
        if image.shape[:2] != label.shape:
            raise ValueError(
                f"image {str(image_path)!r} is {image.shape[:2]} but its mask "
                f"{str(mask_path)!r} is {label.shape}; they must have the same height and width"
            )
    image_paths = [str(p) for p, _ in pairs]
    mask_paths = [str(p) for _, p in pairs]
    if len({im.shape for im in images}) == 1 and len({im.dtype for im in images}) == 1:
        stacked = np.stack(images)
        spatial = stacked.ndim - (1 if images[0].ndim == 3 else 0)
        scale = (1.0,) * spatial
        image_kw = _image_kwargs(name or f"{root.name} images", stacked, scale, image_paths)
        stacked_labels = np.stack(labels)
        label_kw = _labels_kwargs(
            mask_name or f"{root.name} {masks}", scale, mask_paths, stacked_labels
        )
        for kw in (image_kw, label_kw):  # unrelated 2D images, not the slices of a volume
            kw["metadata"][FRAMES_KEY] = True
        return [(stacked, image_kw, "image"), (stacked_labels, label_kw, "labels")]
    _check_separate_count(root, images)
    layers = []
    for (image_path, mask_path), image, label in zip(pairs, images, labels, strict=True):
        stem = path_stem(image_path)
        layers.append(
            (image, _image_kwargs(f"{stem} image", image, (1.0, 1.0), [str(image_path)]), "image")
        )
        layers.append(
            (label, _labels_kwargs(f"{stem} mask", (1.0, 1.0), [str(mask_path)], label), "labels")
        )
    return _show_last_pair(layers)


def _show_last_pair(layers: list[LayerData]) -> list[LayerData]:
    """Hide all but the last (top) image + labels pair: separate pairs share the canvas, so an
    opaque image would cover the ones below while every mask stays drawn over it."""
    for _, kwargs, _ in layers[:-2]:
        kwargs["visible"] = False
    return layers


def _check_separate_count(root: Path, images: list[np.ndarray]) -> None:
    """Refuse more than :data:`MAX_SEPARATE_PAIRS` unstackable pairs, saying why they do not
    stack: different shapes, or one shape with mixed bit depths (8-bit files read as uint8,
    16-bit ones as float32 0..65535: one contrast range would not fit both)."""
    if len(images) <= MAX_SEPARATE_PAIRS:
        return
    shapes = sorted({str(im.shape) for im in images})
    if len(shapes) > 1:
        why = f"the images have different shapes ({', '.join(shapes[:5])})"
        fix = "Resize the images to one shape first"
    else:
        depths = sorted({"8-bit" if im.dtype == np.uint8 else "16-bit/float" for im in images})
        why = f"the images mix bit depths ({' and '.join(depths)}) in one shape {shapes[0]}"
        fix = "Save all images with one bit depth first"
    raise ValueError(
        f"folder {str(root)!r} has {len(images)} pairs but {why} and are not resized, padded "
        f"or rescaled; opening more than {MAX_SEPARATE_PAIRS} separate layer pairs is refused. "
        f"{fix}, or open a smaller folder or single files."
    )


def _nifti_pair(image_path: Path, mask_path: Path, name: str | None = None) -> list[LayerData]:
    image, spacing, origin = read_nifti_geometry(image_path)
    label, _, _ = read_nifti_geometry(mask_path)
    if image.shape != label.shape:
        raise ValueError(
            f"volume {str(image_path)!r} has shape {image.shape} but its labels "
            f"{str(mask_path)!r} have shape {label.shape}"
        )
    # the image's geometry for both: a pair overlays voxel for voxel (as it trains), even when
    # the labels' header lost the origin or spacing
    image, scale = nifti_to_napari(image, spacing)
    label, _ = nifti_to_napari(_as_labels(label, mask_path), spacing)
    translate = origin[::-1]
    base = name or path_stem(image_path)
    image_kw = _image_kwargs(f"{base} image", image, scale, [str(image_path)], translate)
    label_kw = _labels_kwargs(f"{base} labels", scale, [str(mask_path)], label, translate)
    return [(image, image_kw, "image"), (label, label_kw, "labels")]


def _read_paths(paths: list[str]) -> list[LayerData]:
    layers: list[LayerData] = []
    for p in paths:  # read everything first: an error leaves nothing half-loaded
        layers += read_pair_folder(p) if os.path.isdir(p) else read_nifti_layers(p)
    return layers


def folder_problem(folder: PathLike) -> str | None:
    """Why a folder that looks like (part of) a pair folder cannot be opened, else ``None``
    (a pair folder, or a folder unrelated to this reader that other readers may take)."""
    root = Path(folder)
    if _mask_folder(root) is not None:
        return None
    parent = root.parent
    if root.name.lower() in ("images", *_MASK_FOLDERS) and _mask_folder(parent) is not None:
        return (
            f"{str(root)!r} is the {root.name}/ sub-folder of a pair folder: open its parent "
            f"{str(parent)!r} to get the images with their masks, or open single files"
        )
    if (root / "images").is_dir():
        return (
            f"folder {str(root)!r} has images/ but no masks/ or labels/ sub-folder; "
            f"{READER_EXPECTS}"
        )
    if root.is_dir() and _folder_has(root, NIFTI_EXTENSIONS):
        return (
            f"folder {str(root)!r} holds NIfTI files but no images/ and labels/ sub-folders: "
            f"open one file, or put volumes in images/ and their labels in labels/; "
            f"{READER_EXPECTS}"
        )
    return None


def _refuse(message: str) -> Callable[..., list[LayerData]]:
    def read(_path: Any = None, **_: Any) -> list[LayerData]:
        raise ValueError(message)

    return read


def get_reader(path: PathLike | Sequence[PathLike]) -> Callable[..., list[LayerData]] | None:
    """npe2 reader hook: a reader for NIfTI files or image/mask pair folders, else ``None``.

    Returning ``None`` (not raising) for paths we do not handle lets napari try other readers.
    A folder that looks like part of a pair folder gets a reader that raises a ``ValueError``
    saying what to open instead (:func:`folder_problem`).
    """
    paths = [os.fspath(p) for p in path] if isinstance(path, list | tuple) else [os.fspath(path)]
    if not paths:
        return None
    for p in paths:
        if os.path.isdir(p):
            if _mask_folder(Path(p)) is None:
                problem = folder_problem(p)
                return _refuse(problem) if problem else None
        elif not is_nifti(p):
            return None
    return lambda _path=None, **_: _read_paths(paths)


def class_names_kwargs(names: Sequence[str]) -> dict[str, Any]:
    """Layer kwargs that name the classes of a Labels layer (by label value, background
    first): ``metadata["class_names"]``, which the panels read (table heads, a run trained on
    the layer), and a ``class`` feature, which napari's status bar shows under the cursor."""
    return {
        "metadata": {"class_names": list(names)},
        "features": {"index": np.arange(len(names)), "class": list(names)},
    }


def _with_class_names(layers: list[LayerData], sample: str) -> list[LayerData]:
    named = class_names_kwargs(sample_class_names(sample))
    out = []
    for data, kwargs, kind in layers:
        if kind == "labels":
            metadata = {**kwargs.get("metadata", {}), **named["metadata"]}
            kwargs = {**kwargs, "metadata": metadata, "features": named["features"]}
        out.append((data, kwargs, kind))
    return out


def kvasir_sample() -> list[LayerData]:
    """napari sample ``kvasir``: the 3 shipped Kvasir-SEG pairs stacked, polyps of 11 %, 2.4 % and
    44 % of the frame; layers ``kvasir image`` (3, 273, 320, 3) and ``kvasir mask`` {0, 1}
    (classes background, polyp)."""
    layers = read_pair_folder(
        sample_pairs_dir("kvasir"), name="kvasir image", mask_name="kvasir mask"
    )
    return _with_class_names(layers, "kvasir")


def acdc_sample() -> list[LayerData]:
    """napari sample ``acdc``: one ACDC cine-MRI volume (Z, Y, X); layers ``acdc image`` and
    ``acdc labels`` (0 background, 1 RV, 2 MYO, 3 LV, named in the layer)."""
    image_path, label_path = sample_files("acdc")[0]
    return _with_class_names(_nifti_pair(image_path, label_path, name="acdc"), "acdc")
