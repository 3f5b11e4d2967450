"""The work the Loss Explorer runs in its thread worker, as generator functions that touch
no Qt object.

Each ``*_job`` returns a :data:`Job`: a function whose generator yields :data:`Progress`
and returns its result, which the panel hands to ``progress_worker``. The core imports torch
(about 2 s the first time): :func:`core` and :func:`inference` import it on first call, which
the panel makes in a worker, never on the main thread before that.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_segloss.whatif import labels_to_probabilities, make_whatif

from ._compat import preload_torch_libraries
from ._names import PanelError
from ._workers import ModelSlot, frame_progress

if TYPE_CHECKING:
    import inspect

    from napari_segloss.explorer import ExplorerResult

__all__ = [
    "ARRANGE_WAIT_S",
    "Job",
    "Progress",
    "checkpoint_job",
    "core",
    "explorer_job",
    "inference",
    "labels_job",
    "load_catalog",
    "probability_image_job",
    "slice_job",
    "whatif_job",
]

#: progress of a computation: (steps done, steps in total, what is being computed)
Progress = tuple[int, int, str]
Job = Callable[[], Generator[Progress, None, Any]]

#: longest wait of the loss loader for the grid arranged on the main thread (seconds)
ARRANGE_WAIT_S = 5.0


def core() -> ModuleType:
    """:mod:`napari_segloss.explorer`, imported on first call (torch)."""
    from napari_segloss import explorer  # heavy (torch): see the module docstring

    return explorer


def inference() -> ModuleType:
    """:mod:`napari_segloss.engine.inference` (torch, models), imported in a worker."""
    from napari_segloss.engine import inference as module  # heavy (torch, smp): see core

    return module


def load_catalog(
    arranged: threading.Event,
) -> Generator[Progress, None, dict[str, dict[str, inspect.Parameter]]]:
    """The loss catalog (imports torch). torch's libraries are mapped first without the GIL
    (see _compat) while the window arranges the grid; the Python part of the import holds
    the GIL most of the time, so it waits until the grid is arranged (``arranged``): both at
    once would make each take about twice as long, and the window freeze longer."""
    yield 0, 0, "loading PyTorch and the losses…"
    preload_torch_libraries()
    arranged.wait(ARRANGE_WAIT_S)
    return core().loss_catalog()


def whatif_job(region: np.ndarray, kind: str, strength: float, softness: float, k: int) -> Job:
    """A what-if prediction made from the ground truth ``region`` (``k`` classes)."""

    def whatif() -> Generator[Progress, None, np.ndarray]:
        yield 0, 1, "what-if prediction"
        # In-plane: napari stacks are often frames or thick-slice volumes (see whatif).
        return make_whatif(region, kind, strength, softness=softness, num_classes=k, in_plane=True)

    return whatif


def probability_image_job(data: np.ndarray, shape: tuple[int, ...]) -> Job:
    """Probabilities read from an image layer's ``data`` for a ground truth of ``shape``."""

    def from_image() -> Generator[Progress, None, np.ndarray]:
        yield 0, 1, "reading the probabilities"
        return core().probabilities_from_image(data, shape)

    return from_image


def labels_job(pred: np.ndarray, k: int) -> Job:
    """A one-hot prediction of ``k`` classes from a Labels layer's ``pred``."""

    def from_labels() -> Generator[Progress, None, np.ndarray]:
        yield 0, 1, "one-hot prediction"
        return labels_to_probabilities(pred, k)

    return from_labels


def checkpoint_job(
    path: Path,
    image: np.ndarray,
    rgb: bool,
    key: tuple,
    cache: dict[tuple, np.ndarray],
    models: ModelSlot,
) -> Job:
    """A checkpoint's probabilities of ``image``, frame by frame; ``cache`` keeps the last
    one under ``key`` (slider moves re-use it), ``models`` the loaded checkpoint."""

    def run_model() -> Generator[Progress, None, np.ndarray]:
        if key not in cache:
            frames = inference().iter_predict_image(path, image, rgb=rgb, models=models.get())
            _, probs = yield from frame_progress(frames, "predicting with the checkpoint, frame")
            cache.clear()
            cache[key] = probs
        return cache[key]

    return run_model


def slice_job(full: Job, z: int) -> Job:
    """Slice ``z`` of a volume's probabilities ``(C, Z, ...)``."""

    def one_slice() -> Generator[Progress, None, np.ndarray]:
        probs = yield from full()
        return probs[:, z]

    return one_slice


def explorer_job(
    make_probs: Job,
    target: np.ndarray,
    losses: list[tuple[str, dict[str, Any]]],
    gammas: list[float],
    cls: int,
    relative: bool,
) -> Callable[[], Generator[Progress, None, ExplorerResult]]:
    """The maps of ``losses`` and ``gammas`` for the prediction ``make_probs`` makes against
    ``target``; a class beyond the inputs' raises :class:`PanelError`."""

    def job() -> Generator[Progress, None, ExplorerResult]:
        explorer = core()
        probs = yield from make_probs()  # already restricted to slice z when z is set
        explorer.check_target_fits(probs, target)
        k = 2 if probs.shape[0] == 1 else probs.shape[0]
        if cls >= k:  # not clipped: class 7 would silently draw the last class
            raise PanelError(
                f"class: these inputs have {k} classes (0–{k - 1}), not {cls}: set 'class' to "
                "one of them"
            )
        specs = [explorer.ExplorerLoss(n, p) for n, p in losses]
        steps = explorer.iter_explorer(probs, target, specs, gammas, cls=cls, relative=relative)
        with explorer.interactive_threads(target.size):
            return (yield from steps)

    return job
