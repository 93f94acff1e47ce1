"""What a finished run leaves for people: the learning-curve plot, an evaluation video, the summary."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import gymnasium as gym

from hindex_sb3._io import atomic_write_bytes
from hindex_sb3.episodes import run_episode
from hindex_sb3.runs.build import make_env_kwargs
from hindex_sb3.runs.config import TrainConfig

__all__ = ["plot_curve", "record_video", "weights_label"]


def plot_curve(curve: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    its = [c["iteration"] for c in curve]
    fig, ax1 = plt.subplots(figsize=(6, 3.5))
    ax1.plot(its, [c["eval_success"] for c in curve], "o-", color="tab:blue", label="eval success")
    ax1.set_xlabel("iteration")
    ax1.set_ylabel("success rate", color="tab:blue")
    ax1.set_ylim(-0.05, 1.05)
    ax2 = ax1.twinx()
    ax2.plot(its, [c["eval_return"] for c in curve], "s--", color="tab:orange", label="eval return")
    ax2.set_ylabel("return", color="tab:orange")
    ax1.set_title(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, dpi=110, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def record_video(model: Any, env_id: str, cfg: TrainConfig, path: Path) -> Path:
    """One mean-action episode rendered from the observation camera, as an animated GIF."""
    kwargs = make_env_kwargs(cfg)
    kwargs.setdefault("image_size", cfg.image_size)
    env = gym.make(env_id, render_mode="rgb_array", **kwargs)
    frames = []
    run_episode(
        env,
        lambda obs: model.predict(obs, deterministic=True)[0],
        seed=20_000 + cfg.seed,
        on_reset=lambda obs: frames.append(env.render()),
        on_step=lambda step: frames.append(env.render()),
    )
    env.close()
    from PIL import Image

    images = [Image.fromarray(f) for f in frames]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=40, loop=0)
    return atomic_write_bytes(path, buf.getvalue())


def weights_label(cfg: TrainConfig) -> str | None:
    if cfg.encoder == "state":
        return None
    return "random (NOT pretrained)" if cfg.random_weights else cfg.weights
