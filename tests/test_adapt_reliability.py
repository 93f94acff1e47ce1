"""``hindex adapt`` when things go wrong: changed settings on resume, divergence, damaged files, refused starts that
must create nothing, folders that hold someone else's files, and frames collected with other settings.

The library-level tests build a tiny :class:`Adapter` (32 x 32 input, batch 2, random weights); the end-to-end ones
use the command's cheapest settings and refuse before training wherever they can.
"""

from __future__ import annotations

import json
import os
import zipfile

import numpy as np
import pytest
import torch

from hindex_sb3.adapt import (
    TERM_NAMES,
    AdaptConfig,
    Adapter,
    AdaptError,
    FrameDataset,
    KeypointModel,
    PerceptualLoss,
    adapt,
    collect_frames,
    vgg16_features,
)
from hindex_sb3.adapt import figures as figs
from hindex_sb3.cli import main

SIZE = 32
TINY = [
    "--weights", "random", "--vgg-weights", "random", "--episodes", "2", "--max-steps", "3", "--image-size", "32",
    "--batch-size", "2", "--calibrate-batches", "1", "--no-progress", "--no-figures",
]  # fmt: skip
BASE = {
    "weights": "random",
    "vgg_weights": "random",
    "episodes": 2,
    "max_steps": 3,
    "image_size": SIZE,
    "batch_size": 2,
    "calibrate_batches": 1,
    "iterations": 1,
    "progress_bar": False,
    "figures": False,
}


@pytest.fixture(scope="module")
def frames() -> FrameDataset:
    rng = np.random.default_rng(0)
    return FrameDataset.from_episodes([rng.integers(0, 255, (5, 3, 37, 37), dtype=np.uint8) for _ in range(2)])


def tiny_adapter(frames: FrameDataset, vgg_seed: int = 0, **kwargs) -> Adapter:
    torch.manual_seed(vgg_seed)
    vgg = vgg16_features(None)
    torch.manual_seed(0)
    model = KeypointModel(image_size=SIZE)
    return Adapter(model, PerceptualLoss(vgg), frames, batch_size=2, seed=0, **kwargs)


def test_resume_refuses_other_vgg16_weights_and_damaged_checkpoints(frames, tmp_path):
    adapter = tiny_adapter(frames)
    adapter.step()
    ckpt = adapter.save_checkpoint(tmp_path / "latest.pt")
    # other VGG16 weights (e.g. random first, a file on resume): the loss, hence every later iteration, differs
    with pytest.raises(AdaptError, match=r"vgg_weights \(--vgg-weights\)"):
        tiny_adapter(frames, vgg_seed=1).load_checkpoint(ckpt)
    other = tiny_adapter(frames)
    # truncated file: one AdaptError, not a CheckpointError traceback
    data = ckpt.read_bytes()
    (tmp_path / "trunc.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(AdaptError, match="damaged or unreadable"):
        other.load_checkpoint(tmp_path / "trunc.pt")
    # a checkpoint without its settings: one AdaptError, not a KeyError
    state = torch.load(ckpt, weights_only=True)
    del state["settings"]
    torch.save(state, tmp_path / "nosettings.pt")
    with pytest.raises(AdaptError, match="incomplete"):
        other.load_checkpoint(tmp_path / "nosettings.pt")
    assert other.load_checkpoint(ckpt) == {} and other.iteration == 1


def test_a_nan_loss_stops_before_the_step_and_keeps_the_last_good_checkpoint(frames, tmp_path):
    from hindex_sb3.adapt.errors import NonFiniteLossError

    adapter = tiny_adapter(frames)
    adapter.run(2, checkpoint_path=tmp_path / "latest.pt", checkpoint_every=1, progress=False)
    good = (tmp_path / "latest.pt").read_bytes()
    with torch.no_grad():
        next(p for p in adapter.model.backbone.parameters() if p.requires_grad).fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match=r"iteration 3 .*--lr") as info:
        adapter.run(4, checkpoint_path=tmp_path / "latest.pt", checkpoint_every=1, progress=False)
    assert info.value.iteration == 3 and adapter.iteration == 2 and len(adapter.history["fixed"]) == 2
    assert (tmp_path / "latest.pt").read_bytes() == good
    with pytest.raises(NonFiniteLossError):  # a diverged state never replaces a good checkpoint
        adapter.save_checkpoint(tmp_path / "latest.pt")
    assert (tmp_path / "latest.pt").read_bytes() == good


