#!/usr/bin/env bash
# One prepared GPU run (issue 12): everything a session with the GPU machine needs, in one call.
#
#   1. the environment (GPU, driver, torch, onnxruntime providers)            -> results.json "env"
#   2. installs from the project's files where a package index is reachable: a CUDA torch from the default
#      index if the machine's torch has no CUDA, `pip install -e .[all]`, onnxruntime-gpu in place of
#      onnxruntime; wheels in .whl/ (if carried) first. With no index (the device machines here reach
#      none) it uses the machine's own torch/onnxruntime and says so.
#   3. the GPU tests: tests/training/test_gpu.py (bf16 step, torch.compile, pinned copies, DDP over NCCL on
#      one GPU) and tests/service/test_runtime_cuda.py (CUDA execution provider vs CPU)
#   4. benchmarks/train_speed.py on the GPU: fp32 and bf16 eager, bf16 compiled (steps/s, images/s)
#   5. benchmarks/serve_bench.py with the CUDA execution provider (skipped, with the reason, without it)
#   6. the paper's unsupervised MNIST recipe (--preset mnist-unsup) with the fastest measured settings for the
#      time left (time_limit_s: a clean stop with final evaluation and checkpoint), then `nemgan eval`
#      (Hungarian ACC/NMI/ARI on the 10k test images)
#
# Writes to $OUT (at most 8 files of at most 16 MiB, as the device tool returns them): results.json (all
# figures), gpu_run.log (every command's output), and the run's best.pt, stats.jsonl and last.pt (in 15 MiB
# parts when larger: cat last.pt.* > last.pt).
#
# From a session that holds the device (the tool's working tree is the repo; ../shared does not travel):
#   here, once:  mkdir -p .gpu-data && cp -r ../shared/data/mnist .gpu-data/ && echo /.gpu-data/ >> .git/info/exclude
#   device run:  command "bash benchmarks/gpu_run.sh --budget-s=300", carry [".gpu-data"], timeout_s 360
#                (15 device minutes a session: a start of 1-2 minutes and this call leave time for one rerun)
# On CPU, a check of everything but the GPU (what tests/benchmarks/test_gpu_run.py runs):
#   OUT=/tmp/gpu-run bash benchmarks/gpu_run.sh --dry-run
#
# Options: --dry-run (CPU, tiny steps, no installs), --budget-s=N (wall-clock budget of the whole script,
# default 300; each step is capped by what is left, and training gets the rest less a margin for evaluation).
set -uo pipefail
cd "$(dirname "$0")/.."

DRY=0
BUDGET=300
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY=1 ;;
    --budget-s=*) BUDGET="${arg#*=}" ;;
    --budget-s) echo "use --budget-s=N" >&2; exit 2 ;;
    -h|--help) sed -n '2,28p' "$0"; exit 0 ;;
    *) echo "unknown option: $arg" >&2; exit 2 ;;
  esac
done

OUT="${OUT:-$PWD/runs/gpu-run}"
WORK="$(mktemp -d /tmp/gpu-run.XXXXXX)"
mkdir -p "$OUT"
LOG="$OUT/gpu_run.log"
: >"$LOG"
START=$(date +%s)
DEADLINE=$((START + BUDGET))
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
[ -d .gpu-data ] && export NEMGAN_DATA_DIR="$PWD/.gpu-data"
export TORCHINDUCTOR_CACHE_DIR="$WORK/inductor"

left() { echo $((DEADLINE - $(date +%s))); }
log() { echo "[gpu_run +$(($(date +%s) - START))s] $*" | tee -a "$LOG"; }
# run SECONDS CMD...: the command with a time cap, its output into the log; returns its status.
run() {
  local cap="$1"; shift
  log "\$ $* (cap ${cap}s)"
  timeout --kill-after=10 "$cap" "$@" >>"$LOG" 2>&1
  local rc=$?
  log "exit $rc"
  return $rc
}
note() { echo "$1=$2" >>"$WORK/status.env"; }  # step statuses for results.json

# GPU_RUN_DEVICE / GPU_RUN_SPEED_STEPS / GPU_RUN_NO_INSTALL=1: to rehearse the full (non-dry) path elsewhere.
if [ "$DRY" = 1 ]; then
  DEVICE=cpu
else
  DEVICE="${GPU_RUN_DEVICE:-cuda}"
fi
SPEED_STEPS="${GPU_RUN_SPEED_STEPS:-100}"
log "gpu_run: dry_run=$DRY device=$DEVICE budget=${BUDGET}s out=$OUT work=$WORK"

