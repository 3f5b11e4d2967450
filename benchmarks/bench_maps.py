"""Benchmark: per-pixel maps (napari_segloss.maps) on a 1024x1024 image on CPU.

For every registered loss (or ``--losses``), ``contribution_map`` (kind "gradient" and "value") and ``modulating_map`` on a
binary (1 logit channel) and a 4-class 1024x1024 image; median milliseconds over repeats.
Target: well under 100 ms per map. Writes the "maps" section of benchmarks/results_metrics.md.

    python benchmarks/bench_maps.py [--repeats 7] [--no-write]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import allocator_line
from bench_metrics import RESULTS, machine_info, median_time, write_section


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch threads (0: torch's default, what the napari panel runs with)",
    )
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument(
        "--losses", default="", help="comma-separated subset (default: every registered name)"
    )
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from napari_segloss.losses import list_losses
    from napari_segloss.maps import contribution_map, modulating_map

    names = [n.strip() for n in args.losses.split(",") if n.strip()] or list_losses()

    torch.manual_seed(0)
    n = args.size
    inputs = {
        "binary": (torch.randn(1, 1, n, n), (torch.rand(1, n, n) > 0.85).long()),
        "4-class": (torch.randn(1, 4, n, n), torch.randint(0, 4, (1, n, n))),
    }
    rows = []
    worst = (0.0, "")
    for name in names:
        cells = []
        for case, (logits, target) in inputs.items():
            for kind in ("gradient", "value"):
                t, c, _ = median_time(
                    lambda x=logits, y=target, k=kind, nm=name: contribution_map(nm, x, y, kind=k),
                    args.repeats,
                )
                if t > worst[0]:
                    worst = (t, f"`{name}`, {case} {kind}")
                cells.append(f"{t * 1e3:.1f} ({c * 1e3:.1f})")
        rows.append(f"| `{name}` | " + " | ".join(cells) + " |")
        print(rows[-1], flush=True)
    cells = []
    for logits, target in inputs.values():
        probs = torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, 1)
        t, c, _ = median_time(lambda p=probs, y=target: modulating_map(p, y, 1.0), args.repeats)
        cells += [f"{t * 1e3:.1f} ({c * 1e3:.1f})", "-"]
    rows.append("| `modulating_map` (gamma=1) | " + " | ".join(cells) + " |")
    print(rows[-1])

    text = "\n".join(
        [
            f"## Per-pixel maps, {n}x{n} on CPU (`python benchmarks/bench_maps.py`)",
            "",
            f"Machine: {machine_info()}; {allocator_line()}. Median of {args.repeats} repeats after one warm-up, "
            f"torch threads {torch.get_num_threads()}; wall ms per call (CPU ms of the process in brackets: "
            "on a shared machine it is less sensitive to the load than wall time, though contention "
            "still inflates it). Batch 1, "
            "float32, losses built by name with their defaults (`validate=True`).",
            "",
            "| loss | binary gradient | binary value | 4-class gradient | 4-class value |",
            "|---|---|---|---|---|",
            *rows,
            "",
            f"Slowest map: {worst[0] * 1e3:.1f} ms wall ({worst[1]}; target: well under 100 ms).",
        ]
    )
    if not args.no_write:
        write_section("maps", text)
        print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
