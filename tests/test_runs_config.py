"""TrainConfig: one validated source of every setting; CLI flags generated from it; the paper's settings as data."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from hindex_sb3.cli import build_parser, main
from hindex_sb3.demos import rollout, save_npz
from hindex_sb3.runs.build import build_model, env_spaces
from hindex_sb3.runs.cli_args import config_from_args
from hindex_sb3.runs.config import ConfigError, TrainConfig, TrainingError
from hindex_sb3.runs.paper import paper_settings, paper_tasks, resolve_settings


@pytest.fixture(scope="module")
def demo_file(tmp_path_factory):
    demos = rollout(
        "HInDex/Door-v0", lambda obs: np.zeros(28), 2, env_kwargs={"obs_mode": "state", "max_episode_steps": 6}
    )
    return save_npz(demos, tmp_path_factory.mktemp("demos") / "door.npz")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("iterations", -1),
        ("n_envs", 0),
        ("eval_every", 0),
        ("eval_episodes", 0),
        ("iterations", True),  # a bool is not an int
        ("trajectories", 2.0),
        ("gamma", math.nan),
        ("step_size", math.inf),
        ("gamma", 1.5),
        ("lam1", -0.1),
        ("hvp_sample_frac", 0.0),
        ("ema_momentum", 2.0),
        ("video", 1),
        ("hidden", (256, 0)),
        ("encoder", "resnet9000"),
        ("task", "laundry"),
        ("vec_env", "threads"),
        ("device", "gpu0"),
        ("demos", "nowhere.npz"),
        ("seed", 2**40),
    ],
)
def test_bad_values_are_refused_naming_the_field(field, value):
    with pytest.raises(ConfigError) as info:
        TrainConfig(**{"task": "door", "encoder": "state", field: value})
    assert info.value.field == field


#: a run that ends in seconds, for refusals that the code before them did not make
TINY_RUN = ["--iterations", "1", "--trajectories", "1", "--horizon", "2", "--num-demos", "1", "--eval-episodes", "1"]


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--iterations", "-1"], "--iterations"),
        (["--n-envs", "0"], "--n-envs"),
        (["--eval-every", "0"], "--eval-every"),
        (["--eval-episodes", "0"], "--eval-episodes"),
        (["--set", "bc_epochs=true"], "--bc-epochs"),
        (["--gamma", "nan"], "--gamma"),
        (["--set", "step_size=inf"], "--step-size"),
        (["--encoder", "nope"], "--encoder"),
        (["--set", "nonsense=1"], "--set"),
        (["--ema-momentum", "0.1"], "--ema-momentum"),  # EMA-BN needs the hindex encoder, not 'state'
        (["--overlap", "--vec-env", "dummy", "--n-envs", "2"], "--overlap"),  # it would silently do nothing
        (["--device", f"cuda:{torch.cuda.device_count()}"], "--device"),  # one GPU past this machine's
        # a weight file for the state encoder went unread (the old code trained: keep that run tiny)
        (["--weights", "w.pth", *TINY_RUN], "--weights"),
    ],
)
def test_cli_refuses_before_any_work(tmp_path, capsys, argv, flag):
    code = main(["train", "door", "--encoder", "state", "--out", str(tmp_path / "out"), *argv])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(f"hindex train: {flag}") and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # refused before the run folder (or demos, or envs) existed


def test_cli_debug_shows_the_traceback(tmp_path):
    with pytest.raises(ConfigError):
        main(["train", "door", "--encoder", "state", "--iterations", "-1", "--debug", "--out", str(tmp_path)])


def test_every_hyperparameter_reaches_the_model(demo_file):
    args = build_parser().parse_args(
        ["train", "door", "--encoder", "state", "--demos", str(demo_file), "--step-size", "0.1", "--lam0", "0",
         "--bc-epochs", "3", "--gamma", "0.99", "--set", "vf_batch_size=32", "--set", "hidden=[64,64]",
         "--cg-iters", "7", "--vf-lr", "3e-4", "--vf-hidden", "32,32", "--trajectories", "5"]
    )  # fmt: skip
    cfg = config_from_args(args)
    assert (cfg.step_size, cfg.lam0, cfg.bc_epochs, cfg.gamma, cfg.vf_batch_size) == (0.1, 0.0, 3, 0.99, 32)
    model = build_model(resolve_settings(cfg, "HInDex/Door-v0"), env_spaces(cfg, "HInDex/Door-v0"))
    assert (model.step_size, model.lam0, model.bc_epochs, model.gamma, model.cg_iters) == (0.1, 0.0, 3, 0.99, 7)
    assert (model.vf_batch_size, model.n_trajectories, model.learning_rate) == (32, 5, 3e-4)
    assert model.policy.net_arch == [64, 64] and model.policy.vf_arch == [32, 32]


def test_config_file_then_flags_then_set(tmp_path, demo_file):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"task": "door", "encoder": "state", "demos": str(demo_file), "gamma": 0.9,
                                "lam1": 0.5, "seed": 3}))  # fmt: skip
    args = build_parser().parse_args(["train", "--config", str(path), "--gamma", "0.8", "--set", "seed=4"])
    cfg = config_from_args(args)
    assert (cfg.gamma, cfg.lam1, cfg.seed) == (0.8, 0.5, 4)
    # a config.json round trip gives the same configuration
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    path.write_text(json.dumps({"task": "door", "gama": 0.9}))
    with pytest.raises(ConfigError, match="gama"):
        config_from_args(build_parser().parse_args(["train", "--config", str(path)]))
    path.write_text('{"task": "door", "gamma": NaN}')
    with pytest.raises(ConfigError, match="config"):
        config_from_args(build_parser().parse_args(["train", "--config", str(path)]))


def test_paper_settings_ship_for_the_twelve_tasks():
    tasks = paper_tasks()
    twelve = ["Door", "Hammer", "Pen", "Pour", "PlaceInside", "RelocateMug", "RelocateMustardBottle",
              "RelocatePottedMeatCan", "RelocateTomatoSoupCan", "RelocateFoamBrick", "RelocateLargeClamp",
              "RelocateSugarBox"]  # fmt: skip
    assert all(f"HInDex/{t}-v0" in tasks for t in twelve)
    door = paper_settings("HInDex/Door-v0")
    assert door == {"trajectories": 100, "iterations": 200, "num_demos": 25, "ema_momentum": 0.0, "horizon": 200,
                    "camera": "top", "reward_type": "sparse"}  # fmt: skip
    # H-InDex's vendored Adroit envs reward door, hammer and pen sparsely; DexMV rewards are dense
    assert paper_settings("HInDex/Pen-v0")["reward_type"] == "sparse"
    assert resolve_settings(TrainConfig(task="pour"), "HInDex/Pour-v0").reward_type == "dense"
    assert paper_settings("HInDex/Hammer-v0")["ema_momentum"] == 0.1
    assert paper_settings("HInDex/RelocateLargeClamp-v0")["num_demos"] == 50
    assert paper_settings("HInDex/RelocateSugarBox-v0")["camera"] == "sideview"
    assert paper_settings("HInDex/Pour-v0")["horizon"] == 100


def test_paper_settings_accept_every_task_spelling():
    door = paper_settings("HInDex/Door-v0")
    assert door and paper_settings("door") == paper_settings("Door") == door
    assert paper_settings("relocate-mug") == paper_settings("HInDex/RelocateMug-v0")
    with pytest.raises(TrainingError, match="unknown task 'doorr'"):
        paper_settings("doorr")


def test_paper_settings_are_defaults_and_explicit_values_win():
    cfg = resolve_settings(TrainConfig(task="hammer"), "HInDex/Hammer-v0")
    assert (cfg.trajectories, cfg.iterations, cfg.num_demos, cfg.ema_momentum, cfg.camera) == (100, 100, 25, 0.1, "top")
    cfg = resolve_settings(TrainConfig(task="hammer", iterations=3, ema_momentum=0.0), "HInDex/Hammer-v0")
    assert (cfg.iterations, cfg.ema_momentum, cfg.trajectories) == (3, 0.0, 100)
    args = build_parser().parse_args(["train", "pen", "--set", "trajectories=7"])
    cfg = resolve_settings(config_from_args(args), "HInDex/Pen-v0")
    assert (cfg.trajectories, cfg.iterations, cfg.camera) == (7, 400, "vil_camera")


def test_encoder_accepts_any_registered_name():
    from hindex_sb3.encoders import get_encoder_spec, register_encoder
    from hindex_sb3.encoders.registry import _ENCODERS

    register_encoder(dataclasses.replace(get_encoder_spec("rrl"), name="my_resnet"))
    try:
        assert TrainConfig(task="door", encoder="my_resnet").encoder == "my_resnet"
    finally:
        _ENCODERS.pop("my_resnet")
    with pytest.raises(ConfigError, match="my_resnet"):
        TrainConfig(task="door", encoder="my_resnet")
