"""Benchmark: training throughput of our loop (``iter_train``) vs a plain hand-written smp loop.

Both loops train the same model (smp U-Net), with the same loss (registry name), batch size,
optimizer (Adam + poly LR stepped per iteration) and the same in-memory uint8 images, in the same
process, alternating A/B/A/B so that machine noise hits both. The plain loop is what one would
write by hand: uint8 tensors on the device normalised per batch, ``model.train()``, forward, loss, backward, step, with
channels-last and bf16 autocast on CUDA like ours. Ours goes through ``ArrayDataset`` +
DataLoader + its sampler, tqdm off, ``log_every`` steps between host syncs.

Throughput is measured in the steady state: from the step event after ``--warmup`` iterations
to the last step event of the epoch (before checkpoint writing and validation; those are per
epoch costs reported separately as the total wall time). Target: ratio >= 0.95.

    python benchmarks/bench_training.py                     # CPU: tiny model and images
    python benchmarks/bench_training.py --size 256 --batch-size 16 --steps 200   # on a GPU
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import segmentation_models_pytorch as smp
import torch
from _report import emit, machine_line

from napari_segloss.data.datasets import ArrayDataset
from napari_segloss.engine.config import load_config
from napari_segloss.engine.events import TrainStep
from napari_segloss.engine.training import iter_train
from napari_segloss.losses import get_loss


def _config(args: argparse.Namespace, out: Path) -> dict:
    return {
        "data": {"kind": "folder", "root": str(out), "augment": False, "cache": True},
        "model": {"encoder": args.encoder, "in_channels": 3, "classes": args.classes},
        "loss": {"name": args.loss, "params": {}},
        "optim": {"name": "adam", "lr": 5e-4, "weight_decay": 1e-4, "schedule": "poly"},
        "train": {
            "epochs": 1,
            "batch_size": args.batch_size,
            "amp": True,
            "seed": 0,
            "device": args.device,
            "num_workers": args.num_workers,
            "channels_last": True,
            "deterministic": args.deterministic,
            "log_every": args.log_every,
            "overwrite": True,
        },
        "output": str(out / "run"),
    }


class GpuBusy:
    """Samples ``torch.cuda.utilization()`` (NVML) in a thread: the GPU busy fraction."""

    def __init__(self, period: float = 0.05) -> None:
        self.samples: list[float] = []
        self.period = period
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append(float(torch.cuda.utilization()))
            except Exception:  # no NVML: report nothing rather than a wrong number
                return
            time.sleep(self.period)

    def __enter__(self) -> GpuBusy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def busy(self) -> float | None:
        return statistics.mean(self.samples) / 100 if self.samples else None


def _throughput(
    args: argparse.Namespace, marks: list[tuple[int, float]], total: float, busy: GpuBusy | None
) -> dict:
    """Steady-state img/s: from the first step mark at or after ``--warmup`` to the last."""
    first = next(m for m in marks if m[0] >= args.warmup)
    last = marks[-1]
    steps = last[0] - first[0]
    return {
        "img_s": steps * args.batch_size / (last[1] - first[1]),
        "steps": steps,
        "total_s": total,
        "gpu_busy": busy.busy if busy else None,
    }


def run_ours(args: argparse.Namespace, images: np.ndarray, masks: np.ndarray) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(_config(args, Path(tmp)))
        ds = ArrayDataset(list(images), list(masks), train=True, augment=False, cache=True)
        marks: list[tuple[int, float]] = []
        t_start = time.perf_counter()
        busy = GpuBusy() if torch.cuda.is_available() and args.device != "cpu" else None
        if busy:
            busy.__enter__()
        for ev in iter_train(cfg, datasets=(ds, None), progress=False):
            if isinstance(ev, TrainStep):
                if torch.cuda.is_available() and args.device != "cpu":
                    torch.cuda.synchronize()
                marks.append((ev.iteration, time.perf_counter()))
        if busy:
            busy.__exit__()
        total = time.perf_counter() - t_start
    return _throughput(args, marks, total, busy)


def run_plain(args: argparse.Namespace, images: np.ndarray, masks: np.ndarray) -> dict:
    device = torch.device(_device(args))
    torch.manual_seed(0)
    model = smp.create_model(
        "Unet", encoder_name=args.encoder, encoder_weights=None, in_channels=3, classes=args.classes
    )
    model.to(device).to(memory_format=torch.channels_last).train()
    loss_fn = get_loss(args.loss, validate=False)  # as our loop builds it: no host reads
    opt_kw = {"fused": True} if device.type == "cuda" else {}
    opt = torch.optim.Adam(model.parameters(), lr=5e-4, weight_decay=1e-4, **opt_kw)
    n_steps = len(images) // args.batch_size
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: (1 - it / n_steps) ** 0.9)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    # uint8 on the device, normalised per batch there, as our in-memory path does (a gather
    # from host memory made the plain loop copy pageable float32 batches every step)
    x_all = torch.from_numpy(images).permute(0, 3, 1, 2).to(device)
    y_all = torch.from_numpy(masks).to(device)
    mean, std = mean.to(device), std.to(device)
    perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if device.type == "cuda"
        else torch.autocast("cpu", enabled=False)
    )
    marks = []
    busy = GpuBusy() if device.type == "cuda" else None
    if busy:
        busy.__enter__()
    t_start = time.perf_counter()
    for it in range(n_steps):
        idx = perm[it * args.batch_size : (it + 1) * args.batch_size].to(device)
        x = ((x_all[idx].float() / 255 - mean) / std).contiguous(memory_format=torch.channels_last)
        y = y_all[idx].long()
        with autocast:
            loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if (it + 1) % args.log_every == 0 or it + 1 == n_steps:
            float(loss.item())  # the same host sync our loop does every log_every steps
            marks.append((it + 1, time.perf_counter()))
    if busy:
        busy.__exit__()
    total = time.perf_counter() - t_start
    return _throughput(args, marks, total, busy)


def _device(args: argparse.Namespace) -> str:
    """The device both loops use; a CUDA request without CUDA is an error, not the CPU."""
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench_training: --device cuda, but no CUDA device is visible")
    if args.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return args.device


def main() -> None:
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=256 if cuda else 64)
    p.add_argument("--batch-size", type=int, default=16 if cuda else 4)
    p.add_argument("--steps", type=int, default=150 if cuda else 40, help="iterations per run")
    p.add_argument("--warmup", type=int, default=None, help="default: log_every")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--encoder", default="resnet34" if cuda else "mobilenet_v2")
    p.add_argument("--classes", type=int, default=1)
    p.add_argument("--loss", default="pm_dice")
    p.add_argument("--device", default="auto")
    p.add_argument("--num-workers", type=int, default=2 if cuda else 0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    p.add_argument(
        "--deterministic",
        action="store_true",
        help="our loop with train.deterministic: true, the config's default (deterministic "
        "algorithms, no cuDNN autotuning); the plain loop stays autotuned",
    )
    p.add_argument("--output", type=Path, help="append the Markdown table to this file")
    args = p.parse_args()
    if args.warmup is None:
        args.warmup = args.log_every
    if args.steps <= args.warmup:
        p.error(f"--steps ({args.steps}) must exceed the warm-up ({args.warmup} iterations)")
    _device(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    if cuda and args.device != "cpu":
        torch.backends.cudnn.benchmark = True

    rng = np.random.default_rng(0)
    n = args.steps * args.batch_size
    images = rng.integers(0, 256, (n, args.size, args.size, 3), dtype=np.uint8)
    masks = np.zeros((n, args.size, args.size), np.uint8)
    yy, xx = np.mgrid[: args.size, : args.size]
    for i in range(n):  # one random disc per image: a learnable, imbalanced target
        cy, cx = rng.integers(0, args.size, 2).tolist()
        r = int(rng.integers(3, args.size // 4))
        masks[i] = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.uint8)
        if args.classes > 1:
            masks[i] *= int(rng.integers(1, args.classes))

    ours, plain = [], []
    for r in range(args.repeats):
        plain.append(run_plain(args, images, masks))
        ours.append(run_ours(args, images, masks))
        print(
            f"repeat {r}: plain {plain[-1]['img_s']:.1f} img/s, ours {ours[-1]['img_s']:.1f} img/s",
            file=sys.stderr,
        )
    med = {
        k: statistics.median(x["img_s"] for x in v) for k, v in (("ours", ours), ("plain", plain))
    }
    ratios = [o["img_s"] / p_["img_s"] for o, p_ in zip(ours, plain, strict=True)]
    dev = _device(args)
    mode = ", ours deterministic (the config default)" if args.deterministic else ""
    lines = [
        f"### Training throughput: iter_train vs plain smp loop ({dev}{mode})",
        "",
        f"{machine_line()}. Unet-{args.encoder}, {args.classes} output channel(s), loss {args.loss}, "
        f"{args.size}x{args.size}, batch {args.batch_size}, {args.steps} steps/run "
        f"(steady state after {args.warmup}), num_workers {args.num_workers}, "
        f"median of {args.repeats} alternating repeats.",
        "",
        "| loop | img/s (median) | per-repeat img/s | wall s per run (incl. setup, ckpt) | GPU busy |",
        "|---|---|---|---|---|",
    ]
    for name, runs in (("plain smp loop", plain), ("ours (iter_train)", ours)):
        per = ", ".join(f"{x['img_s']:.1f}" for x in runs)
        wall = statistics.median(x["total_s"] for x in runs)
        busy = [x["gpu_busy"] for x in runs if x["gpu_busy"] is not None]
        b = f"{statistics.median(busy):.0%}" if busy else "n/a (CPU)"
        key = "ours" if name.startswith("ours") else "plain"
        lines.append(f"| {name} | {med[key]:.1f} | {per} | {wall:.1f} | {b} |")
    lines += [
        "",
        f"Ratio ours/plain: median {statistics.median(ratios):.3f} "
        f"(per repeat: {', '.join(f'{x:.3f}' for x in ratios)}); target >= 0.95.",
    ]
    emit(lines, args.output)


if __name__ == "__main__":
    main()
