"""The bench report: a markdown page with the paper's figures, from ``results.csv`` alone.

* Fig. 1: normalised score per method. Each run's score on a task is its final evaluation return divided by the best
  return any method reached on that task (the paper's normalisation), averaged over tasks; the mean and the
  interquartile mean (IQM) come with 95 % stratified-bootstrap confidence intervals (rliable; Agarwal et al., 2021).
  The paper reports the mean only.
* Fig. 4: evaluation return and success against env frames per task: mean over seeds, 95 % t-interval bands.
* The suite's own comparison (the ablations) is the same aggregate over its methods; Table 3 (background suite)
  lists success on each novel background.
* Cost: wall time and env frames/s of every run.

A report drawn while runs are missing says so at the top and in every figure title.
"""

from __future__ import annotations

import math
import textwrap
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from hindex_sb3._io import atomic_write_text
from hindex_sb3.bench.plan import Plan
from hindex_sb3.bench.results import read_results, run_finished
from hindex_sb3.bench.store import load_plan
from hindex_sb3.bench.suites import get_suite


def _final_rows(rows: list[dict[str, Any]]) -> dict[tuple[str, str, int], dict[str, Any]]:
    """The last training-background evaluation of each (task, method, seed)."""
    final: dict[tuple[str, str, int], dict[str, Any]] = {}
    for row in rows:
        if row["background"]:
            continue
        key = (row["task"], row["method"], row["seed"])
        if key not in final or row["iteration"] >= final[key]["iteration"]:
            final[key] = row
    return final


def task_scales(rows: list[dict[str, Any]]) -> dict[str, tuple[float, float]]:
    """``{task: (zero, best)}``: a score is ``(return - zero) / (best - zero)``.

    The paper divides by the best return any method reached on the task (``zero = 0``). That only means something
    when returns are positive; where a task's returns go negative (dense Adroit rewards early in training) the
    worst return reached is the zero instead, and the report says so.
    """
    returns: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        if not row["background"]:
            returns[row["task"]].append(row["eval_return"])
    scales = {}
    for task, values in returns.items():
        best, worst = max(values), min(values)
        zero = 0.0 if worst >= 0.0 else worst
        if best > zero:
            scales[task] = (zero, best)
    return scales


def normalised_scores(rows: list[dict[str, Any]], methods: list[str], tasks: list[str], seeds: list[int]):
    """``{method: array (n_seeds, n_tasks)}`` of normalised final returns (NaN where missing)."""
    scales = task_scales(rows)
    final = _final_rows(rows)
    scores = {}
    for method in methods:
        matrix = np.full((len(seeds), len(tasks)), np.nan)
        for i, seed in enumerate(seeds):
            for j, task in enumerate(tasks):
                row = final.get((task, method, seed))
                if row is not None and task in scales:
                    zero, best = scales[task]
                    matrix[i, j] = (row["eval_return"] - zero) / (best - zero)
        scores[method] = matrix
    return scores


