"""The panels' error type, class names and checkpoint names, plain Python: the modules that
run in thread workers (:mod:`._explorer_jobs`, :mod:`._explorer_layers`, :mod:`._compare_setup`)
take them from here rather than from :mod:`._common`, the module of Qt widgets."""

from __future__ import annotations

import contextlib
import csv
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "PanelError",
    "checkpoint_labels",
    "class_label",
    "class_name",
    "class_title",
    "layer_class_names",
    "run_name",
]

#: the files a training run writes its weights to (engine/rundir.py): the run folder names them
RUN_CHECKPOINTS = ("best.pt", "checkpoint.pt")
#: a compare run's folder (runs/<loss>/seed<k>): the loss folder above it says which run it is
_SEED_FOLDER = re.compile(r"seed\d+")


class PanelError(ValueError):
    """A bad selection or input in a panel; shown to the user as a message, not a traceback."""


def layer_class_names(layer: Any) -> tuple[str, ...] | None:
    """The class names a Labels layer carries (``metadata["class_names"]``, by label value,
    background first; set by the samples, a prediction, or you), or None."""
    names = getattr(layer, "metadata", {}).get("class_names") if layer is not None else None
    if isinstance(names, list | tuple) and names and all(isinstance(n, str) for n in names):
        return tuple(names)
    return None


def class_name(c: int, names: Sequence[str] | None) -> str | None:
    """Class ``c``'s name from ``class_names`` (a checkpoint's or a layer's; None without)."""
    return names[c] if names and 0 <= c < len(names) else None


def class_title(c: int, names: Sequence[str] | None) -> str:
    """A class as titles name it: ``"MYO"`` with names, else ``"class 2"``."""
    return class_name(c, names) or f"class {c}"


def class_label(c: int, names: Sequence[str] | None) -> str:
    """A class as the tables head it: ``"2 MYO"`` with names, else ``"class 2"``."""
    name = class_name(c, names)
    return f"{c} {name}" if name else f"class {c}"


def run_name(path: str | Path, depth: int | None = None) -> str:
    """A checkpoint as a layer name or a list entry names it, short: its run folder for an
    engine run's ``best.pt`` (``"kvasir_dice"``; ``"dice/seed0"`` for a compare run, whose
    seed folders repeat across losses), with ``" last"`` for its resumable ``checkpoint.pt``;
    the file's stem for any other file. ``depth``: how many folders to name (default: one, two
    for a seed folder)."""
    p = Path(path)
    if p.name not in RUN_CHECKPOINTS:
        return p.stem if depth is None else "/".join([*p.parent.parts[-depth + 1 :], p.stem])
    if depth is None:
        depth = 2 if _SEED_FOLDER.fullmatch(p.parent.name) else 1
    run = "/".join(p.parent.parts[-depth:]) or p.stem
    return run if p.name == "best.pt" else f"{run} last"


def _best_row(path: Path) -> dict[str, str] | None:
    """The row of the run's ``metrics.csv`` whose weights ``path`` holds: the best validation
    Dice for ``best.pt`` (the last row without validation), the last row for any other."""
    rows: list[dict[str, str]] = []
    with contextlib.suppress(OSError, csv.Error, UnicodeDecodeError):
        with open(path.parent / "metrics.csv", newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    if not rows:
        return None
    if path.name != "best.pt":
        return rows[-1]

    def dice(row: dict[str, str]) -> float:
        with contextlib.suppress(TypeError, ValueError):
            v = float(row.get("val_dice") or "nan")
            return v if math.isfinite(v) else -math.inf
        return -math.inf

    best = max(rows, key=dice)  # the first of equal values: the epoch that wrote best.pt
    return best if dice(best) > -math.inf else rows[-1]


def _summary(path: Path) -> str:
    """``"epoch 12, val dice 0.843"`` from the run's ``metrics.csv``; empty without one."""
    row = _best_row(path) if path.name in RUN_CHECKPOINTS else None
    if row is None:
        return ""
    words = [f"epoch {row['epoch']}"] if row.get("epoch") else []
    with contextlib.suppress(TypeError, ValueError):
        words.append(f"val dice {float(row.get('val_dice') or 'nan'):.3f}")
    return ", ".join(w for w in words if not w.endswith("nan"))


def checkpoint_labels(paths: Sequence[str | Path]) -> list[str]:
    """One list entry per checkpoint, distinct: :func:`run_name` (with as many folders as
    tell the paths apart), then the epoch and validation Dice of its weights when the run's
    ``metrics.csv`` has them: ``"dice/seed0 (epoch 12, val dice 0.843)"``. Several runs save a
    ``best.pt``: their file names alone were the same entry again and again."""
    ps = [Path(p) for p in paths]
    names = [run_name(p) for p in ps]
    deepest = max((len(p.parts) for p in ps), default=0)
    for depth in range(1, deepest + 1):
        if len(set(names)) == len(names):
            break
        clash = {n for n in names if names.count(n) > 1}
        deeper = max(depth + 1, 2)
        names = [run_name(p, deeper) if n in clash else n for p, n in zip(ps, names, strict=True)]
    out = []
    for p, name in zip(ps, names, strict=True):
        summary = _summary(p)
        out.append(f"{name} ({summary})" if summary else name)
    return out
