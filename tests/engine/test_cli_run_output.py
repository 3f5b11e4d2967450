"""``train.num_workers`` capped at the CPU cores this process may use, said once in the start
line instead of torch's warning per loader."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import yaml

from napari_segloss.cli import main
from napari_segloss.engine import runtime
from napari_segloss.engine.runtime import available_cpus, loader_workers
from napari_segloss.samples import sample_pairs_dir

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see tests/conftest.py

TORCH_WORKER_WARNING = "worker processes in total"


def _tiny_config(tmp_path: Path, num_workers: int) -> Path:
    """A tiny U-Net at 64 px for 1 epoch on the bundled pairs, augmented (so batches come from
    a DataLoader with workers, not the in-memory path)."""
    cfg = {
        "data": {
            "root": str(sample_pairs_dir("kvasir_train")),
            "val_fraction": 0.2,
            "size": [64, 64],
            "augment": True,
        },
        "model": {
            "encoder": "mobilenet_v2",
            "encoder_weights": None,
            "kwargs": {"encoder_depth": 3, "decoder_channels": [16, 8, 4]},
        },
        "train": {
            "epochs": 1,
            "batch_size": 8,
            "num_workers": num_workers,
            "device": "cpu",
            "val_metrics": "overlap",
        },
        "output": str(tmp_path / "train-run"),
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _run_recording_warnings(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err, [str(w.message) for w in caught]


def test_train_start_line_notes_the_lowered_workers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    requested = available_cpus() + 1
    config = _tiny_config(tmp_path, requested)
    argv = ["train", "--config", str(config), "--no-progress", "--set", "data.limit=8"]
    rc, out, err, caught = _run_recording_warnings(argv, capsys)
    assert rc == 0, err
    assert not [m for m in caught if TORCH_WORKER_WARNING in m], caught
    first, second = out.splitlines()[:2]
    assert first.startswith("segloss train: ")
    assert first.endswith(f"run dir {tmp_path / 'train-run'}")
    assert second == (
        f"  train.num_workers {requested} lowered to {available_cpus()}: this process may use "
        f"{available_cpus()} CPU core(s)"
    )
    assert out.count("num_workers") == 1


def test_loader_workers_share_the_cores_among_the_machines_processes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(runtime, "available_cpus", lambda: 16)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert loader_workers(4) == (4, "")  # fits: unchanged, nothing to say
    assert loader_workers(0) == (0, "")
    workers, note = loader_workers(20)
    assert workers == 16 and note == (
        "train.num_workers 20 lowered to 16: this process may use 16 CPU core(s)"
    )
    # torchrun: each of the machine's LOCAL_WORLD_SIZE processes starts its own workers
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    workers, note = loader_workers(4)
    assert workers == 2
    assert note == (
        "train.num_workers 4 lowered to 2 per process: 16 CPU core(s) shared by 8 training "
        "processes"
    )
    assert loader_workers(2) == (2, "")
    # more processes than cores: load in each training process, and say so
    workers, note = loader_workers(4, processes=32)
    assert workers == 0 and note.endswith("(data loaded in the training process)")
