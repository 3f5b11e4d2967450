"""The results of a loss comparison: one folder format, its tables and its overlays.

:func:`~napari_segloss.engine.compare.iter_compare` (``segloss compare``, the napari Compare
Losses panel) writes the folder; :func:`read_compare` reads it back, for the panel, notebooks
and scripts alike. numpy, PyYAML and the numpy-only :mod:`napari_segloss.overlay`: no torch,
no Qt.

Layout of a comparison folder ``OUTPUT``::

    compare.json                the grid: losses (label, name, params), seeds, runs, held-out set
    runs/<loss folder>/seed<k>/ one training run each: config.yaml, metrics.csv, checkpoint.pt,
                                best.pt, eval.json (per-class and per-image metrics on the
                                held-out set), predictions.npz (its predicted labels)
    heldout/<split>-<id>.npz    the held-out images and ground truth, as scored (once per set)
    runs.csv                    one row per run: status (ok / failed / stopped / pending), metrics
    results.csv                 one row per loss: mean and std of each column over its ok runs
    results.md                  the paper-shaped Markdown table (best mean per column in bold)
    .segloss.lock               held while a comparison runs in the folder

The table mirrors tables 1-3 of the PM-Dice paper (Hosseini 2025, section 3.2): one row
per loss, columns ``mDice mIoU mNSD mPrec. mRec.`` (in %: per class the mean over the held-out
images, NaN skipped, then the mean over the foreground classes),
``mHD95`` (pixels, or the voxel spacing's units; lower is better) and, for multi-class data, the
Dice of each foreground class; ``mean ± std`` over seeds (sample std, ``ddof=1``; the paper
reports the mean of 3 runs) and a rank by a chosen metric.

``predictions.npz`` holds ``names`` and ``pred_<i>`` (labels at the resolution the metrics were
taken at, i.e. after ``data.size``); ``heldout/*.npz`` holds ``names``, ``image_<i>`` (as
evaluated: ``(H, W)`` grey or ``(H, W, 3)`` colour, before standardisation) and ``gt_<i>``.
npz keeps exact label values and any image size in one compressed file numpy alone reads, so
overlays need no re-inference and no torch.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ..overlay import error_labels
from .loss_spec import LossSpec, display_name
from .rundir import write_atomic

__all__ = [
    "FORMAT_VERSION",
    "HELDOUT_DIR",
    "MANIFEST",
    "METRICS",
    "METRIC_COLUMNS",
    "BestLoss",
    "CompareResults",
    "CompareRun",
    "ImageView",
    "Metric",
    "OverlayCell",
    "TableRow",
    "compare_run_folder",
    "display_name",
    "heldout_path",
    "metrics_from_eval",
    "read_compare",
    "read_eval",
    "run_status",
    "write_heldout",
    "write_tables",
]

#: The grid's description, written when a comparison starts.
MANIFEST = "compare.json"
#: Folder of the held-out images and ground truth (one ``.npz`` per held-out set).
HELDOUT_DIR = "heldout"
#: version of the manifest's layout (``"version"`` in it)
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Metric:
    """A table metric: ``key`` in eval.json, table ``column``, its direction and unit."""

    key: str
    column: str
    higher_is_better: bool = True
    percent: bool = True


#: The table's metrics in the paper's order, then HD95.
METRICS: tuple[Metric, ...] = (
    Metric("dice", "mDice"),
    Metric("iou", "mIoU"),
    Metric("nsd", "mNSD"),
    Metric("precision", "mPrec."),
    Metric("recall", "mRec."),
    Metric("hd95", "mHD95", higher_is_better=False, percent=False),
)
#: ``(eval.json metric key, table column)`` pairs of :data:`METRICS`.
METRIC_COLUMNS: tuple[tuple[str, str], ...] = tuple((m.key, m.column) for m in METRICS)


def compare_run_folder(output: Path, spec: LossSpec, seed: int) -> Path:
    """The folder of one run of a comparison: ``output/runs/<loss folder>/seed<k>``."""
    return Path(output) / "runs" / spec.folder / f"seed{seed}"


def _higher_is_better(column: str) -> bool:
    return next((m.higher_is_better for m in METRICS if m.column == column), True)


# -- eval.json -------------------------------------------------------------------------------


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


def _class_names(data: Mapping[str, Any], keys: Sequence[str]) -> list[str]:
    names_src = data.get("class_names")
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
    return names


def metrics_from_eval(data: Mapping[str, Any]) -> tuple[dict[str, float], list[str]]:
    """Table columns from an ``eval.json`` payload: means over the foreground classes.

    The per-class mapping (as written by ``metrics.evaluate``: class id -> ``dice, iou,
    precision, recall, nsd, hd95``) may sit at the top level or under ``per_class``/``classes``/
    ``metrics``. Class ``0`` (background) is dropped when other classes are present, as the
    paper averages "the foreground classes" (section 3.2). NaN entries (undefined cases) are
    skipped by the mean. Values in % except ``mHD95`` (pixels or spacing units). Multi-class
    results add one ``Dice <name>`` column per class.
    """
    per_class = _find_per_class(data)
    if per_class is None:
        raise ValueError(
            "eval.json: expected a mapping of class -> {dice, iou, precision, recall, nsd} "
            "(at the top level or under 'per_class'), found none"
        )
    keys = [k for k in per_class if k not in ("0", "background")] or list(per_class)
    names = _class_names(data, keys)
    out: dict[str, float] = {}
    for m in METRICS:
        vals = np.array([_as_float(per_class[k].get(m.key)) for k in keys], dtype=float)
        mean = float(np.nanmean(vals)) if (~np.isnan(vals)).any() else math.nan
        out[m.column] = mean * 100 if m.percent else mean
    if len(keys) > 1:
        for k, name in zip(keys, names, strict=True):
            out[f"Dice {name}"] = _as_float(per_class[k].get("dice")) * 100
    return out, names


def _image_dice(entry: Mapping[str, Any]) -> float:
    """Mean foreground Dice of one eval.json ``per_image`` entry (NaN when undefined)."""
    metrics = entry.get("metrics") or {}
    vals = [
        _as_float(v.get("dice")) for k, v in metrics.items() if str(k) not in ("0", "background")
    ]
    vals = [v for v in vals if not math.isnan(v)]
    return float(np.mean(vals)) if vals else math.nan


# -- runs ------------------------------------------------------------------------------------


@dataclass
class CompareRun:
    """One ``(loss, seed)`` cell of the grid and what came out of it.

    ``status``: ``ok`` (eval.json read into ``metrics``), ``failed`` (``error``), ``stopped``
    (resumable checkpoint, no eval.json) or ``pending`` (not run yet). ``metrics``: table
    column -> value (% except mHD95).
    """

    loss: str
    seed: int
    run_dir: Path
    status: str = "pending"
    error: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    class_names: list[str] = field(default_factory=list)

    @property
    def checkpoint(self) -> Path | None:
        """``best.pt`` (else ``checkpoint.pt``) of the run, None when it has neither."""
        for name in ("best.pt", "checkpoint.pt"):
            if (self.run_dir / name).is_file():
                return self.run_dir / name
        return None


def run_status(run_dir: Path) -> str:
    """``failed`` (FAILED.txt), ``ok`` (eval.json), ``stopped`` (checkpoint.pt only) or
    ``pending``, from the files in ``run_dir``."""
    if (run_dir / "FAILED.txt").is_file():
        return "failed"
    if (run_dir / "eval.json").is_file():
        return "ok"
    if (run_dir / "checkpoint.pt").is_file():
        return "stopped"
    return "pending"


def _config_size(run_dir: Path) -> list[int] | None:
    """``data.size`` of a run's config.yaml (None: unreadable, or images kept at their size)."""
    try:
        size = (yaml.safe_load((run_dir / "config.yaml").read_text()) or {})["data"]["size"]
    except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError):
        return None
    return [int(v) for v in size] if isinstance(size, list) and size else None