# ---------------------------------------------------------------- 1. environment
env_json() {
  "$PY" - "$1" <<'EOF'
import json, platform, subprocess, sys
env = {"python": platform.python_version()}
try:
    import torch
    env.update(torch=torch.__version__, torch_cuda=torch.version.cuda, cuda_available=torch.cuda.is_available(),
               gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
               gpu_count=torch.cuda.device_count(), nccl=torch.distributed.is_nccl_available())
except Exception as e:  # noqa: BLE001 - recorded, not fatal
    env["torch_error"] = repr(e)
try:
    import onnxruntime as ort
    env.update(onnxruntime=ort.__version__, ort_providers=ort.get_available_providers())
except Exception as e:  # noqa: BLE001
    env["onnxruntime_error"] = repr(e)
try:
    env["nvidia_smi"] = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                                        "--format=csv,noheader"], capture_output=True, text=True,
                                       timeout=20).stdout.strip()
except (OSError, subprocess.SubprocessError):
    env["nvidia_smi"] = None
json.dump(env, open(sys.argv[1], "w"), indent=2)
print(json.dumps(env))
EOF
}
env_json "$WORK/env_before.json" >>"$LOG" 2>&1

# ---------------------------------------------------------------- 2. installs
if [ "$DRY" = 1 ] || [ "${GPU_RUN_NO_INSTALL:-0}" = 1 ]; then
  note install "skipped (dry run or GPU_RUN_NO_INSTALL)"
else
  if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    run 300 "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
      && export PYTHONPATH="/tmp/site:$PYTHONPATH"
  fi
  if timeout 20 "$PY" -m pip download -q --no-deps -d "$WORK/probe" pip >/dev/null 2>&1; then
    "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null \
      || run 600 "$PY" -m pip install -q torch   # the default index's Linux wheel is a CUDA build
    run 600 "$PY" -m pip install -q -e ".[all]"
    run 120 "$PY" -m pip uninstall -y onnxruntime
    run 600 "$PY" -m pip install -q onnxruntime-gpu
    note install "pip: torch (if needed), -e .[all], onnxruntime-gpu"
  else
    log "no package index reachable from this machine: using its preinstalled torch and onnxruntime"
    note install "no index reachable: preinstalled packages"
  fi
fi
env_json "$WORK/env.json" >>"$LOG" 2>&1

# ---------------------------------------------------------------- 3. GPU tests
# (test_compiled_step_matches_eager is left to full test runs: the compiled speed measurement below compiles.)
run $(( $(left) / 2 )) "$PY" -m pytest -q -rs -p no:cacheprovider -k "not compiled" \
  tests/training/test_gpu.py tests/service/test_runtime_cuda.py --junitxml="$WORK/tests.xml"
note tests_rc $?

# ---------------------------------------------------------------- 4. training speed
if [ "$DRY" = 1 ]; then
  SPEED=(--steps 2 --warmup 1)
  run 180 "$PY" benchmarks/train_speed.py --device cpu --nproc 1 --amp none "${SPEED[@]}" --out "$WORK/speed_eager.json"
  note speed_eager_rc $?
else
  SPEED=(--steps "$SPEED_STEPS" --warmup 10 --preset mnist-unsup --timeout 150)
  run $(( $(left) / 3 )) "$PY" benchmarks/train_speed.py --device "$DEVICE" --nproc 1 --amp none,bf16 "${SPEED[@]}" \
    --out "$WORK/speed_eager.json"
  note speed_eager_rc $?
  if [ "$(left)" -gt 180 ]; then  # compiling costs about a minute: only when training still gets time after it
    run $(( $(left) - 120 )) "$PY" benchmarks/train_speed.py --device "$DEVICE" --nproc 1 --amp bf16 --compile on \
      "${SPEED[@]}" --out "$WORK/speed_compiled.json"
    note speed_compiled_rc $?
  else
    note speed_compiled "skipped: $(left)s left"
  fi
fi

# ---------------------------------------------------------------- 5. serving with the CUDA execution provider
if "$PY" -c "import onnxruntime as o, sys; sys.exit('CUDAExecutionProvider' not in o.get_available_providers())" 2>/dev/null; then
  if "$PY" -c "import fastapi, uvicorn, service.app" >>"$LOG" 2>&1; then
    # The service and the raw baseline pick the CUDA provider themselves (providers: auto).
    log "\$ $PY benchmarks/serve_bench.py --seconds 2 --no-off"
    timeout 240 "$PY" benchmarks/serve_bench.py --seconds 2 --no-off >"$WORK/serve_bench.txt" 2>>"$LOG"
    note serve_bench_rc $?
    cat "$WORK/serve_bench.txt" >>"$LOG"
  else
    note serve_bench "skipped: the serving extra is not importable here (see the log)"
  fi
else
  note serve_bench "skipped: onnxruntime has no CUDAExecutionProvider here (onnxruntime-gpu not installed)"
fi
log "serve_bench: $(grep '^serve_bench' "$WORK/status.env" | tail -1)"

