"""Sliding-window (tiled) and whole-image forward passes for 2D images and 3D volumes.

Images larger than the training size are cut into overlapping tiles; each tile's class
probabilities are weighted by a smooth importance map (a separable Gaussian, as in nnU-Net,
Isensee et al. 2021) and the weighted sum is divided by the summed weights. Tiles are run in
batches and the accumulators live on one device in float32, so the memory use is bounded by
``batch_size`` tiles of activations plus ``(K + 1) x image`` floats, whatever the image size.

:func:`inference_window` is the one rule that decides between a whole-image pass and tiles;
validation, ``eval.json`` and :func:`~.inference.predict` all follow it, so ``segloss
predict`` writes the masks that the run's scores were taken on.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from functools import lru_cache
from itertools import product
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.patches import pad_before
from .devices import autocast_dtype, resolve_device

__all__ = [
    "WHOLE_IMAGE_MAX_PIXELS",
    "check_window_args",
    "gaussian_importance_map",
    "inference_window",
    "labels_from_logits",
    "pad_to_multiple",
    "probabilities_from_logits",
    "sliding_window_predict",
    "tile_starts",
    "whole_image_logits",
]


def tile_starts(size: int, tile: int, overlap: float, multiple: int = 1) -> list[int]:
    """Start offsets of tiles of length ``tile`` covering ``[0, size)`` with ``overlap``.

    The stride is ``tile * (1 - overlap)`` (at least 1); the last tile is shifted back so that it
    ends exactly at ``size`` instead of running past the edge (no padding for non-multiples).
    ``size`` must be ``>= tile`` (smaller images are padded by the caller). ``multiple``: every
    start is a multiple of it (the stride is rounded down to one, at least ``multiple``), so
    ``size - tile`` must be one too (the caller pads the end).
    """
    if size < tile:
        raise ValueError(f"size: expected >= tile ({tile}), got {size}")
    if multiple < 1 or (size - tile) % multiple:
        raise ValueError(f"multiple: expected a positive divisor of size - tile, got {multiple}")
    stride = max(multiple, int(tile * (1.0 - overlap)) // multiple * multiple)
    starts = list(range(0, size - tile + 1, stride))
    if starts[-1] != size - tile:
        starts.append(size - tile)
    return starts


@lru_cache(maxsize=8)
def _gaussian_importance_map_cached(tile: tuple[int, ...], sigma_scale: float) -> Tensor:
    weight = torch.ones((), dtype=torch.float64)
    for length in tile:
        sigma = max(length * sigma_scale, 1e-6)
        coords = torch.arange(length, dtype=torch.float64) - (length - 1) / 2.0
        g = torch.exp(-0.5 * (coords / sigma) ** 2)
        weight = weight.unsqueeze(-1) * g
    weight = weight / weight.max()
    # Corners of a Gaussian can underflow towards 0; a floor keeps every pixel covered by at
    # least one tile with a non-zero weight, so the division by the summed weights is safe.
    return weight.clamp_min(1e-3).to(torch.float32)


def gaussian_importance_map(tile: Sequence[int], sigma_scale: float = 0.125) -> Tensor:
    """Separable Gaussian weights of shape ``tile``, peak 1 at the centre, floor 1e-3.

    ``sigma = sigma_scale * tile`` per axis (1/8 of the tile as in nnU-Net), so tile borders,
    where the receptive field is truncated, contribute little to the blended prediction.
    """
    return _gaussian_importance_map_cached(tuple(int(t) for t in tile), float(sigma_scale))


def _validate_tile(
    tile: Sequence[int] | int, n_spatial: int, name: str = "tile"
) -> tuple[int, ...]:
    if isinstance(tile, int):
        tile = (tile,) * n_spatial
    tile = tuple(tile)
    if len(tile) != n_spatial or not all(isinstance(t, int | np.integer) and t > 0 for t in tile):
        raise ValueError(
            f"{name}: expected {n_spatial} positive integers (one per spatial axis), got {tile!r}"
        )
    return tuple(int(t) for t in tile)


def _autocast(device: torch.device, amp: bool) -> contextlib.AbstractContextManager[Any]:
    # AMP only on CUDA: bf16 where the GPU has it natively (no overflow), else fp16.
    # CPU autocast is slower than float32 for convolutions on most CPUs, so it stays off.
    if not amp or device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=autocast_dtype(device, "bfloat16")[0])


def probabilities_from_logits(logits: Tensor) -> Tensor:
    """float32 class probabilities: sigmoid for one channel, softmax over several."""
    logits = logits.float()
    if logits.shape[1] == 1:
        return torch.sigmoid(logits)
    return torch.softmax(logits, dim=1)


def labels_from_logits(logits: Tensor, threshold: float = 0.0) -> Tensor:
    """Integer labels ``(B, *spatial)`` from scores ``(B, K, *spatial)``: ``score >
    threshold`` for one channel (logits: 0, probabilities: 0.5), the argmax for several; uint8
    up to 256 classes, int32 above (uint8 would wrap class 256 to 0). The one rule of
    validation, eval.json and ``predict``."""
    if logits.shape[1] == 1:
        return (logits[:, 0] > threshold).to(torch.uint8)
    return logits.argmax(1).to(torch.uint8 if logits.shape[1] <= 256 else torch.int32)


def pad_to_multiple(x: Tensor, multiple: int) -> tuple[Tensor, tuple[int, int]]:
    """Zero-pad the last two axes of ``x`` up to multiples of ``multiple`` (an encoder's output
    stride) at the bottom/right; returns the padded tensor and the original ``(h, w)``."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph))
    return x, (h, w)


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def sliding_window_predict(
    model: nn.Module,
    image: Tensor,
    *,
    tile: Sequence[int] | int,
    overlap: float = 0.25,
    batch_size: int = 4,
    device: str | torch.device | None = None,
    amp: bool = True,
    blend: str = "gaussian",
    accumulate_device: str | torch.device | None = None,
    multiple: Sequence[int] | int = 1,
) -> Tensor:
    """Class probabilities of ``model`` on ``image`` computed tile by tile and blended.

    Args:
        model: maps ``(N, C, *tile)`` to logits ``(N, K, *tile)``; ``K == 1`` is binary (sigmoid),
            ``K >= 2`` multi-class (softmax).
        image: ``(C, *spatial)`` or ``(B, C, *spatial)``, 2D or 3D (``len(tile)`` spatial axes),
            already normalised as the model expects.
        tile: tile size per spatial axis (e.g. the training crop); an int means a square/cube
            over an unbatched image's spatial axes. An image smaller than the tile
            along an axis is zero-padded about symmetrically and the padding is cropped away
            again.
        overlap: fraction of a tile shared with its neighbour, in ``[0, 1)``.
        batch_size: tiles per forward pass (bounds activation memory).
        device: where the model runs; ``None`` uses the model's parameter device, ``"auto"`` CUDA
            if available.
        amp: autocast (bf16, else fp16) on CUDA; ignored on CPU.
        blend: ``"gaussian"`` (smooth weights, default) or ``"constant"`` (plain average).
        accumulate_device: where the ``(K, *spatial)`` accumulators live; default: the image's
            device (CPU for numpy-sourced images, so a huge image never has to fit on the GPU).
        multiple: the network's output stride per axis (or one for all;
            :func:`~.model.output_stride`): every window then starts at a multiple of it, the
            image being zero-padded at the end by less than that, so each tile sees the pixel
            grid as a whole-image pass (and validation) does. With 1, tiles start anywhere, and
            a strided network's output differs between such phases.

    Returns:
        float32 probabilities ``(K, *spatial)`` or ``(B, K, *spatial)`` matching ``image``'s batching.
    """
    batched, image, tile_t = _window_args(image, tile, overlap, batch_size, blend)
    if device is None:
        param = next(iter(model.parameters()), None)
        run_device = param.device if param is not None else torch.device("cpu")
    else:
        run_device = resolve_device(device)
    acc_device = image.device if accumulate_device is None else resolve_device(accumulate_device)

    spatial = tuple(image.shape[2:])
    steps = _validate_tile(multiple, len(tile_t), "multiple")
    # Pad with zeros (= the mean after normalisation): about symmetrically where the image is
    # smaller than the tile (every tile full-sized; 3D training patches place a small volume
    # at the same offset), then at the end so that the last window
    # starts at a multiple of the stride too; the image keeps the origin's pixel phase.
    pads_before = [pad_before(s, t, m) for s, t, m in zip(spatial, tile_t, steps, strict=True)]
    pads_after = [
        max(t, b + s + (-(b + s - t)) % m) - b - s
        for s, t, m, b in zip(spatial, tile_t, steps, pads_before, strict=True)
    ]
    if any(pads_before) or any(pads_after):
        pad_arg: list[int] = []
        for b, a in zip(reversed(pads_before), reversed(pads_after), strict=True):
            pad_arg += [b, a]
        image = F.pad(image, pad_arg)
    padded = tuple(image.shape[2:])

    starts = [
        tile_starts(s, t, float(overlap), m) for s, t, m in zip(padded, tile_t, steps, strict=True)
    ]
    windows = [
        tuple(slice(o, o + t) for o, t in zip(origin, tile_t, strict=True))
        for origin in product(*starts)
    ]
    if blend == "gaussian":
        weight = gaussian_importance_map(tile_t).to(acc_device)
    else:
        weight = torch.ones(tile_t, dtype=torch.float32, device=acc_device)

    # The weight sum depends only on the window layout, so it is computed once for the batch.
    weight_sum = torch.zeros(padded, dtype=torch.float32, device=acc_device)
    for win in windows:
        weight_sum[win] += weight

    outputs: list[Tensor] = []
    crop = tuple(slice(pb, pb + s) for pb, s in zip(pads_before, spatial, strict=True))
    with _eval_mode(model), torch.inference_mode():
        for b in range(image.shape[0]):
            acc = _blend_windows(
                model, image[b], windows, weight, int(batch_size), run_device, acc_device, amp
            )
            acc /= weight_sum
            outputs.append(acc[(slice(None), *crop)])
    result = torch.stack(outputs)
    return result if batched else result[0]


