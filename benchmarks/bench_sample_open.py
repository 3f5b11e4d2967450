"""How long napari takes to open the plugin's sample data: two source trees, fresh processes.

Usage (needs a display; Xvfb on a headless machine)::

    git worktree add /tmp/segloss_old HEAD~1
    xvfb-run -a -s "-screen 0 1920x1200x24" python benchmarks/bench_sample_open.py \\
        /tmp/segloss_old . --runs 8 --sample kvasir acdc

Each run is a fresh interpreter with ``PYTHONPATH=TREE`` that opens a napari window, lets it
settle, then times ``viewer.open_sample("napari-segloss", SAMPLE)`` plus the event-loop turns
that draw the new layers, and reports whether torch was imported. The two trees alternate (old
first in odd runs), so load changes of a shared machine fall on both; the table gives the
median (range) per tree and the ratio new / old of the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _report import ab_table

CHILD = """
import json, sys, time
import napari
from qtpy.QtWidgets import QApplication
viewer = napari.Viewer()
app = QApplication.instance()
for _ in range(20):
    app.processEvents()
start = time.perf_counter()
viewer.open_sample("napari-segloss", sys.argv[1])
for _ in range(20):
    app.processEvents()
seconds = time.perf_counter() - start
import napari_segloss
print(json.dumps({"s": seconds, "torch": "torch" in sys.modules, "file": napari_segloss.__file__}))
viewer.close()
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", help="source tree of the reference (a git worktree)")
    parser.add_argument("new", help="source tree measured against it")
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--sample", nargs="+", default=["kvasir"], help="sample keys")
    args = parser.parse_args()
    trees = {"old": str(Path(args.old).resolve()), "new": str(Path(args.new).resolve())}
    times = {s: {"old": [], "new": []} for s in args.sample}
    torch_loaded = set()
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(args.runs):
            for sample in args.sample:
                for name in ("old", "new") if run % 2 == 0 else ("new", "old"):
                    out = subprocess.run(
                        [sys.executable, "-c", CHILD, sample],
                        env={**os.environ, "PYTHONPATH": trees[name]},
                        capture_output=True,
                        text=True,
                        check=True,
                        cwd=tmp,  # not a source tree: `python -c` puts the cwd first on sys.path
                    )
                    result = json.loads(out.stdout.strip().splitlines()[-1])
                    assert result["file"].startswith(trees[name]), result["file"]
                    times[sample][name].append(result["s"])
                    if result["torch"]:
                        torch_loaded.add(f"{name} {sample}")
    print(f"{args.runs} runs per tree, alternating; s to open the sample and draw it\n")
    print("\n".join(ab_table("sample", {f"`{s}`": t for s, t in times.items()})))
    print(f"torch imported in: {sorted(torch_loaded) or 'none'}")
    print(json.dumps({"load_average": os.getloadavg()}))


if __name__ == "__main__":
    main()
