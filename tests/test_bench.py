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


def _experts(folder: Path, tasks: tuple[str, ...] = ("hammer", "pen", "pour")) -> dict[str, str]:
    """Demonstration sources for the tasks without a scripted demonstrator (planning checks only that they exist)."""
    for task in tasks:
        (folder / f"{task}-expert.npz").write_bytes(b"x")
    return {task: f"expert:{folder / f'{task}-expert.npz'}" for task in tasks}


def test_main_suite_plan_shares_stage2_between_seeds(tmp_path):
    with pytest.raises(BenchError, match=r"hammer, pen, pour: no scripted demonstrator.*--demos hammer=expert:"):
        make_plan("main", profile="smoke")  # refused when planned, not when each of their runs starts
    plan = make_plan("main", profile="smoke", demos=_experts(tmp_path))
    assert {r.settings["demos"] for r in plan.runs if r.task == "pen"} == {f"expert:{tmp_path / 'pen-expert.npz'}"}
    assert {r.settings["demos"] for r in plan.runs if r.task == "door"} == {"scripted"}
    assert len(plan.runs) == 12 * 5 * 3
    assert len(plan.adapt_jobs) == 12  # one Stage-2 job per task for hindex, shared by its three seeds
    hindex_runs = [r for r in plan.runs if r.method == "hindex"]
    assert {r.adapt for r in hindex_runs} == {j.key for j in plan.adapt_jobs}
    assert all(r.adapt is None for r in plan.runs if r.method != "hindex")
    assert len({r.run_id for r in plan.runs}) == len(plan.runs)


def test_suites_compose_with_tasks_methods_seeds(tmp_path):
    plan = make_plan("momentum", profile="smoke", tasks=["hammer"], seeds=[4], demos=_experts(tmp_path, ("hammer",)))
    assert [r.method for r in plan.runs] == ["hindex-m0", "hindex-m0.1", "hindex-m0.01", "hindex-m0.001"]
    assert [r.settings["ema_momentum"] for r in plan.runs] == [0.0, 0.1, 0.01, 0.001]
    assert len(plan.adapt_jobs) == 1  # the four momenta share hammer's Stage 2
    assert make_plan("background", profile="smoke").runs[0].eval_backgrounds


def test_supplied_adapted_checkpoints_replace_stage2(tmp_path):
    (tmp_path / "door-v0.pth").write_bytes(b"x")
    plan = make_plan(
        "main", profile="smoke", tasks=["door", "pen"], methods=["hindex"], adapted_dir=str(tmp_path),
        demos=_experts(tmp_path, ("pen",)),
    )  # fmt: skip
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
    hammer = make_plan(
        "main", profile="smoke", tasks=["hammer"], methods=["rrl+bn"], demos=_experts(tmp_path, ("hammer",))
    ).runs[0]
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
    plan = make_plan(
        "main", profile="smoke", tasks=["door", "pen"], methods=["hindex", "rrl"], seeds=[0, 1],
        demos=_experts(tmp_path, ("pen",)),
    )  # fmt: skip
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


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tasks": []}, "tasks must not be empty"),
        ({"methods": []}, "methods must not be empty"),
        ({"seeds": []}, "seeds must not be empty"),
        ({"tasks": ["door", "Door"]}, "task given more than once: Door, door"),
        ({"tasks": ["door", "HInDex/Door-v0"]}, "more than once"),
        ({"set_train": {"seed": 5}}, "--seeds"),
        ({"set_train": {"encoder": "rrl"}}, "--methods"),
        ({"set_train": {"task": "pen"}}, "--tasks"),
        ({"set_train": {"out_dir": "elsewhere"}}, "--out"),
        ({"set_train": {"resume": "latest"}}, "--resume"),
        ({"set_train": {"progress_bar": True}}, "progress_bar"),
        ({"methods": ["rrl"], "set_train": {"ema_momentum": 0.1}}, "hindex-m<momentum>"),
        ({"adapted_dir": "/nonexistent/adapted"}, "--adapted-dir"),
    ],
)
def test_plan_refuses_what_it_would_silently_replace(kwargs, message):
    with pytest.raises(BenchError, match=message):
        make_plan("main", profile="smoke", **{"tasks": ["door"], "methods": ["hindex"], **kwargs})


