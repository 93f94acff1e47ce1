"""Weight files and the weight cache under crashes, concurrency and damage (ninth-session audit; docs/reliability.md).

Everything here runs offline: downloads are faked by replacing ``torch.hub.download_url_to_file``.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import threading
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import DummyVecEnv
from synthetic_checkpoints import save
from test_reliability_weights import (  # the tiny encoder, registered while this module runs, and the offline cache
    _TINY_WEIGHTS,
    TINY,
    _offline_cache,  # noqa: F401 (an autouse fixture)
    _PixelEnv,
    _tiny_encoder_registered,  # noqa: F401 (an autouse fixture)
    _tiny_state,
)
from torch import nn

from hindex_sb3.encoders import CheckpointError, RandomWeightsWarning, create_encoder
from hindex_sb3.encoders import weights as weights_module
from hindex_sb3.encoders.weights import (
    WeightsError,
    WeightsUnavailableError,
    download,
    read_adapted_checkpoint,
    save_adapted_checkpoint,
)
from hindex_sb3.extractor import HIndexExtractor


def _serialised(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------------------------------
# 1. save_adapted_checkpoint is atomic


def test_an_adapted_checkpoint_save_killed_midway_leaves_the_previous_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "out" / "adapted_encoder.pth"
    first = _tiny_state(seed=1)
    save_adapted_checkpoint(path, first, {"encoder": TINY})
    real_save = torch.save

    def killed_midway(obj, f, *args, **kwargs):  # writes half the bytes, then the process "dies"
        buffer = io.BytesIO()
        real_save(obj, buffer)
        half = buffer.getvalue()[:1000]
        if isinstance(f, str | os.PathLike):
            Path(f).write_bytes(half)
        else:
            f.write(half)
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        save_adapted_checkpoint(path, _tiny_state(seed=2), {"encoder": TINY})
    monkeypatch.setattr(torch, "save", real_save)
    state, provenance = read_adapted_checkpoint(path)  # the old export, whole
    assert provenance == {"encoder": TINY}
    assert all(torch.equal(state[k], first[k]) for k in first)
    assert sorted(p.name for p in path.parent.iterdir()) == ["adapted_encoder.pth"]  # no temporary left behind


# ---------------------------------------------------------------------------------------------------------------------
# 2. Several processes filling the cache at once


def test_concurrent_downloads_of_one_file_all_succeed(monkeypatch):
    monkeypatch.delenv("HINDEX_SB3_OFFLINE")
    payload = _serialised(_tiny_state(seed=3))
    n = 4
    all_moved = threading.Barrier(n)

    def fake_download(url, dst, hash_prefix=None, progress=True):
        # like torch.hub: its own temporary file, then a move onto dst; the barrier makes every download finish
        # before any of them is moved into the cache, the race the shared ".partial" name lost
        with tempfile.NamedTemporaryFile(dir=Path(dst).parent, delete=False) as f:
            f.write(payload)
        shutil.move(f.name, dst)
        all_moved.wait(timeout=20)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    results: list[object] = [None] * n

    def worker(i: int) -> None:
        try:
            results[i] = download(_TINY_WEIGHTS, progress=False)
        except BaseException as err:  # collected and asserted below
            results[i] = err

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert results == [_TINY_WEIGHTS.cache_path] * n, results
    assert _TINY_WEIGHTS.cache_path.read_bytes() == payload
    assert sorted(p.name for p in _TINY_WEIGHTS.cache_path.parent.iterdir()) == [_TINY_WEIGHTS.file_name]


def test_a_failed_download_uses_the_file_another_process_placed_meanwhile(monkeypatch):
    monkeypatch.delenv("HINDEX_SB3_OFFLINE")
    payload = _serialised(_tiny_state(seed=4))

    def other_process_wins(url, dst, hash_prefix=None, progress=True):
        _TINY_WEIGHTS.cache_path.write_bytes(payload)  # another process's complete, checked file lands
        raise urllib.error.URLError("connection reset by peer")

    monkeypatch.setattr(torch.hub, "download_url_to_file", other_process_wins)
    assert download(_TINY_WEIGHTS, progress=False) == _TINY_WEIGHTS.cache_path
    assert create_encoder(TINY).weights_source == str(_TINY_WEIGHTS.cache_path)


# ---------------------------------------------------------------------------------------------------------------------
# 3. An unusable cache folder is a weights error (deferred like a missing file)


def _home_is_a_file(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "home_file"
    home.write_text("not a folder")
    monkeypatch.setenv("HINDEX_SB3_HOME", str(home))
    monkeypatch.delenv("HINDEX_SB3_OFFLINE")
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: pytest.fail("nowhere to download to"))
    return home


def test_a_cache_home_that_is_a_file_is_a_weights_error_naming_the_variable_and_folder(tmp_path, monkeypatch):
    home = _home_is_a_file(tmp_path, monkeypatch)
    with pytest.raises(WeightsUnavailableError, match=r"HINDEX_SB3_HOME") as info:
        create_encoder(TINY)
    assert str(home / "weights") in str(info.value)
    assert isinstance(info.value, weights_module.WeightsCacheError)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_cache_is_a_weights_error(tmp_path, monkeypatch):
    monkeypatch.delenv("HINDEX_SB3_OFFLINE")
    home = tmp_path / "home"
    (home / "weights").mkdir(parents=True)
    (home / "weights").chmod(0o500)
    try:
        with pytest.raises(WeightsError, match=r"cannot be created or written"):
            download(_TINY_WEIGHTS, progress=False)
    finally:
        (home / "weights").chmod(0o700)


def test_a_saved_model_loads_when_the_cache_home_is_a_file(tmp_path, monkeypatch):
    kwargs = {"features_extractor_class": HIndexExtractor, "features_extractor_kwargs": {"encoder": TINY}}
    cached = _TINY_WEIGHTS.cache_path
    cached.parent.mkdir(parents=True, exist_ok=True)
    save(_tiny_state(seed=5), cached)
    model = PPO("CnnPolicy", DummyVecEnv([_PixelEnv]), n_steps=4, batch_size=4, n_epochs=1, policy_kwargs=kwargs)
    model.save(tmp_path / "m.zip")
    _home_is_a_file(tmp_path, monkeypatch)
    with pytest.warns(RandomWeightsWarning, match="HINDEX_SB3_HOME"):
        loaded = PPO.load(tmp_path / "m.zip", env=DummyVecEnv([_PixelEnv]))
    obs = loaded.env.reset()
    np.testing.assert_allclose(model.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0])


# ---------------------------------------------------------------------------------------------------------------------
# 4. A damaged file is not described as one holding Python objects


def test_a_random_bytes_weight_file_is_damaged_and_never_advised_to_load_unsafely(tmp_path):
    path = tmp_path / "random.pth"
    path.write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(CheckpointError, match=r"random\.pth is not a readable PyTorch checkpoint") as info:
        create_encoder(TINY, weights=path)
    message = str(info.value)
    assert "damaged or not a torch file" in message
    assert "weights_only=False" not in message and "Python objects" not in message


def test_a_file_holding_python_objects_names_the_refused_global(tmp_path):
    path = tmp_path / "module.pth"
    torch.save({"model": nn.Linear(2, 2)}, path)
    with pytest.raises(CheckpointError, match=r"holds Python objects besides tensors \(torch\.nn\.modules\.linear"):
        create_encoder(TINY, weights=path)


# ---------------------------------------------------------------------------------------------------------------------
# 5. Negative BatchNorm running variance


def test_a_negative_running_var_is_refused_naming_the_key(tmp_path):
    state = _tiny_state()
    state["1.running_var"][1] = -0.5
    path = save(state, tmp_path / "negvar.pth")
    with pytest.raises(CheckpointError, match=r"'1\.running_var' holds 1 negative running variance") as info:
        create_encoder(TINY, weights=path)
    assert str(path) in str(info.value)
    with pytest.raises(ValueError, match=r"negative BatchNorm running variances in 1\.running_var"):
        save_adapted_checkpoint(tmp_path / "adapted.pth", state, {"encoder": TINY})
    assert not (tmp_path / "adapted.pth").exists()
