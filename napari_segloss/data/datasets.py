"""Image/mask datasets for training: image folders, NIfTI volumes (2D slices) and in-memory arrays.

3D patches of NIfTI volumes (``data.slices: 3d``) live in :mod:`.patches`; the config-driven
factory (``build_datasets``, splits) in :mod:`.factory`.

Every dataset yields ``(image, mask)``: ``image`` float32 ``(C, H, W)`` normalised as
:class:`~napari_segloss.data.transforms.Normalization` says (default: /255 to [0, 1], then
ImageNet mean/std for RGB), ``mask`` int64 ``(H, W)`` class labels.

Decoded, resized pairs are cached in memory (``cache=True``) so each file is decoded once per
process; :meth:`SegmentationDataset.validate` reads every pair up front (in threads) which both
fills the cache before DataLoader workers fork and checks the data before the first training
step: size mismatches, channel counts, non-finite pixels (NaN/Inf), mask labels outside
``0..num_classes-1`` and a training set whose masks are all empty are reported in one line naming
the file.

Protocols (PM-Dice paper, Hosseini 2025, section 3.1): Kvasir-SEG 90/10 split, resize 320,
random crop 256 in training; ACDC 2D slices resized to 256x256 and scaled to [0, 1], with the
``splits/`` folder's train/val/test frame lists.
"""

from __future__ import annotations

import copy
import functools
import logging
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info
from torchvision import tv_tensors

from ..cpus import available_cpus
from ..progress import progress_bar
from .io import (
    JPEG_MASK_THRESHOLD,
    find_pairs,
    integer_labels,
    nifti_to_napari,
    read_image_like_mask,
    read_mask,
    read_nifti,
    spacings_differ,
)
from .transforms import Normalization, build_transform, default_normalization, resize_pair, to_chw

__all__ = [
    "ArrayDataset",
    "DataError",
    "FolderDataset",
    "LabelTally",
    "NiftiSliceDataset",
    "SegmentationDataset",
    "add_label_counts",
    "check_finite",
    "check_masks_not_empty",
]

log = logging.getLogger(__name__)


class DataError(ValueError):
    """Bad training data, described in one line naming the file or config key."""


def check_finite(array: np.ndarray, name: str, *, channels_first: bool = False) -> None:
    """Raise :class:`DataError` naming ``name`` and the count if ``array`` holds NaN or Inf.

    A single NaN pixel makes every prediction and loss of its image NaN (min-max scaling spreads
    it to the whole array), so such data is refused instead of silently training on NaN.
    ``channels_first``: ``array`` is ``(C, H, W)``; pixels are counted, not values (a grey
    file repeated to 3 channels has one bad pixel, not three).
    """
    if array.dtype.kind != "f":
        return
    finite = np.isfinite(array)
    if channels_first:
        finite = finite.all(axis=0)
    bad = int(finite.size - np.count_nonzero(finite))
    if bad:
        raise DataError(
            f"{name}: {bad} non-finite pixel value(s) (NaN or Inf) of {finite.size}; replace "
            "them (e.g. numpy.nan_to_num) before training"
        )


def check_masks_not_empty(empty: int, total: int, what: str = "masks") -> None:
    """Refuse a training set whose masks are all empty; warn when most of them are.

    The usual cause is a {0, 1} mask saved as JPEG: JPEG masks are binarised at
    ``> JPEG_MASK_THRESHOLD`` (127), so a {0, 1} JPEG mask reads as all background.
    """
    cause = (
        f"JPEG masks are binarised at > {JPEG_MASK_THRESHOLD}, so {{0, 1}} masks saved as JPEG "
        "read as empty: save them as PNG, or scale them to {0, 255}"
    )
    if total and empty == total:
        raise DataError(
            f"all {total} training {what} are empty after reading (no label above 0): nothing "
            f"to learn. Likely cause: {cause}"
        )
    if total and empty > total / 2:
        log.warning(
            "%d of %d training %s are empty (no label above 0); if that is unexpected: %s",
            empty,
            total,
            what,
            cause,
        )


