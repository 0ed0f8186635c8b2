#!/usr/bin/env bash
# GPU smoke check (issue 19): on a GPU machine that has its own Python with a CUDA torch and no internet, install the
# project with the existing-torch mode from carried wheels, run the CUDA tests, 100 tiny training iterations in fp32
# and with AMP (bf16 and fp16), a --resume, an evaluation, a timing of the deformable-attention implementations and
# the quick inference / training benchmark cases on CUDA, and print one summary. Budget: under 8 minutes (each step is time-boxed; what does not fit is reported as
# skipped, not left running).
#
#   bash scripts/gpu_smoke.sh --prepare-wheels .whl   # HERE (with PyPI): the wheels such a machine lacks (~11 MiB)
#   bash scripts/gpu_smoke.sh                          # THERE: everything above, then the summary
#
# Environment (THERE):
#   PYTHON                the interpreter with torch (default: python3)
#   L2G_WHEELS            the carried wheel folder (default: <repo>/.whl)
#   L2G_SMOKE_DIR         work folder: venv, data, runs, logs (default: /tmp/l2g-smoke; never the repo's .venv)
#   L2G_SMOKE_ITERS       training iterations per precision (default: 100)
#   L2G_SMOKE_BUDGET_S    overall time box in seconds (default: 450)
#   L2G_SMOKE_BUILD_MSDA  1 (default): build torch-ms-deform-attn's CUDA kernel from its sdist in L2G_WHEELS with the
#                         machine's nvcc (in the background, while training runs), so the tests compare it too
#   L2G_SMOKE_BENCH       1 (default): run the quick inference / training benchmark cases at the end
#   L2G_SMOKE_DEVICE      cuda (default); cpu only to dry-run this script's logic on a machine without a GPU
#                         (fp16 training and the kernel build are then skipped)
#   OUT                   if set (the device tool's output folder): summary.txt and logs.tar.gz are copied there
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# The versions are requirements.txt's (they satisfy requirements-existing-torch.txt's ranges).
PURE_WHEELS=(omegaconf==2.3.0 hydra-core==1.3.2 antlr4-python3-runtime==4.9.3 fvcore==0.1.5.post20221221
             iopath==0.1.10 yacs==0.1.8 termcolor==3.1.0 trackeval==1.3.0)
BINARY_WHEELS=(pycocotools==2.0.11 orjson==3.13.0)
MSDA_SDIST=torch-ms-deform-attn==0.1.1
TARGET_PYTHON_VERSION="${L2G_TARGET_PYTHON:-3.12}"

if [[ "${1:-}" == "--prepare-wheels" ]]; then
  dest="${2:?usage: gpu_smoke.sh --prepare-wheels DIR}"
  mkdir -p "$dest"
  py="${PYTHON:-$ROOT/.venv/bin/python}"
  pip=("$py" -m pip --disable-pip-version-check)
  echo "[prepare] pure-Python wheels (sdists built here): ${PURE_WHEELS[*]}"
  "${pip[@]}" wheel -q --no-deps -w "$dest" "${PURE_WHEELS[@]}" || exit 1
  echo "[prepare] binary wheels for CPython $TARGET_PYTHON_VERSION manylinux x86-64: ${BINARY_WHEELS[*]}"
  "${pip[@]}" download -q --no-deps --only-binary=:all: --python-version "$TARGET_PYTHON_VERSION" \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$dest" "${BINARY_WHEELS[@]}" || exit 1
  echo "[prepare] detectron2: the original sal-detectron2 wheel (the installer checks its sha256 and re-tags it)"
  "${pip[@]}" download -q --no-deps --only-binary=:all: --python-version 3.10 -d "$dest" sal-detectron2==0.7.2 || exit 1
  echo "[prepare] $MSDA_SDIST source (built there against the machine's torch with nvcc)"
  "${pip[@]}" download -q --no-deps --no-build-isolation --no-binary=:all: -d "$dest" "$MSDA_SDIST" || exit 1
  du -sh "$dest"
  ls "$dest"
  exit 0
fi

