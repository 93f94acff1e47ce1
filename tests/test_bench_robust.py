"""hindex bench without Ray: recorded thread counts, lost background results, damaged files, the driver lock, the
resume message, interruption and the dry run's cost (each test failed before the fix it holds)."""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
from pathlib import Path

import pytest
import torch

from hindex_sb3.bench import BenchError, make_plan, write_report
from hindex_sb3.bench import scheduler as scheduler_module
from hindex_sb3.bench.results import collect_results, run_finished
from hindex_sb3.bench.store import DriverLock, save_plan
from hindex_sb3.cli import main

TINY = {"iterations": 1, "trajectories": 2, "horizon": 20, "eval_episodes": 1}
ARGS = ["--profile", "smoke", "--tasks", "door", "--methods", "state", "--seeds", "0", "--no-report"]


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _fake_run_plan(calls: list):
    """run_plan without Ray: writes (or checks) plan.json as the real one does and records what it was given."""

    def fake(plan, out, **kwargs):
        calls.append((save_plan(Path(out), plan, resume=kwargs["resume"]), kwargs))
        return {"finished": [], "failed": {}, "skipped": []}

    return fake


# -- 1. torch threads are the plan's, not the CPUs a driver reserves


def test_plan_records_torch_threads():
    plan = make_plan("main", profile="smoke", tasks=["door"], methods=["hindex", "rrl"], seeds=[0], cpus_per_run=3)
    assert {r.settings["torch_threads"] for r in plan.runs} == {3}
    assert [j.torch_threads for j in plan.adapt_jobs] == [3]  # Stage 2 too
    half = make_plan("main", profile="smoke", tasks=["door"], methods=["rrl"], seeds=[0], cpus_per_run=0.5)
    assert half.runs[0].settings["torch_threads"] == 1
    given = make_plan("main", profile="smoke", tasks=["door"], methods=["rrl"], set_train={"torch_threads": 2})
    assert given.runs[0].settings["torch_threads"] == 2
    with pytest.raises(BenchError, match="torch_threads"):  # 0 (torch's default) would depend on the machine
        make_plan("main", profile="smoke", tasks=["door"], methods=["rrl"], set_train={"torch_threads": 0})


def test_resume_with_other_cpus_keeps_the_plans_threads(tmp_path, monkeypatch):
    calls: list = []
    monkeypatch.setattr(scheduler_module, "run_plan", _fake_run_plan(calls))
    out = ["--out", str(tmp_path / "bench")]
    assert main(["bench", "main", *ARGS, *out, "--cpus-per-run", "1"]) == 0
    assert main(["bench", "main", *ARGS, *out, "--cpus-per-run", "3", "--resume"]) == 0  # not refused
    (first, _), (resumed, kwargs) = calls
    assert kwargs["cpus_per_run"] == 3.0  # what Ray reserves ...
    assert resumed.runs[0].settings["torch_threads"] == first.runs[0].settings["torch_threads"] == 1  # ... not this
    saved = json.loads((tmp_path / "bench" / "plan.json").read_text())
    assert saved["runs"][0]["settings"]["torch_threads"] == 1


def test_the_run_trains_with_the_plans_threads_and_records_them(tmp_path, restore_threads):
    """A task that reserved 2 CPUs trains with the plan's 1 thread, and the run's config.json says so, so that
    ``hindex train --config`` repeats it."""
    plan = make_plan("main", profile="smoke", tasks=["door"], methods=["state"], seeds=[0], set_train=TINY)
    spec = plan.runs[0]
    torch.set_num_threads(2)
    scheduler_module._train_task(spec.__dict__ | {}, "HInDex/Door-v0", str(tmp_path), None)
    assert torch.get_num_threads() == 1
    config = json.loads(next((tmp_path / "runs" / spec.run_id).glob("*/config.json")).read_text())
    assert config["torch_threads"] == 1


# -- 2. a run of the background suite is finished only with its background results