def add_label_counts(total: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``total + counts`` for per-label pixel counts (``np.bincount``) of different lengths:
    the running total of :meth:`SegmentationDataset.validate` grows with the highest label."""
    if counts.size > total.size:
        total = np.pad(total, (0, counts.size - total.size))
    total[: counts.size] += counts
    return total


class LabelTally:
    """The masks of a dataset as ``validate`` reads them, one at a time (:meth:`add`): each
    checked against the model's ``num_classes``, with the highest label, the number of empty
    masks and the pixels of each label (:meth:`summary`).

    ``what`` names a mask in messages (``"mask"``, ``"label volume"``); ``hint`` ends the
    message of a label the model cannot predict.
    """

    def __init__(self, num_classes: int | None, what: str = "mask", hint: str = "") -> None:
        self.num_classes = num_classes
        self.what = what
        self.hint = hint
        self.class_pixels = np.zeros(1, dtype=np.int64)
        self.max_label = 0
        self.empty = 0
        self.count = 0

    def add(self, name: str, counts: np.ndarray) -> None:
        """One mask's per-label pixel counts (``np.bincount``); ``name`` is its file."""
        top = int(counts.size - 1)
        k = self.num_classes
        if k is not None and top >= k:
            present = np.flatnonzero(counts)
            # a few labels spread up to 255 are grey levels, not 256 classes (one mask of a
            # multi-class set may well lack a class: a gap alone is no sign)
            if top >= 64 and len(present) <= 16:
                shown = "{" + ", ".join(map(str, present.tolist())) + "}"
                raise DataError(
                    f"{name}: {self.what} has labels {shown}, expected "
                    f"0..N-1 (grey levels or colours saved as a label map?): relabel it to "
                    f"0..{len(present) - 1}, then set model.classes{self.hint}"
                )
            raise DataError(
                f"{name}: {self.what} has label {top} but the model predicts {k} classes "
                f"(labels 0..{k - 1}); set model.classes{self.hint}"
            )
        self.max_label = max(self.max_label, top)
        self.empty += top == 0
        self.count += 1
        self.class_pixels = add_label_counts(self.class_pixels, counts)

    def check_not_empty(self) -> None:
        """:func:`check_masks_not_empty` of the masks added (a training set's check)."""
        check_masks_not_empty(self.empty, self.count, f"{self.what}s")

    def summary(self, count: int, sizes: list[tuple[int, ...]]) -> dict[str, Any]:
        """What ``validate`` returns: ``{"count", "max_label", "sizes", "class_pixels"}``."""
        return {
            "count": count,
            "max_label": self.max_label,
            "sizes": sizes,
            "class_pixels": self.class_pixels.tolist(),
        }


class SegmentationDataset(Dataset):
    """Base class: caching, resizing, validation, normalisation and paired augmentation.

    Subclasses implement :meth:`__len__`, :meth:`item_name` and :meth:`_read` (raw arrays).

    Args:
        size: resize every pair to ``(h, w)`` (bilinear image, nearest mask); None keeps sizes.
        crop: random crop ``(h, w)`` when ``train`` (padded if smaller); ignored otherwise.
        train: training mode (crop + augmentation) or evaluation mode (neither).
        augment: apply flips/rotation/zoom/elastic in training.
        augmentation: magnitudes (``AugmentConfig`` or dict of its fields).
        cache: keep decoded, resized pairs in memory.
        normalize: ``"auto"`` (uint8 -> /255, else per-array min-max), ``"uint8"``, ``"minmax"``,
            ``"none"``; ignored when ``normalization`` is given.
        normalization: an explicit :class:`Normalization` (e.g. the training set's, for val).
        in_channels: channels the model expects (gray is repeated to 3 when it is 3).
    """

    def __init__(
        self,
        *,
        size: Sequence[int] | None = None,
        crop: Sequence[int] | None = None,
        train: bool = False,
        augment: bool = True,
        augmentation: Any = None,
        cache: bool = True,
        normalize: str = "auto",
        normalization: Normalization | None = None,
        in_channels: int | None = None,
    ) -> None:
        self.size = _check_hw(size, "size")
        self.crop = _check_hw(crop, "crop")
        self.train = bool(train)
        self.augment = bool(augment)
        if augmentation is None:
            aug: dict[str, Any] = {}
        elif isinstance(augmentation, dict):
            aug = dict(augmentation)
        else:
            aug = augmentation.model_dump()
        self.augmentation = aug
        self.cache = bool(cache)
        if normalize not in ("auto", "uint8", "minmax", "none"):
            raise ValueError(
                f"normalize must be 'auto', 'uint8', 'minmax' or 'none', got {normalize!r}"
            )
        self.normalize = normalize
        self._normalization = normalization
        self.in_channels = in_channels
        self._cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._raw0: tuple[np.ndarray, np.ndarray] | None = None
        self.raw_output = False
        self._transform = None

    # -- subclass API ---------------------------------------------------------------------
    def __len__(self) -> int:
        raise NotImplementedError

    def item_name(self, index: int) -> str:
        """Human-readable source of item ``index`` (file name) for error messages."""
        raise NotImplementedError

    def mask_name(self, index: int) -> str:
        """The mask file of item ``index``, for messages about its labels (the item name when
        image and mask have no separate files, e.g. in-memory arrays)."""
        return self.item_name(index)

    def _read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Raw ``(image (C, H, W), mask (H, W))`` numpy arrays of item ``index``."""
        raise NotImplementedError

    # -- normalisation ----------------------------------------------------------------------
    @property
    def normalization(self) -> Normalization:
        """The intensity normalisation (resolved from the first item for ``"auto"``)."""
        if self._normalization is None:
            if len(self) == 0:
                raise DataError("dataset is empty: cannot infer its normalisation")
            raw = self._read(0)
            self._raw0 = raw  # reused by load_pair(0): decode each file once
            image = raw[0]
            self._normalization = default_normalization(image.shape[0], image.dtype, self.normalize)
        return self._normalization

    @property
    def transform(self) -> Any:
        if self._transform is None:
            # zflip / rot90 are for 3D patches (data.patches); build_transform is 2D.
            train_aug = {k: v for k, v in self.augmentation.items() if k not in ("zflip", "rot90")}
            self._transform = build_transform(
                self.normalization,
                train=self.train,
                crop=self.crop,
                augment=self.augment,
                standardize=not self.raw_output,
                **train_aug,
            )
        return self._transform

    def with_raw_output(self) -> SegmentationDataset:
        """A view of this dataset (sharing its cache) whose images skip the final float
        conversion and standardisation: uint8 (or scaled float32) ``(C, H, W)``. The training
        loop standardises whole batches on the device instead (cheaper, 4x less to copy).
        """
        _ = self.normalization
        view = copy.copy(self)
        view.raw_output = True
        view._transform = None
        return view

    # -- loading ----------------------------------------------------------------------------
    def _scaled(self, image: np.ndarray, index: int) -> torch.Tensor:
        """Apply the scale step; uint8 stays uint8 (4x smaller cache), others become float32."""
        norm = self.normalization
        if norm.scale == "uint8":
            if image.dtype != np.uint8:
                raise DataError(
                    f"{self.item_name(index)}: pixel type {image.dtype} but normalize='uint8' "
                    "expects 8-bit images (use data.normalize: minmax)"
                )
            return torch.from_numpy(np.ascontiguousarray(image))
        return torch.from_numpy(np.ascontiguousarray(self._scale_float(image, index)))

    def _scale_float(self, image: np.ndarray, index: int) -> np.ndarray:
        return self.normalization.scale_array(image)

    def load_pair(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoded, scaled and resized ``(image (C, H, W), mask uint8 (H, W))`` (cached)."""
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        hit = self._cache.get(index)
        if hit is not None:
            return hit
        if index == 0:
            # resolving the normalisation reads item 0 (kept in _raw0): do it first, so the
            # first access decodes item 0 once, not once here and once more in _scaled
            _ = self.normalization
        raw, self._raw0 = (
            (self._raw0, None) if index == 0 and self._raw0 is not None else (None, None)
        )
        image_np, mask_np = raw if raw is not None else self._read(index)
        check_finite(image_np, self.item_name(index), channels_first=True)
        if image_np.shape[-2:] != mask_np.shape:
            raise DataError(
                f"{self.item_name(index)}: image size {tuple(image_np.shape[-2:])} != mask size "
                f"{tuple(mask_np.shape)}"
            )
        image = self._scaled(image_np, index)
        # np.array copies: decoded arrays may be read-only views, which torch warns about.
        mask = torch.from_numpy(np.array(mask_np, dtype=np.uint8))
        image, mask = resize_pair(image, mask, self.size)
        assert mask is not None
        if self.cache:
            self._cache[index] = (image, mask)
        return image, mask

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """``ds[i]`` or ``ds[(i, seed)]``: the seed makes the augmentation of this draw
        reproducible whatever worker process runs it (see the training sampler)."""
        if isinstance(key, tuple):
            index, seed = key
        else:
            index, seed = key, None
        image, mask = self.load_pair(int(index))
        pair = (tv_tensors.Image(image), tv_tensors.Mask(mask))
        if seed is None:
            img, msk = self.transform(*pair)
        elif get_worker_info() is not None:
            # Augmentation depends only on (seed, epoch, index), not on which worker ran before:
            # resume and multi-worker runs are bit-reproducible. A worker's global RNG serves
            # nothing else, so reseeding it directly is enough.
            torch.manual_seed(int(seed))
            img, msk = self.transform(*pair)
        else:
            # In the main process the global RNG is the user's: fork it.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(seed))
                img, msk = self.transform(*pair)
        return img.as_subclass(torch.Tensor), msk.as_subclass(torch.Tensor).long()

    # -- validation -------------------------------------------------------------------------
    def validate(
        self,
        *,
        num_classes: int | None = None,
        in_channels: int | None = None,
        need_uniform_size: bool = False,
        progress: bool = False,
        workers: int | None = None,
    ) -> dict[str, Any]:
        """Read every pair (filling the cache) and check it before training starts.

        Checks: at least one item; image/mask sizes agree; channel count; finite pixels; mask
        labels in ``0..num_classes-1``; equal sizes when batching needs them; for a training set,
        not every mask empty (:func:`check_masks_not_empty`). Raises :class:`DataError` (one line
        naming the file). Returns ``{"count", "max_label", "sizes", "class_pixels"}``.
        """
        n = len(self)
        if n == 0:
            raise DataError("dataset has zero image/mask pairs")
        if in_channels is not None:
            self.in_channels = in_channels
        _ = self.normalization  # resolve from item 0 before threads start

        def scan(i: int) -> tuple[int, tuple[int, ...], np.ndarray]:
            image, mask = self.load_pair(i)
            counts = np.bincount(mask.numpy().ravel(), minlength=1)
            return int(image.shape[0]), tuple(image.shape[-2:]), counts

        workers = workers or min(8, available_cpus())
        iterator: Any
        with ThreadPoolExecutor(max_workers=workers) as pool:
            iterator = pool.map(scan, range(n))
            if progress:
                iterator = progress_bar(iterator, total=n, desc="checking data", leave=False)
            results = list(iterator)
        tally = LabelTally(num_classes, hint=" (1 for binary masks {0,1}, K for labels 0..K-1)")
        sizes: set[tuple[int, ...]] = set()
        for i, (channels, hw, counts) in enumerate(results):
            if in_channels is not None and channels != in_channels:
                raise DataError(
                    f"{self.item_name(i)}: image has {channels} channel(s) but "
                    f"model.in_channels={in_channels}"
                )
            tally.add(self.mask_name(i), counts)  # a bad label is the mask file's fault
            sizes.add(hw)
        if self.train:
            tally.check_not_empty()
        if need_uniform_size and len(sizes) > 1:
            some = sorted(sizes)[:2]
            raise DataError(
                f"images have different sizes (e.g. {some[0]} and {some[1]}); set data.size "
                "(resize) or data.crop so they can be batched"
            )
        return tally.summary(n, sorted(sizes))


def _check_hw(value: Sequence[int] | None, name: str) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, int):
        value = (value, value)
    vals = tuple(int(v) for v in value)
    if len(vals) != 2 or any(v <= 0 for v in vals):
        raise ValueError(f"{name} must be (height, width) with positive values, got {value!r}")
    return vals  # type: ignore[return-value]


