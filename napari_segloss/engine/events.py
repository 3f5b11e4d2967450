"""The events :func:`~napari_segloss.engine.training.iter_train` and
:func:`~napari_segloss.engine.compare.iter_compare` yield, as typed dataclasses.

One run yields, in order: one :class:`TrainStart`; :class:`TrainStep` every ``train.log_every``
steps and at each epoch end; one :class:`TrainEpoch` per finished epoch; one :class:`TrainDone`
last. The CLI, the napari Train panel and notebooks consume the same objects::

    for event in iter_train(cfg):
        match event:
            case TrainStep(iteration=it, loss=loss):
                print(it, loss)
            case TrainDone(best_checkpoint=best):
                print("best weights:", best)

A comparison (losses x seeds, one run after another) yields one :class:`CompareStart`
(the planned runs and what will happen to each), then per run :class:`CompareRunStart`,
:class:`CompareRunProgress` wrapping each event of that run's ``iter_train`` and
:class:`CompareRunDone`, and one :class:`CompareDone` last. Each names its run with a
:class:`CompareRunInfo` and carries ``overall``, the grid's progress in [0, 1]::

    for event in iter_compare(base, ["dice", "pm_dice:gamma=2"], [0], "compare/out"):
        match event:
            case CompareRunProgress(run=run, event=TrainEpoch(val_dice=dice)):
                print(run.display, run.seed, "validation Dice", dice)
            case CompareRunDone(run=run, status=status):
                print(run.index + 1, "/", run.total, status)

Plain data only (no torch): the panels import this module without loading the engine.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

__all__ = [
    "OUT_OF_MEMORY_HINTS",
    "RUN_ACTIONS",
    "RUN_STATUSES",
    "CompareDone",
    "CompareEvent",
    "CompareRunDone",
    "CompareRunInfo",
    "CompareRunProgress",
    "CompareRunStart",
    "CompareStart",
    "TrainDone",
    "TrainEpoch",
    "TrainEvent",
    "TrainStart",
    "TrainStep",
    "duration_text",
    "out_of_memory_text",
    "stopped_text",
]


def duration_text(seconds: float) -> str:
    """How long a run took, as the command lines say it: ``"42 s"`` under two minutes, else
    ``"3.5 min"``."""
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def stopped_text(reason: str) -> str:
    """``"stopped (<reason>)"`` for a stop's reason, or the reason itself when it already says
    so (``"stopped by request after ..."``): never "stopped (stopped by request)"."""
    return reason if reason.startswith("stopped") else f"stopped ({reason})"


#: what to lower when a command runs out of GPU memory (``segloss`` and the panels' settings)
OUT_OF_MEMORY_HINTS = {
    "train": "lower the batch size (train.batch_size) or the crop / 3D patch, or free the GPU",
    "compare": "lower the batch size (train.batch_size) or the crop / 3D patch, or free the GPU",
    "predict": "lower the tile size or the tiles per pass (--tile, --batch-size), or use the CPU",
}


def out_of_memory_text(exc: BaseException, hint: str) -> str | None:
    """One line for a GPU (CUDA, MPS) out-of-memory error, ending with ``hint`` (what to make
    smaller); None for any other error. Torch's own message runs on with allocator figures."""
    text = str(exc).strip()
    oom = type(exc).__name__ == "OutOfMemoryError"  # torch.OutOfMemoryError, no torch import
    if not (oom or (isinstance(exc, RuntimeError) and "out of memory" in text)):
        return None
    head = ". ".join(text.splitlines()[0].split(". ")[:2]).rstrip(".") if text else ""
    return f"{head or 'out of memory'}: {hint}"


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
    #: the forward pass's dtype: ``"bfloat16"``/``"float16"`` under autocast, else ``"float32"``
    precision: str = "float32"
    #: ``train.amp``: True with ``precision == "float32"`` means no CUDA device (autocast is off)
    amp_requested: bool = False
    #: settings adapted to this machine, one line each (e.g. ``train.num_workers`` lowered to
    #: the CPU cores available), for the start line
    notes: tuple[str, ...] = ()


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
    without validation: ``validated`` is then False). ``interrupted`` is True for Ctrl-C/SIGTERM, not for the Stop button:
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
    #: the run had a validation set (False: no model selection, best.pt is the last weights)
    validated: bool = True


