"""Benchmark: NSD (surface Dice) and HD95 of napari_segloss.metrics against MONAI, same run.

NSD on a 512x512 2D pair and a 128^3 3D pair (isotropic and anisotropic spacing); reference
``monai.metrics.compute_surface_dice(..., use_subvoxels=True)``; HD95 against
``compute_hausdorff_distance(percentile=95)``. Times are medians over repeats; values must agree
(NSD to 1e-6). Writes the "metrics" section of benchmarks/results_metrics.md.

    python benchmarks/bench_metrics.py [--repeats 7] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results_metrics.md"


def machine_info() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import scipy
    import torch

    parts = [
        f"{cpu}, {os.cpu_count()} logical cores (torch threads {torch.get_num_threads()})",
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}",
        f"numpy {np.__version__}, scipy {scipy.__version__}, torch {torch.__version__}",
    ]
    try:
        import monai

        parts.append(f"MONAI {monai.__version__}")
    except ImportError:
        pass
    try:
        load = os.getloadavg()[0]
        parts.append(f"load average at start {load:.2f}")
    except OSError:
        pass
    return "; ".join(parts)


def write_section(key: str, text: str, path: Path = RESULTS) -> None:
    """Replace (or append) the ``<!-- key:start -->...<!-- key:end -->`` block of ``path``."""
    start, end = f"<!-- {key}:start -->", f"<!-- {key}:end -->"
    block = f"{start}\n{text.rstrip()}\n{end}"
    old = path.read_text(encoding="utf-8") if path.exists() else "# Metrics and maps benchmarks\n"
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    new = (
        pattern.sub(lambda _: block, old) if pattern.search(old) else old.rstrip() + "\n\n" + block
    )
    path.write_text(new.rstrip("\n") + "\n", encoding="utf-8")  # no growing blank tail


def median_time(fn: Callable[[], object], repeats: int) -> tuple[float, float, object]:
    """(median wall seconds, median CPU seconds of this process, last result).

    CPU time is reported too because the machine may be shared: with one torch thread it is
    less sensitive to other processes than wall time (contention still inflates it).
    """
    out = fn()  # warm-up (caches, lazy imports)
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu), out


def blob(shape: tuple[int, ...], center, radii, wobble: float, seed: int) -> np.ndarray:
    """An ellipse/ellipsoid with a smooth random boundary perturbation (a plausible mask)."""
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*[np.arange(s, dtype=np.float64) for s in shape], indexing="ij")
    r2 = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, center, radii, strict=True))
    angle = np.arctan2(grid[0] - center[0], grid[1] - center[1])
    bump = sum(
        rng.uniform(-wobble, wobble) * np.cos(k * angle + rng.uniform(0, 6)) for k in (2, 3, 5)
    )
    return r2 <= (1.0 + bump) ** 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (MONAI uses torch)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from monai.metrics import compute_hausdorff_distance, compute_surface_dice

    from napari_segloss.metrics import hausdorff_distance, surface_dice

    def onehot(x: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(x.astype(np.int64))
        return torch.nn.functional.one_hot(t, 2).movedim(-1, 0)[None].float()

    gt2 = blob((512, 512), (250, 260), (150, 100), 0.05, 0)
    pr2 = blob((512, 512), (254, 256), (146, 104), 0.05, 1)
    gt3 = blob((128, 128, 128), (64, 64, 64), (40, 30, 45), 0.05, 2)
    pr3 = blob((128, 128, 128), (62, 65, 64), (39, 32, 43), 0.05, 3)
    cases = [
        ("2D 512x512", pr2, gt2, (1.0, 1.0), 1.0),
        ("2D 512x512", pr2, gt2, (1.0, 1.0), 2.0),
        ("3D 128^3", pr3, gt3, (1.0, 1.0, 1.0), 1.0),
        ("3D 128^3 aniso", pr3, gt3, (2.5, 0.8, 0.8), 1.5),
    ]
    rows = []
    ok = True
    warnings.filterwarnings("ignore")
    for name, pred, gt, spacing, tol in cases:
        tp, cp, ours = median_time(
            lambda p=pred, g=gt, s=spacing, t=tol: surface_dice(p, g, t, s), args.repeats
        )
        tm, cm, ref = median_time(
            lambda p=pred, g=gt, s=spacing, t=tol: compute_surface_dice(
                onehot(p), onehot(g), [t], spacing=s, use_subvoxels=True
            ).item(),
            args.repeats,
        )
        diff = abs(float(ours) - float(ref))
        ok &= diff <= 1e-6
        rows.append(
            f"| NSD | {name} | {spacing} | {tol:g} | {ours:.6f} | {ref:.6f} | {diff:.1e} | "
            f"{tp * 1e3:.1f} ({cp * 1e3:.1f}) | {tm * 1e3:.1f} ({cm * 1e3:.1f}) | "
            f"**{tm / tp:.1f}x** ({cm / cp:.1f}x) |"
        )
        print(rows[-1], flush=True)
    for name, pred, gt, spacing, _ in (cases[0], cases[3]):
        tp, cp, ours = median_time(
            lambda p=pred, g=gt, s=spacing: hausdorff_distance(p, g, 95, s), args.repeats
        )
        tm, cm, ref = median_time(
            lambda p=pred, g=gt, s=spacing: compute_hausdorff_distance(
                onehot(p), onehot(g), percentile=95, spacing=s
            ).item(),
            args.repeats,
        )
        diff = abs(float(ours) - float(ref)) / max(abs(float(ref)), 1e-12)
        ok &= diff <= 1e-5
        rows.append(
            f"| HD95 | {name} | {spacing} | - | {ours:.4f} | {ref:.4f} | {diff:.1e} (rel) | "
            f"{tp * 1e3:.1f} ({cp * 1e3:.1f}) | {tm * 1e3:.1f} ({cm * 1e3:.1f}) | "
            f"**{tm / tp:.1f}x** ({cm / cp:.1f}x) |"
        )
        print(rows[-1], flush=True)

    text = "\n".join(
        [
            "## NSD and HD95 vs MONAI (`python benchmarks/bench_metrics.py`)",
            "",
            f"Machine: {machine_info()}. Median of {args.repeats} repeats after one warm-up; "
            f"CPU, one process, torch threads {args.threads}. Times: wall ms (CPU ms of the "
            "process in brackets: on a shared machine it is less sensitive to the load than wall "
            "time, though contention still inflates it). MONAI reference: `compute_surface_dice(use_subvoxels=True)` and "
            "`compute_hausdorff_distance(percentile=95)` on one-hot tensors.",
            "",
            "| metric | case | spacing | tolerance | ours | MONAI | diff | ours ms | MONAI ms | speed-up |",
            "|---|---|---|---|---|---|---|---|---|---|",
            *rows,
            "",
            f"All values agree with the reference: {'yes' if ok else 'NO'}.",
        ]
    )
    if not args.no_write:
        write_section("metrics", text)
        print(f"wrote {RESULTS}")
    if not ok:
        sys.exit("values differ from the MONAI reference")


if __name__ == "__main__":
    main()
