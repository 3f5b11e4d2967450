"""Compare losses: train ``losses x seeds`` with the rest of a config fixed, one run after another.

:func:`iter_compare` is the one engine behind ``segloss compare``, the napari Compare Losses
panel and notebook 04: a generator of typed events (:mod:`.events`: a progress bar per run and
overall, live validation Dice, Stop) that writes one results folder (:mod:`.compare_results`,
read back with :func:`~.compare_results.read_compare`). ``segloss compare`` prints its events.

Inputs: a base config (file, dict or ``TrainConfig``) that fixes everything but the loss and
the seed; the losses (:class:`~.loss_spec.LossSpec`: ``"pm_dice:gamma=2"``, a config-style
mapping, ...); the seeds; the training data as the config's folder (``data.root``) or as
in-memory arrays (``data=(images, masks)``, e.g. napari layers); the held-out set as the
validation split (``data.val_fraction``, drawn per seed), a folder (``data.test_root``) or
arrays (``heldout=``).

Before anything runs, every input is checked and a bad one raises ``ValueError`` (one line,
the text ``segloss compare`` prints): unknown losses or loss parameters, bad config keys,
missing masks, empty or unmatched folders, nothing to score on, and saved runs made with
other settings (listing the keys that differ).

Re-running into the same output reuses every run whose ``eval.json`` exists, resumes stopped
or interrupted ones from their checkpoint and retrains failed ones from scratch, but only when
the saved ``config.yaml`` asks for the same settings (keys that do not change results, such as
``train.num_workers``, aside). The output folder is locked while the grid runs
(:class:`~.rundir.RunLock`), so a second comparison into it is refused. Stop (``should_stop``)
ends the current run at its next step with a resumable checkpoint and keeps every finished run.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import time
import traceback
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ..data.datasets import DataError, SegmentationDataset
from ..data.factory import (
    LAYERS_PREFIX,
    ArrayPairs,
    array_fingerprint,
    build_array_datasets,
    build_datasets,
    build_eval_dataset,
    build_test_dataset,
    eval_split,
    unpack_array_pairs,
)
from ..losses import get_loss
from .compare_results import (
    FORMAT_VERSION,
    MANIFEST,
    METRIC_COLUMNS,
    CompareResults,
    CompareRun,
    compare_run_folder,
    heldout_path,
    metrics_from_eval,
    read_compare,
    read_eval,
    run_status,
    write_heldout,
    write_tables,
)
from .config import (
    RUNTIME_KEYS,
    TrainConfig,
    config_differences,
    config_to_dict,
    load_config,
    read_config_file,
)
from .events import (
    CompareDone,
    CompareEvent,
    CompareRunDone,
    CompareRunInfo,
    CompareRunProgress,
    CompareRunStart,
    CompareStart,
    TrainDone,
    TrainEvent,
    TrainStart,
    TrainStep,
    duration_text,
    stopped_text,
)
from .loss_spec import LossSpec, display_name, parse_loss_spec, parse_value
from .run_state import check_loss_fits, check_model_fits_data, data_items, items_changed
from .rundir import RunLock, write_text_atomic
from .training import iter_train

__all__ = [
    "METRIC_COLUMNS",
    "CompareRun",
    "LossSpec",
    "compare_log_line",
    "display_name",
    "duration_text",
    "iter_compare",
    "metrics_from_eval",
    "parse_loss_spec",
    "run_compare",
    "write_tables",
]

log = logging.getLogger(__name__)

#: ``iter_train``'s signature: what trains one run of the grid.
TrainFn = Callable[..., Iterator[TrainEvent]]
LossInput = str | Mapping[str, Any] | LossSpec
#: the base config of a comparison: a YAML file, a config tree or a ``TrainConfig``
BaseConfig = str | Path | Mapping[str, Any] | TrainConfig


@dataclass
class _Cell:
    info: CompareRunInfo
    spec: LossSpec  # with the parameters the run uses
    cfg: TrainConfig
    run: CompareRun
    action: str = "train"


# -- planning: everything that can be refused, before anything runs ---------------------------


def _base_tree(
    base: BaseConfig, overrides: Sequence[str]
) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """``(base config dict, loss params for the base loss, overrides without loss.params)``."""
    if isinstance(base, TrainConfig):
        base_dict: Any = config_to_dict(base)
    elif isinstance(base, str | Path):
        base_dict = read_config_file(base)  # as load_config and `segloss train` read it
    else:
        base_dict = copy.deepcopy(dict(base))
    if not isinstance(base_dict, dict):
        raise ValueError(
            f"config: expected a mapping at the top level, got {type(base_dict).__name__}"
        )
    base_params = dict((base_dict.get("loss") or {}).get("params") or {})
    user_overrides = [o for o in overrides if not o.strip().startswith("loss.params")]
    for ov in overrides:
        key, _, value = ov.partition("=")
        key = key.strip()
        if key == "loss.name":
            raise ValueError("--set loss.name=...: the loss is what compare varies; use --losses")
        # --set loss.params.gamma=2 applies to the base config's loss, like its YAML params.
        if key == "loss.params":
            loaded = parse_value(value)
            base_params = dict(loaded) if isinstance(loaded, dict) else {}
        elif key.startswith("loss.params."):
            base_params[key.removeprefix("loss.params.")] = parse_value(value)
    return base_dict, base_params, user_overrides


def _loss_specs(
    losses: Sequence[LossInput], base_loss: str | None, base_params: dict[str, Any]
) -> list[LossSpec]:
    """The specs with the parameters each run uses, every loss built once to check it. The
    base config's ``loss.params`` belong to its own loss name only (``gamma`` of ``pm_dice``
    means nothing to ``ce``) and apply when the spec gives no parameters."""
    if isinstance(losses, str | Mapping) or not losses:
        raise ValueError(
            "losses: expected a list of loss names (e.g. ['ce', 'pm_dice:gamma=2']), got "
            f"{losses!r}"
        )
    specs = []
    for item in losses:
        spec = LossSpec.from_any(item)
        if not spec.params and spec.name == base_loss:
            spec = LossSpec(spec.name, base_params, spec.label)
        try:
            get_loss(spec.name, **spec.params)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"losses: {spec.label!r}: {exc}") from None
        specs.append(spec)
    for what, key in (("label", "label"), ("run folder", "folder")):
        values = [getattr(s, key) for s in specs]
        if len(set(values)) != len(values):
            dups = sorted({v for v in values if values.count(v) > 1})
            raise ValueError(f"losses: expected no duplicates, got the {what} {dups} twice")
    for i, spec in enumerate(specs):
        for other in specs[:i]:  # == also equates 2 and 2.0
            if (other.name, other.params) == (spec.name, spec.params):
                raise ValueError(
                    f"losses: expected no duplicates, {other.label!r} and {spec.label!r} are "
                    "the same loss with the same parameters"
                )
    return specs


def _plan(
    base: BaseConfig,
    losses: Sequence[LossInput],
    seeds: Sequence[int],
    output: Path,
    overrides: Sequence[str],
    data_overrides: Sequence[str],
) -> list[_Cell]:
    """One validated cell per (loss, seed): its run folder and config."""
    if isinstance(seeds, int) or not seeds:
        raise ValueError(f"seeds: expected a list of integer seeds, got {seeds!r}")
    if any(isinstance(s, bool) or not isinstance(s, int | np.integer) for s in seeds):
        raise ValueError(f"seeds: expected integers, got {list(seeds)}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds: expected no duplicates, got {list(seeds)}")
    base_dict, base_params, user_overrides = _base_tree(base, overrides)
    base_loss = (base_dict.get("loss") or {}).get("name")
    specs = _loss_specs(losses, base_loss, base_params)
    total = len(specs) * len(seeds)
    cells: list[_Cell] = []
    for spec in specs:
        for seed in (int(s) for s in seeds):
            run_dir = compare_run_folder(output, spec, seed)
            # The loss goes into the tree, not through "key=value" YAML: YAML 1.1 would read a
            # float such as 1e-05 back as a string.
            tree = copy.deepcopy(base_dict)
            tree["loss"] = {"name": spec.name, "params": dict(spec.params)}
            cfg = load_config(
                tree,
                [
                    *user_overrides,
                    f"train.seed={seed}",
                    f"output={json.dumps(str(run_dir))}",
                    *data_overrides,
                ],
            )
            info = CompareRunInfo(
                index=len(cells),
                total=total,
                loss=spec.label,
                name=spec.name,
                params=dict(spec.params),
                seed=seed,
                run_dir=run_dir,
                display=spec.display,
            )
            if seed == seeds[0]:  # before any run: a loss that cannot fit fails at its step
                try:
                    check_loss_fits(cfg)
                except ValueError as exc:  # the loss's own words, not the config key's
                    why = str(exc.__cause__ or exc)
                    raise ValueError(f"losses: {spec.label!r}: {why}") from None
            cells.append(_Cell(info, spec, cfg, CompareRun(spec.label, seed, run_dir)))
    return cells


@dataclass
class _Arrays:
    data: ArrayPairs
    heldout: ArrayPairs | None

    def datasets(
        self, cfg: TrainConfig
    ) -> tuple[SegmentationDataset, SegmentationDataset | None, SegmentationDataset | None]:
        """``(train, validation or None, held-out or None)`` of the arrays for ``cfg``."""
        return build_array_datasets(cfg, self.data, self.heldout)


def _array_inputs(
    data: ArrayPairs | None, heldout: ArrayPairs | None
) -> tuple[_Arrays | None, list[str]]:
    """In-memory inputs and the config overrides that record them (``data.root`` /
    ``data.test_root`` = ``layers:<fingerprint>``, so a saved run names its exact arrays)."""
    if data is None:
        if heldout is not None:
            raise ValueError(
                "heldout: held-out arrays need the training data as arrays too (data=); for "
                "folder data set data.test_root to a held-out folder"
            )
        return None, []
    images, masks, _ = unpack_array_pairs(data, "data")
    overrides = [f"data.root={LAYERS_PREFIX}{array_fingerprint(images, masks)}"]
    if heldout is not None:
        h_images, h_masks, _ = unpack_array_pairs(heldout, "heldout")
        overrides.append(f"data.test_root={LAYERS_PREFIX}{array_fingerprint(h_images, h_masks)}")
    return _Arrays(data, heldout), overrides


def _check_data(cfg: TrainConfig, arrays: _Arrays | None) -> dict[str, str]:
    """Refuse data that no run could use (the same for every run); return what is scored
    (``{"split": "test" | "val", "source": description}``)."""
    check_model_fits_data(cfg)
    if arrays is not None:
        train_ds, val_ds, test_ds = arrays.datasets(cfg)
        source = "held-out arrays" if test_ds is not None else "the validation split"
    else:
        # every file is read once here, uncached: a bad mask is named before the first run
        # (each run reads its data again; hours of training are not spent on refusals)
        uncached = load_config(cfg, ["data.cache=false"])
        train_ds, val_ds = build_datasets(uncached)
        test_ds = build_test_dataset(uncached)
        source = (
            f"data.test_root {str(cfg.data.test_root)!r}"
            if cfg.data.test_root is not None
            else ("the split file's test list" if test_ds is not None else "the validation split")
        )
    for ds in (train_ds, val_ds, test_ds):
        if ds is not None and len(ds):
            ds.validate(num_classes=max(cfg.model.classes, 2), in_channels=cfg.model.in_channels)
    scored = test_ds if test_ds is not None else val_ds
    if scored is None or len(scored) == 0:
        raise DataError(
            "config key 'data.val_fraction': the validation split is empty and there is no "
            "held-out set, so no run could be scored; set data.val_fraction > 0 or give a "
            "held-out set (data.test_root, or held-out arrays)"
        )
    split = "val" if source == "the validation split" else "test"
    if split == "val":
        source += f" (data.val_fraction {cfg.data.val_fraction}, drawn from each seed)"
    return {"split": split, "source": source}


def _drift(cell: _Cell, items: dict[str, dict[str, Any]]) -> str | None:
    """Why the saved run of ``cell`` cannot be reused or resumed (None: it can, or none exists)."""
    run_dir = cell.run.run_dir
    if (run_dir / "FAILED.txt").is_file():
        return None  # retrained from scratch
    if not (run_dir / "eval.json").is_file() and not (run_dir / "checkpoint.pt").is_file():
        return None  # nothing to reuse
    saved_path = run_dir / "config.yaml"
    if not saved_path.is_file():
        return f"{run_dir}: no config.yaml, so the settings of its results are unknown"
    try:
        saved = yaml.safe_load(saved_path.read_text(encoding="utf-8"))
        diffs = config_differences(saved, cell.cfg, ignore=RUNTIME_KEYS)
    except (yaml.YAMLError, ValueError) as exc:
        return f"{saved_path}: unreadable ({str(exc).splitlines()[0]})"
    if not diffs and (changed := _data_changed(cell, items)):
        diffs = [f"the data changed since it ran ({changed})"]
    diffs = [_layers_said(d) for d in diffs]
    return f"{run_dir}: " + "; ".join(diffs) if diffs else None


def _layers_said(diff: str) -> str:
    """A ``data.root``/``data.test_root`` difference between two sets of napari layers in
    words: their fingerprints alone ("saved 'layers:3f2a…'") tell a person nothing."""
    key, _, rest = diff.partition(": saved ")
    if key in ("data.root", "data.test_root") and rest.count(repr(LAYERS_PREFIX)[:-1]) == 2:
        what = "training" if key == "data.root" else "held-out"
        return f"{key}: made on other {what} layers (images or masks) than those picked now"
    return diff


def _data_changed(cell: _Cell, items: dict[str, dict[str, Any]]) -> str:
    """How the data of ``cell``'s finished run (its eval.json's ``data_items``) differs from
    what the folders hold now ("" when it does not, or cannot tell): the config names a
    folder, not its files. A stopped run's resume makes the same check itself. ``items``
    caches the current splits per data section and seed."""
    eval_path = cell.run.run_dir / "eval.json"
    root = str(cell.cfg.data.root)
    if not eval_path.is_file() or root.startswith(LAYERS_PREFIX):  # arrays: fingerprinted
        return ""
    try:
        saved = json.loads(eval_path.read_text()).get("data_items")
    except (ValueError, OSError, AttributeError):
        return ""
    if not saved:  # written before eval.json recorded it
        return ""
    key = json.dumps([cell.cfg.data.model_dump(mode="json"), cell.cfg.train.seed], sort_keys=True)
    if key not in items:
        try:
            train_ds, val_ds = build_datasets(cell.cfg)
            heldout, _ = eval_split(val_ds, build_test_dataset(cell.cfg))
        except (DataError, ValueError, OSError):
            return ""  # the run itself will say what is wrong
        items[key] = data_items(train_ds, val_ds, heldout)  # as the run's eval.json has them
    return items_changed(saved, items[key])


def _refuse_drift(cells: Sequence[_Cell], output: Path) -> None:
    items: dict[str, dict[str, Any]] = {}  # the current splits, per data section and seed
    conflicts = [why for cell in cells if (why := _drift(cell, items)) is not None]
    if conflicts:
        raise ValueError(
            f"{len(conflicts)} run(s) in {str(output)!r} were made with other settings, so "
            f"their results cannot be reused: {'; '.join(conflicts[:3])}"
            + (" ..." if len(conflicts) > 3 else "")
            + ". Use another output folder, or delete those run folders to retrain them"
        )


#: the files a comparison writes at its folder's top (see compare_results)
_TABLE_FILES = (MANIFEST, "results.md", "results.csv", "runs.csv")


def _refuse_shrink(cells: Sequence[_Cell], seeds: Sequence[int], output: Path) -> None:
    """ValueError before anything is written when ``output``'s tables would lose runs: a
    comparison there with losses or seeds this one leaves out (its tables held only the
    subset afterwards, and ``read_compare`` saw no more), or files of the same names that no
    comparison wrote (the user's own ``results.md``)."""
    manifest = output / MANIFEST
    if not manifest.is_file():
        if not (output / "runs").is_dir():  # folders from before compare.json had runs/
            foreign = [name for name in _TABLE_FILES if (output / name).exists()]
            if foreign:
                raise ValueError(
                    f"output {str(output)!r} is not a comparison folder, but holds "
                    f"{', '.join(foreign)}, which a comparison would overwrite; give a new "
                    "or empty folder"
                )
        return
    try:
        before = json.loads(manifest.read_text())
        old_losses = [str(loss["label"]) for loss in before.get("losses", [])]
        old_seeds = [int(seed) for seed in before.get("seeds", [])]
    except (ValueError, KeyError, TypeError, OSError):
        return  # unreadable: the run folders decide, as before (_refuse_drift)
    labels, kept_seeds = {c.spec.label for c in cells}, set(seeds)
    lost_losses = [label for label in old_losses if label not in labels]
    lost_seeds = [seed for seed in old_seeds if seed not in kept_seeds]
    if lost_losses or lost_seeds:
        left = [*lost_losses, *(f"seed {seed}" for seed in lost_seeds)]
        raise ValueError(
            f"output {str(output)!r} holds a comparison of losses {', '.join(old_losses)} "
            f"and seeds {', '.join(map(str, old_seeds))}; this one leaves out "
            f"{', '.join(left)}, whose rows its tables would lose. Name them too (new losses "
            "and seeds are added), or use another output folder"
        )


def _action(run_dir: Path) -> str:
    return {"failed": "retry", "ok": "reuse", "stopped": "resume"}.get(run_status(run_dir), "train")


def _specs(cells: Sequence[_Cell]) -> list[LossSpec]:
    """The losses of the grid, one per table row, in grid order."""
    return list({c.spec.label: c.spec for c in cells}.values())


def _write_manifest(
    output: Path,
    cells: Sequence[_Cell],
    seeds: Sequence[int],
    title: str,
    heldout: dict[str, str],
) -> None:
    specs = _specs(cells)
    cfg = cells[0].cfg
    manifest = {
        "format": "napari-segloss compare",
        "version": FORMAT_VERSION,
        "title": title,
        "losses": [{**s.to_dict(), "folder": f"runs/{s.folder}"} for s in specs],
        "seeds": [int(s) for s in seeds],
        "runs": [
            {
                "loss": c.info.loss,
                "seed": c.info.seed,
                "run_dir": c.run.run_dir.relative_to(output).as_posix(),
            }
            for c in cells
        ],
        "data": {
            "root": str(cfg.data.root),
            "test_root": None if cfg.data.test_root is None else str(cfg.data.test_root),
        },
        "heldout": heldout,
    }
    write_text_atomic(output / MANIFEST, json.dumps(manifest, indent=1, default=str))


# -- running ----------------------------------------------------------------------------------


class _StopRequest:
    """``should_stop`` that remembers having fired (to tell a Stop from a non-finite loss)."""

    def __init__(self, should_stop: Callable[[], bool] | None) -> None:
        self.should_stop = should_stop
        self.fired = False

    def __call__(self) -> bool:
        if not self.fired and self.should_stop is not None and self.should_stop():
            self.fired = True
        return self.fired


@dataclass
class _Context:
    output: Path
    train_fn: TrainFn
    arrays: _Arrays | None
    stop: _StopRequest
    progress: bool
    save_predictions: bool
    total: int
    finished: int = 0
    fraction: float = 0.0
    interrupted: bool = False
    reason: str = ""

    def overall(self) -> float:
        return min(1.0, (self.finished + self.fraction) / max(1, self.total))

    def track(self, event: TrainEvent) -> None:
        if isinstance(event, TrainStart | TrainStep) and event.max_iterations > 0:
            self.fraction = event.iteration / event.max_iterations
        elif isinstance(event, TrainDone) and not event.stopped:
            self.fraction = 1.0


def _record_failure(run: CompareRun, error: str, details: str) -> None:
    """A failed run: status, message, and FAILED.txt (the next comparison retrains it)."""
    run.status = "failed"
    run.error = error.splitlines()[0][:500] if error else "failed"
    run.run_dir.mkdir(parents=True, exist_ok=True)
    (run.run_dir / "FAILED.txt").write_text(details or run.error)


def _settle(run: CompareRun, done: TrainDone | None, ctx: _Context) -> None:
    """The run's status from how its training ended."""
    if done is not None and done.stopped:
        if done.interrupted or ctx.stop.fired:  # Ctrl-C / SIGTERM, or the Stop button
            run.status, ctx.reason = "stopped", done.reason
            ctx.interrupted = ctx.interrupted or done.interrupted
        else:  # a non-finite loss: the run failed
            _record_failure(run, done.reason, done.reason)
        return
    if (run.run_dir / "eval.json").is_file():
        read_eval(run)
    else:
        _record_failure(run, "training finished without writing eval.json", "")


def _display_image(image: np.ndarray) -> np.ndarray:
    """``(C, *spatial)`` -> ``(*spatial)`` for one channel, ``(H, W, 3)`` for 2D colour."""
    if image.shape[0] == 1:
        return image[0]
    if image.ndim == 3 and image.shape[0] == 3:
        return np.moveaxis(image, 0, -1)
    return image


def _save_heldout(ctx: _Context, cell: _Cell, datasets: tuple | None) -> None:
    """Store the images and ground truth the run was scored on, once per held-out set."""
    try:
        data = json.loads((cell.run.run_dir / "eval.json").read_text())
        names = [str(e["name"]) for e in data.get("per_image") or []]
        split = str(data.get("split", "val"))
        path = heldout_path(ctx.output, split, names)
        if not names or path.is_file():
            return
        dataset: SegmentationDataset | None
        if ctx.arrays is not None:
            datasets = datasets or ctx.arrays.datasets(cell.cfg)
            dataset = datasets[2] if split == "test" else datasets[1]
        else:
            dataset, _ = build_eval_dataset(cell.cfg)
        if dataset is None or [dataset.item_name(i) for i in range(len(dataset))] != names:
            log.warning("%s: cannot store the held-out images (the set changed)", path)
            return
        images, truth = [], []
        for i in range(len(dataset)):
            image, mask = dataset.load_pair(i)
            images.append(_display_image(image.numpy()))
            truth.append(mask.numpy())
        write_heldout(path, names, images, truth)
    except (OSError, ValueError, KeyError) as exc:  # overlays only: the run itself is fine
        log.warning("could not store the held-out images of %s: %s", cell.run.run_dir, exc)


def _run_done(cell: _Cell, action: str, ctx: _Context, seconds: float = 0.0) -> CompareRunDone:
    run = cell.run
    return CompareRunDone(
        run=cell.info,
        status=run.status,
        action=action,
        metrics=dict(run.metrics),
        error=run.error,
        checkpoint=run.checkpoint if run.status == "ok" else None,
        overall=ctx.overall(),
        seconds=seconds,
    )


def _run_cell(cell: _Cell, ctx: _Context) -> Generator[CompareEvent, None, None]:
    """Reuse, resume, retry or train one cell; a failure is recorded, not raised."""
    run, action = cell.run, cell.action
    ctx.fraction = 0.0
    started = time.perf_counter()
    yield CompareRunStart(run=cell.info, action=action, overall=ctx.overall())
    if action == "reuse":
        if read_eval(run) is not None:
            _save_heldout(ctx, cell, None)
        ctx.finished += 1
        yield _run_done(cell, action, ctx)
        return
    cfg, datasets, done = cell.cfg, None, None
    try:
        if action == "retry":
            (run.run_dir / "FAILED.txt").unlink(missing_ok=True)
            cfg = load_config(cfg, ["train.overwrite=true"])
        if ctx.arrays is not None:
            datasets = ctx.arrays.datasets(cfg)
        events = ctx.train_fn(
            cfg,
            resume=action == "resume",
            datasets=datasets,
            should_stop=ctx.stop,
            progress=ctx.progress,
            save_predictions=ctx.save_predictions,
        )
        with contextlib.closing(events) if hasattr(events, "close") else contextlib.nullcontext():
            for event in events:
                ctx.track(event)
                done = event if isinstance(event, TrainDone) else done
                yield CompareRunProgress(cell.info, event, ctx.fraction, ctx.overall())
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # one bad run must not stop the grid
        _record_failure(run, f"{type(exc).__name__}: {exc}", traceback.format_exc())
    else:
        _settle(run, done, ctx)
    if run.status == "ok":
        _save_heldout(ctx, cell, datasets)
    if run.status != "stopped":
        ctx.finished += 1
    ctx.fraction = 0.0
    yield _run_done(cell, action, ctx, time.perf_counter() - started)


def iter_compare(
    base: BaseConfig,
    losses: Sequence[LossInput],
    seeds: Sequence[int],
    output: str | Path,
    overrides: Sequence[str] = (),
    *,
    data: ArrayPairs | None = None,
    heldout: ArrayPairs | None = None,
    should_stop: Callable[[], bool] | None = None,
    title: str = "",
    progress: bool = False,
    save_predictions: bool = True,
    train_fn: TrainFn | None = None,
) -> Iterator[CompareEvent]:
    """Train every ``(loss, seed)`` with the rest of ``base`` fixed; yield :mod:`.events`.

    Args:
        base: config file, dict or ``TrainConfig`` fixing data, model, optimiser, epochs, size,
            device... (``data.root`` may be absent when ``data`` is given).
        losses: loss specs: ``"ce+pm_dice"``, ``"pm_dice:gamma=2"``, ``{"name": "pm_dice",
            "params": {"gamma": 2}}`` or :class:`~.loss_spec.LossSpec`; one table row each.
        seeds: ``train.seed`` values (the validation split is drawn from the seed too).
        output: the comparison folder (:mod:`.compare_results`).
        overrides: ``key=value`` config overrides for every run (``loss.params.*`` apply to the
            base config's own loss only).
        data: training images and masks as arrays instead of ``data.root``: ``(images, masks)``
            or ``(images, masks, names)``, 2D arrays (``(H, W)``, ``(H, W, 3)``) and integer
            masks; split into training and validation by ``data.val_fraction``.
        heldout: held-out images and masks (arrays, with ``data``) scored by each run's
            eval.json instead of the validation split; for folders set ``data.test_root``.
        should_stop: polled between training steps; True ends the current run at the next step
            (resumable checkpoint), keeps every finished run and ends the comparison.
        title: the table's title in results.md.
        progress: progress bars for each run.
        save_predictions: store each run's held-out predictions for the overlays.
        train_fn: what trains one run (default :func:`~.training.iter_train`; same signature).

    Yields:
        :class:`~.events.CompareStart`, then per run :class:`~.events.CompareRunStart`,
        :class:`~.events.CompareRunProgress` (each training event) and
        :class:`~.events.CompareRunDone`, and :class:`~.events.CompareDone` last. The tables
        (``runs.csv``, ``results.csv``, ``results.md``) are rewritten after every run.

    Raises:
        ValueError: bad input (see the module docstring), before anything is written;
            ``rundir.RunDirBusy`` when another comparison runs into ``output``.
    """
    output = Path(output)
    arrays, data_overrides = _array_inputs(data, heldout)
    cells = _plan(base, losses, seeds, output, overrides, data_overrides)
    heldout_source = _check_data(cells[0].cfg, arrays)
    ctx = _Context(
        output=output,
        train_fn=train_fn or iter_train,
        arrays=arrays,
        stop=_StopRequest(should_stop),
        progress=progress,
        save_predictions=save_predictions,
        total=len(cells),
    )
    specs = _specs(cells)
    seeds = [int(s) for s in seeds]
    with RunLock(output, what="comparison"):
        _refuse_shrink(cells, seeds, output)
        _refuse_drift(cells, output)
        (output / "runs").mkdir(parents=True, exist_ok=True)
        _write_manifest(output, cells, seeds, title, heldout_source)
        for cell in cells:
            cell.action = _action(cell.run.run_dir)
            cell.run.status = "ok" if cell.action == "reuse" else run_status(cell.run.run_dir)
            if cell.action == "reuse":
                read_eval(cell.run)
        results = CompareResults(output, [c.run for c in cells], specs, seeds, title)
        results.write()
        yield CompareStart(
            output=output,
            runs=tuple(c.info for c in cells),
            actions=tuple(c.action for c in cells),
        )
        for cell in cells:
            if ctx.stop():
                ctx.reason = ctx.reason or "stopped by request"
                break
            yield from _run_cell(cell, ctx)
            results.write()
            if cell.run.status == "stopped":
                break
        markdown = results.write()
        stopped = any(c.run.status in ("stopped", "pending") for c in cells)
        yield CompareDone(
            output=output,
            statuses=tuple(c.run.status for c in cells),
            stopped=stopped,
            interrupted=ctx.interrupted,
            reason=ctx.reason if stopped else "completed",
            markdown=markdown,
            overall=ctx.overall(),
        )


def compare_log_line(event: CompareEvent) -> str | None:
    """The line ``segloss compare`` prints for ``event`` (None: nothing to print): one when a
    run starts, one when it ends (its time and held-out mDice), one when the grid stops."""
    if isinstance(event, CompareRunStart | CompareRunDone):
        r = event.run
        tag = f"[{r.index + 1}/{r.total}] {r.loss} seed {r.seed}"
        if isinstance(event, CompareRunStart):
            if event.action == "reuse":
                return f"{tag}: eval.json exists with the same settings, reused"
            verb = {"resume": "resuming", "retry": "retrying from scratch"}.get(
                event.action, "training"
            )
            return f"{tag}: {verb} -> {r.run_dir}"
        if event.action == "reuse" and event.status == "ok":
            return None
        took = duration_text(event.seconds)
        if event.status == "failed":
            return f"{tag}: FAILED after {took} ({event.error})"
        dice = event.metrics.get("mDice", math.nan)
        ok = event.status == "ok" and not math.isnan(dice)
        score = f", held-out mDice {dice:.2f} %" if ok else ""
        return f"{tag}: {event.status} {'in' if event.status == 'ok' else 'after'} {took}{score}"
    if isinstance(event, CompareDone) and event.stopped:
        return (
            f"comparison {stopped_text(event.reason)}; finished runs are kept in {event.output}, "
            "run the same command again to resume"
        )
    return None


def run_compare(
    base: BaseConfig,
    losses: Sequence[LossInput],
    seeds: Sequence[int],
    output: str | Path,
    overrides: Sequence[str] = (),
    *,
    train_fn: Callable[..., Any] | None = None,
    log: Callable[[str], None] = print,
) -> list[CompareRun]:
    """:func:`iter_compare` to the end, printing its log lines; returns the grid's runs.

    ``train_fn(cfg, resume=bool) -> TrainDone | None`` replaces the training (e.g. a stub
    writing eval.json in tests). Ctrl-C during a run saves it and raises ``KeyboardInterrupt``.
    """
    wrapped: TrainFn | None = None
    if train_fn is not None:

        def wrapped(cfg: TrainConfig, *, resume: bool = False, **_: Any) -> Iterator[TrainEvent]:
            result = train_fn(cfg, resume=resume)
            if isinstance(result, TrainDone):
                yield result

    for event in iter_compare(base, losses, seeds, output, overrides, train_fn=wrapped):
        line = compare_log_line(event)
        if line:
            log(line)
        if isinstance(event, CompareDone) and event.interrupted:
            raise KeyboardInterrupt
    return read_compare(output).runs
