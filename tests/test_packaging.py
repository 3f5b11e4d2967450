"""Packaging: the npe2 manifest is valid, is found from the editable install and from a built
wheel, and the wheel ships the manifest as a real file plus the sample data."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PLUGIN = "napari-segloss"
NPE2_CLI = [sys.executable, "-c", "from npe2.cli import main; main()"]

pytest.importorskip("npe2")


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks need privileges on Windows")
def test_package_manifest_is_relative_symlink_to_root() -> None:
    link = REPO / "napari_segloss" / "napari.yaml"
    assert link.is_symlink(), "napari_segloss/napari.yaml must link to the root manifest"
    assert os.readlink(link) == "../napari.yaml"
    assert link.resolve() == (REPO / "napari.yaml").resolve()


@pytest.mark.parametrize("target", [PLUGIN, str(REPO / "napari.yaml")])
def test_npe2_validate(target: str) -> None:
    result = _run([*NPE2_CLI, "validate", "--imports", target], cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in result.stdout


def test_editable_install_entry_point_and_contributions() -> None:
    from importlib.metadata import entry_points

    from npe2 import PluginManifest

    eps = [ep for ep in entry_points(group="napari.manifest") if ep.name == PLUGIN]
    assert [ep.value for ep in eps] == ["napari_segloss:napari.yaml"]
    manifest = PluginManifest.from_distribution(PLUGIN)
    assert manifest.name == PLUGIN
    assert {s.key for s in manifest.contributions.sample_data} == {"kvasir", "acdc"}
    assert manifest.contributions.readers[0].accepts_directories is True


_WHEEL_PROBE = """
import json, sys
import napari_segloss
from npe2 import PluginManager, PluginManifest
pm = PluginManager.instance()
pm.discover()
manifest = pm.get_manifest("napari-segloss")
samples = {}
for contrib in manifest.contributions.sample_data:
    layers = contrib.open()
    samples[contrib.key] = [[kw["name"], list(d.shape), kw["metadata"]["paths"][0]] for d, kw, _ in layers]
print(json.dumps({
    "module": napari_segloss.__file__,
    "dist_manifest": PluginManifest.from_distribution("napari-segloss").name,
    "samples": samples,
}))
"""


@pytest.mark.slow
def test_wheel_ships_manifest_and_samples(tmp_path: Path) -> None:
    # Build from a copy so parallel work in the tree never sees a half-written build/ folder,
    # and so the copy's symlink is what setuptools has to turn into a real file.
    src = tmp_path / "src_copy"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "napari.yaml", "LICENSE"):
        if (REPO / name).exists():
            shutil.copy2(REPO / name, src / name)
    shutil.copytree(
        REPO / "napari_segloss",
        src / "napari_segloss",
        symlinks=True,
        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc"),
    )
    dist = tmp_path / "dist"
    build = _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(dist),
            str(src),
        ],
        timeout=300,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    [wheel] = list(dist.glob("napari_segloss-*.whl"))

    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        info = zf.getinfo("napari_segloss/napari.yaml")
        mode = info.external_attr >> 16
        assert not (mode & 0o170000 == 0o120000), "napari.yaml is stored as a symlink in the wheel"
        assert zf.read(info) == (REPO / "napari.yaml").read_bytes()
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        assert "napari-segloss = napari_segloss:napari.yaml" in zf.read(entry_points).decode()
        zf.extractall(tmp_path / "site")
    for required in (
        "napari_segloss/samples/NOTICE.md",
        "napari_segloss/samples/acdc/images/patient080_frame01.nii.gz",
        "napari_segloss/samples/acdc/labels/patient080_frame01.nii.gz",
        "napari_segloss/samples/kvasir/masks/cju5thdbrjp1108715xdfx356.png",
        "napari_segloss/samples/kvasir/jpeg_masks/cju5thdbrjp1108715xdfx356.jpg",
        "napari_segloss/_napari_io.py",
        "napari_segloss/data/io.py",
    ):
        assert required in names, f"{required} missing from {wheel.name}"

    # The unpacked wheel comes first on sys.path, ahead of the editable install's .pth entry, so
    # this is what napari would see after `pip install napari_segloss-*.whl`.
    site = tmp_path / "site"
    env = {**os.environ, "PYTHONPATH": str(site)}
    probe = _run([sys.executable, "-c", _WHEEL_PROBE], env=env, cwd=tmp_path, timeout=300)
    assert probe.returncode == 0, probe.stderr[-3000:]
    report = json.loads(probe.stdout.strip().splitlines()[-1])
    assert Path(report["module"]).resolve().is_relative_to(site.resolve())
    assert report["dist_manifest"] == PLUGIN
    assert [name for name, _, _ in report["samples"]["kvasir"]] == ["kvasir image", "kvasir mask"]
    assert report["samples"]["acdc"][1][1] == [6, 216, 256]
    for layers in report["samples"].values():
        for _, _, path in layers:  # sample data is read from the installed wheel, not the repo
            assert Path(path).resolve().is_relative_to(site.resolve()), path
    validate = _run(
        [*NPE2_CLI, "validate", "--imports", PLUGIN], env=env, cwd=tmp_path, timeout=120
    )
    assert validate.returncode == 0, validate.stdout + validate.stderr
