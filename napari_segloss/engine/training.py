"""The training loop: a generator of typed progress events shared by the CLI, notebooks and napari.

Protocol (PM-Dice paper, Hosseini 2025, section 3.2): Adam with weight decay 1e-4, polynomial
learning-rate policy ``lr * (1 - iter / max_iter) ** 0.9`` stepped every iteration, the loss
chosen by registry name, validation each epoch and the checkpoint with the best mean foreground
Dice kept as ``best.pt``.

The stages live in their own modules: set-up and the run's state (:mod:`.run_state`), epoch
order, seeds and RNG state (:mod:`.sampling`), validation and ``eval.json``
(:mod:`.evaluation`), the run directory and its lock (:mod:`.rundir`), the events
(:mod:`.events`). This module is the loop.

Engineering choices:

* **Per-step overhead**: no host sync per step (the loss runs with ``validate=False``: the
  datasets' labels are checked before the first step); the loss is read back (``.item()``)
  only every ``log_every`` steps and at epoch ends. Decoded/resized data is cached, workers are persistent,
  host->device copies are ``non_blocking`` from pinned memory on CUDA, the model runs
  channels-last and (on CUDA) under bf16 autocast.
* **Reproducible resume**: see :mod:`.sampling`; resuming gives the same weights as an
  uninterrupted run, also after the process was killed.
* **One run per directory**: the run directory is locked for the whole run
  (:class:`~.rundir.RunLock`); a resume must ask for the same settings as the saved run.
* **Stopping**: ``should_stop()`` (the napari Stop button), Ctrl-C/SIGTERM (caught at the next
  step boundary when training runs in the main thread; under DDP every rank stops at the same
  step, see :class:`~.distributed.StepStopVote`) and a non-finite loss (seen at the next
  log step, named by its first step and that batch's files: the weights diverged) all end the run
  with ``TrainDone(stopped=True, reason=...)``. Cancels and interrupts save a resumable
  checkpoint first; a non-finite loss keeps the last good checkpoint on disk. Validation and the
  final evaluation are stopped between batches too, not waited for: torchrun and schedulers
  (SLURM) kill the processes a grace period after SIGTERM, and a long pass would outlast it.
  A stopped validation is dropped and runs again on resume; a stopped final evaluation writes
  no eval.json (resuming the finished run writes it). Weights are
  checked before each save (a finite loss can have NaN gradients): non-finite ones end the
  run the same way and are never written.
* **Distributed**: under ``torchrun`` the model is wrapped in DistributedDataParallel, the
  training sampler is a DistributedSampler, validation is sharded and gathered, and only rank 0
  writes files.
"""

from __future__ import annotations

import logging
import math
import re
import time
import warnings
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..progress import progress_bar
from .config import ConfigError, TrainConfig, load_config, resolve_output
from .distributed import (
    StepStopVote,
    StopVote,
    all_gather_objects,
    all_reduce_sum,
    any_true,
    broadcast_buffers,
    init_distributed,
)
from .evaluation import EvaluationStopped, evaluate_dataset, summarize, write_eval
from .events import TrainDone, TrainEpoch, TrainEvent, TrainStart, TrainStep
from .run_state import Datasets, RunState, poly_lr_factor, prepare_run, split_items
from .rundir import locked, remove_stale_temporaries
from .runtime import Interrupts, determinism, training_device
from .sampling import EpochSampler

__all__ = ["EpochSampler", "iter_train", "poly_lr_factor", "train"]

log = logging.getLogger(__name__)


