"""Put a ``segloss compare`` result next to the PM-Dice paper's table (Hosseini 2025).

Usage::

    python benchmarks/paper_tables.py kvasir /path/to/compare_output   # table 1
    python benchmarks/paper_tables.py acdc /path/to/compare_output     # table 2

Reads ``results.csv`` written by ``segloss compare`` and prints Markdown: for every loss of the
run, our value and the paper's per metric, the rank of each loss by mDice in both, and the
Spearman rank correlation over the losses present in both. The paper's numbers below are copied
from its tables 1 and 2 (percent, mean over the test set); they are the reference, not results.
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

METRICS = ("mDice", "mIoU", "mNSD", "mPrec.", "mRec.")

# loss label (as given to `segloss compare --losses`) -> paper values, in METRICS order
# (+ RV, MYO, LV Dice for ACDC). "Focal Dice [40]" (Prencipe et al. 2022, an improved version
# of Wang & Chung [39]) is compared with `focal_dice`, the [39] form; "[41]" is Zhao et al.
PAPER: dict[str, dict[str, tuple[float, ...]]] = {
    "kvasir": {
        "ce": (89.56, 83.76, 51.13, 92.68, 90.30),
        "dice": (88.76, 82.79, 50.84, 91.09, 90.33),
        "log_dice": (88.89, 82.86, 49.49, 90.97, 90.75),
        "focal_dice": (88.19, 81.46, 46.27, 88.78, 91.24),
        "focal_dice_zhao": (89.12, 83.40, 51.22, 91.17, 90.74),
        "ce+dice": (89.94, 84.20, 52.34, 92.58, 90.67),
        "focal+dice": (89.85, 84.29, 52.15, 92.20, 91.11),
        "topk_ce+dice": (90.11, 84.47, 52.56, 92.23, 91.17),
        "topk_dice": (89.94, 84.11, 52.76, 91.62, 91.42),
        "ce+topk_dice": (89.62, 83.99, 52.80, 91.71, 91.24),
        "topk_ce+topk_dice": (89.39, 83.53, 52.75, 91.17, 90.97),
        "pm_dice": (90.61, 85.37, 54.90, 92.61, 91.57),
        "ce+pm_dice": (90.45, 85.20, 54.21, 92.64, 91.40),
        "focal+pm_dice": (90.58, 85.26, 54.14, 92.25, 91.68),
    },
    "acdc": {
        "ce": (91.60, 84.88, 87.05, 92.36, 91.19, 90.61, 88.90, 95.29),
        "dice": (90.02, 82.73, 86.02, 88.72, 92.35, 86.06, 89.20, 94.80),
        "log_dice": (89.60, 82.12, 85.23, 88.21, 92.11, 85.28, 88.92, 94.61),
        "focal_dice": (88.72, 80.81, 83.38, 87.26, 91.47, 83.54, 88.28, 94.34),
        "focal_dice_zhao": (90.34, 83.21, 86.41, 88.83, 92.87, 86.32, 89.53, 95.16),
        "ce+dice": (91.41, 84.63, 86.99, 91.62, 91.65, 90.10, 89.26, 94.87),
        "focal+dice": (91.61, 84.93, 87.05, 91.78, 91.85, 90.30, 89.22, 95.30),
        "topk_ce+dice": (91.75, 85.12, 87.34, 92.16, 91.70, 90.54, 89.30, 95.40),
        "topk_dice": (90.34, 83.22, 86.38, 88.77, 92.98, 86.30, 89.69, 95.04),
        "ce+topk_dice": (91.75, 85.15, 87.38, 91.49, 92.42, 90.49, 89.40, 95.35),
        "topk_ce+topk_dice": (91.84, 85.26, 87.53, 91.78, 92.26, 90.69, 89.45, 95.37),
        "pm_dice": (91.88, 85.35, 87.92, 92.34, 91.82, 90.54, 89.43, 95.67),
        "ce+pm_dice": (91.68, 85.03, 87.61, 92.48, 91.31, 90.35, 89.11, 95.57),
        "focal+pm_dice": (91.84, 85.28, 87.81, 92.48, 91.61, 90.58, 89.34, 95.60),
    },
}
CLASS_COLUMNS = {"kvasir": (), "acdc": ("Dice RV", "Dice MYO", "Dice LV")}


def read_results(folder: Path) -> list[dict[str, str]]:
    path = folder / "results.csv"
    if not path.is_file():
        raise SystemExit(f"{path}: not found (run `segloss compare ... --output {folder}` first)")
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def ranks(values: dict[str, float]) -> dict[str, int]:
    """1 = best (highest); ties share the better rank."""
    ordered = sorted(values.values(), reverse=True)
    return {k: ordered.index(v) + 1 for k, v in values.items()}


def average_ranks(values: dict[str, float]) -> dict[str, float]:
    """1 = best (highest); tied values share the mean of the ranks they span (Spearman's)."""
    ordered = sorted(values.values(), reverse=True)
    return {k: ordered.index(v) + (ordered.count(v) + 1) / 2 for k, v in values.items()}


def spearman(a: dict[str, float], b: dict[str, float]) -> float:
    """Spearman's rho: the Pearson correlation of the average ranks (the paper ties, e.g. ACDC
    mDice 91.75 twice; competition ranks 1, 1, 3 would shift rho)."""
    keys = sorted(set(a) & set(b))
    if len(keys) < 3:
        return math.nan
    ra = average_ranks({k: a[k] for k in keys})
    rb = average_ranks({k: b[k] for k in keys})
    ma, mb = sum(ra.values()) / len(keys), sum(rb.values()) / len(keys)
    cov = sum((ra[k] - ma) * (rb[k] - mb) for k in keys)
    va = sum((ra[k] - ma) ** 2 for k in keys)
    vb = sum((rb[k] - mb) ** 2 for k in keys)
    return cov / math.sqrt(va * vb) if va and vb else math.nan


def fmt(value: float | None) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.2f}"


