"""``hindex adapt`` / ``hindex demo`` with bad arguments: exit 2 with one message, no traceback, nothing spent or
written (issue 11; docs/reliability.md). Task names: one resolver for every command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from hindex_sb3.adapt import AdaptConfig, AdaptConfigError, AdaptError, adapt
from hindex_sb3.cli import main
from hindex_sb3.envs import UnknownTaskError, resolve_env_id

RANDOM = ["--weights", "random", "--vgg-weights", "random", "--no-progress", "--no-figures"]
REPO = Path(__file__).resolve().parents[1]


def _adapt_refused(tmp_path, capsys, extra: list[str], match: str) -> str:
    out = tmp_path / "run"
    start = time.perf_counter()
    code = main(["adapt", "door", *RANDOM, "--out", str(out), *extra])
    elapsed = time.perf_counter() - start
    captured = capsys.readouterr()
    assert code == 2
    assert match in captured.err, captured.err
    assert "collecting" not in captured.out and not out.exists()  # refused before any frame or folder
    assert elapsed < 5.0
    return captured.err


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--iterations", "-1"], "--iterations must be >= 1, got -1"),
        (["--iterations", "0"], "--iterations must be >= 1, got 0"),
        (["--env-kwargs", "[1,2]"], "--env-kwargs must be a JSON object"),
        (["--env-kwargs", '{"image_size": 50}'], "may not set 'image_size'"),
        (["--env-kwargs", '{"render_quality": NaN}'], "--env-kwargs must hold plain finite values"),
        (["--env-kwargs", '{"1x": 2}'], "--env-kwargs keys must be Python identifiers"),
        (["--image-size", "50"], "--image-size must be a multiple of 32 (the ResNet's stride), got 50"),
        (["--image-size", "0"], "--image-size must be >= 32"),
        (["--batch-size", "0"], "--batch-size must be >= 1, got 0"),
        (["--lr", "nan"], "--lr must be finite"),
        (["--lr", "inf"], "--lr must be finite"),
        (["--lr", "0"], "--lr must be > 0.0"),
        (["--episodes", "0"], "--episodes must be >= 1"),
        (["--max-steps", "0"], "--max-steps must be >= 1"),
        (["--pair-window", "1"], "--pair-window must be >= 2"),
        (["--calibrate-batches", "-3"], "--calibrate-batches must be >= 0"),
        (["--checkpoint-every", "-1"], "--checkpoint-every must be >= 0"),
        (["--seed", "-1"], "--seed must be >= 0"),
        (["--frame-size", "100"], "--frame-size 100 is smaller than image_size 224"),
        (["--device", "banana"], "device 'banana' is not a torch device"),
        (["--device", f"cuda:{torch.cuda.device_count()}"], "--device 'cuda:"),  # one GPU past this machine's
        (["--policy", "expert:/nonexistent/door.npz"], "no file at /nonexistent/door.npz"),
        (["--dataset", "/nonexistent/frames.npz"], "no frames file"),
    ],
)
def test_adapt_refuses_bad_settings_before_collecting_frames(tmp_path, capsys, extra, match):
    _adapt_refused(tmp_path, capsys, extra, match)


def test_adapt_refuses_an_out_path_that_is_a_file(tmp_path, capsys):
    target = tmp_path / "taken"
    target.write_text("precious")
    assert main(["adapt", "door", *RANDOM, "--out", str(target)]) == 2
    assert "exists and is not a folder" in capsys.readouterr().err
    assert target.read_text() == "precious"  # nothing already written is damaged


def test_adapt_refuses_an_out_path_below_a_file(tmp_path, capsys):
    (tmp_path / "taken").write_text("precious")
    assert main(["adapt", "door", *RANDOM, "--out", str(tmp_path / "taken" / "run")]) == 2
    assert "is a file, so the folder cannot be created" in capsys.readouterr().err


def test_adapt_api_raises_a_config_error_naming_the_setting(tmp_path):
    base = {"weights": "random", "vgg_weights": "random", "progress_bar": False, "out_dir": str(tmp_path / "r")}
    for kwargs, match in [
        ({"iterations": True}, "iterations must be an integer"),
        ({"batch_size": 2.0}, "batch_size must be an integer"),
        ({"lr": "1e-4"}, "lr must be a real number"),
        ({"env_kwargs": [1, 2]}, "env_kwargs must be a dict"),
        ({"figures": "no"}, "figures must be True or False"),
    ]:
        with pytest.raises(AdaptConfigError, match=match) as info:
            adapt(AdaptConfig("door", **base, **kwargs))
        assert isinstance(info.value, AdaptError) and isinstance(info.value, ValueError)
    assert not (tmp_path / "r").exists()
    with pytest.raises(AdaptConfigError, match="task must be"):
        adapt(AdaptConfig(["door"], **base))


# ---------------------------------------------------------------------------------------------------------------------
# hindex demo


def test_demo_takes_the_task_names_train_takes(tmp_path):
    out = tmp_path / "demo"
    assert (
        main(["demo", "--out", str(out), "--tasks", "door", "relocate-mug", "--image-size", "32", "--steps", "1"]) == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    assert [s["task"] for s in summary] == ["HInDex/Door-v0", "HInDex/RelocateMug-v0"]


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--tasks", "laundry"], "unknown task 'laundry'; known tasks: ['Door'"),
        (["--image-size", "5"], "image_size 5 out of range"),
        (["--steps", "-1"], "--steps must be >= 0"),
        (["--seed", "-2"], "--seed must be >= 0"),
    ],
)
def test_demo_refuses_bad_arguments_before_building_envs(tmp_path, capsys, extra, match):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), *extra]) == 2
    assert match in capsys.readouterr().err
    assert not out.exists()


def test_demo_refuses_an_out_path_that_is_a_file(tmp_path, capsys):
    target = tmp_path / "taken"
    target.write_text("precious")
    assert main(["demo", "--out", str(target), "--tasks", "door"]) == 2
    assert "exists and is not a folder" in capsys.readouterr().err and target.read_text() == "precious"


@pytest.mark.parametrize(
    "argv",
    [["adapt", "door", *RANDOM, "--env-kwargs", "[1,2]"], ["demo", "--tasks", "x"]],  # each start imports torch
)
def test_the_installed_command_exits_2_without_a_traceback(tmp_path, argv):
    env = {**os.environ, "PYTHONPATH": str(REPO), "HINDEX_SB3_OFFLINE": "1", "HINDEX_SB3_HOME": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "hindex_sb3.cli", *argv, "--out", str(tmp_path / "o")],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.strip()


# ---------------------------------------------------------------------------------------------------------------------
# One task resolver


@pytest.mark.parametrize(
    ("name", "env_id"),
    [
        ("door", "HInDex/Door-v0"),
        ("Door", "HInDex/Door-v0"),
        ("HInDex/Door-v0", "HInDex/Door-v0"),
        ("hindex/pen-v0", "HInDex/Pen-v0"),
        ("relocate-mug", "HInDex/RelocateMug-v0"),
        ("relocate_large_clamp", "HInDex/RelocateLargeClamp-v0"),
        ("PLACE-INSIDE", "HInDex/PlaceInside-v0"),
    ],
)
def test_resolve_env_id_accepts_every_spelling(name, env_id):
    assert resolve_env_id(name) == env_id


@pytest.mark.parametrize("name", ["", "hindex/", "doorx", "Door-v1"])
def test_resolve_env_id_lists_known_tasks(name):
    with pytest.raises(UnknownTaskError, match="known tasks"):
        resolve_env_id(name)


def test_resolve_env_id_needs_a_string():
    with pytest.raises(TypeError, match="task must be a string"):
        resolve_env_id(None)
