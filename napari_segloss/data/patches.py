"""3D patches of NIfTI volumes for the 3D network (``data.kind: nifti``, ``data.slices: 3d``).

Volumes are read like the 2D slice dataset does (:class:`~.datasets.NiftiSliceDataset`): napari
axis order ``(Z, Y, X)`` (:func:`~napari_segloss.data.io.nifti_to_napari`), the same label
checks, and the same normalisation (uint8 volumes /255; otherwise min-max over the *whole*
volume; then per-channel mean/std), so a 3D checkpoint's meta feeds ``segloss predict`` exactly
as for 2D.

* **Training** (``train=True``): ``len = volumes x patches_per_volume``; item ``i`` is a random
  ``patch`` ``(Z, Y, X)`` of volume ``i % volumes``. Volumes smaller than the patch along an
  axis are zero-padded (label 0 = background), placed where sliding-window inference puts
  them (:func:`pad_before`: about centred, on the network's stride grid ``pad_multiple``,
  which the training loop sets), so validation and ``segloss predict`` see such a volume at
  the position the network was trained on. With ``patch_foreground = f`` a
  patch is, with probability ``f``, centred on a random foreground voxel (label > 0) instead of
  placed uniformly (nnU-Net's foreground oversampling, for small structures).
* **Augmentation** (training, ``augment=True``): random flips along X (``hflip``), Y
  (``vflip``) and Z (``zflip``) and, with probability ``rot90``, an in-plane (Y, X) rotation by
  90, 180 or 270 degrees (only 180 when the patch is not square in-plane, so batches keep one
  shape). These are exact permutations of the voxel grid, applied to image and label
  identically; no interpolation, so labels never blend. The 2D-only magnitudes (``rotate``,
  ``zoom``, elastic) are not used for 3D patches.
* **Evaluation** (``train=False``): item ``i`` is the whole volume ``i``; the training loop
  predicts it with :func:`~napari_segloss.engine.inference.sliding_window_predict` using
  ``tile = patch`` and scores it with :func:`napari_segloss.metrics.evaluate` in 3D, with the
  voxel spacing from the NIfTI header (:meth:`NiftiPatchDataset.spacing`).

Randomness comes only from the item's seed (``ds[(i, seed)]``, see the training sampler), via a
``numpy.random.Generator``: the same seed gives the same patch and augmentation in any process.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F

from ..progress import progress_bar
from .datasets import (
    DataError,
    LabelTally,
    NiftiSliceDataset,
    SegmentationDataset,
)

__all__ = ["NiftiPatchDataset", "pad_before"]

_AUG_DEFAULT = 0.5  # AugmentConfig's default probability for every 3D flip / rotation


def pad_before(size: int, tile: int, multiple: int = 1) -> int:
    """Zero voxels before an axis of ``size`` padded to ``tile``: half the padding, rounded down
    to ``multiple`` (the network's stride along the axis, so the image keeps its pixel phase).
    Shared by the training patches and tiled inference: a strided network trained on a volume
    at one offset predicts another at a different one (3D with thin Z most of all)."""
    return max(0, int(tile) - int(size)) // 2 // int(multiple) * int(multiple)


def _check_patch(patch: Sequence[int] | None) -> tuple[int, int, int]:
    try:
        vals = tuple(int(p) for p in patch)  # type: ignore[union-attr]
    except TypeError:
        vals = ()
    if len(vals) != 3 or any(v <= 0 for v in vals):
        raise DataError(
            f"config key 'data.patch': expected [Z, Y, X] with 3 positive sizes, got {patch!r}"
        )
    return vals  # type: ignore[return-value]


class NiftiPatchDataset(NiftiSliceDataset):
    """Random 3D patches (training) or whole volumes (evaluation) of NIfTI image/label pairs.

    Items are ``(image float32 (C, Z, Y, X), label int64 (Z, Y, X))``; see the module docstring.

    Args:
        pairs: ``(image, label)`` NIfTI paths.
        patch: patch size ``(Z, Y, X)`` (napari axis order).
        train: random patches + augmentation (True) or whole volumes (False).
        patches_per_volume: training items per volume per epoch.
        patch_foreground: probability of centring a training patch on a foreground voxel.
        augment, augmentation, cache, normalize, normalization, in_channels: as for
            :class:`~.datasets.SegmentationDataset` (``augmentation`` fields used here:
            ``hflip``, ``vflip``, ``zflip``, ``rot90``).
    """

    #: read by the training loop: validate with 3D sliding windows, 5-D batches.
    spatial_dims = 3

    def __init__(
        self,
        pairs: Sequence[tuple[Path, Path]],
        *,
        patch: Sequence[int],
        train: bool = False,
        patches_per_volume: int = 1,
        patch_foreground: float = 0.0,
        **kwargs: Any,
    ) -> None:
        for key in ("size", "crop"):
            if kwargs.pop(key, None) is not None:
                raise DataError(
                    f"config key 'data.{key}': not used with data.slices: 3d (patches of "
                    "data.patch are cut at native resolution); set it to null"
                )
        in_channels = kwargs.get("in_channels")
        if in_channels not in (None, 1):
            raise DataError(
                f"config key 'model.in_channels': NIfTI volumes have one channel, so 3D patches "
                f"need model.in_channels: 1, got {in_channels}"
            )
        if int(patches_per_volume) < 1:
            raise DataError(
                "config key 'data.patches_per_volume': expected a positive integer, got "
                f"{patches_per_volume!r}"
            )
        if not 0.0 <= float(patch_foreground) <= 1.0:
            raise DataError(
                "config key 'data.patch_foreground': expected a probability in [0, 1], got "
                f"{patch_foreground!r}"
            )
        self.patch = _check_patch(patch)
        super().__init__(pairs, train=train, **kwargs)
        self.patches_per_volume = int(patches_per_volume)
        self.patch_foreground = float(patch_foreground)
        # The random patch is the training "crop": the training loop then knows that items
        # depend on their seed (no in-memory batch stacking) and need no common size.
        self.crop = self.patch if self.train else None  # type: ignore[assignment]
        #: the network's stride per axis (``output_stride``), set by the training loop: where a
        #: volume smaller than the patch is placed (:func:`pad_before`)
        self.pad_multiple: tuple[int, int, int] = (1, 1, 1)
        self._foreground: dict[int, np.ndarray] = {}
        self._spacings: dict[int, tuple[float, float, float]] = {}

    # -- indexing -----------------------------------------------------------------------------
    @property
    def num_volumes(self) -> int:
        """Number of image/label volumes."""
        return len(self.pairs)

    def __len__(self) -> int:
        return self.num_volumes * (self.patches_per_volume if self.train else 1)

    def _volume_of(self, index: int) -> int:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        return index % self.num_volumes

    def item_name(self, index: int) -> str:
        return str(self.pairs[self._volume_of(index)][0])

    def mask_name(self, index: int) -> str:
        return str(self.pairs[self._volume_of(index)][1])

    def spacing(self, index: int) -> tuple[float, float, float]:
        """Voxel spacing ``(Z, Y, X)`` of item ``index``'s volume, from its NIfTI header."""
        v = self._volume_of(index)
        if v not in self._spacings:
            zooms = [float(z) for z in nib.load(str(self.pairs[v][0])).header.get_zooms()[:3]]
            zooms += [1.0] * (3 - len(zooms))
            # a zero/NaN zoom is a broken header: 1.0 keeps distances in voxels (as read_nifti)
            clean = [z if np.isfinite(z) and z > 0 else 1.0 for z in zooms]
            self._spacings[v] = (clean[2], clean[1], clean[0])
        return self._spacings[v]

    # -- loading ------------------------------------------------------------------------------
    def _read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image, label, _ = self._volume(self._volume_of(index))
        return image[None], label  # (1, Z, Y, X), (Z, Y, X)

    def _scale_float(self, image: np.ndarray, index: int) -> np.ndarray:
        # The whole volume is scaled at once: min-max is per volume, as in the 2D slices.
        return SegmentationDataset._scale_float(self, image, index)

    def load_pair(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Scaled volume ``(C, Z, Y, X)`` (uint8 or float32) and labels uint8 ``(Z, Y, X)``."""
        v = self._volume_of(index)
        hit = self._cache.get(v)
        if hit is not None:
            return hit
        if v == 0 and self._raw0 is not None:
            (image_np, label_np), self._raw0 = self._raw0, None
        else:
            image_np, label_np = self._read(v)
        image = self._scaled(image_np, v)
        label = torch.from_numpy(np.array(label_np, dtype=np.uint8))
        if self.cache:
            self._cache[v] = (image, label)
        return image, label

    def _foreground_voxels(self, v: int, label: torch.Tensor) -> np.ndarray:
        fg = self._foreground.get(v)
        if fg is None:
            fg = np.flatnonzero(label.numpy()).astype(np.int64)
            self._foreground[v] = fg
        return fg

    # -- items --------------------------------------------------------------------------------
    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """``ds[i]`` or ``ds[(i, seed)]``; the seed fixes the patch and its augmentation."""
        index, seed = key if isinstance(key, tuple) else (key, None)
        v = self._volume_of(int(index))
        image, label = self.load_pair(v)
        if self.train:
            if seed is None:  # follow torch's global RNG, so torch.manual_seed reproduces it
                seed = int(torch.randint(0, 2**62, ()).item())
            rng = np.random.default_rng(int(seed))
            image, label = self._random_patch(image, label, v, rng)
            if self.augment:
                image, label = self._augment(image, label, rng)
        if not self.raw_output:
            image = self._standardize(image)
        return image.contiguous(), label.long().contiguous()

    def _random_patch(
        self, image: torch.Tensor, label: torch.Tensor, v: int, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        spatial, unpadded = tuple(label.shape), label
        pads = [max(0, p - s) for s, p in zip(spatial, self.patch, strict=True)]
        before = [
            pad_before(s, p, m)
            for s, p, m in zip(spatial, self.patch, self.pad_multiple, strict=True)
        ]
        if any(pads):
            pad_arg: list[int] = []
            for b, q in zip(reversed(before), reversed(pads), strict=True):
                pad_arg += [b, q - b]
            image, label = F.pad(image, pad_arg), F.pad(label, pad_arg)
        shape = tuple(label.shape)
        centred = self.patch_foreground > 0 and rng.random() < self.patch_foreground
        fg = self._foreground_voxels(v, unpadded) if centred else None
        if fg is not None and fg.size:
            centre = np.unravel_index(int(fg[rng.integers(fg.size)]), spatial)
            starts = [
                int(np.clip(c + b - p // 2, 0, s - p))
                for c, b, p, s in zip(centre, before, self.patch, shape, strict=True)
            ]
        else:
            starts = [
                int(rng.integers(0, s - p + 1)) for s, p in zip(shape, self.patch, strict=True)
            ]
        win = tuple(slice(a, a + p) for a, p in zip(starts, self.patch, strict=True))
        return image[(slice(None), *win)], label[win]

    def _augment(
        self, image: torch.Tensor, label: torch.Tensor, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        aug = self.augmentation
        # Draw every decision, used or not, so one setting never shifts the others' draws.
        draws = rng.random(4)
        axes = [
            axis
            for axis, key, u in zip((0, 1, 2), ("zflip", "vflip", "hflip"), draws[:3], strict=True)
            if u < float(aug.get(key, _AUG_DEFAULT))
        ]
        k = int(rng.integers(1, 4))
        if axes:
            image, label = image.flip([a + 1 for a in axes]), label.flip(axes)
        if draws[3] < float(aug.get("rot90", _AUG_DEFAULT)):
            if label.shape[-1] != label.shape[-2]:
                k = 2  # a quarter turn would swap Y and X: batches need one shape
            image = torch.rot90(image, k, dims=(-2, -1))
            label = torch.rot90(label, k, dims=(-2, -1))
        return image, label

    def _standardize(self, image: torch.Tensor) -> torch.Tensor:
        """Scaled volume -> float32 network input: uint8 /255, then ``(x - mean) / std``."""
        scale, shift = self.normalization.device_affine(image.dtype, image.device)
        return image.float() * scale.view(-1, 1, 1, 1) + shift.view(-1, 1, 1, 1)

    # -- validation ---------------------------------------------------------------------------
    def validate(
        self,
        *,
        num_classes: int | None = None,
        in_channels: int | None = None,
        need_uniform_size: bool = False,
        progress: bool = False,
        workers: int | None = None,
    ) -> dict[str, Any]:
        """Read every volume (filling the cache) and check it, like the 2D datasets do.

        Checks: at least one volume; one channel (``model.in_channels`` must be 1); finite
        voxels; labels in ``0..num_classes-1``; for training, not every label volume empty.
        Returns ``{"count", "max_label", "sizes", "class_pixels"}``; ``sizes`` is ``[patch]``
        in training (every item has the patch shape), else the volume shapes. ``need_uniform_size`` and ``workers`` are accepted for the common interface.
        """
        del need_uniform_size, workers  # training patches all have one shape
        if self.num_volumes == 0:
            raise DataError("dataset has zero image/label volumes")
        if in_channels is not None and in_channels != 1:
            raise DataError(
                f"{self.item_name(0)}: NIfTI volumes have one channel but model.in_channels="
                f"{in_channels}; use model.in_channels: 1 for 3D patches"
            )
        _ = self.normalization
        volumes: Any = range(self.num_volumes)
        if progress:
            volumes = progress_bar(volumes, desc="checking volumes", leave=False)
        tally = LabelTally(num_classes, what="label volume")
        shapes: set[tuple[int, ...]] = set()
        for v in volumes:
            _, label = self.load_pair(v)
            tally.add(self.mask_name(v), np.bincount(label.numpy().ravel(), minlength=1))
            if self.train and self.patch_foreground > 0:
                self._foreground_voxels(v, label)  # before DataLoader workers fork
            shapes.add(tuple(label.shape))
        if self.train:
            tally.check_not_empty()
        return tally.summary(len(self), [self.patch] if self.train else sorted(shapes))
