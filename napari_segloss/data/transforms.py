"""Intensity normalisation and paired image/mask augmentation (torchvision.transforms.v2).

Geometry is applied to a ``tv_tensors.Image`` and a ``tv_tensors.Mask`` in one call, so the image
and its mask always receive the same random crop/flip/rotation/zoom/elastic field; torchvision
resamples masks with nearest neighbour (labels never blend) and images bilinearly.

The PM-Dice paper (Hosseini 2025, section 3.1-3.2) protocols this implements:

* Kvasir-SEG: resize to 320x320, random 256x256 crops in training;
* ACDC: 2D slices resized to 256x256, intensities normalised to [0, 1];
* augmentation: "random flipping, rotation, zooming, and elastic deformation".

:class:`Normalization` is stored in every checkpoint's meta so that inference applies exactly
the transform the model was trained with.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Normalization",
    "SmoothElastic",
    "build_transform",
    "default_normalization",
    "resize_pair",
    "to_chw",
]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

Scale = Literal["uint8", "minmax", "none"]


@dataclass(frozen=True)
class Normalization:
    """How raw pixels become network input: ``(scale(x) - mean) / std`` per channel.

    ``scale``: ``"uint8"`` divides by 255; ``"minmax"`` maps each input array's own min..max to
    0..1 (a constant array gives 0); ``"none"`` keeps values. ``mean``/``std`` have one entry
    per channel (ImageNet statistics for RGB by default, 0/1 for other channel counts).
    """

    scale: Scale = "uint8"
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.scale not in ("uint8", "minmax", "none"):
            raise ValueError(f"scale must be 'uint8', 'minmax' or 'none', got {self.scale!r}")
        if len(self.mean) != len(self.std) or not self.mean:
            raise ValueError(
                f"mean and std must have one value per channel, got {len(self.mean)} and "
                f"{len(self.std)}"
            )
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std must be positive, got {list(self.std)}")

    @property
    def channels(self) -> int:
        """Number of channels the statistics describe."""
        return len(self.mean)

    def to_meta(self) -> dict[str, Any]:
        """Plain dict for a checkpoint's ``meta["normalization"]``."""
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        d.pop("extra")
        return d

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> Normalization:
        """Inverse of :meth:`to_meta`."""
        try:
            return cls(scale=meta["scale"], mean=tuple(meta["mean"]), std=tuple(meta["std"]))
        except KeyError as exc:
            raise ValueError(f"normalization meta lacks the key {exc.args[0]!r}") from None

    def device_affine(
        self, dtype: torch.dtype, device: torch.device | str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(a, b)`` of shape ``(1, C, 1, 1)`` with ``(scaled x - mean) / std == x * a + b`` for a
        batch ``x`` as the dataset caches it (uint8 when ``scale == "uint8"``, else scaled float).
        """
        mean = torch.tensor(self.mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        unit = 255.0 if dtype == torch.uint8 else 1.0
        return 1.0 / (unit * std), -mean / std

    def scale_array(self, arr: np.ndarray) -> np.ndarray:
        """Apply only the ``scale`` step; returns float32 (uint8 input with ``"uint8"`` -> /255)."""
        arr = np.asarray(arr)
        if self.scale == "uint8":
            return arr.astype(np.float32) / np.float32(255.0)
        if self.scale == "minmax":
            arr = arr.astype(np.float32)
            lo, hi = float(arr.min()), float(arr.max())
            if hi <= lo:
                return np.zeros_like(arr)
            return (arr - np.float32(lo)) / np.float32(hi - lo)
        return arr.astype(np.float32)


def default_normalization(
    channels: int, dtype: np.dtype | type, mode: str = "auto"
) -> Normalization:
    """The default normalisation: uint8 -> /255, anything else -> per-array min-max to [0, 1];
    then ImageNet mean/std for 3-channel input (smp encoders are ImageNet-shaped), none else.
    """
    if channels < 1:
        raise ValueError(f"channels must be >= 1, got {channels}")
    if mode not in ("auto", "uint8", "minmax", "none"):
        raise ValueError(f"mode must be 'auto', 'uint8', 'minmax' or 'none', got {mode!r}")
    if mode == "auto":
        mode = "uint8" if np.dtype(dtype) == np.uint8 else "minmax"
    if channels == 3:
        return Normalization(mode, IMAGENET_MEAN, IMAGENET_STD)  # type: ignore[arg-type]
    return Normalization(mode, (0.0,) * channels, (1.0,) * channels)  # type: ignore[arg-type]


def to_chw(image: np.ndarray, in_channels: int | None = None, *, name: str = "image") -> np.ndarray:
    """``(H, W)`` or ``(H, W, C)`` (C in 3, 4) -> ``(C, H, W)``; gray is repeated to 3 channels
    when ``in_channels == 3`` (an RGB model can read a gray image; not the other way round).
    """
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[None]
    elif image.ndim == 3 and image.shape[-1] in (3, 4) and image.shape[0] not in (1, 3, 4):
        image = np.moveaxis(image[..., :3], -1, 0)
    elif image.ndim != 3:
        raise ValueError(f"{name} must be (H, W), (H, W, 3) or (C, H, W), got shape {image.shape}")
    if in_channels is not None and image.shape[0] != in_channels:
        if image.shape[0] == 1 and in_channels == 3:
            image = np.repeat(image, 3, axis=0)
        else:
            raise ValueError(
                f"{name} has {image.shape[0]} channel(s) but model.in_channels={in_channels}"
            )
    return np.ascontiguousarray(image)


def resize_pair(
    image: torch.Tensor, mask: torch.Tensor | None, size: Sequence[int] | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Resize ``(C, H, W)`` image bilinearly (antialiased) and ``(H, W)`` mask nearest to ``size``
    (pixel centres aligned: labels stay on the image content they belong to)."""
    if size is None or tuple(image.shape[-2:]) == tuple(size):
        return image, mask
    size = [int(s) for s in size]
    out = TF.resize(tv_tensors.Image(image), size, antialias=True)
    image = out.as_subclass(torch.Tensor)
    if mask is not None:
        # NEAREST_EXACT samples the pixel whose centre is nearest, as the bilinear image resize
        # does; plain NEAREST (torchvision's default for masks) takes floor(i * scale) and shifts
        # the mask by up to half an output pixel down/right of its image.
        m = TF.resize_image(mask[None], size, interpolation=v2.InterpolationMode.NEAREST_EXACT)
        mask = m[0]
    return image, mask


class SmoothElastic(v2.ElasticTransform):
    """Elastic deformation with a cheap random field; the warp itself is torchvision's.

    ``v2.ElasticTransform`` blurs full-resolution noise with a ``8 * sigma + 1`` Gaussian kernel
    (~0.1 s per 256x256 sample on one core, 50x the warp); its default magnitude is also under a
    pixel. Here the field is Gaussian noise on a coarse grid (one node every ``sigma`` pixels)
    bilinearly upsampled to the image: the same kind of smooth random field, at ~1 % of the cost.
    Masks are still resampled with nearest neighbour by ``F.elastic``.

    Args:
        alpha: displacement magnitude in pixels (standard deviation at the grid nodes).
        sigma: smoothness in pixels (grid spacing of the random field).
    """

    def __init__(self, alpha: float = 3.0, sigma: float = 16.0, **kwargs: Any) -> None:
        super().__init__(alpha=float(alpha), sigma=float(sigma), **kwargs)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = v2.query_size(flat_inputs)
        gh = max(2, math.ceil(height / self.sigma[1]) + 1)
        gw = max(2, math.ceil(width / self.sigma[0]) + 1)
        coarse = torch.randn(1, 2, gh, gw)
        field = torch.nn.functional.interpolate(
            coarse, size=(height, width), mode="bilinear", align_corners=True
        )
        # pixels -> the normalised [-1, 1] grid units that F.elastic adds to the identity grid
        field[:, 0] *= self.alpha[0] * 2.0 / width
        field[:, 1] *= self.alpha[1] * 2.0 / height
        return {"displacement": field.permute(0, 2, 3, 1)}


def build_transform(
    normalization: Normalization,
    *,
    train: bool,
    crop: Sequence[int] | None = None,
    augment: bool = True,
    hflip: float = 0.5,
    vflip: float = 0.5,
    rotate: float = 15.0,
    zoom: Sequence[float] = (0.9, 1.1),
    elastic_p: float = 0.25,
    elastic_alpha: float = 3.0,
    elastic_sigma: float = 16.0,
    standardize: bool = True,
) -> v2.Compose:
    """Paired transform ``(tv_tensors.Image, tv_tensors.Mask) -> (float image, mask)``.

    Training: random crop (padded if the image is smaller) then flips, RandomAffine rotation +
    zoom, and (with probability ``elastic_p``) :class:`SmoothElastic`, then scale to float and
    per-channel standardisation. Evaluation: no crop, no augmentation (the network is fully
    convolutional, so validation sees the whole resized image as the paper's test does).
    ``standardize=False`` stops before the float conversion: the training loop then ships uint8
    batches (4x less host->device traffic) and standardises on the device
    (:meth:`Normalization.device_affine`).
    """
    ops: list[Any] = []
    if train and crop is not None:
        ops.append(v2.RandomCrop([int(c) for c in crop], pad_if_needed=True, fill=0))
    if train and augment:
        if hflip > 0:
            ops.append(v2.RandomHorizontalFlip(hflip))
        if vflip > 0:
            ops.append(v2.RandomVerticalFlip(vflip))
        lo, hi = float(zoom[0]), float(zoom[1])
        if rotate > 0 or (lo, hi) != (1.0, 1.0):
            # torchvision defaults to NEAREST for the image too (masks are always nearest)
            ops.append(
                v2.RandomAffine(
                    degrees=float(rotate),
                    scale=(lo, hi),
                    interpolation=v2.InterpolationMode.BILINEAR,
                    fill=0,
                )
            )
        if elastic_p > 0 and elastic_alpha > 0:
            ops.append(
                v2.RandomApply(
                    [SmoothElastic(alpha=float(elastic_alpha), sigma=float(elastic_sigma))],
                    p=elastic_p,
                )
            )
    # uint8 -> [0, 1]; float stays as is (already scaled when cached). Masks untouched.
    if standardize:
        ops.append(v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True))
        ops.append(v2.Normalize(mean=list(normalization.mean), std=list(normalization.std)))
    elif not ops:
        ops.append(v2.Identity())
    return v2.Compose(ops)
