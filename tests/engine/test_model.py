"""Model factory (smp), local weight files and checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from napari_segloss.engine.checkpoint import (
    CheckpointError,
    ModelCache,
    check_compatible,
    load_checkpoint,
    load_model,
    save_checkpoint,
)
from napari_segloss.engine.config import ConfigError, ModelConfig
from napari_segloss.engine.model import build_model

# A timm ResNet-10t trimmed to 3 stages: ~0.37 M parameters, builds offline in ~0.1 s.
TINY = {"encoder_depth": 3, "decoder_channels": [16, 8, 4]}


def tiny(**kw: object) -> ModelConfig:
    base: dict[str, object] = {"arch": "Unet", "encoder": "tu-resnet10t", "kwargs": dict(TINY)}
    base.update(kw)
    return ModelConfig(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(("in_channels", "classes"), [(3, 1), (1, 4)])
def test_build_model_shapes(in_channels: int, classes: int) -> None:
    model = build_model(tiny(in_channels=in_channels, classes=classes)).eval()
    with torch.no_grad():
        out = model(torch.randn(2, in_channels, 32, 32))
    assert out.shape == (2, classes, 32, 32)


def test_default_config_is_the_paper_unet_resnet34() -> None:
    model = build_model(ModelConfig())
    assert type(model).__name__ == "Unet"
    # ResNet34 encoder: 3+4+6+3 BasicBlocks in layer1..layer4.
    enc = model.encoder
    assert [len(getattr(enc, f"layer{i}")) for i in range(1, 5)] == [3, 4, 6, 3]


@pytest.mark.parametrize(
    ("cfg", "must_contain"),
    [
        ({"arch": "Unett"}, ["'model.arch'", "'Unett'", "Unet", "FPN"]),
        ({"encoder": "resnet9000"}, ["'model.encoder'", "'resnet9000'", "resnet34"]),
        ({"encoder": "tu-not_a_model"}, ["'model.encoder'", "not_a_model"]),
        ({"kwargs": {"bogus_kw": 1}}, ["'model.kwargs'", "bogus_kw"]),
        ({"encoder_weights": "/no/such/file.pth"}, ["'model.encoder_weights'", "file not found"]),
    ],
)
def test_bad_model_config(cfg: dict, must_contain: list[str]) -> None:
    base = {"arch": "Unet", "encoder": "tu-resnet10t", "kwargs": dict(TINY)}
    base.update(cfg)
    with pytest.raises(ConfigError) as info:
        build_model(ModelConfig(**base))
    msg = str(info.value)
    assert "\n" not in msg
    for part in must_contain:
        assert part in msg, (part, msg)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_local_encoder_weights_file(tmp_path: Path, suffix: str) -> None:
    donor = build_model(tiny())
    state = {k: v.clone() for k, v in donor.encoder.state_dict().items()}
    path = tmp_path / f"enc{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, path)
    torch.manual_seed(123)  # a different random init than the donor
    model = build_model(tiny(encoder_weights=str(path)))
    got = model.encoder.state_dict()
    assert all(torch.equal(got[k], state[k]) for k in state)
    # The decoder keeps its fresh init: only the encoder came from the file.
    assert not torch.equal(model.segmentation_head[0].weight, donor.segmentation_head[0].weight)


def test_local_whole_model_weights_file(tmp_path: Path) -> None:
    donor = build_model(tiny(classes=2))
    path = tmp_path / "model.pt"
    torch.save({"state_dict": donor.state_dict()}, path)
    model = build_model(tiny(classes=2, encoder_weights=str(path)))
    assert all(torch.equal(v, donor.state_dict()[k]) for k, v in model.state_dict().items())


def test_local_weights_from_another_encoder_is_an_error(tmp_path: Path) -> None:
    other = build_model(ModelConfig(encoder="mobilenet_v2", encoder_weights=None))
    path = tmp_path / "mobilenet.pth"
    torch.save(other.encoder.state_dict(), path)
    with pytest.raises(ConfigError, match=r"'model\.encoder_weights'.*does not match the encoder"):
        build_model(tiny(encoder_weights=str(path)))


# -- checkpoints ------------------------------------------------------------------------------


def _meta(cfg: ModelConfig) -> dict:
    return {
        "arch": cfg.arch,
        "encoder": cfg.encoder,
        "in_channels": cfg.in_channels,
        "classes": cfg.classes,
        "model_kwargs": cfg.kwargs,
        "normalization": {"scale": "uint8", "mean": [0.0], "std": [1.0]},
    }


def test_save_checkpoint_is_atomic_and_leaves_no_temp_files(tmp_path: Path) -> None:
    path = tmp_path / "ck" / "checkpoint.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(2)}, "meta": {"v": 1}})
    save_checkpoint(path, {"model": {"w": torch.zeros(2)}, "meta": {"v": 2}})
    assert sorted(p.name for p in path.parent.iterdir()) == ["checkpoint.pt"]
    assert load_checkpoint(path)["meta"] == {"v": 2}


def test_failed_save_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(3)}, "meta": {"good": True}})

    def broken_save(obj: object, fh: object) -> None:
        fh.write(b"partial garbage")  # type: ignore[attr-defined]
        raise KeyboardInterrupt  # e.g. Ctrl-C in the middle of writing

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"model": {}, "meta": {}})
    monkeypatch.undo()
    assert load_checkpoint(path)["meta"] == {"good": True}
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_load_model_rebuilds_from_meta_alone(tmp_path: Path) -> None:
    cfg = tiny(in_channels=1, classes=3)
    model = build_model(cfg).eval()
    path = tmp_path / "best.pt"
    save_checkpoint(path, {"model": model.state_dict(), "meta": _meta(cfg)})
    loaded, meta = load_model(path)
    assert not loaded.training and meta["classes"] == 3
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x))


def test_model_cache_keeps_one_model_until_the_file_changes(tmp_path: Path) -> None:
    """A panel re-running one checkpoint skips loading it; a retrained file is loaded again."""
    cfg = tiny(in_channels=1, classes=3)
    path = tmp_path / "best.pt"
    save_checkpoint(path, {"model": build_model(cfg).state_dict(), "meta": _meta(cfg)})
    cache = ModelCache()
    first, meta = cache.load(path)
    meta["classes"] = 99  # the caller's copy: the cached meta stays as the file has it
    again, meta_again = cache.load(tmp_path / "." / "best.pt")  # another spelling, same file
    assert again is first and meta_again["classes"] == 3
    torch.manual_seed(1)
    retrained = build_model(cfg).eval()
    save_checkpoint(path, {"model": retrained.state_dict(), "meta": _meta(cfg)})
    reloaded, _ = cache.load(path)
    assert reloaded is not first
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(reloaded(x), retrained(x))
    assert cache.load(path, "cpu")[0] is reloaded  # the default device is the CPU
    cache.clear()
    assert cache.load(path)[0] is not reloaded
    with pytest.raises(CheckpointError, match=r"checkpoint not found: .*gone\.pt"):
        cache.load(tmp_path / "gone.pt")


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (None, "checkpoint not found"),
        ({"w": torch.ones(1)}, "not a napari-segloss checkpoint"),
        ("garbage", "cannot read checkpoint"),
    ],
)
def test_bad_checkpoints(tmp_path: Path, payload: object, match: str) -> None:
    path = tmp_path / "x.pt"
    if payload == "garbage":
        path.write_bytes(b"not a torch file")
    elif payload is not None:
        torch.save(payload, path)
    with pytest.raises(CheckpointError, match=match):
        load_model(path)


def test_checkpoint_weights_of_another_shape(tmp_path: Path) -> None:
    cfg = tiny(classes=2)
    state = build_model(tiny(classes=5)).state_dict()
    path = tmp_path / "lie.pt"
    save_checkpoint(path, {"model": state, "meta": _meta(cfg)})
    with pytest.raises(CheckpointError, match=r"lie\.pt.*weights do not fit"):
        load_model(path)


def test_check_compatible_names_the_differences() -> None:
    meta = _meta(tiny(classes=2))
    check_compatible(meta, tiny(classes=2), "ck.pt")  # same model: fine
    with pytest.raises(CheckpointError) as info:
        check_compatible(meta, tiny(classes=4, encoder="mobilenet_v2"), "ck.pt")
    msg = str(info.value)
    assert "\n" not in msg
    assert "model.encoder: checkpoint 'tu-resnet10t' vs config 'mobilenet_v2'" in msg
    assert "model.classes: checkpoint 2 vs config 4" in msg


class _Evil:
    def __reduce__(self) -> tuple:
        import os

        return (os.system, ("echo this must never run",))


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", r"weights file '.*w\.pt' is empty \(0 bytes\)"),
        ("evil", r"'.*w\.pt' holds executable Python objects.*refused for safety"),
        (b"not a torch file", r"cannot read weights file '.*w\.pt': not a torch checkpoint"),
    ],
)
def test_unsafe_or_empty_weights_files_are_named(
    tmp_path: Path, content: bytes | str, match: str
) -> None:
    path = tmp_path / "w.pt"
    if content == "evil":
        torch.save({"state_dict": _Evil()}, path)
    else:
        path.write_bytes(content)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=match) as info:
        build_model(tiny(encoder_weights=str(path)))
    assert "weights_only" not in str(info.value)
    assert str(info.value).startswith("config key 'model.encoder_weights': ")
