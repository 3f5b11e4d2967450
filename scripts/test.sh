#!/usr/bin/env bash
# Set up everything and run the full test suite plus ruff (the README's second command; CI runs
# this same script through .ci/run).
#
#   bash scripts/test.sh                      # whole suite
#   bash scripts/test.sh tests/data/test_io.py -x  # extra arguments go to pytest
#
# Steps: system libraries for a headless Qt/napari (only when root and apt-get exists), a .venv
# (created if missing), `pip install -e ".[dev,qt]"`, an import check of
# segmentation-models-pytorch, then `ruff` and `xvfb-run -a python -m pytest -q -n <cores>`.
# Environment: PYTHON (interpreter for the venv, default python3), VENV (default ./.venv),
# SEGLOSS_SKIP_INSTALL=1 (reuse the venv as is, e.g. for a quick re-run), SEGLOSS_TEST_WORKERS
# (pytest-xdist workers, default one per usable core, at most 4; 0: no workers).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-$ROOT/.venv}"

# Libraries Qt needs to open a napari window on a virtual X display (xvfb). Installed without
# recommends, so xauth (xvfb-run refuses to start without it) and GLib (Qt's core library
# links it) are named here; tests/test_packaging.py checks the list against the installed Qt.
SYSTEM_PACKAGES=(xvfb xauth libgl1-mesa-dri libegl1 libglib2.0-0 libxkbcommon-x11-0
    libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxcb-image0 libxcb-render-util0
    libxcb-xinerama0 libxcb-shape0 libdbus-1-3 libfontconfig1)

step() { echo; echo ">>> $*"; }
die() { echo "ERROR: $*" >&2; exit 1; }

if [ "${EUID:-$(id -u)}" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    if dpkg -s "${SYSTEM_PACKAGES[@]}" >/dev/null 2>&1; then
        step "system packages already installed"
    else
        step "installing system packages: ${SYSTEM_PACKAGES[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q || die "apt-get update failed"
        apt-get install -y -q --no-install-recommends "${SYSTEM_PACKAGES[@]}" \
            || die "apt-get install failed"
    fi
else
    step "not root or no apt-get: skipping system packages (install them yourself if Qt tests fail: ${SYSTEM_PACKAGES[*]})"
fi

if [ ! -x "$VENV/bin/python" ]; then
    step "creating virtual environment $VENV"
    "$PYTHON" -m venv "$VENV" || die "could not create a venv with $PYTHON (on Debian/Ubuntu: apt-get install python3-venv)"
fi
# shellcheck disable=SC1091
source "$VENV/bin/activate"

if [ "${SEGLOSS_SKIP_INSTALL:-0}" != "1" ]; then
    step "installing napari-segloss with dev and qt extras"
    python -m pip install --upgrade pip -q || die "pip upgrade failed"
    # Never pin torch: pip resolves it together with segmentation-models-pytorch (CUDA build where
    # the platform has one).
    python -m pip install -e ".[dev,qt]" || die "pip install -e .[dev,qt] failed"
fi

step "checking the model library"
python -c "import segmentation_models_pytorch as smp, torch; print('smp', smp.__version__, '| torch', torch.__version__)" \
    || die "segmentation_models_pytorch does not import"

# ruff first, so that pytest's summary is the last line of the log (CI reads it).
step "ruff check + ruff format --check"
ruff check . && ruff format --check .
ruff_rc=$?

step "running the test suite"
# One pytest-xdist worker per core (at most 4: each holds its own napari viewers); the panel
# tests are single-threaded Python and Qt, so a second core halves the suite's time.
# SEGLOSS_TEST_WORKERS=0 runs everything in this process (e.g. for pdb).
cores=$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)
WORKERS=(-n "${SEGLOSS_TEST_WORKERS:-$((cores < 4 ? cores : 4))}")
if command -v xvfb-run >/dev/null 2>&1; then
    xvfb-run -a python -m pytest -q "${WORKERS[@]}" "$@"
else
    echo "xvfb-run not found: running Qt offscreen (napari viewer tests may fail or skip)"
    QT_QPA_PLATFORM=offscreen python -m pytest -q "${WORKERS[@]}" "$@"
fi
tests_rc=$?

[ "$ruff_rc" -eq 0 ] || echo "ruff failed (exit $ruff_rc)" >&2
[ "$tests_rc" -eq 0 ] && [ "$ruff_rc" -eq 0 ]
