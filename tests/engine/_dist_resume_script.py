"""Launched by test_distributed.py under ``torchrun --nproc_per_node=2`` (not a test module).

Usage: python -m torch.distributed.run --nproc_per_node=2 _dist_resume_script.py DATA_ROOT OUT_DIR

Trains the same tiny config three times in one process group: straight through into
``OUT_DIR/straight``, then into ``OUT_DIR/resumed`` stopped mid-epoch (rank 1 alone asks to
stop: the ranks agree on it) and resumed. The test compares the two run directories. The group
is created here, once, so that the three trainings share it (``train`` then leaves it alone).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from _dist_common import tiny_config

from napari_segloss.engine import train
from napari_segloss.engine.checkpoint import load_checkpoint
from napari_segloss.engine.events import TrainEpoch

#: 12 images, val_fraction 0.25 -> 9 training images -> 5 per rank (padded), batch 2: 2 steps
STEPS_PER_EPOCH = 2
#: stop after this many steps (epoch 2, one step in): under DDP a stop asked before a step is
#: agreed on at the log step right after it
STOP_AFTER = 3


def main() -> None:
    torch.set_num_threads(1)
    data_root, out = Path(sys.argv[1]), Path(sys.argv[2])
    dist.init_process_group("gloo")
    rank = dist.get_rank()

    def cfg(name: str) -> object:
        return tiny_config(data_root, out / name, epochs=3)

    assert not train(cfg("straight"), progress=False).stopped
    epochs_done = {"n": 0}

    def count_epochs(event: object) -> None:
        epochs_done["n"] += isinstance(event, TrainEpoch)

    def should_stop() -> bool:  # asked before step 3, once epoch 1 (and its validation) ended
        return rank == 1 and epochs_done["n"] * STEPS_PER_EPOCH >= STOP_AFTER - 1

    first = train(cfg("resumed"), should_stop=should_stop, on_event=count_epochs, progress=False)
    assert first.stopped and first.iteration == STOP_AFTER, first.reason
    if rank == 0:
        ck = load_checkpoint(out / "resumed" / "checkpoint.pt")
        assert (ck["epoch"], ck["epoch_step"]) == divmod(STOP_AFTER, STEPS_PER_EPOCH), ck
    second = train(cfg("resumed"), resume=True, progress=False)
    assert not second.stopped and second.iteration == 3 * STEPS_PER_EPOCH, second.reason
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
