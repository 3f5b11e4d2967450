"""File input and output of ``segloss predict`` and ``segloss evaluate``: which files an
``--input`` names, reading and checking images against a checkpoint, writing label and
probability files (NIfTI keeps its input's geometry), reading label files for scoring.

Like :mod:`napari_segloss.cli`, each function imports what it reads or writes when it runs, so
that ``segloss --help`` loads no numpy, image readers or torch, and ``segloss evaluate`` no torch.
"""

from __future__ import annotations

import csv
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "METRIC_KEYS",
    "CLIError",
    "check_prediction_paths",
    "expand_inputs",
    "prediction_paths",
    "read_input",
    "read_label_pairs",
    "read_labels",
    "spacing_note",
    "write_2d",
    "write_nifti",
    "write_per_image_csv",
    "write_prediction",
]

#: the per-class metrics of ``metrics.evaluate``, in the order of per_image.csv's columns
METRIC_KEYS = ("dice", "iou", "precision", "recall", "nsd", "hd95")

#: a labelled pair to score: ``(name, prediction, ground truth, ground-truth spacing or None)``
LabelPair = tuple[str, "np.ndarray", "np.ndarray", "tuple[float, ...] | None"]


class CLIError(ValueError):
    """A user-facing problem reported as one line with exit code 2."""


def expand_inputs(inputs: Sequence[str]) -> list[Path]:
    """The files of ``--input``: files as given, folders' image/NIfTI files in name order."""
    from .data.io import IMAGE_EXTENSIONS, is_nifti

    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(
                f
                for f in p.iterdir()
                if f.is_file()
                and not f.name.startswith(".")
                and (f.suffix.lower() in IMAGE_EXTENSIONS or is_nifti(f))
            )
            if not found:
                raise CLIError(f"input folder {str(p)!r} holds no image or NIfTI files")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise CLIError(f"input not found: {str(p)!r}")
    return files


def write_2d(path: Path, array: np.ndarray, orientation: int = 1) -> None:
    """A 2D label (or probability) array as TIFF (``.tif``/``.tiff``) or another PIL format.

    ``orientation``: the EXIF orientation tag of the input photo, written into the output
    (TIFF tag 274, a PNG's eXIf chunk) so that photo viewers, which turn the photo by its tag,
    turn its labels alike; the pixels stay in the stored orientation, as napari and our readers
    show both.
    """
    import tifffile
    from PIL import Image

    if path.suffix in (".tif", ".tiff"):
        tifffile.imwrite(path, array, extratags=_orientation_tags(orientation))
    elif orientation != 1:
        exif = Image.Exif()
        exif[0x0112] = orientation
        Image.fromarray(array).save(path, exif=exif)
    else:
        Image.fromarray(array).save(path)


def _orientation_tags(orientation: int) -> list[tuple[int, str, int, int, bool]] | None:
    """tifffile's ``extratags`` for an EXIF orientation (TIFF tag 274); None for 1 (stored)."""
    return [(274, "H", 1, orientation, True)] if orientation != 1 else None


def write_nifti(path: Path, array: np.ndarray, like: Any) -> None:
    """Save ``array`` with the geometry of the input image ``like`` (a nibabel image).

    A fresh header would keep the affine but drop the qform/sform codes and the units (mm),
    so viewers that read the qform, or the units, would not overlay the output on its input.
    The input's header is copied instead, with the output's dtype (a copied header keeps the
    input's dtype otherwise) and no intensity window or scaling of the input image.
    """
    import nibabel as nib

    header = like.header.copy()
    header.set_data_dtype(array.dtype)
    header.set_slope_inter(None, None)
    header["cal_min"], header["cal_max"] = 0, 0
    nib.save(nib.Nifti1Image(array, like.affine, header), str(path))


