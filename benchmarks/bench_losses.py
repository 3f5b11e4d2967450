"""Forward+backward time of the losses relative to MONAI's DiceLoss, and first-use latency.

Usage::

    python benchmarks/bench_losses.py                       # every loss, 2D and 3D, 2 threads
    python benchmarks/bench_losses.py --losses dice,pm_dice,ce+pm_dice --rounds 30
    python benchmarks/bench_losses.py --device cuda         # on a GPU
    python benchmarks/bench_losses.py --cold-start 5        # + fresh-process first call

Speed: each round times every loss once in a shuffled order (interleaved, so load changes on a
shared machine hit all of them alike); the table gives the median over rounds and the ratio to
``monai.losses.DiceLoss(softmax=True, to_onehot_y=True)`` measured in the same rounds, on the
same float32 logits and integer labels, with ``validate=False`` (the training setting).

Cold start: a fresh Python process imports the library (after ``import torch``) and runs one
forward+backward on (2, 4, 256, 256); ours and MONAI's alternate, and the ratio of the medians is
reported (nothing is compiled on first use: no JIT anywhere).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from _report import emit, machine_line
from monai.losses import DiceLoss as MonaiDiceLoss

from napari_segloss.losses import get_loss, list_losses

REF = "MONAI DiceLoss"
CASES = {"2D (8,4,256,256)": (8, 4, 256, 256), "3D (2,4,64,128,128)": (2, 4, 64, 128, 128)}
QUICK = {"2D (4,4,128,128)": (4, 4, 128, 128), "3D (1,4,32,64,64)": (1, 4, 32, 64, 64)}

_COLD = """
import sys, time
t0 = time.perf_counter()
import torch
t1 = time.perf_counter()
g = torch.Generator().manual_seed(0)
x = torch.randn(2, 4, 256, 256, generator=g, requires_grad=True)
y = torch.randint(0, 4, (2, 256, 256), generator=g)
t2 = time.perf_counter()
if sys.argv[1] == "ours":
    from napari_segloss.losses import get_loss
    loss = get_loss("pm_dice")
    loss(x, y).backward()
else:
    from monai.losses import DiceLoss
    DiceLoss(softmax=True, to_onehot_y=True)(x, y.unsqueeze(1)).backward()
t3 = time.perf_counter()
print(t3 - t2, t3 - t0)
"""


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x0: torch.Tensor,
    y: torch.Tensor,
) -> Callable[[], float]:
    """One timed forward+backward of ``fn`` on a fresh leaf copy of ``x0``."""

    def run() -> float:
        x = x0.detach().clone().requires_grad_(True)
        sync(x.device)
        t0 = time.perf_counter()
        fn(x, y).backward()
        sync(x.device)
        return time.perf_counter() - t0

    return run


def bench_case(
    shape: tuple[int, ...], names: list[str], rounds: int, device: torch.device
) -> dict[str, float]:
    """Median forward+backward seconds of every loss (and MONAI's) over interleaved rounds."""
    g = torch.Generator().manual_seed(0)
    b, c, *spatial = shape
    x0 = torch.randn(*shape, generator=g).to(device)
    y = torch.randint(0, c, (b, *spatial), generator=g).to(device)
    monai = MonaiDiceLoss(softmax=True, to_onehot_y=True)
    y1 = y.unsqueeze(1)
    runners = {REF: timed(lambda x, _y: monai(x, y1), x0, y)}
    for n in names:
        runners[n] = timed(get_loss(n, validate=False), x0, y)
    times: dict[str, list[float]] = {k: [] for k in runners}
    order = list(runners)
    for r in range(rounds + 2):  # two warm-up rounds
        random.Random(r).shuffle(order)
        for k in order:
            t = runners[k]()
            if r >= 2:
                times[k].append(t)
    return {k: statistics.median(v) for k, v in times.items()}


def cold_start(repeats: int) -> list[str]:
    """Fresh-process first forward+backward, ours vs MONAI, alternating."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    runs: dict[str, list[tuple[float, float]]] = {"ours": [], "monai": []}
    for _ in range(repeats):
        for who in ("ours", "monai"):
            out = subprocess.run(
                [sys.executable, "-c", _COLD, who],
                capture_output=True,
                text=True,
                check=True,
                env=env,
            ).stdout.split()
            runs[who].append((float(out[0]), float(out[1])))
    med = {k: [statistics.median(t[i] for t in v) for i in (0, 1)] for k, v in runs.items()}
    return [
        f"### Cold start: fresh process, import + first forward+backward, (2,4,256,256), "
        f"median of {repeats} alternating runs",
        "",
        "| | import + first call (s) | whole process, `import torch` included (s) |",
        "|---|---:|---:|",
        f"| napari-segloss pm_dice | {med['ours'][0]:.2f} | {med['ours'][1]:.2f} |",
        f"| MONAI DiceLoss | {med['monai'][0]:.2f} | {med['monai'][1]:.2f} |",
        f"| ratio | {med['ours'][0] / med['monai'][0]:.2f} | "
        f"{med['ours'][1] / med['monai'][1]:.2f} |",
    ]


def table(results: dict[str, dict[str, float]], names: list[str]) -> list[str]:
    cases = list(results)
    head = "| loss | " + " | ".join(f"{c} ms | x MONAI" for c in cases) + " |"
    rows = [head, "|---|" + "---:|---:|" * len(cases)]
    for n in [REF, *names]:
        cells = [
            f"{results[c][n] * 1e3:.2f} | {results[c][n] / results[c][REF]:.2f}" for c in cases
        ]
        rows.append(f"| {n} | " + " | ".join(cells) + " |")
    for c in cases:
        r = results[c]
        if "pm_dice" in r and "dice" in r:
            rows.append("")
            rows.append(
                f"- {c}: pm_dice / MONAI = {r['pm_dice'] / r[REF]:.2f}, "
                f"pm_dice / dice = {r['pm_dice'] / r['dice']:.2f}"
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--losses", default="", help="comma-separated names (default: every loss)")
    ap.add_argument("--rounds", type=int, default=15, help="timed rounds per case (median)")
    ap.add_argument("--quick", action="store_true", help="small shapes (smoke run)")
    ap.add_argument("--no-3d", action="store_true", help="skip the 3D case")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--cold-start", type=int, default=0, metavar="N", help="N fresh processes")
    ap.add_argument("--out", type=Path, default=None, help="append the Markdown report here")
    args = ap.parse_args(argv)
    if args.rounds < 1:
        ap.error(f"--rounds must be >= 1, got {args.rounds}")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    names = [n.strip() for n in args.losses.split(",") if n.strip()] or list_losses()
    for n in names:
        get_loss(n)  # unknown names fail here, with close matches
    cases = QUICK if args.quick else CASES
    if args.no_3d:
        cases = dict(list(cases.items())[:1])
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    results = {}
    for label, shape in cases.items():
        print(f"timing {label} ...", flush=True)
        results[label] = bench_case(shape, names, args.rounds, device)
    lines = [
        f"## Losses, forward+backward on {device.type}",
        "",
        f"{machine_line()}; load average {load:.1f} at the start. Median of {args.rounds} "
        "interleaved rounds (after 2 warm-up rounds), float32 logits, integer labels, "
        "validate=False; reference `monai.losses.DiceLoss(softmax=True, to_onehot_y=True)`. "
        f"Command: `python benchmarks/bench_losses.py {' '.join(argv or sys.argv[1:])}`",
        "",
        *table(results, names),
    ]
    if args.cold_start:
        lines += ["", *cold_start(args.cold_start)]
    emit(lines, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