def test_plan_refuses_a_string_for_a_list():
    for name, value in (("tasks", "door"), ("methods", "rrl"), ("seeds", "0"), ("seeds", 5)):
        with pytest.raises(TypeError, match=f"{name} must be a list"):
            make_plan("main", profile="smoke", **{name: value})
    with pytest.raises(TypeError, match="adapted_dir"):
        make_plan("main", profile="smoke", tasks=["door"], adapted_dir=5)


def test_plan_accepts_numpy_seeds_and_keeps_the_methods_ema_momentum_free_for_hindex(tmp_path):
    plan = make_plan("main", profile="smoke", tasks=["door"], methods=["hindex"], seeds=[np.int64(3)])
    assert plan.seeds == [3] and type(plan.seeds[0]) is int and plan.runs[0].run_id == "door__hindex__s3"
    json.dumps(plan.to_json())  # plan.json stays plain JSON
    plan = make_plan("main", profile="smoke", tasks=["door"], methods=["hindex"], set_train={"ema_momentum": 0.05})
    assert plan.runs[0].settings["ema_momentum"] == 0.05  # hindex takes the paper's m only when none is given
    assert make_plan("main", profile="smoke", tasks=["door"], adapted_dir=tmp_path).runs


@pytest.mark.parametrize("value", [0, -1.0, float("nan"), float("inf"), "1", True])
def test_cost_refuses_a_throughput_that_is_not_positive(value):
    plan = make_plan("main", profile="smoke", tasks=["door"], methods=["rrl"], seeds=[0])
    with pytest.raises(BenchError, match="frames_per_s"):
        plan.cost(value)
    with pytest.raises(BenchError, match="adapt_its_per_s"):
        plan.cost(adapt_its_per_s=value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cpus_per_run": float("nan")}, "cpus_per_run"),
        ({"cpus_per_run": 0}, "cpus_per_run"),
        ({"gpus_per_run": float("nan")}, "gpus_per_run"),
        ({"gpus_per_run": -1}, "gpus_per_run"),
        ({"max_retries": True}, "max_retries"),
        ({"max_retries": 1.5}, "max_retries"),
        ({"max_retries": -1}, "max_retries"),
        ({"poll_s": -1}, "poll_s"),
        ({"poll_s": 0}, "poll_s"),
        ({"num_cpus": "x"}, "num_cpus"),
        ({"num_cpus": 0}, "num_cpus"),
        ({"resume": "no"}, "resume"),
    ],
)
def test_run_plan_refuses_bad_arguments_before_making_the_folder(tmp_path, kwargs, message):
    from hindex_sb3.bench.scheduler import run_plan

    plan = make_plan("main", profile="smoke", tasks=["door"], methods=["rrl"], seeds=[0])
    with pytest.raises(BenchError, match=message):
        run_plan(plan, tmp_path / "bench", **kwargs)
    assert not (tmp_path / "bench").exists()


def test_run_plan_refuses_a_file_as_the_bench_folder(tmp_path):
    from hindex_sb3.bench.scheduler import run_plan

    (tmp_path / "file").write_text("x")
    plan = make_plan("main", profile="smoke", tasks=["door"], methods=["rrl"], seeds=[0])
    with pytest.raises(BenchError, match="not a folder"):
        run_plan(plan, tmp_path / "file")
    with pytest.raises(BenchError, match="cannot be created"):
        run_plan(plan, tmp_path / "file" / "bench")


