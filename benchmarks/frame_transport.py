"""Frame transport: worker processes that pickle frames through pipes (SubprocVecEnv) vs shared memory.

Configurations, each for n_envs in ``--n-envs`` (2 and 4 by default):
  const/vec      a trivial env returning a constant 224x224x3 uint8 frame (no physics, no rendering), stepped with
                 ``VecEnv.step``: transport alone
  const/runner   the same env stepped the way DAPG samples episodes (``EpisodeRunner.step`` of every env)
  door/vec       ``HInDex/Door-v0`` pixels at 224 px (fast render): the whole step, physics and rendering included

Rates are env frames per second (steps x envs / s), with the main process's CPU time per frame beside them. Every
configuration is measured in each of ``--repeats`` interleaved rounds (subproc, shm, shm, subproc, ...) and the
median is reported; also the cost of the copy that ``SharedMemoryVecEnv`` makes of every batch it returns. Prints a
JSON document and a markdown table.

    python benchmarks/frame_transport.py [--n-envs 2 4] [--steps 300] [--repeats 5] [--quick] [--json OUT]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import SubprocVecEnv, VecEnv

import hindex_sb3
from hindex_sb3._io import atomic_write_text, to_json_text
from hindex_sb3.dapg.rollout import EpisodeRunner
from hindex_sb3.vec_env import SharedMemoryVecEnv

SIZE = 224
KINDS = {"subproc": SubprocVecEnv, "shm": SharedMemoryVecEnv}


class ConstantFrameEnv(gym.Env):
    """A 224x224x3 uint8 frame and nothing else: what is left of a step is moving the frame."""

    observation_space = spaces.Box(0, 255, (SIZE, SIZE, 3), np.uint8)
    action_space = spaces.Box(-1, 1, (1,), np.float32)

    def __init__(self) -> None:
        self._frame = np.full((SIZE, SIZE, 3), 127, np.uint8)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self._frame, {}

    def step(self, action):
        return self._frame, 0.0, False, False, {}


def _timed(step: Callable[[], Any], steps: int, n_envs: int) -> tuple[float, float]:
    """Frames/s, and the main process's CPU microseconds per frame (what the transport costs the process that also
    runs the encoder; unlike the rate, it hardly moves with the machine's load)."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return steps * n_envs / wall, cpu * 1e6 / (steps * n_envs)


def _time_vec(venv: VecEnv, steps: int) -> tuple[float, float]:
    venv.reset()
    actions = np.zeros((venv.num_envs, *venv.action_space.shape), np.float32)
    return _timed(lambda: venv.step(actions), steps, venv.num_envs)


def _time_runner(venv: VecEnv, steps: int) -> tuple[float, float]:
    runner = EpisodeRunner(venv)
    runner.reset({j: j for j in range(venv.num_envs)})
    actions = {j: np.zeros(venv.action_space.shape, np.float32) for j in range(venv.num_envs)}
    return _timed(lambda: runner.step(actions), steps, venv.num_envs)


Timer = Callable[[VecEnv, int], tuple[float, float]]


def _builders(n_envs: int) -> dict[str, tuple[Callable[[type], VecEnv], Timer, float]]:
    """name -> (build a VecEnv of a class, time it, share of ``--steps`` to run)."""
    door_kwargs = {"image_size": SIZE, "max_episode_steps": 10_000}
    return {
        "const/vec": (lambda cls: cls([ConstantFrameEnv] * n_envs), _time_vec, 1.0),
        "const/runner": (lambda cls: cls([ConstantFrameEnv] * n_envs), _time_runner, 1.0),
        "door/vec": (
            lambda cls: make_vec_env("hindex_sb3:HInDex/Door-v0", n_envs, env_kwargs=door_kwargs, vec_env_cls=cls),
            _time_vec,
            0.25,
        ),
    }


def measure(name: str, n_envs: int, steps: int, repeats: int) -> dict[str, Any]:
    """Median frames/s of each kind, the kinds alive side by side and timed in alternation."""
    build, timer, share = _builders(n_envs)[name]
    venvs = {kind: build(cls) for kind, cls in KINDS.items()}
    rates: dict[str, list[float]] = {kind: [] for kind in KINDS}
    cpu: dict[str, list[float]] = {kind: [] for kind in KINDS}
    try:
        for venv in venvs.values():  # warm-up: first frames, renderer contexts, page faults
            timer(venv, 5)
        for r in range(repeats):
            order = list(venvs) if r % 2 == 0 else list(venvs)[::-1]  # ABBA: neither kind always runs first
            for kind in order:
                rate, cpu_us = timer(venvs[kind], max(int(steps * share), 10))
                rates[kind].append(rate)
                cpu[kind].append(cpu_us)
    finally:
        for venv in venvs.values():
            venv.close()
    out: dict[str, Any] = {kind: round(statistics.median(v), 1) for kind, v in rates.items()}
    out |= {f"{kind}_cpu_us": round(statistics.median(v), 1) for kind, v in cpu.items()}
    return out | {f"{kind}_rounds": [round(x, 1) for x in v] for kind, v in rates.items()}


def copy_cost_us(n_envs: int, repeats: int = 200) -> float:
    """Median microseconds of the copy ``SharedMemoryVecEnv`` makes of an (n_envs, 224, 224, 3) batch."""
    batch = np.full((n_envs, SIZE, SIZE, 3), 127, np.uint8)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        batch.copy()
        times.append(time.perf_counter() - start)
    return round(statistics.median(times) * 1e6, 1)


def _table(report: dict[str, Any]) -> str:
    lines = [
        "| configuration | n_envs | subproc frames/s | shm frames/s | shm / subproc | main-process CPU us/frame "
        "(subproc / shm) |",
        "|---|---|---|---|---|---|",
    ]
    for row in report["results"]:
        ratio = row["shm"] / row["subproc"]
        cpu = f"{row['subproc_cpu_us']:,.0f} / {row['shm_cpu_us']:,.0f}"
        lines.append(
            f"| {row['config']} | {row['n_envs']} | {row['subproc']:,.0f} | {row['shm']:,.0f} | {ratio:.2f} | {cpu} |"
        )
    copies = ", ".join(f"{n} envs {us:.0f} us" for n, us in report["copy_us"].items())
    lines.append(f"\nCopy of a returned batch: {copies}.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-envs", nargs="+", type=int, default=[2, 4])
    parser.add_argument("--configs", nargs="+", default=list(_builders(1)), choices=list(_builders(1)))
    parser.add_argument("--steps", type=int, default=300, help="steps per round (door: a quarter)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="60 steps, 2 rounds")
    parser.add_argument("--json", type=str, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    steps, repeats = (60, 2) if args.quick else (args.steps, args.repeats)
    report: dict[str, Any] = {
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "load": os.getloadavg()},
        "hindex_sb3": hindex_sb3.__version__,
        "frame": [SIZE, SIZE, 3],
        "steps": steps,
        "repeats": repeats,
        "copy_us": {n: copy_cost_us(n) for n in args.n_envs},
        "results": [],
    }
    for name in args.configs:
        for n in args.n_envs:
            row = {"config": name, "n_envs": n, **measure(name, n, steps, repeats)}
            report["results"].append(row)
            print(to_json_text(row, indent=None), end="", flush=True)
    report["machine"]["load_after"] = os.getloadavg()
    text = to_json_text(report)
    print(text)
    print(_table(report))
    if args.json:
        atomic_write_text(args.json, text)
    return report


if __name__ == "__main__":
    main()
