#!/usr/bin/env bash
# Every GPU path in one command, on a machine with a CUDA device and no package registry.
#
#   OUT=/path/to/results bash benchmarks/gpu_check.sh        (from the repository root)
#
# Expects, next to the working tree (both gitignored, prepared as the README says):
#   .whl/      wheels of what the machine's Python lacks (hydra-core, omegaconf, antlr4 runtime,
#              Chainer 7.8.1), installed with pip --no-index into a scratch dir;
#   .gpudata/  gcide.txt.gz, wordsim353.tsv, simlex999.txt, questions-words.txt.
# The project itself is used from the working tree (PYTHONPATH; Hydra finds conf/ next to it).
#
# Parts, each guarded (a failure or a timeout is recorded and the script goes on), in this order:
# install, the gpu-marked tests, benchmarks/bench_gpu.py, a device=gpu training run on gcide with
# the chunk engine, the legacy Chainer program on the GPU under the runner, the same training run
# on the CPU for the scores to compare. $OUT receives seven small files: gpu_check.log (all
# output), results.md (one table, then the benchmark's table), bench_gpu.txt, gpu_tests.xml,
# metrics_gpu.json, metrics_cpu.json, chainer_log.json; the run directories stay in a scratch
# folder that is removed at the end.
#
# Environment: PYTHON (default python3), NS_GPU_WHEELS (.whl), NS_GPU_DATA (.gpudata),
# NS_GPU_COMMIT (recorded when .git is absent), NS_GPU_BUDGET_S (total seconds, default 460),
# NS_GPU_CHECK_DRY=1 to rehearse on a CPU machine: the same install and plumbing, the device parts
# replaced by tiny CPU stand-ins (bench_gpu --dry-run, device=cpu on a 20k-line corpus, the
# Chainer program with --gpu -1), so that only the device itself is left unknown.
set -uo pipefail

: "${OUT:?set OUT to the folder that receives the log and the results}"
mkdir -p "$OUT"
ROOT=$(pwd)
PY=${PYTHON:-python3}
WHEELS=${NS_GPU_WHEELS:-$ROOT/.whl}
DATA_SRC=${NS_GPU_DATA:-$ROOT/.gpudata}
BUDGET=${NS_GPU_BUDGET_S:-460}
DRY=${NS_GPU_CHECK_DRY:-0}
LOG=$OUT/gpu_check.log
TABLE=$OUT/results.md
SCRATCH=$(mktemp -d /tmp/ns_gpu_check.XXXXXX)
SITE=$SCRATCH/site
DATA=$SCRATCH/data
WORK=$SCRATCH/work
mkdir -p "$WORK"
START=$(date +%s)
: >"$LOG"
ROWS=()

say() { echo "$*" | tee -a "$LOG"; }
left() { echo $((BUDGET - ($(date +%s) - START))); }

# part NAME LIMIT_S CMD...: runs CMD with a timeout (never past the budget), output to the log
# and to $WORK/part_NAME.txt; records status and seconds. FIG holds the figures for the table.
part() {
  local name=$1 limit=$2 rc t0 secs status
  shift 2
  local budget_left
  budget_left=$(left)
  PART_NAME=$name
  PART_SECS=0
  if ((budget_left < 15)); then
    LAST_STATUS="skipped: out of time budget"
    say "== $name: skipped, ${budget_left}s of the budget left"
    return 1
  fi
  ((limit > budget_left)) && limit=$budget_left
  say "== $name (limit ${limit}s) $(date -u +%H:%M:%S)"
  t0=$(date +%s)
  # bash -c: a part may be one of the functions below (exported)
  timeout --kill-after=10 "$limit" bash -c '"$@"' part "$@" >"$WORK/part_$name.txt" 2>&1
  rc=$?
  cat "$WORK/part_$name.txt" >>"$LOG"
  secs=$(($(date +%s) - t0))
  case $rc in
    0) status=ok ;;
    124 | 137) status="TIMEOUT after ${limit}s" ;;
    *) status="FAILED (exit $rc)" ;;
  esac
  LAST_STATUS=$status
  PART_SECS=$secs
  say "== $name: $status in ${secs}s"
  return $rc
}
row() { ROWS+=("| $PART_NAME | $LAST_STATUS | $PART_SECS | $1 |"); }

# ------------------------------------------------------------------ environment and install
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "${NS_GPU_COMMIT:-unknown}")
{
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "host: $(hostname)"
  echo "commit: $COMMIT"
  echo "dry run: $DRY"
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader \
    2>/dev/null || echo "nvidia-smi: not available"
} | tee -a "$LOG"

