"""Did a change to the losses make them faster? The working tree's losses against those of an
earlier git revision, paired in one process.

Usage::

    python benchmarks/bench_losses_ab.py HEAD~1                     # the usual losses, 2D
    python benchmarks/bench_losses_ab.py main --losses ce,combo --rounds 40 --case 3d

The ``napari_segloss/losses`` package of ``REV`` is extracted with ``git archive`` into a
temporary folder and imported under another name (the package uses relative imports only), so
both versions run in the same process on the same tensors (``--classes 1``: binary logits, MONAI with ``sigmoid=True``). Each round times every loss of both
versions (and MONAI's ``DiceLoss`` as the reference of the other benchmarks) once, in a shuffled
order; the table gives the medians and, per loss, the median and quartiles of the per-round
ratio new / old, which is robust to the load changes of a shared machine. Before timing, each
loss's value and gradient are compared between the versions.
"""

from __future__ import annotations

import argparse
import importlib
import io
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from types import ModuleType

import torch
from _report import emit, interleaved_rounds, machine_line
from monai.losses import DiceLoss as MonaiDiceLoss

from napari_segloss.losses import get_loss

REPO = Path(__file__).resolve().parents[1]
CASES = {"2d": (8, 4, 256, 256), "3d": (2, 4, 64, 128, 128)}
DEFAULT_LOSSES = "ce,focal,dice,pm_dice,combo,unified_focal,ce+pm_dice"


def import_old_losses(rev: str, into: Path) -> ModuleType:
    """``napari_segloss.losses`` as of ``rev``, imported as ``segloss_ab_old.losses``."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", rev, "napari_segloss/losses"],
        check=True,
        capture_output=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    pkg = into / "segloss_ab_old"
    (into / "napari_segloss").rename(pkg)
    (pkg / "__init__.py").write_text("")
    sys.path.insert(0, str(into))
    return importlib.import_module("segloss_ab_old.losses")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rev", help="git revision whose losses are the baseline (e.g. HEAD~1)")
    ap.add_argument("--losses", default=DEFAULT_LOSSES, help="comma-separated loss names")
    ap.add_argument("--rounds", type=int, default=30, help="timed rounds (median)")
    ap.add_argument("--case", choices=sorted(CASES), default="2d")
    ap.add_argument("--classes", type=int, default=4, help="output channels (1: binary)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--out", type=Path, help="append the Markdown report here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    names = [n.strip() for n in args.losses.split(",") if n.strip()]

    with tempfile.TemporaryDirectory() as tmp:
        old = import_old_losses(args.rev, Path(tmp))
        b, _, *spatial = CASES[args.case]
        shape = (b, args.classes, *spatial)
        g = torch.Generator().manual_seed(0)
        x = torch.randn(*shape, generator=g).requires_grad_(True)
        y = torch.randint(0, max(args.classes, 2), (b, *spatial), generator=g)
        binary = args.classes == 1
        monai = MonaiDiceLoss(sigmoid=binary, softmax=not binary, to_onehot_y=not binary)
        calls = {"MONAI DiceLoss": lambda: monai(x, y.unsqueeze(1)).backward()}
        checks = []
        for n in names:
            new_loss = get_loss(n, validate=False)
            old_loss = old.get_loss(n, validate=False)
            calls[f"new {n}"] = lambda f=new_loss: f(x, y).backward()
            calls[f"old {n}"] = lambda f=old_loss: f(x, y).backward()
            (g_new,) = torch.autograd.grad(v_new := new_loss(x, y), x)
            (g_old,) = torch.autograd.grad(v_old := old_loss(x, y), x)
            checks.append(
                f"{n}: value diff {float((v_new - v_old).abs()):.1e}, max gradient diff "
                f"{float((g_new - g_old).abs().max()):.1e} (max |gradient| "
                f"{float(g_new.abs().max()):.1e})"
            )
        times = interleaved_rounds(calls, args.rounds, after=lambda: setattr(x, "grad", None))

    def med(v: list[float]) -> float:
        return sorted(v)[len(v) // 2]

    ref = med(times["MONAI DiceLoss"])
    lines = [
        f"## Losses, working tree vs `{args.rev}`, forward+backward, {args.case.upper()} "
        f"{tuple(shape)}",
        "",
        f"{machine_line()}. Median of {args.rounds} interleaved rounds; MONAI DiceLoss "
        f"{ref * 1e3:.2f} ms. Command: `python benchmarks/bench_losses_ab.py "
        f"{' '.join(sys.argv[1:])}`",
        "",
        "| loss | old ms | new ms | new / old per round: median (quartiles) | old x MONAI "
        "| new x MONAI |",
        "|---|---:|---:|---|---:|---:|",
    ]
    for n in names:
        o, w = med(times[f"old {n}"]), med(times[f"new {n}"])
        paired = sorted(a / b for a, b in zip(times[f"new {n}"], times[f"old {n}"], strict=True))
        q = len(paired) // 4
        lines.append(
            f"| {n} | {o * 1e3:.2f} | {w * 1e3:.2f} | {med(paired):.2f} "
            f"({paired[q]:.2f}-{paired[-q - 1]:.2f}) | {o / ref:.2f} | {w / ref:.2f} |"
        )
    lines += ["", "Same values and gradients:", *(f"- {c}" for c in checks)]
    emit(lines, args.out)


if __name__ == "__main__":
    main()
