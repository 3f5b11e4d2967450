"""Parallel regions of the fused CPU kernels (:mod:`._fused_cpu`), with no Python on the
worker threads.

A kernel runs as a *region*: a C callback ``void region(void *job)`` compiled by numba
(``cfunc``, on first use, cached on disk). ``job`` is one int64 array: a header, then one
slot per argument (an array's address and shape, or a scalar). Every thread of the region
takes parts (contiguous block ranges) from the header's counter with an atomic add and runs
the kernel on them, so a thread slowed down by something else takes fewer; results go to
fixed per-part places, so which thread ran a part never changes the result.

The region runs on torch's own GNU OpenMP workers (``GOMP_parallel``, see
:func:`find_torch_openmp`) where there is that runtime, else on a small thread pool calling
the callback through ctypes (which releases the GIL). An earlier version entered a Python
callback on every worker: with the caches cold (as at each training step, after the model's
own passes) that Python work and its GIL hand-offs cost 0.1-0.25 ms per region, a quarter of
the Dice forward kernel's time on 2 threads.

Kernels cannot raise here: the regions are written so that no error is possible (no bounds
or division checks are compiled in, ``error_model="numpy"``).
"""

from __future__ import annotations

import ctypes
import operator
import os
import struct
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch import Tensor

try:
    from llvmlite import ir
    from numba import carray, cfunc, njit, types
    from numba.core.errors import TypingError
    from numba.extending import intrinsic
except ImportError:  # pragma: no cover - exercised only without numba
    njit = None

#: below this many pixels per thread a thread costs more than it saves
MIN_PIXELS_PER_THREAD = 32768
#: parts per thread: a thread that falls behind (another process on its core) takes fewer
PARTS_PER_THREAD = 4

# job layout: header, then _SLOT int64 per argument (address, then up to 4 sizes; a scalar
# in the first). Header: the next part to claim in phase 0 and in phase 1 (two-phase
# regions), the job's length, parts, blocks, parts finished in phase 0, phase 1 open.
_NEXT, _NEXT_1, _LENGTH, _PARTS, _BLOCKS, _DONE, _OPEN = range(7)
_HEAD = 8
_SLOT = 5

#: the signature of every region
_REGION_SIGNATURE = "void(voidptr)"


def split(total_blocks: int, n_pixels: int) -> tuple[int, int]:
    """``(threads, parts)`` for a kernel over ``total_blocks`` blocks of ``n_pixels`` pixels
    in all: ``torch.get_num_threads()`` threads (fewer for small inputs), and
    ``PARTS_PER_THREAD`` parts per thread (1 part on one thread)."""
    by_size = n_pixels // MIN_PIXELS_PER_THREAD
    threads = max(1, min(torch.get_num_threads(), by_size, total_blocks))
    parts = 1 if threads == 1 else min(total_blocks, PARTS_PER_THREAD * threads)
    return threads, parts


def find_torch_openmp():
    """``GOMP_parallel`` of the GNU OpenMP runtime that torch's CPU kernels run on, or None
    (another backend or platform, or ``SEGLOSS_FUSED_CPU_OMP=0``).

    Why: after each parallel torch operation its OpenMP workers keep spinning for a while,
    waiting for the next one. Threads of our own then share the cores with them and the
    kernels ran at about half speed on 2 threads; a parallel region of the same runtime
    runs on those very workers instead.
    """
    if os.environ.get("SEGLOSS_FUSED_CPU_OMP", "1") == "0" or not sys.platform.startswith("linux"):
        return None
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "libgomp" in line}
    except OSError:
        return None
    torch_dir = os.path.dirname(torch.__file__)
    for path in sorted(paths, key=lambda p: not p.startswith(torch_dir)):  # torch's first
        try:
            parallel = ctypes.CDLL(path).GOMP_parallel
        except (OSError, AttributeError):
            continue
        parallel.restype = None
        parallel.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
        return parallel
    return None


omp_parallel = find_torch_openmp()

_compile_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_pool_lock = threading.Lock()  # losses may run in several threads at once (napari workers)


