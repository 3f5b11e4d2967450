#!/usr/bin/env bash
# Download, into .whl/, the wheels that scripts/gpu_check.sh needs on a GPU machine whose Python
# (3.12, with torch, timm, numpy, scipy, scikit-image, pytest) cannot reach a package index:
# segmentation-models-pytorch, pydantic, MONAI (the benchmarks' reference) and nibabel.
#   bash scripts/gpu_wheels.sh            # then carry .whl/ to the GPU machine with the tree
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
mkdir -p .whl
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl \
    segmentation-models-pytorch pydantic pydantic-core annotated-types typing-inspection \
    monai nibabel
ls -1 .whl
