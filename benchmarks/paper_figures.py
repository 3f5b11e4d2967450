"""Figures for docs/RESULTS.md from a ``segloss compare`` output folder.

Usage::

    python benchmarks/paper_figures.py bars  COMPARE_DIR OUT.png [--title T]
    python benchmarks/paper_figures.py gamma COMPARE_DIR OUT.png [--title T]

``bars``: mDice, mNSD, mPrec., mRec. per loss (one panel per metric, the best bar in red;
each test image's value averaged over a loss's seeds), with error bars = 95 % confidence
interval of the mean over the test images (each image's value is its mean over the foreground
classes). It says how much the ordering could move with another test set, not with another
training seed.

``gamma``: the PM-Dice paper's fig. 3 on our data: mean Dice, precision and recall against the
focusing parameter gamma, from the runs ``dice`` (gamma = 0), ``pm_dice:gamma=...`` and
``pm_dice`` (gamma = 1, the default).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import re
from pathlib import Path

import numpy as np

from napari_segloss.engine import read_compare
from napari_segloss.engine.compare import display_name
from napari_segloss.plotting import plot_curves

METRICS = (("dice", "mDice"), ("nsd", "mNSD"), ("precision", "mPrec."), ("recall", "mRec."))


@functools.cache
def _per_image_metrics(eval_json: Path) -> list[dict]:
    # every figure reads each metric of each run: parse each eval.json once
    return json.loads(eval_json.read_text())["per_image"]


def per_image(eval_json: Path, metric: str) -> np.ndarray:
    """One value per test image: the mean over its foreground classes (NaN skipped), in %."""
    values = []
    for item in _per_image_metrics(eval_json):
        per_class = {k: v for k, v in item["metrics"].items() if k not in ("0", "background")}
        vals = [float(v.get(metric, math.nan)) for v in per_class.values()]
        vals = [v for v in vals if math.isfinite(v)]
        values.append(np.mean(vals) * 100 if vals else math.nan)
    return np.asarray(values, dtype=float)


def loss_runs(folder: Path) -> dict[str, list[Path]]:
    """Loss spec -> the eval.json of its finished runs, in grid order.

    Read with ``read_compare``, which finds each run inside ``folder``: ``runs.csv``'s
    ``run_dir`` is relative to where `segloss compare` was started, not to the folder.
    """
    try:
        results = read_compare(folder)
    except FileNotFoundError as err:
        raise SystemExit(str(err)) from None
    runs: dict[str, list[Path]] = {}
    for run in results.runs:
        if run.status == "ok":
            runs.setdefault(run.loss, []).append(run.run_dir / "eval.json")
    return runs


def mean_ci(values: np.ndarray) -> tuple[float, float]:
    """Mean and the half-width of its normal 95 % confidence interval (NaN skipped)."""
    v = values[np.isfinite(values)]
    if v.size == 0:
        return math.nan, 0.0
    half = 1.96 * v.std(ddof=1) / math.sqrt(v.size) if v.size > 1 else 0.0
    return float(v.mean()), float(half)


def pooled_ci(paths: list[Path], metric: str) -> tuple[float, float]:
    """:func:`mean_ci` over the test images of the runs in ``paths`` (e.g. one loss's seeds).

    Each image's value is first averaged over the seeds that scored it: the image is the unit
    of the interval, and one image scored by three seeds is one observation, not three (which
    made the interval sqrt(3) times too narrow).
    """
    by_image: dict[str, list[float]] = {}
    for path in paths:
        names = [str(item.get("name")) for item in _per_image_metrics(path)]
        for name, value in zip(names, per_image(path, metric), strict=True):
            if math.isfinite(value):
                by_image.setdefault(name, []).append(value)
    return mean_ci(np.array([np.mean(v) for v in by_image.values()], dtype=float))


def bars(folder: Path, out: Path, title: str) -> None:
    import matplotlib.pyplot as plt

    means: dict[str, dict[str, float]] = {}
    errors: dict[str, dict[str, float]] = {}
    for label, paths in loss_runs(folder).items():
        if ":" in label:  # parameter sweeps go into the gamma figure
            continue
        name = display_name(label)
        means[name], errors[name] = {}, {}
        for metric, column in METRICS:
            means[name][column], errors[name][column] = pooled_ci(paths, metric)
    if not means:
        raise SystemExit(f"{folder}: no runs with eval.json under runs/")
    # one panel per metric, one horizontal bar per loss (in grid order, top to bottom)
    names = list(means)
    fig, axes = plt.subplots(
        1, len(METRICS), figsize=(3.2 * len(METRICS) + 2.2, 0.32 * len(names) + 1.6),
        sharey=True, constrained_layout=True,
    )  # fmt: skip
    ypos = np.arange(len(names))[::-1]
    for ax, (_, column) in zip(axes, METRICS, strict=True):
        vals = [means[n][column] for n in names]
        errs = [errors[n][column] for n in names]
        ax.barh(ypos, vals, xerr=errs, capsize=2, color="tab:blue", alpha=0.8)
        best = int(np.nanargmax(vals))
        ax.barh(ypos[best], vals[best], color="tab:red", alpha=0.8)
        ax.set_title(column)
        ax.set_xlabel("% (95 % CI over test images)")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(ypos, names)
    fig.suptitle(title, fontsize=10)
    fig.savefig(out, dpi=110)


def gamma_sweep(folder: Path, out: Path, title: str) -> None:
    runs = loss_runs(folder)
    points: dict[float, list[Path]] = {}
    for label, paths in runs.items():
        if label == "dice":
            points[0.0] = paths
        elif label == "pm_dice":
            points[1.0] = paths
        else:
            m = re.fullmatch(r"pm_dice:gamma=([0-9.]+)", label)
            if m:
                points[float(m.group(1))] = paths
    if len(points) < 2:
        raise SystemExit(f"{folder}: need dice and pm_dice:gamma=... runs for a gamma sweep")
    gammas = sorted(points)
    curves, lows, highs = {}, {}, {}
    for metric, column in METRICS:
        stats = [pooled_ci(points[g], metric) for g in gammas]
        curves[column] = [s[0] for s in stats]
        lows[column] = [s[0] - s[1] for s in stats]
        highs[column] = [s[0] + s[1] for s in stats]
    fig = plot_curves(
        gammas,
        curves,
        xlabel="focusing parameter gamma (0 = Dice)",
        ylabel="% (mean over test images)",
        title=title,
    )
    ax = fig.axes[0]
    for column in curves:
        ax.fill_between(gammas, lows[column], highs[column], alpha=0.15)
    ax.set_xticks(gammas)
    fig.savefig(out, dpi=110)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("kind", choices=("bars", "gamma"))
    ap.add_argument("folder", type=Path, help="a `segloss compare --output` folder")
    ap.add_argument("out", type=Path, help="PNG to write")
    ap.add_argument("--title", default="")
    args = ap.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    if args.kind == "bars":
        bars(args.folder, args.out, args.title or f"Losses on {args.folder.name}")
    else:
        gamma_sweep(args.folder, args.out, args.title or "PM Dice: effect of gamma")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
