"""Forward+backward timing of every registered loss, relative to MONAI's DiceLoss.

Usage::

    python benchmarks/bench_losses.py                 # 2D (8,4,256,256) and 3D (2,4,64,128,128)
    python benchmarks/bench_losses.py --quick         # smaller sizes
    python benchmarks/bench_losses.py --losses dice,pm_dice,ce+pm_dice --repeats 9

Each round times every loss once (interleaved, so load changes on a shared machine hit all of
them alike); the table reports the median over rounds and the ratio to
``monai.losses.DiceLoss(softmax=True, to_onehot_y=True)`` measured in the same run.

Every timed call starts from the same cache state (``--cache``): by default ``cold``, a
read of a 256 MiB buffer evicts the inputs and everything the previous call left behind
(64 MiB was not enough: L3 kept part of the previous call's data).
Without that, a loss's time depended on which loss ran before it (after MONAI, whose
temporaries fill the cache with dirty lines, the same loss took up to 30 % longer than after
a loss that had just read the same inputs), and the fixed shuffles favoured some positions
in ``--losses``. ``warm`` runs each call once untimed first; ``none`` is the old protocol. Losses run
with ``validate=False`` (the training setting: no host-device synchronisation) unless
``--validate`` is given. Writes a Markdown table to ``--out`` (default
benchmarks/results_losses.md) with machine information.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from _report import allocator_line

from napari_segloss.losses import get_loss, list_losses

REF = "MONAI DiceLoss"


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def make_runner(
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x0: torch.Tensor,
    y: torch.Tensor,
    cache: str = "cold",
) -> Callable[[], float]:
    """A timed forward+backward of ``fn`` that starts from the cache state ``cache``."""
    sweep = np.ones(256 * 2**20 // 4, np.float32) if cache == "cold" else None

    def run() -> float:
        if sweep is not None:
            np.add.reduce(sweep)  # read only: evicts without leaving dirty lines to write back
        elif cache == "warm":
            fn(x0.detach().requires_grad_(True), y).backward()
        x = x0.detach().requires_grad_(True)
        t0 = time.perf_counter()
        fn(x, y).backward()
        return time.perf_counter() - t0

    return run


def bench_case(
    shape: tuple[int, ...],
    names: list[str],
    repeats: int,
    validate: bool,
    seed: int = 0,
    cache: str = "cold",
) -> dict[str, float]:
    from monai.losses import DiceLoss as MonaiDice

    g = torch.Generator().manual_seed(seed)
    b, c, *sp = shape
    x0 = torch.randn(*shape, generator=g)
    y = torch.randint(0, c, (b, *sp), generator=g)
    monai = MonaiDice(softmax=True, to_onehot_y=True)
    y1 = y.unsqueeze(1)
    runners = {REF: make_runner(lambda x, _t: monai(x, y1), x0, y, cache)}
    for n in names:
        runners[n] = make_runner(get_loss(n, validate=validate), x0, y, cache)
    times: dict[str, list[float]] = {k: [] for k in runners}
    order = list(runners)
    for r in range(repeats + 1):  # round 0 is a warm-up
        random.Random(r).shuffle(order)
        for k in order:
            t = runners[k]()
            if r > 0:
                times[k].append(t)
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    ap.add_argument("--losses", default="", help="comma-separated subset (default: every loss)")
    ap.add_argument("--repeats", type=int, default=7, help="timed rounds per case (median)")
    ap.add_argument("--no-3d", action="store_true", help="skip the 3D case")
    ap.add_argument("--validate", action="store_true", help="run losses with validate=True")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    ap.add_argument(
        "--cache",
        choices=("cold", "warm", "none"),
        default="cold",
        help="cache state at the start of each timed call (see above; default cold)",
    )
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results_losses.md"))
    ap.add_argument("--append", action="store_true", help="append to --out instead of overwriting")
    ap.add_argument("--title", default="Loss benchmark", help="Markdown heading of this run")
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error(f"--repeats must be >= 1, got {args.repeats}")
    if args.threads:
        torch.set_num_threads(args.threads)
    names = [n.strip() for n in args.losses.split(",") if n.strip()] or list_losses()
    known = set(list_losses())
    for n in names:
        if n not in known and "+" not in n:
            get_loss(n)  # raises a ValueError with close matches

    cases = {"2D (8,4,256,256)": (8, 4, 256, 256), "3D (2,4,64,128,128)": (2, 4, 64, 128, 128)}
    if args.quick:
        cases = {"2D (4,4,128,128)": (4, 4, 128, 128), "3D (1,4,32,64,64)": (1, 4, 32, 64, 64)}
    if args.no_3d:
        cases = dict(list(cases.items())[:1])

    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    results = {}
    for label, shape in cases.items():
        print(f"timing {label} ...", flush=True)
        results[label] = bench_case(shape, names, args.repeats, args.validate, cache=args.cache)

    head = "| loss | " + " | ".join(f"{c} ms | x MONAI" for c in cases) + " |"
    sep = "|---|" + "---:|---:|" * len(cases)
    rows = [head, sep]
    for n in [REF, *names]:
        cells = []
        for label in cases:
            t = results[label][n]
            cells.append(f"{t * 1e3:.2f} | {t / results[label][REF]:.2f}")
        rows.append(f"| {n} | " + " | ".join(cells) + " |")
    table = "\n".join(rows)
    notes = []
    for label in cases:
        r = results[label]
        if "pm_dice" in r and "dice" in r:
            notes.append(
                f"- {label}: pm_dice / dice = {r['pm_dice'] / r['dice']:.2f} "
                f"(target <= 1.25), pm_dice / MONAI = {r['pm_dice'] / r[REF]:.2f} (target <= 0.6)"
            )
    load_after = os.getloadavg() if hasattr(os, "getloadavg") else None
    load = (
        f"- load average (1 min) before/after: {load_before[0]:.1f} / {load_after[0]:.1f} "
        f"on {os.cpu_count()} cores (other jobs share the machine: absolute times are noisy, "
        "ratios from the interleaved rounds are the meaningful numbers)\n"
        if load_before and load_after
        else ""
    )
    info = (
        f"- CPU: {cpu_name()} ({os.cpu_count()} logical cores)\n{load}"
        f"- torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"Python {platform.python_version()}\n"
        f"- {allocator_line()}\n"
        f"- forward+backward, median of {args.repeats} interleaved rounds (plus 1 warm-up), "
        f"validate={args.validate}, float32 logits, integer labels, caches {args.cache} at "
        "the start of each call\n"
        f"- reference: monai.losses.DiceLoss(softmax=True, to_onehot_y=True)"
    )
    md = f"# {args.title}\n\n{info}\n\n{table}\n\n" + "\n".join(notes) + "\n"
    print(md)
    with open(args.out, "a" if args.append else "w") as f:
        if args.append:
            f.write("\n")
        f.write(md)
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
