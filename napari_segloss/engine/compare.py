"""Compare losses: train ``losses x seeds`` with the rest of a config fixed, tabulate like the paper.

The output mirrors tables 1-3 of the PM-Dice paper (Hosseini et al. 2025, section 3.2): one row
per loss, columns ``mDice mIoU mNSD mPrec. mRec.`` (means over the foreground classes) and, for
multi-class data, the Dice of each foreground class; values in % with 2 decimals, reported as
``mean ± std`` over seeds (the paper reports the mean of 3 runs; the std is our addition, sample
std with ``ddof=1``, ``-`` with a single run).

Layout of ``output``::

    runs/<loss-label>/seed<k>/   one training run dir each (config.yaml, metrics.csv, eval.json, ...)
    runs.csv                     one row per run: status (ok / failed / missing), metrics in %
    results.csv                  one row per loss: mean and std of each column over its ok runs
    results.md                   the paper-shaped Markdown table (best mean per column in bold)

A run whose ``eval.json`` exists is not trained again and an interrupted one is resumed, but
only when its saved ``config.yaml`` asks for the same settings as this grid (keys that do not
change results, such as ``train.num_workers``, aside): otherwise the whole grid is refused before
anything runs, listing the differing keys. A run that raises is recorded as failed (message in
``runs.csv`` and ``<run>/FAILED.txt``) and the grid continues. The output folder is locked
while the grid runs (:class:`~.rundir.RunLock`), so a second ``compare`` into it is refused.
"""

from __future__ import annotations

import copy
import csv
import json
import math
import re
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from .config import RUNTIME_KEYS, ConfigError, config_differences, load_config
from .events import TrainDone
from .rundir import RunLock
from .training import train

__all__ = [
    "METRIC_COLUMNS",
    "CompareRun",
    "display_name",
    "metrics_from_eval",
    "parse_loss_spec",
    "run_compare",
    "summarise",
    "write_tables",
]

#: (eval.json metric key, table column) in the paper's order.
METRIC_COLUMNS: tuple[tuple[str, str], ...] = (
    ("dice", "mDice"),
    ("iou", "mIoU"),
    ("nsd", "mNSD"),
    ("precision", "mPrec."),
    ("recall", "mRec."),
)

# Row labels as the paper writes them (tables 1-3); unknown names are shown as given.
_DISPLAY = {
    "ce": "CE",
    "dice": "Dice",
    "log_dice": "Logarithmic Dice",
    "focal_dice": "Focal Dice (Wang & Chung)",
    "focal_dice_zhao": "Focal Dice (Zhao)",
    "focal": "Focal CE",
    "topk_ce": "TopK CE",
    "topk_dice": "TopK Dice",
    "pm_dice": "PM Dice",
    "generalized_dice": "Generalized Dice",
    "wsdice": "WSDice",
    "tversky": "Tversky",
    "focal_tversky": "Focal Tversky",
    "unified_focal": "Unified Focal",
    "asymmetric_unified_focal": "Asymmetric Unified Focal",
    "mixed_focal": "Mixed Focal",
    "combo": "Combo",
    "cosine_tversky": "Cosine Tversky",
    "focal_log_wsdice": "Focal − log(WSDice)",
}


def display_name(label: str) -> str:
    """Paper-style row label: ``"focal+pm_dice"`` -> ``"Focal CE + PM Dice"``."""
    name, _, params = label.partition(":")
    text = " + ".join(_DISPLAY.get(part.strip(), part.strip()) for part in name.split("+"))
    return f"{text} ({params})" if params else text


