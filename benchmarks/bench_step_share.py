"""The loss's share of a training step: an smp U-Net (resnet18 encoder, random weights) on a batch
of 8 x 3 x 256 x 256, one optimizer step with the loss, against the same loss's forward+backward
alone on that network's logits.

Usage::

    python benchmarks/bench_step_share.py                        # CPU, 2 threads
    python benchmarks/bench_step_share.py --device cuda --batch 32
    python benchmarks/bench_step_share.py --losses ce+pm_dice,dice --classes 4

Each round runs one training step and one loss-only forward+backward per loss, interleaved;
the table gives medians and the loss's share of the step. MONAI's DiceCELoss is the reference
compound.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import segmentation_models_pytorch as smp
import torch
from _report import emit, machine_line
from monai.losses import DiceCELoss

from napari_segloss.losses import get_loss

REF = "MONAI DiceCELoss"


def build_loss(name: str, classes: int) -> torch.nn.Module:
    if name != REF:
        return get_loss(name, validate=False)
    if classes == 1:
        ref = DiceCELoss(sigmoid=True)
        return lambda x, y: ref(x, y.unsqueeze(1).float())  # type: ignore[return-value]
    ref = DiceCELoss(softmax=True, to_onehot_y=True)
    return lambda x, y: ref(x, y.unsqueeze(1))  # type: ignore[return-value]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--losses", default="ce+pm_dice,pm_dice,ce")
    ap.add_argument("--classes", type=int, default=1, help="1 = binary (sigmoid), >= 2 softmax")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA)")
    ap.add_argument("--out", type=Path, default=None, help="append the Markdown report here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    model = smp.Unet("resnet18", encoder_weights=None, in_channels=3, classes=args.classes)
    model = model.to(device).to(memory_format=torch.channels_last)
    # fused on CUDA, as `segloss train` builds it (plain Adam there made the step longer and
    # the loss's share smaller)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    x = torch.randn(args.batch, 3, args.size, args.size, generator=g).to(device)
    x = x.contiguous(memory_format=torch.channels_last)
    k = max(args.classes, 2)
    y = torch.randint(0, k, (args.batch, args.size, args.size), generator=g).to(device)
    names = [n.strip() for n in args.losses.split(",") if n.strip()] + [REF]
    losses = {n: build_loss(n, args.classes) for n in names}

    def step(loss: torch.nn.Module) -> float:
        sync(device)
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp):
            out = model(x)
        loss(out.float(), y).backward()
        opt.step()
        sync(device)
        return time.perf_counter() - t0

    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp):
        logits = model(x).float()

    def loss_only(loss: torch.nn.Module) -> float:
        z = logits.detach().clone().requires_grad_(True)
        sync(device)
        t0 = time.perf_counter()
        loss(z, y).backward()
        sync(device)
        return time.perf_counter() - t0

    steps: dict[str, list[float]] = {n: [] for n in names}
    alone: dict[str, list[float]] = {n: [] for n in names}
    for r in range(args.rounds + 1):  # round 0 warms up
        for n in names:
            s, a = step(losses[n]), loss_only(losses[n])
            if r:
                steps[n].append(s)
                alone[n].append(a)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        f"## Loss share of a training step on {device.type}",
        "",
        f"{machine_line()}; load average {load:.1f}. smp U-Net resnet18, batch {args.batch} x 3 x "
        f"{args.size}², {args.classes} output channel(s), Adam (fused on CUDA), channels_last"
        f"{', bf16 autocast' if args.amp else ''}; median of {args.rounds} interleaved rounds. "
        f"Command: `python benchmarks/bench_step_share.py {' '.join(argv or sys.argv[1:])}`",
        "",
        "| loss | training step (ms) | loss fwd+bwd alone (ms) | share of the step |",
        "|---|---:|---:|---:|",
    ]
    for n in names:
        s, a = statistics.median(steps[n]), statistics.median(alone[n])
        lines.append(f"| {n} | {s * 1e3:.1f} | {a * 1e3:.2f} | {100 * a / s:.1f} % |")
    emit(lines, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
