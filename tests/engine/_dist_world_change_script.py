"""Launched by test_distributed.py under ``torchrun --nproc_per_node=2`` (not a test module).

Usage: python -m torch.distributed.run --nproc_per_node=2 _dist_world_change_script.py DATA OUT

Resumes ``OUT/one`` (one epoch trained by a single process) to 3 epochs on 2 processes, and
trains ``OUT/two`` for one epoch on 2 processes (the test resumes it in a single process).
The group is created here, once, for both trainings (``train`` then leaves it alone).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from _dist_common import tiny_config

from napari_segloss.engine import train


def main() -> None:
    torch.set_num_threads(1)
    data_root, out = Path(sys.argv[1]), Path(sys.argv[2])
    dist.init_process_group("gloo")
    done = train(tiny_config(data_root, out / "one", epochs=3), resume=True, progress=False)
    assert not done.stopped, done.reason
    done = train(tiny_config(data_root, out / "two", epochs=1), progress=False)
    assert not done.stopped, done.reason
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
