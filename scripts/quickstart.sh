#!/usr/bin/env bash
# Quickstart (the README's main job): set up a virtual environment, install napari-segloss,
# train a small PM-Dice U-Net on 32 bundled Kvasir-SEG pairs (CPU when there is no GPU, about a
# minute on 2 cores), then segment the three bundled `kvasir` frames it never saw and score them.
#
#   bash scripts/quickstart.sh            # from anywhere; works on a fresh machine with python3
#   PYTHON=python3.12 bash scripts/quickstart.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-$ROOT/.venv}"

if [ ! -x "$VENV/bin/python" ]; then
    echo ">>> creating virtual environment $VENV"
    "$PYTHON" -m venv "$VENV"
fi
# shellcheck disable=SC1091
source "$VENV/bin/activate"

echo ">>> installing napari-segloss (pip resolves torch together with segmentation-models-pytorch)"
python -m pip install --upgrade pip >/dev/null
# Never pin torch here: pip picks the build matching this machine (CUDA wheels on Linux x86-64).
python -m pip install -e .

python - <<'PY'
import torch
import segmentation_models_pytorch as smp
import napari_segloss
from napari_segloss.samples import sample_pairs_dir
print(f"napari-segloss {napari_segloss.__version__}, torch {torch.__version__}, smp {smp.__version__}, "
      f"device: {'cuda (' + torch.cuda.get_device_name(0) + ')' if torch.cuda.is_available() else 'cpu'}")
print(f"bundled samples: {sample_pairs_dir('kvasir')}")
PY

RUN_DIR="runs/quickstart"
# One torch thread by default: the tiny quickstart model gains little from more, and on a busy
# shared CPU multi-threaded small ops get several times slower. SEGLOSS_THREADS=N to change it.
THREADS="${SEGLOSS_THREADS:-1}"
echo ">>> training (segloss train --config training/configs/quickstart.yaml)"
segloss train --config training/configs/quickstart.yaml --threads "$THREADS" --set "output=$RUN_DIR" "$@"

SAMPLES="$(python -c "from napari_segloss.samples import sample_pairs_dir; print(sample_pairs_dir('kvasir'))")"
echo ">>> segmenting the 3 bundled kvasir frames (not seen in training): $SAMPLES/images"
segloss predict --checkpoint "$RUN_DIR/best.pt" --input "$SAMPLES/images" --output "$RUN_DIR/predictions" --probs --threads "$THREADS"

echo ">>> scoring them against their masks"
segloss evaluate --pred "$RUN_DIR/predictions" --gt "$SAMPLES/masks" --class-names polyp --threads "$THREADS"

echo
echo "Done. Outputs:"
echo "  run directory:   $ROOT/$RUN_DIR  (config.yaml, metrics.csv, checkpoint.pt, best.pt, eval.json)"
echo "  predictions:     $ROOT/$RUN_DIR/predictions  (label PNGs {0,1}, probability TIFFs, evaluation CSV/Markdown)"
echo "  open in napari:  pip install -e \".[qt]\" once (a Qt binding; this script installs none), then"
echo "                   napari $SAMPLES/images/*.jpg, then Plugins > napari-segloss > Predict & Compare with $RUN_DIR/best.pt"