def read_input(
    path: Path,
    meta: dict[str, Any],
    *,
    fill_nonfinite: float | None = None,
    to_grey: bool = False,
    report: bool = False,
) -> tuple[np.ndarray, Any]:
    """``(array, nifti image or None)`` ready for ``engine.inference.predict``, checked against
    the checkpoint's ``meta``.

    Raises ``CLIError`` naming the file: a colour image for a grey model (unless ``to_grey``,
    --to-grey), NaN/Inf pixels (unless ``fill_nonfinite``, --fill-nonfinite), an 8-bit model
    given another pixel type, ... ``report`` prints how many NaN/Inf pixels were replaced.
    """
    import nibabel as nib
    import numpy as np

    from .data.io import is_nifti, read_image, read_nifti
    from .engine.inference import check_image, meta_scale

    img = None
    try:
        if is_nifti(path):
            img = nib.load(str(path))  # its header and affine go to the outputs
            vol, _ = read_nifti(path)  # as training reads it: (X, Y, Z, 1) is a volume
            if vol.ndim != 3:
                raise CLIError(f"NIfTI {str(path)!r}: expected a 3D volume, got {vol.shape}")
            # (X, Y, Z) file order -> (Z, Y, X): slices along Z, as napari shows them.
            array, rgb = np.ascontiguousarray(vol.transpose(2, 1, 0)), False
        else:
            array = read_image(path, keep_dtype=True)  # a 16-bit file stays uint16
            rgb = array.ndim == 3
        if fill_nonfinite is not None and array.dtype.kind == "f":
            bad = int(array.size - np.count_nonzero(np.isfinite(array)))
            if bad:
                array = np.nan_to_num(
                    array, nan=fill_nonfinite, posinf=fill_nonfinite,
                    neginf=fill_nonfinite,
                )  # fmt: skip
                if report:
                    print(  # a diagnostic, with predict's per-file lines: stderr
                        f"  {path.name}: replaced {bad} NaN/Inf value(s) with {fill_nonfinite}",
                        file=sys.stderr,
                    )
        array = check_image(
            array,
            in_channels=int(meta.get("in_channels") or 3),
            spatial_dims=int(meta.get("spatial_dims") or 2),
            scale=meta_scale(meta),
            rgb=rgb,
            grey=to_grey,
        )
    except CLIError:
        raise
    except (ValueError, OSError) as exc:
        raise CLIError(f"input {str(path)!r}: {str(exc).splitlines()[0]}") from None
    return array, img


def prediction_paths(
    out: Path, source: Path, *, nifti: bool, fmt: str = "auto", probs: bool = False
) -> list[Path]:
    """The files :func:`write_prediction` writes for ``source``: its labels first, then its
    probabilities when ``probs``."""
    from .data.io import path_stem

    stem = path_stem(source)
    if nifti:
        return [out / f"{stem}.nii.gz", *([out / f"{stem}_probs.nii.gz"] if probs else [])]
    ext = (
        fmt if fmt != "auto" else (".tif" if source.suffix.lower() in (".tif", ".tiff") else ".png")
    )
    label_path = out / f"{stem}{ext if ext.startswith('.') else '.' + ext}"
    return [label_path, *([out / f"{stem}_probs.tif"] if probs else [])]


def check_prediction_paths(
    out: Path,
    sources: Sequence[Path],
    *,
    fmt: str = "auto",
    probs: bool = False,
    input_folders: Sequence[Path] = (),
) -> None:
    """CLIError before anything is written when ``out`` is a file, when ``out`` is one of the
    ``input_folders`` (JPEG frames got ``.png`` label maps beside them: the folder then held
    two files per stem and no longer read as an image folder), when two inputs would write the
    same file (``a.jpg`` and ``a.png`` both give ``a.png``: the first one was lost while the
    count said both were written), or when an output would overwrite an input."""
    from .data.io import is_nifti

    if out.exists() and not out.is_dir():
        raise CLIError(f"--output: expected a folder, {str(out)!r} is a file")
    if out.exists() and any(out.samefile(folder) for folder in input_folders):
        raise CLIError(
            f"--output: {str(out)!r} is an input folder; label maps written there would lie "
            "among the images it holds (two files per name); choose another output folder"
        )
    inputs = {p.resolve(): p for p in sources}
    written: dict[Path, Path] = {}
    for source in sources:
        for path in prediction_paths(out, source, nifti=is_nifti(source), fmt=fmt, probs=probs):
            key = path.resolve()
            if key in inputs:
                raise CLIError(
                    f"--output: the prediction of {str(source)!r} would overwrite the input "
                    f"{str(inputs[key])!r}; choose another output folder"
                )
            if key in written:
                raise CLIError(
                    f"--output: {str(written[key])!r} and {str(source)!r} would both be written "
                    f"to {str(path)!r}; predict them into separate folders or rename one"
                )
            written[key] = source


