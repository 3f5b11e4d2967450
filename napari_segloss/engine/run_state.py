"""Setting a training run up: one :class:`RunState` built once, before the first step.

:func:`prepare_run` does every check that can fail (the run directory's state, data, model,
loss, resume compatibility) before anything is written, then builds the data loader, model,
optimizer and LR schedule (PM-Dice paper, Hosseini 2025, section 3.2: Adam with weight decay
1e-4, polynomial policy ``lr * (1 - iter / max_iter) ** 0.9`` stepped every iteration) and
restores a resumed run's state. :class:`RunState` then carries everything the loop needs and
writes the run's files: nothing until the first checkpoint, so a refused or failed start leaves
no trace and an overwritten run is replaced only once the new one has a checkpoint.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..data.datasets import SegmentationDataset
from ..data.factory import build_datasets, build_test_dataset
from ..losses import LossParameterError, UnknownLossError, get_loss
from .checkpoint import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    check_compatible,
    load_checkpoint,
    save_checkpoint,
)
from .config import (
    RESUME_KEYS,
    ConfigError,
    TrainConfig,
    config_differences,
    config_to_dict,
    config_yaml,
    resolve_output,
)
from .devices import autocast_dtype
from .distributed import DistInfo
from .evaluation import EvalSettings
from .model import build_model, check_model_names, output_stride, spatial_dims_of
from .rundir import PENDING_SUFFIX, RunPaths, write_metrics_csv, write_text_atomic
from .runtime import loader_workers
from .sampling import (
    EpochSampler,
    InMemoryBatches,
    deterministic_items,
    rng_state,
    seed_everything,
    set_rng_state,
)

__all__ = [
    "Datasets",
    "RunState",
    "check_loss_fits",
    "check_model_fits_data",
    "check_run_dir",
    "check_same_items",
    "checkpoint_meta",
    "data_items",
    "items_changed",
    "poly_lr_factor",
    "prepare_run",
    "restored_partial",
    "resume_position",
    "split_items",
]

log = logging.getLogger(__name__)

Datasets = (
    tuple[SegmentationDataset, SegmentationDataset | None]
    | tuple[SegmentationDataset, SegmentationDataset | None, SegmentationDataset | None]
)


def poly_lr_factor(iteration: int, max_iterations: int, power: float = 0.9) -> float:
    """``(1 - iteration / max_iterations) ** power`` (PM-Dice paper sec. 3.2), clamped at 0."""
    if max_iterations <= 0:
        raise ValueError(f"max_iterations must be positive, got {max_iterations}")
    return max(0.0, 1.0 - iteration / max_iterations) ** power


@dataclass
class RunState:
    """Everything one training run needs, built once by :func:`prepare_run`.

    The fields after ``meta`` are the run's progress, restored on resume and saved in every
    checkpoint: ``epoch`` and ``epoch_step`` (where the next step starts), ``iteration``,
    ``best_dice``, ``history`` (the metrics.csv rows) and ``partial`` (this rank's loss sum and
    steps of an epoch interrupted mid-way; see :func:`restored_partial`).
    """

    cfg: TrainConfig
    info: DistInfo
    paths: RunPaths
    resume: bool
    #: the datasets came from ``cfg.data`` (not given by the caller): a test split may exist
    from_config: bool
    train_ds: SegmentationDataset
    val_ds: SegmentationDataset | None
    val_indices: list[int]
    val_batch_size: int
    #: the held-out set eval.json scores (None: the validation split)
    test_ds: SegmentationDataset | None
    #: images per forward pass on ``test_ds`` (``val_batch_size``'s rule)
    test_batch_size: int
    #: write the held-out predictions (``predictions.npz``) with eval.json
    save_predictions: bool
    model: nn.Module
    train_model: nn.Module  # ``model``, or its DistributedDataParallel wrapper
    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler | None
    sampler: EpochSampler
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]]
    generator: torch.Generator
    norm_a: torch.Tensor
    norm_b: torch.Tensor
    eval_settings: EvalSettings
    memory_format: torch.memory_format
    steps_per_epoch: int
    max_iterations: int
    meta: dict[str, Any]
    epoch: int = 0
    epoch_step: int = 0
    iteration: int = 0
    best_dice: float = -math.inf
    history: list[dict[str, Any]] = field(default_factory=list)
    partial: tuple[float, int] = (0.0, 0)
    #: what the start line says about settings adapted to this machine (train.num_workers)
    notes: tuple[str, ...] = ()
    #: True once this run wrote its files (the first checkpoint)
    committed: bool = False
    #: files saved before the first checkpoint, kept aside until it is written (see _save)
    pending: list[tuple[Path, Path]] = field(default_factory=list)
    #: what the split holds (:func:`data_items`), saved in checkpoints and checked on resume
    items: dict[str, Any] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return self.eval_settings.device

    @property
    def vote_device(self) -> torch.device | str:
        """Where the stop votes' collectives run: the GPU under NCCL, else the CPU (gloo)."""
        return self.device if self.device.type == "cuda" else "cpu"

    @property
    def main(self) -> bool:
        """True on the process that writes files (rank 0)."""
        return self.info.is_main

    @property
    def best_or_none(self) -> float | None:
        return None if self.best_dice == -math.inf else self.best_dice

    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def _commit(self) -> None:
        """This run's first checkpoint is written aside: replace an overwritten run's files
        with this run's (the checkpoint first), then write config.yaml."""
        if not self.resume and (old := self.paths.existing()):
            # train.overwrite: nothing of the old run may remain; say what went
            log.warning(
                "train.overwrite: replacing the run in %s (removed %s)",
                self.paths.root,
                ", ".join(old),
            )
            self.paths.remove_run_files()
        for aside, path in reversed(self.pending):  # the checkpoint was saved last
            aside.replace(path)
        self.pending.clear()
        write_text_atomic(self.paths.config, config_yaml(self.cfg))
        self.committed = True

    def _save(self, path: Path, epoch: int, **fields: Any) -> bool:
        """Write a checkpoint of the weights at ``epoch`` with ``fields`` (rank 0 only: False
        elsewhere).

        Until this run's first ``checkpoint.pt`` the files go aside (``<name>.pending``,
        removed as stale temporaries if the run dies): a run killed before it can be resumed
        leaves the folder as it was, an overwritten run included."""
        if not self.main:
            return False
        payload = {
            "meta": self.meta,
            "model": self.model.state_dict(),
            "epoch": epoch,
            "iteration": self.iteration,
            **fields,
        }
        if self.committed:
            save_checkpoint(path, payload)
            return True
        aside = path.with_name(f"{path.name}{PENDING_SUFFIX}")
        save_checkpoint(aside, payload)
        self.pending.append((aside, path))
        if path == self.paths.checkpoint:
            self._commit()
        return True

    def save_checkpoint(
        self, epoch: int, epoch_step: int, partial: Sequence[tuple[float, int]] = ()
    ) -> None:
        """Write the resumable ``checkpoint.pt`` and ``metrics.csv`` (rank 0 only).

        ``partial``: every rank's ``(loss sum, steps)`` of the interrupted epoch, in rank order
        (empty at an epoch boundary). The checkpoint keeps their total as ``partial`` and the
        list as ``partial_ranks``, from which :func:`restored_partial` resumes.
        """
        ranks = [(float(loss), int(steps)) for loss, steps in partial]
        saved = self._save(
            self.paths.checkpoint,
            epoch,
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(),
            epoch_step=epoch_step,
            max_iterations=self.max_iterations,
            world_size=self.info.world_size,
            best_dice=self.best_or_none,
            history=self.history,
            partial=(sum(r[0] for r in ranks), sum(r[1] for r in ranks)),
            partial_ranks=ranks,
            rng=rng_state(self.generator),
            config=config_to_dict(self.cfg),
            data_items=self.items,
            # float16's loss scale: a resume would start again from 65536 and skip steps
            scaler=None if self.scaler is None else self.scaler.state_dict(),
        )
        if saved:
            write_metrics_csv(self.paths.metrics, self.history)

    def save_best(self, epoch: int, summary: dict[str, Any], val_dice: float | None) -> None:
        """Write ``best.pt``: the weights of this epoch and its validation metrics."""
        self._save(self.paths.best, epoch, metrics=summary, val_dice=val_dice)


