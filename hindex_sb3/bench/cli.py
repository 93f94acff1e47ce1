"""``hindex bench``: argument parsing and terminal output only; the work is in :mod:`hindex_sb3.bench`."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from hindex_sb3._validation import check_output_dir
from hindex_sb3.bench.plan import DEFAULT_FRAMES_PER_S, BenchError, Plan, checked, make_plan
from hindex_sb3.bench.profiles import PROFILES
from hindex_sb3.bench.suites import SUITES


def _finite_float(text: str, *, zero: bool) -> float:
    """A flag's number > 0 (or >= 0 with ``zero``), finite. argparse reports a bare ``ValueError`` as "invalid
    _positive_float value", so text that is no number gets the same message as a number out of range."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value >= 0 if zero else value > 0) or value == math.inf:
        sign = "non-negative" if zero else "positive"
        raise argparse.ArgumentTypeError(f"must be a {sign} finite number, got {text}")
    return value


def _positive_float(text: str) -> float:
    return _finite_float(text, zero=False)


def _non_negative_float(text: str) -> float:
    return _finite_float(text, zero=True)


def _set_value(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--set takes key=value, got {text!r}")
    try:
        return key, json.loads(raw)
    except json.JSONDecodeError:
        return key, raw  # a bare string such as scripted or cpu


def _task_source(text: str) -> tuple[str, str]:
    task, sep, source = text.partition("=")
    if not sep or not task or not source:
        raise argparse.ArgumentTypeError(f"--demos takes TASK=SOURCE, got {text!r}")
    return task, source


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="the paper's experiment suites on Ray (hindex bench report DIR redraws a report)",
        description="Plan, run (locally or on a Ray cluster), resume and report the paper's experiment suites.",
    )
    p.add_argument("suite", nargs="?", default="main", help=f"{' | '.join(SUITES)} | report")
    p.add_argument("report_dir", nargs="?", default=None, help="with 'report': the bench folder")
    p.add_argument("--tasks", nargs="+", default=None, help="replace the suite's tasks (door, pour, relocate-mug ...)")
    p.add_argument("--methods", nargs="+", default=None, help="replace the suite's methods (or registered encoders)")
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="default: 0 1 2")
    p.add_argument("--profile", choices=list(PROFILES), default="paper")
    p.add_argument(
        "--set",
        dest="overrides",
        type=_set_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a hindex train setting for every run (JSON value or string)",
    )
    p.add_argument(
        "--demos",
        dest="task_demos",
        type=_task_source,
        nargs="+",
        default=None,
        metavar="TASK=SOURCE",
        help="a task's demonstrations (hindex train --demos: expert:PATH.npz, DEMOS.npz, minari:ID, ...); needed for "
        "tasks without a scripted demonstrator (hammer, pen, pour)",
    )
    p.add_argument("--adapted-dir", default=None, help="authors' adapted checkpoints (<task>.pth): skip Stage 2")
    p.add_argument("--out", default="bench", help="bench folder (plan, runs, results.csv, report.md)")
    p.add_argument("--address", default=None, help="Ray cluster: auto or ray://HOST:PORT (default: local Ray)")
    p.add_argument("--cpus-per-run", type=_positive_float, default=1.0)
    p.add_argument("--gpus-per-run", type=_non_negative_float, default=0.0)
    p.add_argument("--max-retries", type=int, default=3, help="re-runs of a run whose worker died (from checkpoint)")
    p.add_argument("--resume", action="store_true", help="continue the bench in --out after the driver stopped")
    p.add_argument("--dry-run", action="store_true", help="print the plan and its estimated cost; run nothing")
    p.add_argument(
        "--frames-per-s",
        type=_positive_float,
        default=DEFAULT_FRAMES_PER_S,
        help="measured env frames/s per GPU for the estimate (default: an H100's pixel DAPG rate)",
    )
    p.add_argument("--no-report", action="store_true")
    p.set_defaults(func=cmd_bench)


def _print_plan(plan: Plan, frames_per_s: float) -> None:
    print(f"suite {plan.suite}, profile {plan.profile}: {len(plan.runs)} runs")
    print(f"{'run':48s} {'train frames':>14s} {'eval frames':>12s}  stage 2")
    for r in plan.runs:
        print(f"{r.run_id:48s} {r.train_frames:>14,d} {r.eval_frames:>12,d}  {r.adapt or '-'}")
    for job in plan.adapt_jobs:
        what = f"supplied: {job.supplied}" if job.supplied else f"{job.iterations:,} iterations"
        print(f"stage 2 {job.key}: {what}")
    cost = plan.cost(frames_per_s)
    per_method_seed = cost["train_frames"] / max(len(plan.methods) * len(plan.seeds), 1)
    print(
        f"total: {cost['train_frames']:,} training frames ({per_method_seed:,.0f} per method and seed), "
        f"{cost['eval_frames']:,} evaluation frames (novel backgrounds included), {cost['adapt_jobs']} Stage-2 jobs "
        f"({cost['adapt_iterations']:,} iterations)"
    )
    print(f"estimated cost: {cost['gpu_hours']:,.1f} GPU-hours at {frames_per_s:,.0f} env frames/s per GPU")


