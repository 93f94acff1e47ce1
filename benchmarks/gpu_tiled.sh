#!/usr/bin/env bash
# The tiled-rendering workers (SharedMemoryVecEnv envs_per_worker) on a lent GPU: the whole pixel DAPG iteration
# with K envs per worker against one env per worker, door and a DexMV task, encoder in bf16. Usage, from the
# repository root with the package importable:  bash benchmarks/gpu_tiled.sh OUT_DIR
set -u
out=${1:?usage: gpu_tiled.sh OUT_DIR}
py=${PYTHON:-python3}
mkdir -p "$out"
export MUJOCO_GL=${MUJOCO_GL:-egl} PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
log="$out/gpu_tiled.log"
run() {  # run NAME SECONDS ARGS...
    local name=$1 limit=$2
    shift 2
    echo "=== $name (limit ${limit} s) $(date -u +%T)" | tee -a "$log"
    timeout -k 10 "$limit" "$py" benchmarks/pixel_throughput.py --preset gpu --precision bf16 --repeats 1 "$@" \
        --json "$out/$name.json" 2>&1 | tee -a "$log" | grep -v '^ \|^{\|^}'
    echo "=== $name: exit ${PIPESTATUS[0]}" | tee -a "$log"
}
run door_tiled "${DOOR_LIMIT:-230}" --tasks Door --vec-env shm+overlap "shm*4+overlap" "shm*8+overlap"
run pour_tiled "${POUR_LIMIT:-170}" --tasks Pour --vec-env shm+overlap "shm*4+overlap"
true
