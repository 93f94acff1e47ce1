"""Environment throughput: steps/s per task for stepping, rendering, and both, measured side by side.

Configurations per task (one process, one env each):
  step            obs_mode="state" (no rendering)
  render@S        the renderer alone on a fixed scene (fast quality), S in {84, 224}
  step+fast@S     obs_mode="pixels", render_quality="fast"
  step+paper@S    obs_mode="pixels", render_quality="paper" (the XMLs' shadows, 8x MSAA, reflections)

Machines are noisy, so every configuration is measured in each of ``--repeats`` interleaved rounds and the median
rate is reported. The goal checked: at 224 px, step+fast time per step <= 1.2 x (step + render) time, and >= 100
steps/s. Prints a JSON document and a markdown table.

    python benchmarks/env_throughput.py [--tasks Door Hammer] [--steps 300] [--repeats 3] [--quick]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import gymnasium as gym
import numpy as np

import hindex_sb3
from hindex_sb3.envs import env_ids


def _time_steps(env: gym.Env, n: int, seed: int) -> float:
    env.reset(seed=seed)
    actions = np.random.default_rng(seed).uniform(-1, 1, size=(n, *env.action_space.shape)).astype(np.float32)
    start = time.perf_counter()
    for a in actions:
        _, _, terminated, truncated, _ = env.step(a)
        if terminated or truncated:
            env.reset()
    return n / (time.perf_counter() - start)


def _time_render_only(env: gym.Env, n: int, seed: int) -> float:
    env.reset(seed=seed)
    base = env.unwrapped
    renderer = base._get_renderer()
    start = time.perf_counter()
    for _ in range(n):
        renderer.render_chw(base.data, base.camera_id)
    return n / (time.perf_counter() - start)


def benchmark_task(env_id: str, steps: int, repeats: int, sizes: tuple[int, ...]) -> dict:
    configs: dict[str, tuple[dict, str, int]] = {"step": ({"obs_mode": "state"}, "step", steps * 5)}
    for s in sizes:
        configs[f"render@{s}"] = ({"image_size": s}, "render", steps)
        configs[f"step+fast@{s}"] = ({"image_size": s}, "step", steps)
        configs[f"step+paper@{s}"] = ({"image_size": s, "render_quality": "paper"}, "step", max(steps // 6, 20))
    envs = {name: gym.make(env_id, max_episode_steps=-1, **kw) for name, (kw, _, _) in configs.items()}
    rates: dict[str, list[float]] = {name: [] for name in configs}
    try:
        for r in range(repeats):
            for name, (_, kind, n) in configs.items():
                fn = _time_render_only if kind == "render" else _time_steps
                rates[name].append(fn(envs[name], n, seed=r))
    finally:
        for env in envs.values():
            env.close()
    med = {name: statistics.median(v) for name, v in rates.items()}
    result: dict = {"steps_per_s": {k: round(v, 1) for k, v in med.items()}}
    for s in sizes:
        predicted = 1.0 / (1.0 / med["step"] + 1.0 / med[f"render@{s}"])
        result[f"overhead@{s}"] = round((1.0 / med[f"step+fast@{s}"]) / (1.0 / predicted), 3)
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="*", default=None, help="task names, e.g. Door Pen (default: all)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="100 steps, 1 repeat")
    parser.add_argument("--json", type=str, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    steps, repeats = (100, 1) if args.quick else (args.steps, args.repeats)
    ids = env_ids() if not args.tasks else [f"HInDex/{t}-v0" for t in args.tasks]
    sizes = (84, 224)
    report = {
        "machine": {"cpu_count": __import__("os").cpu_count(), "platform": platform.platform()},
        "hindex_sb3": hindex_sb3.__version__,
        "steps": steps,
        "repeats": repeats,
        "tasks": {},
    }
    for env_id in ids:
        report["tasks"][env_id] = benchmark_task(env_id, steps, repeats, sizes)
        print(env_id, json.dumps(report["tasks"][env_id]), flush=True)
    print(json.dumps(report, indent=2))
    cols = ["step", "render@84", "step+fast@84", "step+paper@84", "render@224", "step+fast@224", "step+paper@224"]
    print("\n| task | " + " | ".join(cols) + " | t(step+fast@224) / (t(step)+t(render@224)) |")
    print("|---" * (len(cols) + 2) + "|")
    for env_id, res in report["tasks"].items():
        row = [f"{res['steps_per_s'][c]:,.0f}" for c in cols]
        print(f"| {env_id} | " + " | ".join(row) + f" | {res['overhead@224']:.2f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return report


if __name__ == "__main__":
    main()
