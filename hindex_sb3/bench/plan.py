"""Expanding a suite into a plan: the runs, the Stage-2 jobs they share, and what it all costs.

Stage 2 depends on the task and the representation only, so one job per (task, encoder, scope) serves every seed
and method that needs it. A plan is plain data (``plan.json`` in the output folder), so ``--resume`` can check that
it continues the same experiment.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hindex_sb3._validation import check_int, check_real, check_str
from hindex_sb3.bench import _runs
from hindex_sb3.bench.methods import get_method
from hindex_sb3.bench.profiles import get_profile
from hindex_sb3.bench.suites import get_suite

PLAN_FORMAT = "hindex_sb3.bench.plan/1"
#: Env frames per second of a whole pixel DAPG iteration on one GPU, the default for cost estimates: an H100 with 16
#: env worker processes and CUDA-graph encoding rolled out 3,200 frames in 2.3-2.5 s (docs/benchmarks.md);
#: ``--frames-per-s`` replaces it with a number measured on your machine.
DEFAULT_FRAMES_PER_S = 1_400.0
#: Stage-2 iterations per second on one GPU (H100, fp32, batch 8 at 224 px: 21.5 it/s, docs/benchmarks.md)
DEFAULT_ADAPT_ITERATIONS_PER_S = 21.5


class BenchError(ValueError):
    """A problem with the requested suite the user can fix; the CLI prints it without a traceback."""


#: ``hindex train`` settings the plan gives each run itself: a ``set_train`` value for one would be silently replaced
#: (the run folder and its resumption belong to the bench), so it is refused with what to use instead
PLAN_SETTINGS = {
    "task": "--tasks",
    "seed": "--seeds",
    "encoder": "--methods",
    "out_dir": "--out",
    "resume": "--resume",
    "overwrite": "--resume",
    "progress_bar": None,
}


def checked(check: Callable[..., Any], name: str, value: Any, **bounds: Any) -> Any:
    """``check(name, value, **bounds)`` with its error as a :class:`BenchError`, which the CLI prints in one line
    (an ``OSError`` too: ``check_output_dir`` reports a file in the way as ``NotADirectoryError``)."""
    try:
        return check(name, value, **bounds)
    except (TypeError, ValueError, OSError) as err:
        raise BenchError(str(err)) from None


@dataclass(frozen=True)
class AdaptJob:
    """One Stage-2 run, shared by every run of ``task`` whose method adapts ``encoder`` with ``scope``."""

    key: str
    task: str
    encoder: str
    scope: str
    settings: dict[str, Any]
    supplied: str | None = None  # an adapted checkpoint given by the user: no job runs
    #: torch CPU threads of the job: on the CPU its numbers depend on them, so the plan records them (the runs'
    #: ``torch_threads``) rather than taking whatever CPUs the scheduler reserves (``hindex adapt`` has no such setting)
    torch_threads: int = 1

    @property
    def iterations(self) -> int:
        return 0 if self.supplied else int(self.settings.get("iterations", 0))


@dataclass(frozen=True)
class RunSpec:
    """One training run: ``settings`` are ``hindex train`` overrides; the adapted encoder arrives from ``adapt``."""

    run_id: str
    task: str
    method: str
    seed: int
    settings: dict[str, Any]
    adapt: str | None = None  # AdaptJob.key
    eval_backgrounds: tuple[str, ...] = ()
    train_frames: int = 0
    eval_frames: int = 0


@dataclass
class Plan:
    suite: str
    profile: str
    tasks: list[str]
    methods: list[str]
    seeds: list[int]
    runs: list[RunSpec] = field(default_factory=list)
    adapt_jobs: list[AdaptJob] = field(default_factory=list)
    random_weights: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"format": PLAN_FORMAT, **asdict(self)}

    @classmethod
    def from_json(cls, data: Any) -> Plan:
        """The plan in ``data`` (plan.json); anything else is a :class:`BenchError` naming the entry that is wrong."""
        if not isinstance(data, dict):
            raise BenchError(f"not a bench plan (a JSON {type(data).__name__}, expected an object)")
        if data.get("format") != PLAN_FORMAT:
            raise BenchError(f"not a bench plan (format {data.get('format')!r}, expected {PLAN_FORMAT!r})")
        fields = _checked_fields("plan", {k: v for k, v in data.items() if k != "format"}, _PLAN_FIELDS)
        fields["runs"] = [
            RunSpec(**_checked_fields(f"runs[{i}]", r, _RUN_FIELDS)) for i, r in enumerate(_entries(data, "runs"))
        ]
        fields["adapt_jobs"] = [
            AdaptJob(**_checked_fields(f"adapt_jobs[{i}]", a, _JOB_FIELDS))
            for i, a in enumerate(_entries(data, "adapt_jobs"))
        ]
        return cls(**fields)

    def adapt_job(self, key: str | None) -> AdaptJob | None:
        return next((j for j in self.adapt_jobs if j.key == key), None)

    def cost(
        self, frames_per_s: float = DEFAULT_FRAMES_PER_S, adapt_its_per_s: float = DEFAULT_ADAPT_ITERATIONS_PER_S
    ) -> dict[str, float]:
        """Frame totals and the estimated GPU-hours at the given throughputs."""
        # zero, negative or NaN throughput would give a division error or a meaningless (NaN, negative) cost
        frames_per_s = checked(check_real, "frames_per_s", frames_per_s, minimum=0.0, min_inclusive=False)
        adapt_its_per_s = checked(check_real, "adapt_its_per_s", adapt_its_per_s, minimum=0.0, min_inclusive=False)
        train = sum(r.train_frames for r in self.runs)
        evaluation = sum(r.eval_frames for r in self.runs)
        adapt_its = sum(j.iterations for j in self.adapt_jobs)
        hours = (train + evaluation) / frames_per_s / 3600 + adapt_its / adapt_its_per_s / 3600
        return {
            "runs": len(self.runs),
            "adapt_jobs": sum(1 for j in self.adapt_jobs if not j.supplied),
            "train_frames": train,
            "eval_frames": evaluation,
            "adapt_iterations": adapt_its,
            "gpu_hours": hours,
        }


_STR, _INT, _BOOL, _DICT, _LIST = str, int, bool, dict, list
_OPT_STR = (str, type(None))
#: (types, required) of each field in plan.json
_PLAN_FIELDS = {
    "suite": (_STR, True), "profile": (_STR, True), "tasks": (_LIST, True), "methods": (_LIST, True),
    "seeds": (_LIST, True), "runs": (_LIST, True), "adapt_jobs": (_LIST, True), "random_weights": (_BOOL, False),
}  # fmt: skip
_RUN_FIELDS = {
    "run_id": (_STR, True), "task": (_STR, True), "method": (_STR, True), "seed": (_INT, True),
    "settings": (_DICT, True), "adapt": (_OPT_STR, False), "eval_backgrounds": (_LIST, False),
    "train_frames": (_INT, False), "eval_frames": (_INT, False),
}  # fmt: skip
_JOB_FIELDS = {
    "key": (_STR, True), "task": (_STR, True), "encoder": (_STR, True), "scope": (_STR, True),
    "settings": (_DICT, True), "supplied": (_OPT_STR, False), "torch_threads": (_INT, False),
}  # fmt: skip


def _entries(data: dict[str, Any], key: str) -> list[Any]:
    return list(data[key])  # checked to be a list by _checked_fields


def _checked_fields(where: str, entry: Any, spec: dict[str, tuple[Any, bool]]) -> dict[str, Any]:
    """``entry`` as constructor keywords, after checking it is an object with the fields of ``spec`` and their types:
    a damaged plan.json is one message naming the entry (``runs[3]: no 'seed'``), not a ``TypeError`` later."""
    if not isinstance(entry, dict):
        raise BenchError(f"{where} is a JSON {type(entry).__name__}, expected an object")
    unknown = sorted(set(entry) - set(spec))
    if unknown:
        raise BenchError(f"{where} has unknown field(s) {', '.join(map(repr, unknown))}")
    for name, (types, required) in spec.items():
        if name not in entry:
            if required:
                raise BenchError(f"{where} has no {name!r}")
            continue
        value = entry[name]
        wrong_bool = isinstance(value, bool) and types is not bool
        if wrong_bool or not isinstance(value, types):
            raise BenchError(f"{where}.{name} is {value!r} ({type(value).__name__}), which is not a valid {name}")
    fields = dict(entry)
    if "eval_backgrounds" in fields:
        fields["eval_backgrounds"] = tuple(fields["eval_backgrounds"])
    return fields


def _adapted_file(adapted_dir: str | os.PathLike | None, task: str) -> str | None:
    """The authors' adapted checkpoint for ``task`` (``door-v0.pth``, ``pour.pth``, ``relocate-mug.pth``)."""
    if not adapted_dir:
        return None
    for name in (f"{task}.pth", f"{task}-v0.pth"):
        path = Path(adapted_dir) / name
        if path.is_file():
            return str(path)
    return None


