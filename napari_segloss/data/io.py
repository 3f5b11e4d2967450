"""Readers for 2D images, 2D masks and NIfTI volumes, and image/mask pair discovery.

Pure numpy + Pillow/tifffile/nibabel: no torch, Qt or napari, so the engine, the CLI, the napari
reader and notebooks can all share one definition of "how a mask file becomes labels".

Mask conventions (the reason this module exists):

* JPEG masks (e.g. Kvasir-SEG) are lossy: a binary mask comes back with ~18 grey levels around 0
  and 255. They are binarised at ``> 127`` to ``{0, 1}``. A JPEG that is not a blurred 0/255
  mask is refused (a threshold would misread it): grey levels in between (classes saved as
  grey levels, e.g. 0/128/255) or only small values (labels 0, 1, 2 saved as JPEG).
* An RGB(A) mask is reduced with the maximum over its colour channels first, so a white-on-black
  or coloured binary mask keeps every foreground pixel. Fully transparent pixels (alpha 0) are
  background; an alpha channel over one constant colour is the mask itself. A lossless mask with
  several colours (colour-coded classes) is refused: the maximum would merge the classes.
* Lossless masks (PNG/TIFF/BMP) whose only values are ``{0, 255}`` (or a subset; ``{0, 65535}``
  for 16-bit files) are binary masks and become ``{0, 1}``. Any other integer map is a label map
  and is kept as is (e.g. ACDC-style ``0..3``). Palette PNGs keep their palette indices as labels
  (VOC style), unless the palette is grey: then the grey values are read as from a grey PNG.
* Floating-point labels within ``1e-3`` of an integer (``0.99999`` from resampling or header
  scaling) are rounded; other fractions are refused (:func:`integer_labels`).

NIfTI files are returned in file axis order ``(X, Y, Z)`` with the voxel spacing from the header;
:func:`nifti_to_napari` converts to napari's ``(Z, Y, X)`` order (and reversed spacing as ``scale``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import tifffile
from PIL import Image

__all__ = [
    "IMAGE_EXTENSIONS",
    "JPEG_MASK_THRESHOLD",
    "MASK_EXTENSIONS",
    "NIFTI_EXTENSIONS",
    "exif_orientation",
    "find_pairs",
    "integer_labels",
    "is_nifti",
    "label_files_by_name",
    "nifti_origin",
    "nifti_to_napari",
    "orient_like_mask",
    "path_stem",
    "read_image",
    "read_image_and_orientation",
    "read_image_like_mask",
    "read_mask",
    "read_nifti",
    "read_nifti_geometry",
    "spacings_differ",
]

#: Lower-case suffixes (with the dot) of 2D image files the readers accept.
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
#: Lower-case suffixes (with the dot) of 2D mask files the readers accept.
MASK_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
#: Suffixes of NIfTI volumes (``.nii.gz`` is a double suffix; use :func:`path_stem`).
NIFTI_EXTENSIONS: tuple[str, ...] = (".nii", ".nii.gz")

_JPEG_EXTENSIONS = (".jpg", ".jpeg")
_TIFF_EXTENSIONS = (".tif", ".tiff")
#: Binarisation threshold of JPEG masks (``> 127`` is foreground): JPEG ringing keeps values near
#: 0 or near 255. A {0, 1} mask saved as JPEG therefore reads as empty.
JPEG_MASK_THRESHOLD = 127
_MAX_LISTED = 10  # how many unmatched names an error message spells out

log = logging.getLogger(__name__)


def _suffix(path: Path) -> str:
    """Lower-case suffix, treating ``.nii.gz`` as one suffix."""
    name = path.name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return path.suffix.lower()


def path_stem(path: str | Path) -> str:
    """File name without its extension; ``scan.nii.gz`` -> ``scan`` (``Path.stem`` gives ``scan.nii``)."""
    path = Path(path)
    suffix = _suffix(path)
    return path.name[: len(path.name) - len(suffix)] if suffix else path.name


def is_nifti(path: str | Path) -> bool:
    """True when ``path`` ends in ``.nii`` or ``.nii.gz`` (case-insensitive)."""
    return _suffix(Path(path)) in NIFTI_EXTENSIONS


def _check_file(path: str | Path, allowed: Sequence[str], what: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} file not found: {str(path)!r}")
    if not path.is_file():
        raise ValueError(
            f"{what} path must be a file, got a directory or special file: {str(path)!r}"
        )
    suffix = _suffix(path)
    if suffix not in allowed:
        raise ValueError(
            f"{what} file {str(path)!r} has unsupported extension {suffix or '(none)'!r}; "
            f"expected one of {', '.join(allowed)}"
        )
    return path


def _load_raw(path: Path, *, keep_palette: bool) -> np.ndarray:
    """Decode a 2D raster file to a numpy array without changing its values
    (:func:`_decode` without the EXIF tag)."""
    return _decode(path, keep_palette=keep_palette)[0]


def _decode(path: Path, *, keep_palette: bool, orientation: bool = False) -> tuple[np.ndarray, int]:
    """Decode a 2D raster file to a numpy array without changing its values, and (with
    ``orientation``, else 1) its EXIF orientation (:func:`exif_orientation`) from the same open.

    Pillow handles PNG/JPEG/BMP; palette images keep their indices when ``keep_palette`` (a palette
    mask stores labels as indices) and become RGB otherwise (a palette photo). TIFF goes through
    tifffile so 16-bit and float TIFFs survive. Any decoding failure is re-raised as a ValueError
    naming the file.
    """
    if _suffix(path) == ".png":
        _refuse_16bit_colour_png(path)
    try:
        if _suffix(path) in _TIFF_EXTENSIONS:
            return _read_tiff(path), 1
        with Image.open(path) as img:
            img.load()
            tag = _orientation_tag(img) if orientation else 1
            if img.mode in ("I;16", "I;16B", "I;16L"):
                # Pillow's 16-bit modes convert lossily through "I"; go via numpy explicitly.
                return np.asarray(img).astype(np.uint16), tag
            if img.mode in ("P", "PA") and (not keep_palette or _grey_palette(img)):
                # a grey palette stores grey levels (e.g. white index 0, black index 1)
                img = img.convert(
                    "RGBA" if img.mode == "PA" or "transparency" in img.info else "RGB"
                )
            if img.mode == "LA" and not keep_palette:
                img = img.getchannel("L")
            elif img.mode == "PA":
                img = img.getchannel("P")
            elif img.mode not in ("1", "L", "LA", "P", "RGB", "RGBA", "I", "F"):
                # CMYK, YCbCr, ... -> RGB so callers only ever see gray or RGB(A).
                img = img.convert("RGB")
            # np.array, not np.asarray: Pillow's buffer is read-only, and torch.from_numpy
            # (and in-place edits in notebooks) need a writable array
            return np.array(img), tag
    except Exception as exc:  # decoder errors come in many types (OSError, SyntaxError, ...)
        raise ValueError(f"cannot read {str(path)!r}: {type(exc).__name__}: {exc}") from exc


def _read_tiff(path: Path) -> np.ndarray:
    """The first series of a TIFF file, channels last: leading length-1 axes (``(1, H, W)``
    from a mask saved with a leading axis) are dropped, and a channels-first page, planar RGB
    (tifffile's axes ``SYX``) or an ImageJ/Fiji composite (``CYX``), becomes ``(H, W, C)``."""
    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        arr, axes = np.asarray(series.asarray()), series.axes
    if len(axes) != arr.ndim:  # not expected from tifffile; then trust the shape alone
        axes = "?" * arr.ndim
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr, axes = arr[0], axes[1:]
    if arr.ndim == 3 and axes[0] in "SC":
        arr = np.moveaxis(arr, 0, -1)
    return arr


#: PNG colour types with 3 colour channels (RGB, RGB + alpha), from the file's header
_PNG_COLOUR_TYPES = (2, 6)


def _refuse_16bit_colour_png(path: Path) -> None:
    """Refuse a 16-bit RGB(A) PNG: Pillow decodes it to 8 bits per channel (the high bytes),
    which would silently drop its precision. The bit depth and colour type are bytes 24 and 25
    of a PNG file (its IHDR chunk)."""
    try:
        with path.open("rb") as fh:
            head = fh.read(26)
    except OSError:
        return  # the decoder names the file and the error
    if len(head) == 26 and head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
        if head[24] == 16 and head[25] in _PNG_COLOUR_TYPES:
            raise ValueError(
                f"{str(path)!r} is a 16-bit colour PNG, which this reader would cut to 8 bits "
                "per channel; save it as a 16-bit TIFF (or an 8-bit PNG)"
            )


def _grey_palette(img: Image.Image) -> bool:
    """Whether every palette entry ``img`` uses is grey (R == G == B)."""
    palette = img.getpalette()
    if palette is None:
        return False
    used = np.unique(np.asarray(img.getchannel("P") if img.mode == "PA" else img))
    colours = np.asarray(palette + [0] * (768 - len(palette)), np.int64).reshape(-1, 3)[used]
    return bool(np.all(colours == colours[:, :1]))


def _as_2d_or_rgb(arr: np.ndarray, path: Path) -> np.ndarray:
    """Normalise channel layout to (H, W) or (H, W, 3); RGBA -> RGB, gray+alpha -> gray."""
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 3 and arr.shape[-1] == 2:  # gray + alpha (e.g. from TIFF)
        arr = arr[..., 0]
    if arr.ndim == 3 and arr.shape[-1] == 4:
        arr = arr[..., :3]
    if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] == 3):
        return arr
    raise ValueError(
        f"cannot interpret {str(path)!r} as a 2D image: expected shape (H, W) or (H, W, 3|4), "
        f"got {arr.shape} (multi-page/3D stacks are not supported here; use NIfTI for volumes)"
    )


