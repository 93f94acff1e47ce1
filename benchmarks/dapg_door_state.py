"""State-based DAPG on door with the 25 DAPG human demonstrations (needs ../shared/data/door-human-v0.npz).

Reference settings (hindex.md §4-5): BC 5 epochs / batch 32 / lr 1e-3, then DAPG with 100 trajectories per iteration,
delta 0.05, gamma 0.995, GAE 0.97, lam0 1e-2, lam1 0.95; evaluation = 25 mean-action episodes from fixed seeds after
each iteration. Stops when evaluation success reaches --target (default 0.8) or after --max-iterations.
Prints one JSON line per iteration, then a JSON summary and a markdown table.

    python benchmarks/dapg_door_state.py [--trajectories 100] [--max-iterations 60] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3.common.env_util import make_vec_env

import hindex_sb3  # noqa: F401
from hindex_sb3.dapg import DAPG, IterationCallback
from hindex_sb3.evaluation import evaluate

DEFAULT_DEMOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "door-human-v0.npz"


class _LastRow(IterationCallback):
    """The values of the iteration's log row (learn writes the row after the update, which empties the logger)."""

    row: dict = {}  # noqa: RUF012

    def _on_iteration_end(self) -> bool:
        self.row = dict(self.logger.name_to_value)
        return True


def load_door_demos(path: Path) -> list[dict]:
    d = np.load(path)
    return [{"observations": d[f"obs_{i}"], "actions": d[f"acts_{i}"]} for i in range(int(d["n_demos"]))]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demos", type=Path, default=DEFAULT_DEMOS)
    parser.add_argument("--trajectories", type=int, default=100)
    parser.add_argument("--max-iterations", type=int, default=60)
    parser.add_argument("--target", type=float, default=0.8)
    parser.add_argument("--n-envs", type=int, default=10)
    parser.add_argument("--eval-episodes", type=int, default=25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    th.set_num_threads(args.threads)
    env = make_vec_env("HInDex/Door-v0", n_envs=args.n_envs, seed=args.seed, env_kwargs={"obs_mode": "state"})
    eval_env = gym.make("HInDex/Door-v0", obs_mode="state")
    model = DAPG("MlpPolicy", env, demos=load_door_demos(args.demos), n_trajectories=args.trajectories, seed=args.seed)
    start = time.perf_counter()
    bc_loss = model.pretrain_bc()
    bc_eval = evaluate(model, eval_env, n_episodes=args.eval_episodes, seed=10_000 + args.seed)
    curve = [
        {
            "iteration": 0,
            "phase": "bc",
            "bc_loss": bc_loss,
            "eval_success": bc_eval.success_rate,
            "eval_return": bc_eval.mean_return,
            "wall_s": round(time.perf_counter() - start, 1),
        }
    ]
    print(json.dumps(curve[-1]), flush=True)
    steps_per_iter = args.trajectories * 200
    last = _LastRow()
    for it in range(1, args.max_iterations + 1):
        model.learn(total_timesteps=steps_per_iter, reset_num_timesteps=False, callback=last)
        # learn() ends after collecting + updating once per call (one iteration of n_trajectories episodes)
        ev = evaluate(model, eval_env, n_episodes=args.eval_episodes, seed=10_000 + args.seed)
        logs = last.row
        curve.append(
            {
                "iteration": it,
                "eval_success": ev.success_rate,
                "eval_return": round(ev.mean_return, 1),
                "train_success": round(float(np.mean(list(model.ep_success_buffer)[-args.trajectories :])), 3),
                "train_return": round(float(logs.get("rollout/path_return_mean", float("nan"))), 1),
                "kl": logs.get("train/kl"),
                "npg_alpha": logs.get("train/npg_alpha"),
                "cg_residual": logs.get("train/cg_residual"),
                "demo_weight": logs.get("train/demo_weight"),
                "wall_s": round(time.perf_counter() - start, 1),
            }
        )
        print(json.dumps(curve[-1]), flush=True)
        if ev.success_rate >= args.target:
            break
    reached = next((c["iteration"] for c in curve if c["eval_success"] >= args.target), None)
    summary = {
        "trajectories_per_iteration": args.trajectories,
        "bc_success": curve[0]["eval_success"],
        "target": args.target,
        "iterations_to_target": reached,
        "wall_s_to_target": next((c["wall_s"] for c in curve if c["eval_success"] >= args.target), None),
        "curve": curve,
    }
    print(json.dumps(summary))
    print("\n| iteration | eval success | eval return | train success | KL | wall s |\n|---|---|---|---|---|---|")
    for c in curve:
        print(
            f"| {c['iteration']} | {c['eval_success']:.2f} | {c['eval_return']:.1f} | "
            f"{c.get('train_success') if c.get('train_success') is not None else '-'} | "
            f"{c.get('kl') if c.get('kl') is not None else '-'} | {c['wall_s']} |"
        )
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
