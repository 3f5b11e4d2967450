"""What a training step draws: the epoch order, augmentation seeds, batches and the RNG state.

Reproducible resume rests on two rules. The sampler derives the shuffling *and* each sample's
augmentation seed from ``(seed, epoch, index)``, so neither depends on worker processes or on
where a run was interrupted. Checkpoints store the python/numpy/torch/CUDA/DataLoader RNG
states (:func:`rng_state`), restored by :func:`set_rng_state`. Resuming then gives the same
weights as an uninterrupted run (tested on CPU, also after ``kill -9``).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DistributedSampler, Sampler

from ..data.datasets import SegmentationDataset

__all__ = [
    "IN_MEMORY_MAX_BYTES",
    "EpochSampler",
    "InMemoryBatches",
    "deterministic_items",
    "rng_state",
    "seed_everything",
    "set_rng_state",
]

#: Largest training set (bytes of cached uint8/float pixels + masks) served from stacked tensors.
IN_MEMORY_MAX_BYTES = 2 * 1024**3


class EpochSampler(Sampler):
    """DistributedSampler whose items are ``(index, augmentation_seed)`` pairs.

    The order comes from ``DistributedSampler(shuffle=True, seed=seed)`` (also with one process)
    and each item's augmentation seed from ``(seed, epoch, index)``: both are pure functions of
    the epoch, so a run resumed mid-epoch (``set_start``) replays exactly the same batches.
    """

    def __init__(
        self, dataset: SegmentationDataset, *, seed: int, rank: int = 0, world_size: int = 1
    ) -> None:
        self.base = DistributedSampler(
            dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=False
        )
        self.seed = int(seed)
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (its shuffle and augmentation seeds); resets :meth:`set_start`."""
        self.epoch = int(epoch)
        self.base.set_epoch(self.epoch)
        self.start = 0

    def set_start(self, start: int) -> None:
        """Skip the first ``start`` samples of this epoch (resume mid-epoch)."""
        self.start = int(start)

    def sample_seed(self, index: int) -> int:
        """Augmentation seed of dataset item ``index`` in the current epoch."""
        return ((self.seed * 1_000_003 + self.epoch) * 1_000_033 + int(index)) % (2**63 - 1)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for pos, idx in enumerate(self.base):
            if pos >= self.start:
                yield idx, self.sample_seed(idx)

    def __len__(self) -> int:
        return max(0, len(self.base) - self.start)

    def batch_indices(self, batch: int, batch_size: int) -> list[int]:
        """Dataset indices of the ``batch``-th batch of the current pass (for error messages:
        the order is a pure function of the epoch, so it can be recomputed after the fact)."""
        items = list(self)[batch * batch_size : (batch + 1) * batch_size]
        return [i for i, _ in items]


def deterministic_items(ds: SegmentationDataset) -> bool:
    """True when a training item does not depend on its seed (no augmentation, no crop)."""
    return not (getattr(ds, "augment", True) or getattr(ds, "crop", None) is not None)


class InMemoryBatches:
    """The whole training set as two stacked tensors, batched by index: no DataLoader at all.

    Used when items are deterministic (no augmentation/crop) and fit ``IN_MEMORY_MAX_BYTES``:
    per-step cost is one gather (on the GPU when the stack fits there), like a hand-written
    loop over in-memory tensors. Batches and order are identical to the DataLoader path.
    ``ok`` is False when the set is too large (then use a DataLoader).
    """

    def __init__(
        self,
        ds: SegmentationDataset,
        sampler: EpochSampler,
        batch_size: int,
        drop_last: bool,
        device: torch.device,
    ) -> None:
        self.sampler, self.batch_size, self.drop_last = sampler, batch_size, drop_last
        first = ds[0][0]
        per_item = first.numel() * first.element_size() + first[0].numel()
        self.ok = len(ds) * per_item <= IN_MEMORY_MAX_BYTES
        if not self.ok:
            return
        items = [ds[i] for i in range(len(ds))]
        self.x = torch.stack([img for img, _ in items])
        self.y = torch.stack([m.to(torch.uint8) for _, m in items])  # labels < 256 (validated)
        if device.type == "cuda":
            self.x, self.y = self.x.to(device), self.y.to(device)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.tensor([i for i, _ in self.sampler], dtype=torch.long)
        stop = len(order) - (len(order) % self.batch_size if self.drop_last else 0)
        order = order.to(self.x.device)
        for s in range(0, stop, self.batch_size):
            idx = order[s : s + self.batch_size]
            yield self.x.index_select(0, idx), self.y.index_select(0, idx).long()


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    """Python, numpy, torch (CPU and CUDA) and DataLoader RNG states, checkpoint-safe."""
    # The legacy global numpy RNG is what user code (and old libraries) draw from: save it.
    np_state = np.random.get_state()  # noqa: NPY002
    state: dict[str, Any] = {
        "python": random.getstate(),
        # numpy's state holds an ndarray; lists keep the checkpoint loadable with weights_only.
        "numpy": [
            np_state[0],
            np_state[1].tolist(),
            int(np_state[2]),
            int(np_state[3]),
            float(np_state[4]),
        ],
        "torch": torch.get_rng_state(),
        "loader": generator.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    """Restore what :func:`rng_state` saved (CUDA only with the same number of devices)."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), n[2], n[3], n[4]))  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    generator.set_state(state["loader"])
    if (
        "cuda" in state
        and torch.cuda.is_available()
        and len(state["cuda"]) == torch.cuda.device_count()
    ):
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    """Seed python's, numpy's legacy and torch's global RNGs."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002
    torch.manual_seed(seed)
