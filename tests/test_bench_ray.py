"""hindex bench on a real local Ray: retries after a killed worker, resume after a killed driver.

The runs are state-based DAPG on door (the ``state`` method) with a tiny budget, so the test measures the bench's
bookkeeping, not learning: every evaluation must be in the table exactly once, and a run that was killed and
resumed must produce the same numbers as one that was not.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from hindex_sb3.bench import _runs, make_plan, run_plan  # noqa: E402
from hindex_sb3.bench.results import read_results, run_dir  # noqa: E402

SETTINGS = {"iterations": 6, "trajectories": 4, "horizon": 40, "eval_episodes": 1, "checkpoint_every": 1}
ARGS = ["--profile", "smoke", "--tasks", "door", "--methods", "state", "--seeds", "0", "1"]
ARGS += [f"--set={k}={v}" for k, v in SETTINGS.items()]


@pytest.fixture(scope="module")
def ray_address():
    """A Ray instance for this module: the one in RAY_ADDRESS, else a local one started and stopped here."""
    started = not ray.is_initialized()
    os.environ.setdefault("RAY_TQDM_PATCH_PRINT", "0")  # as run_plan does: Ray must not replace builtins.print
    if started:
        address = os.environ.get("RAY_ADDRESS")
        ctx = ray.init(address=address, num_cpus=None if address else 2, include_dashboard=False, log_to_driver=False)
        address = address or ctx.address_info["address"]
    else:
        address = ray.get_runtime_context().gcs_address
    yield address
    if started:
        ray.shutdown()


def test_ray_leaves_print_alone(ray_address, tmp_path):
    """Other code in the driver process (and our tests' pickles) must still see the real ``builtins.print``."""
    import builtins

    run_plan(_plan(), tmp_path, address=ray_address, poll_s=0.2)
    assert builtins.print.__module__ == "builtins"


def _plan():
    return make_plan("main", profile="smoke", tasks=["door"], methods=["state"], seeds=[0, 1], set_train=SETTINGS)


def _table(out: Path) -> list[tuple]:
    return [(r["method"], r["seed"], r["iteration"], r["env_frames"], r["eval_return"]) for r in read_results(out)]


def _wait_for_checkpoint(directory: Path, timeout: float = 300.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if _runs.latest_checkpoint(directory) is not None and (directory / "worker.pid").is_file():
            return
        time.sleep(0.05)
    raise TimeoutError(f"no checkpoint in {directory} after {timeout} s")


@pytest.fixture(scope="module")
def reference(ray_address, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    status = run_plan(_plan(), out, address=ray_address, poll_s=0.2)
    assert sorted(status["finished"]) == ["door__state__s0", "door__state__s1"] and not status["failed"]
    table = _table(out)
    expected_iterations = list(range(SETTINGS["iterations"] + 1))  # 0 = after behaviour cloning
    for seed in (0, 1):
        assert [t[2] for t in table if t[1] == seed] == expected_iterations
    return table


def test_killed_worker_is_retried_from_its_checkpoint(ray_address, reference, tmp_path):
    status: dict = {}
    thread = threading.Thread(
        target=lambda: status.update(run_plan(_plan(), tmp_path, address=ray_address, poll_s=0.2))
    )
    thread.start()
    victim = run_dir(tmp_path, "door__state__s0")
    _wait_for_checkpoint(victim)
    os.kill(int((victim / "worker.pid").read_text()), signal.SIGKILL)
    thread.join(timeout=600)
    assert not status["failed"], status
    assert _table(tmp_path) == reference  # nothing lost, nothing twice, the same numbers as without the kill


def test_killed_driver_resumes_without_loss(ray_address, reference, tmp_path):
    env = os.environ | {"RAY_ADDRESS": ray_address}
    cmd = [sys.executable, "-m", "hindex_sb3.cli", "bench", "main", *ARGS, "--out", str(tmp_path), "--no-report"]
    driver = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for_checkpoint(run_dir(tmp_path, "door__state__s0"))
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    # another CPU reservation on resume: the runs keep the plan's torch threads (1), so the same numbers
    resumed = subprocess.run(
        [*cmd, "--resume", "--cpus-per-run", "2"], env=env, capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "Traceback" not in resumed.stderr
    assert _table(tmp_path) == reference
    for seed in (0, 1):
        config = json.loads(next(run_dir(tmp_path, f"door__state__s{seed}").glob("*/config.json")).read_text())
        assert config["torch_threads"] == 1  # hindex train --config repeats the bench's run


def test_ctrl_c_stops_the_driver_in_one_line(ray_address, tmp_path):
    env = os.environ | {"RAY_ADDRESS": ray_address}
    cmd = [sys.executable, "-m", "hindex_sb3.cli", "bench", "main", *ARGS, "--out", str(tmp_path), "--no-report"]
    driver = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _wait_for_checkpoint(run_dir(tmp_path, "door__state__s0"))
    driver.send_signal(signal.SIGINT)
    _, err = driver.communicate(timeout=120)
    assert driver.returncode == 130, err
    assert err.strip().splitlines()[-1] == "hindex bench: interrupted; resume with --resume", err
    assert "Traceback" not in err and not (tmp_path / "driver.lock").exists()  # resumable at once


def _refusal(fn, timeout: float = 60.0) -> BaseException | None:
    """What ``fn()`` raised, run in a thread: before the fix the call waited forever."""
    result: list = []

    def target():
        try:
            fn()
            result.append(None)
        except BaseException as err:  # handed to the test
            result.append(err)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    assert result, f"still waiting after {timeout} s"
    return result[0]


@pytest.mark.parametrize(
    ("kwargs", "flag"), [({"cpus_per_run": 4}, "--cpus-per-run 4"), ({"gpus_per_run": 1}, "--gpus-per-run 1")]
)
def test_resources_no_node_has_are_refused_at_once(ray_address, tmp_path, kwargs, flag):
    """On a local instance (no address: here the module's 2-CPU one) a task no node can hold is refused, naming the
    flag and what the cluster has; nothing is written."""
    from hindex_sb3.bench import BenchError

    err = _refusal(lambda: run_plan(_plan(), tmp_path / "bench", poll_s=0.2, **kwargs))
    assert isinstance(err, BenchError) and flag in str(err) and "2 CPUs" in str(err), err
    assert not (tmp_path / "bench").exists()


def test_a_cluster_that_may_grow_gets_a_warning(ray_address):
    from hindex_sb3.bench.scheduler import _check_resources

    events: list = []
    _check_resources(4.0, 0.0, local=False, emit=lambda kind, info: events.append((kind, info)))
    assert events and events[0][0] == "warning" and "--cpus-per-run 4" in events[0][1]["message"]


def test_smoke_profile_end_to_end_with_stage2(ray_address, tmp_path):
    """The smoke profile's whole path, smaller: Stage 2 for hindex, a pixel run that waits for it, the report."""
    from hindex_sb3.bench import write_report

    plan = make_plan(
        "main", profile="smoke", tasks=["door"], methods=["hindex"], seeds=[0], set_train={"iterations": 1}
    )
    assert [j.key for j in plan.adapt_jobs] == ["door__hindex__bn"]
    status = run_plan(plan, tmp_path, address=ray_address, poll_s=0.2)
    assert status["finished"] == ["door__hindex__s0"] and not status["failed"]
    adapted = tmp_path / "adapt" / "door__hindex__bn" / "adapted_encoder.pth"
    assert adapted.is_file()
    config = json.loads(next((tmp_path / "runs" / "door__hindex__s0").glob("*/config.json")).read_text())
    assert config["weights"] == str(adapted) and config["image_size"] == 64  # the run used Stage 2's encoder
    assert [r["iteration"] for r in read_results(tmp_path)] == [0, 1]
    report = write_report(tmp_path, reps=100).read_text()
    assert "RANDOM ENCODER WEIGHTS" in report and "Status: **complete**" in report


def test_background_suite_evaluates_final_policies_on_novel_backgrounds(ray_address, tmp_path):
    """Table 3's path: each final policy, read back from its safetensors checkpoint, on every novel background."""
    from hindex_sb3.bench import write_report

    settings = {"iterations": 1, "trajectories": 2, "horizon": 20, "eval_episodes": 1}
    plan = make_plan("background", profile="smoke", methods=["state"], seeds=[0], set_train=settings)
    status = run_plan(plan, tmp_path, address=ray_address, poll_s=0.2)
    assert not status["failed"], status
    rows = read_results(tmp_path)
    backgrounds = [r["background"] for r in rows if r["background"]]
    assert backgrounds == list(plan.runs[0].eval_backgrounds) and len(backgrounds) == 6
    report = write_report(tmp_path, reps=100).read_text()
    assert "Novel backgrounds" in report and "| state |" in report
