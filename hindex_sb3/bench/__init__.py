"""``hindex bench``: the paper's experiment suite (tasks x methods x seeds) as one command, on Ray.

A *method* is a recipe (representation + Stage 2 scope + Stage 3 momentum, :mod:`.methods`); a *suite* names one of
the paper's comparisons (:mod:`.suites`); a *profile* sets the budget per task (:mod:`.profiles`). :func:`make_plan`
expands them into runs and the Stage-2 jobs they share, :func:`run_plan` executes the plan on Ray (each run is one
``hindex train`` run, resumed from its checkpoint after a failure), :mod:`.results` keeps the tidy table and
:mod:`.report` draws the figures::

    from hindex_sb3.bench import make_plan, run_plan, write_report
    plan = make_plan("main", profile="smoke", tasks=["door"], seeds=[0])
    run_plan(plan, "bench_out")
    write_report("bench_out")
"""

from hindex_sb3.bench.methods import Method, get_method, method_names
from hindex_sb3.bench.plan import AdaptJob, BenchError, Plan, RunSpec, make_plan
from hindex_sb3.bench.profiles import PROFILES, Profile
from hindex_sb3.bench.report import write_report
from hindex_sb3.bench.results import collect_results
from hindex_sb3.bench.scheduler import run_plan
from hindex_sb3.bench.suites import SUITES, Suite

__all__ = [
    "PROFILES",
    "SUITES",
    "AdaptJob",
    "BenchError",
    "Method",
    "Plan",
    "Profile",
    "RunSpec",
    "Suite",
    "collect_results",
    "get_method",
    "make_plan",
    "method_names",
    "run_plan",
    "write_report",
]