def _fake_run(out: Path, run_id: str, backgrounds: dict | None = None) -> Path:
    folder = out / "runs" / run_id / "outputs"
    folder.mkdir(parents=True)
    curve = [{"iteration": i, "env_steps": 40 * i, "eval_return": 1.0 + i, "eval_success": 0.0} for i in range(2)]
    (folder / "curve.json").write_text(json.dumps(curve))
    (folder / "summary.json").write_text("{}")
    if backgrounds is not None:
        (folder / "backgrounds.json").write_text(json.dumps(backgrounds))
    return folder


def test_a_run_without_its_background_results_is_not_finished(tmp_path, monkeypatch):
    plan = make_plan("background", profile="smoke", methods=["state"], seeds=[0], set_train=TINY)
    spec = plan.runs[0]
    save_plan(tmp_path, plan, resume=False)
    folder = _fake_run(tmp_path, spec.run_id)  # the driver died between summary.json and backgrounds.json
    assert not run_finished(tmp_path, spec)
    assert "PARTIAL RESULTS: 0 of 1 runs finished" in write_report(tmp_path, reps=50).read_text()
    # the resumed task evaluates again; it does not train again
    monkeypatch.setattr(scheduler_module._runs, "train_run", lambda *a: pytest.fail("trained a finished run again"))
    evaluated = []

    def fake_evaluate(directory, env_id, settings, backgrounds, weights):
        evaluated.append(tuple(backgrounds))
        results = {name: {"mean_return": 1.0, "success_rate": 0.5} for name in backgrounds}
        (folder / "backgrounds.json").write_text(json.dumps(results))

    monkeypatch.setattr(scheduler_module._runs, "evaluate_backgrounds", fake_evaluate)
    scheduler_module._train_task(spec.__dict__ | {}, "HInDex/RelocatePottedMeatCan-v0", str(tmp_path), None)
    assert evaluated == [spec.eval_backgrounds] and run_finished(tmp_path, spec)
    assert "Status: **complete**" in write_report(tmp_path, reps=50).read_text()


# -- 3. damaged files are one message naming the file


@pytest.mark.parametrize(
    ("text", "what"),
    [
        ('{"format": "hindex_sb3.bench.plan/1", "suite": "ma', "not valid JSON"),
        ("[1, 2]", "a JSON list"),
        ("DROP_SEED", "runs[0] has no 'seed'"),
        ("SEED_STR", "runs[0].seed"),
        ("RUNS_DICT", "runs"),
    ],
)
def test_a_damaged_plan_is_one_message_naming_it(tmp_path, capsys, text, what):
    plan = make_plan("main", profile="smoke", tasks=["door"], methods=["rrl"], seeds=[0])
    data = plan.to_json()
    if text == "DROP_SEED":
        del data["runs"][0]["seed"]
    elif text == "SEED_STR":
        data["runs"][0]["seed"] = "0"
    elif text == "RUNS_DICT":
        data["runs"] = {"a": 1}
    (tmp_path / "plan.json").write_text(text if text[0] in "{[" else json.dumps(data))
    for argv in (["bench", "report", str(tmp_path)], ["bench", "main", *ARGS, "--out", str(tmp_path), "--resume"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("hindex bench:") and "plan.json" in err and what in err, err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_a_damaged_curve_leaves_its_run_out_of_the_report(tmp_path, capsys, caplog):
    plan = make_plan("main", profile="smoke", tasks=["door"], methods=["rrl"], seeds=[0, 1])
    save_plan(tmp_path, plan, resume=False)
    _fake_run(tmp_path, "door__rrl__s0")
    broken = _fake_run(tmp_path, "door__rrl__s1") / "curve.json"
    broken.write_text(broken.read_text()[:30])  # truncated
    rows = collect_results(tmp_path)
    assert {r["seed"] for r in rows} == {0} and "door__rrl__s1" in caplog.text
    assert main(["bench", "report", str(tmp_path)]) == 0
    report = (tmp_path / "report.md").read_text()
    assert "PARTIAL RESULTS: 1 of 2 runs finished" in report
    assert "run door__rrl__s1" in report and "curve.json is damaged" in report


# -- 5. the driver lock


def _lock(out: Path, **info) -> Path:
    path = out / "driver.lock"
    path.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), **info}))
    return path


