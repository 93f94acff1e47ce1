"""Running a plan on Ray: Stage-2 jobs first, runs as soon as their encoder exists, failures retried from checkpoints.

Why Ray core tasks rather than Ray Tune: the runs are a fixed grid (no search), each run already checkpoints and
resumes itself exactly (``hindex train``), and Stage-2 jobs are dependencies of the runs that need them: core tasks
express that with object references, and a retried task simply resumes the run from its last checkpoint, whereas
Tune's trial restore would be a second checkpoint mechanism around ours. Each task declares its CPU/GPU share, so
the same plan runs on a laptop (local Ray, the default) or on a cluster (``address="auto"`` or ``ray://...``).

A worker that dies (killed process, lost node) is a system failure: Ray runs the task again (``max_retries``) and
the run continues from its last checkpoint. A run that raises is a user error (bad weights, bad demos): it is not
retried, and the suite goes on without it. After the driver itself dies, ``run_plan(..., resume=True)`` skips every
finished run and resubmits the rest, which resume from their checkpoints.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hindex_sb3._io import read_json, write_json
from hindex_sb3._validation import check_flag, check_int, check_output_dir, check_real
from hindex_sb3.bench import _runs
from hindex_sb3.bench.plan import BenchError, Plan, RunSpec, checked
from hindex_sb3.bench.results import collect_results, run_dir, run_finished
from hindex_sb3.bench.store import DriverLock, check_plan, save_plan

logger = logging.getLogger(__name__)

Event = Callable[[str, dict[str, Any]], None]


def _set_threads(threads: int) -> None:
    """The plan's thread count (never the CPUs reserved for the task: a resume may reserve others)."""
    import torch

    torch.set_num_threads(threads)


def _adapt_task(task: str, settings: dict[str, Any], job_dir: str, threads: int) -> str:
    _set_threads(threads)  # hindex adapt has no thread setting: the plan records the job's
    return _runs.adapt_run(task, settings, Path(job_dir))


def _train_task(spec: dict[str, Any], env_task: str, out_dir: str, weights: str | None) -> dict:
    """One run, then its background evaluation; a run that finished training but lost its evaluation (the driver
    died between the two files) only evaluates again: the final checkpoint is all the evaluation reads."""
    directory = run_dir(Path(out_dir), spec["run_id"])
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "worker.pid").write_text(str(os.getpid()))  # lets an operator (or a test) find the process
    outputs = _runs.run_outputs(directory)
    if outputs is not None and (outputs / "summary.json").is_file():
        summary = read_json(outputs / "summary.json")
    else:  # the run's config sets its torch threads (torch_threads, recorded in the plan)
        summary = _runs.train_run(env_task, spec["settings"], directory, weights)
    if spec["eval_backgrounds"]:
        _runs.evaluate_backgrounds(directory, env_task, spec["settings"], spec["eval_backgrounds"], weights)
    return summary


def _init_ray(address: str | None, num_cpus: int | None) -> bool:
    """Connect to (or start) Ray; True when this call started it, so that the caller shuts it down again."""
    try:
        import ray
    except ImportError as err:
        raise BenchError("hindex bench needs Ray: pip install 'hindex-sb3[bench]'") from err
    if ray.is_initialized():
        return False
    # Ray's progress-bar helper otherwise replaces builtins.print in this process for good
    os.environ.setdefault("RAY_TQDM_PATCH_PRINT", "0")
    kwargs: dict[str, Any] = {"include_dashboard": False, "configure_logging": False, "log_to_driver": False}
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=num_cpus, **kwargs)
    return True


def _check_resources(cpus: float, gpus: float, local: bool, emit: Event) -> None:
    """A task no node can hold waits forever without a word: refused on a local instance (it cannot grow), announced
    on a cluster (``--address``), whose autoscaler may still add a node that fits."""
    import ray

    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    if any(n.get("CPU", 0.0) >= cpus and n.get("GPU", 0.0) >= gpus for n in nodes):
        return
    if not any(n.get("CPU", 0.0) >= cpus for n in nodes):
        flag, value, unit = "--cpus-per-run", cpus, "CPU"
    else:
        flag, value, unit = "--gpus-per-run", gpus, "GPU"
    total = ray.cluster_resources()
    largest = max((n.get(unit, 0.0) for n in nodes), default=0.0)
    has = (
        f"the Ray cluster has {total.get('CPU', 0.0):g} CPUs and {total.get('GPU', 0.0):g} GPUs in all "
        f"({len(nodes)} node(s), at most {largest:g} {unit}s on one), and a run's task needs one node"
    )
    if local:
        raise BenchError(f"{flag} {value:g}: {has}; lower {flag}")
    message = f"{flag} {value:g}: {has}; the runs wait until a node that fits joins (an autoscaler may add one)"
    logger.warning(message)
    emit("warning", {"message": message})


