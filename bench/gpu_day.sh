#!/usr/bin/env bash
# One call on a lent GPU machine: install, CUDA tests, the GPU benchmark, and training the face model.
#
#   bench/gpu_day.sh [--dry-run] [--budget SECONDS] [--out DIR]
#
# Prepare here with `make gpu-prepare` (.gpu/: the wheels the machine's image lacks and the training pack,
# models/celeba64/pack_data.py), then one device-tool call from the repository root:
#   run(command='export PYTHONUNBUFFERED=1; bash bench/gpu_day.sh --budget 570 --out "$OUT"',
#       timeout_s=600, carry=[".gpu"])
# and give the machine back. Figures of the first such day: bench/out/gpu-h200-2026-12-04.md. Steps, each
# time-boxed:
#   1. install: the carried wheels and facebatch itself (from this checkout) into $WORK/site;
#   2. train:   models/celeba64/train.py on CUDA from the best state at hand, in the background for the
#               rest of the budget, snapshotting every 90 s into $OUT/model (G_ema + D, a sample grid,
#               the exact state in parts of <= 15 MiB): a run cut off at its limit still returns a model;
#   3. tests:   pytest -m cuda (tests/test_cuda.py) while it trains: correctness, not timing;
#   4. bench:   bench/gpu.py with the training paused (SIGSTOP), so its timings have the GPU alone.
# Everything printed also goes to $OUT/log. $OUT gets at most 8 files (what the device tool returns).
#
# --dry-run runs every step at toy size on the CPU (tests/test_celeba64_recipe.py does, so this cannot rot).
set -uo pipefail
cd "$(dirname "$0")/.."

DRY=0
BUDGET=570
OUT_DIR="${OUT:-gpu-day-out}"
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY=1 ;;
        --budget) BUDGET="$2"; shift ;;
        --out) OUT_DIR="$2"; shift ;;
        *) echo "usage: bench/gpu_day.sh [--dry-run] [--budget SECONDS] [--out DIR]" >&2; exit 2 ;;
    esac
    shift
done
PY="${PYTHON:-python3}"
T0=$(date +%s)
WORK="${GPU_DAY_WORK:-$(mktemp -d)}"
mkdir -p "$OUT_DIR" "$WORK"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
exec > >(tee -a "$OUT_DIR/log") 2>&1

elapsed() { echo $(( $(date +%s) - T0 )); }
say() { echo "[gpu-day +$(elapsed)s] $*"; }
# step NAME SECONDS CMD...: run CMD with a time box; report its exit code and time; never abort the day.
step() {
    local name="$1" secs="$2" start rc
    shift 2
    start=$(date +%s)
    say "== $name (time box ${secs}s): $*"
    timeout --signal=INT --kill-after=15 "$secs" "$@"
    rc=$?
    say "== $name: exit $rc after $(( $(date +%s) - start ))s"
    return $rc
}

say "dry run: $DRY; budget ${BUDGET}s; out $OUT_DIR; work $WORK"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv

