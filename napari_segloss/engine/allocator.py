"""glibc malloc settings for this package's own processes (``segloss``, ``training/train.py``).

With glibc's defaults a tensor above the dynamic mmap threshold (at most 32 MiB) is a fresh
``mmap`` on every allocation, and freed heap memory is handed back to the OS, so the large CPU
tensors of a training step (3D patches, activations, losses over whole images) page-fault again
on every step. Keeping freed memory for reuse removes those faults; it matters most for 3D
patches and is neutral for small 2D images (figures in ``benchmarks/RESULTS.md``, "The command's
malloc tuning").

The price is that the process keeps its peak memory instead of returning it, which a training
or prediction run reaches on every step anyway.

The settings are process-wide, so only the command-line entry points apply them; the napari
plugin runs inside napari's process and leaves its allocator alone. Set
``SEGLOSS_MALLOC_TUNING=0`` to switch this off. It is skipped as well when the user chose
malloc settings (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``, ``GLIBC_TUNABLES``) or
preloads another allocator (jemalloc, tcmalloc, mimalloc), and on anything but Linux/glibc.
"""

from __future__ import annotations

import ctypes
import os
import platform

#: mallopt parameter numbers (glibc <malloc.h>)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: freed memory kept for reuse, and the size below which allocations come from the heap
KEEP_BYTES = 1 << 30

_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")
_OTHER_ALLOCATORS = ("jemalloc", "tcmalloc", "mimalloc")


def tune_malloc() -> bool:
    """Keep freed memory for reuse (glibc ``mallopt``); True when the settings were applied."""
    if os.environ.get("SEGLOSS_MALLOC_TUNING", "1").strip() == "0":
        return False
    if any(k in os.environ for k in _USER_SETTINGS):
        return False
    preload = os.environ.get("LD_PRELOAD", "")
    if any(name in preload for name in _OTHER_ALLOCATORS):
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return (
            libc.mallopt(M_MMAP_THRESHOLD, KEEP_BYTES) == 1
            and libc.mallopt(M_TRIM_THRESHOLD, KEEP_BYTES) == 1
        )
    except (OSError, AttributeError):
        return False
