"""Process-level workarounds the panels need inside a running napari.

Triton and LLVM: ``torch._dynamo`` (imported by torchvision, hence by
segmentation-models-pytorch) imports ``triton`` when it is installed.  Triton bundles its own
LLVM; if Mesa's software OpenGL (llvmpipe, also AMD's radeonsi) has already loaded the system
``libLLVM`` into the process -- which napari's canvas does before any plugin widget exists --
loading Triton's copy segfaults the whole napari process (reproduced with napari 0.9 + torch
2.15 + triton 3.9 under Xvfb).  The panels never use ``torch.compile``, so when a system LLVM is
already mapped and Triton is not yet imported, we mark Triton as unavailable
(``sys.modules["triton"] = None`` makes ``import triton`` raise ImportError, which torch treats
as "no triton").
"""

from __future__ import annotations

import sys
from pathlib import Path


def _system_llvm_loaded() -> bool:
    maps = Path("/proc/self/maps")
    if not maps.exists():  # not Linux: the clash has only been seen with Mesa on Linux
        return False
    try:
        text = maps.read_text(errors="replace")
    except OSError:
        return False
    return any("libLLVM" in line and "triton" not in line for line in text.splitlines())


def guard_triton() -> bool:
    """Block the Triton import when it would crash the process; True when blocked."""
    if "triton" in sys.modules or not _system_llvm_loaded():
        return False
    sys.modules["triton"] = None  # type: ignore[assignment]
    return True
