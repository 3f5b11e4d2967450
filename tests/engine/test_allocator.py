"""glibc malloc tuning of the command-line processes (napari_segloss.engine.allocator)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from napari_segloss import cli
from napari_segloss.engine import allocator

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
MALLOC_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES", "LD_PRELOAD")


def _run(env_extra: dict[str, str]) -> str:
    # in a fresh interpreter: mallopt changes the whole process (conftest turns it off here)
    env = {k: v for k, v in os.environ.items() if k not in MALLOC_ENV}
    env.pop("SEGLOSS_MALLOC_TUNING", None)
    env.update(env_extra)
    code = "from napari_segloss.engine.allocator import tune_malloc; print(tune_malloc())"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_tune_malloc_applies_on_glibc() -> None:
    assert _run({}) == "True"


@pytest.mark.parametrize(
    "env",
    [
        {"SEGLOSS_MALLOC_TUNING": "0"},
        {"MALLOC_TRIM_THRESHOLD_": "1000000"},
        {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1000000"},
    ],
)
def test_tune_malloc_respects_the_users_choice(env: dict[str, str]) -> None:
    assert _run(env) == "False"


def test_tune_malloc_leaves_a_preloaded_allocator_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    # returns before calling mallopt, so it can run in this process
    for key in (*MALLOC_ENV, "SEGLOSS_MALLOC_TUNING"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")
    assert allocator.tune_malloc() is False


def test_cli_tunes_malloc_before_running_a_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls: list[bool] = []
    monkeypatch.setattr(cli, "tune_malloc", lambda: calls.append(True) or True)
    missing = str(tmp_path / "missing")
    assert cli.main(["evaluate", "--pred", missing, "--gt", missing]) == 2
    assert calls == [True]
