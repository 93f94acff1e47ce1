"""benchmarks/pixel_throughput.py: its quick mode runs end to end and its table is what its rows say.

The tiny registered encoder stands in for the ResNet-50 so that the check stays in the default suite; the point is
the plumbing (every component measured, the wholes through DAPG, the ratio of the whole to the slowest part), not
the numbers.
"""

from __future__ import annotations

import math

import pytest
from bench_scripts import load_benchmark
from tiny_encoder import NAME

from hindex_sb3._io import read_json


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("pixel_throughput")


def _positive(x: float) -> bool:
    return isinstance(x, float) and math.isfinite(x) and x > 0


def test_summary_compares_each_vec_env_with_the_components_that_run_there(bench):
    rates = {
        "physics@1": 900.0,
        "physics@n": 1700.0,
        "render@1": 150.0,
        "render@n": 280.0,
        "transport[dummy]": 1e5,
        "transport[subproc]": 250.0,
        "encoder": 400.0,
        "policy": 5000.0,
        "rollout[dummy]": 90.0,
        "iteration[dummy]": 80.0,
        "rollout[subproc]": 200.0,
        "iteration[subproc]": 150.0,
    }
    dummy, subproc = bench.summarise(rates, ["dummy", "subproc"])
    assert dummy["components"]["render"] == 150.0 and dummy["slowest"] == "render"
    assert dummy["rollout_over_slowest"] == pytest.approx(90.0 / 150.0)
    assert dummy["serial"] == pytest.approx(1 / (1 / 900 + 1 / 150 + 1 / 1e5 + 1 / 400 + 1 / 5000))
    # in worker processes the envs run in parallel (@n); here the pipe is the slowest part
    assert subproc["components"]["physics"] == 1700.0 and subproc["slowest"] == "transport"
    assert subproc["iteration_over_slowest"] == pytest.approx(150.0 / 250.0)


def test_on_a_gpu_render_and_encoder_also_count_as_one_shared_part(bench):
    """Rates of the H200 door run (shm row): render and encoder add up on one GPU; off the GPU there is no such row."""
    rates = {
        "physics@n": 31204.2,
        "render@n": 4061.0,
        "transport[shm]": 15729.4,
        "encoder": 6501.9,
        "policy": 42087.4,
        "rollout[shm]": 1815.8,
        "iteration[shm]": 1603.7,
        **{k: 1.0 for k in ("physics@1", "render@1")},
    }
    (gpu,) = bench.summarise(rates, ["shm"], shared_gpu=True)
    assert gpu["render_plus_encoder"] == pytest.approx(1 / (1 / 4061.0 + 1 / 6501.9))  # 2,499.7
    assert gpu["rollout_over_render_plus_encoder"] == pytest.approx(1815.8 / 2499.7, rel=1e-4)
    assert gpu["iteration_over_render_plus_encoder"] == pytest.approx(1603.7 / 2499.7, rel=1e-4)
    assert gpu["slowest"] == "render" and gpu["rollout_over_slowest"] == pytest.approx(1815.8 / 4061.0)
    (cpu,) = bench.summarise(rates, ["shm"])
    assert "render_plus_encoder" not in cpu


def test_quick_run_measures_every_component_and_the_ratio_of_the_whole(bench, tmp_path):
    out = tmp_path / "pixel.json"
    doc = bench.main(["--quick", "--encoder", NAME, "--vec-env", "dummy", "subproc", "--json", str(out)])
    task = doc["tasks"]["HInDex/Door-v0"]
    rates = task["rates"]
    assert all(_positive(v) for v in rates.values()), rates
    assert all(len(v) == 1 for v in task["samples"].values())  # --quick: one counted round
    for row in task["rows"]:
        kind = row["vec_env"]
        at = "@1" if kind == "dummy" else "@n"
        parts = {
            "physics": rates[f"physics{at}"],
            "render": rates[f"render{at}"],
            "transport": rates[f"transport[{kind}]"],
            "encoder": rates["encoder"],
            "policy": rates["policy"],
        }
        assert row["components"] == parts
        slowest = min(parts.values())
        assert row["slowest_rate"] == slowest and parts[row["slowest"]] == slowest
        for whole in ("rollout", "iteration"):
            assert row[whole] == rates[f"{whole}[{kind}]"]
            assert row[f"{whole}_over_slowest"] == pytest.approx(rates[f"{whole}[{kind}]"] / slowest, rel=1e-12)
            # one counted round: the round's own ratio is the ratio of the medians
            assert row[f"{whole}_over_slowest_paired"] == pytest.approx(row[f"{whole}_over_slowest"], rel=1e-12)
        # acting is timed inside the rollout's loop, so it takes a share of it
        assert row["act_share_of_rollout"] == pytest.approx(row["rollout"] / rates[f"act_in_rollout[{kind}]"])
        assert 0 < row["act_share_of_rollout"] <= 1
    # the rollout never outruns its own loop: an iteration adds resets and the update to the same frames
    assert all(row["iteration"] < row["rollout"] for row in task["rows"])
    # DAPG's loop alone (instant envs, cached features) is faster than the dummy rollout, whose envs also render and
    # whose encoder also runs, and it is a diagnosis beside the parts, not one of them
    assert _positive(rates["trainer"]) and rates["trainer"] > rates["rollout[dummy]"]
    assert all(row["trainer"] == rates["trainer"] and "trainer" not in row["components"] for row in task["rows"])
    assert f"| {rates['trainer']:,.1f} |" in bench.markdown(doc)
    assert task["settings"]["frames_per_iteration"] == 16 * 2
    assert read_json(out)["tasks"]["HInDex/Door-v0"]["rows"] == task["rows"]