def iter_train(
    cfg: TrainConfig | dict[str, Any] | str | Path,
    *,
    should_stop: Callable[[], bool] | None = None,
    datasets: Datasets | None = None,
    init_checkpoint: Path | str | None = None,
    resume: bool = False,
    progress: bool = True,
    save_predictions: bool = False,
) -> Iterator[TrainEvent]:
    """Train ``cfg`` and yield :mod:`typed events <.events>`.

    One :class:`~.events.TrainStart`, :class:`~.events.TrainStep` every ``train.log_every``
    steps and at each epoch end (``loss`` is the mean since the previous step event), one
    :class:`~.events.TrainEpoch` per epoch and a final :class:`~.events.TrainDone`.

    Args:
        cfg: a :class:`TrainConfig` (or anything :func:`load_config` takes).
        should_stop: called between steps and between validation (and final evaluation)
            batches; True ends training after saving a checkpoint.
        datasets: ``(train_ds, val_ds)`` or ``(train_ds, val_ds, heldout_ds)`` to use instead
            of ``data.factory.build_datasets`` (e.g. napari layers via
            ``data.factory.build_array_datasets``); ``val_ds`` may be None (no validation),
            ``heldout_ds`` is what eval.json scores (default: the validation split).
        init_checkpoint: fine-tune: start from these weights (same architecture required).
        resume: continue the run in ``cfg.output`` from its ``checkpoint.pt``; its saved config
            must match ``cfg`` except for ``config.RESUME_KEYS`` (e.g. ``train.epochs``).
        progress: show a progress bar (rank 0; ``progress.progress_bar``).
        save_predictions: write the predicted labels of the images eval.json scores to
            ``predictions.npz`` in the run directory (what ``segloss compare`` overlays draw).

    Raises:
        ConfigError / DataError / CheckpointError: bad input, before any training step and
        before anything is written. ``rundir.RunDirBusy``: another process trains into
        ``cfg.output``. A ``ValueError`` raised by the loss during a step names the batch's
        files.
    """
    if not isinstance(cfg, TrainConfig):
        cfg = load_config(cfg)
    if resume and init_checkpoint is not None:
        raise ConfigError("pass either resume=True or init_checkpoint, not both")
    info = init_distributed()  # the group stays for the next training in this process
    device = training_device(cfg.train.device, info)
    with (
        locked(resolve_output(cfg), enabled=info.is_main),
        determinism(cfg.train.deterministic, device.type == "cuda"),
        Interrupts(announce=info.is_main) as interrupts,
    ):
        state = prepare_run(
            cfg,
            info,
            device,
            datasets=datasets,
            init_checkpoint=init_checkpoint,
            resume=resume,
            progress=progress,
            save_predictions=save_predictions,
        )
        if state.main:
            remove_stale_temporaries(state.paths.root)
        yield from _run(state, interrupts, should_stop, progress)


def train(
    cfg: TrainConfig | dict[str, Any] | str | Path,
    *,
    on_event: Callable[[TrainEvent], None] | None = None,
    **kwargs: Any,
) -> TrainDone:
    """Run :func:`iter_train` to the end and return its final :class:`~.events.TrainDone`;
    ``on_event`` sees every event on the way (``segloss train`` prints its ``TrainStart``)."""
    done: TrainDone | None = None
    for event in iter_train(cfg, **kwargs):
        if on_event is not None:
            on_event(event)
        if isinstance(event, TrainDone):
            done = event
    assert done is not None  # iter_train always ends with TrainDone or raises
    return done


@dataclass
class _Outcome:
    stopped: bool = False
    reason: str = "completed"
    #: ``state.iteration`` when this process started training (0, or where a resume begins)
    start_iteration: int = 0


