"""Validation during training and the final ``eval.json``: model outputs scored per image.

Each input is run as :func:`~.tiling.inference_window` says, the rule ``segloss predict``
follows too: 2D images whole (padded to the encoder's stride, as the PM-Dice paper evaluates
the resized image; tiled with the training crop only above
:data:`~.tiling.WHOLE_IMAGE_MAX_PIXELS`), 3D volumes with
:func:`~.tiling.sliding_window_predict` (``tile = patch``). Labels come from
:func:`~.tiling.labels_from_logits`, and every image is scored with
:func:`napari_segloss.metrics.evaluate`.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from ..data.datasets import SegmentationDataset
from ..metrics import aggregate, evaluate
from ..progress import progress_bar
from .checkpoint import load_checkpoint
from .model import output_stride
from .rundir import write_atomic, write_text_atomic
from .tiling import (
    inference_window,
    labels_from_logits,
    sliding_window_predict,
    whole_image_logits,
)

__all__ = [
    "EvalSettings",
    "EvaluationStopped",
    "evaluate_dataset",
    "summarize",
    "write_eval",
    "write_predictions",
]

PerImage = list[dict[int, dict[str, float]]]


class EvaluationStopped(Exception):
    """``should_stop`` asked a scoring pass to end before its last image; nothing was
    written. A pass over a large held-out set outlasts the grace period between a scheduler's
    (or torchrun's) SIGTERM and its SIGKILL, so it is stopped between batches, not waited for."""


@dataclass(frozen=True)
class EvalSettings:
    """How a model is run for scoring (fixed for one training run)."""

    device: torch.device
    num_classes: int
    amp_dtype: torch.dtype | None = None
    channels_last: bool = False
    #: spatial sizes must be multiples of this (the encoder's output stride)
    multiple: int = 32
    #: the training crop: 2D images too large for one pass are tiled with it
    #: (:func:`~.tiling.inference_window`, as ``segloss predict`` does)
    tile: tuple[int, ...] | None = None

    def autocast(self) -> torch.autocast:
        return torch.autocast(
            self.device.type,
            dtype=self.amp_dtype or torch.float32,
            enabled=self.amp_dtype is not None,
        )


def summarize(per_image: PerImage, class_names: Sequence[str] | None) -> dict[str, Any]:
    """Per-class means over images (NaN skipped, counted) and their mean over classes."""
    rows = aggregate(per_image, class_names=class_names) if per_image else []
    per_class: dict[str, dict[str, float]] = {}
    nan_counts: dict[str, dict[str, int]] = {}
    mean: dict[str, float] = {}
    for r in rows:
        if r["class"] == "mean":
            mean[r["metric"]] = r["mean"]
        else:
            per_class.setdefault(str(r["class"]), {})[r["metric"]] = r["mean"]
            nan_counts.setdefault(str(r["class"]), {})[r["metric"]] = r["nan_count"]
    if len(per_class) == 1:  # binary: the one foreground class is the mean
        mean = dict(next(iter(per_class.values())))
    return {
        "mean": mean,
        "per_class": per_class,
        "nan_count": nan_counts,
        "num_images": len(per_image),
    }


@torch.inference_mode()
def evaluate_dataset(
    model: nn.Module,
    dataset: SegmentationDataset,
    indices: Sequence[int],
    settings: EvalSettings,
    *,
    loss_fn: nn.Module | None = None,
    batch_size: int = 1,
    surface: bool = True,
    predictions: list[np.ndarray] | None = None,
    progress: str | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[float, int, PerImage]:
    """(loss sum, image count, per-image ``metrics.evaluate`` results) over ``indices``.

    ``surface=False`` skips the distance metrics (NSD, HD95) for faster validation epochs.
    ``predictions``: a list that receives each image's predicted labels (numpy), in order.
    ``progress``: the description of a progress bar over the images (None: no bar).
    ``should_stop``: called before each batch (each volume in 3D); True raises
    :class:`EvaluationStopped` (e.g. a :class:`~.distributed.StopVote`).
    """
    was_training = model.training
    model.eval()
    # a pass over a validation set can take minutes on a CPU: the training bar stands still
    bar = progress_bar(
        total=len(indices), desc=progress, unit="img", leave=False, disable=progress is None
    )
    try:
        stop = should_stop or (lambda: False)
        if getattr(dataset, "spatial_dims", 2) == 3:
            return _evaluate_volumes(
                model, dataset, indices, settings, loss_fn, surface, predictions, bar, stop
            )
        return _evaluate_images(
            model, dataset, indices, settings, loss_fn, batch_size, surface, predictions, bar, stop
        )
    finally:
        bar.close()
        model.train(was_training)


def _evaluate_images(
    model: nn.Module,
    dataset: SegmentationDataset,
    indices: Sequence[int],
    s: EvalSettings,
    loss_fn: nn.Module | None,
    batch_size: int,
    surface: bool,
    keep: list[np.ndarray] | None,
    bar: Any,
    should_stop: Callable[[], bool],
) -> tuple[float, int, PerImage]:
    loader = DataLoader(dataset, batch_size=batch_size, sampler=list(indices), num_workers=0)
    loss_sum = torch.zeros((), device=s.device, dtype=torch.float64)
    results: PerImage = []
    count = 0
    for images, masks in loader:
        if should_stop():
            raise EvaluationStopped(f"stopped after {count} of {len(indices)} image(s)")
        images = images.to(s.device, non_blocking=True)
        masks = masks.to(s.device, non_blocking=True)
        window = inference_window(images.shape[2:], s.tile)
        with s.autocast():
            if window is None:
                logits = whole_image_logits(
                    model, images, s.multiple, channels_last=s.channels_last
                )
            else:
                logits = _as_logits(_tiled(model, images, window, s))
        if loss_fn is not None:
            loss_sum += loss_fn(logits, masks).double() * images.shape[0]
        preds = labels_from_logits(logits).cpu().numpy()
        for p, g in zip(preds, masks.cpu().numpy(), strict=True):
            results.append(evaluate(p, g, num_classes=s.num_classes, surface=surface))
            if keep is not None:
                keep.append(p)
        count += images.shape[0]
        bar.update(images.shape[0])
    return float(loss_sum.item()), count, results


def _evaluate_volumes(
    model: nn.Module,
    dataset: SegmentationDataset,
    indices: Sequence[int],
    s: EvalSettings,
    loss_fn: nn.Module | None,
    surface: bool,
    keep: list[np.ndarray] | None,
    bar: Any,
    should_stop: Callable[[], bool],
) -> tuple[float, int, PerImage]:
    """Each whole volume is predicted with 3D sliding windows (``tile = data.patch``, Gaussian
    blending) and scored in 3D at the volume's voxel spacing. The loss is taken on the blended
    probabilities (as logits: ``log p`` for softmax, ``logit p`` for sigmoid), the closest
    whole-volume equivalent.
    """
    patch = tuple(int(p) for p in dataset.patch)  # type: ignore[attr-defined]
    loss_sum = torch.zeros((), device=s.device, dtype=torch.float64)
    results: PerImage = []
    for i in indices:
        if should_stop():
            raise EvaluationStopped(f"stopped after {len(results)} of {len(indices)} volume(s)")
        image, mask = dataset[i]
        with s.autocast():
            logits = _as_logits(_tiled(model, image.to(s.device)[None], patch, s))
        mask = mask.to(s.device)[None]
        if loss_fn is not None:
            loss_sum += loss_fn(logits, mask).double()
        pred = labels_from_logits(logits)[0].cpu().numpy()
        if keep is not None:
            keep.append(pred)
        spacing = dataset.spacing(i) if hasattr(dataset, "spacing") else None
        results.append(
            evaluate(
                pred,
                mask[0].cpu().numpy(),
                num_classes=s.num_classes,
                spacing=spacing,
                surface=surface,
            )
        )
        bar.update(1)
    return float(loss_sum.item()), len(results), results


def _tiled(
    model: nn.Module, images: torch.Tensor, tile: tuple[int, ...], s: EvalSettings
) -> torch.Tensor:
    """Blended probabilities ``(B, K, *spatial)`` of :func:`~.tiling.sliding_window_predict`
    on the network's stride grid, under the caller's autocast."""
    return sliding_window_predict(
        model,
        images,
        tile=tile,
        device=s.device,
        amp=False,  # the caller's autocast already uses train.amp_dtype
        accumulate_device=s.device,
        multiple=output_stride(model),
    )  # it makes CUDA tiles channels-last itself


def _as_logits(probs: torch.Tensor) -> torch.Tensor:
    """Blended probabilities as logits (``logit p`` for sigmoid, ``log p`` for softmax): the
    closest whole-image equivalent for the loss, with the same labels."""
    probs = probs.float().clamp(1e-6, 1 - 1e-6)
    return torch.logit(probs) if probs.shape[1] == 1 else probs.log()


def write_eval(
    path: Path,
    dataset: SegmentationDataset,
    split: str,
    weights: Path,
    *,
    model: nn.Module,
    loss_fn: nn.Module,
    settings: EvalSettings,
    class_names: Sequence[str] | None,
    predictions_path: Path | None = None,
    progress: bool = False,
    should_stop: Callable[[], bool] | None = None,
    batch_size: int = 1,
    data_items: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Evaluate ``weights`` on ``dataset`` with every metric; write ``eval.json`` and, when
    ``predictions_path`` is given, the predicted labels there (:func:`write_predictions`).
    ``progress``: a progress bar over the images. ``should_stop``: see :func:`evaluate_dataset`
    (:class:`EvaluationStopped` is raised before anything is written). ``batch_size``: 2D
    images per forward pass (they must share one size; the training run passes validation's
    batch size, so eval.json of the best weights repeats that epoch's validation pass).
    ``data_items``: what the run's splits held (``run_state.data_items``), recorded so that a
    comparison reuses the result only on the same data."""
    state = load_checkpoint(weights, map_location=settings.device)["model"]
    model = copy.deepcopy(model)  # leave the caller's (final) weights untouched
    model.load_state_dict(state)
    preds: list[np.ndarray] | None = [] if predictions_path is not None else None
    loss_sum, count, results = evaluate_dataset(
        model,
        dataset,
        list(range(len(dataset))),
        settings,
        loss_fn=loss_fn,
        batch_size=batch_size,
        predictions=preds,
        progress=f"eval.json: {weights.name} on {split}" if progress else None,
        should_stop=should_stop,
    )
    names = [dataset.item_name(i) for i in range(len(dataset))]
    if predictions_path is not None and preds is not None:
        write_predictions(predictions_path, names, preds, split)
    summary = summarize(results, class_names)
    out = {
        "split": split,
        "checkpoint": weights.name,
        "num_images": count,
        "num_classes": settings.num_classes,
        "class_names": list(class_names) if class_names else None,
        "loss": loss_sum / max(1, count),
        "mean": summary["mean"],
        "per_class": summary["per_class"],
        "nan_count": summary["nan_count"],
        # what HD95 (and the NSD tolerance) are measured in: 3D volumes use their header spacing
        "distance_units": "voxel spacing" if hasattr(dataset, "spacing") else "pixels",
        # [H, W] the 2D images were resized to before scoring (data.size): the pixels of
        # HD95 and of the NSD tolerance are those, not the files' (None: scored as read)
        "scored_size": list(size) if (size := getattr(dataset, "size", None)) else None,
        "data_items": data_items,
        "per_image": [
            {"name": names[i], "metrics": {str(c): v for c, v in r.items()}}
            for i, r in enumerate(results)
        ],
    }
    write_text_atomic(path, json.dumps(out, indent=1))
    return {"path": path, "split": split, **summary}


def write_predictions(
    path: Path, names: Sequence[str], predictions: Sequence[np.ndarray], split: str
) -> None:
    """Write predicted label maps as a compressed ``.npz`` (atomically).

    Keys: ``names`` (str array, the eval.json ``per_image`` order), ``split`` and ``pred_<i>``
    (``uint8`` labels, ``uint16`` above 255 classes) at the resolution the metrics were taken
    at. npz keeps exact label values and any size per image (or 3D volume) in one file that
    numpy alone reads; binary masks compress about 50x.
    """
    arrays: dict[str, np.ndarray] = {"names": np.asarray(list(names), dtype=str)}
    arrays["split"] = np.asarray(split)
    for i, pred in enumerate(predictions):
        dtype = np.uint8 if int(pred.max(initial=0)) < 256 else np.uint16
        arrays[f"pred_{i}"] = np.asarray(pred, dtype=dtype)
    write_atomic(path, lambda fh: np.savez_compressed(fh, **arrays))
