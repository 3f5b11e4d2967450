"""Figures for docs/RESULTS.md from a ``segloss compare`` output folder.

Usage::

    python benchmarks/paper_figures.py bars  COMPARE_DIR OUT.png [--title T]
    python benchmarks/paper_figures.py gamma COMPARE_DIR OUT.png [--title T]

``bars``: mDice, mNSD, mPrec., mRec. per loss (one panel per metric, the best bar in red),
the values of results.md (means over seeds), with error bars = 95 % confidence interval over
the test images (:func:`table_ci`). It says how much the ordering could move with another test
set, not with another training seed.

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


def per_image(eval_json: Path, metric: str) -> dict[str, dict[str, float]]:
    """Image name -> foreground class -> ``metric`` in %, finite values only (NaN: undefined)."""
    out: dict[str, dict[str, float]] = {}
    for item in _per_image_metrics(eval_json):
        values = {
            str(c): float(v.get(metric, math.nan)) * 100
            for c, v in item["metrics"].items()
            if c not in ("0", "background")
        }
        out[str(item["name"])] = {c: v for c, v in values.items() if math.isfinite(v)}
    return out


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


def table_ci(paths: list[Path], metric: str) -> tuple[float, float]:
    """The results table's value of ``metric`` over the runs in ``paths`` (one loss's seeds) and
    the half-width of its normal 95 % confidence interval over the test images.

    The value is the table's (results.md): per run, the mean over the foreground classes of each
    class's mean over the images (NaN skipped), then the mean over the runs; a mean over images
    of per-image class means differs as soon as a class is absent from some images. The test
    image is the unit of the interval (an image scored by several seeds is one observation):
    delta-method standard error ``sqrt(N / (N - 1) * sum_i z_i ** 2)``, ``z_i`` being image
    ``i``'s share of the value's deviation; with one class and no NaN it is ``s / sqrt(N)``.
    """
    runs = []  # per run: class -> image name -> value
    for path in paths:
        classes: dict[str, dict[str, float]] = {}
        for name, values in per_image(path, metric).items():
            for c, v in values.items():
                classes.setdefault(c, {})[name] = v
        if classes:
            runs.append(classes)
    if not runs:
        return math.nan, 0.0
    value, share = 0.0, {}
    for classes in runs:
        means = {c: float(np.mean(list(v.values()))) for c, v in classes.items()}
        value += float(np.mean(list(means.values()))) / len(runs)
        for c, values in classes.items():
            weight = 1.0 / (len(runs) * len(classes) * len(values))
            for name, v in values.items():
                share[name] = share.get(name, 0.0) + weight * (v - means[c])
    n = len(share)
    variance = n / (n - 1) * sum(z * z for z in share.values()) if n > 1 else 0.0
    return value, 1.96 * math.sqrt(variance)


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
            means[name][column], errors[name][column] = table_ci(paths, metric)
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
        stats = [table_ci(points[g], metric) for g in gammas]
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