@pytest.mark.parametrize(
    ("extra", "flag"),
    [
        (["--set", "seed=5", "--dry-run"], "--set seed"),
        (["--set", "encoder=rrl", "--dry-run"], "--set encoder"),
        (["--tasks", "door", "Door", "--dry-run"], "task given more than once"),
        (["--adapted-dir", "/nonexistent/adapted", "--dry-run"], "--adapted-dir"),
        (["--out", "FILE"], "--out"),
    ],
)
def test_bench_command_names_the_flag_in_one_line(tmp_path, capsys, extra, flag):
    (tmp_path / "file").write_text("x")
    extra = [str(tmp_path / "file") if a == "FILE" else a for a in extra]
    argv = ["bench", "main", "--profile", "smoke", "--methods", "hindex", *extra]
    if "--tasks" not in extra:
        argv[4:4] = ["--tasks", "door"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("hindex bench:") and flag in err and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


@pytest.mark.parametrize("flag", ["--cpus-per-run", "--gpus-per-run", "--frames-per-s"])
def test_bench_number_flags_say_what_they_expect(capsys, flag):
    with pytest.raises(SystemExit) as exc:
        main(["bench", "main", "--dry-run", flag, "abc"])
    assert exc.value.code != 0
    err = capsys.readouterr().err
    assert f"argument {flag}: must be a" in err and "finite number, got abc" in err and "_float" not in err


def test_names_and_folders_of_the_wrong_type_are_refused_naming_them(tmp_path):
    with pytest.raises(TypeError, match="suite must be a suite name"):
        make_plan(["main"])  # "unhashable type: 'list'"
    with pytest.raises(TypeError, match="profile must be a profile name"):
        make_plan("main", profile=["smoke"])
    with pytest.raises(BenchError, match="--adapted-dir is empty"):
        make_plan("main", profile="smoke", tasks=["door"], methods=["hindex"], adapted_dir="")  # the current folder
    with pytest.raises(TypeError, match="out must be the bench folder's path"):
        collect_results(5)


def test_cli_demos_per_task_and_resume_takes_the_saved_ones(tmp_path, capsys):
    """hammer, pen and pour have no scripted demonstrator: their runs failed at their start, the dry run was silent."""
    import argparse

    from hindex_sb3.bench.cli import _saved_runs, _with_saved_demos

    assert main(["bench", "main", "--dry-run", "--tasks", "door", "pen"]) == 2
    assert "pen: no scripted demonstrator" in capsys.readouterr().err
    pen = _experts(tmp_path, ("pen",))["pen"]
    assert main(["bench", "main", "--dry-run", "--tasks", "door", "pen", "--demos", f"pen={pen}"]) == 0
    assert main(["bench", "main", "--dry-run", "--tasks", "door", "--demos", f"pen={pen}"]) == 2
    assert "--demos pen: not one of this bench's tasks" in capsys.readouterr().err
    assert main(["bench", "main", "--dry-run", "--tasks", "pen", "--demos", f"pen={pen}", "Pen=scripted"]) == 2
    assert "more than once" in capsys.readouterr().err
    out = tmp_path / "bench"
    save_plan(out, make_plan("main", profile="smoke", tasks=["door", "pen"], demos={"pen": pen}), resume=False)
    args = argparse.Namespace(
        task_demos=None, resume=True, dry_run=False, overrides=[], out=str(out), tasks=["door", "pen"], suite="main"
    )
    runs = _saved_runs(args)
    assert _with_saved_demos(args, runs) == {"door": "scripted", "pen": pen}  # a resume needs no --demos again
    assert _with_saved_demos(argparse.Namespace(**{**vars(args), "tasks": ["door"]}), runs) == {"door": "scripted"}
    assert _with_saved_demos(argparse.Namespace(**{**vars(args), "overrides": [("demos", "x.npz")]}), runs) is None
    # a misspelt suite on resume is one line naming it (the saved demos were looked up in it first: a traceback)
    assert main(["bench", "mian", "--resume", "--out", str(out)]) == 2
    assert "unknown suite 'mian'" in capsys.readouterr().err
