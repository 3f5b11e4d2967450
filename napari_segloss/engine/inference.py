"""Prediction for 2D images and 3D volumes with a checkpoint alone.

``predict`` is the user-facing helper (the CLI and the napari panel both call it): it loads a
checkpoint if given one, checks that the image fits the model (:func:`check_image`: a colour
image for a grey model and NaN/Inf pixels are refused, never silently reinterpreted), applies the
normalisation and resize recorded in the checkpoint's meta, runs the model as validation does
(:func:`~.tiling.inference_window`: the whole resized 2D image, tiles for 3D volumes and
huge images) and returns integer labels and class probabilities at the input's resolution.

The forward passes (sliding windows, Gaussian blending, the whole-image pass) live in
:mod:`.tiling`; its public names are re-exported here.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD, Normalization
from .checkpoint import ModelCache, load_model
from .devices import resolve_device
from .model import output_stride
from .tiling import (
    WHOLE_IMAGE_MAX_PIXELS,
    check_window_args,
    gaussian_importance_map,
    inference_window,
    labels_from_logits,
    pad_to_multiple,
    probabilities_from_logits,
    sliding_window_predict,
    tile_starts,
    whole_image_logits,
)

__all__ = [
    "GREY_WEIGHTS",
    "WHOLE_IMAGE_MAX_PIXELS",
    "channels_first_probs",
    "check_image",
    "gaussian_importance_map",
    "inference_window",
    "iter_predict_image",
    "labels_from_logits",
    "meta_scale",
    "normalise_image",
    "pad_to_multiple",
    "predict",
    "predict_image",
    "resolve_device",
    "rgb_to_grey",
    "sliding_window_predict",
    "tile_starts",
]

#: ITU-R BT.601 luma weights (R, G, B): what Pillow's ``convert("L")`` uses.
GREY_WEIGHTS = (0.299, 0.587, 0.114)


# ----------------------------------------------------------------------------------------------
# predict: numpy in, labels + probabilities out, using the checkpoint's meta


def _meta_get(meta: dict[str, Any], *keys: str, default: Any = None) -> Any:
    """First present key among ``keys`` in ``meta`` or in its ``normalization`` sub-dict."""
    for key in keys:
        if key in meta and meta[key] is not None:
            return meta[key]
    for sub in ("normalization", "normalisation", "norm"):
        inner = meta.get(sub)
        if isinstance(inner, dict):
            for key in keys:
                if key in inner and inner[key] is not None:
                    return inner[key]
    return default


def normalise_image(
    image: np.ndarray, meta: dict[str, Any], *, channel_axis: int = 0
) -> np.ndarray:
    """Image ``(C, *spatial)`` (or a stack ``(Z, C, Y, X)``, ``channel_axis=1``) -> float32 input.

    Uses the checkpoint's ``meta["normalization"]`` (``data.transforms.Normalization``:
    ``scale`` in ``uint8`` (/255), ``minmax`` (this array's min..max to 0..1: for a stack of
    slices that is per volume, as the NIfTI dataset does in training) or ``none``; then
    per-channel ``(x - mean) / std``). Without it: integer images /255, float images as they are,
    ImageNet mean/std for 3 channels, identity otherwise.
    """
    norm = meta.get("normalization")
    if channel_axis not in (0, 1):
        raise ValueError(f"channel_axis: expected 0 or 1, got {channel_axis!r}")
    channels = image.shape[channel_axis]
    if isinstance(norm, dict) and isinstance(norm.get("scale"), str):
        n = Normalization.from_meta(norm)
        _check_8bit(image, n.scale)
        x = n.scale_array(image)
        mean, std = n.mean, n.std
    else:
        x = image.astype(np.float32, copy=True)
        if np.issubdtype(image.dtype, np.integer):
            x /= np.float32(255.0)
        mean = _meta_get(meta, "mean")
        std = _meta_get(meta, "std")
        if mean is None and std is None and channels == 3:
            mean, std = IMAGENET_MEAN, IMAGENET_STD
    shape = [1] * x.ndim
    shape[channel_axis] = -1
    if mean is not None:
        m = np.asarray(mean, dtype=np.float32).reshape(-1)
        if m.size not in (1, channels):
            raise ValueError(f"meta mean: expected 1 or {channels} values, got {m.size}")
        x -= m.reshape(shape)
    if std is not None:
        s = np.asarray(std, dtype=np.float32).reshape(-1)
        if s.size not in (1, channels) or np.any(s <= 0):
            raise ValueError(f"meta std: expected 1 or {channels} positive values, got {s}")
        x /= s.reshape(shape)
    return x


def meta_scale(meta: dict[str, Any]) -> str | None:
    """The intensity scale (``"uint8"``, ``"minmax"``, ``"none"``) a checkpoint's meta records."""
    norm = meta.get("normalization")
    return norm.get("scale") if isinstance(norm, dict) else None


