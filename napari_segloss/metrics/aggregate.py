"""Aggregate per-image metric dicts into one table (used by the CLI and the napari panels).

Rows are plain dicts (no pandas needed; ``pandas.DataFrame(rows)`` works when wanted)::

    {"class": 1, "name": "RV", "metric": "dice", "mean": 0.91, "std": 0.04, "median": 0.92,
     "count": 38, "nan_count": 2, "inf_count": 0}

- NaN values (undefined, 0/0: a class absent from both prediction and reference, the precision
  of an empty prediction, the recall of an empty reference) are skipped and counted in
  ``nan_count``; ``count`` is the number of values used.
- ``inf`` (HD95 when exactly one mask is empty) is kept: it is a real failure, so ``mean`` becomes
  ``inf`` and ``inf_count`` says how many; ``median`` stays informative.
- ``std`` is the population standard deviation (ddof=0), defined for a single value.
- With more than one foreground class a ``"class": "mean"`` row per metric gives the macro
  average: the mean over the foreground classes of the per-class means (how the PM-Dice tables
  report mDice, mIoU, mNSD, ..., sec. 3.2: class 0, the background, is listed when evaluated
  but never averaged in, as in the Compare table); its ``std`` is the spread of those class
  means (not a spread over images) and its ``count`` the number of classes that had a value.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["AGGREGATE_COLUMNS", "aggregate", "to_csv", "to_markdown"]

AGGREGATE_COLUMNS: tuple[str, ...] = (
    "class",
    "name",
    "metric",
    "mean",
    "std",
    "median",
    "count",
    "nan_count",
    "inf_count",
)


def _class_name(c: int, class_names: Mapping[int, str] | Sequence[str] | None) -> str:
    if class_names is None:
        return str(c)
    if isinstance(class_names, Mapping):
        return str(class_names.get(c, c))
    return str(class_names[c]) if 0 <= c < len(class_names) else str(c)


def _stats(values: list[float]) -> dict[str, Any]:
    arr = np.asarray(values, dtype=np.float64)
    nan = np.isnan(arr)
    used = arr[~nan]
    n_inf = int(np.isinf(used).sum())
    if used.size == 0:
        mean = std = median = math.nan
    elif n_inf:
        mean = float(used.mean())  # +inf (HD95 values are never -inf)
        std = math.inf
        median = float(np.median(used))
    else:
        mean, std, median = float(used.mean()), float(used.std()), float(np.median(used))
    return {
        "mean": mean,
        "std": std,
        "median": median,
        "count": int(used.size),
        "nan_count": int(nan.sum()),
        "inf_count": n_inf,
    }


def aggregate(
    results: Iterable[Mapping[int, Mapping[str, float]]],
    *,
    class_names: Mapping[int, str] | Sequence[str] | None = None,
    include_mean: bool = True,
) -> list[dict[str, Any]]:
    """Aggregate per-image results of :func:`evaluate` into table rows (see module docstring).

    Args:
        results: one ``{class: {metric: value}}`` dict per image.
        class_names: names by class index (sequence or mapping) for the ``name`` column.
        include_mean: add the macro-average ``"class": "mean"`` rows when there are >= 2
            foreground classes (classes other than 0).

    Returns:
        Rows ordered by class then metric (metrics in first-seen order), then the mean rows.
    """
    values: dict[int, dict[str, list[float]]] = {}
    metric_order: list[str] = []
    n_images = 0
    for i, res in enumerate(results):
        if not isinstance(res, Mapping):
            raise ValueError(
                f"results[{i}]: expected a {{class: {{metric: value}}}} dict from evaluate, "
                f"got {type(res).__name__}"
            )
        n_images += 1
        for c, metrics in res.items():
            per_class = values.setdefault(int(c), {})
            for name, v in metrics.items():
                if name not in metric_order:
                    metric_order.append(name)
                per_class.setdefault(name, []).append(float(v))
    rows: list[dict[str, Any]] = []
    for c in sorted(values):
        for name in metric_order:
            if name in values[c]:
                rows.append(
                    {"class": c, "name": _class_name(c, class_names), "metric": name}
                    | _stats(values[c][name])
                )
    foreground = [c for c in values if c != 0]
    if include_mean and len(foreground) >= 2:
        for name in metric_order:
            class_means = [r["mean"] for r in rows if r["metric"] == name and r["class"] != 0]
            rows.append({"class": "mean", "name": "mean", "metric": name} | _stats(class_means))
    return rows


def _fmt(v: Any, digits: int) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return f"{v:.{digits}f}"
    return str(v)


def to_markdown(rows: Sequence[Mapping[str, Any]], digits: int = 4) -> str:
    """A wide Markdown table: one line per class, one ``mean ± std`` column per metric.

    Skipped (NaN) and infinite values are noted in the cell, e.g. ``0.8123 ± 0.0400 (2 NaN)``.
    """
    if not rows:
        return "| class |\n|---|\n"
    metrics: list[str] = []
    classes: list[tuple[Any, str]] = []
    cells: dict[tuple[Any, str], str] = {}
    for r in rows:
        key = (r["class"], str(r["name"]))
        if key not in classes:
            classes.append(key)
        if r["metric"] not in metrics:
            metrics.append(r["metric"])
        text = f"{_fmt(r['mean'], digits)} ± {_fmt(r['std'], digits)}"
        notes = [
            f"{r[k]} {label}"
            for k, label in (("nan_count", "NaN"), ("inf_count", "inf"))
            if r.get(k)
        ]
        if notes:
            text += f" ({', '.join(notes)})"
        cells[(key, r["metric"])] = text
    lines = [
        "| class | " + " | ".join(metrics) + " |",
        "|---|" + "---|" * len(metrics),
    ]
    for key in classes:
        label = key[1] if str(key[0]) == key[1] else f"{key[0]} {key[1]}"
        lines.append(f"| {label} | " + " | ".join(cells.get((key, m), "") for m in metrics) + " |")
    return "\n".join(lines) + "\n"


def to_csv(rows: Sequence[Mapping[str, Any]], path: str | Path | None = None) -> str:
    """Write the rows as CSV (columns :data:`AGGREGATE_COLUMNS`); returns the text, writes ``path`` if given."""
    buf = io.StringIO()
    writer = csv.DictWriter(
        buf, fieldnames=list(AGGREGATE_COLUMNS), extrasaction="ignore", lineterminator="\n"
    )
    writer.writeheader()
    for r in rows:
        writer.writerow({k: r.get(k, "") for k in AGGREGATE_COLUMNS})
    text = buf.getvalue()
    if path is not None:
        Path(path).write_text(text, encoding="utf-8")
    return text