def read_eval(run: CompareRun) -> dict[str, Any] | None:
    """Read ``run``'s eval.json into ``run.metrics`` (status ``ok``); an unreadable one makes
    the run ``failed``. Returns the payload (None when unreadable)."""
    path = run.run_dir / "eval.json"
    try:
        data = json.loads(path.read_text())
        run.metrics, run.class_names = metrics_from_eval(data)
        run.status = "ok"
        return data
    except (OSError, ValueError) as exc:
        run.status = "failed"
        run.error = f"unreadable {path}: {exc}"
        return None


# -- held-out set ----------------------------------------------------------------------------


def heldout_path(output: Path | str, split: str, names: Sequence[str]) -> Path:
    """Where the held-out images of a set with these item ``names`` are stored."""
    digest = hashlib.sha1("\n".join(names).encode()).hexdigest()[:10]
    return Path(output) / HELDOUT_DIR / f"{split}-{digest}.npz"


def write_heldout(
    path: Path,
    names: Sequence[str],
    images: Sequence[np.ndarray],
    ground_truth: Sequence[np.ndarray],
) -> None:
    """Write held-out ``images`` and ``ground_truth`` labels (compressed npz, atomically)."""
    arrays: dict[str, np.ndarray] = {"names": np.asarray(list(names), dtype=str)}
    for i, (image, gt) in enumerate(zip(images, ground_truth, strict=True)):
        arrays[f"image_{i}"] = np.asarray(image)
        arrays[f"gt_{i}"] = np.asarray(gt, dtype=np.uint8 if gt.max(initial=0) < 256 else np.uint16)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda fh: np.savez_compressed(fh, **arrays))


