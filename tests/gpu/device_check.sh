#!/usr/bin/env bash
# The GPU check of issue 20 (docs/gpu.md, "The device check"), for a fresh GPU machine with
# the image's own python (torch, cupy, pytest there; nothing is downloaded or installed: the
# checkout goes on PYTHONPATH). Under 6 minutes:
#   1. nvidia-smi topo -m (and -p2p r): the links and peer access as the driver reports them;
#   2. topology discovery (python -m collectives.topology.discover), and the recorded text
#      parsed back, to compare;
#   3. pytest tests/gpu: every primitive, every collective x dtype x 2/3/4 processes sharing
#      the GPU, the torch backend on CUDA tensors;
#   4. perf/device_sweep.py: all_reduce/all_gather/reduce_scatter at 1 MiB - 1 GiB for 2 and
#      4 processes beside the device-to-device copy bandwidth and the host-staged path;
#   5. while time is left, the staged path on the GPU (tests/collectives/test_cuda_staging.py).
# Ends with one line: device_check: <tests>; <the sweep's verdict>; <seconds>.
# Outputs go under $OUT when it is set (topo.txt, discover.json, pytest.log, sweep.log,
# device_sweep.json, staging.log), else under a fresh temporary folder.
#
#   bash tests/gpu/device_check.sh             # PYTHON=/path/to/python to choose the interpreter
#   SWEEP_ARGS="--backend host --procs 2 --min-bytes 64K --max-bytes 64K --staged-bytes 64K --copy-bytes 256K" \
#     bash tests/gpu/device_check.sh           # the plumbing on a machine without a GPU
set -u -o pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$(mktemp -d -t device_check.XXXXXX)}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
unset COLLECTIVES_DEVICE COLLECTIVES_TRANSPORT
start=$(date +%s)
elapsed() { echo $(( $(date +%s) - start )); }
step() { echo; echo "== $* (at $(elapsed) s)"; }

step "nvidia-smi topo -m; topo -p2p r"
{ nvidia-smi topo -m; nvidia-smi topo -p2p r; } 2>&1 | tee "$OUT/topo.txt"
nvidia-smi --query-gpu=index,name,pci.bus_id,memory.total,driver_version --format=csv 2>&1
"$PY" -c "import sys, torch, cupy; print('python', sys.version.split()[0], '| torch', torch.__version__, '| cupy', cupy.__version__)"

step "topology discovery"
timeout 60 "$PY" -m collectives.topology.discover 2>&1 | tee "$OUT/discover.json"
timeout 60 "$PY" -c "
from collectives.topology.discover import discover, load
from collectives.topology import select_transport, describe
found, recorded = discover(), load('$OUT/topo.txt')
print('discovered:', found.summary()); print('from the text:', recorded.summary())
print(describe(select_transport(0, 1, my_host='h', peer_host='h', device_buffers=True, my_gpu=0, peer_gpu=0, topology=found)))
"

step "pytest tests/gpu"
timeout 170 "$PY" -m pytest -q -p no:cacheprovider -rs tests/gpu 2>&1 | tee "$OUT/pytest.log"
tests="$(tail -n 1 "$OUT/pytest.log" | tr -d '=' | sed 's/^ *//; s/ *$//')"

step "sweep: python -m perf.device_sweep"
# shellcheck disable=SC2086  # SWEEP_ARGS: extra flags, word-split on purpose (a CPU dry run: --backend host ...)
timeout 160 "$PY" -m perf.device_sweep --out "$OUT" --timeout 70 ${SWEEP_ARGS:-} 2>&1 | tee "$OUT/sweep.log"
sweep="$(grep '^device_sweep: ' "$OUT/sweep.log" | tail -n 1)"

if [ "$(elapsed)" -lt 280 ]; then
  step "the staged path on the GPU: tests/collectives/test_cuda_staging.py"
  timeout $(( 340 - $(elapsed) )) "$PY" -m pytest -q -p no:cacheprovider -rs tests/collectives/test_cuda_staging.py 2>&1 \
    | tee "$OUT/staging.log"
  tests="$tests; staging: $(tail -n 1 "$OUT/staging.log" | tr -d '=' | sed 's/^ *//; s/ *$//')"
fi

echo
echo "device_check: tests/gpu: ${tests:-no result}; ${sweep:-device_sweep: no result}; $(elapsed) s"
