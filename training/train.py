"""Headless training entry point, equivalent to ``segloss train`` and ready for ``torchrun``.

    python training/train.py --config training/configs/kvasir_pm_dice.yaml --set data.root=/data/kvasir-seg
    torchrun --nproc_per_node=4 training/train.py --config training/configs/kvasir_pm_dice.yaml \\
        --set data.root=/data/kvasir-seg train.batch_size=8   # batch size per process

Under ``torchrun`` every process runs this script; the training loop reads ``RANK``/
``WORLD_SIZE``/``LOCAL_RANK``, wraps the model in DistributedDataParallel with a
DistributedSampler (NCCL on GPUs, gloo on CPU) and only rank 0 writes the run directory and
prints the summary. All options are those of ``segloss train --help``.
"""

from __future__ import annotations

import sys

from napari_segloss.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