install() {
  set -e
  ls "$WHEELS"/*.whl
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --disable-pip-version-check --target "$SITE" "$WHEELS"/*.whl
  mkdir -p "$DATA"
  for f in gcide.txt.gz wordsim353.tsv simlex999.txt questions-words.txt; do
    cp "$DATA_SRC/$f" "$DATA/$f"
  done
  if [[ -f $DATA_SRC/SHA256SUMS ]]; then (cd "$DATA" && grep -v README "$DATA_SRC/SHA256SUMS" |
    sha256sum -c -); fi
  "$PY" - <<'EOF'
import importlib, platform
print("python", platform.python_version())
from ns_plugins.chainer import import_fixes
import_fixes.apply()  # Chainer 7.8.1 on Python 3.12 / numpy 2 / new setuptools, as the runner does
for name in ["torch", "triton", "numpy", "numba", "pytorch_lightning", "hydra", "omegaconf",
             "antlr4", "cupy", "chainer", "hypothesis", "scipy", "matplotlib", "ns_plugins"]:
    try:
        m = importlib.import_module(name)
        print(f"{name:18} {getattr(m, '__version__', '?'):12} {m.__file__}")
    except Exception as e:  # noqa: BLE001 - listed, not fatal: the parts that need it say so
        print(f"{name:18} MISSING      {type(e).__name__}: {e}")
try:
    import torch
    print("cuda:", torch.cuda.is_available(), torch.version.cuda,
          torch.cuda.get_device_name() if torch.cuda.is_available() else "")
except ImportError:
    pass
import chainer, hydra, omegaconf  # noqa: E401,F401 - what the wheels must provide
print("chainer", chainer.__version__, "imports under the runner's fixes")
EOF
}
export -f install
# Chainer 7.8.1 on setuptools >= 74 before Python 3.12 needs the stdlib distutils
"$PY" -c "import sys; sys.exit(sys.version_info >= (3, 12))" && export SETUPTOOLS_USE_DISTUTILS=stdlib
export PY WHEELS SITE DATA DATA_SRC OUT SCRATCH WORK
export PYTHONPATH="$ROOT:$SITE${PYTHONPATH:+:$PYTHONPATH}"
if part install 60 install; then
  row "wheels from $(basename "$WHEELS") into a scratch dir, project from the working tree"
else
  row "see gpu_check.log"
fi
if [[ $DRY != 1 ]] && ! "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
  say "no CUDA device visible to torch: the device parts will fail (NS_GPU_CHECK_DRY=1 rehearses)"
fi

# ------------------------------------------------------------------ the gpu-marked tests
GPU_TESTS=(tests/test_kernels_chunk_triton.py tests/test_kernels_loss_triton.py tests/test_loss.py
  tests/test_kernels_loss_cupy.py tests/test_alias.py tests/test_chainer_links.py
  tests/test_chainer_ids.py tests/test_chainer_lookup.py tests/test_chainer_compat.py
  tests/test_chainer_cupy.py)
existing=()
for t in "${GPU_TESTS[@]}"; do [[ -f $t ]] && existing+=("$t"); done
part gpu_tests 120 "$PY" -m pytest -m gpu -q -p no:cacheprovider -rfEs \
  --continue-on-collection-errors --junitxml="$WORK/gpu_tests.xml" "${existing[@]}"
row "$(grep -E '(passed|failed|error|skipped)' "$WORK/part_gpu_tests.txt" | tail -1)"

# ------------------------------------------------------------------ benchmark
bench_args=(--quick --sweep-chunk)
[[ $DRY == 1 ]] && bench_args=(--dry-run)
part bench_gpu 110 "$PY" benchmarks/bench_gpu.py "${bench_args[@]}"
bench_out=$WORK/part_bench_gpu.txt
row "$(grep -E 'copy:' "$bench_out" | head -1); fused loss fwd+bwd: $(grep -E '^triton fused' \
  "$bench_out" | awk '{print $(NF-1), "of copy,", $NF, "naive"}'); chunk step: $(grep -E \
  '^chunk step [a-z]+,' "$bench_out" | sed -E 's/^chunk step ([a-z]+),.* ([0-9.]+M words\/s),.*/\1 \2/' |
  paste -sd ';')"

# ------------------------------------------------------------------ training runs on gcide
corpus=$DATA/gcide.txt.gz
if [[ $DRY == 1 ]]; then # the first 20k lines: the plumbing, not the figures
  (zcat "$DATA/gcide.txt.gz" 2>/dev/null | head -20000 | gzip >"$DATA/gcide_head.txt.gz")
  corpus=$DATA/gcide_head.txt.gz
