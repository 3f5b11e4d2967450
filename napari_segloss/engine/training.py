"""The training loop: a generator of progress events shared by the CLI, notebooks and napari.

Protocol (PM-Dice paper, Hosseini 2025, section 3.2): Adam with weight decay 1e-4, polynomial
learning-rate policy ``lr * (1 - iter / max_iter) ** 0.9`` stepped every iteration, the loss
chosen by registry name, validation each epoch and the checkpoint with the best mean foreground
Dice kept as ``best.pt``.

Engineering choices:

* **Per-step overhead**: no host sync per step; the loss is read back (``.item()``) only every
  ``log_every`` steps and at epoch ends. Decoded/resized data is cached, workers are persistent,
  host->device copies are ``non_blocking`` from pinned memory on CUDA, the model runs
  channels-last and (on CUDA) under bf16 autocast.
* **Reproducible resume**: the sampler derives the shuffling *and* each sample's augmentation
  seed from ``(seed, epoch, index)``, so neither depends on worker processes or on where a run
  was interrupted; checkpoints store model/optimizer/scheduler, the position inside the epoch
  and the torch/numpy/python/CUDA/DataLoader RNG states. Resuming gives the same weights as an
  uninterrupted run (tested on CPU).
* **Stopping**: ``should_stop()`` (the napari Stop button), Ctrl-C/SIGTERM (caught at the next
  step boundary when training runs in the main thread) and a non-finite loss all end the run
  with ``{"type": "done", "stopped": True, "reason": ...}``. Cancels and interrupts save a
  resumable checkpoint first; a non-finite loss keeps the last good checkpoint on disk.
* **Distributed**: under ``torchrun`` the model is wrapped in DistributedDataParallel, the
  training sampler is a DistributedSampler, validation is sharded and gathered, and only rank 0
  writes files.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import logging
import math
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from ..data.datasets import SegmentationDataset, build_datasets, build_test_dataset
from .checkpoint import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    check_compatible,
    load_checkpoint,
    save_checkpoint,
)
from .config import ConfigError, TrainConfig, config_to_dict, load_config, resolve_output
from .distributed import (
    DistInfo,
    all_gather_objects,
    all_reduce_sum,
    any_true,
    barrier,
    broadcast_buffers,
    cleanup_distributed,
    init_distributed,
)
from .model import build_model

__all__ = ["EpochSampler", "iter_train", "poly_lr_factor", "resolve_device", "train"]

log = logging.getLogger(__name__)

Event = dict[str, Any]


def poly_lr_factor(iteration: int, max_iterations: int, power: float = 0.9) -> float:
    """``(1 - iteration / max_iterations) ** power`` (PM-Dice paper sec. 3.2), clamped at 0."""
    if max_iterations <= 0:
        raise ValueError(f"max_iterations must be positive, got {max_iterations}")
    return max(0.0, 1.0 - iteration / max_iterations) ** power


def resolve_device(device: str, info: DistInfo | None = None) -> torch.device:
    """``"auto"`` -> this rank's CUDA device, else MPS, else CPU; validates explicit choices."""
    local = info.local_rank if info is not None else 0
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local % torch.cuda.device_count())
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"config key 'train.device': {device!r} requested but CUDA is not available "
                "(use auto or cpu)"
            )
        if dev.index is None:
            dev = torch.device("cuda", local % torch.cuda.device_count())
        elif dev.index >= torch.cuda.device_count():
            raise ConfigError(
                f"config key 'train.device': {device!r} but only {torch.cuda.device_count()} "
                "CUDA device(s) exist"
            )
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(
            f"config key 'train.device': {device!r} requested but MPS is not available"
        )
    return dev


