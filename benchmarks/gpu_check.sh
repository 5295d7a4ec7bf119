#!/usr/bin/env bash
# The prepared GPU check (docs/gpu-check.md): one command, run from the repository root, that a session lent a
# GPU runs in under 10 minutes. Steps, each in its own time box, all under 8 minutes together:
#   1. tests   pytest -m gpu tests/kernels: bf16 and benchmark-shape parity of every kernel on the device
#   2. kernels benchmarks/kernels.py: each op against its reference, its dense alternative and its floor
#   3. speed   benchmarks/train_throughput.py: tokens/s and MFU of dense, transcoder, weight-sparse at `small`
#   4. train   benchmarks/gpu_check.py train: short real trainings of dense and weight-sparse `small` models on
#              the prepared default corpus; their model directories come back for analysis on the CPU
# Everything lands in $OUT: gpu_check.log, summary.md, figures.json, models.tar.gz.part-* (15 MiB pieces).
#
#   bash benchmarks/gpu_check.sh --prepare .gpu_check_data   # CPU machine: tokenise the corpus (needs datasets)
#   bash benchmarks/gpu_check.sh                             # GPU machine: the check, reading .gpu_check_data
#   bash benchmarks/gpu_check.sh --dry-run                   # CPU: the same steps at toy sizes
#
# glassformer need not be installed: a temporary folder maps glassformer.<pkg> onto this checkout. The GPU image
# lacks datasets, wandb and jsonargparse; the dry run refuses to import them too, so it fails where the GPU would.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
MODE=device
DATA="${GPU_CHECK_DATA:-.gpu_check_data}"
PREPARE=""
COMMAND="bash benchmarks/gpu_check.sh $*"
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) MODE=dry-run ;;
        --prepare) PREPARE="${2:?--prepare needs a folder}"; shift ;;
        --data) DATA="${2:?--data needs a folder}"; shift ;;
        -h|--help) sed -n '2,16p' "${BASH_SOURCE[0]}" | cut -c3-; exit 0 ;;
        *) echo "gpu_check.sh: unknown argument '$1': expected --dry-run, --prepare DIR, --data DIR or --help" >&2
           exit 2 ;;
    esac
    shift
done

WORK="$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/shim/glassformer" "$WORK/absent"
: > "$WORK/shim/glassformer/__init__.py"
for pkg in archs kernels training analysis; do ln -s "$ROOT/$pkg" "$WORK/shim/glassformer/$pkg"; done
export PYTHONPATH="$WORK/shim${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 WANDB_MODE=offline

if [ -n "$PREPARE" ]; then
    toy=(); [ "$MODE" = dry-run ] && toy=(--toy)
    exec "$PY" benchmarks/gpu_check.py prepare "$PREPARE" "${toy[@]}"
fi

OUT="${OUT:-$ROOT/runs/gpu_check}"
mkdir -p "$OUT"
exec > >(tee -a "$OUT/gpu_check.log") 2>&1
TEE_PID=$!
echo "gpu_check ($MODE) started $(date -u '+%Y-%m-%d %H:%M:%S UTC') in $ROOT; results in $OUT"
git -C "$ROOT" describe --always --dirty --abbrev=7 > "$WORK/commit.txt" 2>/dev/null || rm -f "$WORK/commit.txt"

# step NAME SECONDS COMMAND...: run COMMAND in a time box, record its exit status (124: out of time) and seconds.
step() {
    local name=$1 limit=$2 t0=$SECONDS rc
    shift 2
    echo "=== [$name] time box ${limit}s: $*"
    timeout --kill-after=10 "$limit" "$@"
    rc=$?
    printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - t0))" "$limit" >> "$WORK/steps.tsv"
    echo "=== [$name] exit $rc after $((SECONDS - t0))s"
}

if [ "$MODE" = dry-run ]; then
    export TRITON_INTERPRET=1 OMP_NUM_THREADS=1 CUDA_VISIBLE_DEVICES=""
    DATA="$WORK/data"
    step prepare 120 "$PY" benchmarks/gpu_check.py prepare "$DATA" --toy
    # From here on, importing a package the GPU image lacks fails, as it would there.
    cat > "$WORK/absent/sitecustomize.py" <<'PYEOF'
import sys

class _AbsentOnDevice:
    """gpu_check.sh --dry-run: the GPU machine's image lacks these packages, so the dry run refuses them."""
    names = {"datasets", "wandb", "jsonargparse"}

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {name!r} (absent on the GPU machine)", name=name)
        return None

sys.meta_path.insert(0, _AbsentOnDevice())
PYEOF
    export PYTHONPATH="$WORK/absent:$PYTHONPATH"
    KERNELS=(--device cpu)
    SPEED=(--preset debug --device cpu --precision 32-true --steps 6 --warmup 2 --batch-size 4 --matmul-size 256)
    TRAIN=(--preset debug --precision 32-true --accelerator cpu --batch-size 8 --steps 10)
    echo "cpu (dry run: toy sizes, Triton interpreter)" > "$WORK/device.txt"
else
    KERNELS=(--no-compile)
    SPEED=(--preset small --device cuda --precision bf16-mixed --steps 60 --warmup 10 --batch-size 32)
    TRAIN=(--preset small --precision bf16-mixed --accelerator gpu --batch-size 32 --train-seconds 40
           --throughput "$WORK/throughput.json")
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > "$WORK/device.txt" 2>/dev/null \
        || rm -f "$WORK/device.txt"
fi

step tests 100 "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/kernels --junitxml="$WORK/pytest.xml"
step kernels 120 bash -c 'set -o pipefail; "$@" | tee "'"$WORK"'/kernels.txt"' _ "$PY" benchmarks/kernels.py --markdown \
    --json "$WORK/kernels.json" "${KERNELS[@]}"
step speed 75 "$PY" benchmarks/train_throughput.py "${SPEED[@]}" --variants dense transcoder weight_sparse \
    --paths lightning --rounds 1 --json "$WORK/throughput.json"
if [ -f "$DATA/corpus.json" ]; then
    step train 150 "$PY" benchmarks/gpu_check.py train --data "$DATA" --out "$WORK/models" \
        --variants dense weight_sparse "${TRAIN[@]}" --json "$WORK/train.json"
else
    echo "=== [train] skipped: $DATA/corpus.json is missing; prepare it on a CPU machine with" \
         "'bash benchmarks/gpu_check.sh --prepare $DATA' and carry it"
    printf 'train\t3\t0\t0\n' >> "$WORK/steps.tsv"
fi

rm -f "$OUT"/models.tar.gz.part-*
if [ -d "$WORK/models" ]; then
    # The returned files are at most 16 MiB each: the model directories travel as 15 MiB pieces.
    tar -C "$WORK/models" --exclude=checkpoints -cf - . | gzip -1 | split -b 15m -d -a 1 - "$OUT/models.tar.gz.part-"
    ls -l "$OUT"/models.tar.gz.part-*
fi
step summary 30 "$PY" benchmarks/gpu_check_summary.py --work "$WORK" --out "$OUT" --mode "$MODE" --command "$COMMAND"
failed=$(awk -F'\t' '$2 != 0 {printf "%s(%s) ", $1, $2}' "$WORK/steps.tsv")
echo "gpu_check ($MODE) finished after ${SECONDS}s; ${failed:+failed steps: $failed; }summary: $OUT/summary.md"
# Close the log's pipe and let tee write its last lines before the command returns (the device collects $OUT then).
exec >&- 2>&-
wait "$TEE_PID" 2>/dev/null
[ -z "$failed" ]