def _pair(value: Any) -> tuple[int, ...] | None:
    if value is None:
        return None
    if isinstance(value, int):
        return (value, value)
    return tuple(int(v) for v in value)


def _default_tile(spatial: tuple[int, ...], meta: dict[str, Any]) -> tuple[int, ...]:
    """The training crop (or resize) size, else the image rounded up to a multiple of 32."""
    for key in ("crop", "tile", "patch", "input_size", "size"):
        value = _pair(_meta_get(meta, key))
        if value is not None and len(value) == len(spatial):
            return value
    # smp encoders downsample 5 times: sizes must be multiples of 32.
    return tuple(max(32, math.ceil(s / 32) * 32) for s in spatial)


def _channels_first(
    image: np.ndarray, in_channels: int, *, grey: bool = False
) -> tuple[np.ndarray, bool]:
    """Return ``(C, *spatial)`` and whether the input was a stack of 2D slices ``(Z, Y, X)``.

    ``grey``: the caller knows the image holds no colour axis (a napari layer with
    ``rgb=False``), so a 3D array is a stack even when it has ``in_channels`` frames."""
    if image.ndim == 2:
        if in_channels not in (1, 3):
            raise ValueError(
                f"image: expected {in_channels} channels for this model, got a 2D grey image "
                f"of shape {image.shape}"
            )
        # Grey into an RGB model: repeated to 3 channels, as the training datasets do.
        return np.repeat(image[None], in_channels, axis=0), False
    if image.ndim == 3:
        if in_channels > 1 and not grey and image.shape[-1] == in_channels:
            return np.moveaxis(image, -1, 0), False  # (H, W, C) as read from RGB files
        if in_channels > 1 and not grey and image.shape[0] == in_channels:
            return image, False
        if in_channels == 1 and image.shape[-1] == 1:
            return np.moveaxis(image, -1, 0), False
        if in_channels == 1:
            # A grey 3D volume for a 2D model: predicted slice by slice along axis 0.
            return image[:, None], True
        raise ValueError(
            f"image: this checkpoint expects {in_channels}-channel (RGB) images, (H, W, "
            f"{in_channels}) or ({in_channels}, H, W), and this input of shape {image.shape} "
            "is a grey volume (Z, Y, X); use a model trained on grey images for it, or give "
            "one 2D slice (a grey 2D image is repeated to the model's channels)"
        )
    raise ValueError(
        f"image: expected (H, W), (H, W, {in_channels}), ({in_channels}, H, W) or a grey volume "
        f"(Z, Y, X) for a 1-channel model, got shape {image.shape}"
    )


def rgb_to_grey(image: np.ndarray) -> np.ndarray:
    """``(..., 3|4)`` colour -> grey ``(...)`` with the BT.601 luma weights (alpha dropped),
    in the input's dtype for integer images (rounded), float32 otherwise."""
    rgb = np.asarray(image)[..., :3].astype(np.float32)
    grey = rgb @ np.asarray(GREY_WEIGHTS, dtype=np.float32)
    if image.dtype.kind in "ui":
        info = np.iinfo(image.dtype)
        return np.clip(np.rint(grey), info.min, info.max).astype(image.dtype)
    return grey


