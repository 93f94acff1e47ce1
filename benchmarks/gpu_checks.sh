#!/usr/bin/env bash
# The GPU checks of the pixel-throughput work in one go, for a machine with a GPU lent for a few minutes:
#   1. sanity: CUDA, headless EGL rendering of a pixel env, the package imports;
#   2. benchmarks/pixel_throughput.py --preset gpu (door and a DexMV task, 32 envs, 224 px; REPEATS rounds);
#   3. the CUDA-only tests: fast rollout path vs simple path, CUDA graphs, bf16 tolerance on rendered frames; the
#      tiled-rendering tests (exact frames) on NVIDIA's EGL;
#   4. benchmarks/precision.py on the GPU (bf16 + CUDA graphs against eager fp32);
#   5. benchmarks/render_batching.py: k scenes in one framebuffer with one read-back, against one per frame;
#   6. the whole iteration with tiled workers (K envs per worker, frames drawn in one pass, their physics in T
#      threads of the worker: shm*K/T), encoder in bf16, overlap, 64 envs: door with 16 workers of 4, 4 workers of
#      16 in 4 threads and 8 workers of 8 in 2 threads; pour with 16 workers of 4 and 4 of 16 in 4 threads.
#      TILED32=1 adds the previous session's 32-env door runs (K = 1, 2, 4) for comparison;
#   7. `hindex train` end to end on the GPU (BC, EMA-BN, overlap, checkpoints, evaluation, video), then resumed.
# Each step has its own time limit, so one slow or failing step leaves the others' results. Usage, from the
# repository root with the package importable (installed, or PYTHONPATH=$PWD):
#   bash benchmarks/gpu_checks.sh OUT_DIR [THROUGHPUT_SECONDS]
# REPEATS (default 2) sets the throughput rounds counted. THROUGHPUT=0 skips step 2, TESTS=0 step 3, PRECISION=0 step 4,
# RENDER=0 step 5, TILED=0 step 6 and TRAIN=0 step 7.
# With REPEATS=1 and THROUGHPUT=0, steps 1, 3-5 and 7 took about 5 minutes and step 6 about 10 (H200, 16 cores):
# more than one device call allows (10 min), so run them as two calls, e.g. TILED=0 first, then TESTS=0 PRECISION=0
# RENDER=0 TRAIN=0 (step 6 alone, at most 9.5 minutes with its limits).
set -u
out=${1:?usage: gpu_checks.sh OUT_DIR [THROUGHPUT_SECONDS]}
throughput_limit=${2:-300}
py=${PYTHON:-python3}
mkdir -p "$out"
export MUJOCO_GL=${MUJOCO_GL:-egl} PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
log="$out/gpu_checks.log"

step() {  # step NAME SECONDS COMMAND...: run with a limit, log everything, never stop the script
    local name=$1 limit=$2 start=$SECONDS rc
    shift 2
    echo "=== $name (limit ${limit} s) $(date -u +%T)" | tee -a "$log"
    timeout -k 10 "$limit" "$@" 2>&1 | tee -a "$log"
    rc=${PIPESTATUS[0]}
    echo "=== $name: exit $rc after $((SECONDS - start)) s" | tee -a "$log"
}

step machine 30 bash -c 'nvidia-smi -L; nproc; free -g | head -2; '"$py"' -c "import torch; print(torch.__version__)"'
step sanity 90 "$py" -c '
import time, gymnasium as gym, torch, hindex_sb3
print("cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-")
t = time.perf_counter()
env = gym.make("HInDex/Door-v0")
obs, _ = env.reset(seed=0)
for _ in range(50):
    obs, *_ = env.step(env.action_space.sample())
print("door pixels", obs["pixels"].shape, obs["pixels"].dtype, "mean", float(obs["pixels"].mean()),
      f"{time.perf_counter() - t:.1f} s for make + 50 steps")
'
[ "${THROUGHPUT:-1}" = 1 ] && step pixel_throughput "$throughput_limit" "$py" benchmarks/pixel_throughput.py --preset gpu --repeats "${REPEATS:-2}" \
    --json "$out/pixel_throughput.json"
[ "${TESTS:-1}" = 1 ] && step gpu_tests 170 "$py" -m pytest -q -p no:cacheprovider -m "slow or not slow" \
    tests/test_gpu_fast_path.py tests/test_cuda_graphs.py "tests/test_precision.py::test_resnet50_bf16_features_on_rendered_frames_are_within_the_tolerance" \
    "tests/test_precision.py::test_resnet50_bf16_moves_features_no_more_than_one_grey_level_of_noise" \
    tests/test_adapt.py tests/test_extractor.py -k "cuda or gpu or graph or True"
# tiled frames bit for bit the one-by-one frames, with NVIDIA's EGL (on the CPU, with Mesa's, they are)
[ "${TESTS:-1}" = 1 ] && step tiled_tests 120 "$py" -m pytest -q -p no:cacheprovider tests/test_envs.py \
    tests/test_shm_vec_env.py -k "tiled or deferred or thread"
[ "${PRECISION:-1}" = 1 ] && step precision 90 "$py" benchmarks/precision.py --device cuda --json "$out/precision.json"
[ "${RENDER:-1}" = 1 ] && step render_batching 150 "$py" benchmarks/render_batching.py --tiles 1 4 16 \
    --processes 1 4 16 --frames 400 --json "$out/render_batching.json"
tiled() {  # tiled NAME LIMIT ARGS...: the bf16 throughput table for tiled workers
    local name=$1 limit=$2
    shift 2
    step "$name" "$limit" "$py" benchmarks/pixel_throughput.py --preset gpu --precision bf16 --repeats "${REPEATS:-2}" \
        "$@" --json "$out/$name.json"
}
if [ "${TILED:-1}" = 1 ]; then
    tiled tiled_door_64 270 --tasks Door --n-envs 64 --vec-env "shm*4+overlap" "shm*16/4+overlap" "shm*8/2+overlap"
    tiled tiled_pour_64 290 --tasks Pour --n-envs 64 --vec-env "shm*4+overlap" "shm*16/4+overlap"
fi
if [ "${TILED32:-0}" = 1 ]; then
    tiled tiled_door 330 --tasks Door --vec-env shm+overlap "shm*2+overlap" "shm*4" "shm*4+overlap"
fi
train=(train door --weights random --n-envs 16 --trajectories 16 --horizon 50 --num-demos 1 --ema-momentum 0.1
       --overlap --vec-env shm --envs-per-worker 4 --threads-per-worker 2 --checkpoint-every 1 --eval-episodes 4 --out /tmp/gpu_checks_train --no-progress)
[ "${TRAIN:-1}" = 1 ] && step train 150 "$py" -m hindex_sb3.cli "${train[@]}" --iterations 2 --overwrite
[ "${TRAIN:-1}" = 1 ] && step train_resume 120 "$py" -m hindex_sb3.cli "${train[@]}" --iterations 3 --resume
true  # a skipped last step is not a failure
