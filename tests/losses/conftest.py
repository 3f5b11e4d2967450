"""Fixtures shared by the loss tests."""

from __future__ import annotations

import pytest

from napari_segloss.losses import _parallel


def _thread_paths() -> list:
    paths = [pytest.param(False, id="thread-pool")]
    if _parallel.omp_parallel is not None:
        paths.append(pytest.param(True, id="torch-openmp"))
    return paths


@pytest.fixture(params=_thread_paths())
def thread_path(request, monkeypatch) -> bool:
    """Each way the fused kernels' regions run on several threads: in torch's OpenMP runtime
    (where torch has GNU OpenMP) and on the thread pool. True for OpenMP."""
    if not request.param:
        monkeypatch.setattr(_parallel, "omp_parallel", None)
    return request.param