def cmd_bench(args: argparse.Namespace) -> int:
    from hindex_sb3.bench.report import write_report

    try:
        if args.suite == "report":
            if not args.report_dir:
                raise BenchError("hindex bench report DIR: name the bench folder")
            print(write_report(args.report_dir))
            return 0
        if args.report_dir:
            raise BenchError(f"unexpected argument {args.report_dir!r}")
        if args.max_retries < 0:
            raise BenchError("--max-retries must be >= 0")
        if not args.dry_run:  # before planning: a file named as the bench folder is one line naming --out
            checked(check_output_dir, "--out", args.out)
        saved_runs = _saved_runs(args)
        plan = make_plan(
            args.suite,
            profile=args.profile,
            tasks=args.tasks,
            methods=args.methods,
            seeds=args.seeds,
            set_train=_with_saved_threads(args, saved_runs),
            adapted_dir=args.adapted_dir,
            cpus_per_run=args.cpus_per_run,
            demos=_with_saved_demos(args, saved_runs),
        )
        if args.dry_run:
            _print_plan(plan, args.frames_per_s)
            return 0
        return _run(plan, args, write_report)
    except BenchError as err:
        print(f"hindex bench: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # run_plan has shut Ray down and released the lock; every run resumes from its checkpoint
        print("hindex bench: interrupted; resume with --resume", file=sys.stderr)
        return 130


def _saved_runs(args: argparse.Namespace) -> list | None:
    """The runs of the bench that ``--resume`` continues (read once), or ``None`` when there is none to continue."""
    if not args.resume or args.dry_run or not (Path(args.out) / "plan.json").is_file():
        return None
    from hindex_sb3.bench.store import load_plan

    return load_plan(Path(args.out)).runs


def _with_saved_threads(args: argparse.Namespace, saved_runs: list | None) -> dict[str, Any]:
    """The ``--set`` values, plus the saved plan's torch threads when resuming without ``--set torch_threads``: the
    default follows ``--cpus-per-run`` when a bench starts, and a resume that reserves other CPUs must not change the
    runs' numbers (nor be refused for it)."""
    overrides = dict(args.overrides)
    if saved_runs is None or "torch_threads" in overrides:
        return overrides
    saved = {r.settings.get("torch_threads") for r in saved_runs}
    if len(saved) == 1 and None not in saved:  # the plan's threads (a plan before torch_threads: the diff says so)
        overrides["torch_threads"] = saved.pop()
    return overrides


def _with_saved_demos(args: argparse.Namespace, saved_runs: list | None) -> dict[str, str] | None:
    """``--demos``; when resuming without ``--demos`` or ``--set demos``, each task's source from the saved plan, so
    a resume repeats nothing but the command's name and folder."""
    if args.task_demos is not None:
        tasks = [task for task, _ in args.task_demos]
        if len(set(tasks)) < len(tasks):  # dict() would keep the last silently
            raise BenchError(f"--demos names a task more than once: {' '.join(tasks)}")
        return dict(args.task_demos)
    if saved_runs is None or "demos" in dict(args.overrides):
        return None
    from hindex_sb3.bench._runs import canonical_task
    from hindex_sb3.bench.suites import get_suite

    try:
        asked = args.tasks or get_suite(args.suite).tasks
    except ValueError:  # an unknown suite: make_plan names it
        return None
    asked = {canonical_task(t) for t in asked}  # the saved plan's other tasks: the resume's diff names them
    saved = {run.task: run.settings.get("demos") for run in saved_runs}
    return {task: demos for task, demos in saved.items() if isinstance(demos, str) and canonical_task(task) in asked}


def _run(plan: Plan, args: argparse.Namespace, write_report) -> int:
    from hindex_sb3.bench.scheduler import run_plan

    start, total = time.perf_counter(), len(plan.runs)
    done = [0]

    def on_event(kind: str, info: dict[str, Any]) -> None:
        if kind == "skipped":
            done[0] += len(info["runs"])
            print(f"already finished: {len(info['runs'])} runs")
        elif kind == "finished":
            done[0] += 1
            print(f"[{done[0]}/{total}] finished {info['run']} ({time.perf_counter() - start:.0f} s)", flush=True)
        elif kind == "failed":
            print(f"FAILED {info['run']}: {info['error']}", file=sys.stderr, flush=True)
        elif kind == "warning":
            print(f"hindex bench: {info['message']}", file=sys.stderr, flush=True)

    status = run_plan(
        plan,
        args.out,
        address=args.address,
        cpus_per_run=args.cpus_per_run,
        gpus_per_run=args.gpus_per_run,
        max_retries=args.max_retries,
        resume=args.resume,
        on_event=on_event,
    )
    if not args.no_report:
        print(f"report: {write_report(Path(args.out))}")
    print(
        f"{len(status['finished']) + len(status['skipped'])} of {total} runs finished, {len(status['failed'])} "
        f"failed, {time.perf_counter() - start:.0f} s"
    )
    return 1 if status["failed"] else 0