# -- checks that need no data --------------------------------------------------------------


def check_model_fits_data(cfg: TrainConfig) -> None:
    """3D patches (``data.slices: 3d``) and the 3D network (``UNet3D``) go together."""
    d = cfg.data
    three_d = d.kind == "nifti" and d.slices == "3d"
    if three_d and spatial_dims_of(cfg.model.arch) != 3:
        raise ConfigError(
            "config key 'model.arch': data.slices: 3d trains on 3D patches and needs a 3D "
            f"network (arch: UNet3D), got {cfg.model.arch!r}"
        )
    if not three_d and spatial_dims_of(cfg.model.arch) == 3:
        raise ConfigError(
            f"config key 'data.slices': model.arch {cfg.model.arch!r} is a 3D network; it trains "
            f"on NIfTI volumes with data.kind: nifti and data.slices: 3d (got kind {d.kind!r}, "
            f"slices {d.slices!r})"
        )


def check_run_dir(paths: RunPaths, cfg: TrainConfig, resume: bool) -> dict[str, Any] | None:
    """Refuse a start that would mix two runs; return the checkpoint to resume, if any.

    Without ``resume`` the directory must hold no run (or ``train.overwrite`` is set). With it,
    the checkpoint must exist and its saved config must equal ``cfg`` except for
    ``config.RESUME_KEYS`` (``train.epochs`` and settings that do not change results).
    """
    if not resume:
        existing = paths.existing()
        if existing and not cfg.train.overwrite:
            resumable = paths.checkpoint.is_file()
            raise ConfigError(
                f"config key 'output': {str(paths.root)!r} already holds a run "
                f"({', '.join(existing)}); "
                + ("resume it (--resume), " if resumable else "it has no checkpoint to resume; ")
                + "choose another output or set train.overwrite=true"
            )
        return None
    if not paths.checkpoint.is_file():
        left = paths.existing()
        hint = (
            f" ({str(paths.root)!r} holds {', '.join(left)}: start it again with "
            "train.overwrite=true)"
            if left
            else ""
        )
        raise ConfigError(
            f"resume: no checkpoint to resume from at {str(paths.checkpoint)!r}{hint}"
        )
    ckpt = load_checkpoint(paths.checkpoint)
    if "optimizer" not in ckpt:
        raise CheckpointError(
            f"{str(paths.checkpoint)!r} has no optimizer state: it cannot be resumed"
        )
    check_compatible(ckpt["meta"], cfg.model, paths.checkpoint)
    done, step = int(ckpt.get("epoch", 0)), int(ckpt.get("epoch_step", 0))
    if (done, step) > (cfg.train.epochs, 0):  # else "iteration 48 of 48 is ... 48 of 24 here"
        part = " and part of the next" if step else ""
        raise ConfigError(
            f"resume: {str(paths.root)!r} has already trained {done} epochs{part}, more than "
            f"train.epochs={cfg.train.epochs}; give train.epochs above {done} to train on, or "
            "use its checkpoint as it is"
        )
    saved = ckpt.get("config")
    if isinstance(saved, dict):
        try:
            diffs = config_differences(saved, cfg, ignore=RESUME_KEYS)
        except ConfigError as exc:
            raise ConfigError(
                f"resume: the config saved in {str(paths.checkpoint)!r} is no longer valid "
                f"({exc}); start a new run"
            ) from None
        if diffs:
            raise ConfigError(
                f"resume: {str(paths.root)!r} was trained with other settings: "
                + "; ".join(diffs)
                + ". Only train.epochs (and settings that do not change results: "
                "train.device, train.num_workers, ...) may change on resume; drop those "
                "overrides, or start a new run (another output, or train.overwrite=true)"
            )
    return ckpt