SMOKE="${L2G_SMOKE_DIR:-/tmp/l2g-smoke}"
WHEELS="${L2G_WHEELS:-$ROOT/.whl}"
ITERS="${L2G_SMOKE_ITERS:-100}"
BUDGET="${L2G_SMOKE_BUDGET_S:-450}"
BUILD_MSDA="${L2G_SMOKE_BUILD_MSDA:-1}"
BENCH="${L2G_SMOKE_BENCH:-1}"
DEVICE="${L2G_SMOKE_DEVICE:-cuda}"
CONFIG=configs/local2global_tiny_synthetic.py
VENV="$SMOKE/venv"
PY="$VENV/bin/python"
mkdir -p "$SMOKE/logs"
: > "$SMOKE/summary.tsv"
T0=$(date +%s)
export PYTHONUNBUFFERED=1 L2G_SYNTHETIC_ROOT="$SMOKE/data/synthetic_vis"

elapsed() { echo $(( $(date +%s) - T0 )); }
left() { echo $(( BUDGET - $(elapsed) )); }
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >> "$SMOKE/summary.tsv"; echo "[smoke] $1: $2 ($3 s) $4"; }

# run_step NAME MIN_SECONDS_LEFT TIMEOUT_S CMD...: run with a time box; recorded as ok / FAIL / skipped.
run_step() {
  local name="$1" need="$2" limit="$3"; shift 3
  if (( $(left) < need )); then record "$name" skipped 0 "not enough of the ${BUDGET}s budget left"; return 1; fi
  (( limit > $(left) )) && limit=$(left)
  local start=$(date +%s) rc
  # through bash -c so that a shell function (train) can be time-boxed too
  timeout "$limit" bash -c '"$@"' _ "$@" > "$SMOKE/logs/$name.log" 2>&1
  rc=$?
  local took=$(( $(date +%s) - start ))
  if (( rc == 0 )); then record "$name" ok "$took" ""; return 0; fi
  record "$name" FAIL "$took" "exit $rc$( ((rc == 124)) && echo ' (time box)'); log: logs/$name.log"
  tail -n 25 "$SMOKE/logs/$name.log" | sed 's/^/    /'
  return 1
}

train() {  # train NAME [--resume] OVERRIDES...: tiny model on CUDA, no evaluation during training
  local name="$1" flags=(); shift
  if [[ "${1:-}" == "--resume" ]]; then flags=(--resume); shift; fi
  "$PY" scripts/train_net.py "${flags[@]}" --config-file "$CONFIG" "train.device=$DEVICE" train.seed=0 \
    train.log_period=10 train.eval_period=-1 "train.output_dir=$SMOKE/runs/$name" "$@"
}

export -f train
export PY CONFIG SMOKE DEVICE

# metrics NAME: median seconds per iteration and the last total loss of a run (from detectron2's metrics.json)
metrics() {
  "$PY" - "$SMOKE/runs/$1/metrics.json" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
times = [r["time"] for r in rows if "time" in r]
loss = [r for r in rows if "total_loss" in r]
print(f"{statistics.median(times):.3f} s/it, iterations {loss[0]['iteration']}-{loss[-1]['iteration']}, "
      f"last total_loss {loss[-1]['total_loss']:.3f}" if times and loss else "no metrics")
PY
}

echo "[smoke] $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo 'no nvidia-smi')"

# 1. install: the machine's torch is kept, the rest comes from the carried wheels
if ! run_step install 400 300 env PYTHON="${PYTHON:-python3}" L2G_USE_SYSTEM_TORCH=1 L2G_WHEELS="$WHEELS" \
      L2G_VENV="$VENV" bash scripts/install.sh; then
  echo "[smoke] install failed: nothing else can run"; cat "$SMOKE/summary.tsv"; exit 1
fi
"$PY" -c "import torch; print('[smoke] torch', torch.__version__, 'CUDA', torch.version.cuda,
  torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')"

# 2. the compiled deformable-attention kernel, built in the background while the model trains
msda_pid=""
sdist="$(ls "$WHEELS"/torch_ms_deform_attn-*.tar.gz 2>/dev/null | head -n 1)"
if [[ "$BUILD_MSDA" == "1" && "$DEVICE" == "cuda" && -n "$sdist" ]] && command -v nvcc >/dev/null 2>&1; then
  arch="$("$PY" -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability(0))')"
  ( start=$(date +%s)
    TORCH_CUDA_ARCH_LIST="$arch" FORCE_CUDA=1 MAX_JOBS="$(nproc)" timeout 300 "$PY" -m pip install -q \
      --no-build-isolation --no-deps --no-index "$sdist" > "$SMOKE/logs/msda-build.log" 2>&1
    echo "$? $(( $(date +%s) - start ))" > "$SMOKE/msda-build.status" ) &
  msda_pid=$!