def make_plan(
    suite: str = "main",
    *,
    profile: str = "paper",
    tasks: list[str] | None = None,
    methods: list[str] | None = None,
    seeds: list[int] | None = None,
    set_train: dict[str, Any] | None = None,
    adapted_dir: str | os.PathLike | None = None,
    cpus_per_run: float = 1.0,
    demos: Mapping[str, str] | None = None,
) -> Plan:
    """The runs of ``suite`` (narrowed or replaced by ``tasks`` / ``methods`` / ``seeds``) at ``profile``.

    ``None`` takes the suite's own tasks, methods or seeds; an empty list is refused rather than read as "all".
    Every run (and Stage-2 job) records its torch CPU threads, ``set_train["torch_threads"]`` or else
    ``int(cpus_per_run)`` (at least 1): on the CPU a run's numbers depend on them, so they belong to its settings
    (plan.json, the run's config.json) and not to the CPUs a later ``--resume`` happens to reserve.

    ``demos`` maps tasks to their demonstration source (``hindex train --demos``), over ``set_train["demos"]`` and the
    profile's: tasks without a scripted demonstrator need one, and a plan that would start them with ``scripted`` is
    refused here rather than failing at each run's start.
    """
    tasks, methods, seeds = _as_list("tasks", tasks), _as_list("methods", methods), _as_list("seeds", seeds)
    _check_set_train(set_train)
    _check_adapted_dir(adapted_dir)
    cpus_per_run = checked(check_real, "cpus_per_run", cpus_per_run, minimum=0.0, min_inclusive=False)
    threads = (set_train or {}).get("torch_threads", max(int(cpus_per_run), 1))
    # 0 would mean "torch's default" (the machine's cores): numbers that depend on the worker it lands on
    threads = checked(check_int, "torch_threads", threads, minimum=1)
    set_train = {**(set_train or {}), "torch_threads": threads}
    try:
        s, prof = get_suite(suite), get_profile(profile)
        tasks = list(s.tasks if tasks is None else tasks)
        method_objs = [get_method(m) for m in (s.methods if methods is None else methods)]
    except ValueError as err:
        raise BenchError(str(err)) from err
    seeds = [checked(check_int, "seeds", seed, minimum=0) for seed in (s.seeds if seeds is None else seeds)]
    canonical = {t: _runs.canonical_task(t) for t in tasks}
    _check_unique("task", tasks, key=canonical.get)  # door and Door are one task: its runs would be planned twice
    _check_unique("method", [m.name for m in method_objs])
    _check_unique("seed", seeds)
    task_demos = _task_demos(demos, canonical)
    run_sets = {
        t: {**set_train, **({"demos": task_demos[canonical[t]]} if canonical[t] in task_demos else {})} for t in tasks
    }
    _check_demonstrators({t: _runs.run_demos(canonical[t], {**prof.train, **run_sets[t]}) for t in tasks}, canonical)
    plan = Plan(s.name, prof.name, tasks, [m.name for m in method_objs], seeds, random_weights=prof.random_weights)
    jobs: dict[str, AdaptJob] = {}
    for task in tasks:
        for method in method_objs:
            job = _adapt_job(task, method, prof, adapted_dir, threads) if method.adapt != "none" else None
            if job is not None:
                jobs.setdefault(job.key, job)
            for seed in seeds:
                plan.runs.append(_run_spec(task, canonical[task], method, seed, prof, run_sets[task], job, s))
    plan.adapt_jobs = list(jobs.values())
    return plan


