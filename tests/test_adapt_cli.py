"""``hindex adapt`` end to end on tiny settings, and the errors a user can run into."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hindex_sb3.adapt import AdaptConfig, AdaptError, FrameDataset, adapt
from hindex_sb3.cli import main
from hindex_sb3.encoders import create_encoder, read_adapted_checkpoint

TINY = [
    "--weights", "random", "--vgg-weights", "random", "--episodes", "2", "--max-steps", "3", "--image-size", "32",
    "--batch-size", "2", "--calibrate-batches", "1", "--checkpoint-every", "0", "--no-progress",
]  # fmt: skip


def test_cli_adapt_writes_encoder_figures_and_provenance(tmp_path, capsys):
    out = tmp_path / "door"
    code = main(["adapt", "door", *TINY, "--iterations", "2", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    assert "53,120 of 23,508,032 parameters trainable (0.23 %" in printed
    for name in ("frames.npz", "adapted_encoder.pth", "keypoints.png", "bn_distribution.png", "loss.png"):
        assert (out / name).is_file(), name
    assert (out / "checkpoints" / "latest.pt").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["iterations"] == 2 and summary["labels"] and "RANDOM" in summary["labels"][0]
    assert summary["dataset"]["n_episodes"] == 2 and summary["dataset"]["meta"]["policy"].startswith("scripted")
    _, provenance = read_adapted_checkpoint(out / "adapted_encoder.pth")
    assert provenance["iterations"] == 2 and provenance["env_id"] == "HInDex/Door-v0"
    assert provenance["base"]["weights"] == "random (NOT pretrained)" and provenance["pair_window"] == 150
    encoder = create_encoder("hindex", weights=out / "adapted_encoder.pth")
    assert encoder(torch.zeros(1, 3, 37, 37, dtype=torch.uint8)).shape == (1, 2048)
    # Running again into the same folder must not silently overwrite a run.
    assert main(["adapt", "door", *TINY, "--iterations", "2", "--out", str(out)]) == 2
    assert "--resume" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_resume_continues_the_iteration_count(tmp_path):
    out = tmp_path / "door"
    assert main(["adapt", "door", *TINY, "--iterations", "2", "--out", str(out)]) == 0
    assert main(["adapt", "door", *TINY, "--iterations", "3", "--resume", "--out", str(out)]) == 0
    assert len(json.loads((out / "history.json").read_text())["fixed"]) == 3
    _, provenance = read_adapted_checkpoint(out / "adapted_encoder.pth")
    assert provenance["iterations"] == 3


def test_missing_weights_offline_stop_with_clear_messages(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HINDEX_SB3_OFFLINE", "1")
    monkeypatch.setenv("HINDEX_SB3_HOME", str(tmp_path / "cache"))
    assert main(["adapt", "door", "--out", str(tmp_path / "a")]) == 2  # FrankMocap base weights
    err = capsys.readouterr().err
    assert "pose_shape_best.pth" in err and "--weights random" in err and str(tmp_path / "cache") in err
    assert main(["adapt", "door", "--weights", "random", "--out", str(tmp_path / "b")]) == 2  # VGG16
    err = capsys.readouterr().err
    assert "vgg16-397923af.pth" in err and "--vgg-weights" in err and "https://download.pytorch.org" in err


def test_wrong_datasets_are_refused(tmp_path):
    episodes = [np.zeros((4, 3, 37, 37), np.uint8)] * 2
    other_task = FrameDataset.from_episodes(episodes, {"env_id": "HInDex/Pen-v0"}).save(tmp_path / "pen.npz")
    small = FrameDataset.from_episodes(episodes, {"env_id": "HInDex/Door-v0"}).save(tmp_path / "small.npz")
    (tmp_path / "empty.npz").write_bytes(b"")
    base = {"weights": "random", "vgg_weights": "random", "iterations": 1, "progress_bar": False, "figures": False}
    with pytest.raises(AdaptError, match="recorded in HInDex/Pen-v0"):
        adapt(AdaptConfig("door", dataset=str(other_task), out_dir=str(tmp_path / "r1"), **base))
    with pytest.raises(AdaptError, match="smaller than the model input"):
        adapt(AdaptConfig("door", dataset=str(small), image_size=64, out_dir=str(tmp_path / "r2"), **base))
    with pytest.raises(AdaptError, match="not a readable frame dataset"):
        adapt(AdaptConfig("door", dataset=str(tmp_path / "empty.npz"), out_dir=str(tmp_path / "r3"), **base))
    with pytest.raises(AdaptError, match="unknown task"):
        adapt(AdaptConfig("laundry", out_dir=str(tmp_path / "r4"), **base))