# -- set-up ----------------------------------------------------------------------------------


def _check_divisible(
    model: nn.Module,
    train_ds: SegmentationDataset,
    stats: dict[str, Any],
    multiple: int | tuple[int, ...],
) -> None:
    """Training inputs must fit the network's output stride (:func:`~.model.output_stride`,
    per axis or one for all; smp raises mid-run otherwise)."""
    if not getattr(model, "requires_divisible_input_shape", True):
        return
    crop, size = getattr(train_ds, "crop", None), getattr(train_ds, "size", None)
    key, sizes = (
        ("data.crop", [crop]) if crop else ("data.size", [size] if size else stats["sizes"])
    )
    for hw in sizes:
        steps = multiple if isinstance(multiple, tuple) else (multiple,) * len(hw or ())
        if hw and any(int(v) % m for v, m in zip(hw, steps, strict=True)):
            fixed = [-(-int(v) // m) * m for v, m in zip(hw, steps, strict=True)]
            raise ConfigError(
                f"config key {key!r}: training size {list(hw)} must be divisible by {multiple} "
                f"(the encoder's output stride); e.g. use {fixed}"
            )


def split_items(ds: SegmentationDataset | None) -> dict[str, Any]:
    """What one split holds: its count and a digest of its file names (without folders: a
    moved data folder is the same data), so that a resume or a comparison's reuse can tell
    that the data changed."""
    names = [] if ds is None else [Path(ds.item_name(i)).name for i in range(len(ds))]
    digest = hashlib.sha1("\n".join(names).encode("utf-8")).hexdigest()[:16]
    return {"count": len(names), "digest": digest}


def data_items(
    train_ds: SegmentationDataset,
    val_ds: SegmentationDataset | None,
    heldout: SegmentationDataset | None = None,
) -> dict[str, Any]:
    """:func:`split_items` of the training and validation splits, and of ``heldout`` (the set
    eval.json scores) when given."""
    out = {"train": split_items(train_ds), "val": split_items(val_ds)}
    return out if heldout is None else {**out, "heldout": split_items(heldout)}


def items_changed(saved: dict[str, Any], now: dict[str, Any]) -> str:
    """How the splits of :func:`split_items` ``saved`` differ from ``now`` ("" when they do
    not), compared over the splits ``now`` has: "items: train 6 -> 7, ..."."""
    changed = [k for k in now if k in saved and saved[k] != now[k]]
    if not changed:
        return ""
    counts = ", ".join(f"{k} {saved[k]['count']} -> {now[k]['count']}" for k in changed)
    return f"items: {counts}; or files renamed"


def check_same_items(ckpt: dict[str, Any], items: dict[str, Any], paths: RunPaths) -> None:
    """Refuse a resume on data that changed: files added or removed move images between the
    training and validation splits, so validation would score images the run trained on."""
    saved = ckpt.get("data_items")
    if not saved or not (changes := items_changed(saved, items)):  # older checkpoints: none
        return
    raise ConfigError(
        f"resume: the data changed since the run in {str(paths.root)!r} started ({changes}): "
        "resuming would mix two splits, validation then scoring "
        "images the run trained on. Start a new run (another output, or "
        f"train.overwrite=true), or fine-tune its weights: --init-checkpoint {paths.checkpoint}"
    )


def checkpoint_meta(cfg: TrainConfig, train_ds: SegmentationDataset) -> dict[str, Any]:
    """A checkpoint's ``meta``: what rebuilds and feeds the model without the config."""
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


@dataclass
class _Data:
    train: SegmentationDataset
    val: SegmentationDataset | None
    test: SegmentationDataset | None
    stats: dict[str, Any]
    val_batch_size: int
    test_batch_size: int


def _datasets(cfg: TrainConfig, datasets: Datasets | None, show: bool) -> _Data:
    """Build (or take) and validate the datasets (training, validation, held-out) before the
    first step, so that a bad held-out mask is named now and not after training."""
    if datasets is None:
        check_model_fits_data(cfg)
        train_ds, val_ds = build_datasets(cfg)
        test_ds = build_test_dataset(cfg, train_ds.normalization)
    else:
        if not (isinstance(datasets, tuple | list) and len(datasets) in (2, 3)):
            raise ValueError(
                "datasets must be a (train_ds, val_ds) or (train_ds, val_ds, heldout_ds) tuple; "
                "val_ds and heldout_ds may be None"
            )
        train_ds, val_ds, test_ds = (*datasets, None)[:3]
    t, num_classes = cfg.train, max(cfg.model.classes, 2)
    need_uniform = getattr(train_ds, "crop", None) is None and t.batch_size > 1
    stats = train_ds.validate(
        num_classes=num_classes,
        in_channels=cfg.model.in_channels,
        need_uniform_size=need_uniform,
        progress=show,
    )
    # images of one size are scored in batches (train.val_batch_size, else batch_size), others
    # one by one: whole images of many sizes cannot be stacked
    val_bs = test_bs = 1
    if val_ds is not None and len(val_ds) > 0:
        val_stats = val_ds.validate(
            num_classes=num_classes, in_channels=cfg.model.in_channels, progress=show
        )
        if len(val_stats["sizes"]) == 1:
            val_bs = t.val_batch_size or t.batch_size
    else:
        val_ds = None
    if test_ds is not None:
        test_stats = test_ds.validate(
            num_classes=num_classes, in_channels=cfg.model.in_channels, progress=show
        )
        if len(test_stats["sizes"]) == 1:
            test_bs = t.val_batch_size or t.batch_size
    return _Data(train_ds, val_ds, test_ds, stats, val_bs, test_bs)


def _loss_error(cfg: TrainConfig, exc: ValueError) -> ConfigError:
    """The loss's own message, naming the config key. The losses package knows no configs, so
    the hint that parameters come from ``loss.params`` (typically the config's, kept after
    ``--set loss.name=`` switched the loss) is added here, with the overrides that replace
    them (``loss.params.KEY=`` alone would add to the old ones)."""
    if isinstance(exc, UnknownLossError):
        return ConfigError(f"config key 'loss.name': {exc}")
    if not isinstance(exc, LossParameterError):
        return ConfigError(f"config key 'loss': {exc}")
    msg = f"config key 'loss.params': {exc}"
    if cfg.loss.params:
        msg += (
            f"; these come from loss.params ({cfg.loss.params}): for another loss.name drop them "
            "(loss.params={}) or set the parameters of the new loss (on the command line "
            "--set 'loss.params={}' loss.params.KEY=VALUE ..., in this order)"
        )
    return ConfigError(msg)


def _build_loss(cfg: TrainConfig) -> nn.Module:
    """The training loss; ConfigError naming ``loss`` when its name or parameters are wrong,
    or do not fit the model's outputs (see :func:`check_loss_fits`)."""
    try:
        # No value checks in the step: they read the labels' range and the logits' finiteness
        # back to the host (3 GPU syncs a step). The datasets' labels are checked before the
        # first step, and a non-finite loss is caught at the next log step (training.py).
        loss = get_loss(cfg.loss.name, **{"validate": False, **cfg.loss.params})
    except ValueError as exc:
        raise _loss_error(cfg, exc) from exc
    check_loss_fits(cfg, loss)
    return loss


def check_loss_fits(cfg: TrainConfig, loss: nn.Module | None = None) -> None:
    """ConfigError naming ``loss`` now, not at the first step, when the loss does not fit the
    model's ``model.classes`` outputs: a per-class parameter of another length
    (``pm_dice`` ``gamma: [1, 2, 3]`` for 4 classes, ``ce`` ``weight``). One forward on a
    4-pixel zero input, on the CPU."""
    try:
        loss = loss if loss is not None else get_loss(cfg.loss.name, **cfg.loss.params)
        channels = cfg.model.classes
        spatial = (2,) * (3 if cfg.data.slices == "3d" else 2)
        logits = torch.zeros(1, channels, *spatial)
        if getattr(loss, "mode", "auto") == "multilabel":
            target = torch.zeros(1, channels, *spatial)
        else:
            target = torch.zeros(1, *spatial, dtype=torch.long)
        with torch.no_grad():
            loss(logits, target)
    except ValueError as exc:
        raise _loss_error(cfg, exc) from exc


def _model_for(
    cfg: TrainConfig, train_ds: SegmentationDataset, stats: dict[str, Any]
) -> tuple[nn.Module, int | tuple[int, ...]]:
    """The model and its output stride (the one rule tiling and placement use); checks
    that they fit the data."""
    model = build_model(cfg.model)
    stride = output_stride(model)
    dims = int(getattr(model, "spatial_dims", 2))
    if dims != int(getattr(train_ds, "spatial_dims", 2)):
        raise ConfigError(
            f"config key 'model.arch': {cfg.model.arch!r} is a {dims}D network but the training "
            f"data is {getattr(train_ds, 'spatial_dims', 2)}D (3D patches: data.kind: nifti, "
            "data.slices: 3d with arch: UNet3D)"
        )
    _check_divisible(model, train_ds, stats, stride)
    patch = getattr(train_ds, "patch", None)
    if dims == 3 and patch is not None and hasattr(model, "check_input_size"):
        try:
            model.check_input_size(patch)
        except ValueError as exc:
            raise ConfigError(f"config key 'data.patch': {exc}") from None
    if dims == 3 and hasattr(train_ds, "pad_multiple"):
        # a volume smaller than the patch sits where tiled validation/predict will put it
        train_ds.pad_multiple = stride if isinstance(stride, tuple) else (stride,) * 3
    return model, stride


def _loader(
    cfg: TrainConfig,
    train_ds: SegmentationDataset,
    sampler: EpochSampler,
    generator: torch.Generator,
    stats: dict[str, Any],
    drop_last: bool,
    device: torch.device,
) -> tuple[Iterable[tuple[torch.Tensor, torch.Tensor]], str]:
    """Stacked in-memory batches when items are deterministic and fit, else a DataLoader with
    at most this process's share of the CPU cores as workers; and a note when it had to lower
    ``train.num_workers`` ("" otherwise)."""
    t = cfg.train
    if deterministic_items(train_ds) and len(stats["sizes"]) == 1:
        fast = InMemoryBatches(train_ds.with_raw_output(), sampler, t.batch_size, drop_last, device)
        if fast.ok:
            return fast, ""
    workers, note = loader_workers(t.num_workers)
    loader = DataLoader(
        train_ds.with_raw_output(),
        batch_size=t.batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        drop_last=drop_last,
        generator=generator,
    )
    return loader, note


def _optimizer(
    cfg: TrainConfig, model: nn.Module, device: torch.device, max_iterations: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    opt_cls = torch.optim.AdamW if cfg.optim.name == "adamw" else torch.optim.Adam
    opt_kw: dict[str, Any] = {"lr": cfg.optim.lr, "weight_decay": cfg.optim.weight_decay}
    if device.type == "cuda":
        opt_kw["fused"] = True
    optimizer = opt_cls(model.parameters(), **opt_kw)
    power, constant = cfg.optim.power, cfg.optim.schedule == "constant"
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda it: (
            1.0 if constant else poly_lr_factor(min(it, max_iterations), max_iterations, power)
        ),
    )
    return optimizer, scheduler


def restored_partial(ckpt: dict[str, Any], info: DistInfo) -> tuple[float, int]:
    """This rank's ``(loss sum, steps)`` of the epoch a checkpoint interrupted.

    The epoch's train loss is the sum over ranks of these accumulators divided by the summed
    steps, so each step's loss must be restored on exactly one rank. With the saving run's
    world size, each rank takes back its own sums (the reduction then adds the same numbers in
    the same order as an uninterrupted run: bit-identical); otherwise (another number of
    processes, or a checkpoint older than ``partial_ranks``) rank 0 takes the saved total.
    """
    ranks = ckpt.get("partial_ranks")
    if ranks is not None and len(ranks) == info.world_size:
        loss, steps = ranks[info.rank]
    elif info.is_main:
        loss, steps = ckpt.get("partial", (0.0, 0))
    else:
        loss, steps = 0.0, 0
    return float(loss), int(steps)


def resume_position(ckpt: dict[str, Any], info: DistInfo, steps_per_epoch: int) -> tuple[int, int]:
    """``(epoch_step, iteration)`` where a resumed run continues, in this run's steps.

    DistributedSampler deals one shuffled order out in rank order, so whatever the number of
    processes a step consumes the next ``batch_size * world_size`` samples of it: a checkpoint
    written by another world size continues after the samples it saw (rounded down to a whole
    step here: at most one step's samples are trained on twice). The iteration, which the LR
    schedule reads, counts this world size's steps: a 1-process checkpoint resumed on 2
    processes would otherwise sit past ``max_iterations`` and train with a zero LR.
    """
    epoch, step = int(ckpt["epoch"]), int(ckpt["epoch_step"])
    saved_world = int(ckpt.get("world_size", info.world_size))  # absent: older checkpoints
    if saved_world != info.world_size:
        step = min(step * saved_world // info.world_size, steps_per_epoch)
    return step, epoch * steps_per_epoch + step


def _restore(state: RunState, ckpt: dict[str, Any]) -> None:
    """Continue a run from its checkpoint: optimiser, schedule, progress and RNG states."""
    state.optimizer.load_state_dict(ckpt["optimizer"])
    state.scheduler.load_state_dict(ckpt["scheduler"])
    state.epoch = int(ckpt["epoch"])
    state.epoch_step, state.iteration = resume_position(ckpt, state.info, state.steps_per_epoch)
    state.history = list(ckpt.get("history", []))
    best = ckpt.get("best_dice")
    state.best_dice = -math.inf if best is None else float(best)
    state.partial = restored_partial(ckpt, state.info)
    saved_it, saved_max = int(ckpt["iteration"]), int(ckpt.get("max_iterations", 0))
    if (saved_it, saved_max) != (state.iteration, state.max_iterations) and state.info.is_main:
        log.warning(  # once, not once per process
            "resume: iteration %s of %s is iteration %s of %s here (train.epochs, the number "
            "of processes or the data changed); the LR schedule is recomputed",
            saved_it,
            saved_max,
            state.iteration,
            state.max_iterations,
        )
    # The LR of the next step, from this run's schedule and position (the saved LR belongs to
    # the saved schedule). LambdaLR's own formula: bit-identical when nothing changed.
    sched = state.scheduler
    sched.last_epoch = state.iteration
    for group, base, factor in zip(
        state.optimizer.param_groups, sched.base_lrs, sched.lr_lambdas, strict=True
    ):
        group["lr"] = base * factor(state.iteration)
    set_rng_state(ckpt["rng"], state.generator)
    if state.scaler is not None and ckpt.get("scaler"):
        state.scaler.load_state_dict(ckpt["scaler"])


def prepare_run(
    cfg: TrainConfig,
    info: DistInfo,
    device: torch.device,
    *,
    datasets: Datasets | None = None,
    init_checkpoint: Path | str | None = None,
    resume: bool = False,
    progress: bool = False,
    save_predictions: bool = False,
) -> RunState:
    """Check everything, then build the :class:`RunState` (see the module docstring).

    Raises ConfigError / DataError / CheckpointError (one line) before anything is written.
    """
    t = cfg.train
    paths = RunPaths(resolve_output(cfg))
    ckpt = check_run_dir(paths, cfg, resume)
    # names first: a typo must not wait for the check of every image
    check_model_names(cfg.model)
    loss_fn = _build_loss(cfg)
    seed_everything(t.seed)
    data = _datasets(cfg, datasets, progress and info.is_main)
    train_ds, val_ds, stats = data.train, data.val, data.stats
    items = data_items(train_ds, val_ds)
    if ckpt is not None:
        check_same_items(ckpt, items, paths)
    model, stride = _model_for(cfg, train_ds, stats)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
    elif init_checkpoint is not None:
        init = load_checkpoint(init_checkpoint)
        check_compatible(init["meta"], cfg.model, init_checkpoint)
        model.load_state_dict(init["model"])

    dims = int(getattr(model, "spatial_dims", 2))
    # 5-D (3D) tensors need the 3D variant of the channels-last layout.
    memory_format = torch.channels_last_3d if dims == 3 else torch.channels_last
    model.to(device)
    if t.channels_last:
        model.to(memory_format=memory_format)
    amp_dtype, amp_note = None, None
    if t.amp and device.type == "cuda":
        amp_dtype, amp_note = autocast_dtype(device, t.amp_dtype)
    generator = torch.Generator()
    generator.manual_seed(t.seed)
    sampler = EpochSampler(train_ds, seed=t.seed, rank=info.rank, world_size=info.world_size)
    per_rank = len(sampler.base)
    drop_last = per_rank >= t.batch_size  # BatchNorm dislikes a trailing batch of 1
    steps_per_epoch = per_rank // t.batch_size if drop_last else 1
    max_iterations = steps_per_epoch * t.epochs
    optimizer, scheduler = _optimizer(cfg, model, device, max_iterations)
    loader, workers_note = _loader(cfg, train_ds, sampler, generator, stats, drop_last, device)
    train_model: nn.Module = model
    if info.enabled:
        train_model = nn.parallel.DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            # smp keeps unused deep encoder stages when encoder_depth < 5.
            find_unused_parameters=int(cfg.model.kwargs.get("encoder_depth", 5)) < 5,
        )
    # Batches travel as uint8 and are standardised on the device (x * a + b, one fused pass).
    norm = train_ds.normalization
    norm_a, norm_b = norm.device_affine(
        torch.uint8 if norm.scale == "uint8" else torch.float32, device
    )
    if dims == 3:  # (1, C, 1, 1) -> (1, C, 1, 1, 1) for (B, C, Z, Y, X) batches
        norm_a, norm_b = norm_a.unsqueeze(-1), norm_b.unsqueeze(-1)
    state = RunState(
        cfg=cfg,
        info=info,
        paths=paths,
        resume=resume,
        items=items,
        from_config=datasets is None,
        train_ds=train_ds,
        val_ds=val_ds,
        val_indices=[] if val_ds is None else list(range(info.rank, len(val_ds), info.world_size)),
        val_batch_size=data.val_batch_size,
        test_ds=data.test,
        test_batch_size=data.test_batch_size,
        save_predictions=save_predictions,
        model=model,
        train_model=train_model,
        loss_fn=loss_fn,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None,
        sampler=sampler,
        loader=loader,
        generator=generator,
        norm_a=norm_a,
        norm_b=norm_b,
        eval_settings=EvalSettings(
            device,
            max(cfg.model.classes, 2),
            amp_dtype,
            t.channels_last,
            # 2D whole-image padding; 3D validation tiles on output_stride(model) per axis
            stride if isinstance(stride, int) else 1,
            # the crop checkpoint_meta records: predict tiles huge 2D images with it too
            tile=getattr(train_ds, "crop", None) if dims == 2 else None,
        ),
        memory_format=memory_format,
        steps_per_epoch=steps_per_epoch,
        max_iterations=max_iterations,
        meta=checkpoint_meta(cfg, train_ds),
        notes=tuple(n for n in (workers_note, amp_note) if n),
    )
    if ckpt is not None:
        _restore(state, ckpt)
    return state
