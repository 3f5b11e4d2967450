"""How fast can a Dice loss with exact complements be on the CPU? A lower bound next to MONAI.

Usage::

    python benchmarks/bench_dice_floor.py                  # glibc malloc defaults
    python benchmarks/bench_dice_floor.py --tune-malloc    # as `segloss` runs (engine/allocator)
    python benchmarks/bench_dice_floor.py --compile        # also pm_dice through torch.compile

Issue 15 asks PM Dice forward+backward to take at most 1.25x MONAI's ``DiceLoss(softmax=True,
to_onehot_y=True)``, and also asks ``1 - p`` of a confident prediction to keep its float32
precision (taken from the other classes' share, not by subtraction). This script times, in the
same interleaved rounds on (8, 4, 256, 256) float32 logits with integer labels:

* MONAI's ``DiceLoss``, forward+backward and forward alone;
* our ``pm_dice`` (gamma 1, squared), forward+backward and forward alone;
* ``minimal_exact_forward``: the PM Dice value with exact complements written with as few
  passes over the (B, K, N) tensor as we could (softmax; a copy with each pixel's label entry
  zeroed, whose class sum is ``1 - p_y``; its cube in place with the label terms written in;
  one sum per class) and no autograd bookkeeping at all. Its value is checked against
  ``pm_dice`` before timing;
* with ``--compile``: ``pm_dice`` through ``torch.compile(fullgraph=True)`` (inductor, which
  generates C++ for the CPU), forward+backward; its compile time (the first call) is reported,
  and its value and gradient are checked against the eager loss.

If the minimal forward alone already costs about as much as MONAI's forward+backward, no
forward+backward with exact complements can come near 1.25x MONAI on this machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from _report import emit, interleaved_rounds, machine_line
from monai.losses import DiceLoss as MonaiDiceLoss

from napari_segloss.engine.allocator import tune_malloc
from napari_segloss.losses import get_loss

SHAPE = (8, 4, 256, 256)
EPS = 1e-6  # pm_dice's default smoothing


def minimal_exact_forward(x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """PM Dice (gamma = 1, squared terms, mean over images and classes) of integer labels,
    with ``1 - p_y`` from the other classes' share. No gradient."""
    b, k = x.shape[:2]
    n = labels[0].numel()
    p = torch.softmax(x.reshape(b, k, n), 1)
    flat = labels.reshape(b, n)
    image = torch.arange(b).view(b, 1)
    entry = (image * (k * n) + torch.arange(n)).add_(flat, alpha=n).view(-1)
    off = p.clone()
    off.view(-1).index_fill_(0, entry, 0.0)
    q = off.sum(1)  # 1 - p_y, exact
    p_y = p.view(-1).index_select(0, entry).view(b, n)
    # err: off-label p^3 (m = p), label q^3 (m = q); den = err + 2 sum_label q p_y
    off.pow_(3.0)
    off.view(-1).index_copy_(0, entry, q.pow(3.0).view(-1))
    err = off.sum(-1)
    overlap = torch.zeros(b * k, dtype=torch.float64)
    overlap.index_add_(0, (flat + image * k).view(-1), (2.0 * q * p_y).view(-1).double())
    den = err + overlap.view(b, k).float()
    return (err / (den + EPS)).mean()


def compile_checked(loss, x: torch.Tensor, y: torch.Tensor) -> tuple[object, str]:
    """``torch.compile(loss)``, its first call timed (the compile) and its value and gradient
    checked against the eager loss; returns it and a sentence for the report."""
    compiled = torch.compile(loss, fullgraph=True)
    t0 = time.perf_counter()
    value = compiled(x, y)
    value.backward()
    took = time.perf_counter() - t0
    grad, x.grad = x.grad, None
    eager = loss(x, y)
    eager.backward()
    value_err = abs(float(value) - float(eager))
    grad_err = float((grad - x.grad).abs().max())
    x.grad = None
    if value_err > 1e-5 or grad_err > 1e-6:
        sys.exit(f"compiled pm_dice differs: value by {value_err:.2e}, gradient by {grad_err:.2e}")
    return compiled, (
        f" torch.compile: first call (the compile) {took:.1f} s; value within {value_err:.1e},"
        f" gradient within {grad_err:.1e} of the eager loss."
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=30, help="timed rounds (median)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--tune-malloc", action="store_true", help="keep freed memory (as segloss)")
    ap.add_argument("--out", type=Path, help="append the Markdown report here")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile(pm_dice)")
    args = ap.parse_args()
    tuned = tune_malloc() if args.tune_malloc else False
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*SHAPE, generator=g).requires_grad_(True)
    y = torch.randint(0, SHAPE[1], (SHAPE[0], *SHAPE[2:]), generator=g)
    monai = MonaiDiceLoss(softmax=True, to_onehot_y=True)
    ours = get_loss("pm_dice", validate=False)
    with torch.no_grad():
        want, got = float(ours(x, y)), float(minimal_exact_forward(x, y))
    if abs(got - want) > 1e-5 * abs(want):
        sys.exit(f"the minimal forward gives {got}, pm_dice {want}: not the same loss")

    def no_grad(f):
        def run() -> None:
            with torch.no_grad():
                f()

        return run

    calls = {
        "MONAI DiceLoss, forward+backward": lambda: monai(x, y.unsqueeze(1)).backward(),
        "MONAI DiceLoss, forward": no_grad(lambda: monai(x, y.unsqueeze(1))),
        "pm_dice, forward+backward": lambda: ours(x, y).backward(),
        "pm_dice, forward": no_grad(lambda: ours(x, y)),
        "minimal exact forward": no_grad(lambda: minimal_exact_forward(x, y)),
    }
    compiled_note = ""
    if args.compile:
        compiled, compiled_note = compile_checked(ours, x, y)
        calls["pm_dice compiled, forward+backward"] = lambda: compiled(x, y).backward()
    times = interleaved_rounds(calls, args.rounds, after=lambda: setattr(x, "grad", None))
    ref = statistics.median(times["MONAI DiceLoss, forward+backward"])
    lines = [
        f"## Dice with exact complements: a lower bound, {SHAPE}",
        "",
        f"{machine_line()}; malloc {'tuned' if tuned else 'defaults'}. Median of {args.rounds} "
        f"interleaved rounds. Values: pm_dice {want:.7f}, minimal forward {got:.7f}.{compiled_note}"
        " Command: "
        f"`python benchmarks/bench_dice_floor.py {' '.join(sys.argv[1:])}`",
        "",
        "| call | ms | x MONAI forward+backward |",
        "|---|---:|---:|",
    ]
    for k, v in times.items():
        m = statistics.median(v)
        lines.append(f"| {k} | {m * 1e3:.2f} | {m / ref:.2f} |")
    emit(lines, args.out)


if __name__ == "__main__":
    main()