# ---------------------------------------------------------------- 6. the paper's unsupervised MNIST recipe
RUN="$WORK/run"
if [ "$DRY" = 1 ]; then
  run 180 "$PY" -m cli train --dry-run --device cpu --out "$RUN" --no-progress
  note train_rc $?
  EVAL_ARGS=(--max-samples 200)
else
  # The fastest measured configuration, for the time left (the trainer stops itself at time_limit_s).
  read -r AMP COMPILE RATE < <("$PY" - "$WORK" <<'EOF'
import json, sys
from pathlib import Path
rows = [r for f in ("speed_eager.json", "speed_compiled.json") if (Path(sys.argv[1]) / f).is_file()
        for r in json.loads((Path(sys.argv[1]) / f).read_text()) if "steps_per_s" in r]
best = max(rows, key=lambda r: r["steps_per_s"]) if rows else {"amp": "none", "compile": False, "steps_per_s": 5.0}
print(best["amp"], str(best["compile"]).lower(), best["steps_per_s"])
EOF
)
  TRAIN_S=$(( $(left) - 90 ))  # data loading before the clock starts, the final evaluation, `nemgan eval`, results
  TRAIN_S=$(( TRAIN_S > 20 ? TRAIN_S : 20 ))
  log "training: amp=$AMP compile=$COMPILE (fastest measured: $RATE steps/s), time limit ${TRAIN_S}s"
  run $(( TRAIN_S + 60 )) "$PY" -m cli train --preset mnist-unsup --device "$DEVICE" --set time_limit_s="$TRAIN_S" \
    --set amp="$AMP" --set compile="$COMPILE" --set ckpt_every=500 --set log_every=20 --out "$RUN" --no-progress
  note train_rc $?
  EVAL_ARGS=()
fi
if [ -f "$RUN/best.pt" ]; then
  run $(( $(left) > 45 ? $(left) : 45 )) "$PY" -m cli eval "$RUN" --metrics cluster --split test "${EVAL_ARGS[@]}" \
    --out "$WORK/eval.json"
  note eval_rc $?
fi

# ---------------------------------------------------------------- results
"$PY" - "$WORK" "$OUT" "$DRY" "$(( $(date +%s) - START ))" <<'EOF' | tee -a "$LOG"
import json, sys
import xml.etree.ElementTree as ET
from pathlib import Path
work, out, dry, seconds = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "1", int(sys.argv[4])

def load(name):
    p = work / name
    return json.loads(p.read_text()) if p.is_file() else None

status = dict(line.split("=", 1) for line in (work / "status.env").read_text().splitlines()) \
    if (work / "status.env").is_file() else {}
tests = []
if (work / "tests.xml").is_file():
    for case in ET.parse(work / "tests.xml").iter("testcase"):
        outcome, reason = "passed", ""
        for tag in ("failure", "error", "skipped"):
            el = case.find(tag)
            if el is not None:
                outcome, reason = tag, (el.get("message") or "")[:300]
        tests.append({"test": f"{case.get('classname')}.{case.get('name')}", "outcome": outcome,
                      "seconds": float(case.get("time", 0)), "reason": reason})
res = {"dry_run": dry, "seconds": seconds, "env": load("env.json"), "env_before_install": load("env_before.json"),
       "status": status, "tests": tests,
       "train_speed": (load("speed_eager.json") or []) + (load("speed_compiled.json") or []),
       "serve_bench": (work / "serve_bench.txt").read_text() if (work / "serve_bench.txt").is_file() else None,
       "training": load("run/summary.json"), "eval_test": load("eval.json")}
(out / "results.json").write_text(json.dumps(res, indent=2) + "\n")
# The device tool returns files of at most 16 MiB: a larger last.pt comes back in parts (cat last.pt.* > last.pt).
PART = 15 * 2**20
for name in ("best.pt", "last.pt", "stats.jsonl"):
    src = work / "run" / name
    if src.is_file():
        data = src.read_bytes()
        if len(data) <= PART:
            (out / name).write_bytes(data)
        else:
            for i in range(0, len(data), PART):
                (out / f"{name}.{i // PART:02d}").write_bytes(data[i:i + PART])
            res.setdefault("notes", []).append(f"{name} ({len(data)} bytes) is in parts: cat {name}.* > {name}")
            (out / "results.json").write_text(json.dumps(res, indent=2) + "\n")
print(json.dumps({k: res[k] for k in ("dry_run", "seconds", "status")}))
print("tests:", {o: sum(t["outcome"] == o for t in tests) for o in ("passed", "failed", "error", "skipped")})
for r in res["train_speed"]:
    print("speed:", {k: r.get(k) for k in ("device_name", "amp", "compile", "steps_per_s", "images_per_s", "error")})
print("training:", res["training"] and {k: res["training"][k] for k in ("steps", "train_time_s", "device")})
print("eval:", res["eval_test"])
EOF
rm -rf "$WORK"
log "done in $(($(date +%s) - START))s; results in $OUT"