def check_window_args(overlap: float, batch_size: int) -> None:
    """ValueError for an ``overlap`` outside [0, 1) or a ``batch_size`` below 1."""
    if not 0.0 <= float(overlap) < 1.0:
        raise ValueError(f"overlap: expected a fraction in [0, 1), got {overlap!r}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size: expected a positive integer, got {batch_size!r}")


def _window_args(
    image: Tensor, tile: Sequence[int] | int, overlap: float, batch_size: int, blend: str
) -> tuple[bool, Tensor, tuple[int, ...]]:
    """Check :func:`sliding_window_predict`'s arguments: ``(batched, (B, C, ...) image, tile)``."""
    if not isinstance(image, Tensor):
        raise ValueError(f"image: expected a torch.Tensor, got {type(image).__name__}")
    n_spatial = image.dim() - 1 if isinstance(tile, int) else len(tuple(tile))
    if n_spatial not in (2, 3):
        raise ValueError(f"tile: expected 2 or 3 spatial sizes (2D or 3D), got {tile!r}")
    tile_t = _validate_tile(tile, n_spatial)
    if image.dim() not in (n_spatial + 1, n_spatial + 2):
        raise ValueError(
            f"image: expected shape (C, *spatial) or (B, C, *spatial) with {n_spatial} spatial "
            f"axes for tile {tile_t}, got shape {tuple(image.shape)}"
        )
    check_window_args(overlap, batch_size)
    if blend not in ("gaussian", "constant"):
        raise ValueError(f"blend: expected 'gaussian' or 'constant', got {blend!r}")
    batched = image.dim() == n_spatial + 2
    return batched, image if batched else image.unsqueeze(0), tile_t


