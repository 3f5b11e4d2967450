"""Validation during training and the final ``eval.json``: model outputs scored per image.

2D images are run whole (padded to the encoder's stride, as the PM-Dice paper evaluates the
resized image); 3D volumes with :func:`~.inference.sliding_window_predict` (``tile = patch``).
Labels come from :func:`~.inference.labels_from_logits`, the rule ``segloss predict`` applies,
and every image is scored with :func:`napari_segloss.metrics.evaluate`.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Sequence
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
from .inference import labels_from_logits, pad_to_multiple, sliding_window_predict
from .model import output_stride
from .rundir import write_text_atomic

__all__ = ["EvalSettings", "evaluate_dataset", "summarize", "write_eval", "write_predictions"]

PerImage = list[dict[int, dict[str, float]]]


@dataclass(frozen=True)
class EvalSettings:
    """How a model is run for scoring (fixed for one training run)."""

    device: torch.device
    num_classes: int
    amp_dtype: torch.dtype | None = None
    channels_last: bool = False
    #: spatial sizes must be multiples of this (the encoder's output stride)
    multiple: int = 32

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
) -> tuple[float, int, PerImage]:
    """(loss sum, image count, per-image ``metrics.evaluate`` results) over ``indices``.

    ``surface=False`` skips the distance metrics (NSD, HD95) for faster validation epochs.
    ``predictions``: a list that receives each image's predicted labels (numpy), in order.
    ``progress``: the description of a progress bar over the images (None: no bar).
    """
    was_training = model.training
    model.eval()
    # a pass over a validation set can take minutes on a CPU: the training bar stands still
    bar = progress_bar(
        total=len(indices), desc=progress, unit="img", leave=False, disable=progress is None
    )
    try:
        if getattr(dataset, "spatial_dims", 2) == 3:
            return _evaluate_volumes(
                model, dataset, indices, settings, loss_fn, surface, predictions, bar
            )
        return _evaluate_images(
            model, dataset, indices, settings, loss_fn, batch_size, surface, predictions, bar
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
) -> tuple[float, int, PerImage]:
    loader = DataLoader(dataset, batch_size=batch_size, sampler=list(indices), num_workers=0)
    loss_sum = torch.zeros((), device=s.device, dtype=torch.float64)
    results: PerImage = []
    count = 0
    for images, masks in loader:
        images = images.to(s.device, non_blocking=True)
        masks = masks.to(s.device, non_blocking=True)
        images, (h, w) = pad_to_multiple(images, s.multiple)
        if s.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with s.autocast():
            logits = model(images)
        logits = logits[..., :h, :w].float()
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
        image, mask = dataset[i]
        with s.autocast():
            probs = sliding_window_predict(
                model,
                image.to(s.device),
                tile=patch,
                device=s.device,
                amp=False,  # the autocast above already uses train.amp_dtype
                accumulate_device=s.device,
                multiple=output_stride(model),
            )  # it makes CUDA tiles channels-last (3D) itself
        probs = probs.float().clamp(1e-6, 1 - 1e-6)[None]
        logits = torch.logit(probs) if probs.shape[1] == 1 else probs.log()
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
) -> dict[str, Any]:
    """Evaluate ``weights`` on ``dataset`` with every metric; write ``eval.json`` and, when
    ``predictions_path`` is given, the predicted labels there (:func:`write_predictions`).
    ``progress``: a progress bar over the images."""
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
        predictions=preds,
        progress=f"eval.json: {weights.name} on {split}" if progress else None,
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
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as fh:
        np.savez_compressed(fh, **arrays)
    os.replace(tmp, path)