def parse_loss_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"pm_dice"`` -> ``("pm_dice", {})``; ``"pm_dice:gamma=2,eps=1e-6"`` -> params parsed as YAML.

    Lets one compare grid sweep a loss parameter (e.g. the PM-Dice focusing parameter gamma,
    paper figs. 3-4) next to other losses.
    """
    name, sep, rest = spec.partition(":")
    name = name.strip()
    if not name or not re.fullmatch(r"[A-Za-z0-9_+]+", name):
        raise ValueError(
            f"losses: expected a registered loss name such as 'ce', 'pm_dice' or 'ce+pm_dice' "
            f"(optionally 'name:key=value,...'), got {spec!r}"
        )
    params: dict[str, Any] = {}
    if sep:
        for item in filter(None, (p.strip() for p in _split_top_level(rest))):
            key, eq, value = item.partition("=")
            if not eq or not key.strip():
                raise ValueError(
                    f"losses: expected 'name:key=value[,key=value]', got {spec!r} (bad part {item!r})"
                )
            try:
                params[key.strip()] = _yaml_value(value)
            except yaml.YAMLError:
                raise ValueError(
                    f"losses: value of {key.strip()!r} in {spec!r} is not valid YAML: {value!r}"
                ) from None
    return name, params


def _yaml_value(text: str) -> Any:
    """YAML scalar/list, plus numbers YAML 1.1 leaves as strings (``1e-6`` needs a dot there)."""
    value = yaml.safe_load(text)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _split_top_level(text: str) -> list[str]:
    """Split on commas outside brackets, so ``gamma=[1, 2],eps=1e-6`` keeps the list whole."""
    parts, depth, current = [], 0, []
    for ch in text:
        if ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def _run_label(spec: str) -> str:
    """File-system-safe folder name for a loss spec."""
    return re.sub(r"[^A-Za-z0-9_.+=-]+", "_", spec.replace(":", "__")).strip("_")


@dataclass
class CompareRun:
    """One (loss, seed) cell of the grid and what came out of it."""

    loss: str
    seed: int
    run_dir: Path
    status: str = "pending"  # ok | failed | skipped-existing becomes ok | missing
    error: str = ""
    metrics: dict[str, float] = field(default_factory=dict)  # column -> value in %
    class_names: list[str] = field(default_factory=list)


def _find_per_class(data: Any) -> dict[str, dict[str, float]] | None:
    """Locate the ``{class: {metric: value}}`` mapping in an eval.json payload."""
    if isinstance(data, Mapping):
        values = list(data.values())
        if values and all(isinstance(v, Mapping) and "dice" in v for v in values):
            return {str(k): dict(v) for k, v in data.items()}
        for key in ("per_class", "classes", "metrics", "eval", "val", "test"):
            if key in data:
                found = _find_per_class(data[key])
                if found is not None:
                    return found
    return None


def _as_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def metrics_from_eval(data: Mapping[str, Any]) -> tuple[dict[str, float], list[str]]:
    """Paper columns (in %) from an ``eval.json`` payload: means over the foreground classes.

    The per-class mapping (as written by ``metrics.evaluate``: class id -> ``dice, iou,
    precision, recall, nsd, hd95``) may sit at the top level or under ``per_class``/``classes``/
    ``metrics``. Class ``0`` (background) is dropped when other classes are present, as the
    paper averages "the foreground classes" (section 3.2). NaN entries (undefined cases) are
    skipped by the mean. Multi-class results add one ``Dice <name>`` column per class.
    """
    per_class = _find_per_class(data)
    if per_class is None:
        raise ValueError(
            "eval.json: expected a mapping of class -> {dice, iou, precision, recall, nsd} "
            "(at the top level or under 'per_class'), found none"
        )
    keys = [k for k in per_class if k not in ("0", "background")] or list(per_class)
    names_src = data.get("class_names") if isinstance(data, Mapping) else None
    names: list[str] = []
    for k in keys:
        name = None
        if isinstance(names_src, Mapping):
            name = names_src.get(k)
        elif isinstance(names_src, Sequence) and not isinstance(names_src, str):
            # A list of names indexed by class id (including background at 0).
            if k.isdigit() and int(k) < len(names_src):
                name = names_src[int(k)]
        names.append(str(name) if name else f"class {k}")
    out: dict[str, float] = {}
    for metric, column in METRIC_COLUMNS:
        vals = np.array([_as_float(per_class[k].get(metric)) for k in keys], dtype=float)
        out[column] = float(np.nanmean(vals)) * 100 if np.isfinite(vals).any() else math.nan
    if len(keys) > 1:
        for k, name in zip(keys, names, strict=True):
            out[f"Dice {name}"] = _as_float(per_class[k].get("dice")) * 100
    return out, names


def _read_eval(run: CompareRun) -> None:
    path = run.run_dir / "eval.json"
    try:
        data = json.loads(path.read_text())
        run.metrics, run.class_names = metrics_from_eval(data)
        run.status = "ok"
    except (OSError, ValueError) as exc:
        run.status = "failed"
        run.error = f"unreadable {path}: {exc}"


def _base_tree(
    base: str | Path | Mapping[str, Any], overrides: Sequence[str]
) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """``(base config dict, loss params for the base loss, overrides without loss.params)``."""
    if isinstance(base, str | Path):
        base_path = Path(base)
        if not base_path.is_file():
            raise FileNotFoundError(f"config file not found: {base_path}")
        base_dict = yaml.safe_load(base_path.read_text()) or {}
    else:
        base_dict = dict(base)
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
            loaded = _yaml_value(value)
            base_params = dict(loaded) if isinstance(loaded, dict) else {}
        elif key.startswith("loss.params."):
            base_params[key.removeprefix("loss.params.")] = _yaml_value(value)
    return base_dict, base_params, user_overrides


@dataclass
class _Cell:
    run: CompareRun
    tree: dict[str, Any]
    overrides: list[str]


def _plan(
    base: str | Path | Mapping[str, Any],
    losses: Sequence[str],
    seeds: Sequence[int],
    output: Path,
    overrides: Sequence[str],
) -> list[_Cell]:
    """One cell per (loss, seed): its run folder, config tree and overrides."""
    if not losses:
        raise ValueError("losses: expected at least one loss name, got none")
    if not seeds:
        raise ValueError("seeds: expected at least one integer seed, got none")
    if len(set(losses)) != len(losses) or len(set(seeds)) != len(seeds):
        raise ValueError(
            f"losses/seeds: expected no duplicates, got {list(losses)} / {list(seeds)}"
        )
    specs = [(spec, *parse_loss_spec(spec)) for spec in losses]
    base_dict, base_params, user_overrides = _base_tree(base, overrides)
    base_loss = (base_dict.get("loss") or {}).get("name")
    cells = []
    for spec, name, params in specs:
        for seed in seeds:
            run_dir = output / "runs" / _run_label(spec) / f"seed{seed}"
            run_params = dict(params)
            if name == base_loss and not params:
                run_params = dict(base_params)
            # The loss goes into the tree, not through "key=value" YAML: YAML 1.1 would read a
            # float such as 1e-05 back as a string.
            tree = copy.deepcopy(base_dict)
            tree["loss"] = {"name": name, "params": run_params}
            run_overrides = [
                *user_overrides,
                f"train.seed={int(seed)}",
                f"output={json.dumps(str(run_dir))}",
            ]
            cells.append(
                _Cell(CompareRun(loss=spec, seed=int(seed), run_dir=run_dir), tree, run_overrides)
            )
    return cells


def _drift(cell: _Cell, load_fn: Callable[[Any, Sequence[str]], Any]) -> str | None:
    """Why the saved run of ``cell`` cannot be reused or resumed (None: it can, or none exists)."""
    run_dir = cell.run.run_dir
    if (run_dir / "FAILED.txt").is_file():
        return None  # retrained from scratch
    has_eval = (run_dir / "eval.json").is_file()
    if not has_eval and not (run_dir / "checkpoint.pt").is_file():
        return None  # nothing to reuse
    saved_path = run_dir / "config.yaml"
    try:
        requested = load_fn(cell.tree, cell.overrides)
    except (ConfigError, ValueError):
        return None  # recorded as a failed run when the grid gets there
    if not saved_path.is_file():
        return f"{run_dir}: no config.yaml, so the settings of its results are unknown"
    try:
        saved = yaml.safe_load(saved_path.read_text(encoding="utf-8"))
        diffs = config_differences(saved, requested, ignore=RUNTIME_KEYS)
    except (yaml.YAMLError, ValueError) as exc:
        return f"{saved_path}: unreadable ({str(exc).splitlines()[0]})"
    return f"{run_dir}: " + "; ".join(diffs) if diffs else None


def run_compare(
    base: str | Path | Mapping[str, Any],
    losses: Sequence[str],
    seeds: Sequence[int],
    output: str | Path,
    overrides: Sequence[str] = (),
    *,
    train_fn: Callable[..., Any] | None = None,
    load_fn: Callable[[Any, Sequence[str]], Any] | None = None,
    log: Callable[[str], None] = print,
) -> list[CompareRun]:
    """Train every ``(loss, seed)`` pair with the rest of ``base`` fixed; return the runs.

    Args:
        base: config file or dict (as accepted by ``engine.config.load_config``).
        losses: loss specs (``parse_loss_spec``); the base's ``loss.params`` are kept only for
            the base's own loss name (``gamma`` of ``pm_dice`` means nothing to ``ce``).
        seeds: ``train.seed`` values.
        output: grid folder (see module docstring); tables are written by ``write_tables``.
        overrides: ``key=value`` overrides applied to every run (before the grid's own).
        train_fn: ``(cfg, resume=bool) -> TrainDone | None`` that trains and writes
            ``config.yaml`` and ``eval.json`` in ``cfg.output``; default
            ``engine.training.train`` without progress bars. Runs with a ``checkpoint.pt`` but
            no ``eval.json`` (interrupted) are resumed; runs that failed (``FAILED.txt``) are
            trained again from scratch.
        load_fn: ``(source, overrides) -> cfg``; default ``engine.config.load_config``.
        log: progress lines.

    Raises:
        ValueError: bad arguments; saved runs made with other settings (listing the keys);
            ``rundir.RunDirBusy`` when another process runs a grid into ``output``.
    """
    output = Path(output)
    cells = _plan(base, losses, seeds, output, overrides)
    load_fn = load_fn or load_config
    if train_fn is None:

        def train_fn(cfg: Any, resume: bool = False) -> Any:
            return train(cfg, progress=False, resume=resume)

    with RunLock(output, what="comparison"):
        conflicts = [why for cell in cells if (why := _drift(cell, load_fn)) is not None]
        if conflicts:
            raise ValueError(
                f"{len(conflicts)} run(s) in {str(output)!r} were made with other settings, so "
                f"their results cannot be reused: {'; '.join(conflicts[:3])}"
                + (" ..." if len(conflicts) > 3 else "")
                + ". Use another --output, or delete those run folders to retrain them"
            )
        (output / "runs").mkdir(parents=True, exist_ok=True)
        for n, cell in enumerate(cells, 1):
            _run_cell(
                cell,
                f"[{n}/{len(cells)}] {cell.run.loss} seed {cell.run.seed}",
                train_fn,
                load_fn,
                log,
            )
    return [cell.run for cell in cells]


def _run_cell(
    cell: _Cell,
    tag: str,
    train_fn: Callable[..., Any],
    load_fn: Callable[[Any, Sequence[str]], Any],
    log: Callable[[str], None],
) -> None:
    """Train (or reuse, or resume) one cell; a failure is recorded, not raised."""
    run = cell.run
    if (run.run_dir / "eval.json").is_file() and not (run.run_dir / "FAILED.txt").is_file():
        log(f"{tag}: eval.json exists with the same settings, reused")
        _read_eval(run)
        return
    overrides = list(cell.overrides)
    # A run dir with a checkpoint but no eval.json was interrupted (Ctrl-C, a killed job):
    # resume it. One that failed with an error is retried from scratch.
    failed_before = (run.run_dir / "FAILED.txt").is_file()
    resume = (run.run_dir / "checkpoint.pt").is_file() and not failed_before
    if failed_before:
        (run.run_dir / "FAILED.txt").unlink()
        overrides.append("train.overwrite=true")
    log(f"{tag}: {'resuming' if resume else 'training'} -> {run.run_dir}")
    try:
        cfg = load_fn(cell.tree, overrides)
        result = train_fn(cfg, resume=resume)
        if isinstance(result, TrainDone) and result.interrupted:
            # training caught Ctrl-C/SIGTERM and saved a checkpoint: the user wants the
            # whole grid to stop, not the next run to start
            log(f"{tag}: {result.reason}; stopping (run the same command again to resume)")
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # one bad run must not stop the grid
        run.status = "failed"
        run.error = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
        run.run_dir.mkdir(parents=True, exist_ok=True)
        (run.run_dir / "FAILED.txt").write_text(traceback.format_exc())
        log(f"{tag}: FAILED ({run.error})")
        return
    if (run.run_dir / "eval.json").is_file():
        _read_eval(run)
    else:
        run.status = "failed"
        run.error = "training finished without writing eval.json"
    log(f"{tag}: {run.status}" + (f" ({run.error})" if run.error else ""))


def _columns(runs: Sequence[CompareRun]) -> list[str]:
    cols = [c for _, c in METRIC_COLUMNS]
    for run in runs:
        for key in run.metrics:
            if key not in cols:
                cols.append(key)
    return cols


def summarise(runs: Sequence[CompareRun]) -> list[dict[str, Any]]:
    """One row per loss (grid order): ``n_ok``, ``n_failed`` and ``<col>_mean``/``<col>_std``."""
    cols = _columns(runs)
    rows: list[dict[str, Any]] = []
    for loss in dict.fromkeys(r.loss for r in runs):
        mine = [r for r in runs if r.loss == loss]
        ok = [r for r in mine if r.status == "ok"]
        row: dict[str, Any] = {
            "loss": loss,
            "name": display_name(loss),
            "n_ok": len(ok),
            "n_failed": len(mine) - len(ok),
        }
        for col in cols:
            vals = np.array([r.metrics.get(col, math.nan) for r in ok], dtype=float)
            vals = vals[np.isfinite(vals)]
            row[f"{col}_mean"] = float(vals.mean()) if vals.size else math.nan
            row[f"{col}_std"] = float(vals.std(ddof=1)) if vals.size > 1 else math.nan
        rows.append(row)
    return rows


def _fmt(mean: float, std: float) -> str:
    if not math.isfinite(mean):
        return "-"
    return f"{mean:.2f} ± {std:.2f}" if math.isfinite(std) else f"{mean:.2f}"


def write_tables(output: str | Path, runs: Sequence[CompareRun], *, title: str = "") -> str:
    """Write ``runs.csv``, ``results.csv`` and ``results.md`` into ``output``; return the Markdown."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    cols = _columns(runs)
    with (output / "runs.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["loss", "seed", "status", *cols, "run_dir", "error"])
        for r in runs:
            vals = [f"{r.metrics[c]:.4f}" if c in r.metrics else "" for c in cols]
            writer.writerow([r.loss, r.seed, r.status, *vals, str(r.run_dir), r.error])
    rows = summarise(runs)
    with (output / "results.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(
            ["loss", "name", "n_ok", "n_failed"]
            + [f"{c}_{s}" for c in cols for s in ("mean", "std")]
        )
        for row in rows:
            stats = []
            for c in cols:
                for s in ("mean", "std"):
                    v = row[f"{c}_{s}"]
                    stats.append(f"{v:.4f}" if math.isfinite(v) else "")
            writer.writerow([row["loss"], row["name"], row["n_ok"], row["n_failed"], *stats])

    # Best mean per column in bold, as the paper highlights its best results.
    best = {}
    for c in cols:
        means = [row[f"{c}_mean"] for row in rows if math.isfinite(row[f"{c}_mean"])]
        best[c] = max(means) if means else math.nan
    header = ["Loss functions", *cols, "runs"]
    lines = []
    if title:
        lines += [f"### {title}", ""]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["name"]]
        for c in cols:
            cell = _fmt(row[f"{c}_mean"], row[f"{c}_std"])
            if math.isfinite(row[f"{c}_mean"]) and row[f"{c}_mean"] == best[c] and len(rows) > 1:
                cell = f"**{cell}**"
            cells.append(cell)
        runs_cell = f"{row['n_ok']}" + (f" ({row['n_failed']} failed)" if row["n_failed"] else "")
        cells.append(runs_cell)
        lines.append("| " + " | ".join(cells) + " |")
    seeds = sorted({r.seed for r in runs})
    lines += [
        "",
        f"Values in %, mean ± sample std over seeds {seeds} (foreground classes; "
        "mDice/mIoU/mNSD/mPrec./mRec. as in the PM-Dice paper, tables 1-3). Best mean in bold.",
    ]
    failed = [r for r in runs if r.status != "ok"]
    if failed:
        lines += ["", "Failed runs:"]
        lines += [f"- {r.loss} seed {r.seed}: {r.error or r.status}" for r in failed]
    text = "\n".join(lines) + "\n"
    (output / "results.md").write_text(text)
    return text