def read_image(path: str | Path, *, keep_dtype: bool = False) -> np.ndarray:
    """Read a 2D image as ``(H, W)`` (gray) or ``(H, W, 3)`` (RGB).

    8-bit files come back as ``uint8``; 16-bit and floating-point files (PNG/TIFF) as ``float32``
    with their original values (normalisation is the dataset's job, not the reader's), or in
    their own integer type (e.g. ``uint16``) with ``keep_dtype=True``, for callers that check or
    report the file's real pixel type. An alpha channel is dropped. Raises
    ``FileNotFoundError`` / ``ValueError`` naming the file.
    """
    return read_image_and_orientation(path, keep_dtype=keep_dtype)[0]


def read_image_and_orientation(
    path: str | Path, *, keep_dtype: bool = False
) -> tuple[np.ndarray, int]:
    """:func:`read_image` and :func:`exif_orientation` from one open of the file: the stored
    pixels (not rotated) and the tag, for callers that orient the image themselves
    (:func:`orient_like_mask`)."""
    path = _check_file(path, IMAGE_EXTENSIONS, "image")
    raw, orientation = _decode(path, keep_palette=False, orientation=True)
    arr = _as_2d_or_rgb(raw, path)
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255, orientation
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr), orientation
    if arr.dtype.kind not in "uif":
        raise ValueError(f"cannot interpret {str(path)!r}: unsupported pixel type {arr.dtype}")
    if keep_dtype and arr.dtype.kind in "ui":
        return np.ascontiguousarray(arr), orientation
    return np.ascontiguousarray(arr, dtype=np.float32), orientation


