"""Launched by test_faults.py in a subprocess (not a test module): train a YAML config with a
hook between steps, to hold a run at a known point or kill it there.

Usage: python _train_hook_script.py CONFIG.yaml [--pause READY GO] [--kill-at N]

``--pause READY GO``: before the first step, create the file READY and wait until GO exists.
``--kill-at N``: at the N-th call of the ``should_stop`` hook (made before each step and each
validation batch), SIGKILL this process (no cleanup of any kind runs).
Prints the final event's ``reason`` and exits 0 when training completes.
"""

from __future__ import annotations

import argparse
import os
import signal
import time
from pathlib import Path

import torch

from napari_segloss.engine.config import load_config
from napari_segloss.engine.training import train


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("--pause", nargs=2, metavar=("READY", "GO"))
    parser.add_argument("--kill-at", type=int)
    args = parser.parse_args()
    torch.set_num_threads(1)  # as the in-process reference runs (tests/conftest.py)
    calls = {"n": 0}

    def hook() -> bool:
        calls["n"] += 1
        if args.pause and calls["n"] == 1:
            Path(args.pause[0]).touch()
            deadline = time.monotonic() + 300
            while not Path(args.pause[1]).exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        if args.kill_at is not None and calls["n"] == args.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return False

    done = train(load_config(args.config), should_stop=hook, progress=False)
    print(done.reason)


if __name__ == "__main__":
    main()