else
  record msda-build skipped 0 "no sdist in $WHEELS, no nvcc, device $DEVICE or L2G_SMOKE_BUILD_MSDA=0"
fi

# 3. data, trainings, resume, evaluation
run_step data 300 120 "$PY" scripts/make_synthetic_vis.py --output "$L2G_SYNTHETIC_ROOT" --num-train 8 --num-valid 4 \
  --num-long 0 --min-length 5 --max-length 8
half=$(( ITERS / 2 ))
if run_step train-fp32 240 150 train fp32 "train.max_iter=$ITERS" "train.checkpointer.period=$half"; then
  record train-fp32-metrics ok 0 "$(metrics fp32)"
fi
if run_step train-amp-bf16 200 150 train bf16 "train.max_iter=$ITERS" "train.checkpointer.period=$half" \
    train.amp.enabled=True +train.amp.precision=bf16 +train.amp.tf32=True; then
  record train-amp-bf16-metrics ok 0 "$(metrics bf16)"
fi
if [[ "$DEVICE" != "cuda" ]]; then
  record train-amp-fp16 skipped 0 "fp16 autocast is CUDA-only here"
elif run_step train-amp-fp16 170 150 train fp16 "train.max_iter=$ITERS" "train.checkpointer.period=$half" \
    train.amp.enabled=True +train.amp.precision=fp16; then
  record train-amp-fp16-metrics ok 0 "$(metrics fp16)"
  # --resume from the fp16 run's last checkpoint (the grad scaler's state travels with it), 20 more iterations
  if run_step resume-fp16 140 120 train fp16 --resume "train.max_iter=$(( ITERS + 20 ))" \
      "train.checkpointer.period=$half" train.amp.enabled=True +train.amp.precision=fp16; then
    record resume-fp16-metrics ok 0 "$(grep -o 'from iteration [0-9]* to [0-9]*' "$SMOKE/logs/resume-fp16.log" \
      | tail -n 1); $(metrics fp16)"
  fi
fi
if [[ "$DEVICE" != "cuda" ]] && [[ -f "$SMOKE/runs/bf16/model_final.pth" ]]; then
  run_step resume-bf16 140 120 train bf16 --resume "train.max_iter=$(( ITERS + 2 ))" \
    "train.checkpointer.period=$half" train.amp.enabled=True +train.amp.precision=bf16 \
    && record resume-bf16-metrics ok 0 "$(grep -o 'from iteration [0-9]* to [0-9]*' "$SMOKE/logs/resume-bf16.log" \
      | tail -n 1); $(metrics bf16)"
fi
if [[ -f "$SMOKE/runs/fp32/model_final.pth" ]]; then
  run_step eval 110 120 "$PY" scripts/train_net.py --eval-only --config-file "$CONFIG" "train.device=$DEVICE" \
    "train.init_checkpoint=$SMOKE/runs/fp32/model_final.pth" "train.output_dir=$SMOKE/runs/eval" \
    && record eval-result ok 0 "$("$PY" -c "import json,sys; r=json.load(open('$SMOKE/runs/eval/eval_results.json')); \
print({k: round(v, 2) for k, v in r.get('segm', r).items() if k in ('AP', 'AP50', 'AP75', 'AR1', 'AR10')})")"
fi

# 4. the CUDA tests (after the kernel build, so that they compare it too)
if [[ -n "$msda_pid" ]]; then
  wait "$msda_pid"
  read -r build_rc build_s < "$SMOKE/msda-build.status"
  if [[ "$build_rc" == "0" ]]; then record msda-build ok "$build_s" "torch-ms-deform-attn built with nvcc"
  else record msda-build FAIL "$build_s" "exit $build_rc; log: logs/msda-build.log (the tests use the PyTorch paths)"; fi
fi
run_step tests 60 240 "$PY" -m pytest -q -p no:cacheprovider -o addopts="" -rs tests/test_cuda.py \
  tests/test_ms_deform_attn.py tests/test_postprocess.py tests/test_amp_precision.py tests/test_matcher_host_copies.py
