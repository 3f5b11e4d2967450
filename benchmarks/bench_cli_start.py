"""How long until ``segloss`` answers: fresh processes of two source trees, interleaved.

Usage::

    git worktree add /tmp/segloss_old HEAD~1
    python benchmarks/bench_cli_start.py /tmp/segloss_old . --runs 9

Each run starts a fresh interpreter with ``PYTHONPATH=TREE`` and runs ``segloss ARGS`` (the
``main`` of ``napari_segloss.cli``, as the console script does); the time is from spawning the
process to its exit, which is when the help text or the error line has been printed. The two
trees alternate (old first in even runs, new first in odd ones), so load changes of a shared
machine fall on both. The table gives the median (range) of each tree and the ratio new / old
of the medians. ``--importtime`` also prints the heavy top-level packages each command loaded.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _report import ab_table
from PIL import Image

HEAVY = ("torch", "torchvision", "segmentation_models_pytorch", "timm", "monai", "pydantic")
HEAVY += ("napari", "matplotlib", "pandas", "scipy", "skimage", "nibabel", "tifffile", "PIL")
RUN = "import sys; from napari_segloss.cli import main; sys.exit(main(sys.argv[1:]))"
PROBE = (
    "import json, sys\nfrom napari_segloss.cli import main\ntry:\n    main(sys.argv[1:])\n"
    "except SystemExit:\n    pass\n"
    "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & set(%r))), file=sys.stderr)"
)


def cases(tmp: Path) -> dict[str, list[str]]:
    """The invocations timed; ``evaluate`` scores three 256x256 PNG pairs."""
    for role in ("pred", "gt"):
        (tmp / role).mkdir()
        for k in range(3):
            mask = np.zeros((256, 256), np.uint8)
            mask[40 : 120 + 5 * k, 50 + 4 * (role == "gt") : 160] = 1
            Image.fromarray(mask).save(tmp / role / f"f{k}.png")
    evaluate = ["evaluate", "--pred", str(tmp / "pred"), "--gt", str(tmp / "gt")]
    return {
        "--help": ["--help"],
        "train --help": ["train", "--help"],
        "evaluate --help": ["evaluate", "--help"],
        "train (no --config)": ["train"],
        "train --config missing.yaml": ["train", "--config", str(tmp / "missing.yaml")],
        "evaluate, 3 PNG pairs": [*evaluate, "--output", str(tmp / "out")],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", help="source tree of the reference (a git worktree)")
    parser.add_argument("new", help="source tree measured against it")
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--importtime", action="store_true", help="list heavy modules loaded")
    args = parser.parse_args()
    trees = {"old": str(Path(args.old).resolve()), "new": str(Path(args.new).resolve())}
    env = {**os.environ, "SEGLOSS_MALLOC_TUNING": os.environ.get("SEGLOSS_MALLOC_TUNING", "1")}
    with tempfile.TemporaryDirectory() as tmp:
        todo = cases(Path(tmp))
        if args.importtime:
            for case, argv in todo.items():
                for name, tree in trees.items():
                    out = subprocess.run(
                        [sys.executable, "-c", PROBE % (HEAVY,), *argv],
                        env={**env, "PYTHONPATH": tree},
                        capture_output=True,
                        text=True,
                        check=False,
                        cwd=tmp,
                    )
                    print(f"{name}: segloss {case}: {out.stderr.strip().splitlines()[-1]}")
        times: dict[str, dict[str, list[float]]] = {c: {"old": [], "new": []} for c in todo}
        for run in range(args.runs):
            for case, argv in todo.items():
                for name in ("old", "new") if run % 2 == 0 else ("new", "old"):
                    start = time.perf_counter()
                    done = subprocess.run(
                        [sys.executable, "-c", RUN, *argv],
                        env={**env, "PYTHONPATH": trees[name]},
                        capture_output=True,
                        text=True,
                        check=False,
                        cwd=tmp,  # not a source tree: `python -c` puts the cwd first on sys.path
                    )
                    times[case][name].append(time.perf_counter() - start)
                    if done.returncode not in (0, 2):
                        raise SystemExit(f"segloss {case} ({name}) failed:\n{done.stderr}")
    print(f"\n{args.runs} runs per tree, alternating; s from spawning the process to its exit\n")
    named = {f"`segloss {case}`": by_tree for case, by_tree in times.items()}
    print("\n".join(ab_table("command", named, digits=3)))
    print(json.dumps({"load_average": os.getloadavg()}))


if __name__ == "__main__":
    main()
