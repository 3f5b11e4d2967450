"""The events :func:`~napari_segloss.engine.training.iter_train` yields, as typed dataclasses.

One run yields, in order: one :class:`TrainStart`; :class:`TrainStep` every ``train.log_every``
steps and at each epoch end; one :class:`TrainEpoch` per finished epoch; one :class:`TrainDone`
last. The CLI, the napari Train panel and notebooks consume the same objects::

    for event in iter_train(cfg):
        match event:
            case TrainStep(iteration=it, loss=loss):
                print(it, loss)
            case TrainDone(best_checkpoint=best):
                print("best weights:", best)

Plain data only (no torch): the Train panel imports this module without loading the engine.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

__all__ = ["TrainDone", "TrainEpoch", "TrainEvent", "TrainStart", "TrainStep"]


@dataclass(frozen=True)
class _Event:
    #: short name of the event kind ("start", "step", "epoch", "done"), e.g. for logs
    kind: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict plus ``"type": kind`` (JSON-friendly after ``str`` of paths)."""
        return {"type": self.kind, **asdict(self)}


@dataclass(frozen=True)
class TrainStart(_Event):
    """Training is set up (data checked, model built) and the first step is next."""

    kind: ClassVar[str] = "start"
    run_dir: Path
    #: optimiser steps of the whole run (``steps per epoch x train.epochs``)
    max_iterations: int
    #: the torch device training runs on, e.g. ``"cpu"`` or ``"cuda:0"``
    device: str
    #: epoch (0-based) and iteration the run starts from (non-zero when resumed)
    epoch: int
    iteration: int
    train_size: int
    val_size: int
    world_size: int = 1


@dataclass(frozen=True)
class TrainStep(_Event):
    """Progress within an epoch, every ``train.log_every`` steps and at the epoch's end."""

    kind: ClassVar[str] = "step"
    #: 1-based epoch the step belongs to
    epoch: int
    iteration: int
    max_iterations: int
    #: mean training loss since the previous step event
    loss: float
    #: learning rate after this step
    lr: float


@dataclass(frozen=True)
class TrainEpoch(_Event):
    """An epoch ended: its mean training loss and, when validated, the validation results.

    ``metrics`` is ``{"mean": {metric: value}, "per_class": {class: {metric: value}},
    "nan_count": ..., "num_images": n}`` (empty when this epoch was not validated).
    """

    kind: ClassVar[str] = "epoch"
    #: 1-based number of the finished epoch
    epoch: int
    iteration: int
    train_loss: float
    val_loss: float | None = None
    #: mean foreground Dice on the validation set (None without validation)
    val_dice: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainDone(_Event):
    """The run ended: completed, or stopped (Stop button, Ctrl-C/SIGTERM, non-finite loss).

    ``checkpoint`` is the resumable ``checkpoint.pt`` (None when the run stopped before writing
    one); ``best_checkpoint`` the weights with the best validation Dice (the latest weights
    without validation). ``interrupted`` is True for Ctrl-C/SIGTERM, not for the Stop button:
    callers running several trainings (``segloss compare``) stop too. ``eval`` is the summary
    of ``eval.json`` (None when the run stopped or had no held-out data).
    """

    kind: ClassVar[str] = "done"
    run_dir: Path
    checkpoint: Path | None
    best_checkpoint: Path | None
    best_dice: float | None
    stopped: bool
    reason: str
    interrupted: bool
    #: epochs finished in the whole run and the last iteration reached
    epochs: int
    iteration: int
    eval: dict[str, Any] | None = None


#: Any event of :func:`~napari_segloss.engine.training.iter_train`.
TrainEvent = TrainStart | TrainStep | TrainEpoch | TrainDone
