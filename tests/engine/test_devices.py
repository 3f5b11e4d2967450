"""The one device rule shared by training (ConfigError naming ``train.device``) and prediction,
and the process settings of a run (runtime)."""

from __future__ import annotations

import pytest
import torch

from napari_segloss.engine import devices, runtime
from napari_segloss.engine.config import ConfigError
from napari_segloss.engine.distributed import DistInfo


def _no_accelerators(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "_mps_available", lambda: False)


def _two_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


@pytest.mark.parametrize("setting", ["auto", None, "cpu", torch.device("cpu")])
def test_cpu_when_nothing_else(monkeypatch: pytest.MonkeyPatch, setting: object) -> None:
    _no_accelerators(monkeypatch)
    assert devices.resolve_device(setting) == torch.device("cpu")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("setting", "local_rank", "expected"),
    [("auto", 0, "cuda:0"), ("auto", 3, "cuda:1"), ("cuda", 1, "cuda:1"), ("cuda:1", 0, "cuda:1")],
)
def test_cuda_follows_the_local_rank(
    monkeypatch: pytest.MonkeyPatch, setting: str, local_rank: int, expected: str
) -> None:
    _two_gpus(monkeypatch)
    assert devices.resolve_device(setting, local_rank) == torch.device(expected)


def test_auto_prefers_mps_to_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "_mps_available", lambda: True)
    assert devices.resolve_device("auto") == torch.device("mps")


@pytest.mark.parametrize(
    ("setting", "words"),
    [
        ("gpu", ["'gpu'", "'cuda:N'"]),
        ("cuda", ["'cuda'", "CUDA is not available"]),
        ("cuda:0", ["'cuda:0'", "CUDA is not available"]),
        ("mps", ["'mps'", "MPS is not available"]),
    ],
)
def test_refusals_say_what_is_missing(
    monkeypatch: pytest.MonkeyPatch, setting: str, words: list[str]
) -> None:
    _no_accelerators(monkeypatch)
    with pytest.raises(ValueError) as err:
        devices.resolve_device(setting)
    for word in words:
        assert word in str(err.value)


def test_index_past_the_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    _two_gpus(monkeypatch)
    with pytest.raises(ValueError, match=r"'cuda:2': only 2 CUDA device\(s\) exist"):
        devices.resolve_device("cuda:2")


def test_training_names_its_config_key(monkeypatch: pytest.MonkeyPatch) -> None:
    _no_accelerators(monkeypatch)
    with pytest.raises(ConfigError, match=r"config key 'train.device': device 'cuda'"):
        runtime.training_device("cuda")
    _two_gpus(monkeypatch)
    info = DistInfo(rank=1, local_rank=1, world_size=2)
    assert runtime.training_device("auto", info) == torch.device("cuda", 1)


@pytest.mark.parametrize("announce", [True, False])
def test_ctrl_c_is_announced_by_rank_0_only(
    announce: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    """Under torchrun Ctrl-C reaches every rank, and each printed the same two lines."""
    import signal

    with runtime.Interrupts(announce=announce) as interrupts:
        interrupts._handler(signal.SIGINT, None)
    assert interrupts.reason == "interrupted (Ctrl-C)"  # every rank stops, at the same step
    said = "stopping after the current step" in capsys.readouterr().err
    assert said is announce


@pytest.mark.parametrize(
    ("capability", "setting", "want", "noted"),
    [
        ((7, 5), "bfloat16", torch.float16, True),  # T4: bf16 is emulated, slower than fp16
        ((7, 0), "bfloat16", torch.float16, True),  # V100
        ((8, 0), "bfloat16", torch.bfloat16, False),  # A100
        ((9, 0), "bfloat16", torch.bfloat16, False),  # H100
        ((7, 5), "float16", torch.float16, False),
        ((9, 0), "float16", torch.float16, False),
    ],
)
def test_autocast_dtype_avoids_emulated_bfloat16(
    monkeypatch: pytest.MonkeyPatch, capability, setting, want, noted
) -> None:
    """bf16 autocast was used on every GPU: torch.cuda.is_bf16_supported() counts the
    emulation on compute capability < 8.0, where it is slower than fp16."""
    from napari_segloss.engine.devices import autocast_dtype

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    dtype, note = autocast_dtype(torch.device("cuda", 0), setting)
    assert dtype == want
    assert (note is not None) == noted
    if noted:
        assert "float16" in note and "Tesla T4" in note and "train.amp_dtype" in note