class Region:
    """A kernel's region: ``body(data)``, a Python function numba compiles as a C callback
    ``void(void *job)`` on first use (cached on disk; uncached where no cache location is
    writable). ``spec`` lists the arguments: ``(torch dtype, ndim)`` for a CPU tensor,
    ``int`` (also for a bool) or ``float`` for a scalar; :meth:`run` checks every call
    against it, since the callback trusts the job.

    The job is built from tensors, not numpy arrays: ``data_ptr()`` is a C call, while a
    numpy array's address (``.ctypes``) costs an object per argument, and this runs twice per
    training step with cold caches."""

    def __init__(self, body, spec: tuple[tuple[torch.dtype, int] | type, ...]) -> None:
        self.body = body
        self.spec = spec
        self._address: int | None = None
        self._callback = None

    def compiled(self) -> tuple[int, object]:
        """``(address, ctypes callable)`` of the compiled region."""
        if self._address is None:
            with _compile_lock:
                if self._address is None:
                    region = _compile(self.body)
                    self._callback = region.ctypes
                    self._address = region.address
        return self._address, self._callback

    def arg_words(self, args: tuple, first: int = 0) -> list[int]:
        """The job words of ``args``, the spec's arguments ``first, first + 1, ...``: an
        argument's slot is its address and shape, or a scalar (a float's bits)."""
        if first + len(args) > len(self.spec):
            raise TypeError(f"{self.body.__name__} takes {len(self.spec)} arguments")
        words: list[int] = []
        for i, (a, want) in enumerate(zip(args, self.spec[first:], strict=False), first):
            if want is float:
                words += (_REAL.unpack(_DOUBLE.pack(float(a)))[0], 0, 0, 0, 0)
                continue
            if want is int:
                words += (operator.index(a), 0, 0, 0, 0)  # TypeError for a float
                continue
            if not (
                isinstance(a, Tensor)
                and a.dtype == want[0]
                and a.dim() == want[1]
                and a.is_contiguous()
                and a.is_cpu
            ):
                got = f"{a.dtype}, {a.dim()}-d" if isinstance(a, Tensor) else type(a).__name__
                raise TypeError(
                    f"{self.body.__name__} argument {i} must be a contiguous CPU {want[0]} "
                    f"{want[1]}-d tensor, got {got}"
                )
            words += (a.data_ptr(), *a.shape, *_PADDING[a.dim()])
        return words

    def pack(self, parts: int, total_blocks: int, args: tuple, packed: list[int] = ()) -> Tensor:
        """The job of one call (see the module docstring), an int64 tensor; ``packed``: the
        :meth:`arg_words` of the first arguments, ``args`` the rest."""
        first = len(packed) // _SLOT
        if first + len(args) != len(self.spec):
            raise TypeError(
                f"{self.body.__name__} takes {len(self.spec)} arguments, got {first + len(args)}"
            )
        words = [0] * _HEAD
        words[_PARTS] = parts
        words[_BLOCKS] = total_blocks
        words += (*packed, *self.arg_words(args, first))
        words[_LENGTH] = len(words)
        return torch.tensor(words, dtype=torch.int64)

    def run(
        self, threads: int, parts: int, total_blocks: int, *args, packed: list[int] = ()
    ) -> None:
        """Run the region over ``total_blocks`` blocks split into ``parts`` parts on
        ``threads`` threads (see :func:`split`); ``args`` as in ``spec``, the first ones
        possibly given as their words (``packed``, see :meth:`pack`)."""
        job = self.pack(parts, total_blocks, args, packed)
        address, callback = self.compiled()
        data = job.data_ptr()
        if threads == 1:
            callback(data)  # ctypes releases the GIL
        elif omp_parallel is not None:
            omp_parallel(address, data, threads, 0)
        else:
            _in_pool(callback, data, threads)


_DOUBLE = struct.Struct("<d")
_REAL = struct.Struct("<q")  # a float's bits as an int64 word
_PADDING = {n: (0,) * (_SLOT - 1 - n) for n in range(_SLOT)}


def _in_pool(callback, address: int, threads: int) -> None:
    """``callback(address)`` on ``threads`` threads at once, the caller's among them."""
    global _pool, _pool_size
    with _pool_lock:
        if _pool_size < threads - 1:  # grown, never shrunk: the old pool finishes what it has
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool = ThreadPoolExecutor(max_workers=threads - 1, thread_name_prefix="segloss-fused")
            _pool_size = threads - 1
        helpers = [_pool.submit(callback, address) for _ in range(threads - 1)]
    callback(address)
    for h in helpers:
        h.result()


def _compile(body):
    settings = {"nopython": True, "error_model": "numpy"}
    try:
        return cfunc(_REGION_SIGNATURE, cache=True, **settings)(body)
    except RuntimeError:  # no writable cache location
        return cfunc(_REGION_SIGNATURE, **settings)(body)