def _as_list(name: str, value: Any) -> list | None:
    """A string would be read as a list of one-letter names, and an empty list is no experiment."""
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(f"{name} must be a list, got {value!r} ({type(value).__name__})")
    items = list(value)
    if not items:
        raise BenchError(f"{name} must not be empty (leave it out for the suite's own {name})")
    return items


def _task_demos(demos: Mapping[str, str] | None, canonical: dict[str, str]) -> dict[str, str]:
    """``demos`` keyed by env id, each task one of the plan's and each source a non-empty string."""
    if demos is None:
        return {}
    if not isinstance(demos, Mapping):
        raise TypeError(f"demos must map tasks to demonstration sources, got {type(demos).__name__}")
    by_env: dict[str, str] = {}
    for task, source in demos.items():
        env_id = _runs.canonical_task(checked(check_str, "demos", task))
        if env_id not in canonical.values():
            raise BenchError(f"--demos {task}: not one of this bench's tasks ({', '.join(canonical)})")
        if env_id in by_env:
            raise BenchError(f"--demos {task}: given more than once")
        by_env[env_id] = checked(check_str, f"--demos {task}", source)
    return by_env


def _check_demonstrators(sources: dict[str, str], canonical: dict[str, str]) -> None:
    """Refuse tasks whose runs would start with ``scripted`` demonstrations but have no scripted demonstrator."""
    try:
        from hindex_sb3.demonstrators import available_demonstrators

        scripted = set(available_demonstrators())
    except ImportError:
        scripted = set()
    lacking = [t for t, source in sources.items() if source == "scripted" and canonical[t] not in scripted]
    if lacking:
        raise BenchError(
            f"{', '.join(lacking)}: no scripted demonstrator, and their runs would use scripted demonstrations (the "
            f"default); give theirs with --demos {lacking[0]}=expert:EXPERT.npz (or DEMOS.npz, DEMOS.pickle, "
            "minari:ID), one TASK=SOURCE per task, or leave them out with --tasks"
        )