#: Float labels within this distance of an integer are that integer (resampled or scaled label
#: volumes hold 0.99999 for 1); a larger fraction means the labels were interpolated.
LABEL_ROUNDING = 1e-3


def integer_labels(arr: np.ndarray, name: str | Path) -> np.ndarray:
    """Non-negative integer labels of a label array: ``uint8`` when they fit, else ``int64``.

    Floats within :data:`LABEL_ROUNDING` of an integer are rounded (a cast would turn ``0.99999``
    into 0). Raises ``ValueError`` naming ``name`` for NaN/Inf, other fractions or negative labels.
    """
    arr = np.asarray(arr)
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8)
    if arr.dtype.kind == "f":
        rounded = np.rint(arr)
        off = np.abs(arr - rounded)
        if not np.all(np.isfinite(arr)) or (off.size and float(off.max()) > LABEL_ROUNDING):
            bad = arr[~(off <= LABEL_ROUNDING)].ravel()[0]  # NaN fails the comparison too
            raise ValueError(
                f"{str(name)!r}: labels must be integers, found {float(bad):g} (dtype "
                f"{arr.dtype}); labels resampled with linear interpolation must be resampled "
                "again with nearest neighbour"
            )
        arr = rounded
    elif arr.dtype.kind not in "ui":
        raise ValueError(f"{str(name)!r}: unsupported label pixel type {arr.dtype}")
    if arr.size and arr.min() < 0:
        raise ValueError(f"{str(name)!r}: labels must be non-negative, found {arr.min()}")
    small = not arr.size or arr.max() <= 255
    return np.ascontiguousarray(arr, dtype=np.uint8 if small else np.int64)