# -- 1. install ------------------------------------------------------------------------------------
SITE="$WORK/site"
WHEELS=$(ls .gpu/wheels/*.whl 2>/dev/null | tr '\n' ' ')
# The wheels are built for the GPU machine's CPython 3.12: a dry run installs facebatch alone.
[ "$DRY" = 1 ] && WHEELS=
PIP=("$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE")
# The wheels first (dask, open_clip, ...: what the machine's image lacks), then facebatch from this checkout.
step install 180 bash -c "${WHEELS:+${PIP[*]} $WHEELS && }${PIP[*]} --no-build-isolation . && rm -rf build" || {
    # Training needs only torch and facebatch's networks: lay the package out by hand and go on.
    say "install failed: copying the package into $SITE as setuptools would lay it out"
    mkdir -p "$SITE" && rm -rf "$SITE/facebatch" && cp -r facebatch "$SITE/" \
        && cp -r models "$SITE/facebatch/models" && cp -r configs "$SITE/facebatch/configs"
}
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
# -P: the checkout's folders must not shadow the installed package (it maps models/ to facebatch.models).
RUN=("$PY" -P)
"${RUN[@]}" -c "import facebatch, torch; print('facebatch from', facebatch.__file__, '| torch', torch.__version__, '| cuda', torch.cuda.is_available())"

# -- 2. train in the background --------------------------------------------------------------------
DATA=.gpu/celeba64-train64.parquet
if [ "$DRY" = 1 ]; then
    DEVICE=cpu
    if [ ! -f "$DATA" ]; then  # a toy pack of the model's own samples: the recipe's code path, no photos needed
        "${RUN[@]}" -m facebatch sample -g celeba64 -n 8 -o "$WORK/toy" --device cpu -q --workers 0 \
            && mkdir -p "$WORK/toydata" && ln -sfn "$WORK/toy/images" "$WORK/toydata/images" \
            && "${RUN[@]}" models/celeba64/pack_data.py "$WORK/toydata" "$WORK/toy.parquet" && DATA="$WORK/toy.parquet"
    fi
    TRAIN_ARGS=(--device cpu --batch 4 --max-steps 3 --snapshot-min 0)
    TEST_THREADS=1
else
    DEVICE=cuda
    TRAIN_ARGS=(--device cuda --batch auto --snapshot-min 1.5)
    TEST_THREADS=8  # of 16 cores: the training process keeps its own for launching kernels
fi
# The exact state when one travelled (.gpu/state.pt), else the newest committed snapshot (fresh optimisers).
RUNDIR="$WORK/train"
mkdir -p "$RUNDIR"
[ -f .gpu/state.pt ] && cp .gpu/state.pt "$RUNDIR/state.pt"
INIT=models/celeba64/celeba64.safetensors  # the built-in model: G_ema and D of the newest committed snapshot
TRAIN_MIN=$(awk -v b="$BUDGET" -v e="$(elapsed)" 'BEGIN { m = (b - e - 25) / 60; print (m > 0.2 ? m : 0.2) }')
say "== train: ${TRAIN_MIN} min from ${INIT} (or $RUNDIR/state.pt), data $DATA"
"${RUN[@]}" models/celeba64/train.py --data "$DATA" --out "$RUNDIR" --init-from "$INIT" \
    --minutes "$TRAIN_MIN" --export "$OUT_DIR/model" "${TRAIN_ARGS[@]}" > "$WORK/train.log" 2>&1 &
TRAIN_PID=$!
tail -f "$WORK/train.log" --pid "$TRAIN_PID" | sed -u 's/^/[train] /' &
TAIL_PID=$!
# The batch choice is measured on a GPU of its own: tests start once training has begun in earnest.
for _ in $(seq 1 120); do
    grep -q "^training:" "$WORK/train.log" 2>/dev/null && break
    kill -0 "$TRAIN_PID" 2>/dev/null || break
    sleep 1
done

# -- 3. CUDA tests (while it trains) ---------------------------------------------------------------
OMP_NUM_THREADS=$TEST_THREADS FACEBATCH_TEST_DEVICE=$DEVICE step tests 200 \
    "${RUN[@]}" -m pytest -q -m cuda tests/test_cuda.py -p no:cacheprovider --durations=8

# -- 4. benchmark (training paused) ----------------------------------------------------------------
if [ "$DRY" = 1 ]; then
    BENCH_ARGS=(--device cpu --res 32 --batches 1 2 --steps 1 --precisions fp32 bf16 --quality 0)
else
    BENCH_ARGS=(--res 64 256 --batches 1 4 16 64 --steps 5 --quality 4 --quality-steps 100)
fi
kill -STOP "$TRAIN_PID" 2>/dev/null && say "training paused for the benchmark"
step bench 150 "${RUN[@]}" bench/gpu.py "${BENCH_ARGS[@]}" --json "$OUT_DIR/bench.json"
kill -CONT "$TRAIN_PID" 2>/dev/null && say "training resumed"

# -- wait for training to finish its last snapshot -------------------------------------------------
wait "$TRAIN_PID"
TRAIN_RC=$?
LEFT=$(awk -v b="$BUDGET" -v e="$(elapsed)" 'BEGIN { print int(b - e - 25) }')
if [ "$TRAIN_RC" != 0 ] && [ "$LEFT" -gt 60 ]; then
    # A failure of the GPU settings must not cost the model: once more with the CPU recipe's batch and fp32.
    say "== train failed (exit $TRAIN_RC); again for ${LEFT}s with batch 32, fp32"
    "${RUN[@]}" models/celeba64/train.py --data "$DATA" --out "$RUNDIR" --init-from "$INIT" \
        --minutes "$(awk -v l="$LEFT" 'BEGIN { print l / 60 }')" --export "$OUT_DIR/model" \
        --device "$DEVICE" --batch 32 --precision fp32 --snapshot-min 1.5 2>&1 | sed -u 's/^/[train] /'
    TRAIN_RC=${PIPESTATUS[0]}
fi
kill "$TAIL_PID" 2>/dev/null
wait "$TAIL_PID" 2>/dev/null
say "== train: exit $TRAIN_RC"
tail -n 3 "$RUNDIR/log.csv" 2>/dev/null
ls -l "$OUT_DIR" "$OUT_DIR/model" 2>/dev/null
say "done"
[ "$TRAIN_RC" = 0 ]