def _check_set_train(set_train: Any) -> None:
    """The plan sets some settings per run; a value given for one of them would be silently replaced."""
    if set_train is None:
        return
    if not isinstance(set_train, Mapping):
        raise TypeError(f"set_train must be a dict of hindex train settings, got {type(set_train).__name__}")
    for key in set_train:
        if key in PLAN_SETTINGS:
            hint = PLAN_SETTINGS[key]
            use = f"; use {hint} instead" if hint else ""
            raise BenchError(f"--set {key}: the bench sets {key} for each run itself{use}")


def _check_adapted_dir(adapted_dir: Any) -> None:
    """A mistyped folder would otherwise run every Stage-2 job the user meant to skip."""
    if adapted_dir is None:
        return
    if not isinstance(adapted_dir, (str, os.PathLike)):
        raise TypeError(f"adapted_dir must be a folder path, got {adapted_dir!r} ({type(adapted_dir).__name__})")
    if not str(adapted_dir).strip():  # "" would resolve to the current folder
        raise BenchError("--adapted-dir is empty: give the folder of earlier Stage-2 checkpoints, or leave it out")
    if not Path(adapted_dir).is_dir():
        raise BenchError(f"--adapted-dir {str(adapted_dir)!r}: no such folder")


def _check_unique(what: str, items: list, key: Callable[[Any], Any] | None = None) -> None:
    keys = [key(i) for i in items] if key else items
    dupes = sorted({str(i) for i, k in zip(items, keys, strict=True) if keys.count(k) > 1})
    if dupes:
        raise BenchError(f"{what} given more than once: {', '.join(dupes)}")


def _adapt_job(task: str, method, prof, adapted_dir: str | os.PathLike | None, threads: int) -> AdaptJob:
    key = f"{task}__{method.encoder}__{method.adapt}"
    # the authors' files are the hand encoder's: they stand in for its BN-scope job only
    supplied = _adapted_file(adapted_dir, task) if (method.adapt, method.encoder) == ("bn", "hindex") else None
    settings = {**prof.adapt, "trainable": method.adapt, "seed": 0}
    if method.encoder != "hindex":  # "hindex" is AdaptConfig's default: plans written before this key stay identical
        settings["encoder"] = method.encoder
    return AdaptJob(key, task, method.encoder, method.adapt, settings, supplied, threads)


def _run_spec(task, env_task, method, seed, prof, set_train, job, suite) -> RunSpec:
    settings: dict[str, Any] = {**prof.train, **(set_train or {}), "encoder": method.encoder, "seed": seed}
    momentum = method.momentum
    if momentum is None and method.encoder != "hindex":  # the H-InDex recipe on another encoder: the paper's m
        momentum = _runs.paper_momentum(env_task)
    if momentum is not None and "ema_momentum" in (set_train or {}):  # the method's momentum would replace it
        raise BenchError(
            f"--set ema_momentum: method {method.name!r} sets its own momentum ({momentum}); "
            "use --methods hindex-m<momentum> instead"
        )
    if momentum is not None:
        settings["ema_momentum"] = momentum
    resolved = _runs.resolved_settings(env_task, settings)
    evaluations = resolved["iterations"] // resolved["eval_every"] + len(suite.eval_backgrounds)  # + Table 3's
    eval_frames = resolved["eval_episodes"] * resolved["horizon"] * evaluations
    return RunSpec(
        run_id=f"{task}__{method.name}__s{seed}",
        task=task,
        method=method.name,
        seed=seed,
        settings=settings,
        adapt=job.key if job is not None else None,
        eval_backgrounds=suite.eval_backgrounds,
        train_frames=resolved["iterations"] * resolved["trajectories"] * resolved["horizon"],
        eval_frames=eval_frames,
    )