def run_plan(
    plan: Plan,
    out: str | Path,
    *,
    address: str | None = None,
    cpus_per_run: float = 1.0,
    gpus_per_run: float = 0.0,
    max_retries: int = 3,
    resume: bool = False,
    num_cpus: int | None = None,
    on_event: Event | None = None,
    poll_s: float = 5.0,
) -> dict[str, Any]:
    """Execute ``plan`` into ``out``; returns ``{"finished": [...], "failed": {...}, "skipped": [...]}``.

    ``cpus_per_run`` / ``gpus_per_run`` are what Ray reserves for each task; they do not change a run's numbers
    (its torch threads are the plan's ``torch_threads``). A Ray instance this call starts is shut down at the end,
    also when it is interrupted (``KeyboardInterrupt`` propagates after that).
    """
    # checked before the bench folder is made: Ray would otherwise fail (or, for resume="no", resume) much later
    cpus_per_run = checked(check_real, "cpus_per_run", cpus_per_run, minimum=0.0, min_inclusive=False)
    gpus_per_run = checked(check_real, "gpus_per_run", gpus_per_run, minimum=0.0)
    max_retries = checked(check_int, "max_retries", max_retries, minimum=0)
    resume = checked(check_flag, "resume", resume)
    poll_s = checked(check_real, "poll_s", poll_s, minimum=0.0, min_inclusive=False)
    if num_cpus is not None:
        num_cpus = checked(check_int, "num_cpus", num_cpus, minimum=1)
    checked(check_output_dir, "out", out)  # e.g. a file in the way: one line, not mkdir's traceback
    out = Path(out)
    check_plan(out, plan, resume=resume)  # before Ray starts: a refusal costs nothing
    emit = on_event or (lambda kind, info: logger.info("%s %s", kind, info))
    started = _init_ray(address, num_cpus)
    try:
        _check_resources(cpus_per_run, gpus_per_run, local=address is None, emit=emit)
        out.mkdir(parents=True, exist_ok=True)
        with DriverLock(out):
            plan = save_plan(out, plan, resume=resume)
            return _drive(plan, out, cpus_per_run, gpus_per_run, max_retries, emit, poll_s)
    finally:
        if started:
            import ray

            ray.shutdown()


def _drive(plan: Plan, out: Path, cpus: float, gpus: float, retries: int, emit: Event, poll_s: float) -> dict:
    import ray

    options = {"num_cpus": cpus, "num_gpus": gpus, "max_retries": retries, "retry_exceptions": False}
    adapt_fn = ray.remote(_adapt_task).options(**options)
    train_fn = ray.remote(_train_task).options(**options)
    todo = [r for r in plan.runs if not run_finished(out, r)]
    skipped = [r.run_id for r in plan.runs if r not in todo]
    if skipped:
        emit("skipped", {"runs": skipped})
    adapt_refs = {}
    for job in plan.adapt_jobs:
        if job.supplied or not any(r.adapt == job.key for r in todo):
            continue
        adapt_refs[job.key] = adapt_fn.remote(job.task, job.settings, str(out / "adapt" / job.key), job.torch_threads)
    pending: dict[Any, RunSpec] = {}
    for spec in todo:
        job = plan.adapt_job(spec.adapt)
        weights = adapt_refs.get(spec.adapt) or (job.supplied if job else None)
        ref = train_fn.remote(spec.__dict__ | {}, _runs.canonical_task(spec.task), str(out), weights)
        pending[ref] = spec
    finished, failed = [], {}
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=poll_s)
        for ref in ready:
            spec = pending.pop(ref)
            try:
                ray.get(ref)
                finished.append(spec.run_id)
                emit("finished", {"run": spec.run_id})
            except Exception as err:  # a run's own error: recorded, the suite goes on
                failed[spec.run_id] = _error_text(err)
                emit("failed", {"run": spec.run_id, "error": failed[spec.run_id]})
        collect_results(out, plan)
    status = {"finished": finished, "failed": failed, "skipped": skipped}
    write_json(out / "status.json", status | {"time": time.time()})
    return status


def _error_text(err: BaseException) -> str:
    cause = getattr(err, "cause", None)
    return f"{type(cause or err).__name__}: {cause or err}".strip()[:2000]