@dataclass(frozen=True)
class OverlayCell:
    """One loss's prediction on the picked image (one cell of the napari grid / figure)."""

    loss: str
    display: str
    params: dict[str, Any]
    seed: int
    run_dir: Path
    #: predicted labels and their :func:`~napari_segloss.overlay.error_labels` (0 TN, 1 TP,
    #: 2 FP, 3 FN); None when the run has no predictions (not ok, or made without them)
    prediction: np.ndarray | None
    errors: np.ndarray | None
    #: this image's mean foreground Dice in [0, 1] from eval.json (NaN: undefined or missing)
    dice: float
    #: ``"PM Dice (gamma=2) · Dice 0.812"``: loss, parameters and this image's Dice
    title: str
    #: why ``prediction`` is None ("" when it is there)
    note: str = ""


@dataclass(frozen=True)
class ImageView:
    """A held-out image, its ground truth and every loss's prediction on it."""

    index: int
    name: str
    seed: int
    #: ``"test"`` (a held-out set) or ``"val"`` (the validation split of ``seed``)
    split: str
    n_images: int
    #: as the metrics saw it: ``(H, W)`` grey or ``(H, W, 3)`` colour (after ``data.size``)
    image: np.ndarray
    ground_truth: np.ndarray
    cells: list[OverlayCell]


# -- the table -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TableRow:
    """One loss: ``mean``/``std`` per column over its ok runs, ``rank`` by the chosen metric
    (1 = best, ties share a rank; None without an ok run) and the checkpoint of its best seed
    by that metric."""

    loss: str
    name: str
    params: dict[str, Any]
    n_ok: int
    n_failed: int
    #: runs not finished yet (stopped or pending)
    n_pending: int
    mean: dict[str, float]
    std: dict[str, float]
    rank: int | None
    best_seed: int | None
    checkpoint: Path | None

    def cell(self, column: str) -> str:
        """``"82.00 ± 2.00"`` (``"82.00"`` with one run, ``"-"`` without)."""
        mean, std = self.mean.get(column, math.nan), self.std.get(column, math.nan)
        if math.isnan(mean):
            return "-"
        if math.isinf(mean):  # HD95 of an empty prediction
            return "inf"
        return f"{mean:.2f} ± {std:.2f}" if math.isfinite(std) else f"{mean:.2f}"


@dataclass(frozen=True)
class BestLoss:
    """The best loss by ``metric`` (its mean over seeds) and its best seed's checkpoint."""

    loss: str
    display: str
    metric: str
    mean: float
    std: float
    seed: int
    run_dir: Path
    #: ``best.pt`` of that seed (``checkpoint.pt`` when there is no best.pt): what Predict &
    #: Compare / ``segloss predict`` load
    checkpoint: Path | None


def _stats(values: Sequence[float]) -> tuple[float, float]:
    vals = np.array(values, dtype=float)
    vals = vals[~np.isnan(vals)]  # undefined values are skipped; inf (HD95) is kept: worst
    mean = float(vals.mean()) if vals.size else math.nan
    std = float(vals.std(ddof=1)) if vals.size > 1 and np.isfinite(vals).all() else math.nan
    return mean, std