record tests-result "$(grep -q ' passed' "$SMOKE/logs/tests.log" && echo ok || echo FAIL)" 0 \
  "$(grep -E '[0-9]+ (passed|failed)' "$SMOKE/logs/tests.log" | tail -n 1)"
"$PY" -c "import logging; logging.basicConfig(level=logging.INFO); from local2global.modeling import ms_deform_attn as m; \
print('[smoke] deformable attention on CUDA:', m.compiled_kernel_name('cuda') or 'PyTorch ' + m.DEFAULT_PYTORCH_IMPL)" \
  2>&1 | tail -n 2

# 5. deformable attention on CUDA: reference vs fast vs the compiled kernel (decides DEFAULT_PYTORCH_IMPL there)
cat > "$SMOKE/attention_timing.py" <<'PY'
import sys
import torch
from local2global.modeling import ms_deform_attn as m

device = torch.device(sys.argv[1])
levels = [(48, 80), (24, 40), (12, 20), (6, 10)]  # a 360x640 frame padded to 384x640, S = 5100
spatial, start = m.spatial_shapes_tensor(levels, device)
num_value = sum(h * w for h, w in levels)
kernel = m.get_compiled_kernel(device) if device.type == "cuda" else None
impls = {"reference": lambda v, l, a: m.multi_scale_deformable_attn_pytorch(v, spatial, l, a),
         "fast": lambda v, l, a: m.multi_scale_deformable_attn_fast(v, spatial, l, a)}
if kernel is not None:
    impls[m.compiled_kernel_name(device)] = lambda v, l, a: kernel(v, spatial, start, l, a, 64)


def timed(fn, reps=10):
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    best = float("inf")
    for _ in range(reps):
        if device.type == "cuda":
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record(); fn(); end.record(); torch.cuda.synchronize()
            best = min(best, begin.elapsed_time(end))
        else:
            import time
            tic = time.perf_counter(); fn(); best = min(best, (time.perf_counter() - tic) * 1e3)
    return best


for num_query, batch in ((num_value, 2), (300, 2)):
    g = torch.Generator().manual_seed(0)
    v = torch.randn(batch, num_value, 8, 32, generator=g).to(device)
    loc = (torch.rand(batch, num_query, 8, 4, 4, 2, generator=g) * 1.2 - 0.1).to(device)
    att = torch.rand(batch, num_query, 8, 4, 4, generator=g).softmax(-1).to(device)
    cells = []
    for name, fn in impls.items():
        leaves = [t.clone().requires_grad_() for t in (v, loc, att)]
        with torch.no_grad():
            fwd = timed(lambda: fn(v, loc, att))
        both = timed(lambda: fn(*leaves).sum().backward())
        cells.append(f"{name} {fwd:.2f}/{both:.2f}")
    print(f"B={batch} Nq={num_query}: forward/forward+backward ms: " + ", ".join(cells))
PY
if [[ "$DEVICE" != "cuda" ]]; then
  record attention-timing skipped 0 "CUDA timing only"
elif run_step attention-timing 80 60 "$PY" "$SMOKE/attention_timing.py" "$DEVICE"; then
  while read -r line; do record attention-timing-result ok 0 "$line"; done \
    < <(grep -E '^B=' "$SMOKE/logs/attention-timing.log")
fi

# 6. the quick inference / training benchmark cases on CUDA, with what is left of the budget
if [[ "$BENCH" == "1" ]]; then
  run_step bench 90 200 "$PY" benchmarks/run.py --quick --cases inference,training --force \
    --output "$SMOKE/RESULTS-gpu.md"
else
  record bench skipped 0 "L2G_SMOKE_BENCH=0"
fi

echo
echo "================ GPU smoke summary ($(elapsed) s of ${BUDGET} s) ================"
column -t -s $'\t' "$SMOKE/summary.tsv" 2>/dev/null || cat "$SMOKE/summary.tsv"
if [[ -n "${OUT:-}" ]]; then
  cp "$SMOKE/summary.tsv" "$OUT/summary.txt"
  [[ -f "$SMOKE/RESULTS-gpu.md" ]] && cp "$SMOKE/RESULTS-gpu.md" "$OUT/"
  tar -czf "$OUT/logs.tar.gz" -C "$SMOKE" logs runs/fp32/metrics.json runs/bf16/metrics.json runs/fp16/metrics.json \
    2>/dev/null
fi
! grep -q $'\tFAIL\t' "$SMOKE/summary.tsv"