def test_workers_of_several_envs_are_compared_with_their_grouped_physics_and_tiled_render(bench):
    rates = {
        "physics@n": 30000.0,
        "render@n": 4000.0,
        "physics@n[k=4]": 20000.0,
        "render@n[k=4]": 9000.0,
        "transport[shm]": 15000.0,
        "transport[shm*4]": 16000.0,
        "encoder": 9500.0,
        "policy": 40000.0,
        "rollout[shm+overlap]": 1000.0,
        "iteration[shm+overlap]": 1000.0,
        "rollout[shm*4+overlap]": 2000.0,
        "iteration[shm*4+overlap]": 2000.0,
        **{k: 1.0 for k in ("physics@1", "render@1")},
    }  # fmt: skip
    one, four = bench.summarise(rates, ["shm+overlap", "shm*4+overlap"])
    assert one["components"]["render"] == 4000.0 and one["components"]["transport"] == 15000.0
    assert four["components"] == {"physics": 20000.0, "render": 9000.0, "encoder": 9500.0, "policy": 40000.0,
                                       "transport": 16000.0}  # fmt: skip
    assert four["slowest"] == "render" and four["iteration_over_slowest"] == pytest.approx(2000.0 / 9000.0)


def test_workers_stepping_in_threads_use_the_threaded_physics_rate_and_the_tiled_render(bench, tmp_path):
    rates = {"physics@n[k=4]": 5000.0, "physics@n[k=4,t=2]": 9000.0, "render@n[k=4]": 8000.0,
             "transport[shm*4]": 16000.0, "transport[shm*4/2]": 16000.0, "encoder": 9500.0, "policy": 40000.0,
             **{f"{w}[{k}]": 1000.0 for w in ("rollout", "iteration") for k in ("shm*4", "shm*4/2")}}  # fmt: skip
    serial, threaded = bench.summarise(rates, ["shm*4", "shm*4/2"])
    assert serial["components"]["physics"] == 5000.0 and serial["slowest"] == "physics"
    assert threaded["components"]["physics"] == 9000.0 and threaded["components"]["render"] == 8000.0
    assert threaded["slowest"] == "render"
    # the real probe: two envs per worker, stepped in two threads of it
    doc = bench.main(["--quick", "--encoder", NAME, "--vec-env", "shm*2/2", "--json", str(tmp_path / "t.json")])
    task = doc["tasks"]["HInDex/Door-v0"]
    (row,) = task["rows"]
    assert row["components"]["physics"] == task["rates"]["physics@n[k=2,t=2]"] > 0
    assert row["components"]["render"] == task["rates"]["render@n[k=2]"] > 0
    # the worker's env side as a whole (stepping in its threads while it draws), against the two parts in turn
    assert row["worker"] == task["rates"]["worker@n[k=2,t=2]"] > 0
    parts = row["components"]
    assert row["worker_over_serial"] == pytest.approx(row["worker"] * (1 / parts["physics"] + 1 / parts["render"]))
    assert row["iteration"] > 0
    assert "physics@n" not in task["rates"]  # no one-env workers were asked for: no n processes to probe them


def test_bad_options_stop_before_any_work(bench):
    with pytest.raises(SystemExit, match="n-envs"):
        bench.main(["--quick", "--n-envs", "0"])
    with pytest.raises(SystemExit, match="vec_env"):
        bench.main(["--quick", "--vec-env", "nosuchkind"])
    for bad in ("subproc*2", "shm*0", "shm*x", "shm*2/3", "shm*2/x", "shm*2/0"):
        with pytest.raises(SystemExit, match=r"envs per worker go with shm only, as shm\*K or shm\*K/T"):
            bench.main(["--quick", "--vec-env", bad])