def side_by_side(dataset: str, rows: list[dict[str, str]]) -> str:
    paper = PAPER[dataset]
    cols = METRICS + CLASS_COLUMNS[dataset]
    ours: dict[str, dict[str, float]] = {}
    for row in rows:
        vals = {}
        for col in cols:
            raw = row.get(f"{col}_mean", "")
            vals[col] = float(raw) if raw not in ("", "nan") else math.nan
        ours[row["loss"]] = vals
    ours_dice = {k: v["mDice"] for k, v in ours.items() if math.isfinite(v["mDice"])}
    paper_dice = {k: v[0] for k, v in paper.items()}
    our_rank = ranks(ours_dice)
    shared = {k: paper_dice[k] for k in ours_dice if k in paper_dice}
    paper_rank = ranks(shared)
    our_rank_shared = ranks({k: ours_dice[k] for k in shared})

    head = ["loss", *(f"{c} ours / paper" for c in cols), "rank ours (paper)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        key = row["loss"]
        ref = paper.get(key)
        cells = [row.get("name") or key]
        for i, col in enumerate(cols):
            cells.append(f"{fmt(ours[key][col])} / {fmt(ref[i] if ref else None)}")
        if key in shared:
            cells.append(f"{our_rank_shared[key]} ({paper_rank[key]})")
        else:
            cells.append(f"{our_rank.get(key, '–')} (not in paper)")
        lines.append("| " + " | ".join(cells) + " |")
    rho = spearman(ours_dice, paper_dice)
    lines.append("")
    lines.append(
        f"Ranks by mDice among the {len(shared)} losses that are in both tables (rows not in "
        f"the paper: rank among all {len(ours_dice)} rows here); Spearman rank correlation of "
        f"the two orderings: {fmt(rho)} (1 = same order, 0 = unrelated, -1 = reversed)."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dataset", choices=sorted(PAPER))
    ap.add_argument("folder", type=Path, help="a `segloss compare --output` folder")
    args = ap.parse_args(argv)
    print(side_by_side(args.dataset, read_results(args.folder)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
