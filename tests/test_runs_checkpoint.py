"""Checkpoints are tensors + strict JSON: exact round trips, and no file can make loading execute code."""

from __future__ import annotations

import base64
import json
import pickle
import zipfile

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save
from stable_baselines3.common.env_util import make_vec_env

from hindex_sb3._io import write_json
from hindex_sb3.cli import main
from hindex_sb3.demos import rollout, save_npz
from hindex_sb3.ema_bn import all_modules
from hindex_sb3.runs.build import build_model, env_spaces
from hindex_sb3.runs.checkpoint import (
    CheckpointError,
    load_checkpoint,
    read_checkpoint_info,
    save_checkpoint,
)
from hindex_sb3.runs.config import TrainConfig
from hindex_sb3.runs.paper import resolve_settings


class _Payload:
    """Unpickling this creates ``marker``: proof that a loader executed code from a file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def demo_file(tmp_path_factory):
    demos = rollout(
        "HInDex/Door-v0", lambda obs: np.zeros(28), 2, env_kwargs={"obs_mode": "state", "max_episode_steps": 6}
    )
    return save_npz(demos, tmp_path_factory.mktemp("demos") / "door.npz")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, demo_file):
    """A state DAPG after BC and one iteration, and its checkpoint."""
    cfg = resolve_settings(
        TrainConfig(task="door", encoder="state", demos=str(demo_file), trajectories=2, horizon=5, iterations=1),
        "HInDex/Door-v0",
    )
    venv = make_vec_env("HInDex/Door-v0", n_envs=1, seed=0, env_kwargs={"obs_mode": "state", "max_episode_steps": 5})
    from hindex_sb3.runs.demos import load_demos

    model = build_model(cfg, venv, load_demos(cfg, "HInDex/Door-v0"))
    model.learn(n_iterations=1)
    path = save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "model.safetensors", cfg, run_state={"x": 1})
    return model, cfg, path


def test_round_trip_is_exact(trained):
    model, cfg, path = trained
    loaded = load_checkpoint(path)
    assert loaded.config == cfg.replace(resume=None, overwrite=False) and loaded.run_state == {"x": 1}
    new = loaded.model
    for (k, a), (_, b) in zip(model.policy.state_dict().items(), new.policy.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    old_opt, new_opt = model.policy.optimizer.state_dict(), new.policy.optimizer.state_dict()
    assert old_opt["param_groups"] == new_opt["param_groups"]
    for i, entry in old_opt["state"].items():
        for name, value in entry.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(new_opt["state"][i][name])), (i, name)
    assert (new.dapg_iterations, new.num_timesteps, new.bc_done) == (1, model.num_timesteps, True)
    assert new.bc_loss == model.bc_loss
    obs = np.random.default_rng(0).normal(size=(3, 39)).astype(np.float32)
    assert np.array_equal(new.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0])
    info = read_checkpoint_info(path)  # plain strict JSON in the header
    json.dumps(info, allow_nan=False)


def test_a_checkpoint_loads_where_its_demo_file_is_absent(trained, tmp_path):
    """Acting with a model needs its tensors, not the files it was trained from (another machine, a deleted file)."""
    from safetensors import safe_open

    _, _, path = trained
    with safe_open(str(path), framework="pt") as f:
        info = json.loads(f.metadata()["hindex_sb3"])
    info["config"]["demos"] = str(tmp_path / "gone.npz")
    moved = tmp_path / "moved.safetensors"
    moved.write_bytes(save(load_file(str(path)), metadata={"hindex_sb3": json.dumps(info)}))
    loaded = load_checkpoint(moved)
    assert loaded.config.demos.endswith("gone.npz") and loaded.model.dapg_iterations == 1


def test_pixel_checkpoint_carries_the_encoder_and_its_ema_statistics(tmp_path):
    cfg = resolve_settings(
        TrainConfig(task="door", encoder="hindex", weights="random", image_size=32, demos="none"), "HInDex/Door-v0"
    )
    model = build_model(cfg, env_spaces(cfg, "HInDex/Door-v0"))
    bn = next(m for m in all_modules(model.policy.features_extractor) if isinstance(m, torch.nn.BatchNorm2d))
    with torch.no_grad():
        bn.running_mean.normal_()  # as if EMA-BN had moved the statistics during RL
    path = save_checkpoint(model, tmp_path / "pix.safetensors", cfg)
    new = load_checkpoint(path).model
    new_bn = next(m for m in all_modules(new.policy.features_extractor) if isinstance(m, torch.nn.BatchNorm2d))
    assert torch.equal(new_bn.running_mean, bn.running_mean)
    for (k, a), (_, b) in zip(model.policy.state_dict().items(), new.policy.state_dict().items(), strict=True):
        assert torch.equal(a, b), k


def _crafted_sb3_zip(model, path, marker):
    """A DAPG zip whose ``data`` holds a pickled payload (SB3 unpickles ``:serialized:`` entries on load)."""
    model.save(path)
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    data = json.loads(members["data"])
    data["policy_class"][":serialized:"] = base64.b64encode(pickle.dumps(_Payload(marker))).decode()
    members["data"] = json.dumps(data).encode()
    with zipfile.ZipFile(path, "w") as z:
        for name, content in members.items():
            z.writestr(name, content)
    return path


def test_sb3_zip_and_pickles_are_refused_without_running_them(trained, tmp_path):
    model, _, _ = trained
    marker = tmp_path / "pwned"
    evil_zip = _crafted_sb3_zip(model, tmp_path / "evil.zip", marker)
    evil_pickle = tmp_path / "evil.safetensors"
    evil_pickle.write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(CheckpointError, match="zip archive"):
        load_checkpoint(evil_zip)
    with pytest.raises(CheckpointError, match="pickle"):
        load_checkpoint(evil_pickle)
    assert not marker.exists()


def test_pickle_bytes_where_a_tensor_belongs_are_refused(trained, tmp_path):
    _, _, path = trained
    marker = tmp_path / "pwned"
    tensors = load_file(str(path))
    payload = pickle.dumps(_Payload(marker))
    tensors["policy/log_std"] = torch.frombuffer(bytearray(payload), dtype=torch.uint8)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
    crafted = tmp_path / "crafted.safetensors"
    crafted.write_bytes(save(tensors, metadata=metadata))
    with pytest.raises(CheckpointError, match="does not match"):
        load_checkpoint(crafted)
    assert not marker.exists()


def test_non_finite_tensors_and_json_are_refused(trained, tmp_path):
    _, _, path = trained
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
    tensors = load_file(str(path))
    bad = dict(tensors)
    bad["policy/log_std"] = torch.full_like(tensors["policy/log_std"], float("nan"))
    (tmp_path / "nan.safetensors").write_bytes(save(bad, metadata=metadata))
    with pytest.raises(CheckpointError, match="policy/log_std"):
        load_checkpoint(tmp_path / "nan.safetensors")
    meta = dict(metadata)
    meta["hindex_sb3"] = meta["hindex_sb3"].replace('"num_timesteps": ', '"num_timesteps": NaN, "x": ')
    (tmp_path / "nanjson.safetensors").write_bytes(save(tensors, metadata=meta))
    with pytest.raises(CheckpointError, match="strict JSON"):
        load_checkpoint(tmp_path / "nanjson.safetensors")
    info = json.loads(metadata["hindex_sb3"])
    info["config"]["gamma"] = 7.0
    (tmp_path / "badcfg.safetensors").write_bytes(save(tensors, metadata={"hindex_sb3": json.dumps(info)}))
    with pytest.raises(CheckpointError, match="gamma"):
        load_checkpoint(tmp_path / "badcfg.safetensors")


def test_adapt_policy_dapg_uses_the_safe_loader(trained, tmp_path):
    import gymnasium as gym

    from hindex_sb3.adapt.frames import resolve_policy

    model, _, path = trained
    marker = tmp_path / "pwned"
    evil_zip = _crafted_sb3_zip(model, tmp_path / "evil.zip", marker)
    env = gym.make("HInDex/Door-v0", obs_mode="state")
    try:
        with pytest.raises(CheckpointError):
            resolve_policy(f"dapg:{evil_zip}", env)
        assert not marker.exists()
        spec = resolve_policy(f"dapg:{path}", env, deterministic=True)
        obs, _ = env.reset(seed=0)
        assert np.array_equal(spec.act(obs), model.predict(obs, deterministic=True)[0])
    finally:
        env.close()


def test_train_resume_refuses_an_sb3_zip(trained, tmp_path, capsys):
    model, _, _ = trained
    marker = tmp_path / "pwned"
    evil_zip = _crafted_sb3_zip(model, tmp_path / "evil.zip", marker)
    code = main(["train", "door", "--encoder", "state", "--resume", str(evil_zip), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "zip archive" in err and "Traceback" not in err
    assert not marker.exists()


def test_strict_json_helper_refuses_nan_and_keeps_the_old_file(tmp_path):
    path = write_json(tmp_path / "a.json", {"x": 1})
    with pytest.raises(ValueError, match=r"\$\.y\.z"):
        write_json(path, {"x": 2, "y": {"z": float("nan")}})
    assert json.loads(path.read_text()) == {"x": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]  # no temporary file left behind


def test_checkpoint_write_is_atomic(trained, tmp_path, monkeypatch):
    model, cfg, _ = trained
    path = save_checkpoint(model, tmp_path / "c.safetensors", cfg)
    before = path.read_bytes()
    import hindex_sb3._io as io_mod

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # as if killed between writing and renaming

    monkeypatch.setattr(io_mod.os, "replace", crash)
    model.dapg_iterations += 1
    try:
        with pytest.raises(KeyboardInterrupt):
            save_checkpoint(model, path, cfg)
    finally:
        model.dapg_iterations -= 1
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.safetensors"]


def test_scalar_state_of_the_algorithm_travels_but_cannot_be_retyped(trained, tmp_path):
    """A counter the algorithm keeps (e.g. where the next episode seeds start) is restored without being listed;
    a file cannot add attributes, retype them, or override configuration-derived ones."""
    model, cfg, _ = trained
    model._episode_seed_base = 1234  # as an algorithm version with per-episode seeding might keep
    try:
        path = save_checkpoint(model, tmp_path / "s.safetensors", cfg)
    finally:
        del model._episode_seed_base
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        info = json.loads(f.metadata()["hindex_sb3"])
    assert info["algorithm"]["attributes"]["_episode_seed_base"] == 1234
    assert "step_size" not in info["algorithm"]["attributes"]
    info["algorithm"]["attributes"].update({"_n_updates": "many", "policy": 3, "step_size": 9.0})
    crafted = tmp_path / "c.safetensors"
    crafted.write_bytes(save(load_file(str(path)), metadata={"hindex_sb3": json.dumps(info)}))
    new = load_checkpoint(crafted).model
    assert new._n_updates == model._n_updates and new.step_size == cfg.step_size
    assert not isinstance(new.policy, int)


def test_a_run_state_that_no_load_could_read_is_refused_at_save(trained, tmp_path):
    model, cfg, _ = trained
    with pytest.raises(TypeError, match="run_state must be a dict or None, got int"):
        save_checkpoint(model, tmp_path / "m.safetensors", cfg, run_state=5)  # saved, then refused by every load
    with pytest.raises(IsADirectoryError, match="is a directory; give a file name"):
        save_checkpoint(model, tmp_path, cfg)  # the error named the temporary '.partial' file
    assert not (tmp_path / "m.safetensors").exists() and list(tmp_path.iterdir()) == []
