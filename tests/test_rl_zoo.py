"""RL Zoo (``python -m rl_zoo3.train``) on the HInDex tasks with the shipped hyperparameter files."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from stable_baselines3 import PPO

from hindex_sb3.extractor import HIndexExtractor

rl_zoo3_train = pytest.importorskip("rl_zoo3.train")  # the dev extra; RL Zoo brings PyYAML
import yaml  # noqa: E402

from hindex_sb3.hyperparams import NAMES, load, path  # noqa: E402

TESTS = Path(__file__).resolve().parent


def _run_dir(folder: Path) -> Path:
    (zip_path,) = folder.glob("ppo/HInDex-Door-v0_*/HInDex-Door-v0.zip")
    return zip_path.parent


def test_shipped_files_are_package_data_with_a_default_entry_for_every_task():
    for name in NAMES:
        assert path(name).is_file()
        entry = load(name)["default"]
        assert entry["env_kwargs"]["obs_mode"] in {"state", "pixels"} and "n_timesteps" in entry
    pyproject = (TESTS.parent / "pyproject.toml").read_text()
    assert '"hyperparams/*.yml"' in pyproject
    module = __import__("hindex_sb3.hyperparams.ppo", fromlist=["hyperparams"])
    first = module.hyperparams["default"]
    first.pop("n_timesteps")  # RL Zoo deletes keys from the entry it reads ...
    assert "n_timesteps" in module.hyperparams["default"]  # ... which must not leak into the next run
    with pytest.raises(ValueError, match="unknown hyperparameter file"):
        path("dqn")


@pytest.mark.parametrize("obs_mode", ["pixels", "rgb"])
def test_pixel_file_trains_with_the_extractor_and_the_ema_callback(obs_mode, tmp_path, monkeypatch):
    """In process, so that RL Zoo's eval of ``policy_kwargs`` can reach the tests' tiny encoder. The overrides are the
    ones docs/sb3.md shows: the EMA momentum through ``callback``, image-only through ``--env-kwargs``/``policy``, and
    RL Zoo's ``frame_stack``."""
    overrides = [
        "policy_kwargs:\"importlib.import_module('test_sb3_algorithms').tiny_kwargs()\"",
        "callback:[{'hindex_sb3.callbacks.EMABatchNormCallback': {'momentum': 0.1}}]",
    ]
    if obs_mode == "rgb":
        overrides += ["policy:'CnnPolicy'", "normalize:False", "frame_stack:2"]
    argv = [
        "train.py", "--gym-packages", "hindex_sb3", "--env", "HInDex/Door-v0", "--algo", "ppo",
        "--conf-file", "hindex_sb3.hyperparams.ppo_pixels", "-n", "16", "-f", str(tmp_path), "--seed", "0",
        "--eval-freq", "-1", "--vec-env", "dummy", "--device", "cpu",
        "--env-kwargs", f"obs_mode:'{obs_mode}'", "image_size:24",
        "-params", "n_envs:1", "n_steps:8", "batch_size:8", "n_epochs:1", *overrides,
    ]  # fmt: skip
    monkeypatch.syspath_prepend(str(TESTS))
    monkeypatch.setattr(sys, "argv", argv)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rl_zoo3_train.train()
    run = _run_dir(tmp_path)
    config = dict(yaml.unsafe_load((run / "HInDex-Door-v0" / "config.yml").read_text()))
    assert config["callback"] == [{"hindex_sb3.callbacks.EMABatchNormCallback": {"momentum": 0.1}}]
    assert (run / "HInDex-Door-v0" / "vecnormalize.pkl").is_file() == (obs_mode == "pixels")
    model = PPO.load(run / "HInDex-Door-v0.zip", device="cpu")
    ext = model.policy.features_extractor
    assert isinstance(ext, HIndexExtractor) and ext.encoder.spec.name == "tiny_bn_resnet"
    assert ext.is_dict == (obs_mode == "pixels") and ext.n_frames == (2 if obs_mode == "rgb" else 1)
    bn = ext.encoder.backbone.bn1
    assert int(bn.num_batches_tracked) == 16  # one EMA-BN update per environment step, saved with the model
    assert not torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))


def test_state_file_trains_from_the_command_line(tmp_path):
    """The documented command in a fresh interpreter, with RL Zoo's n_timesteps override (``-n``); ~17 s."""
    command = [
        sys.executable, "-m", "rl_zoo3.train", "--gym-packages", "hindex_sb3", "--env", "HInDex/Door-v0",
        "--algo", "ppo", "--conf-file", "hindex_sb3.hyperparams.ppo", "-n", "256", "-f", str(tmp_path),
        "--seed", "0", "--eval-freq", "-1", "--vec-env", "dummy", "--device", "cpu",
        "-params", "n_envs:2", "n_steps:64", "batch_size:64", "n_epochs:1",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    run = _run_dir(tmp_path)
    model = PPO.load(run / "HInDex-Door-v0.zip", device="cpu")
    assert model.num_timesteps == 256 and model.observation_space.shape == (39,)
    assert (run / "HInDex-Door-v0" / "vecnormalize.pkl").is_file()
