"""``adapt()`` is library code: its progress lines go to ``logging``, never to stdout (``hindex adapt`` shows them)."""

from __future__ import annotations

import logging

from hindex_sb3.adapt import AdaptConfig, adapt


def test_adapt_logs_its_progress_and_prints_nothing(tmp_path, capsys, caplog):
    cfg = AdaptConfig(
        "door",
        weights="random",
        vgg_weights="random",
        episodes=2,
        max_steps=3,
        image_size=32,
        batch_size=2,
        calibrate_batches=1,
        checkpoint_every=0,
        iterations=1,
        out_dir=str(tmp_path / "run"),
        figures=False,
        progress_bar=False,
    )
    with caplog.at_level(logging.INFO, logger="hindex_sb3.adapt"):
        summary = adapt(cfg)
    assert summary["iterations"] == 1
    assert capsys.readouterr().out == ""
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("hindex_sb3.adapt")]
    assert any("53,120 of 23,508,032 parameters trainable" in m for m in messages), messages
    assert any(m.startswith("frames: ") for m in messages) and any(m.startswith("keypoints: ") for m in messages)
