"""Shared test fixtures.

``shared_data`` points at the project's real data (``../shared/data`` relative to the repository
root). The package never needs it; tests that do are skipped with a clear message when it is
absent, so the suite still passes on a fresh clone.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO_ROOT / ".." / "shared" / "data").resolve()

# The CLI tests call segloss in this process: keep pytest's allocator as glibc set it (the
# tuning itself is tested in subprocesses, tests/engine/test_allocator.py)
os.environ.setdefault("SEGLOSS_MALLOC_TUNING", "0")


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (``scripts/test.sh`` starts one worker per core), each worker's
    torch gets its share of the cores: two workers on two cores with torch's default of two
    threads each would oversubscribe them, and small torch ops then run 10-100x slower."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers is None:
        return
    import torch  # lazily: a plain single-process session keeps torch's own default

    from napari_segloss.cpus import available_cpus

    torch.set_num_threads(max(1, available_cpus() // int(workers)))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root (where ``pyproject.toml`` and ``napari.yaml`` live)."""
    return REPO_ROOT


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """One torch intra-op thread during the test (``pytest.mark.usefixtures``): tiny models and
    MONAI gain nothing from more, and oversubscribed shared CI cores make them 10-100x slower."""
    import torch  # lazily: not every test session needs torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``; skips the test when the folder is not there."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not available: {SHARED_DATA} is absent (see its README.md)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def kvasir_dir(shared_data: Path) -> Path:
    """The full Kvasir-SEG folder (``images/`` + ``masks/``); skips when absent."""
    path = shared_data / "kvasir-seg"
    if not path.is_dir():
        pytest.skip(f"real data not available: {path} is absent")
    return path


@pytest.fixture(scope="session")
def acdc_dir(shared_data: Path) -> Path:
    """The ACDC folder (``images/``, ``labels/``, ``splits/``); skips when absent."""
    path = shared_data / "acdc"
    if not path.is_dir():
        pytest.skip(f"real data not available: {path} is absent")
    return path