class EpochSampler(Sampler):
    """DistributedSampler whose items are ``(index, augmentation_seed)`` pairs.

    The order comes from ``DistributedSampler(shuffle=True, seed=seed)`` (also with one process)
    and each item's augmentation seed from ``(seed, epoch, index)``: both are pure functions of
    the epoch, so a run resumed mid-epoch (``set_start``) replays exactly the same batches.
    """

    def __init__(
        self, dataset: SegmentationDataset, *, seed: int, rank: int = 0, world_size: int = 1
    ) -> None:
        self.base = DistributedSampler(
            dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=False
        )
        self.seed = int(seed)
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (its shuffle and augmentation seeds); resets :meth:`set_start`."""
        self.epoch = int(epoch)
        self.base.set_epoch(self.epoch)
        self.start = 0

    def set_start(self, start: int) -> None:
        """Skip the first ``start`` samples of this epoch (resume mid-epoch)."""
        self.start = int(start)

    def sample_seed(self, index: int) -> int:
        """Augmentation seed of dataset item ``index`` in the current epoch."""
        return ((self.seed * 1_000_003 + self.epoch) * 1_000_033 + int(index)) % (2**63 - 1)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for pos, idx in enumerate(self.base):
            if pos >= self.start:
                yield idx, self.sample_seed(idx)

    def __len__(self) -> int:
        return max(0, len(self.base) - self.start)


# -- small helpers ---------------------------------------------------------------------------


def _rng_state(generator: torch.Generator) -> dict[str, Any]:
    # The legacy global numpy RNG is what user code (and old libraries) draw from: save it.
    np_state = np.random.get_state()  # noqa: NPY002
    state: dict[str, Any] = {
        "python": random.getstate(),
        # numpy's state holds an ndarray; lists keep the checkpoint loadable with weights_only.
        "numpy": [
            np_state[0],
            np_state[1].tolist(),
            int(np_state[2]),
            int(np_state[3]),
            float(np_state[4]),
        ],
        "torch": torch.get_rng_state(),
        "loader": generator.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), n[2], n[3], n[4]))  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    generator.set_state(state["loader"])
    if (
        "cuda" in state
        and torch.cuda.is_available()
        and len(state["cuda"]) == torch.cuda.device_count()
    ):
        torch.cuda.set_rng_state_all(state["cuda"])


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002
    torch.manual_seed(seed)


@contextmanager
def _determinism(deterministic: bool, cuda: bool) -> Iterator[None]:
    """Set (and afterwards restore) the global determinism flags: the napari panel shares them."""
    prev = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    if deterministic and cuda:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # warn_only: some CUDA kernels (e.g. bilinear upsampling backward) have no deterministic
    # variant; we still want the run, just with a warning.
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev[0], warn_only=prev[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = prev[2], prev[3]


class _Interrupts:
    """Turn SIGINT/SIGTERM into a flag checked between steps (main thread only).

    A second Ctrl-C falls through to Python's default handler (immediate KeyboardInterrupt).
    """

    def __init__(self) -> None:
        self.reason: str | None = None
        self._old: dict[int, Any] = {}
        self._pid = os.getpid()

    def _handler(self, signum: int, frame: Any) -> None:
        if os.getpid() != self._pid:
            # A forked DataLoader worker inherited this handler: Ctrl-C reaches the whole
            # process group, but only the main process decides; workers keep serving batches.
            return
        if self.reason is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.reason = "interrupted (Ctrl-C)" if signum == signal.SIGINT else "terminated (SIGTERM)"
        print(
            f"\nsegloss: {self.reason}; stopping after the current step and saving a checkpoint "
            "(press Ctrl-C again to abort at once)",
            file=sys.stderr,
        )

    def __enter__(self) -> _Interrupts:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                try:
                    self._old[sig] = signal.signal(sig, self._handler)
                except (ValueError, OSError):  # pragma: no cover - exotic embeddings
                    pass
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _write_metrics_csv(path: Path, history: Sequence[dict[str, Any]]) -> None:
    """Rewrite metrics.csv from the history (atomic): it always matches the checkpoint."""
    columns: list[str] = []
    for row in history:
        for k in row:
            if k not in columns:
                columns.append(k)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    _write_text_atomic(path, buf.getvalue())


def _summarize(
    per_image: list[dict[int, dict[str, float]]], class_names: Sequence[str] | None
) -> dict[str, Any]:
    """Per-class means over images (NaN skipped, counted) and their mean over classes."""
    from ..metrics import aggregate

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


def _pad_to(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        x = nn.functional.pad(x, (0, pw, 0, ph))
    return x, (h, w)


def _predict_labels(logits: torch.Tensor) -> torch.Tensor:
    if logits.shape[1] == 1:
        return (logits[:, 0] > 0).to(torch.uint8)
    return logits.argmax(1).to(torch.uint8)


@torch.inference_mode()
def _evaluate(
    model: nn.Module,
    dataset: SegmentationDataset,
    indices: Sequence[int],
    *,
    loss_fn: nn.Module | None,
    device: torch.device,
    num_classes: int,
    batch_size: int,
    amp_dtype: torch.dtype | None,
    channels_last: bool,
    surface: bool,
    multiple: int,
) -> tuple[float, int, list[dict[int, dict[str, float]]]]:
    """(loss sum, image count, per-image metrics.evaluate results) over ``indices``."""
    from ..metrics import evaluate

    if getattr(dataset, "spatial_dims", 2) == 3:
        return _evaluate_volumes(
            model,
            dataset,
            indices,
            loss_fn=loss_fn,
            device=device,
            num_classes=num_classes,
            amp_dtype=amp_dtype,
            surface=surface,
        )  # sliding_window_predict makes CUDA tiles channels-last (3D) itself
    was_training = model.training
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, sampler=list(indices), num_workers=0)
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    results: list[dict[int, dict[str, float]]] = []
    count = 0
    for images, masks in loader:
        images = images.to(device, non_blocking=True)
        masks = masks.to(device, non_blocking=True)
        images, (h, w) = _pad_to(images, multiple)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(
            device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None
        ):
            logits = model(images)
        logits = logits[..., :h, :w].float()
        if loss_fn is not None:
            loss_sum += loss_fn(logits, masks).double() * images.shape[0]
        preds = _predict_labels(logits).cpu().numpy()
        gts = masks.cpu().numpy()
        for p, g in zip(preds, gts, strict=True):
            results.append(evaluate(p, g, num_classes=num_classes, surface=surface))
        count += images.shape[0]
    model.train(was_training)
    return float(loss_sum.item()), count, results


@torch.inference_mode()
def _evaluate_volumes(
    model: nn.Module,
    dataset: SegmentationDataset,
    indices: Sequence[int],
    *,
    loss_fn: nn.Module | None,
    device: torch.device,
    num_classes: int,
    amp_dtype: torch.dtype | None,
    surface: bool,
) -> tuple[float, int, list[dict[int, dict[str, float]]]]:
    """:func:`_evaluate` for 3D patch datasets: each whole volume is predicted with 3D sliding
    windows (``tile = data.patch``, Gaussian blending) and scored with ``metrics.evaluate`` in 3D
    at the volume's voxel spacing. The loss is taken on the blended probabilities (as logits:
    ``log p`` for softmax, ``logit p`` for sigmoid), the closest whole-volume equivalent.
    """
    from ..metrics import evaluate
    from .inference import sliding_window_predict

    was_training = model.training
    model.eval()
    patch = tuple(int(p) for p in dataset.patch)  # type: ignore[attr-defined]
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    results: list[dict[int, dict[str, float]]] = []
    for i in indices:
        image, mask = dataset[i]
        with torch.autocast(
            device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None
        ):
            probs = sliding_window_predict(
                model,
                image.to(device),
                tile=patch,
                device=device,
                amp=False,  # the autocast above already uses train.amp_dtype
                accumulate_device=device,
            )
        probs = probs.float().clamp(1e-6, 1 - 1e-6)[None]
        logits = torch.logit(probs) if probs.shape[1] == 1 else probs.log()
        mask = mask.to(device)[None]
        if loss_fn is not None:
            loss_sum += loss_fn(logits, mask).double()
        pred = _predict_labels(logits)[0].cpu().numpy()
        spacing = dataset.spacing(i) if hasattr(dataset, "spacing") else None
        results.append(
            evaluate(
                pred,
                mask[0].cpu().numpy(),
                num_classes=num_classes,
                spacing=spacing,
                surface=surface,
            )
        )
    model.train(was_training)
    return float(loss_sum.item()), len(results), results


def _meta(cfg: TrainConfig, train_ds: SegmentationDataset) -> dict[str, Any]:
    m = cfg.model
    size, crop = getattr(train_ds, "size", None), getattr(train_ds, "crop", None)
    patch = getattr(train_ds, "patch", None) if getattr(train_ds, "spatial_dims", 2) == 3 else None
    if patch is not None:
        # 3D: whole volumes at native resolution, tiled with the training patch.
        size = crop = None
    return {
        "format": CHECKPOINT_FORMAT,
        "arch": m.arch,
        "encoder": m.encoder,
        "in_channels": m.in_channels,
        "classes": m.classes,
        "model_kwargs": dict(m.kwargs),
        "spatial_dims": 3 if patch is not None else 2,
        "patch": list(patch) if patch is not None else None,
        "num_classes": max(m.classes, 2),
        "normalization": train_ds.normalization.to_meta(),
        "input_size": list(size) if size else None,
        "crop": list(crop) if crop else None,
        "class_names": list(cfg.data.class_names) if cfg.data.class_names else None,
        "loss": cfg.loss.name,
        "loss_params": dict(cfg.loss.params),
        "data_kind": cfg.data.kind,
        # NIfTI volumes are sliced in napari order (Z, Y, X): 2D inputs are (Y, X) slices.
        "slice_order": "napari",
    }


#: Largest training set (bytes of cached uint8/float pixels + masks) served from stacked tensors.
IN_MEMORY_MAX_BYTES = 2 * 1024**3


def _deterministic_items(ds: SegmentationDataset) -> bool:
    """True when a training item does not depend on its seed (no augmentation, no crop)."""
    return not (getattr(ds, "augment", True) or getattr(ds, "crop", None) is not None)


class _InMemoryBatches:
    """The whole training set as two stacked tensors, batched by index: no DataLoader at all.

    Used when items are deterministic (no augmentation/crop) and fit ``IN_MEMORY_MAX_BYTES``:
    per-step cost is one gather (on the GPU when the stack fits there), like a hand-written
    loop over in-memory tensors. Batches and order are identical to the DataLoader path.
    """

    def __init__(
        self,
        ds: SegmentationDataset,
        sampler: EpochSampler,
        batch_size: int,
        drop_last: bool,
        device: torch.device,
    ) -> None:
        self.sampler, self.batch_size, self.drop_last = sampler, batch_size, drop_last
        first = ds[0][0]
        per_item = first.numel() * first.element_size() + first[0].numel()
        self.ok = len(ds) * per_item <= IN_MEMORY_MAX_BYTES
        if not self.ok:
            return
        items = [ds[i] for i in range(len(ds))]
        self.x = torch.stack([img for img, _ in items])
        self.y = torch.stack([m.to(torch.uint8) for _, m in items])  # labels < 256 (validated)
        if device.type == "cuda":
            self.x, self.y = self.x.to(device), self.y.to(device)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.tensor([i for i, _ in self.sampler], dtype=torch.long)
        stop = len(order) - (len(order) % self.batch_size if self.drop_last else 0)
        order = order.to(self.x.device)
        for s in range(0, stop, self.batch_size):
            idx = order[s : s + self.batch_size]
            yield self.x.index_select(0, idx), self.y.index_select(0, idx).long()


def _check_divisible(
    model: nn.Module, train_ds: SegmentationDataset, stats: dict[str, Any], multiple: int
) -> None:
    """Training inputs must fit the encoder's output stride (smp raises mid-run otherwise)."""
    if not getattr(model, "requires_divisible_input_shape", True):
        return
    crop, size = getattr(train_ds, "crop", None), getattr(train_ds, "size", None)
    key, sizes = (
        ("data.crop", [crop]) if crop else ("data.size", [size] if size else stats["sizes"])
    )
    for hw in sizes:
        if hw and any(int(v) % multiple for v in hw):
            fixed = [-(-int(v) // multiple) * multiple for v in hw]
            raise ConfigError(
                f"config key {key!r}: training size {list(hw)} must be divisible by {multiple} "
                f"(the encoder's output stride); e.g. use {fixed}"
            )


# -- the loop ----------------------------------------------------------------------------


def iter_train(
    cfg: TrainConfig | dict[str, Any] | str | Path,
    *,
    should_stop: Callable[[], bool] | None = None,
    datasets: tuple[SegmentationDataset, SegmentationDataset | None] | None = None,
    init_checkpoint: Path | str | None = None,
    resume: bool = False,
    progress: bool = True,
) -> Iterator[Event]:
    """Train ``cfg`` and yield progress events (see the module docstring).

    Events: ``{"type": "start", "run_dir", "max_iterations", "device", ...}``, ``{"type": "step",
    "epoch", "iteration", "max_iterations", "loss", "lr"}`` every ``train.log_every`` steps and at
    each epoch end (``loss`` is the mean since the previous step event), ``{"type": "epoch",
    "epoch", "train_loss", "val_loss", "val_dice", "metrics"}`` and finally ``{"type": "done",
    "run_dir", "checkpoint", "best_checkpoint", "best_dice", "stopped", "reason",
    "interrupted"}``.

    Args:
        cfg: a :class:`TrainConfig` (or anything :func:`load_config` takes).
        should_stop: called between steps; True ends training after saving a checkpoint.
        datasets: ``(train_ds, val_ds)`` to use instead of :func:`build_datasets` (e.g. napari
            layers via ``ArrayDataset``); ``val_ds`` may be None (no validation).
        init_checkpoint: fine-tune: start from these weights (same architecture required).
        resume: continue the run in ``cfg.output`` from its ``checkpoint.pt``.
        progress: show a tqdm progress bar (rank 0).

    Raises:
        ConfigError / DataError / CheckpointError: bad input, before any training step.
    """
    if not isinstance(cfg, TrainConfig):
        cfg = load_config(cfg)
    if resume and init_checkpoint is not None:
        raise ConfigError("pass either resume=True or init_checkpoint, not both")
    info = init_distributed()
    try:
        device = resolve_device(cfg.train.device, info)
        with (
            _determinism(cfg.train.deterministic, device.type == "cuda"),
            _Interrupts() as interrupts,
        ):
            yield from _run(
                cfg,
                info,
                device,
                interrupts,
                should_stop,
                datasets,
                init_checkpoint,
                resume,
                progress,
            )
    finally:
        cleanup_distributed(info)


def train(cfg: TrainConfig | dict[str, Any] | str | Path, **kwargs: Any) -> Event:
    """Run :func:`iter_train` to the end and return its final ``"done"`` event."""
    done: Event = {}
    for event in iter_train(cfg, **kwargs):
        if event["type"] == "done":
            done = event
    return done


def _run(
    cfg: TrainConfig,
    info: DistInfo,
    device: torch.device,
    interrupts: _Interrupts,
    should_stop: Callable[[], bool] | None,
    datasets: tuple[SegmentationDataset, SegmentationDataset | None] | None,
    init_checkpoint: Path | str | None,
    resume: bool,
    progress: bool,
) -> Iterator[Event]:
    t = cfg.train
    main = info.is_main
    run_dir = resolve_output(cfg)
    ckpt_path, best_path = run_dir / "checkpoint.pt", run_dir / "best.pt"
    csv_path, eval_path = run_dir / "metrics.csv", run_dir / "eval.json"
    if resume and not ckpt_path.is_file():
        raise ConfigError(f"resume: no checkpoint to resume from at {str(ckpt_path)!r}")
    if not resume and ckpt_path.exists() and not t.overwrite:
        raise ConfigError(
            f"config key 'output': {str(run_dir)!r} already holds a run (checkpoint.pt); resume it, "
            "choose another output or set train.overwrite=true"
        )
    _seed_everything(t.seed)

    # ---- data, model, loss: every check happens here, before the first step ----------------
    if datasets is None:
        train_ds, val_ds = build_datasets(cfg)
    else:
        if not (isinstance(datasets, tuple | list) and len(datasets) == 2):
            raise ValueError("datasets must be a (train_ds, val_ds) tuple; val_ds may be None")
        train_ds, val_ds = datasets
    num_classes = max(cfg.model.classes, 2)
    need_uniform = getattr(train_ds, "crop", None) is None and t.batch_size > 1
    show = progress and main
    train_stats = train_ds.validate(
        num_classes=num_classes,
        in_channels=cfg.model.in_channels,
        need_uniform_size=need_uniform,
        progress=show,
    )
    val_bs = 1
    if val_ds is not None and len(val_ds) > 0:
        stats = val_ds.validate(
            num_classes=num_classes, in_channels=cfg.model.in_channels, progress=show
        )
        if len(stats["sizes"]) == 1:
            val_bs = t.val_batch_size or t.batch_size
    else:
        val_ds = None
    model = build_model(cfg.model)
    try:
        from ..losses import get_loss

        loss_fn = get_loss(cfg.loss.name, **cfg.loss.params)
    except ValueError as exc:
        raise ConfigError(f"config key 'loss': {exc}") from exc
    meta = _meta(cfg, train_ds)
    multiple = int(getattr(getattr(model, "encoder", None), "output_stride", 32))
    dims = int(getattr(model, "spatial_dims", 2))
    if dims != int(getattr(train_ds, "spatial_dims", 2)):
        raise ConfigError(
            f"config key 'model.arch': {cfg.model.arch!r} is a {dims}D network but the training "
            f"data is {getattr(train_ds, 'spatial_dims', 2)}D (3D patches: data.kind: nifti, "
            "data.slices: 3d with arch: UNet3D)"
        )
    _check_divisible(model, train_ds, train_stats, multiple)

    start_epoch, epoch_step, iteration, best_dice = 0, 0, 0, -math.inf
    history: list[dict[str, Any]] = []
    partial = (0.0, 0)  # (loss sum, steps) of an epoch interrupted mid-way
    ckpt: dict[str, Any] | None = None
    if resume:
        ckpt = load_checkpoint(ckpt_path)
        check_compatible(ckpt["meta"], cfg.model, ckpt_path)
        if "optimizer" not in ckpt:
            raise CheckpointError(
                f"{str(ckpt_path)!r} has no optimizer state: it cannot be resumed"
            )
        model.load_state_dict(ckpt["model"])
    elif init_checkpoint is not None:
        init = load_checkpoint(init_checkpoint)
        check_compatible(init["meta"], cfg.model, init_checkpoint)
        model.load_state_dict(init["model"])

    channels_last = t.channels_last
    model.to(device)
    # 5-D (3D) tensors need the 3D variant of the channels-last layout.
    memory_format = torch.channels_last_3d if dims == 3 else torch.channels_last
    if channels_last:
        model.to(memory_format=memory_format)
    use_amp = t.amp and device.type == "cuda"
    amp_dtype = (
        (torch.bfloat16 if t.amp_dtype == "bfloat16" else torch.float16) if use_amp else None
    )
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None

    opt_cls = torch.optim.AdamW if cfg.optim.name == "adamw" else torch.optim.Adam
    opt_kw: dict[str, Any] = {"lr": cfg.optim.lr, "weight_decay": cfg.optim.weight_decay}
    if device.type == "cuda":
        opt_kw["fused"] = True
    optimizer = opt_cls(model.parameters(), **opt_kw)

    generator = torch.Generator()
    generator.manual_seed(t.seed)
    sampler = EpochSampler(train_ds, seed=t.seed, rank=info.rank, world_size=info.world_size)
    per_rank = len(sampler.base)
    drop_last = per_rank >= t.batch_size  # BatchNorm dislikes a trailing batch of 1
    steps_per_epoch = per_rank // t.batch_size if drop_last else 1
    max_iterations = steps_per_epoch * t.epochs
    power = cfg.optim.power
    constant = cfg.optim.schedule == "constant"
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda it: (
            1.0 if constant else poly_lr_factor(min(it, max_iterations), max_iterations, power)
        ),
    )
    if ckpt is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        start_epoch, epoch_step = int(ckpt["epoch"]), int(ckpt["epoch_step"])
        iteration, history = int(ckpt["iteration"]), list(ckpt.get("history", []))
        best = ckpt.get("best_dice")
        best_dice = -math.inf if best is None else float(best)
        partial = tuple(ckpt.get("partial", (0.0, 0)))  # type: ignore[assignment]
        if int(ckpt.get("max_iterations", max_iterations)) != max_iterations:
            log.warning(
                "resume: max_iterations changed from %s to %s (epochs/batch/data changed); the LR "
                "schedule is recomputed",
                ckpt.get("max_iterations"),
                max_iterations,
            )
        _set_rng_state(ckpt["rng"], generator)

    train_model: nn.Module = model
    if info.enabled:
        train_model = nn.parallel.DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            # smp keeps unused deep encoder stages when encoder_depth < 5.
            find_unused_parameters=int(cfg.model.kwargs.get("encoder_depth", 5)) < 5,
        )

    # Batches travel as uint8 and are standardised on the device (x * a + b, one fused pass).
    norm_a, norm_b = train_ds.normalization.device_affine(
        torch.uint8 if train_ds.normalization.scale == "uint8" else torch.float32, device
    )
    if dims == 3:  # (1, C, 1, 1) -> (1, C, 1, 1, 1) for (B, C, Z, Y, X) batches
        norm_a, norm_b = norm_a.unsqueeze(-1), norm_b.unsqueeze(-1)
    fast = None
    if _deterministic_items(train_ds) and len(train_stats["sizes"]) == 1:
        fast = _InMemoryBatches(
            train_ds.with_raw_output(), sampler, t.batch_size, drop_last, device
        )
    loader: Any = fast
    if fast is None or not fast.ok:
        loader = DataLoader(
            train_ds.with_raw_output(),
            batch_size=t.batch_size,
            sampler=sampler,
            num_workers=t.num_workers,
            pin_memory=device.type == "cuda",
            persistent_workers=t.num_workers > 0,
            drop_last=drop_last,
            generator=generator,
        )
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        _write_text_atomic(run_dir / "config.yaml", _yaml(cfg))
        if not resume:
            for stale in (best_path, eval_path, csv_path):
                stale.unlink(missing_ok=True)
        _write_metrics_csv(csv_path, history)

    val_indices: list[int] = []
    if val_ds is not None:
        val_indices = list(range(info.rank, len(val_ds), info.world_size))

    def payload(epoch: int, step_in_epoch: int, part: tuple[float, int]) -> dict[str, Any]:
        return {
            "meta": meta,
            "model": _unwrap(train_model).state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "epoch": epoch,
            "epoch_step": step_in_epoch,
            "iteration": iteration,
            "max_iterations": max_iterations,
            "best_dice": None if best_dice == -math.inf else best_dice,
            "history": history,
            "partial": part,
            "rng": _rng_state(generator),
            "config": config_to_dict(cfg),
        }

    yield {
        "type": "start",
        "run_dir": run_dir,
        "max_iterations": max_iterations,
        "device": str(device),
        "epoch": start_epoch,
        "iteration": iteration,
        "train_size": len(train_ds),
        "val_size": 0 if val_ds is None else len(val_ds),
        "world_size": info.world_size,
    }

    bar = None
    if progress and main:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=max_iterations,
            initial=iteration,
            desc=f"train {cfg.loss.name}",
            unit="it",
            dynamic_ncols=True,
        )

    stopped, reason = False, "completed"
    train_model.train()
    sync_stop = info.enabled
    epoch = start_epoch
    try:
        for epoch in range(start_epoch, t.epochs):
            sampler.set_epoch(epoch)
            sampler.set_start(epoch_step * t.batch_size)
            ep_sum = torch.tensor(partial[0], device=device, dtype=torch.float64)
            ep_steps = int(partial[1])
            win_sum = torch.zeros((), device=device, dtype=torch.float64)
            win_steps = 0
            partial = (0.0, 0)
            t0 = time.perf_counter()
            n_images = 0
            for images, masks in loader:
                # Cooperative stop between steps: local check is free; under DDP ranks agree
                # on it only at log steps (where they synchronise anyway) to avoid a per-step sync.
                want_stop = interrupts.reason is not None or (
                    should_stop is not None and bool(should_stop())
                )
                if want_stop and not sync_stop:
                    stopped = True
                    break
                images = images.to(device, non_blocking=True)
                masks = masks.to(device, non_blocking=True)
                images = torch.addcmul(norm_b, images.float(), norm_a)
                if channels_last:
                    images = images.contiguous(memory_format=memory_format)
                with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=use_amp):
                    logits = train_model(images)
                    loss = loss_fn(logits, masks)
                optimizer.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    loss.backward()
                    optimizer.step()
                scheduler.step()
                iteration += 1
                epoch_step += 1
                n_images += images.shape[0]
                win_sum += loss.detach()
                win_steps += 1
                ep_steps += 1
                if bar is not None:
                    bar.update(1)
                if iteration % t.log_every == 0 or epoch_step == steps_per_epoch:
                    ep_sum += win_sum
                    value = float(all_reduce_sum(win_sum.clone()).item()) / (
                        win_steps * info.world_size
                    )
                    if not math.isfinite(value):
                        reason = (
                            f"non-finite loss ({value}) at iteration {iteration} (epoch {epoch + 1}); "
                            f"stopped, the last good checkpoint is kept: {ckpt_path}"
                        )
                        log.error(reason)
                        stopped = True
                        break
                    if bar is not None:
                        bar.set_postfix(loss=f"{value:.4f}")
                    yield {
                        "type": "step",
                        "epoch": epoch + 1,
                        "iteration": iteration,
                        "max_iterations": max_iterations,
                        "loss": value,
                        "lr": optimizer.param_groups[0]["lr"],
                    }
                    win_sum.zero_()
                    win_steps = 0
                    if sync_stop and any_true(
                        want_stop, device if device.type == "cuda" else "cpu"
                    ):
                        stopped = True
                        break
            if stopped:
                broadcast_buffers(_unwrap(train_model))
                if reason == "completed":
                    reason = interrupts.reason or "stopped by request"
                    if main:
                        part = (float((ep_sum + win_sum).item()), ep_steps)
                        save_checkpoint(ckpt_path, payload(epoch, epoch_step, part))
                        _write_metrics_csv(csv_path, history)
                    reason += f" at iteration {iteration} (epoch {epoch + 1}); checkpoint saved: {ckpt_path}"
                break
            train_time = time.perf_counter() - t0
            broadcast_buffers(_unwrap(train_model))
            train_loss = float(all_reduce_sum(ep_sum.clone()).item()) / max(
                1, ep_steps * info.world_size
            )
            if not math.isfinite(train_loss):
                reason = (
                    f"non-finite loss at epoch {epoch + 1}; stopped, the last good checkpoint is kept: "
                    f"{ckpt_path}"
                )
                stopped = True
                break
            row: dict[str, Any] = {
                "epoch": epoch + 1,
                "iteration": iteration,
                "lr": optimizer.param_groups[0]["lr"],
                "train_loss": train_loss,
            }
            summary: dict[str, Any] = {}
            do_val = val_ds is not None and (
                (epoch + 1) % t.val_every == 0 or epoch + 1 == t.epochs
            )
            val_loss = val_dice = None
            if do_val:
                assert val_ds is not None
                loss_sum, count, results = _evaluate(
                    _unwrap(train_model),
                    val_ds,
                    val_indices,
                    loss_fn=loss_fn,
                    device=device,
                    num_classes=num_classes,
                    batch_size=val_bs,
                    amp_dtype=amp_dtype,
                    channels_last=channels_last,
                    surface=t.val_metrics == "full",
                    multiple=multiple,
                )
                gathered = all_gather_objects((loss_sum, count, results))
                total = sum(g[1] for g in gathered)
                val_loss = sum(g[0] for g in gathered) / max(1, total)
                summary = _summarize([r for g in gathered for r in g[2]], cfg.data.class_names)
                val_dice = summary["mean"].get("dice")
                row["val_loss"] = val_loss
                for k, v in summary["mean"].items():
                    row[f"val_{k}"] = v
                if len(summary["per_class"]) > 1:
                    for c, vals in summary["per_class"].items():
                        row[f"dice_{c}"] = vals.get("dice")
            row["epoch_time_s"] = round(train_time, 3)
            row["train_images_per_s"] = round(n_images * info.world_size / max(train_time, 1e-9), 2)
            history.append(row)
            improved = val_dice is not None and math.isfinite(val_dice) and val_dice > best_dice
            no_val_best = val_ds is None  # without validation the latest weights are the "best"
            if improved:
                best_dice = float(val_dice)  # type: ignore[arg-type]
            epoch_step = 0
            if main:
                if improved or no_val_best:
                    save_checkpoint(
                        best_path,
                        {
                            "meta": meta,
                            "model": _unwrap(train_model).state_dict(),
                            "epoch": epoch + 1,
                            "iteration": iteration,
                            "metrics": summary,
                            "val_dice": val_dice,
                        },
                    )
                save_checkpoint(ckpt_path, payload(epoch + 1, 0, (0.0, 0)))
                _write_metrics_csv(csv_path, history)
            yield {
                "type": "epoch",
                "epoch": epoch + 1,
                "train_loss": train_loss,
                "val_loss": val_loss,
                "val_dice": val_dice,
                "metrics": summary,
            }
    finally:
        if bar is not None:
            bar.close()
    barrier()

    eval_summary: dict[str, Any] | None = None
    if not stopped and main and (val_ds is not None or datasets is None):
        eval_ds = None
        split = "val"
        if datasets is None:
            eval_ds = build_test_dataset(cfg, train_ds.normalization)
            if eval_ds is not None:
                split = "test"
        if eval_ds is None:
            eval_ds = val_ds
        if eval_ds is not None and len(eval_ds) > 0:
            eval_summary = _write_eval(
                eval_path,
                eval_ds,
                split,
                best_path if best_path.is_file() else ckpt_path,
                model=_unwrap(train_model),
                loss_fn=loss_fn,
                device=device,
                num_classes=num_classes,
                amp_dtype=amp_dtype,
                channels_last=channels_last,
                multiple=multiple,
                class_names=cfg.data.class_names,
            )
    barrier()
    yield {
        "type": "done",
        "run_dir": run_dir,
        "checkpoint": ckpt_path,
        "best_checkpoint": best_path if best_path.is_file() else None,
        "best_dice": None if best_dice == -math.inf else best_dice,
        "stopped": stopped,
        "reason": reason,
        # Ctrl-C / SIGTERM (not the Stop button): callers running several trainings stop too
        "interrupted": interrupts.reason is not None,
        "epochs": len(history),
        "iteration": iteration,
        "eval": eval_summary,
    }