def write_prediction(
    out: Path,
    source: Path,
    labels: np.ndarray,
    probs: np.ndarray | None,
    *,
    img: Any,
    meta: Mapping[str, Any],
    fmt: str = "auto",
) -> Path:
    """Write one input's labels (and ``probs`` when given) into ``out``; returns the label file.

    A NIfTI input (``img``, its nibabel image) gives NIfTI outputs in its file axis order and
    geometry; a 2D image gives ``fmt`` (``png``, ``tif``; ``auto``: TIFF for TIFF inputs, else
    PNG) and a float32 TIFF of probabilities. The paths are :func:`prediction_paths`'.
    """
    import numpy as np
    import tifffile

    from .data.io import exif_orientation

    paths = prediction_paths(out, source, nifti=img is not None, fmt=fmt, probs=probs is not None)
    # uint8 up to 256 classes, else uint16 (a cast to uint8 wrapped labels modulo 256, and
    # PNG has no 32-bit integer mode)
    small = int(labels.max(initial=0)) < 256
    labels = labels.astype(np.uint8 if small else np.uint16, copy=False)
    if img is not None:
        write_nifti(paths[0], labels.transpose(2, 1, 0), img)
        if probs is not None:  # (Z, K, Y, X), or (K, Z, Y, X) from a 3D network -> (X, Y, Z, K)
            axes = (3, 2, 1, 0) if int(meta.get("spatial_dims") or 2) == 3 else (3, 2, 0, 1)
            write_nifti(paths[1], probs.transpose(axes), img)
        return paths[0]
    orientation = exif_orientation(source)  # 1 for TIFF inputs (read without the tag)
    write_2d(paths[0], labels, orientation)
    if probs is not None:  # (K, H, W): the tag turns each plane as viewers turn the photo
        tifffile.imwrite(
            paths[1], probs.astype(np.float32), extratags=_orientation_tags(orientation)
        )
    return paths[0]


def read_labels(path: Path) -> tuple[np.ndarray, tuple[float, ...] | None]:
    """An int64 label array and, for NIfTI, the header's spacing (None for 2D images)."""
    import numpy as np

    from .data.io import integer_labels, is_nifti, read_mask, read_nifti

    if is_nifti(path):
        arr, spacing = read_nifti(path)
        # integer_labels, not astype: a float 0.99999 (resampled labels) is 1, not 0
        return integer_labels(arr, path).astype(np.int64), spacing
    return read_mask(path).astype(np.int64), None


def spacing_note(used: Sequence[tuple[float, ...] | None], given: bool) -> str:
    """Which spacing the NSD tolerance and HD95 were measured in, with its numbers: a reader of
    summary.md must know whether distances are pixels or the NIfTI header's units (mm)."""
    found = sorted({s for s in used if s is not None})
    if not found:
        return "pixel units"
    source = "--spacing" if given else "NIfTI header spacing (X, Y, Z) ="
    shown = ", ".join(str(tuple(round(v, 6) for v in s)) for s in found[:3])
    more = f" and {len(found) - 3} more" if len(found) > 3 else ""
    pixels = " (2D images: pixel units)" if None in used else ""
    return f"{source} {shown}{more}{pixels}"


def read_label_pairs(pred_dir: str | Path, gt_dir: str | Path) -> tuple[list[LabelPair], int]:
    """The predictions of ``pred_dir`` with their ground truth of the same name in ``gt_dir``,
    in name order, and the number of ground-truth files without a prediction.

    Raises ``CLIError`` for a prediction without a ground truth or of another shape.
    """
    from .data.io import label_files_by_name, spacings_differ

    preds = label_files_by_name(Path(pred_dir), "pred")
    gts = label_files_by_name(Path(gt_dir), "gt")
    missing = sorted(set(preds) - set(gts))
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise CLIError(f"{len(missing)} prediction(s) without a ground truth in {gt_dir}: {shown}")
    pairs: list[LabelPair] = []
    other_spacing: list[str] = []
    for stem in sorted(preds):
        pred, pred_spacing = read_labels(preds[stem])
        gt, gt_spacing = read_labels(gts[stem])
        if pred.shape != gt.shape:
            raise CLIError(
                f"{stem}: prediction shape {pred.shape} differs from ground truth {gt.shape}"
            )
        if spacings_differ(pred_spacing, gt_spacing):
            other_spacing.append(f"{stem} {tuple(pred_spacing)} vs {tuple(gt_spacing)}")
        pairs.append((stem, pred, gt, gt_spacing))
    if other_spacing:  # the same labels give other distances (HD95, NSD) in another spacing
        print(  # a diagnostic: stderr
            f"segloss evaluate: note: {len(other_spacing)} prediction header(s) give another "
            f"voxel spacing than the ground truth's, which the distances use (e.g. "
            f"{other_spacing[0]})",
            file=sys.stderr,
        )
    return pairs, len(set(gts) - set(preds))


def write_per_image_csv(
    path: Path, per_image: Sequence[tuple[str, Mapping[int, Mapping[str, float]]]]
) -> None:
    """per_image.csv: one row per image and class, :data:`METRIC_KEYS` as columns (NaN kept)."""
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["image", "class", *METRIC_KEYS])
        writer.writeheader()
        for stem, result in per_image:
            for cls, metrics in result.items():
                row = {k: metrics.get(k, math.nan) for k in METRIC_KEYS}
                writer.writerow({"image": stem, "class": int(cls), **row})