def aggregate(scores: dict[str, np.ndarray], reps: int = 2000, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Mean and IQM over tasks and seeds with 95 % stratified-bootstrap intervals (rliable), complete tasks only."""
    from rliable import library as rly
    from rliable import metrics

    out = {}
    for method, matrix in scores.items():
        complete = matrix[:, ~np.isnan(matrix).any(axis=0)]
        if complete.size == 0:
            continue
        np.random.seed(seed)  # rliable draws from numpy's global generator: fixed, so a report is reproducible
        point, interval = rly.get_interval_estimates(
            {method: complete},
            lambda x: np.array([metrics.aggregate_mean(x), metrics.aggregate_iqm(x)]),
            reps=reps,
        )
        out[method] = {
            "mean": float(point[method][0]),
            "mean_ci": [float(interval[method][0, 0]), float(interval[method][1, 0])],
            "iqm": float(point[method][1]),
            "iqm_ci": [float(interval[method][0, 1]), float(interval[method][1, 1])],
            "tasks": int(complete.shape[1]),
        }
    return out


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _aggregate_figure(agg: dict[str, dict[str, Any]], path: Path, title: str) -> None:
    plt = _plt()
    methods = list(agg)
    fig, axes = plt.subplots(1, 2, figsize=(8, 0.5 + 0.45 * max(len(methods), 2)), sharey=True)
    for ax, stat in zip(axes, ("mean", "iqm"), strict=True):
        values = [agg[m][stat] for m in methods]
        lo = [agg[m][stat] - agg[m][f"{stat}_ci"][0] for m in methods]
        hi = [agg[m][f"{stat}_ci"][1] - agg[m][stat] for m in methods]
        ax.barh(methods, values, xerr=[lo, hi], color="tab:blue", alpha=0.8, capsize=3)
        ax.set_xlabel(f"normalised score ({'mean' if stat == 'mean' else 'IQM'}, 95 % CI)")
    axes[0].invert_yaxis()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _t_band(values: np.ndarray) -> tuple[float, float]:
    from scipy import stats

    if len(values) < 2:
        return float(values.mean()), float(values.mean())
    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
    return float(values.mean() - half), float(values.mean() + half)


def _curves_figure(rows, tasks: list[str], methods: list[str], path: Path, title: str) -> None:
    plt = _plt()
    fig, axes = plt.subplots(2, len(tasks), figsize=(max(3.2 * len(tasks), 6.4), 5), squeeze=False)
    for j, task in enumerate(tasks):
        for method in methods:
            by_iter: dict[int, list[dict[str, Any]]] = defaultdict(list)
            for row in rows:
                if row["task"] == task and row["method"] == method and not row["background"]:
                    by_iter[row["iteration"]].append(row)
            if not by_iter:
                continue
            its = sorted(by_iter)
            frames = [np.mean([r["env_frames"] for r in by_iter[i]]) for i in its]
            for ax, key in zip(axes[:, j], ("eval_return", "eval_success"), strict=True):
                values = [np.array([r[key] for r in by_iter[i]]) for i in its]
                mean = [v.mean() for v in values]
                band = [_t_band(v) for v in values]
                (line,) = ax.plot(frames, mean, label=method)
                ax.fill_between(frames, [b[0] for b in band], [b[1] for b in band], color=line.get_color(), alpha=0.2)
        axes[0, j].set_title(task, fontsize=9)
        axes[0, j].set_ylabel("eval return")
        axes[1, j].set_ylabel("eval success")
        axes[1, j].set_xlabel("env frames")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(textwrap.fill(title, int(10 * fig.get_figwidth())), fontsize=9)  # ~10 characters per inch
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _background_table(rows, methods: list[str], backgrounds: tuple[str, ...]) -> list[str]:
    lines = ["| method | training background | " + " | ".join(backgrounds) + " |"]
    lines.append("|---" * (len(backgrounds) + 2) + "|")
    final = _final_rows(rows)
    for method in methods:
        cells = []
        train = [r["eval_success"] for (t, m, s), r in final.items() if m == method]
        cells.append(_mean_std(train))
        for name in backgrounds:
            values = [r["eval_success"] for r in rows if r["method"] == method and r["background"] == name]
            cells.append(_mean_std(values))
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def _mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{100 * np.mean(values):.0f} ± {100 * np.std(values):.0f} %"


def _cost_table(rows, plan) -> list[str]:
    lines = ["| run | iterations | env frames | wall time (s) | env frames/s |", "|---|---|---|---|---|"]
    last: dict[str, dict[str, Any]] = {}
    for row in rows:
        if not row["background"]:
            last[f"{row['task']}__{row['method']}__s{row['seed']}"] = row
    for spec in plan.runs:
        row = last.get(spec.run_id)
        if row is None:
            lines.append(f"| {spec.run_id} | - | - | - | - |")
            continue
        rate = row["env_frames"] / row["wall_s"] if row["wall_s"] > 0 else float("nan")
        lines.append(
            f"| {spec.run_id} | {row['iteration']} | {row['env_frames']:,} | {row['wall_s']:.0f} | {rate:,.0f} |"
        )
    return lines


def write_report(out: str | Path, reps: int = 2000) -> Path:
    """Draw the figures and write ``report.md`` for the bench in ``out`` (partial results are marked)."""
    out = Path(out)
    plan = load_plan(out)
    from hindex_sb3.bench.results import collect

    _, damaged = collect(out, plan)
    rows = read_results(out)
    done = sum(run_finished(out, r) and r.run_id not in damaged for r in plan.runs)
    partial = done < len(plan.runs)
    label = "RANDOM ENCODER WEIGHTS (smoke output, not results)" if plan.random_weights else ""
    # every figure title says what the header says: a figure travels without the page it came from
    prefix = " / ".join(x for x in (label, "PARTIAL" if partial else "") if x)
    figs = out / "figures"
    figs.mkdir(exist_ok=True)
    suite = get_suite(plan.suite)
    status = f"PARTIAL RESULTS: {done} of {len(plan.runs)} runs finished" if partial else "complete"
    lines = _header_lines(plan, suite.figure, status, label)
    if damaged:
        lines += ["**Left out (damaged run files; the run counts as unfinished):**", ""]
        lines += [*(f"* {problem}" for problem in damaged.values()), ""]
    lines += _score_section(rows, plan, suite.figure, figs, prefix, reps)
    if rows:
        title = f"{prefix + ' - ' if prefix else ''}learning curves (mean over seeds, 95 % CI)"
        _curves_figure(rows, plan.tasks, plan.methods, figs / "curves.png", title)
        lines += ["## Learning curves (Fig. 4 style)", "", "![learning curves](figures/curves.png)", ""]
    if suite.eval_backgrounds:
        lines += ["## Novel backgrounds (Table 3 style): evaluation success", ""]
        lines += [*_background_table(rows, plan.methods, suite.eval_backgrounds), ""]
    lines += ["## Cost per run", "", *_cost_table(rows, plan), ""]
    path = out / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path


def _header_lines(plan: Plan, figure: str, status: str, label: str) -> list[str]:
    lines = [f"# hindex bench: suite `{plan.suite}` ({figure}), profile `{plan.profile}`", ""]
    if label:
        lines += [f"**{label}**", ""]
    lines.append(
        f"Status: **{status}**. Tasks: {', '.join(plan.tasks)}; methods: {', '.join(plan.methods)}; "
        f"seeds: {', '.join(map(str, plan.seeds))}."
    )
    return [*lines, ""]


def _score_section(rows: list[dict], plan: Plan, figure: str, figs: Path, prefix: str, reps: int) -> list[str]:
    """The normalised-score figure and table (nothing while no run has a final evaluation)."""
    agg = aggregate(normalised_scores(rows, plan.methods, plan.tasks, plan.seeds), reps=reps)
    if not agg:
        return []
    title = f"{prefix + ' - ' if prefix else ''}{figure}: normalised score ({plan.suite})"
    _aggregate_figure(agg, figs / "normalised_score.png", title)
    scales = task_scales(rows)
    shifted = sorted(t for t, (zero, _) in scales.items() if zero != 0.0)
    flat = sorted({r["task"] for r in rows if not r["background"]} - set(scales))
    lines = [
        "## Normalised score (Fig. 1 style)",
        "",
        "Final evaluation return / best return any method reached on the task; mean over tasks and seeds "
        "and interquartile mean, 95 % stratified-bootstrap intervals (rliable)."
        + (
            f" Returns go negative on {', '.join(shifted)}: there the worst return reached is the zero of the "
            "scale, (return - worst) / (best - worst)."
            if shifted
            else ""
        )
        + (f" Left out (every evaluation returned the same, so there is no scale): {', '.join(flat)}." if flat else ""),
        "",
        "![normalised score](figures/normalised_score.png)",
        "",
        "| method | mean | 95 % CI | IQM | 95 % CI | tasks |",
        "|---|---|---|---|---|---|",
    ]
    for m, a in agg.items():
        lines.append(
            f"| {m} | {a['mean']:.3f} | [{a['mean_ci'][0]:.3f}, {a['mean_ci'][1]:.3f}] | {a['iqm']:.3f} "
            f"| [{a['iqm_ci'][0]:.3f}, {a['iqm_ci'][1]:.3f}] | {a['tasks']} |"
        )
    return [*lines, ""]