#: Any event of :func:`~napari_segloss.engine.training.iter_train`.
TrainEvent = TrainStart | TrainStep | TrainEpoch | TrainDone


# -- comparisons ---------------------------------------------------------------------------------

#: What a comparison does with a run: ``reuse`` its eval.json (same settings), ``resume`` its
#: checkpoint (stopped or interrupted earlier), ``retry`` it from scratch (it failed before) or
#: ``train`` it (nothing there yet).
RUN_ACTIONS = ("reuse", "resume", "retry", "train")
#: A run's state: ``ok`` (eval.json), ``failed``, ``stopped`` (a resumable checkpoint, no
#: eval.json) or ``pending`` (nothing yet).
RUN_STATUSES = ("ok", "failed", "stopped", "pending")


@dataclass(frozen=True)
class CompareRunInfo:
    """One ``(loss, seed)`` run of a comparison: what the comparison events name."""

    #: 0-based position in the grid (losses in the given order, seeds inner) and the run count
    index: int
    total: int
    #: the row label (``"pm_dice:gamma=2"``), the registry name and the loss parameters used
    loss: str
    name: str
    params: dict[str, Any]
    seed: int
    run_dir: Path
    #: the row as the paper writes it (``"PM Dice (gamma=2)"``)
    display: str


@dataclass(frozen=True)
class CompareStart(_Event):
    """Every check passed (losses, data, saved runs' settings) and the runs are next."""

    kind: ClassVar[str] = "compare_start"
    output: Path
    runs: tuple[CompareRunInfo, ...]
    #: per run, aligned with ``runs``: one of :data:`RUN_ACTIONS`
    actions: tuple[str, ...]
    overall: float = 0.0


@dataclass(frozen=True)
class CompareRunStart(_Event):
    """A run begins (``action``: one of :data:`RUN_ACTIONS`)."""

    kind: ClassVar[str] = "run_start"
    run: CompareRunInfo
    action: str
    overall: float


@dataclass(frozen=True)
class CompareRunProgress(_Event):
    """An event of the run's training (:class:`TrainStart`, :class:`TrainStep`,
    :class:`TrainEpoch` or :class:`TrainDone`); ``run_progress`` is the run's fraction of
    optimiser steps done, ``overall`` the grid's."""

    kind: ClassVar[str] = "run_progress"
    run: CompareRunInfo
    event: TrainEvent
    run_progress: float
    overall: float

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["event"] = self.event.to_dict()
        return out


@dataclass(frozen=True)
class CompareRunDone(_Event):
    """A run ended: ``status`` ``ok`` (``metrics``: the table's columns for this run, in %
    except HD95), ``failed`` (``error``), or ``stopped`` (Stop / Ctrl-C: resumable).
    ``checkpoint`` is the run's ``best.pt`` (None when there is none)."""

    kind: ClassVar[str] = "run_done"
    run: CompareRunInfo
    status: str
    action: str
    metrics: dict[str, float]
    error: str
    checkpoint: Path | None
    overall: float
    #: wall-clock seconds this run took here (0 when an earlier comparison's run is reused)
    seconds: float = 0.0


@dataclass(frozen=True)
class CompareDone(_Event):
    """The comparison ended: all runs done, or ``stopped`` (Stop button, Ctrl-C/SIGTERM:
    ``interrupted``) with the finished runs kept. ``statuses`` is aligned with
    :attr:`CompareStart.runs` (one of :data:`RUN_STATUSES`); ``markdown`` is ``results.md``."""

    kind: ClassVar[str] = "compare_done"
    output: Path
    statuses: tuple[str, ...]
    stopped: bool
    interrupted: bool
    reason: str
    markdown: str
    overall: float


#: Any event of :func:`~napari_segloss.engine.compare.iter_compare`.
CompareEvent = CompareStart | CompareRunStart | CompareRunProgress | CompareRunDone | CompareDone
