"""The README's Python snippet runs as written (it is the first thing notebook users copy)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert blocks, "README.md has no ```python block"
    for code in blocks:
        namespace: dict[str, object] = {}
        exec(compile(code, str(README), "exec"), namespace)
    assert namespace["c"].shape == namespace["target"].shape  # contribution map (B, H, W)


def test_readme_comparison_folders_are_git_ignored_and_distinct() -> None:
    """The comparison demos write into git-ignored folders (a clone's `git status` stays clean),
    and README.md's CLI demo and training/README.md's Python demo (other settings) use different
    folders: a second comparison with other settings into one folder is refused."""
    lines = (README.parent / ".gitignore").read_text(encoding="utf-8").splitlines()
    ignored = {ln.strip().strip("/") for ln in lines if ln.strip().endswith("/")}
    readme = README.read_text(encoding="utf-8")
    training = (README.parent / "training" / "README.md").read_text(encoding="utf-8")
    read_compare = r'read_compare\("([^"]+)"\)'
    cli_demo = set(re.findall(r"--output (\S+)", readme)) | set(re.findall(read_compare, readme))
    python_demo = set(re.findall(read_compare, training))
    assert cli_demo and python_demo
    for folder in cli_demo | python_demo:
        assert folder.split("/")[0] in ignored, f"{folder} is not git-ignored"
    assert not cli_demo & python_demo, f"both READMEs' demos write into {cli_demo & python_demo}"


def test_readme_napari_door_installs_a_qt_binding() -> None:
    """`napari` opens no window without a Qt binding, and only the `qt` extra brings one (pip
    resolves napari with qtpy alone): the README's napari commands, run in the quickstart's
    venv, must install it themselves when scripts/quickstart.sh does not."""
    root = README.parent
    readme = README.read_text(encoding="utf-8")
    section = readme.split("### napari plugin", 1)[1].split("\n### ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block and re.search(r"^napari\b", block.group(1), re.M)
    quickstart = (root / "scripts" / "quickstart.sh").read_text(encoding="utf-8")
    installs = [
        line
        for text in (block.group(1), quickstart)
        for line in text.splitlines()
        if re.search(r"pip install .*-e", line) and not line.lstrip().startswith("#")
    ]
    pyproject = (root / "pyproject.toml").read_text(encoding="utf-8")
    assert re.search(r'^qt = \[".*PyQt', pyproject, re.M), "the qt extra names no Qt binding"
    assert any(re.search(r"\[([^\]]*,)?qt[,\]]", line) for line in installs), installs
