"""The parallel regions of the fused CPU kernels (losses/_parallel.py): every part runs once,
on several threads, through torch's OpenMP runtime or the thread pool; calls are checked
against the region's argument spec before any native code sees them."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
import time

import numpy as np
import pytest
import torch

from napari_segloss.losses import _parallel

pytestmark = [
    pytest.mark.skipif(_parallel.njit is None, reason="numba is not installed"),
    # the test region calls pthread_self through ctypes: numba compiles it uncached
    pytest.mark.filterwarnings("ignore:Cannot cache compiled function"),
]

_libc = ctypes.CDLL(ctypes.util.find_library("c"))
_pthread_self = _libc.pthread_self
_pthread_self.restype = ctypes.c_uint64
_pthread_self.argtypes = []


def _record_parts(data):
    """Test region: ``out[t] = (first, last, runs, thread, busy work)``, each part busy for
    ~1 ms so that a second thread has time to join."""
    pointer, job = _parallel.job_view(data)
    out = _parallel.array2(job, 0, np.int64)
    spin = _parallel.integer(job, 1)
    while True:
        t, first, last = _parallel.next_part(pointer, job)
        if t < 0:
            return
        acc = 0
        for i in range(spin):
            acc = (acc * 31 + i) % 1000003
        out[t, 0] = first
        out[t, 1] = last
        out[t, 2] += 1
        out[t, 3] = _pthread_self()
        out[t, 4] = acc


_RECORD = _parallel.Region(_record_parts, ((torch.int64, 2), int))


def test_every_part_runs_once_on_several_threads(thread_path: bool) -> None:
    out = torch.zeros((8, 5), dtype=torch.int64)
    _RECORD.run(1, 1, 64, torch.zeros((1, 5), dtype=torch.int64), 10)  # compile outside the timing
    start = time.perf_counter()
    spin = 1
    while time.perf_counter() - start < 0.5:  # calibrate ~1 ms of work per part
        t0 = time.perf_counter()
        _RECORD.run(1, 1, 64, torch.zeros((1, 5), dtype=torch.int64), spin)
        if time.perf_counter() - t0 > 1e-3:
            break
        spin *= 2
    assert spin < 2**40
    _RECORD.run(2, 8, 64, out, spin)
    assert out[:, :2].tolist() == [[8 * t, 8 * t + 8] for t in range(8)]
    assert out[:, 2].tolist() == [1] * 8
    assert len(set(out[:, 3].tolist())) == 2  # both threads took parts


def test_split_uses_torch_threads_and_keeps_small_inputs_on_one() -> None:
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        big = 64 * _parallel.MIN_PIXELS_PER_THREAD
        assert _parallel.split(64, big) == (2, 2 * _parallel.PARTS_PER_THREAD)
        assert _parallel.split(64, _parallel.MIN_PIXELS_PER_THREAD) == (1, 1)
        assert _parallel.split(1, big) == (1, 1)
        assert _parallel.split(5, big) == (2, 5)  # never more parts than blocks
        torch.set_num_threads(1)
        assert _parallel.split(64, big) == (1, 1)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            (torch.zeros(8, 5, dtype=torch.int32), 1),
            "argument 0 must be a contiguous CPU torch.int64 2-d tensor, got torch.int32",
        ),
        ((torch.zeros(8, dtype=torch.int64), 1), "got torch.int64, 1-d"),
        ((torch.zeros(5, 8, dtype=torch.int64).T, 1), "contiguous"),
        ((np.zeros((8, 5), np.int64), 1), "got ndarray"),
        ((torch.zeros(8, 5, dtype=torch.int64),), "takes 2 arguments, got 1"),
        ((torch.zeros(8, 5, dtype=torch.int64), 1.5), "integer"),
    ],
)
def test_calls_that_do_not_match_the_spec_are_refused(args: tuple, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        _RECORD.run(1, 1, 8, *args)


def test_job_layout() -> None:
    a = torch.zeros((3, 5), dtype=torch.int64)
    job = _RECORD.pack(4, 12, (a, 7))
    assert job.dtype == torch.int64
    # header: next part (phase 0, 1), length, parts, blocks, parts done, phase 1 open, 0
    assert job[:8].tolist() == [0, 0, job.shape[0], 4, 12, 0, 0, 0]
    assert job[8:13].tolist() == [a.data_ptr(), 3, 5, 0, 0]
    assert job[13] == 7
    reals = _parallel.Region(_record_parts, (float, int)).pack(1, 1, (0.25, True))
    assert reals[8:9].view(torch.float64).item() == 0.25 and reals[13] == 1


def test_regions_compile_without_a_writable_cache(monkeypatch) -> None:
    # numba refuses cache=True when no cache location is writable: compile uncached instead
    real_cfunc = _parallel.cfunc

    def cfunc_without_cache(signature, **options):
        if options.get("cache"):
            raise RuntimeError("cannot cache function: no locator available")
        return real_cfunc(signature, **options)

    monkeypatch.setattr(_parallel, "cfunc", cfunc_without_cache)
    region = _parallel.Region(_record_parts, ((torch.int64, 2), int))
    out = torch.zeros((1, 5), dtype=torch.int64)
    region.run(1, 1, 3, out, 1)
    assert out[0, :3].tolist() == [0, 3, 1]


def test_finds_torch_openmp_runtime_on_linux() -> None:
    # torch's Linux wheels run their CPU kernels on GNU OpenMP: the kernels must join that
    # runtime (its spinning workers halved their speed on 2 threads when they did not)
    if not (sys.platform.startswith("linux") and torch.backends.openmp.is_available()):
        pytest.skip("torch without GNU OpenMP here")
    if "OpenMP" not in torch.__config__.parallel_info():
        pytest.skip("torch's parallel backend is not OpenMP")
    assert _parallel.omp_parallel is not None


def test_openmp_can_be_switched_off(monkeypatch) -> None:
    monkeypatch.setenv("SEGLOSS_FUSED_CPU_OMP", "0")
    assert _parallel.find_torch_openmp() is None