def test_a_lock_from_another_host_is_refused_naming_it(tmp_path):
    path = _lock(tmp_path, host="node-7")
    with pytest.raises(BenchError, match=r"host 'node-7'.*delete .*driver\.lock"):
        DriverLock(tmp_path).__enter__()
    assert json.loads(path.read_text())["host"] == "node-7"  # left as it was


def test_a_damaged_lock_is_one_message(tmp_path):
    (tmp_path / "driver.lock").write_text('{"pid": 12')
    with pytest.raises(BenchError, match=r"driver\.lock is damaged.*delete"):
        DriverLock(tmp_path).__enter__()


def test_a_live_driver_is_refused_and_a_reused_pid_is_not(tmp_path):
    from hindex_sb3.bench.store import _process_start

    _lock(tmp_path, process_start=_process_start(os.getpid()))
    with pytest.raises(BenchError, match=rf"pid {os.getpid()}.*delete"):
        DriverLock(tmp_path).__enter__()
    if _process_start(os.getpid()) is None:
        pytest.skip("no /proc: a reused pid cannot be told from its first process")
    _lock(tmp_path, process_start="1")  # our pid, but a process that started at boot: the driver is gone
    with DriverLock(tmp_path):
        assert json.loads((tmp_path / "driver.lock").read_text())["process_start"] == _process_start(os.getpid())
    assert not (tmp_path / "driver.lock").exists()


def _try_lock(out: str, barrier, results) -> None:
    barrier.wait()
    try:
        DriverLock(Path(out)).__enter__()  # held until the process ends
        results.put("locked")
    except BenchError:
        results.put("refused")
    barrier.wait()


def test_only_one_of_simultaneous_drivers_takes_the_lock(tmp_path):
    ctx = multiprocessing.get_context("fork")
    n = 6
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_try_lock, args=(str(tmp_path), barrier, results)) for _ in range(n)]
    for p in procs:
        p.start()
    outcomes = sorted(results.get(timeout=60) for _ in range(n))
    for p in procs:
        p.join(timeout=60)
    assert outcomes == ["locked"] + ["refused"] * (n - 1)


# -- 6. a refused resume names the changed settings


def test_resume_names_the_changed_settings(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(scheduler_module, "run_plan", _fake_run_plan([]))
    out = ["--out", str(tmp_path / "bench")]
    assert main(["bench", "main", *ARGS, *out]) == 0
    assert main(["bench", "main", *ARGS, *out, "--resume", "--set", "gamma=0.9", "--set", "horizon=30"]) == 2
    err = capsys.readouterr().err
    assert "gamma (plan: 0.995, now: 0.9)" in err and "horizon (plan: 20, now: 30)" in err, err
    assert len(err.strip().splitlines()) == 1


# -- 7. interruption, and the cost of the background suite


def test_ctrl_c_exits_130_in_one_line(tmp_path, capsys, monkeypatch):
    def interrupted(plan, out, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(scheduler_module, "run_plan", interrupted)
    try:
        rc = main(["bench", "main", *ARGS, "--out", str(tmp_path / "bench")])
    except KeyboardInterrupt:
        pytest.fail("the interrupt escaped hindex bench (a traceback and exit status 1)")
    assert rc == 130
    assert capsys.readouterr().err == "hindex bench: interrupted; resume with --resume\n"


def test_the_cost_estimate_counts_the_background_evaluations():
    plan = make_plan("background", profile="smoke", methods=["state"], seeds=[0], set_train=TINY)
    per_eval = TINY["eval_episodes"] * TINY["horizon"]
    assert plan.runs[0].eval_frames == per_eval * (TINY["iterations"] + 6)  # + 6 novel backgrounds
