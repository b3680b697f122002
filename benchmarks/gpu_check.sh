#!/usr/bin/env bash
# The one script to run first when a GPU machine (H100/H200) is lent: minutes of device time, a
# fresh machine holding this repository's working tree. It sets up Python, then runs each check,
# timed, goes on past a failing one, and ends with a summary:
#
#   setup       python with a CUDA torch, recbole and this package (see "Python" below)
#   gpu         nvidia-smi, and what torch sees (version, CUDA, devices, bf16 support)
#   tests       pytest -q -m "not slow" (every test's device defaults to CUDA here), then the tests
#               that name CUDA (-k cuda in the three files that do; none skips without CUDA, two
#               skip with it, by design)
#   bf16        MASAN and SASRec on ml-100k, one epoch, --mixed_precision=bf16
#   ddp         SASRec on ml-100k over NCCL, --nproc = --world_size = the GPUs (nvidia-smi -L),
#               so even one GPU takes the distributed path
#   reproduce   python -m benchmarks.reproduce --preset full, cut to SASRec, one dataset, one epoch
#
# Usage:  bash benchmarks/gpu_check.sh [--dry-run] [--cpu]
#   --dry-run  print the steps' commands, run nothing
#   --cpu      check this script on a machine without a GPU: the existing .venv, --device=cpu,
#              small shapes, gloo with two processes, only the CUDA-named tests (CI runs the
#              rest), the reproduce slice from the quick preset on ml-100k
# Environment:
#   OUT            folder for the output (default ./gpu_check_out): gpu_check.log (everything),
#                  summary.txt, and reproduce/ (the benchmark's .json/.md/.png); at most 8 files,
#                  which is what the device tool brings back
#   PY             a python to use as it is (skips the set-up)
#   VENV           where the set-up builds its venv (default .venv; where a .venv without a CUDA
#                  torch is already there, a venv in the scratch folder instead: nothing is wiped)
#   TORCH_SPEC     what the set-up installs as torch (default torch==2.13.0, the README's pin; from
#                  the default index that is the CUDA build)
#   WHEELS         wheels for an offline machine (default .whl), see "Python"
#   REPRO_DATASET  the reproduce slice's dataset (default beauty if it is converted in dataset/ or
#                  its source is in ../shared/datasets, else ml-100k; with --cpu ml-100k)
#   STEP_TIMEOUT   seconds per step at most (default 150; the not-slow tests get TEST_TIMEOUT,
#                  default 240): all of it should fit one device call (10 minutes), set-up included
#
# Python. With a network: python3 -m venv .venv, pip install torch, pip install -e ".[test]" (the
# README's recipe). If that fails (no network: the lent H200 reaches nothing; or Python 3.12,
# where recbole's ray<=2.6.3 has no wheel), the image's python3, which holds a CUDA torch, is used
# with WHEELS installed into a folder on PYTHONPATH, and a stand-in for ray if ray is missing
# (recbole.quick_start imports `ray.tune`; only run_hyper's Ray Tune path uses it; the package's
# ray_optional patch, where it is there, makes this unneeded). Make the
# wheels here, once, and name .whl in the device tool's carry:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
#     recbole==1.2.1 colorlog==4.7.2 thop texttable entmax==1.3 hyperopt==0.3.0 "pandas>=2,<3"
# and, if the reproduce slice should run on beauty, carry dataset/beauty too.

set -u -o pipefail
cd "$(dirname "$0")/.." || exit 1
REPO=$PWD

DRY=0 CPU=0
for arg in "$@"; do
  case $arg in
    --dry-run) DRY=1 ;;
    --cpu) CPU=1 ;;
    -h|--help) sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $arg (--dry-run, --cpu)" >&2; exit 2 ;;
  esac
done
if [ "$DRY" = 0 ] && [ "$CPU" = 0 ] && ! command -v nvidia-smi >/dev/null; then
  echo "no nvidia-smi here: this is for a GPU machine; use --cpu or --dry-run to check the script" >&2
  exit 2
fi

OUT=${OUT:-./gpu_check_out}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
LOG=$OUT/gpu_check.log SUMMARY=$OUT/summary.txt
: >"$LOG"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")  # log/, saved/, a venv: kept out of $OUT
STEP_TIMEOUT=${STEP_TIMEOUT:-150} TEST_TIMEOUT=${TEST_TIMEOUT:-240}
WHEELS=${WHEELS:-.whl}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} PYTHONUNBUFFERED=1
NAMES=() RCS=() SECS=()

say() { echo "$*" | tee -a "$LOG"; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }
seconds() { local ms=$(($(now_ms) - $1)); printf '%d.%d' $((ms / 1000)) $((ms % 1000 / 100)); }
record() { NAMES+=("$1"); RCS+=("$2"); SECS+=("$3"); }