class CompareResults:
    """The runs of a comparison and everything drawn from them (tables, best loss, overlays).

    Build it with :func:`read_compare`; ``runs`` are in grid order (losses as given, seeds
    inner), ``losses`` the :class:`~.loss_spec.LossSpec` of each row with the parameters used.
    """

    def __init__(
        self,
        output: Path | str,
        runs: Sequence[CompareRun],
        losses: Sequence[LossSpec] | None = None,
        seeds: Sequence[int] | None = None,
        title: str = "",
        heldout: Mapping[str, str] | None = None,
    ) -> None:
        self.output = Path(output)
        #: what the runs were scored on: ``{"split": "test" | "val", "source": description}``
        #: (empty for folders written before compare.json existed)
        self.heldout = dict(heldout or {})
        self.runs = list(runs)
        labels = list(dict.fromkeys(r.loss for r in self.runs))
        given = {spec.label: spec for spec in losses or ()}
        self.losses = [given.get(label) or LossSpec.from_any(label) for label in labels]
        self.seeds = list(seeds) if seeds is not None else list(dict.fromkeys(r.seed for r in runs))
        self.title = title
        self._evals: dict[Path, dict[str, Any] | None] = {}

    # -- table
    @property
    def columns(self) -> list[str]:
        """Table columns: :data:`METRICS` then per-class Dice columns present in the runs."""
        cols = [m.column for m in METRICS]
        for run in self.runs:
            cols += [key for key in run.metrics if key not in cols]
        return cols

    def metric_column(self, metric: str) -> str:
        """The column a metric name means: ``"mDice"``, ``"dice"``, ``"Dice"``, ``"hd95"``,
        ``"Dice RV"``... Raises ``ValueError`` listing the columns."""
        cols = self.columns
        wanted = metric.strip().lower().rstrip(".")
        for m in METRICS:
            if wanted in (m.key, m.column.lower().rstrip("."), m.column.lower()[1:].rstrip(".")):
                return m.column
        for col in cols:
            if col.lower() == wanted:
                return col
        raise ValueError(f"metric: expected one of {', '.join(cols)}, got {metric!r}")

    def table(
        self, rank_by: str = "mDice", *, sort_by: str | None = None, descending: bool | None = None
    ) -> list[TableRow]:
        """One :class:`TableRow` per loss, ranked by ``rank_by``; grid order unless
        ``sort_by`` (a column, ``"rank"``, ``"loss"`` or ``"name"``) is given, best first by
        default (``descending`` overrides)."""
        rank_col = self.metric_column(rank_by)
        cols = self.columns
        rows = []
        for spec in self.losses:
            mine = [r for r in self.runs if r.loss == spec.label]
            ok = [r for r in mine if r.status == "ok"]
            stats = {c: _stats([r.metrics.get(c, math.nan) for r in ok]) for c in cols}
            best_run = self._best_run(ok, rank_col)
            rows.append(
                TableRow(
                    loss=spec.label,
                    name=spec.display,
                    params=dict(spec.params),
                    n_ok=len(ok),
                    n_failed=sum(r.status == "failed" for r in mine),
                    n_pending=sum(r.status in ("stopped", "pending") for r in mine),
                    mean={c: s[0] for c, s in stats.items()},
                    std={c: s[1] for c, s in stats.items()},
                    rank=None,
                    best_seed=best_run.seed if best_run else None,
                    checkpoint=best_run.checkpoint if best_run else None,
                )
            )
        rows = self._ranked(rows, rank_col)
        if sort_by is not None:
            rows = self._sorted(rows, sort_by, descending)
        return rows

    @staticmethod
    def _best_run(ok: Sequence[CompareRun], column: str) -> CompareRun | None:
        scored = [r for r in ok if not math.isnan(r.metrics.get(column, math.nan))]
        if not scored:
            return ok[0] if ok else None
        sign = 1 if _higher_is_better(column) else -1
        return max(scored, key=lambda r: sign * r.metrics[column])

    @staticmethod
    def _ranked(rows: list[TableRow], column: str) -> list[TableRow]:
        sign = 1 if _higher_is_better(column) else -1
        scores = [sign * r.mean.get(column, math.nan) for r in rows]
        out = []
        for row, score in zip(rows, scores, strict=True):
            rank = None
            if not math.isnan(score):
                rank = 1 + sum(1 for s in scores if not math.isnan(s) and s > score)
            out.append(dataclasses.replace(row, rank=rank))
        return out

    def _sorted(self, rows: list[TableRow], key: str, descending: bool | None) -> list[TableRow]:
        if key in ("loss", "name"):
            return sorted(rows, key=lambda r: getattr(r, key), reverse=bool(descending))
        if key == "rank":
            ranked = sorted((r for r in rows if r.rank is not None), key=lambda r: r.rank)
            ranked = ranked[::-1] if descending else ranked
            return ranked + [r for r in rows if r.rank is None]
        column = self.metric_column(key)
        best_first = _higher_is_better(column) if descending is None else descending
        finite = [r for r in rows if not math.isnan(r.mean.get(column, math.nan))]
        finite.sort(key=lambda r: r.mean[column], reverse=best_first)
        return finite + [r for r in rows if r not in finite]

    def best(self, metric: str = "mDice") -> BestLoss | None:
        """The loss ranked first by ``metric`` (first in grid order on ties), None without an
        ok run."""
        column = self.metric_column(metric)
        rows = [r for r in self.table(column) if r.rank == 1]
        if not rows:
            return None
        row = rows[0]
        run = next(r for r in self.runs if r.loss == row.loss and r.seed == row.best_seed)
        return BestLoss(
            loss=row.loss,
            display=row.name,
            metric=column,
            mean=row.mean[column],
            std=row.std[column],
            seed=run.seed,
            run_dir=run.run_dir,
            checkpoint=run.checkpoint,
        )

    # -- exports
    def to_csv(self, path: Path | str | None = None, rank_by: str = "mDice") -> str:
        """``results.csv``: one row per loss, ``<column>_mean``/``_std``, ``rank``."""
        cols = self.columns
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(
            ["loss", "name", "n_ok", "n_failed"]
            + [f"{c}_{s}" for c in cols for s in ("mean", "std")]
            + ["rank", "n_pending"]
        )
        for row in self.table(rank_by):
            stats = []
            for c in cols:
                for v in (row.mean[c], row.std[c]):
                    stats.append("" if math.isnan(v) else f"{v:.4f}")
            rank = "" if row.rank is None else row.rank
            writer.writerow(
                [row.loss, row.name, row.n_ok, row.n_failed, *stats, rank, row.n_pending]
            )
        return _written(path, buf.getvalue())

    def runs_csv(self, path: Path | str | None = None) -> str:
        """``runs.csv``: one row per run with its status and metrics."""
        cols = self.columns
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["loss", "seed", "status", *cols, "run_dir", "error"])
        for r in self.runs:
            vals = [f"{r.metrics[c]:.4f}" if c in r.metrics else "" for c in cols]
            writer.writerow([r.loss, r.seed, r.status, *vals, str(r.run_dir), r.error])
        return _written(path, buf.getvalue())

    def to_markdown(
        self,
        path: Path | str | None = None,
        rank_by: str = "mDice",
        *,
        sort: bool = False,
        title: str | None = None,
    ) -> str:
        """The paper-shaped table (``results.md``): best mean per column in bold (lowest for
        mHD95), a rank column; grid order, or by rank with ``sort=True``."""
        rank_col = self.metric_column(rank_by)
        rows = self.table(rank_col, sort_by="rank" if sort else None)
        cols = self.columns
        best = {}
        for c in cols:
            means = [r.mean[c] for r in rows if not math.isnan(r.mean[c])]
            pick = max if _higher_is_better(c) else min
            best[c] = pick(means) if means else math.nan
        title = self.title if title is None else title
        header = ["Loss functions", *cols, f"Rank ({rank_col})", "runs"]
        lines = [f"### {title}", ""] if title else []
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in rows:
            cells = [row.name]
            for c in cols:
                cell = row.cell(c)
                if row.mean[c] == best[c] and math.isfinite(best[c]) and len(rows) > 1:
                    cell = f"**{cell}**"
                cells.append(cell)
            cells.append("-" if row.rank is None else str(row.rank))
            notes = [f"{row.n_failed} failed"] if row.n_failed else []
            notes += [f"{row.n_pending} not finished"] if row.n_pending else []
            cells.append(f"{row.n_ok}" + (f" ({', '.join(notes)})" if notes else ""))
            lines.append("| " + " | ".join(cells) + " |")
        seeds = sorted({r.seed for r in self.runs})
        lines += [
            "",
            f"Values in %, mean ± sample std over seeds {seeds} (no ± with one finished run). "
            "A run's value: each metric per held-out image and foreground class, its mean over "
            "the images per class (NaN, a class absent from both masks, skipped), then over the "
            "classes (mDice/mIoU/mNSD/mPrec./mRec. as in the PM-Dice paper, tables 1-3). mHD95 "
            "in pixels (voxel spacing units for volumes), lower is better; inf when an image "
            f"has one of its masks empty. Best mean in bold; rank by {rank_col}.",
        ]
        failed = [r for r in self.runs if r.status == "failed"]
        if failed:
            lines += ["", "Failed runs:"]
            lines += [f"- {r.loss} seed {r.seed}: {r.error or r.status}" for r in failed]
        waiting = [r for r in self.runs if r.status in ("stopped", "pending")]
        if waiting:
            lines += ["", "Not finished (run the comparison again into this folder to go on):"]
            lines += [f"- {r.loss} seed {r.seed}: {r.status}" for r in waiting]
        return _written(path, "\n".join(lines) + "\n")

    def write(self, rank_by: str = "mDice") -> str:
        """Write ``runs.csv``, ``results.csv`` and ``results.md``; return the Markdown."""
        self.output.mkdir(parents=True, exist_ok=True)
        self.runs_csv(self.output / "runs.csv")
        self.to_csv(self.output / "results.csv", rank_by)
        return self.to_markdown(self.output / "results.md", rank_by)

    def evidence(self) -> str:
        """What each number of the table rests on, in words: the images a run was scored on
        (from its eval.json), the size they were scored at (``data.size`` of its
        config.yaml: distances are in its pixels) and the seeds; a warning when one image
        or one seed cannot tell losses apart. Empty without a finished run."""
        done = [r for r in self.runs if r.status == "ok"]
        data = self._eval(done[0]) if done else None
        if data is None:
            return ""
        n, split = int(data.get("num_images") or 0), str(data.get("split") or "val")
        split = {"val": "validation"}.get(split, split)
        text = f"each run scored on {n} {split} image{'' if n == 1 else 's'}"
        size = _config_size(done[0].run_dir)
        units = str(data.get("distance_units") or "pixels")
        if size is not None:
            text += f" resized to data.size {size} (HD95 in {units} of that size)"
        seeds = len({r.seed for r in done})
        text += f", {seeds} seed{'' if seeds == 1 else 's'}"
        if n < 5 or seeds < 2:
            text += ": too little to rank losses (add images or seeds)"
        return text

    # -- overlays
    def _eval(self, run: CompareRun) -> dict[str, Any] | None:
        if run.run_dir not in self._evals:
            try:
                self._evals[run.run_dir] = json.loads((run.run_dir / "eval.json").read_text())
            except (OSError, ValueError):
                self._evals[run.run_dir] = None
        return self._evals[run.run_dir]

    def _heldout(self, seed: int | None) -> tuple[int, str, list[str], Path]:
        """``(seed, split, names, heldout npz)`` of the images the runs of ``seed`` were
        scored on (default: the first seed with an ok run)."""
        seeds = self.seeds if seed is None else [seed]
        for s in seeds:
            for run in self.runs:
                data = self._eval(run) if run.seed == s and run.status == "ok" else None
                if data and data.get("per_image"):
                    names = [str(e.get("name")) for e in data["per_image"]]
                    split = str(data.get("split", "val"))
                    return s, split, names, heldout_path(self.output, split, names)
        where = f"seed {seed}" if seed is not None else "any seed"
        raise ValueError(f"{self.output}: no finished run with per-image results for {where}")

    def image_names(self, seed: int | None = None) -> list[str]:
        """Names of the held-out images (eval.json ``per_image`` order) of ``seed``'s runs."""
        return self._heldout(seed)[2]

    def view(self, index: int, seed: int | None = None) -> ImageView:
        """Held-out image ``index``, its ground truth and each loss's prediction and error
        labels (seed ``seed``, default the first seed with finished runs): what the napari
        grid and notebook 04 draw."""
        seed, split, names, path = self._heldout(seed)
        if not -len(names) <= index < len(names):
            raise IndexError(f"image index {index} out of range for {len(names)} held-out images")
        index %= len(names)
        if not path.is_file():
            raise FileNotFoundError(f"held-out images not found: {path}")
        with np.load(path) as npz:
            if [str(n) for n in npz["names"]] != names:
                raise ValueError(f"{path}: its image names differ from the runs' eval.json")
            image, gt = npz[f"image_{index}"], npz[f"gt_{index}"]
        cells = [self._cell(spec, seed, index, names, gt) for spec in self.losses]
        return ImageView(index, names[index], seed, split, len(names), image, gt, cells)

    def _cell(
        self, spec: LossSpec, seed: int, index: int, names: list[str], gt: np.ndarray
    ) -> OverlayCell:
        run = next((r for r in self.runs if r.loss == spec.label and r.seed == seed), None)
        run_dir = run.run_dir if run else compare_run_folder(self.output, spec, seed)
        pred = errors = None
        dice, note = math.nan, ""
        data = self._eval(run) if run is not None and run.status == "ok" else None
        if data is None:
            note = f"run {run.status if run else 'missing'}"
        else:
            entries = data.get("per_image") or []
            if index < len(entries) and str(entries[index].get("name")) == names[index]:
                dice = _image_dice(entries[index])
            pred_path = run_dir / "predictions.npz"
            if pred_path.is_file():
                with np.load(pred_path) as npz:
                    if index < len(npz["names"]) and str(npz["names"][index]) == names[index]:
                        pred = npz[f"pred_{index}"]
            note = "" if pred is not None else "no predictions.npz for this image"
        if pred is not None:
            errors = error_labels(pred, gt)
        # in % as the results table; "loss" keeps "Dice loss · Dice 59.7 %" unambiguous
        shown = "-" if math.isnan(dice) else f"{100 * dice:.1f} %"
        return OverlayCell(
            loss=spec.label,
            display=spec.display,
            params=dict(spec.params),
            seed=seed,
            run_dir=run_dir,
            prediction=pred,
            errors=errors,
            dice=dice,
            title=f"{spec.title} loss · Dice {shown}",
            note=note,
        )


