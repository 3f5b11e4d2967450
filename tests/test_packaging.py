"""Packaging: the npe2 manifest is valid, is found from the editable install and from a built
wheel, and the wheel ships the manifest as a real file plus the sample data and the example
configs (`segloss train --config quickstart` works from a wheel)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
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


_CONFIG_PROBE = """
from napari_segloss.cli import prepare_config
from napari_segloss.engine.config import find_config, load_config
tree, overrides = prepare_config("quickstart", ["train.epochs=1"])
print(find_config("quickstart"), load_config(tree, overrides).data.root)
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
    # napari_segloss/configs/*.yaml link to training/configs/: the copy needs their targets
    shutil.copytree(REPO / "training" / "configs", src / "training" / "configs")
    shutil.copytree(
        REPO / "napari_segloss",
        src / "napari_segloss",
        symlinks=True,
        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc"),
    )
    dist = tmp_path / "dist"
    # `python -m build` makes the sdist, then the wheel from that sdist (what pip does with an
    # sdist from PyPI); --no-isolation uses this environment's setuptools, as the dev extra
    # intends, and stops on any unmet [build-system] requirement.
    build = _run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(src)],
        timeout=300,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    [wheel] = list(dist.glob("napari_segloss-*.whl"))
    assert len(list(dist.glob("napari_segloss-*.tar.gz"))) == 1
    assert wheel.stat().st_size < 2_000_000, f"{wheel.name}: {wheel.stat().st_size} bytes"
    package_files = {
        f.relative_to(src).as_posix()
        for f in (src / "napari_segloss").rglob("*")
        if f.is_file() and "__pycache__" not in f.parts and f.suffix != ".pyc"
    }

    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        assert package_files <= names, f"missing from the wheel: {sorted(package_files - names)}"
        stray = sorted(n for n in names if n.split("/")[0] not in {"napari_segloss"})
        assert all(".dist-info/" in n for n in stray), f"not the package: {stray}"
        info = zf.getinfo("napari_segloss/napari.yaml")
        mode = info.external_attr >> 16
        assert not (mode & 0o170000 == 0o120000), "napari.yaml is stored as a symlink in the wheel"
        assert zf.read(info) == (REPO / "napari.yaml").read_bytes()
        shipped = sorted(n for n in names if n.startswith("napari_segloss/configs/"))
        assert shipped == sorted(
            f"napari_segloss/configs/{p.name}"
            for p in (REPO / "training" / "configs").glob("*.yaml")
        )
        for name in shipped:  # real files (not links into a training/ folder users lack)
            config = zf.getinfo(name)
            assert (config.external_attr >> 16) & 0o170000 != 0o120000, f"{name} is a symlink"
            assert zf.read(config) == (REPO / "training" / "configs" / Path(name).name).read_bytes()
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

    # `segloss` from the wheel, in a folder without training/: the shipped configs by name
    segloss = [sys.executable, "-m", "napari_segloss.cli"]
    listed = _run([*segloss, "configs"], env=env, cwd=tmp_path, timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert "quickstart" in listed.stdout and "kvasir_pm_dice" in listed.stdout
    assert f"folder: {site / 'napari_segloss' / 'configs'}" in listed.stdout
    config = _run(
        [sys.executable, "-c", _CONFIG_PROBE], env={**env, "PYTHONPATH": str(site)}, cwd=tmp_path
    )
    assert config.returncode == 0, config.stderr[-3000:]
    path, root = config.stdout.split()
    assert Path(path).resolve().is_relative_to(site.resolve()) and root == "bundled:kvasir_train"


def _ci_system_packages() -> list[str]:
    text = (REPO / "scripts" / "test.sh").read_text(encoding="utf-8")
    match = re.search(r"^SYSTEM_PACKAGES=\((.*?)\)", text, re.S | re.M)
    assert match, "scripts/test.sh has no SYSTEM_PACKAGES=(...) list"
    return match.group(1).split()


def _apt_closure(packages: list[str]) -> set[str]:
    """The packages `apt-get install --no-install-recommends PACKAGES` brings in (recursive
    Depends/PreDepends, virtual names included), plus the base system (Priority: required)."""
    flags = ["--no-recommends", "--no-suggests", "--no-conflicts", "--no-breaks"]
    flags += ["--no-replaces", "--no-enhances"]
    deps = _run(["apt-cache", "depends", "--recurse", *flags, *packages], timeout=120)
    assert deps.returncode == 0, deps.stderr
    closure = {line.strip() for line in deps.stdout.splitlines() if not line.startswith(" ")}
    required = _run(["dpkg-query", "-W", "-f", "${Package} ${Priority}\\n"], timeout=60)
    closure |= {
        p
        for p, _, prio in (ln.partition(" ") for ln in required.stdout.splitlines())
        if prio == "required"
    }
    return {name.split(":")[0] for name in closure}


@pytest.mark.skipif(
    not all(shutil.which(tool) for tool in ("apt-cache", "dpkg", "dpkg-query", "ldd")),
    reason="checks the apt package list of scripts/test.sh: Debian/Ubuntu only",
)
def test_ci_system_packages_cover_qt_and_xvfb_run() -> None:
    """On a fresh Debian/Ubuntu machine `scripts/test.sh` (hence CI) installs, with
    --no-install-recommends, every system library the installed Qt links against and what
    `xvfb-run` needs; otherwise the Qt tests cannot start there, although they pass here."""
    closure = _apt_closure(_ci_system_packages())
    problems = []

    xvfb_run = shutil.which("xvfb-run")
    if xvfb_run and "command -v xauth" in Path(xvfb_run).read_text(errors="replace"):
        if "xauth" not in closure:  # Debian's xvfb only *recommends* xauth
            problems.append("xauth (xvfb-run exits with 'xauth command not found' without it)")

    qt_dirs = []
    for binding in ("PyQt6", "PyQt5", "PySide6"):
        try:
            spec = importlib.util.find_spec(binding)
        except (ImportError, ValueError):
            continue
        if spec and spec.submodule_search_locations:
            qt_dirs += [Path(p) for p in spec.submodule_search_locations]
    # what a napari window loads: the Python modules it imports (ldd follows them to the Qt
    # libraries) and the X11 platform plugin with its GL integrations
    modules = re.compile(r"Qt(Core|Gui|Widgets|OpenGL|OpenGLWidgets|Svg)\.[\w.-]*so$")
    qt_libs = [
        f
        for d in qt_dirs
        for f in d.rglob("*.so*")
        if modules.match(f.name) or f.name == "libqxcb.so" or f.parent.name == "xcbglintegrations"
    ]
    if not qt_libs:
        pytest.skip("no Qt binding installed")
    system_libs: dict[str, str] = {}  # real path -> library name
    for lib in qt_libs:
        out = _run(["ldd", str(lib)], timeout=60).stdout
        for m in re.finditer(r"^\s*(\S+) => (/\S+)", out, re.M):
            path = os.path.realpath(m.group(2))
            if not any(Path(path).is_relative_to(d.resolve()) for d in qt_dirs):
                system_libs[path] = m.group(1)
    owners = _run(["dpkg", "-S", *(f"*/{Path(p).name}" for p in system_libs)], timeout=120)
    providers: dict[str, set[str]] = {}
    for line in owners.stdout.splitlines():
        pkgs, _, path = line.partition(": ")
        for pkg in pkgs.split(", "):
            providers.setdefault(Path(path).name, set()).add(pkg.split(":")[0])
    for path, soname in sorted(system_libs.items()):
        owning = providers.get(Path(path).name)
        if owning and not owning & closure:
            problems.append(f"{soname} (package {'/'.join(sorted(owning))})")
    assert not problems, "scripts/test.sh SYSTEM_PACKAGES lacks: " + "; ".join(problems)


def test_gpu_check_fits_its_eight_minutes() -> None:
    """The device machine lends 10 minutes a call: the GPU check's step limits must add up to
    under the 8 minutes it promises (they added up to 530 s)."""
    script = (Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.sh").read_text()
    limits = [int(m) for m in re.findall(r'^run "[^"]+" (\d+) ', script, flags=re.M)]
    assert len(limits) == 5 and sum(limits) <= 480, limits