class FolderDataset(SegmentationDataset):
    """Pairs of 2D image/mask files (PNG/JPG/TIFF/BMP), matched by file stem.

    Args:
        root: folder with ``images/`` and ``masks/`` sub-folders (names configurable).
        pairs: explicit ``(image, mask)`` paths instead of scanning ``root``.
        **kwargs: see :class:`SegmentationDataset`.
    """

    def __init__(
        self,
        root: Path | str | None = None,
        images: str = "images",
        masks: str = "masks",
        *,
        pairs: Sequence[tuple[Path, Path]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if pairs is None:
            if root is None:
                raise ValueError("FolderDataset needs root or pairs, got neither")
            try:
                pairs = find_pairs(root, images, masks)
            except ValueError as exc:
                raise DataError(str(exc)) from exc
        self.pairs = [(Path(a), Path(b)) for a, b in pairs]

    def __len__(self) -> int:
        return len(self.pairs)

    def item_name(self, index: int) -> str:
        return str(self.pairs[index][0])

    def mask_name(self, index: int) -> str:
        return str(self.pairs[index][1])

    def _read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image_path, mask_path = self.pairs[index]
        try:
            mask = read_mask(mask_path)
            # keep_dtype: a 16-bit file stays uint16, so messages name its real pixel type
            raw = read_image_like_mask(image_path, mask.shape, keep_dtype=True)
            image = to_chw(raw, self.in_channels, name=str(image_path))
        except (ValueError, FileNotFoundError) as exc:
            raise DataError(str(exc)) from exc
        if image.shape[-2:] != mask.shape:
            raise DataError(
                f"{image_path}: image size {tuple(image.shape[-2:])} != mask size "
                f"{tuple(mask.shape)} of {mask_path.name}"
            )
        return image, mask


class NiftiSliceDataset(SegmentationDataset):
    """2D slices of NIfTI image/label volumes.

    Volumes are put in napari axis order ``(Z, Y, X)`` (:func:`~napari_segloss.data.io.nifti_to_napari`)
    and item ``k`` is one ``(Y, X)`` slice, so a model trained here sees slices the way the napari
    panel shows them. The ``minmax`` scale is computed per volume (not per slice), so slices of one
    scan keep their relative brightness.
    """

    def __init__(self, pairs: Sequence[tuple[Path, Path]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pairs = [(Path(a), Path(b)) for a, b in pairs]
        self.index: list[tuple[int, int]] = []
        for v, (img, lbl) in enumerate(self.pairs):
            try:
                shape = nib.load(str(img)).shape
                lshape = nib.load(str(lbl)).shape
            except Exception as exc:
                raise DataError(f"cannot read NIfTI header of {img} / {lbl}: {exc}") from exc
            shape = tuple(s for i, s in enumerate(shape) if i < 3 or s != 1)
            lshape = tuple(s for i, s in enumerate(lshape) if i < 3 or s != 1)
            if shape != lshape:
                raise DataError(
                    f"{img}: image volume shape {shape} != label shape {lshape} of {lbl.name}"
                )
            depth = shape[2] if len(shape) >= 3 else 1
            self.index.extend((v, z) for z in range(depth))
        self._init_volume_cache()

    def _init_volume_cache(self) -> None:
        # Slices of one volume are consecutive items: keep the last volumes decoded, and let
        # one thread decode a volume while the others wait (validate() reads in threads).
        self._volume_lock = threading.Lock()
        self._volume_lru = functools.lru_cache(maxsize=2)(self._load_volume)

    def _volume(self, v: int) -> tuple[np.ndarray, np.ndarray, tuple[float, float] | None]:
        with self._volume_lock:
            return self._volume_lru(v)

    def __getstate__(self) -> dict[str, Any]:
        # Locks and lru_cache wrappers do not pickle (DataLoader workers under "spawn").
        state = self.__dict__.copy()
        state.pop("_volume_lock", None)
        state.pop("_volume_lru", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_volume_cache()

    def __len__(self) -> int:
        return len(self.index)

    def item_name(self, index: int) -> str:
        v, z = self.index[index]
        return f"{self.pairs[v][0]} slice {z}"

    def mask_name(self, index: int) -> str:
        v, z = self.index[index]
        return f"{self.pairs[v][1]} slice {z}"

    def _load_volume(self, v: int) -> tuple[np.ndarray, np.ndarray, tuple[float, float] | None]:
        img_path, lbl_path = self.pairs[v]
        try:
            image, spacing = read_nifti(img_path)
            label, label_spacing = read_nifti(lbl_path)
        except (ValueError, FileNotFoundError) as exc:
            raise DataError(str(exc)) from exc
        if spacings_differ(spacing, label_spacing):
            # segloss evaluate reads the label's header: the same masks, other distances
            log.warning(
                "%s: its labels %s give another voxel spacing (%s vs %s); the distances of "
                "eval.json (HD95, NSD) use the image's",
                img_path, lbl_path, tuple(spacing), tuple(label_spacing),
            )  # fmt: skip
        check_finite(image, str(img_path))  # the whole volume: its count, not one slice's
        if image.ndim == 2:
            image, label = image[..., None], label[..., None]
        image, _ = nifti_to_napari(image, spacing)
        label, _ = nifti_to_napari(label, spacing)
        try:
            label = integer_labels(label, lbl_path)  # 0.99999 from resampling is label 1
        except ValueError as exc:
            raise DataError(str(exc)) from exc
        if label.max() > 255:
            raise DataError(f"{lbl_path}: label {int(label.max())} > 255 is not supported")
        rng: tuple[float, float] | None = None
        if image.dtype != np.uint8:
            rng = (float(image.min()), float(image.max()))  # per-volume min-max
        return image, label.astype(np.uint8), rng

    def _read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        v, z = self.index[index]
        image, label, _ = self._volume(v)
        return to_chw(image[z], self.in_channels, name=self.item_name(index)), label[z]

    def _scale_float(self, image: np.ndarray, index: int) -> np.ndarray:
        norm = self.normalization
        if norm.scale != "minmax":
            return norm.scale_array(image)
        _, _, rng = self._volume(self.index[index][0])
        lo, hi = rng if rng is not None else (0.0, 255.0)
        if hi <= lo:
            return np.zeros(image.shape, np.float32)
        return (image.astype(np.float32) - np.float32(lo)) / np.float32(hi - lo)


class ArrayDataset(SegmentationDataset):
    """In-memory 2D images and masks (e.g. napari layers).

    Args:
        images: list of ``(H, W)`` / ``(H, W, 3)`` / ``(C, H, W)`` arrays, or one stacked array
            ``(N, H, W)`` / ``(N, H, W, 3)``.
        masks: matching ``(H, W)`` integer label arrays (list or stacked ``(N, H, W)``).
        names: item names for messages and eval.json (default ``images[i]``).
        **kwargs: see :class:`SegmentationDataset`.
    """

    def __init__(
        self,
        images: Sequence[np.ndarray] | np.ndarray,
        masks: Sequence[np.ndarray] | np.ndarray,
        names: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        imgs = list(images)
        msks = list(masks)
        if len(imgs) != len(msks):
            raise DataError(
                f"images and masks must have the same length, got {len(imgs)} and {len(msks)}"
            )
        for i, m in enumerate(msks):
            m = np.asarray(m)
            if m.ndim != 2:
                raise DataError(f"masks[{i}] must be 2D (H, W), got shape {m.shape}")
            if m.dtype.kind not in "uib" or (m.size and m.min() < 0):
                raise DataError(f"masks[{i}] must hold non-negative integer labels, got {m.dtype}")
        if names is not None and len(names) != len(imgs):
            raise DataError(f"names: expected {len(imgs)} item names, got {len(names)}")
        self.images = [np.asarray(x) for x in imgs]
        self.masks = [np.asarray(m) for m in msks]
        self.names = [str(n) for n in names] if names is not None else None

    def __len__(self) -> int:
        return len(self.images)

    def item_name(self, index: int) -> str:
        return self.names[index] if self.names is not None else f"images[{index}]"

    def _read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image = to_chw(self.images[index], self.in_channels, name=self.item_name(index))
        return image, self.masks[index]