def _alpha_to_mask(arr: np.ndarray) -> np.ndarray:
    """``(H, W[, C])`` mask values of an array with an alpha channel (last of 2 or 4 channels).

    Transparent pixels (alpha 0) are background: an exported overlay may be white or coloured
    under them. When the colour is one constant and only alpha varies, alpha is the mask.
    """
    colour, alpha = arr[..., :-1], arr[..., -1]
    if alpha.size and alpha.max() == 0:  # fully transparent: an empty overlay
        return np.zeros(alpha.shape, arr.dtype)
    if alpha.min() == alpha.max():
        return colour[..., 0] if colour.shape[-1] == 1 else colour
    flat = colour.reshape(-1, colour.shape[-1])
    if np.all(flat == flat[0]):
        return alpha
    colour = colour.copy()
    colour[alpha == 0] = 0
    return colour[..., 0] if colour.shape[-1] == 1 else colour


def _channel_max(rgb: np.ndarray) -> np.ndarray:
    """``rgb.max(axis=-1)`` for ``(H, W, C)``: one ``np.maximum`` per channel, several times
    faster than numpy's reduction over a short last axis (a large part of reading a mask)."""
    out = rgb[..., 0].copy()
    for c in range(1, rgb.shape[-1]):
        np.maximum(out, rgb[..., c], out=out)
    return out


def _all_in_window(mask: np.ndarray, k: int = 5) -> np.ndarray:
    """``sliding_window_view(mask, (k, k)).all(axis=(-2, -1))``, computed separably (rows, then
    columns) with ``2 (k - 1)`` whole-array ANDs: the same array, without the strided reduction
    over ``k * k`` values per pixel that cost more than decoding the file."""
    h, w = mask.shape
    rows = mask[: h - k + 1].copy()
    for i in range(1, k):
        rows &= mask[i : h - k + 1 + i]
    out = rows[:, : w - k + 1].copy()
    for j in range(1, k):
        out &= rows[:, j : w - k + 1 + j]
    return out


def _check_colours(
    rgb: np.ndarray, path: Path, *, lossy: bool = False, top: np.ndarray | None = None
) -> None:
    """Refuse a mask whose foreground has several colours (colour-coded classes).

    Colours are compared after dividing by their brightest channel, so the anti-aliased edge of
    one colour (a blend with black) is the same colour; a colour counts from 2 % of the
    foreground (blends between two colours at their border do not). ``lossy`` (JPEG): only
    pixels 2 or more pixels inside the foreground, on 3 levels per channel instead of 5.
    ``top``: ``rgb``'s maximum over channels when the caller has it already.
    """
    top = _channel_max(rgb) if top is None else top
    # lossless: every non-black pixel (dark colour-coded classes too); JPEG: the foreground
    # the threshold will keep, not the compression noise near black
    fg = top > (JPEG_MASK_THRESHOLD if lossy else 0)
    if lossy and fg.shape[0] >= 5 and fg.shape[1] >= 5:
        # JPEG blurs colour along edges: compare colours away from them only
        inner = _all_in_window(fg)
        fg = np.zeros_like(fg)
        fg[2:-2, 2:-2] = inner
    if not fg.any():
        return
    steps = 2 if lossy else 4
    # per channel plane, not on (N, 3) rows: the same float32 operations, element by element
    brightest = top[fg].astype(np.float32)
    codes = np.zeros(brightest.shape, np.int64)
    for c, weight in enumerate((25, 5, 1)):
        level = np.rint(steps * rgb[..., c][fg].astype(np.float32) / brightest)
        codes += weight * level.astype(np.int64)
    # codes are small non-negative integers: a bincount, not np.unique's sort
    counts = np.bincount(codes)
    major = np.flatnonzero(counts >= max(0.02 * fg.sum(), 1))
    if len(major) > 1:
        pixels = rgb[fg].astype(np.float32)
        shown = ", ".join(str(tuple(int(v) for v in pixels[codes == c][0])) for c in major[:4])
        photo = (
            "; its many colours cover most pixels, as in a photo: is this an image given as a "
            "mask (the images folder as the masks or --gt)?"
            if _looks_like_a_photo(rgb, top)
            else ""
        )
        raise ValueError(
            f"mask {str(path)!r} has {len(major)} foreground colours ({shown}): colour-coded "
            "classes cannot be read as one mask; save a label map instead (0 background, "
            f"1, 2, ... one value per class, grey PNG or TIFF){photo}"
        )


