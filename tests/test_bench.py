"""hindex bench without Ray: planning, the dry run, bad input, the results table and the report's numbers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from hindex_sb3.bench import BenchError, get_method, make_plan
from hindex_sb3.bench.report import normalised_scores, write_report
from hindex_sb3.bench.results import collect_results
from hindex_sb3.bench.store import save_plan
from hindex_sb3.cli import main


def test_methods_cover_the_papers_recipes():
    assert (get_method("hindex").adapt, get_method("hindex").momentum) == ("bn", None)
    assert (get_method("frankmocap").adapt, get_method("frankmocap").momentum) == ("none", 0.0)
    assert get_method("hindex-no-ema").momentum == 0.0
    assert get_method("hindex-full-adapt").adapt == "all"
    assert get_method("hindex-m0.01").momentum == 0.01
    assert get_method("r3m").encoder == "r3m"
    with pytest.raises(ValueError, match="hindex-m2"):
        get_method("hindex-m2")
    with pytest.raises(ValueError, match="nope"):
        get_method("nope")


def test_main_suite_plan_shares_stage2_between_seeds():
    plan = make_plan("main", profile="smoke")
    assert len(plan.runs) == 12 * 5 * 3
    assert len(plan.adapt_jobs) == 12  # one Stage-2 job per task for hindex, shared by its three seeds
    hindex_runs = [r for r in plan.runs if r.method == "hindex"]
    assert {r.adapt for r in hindex_runs} == {j.key for j in plan.adapt_jobs}
    assert all(r.adapt is None for r in plan.runs if r.method != "hindex")
    assert len({r.run_id for r in plan.runs}) == len(plan.runs)


def test_suites_compose_with_tasks_methods_seeds():
    plan = make_plan("momentum", profile="smoke", tasks=["hammer"], seeds=[4])
    assert [r.method for r in plan.runs] == ["hindex-m0", "hindex-m0.1", "hindex-m0.01", "hindex-m0.001"]
    assert [r.settings["ema_momentum"] for r in plan.runs] == [0.0, 0.1, 0.01, 0.001]
    assert len(plan.adapt_jobs) == 1  # the four momenta share hammer's Stage 2
    assert make_plan("background", profile="smoke").runs[0].eval_backgrounds


def test_supplied_adapted_checkpoints_replace_stage2(tmp_path):
    (tmp_path / "door-v0.pth").write_bytes(b"x")
    plan = make_plan("main", profile="smoke", tasks=["door", "pen"], methods=["hindex"], adapted_dir=str(tmp_path))
    jobs = {j.task: j for j in plan.adapt_jobs}
    assert jobs["door"].supplied == str(tmp_path / "door-v0.pth") and jobs["door"].iterations == 0
    assert jobs["pen"].supplied is None


def test_any_batchnorm_encoder_takes_the_hindex_recipe(tmp_path):
    """``<encoder>+bn``: Stage 2 on that encoder (its own job), EMA-BN at the paper's momentum; never the authors'
    hand-encoder files."""
    (tmp_path / "door-v0.pth").write_bytes(b"x")
    method = get_method("rrl+all")
    assert (method.encoder, method.adapt, method.momentum) == ("rrl", "all", None)
    plan = make_plan("main", profile="smoke", tasks=["door"], methods=["hindex", "rrl+bn"], adapted_dir=str(tmp_path))
    jobs = {j.encoder: j for j in plan.adapt_jobs}
    assert jobs["rrl"].settings["encoder"] == "rrl" and jobs["rrl"].supplied is None
    assert "encoder" not in jobs["hindex"].settings and jobs["hindex"].supplied == str(tmp_path / "door-v0.pth")
    runs = {r.method: r for r in plan.runs}
    assert runs["rrl+bn"].adapt == jobs["rrl"].key and runs["rrl+bn"].settings["encoder"] == "rrl"
    assert "ema_momentum" not in runs["hindex"].settings  # hindex train fills in the paper's value itself
    assert runs["rrl+bn"].settings["ema_momentum"] == 0.0  # the paper's door momentum (runs/paper/door.json)
    hammer = make_plan("main", profile="smoke", tasks=["hammer"], methods=["rrl+bn"]).runs[0]
    assert hammer.settings["ema_momentum"] == 0.1  # the paper's hammer momentum: the recipe follows the task
    with pytest.raises(ValueError, match="'mvp' \\(vit\\) has no BatchNorm"):
        get_method("mvp+bn")
    with pytest.raises(ValueError, match="unknown encoder 'nope'"):
        get_method("nope+bn")


def test_stage2_job_adapts_the_methods_encoder(tmp_path):
    import tiny_encoder

    from hindex_sb3.bench import _runs
    from hindex_sb3.encoders import read_adapted_checkpoint

    settings = {
        "encoder": tiny_encoder.NAME, "episodes": 1, "iterations": 2, "batch_size": 2, "image_size": 32,
        "max_steps": 3, "policy": "random", "weights": "random", "vgg_weights": "random", "calibrate_batches": 0,
        "checkpoint_every": 0, "figures": False,
    }  # fmt: skip
    path = _runs.adapt_run("door", settings, tmp_path / "job")
    state, provenance = read_adapted_checkpoint(path)
    assert provenance["encoder"] == tiny_encoder.NAME and set(state) == set(tiny_encoder._builder().state_dict())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"suite": "mian"}, "mian"),
        ({"methods": ["hindex", "hindex"]}, "hindex"),
        ({"seeds": [0, 0]}, "seed"),
        ({"seeds": [True]}, "True"),
        ({"seeds": [-1]}, "-1"),
        ({"tasks": ["doorr"]}, "doorr"),
        ({"set_train": {"no_such_setting": 1}}, "no_such_setting"),
    ],
)
def test_bad_plans_name_the_input(kwargs, message):
    suite = kwargs.pop("suite", "main")
    with pytest.raises(BenchError, match=message):
        make_plan(suite, profile="smoke", tasks=kwargs.pop("tasks", ["door"]), **kwargs)


def test_dry_run_prints_the_plan_and_cost(capsys):
    assert main(["bench", "main", "--profile", "smoke", "--tasks", "door", "--seeds", "0", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "door__hindex__s0" in out and "GPU-hours" in out and "Stage-2" in out


@pytest.mark.parametrize(
    "argv",
    [
        ["bench", "nosuch", "--dry-run"],
        ["bench", "main", "--methods", "nosuch", "--dry-run"],
        ["bench", "report"],
        ["bench", "report", "/nonexistent/bench"],
    ],
)
def test_bench_command_refuses_without_traceback(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("hindex bench:") and "Traceback" not in err


def test_plan_is_never_clobbered_and_resume_must_match(tmp_path):
    plan = make_plan("main", profile="smoke", tasks=["door"], methods=["rrl"], seeds=[0])
    save_plan(tmp_path, plan, resume=False)
    with pytest.raises(BenchError, match="--resume"):
        save_plan(tmp_path, plan, resume=False)
    assert save_plan(tmp_path, plan, resume=True).to_json() == plan.to_json()
    other = make_plan("main", profile="smoke", tasks=["door"], methods=["rrl"], seeds=[1])
    with pytest.raises(BenchError, match="seeds"):
        save_plan(tmp_path, other, resume=True)


def _fake_run(out: Path, run_id: str, returns: list[float], finished: bool = True) -> None:
    """A run folder as the runner writes it: curve.json (and summary.json once finished)."""
    from hindex_sb3.bench import _runs

    folder = out / "runs" / run_id / "outputs"
    folder.mkdir(parents=True)
    curve = [
        {"iteration": i, "env_steps": 100 * i, "eval_return": r, "eval_success": float(r > 50), "wall_s": 2.0}
        for i, r in enumerate(returns)
    ]
    (folder / "curve.json").write_text(json.dumps(curve))
    if finished:
        (folder / "summary.json").write_text("{}")
    assert _runs.run_outputs(out / "runs" / run_id) == folder


def test_results_table_and_report_numbers(tmp_path):
    plan = make_plan("main", profile="smoke", tasks=["door", "pen"], methods=["hindex", "rrl"], seeds=[0, 1])
    save_plan(tmp_path, plan, resume=False)
    finals = {("door", "hindex"): [80, 100], ("door", "rrl"): [40, 60], ("pen", "hindex"): [10, 30],
              ("pen", "rrl"): [20, 40]}  # fmt: skip
    for (task, method), values in finals.items():
        for seed, final in enumerate(values):
            _fake_run(tmp_path, f"{task}__{method}__s{seed}", [0.0, final / 2, final])
    rows = collect_results(tmp_path, plan)
    assert len(rows) == 8 * 3 and len({(r["task"], r["method"], r["seed"], r["iteration"]) for r in rows}) == 24
    assert [r["wall_s"] for r in rows[:3]] == [2.0, 4.0, 6.0]  # cumulative wall time
    scores = normalised_scores(rows, ["hindex", "rrl"], ["door", "pen"], [0, 1])
    # the best return reached on door is 100, on pen 40: score = final / best
    np.testing.assert_allclose(scores["hindex"], [[0.8, 0.25], [1.0, 0.75]])
    np.testing.assert_allclose(scores["rrl"], [[0.4, 0.5], [0.6, 1.0]])
    report = write_report(tmp_path, reps=200).read_text()
    line = next(x for x in report.splitlines() if x.startswith("| hindex |"))
    assert math.isclose(float(line.split("|")[2]), np.mean([0.8, 0.25, 1.0, 0.75]), abs_tol=1e-3)
    assert "PARTIAL" not in report and "RANDOM ENCODER WEIGHTS" in report
    assert (tmp_path / "figures" / "normalised_score.png").stat().st_size > 1000
    assert (tmp_path / "figures" / "curves.png").stat().st_size > 1000


def test_partial_report_is_marked(tmp_path):
    plan = make_plan("main", profile="smoke", tasks=["door"], methods=["rrl"], seeds=[0, 1])
    save_plan(tmp_path, plan, resume=False)
    _fake_run(tmp_path, "door__rrl__s0", [1.0, 2.0])
    _fake_run(tmp_path, "door__rrl__s1", [1.0], finished=False)
    report = write_report(tmp_path, reps=100).read_text()
    assert "PARTIAL RESULTS: 1 of 2 runs finished" in report


def test_negative_returns_use_the_worst_as_zero(tmp_path):
    plan = make_plan("main", profile="smoke", tasks=["door"], methods=["hindex", "rrl"], seeds=[0])
    rows = [
        {"task": "door", "method": m, "seed": 0, "iteration": 1, "eval_return": r, "background": ""}
        for m, r in (("hindex", -10.0), ("rrl", -30.0))
    ]
    scores = normalised_scores(rows, plan.methods, ["door"], [0])
    assert scores["hindex"][0, 0] == 1.0 and scores["rrl"][0, 0] == 0.0