def _run(
    state: RunState,
    interrupts: Interrupts,
    should_stop: Callable[[], bool] | None,
    progress: bool,
) -> Iterator[TrainEvent]:
    cfg = state.cfg
    yield TrainStart(
        run_dir=state.paths.root,
        max_iterations=state.max_iterations,
        device=str(state.device),
        epoch=state.epoch,
        iteration=state.iteration,
        train_size=len(state.train_ds),
        val_size=0 if state.val_ds is None else len(state.val_ds),
        world_size=state.info.world_size,
        precision=str(state.eval_settings.amp_dtype or torch.float32).removeprefix("torch."),
        amp_requested=cfg.train.amp,
        notes=state.notes,
    )
    bar = None
    if progress and state.main:
        bar = progress_bar(
            total=state.max_iterations,
            initial=state.iteration,
            desc=f"train {cfg.loss.name}",
            unit="it",
            dynamic_ncols=True,
        )

    def want_stop() -> bool:
        return interrupts.reason is not None or (should_stop is not None and bool(should_stop()))

    outcome = _Outcome(start_iteration=state.iteration)
    state.train_model.train()
    # validation is stopped between batches, at the same batch on every rank
    vote = StopVote(want_stop, state.vote_device)
    try:
        for epoch in range(state.epoch, cfg.train.epochs):
            finished = yield from _train_epoch(state, epoch, want_stop, bar, outcome)
            ended = None
            if finished is not None:
                ended = _end_epoch(state, epoch, finished, vote, outcome, show=bar is not None)
            if ended is None:
                if outcome.reason == "completed":  # a stop request, not a non-finite loss
                    outcome.reason = _stop_reason(state, epoch, interrupts, outcome, finished)
                break
            yield ended
    finally:
        if bar is not None:
            bar.close()
    # a signal to one process of a torchrun job stops every rank (the vote): each reports it
    # as the interrupt it is, not as a Stop request (rank 0's exit code and resume hint)
    interrupted = any_true(interrupts.reason is not None, state.vote_device)
    if interrupted and interrupts.reason is None and outcome.stopped:
        outcome.reason = outcome.reason.replace(
            "stopped by request", "interrupted on another process", 1
        )
    # Rank 0 alone scores the held-out set; the other ranks must not wait for it in a
    # collective: a pass longer than the group's timeout (NCCL: 10 min) would kill them, and
    # torchrun then rank 0, before eval.json is written. Its files are all written by now.
    eval_summary = None
    if not outcome.stopped:
        try:
            eval_summary = _final_eval(state, want_stop, show=bar is not None)
        except EvaluationStopped:
            # the checkpoint holds every step; a resume of the finished run writes eval.json
            outcome.stopped = True
            n, epochs = state.max_iterations, cfg.train.epochs
            outcome.reason = (
                f"{interrupts.reason or 'stopped by request'} after {n} of {n} steps "
                f"({epochs} of {epochs} epochs done), during the final evaluation: eval.json "
                "was not written (resume the run to write it)"
            )
    paths = state.paths
    ours = state.committed or state.resume
    yield TrainDone(
        run_dir=paths.root,
        # this run's files only: a stop before its first save leaves an overwritten run's
        checkpoint=paths.checkpoint if ours and paths.checkpoint.is_file() else None,
        best_checkpoint=paths.best if ours and paths.best.is_file() else None,
        best_dice=state.best_or_none,
        stopped=outcome.stopped,
        reason=outcome.reason,
        # Ctrl-C / SIGTERM (not the Stop button): callers running several trainings stop too
        interrupted=interrupted or interrupts.reason is not None,  # during eval.json too
        epochs=len(state.history),
        iteration=state.iteration,
        eval=eval_summary,
        validated=state.val_ds is not None,
    )


def _stop_reason(
    state: RunState,
    epoch: int,
    interrupts: Interrupts,
    outcome: _Outcome,
    trained: _Trained | None,
) -> str:
    """Why a stop request ended the run, with the counts done as progress bars show them
    ("at iteration 15 (epoch 16)" read as a contradiction of "step 15/30"); ``trained``: the
    epoch's steps were all done and its validation was stopped (said after the counts: the
    reason starts "stopped by request after N of M steps" whenever it stopped). TrainDone.checkpoint names the
    checkpoint, so the reason does not repeat it."""
    reason = interrupts.reason or "stopped by request"
    reason += (
        f" after {state.iteration} of {state.max_iterations} steps "
        f"({epoch} of {state.cfg.train.epochs} epochs done)"
    )
    if trained is not None:
        reason += f", during the validation of epoch {epoch + 1}"
    if state.iteration == outcome.start_iteration:
        return reason + "; no step ran, nothing was written"
    if trained is not None:
        reason += "; the validation runs again on resume"
    return reason


@dataclass
class _Trained:
    """An epoch whose steps all ran: its mean train loss, the images and seconds this process
    trained, and this rank's loss sum and steps (what a stop during its validation saves)."""

    train_loss: float
    images: int
    seconds: float
    loss_sum: torch.Tensor
    steps: int