def _check_8bit(image: np.ndarray, scale: str | None) -> None:
    if scale == "uint8" and image.dtype != np.uint8:
        raise ValueError(
            f"image has pixel type {image.dtype}, but the checkpoint was trained on 8-bit images "
            "(normalization scale 'uint8'); convert it to 8-bit (uint8) first"
        )


def check_image(
    image: np.ndarray,
    *,
    in_channels: int,
    spatial_dims: int = 2,
    scale: str | None = None,
    rgb: bool | None = None,
    grey: bool = False,
) -> np.ndarray:
    """Refuse an image that does not fit the model instead of reinterpreting it.

    * NaN/Inf pixels: ``ValueError`` with their count (every prediction would be NaN).
    * A model trained on 8-bit images (normalisation ``scale`` ``"uint8"``) given another
      pixel type (e.g. a 16-bit file): ``ValueError`` naming that type.
    * A colour image (``rgb``; ``None`` infers it from a last axis of 3 or 4) for a 1-channel
      model: ``ValueError`` naming the shape and the channels, unless ``grey=True``, which
      converts it with :func:`rgb_to_grey` (2D models only). Without this check an
      ``(H, W, 3)`` image would be read as ``H`` grey slices of ``W x 3`` pixels.
    * An RGBA image for a 3-channel model: ``ValueError`` (the file readers drop alpha
      themselves; an in-memory array must do so explicitly).

    Returns the (possibly converted) image.
    """
    image = np.asarray(image)
    if image.dtype.kind == "f":
        bad = int(image.size - np.count_nonzero(np.isfinite(image)))
        if bad:
            raise ValueError(
                f"image has {bad} non-finite value(s) (NaN or Inf) of {image.size}; the "
                "prediction would be NaN. Replace them first (segloss predict --fill-nonfinite "
                "VALUE, or numpy.nan_to_num)"
            )
    _check_8bit(image, scale)
    colour = image.ndim == 3 and image.shape[-1] in (3, 4) if rgb is None else bool(rgb)
    if spatial_dims != 2:
        if image.ndim < 3:  # found before any file is written (segloss predict checks first)
            raise ValueError(
                f"image of shape {image.shape} is 2D, but the checkpoint's model is a 3D "
                "network for volumes (Z, Y, X); use a 2D model"
            )
        if colour and in_channels == 1:  # else (H, W, 3) is read as H slices of W x 3 voxels
            raise ValueError(
                f"image of shape {image.shape} is a colour image, but the checkpoint's model is "
                "a 3D network for grey volumes (Z, Y, X); use a 2D model trained on colour images"
            )
        return image
    if colour and in_channels == 1:
        if grey:
            return rgb_to_grey(image)
        raise ValueError(
            f"image of shape {image.shape} is a colour image, but the checkpoint's model takes "
            "1 channel (it was trained on grey images); convert it to grey first (segloss "
            "predict --to-grey; predict(..., to_grey=True); in napari, right-click the layer > "
            "Split RGB and pick one channel) or use a model trained on colour"
        )
    if colour and in_channels == 3 and image.shape[-1] == 4:
        raise ValueError(
            f"image of shape {image.shape} has an alpha channel, but the checkpoint's model "
            "takes 3 channels (RGB); drop the alpha channel first (image[..., :3])"
        )
    return image