def _looks_like_a_photo(rgb: np.ndarray, top: np.ndarray) -> bool:
    """Most pixels coloured, in thousands of colours: a photo passed as a mask (colour-coded
    classes are a few flat colours, mostly on a black background, even after JPEG)."""
    if np.count_nonzero(top) < 0.75 * top.size:
        return False
    packed = rgb[..., :3].astype(np.int64) @ np.array([1 << 32, 1 << 16, 1], np.int64)
    return len(np.unique(packed)) > 4096


def _check_jpeg_mask(arr: np.ndarray, path: Path) -> None:
    """Refuse a JPEG that the ``> 127`` threshold would misread (see the module docstring).

    A JPEG-compressed 0/255 mask (Kvasir-SEG) has grey values only in a thin band along edges
    (ringing, blurred colour); a 5x5 block of grey levels between 64 and 191 is a region, i.e. a
    class saved as a grey level. Only small values (at most 31), some above 0, are labels 0, 1,
    2... saved as JPEG.
    """
    fix = "save masks losslessly (PNG or TIFF) with labels 0, 1, 2, ... one value per class"
    middle = (arr >= 64) & (arr < 192)
    if middle.shape[0] >= 5 and middle.shape[1] >= 5 and middle.any():
        region = _all_in_window(middle)
        if region.any():
            y, x = np.argwhere(region)[0] + 2
            level = int(np.median(arr[2:-2, 2:-2][region]))
            raise ValueError(
                f"mask {str(path)!r} is a JPEG with a region of grey level ~{level} (e.g. at row "
                f"{y}, column {x}): JPEG masks are read as 0/255 binary masks, not "
                f"grey-level classes; {fix}"
            )
    top = int(arr.max()) if arr.size else 0
    if 0 < top <= 31:
        raise ValueError(
            f"mask {str(path)!r} is a JPEG whose values are at most {top}: JPEG masks are read "
            f"as 0/255 binary masks (> {JPEG_MASK_THRESHOLD} is foreground), so this one would "
            f"read as empty; {fix}"
        )


def read_mask(path: str | Path) -> np.ndarray:
    """Read a 2D mask as ``(H, W)`` ``uint8`` integer labels.

    Rules, in order (module docstring): alpha (transparent is background); RGB -> max over colour
    channels (several colours refused in lossless files); JPEG -> ``> 127`` gives ``{0, 1}``;
    values only in ``{0, 255}`` (``{0, 65535}`` for 16 bits) -> ``{0, 1}``; otherwise a label map
    kept as is. Raises ``ValueError`` naming the file for a JPEG or colour mask that cannot be
    read that way, and for negative, fractional or > 255 values.
    """
    path = _check_file(path, MASK_EXTENSIONS, "mask")
    arr = _load_raw(path, keep_palette=True)
    if arr.ndim == 3 and arr.shape[-1] in (2, 4):
        arr = _alpha_to_mask(arr)
    arr = _as_2d_or_rgb(arr, path)
    jpeg = _suffix(path) in _JPEG_EXTENSIONS
    if arr.ndim == 3:
        top = _channel_max(arr)
        _check_colours(arr, path, lossy=jpeg, top=top)
        arr = top
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8)
    if jpeg:
        _check_jpeg_mask(arr, path)
        return (arr > JPEG_MASK_THRESHOLD).astype(np.uint8)
    if arr.dtype.kind in "ui" and arr.dtype.itemsize > 1:
        full = np.iinfo(arr.dtype).max  # a 16-bit binary mask (e.g. saved by ImageJ)
        if arr.size and arr.max() == full and np.all(np.isin(np.unique(arr), (0, full))):
            return (arr == full).astype(np.uint8)
    arr = integer_labels(arr, f"mask {path}")
    if arr.dtype != np.uint8:
        raise ValueError(
            f"mask {str(path)!r} has labels in [{arr.min()}, {arr.max()}]; expected 0..255"
        )
    values = np.unique(arr)
    if np.all(np.isin(values, (0, 255))):
        return (arr == 255).astype(np.uint8)
    return arr