def _blend_windows(
    model: nn.Module,
    image: Tensor,
    windows: list[tuple[slice, ...]],
    weight: Tensor,
    batch_size: int,
    run_device: torch.device,
    acc_device: torch.device,
    amp: bool,
) -> Tensor:
    """Weighted sum of the class probabilities of every window of one ``(C, *spatial)`` image."""
    tile_t = tuple(weight.shape)
    acc: Tensor | None = None
    for first in range(0, len(windows), batch_size):
        chunk = windows[first : first + batch_size]
        tiles = torch.stack([image[(slice(None), *win)] for win in chunk])
        tiles = tiles.to(run_device, dtype=torch.float32, non_blocking=True)
        if run_device.type == "cuda" and tiles.dim() in (4, 5):
            # Channels-last is what the training loop uses: faster convs with AMP.
            fmt = torch.channels_last if tiles.dim() == 4 else torch.channels_last_3d
            tiles = tiles.contiguous(memory_format=fmt)
        with _autocast(run_device, amp):
            logits = model(tiles)
        if not isinstance(logits, Tensor):
            raise ValueError(
                "model: expected a module returning a logits Tensor (N, K, *tile), "
                f"got {type(logits).__name__}"
            )
        if tuple(logits.shape[2:]) != tile_t or logits.shape[0] != len(chunk):
            raise ValueError(
                f"model: expected output shape ({len(chunk)}, K, *{tile_t}), "
                f"got {tuple(logits.shape)}"
            )
        probs = probabilities_from_logits(logits).to(acc_device)
        if acc is None:
            acc = torch.zeros(
                (probs.shape[1], *image.shape[1:]), dtype=torch.float32, device=acc_device
            )
        for win, p in zip(chunk, probs, strict=True):
            acc[(slice(None), *win)] += p * weight
    assert acc is not None  # at least one window always exists
    return acc