def test_figures_are_written_atomically(tmp_path):
    watch = tmp_path / "elsewhere.png"
    watch.write_bytes(b"someone else's file")
    os.link(watch, tmp_path / "loss.png")  # an in-place write would change the linked file too
    history = {"loss": [1.0, 0.9], "fixed": [1.0, 0.5], **{t: [0.1, 0.05] for t in TERM_NAMES}}
    figs.loss_figure(history, tmp_path / "loss.png")
    assert watch.read_bytes() == b"someone else's file"
    assert (tmp_path / "loss.png").read_bytes().startswith(b"\x89PNG")
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]


def test_a_truncated_policy_npz_is_a_value_error(tmp_path):
    np.savez(tmp_path / "demos.npz", n_demos=np.asarray(1), x=np.zeros(1000))
    data = (tmp_path / "demos.npz").read_bytes()
    (tmp_path / "trunc.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"trunc\.npz") as info:
        collect_frames("HInDex/Door-v0", str(tmp_path / "trunc.npz"), 1, max_steps=1, env_kwargs={"image_size": 37})
    assert not isinstance(info.value, zipfile.BadZipFile)


def test_refused_starts_create_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("HINDEX_SB3_OFFLINE", "1")
    monkeypatch.setenv("HINDEX_SB3_HOME", str(tmp_path / "cache"))
    with pytest.raises(AdaptError, match="pose_shape_best"):
        adapt(AdaptConfig("door", **{**BASE, "weights": "default"}, out_dir=str(tmp_path / "a")))
    assert not (tmp_path / "a").exists()
    with pytest.raises(AdaptError, match="no checkpoint"):
        adapt(AdaptConfig("door", **BASE, resume=True, out_dir=str(tmp_path / "b")))
    assert not (tmp_path / "b").exists()


def test_a_folder_holding_other_files_is_not_overwritten(tmp_path, capsys):
    out = tmp_path / "theirs"
    out.mkdir()
    (out / "summary.json").write_text('{"mine": 1}')
    assert main(["adapt", "door", *TINY, "--iterations", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "summary.json" in err and "another --out" in err and "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == ["summary.json"]
    assert json.loads((out / "summary.json").read_text()) == {"mine": 1}


def door_frames(out, **meta) -> None:
    """``out/frames.npz`` as a tiny ``hindex adapt door`` would have collected it (scripted, 2 x 4 frames of 37)."""
    recorded = {
        "env_id": "HInDex/Door-v0",
        "policy": "scripted:door",
        "n_episodes": 2,
        "seed": 0,
        "max_steps": 3,
        "env_kwargs": {"obs_mode": "all", "image_size": 37},
        **meta,
    }
    FrameDataset.from_episodes([np.zeros((4, 3, 37, 37), np.uint8)] * 2, recorded).save(out / "frames.npz")


def test_frames_collected_with_other_settings_are_refused_naming_them(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    door_frames(out)
    (out / "frames.npz.partial.npz").write_bytes(b"a kill during collection")
    args = ["adapt", "door", *TINY, "--iterations", "1", "--out", str(out)]
    assert main([*args, "--policy", "random", "--camera", "fixed", "--env-kwargs", '{"reward_type": "sparse"}']) == 2
    err = capsys.readouterr().err
    assert "--policy" in err and "--env-kwargs/--camera" in err and "--episodes" not in err, err
    assert not (out / "frames.npz.partial.npz").exists()  # the stale temporary file is gone
    assert sorted(p.name for p in out.iterdir()) == ["frames.npz"]
    # a run killed before its first checkpoint: --resume says that a plain rerun reuses the frames
    assert main([*args, "--resume"]) == 2
    assert "without --resume" in capsys.readouterr().err


def test_cli_resume_refuses_changed_settings_and_a_smaller_target(tmp_path, capsys):
    out = tmp_path / "door"
    args = ["adapt", "door", *TINY, "--iterations", "3", "--out", str(out)]
    assert main(args) == 0
    capsys.readouterr()
    vgg_file = tmp_path / "vgg.pth"
    torch.manual_seed(5)
    torch.save(vgg16_features(None).state_dict(), vgg_file)
    changed = [a if a != "random" or args[i - 1] != "--vgg-weights" else str(vgg_file) for i, a in enumerate(args)]
    assert main([*changed, "--resume"]) == 2
    assert "--vgg-weights" in capsys.readouterr().err
    assert main([*args, "--resume", "--calibrate-batches", "2"]) == 2
    assert "--calibrate-batches" in capsys.readouterr().err
    assert main([*args, "--resume", "--deterministic"]) == 2
    assert "--deterministic" in capsys.readouterr().err
    smaller = [a if args[i - 1] != "--iterations" else "2" for i, a in enumerate(args)]
    assert main([*smaller, "--resume"]) == 2
    assert "already done 3; ask for 3 or more" in capsys.readouterr().err
    # history.json and summary.json are replaced, not edited in place, and are strict JSON
    watch = tmp_path / "watch.json"
    os.link(out / "summary.json", watch)
    before = watch.read_text()
    assert main([*args, "--resume"]) == 0
    assert watch.read_text() == before
    summary = json.loads((out / "summary.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    assert summary["iterations"] == 3 and "RANDOM VGG16 (loss not perceptual)" in summary["labels"]


def test_cli_a_diverging_run_stops_with_one_message_and_keeps_its_last_checkpoint(tmp_path, capsys):
    out = tmp_path / "nan"
    args = ["adapt", "door", *TINY, "--iterations", "15", "--lr", "1.0", "--checkpoint-every", "1", "--out", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "the loss became nan at iteration 2" in err and "--lr" in err and "Traceback" not in err, err
    assert "keeps iteration 1" in err
    state = torch.load(out / "checkpoints" / "latest.pt", weights_only=True)
    floats = [v for v in state["model"].values() if v.is_floating_point()]
    assert state["iteration"] == 1 and all(torch.isfinite(v).all() for v in floats)
    assert not (out / "adapted_encoder.pth").exists() and not (out / "summary.json").exists()


@pytest.mark.parametrize("suffix", ["", ".zip"])
def test_an_sb3_model_named_with_or_without_zip_is_loaded(tmp_path, suffix):
    """SB3's ``save("m")`` writes ``m.zip`` and ``load("m")`` finds it; ``--policy sac:m`` said "no such file"."""
    import gymnasium as gym
    from stable_baselines3 import PPO

    from hindex_sb3.adapt.frames import resolve_policy

    env = gym.make("HInDex/Door-v0", obs_mode="state")
    try:
        model = PPO("MlpPolicy", env, n_steps=8, seed=0)
        model.save(tmp_path / "m")
        spec = resolve_policy(f"ppo:{tmp_path / 'm'}{suffix}", env, deterministic=True)
        obs, _ = env.reset(seed=0)
        assert np.array_equal(spec.act(obs), model.predict(obs, deterministic=True)[0])
        assert spec.label == f"ppo:m{suffix}"
        with pytest.raises(FileNotFoundError, match="absent"):
            resolve_policy(f"sac:{tmp_path / 'absent'}", env)
        with pytest.raises(ValueError, match="unknown SB3 algorithm 'nope'"):
            resolve_policy(f"nope:{tmp_path / 'm.zip'}", env)
    finally:
        env.close()


def test_overwrite_replaces_a_finished_run_only_once_its_weights_load(tmp_path, capsys):
    """``--overwrite``, as ``hindex train`` has it: no refused start deletes the old run, nothing foreign is deleted."""
    out = tmp_path / "door"
    args = ["adapt", "door", *TINY, "--out", str(out)]
    assert main([*args, "--iterations", "2", "--seed", "1"]) == 0
    first = json.loads((out / "summary.json").read_text())
    assert main([*args, "--iterations", "1"]) == 2
    assert "--overwrite to replace it" in capsys.readouterr().err
    missing = [a if args[i - 1] != "--weights" else str(tmp_path / "absent.pth") for i, a in enumerate(args)]
    assert main([*missing, "--iterations", "1", "--overwrite"]) == 2  # refused while loading weights: old run intact
    assert json.loads((out / "summary.json").read_text()) == first
    assert main([*args, "--iterations", "1", "--overwrite", "--resume"]) == 2
    assert "choose one" in capsys.readouterr().err
    assert main([*args, "--iterations", "1", "--overwrite"]) == 0
    second = json.loads((out / "summary.json").read_text())
    assert second["iterations"] == 1 and second["dataset"]["meta"]["seed"] == 0  # frames collected anew, for seed 0
    (out / "notes.txt").write_text("mine")
    assert main([*args, "--iterations", "1", "--overwrite"]) == 2
    assert "notes.txt" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "mine" and json.loads((out / "summary.json").read_text()) == second