def _train_epoch(
    state: RunState,
    epoch: int,
    want_stop: Callable[[], bool],
    bar: Any,
    outcome: _Outcome,
) -> Generator[TrainStep, None, _Trained | None]:
    """One epoch's steps, yielding :class:`TrainStep` events.

    Returns what the epoch trained, or None when the run stopped (a stop request: a
    checkpoint is saved; a non-finite loss: ``outcome.reason`` says so).
    """
    t, s = state.cfg.train, state
    s.sampler.set_epoch(epoch)
    s.sampler.set_start(s.epoch_step * t.batch_size)
    # This rank's share of a resumed epoch (run_state.restored_partial); zero otherwise.
    ep_sum = torch.tensor(s.partial[0], device=s.device, dtype=torch.float64)
    ep_steps, s.partial = int(s.partial[1]), (0.0, 0)
    win_sum = torch.zeros((), device=s.device, dtype=torch.float64)
    win_steps = n_images = 0
    # this window's losses and batch numbers: which step went non-finite, read only if one did
    win_losses: list[torch.Tensor] = []
    win_batches: list[int] = []
    # Cooperative stop between steps; under DDP every rank stops at the same step
    vote = StepStopVote(want_stop, s.vote_device)
    t0 = time.perf_counter()
    for batch, (images, masks) in enumerate(s.loader):
        if vote.before_step():
            return _stop(state, epoch, ep_sum + win_sum, ep_steps, outcome)
        try:
            loss = _step(state, images, masks, epoch, batch)
        except _Diverged as exc:
            if s.info.enabled:  # the other ranks cannot be told without a per-step sync
                raise
            return _non_finite(state, str(exc), outcome)
        s.iteration += 1
        s.epoch_step += 1
        n_images += images.shape[0]
        win_sum += loss
        win_losses.append(loss)
        win_batches.append(batch)
        win_steps += 1
        ep_steps += 1
        if bar is not None:
            bar.update(1)
        if s.iteration % t.log_every == 0 or s.epoch_step == s.steps_per_epoch:
            ep_sum += win_sum
            value = float(all_reduce_sum(win_sum.clone()).item()) / (win_steps * s.info.world_size)
            if not math.isfinite(value):
                vote.finish()  # every rank started that round
                what = _first_non_finite(state, epoch, value, win_losses, win_batches)
                return _non_finite(state, what, outcome)
            if bar is not None:
                bar.set_postfix(loss=f"{value:.4f}")
            yield TrainStep(
                epoch=epoch + 1,
                iteration=s.iteration,
                max_iterations=s.max_iterations,
                loss=value,
                lr=s.lr(),
            )
            win_sum.zero_()
            win_steps = 0
            win_losses.clear()
            win_batches.clear()
            if vote.at_log_step():
                return _stop(state, epoch, ep_sum, ep_steps, outcome)
    # Every rank started that last round. A request it carries is honoured by the validation's
    # StopVote (or the next epoch's first steps), which spread the asking rank's wish again.
    vote.finish()
    train_time = time.perf_counter() - t0
    broadcast_buffers(s.model)
    # Steps are summed too: a run resumed on another number of processes restores the
    # interrupted part on rank 0 only, so ranks may hold different counts.
    total = torch.stack(
        [ep_sum, torch.tensor(float(ep_steps), device=s.device, dtype=ep_sum.dtype)]
    )
    loss_sum, steps = all_reduce_sum(total).tolist()
    train_loss = loss_sum / max(1, int(steps))
    if not math.isfinite(train_loss):
        return _non_finite(state, f"non-finite loss at epoch {epoch + 1}", outcome)
    if not _finite_weights(s.model):  # a finite loss with NaN/Inf gradients: nothing to save
        what = f"non-finite weights after iteration {s.iteration} (epoch {epoch + 1})"
        return _non_finite(state, f"{what}: the training diverged", outcome)
    return _Trained(train_loss, n_images, train_time, ep_sum, ep_steps)


def _first_non_finite(
    state: RunState, epoch: int, value: float, losses: list[torch.Tensor], batches: list[int]
) -> str:
    """A non-finite loss at a log step, named by the first step of the window whose own loss
    was non-finite and its batch's files (the loss does not check its inputs in training)."""
    s = state
    flags = torch.isfinite(torch.stack(losses)).tolist() if losses else []
    if all(flags):  # under DDP: another rank's loss
        return f"non-finite loss ({value}) at iteration {s.iteration} (epoch {epoch + 1})"
    i = flags.index(False)
    names = [
        s.train_ds.item_name(j) for j in s.sampler.batch_indices(batches[i], s.cfg.train.batch_size)
    ]
    return (
        f"non-finite loss ({value}) at iteration {s.iteration - len(losses) + i + 1} (epoch "
        f"{epoch + 1}; batch of {', '.join(names)}): the training diverged (e.g. optim.lr too "
        "high)"
    )


class _Diverged(ValueError):
    """Non-finite logits from finite images in a training step."""


def _finite_weights(model: torch.nn.Module) -> bool:
    """True when every floating-point parameter and buffer is finite (one host sync)."""
    flags = [
        torch.isfinite(t).all()
        for t in (*model.parameters(), *model.buffers())
        if t.is_floating_point()
    ]
    return bool(torch.stack(flags).all()) if flags else True


#: the start of torch's warning when the scheduler steps after an optimiser step was skipped
_SKIPPED_STEP_WARNING = re.escape(
    "Detected call of `lr_scheduler.step()` before `optimizer.step()`"
)


