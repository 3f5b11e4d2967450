"""Launched by test_distributed.py under ``torchrun --nproc_per_node=2`` (not a test module).

Usage: python -m torch.distributed.run --nproc_per_node=2 _dist_train_script.py DATA_ROOT OUT_DIR

Every rank trains the same tiny config through :func:`napari_segloss.engine.train`, then saves
its own final weights to ``OUT_DIR/../weights_rank{R}.pt`` (outside the run directory) so the
test can check that DistributedDataParallel kept the replicas identical. A second training
in the same processes follows.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from _dist_common import tiny_config

from napari_segloss.engine import train
from napari_segloss.engine.checkpoint import load_checkpoint


def main() -> None:
    torch.set_num_threads(1)
    data_root, out = Path(sys.argv[1]), Path(sys.argv[2])
    cfg = tiny_config(data_root, out, epochs=2, crop=[24, 24])
    import napari_segloss.engine.run_state as run_state

    models: list[torch.nn.Module] = []
    real_build = run_state.build_model

    def capture(model_cfg: object) -> torch.nn.Module:
        models.append(real_build(model_cfg))
        return models[-1]

    run_state.build_model = capture  # keep a handle on this rank's replica
    done = train(cfg, progress=False)
    assert not done.stopped, done.reason
    rank = int(os.environ["RANK"])
    weights = {k: v.detach().clone() for k, v in models[0].state_dict().items()}
    torch.save(weights, out.parent / f"weights_rank{rank}.pt")
    if rank == 0:
        ck = load_checkpoint(out / "checkpoint.pt")
        assert all(torch.equal(ck["model"][k], weights[k]) for k in ck["model"])
    # train() keeps the group it created for the process: a second training in this process
    # (segloss compare's next loss) reuses it; re-creating it read stale store keys and failed
    assert dist.is_initialized()
    group = dist.group.WORLD
    again = train(tiny_config(data_root, out.parent / "again", epochs=1), progress=False)
    assert not again.stopped, again.reason
    assert dist.group.WORLD is group


if __name__ == "__main__":
    main()