# ----------------------------------------------------------------------------------------------
# whole image or tiles: the one rule of validation, eval.json and predict

#: 2D images up to this many pixels are run whole (padded to the output stride), larger ones
#: tiled with the training crop. About 2 to 4 GB of activations for a ResNet34 U-Net at the
#: limit: a whole pass still fits common GPUs, and the limit bounds what a huge image needs.
WHOLE_IMAGE_MAX_PIXELS = 2048 * 2048


def inference_window(
    spatial: Sequence[int],
    tile: Sequence[int] | None,
    *,
    max_pixels: int | None = None,
) -> tuple[int, ...] | None:
    """The sliding window for an input of ``spatial`` size, or ``None`` for a whole pass.

    3D volumes are always tiled with ``tile`` (the training patch). A 2D image is run whole,
    as the PM-Dice paper evaluates the resized image, unless it has more than ``max_pixels``
    pixels (default :data:`WHOLE_IMAGE_MAX_PIXELS`) and a ``tile`` (the training crop) is
    known. Validation and ``predict`` both ask this function, so a prediction is the mask the
    run's metrics were taken on; a tiled pass differs from a whole one (zero padding at every
    tile border, blended probabilities).
    """
    if tile is None:
        return None
    limit = WHOLE_IMAGE_MAX_PIXELS if max_pixels is None else max_pixels
    tile_t = tuple(int(t) for t in tile)
    if len(spatial) == 3 or math.prod(int(s) for s in spatial) > limit:
        return tile_t
    return None


def whole_image_logits(
    model: nn.Module,
    images: Tensor,
    multiple: int,
    *,
    amp: bool = False,
    channels_last: bool = False,
) -> Tensor:
    """float32 logits ``(B, K, H, W)`` of one pass over whole images ``(B, C, H, W)`` (on the
    model's device), zero-padded at the bottom/right to a multiple of the network's output
    stride and cropped back, in eval mode. ``amp``: autocast on CUDA as tiles do (validation
    sets its own autocast instead); ``channels_last``: the memory format training used."""
    padded, (h, w) = pad_to_multiple(images, multiple)
    if channels_last:
        padded = padded.contiguous(memory_format=torch.channels_last)
    with _eval_mode(model), torch.inference_mode(), _autocast(images.device, amp):
        logits = model(padded)
    if not isinstance(logits, Tensor) or logits.dim() != 4:
        raise ValueError(
            "model: expected a module returning logits (B, K, H, W), got "
            f"{tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__}"
        )
    return logits[..., :h, :w].float()
