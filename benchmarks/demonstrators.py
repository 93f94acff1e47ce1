"""Success rate of the scripted demonstrators over fixed seeds.

Runs every task that has a demonstrator (or those given) for ``--episodes`` episodes from ``reset(seed=s)``,
``s = seed .. seed + episodes - 1``, with state observations (the demonstrators never look at observations, so
pixel envs give the same numbers, only slower). Success is ``info["is_success"]`` at the end of the episode
(H-InDex's rule: more than 25 goal-achieved steps in 200). Prints a JSON document and a markdown table.

    python benchmarks/demonstrators.py                      # door and relocate, seeds 0-49
    python benchmarks/demonstrators.py --tasks Door --episodes 10 --noise 0.05
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import gymnasium as gym
import numpy as np

import hindex_sb3
from hindex_sb3.demonstrators import available_demonstrators, make_demonstrator


def evaluate(env_id: str, episodes: int, seed: int, noise: float) -> dict:
    env = gym.make(env_id, obs_mode="state")
    demo = make_demonstrator(env, noise_std=noise)
    successes, returns, goal_steps, first_goal, failed = [], [], [], [], []
    start = time.perf_counter()
    for episode_seed in range(seed, seed + episodes):
        obs, _ = env.reset(seed=episode_seed)
        demo.reset(seed=episode_seed)
        total, goals, first, done, info = 0.0, 0, None, False, {}
        while not done:
            obs, reward, terminated, truncated, info = env.step(demo(obs))
            total += reward
            goals += int(info["goal_achieved"])
            if first is None and info["goal_achieved"]:
                first = demo.t
            done = terminated or truncated
        successes.append(bool(info["is_success"]))
        returns.append(total)
        goal_steps.append(goals)
        if first is not None:
            first_goal.append(first)
        if not info["is_success"]:
            failed.append(episode_seed)
    wall = time.perf_counter() - start
    env.close()
    return {
        "env_id": env_id,
        "episodes": episodes,
        "seeds": [seed, seed + episodes - 1],
        "noise_std": noise,
        "success_rate": float(np.mean(successes)),
        "successes": int(np.sum(successes)),
        "mean_return": float(np.mean(returns)),
        "std_return": float(np.std(returns)),
        "mean_goal_steps": float(np.mean(goal_steps)),
        "mean_first_goal_step": float(np.mean(first_goal)) if first_goal else None,
        "failed_seeds": failed,
        "wall_time_s": wall,
        "seconds_per_episode": wall / max(episodes, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="*", help="task names (Door, Relocate) or env ids; default: all available")
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--noise", type=float, default=0.0, help="Gaussian action noise (std, normalised units)")
    args = parser.parse_args(argv)

    available = available_demonstrators()
    if args.tasks:
        env_ids = [t if "/" in t else f"HInDex/{t}-v0" for t in args.tasks]
        missing = [e for e in env_ids if e not in available]
        if missing:
            parser.error(f"no scripted demonstrator for {missing}; available: {available}")
    else:
        env_ids = available
    results = [evaluate(env_id, args.episodes, args.seed, args.noise) for env_id in env_ids]
    report = {
        "benchmark": "scripted demonstrators",
        "hindex_sb3": hindex_sb3.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "results": results,
    }
    print(json.dumps(report, indent=2))
    print()
    print("| task | episodes (seeds) | success rate | mean return | mean goal steps | first goal step | wall time |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        first = f"{r['mean_first_goal_step']:.0f}" if r["mean_first_goal_step"] is not None else "-"
        print(
            f"| {r['env_id']} | {r['episodes']} ({r['seeds'][0]}-{r['seeds'][1]}) "
            f"| {r['successes']}/{r['episodes']} ({100 * r['success_rate']:.0f} %) "
            f"| {r['mean_return']:.1f} ± {r['std_return']:.1f} | {r['mean_goal_steps']:.1f} | {first} "
            f"| {r['wall_time_s']:.1f} s ({r['seconds_per_episode']:.2f} s/episode) |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
