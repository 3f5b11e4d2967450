"""Launched by the stop tests in a subprocess, alone or under ``torchrun`` (not a test module):
``segloss train`` with slow training steps or slow scoring, to stop a run in the middle of them
as a scheduler's SIGTERM would.

Usage: python _slow_train_script.py {steps,scoring} READY SKIP SECONDS [segloss train args ...]

``steps`` slows the training steps, ``scoring`` each image scored (validation and eval.json).
After the first SKIP of them in this process each takes SECONDS longer, and the first slow one
creates the file READY (``READY.<rank>`` under torchrun) holding its process id. Each one done appends a line to
READY.log (``READY.<rank>.log``). Exits with the exit code of ``segloss train``.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

import napari_segloss.engine.evaluation as evaluation
import napari_segloss.engine.training as training
from napari_segloss.cli import main as segloss_main

#: what each mode slows: (module, function name)
TARGETS = {"steps": (training, "_step"), "scoring": (evaluation, "evaluate")}


def main() -> int:
    torch.set_num_threads(1)
    mode, ready, skip, seconds = (
        sys.argv[1],
        Path(sys.argv[2]),
        int(sys.argv[3]),
        float(sys.argv[4]),
    )
    if "RANK" in os.environ:
        ready = ready.with_name(f"{ready.name}.{os.environ['RANK']}")
    log = ready.with_name(f"{ready.name}.log")
    module, name = TARGETS[mode]
    real = getattr(module, name)
    calls = {"n": 0}

    def slow(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] > skip:
            ready.write_text(str(os.getpid()))  # this process, for a signal to it alone
            time.sleep(seconds)
        with log.open("a") as fh:
            fh.write(f"{calls['n']}\n")
        return real(*args, **kwargs)

    setattr(module, name, slow)
    return segloss_main(["train", *sys.argv[5:]])


if __name__ == "__main__":
    sys.exit(main())