if njit is not None:

    @intrinsic
    def _job_pointer(typingctx, data):
        """The region's ``void *`` as an int64 pointer."""
        sig = types.CPointer(types.int64)(types.voidptr)

        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], ir.IntType(64).as_pointer())

        return sig, codegen

    @intrinsic
    def _address_as_pointer(typingctx, address, dtype):
        """An int64 address as a pointer to ``dtype`` (a numba number class)."""
        item = dtype.instance_type
        sig = types.CPointer(item)(types.int64, dtype)

        def codegen(context, builder, signature, args):
            return builder.inttoptr(args[0], context.get_value_type(item).as_pointer())

        return sig, codegen

    @intrinsic
    def _fetch_add(typingctx, pointer, index, value):
        """Atomic ``pointer[index] += value`` (acquire-release: what a thread wrote before
        it is seen by the thread that reads the sum), returning the old value."""
        sig = types.int64(types.CPointer(types.int64), types.int64, types.int64)

        def codegen(context, builder, signature, args):
            word = builder.gep(args[0], [args[1]])
            return builder.atomic_rmw("add", word, args[2], "acq_rel")

        return sig, codegen

    @intrinsic
    def _load_acquire(typingctx, pointer, index):
        """Atomic load of ``pointer[index]`` (acquire)."""
        sig = types.int64(types.CPointer(types.int64), types.int64)

        def codegen(context, builder, signature, args):
            word = builder.gep(args[0], [args[1]])
            return builder.load_atomic(word, "acquire", 8)

        return sig, codegen

    @intrinsic
    def reinterpret(typingctx, value, as_type):
        """The bits of ``value`` read as the number type ``as_type`` of the same width
        (``np.float32``, ``np.int64``, ...): an LLVM bitcast, no conversion."""
        target = as_type.instance_type
        if value.bitwidth != target.bitwidth:  # numba widens int32 arithmetic to int64
            raise TypingError(f"reinterpret needs the same width: {value} as {target}")
        sig = target(value, as_type)

        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], context.get_value_type(target))

        return sig, codegen

    @njit(inline="always")
    def job_view(data):
        """``(pointer, job)``: the job array of a region's ``data`` and its first word."""
        pointer = _job_pointer(data)
        head = carray(pointer, (_HEAD,))
        return pointer, carray(pointer, (head[_LENGTH],))

    @njit(inline="always")
    def next_part(pointer, job, phase=0):
        """``(t, first, last)``: the next unclaimed part of ``phase`` (0 or 1) and its block
        range, ``t = -1`` when none is left."""
        t = _fetch_add(pointer, _NEXT_1 if phase else _NEXT, 1)
        parts = job[_PARTS]
        if t >= parts:
            return -1, 0, 0
        blocks = job[_BLOCKS]
        return t, blocks * t // parts, blocks * (t + 1) // parts

    @njit(inline="always")
    def each_part(pointer, job, kernel, args, out, phase=0):
        """``kernel(*args, first, last, out)`` for every part of ``phase`` this thread
        claims."""
        while True:
            t, first, last = next_part(pointer, job, phase)
            if t < 0:
                return
            kernel(*args, first, last, out)

    @njit(inline="always")
    def finish_part(pointer, job):
        """Count a finished phase-0 part; True for the thread that finished the last one
        (it then sees every part's results)."""
        return _fetch_add(pointer, _DONE, 1) + 1 == job[_PARTS]

    @njit(inline="always")
    def open_phase_1(pointer):
        """Let every thread into phase 1 (after the last phase-0 part's follow-up)."""
        _fetch_add(pointer, _OPEN, 1)

    @njit(inline="always")
    def wait_for_phase_1(pointer):
        """Spin until :func:`open_phase_1`. No deadlock whatever the number of threads: the
        thread that opens it waits for no one, and the others arrive here only once every
        phase-0 part is claimed."""
        while _load_acquire(pointer, _OPEN) == 0:
            pass

    @njit(inline="always")
    def each_part_into_own_row(pointer, job, kernel, args, outs):
        """:func:`each_part` with the output ``outs[t]`` of part ``t`` (per-part sums, added
        in part order afterwards: the same result whichever thread ran a part)."""
        while True:
            t, first, last = next_part(pointer, job)
            if t < 0:
                return
            kernel(*args, first, last, outs[t])

    @njit(inline="always")
    def _slot(i):
        return _HEAD + _SLOT * i

    @njit(inline="always")
    def array1(job, i, dtype):
        s = _slot(i)
        return carray(_address_as_pointer(job[s], dtype), (job[s + 1],))

    @njit(inline="always")
    def array2(job, i, dtype):
        s = _slot(i)
        return carray(_address_as_pointer(job[s], dtype), (job[s + 1], job[s + 2]))

    @njit(inline="always")
    def array3(job, i, dtype):
        s = _slot(i)
        shape = (job[s + 1], job[s + 2], job[s + 3])
        return carray(_address_as_pointer(job[s], dtype), shape)

    @njit(inline="always")
    def array4(job, i, dtype):
        s = _slot(i)
        shape = (job[s + 1], job[s + 2], job[s + 3], job[s + 4])
        return carray(_address_as_pointer(job[s], dtype), shape)

    @njit(inline="always")
    def integer(job, i):
        return job[_slot(i)]

    @njit(inline="always")
    def flag(job, i):
        return job[_slot(i)] != 0

    @njit(inline="always")
    def real(job, i):
        return reinterpret(job[_slot(i)], np.float64)
