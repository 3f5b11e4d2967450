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

Loading torch without freezing the window: the panels import torch in a thread worker, but
CPython holds the GIL while an extension module's shared libraries are loaded, and
``libtorch_cpu`` takes about 0.15 s to map and relocate, so the main thread (the window)
stalls. :func:`preload_torch_libraries` maps them first through a plain C ``dlopen`` call,
during which ctypes releases the GIL; ``import torch`` then finds them already loaded.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import sys
from pathlib import Path

#: torch's big shared libraries, dependencies first (missing ones are skipped)
_TORCH_LIBRARIES = ("libtorch_global_deps.so", "libc10.so", "libtorch_cpu.so", "libtorch_cuda.so")


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


def preload_torch_libraries() -> int:
    """Map torch's shared libraries without holding the GIL (Linux; call it in a worker thread
    before the first ``import torch``). Returns how many were loaded; never raises: on any
    problem ``import torch`` simply loads them itself."""
    if "torch" in sys.modules or not sys.platform.startswith("linux"):
        return 0
    try:
        spec = importlib.util.find_spec("torch")
        libdl = ctypes.CDLL(None)  # foreign calls through CDLL release the GIL
        dlopen = libdl.dlopen
    except (ImportError, OSError, AttributeError, ValueError):
        return 0
    if spec is None or not spec.submodule_search_locations:
        return 0
    dlopen.restype = ctypes.c_void_p
    dlopen.argtypes = (ctypes.c_char_p, ctypes.c_int)
    lib = Path(next(iter(spec.submodule_search_locations))) / "lib"
    loaded = 0
    for name in _TORCH_LIBRARIES:
        path = lib / name
        # RTLD_LOCAL: only mapped here; torch's own import decides how its symbols are shared.
        if path.is_file() and dlopen(os.fsencode(path), os.RTLD_NOW | os.RTLD_LOCAL):
            loaded += 1
    return loaded
