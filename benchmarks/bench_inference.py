"""Benchmark: tiled (sliding-window) inference on a large image — time and peak memory.

Each configuration runs in a fresh subprocess so that the peak RSS (``ru_maxrss``) belongs to it
alone; on CUDA ``torch.cuda.max_memory_allocated`` is reported too. The expected floor is the
input plus the float32 accumulators: ``(C + K + 1) * H * W * 4`` bytes; activations are bounded
by ``batch_size`` tiles whatever the image size (that is what "bounded memory" means here).

    python benchmarks/bench_inference.py                       # 4096x4096, CPU or GPU
    python benchmarks/bench_inference.py --sizes 1024 2048     # quicker
    python benchmarks/bench_inference.py --untiled 1024        # also a whole-image forward pass
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from _report import emit, machine_line


def _worker(args: argparse.Namespace) -> dict:
    # Imported here, in the worker subprocess only: the parent stays light, and the peak RSS
    # measured is the worker's own (torch and the model included).
    import torch

    from napari_segloss.engine.config import ModelConfig
    from napari_segloss.engine.inference import resolve_device, sliding_window_predict
    from napari_segloss.engine.model import build_model

    device = resolve_device(args.device)
    torch.manual_seed(0)
    model = build_model(ModelConfig(encoder=args.encoder, in_channels=3, classes=args.classes))
    model = model.to(device).eval()
    image = torch.randn(3, args.size, args.size)
    # Warm-up on one tile (cuDNN autotune, lazy allocations) so the timing is the steady state.
    sliding_window_predict(
        model, image[:, : args.tile, : args.tile], tile=(args.tile,) * 2, device=device
    )
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB (Linux: KiB)
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        if args.mode == "tiled":
            probs = sliding_window_predict(
                model, image, tile=(args.tile, args.tile), overlap=args.overlap,
                batch_size=args.batch_size, device=device, amp=not args.no_amp,
            )  # fmt: skip
        else:
            with torch.inference_mode():
                logits = model(image[None].to(device))
                probs = torch.softmax(logits.float(), 1)[0].cpu()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        del probs
    times.sort()
    out = {
        "mode": args.mode,
        "size": args.size,
        "tile": args.tile if args.mode == "tiled" else None,
        "device": str(device),
        "median_s": times[len(times) // 2],
        "min_s": times[0],
        "repeats": args.repeats,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_before_mib": rss_before,
        "floor_mib": (3 + args.classes + 1) * args.size**2 * 4 / 2**20,
    }
    if device.type == "cuda":
        out["cuda_max_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[4096])
    p.add_argument(
        "--untiled", type=int, nargs="*", default=[], help="sizes for a whole-image pass"
    )
    p.add_argument("--tile", type=int, default=256)
    p.add_argument("--overlap", type=float, default=0.25)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--encoder", default=None, help="default: mobilenet_v2 on CPU, resnet34 on GPU")
    p.add_argument("--classes", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-amp", action="store_true")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    p.add_argument("--output", type=Path, help="append the Markdown table to this file")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--mode", default="tiled", help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, default=4096, help=argparse.SUPPRESS)
    args = p.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.encoder is None:
        args.encoder = (
            "resnet34" if torch.cuda.is_available() and args.device != "cpu" else "mobilenet_v2"
        )
    if args.worker:
        print(json.dumps(_worker(args)))
        return

    results = []
    jobs = [("tiled", s) for s in args.sizes] + [("untiled", s) for s in args.untiled]
    for mode, size in jobs:
        cmd = [
            sys.executable, __file__, "--worker", "--mode", mode, "--size", str(size),
            "--tile", str(args.tile), "--overlap", str(args.overlap),
            "--batch-size", str(args.batch_size), "--encoder", args.encoder,
            "--classes", str(args.classes), "--device", args.device,
            "--repeats", str(args.repeats), "--threads", str(args.threads),
        ] + (["--no-amp"] if args.no_amp else [])  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = proc.stderr.strip().splitlines()[-1:] or ["?"]
            print(f"{mode} {size}: failed ({tail[0]})", file=sys.stderr)
            results.append({"mode": mode, "size": size, "failed": tail[0]})
            continue
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        results.append(res)
        print(json.dumps(res), file=sys.stderr)

    lines = [
        f"### Tiled inference ({args.encoder} U-Net, {args.classes} classes, tile {args.tile}, "
        f"overlap {args.overlap}, batch {args.batch_size} tiles, gaussian blend)",
        "",
        f"{machine_line()}; median of {args.repeats}.",
        "",
        "| mode | image | device | median s | Mpx/s | peak RSS MiB | floor MiB | CUDA max MiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if "failed" in r:
            lines.append(f"| {r['mode']} | {r['size']}² | - | failed: {r['failed']} | | | | |")
            continue
        mpx = r["size"] ** 2 / 1e6 / r["median_s"]
        cuda = f"{r['cuda_max_mib']:.0f}" if "cuda_max_mib" in r else "-"
        lines.append(
            f"| {r['mode']} | {r['size']}² | {r['device']} | {r['median_s']:.2f} | {mpx:.2f} | "
            f"{r['peak_rss_mib']:.0f} | {r['floor_mib']:.0f} | {cuda} |"
        )
    emit(lines, args.output)


if __name__ == "__main__":
    main()
