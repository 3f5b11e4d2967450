"""Launched by test_distributed.py under ``torchrun --nproc_per_node=2`` (not a test module).

Usage: python -m torch.distributed.run --nproc_per_node=2 _dist_slow_eval_script.py DATA OUT

Trains the tiny config in a process group whose collectives time out after ``TIMEOUT_S``,
with rank 0's final evaluation (eval.json, rank 0 alone) taking twice as long: a rank that
waited for it in a collective would time out, as NCCL ranks do after 10 minutes on a large
held-out set.
"""

from __future__ import annotations

import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from _dist_common import tiny_config

import napari_segloss.engine.training as training
from napari_segloss.engine import train

TIMEOUT_S = 5


def main() -> None:
    torch.set_num_threads(1)
    data_root, out = Path(sys.argv[1]), Path(sys.argv[2])
    dist.init_process_group("gloo", timeout=timedelta(seconds=TIMEOUT_S))
    real_write_eval = training.write_eval

    def slow_write_eval(*args: Any, **kwargs: Any) -> Any:
        time.sleep(2 * TIMEOUT_S)
        return real_write_eval(*args, **kwargs)

    training.write_eval = slow_write_eval
    done = train(tiny_config(data_root, out, epochs=1), progress=False)
    assert not done.stopped, done.reason
    assert (done.eval is not None) == (dist.get_rank() == 0)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