#: ``segloss predict --probs`` outputs: probability maps beside the label files, not labels
_PROBS_SUFFIXES = ("_probs.tif", "_probs.nii.gz")


def _list_files(
    folder: Path, extensions: Iterable[str], role: str, *, skip_probs: bool = False
) -> dict[str, Path]:
    """The files of ``folder`` with one of ``extensions`` by :func:`path_stem` (hidden files
    ignored; ``skip_probs``: ``--probs`` outputs too). ``role`` names the folder in messages.

    ValueError: no such folder, no such file, or two files of one stem (``a.png`` and ``a.jpg``:
    one would silently stand for the other wherever files are matched by stem).
    """
    if not folder.is_dir():
        raise ValueError(f"{role} folder not found: {str(folder)!r}")
    extensions = tuple(extensions)
    by_stem: dict[str, Path] = {}
    subfolders: list[Path] = []
    for p in sorted(folder.iterdir()):
        if not p.name.startswith(".") and p.is_dir():
            subfolders.append(p)
        if p.name.startswith(".") or not p.is_file() or _suffix(p) not in extensions:
            continue
        if skip_probs and p.name.endswith(_PROBS_SUFFIXES):
            continue
        stem = path_stem(p)
        if stem in by_stem:
            raise ValueError(
                f"{role} folder {str(folder)!r} has two files with the stem {stem!r}: "
                f"{by_stem[stem].name!r} and {p.name!r}; files are matched by stem, keep one"
            )
        by_stem[stem] = p
    nested = _nested_with(subfolders, extensions)
    if not by_stem:
        inside = f" (only in its sub-folders {nested}, which are not read)" if nested else ""
        raise ValueError(
            f"{role} folder {str(folder)!r} contains no files with extension "
            f"{', '.join(extensions)}{inside}"
        )
    if nested:  # files are matched at the top level only: say what is left out
        log.warning("%s folder %s: its sub-folders %s are not read", role, folder, nested)
    return by_stem


def _nested_with(subfolders: Sequence[Path], extensions: tuple[str, ...], limit: int = 3) -> str:
    """Those of ``subfolders`` (a few, quoted) that hold files with ``extensions``."""
    found = [
        d.name
        for d in subfolders
        if any(f.is_file() and _suffix(f) in extensions for f in d.rglob("*"))
    ]
    shown = ", ".join(repr(n) for n in found[:limit])
    return shown + (", ..." if len(found) > limit else "")


def _names(stems: Iterable[str], files: dict[str, Path]) -> str:
    names = [files[s].name for s in sorted(stems)]
    shown = ", ".join(names[:_MAX_LISTED])
    return shown + (f" ... ({len(names) - _MAX_LISTED} more)" if len(names) > _MAX_LISTED else "")


def find_pairs(
    root: str | Path,
    images: str = "images",
    masks: str = "masks",
    *,
    image_extensions: Sequence[str] = IMAGE_EXTENSIONS,
    mask_extensions: Sequence[str] = MASK_EXTENSIONS,
    nifti: bool = False,
) -> list[tuple[Path, Path]]:
    """Match ``root/images/*`` with ``root/masks/*`` by file stem (extensions may differ).

    Returns ``(image, mask)`` paths sorted by stem. Hidden files and files with other extensions
    are ignored. Raises ``ValueError`` naming the unmatched files (in both directions), an empty
    or missing folder, or two files with one stem. ``nifti=True`` matches NIfTI volumes
    (``NIFTI_EXTENSIONS`` for both folders, ``.nii.gz`` handled) instead of 2D files.
    """
    if nifti:
        image_extensions = mask_extensions = NIFTI_EXTENSIONS
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"root must be an existing folder, got {str(root)!r}")
    image_files = _list_files(root / images, image_extensions, "images")
    mask_files = _list_files(root / masks, mask_extensions, "masks")
    no_mask = image_files.keys() - mask_files.keys()
    no_image = mask_files.keys() - image_files.keys()
    if no_mask or no_image:
        problems = []
        if no_mask:
            problems.append(
                f"{len(no_mask)} image(s) in {str(root / images)!r} without a mask: "
                f"{_names(no_mask, image_files)}"
            )
        if no_image:
            problems.append(
                f"{len(no_image)} mask(s) in {str(root / masks)!r} without an image: "
                f"{_names(no_image, mask_files)}"
            )
        raise ValueError(
            "unmatched image/mask files (matched by file stem): " + "; ".join(problems)
        )
    return [(image_files[s], mask_files[s]) for s in sorted(image_files)]