def predict(
    model_or_checkpoint: nn.Module | str | Path,
    image_np: np.ndarray,
    *,
    meta: dict[str, Any] | None = None,
    tile: Sequence[int] | str | None = None,
    overlap: float = 0.25,
    device: str | torch.device = "auto",
    batch_size: int = 4,
    amp: bool = True,
    resize: bool | None = None,
    rgb: bool | None = None,
    to_grey: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Segment one image (or a grey volume, slice by slice) with a model or a checkpoint file.

    The checkpoint's meta decides the preprocessing, so no config is needed: normalisation
    (``normalise_image``), the training resize (``size``; the image is resized to it, predicted
    and the probabilities are resized back bilinearly, as the PM-Dice paper does for
    evaluation) — set ``resize=False`` to predict at native resolution instead.

    ``tile=None`` (default) runs the model as validation and ``eval.json`` did
    (:func:`~.tiling.inference_window`): a 2D image whole (padded to the output stride), so
    its labels at the training size are the masks the run was scored on; tiles of the
    training crop only above :data:`~.tiling.WHOLE_IMAGE_MAX_PIXELS`; 3D volumes in tiles
    of the training patch. ``tile="crop"`` tiles with the training crop (or patch) whatever
    the size, explicit sizes tile with those; for a 3D model a two-value ``(Y, X)`` tile
    keeps the patch's depth.

    The image must fit the model (:func:`check_image`): NaN/Inf pixels and a colour image for a
    1-channel model raise ``ValueError``; ``rgb`` says whether the last axis holds colours
    (default: inferred from a last axis of 3 or 4), ``to_grey=True`` converts a colour image
    for a grey model instead of refusing it.

    Returns:
        ``labels`` (``uint8`` if ``K <= 255``, spatial shape of the input) and float32
        ``probs`` (``(K, *spatial)``, or ``(Z, K, Y, X)`` for a volume predicted slice by slice).
        Binary models (``K == 1``) threshold at 0.5; multi-class take the argmax.
    """
    if isinstance(model_or_checkpoint, str | Path):
        model, ckpt_meta = load_model(Path(model_or_checkpoint), device=str(resolve_device(device)))
        meta = {**ckpt_meta, **(meta or {})}
    elif isinstance(model_or_checkpoint, nn.Module):
        model = model_or_checkpoint
        meta = dict(meta or {})
    else:
        raise ValueError(
            "model_or_checkpoint: expected an nn.Module or a checkpoint path, "
            f"got {type(model_or_checkpoint).__name__}"
        )
    if isinstance(tile, str) and tile != "crop":
        raise ValueError(f"tile: expected None, 'crop' or sizes per axis, got {tile!r}")
    # checked whatever the tiling (the whole image ignored them, so a typo passed unseen)
    check_window_args(overlap, batch_size)
    image_np = np.asarray(image_np)
    if image_np.ndim not in (2, 3, 4) or image_np.size == 0:
        raise ValueError(f"image: expected a non-empty 2D or 3D array, got shape {image_np.shape}")
    run_device = resolve_device(device)
    model = model.to(run_device)
    in_channels = int(_meta_get(meta, "in_channels", default=_model_in_channels(model)))
    spatial_dims = int(_meta_get(meta, "spatial_dims", default=2))
    image_np = check_image(
        image_np,
        in_channels=in_channels,
        spatial_dims=spatial_dims,
        scale=meta_scale(meta),
        rgb=rgb,
        grey=to_grey,
    )
    if spatial_dims == 3:
        # A 3D network: the volume (Z, Y, X) (or (C, Z, Y, X)) is tiled in 3D patches.
        chw, is_stack = (image_np[None] if image_np.ndim == 3 else image_np), False
        if chw.ndim != 4 or chw.shape[0] != in_channels:
            raise ValueError(
                f"image: expected a volume (Z, Y, X) or ({in_channels}, Z, Y, X) for this 3D "
                f"model, got shape {image_np.shape}"
            )
        if tile is not None and not isinstance(tile, str) and len(tile) == 2:
            # an in-plane tile (what a 2D caller such as the napari panel knows): keep the
            # training patch's depth
            patch = _meta_get(meta, "patch")
            tile = (int(patch[0]) if patch else int(chw.shape[1]), *tile)
    else:
        chw, is_stack = _channels_first(image_np, in_channels, grey=rgb is False)
    if is_stack and meta_scale(meta) == "minmax" and meta.get("data_kind") != "nifti":
        # trained on 2D images (folders, napari frames), each min-max scaled on its own
        chw = np.stack([normalise_image(s, meta) for s in chw])
    else:  # one scale for the whole input: a NIfTI volume is min-max scaled as one in training
        chw = normalise_image(chw, meta, channel_axis=1 if is_stack else 0)
    if is_stack:
        per_slice = [
            _predict_chw(model, s, meta, tile, overlap, run_device, batch_size, amp, resize)
            for s in chw
        ]
        labels = np.stack([p[0] for p in per_slice])
        probs = np.stack([p[1] for p in per_slice])
        return labels, probs
    return _predict_chw(model, chw, meta, tile, overlap, run_device, batch_size, amp, resize)


def _model_in_channels(model: nn.Module) -> int:
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.Conv3d):
            return int(module.in_channels)
    return 3


def _resize(x: Tensor, size: Sequence[int]) -> Tensor:
    """``(C, *spatial)`` -> ``(C, *size)``, (bi/tri)linear; in 2D antialiased as the training
    resize (torchvision's ``resize(antialias=True)``): shrinking without it would feed the
    model other pixels than the ones it was trained and validated on."""
    if x.ndim == 3:
        return F.interpolate(x[None], size=size, mode="bilinear", antialias=True)[0]
    return F.interpolate(x[None], size=size, mode="trilinear", align_corners=False)[0]


def _predict_chw(
    model: nn.Module,
    chw: np.ndarray,
    meta: dict[str, Any],
    tile: Sequence[int] | str | None,
    overlap: float,
    device: torch.device,
    batch_size: int,
    amp: bool,
    resize: bool | None,
) -> tuple[np.ndarray, np.ndarray]:
    spatial = tuple(chw.shape[1:])
    x = torch.from_numpy(np.ascontiguousarray(chw))
    size = _pair(_meta_get(meta, "input_size", "size"))
    do_resize = (resize is None or resize) and size is not None and len(size) == len(spatial)
    if do_resize and tuple(size) != spatial:
        x = _resize(x, size)
    window = _window(tuple(x.shape[1:]), meta, tile)
    logits = None
    if window is None:  # validation's pass: the whole (resized) image
        xb = x[None].to(device, dtype=torch.float32)
        stride = int(output_stride(model))  # type: ignore[arg-type]  # 2D: one int
        # channels-last on CUDA, as the training loop and the tiles run
        logits = whole_image_logits(model, xb, stride, amp=amp, channels_last=device.type == "cuda")
        probs = probabilities_from_logits(logits)[0].cpu()
    else:
        probs = sliding_window_predict(
            model,
            x,
            tile=window,
            overlap=overlap,
            batch_size=batch_size,
            device=device,
            amp=amp,
            accumulate_device="cpu",
            multiple=output_stride(model),  # tiles on the pixel phase validation ran at
        )
    # labels from the logits where they exist at this size, as validation takes them:
    # sigmoid(x) > 0.5 and x > 0 differ where float32 rounds a tiny logit's sigmoid to 0.5
    scores, cut = (logits[0].cpu(), 0.0) if logits is not None else (probs, 0.5)
    if tuple(probs.shape[1:]) != spatial:
        probs = _resize(probs, spatial)
        scores, cut = probs, 0.5
    labels = labels_from_logits(scores[None], cut)[0].numpy()
    return labels, probs.numpy().astype(np.float32, copy=False)


def _window(
    spatial: tuple[int, ...], meta: dict[str, Any], tile: Sequence[int] | str | None
) -> tuple[int, ...] | None:
    """The tile :func:`predict` runs (``None``: one whole-image pass): the given one, the
    training crop for ``"crop"``, else what validation ran on this input
    (:func:`~.tiling.inference_window`: 2D whole unless huge, 3D the training patch)."""
    if tile == "crop" or (tile is None and len(spatial) == 3):
        return _default_tile(spatial, meta)
    if tile is not None:
        return tuple(int(t) for t in tile)
    return inference_window(spatial, _pair(_meta_get(meta, "crop")))


# --------------------------------------------------------------------------------------------
# napari images (what the Predict & Compare panel and the Loss Explorer run)
# --------------------------------------------------------------------------------------------


def iter_predict_image(
    checkpoint: str | Path,
    image: np.ndarray,
    *,
    rgb: bool,
    tile: int | str = 0,
    overlap: float = 0.25,
    device: str = "auto",
    meta_out: dict[str, Any] | None = None,
    models: ModelCache | None = None,
) -> Iterator[tuple[int, int]]:
    """:func:`predict_image` one frame at a time: yields ``(frames done, frames)`` before each
    frame and returns ``(labels, probs)`` (``StopIteration.value``), so a caller can show
    progress and stop between frames. The checkpoint is loaded once; ``meta_out``, when
    given, receives its meta (class names, normalisation, ...). ``tile``: 0 runs as validation
    did, ``"crop"`` tiles with the training crop, a size tiles with squares of that edge.
    ``models``: a :class:`~.checkpoint.ModelCache` to take the model from and leave it in
    (panels keep one); without it the model is loaded now and freed at the end."""
    dev = resolve_device(device)
    if models is not None:
        model, meta = models.load(Path(checkpoint), device=dev)
    else:
        model, meta = load_model(Path(checkpoint), device=str(dev))
    if meta_out is not None:
        meta_out.update(meta)
    kw: dict[str, Any] = {
        "meta": meta,
        "tile": "crop" if tile == "crop" else (tile, tile) if tile else None,
        "overlap": overlap,
        "device": dev,
        "amp": dev.type == "cuda",  # CPU autocast is slower than float32 for these models
        "rgb": rgb,  # a colour layer for a grey model is refused by predict, not reinterpreted
    }
    try:
        if rgb and image.ndim == 4:
            labels_list, probs_list = [], []
            for i, frame in enumerate(image):
                yield i, len(image)
                lab, prob = predict(model, frame, **kw)
                labels_list.append(lab)
                probs_list.append(prob)
            yield len(image), len(image)
            return np.stack(labels_list), np.stack(probs_list, axis=1)  # (K, N, Y, X)
        yield 0, 1
        labels, probs = predict(model, image, **kw)
        yield 1, 1
    finally:
        del model
        if dev.type == "cuda":
            torch.cuda.empty_cache()  # give the memory back to other GPU users at once
    return labels, channels_first_probs(labels, probs)


def predict_image(
    checkpoint: str | Path,
    image: np.ndarray,
    *,
    rgb: bool,
    tile: int | str = 0,
    overlap: float = 0.25,
    device: str = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """Run a checkpoint on image data as napari holds it: ``(labels, probs (K, *spatial))``.

    A stack of RGB frames ``(N, Y, X, 3)`` (e.g. the ``kvasir`` sample) is predicted frame by
    frame; a grey volume ``(Z, Y, X)`` is sliced by :func:`predict` itself. ``tile`` is the
    tile edge in pixels (0: as validation ran, :func:`predict`'s default; ``"crop"``: the
    training crop). Mixed precision
    only on GPUs.
    """
    steps = iter_predict_image(
        checkpoint, image, rgb=rgb, tile=tile, overlap=overlap, device=device
    )
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


def channels_first_probs(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """:func:`predict`'s probabilities as ``(K, *spatial)``: a volume predicted slice by slice
    comes back as ``(Z, K, Y, X)`` and is transposed."""
    if tuple(probs.shape[1:]) == tuple(labels.shape):
        return probs
    if (
        probs.ndim == 4
        and probs.shape[0] == labels.shape[0]
        and probs.shape[2:] == labels.shape[1:]
    ):
        return np.ascontiguousarray(np.moveaxis(probs, 1, 0))
    raise ValueError(
        f"prediction: unexpected probability shape {probs.shape} for labels {labels.shape}"
    )
