#!/usr/bin/env bash
# GPU check: one command, under 8 minutes on one GPU (its steps' time limits add up to 450 s).
# Runs the CUDA tests (tests/test_gpu.py, the AMP inference test), the loss benchmark on CUDA,
# the training-throughput benchmark (our loop against a plain smp loop; then 4 classes with the
# config's default train.deterministic: true, which turns cuDNN autotuning off and sends index
# scatters through sort-based kernels) and the loss's share of a training step, and writes every
# figure to one Markdown file.
#
#   bash scripts/gpu_check.sh [REPORT]     # default REPORT: $OUT/gpu_figures.md, else benchmarks/
#
# On a machine whose Python lacks some of our dependencies and cannot download them (the lent
# GPU machines), run `bash scripts/gpu_wheels.sh` beforehand on a machine that can: the wheels
# it leaves in .whl/ are installed here into a private folder (nothing in the system changes).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
REPORT="${1:-${OUT:-$ROOT/benchmarks}/gpu_figures.md}"
mkdir -p "$(dirname "$REPORT")"
LOG="$(dirname "$REPORT")/gpu_check.log"
export PYTHONUNBUFFERED=1

if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/segloss-site .whl/*.whl || { echo "installing .whl/ failed" >&2; exit 1; }
    export PYTHONPATH="/tmp/segloss-site"
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
    || { echo "no CUDA device visible to $PY: nothing to check" >&2; exit 1; }

{
    echo "# GPU check, $(date -u +%Y-%m-%dT%H:%MZ)"
    echo
    echo '```'
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
    echo '```'
    echo
} >"$REPORT"

status=0
run() {  # run NAME SECONDS COMMAND...: a step with its own time limit; failures are recorded
    local name="$1" limit="$2"
    shift 2
    echo ">>> $name" | tee -a "$LOG"
    local start=$SECONDS
    timeout "$limit" "$@" 2>&1 | tee -a "$LOG"
    local rc=${PIPESTATUS[0]}
    echo "- $name: exit $rc in $((SECONDS - start)) s" >>"$REPORT.steps"
    [ "$rc" -eq 0 ] || status=1
}

: >"$REPORT.steps"
run "CUDA tests" 150 "$PY" -m pytest -q -p no:cacheprovider tests/test_gpu.py \
    tests/engine/test_inference.py -k "cuda or gpu or amp or GPU"
run "loss benchmark" 80 "$PY" benchmarks/bench_losses.py --device cuda --rounds 20 \
    --losses dice,pm_dice,ce,ce+pm_dice,focal,tversky,unified_focal,topk_dice --out "$REPORT"
run "training throughput" 110 "$PY" benchmarks/bench_training.py --device cuda --steps 120 \
    --repeats 2 --output "$REPORT"
run "training throughput, deterministic, 4 classes" 60 "$PY" benchmarks/bench_training.py \
    --device cuda --steps 80 --repeats 1 --deterministic --classes 4 --loss ce+pm_dice \
    --output "$REPORT"
run "loss share of a step" 50 "$PY" benchmarks/bench_step_share.py --device cuda --batch 32 \
    --amp --rounds 10 --out "$REPORT"

{
    echo
    echo "## Steps"
    echo
    cat "$REPORT.steps"
    echo
    echo "CUDA test summary: $(grep -E '(passed|failed|error|skipped)' "$LOG" | grep -E '^[0-9=]' | tail -1)"
} >>"$REPORT"
rm -f "$REPORT.steps"
echo "report: $REPORT"
exit $status