fi
summarise() { # the run's words/s and scores, from its metrics.json
  "$PY" - "$1" <<'EOF'
import json, sys
from pathlib import Path
try:
    m = json.loads((Path(sys.argv[1]) / "metrics.json").read_text())
except (OSError, ValueError) as e:
    print(f"no metrics.json: {e}"); sys.exit(0)
flat = {}
def walk(d, pre=""):
    for k, v in d.items():
        if isinstance(v, dict):
            walk(v, f"{pre}{k}/")
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            flat[pre + k] = v
walk(m)
keep = ("words_per_sec", "wall_seconds", "train_seconds", "wordsim", "simlex", "analog")
skip = ("_pairs", "_oov", "_correct", "_answered", "_skipped", "_total")
print(", ".join(f"{k} {v:.4g}" for k, v in sorted(flat.items())
                if (any(s in k for s in keep) or k.rsplit("/")[-1] in ("words", "raw_words"))
                and not k.endswith(skip)))
EOF
}
train_run() { # train_run NAME DEVICE [overrides...]
  local name=$1 device=$2
  shift 2
  "$PY" train.py +experiment=sgns_text "data.path=$corpus" "device=$device" \
    "eval.wordsim=$DATA/wordsim353.tsv" "eval.simlex=$DATA/simlex999.txt" \
    "eval.analogies=$DATA/questions-words.txt" "data.cache_dir=$SCRATCH/cache" \
    "hydra.run.dir=$WORK/run_$name" "$@"
}
export -f train_run
export corpus
gpu_device=gpu
[[ $DRY == 1 ]] && gpu_device=cpu
dry_args=()
[[ $DRY == 1 ]] && dry_args=(epochs=1)
# a million words a step: the kernel's launch and Lightning's step cost vanish next to it
part train_gpu 120 train_run gpu "$gpu_device" model.chunk_words=1000000 "${dry_args[@]}"
row "$(summarise "$WORK/run_gpu")"

# ------------------------------------------------------------------ legacy Chainer on CuPy
gpu_id=0
[[ $DRY == 1 ]] && gpu_id=-1
# what the runner says of this CuPy and device first: which path cannot work, and why
part chainer_check 30 "$PY" -m ns_plugins.chainer --check-gpu
row "see gpu_check.log for the report"
part chainer_gpu 60 "$PY" -m ns_plugins.chainer compat/train_word2vec.py --corpus "$corpus" \
  --gpu "$gpu_id" --epoch 1 --quiet --out "$WORK/run_chainer"
row "$("$PY" -c '
import json, sys
words = [int(ln.split(":")[1]) for ln in open(sys.argv[1]) if ln.startswith("data length")]
last = json.load(open(sys.argv[2]))[-1]
secs = last.get("elapsed_time")
rate = f", {words[0] / secs:.3g} words/s" if words and secs else ""
print(", ".join(f"{k} {v:.4g}" for k, v in last.items() if isinstance(v, float)) + rate)
' "$WORK/part_chainer_gpu.txt" "$WORK/run_chainer/log" 2>&1 | tail -1)"

# ------------------------------------------------------------------ the CPU run to compare with
cpus=$(nproc)
part train_cpu 150 train_run cpu cpu "workers=$cpus" "${dry_args[@]}"
row "$(summarise "$WORK/run_cpu") ($cpus workers)"
PART_NAME="gpu - cpu scores"
PART_SECS=0
LAST_STATUS="$("$PY" - "$WORK/run_gpu" "$WORK/run_cpu" <<'EOF'
import json, sys
try:
    g, c = (json.load(open(f"{d}/metrics.json"))["eval"] for d in sys.argv[1:])
except (OSError, ValueError, KeyError) as e:
    print(f"not compared: {type(e).__name__}"); sys.exit()
d = {k: g[k] - c[k] for k in ("wordsim353", "simlex999", "analogy") if k in g and k in c}
ok = d and all(abs(v) <= 0.01 for v in d.values())
print(("within 0.01" if ok else "NOT within 0.01") + ": " + ", ".join(f"{k} {v:+.4f}" for k, v in d.items()))
EOF
)"
row "single runs move by 0.01-0.03 on WordSim-353 with the seed (RESULTS.md)"

# ------------------------------------------------------------------ the table
{
  echo "# GPU check: $(date -u '+%Y-%m-%d %H:%M UTC'), commit $COMMIT, dry run $DRY"
  echo
  nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 | sed 's/^/device: /'
  echo
  echo "| part | status | s | figures |"
  echo "|---|---|---|---|"
  printf '%s\n' "${ROWS[@]}"
  echo
  echo "total: $(($(date +%s) - START)) s"
  echo
  echo '```'
  sed -n '/^row /,$p' "$bench_out" 2>/dev/null
  echo '```'
} >"$TABLE"
tee -a "$LOG" <"$TABLE"
for pair in "$bench_out:bench_gpu.txt" "$WORK/gpu_tests.xml:gpu_tests.xml" \
  "$WORK/run_gpu/metrics.json:metrics_gpu.json" "$WORK/run_cpu/metrics.json:metrics_cpu.json" \
  "$WORK/run_chainer/log:chainer_log.json"; do
  [[ -f ${pair%%:*} ]] && cp "${pair%%:*}" "$OUT/${pair##*:}"
done
rm -rf "$SCRATCH"
exit 0
