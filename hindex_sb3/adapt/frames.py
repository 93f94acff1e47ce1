"""Frame datasets for Stage 2: episodes of uint8 frames from any Gymnasium environment, and training pairs.

H-InDex adapts the encoder on frames of the task's own episodes (50 per task, rendered from an expert policy with
sampled actions, the camera the policy will see). Here a :class:`FrameDataset` holds such episodes compactly:

* ``frames``: one ``(N, 3, H, W)`` uint8 array, all episodes back to back (the format the envs' ``pixels`` use);
* ``episode_starts``: ``(E,)`` offsets of each episode's first frame (episode ``i`` ends where ``i + 1`` starts);
* ``meta``: plain JSON (env id, camera, policy, seed, ...), so a file says where its frames came from.

It is saved as one ``.npz`` (compressed by default: rendered scenes compress several-fold) that loads with
``allow_pickle=False``. A training pair is two *distinct* random frames of one random episode, optionally among its
first ``window`` frames (the authors' ``VIDEO_LENGH_LIMIT``): the first is the source (appearance), the second the
target (keypoints and reconstruction). There is no minimum time gap, as in the reference.

:func:`collect_frames` records episodes of a policy: ``"random"`` actions, ``"scripted"`` (this package's
demonstrators), an expert ``.npz`` (``"expert:PATH"``), a demonstration file replayed from its start states, an SB3
model (``"ppo:PATH.zip"`` or a loaded model), or any callable ``obs -> action``. Every observation is kept, including
the one after the last action (``T + 1`` frames per episode, as the authors' dataset script saved them).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from hindex_sb3._io import read_json, to_json_text
from hindex_sb3._npz import open_npz
from hindex_sb3._validation import check_flag, check_int
from hindex_sb3.episodes import run_episode

__all__ = [
    "FRAMES_FORMAT",
    "FrameDataset",
    "FrameDatasetError",
    "PolicySpec",
    "collect_frames",
    "resolve_policy",
]

FRAMES_FORMAT = "hindex_sb3.frames/1"


class FrameDatasetError(ValueError):
    """A frame dataset that cannot be used: empty, malformed, too-short episodes, or the wrong size for the model."""


@dataclass
class FrameDataset:
    """Episodes of uint8 frames stored back to back (see module docstring)."""

    frames: np.ndarray
    episode_starts: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.frames = np.asarray(self.frames)
        if not isinstance(self.meta, dict):  # a file's meta is JSON: a list there would fail far from the load
            raise FrameDatasetError(f"meta must be a JSON object (a dict), got {type(self.meta).__name__}")
        starts = np.asarray(self.episode_starts)
        if starts.size and starts.dtype.kind not in "iu":  # [0, 2.9] would become [0, 2], ["0", "3"] parsed
            raise FrameDatasetError(f"episode_starts must be integers, got {starts.dtype} values")
        self.episode_starts = starts.astype(np.int64).reshape(-1)
        f, s = self.frames, self.episode_starts
        if f.size == 0 or len(s) == 0:
            raise FrameDatasetError("the frame dataset is empty (no frames or no episodes); collect episodes first")
        if f.dtype != np.uint8 or f.ndim != 4 or f.shape[1] != 3:
            raise FrameDatasetError(f"frames must be uint8 (N, 3, H, W), got {f.dtype} {f.shape}")
        if s[0] != 0 or np.any(np.diff(s) <= 0) or s[-1] >= len(f):
            raise FrameDatasetError(
                f"episode_starts must start at 0 and increase strictly below N={len(f)}, got {s[:8].tolist()}..."
            )
        short = np.flatnonzero(self.episode_lengths < 2)
        if len(short):
            raise FrameDatasetError(
                f"episodes {short[:10].tolist()} have fewer than 2 frames; a training pair needs two distinct frames "
                "of one episode (drop them or record longer episodes)"
            )

    # -- construction / IO ---------------------------------------------------------------------------------------------
    @classmethod
    def from_episodes(cls, episodes: Sequence[np.ndarray], meta: dict[str, Any] | None = None) -> FrameDataset:
        """Stack per-episode frame arrays ``(T_i, 3, H, W)`` (or channel-last ``(T_i, H, W, 3)``) uint8."""
        if not episodes:
            raise FrameDatasetError("no episodes given: the frame dataset would be empty")
        arrays = [_chw(np.asarray(e)) for e in episodes]
        shapes = {a.shape[1:] for a in arrays}
        if len(shapes) != 1:
            raise FrameDatasetError(f"episodes have different frame shapes {sorted(shapes)}")
        lengths = np.array([len(a) for a in arrays], dtype=np.int64)
        starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
        return cls(np.concatenate(arrays), starts, dict(meta or {}))

    def save(self, path: str | os.PathLike, *, compress: bool = True) -> Path:
        """Write one ``.npz`` (``format``, ``frames``, ``episode_starts``, ``meta`` as JSON text)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".partial.npz")
        writer = np.savez_compressed if compress else np.savez
        writer(
            tmp,
            format=np.asarray(FRAMES_FORMAT),
            frames=self.frames,
            episode_starts=self.episode_starts,
            meta=np.asarray(to_json_text(self.meta, indent=None)),  # strict: a NaN in meta is refused
        )
        os.replace(tmp, path)  # a crash mid-write never leaves a file that looks complete
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> FrameDataset:
        """Read a file written by :meth:`save` (no pickles)."""
        path = Path(path)
        if not path.is_file():
            raise FrameDatasetError(f"no frame dataset at {path}")
        try:
            with open_npz(path) as f:  # sizes checked from the headers first: a crafted file is not inflated
                if "format" not in f.files or str(f["format"]) != FRAMES_FORMAT:
                    raise FrameDatasetError(f"{path} is not a {FRAMES_FORMAT} file (keys: {f.files[:6]})")
                return cls(f["frames"], f["episode_starts"], read_json(str(f["meta"]), text=True))
        except FrameDatasetError:
            raise
        except Exception as err:  # truncated/corrupt files surface as OSError, ValueError, EOFError, BadZipFile...
            raise FrameDatasetError(f"{path} is not a readable frame dataset ({type(err).__name__}: {err})") from err

    # -- views ---------------------------------------------------------------------------------------------------------
    @property
    def n_episodes(self) -> int:
        return len(self.episode_starts)

    @property
    def n_frames(self) -> int:
        return len(self.frames)

    @property
    def frame_size(self) -> tuple[int, int]:
        return int(self.frames.shape[2]), int(self.frames.shape[3])

    @property
    def episode_lengths(self) -> np.ndarray:
        return np.diff(np.append(self.episode_starts, len(self.frames)))

    def episode(self, i: int) -> np.ndarray:
        """Frames of episode ``i`` (a view)."""
        start = int(self.episode_starts[i])
        return self.frames[start : start + int(self.episode_lengths[i])]

    def fingerprint(self) -> dict[str, Any]:
        """Cheap identity used to refuse resuming a run on a different dataset."""
        return {
            "n_frames": self.n_frames,
            "n_episodes": self.n_episodes,
            "frame_shape": list(self.frames.shape[1:]),
            "episode_lengths_sum_sq": int((self.episode_lengths.astype(np.int64) ** 2).sum()),
            "checksum": int(self.frames[:: max(1, self.n_frames // 64)].astype(np.int64).sum()),
        }

    def check_image_size(self, image_size: int) -> None:
        """Refuse frames smaller than the model input: the model would train on upsampled blur.

        The model resizes the shorter side to ``image_size * 256/224`` and centre-crops ``image_size`` (the
        ``hindex`` encoder's view at 224), so larger frames of any aspect ratio are fine.
        """
        image_size = check_int("image_size", image_size, minimum=1)  # NaN compared false: any frames passed
        h, w = self.frame_size
        if min(h, w) < image_size:
            need = round(image_size * 256 / 224)
            raise FrameDatasetError(
                f"frames are {h}x{w}, smaller than the model input {image_size}x{image_size}; re-collect the frames "
                f"at a size of at least {image_size} (H-InDex's geometry: {need} for image_size={image_size}), or "
                f"choose image_size <= {min(h, w)}"
            )

    def sample_pairs(
        self, batch_size: int, rng: np.random.Generator, window: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Global indices ``(source, target)`` of ``batch_size`` pairs: a random episode each, two distinct frames
        among its first ``window`` frames (all frames if ``None``)."""
        batch_size = check_int("batch_size", batch_size, minimum=1)
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy Generator (np.random.default_rng(seed)), got {type(rng).__name__}")
        if window is not None:
            window = check_int("window", window, minimum=1)  # 2.9 was taken as a window of 2.9 frames
            if window < 2:
                raise FrameDatasetError(f"window must be >= 2 frames to draw a pair, got {window}")
        episodes = rng.integers(0, self.n_episodes, size=batch_size)
        lengths = self.episode_lengths[episodes]
        if window is not None:
            lengths = np.minimum(lengths, window)
        src = np.empty(batch_size, dtype=np.int64)
        tgt = np.empty(batch_size, dtype=np.int64)
        for b, (e, n) in enumerate(zip(episodes, lengths, strict=True)):
            i, j = rng.choice(int(n), 2, replace=False)
            src[b], tgt[b] = self.episode_starts[e] + i, self.episode_starts[e] + j
        return src, tgt


def _chw(frames: np.ndarray) -> np.ndarray:
    if frames.dtype != np.uint8:
        raise FrameDatasetError(f"frames must be uint8 images, got {frames.dtype}")
    if frames.ndim == 4 and frames.shape[1] == 3:
        return frames
    if frames.ndim == 4 and frames.shape[-1] == 3:
        return np.ascontiguousarray(frames.transpose(0, 3, 1, 2))
    raise FrameDatasetError(f"expected frames (T, 3, H, W) or (T, H, W, 3), got {frames.shape}")


# ---------------------------------------------------------------------------------------------------------------------
# Collection


@dataclass
class PolicySpec:
    """A resolved policy: how to act, and how to start each episode.

    :ivar act: ``obs -> action`` (the observation as the env returns it).
    :ivar label: what the dataset's metadata records (e.g. ``"expert:door-expert-v0.npz (sampled)"``).
    :ivar episodes: for demonstration replays, ``(reset options, actions)`` per episode; ``None`` otherwise.
    :ivar on_reset: called after every ``env.reset`` (scripted demonstrators restart their plan).
    """

    act: Callable[[Any], np.ndarray]
    label: str
    episodes: list[tuple[dict[str, Any], np.ndarray]] | None = None
    on_reset: Callable[[], None] | None = None


def _sb3_algorithm(name: str) -> type:
    if name.lower() == "dapg":
        from hindex_sb3.dapg import DAPG

        return DAPG
    import stable_baselines3

    for attr in dir(stable_baselines3):
        if attr.lower() == name.lower():
            return getattr(stable_baselines3, attr)
    raise ValueError(f"unknown SB3 algorithm {name!r} in the policy spec (e.g. ppo:model.zip, sac:model.zip)")


def _policy_view(obs: Any, space: gym.Space | None, key: str | None) -> Any:
    """What a policy gets: ``obs[key]``, or the Dict keys its observation space has (extra keys break SB3)."""
    if key is not None and isinstance(obs, dict):
        return obs[key]
    if isinstance(space, gym.spaces.Dict) and isinstance(obs, dict):
        return {k: obs[k] for k in space.spaces}
    if isinstance(space, gym.spaces.Box) and isinstance(obs, dict):
        matches = [k for k, v in obs.items() if np.shape(v) == space.shape]
        if len(matches) == 1:
            return obs[matches[0]]
        raise ValueError(f"cannot tell which observation key {list(obs)} the policy (space {space}) takes")
    return obs


def _npz_kind(path: Path) -> str:
    """``expert`` or ``demos``; a damaged or foreign file is a ``ValueError`` naming it (not a zipfile traceback)."""
    with open_npz(path, select=lambda name: False) as f:  # only the member names are read here
        if "fc0_w" in f.files:
            return "expert"
        if "n_demos" in f.files:
            return "demos"
    raise ValueError(f"{path} is neither an expert policy (.npz with fc0_w) nor a demonstration file (n_demos)")


def resolve_policy(
    policy: Any, env: gym.Env, *, seed: int = 0, deterministic: bool = False, policy_obs_key: str | None = None
) -> PolicySpec:
    """Turn a policy description into a :class:`PolicySpec` for ``env``.

    ``policy`` may be ``"random"``; ``"scripted"``; ``"expert:PATH.npz"`` or an expert ``PATH.npz`` (fed
    ``obs["state"]`` when the observation is a dict with a ``state`` key); a demonstration file (``.npz`` with
    ``n_demos``, DAPG ``.pickle``), replayed open-loop from its start states; ``"dapg:PATH.safetensors"`` for a
    ``hindex train`` checkpoint (loaded without executing anything); ``"ALGO:PATH.zip"`` for an SB3 model (``ppo``,
    ``sac``, ...: SB3 zips unpickle Python objects, so they are code, to load only when trusted); or an object with
    ``predict`` (SB3) or a callable.

    :param deterministic: mean actions for experts / SB3 models. The authors sampled (``exploration`` mode), which
        gives more varied frames, so the default is ``False``.
    """
    check_flag("deterministic", deterministic)  # "no" would be truthy: mean actions where samples were asked for
    seed = check_int("seed", seed, minimum=0)
    if isinstance(policy, str | Path):
        return _named_policy(str(policy), env, seed, deterministic, policy_obs_key)
    if hasattr(policy, "predict"):
        space = getattr(policy, "observation_space", None)
        return PolicySpec(
            lambda obs: policy.predict(_policy_view(obs, space, policy_obs_key), deterministic=deterministic)[0],
            f"sb3:{type(policy).__name__}",
            on_reset=getattr(policy, "reset", None) if callable(getattr(policy, "reset", None)) else None,
        )
    if callable(policy):
        return PolicySpec(
            lambda obs: policy(_policy_view(obs, None, policy_obs_key)), f"callable:{getattr(policy, '__name__', '?')}"
        )
    raise TypeError(f"cannot act with {type(policy).__name__}; see resolve_policy's docstring for what is accepted")


def _saved_model(kind: str, rest: str, text: str) -> Any:
    """The model an ``ALGO:PATH`` spec names; SB3 finds ``PATH`` or ``PATH.zip``, so both are accepted here too."""
    if kind.lower() == "dapg":  # hindex train checkpoints: tensors + JSON, nothing executed on load
        from hindex_sb3.runs.checkpoint import load_checkpoint

        return load_checkpoint(rest, device="cpu").model
    algorithm = _sb3_algorithm(kind)  # an unknown name is refused before the file is looked for
    if not (Path(rest).is_file() or Path(rest + ".zip").is_file()):
        raise FileNotFoundError(f"policy {text!r}: no such file {rest!r} (nor {rest + '.zip'!r})")
    return algorithm.load(rest, device="cpu")  # SB3 zips unpickle: code, trusted files only


def _named_policy(text: str, env: gym.Env, seed: int, deterministic: bool, policy_obs_key: str | None) -> PolicySpec:
    """:func:`resolve_policy` for a name or a path."""
    if text == "random":
        env.action_space.seed(seed)
        return PolicySpec(lambda obs: env.action_space.sample(), "random")
    if text == "scripted":
        try:
            from hindex_sb3.demonstrators import make_demonstrator
        except ImportError as err:
            raise ValueError("scripted demonstrators are not available in this installation") from err
        demo = make_demonstrator(env)
        return PolicySpec(demo, f"scripted:{demo.name}", on_reset=demo.reset)
    kind, _, rest = text.partition(":")
    if rest and kind.lower() != "expert" and not Path(text).is_file():
        model = _saved_model(kind, rest, text)
        spec = resolve_policy(model, env, seed=seed, deterministic=deterministic, policy_obs_key=policy_obs_key)
        spec.label = f"{kind.lower()}:{Path(rest).name}"
        return spec
    is_expert = kind.lower() == "expert" and bool(rest)
    path = Path(rest if is_expert else text)
    if not path.is_file():
        raise FileNotFoundError(
            f"policy {text!r}: no such file (use random, scripted, expert:PATH.npz, DEMOS.npz/.pickle or ALGO:PATH.zip)"
        )
    if path.suffix in (".pickle", ".pkl") or (not is_expert and _npz_kind(path) == "demos"):
        return _replayed_demos(path)
    from hindex_sb3.experts import NpzMLPPolicy

    expert = NpzMLPPolicy.load(path)
    rng = np.random.default_rng(seed)
    key = policy_obs_key
    return PolicySpec(
        lambda obs: expert(obs[key] if key is not None and isinstance(obs, dict) else obs, deterministic, rng),
        f"expert:{path.name} ({'mean' if deterministic else 'sampled'})",
    )


def _replayed_demos(path: Path) -> PolicySpec:
    """Demonstrations replayed open-loop from their start states."""
    from hindex_sb3.demos import load_dapg_pickle, load_npz

    demos = load_dapg_pickle(path) if path.suffix in (".pickle", ".pkl") else load_npz(path)
    missing = [i for i, d in enumerate(demos) if not d.init_state]
    if missing:
        raise ValueError(f"{path}: demonstrations {missing[:5]} have no start state, so cannot be replayed")
    episodes = [({"initial_state_dict": d.init_state}, d.actions) for d in demos]
    return PolicySpec(lambda obs: None, f"demos:{path.name}", episodes=episodes)


def _frame(obs: Any, env: gym.Env, pixels_key: str) -> np.ndarray:
    """The image of one step as (3, H, W) uint8: ``obs[pixels_key]``, an image observation, or ``env.render()``."""
    image = obs.get(pixels_key) if isinstance(obs, dict) else obs
    is_image = (
        isinstance(image, np.ndarray)
        and image.ndim == 3
        and image.dtype == np.uint8
        and (image.shape[0] == 3 or image.shape[-1] == 3)
    )
    if not is_image:
        if env.render_mode != "rgb_array":
            raise FrameDatasetError(
                f"the observations carry no uint8 image (looked for key {pixels_key!r}); make the env with "
                "render_mode='rgb_array' so frames can come from env.render()"
            )
        image = np.asarray(env.render())
        if image.ndim != 3 or image.dtype != np.uint8:
            raise FrameDatasetError(f"env.render() gave {image.dtype} {image.shape}, not an RGB uint8 image")
    if image.shape[0] == 3 and image.shape[-1] != 3:
        return image
    return np.ascontiguousarray(image.transpose(2, 0, 1))


def _episode_frames(
    env: gym.Env,
    spec: PolicySpec,
    seed: int,
    options: dict[str, Any] | None,
    replay: Any,
    max_steps: int | None,
    pixels_key: str,
) -> np.ndarray:
    """The ``T + 1`` frames of one :func:`collect_frames` episode, acting by ``spec.act`` or replaying ``replay``."""
    if replay is not None:
        max_steps = len(replay) if max_steps is None else min(max_steps, len(replay))
        actions = iter(replay)

        def choose(obs: Any) -> Any:
            return next(actions)
    else:
        choose = spec.act

    def on_reset(obs: Any) -> None:
        if spec.on_reset is not None:
            spec.on_reset()
        frames.append(_frame(obs, env, pixels_key))

    frames: list[np.ndarray] = []
    run_episode(
        env,
        lambda obs: np.asarray(choose(obs), dtype=env.action_space.dtype),
        seed=seed,
        options=options,
        max_steps=max_steps,
        on_reset=on_reset,
        on_step=lambda step: frames.append(_frame(step.next_obs, env, pixels_key)),
    )
    return np.stack(frames)


def collect_frames(
    env: gym.Env | str,
    policy: Any = "random",
    n_episodes: int = 50,
    *,
    seed: int = 0,
    max_steps: int | None = None,
    deterministic: bool = False,
    policy_obs_key: str | None = None,
    pixels_key: str = "pixels",
    env_kwargs: dict[str, Any] | None = None,
    progress: bool = False,
    meta: dict[str, Any] | None = None,
) -> FrameDataset:
    """Record ``n_episodes`` episodes of frames (``T + 1`` each) from ``env`` (an env or an id) under ``policy``.

    Episode ``i`` starts from ``reset(seed=seed + i)`` (a demonstration replay restores demo ``i``'s start state).
    Frames come from ``obs[pixels_key]``, an image observation, or ``env.render()`` (``render_mode="rgb_array"``).

    :param max_steps: actions per episode at most (also stops at ``terminated``/``truncated``).
    :param policy_obs_key: feed the policy ``obs[key]`` (e.g. ``"state"`` for a state expert in ``obs_mode="all"``).
    """
    try:
        n_episodes = check_int("n_episodes", n_episodes, minimum=1)
    except ValueError as err:  # an empty dataset, as from_episodes says it (a wrong type stays a TypeError)
        raise FrameDatasetError(str(err)) from err
    seed = check_int("seed", seed, minimum=0)  # a python int: gymnasium's reset refuses numpy integers
    if max_steps is not None:
        max_steps = check_int("max_steps", max_steps, minimum=1)
    check_flag("deterministic", deterministic)
    check_flag("progress", progress)
    own = isinstance(env, str)
    env_id = env if isinstance(env, str) else (env.spec.id if env.spec is not None else type(env.unwrapped).__name__)
    if isinstance(env, str):
        env = gym.make(env, **(env_kwargs or {}))
    episodes: list[np.ndarray] = []
    try:
        spec = resolve_policy(policy, env, seed=seed, deterministic=deterministic, policy_obs_key=policy_obs_key)
        if spec.episodes is not None and len(spec.episodes) < n_episodes:
            raise FrameDatasetError(f"{spec.label} holds {len(spec.episodes)} demonstrations, {n_episodes} requested")
        from tqdm.auto import tqdm

        for i in tqdm(range(n_episodes), desc=f"frames {env_id}", unit="ep", disable=not progress):
            options, replay = spec.episodes[i] if spec.episodes is not None else (None, None)
            episodes.append(_episode_frames(env, spec, seed + i, options, replay, max_steps, pixels_key))
    finally:
        if own:
            env.close()
    info = {
        "env_id": env_id,
        "policy": spec.label,
        "n_episodes": n_episodes,
        "seed": seed,
        "max_steps": max_steps,
        "env_kwargs": {k: v for k, v in (env_kwargs or {}).items() if isinstance(v, str | int | float | bool)},
    }
    return FrameDataset.from_episodes(episodes, {**info, **(meta or {})})
