"""Expanding a suite into a plan: the runs, the Stage-2 jobs they share, and what it all costs.

Stage 2 depends on the task and the representation only, so one job per (task, encoder, scope) serves every seed
and method that needs it. A plan is plain data (``plan.json`` in the output folder), so ``--resume`` can check that
it continues the same experiment.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

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


@dataclass(frozen=True)
class AdaptJob:
    """One Stage-2 run, shared by every run of ``task`` whose method adapts ``encoder`` with ``scope``."""

    key: str
    task: str
    encoder: str
    scope: str
    settings: dict[str, Any]
    supplied: str | None = None  # an adapted checkpoint given by the user: no job runs

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
    def from_json(cls, data: dict[str, Any]) -> Plan:
        if data.get("format") != PLAN_FORMAT:
            raise BenchError(f"not a bench plan (format {data.get('format')!r}, expected {PLAN_FORMAT!r})")
        fields = {k: v for k, v in data.items() if k != "format"}
        fields["runs"] = [RunSpec(**{**r, "eval_backgrounds": tuple(r["eval_backgrounds"])}) for r in data["runs"]]
        fields["adapt_jobs"] = [AdaptJob(**a) for a in data["adapt_jobs"]]
        return cls(**fields)

    def adapt_job(self, key: str | None) -> AdaptJob | None:
        return next((j for j in self.adapt_jobs if j.key == key), None)

    def cost(
        self, frames_per_s: float = DEFAULT_FRAMES_PER_S, adapt_its_per_s: float = DEFAULT_ADAPT_ITERATIONS_PER_S
    ) -> dict[str, float]:
        """Frame totals and the estimated GPU-hours at the given throughputs."""
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


def _adapted_file(adapted_dir: str | None, task: str) -> str | None:
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
    adapted_dir: str | None = None,
) -> Plan:
    """The runs of ``suite`` (narrowed or replaced by ``tasks`` / ``methods`` / ``seeds``) at ``profile``."""
    try:
        s, prof = get_suite(suite), get_profile(profile)
        tasks = list(tasks or s.tasks)
        method_objs = [get_method(m) for m in (methods or s.methods)]
    except ValueError as err:
        raise BenchError(str(err)) from err
    seeds = list(s.seeds if seeds is None else seeds)
    _check_unique("task", tasks)
    _check_unique("method", [m.name for m in method_objs])
    _check_unique("seed", seeds)
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise BenchError(f"seeds must be non-negative integers, got {seed!r}")
    canonical = {t: _runs.canonical_task(t) for t in tasks}
    plan = Plan(s.name, prof.name, tasks, [m.name for m in method_objs], seeds, random_weights=prof.random_weights)
    jobs: dict[str, AdaptJob] = {}
    for task in tasks:
        for method in method_objs:
            job = _adapt_job(task, method, prof, adapted_dir) if method.adapt != "none" else None
            if job is not None:
                jobs.setdefault(job.key, job)
            for seed in seeds:
                plan.runs.append(_run_spec(task, canonical[task], method, seed, prof, set_train, job, s))
    plan.adapt_jobs = list(jobs.values())
    return plan


def _check_unique(what: str, items: list) -> None:
    dupes = sorted({str(i) for i in items if items.count(i) > 1})
    if dupes:
        raise BenchError(f"{what} given more than once: {', '.join(dupes)}")


def _adapt_job(task: str, method, prof, adapted_dir: str | None) -> AdaptJob:
    key = f"{task}__{method.encoder}__{method.adapt}"
    # the authors' files are the hand encoder's: they stand in for its BN-scope job only
    supplied = _adapted_file(adapted_dir, task) if (method.adapt, method.encoder) == ("bn", "hindex") else None
    settings = {**prof.adapt, "trainable": method.adapt, "seed": 0}
    if method.encoder != "hindex":  # "hindex" is AdaptConfig's default: plans written before this key stay identical
        settings["encoder"] = method.encoder
    return AdaptJob(key, task, method.encoder, method.adapt, settings, supplied)


def _run_spec(task, env_task, method, seed, prof, set_train, job, suite) -> RunSpec:
    settings: dict[str, Any] = {**prof.train, **(set_train or {}), "encoder": method.encoder, "seed": seed}
    momentum = method.momentum
    if momentum is None and method.encoder != "hindex":  # the H-InDex recipe on another encoder: the paper's m
        momentum = _runs.paper_momentum(env_task)
    if momentum is not None:
        settings["ema_momentum"] = momentum
    resolved = _runs.resolved_settings(env_task, settings)
    eval_frames = resolved["eval_episodes"] * resolved["horizon"] * (resolved["iterations"] // resolved["eval_every"])
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