def _step(
    state: RunState, images: torch.Tensor, masks: torch.Tensor, epoch: int, batch: int
) -> torch.Tensor:
    """One optimiser step; returns the (detached) loss. A loss ``ValueError`` is re-raised
    naming the files of the batch: as :class:`_Diverged` when the logits are non-finite but
    the images are finite (the datasets check them), i.e. the weights blew up."""
    s, t = state, state.cfg.train
    images = images.to(s.device, non_blocking=True)
    masks = masks.to(s.device, non_blocking=True)
    images = torch.addcmul(s.norm_b, images.float(), s.norm_a)
    if t.channels_last:
        images = images.contiguous(memory_format=s.memory_format)
    amp_dtype = s.eval_settings.amp_dtype
    logits = None
    try:
        with torch.autocast(
            s.device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None
        ):
            logits = s.train_model(images)
            loss = s.loss_fn(logits, masks)
    except ValueError as exc:
        names = [s.train_ds.item_name(i) for i in s.sampler.batch_indices(batch, t.batch_size)]
        where = f"epoch {epoch + 1}, iteration {s.iteration + 1}; batch of {', '.join(names)}"
        if (
            logits is not None
            and not bool(torch.isfinite(logits).all())
            and bool(torch.isfinite(images).all())
        ):
            raise _Diverged(
                f"non-finite logits from finite images ({where}): the training diverged "
                "(e.g. optim.lr too high)"
            ) from exc
        raise ValueError(f"{exc} ({where})") from exc
    s.optimizer.zero_grad(set_to_none=True)
    if s.scaler is not None:
        s.scaler.scale(loss).backward()
        s.scaler.step(s.optimizer)
        s.scaler.update()
        with warnings.catch_warnings():
            # A step the scaler skipped (its first steps, inf gradients) still counts: the
            # poly schedule is a function of the iteration, as resume restores it. torch
            # warns then that the schedule's first value was skipped.
            warnings.filterwarnings("ignore", _SKIPPED_STEP_WARNING, UserWarning)
            s.scheduler.step()
    else:
        loss.backward()
        s.optimizer.step()
        s.scheduler.step()
    return loss.detach()


def _stop(
    state: RunState, epoch: int, loss_sum: torch.Tensor, steps: int, outcome: _Outcome
) -> None:
    """A stop request mid-epoch: save a resumable checkpoint with the epoch's partial loss.

    Collective under DDP (every rank gets here at the same step, see :class:`StepStopVote`,
    or at the same validation batch, see :class:`StopVote`): rank 0 writes every rank's
    partial sums, not only its own, so the resumed epoch's train loss counts each step once.

    A stop before this process took a step (Ctrl-C while the data loads) writes nothing: the
    disk already holds the latest state, and a first write would replace an overwritten run's
    files (``train.overwrite``) with untrained weights.
    """
    outcome.stopped = True
    if state.iteration == outcome.start_iteration:  # same on every rank: no collective skipped
        return None
    broadcast_buffers(state.model)
    if not _finite_weights(state.model):  # identical weights on every rank: same decision
        what = f"non-finite weights at iteration {state.iteration} (epoch {epoch + 1})"
        return _non_finite(state, f"{what}: the training diverged", outcome)
    ranks = all_gather_objects((float(loss_sum.item()), steps))
    state.save_checkpoint(epoch, state.epoch_step, ranks)
    return None


def _non_finite(state: RunState, what: str, outcome: _Outcome) -> None:
    """A NaN/Inf loss or weights: stop without saving (the last checkpoint holds finite
    weights)."""
    kept = (
        f"the last good checkpoint is kept: {state.paths.checkpoint}"
        if state.paths.checkpoint.is_file()
        else "no checkpoint was written (the first epoch did not finish)"
    )
    outcome.stopped = True
    outcome.reason = f"{what}; stopped, {kept}"
    log.error(outcome.reason)
    return None