def _load_nifti(path: str | Path) -> tuple[np.ndarray, tuple[float, ...], np.ndarray]:
    """The array in file order ``(X, Y[, Z])``, its spacing and the header's 4x4 affine."""
    path = _check_file(path, NIFTI_EXTENSIONS, "NIfTI")
    try:
        img = nib.load(str(path))
        arr = np.asanyarray(img.dataobj)
        zooms = tuple(float(z) for z in img.header.get_zooms())
        affine = np.asarray(img.affine, dtype=np.float64)
    except Exception as exc:
        raise ValueError(f"cannot read {str(path)!r}: {type(exc).__name__}: {exc}") from exc
    while arr.ndim > 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3):
        raise ValueError(
            f"cannot interpret NIfTI {str(path)!r}: expected a 2D or 3D volume (X, Y[, Z]), "
            f"got shape {arr.shape}"
        )
    spacing = zooms[: arr.ndim]
    # A zero/negative/NaN zoom is a broken header; 1.0 keeps distances in voxels.
    spacing = tuple(z if np.isfinite(z) and z > 0 else 1.0 for z in spacing)
    spacing = spacing + (1.0,) * (arr.ndim - len(spacing))
    return np.asarray(arr), spacing, affine


def read_nifti(path: str | Path) -> tuple[np.ndarray, tuple[float, ...]]:
    """Read a NIfTI volume in file axis order ``(X, Y, Z)`` with its voxel spacing.

    The array keeps the on-disk dtype (``uint8`` labels stay ``uint8``) unless the header asks
    for intensity scaling. Trailing singleton axes beyond the third are dropped (``(X, Y, Z, 1)``
    is a 3D volume); data that is still 4-D or more raises ``ValueError`` naming the file, since
    a time/channel axis has no single meaning here. Spacing comes from ``header.get_zooms()``.
    """
    arr, spacing, _ = _load_nifti(path)
    return arr, spacing


def spacings_differ(a: Sequence[float] | None, b: Sequence[float] | None) -> bool:
    """Whether two headers give another voxel spacing for the same axes (within 0.1 %): the
    same labels would then give other distances (HD95, NSD). Unknown spacings never differ."""
    return bool(a) and bool(b) and len(a) == len(b) and not np.allclose(a, b, rtol=1e-3)


def nifti_origin(affine: np.ndarray, ndim: int = 3) -> tuple[float, ...]:
    """World position (header units, mm) of voxel 0 along each file axis ``(X, Y[, Z])``, for
    a layer ``translate``; zeros unless the voxel axes are the world axes (diagonal affine with
    positive spacing).

    napari places a layer by scale + translate per array axis. That equals the header geometry
    only for such an affine: with a rotation (oblique cardiac short-axis stacks) or a flip, the
    origin is not where voxel 0 sits along the array axis, so shifting by it would misplace the
    volume. The full affine is not passed to napari either: a rotated layer cannot be sliced in
    2D as acquired, and training and predictions work in voxel order (see :func:`nifti_to_napari`).
    """
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or ndim not in (2, 3):
        raise ValueError(f"affine must be 4x4 and ndim 2 or 3, got {affine.shape} and {ndim}")
    linear = affine[:3, :3]
    aligned = np.all(np.isfinite(affine)) and np.all(np.diag(linear) > 0)
    aligned = aligned and np.count_nonzero(linear - np.diag(np.diag(linear))) == 0
    if not aligned:
        return (0.0,) * ndim
    return tuple(float(v) for v in affine[:ndim, 3])


def read_nifti_geometry(
    path: str | Path,
) -> tuple[np.ndarray, tuple[float, ...], tuple[float, ...]]:
    """:func:`read_nifti` plus :func:`nifti_origin` from the same open: ``(array, spacing,
    origin)``, all in file axis order ``(X, Y[, Z])``."""
    arr, spacing, affine = _load_nifti(path)
    return arr, spacing, nifti_origin(affine, arr.ndim)