# step NAME TIMEOUT COMMAND: COMMAND runs in bash in $WORK/NAME; its output goes to the console and $LOG.
step() {
  local name=$1 limit=$2 cmd=$3 start rc secs
  say ""
  say "=== [$name] $(date -u +%H:%M:%S) $cmd"
  if [ "$DRY" = 1 ]; then record "$name" dry 0; return 0; fi
  mkdir -p "$WORK/$name"
  start=$(now_ms)
  (cd "$WORK/$name" && timeout -k 10 "$limit" bash -c "$cmd") 2>&1 | tee -a "$LOG"
  rc=${PIPESTATUS[0]}
  secs=$(seconds "$start")
  # 124: timeout stopped it; 137: it outlived the TERM by 10 s and was killed
  [ "$rc" = 137 ] && [ "${secs%.*}" -ge "$limit" ] && rc=124
  [ "$rc" = 124 ] && say "=== [$name] timed out after ${limit}s"
  say "=== [$name] exit $rc, $secs s"
  record "$name" "$rc" "$secs"
}

skip() { say ""; say "=== [$1] skipped: $2"; record "$1" skip 0; }

free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
export -f free_port

# ------------------------------------------------------------------ Python
setup_python() {
  local site=$WORK/site venv=${VENV:-.venv}
  if [ -n "${PY:-}" ]; then echo "PY=$PY (given)"; return 0; fi
  if [ "$CPU" = 1 ]; then PY=$REPO/.venv/bin/python; echo "PY=$PY (--cpu)"; return 0; fi
  if [ -x "$venv/bin/python" ]; then
    if "$venv/bin/python" -c "import torch, recbole, masan_recbole; assert torch.cuda.is_available()" 2>/dev/null; then
      PY=$(cd "$venv" && pwd)/bin/python; echo "PY=$PY (the venv there, with CUDA)"; return 0
    fi
    venv=$WORK/venv
  fi
  # The README's recipe; no retries, so that it fails fast where there is no network.
  if PIP_RETRIES=0 PIP_TIMEOUT=15 PIP_DISABLE_PIP_VERSION_CHECK=1 bash -c \
      "python3 -m venv '$venv' && '$venv/bin/pip' install '$TORCH_SPEC' && '$venv/bin/pip' install -e '.[test]'"; then
    PY=$(cd "$venv" && pwd)/bin/python; echo "PY=$PY (built)"; return 0
  fi
  echo "the README's install failed: the image's python3 with the wheels in $WHEELS instead"
  PY=$(command -v python3)
  mkdir -p "$site"
  if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$WHEELS"/*.whl
  else
    echo "no wheels in $WHEELS: recbole and what the image lacks cannot be installed offline"
  fi
  # The package's ray_optional patch stands in for a missing ray; if this version has none:
  if ! PYTHONPATH=$REPO:$site python3 -c "import masan_recbole.quick_start" 2>/dev/null \
      && ! PYTHONPATH=$site python3 -c "import ray.tune" 2>/dev/null; then
    echo "no ray: a stand-in ray.tune (report() does nothing) in $site/ray"
    mkdir -p "$site/ray/tune"
    echo "from . import tune" >"$site/ray/__init__.py"
    printf 'def report(*args, **kwargs):\n    pass\n' >"$site/ray/tune/__init__.py"
  fi
  export PYTHONPATH=$REPO:$site${PYTHONPATH:+:$PYTHONPATH}
}

say "gpu_check: $(date -u '+%Y-%m-%d %H:%M:%S') UTC on $(hostname); repo $REPO; out $OUT; scratch $WORK$([ "$DRY" = 1 ] && echo '; dry run')$([ "$CPU" = 1 ] && echo '; --cpu')"
if [ "$DRY" = 1 ]; then
  PY=${PY:-$REPO/.venv/bin/python}
  step setup "$STEP_TIMEOUT" "python3 -m venv .venv && .venv/bin/pip install '$TORCH_SPEC' && .venv/bin/pip install -e '.[test]'  # or: python3 + $WHEELS"
else
  start=$(now_ms)
  say ""; say "=== [setup] $(date -u +%H:%M:%S)"
  setup_python > >(tee -a "$LOG") 2>&1  # not in a pipeline: PY and PYTHONPATH stay set here
  rc=$?
  "$PY" -c "import torch, recbole, masan_recbole; print('torch', torch.__version__, '| cuda', torch.version.cuda, '| recbole', recbole.__version__)" 2>&1 | tee -a "$LOG"
  [ "${PIPESTATUS[0]}" = 0 ] || rc=1
  secs=$(seconds "$start")
  say "=== [setup] exit $rc, $secs s, PY=$PY"
  record setup "$rc" "$secs"
