"""Benchmark: eval.json's scoring pass with one image per forward pass against batches.

``evaluate_dataset`` (what validation and eval.json run) on a run's validation split, with every
metric as eval.json takes them (NSD and HD95 included), alternating ``batch_size=1`` and
``--batch-size`` in one process; also checks that the per-image metrics are identical.

    python benchmarks/bench_eval_batch.py --root /path/to/kvasir-seg                 # shipped
    python benchmarks/bench_eval_batch.py --root /path/to/kvasir-seg --config quickstart \\
        --set data.val_fraction=0.1
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

from napari_segloss.data.factory import build_datasets
from napari_segloss.engine.config import load_config
from napari_segloss.engine.evaluation import EvalSettings, evaluate_dataset
from napari_segloss.engine.model import build_model, output_stride
from napari_segloss.losses import get_loss


def _same(a: list[dict], b: list[dict]) -> bool:
    """Per-image metric dicts equal value for value (NaN equal to NaN)."""
    for ra, rb in zip(a, b, strict=True):
        for c in ra:
            for k, v in ra[c].items():
                w = rb[c][k]
                if not (v == w or (math.isnan(v) and math.isnan(w))):
                    return False
    return True


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", required=True, help="an images/ + masks/ folder (Kvasir-SEG)")
    p.add_argument("--config", default="kvasir_pm_dice")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--images", type=int, default=0, help="the first N images (0: all)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config, [f"data.root={args.root}", "output=/tmp/unused", *args.set])
    _, val_ds = build_datasets(cfg)
    val_ds.validate(num_classes=2, in_channels=cfg.model.in_channels)
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    loss_fn = get_loss(cfg.loss.name, **cfg.loss.params)
    settings = EvalSettings(
        torch.device("cpu"), max(cfg.model.classes, 2), multiple=int(output_stride(model))
    )
    indices = list(range(len(val_ds)))[: args.images or None]
    evaluate_dataset(model, val_ds, indices, settings, surface=False)  # warm the image cache
    batches: dict[int, list[torch.Tensor]] = {1: [], args.batch_size: []}  # forwards alone
    for bs, stacks in batches.items():
        for i in range(0, len(indices), bs):
            stacks.append(torch.stack([val_ds[j][0] for j in indices[i : i + bs]]))
    times: dict[tuple[str, int], list[float]] = {}
    results: dict[int, list[dict]] = {}
    for _ in range(args.rounds):
        for bs in batches:
            t = time.perf_counter()
            _, _, per_image = evaluate_dataset(
                model, val_ds, indices, settings, loss_fn=loss_fn, batch_size=bs
            )
            times.setdefault(("eval", bs), []).append(time.perf_counter() - t)
            results[bs] = per_image
            t = time.perf_counter()
            with torch.inference_mode():
                for x in batches[bs]:
                    model(x)
            times.setdefault(("forward", bs), []).append(time.perf_counter() - t)
    size = "x".join(map(str, cfg.data.size or ["native"]))
    print(f"{cfg.model.encoder} U-Net, {len(indices)} images at {size}, {args.threads} threads")
    for what in ("eval", "forward"):
        one = statistics.median(times[(what, 1)])
        many = statistics.median(times[(what, args.batch_size)])
        for bs in batches:
            print(f"{what} batch {bs}: {[round(t, 2) for t in times[(what, bs)]]} s")
        print(f"{what}: batch {args.batch_size} / batch 1 (medians) = {many / one:.3f}")
    print(f"per-image metrics identical: {_same(results[1], results[args.batch_size])}")


if __name__ == "__main__":
    main()