def nifti_to_napari(
    array: np.ndarray, spacing: Sequence[float] | None = None
) -> tuple[np.ndarray, tuple[float, ...]]:
    """Reorder a NIfTI array from file order ``(X, Y[, Z])`` to napari order ``([Z,] Y, X)``.

    napari treats the first axes as slider axes and the last two as (rows, columns), so the
    short-axis slice index ``Z`` becomes the slider and each slice is shown with ``Y`` as rows.
    Returns a transposed view and the matching ``scale`` (spacing reversed; ones if ``None``).
    """
    array = np.asarray(array)
    if array.ndim not in (2, 3):
        raise ValueError(f"array must be 2D or 3D (X, Y[, Z]), got shape {array.shape}")
    if spacing is None:
        spacing = (1.0,) * array.ndim
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != array.ndim:
        raise ValueError(
            f"spacing must have one value per axis ({array.ndim}), got {len(spacing)}: {spacing}"
        )
    return array.T, spacing[::-1]


def label_files_by_name(folder: Path, role: str) -> dict[str, Path]:
    """The label files of ``folder`` (2D masks and NIfTI) by :func:`path_stem`, for pairing
    predictions with ground truth; ``role`` names the folder in messages. Probability maps
    written by ``segloss predict --probs`` are skipped.

    ValueError: no such folder, no label file, or two files of one stem (``a.png`` and
    ``a.jpg``: one would silently stand for the other).
    """
    return _list_files(folder, (*MASK_EXTENSIONS, *NIFTI_EXTENSIONS), role, skip_probs=True)


#: EXIF orientation -> the stored (H, W[, C]) array as photo viewers show it
_EXIF_VIEW = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.rot90(a, 2).swapaxes(0, 1),
    8: lambda a: np.rot90(a, 1),
}


def exif_orientation(path: str | Path) -> int:
    """The EXIF orientation tag of a JPEG/PNG/BMP file (1, the stored pixels, when absent)."""
    if _suffix(Path(path)) in _TIFF_EXTENSIONS:
        return 1  # read with tifffile, which (like napari) ignores the tag
    try:
        with Image.open(path) as img:
            return _orientation_tag(img)
    except Exception:  # unreadable: the reader itself reports it
        return 1


def _orientation_tag(img: Image.Image) -> int:
    """The EXIF orientation of an open image, 1 when absent, unknown or unreadable (a broken
    EXIF block must not stop a decodable image)."""
    try:
        value = img.getexif().get(0x0112, 1)
    except Exception:
        return 1
    return int(value) if value in _EXIF_VIEW else 1


def read_image_like_mask(
    path: str | Path, mask_shape: tuple[int, ...], *, keep_dtype: bool = False
) -> np.ndarray:
    """:func:`read_image` in the orientation of its mask of ``mask_shape`` (an EXIF tag
    decides, see :func:`orient_like_mask`): the one rule of the datasets and the napari
    reader."""
    raw, orientation = read_image_and_orientation(path, keep_dtype=keep_dtype)
    return orient_like_mask(raw, orientation, mask_shape, str(path))


def orient_like_mask(
    image: np.ndarray, orientation: int, mask_shape: tuple[int, ...], name: str
) -> np.ndarray:
    """The (H, W[, C]) ``image`` with EXIF ``orientation``, in the orientation its mask has.

    The readers keep the stored pixels (as napari and tifffile do), while photo viewers and
    most annotation tools rotate by the tag: a mask may have been drawn on either. The shapes
    decide for a 90-degree tag on a non-square image; otherwise (flips, 180 degrees, square
    images) both fit, and guessing could train on a mask upside down: ValueError.
    """
    if orientation == 1:
        return image
    shown = _EXIF_VIEW[orientation](image)
    stored_fits, shown_fits = image.shape[:2] == mask_shape, shown.shape[:2] == mask_shape
    if stored_fits != shown_fits:
        return np.ascontiguousarray(shown) if shown_fits else image
    if not stored_fits:
        return image  # fits neither: the caller's size check reports it
    raise ValueError(
        f"{name}: the image carries an EXIF orientation tag ({orientation}), so its mask may "
        "have been drawn on the stored pixels (as napari shows them) or on the picture as "
        "photo viewers show it, and both fit: re-save the image without the tag, rotated as "
        "its mask was drawn (PIL.ImageOps.exif_transpose rotates it as viewers show it)"
    )