def _written(path: Path | str | None, text: str) -> str:
    if path is not None:
        Path(path).write_text(text, encoding="utf-8")
    return text


# -- reading a folder ----------------------------------------------------------------------------


def _errors_from_runs_csv(output: Path) -> dict[tuple[str, int], str]:
    path = output / "runs.csv"
    if not path.is_file():
        return {}
    with path.open(newline="", encoding="utf-8") as fh:
        return {
            (row["loss"], int(row["seed"])): row.get("error") or ""
            for row in csv.DictReader(fh)
            if row.get("seed", "").lstrip("-").isdigit()
        }


def _failure(run_dir: Path) -> str:
    try:
        lines = [ln for ln in (run_dir / "FAILED.txt").read_text().splitlines() if ln.strip()]
    except OSError:
        return "failed"
    return lines[-1].strip()[:500] if lines else "failed"


def read_compare(output: Path | str) -> CompareResults:
    """Read a comparison folder (see the module docstring), finished or not.

    The grid comes from ``compare.json`` (or, for folders written before it existed,
    ``runs.csv``); each run's state from its files (:func:`run_status`), its metrics from its
    eval.json. Raises ``FileNotFoundError`` when ``output`` is not a comparison folder.
    """
    output = Path(output)
    manifest = output / MANIFEST
    errors = _errors_from_runs_csv(output)
    if manifest.is_file():
        data = json.loads(manifest.read_text(encoding="utf-8"))
        losses = [
            LossSpec(d["name"], d.get("params") or {}, d.get("label", "")) for d in data["losses"]
        ]
        seeds = [int(s) for s in data["seeds"]]
        title = str(data.get("title") or "")
        heldout = data.get("heldout") if isinstance(data.get("heldout"), Mapping) else {}
    elif errors:
        labels = list(dict.fromkeys(loss for loss, _ in errors))
        losses = [LossSpec.from_any(label) for label in labels]
        seeds = list(dict.fromkeys(seed for _, seed in errors))
        title, heldout = "", {}
    else:
        raise FileNotFoundError(
            f"{str(output)!r} is not a loss comparison folder (no {MANIFEST} or runs.csv); "
            "run `segloss compare ... --output` (or the Compare Losses panel) into it first"
        )
    runs = []
    for spec in losses:
        for seed in seeds:
            if not manifest.is_file() and (spec.label, seed) not in errors:
                continue
            run = CompareRun(spec.label, seed, compare_run_folder(output, spec, seed))
            run.status = run_status(run.run_dir)
            if run.status == "ok":
                read_eval(run)
            elif run.status == "failed":
                run.error = errors.get((spec.label, seed)) or _failure(run.run_dir)
            runs.append(run)
    return CompareResults(output, runs, losses, seeds, title, heldout)


# -- writing a results folder from runs alone ------------------------------------------------


def write_tables(output: str | Path, runs: Sequence[CompareRun], *, title: str = "") -> str:
    """Write ``runs.csv``, ``results.csv`` and ``results.md`` into ``output``; return the Markdown."""
    return CompareResults(output, runs, title=title).write()