def _write_eval(
    path: Path,
    dataset: SegmentationDataset,
    split: str,
    weights: Path,
    *,
    model: nn.Module,
    loss_fn: nn.Module,
    device: torch.device,
    num_classes: int,
    amp_dtype: torch.dtype | None,
    channels_last: bool,
    multiple: int,
    class_names: Sequence[str] | None,
) -> dict[str, Any]:
    """Evaluate ``weights`` on ``dataset`` with every metric; write ``eval.json``."""
    state = load_checkpoint(weights, map_location=device)["model"]
    model = copy.deepcopy(model)  # leave the caller's (final) weights untouched
    model.load_state_dict(state)
    loss_sum, count, results = _evaluate(
        model,
        dataset,
        list(range(len(dataset))),
        loss_fn=loss_fn,
        device=device,
        num_classes=num_classes,
        batch_size=1,
        amp_dtype=amp_dtype,
        channels_last=channels_last,
        surface=True,
        multiple=multiple,
    )
    summary = _summarize(results, class_names)
    out = {
        "split": split,
        "checkpoint": weights.name,
        "num_images": count,
        "num_classes": num_classes,
        "class_names": list(class_names) if class_names else None,
        "loss": loss_sum / max(1, count),
        "mean": summary["mean"],
        "per_class": summary["per_class"],
        "nan_count": summary["nan_count"],
        "per_image": [
            {"name": dataset.item_name(i), "metrics": {str(c): v for c, v in r.items()}}
            for i, r in enumerate(results)
        ],
    }
    _write_text_atomic(path, json.dumps(out, indent=1))
    return {"path": path, "split": split, **summary}


def _yaml(cfg: TrainConfig) -> str:
    import yaml

    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