fi
export PY

# ------------------------------------------------------------------ the checks
if [ "$CPU" = 1 ]; then
  DEVICE="--device=cpu" NGPU=2 GPU_IDS=""
  SMALL="--hidden_size=16 --inner_size=32 --n_layers=1 --MAX_ITEM_LIST_LENGTH=10 --train_batch_size=1024"
  skip gpu "--cpu"
  skip tests-fast "--cpu (CI runs them)"
else
  DEVICE="" SMALL=""
  NGPU=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')
  [ "$DRY" = 1 ] && [ "$NGPU" = 0 ] && NGPU=1
  GPU_IDS="--gpu_id=$(seq -s, 0 $((NGPU > 0 ? NGPU - 1 : 0)))"
  step gpu 60 "nvidia-smi; nvidia-smi -L; \"\$PY\" -c 'import torch; print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"available\", torch.cuda.is_available(), \"devices\", torch.cuda.device_count()); print(torch.cuda.get_device_name(0), \"bf16\", torch.cuda.is_bf16_supported())'"
  step tests-fast "$TEST_TIMEOUT" "cd '$REPO' && \"\$PY\" -m pytest -q -m 'not slow' -p no:cacheprovider \$(\"\$PY\" -c 'import xdist' 2>/dev/null && echo '-n 8')"
fi
step tests-cuda "$TEST_TIMEOUT" "cd '$REPO' && \"\$PY\" -m pytest -q -p no:cacheprovider -k cuda tests/test_bad_input.py tests/test_patches.py tests/benchmarks/test_reproduce.py"

RUN="\"\$PY\" '$REPO/run_recbole.py' --dataset=ml-100k --show_progress=False${DEVICE:+ $DEVICE}${SMALL:+ $SMALL}"
step bf16-MASAN "$STEP_TIMEOUT" "$RUN --model=MASAN --epochs=1 --mixed_precision=bf16"
step bf16-SASRec "$STEP_TIMEOUT" "$RUN --model=SASRec --epochs=1 --mixed_precision=bf16"

if [ "$NGPU" = 0 ]; then
  skip ddp "nvidia-smi -L lists no GPU"
else
  # --world_size as well: with one GPU, --nproc=1 alone would not take the distributed path.
  step "ddp-$([ "$CPU" = 1 ] && echo gloo || echo nccl)" "$STEP_TIMEOUT" \
    "$RUN --model=SASRec --epochs=2${GPU_IDS:+ $GPU_IDS} --nproc=$NGPU --world_size=$NGPU --port=\$(free_port)"
fi

DS=${REPRO_DATASET:-}
if [ -z "$DS" ]; then
  if [ "$CPU" = 1 ]; then DS=ml-100k
  elif [ -f dataset/beauty/beauty.inter ] || [ -d ../shared/datasets/amazon-beauty ]; then DS=beauty
  else DS=ml-100k; say "reproduce: beauty is neither in dataset/ nor in ../shared/datasets: ml-100k instead"; fi
fi
# --cpu: the quick preset's small shapes (the full preset's SASRec takes minutes an epoch on a CPU)
PRESET=$([ "$CPU" = 1 ] && echo quick || echo full)
step reproduce "$STEP_TIMEOUT" "cd '$REPO' && \"\$PY\" -m benchmarks.reproduce --preset $PRESET --models SASRec --datasets $DS --epochs 1 --device $([ "$CPU" = 1 ] && echo cpu || echo cuda) --out-dir '$OUT/reproduce' --run gpu-check-$PRESET-SASRec-$DS"

# ------------------------------------------------------------------ summary
failed=0
{
  echo "gpu_check summary, $(date -u '+%Y-%m-%d %H:%M:%S') UTC, PY=$PY"
  printf '%-14s %-9s %8s\n' step result seconds
  for i in "${!NAMES[@]}"; do
    case ${RCS[$i]} in 0) r=ok ;; dry|skip) r=${RCS[$i]} ;; 124) r=TIMEOUT ;; *) r="FAIL(${RCS[$i]})" ;; esac
    printf '%-14s %-9s %8s\n' "${NAMES[$i]}" "$r" "${SECS[$i]}"
  done
} >"$SUMMARY"
for rc in "${RCS[@]}"; do case $rc in 0|dry|skip) ;; *) failed=$((failed + 1)) ;; esac; done
echo "$failed step(s) failed; everything is in $LOG" >>"$SUMMARY"
say ""; tee -a "$LOG" <"$SUMMARY"
rm -rf "$WORK"
[ "$failed" = 0 ]