def _validate(
    state: RunState, epoch: int, vote: StopVote, *, show: bool
) -> tuple[float, dict[str, Any]] | None:
    """Score the validation split (sharded over ranks, gathered): ``(loss, summary)``, or None
    when a stop request ended it (between batches, at the same batch on every rank)."""
    s, t = state, state.cfg.train
    try:
        loss_sum, count, results = evaluate_dataset(
            s.model,
            s.val_ds,  # type: ignore[arg-type]  # the caller checked it
            s.val_indices,
            s.eval_settings,
            loss_fn=s.loss_fn,
            batch_size=s.val_batch_size,
            surface=t.val_metrics == "full",
            progress=f"validation, epoch {epoch + 1}" if show else None,
            should_stop=vote,
        )
    except EvaluationStopped:
        return None
    if vote.finish():  # another rank stopped before its last batch
        return None
    gathered = all_gather_objects((loss_sum, count, results))
    val_loss = sum(g[0] for g in gathered) / max(1, sum(g[1] for g in gathered))
    return val_loss, summarize([r for g in gathered for r in g[2]], s.cfg.data.class_names)


def _end_epoch(
    state: RunState,
    epoch: int,
    trained: _Trained,
    vote: StopVote,
    outcome: _Outcome,
    *,
    show: bool = False,
) -> TrainEpoch | None:
    """Validate (when due; ``show``: with a progress bar), record the metrics row, save
    best/latest weights.

    A stop request during the validation ends it and saves the checkpoint of the epoch's last
    step (as a stop after that step would): no partial validation reaches metrics.csv or the
    choice of best.pt; the resumed run validates the epoch again. Returns None then.
    """
    s, t = state, state.cfg.train
    row: dict[str, Any] = {
        "epoch": epoch + 1,
        "iteration": s.iteration,
        "lr": s.lr(),
        "train_loss": trained.train_loss,
    }
    summary: dict[str, Any] = {}
    val_loss = val_dice = None
    if s.val_ds is not None and ((epoch + 1) % t.val_every == 0 or epoch + 1 == t.epochs):
        validated = _validate(state, epoch, vote, show=show)
        if validated is None:
            return _stop(state, epoch, trained.loss_sum, trained.steps, outcome)
        val_loss, summary = validated
        val_dice = summary["mean"].get("dice")
        row["val_loss"] = val_loss
        for k, v in summary["mean"].items():
            row[f"val_{k}"] = v
        if len(summary["per_class"]) > 1:
            for c, vals in summary["per_class"].items():
                row[f"dice_{c}"] = vals.get("dice")
    seconds = trained.seconds
    if trained.images:  # empty when every step of the epoch ran before a resume (not 0.0)
        row["epoch_time_s"] = round(seconds, 3)
        row["train_images_per_s"] = round(
            trained.images * s.info.world_size / max(seconds, 1e-9), 2
        )
    s.history.append(row)
    improved = val_dice is not None and math.isfinite(val_dice) and val_dice > s.best_dice
    if improved:
        s.best_dice = float(val_dice)  # type: ignore[arg-type]
    s.epoch_step = 0
    if improved or s.val_ds is None:  # without validation the latest weights are the "best"
        s.save_best(epoch + 1, summary, val_dice)
    s.save_checkpoint(epoch + 1, 0)
    return TrainEpoch(
        epoch=epoch + 1,
        iteration=s.iteration,
        train_loss=trained.train_loss,
        val_loss=val_loss,
        val_dice=val_dice,
        metrics=summary,
    )


def _final_eval(
    state: RunState, want_stop: Callable[[], bool], *, show: bool = False
) -> dict[str, Any] | None:
    """Score the best weights on the held-out set (``test``: ``data.test_root``, the split
    file's test list or given held-out data; else ``val``) with every metric and write
    ``eval.json`` (and ``predictions.npz`` when asked) on rank 0. A stop request ends it
    between batches (:class:`~.evaluation.EvaluationStopped`) with nothing written: rank 0
    scores alone, so no other rank has to agree."""
    s = state
    if not s.main:
        return None
    eval_ds, split, batch_size = (
        (s.test_ds, "test", s.test_batch_size)
        if s.test_ds is not None
        else (s.val_ds, "val", s.val_batch_size)
    )
    if eval_ds is None or len(eval_ds) == 0:
        return None
    weights = s.paths.best if s.paths.best.is_file() else s.paths.checkpoint
    return write_eval(
        s.paths.eval,
        eval_ds,
        split,
        weights,
        model=s.model,
        loss_fn=s.loss_fn,
        settings=s.eval_settings,
        class_names=s.cfg.data.class_names,
        predictions_path=s.paths.predictions if s.save_predictions else None,
        progress=show,
        should_stop=want_stop,
        batch_size=batch_size,
        data_items={**s.items, "heldout": split_items(eval_ds)},  # s.items: train and val
    )
