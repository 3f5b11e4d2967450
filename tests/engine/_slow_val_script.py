"""Launched by the stop tests in a subprocess, alone or under ``torchrun`` (not a test module):
``segloss train`` whose validation and final evaluation score each image slowly, to stop a run
in the middle of them as a scheduler's SIGTERM would.

Usage: python _slow_val_script.py READY SKIP SECONDS [segloss train arguments ...]

After the first SKIP images this process scores (validation and eval.json), each image takes
SECONDS longer, and the first slow one creates the file READY (``READY.<rank>`` under torchrun).
Every image scored appends a line to READY.scored (``READY.<rank>.scored``). Exits with the exit
code of ``segloss train``.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

import napari_segloss.engine.evaluation as evaluation
from napari_segloss.cli import main as segloss_main


def main() -> int:
    torch.set_num_threads(1)
    ready, skip, seconds = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    if "RANK" in os.environ:
        ready = ready.with_name(f"{ready.name}.{os.environ['RANK']}")
    scored = ready.with_name(f"{ready.name}.scored")
    real_evaluate = evaluation.evaluate
    calls = {"n": 0}

    def slow_evaluate(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] > skip:
            ready.touch()
            time.sleep(seconds)
        with scored.open("a") as fh:
            fh.write(f"{calls['n']}\n")
        return real_evaluate(*args, **kwargs)

    evaluation.evaluate = slow_evaluate
    return segloss_main(["train", *sys.argv[4:]])


if __name__ == "__main__":
    sys.exit(main())
