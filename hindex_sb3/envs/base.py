"""What every H-InDex task shares: observation modes, rendering, success bookkeeping, input checks and pickling.

A task subclass supplies the simulation (``model``/``data``), how an action moves it, the state vector, the
proprioception slice, the reward and the reset. Everything users and SB3 rely on being uniform across the 12 paper
tasks lives here, so the Adroit and DexMV families cannot drift apart.
"""

from __future__ import annotations

import time
from abc import abstractmethod
from typing import Any, ClassVar

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import spaces

from hindex_sb3.envs.rendering import RENDER_QUALITIES, OffscreenRenderer, resolve_camera, validate_image_size

OBS_MODES: tuple[str, ...] = ("pixels", "rgb", "state", "all")
REWARD_TYPES: tuple[str, ...] = ("dense", "sparse")

# Model fields that resets randomise (object placement, targets): saved with the physics state when pickling.
_RANDOMISED_MODEL_FIELDS: tuple[str, ...] = ("body_pos", "body_quat", "site_pos", "site_quat")


def check_state_dict(state_dict: Any, shapes: dict[str, tuple[int, ...]], owner: str) -> dict[str, np.ndarray]:
    """The entries of ``state_dict`` named in ``shapes`` as flat float64 arrays, checked (extra keys are dropped:
    DAPG's dicts carry some the simulator does not restore).

    An entry may carry extra length-1 axes (``(1, 30)`` for ``(30,)``), but it must hold real numbers of the
    expected shape: a ``(2, 15)`` array is not a ``(30,)`` one, and a bool, complex or text entry is refused rather
    than cast.
    """
    if not isinstance(state_dict, dict):
        raise TypeError(f"initial_state_dict must be a dict, got {type(state_dict).__name__}")
    missing = [k for k in shapes if k not in state_dict]
    if missing:
        raise ValueError(f"initial_state_dict for {owner} lacks keys {missing}; it needs {list(shapes)}")
    checked = {}
    for key, expected in shapes.items():
        raw = np.asarray(state_dict[key])
        if raw.dtype.kind not in "iuf":
            raise ValueError(f"initial_state_dict[{key!r}] holds {raw.dtype} values, not real numbers")
        kept = tuple(n for n in raw.shape if n != 1)
        if kept != tuple(n for n in expected if n != 1):  # (equal non-1 axes: equal sizes)
            raise ValueError(f"initial_state_dict[{key!r}] has shape {raw.shape}, expected {expected}")
        value = raw.astype(np.float64).reshape(expected)
        if not np.all(np.isfinite(value)):
            raise ValueError(f"initial_state_dict[{key!r}] contains NaN or infinite values")
        checked[key] = value
    return checked


class ManipulationEnv(gym.Env):
    """Base class of the ``HInDex/*`` environments.

    Observations (``obs_mode``):

    * ``"pixels"`` (default): ``Dict(pixels=Box(uint8, (3, H, W)), proprio=Box(float32, (P,)))``, channel-first so
      SB3 treats ``pixels`` as an image without a transpose wrapper (the paper's observation: ``MultiInputPolicy``);
    * ``"rgb"``: the image alone, ``Box(uint8, (3, H, W))``, for ``CnnPolicy`` and image-only pipelines (no
      proprioception, so the policy must infer the hand's joint angles from pixels);
    * ``"state"``: the task's original state vector (what the state-based experts take), nothing is rendered;
    * ``"all"``: ``pixels``, ``proprio`` and ``state``.

    ``info["goal_achieved"]`` reports the per-step goal test; ``info["is_success"]`` applies the paper's episode rule
    to the steps so far. The rule is monotone (a count of goal steps passing a threshold), so its value at the last
    step of an episode, wherever the time limit cuts it, is the episode's success.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 100}

    #: camera used when ``camera=None``
    default_camera: ClassVar[str]
    #: ``info["is_success"]`` is ``goal_steps > success_threshold`` (or ``>=`` when ``success_inclusive``)
    success_threshold: ClassVar[int]
    success_inclusive: ClassVar[bool] = False
    #: horizon used at registration (``max_episode_steps``)
    default_horizon: ClassVar[int]
    proprio_dim: ClassVar[int]
    state_dim: ClassVar[int]
    #: keys ``reset(options=...)`` understands
    reset_options: ClassVar[tuple[str, ...]] = ("initial_state_dict",)

    def __init__(
        self,
        obs_mode: str = "pixels",
        image_size: int | tuple[int, int] = 224,
        camera: str | int | None = None,
        reward_type: str = "dense",
        render_quality: str = "fast",
        render_mode: str | None = None,
    ):
        if obs_mode not in OBS_MODES:
            raise ValueError(f"obs_mode must be one of {OBS_MODES}, got {obs_mode!r}")
        if reward_type not in REWARD_TYPES:
            raise ValueError(f"reward_type must be one of {REWARD_TYPES}, got {reward_type!r}")
        if render_quality not in RENDER_QUALITIES:
            raise ValueError(f"render_quality must be one of {RENDER_QUALITIES}, got {render_quality!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or one of {self.metadata['render_modes']}, got {render_mode!r}")
        if camera is not None and (isinstance(camera, bool) or not isinstance(camera, (str, int, np.integer))):
            raise TypeError(f"camera must be a camera name, an integer id or None, got {camera!r}")
        self._init_kwargs = dict(
            obs_mode=obs_mode,
            image_size=image_size,
            camera=camera,
            reward_type=reward_type,
            render_quality=render_quality,
            render_mode=render_mode,
        )
        self.obs_mode = obs_mode
        self.image_height, self.image_width = validate_image_size(image_size)
        self.reward_type = reward_type
        self.render_quality = render_quality
        self.render_mode = render_mode

        self._build_simulation()
        self.camera_name = self.default_camera if camera is None else camera
        self.camera_id = resolve_camera(self.model, self.camera_name)

        self.action_space = spaces.Box(-1.0, 1.0, shape=(self.model.nu,), dtype=np.float32)
        state_space = spaces.Box(-np.inf, np.inf, shape=(self.state_dim,), dtype=np.float64)
        pixels_space = spaces.Box(0, 255, shape=(3, self.image_height, self.image_width), dtype=np.uint8)
        if obs_mode == "state":
            self.observation_space = state_space
        elif obs_mode == "rgb":
            self.observation_space = pixels_space
        else:
            obs_spaces: dict[str, spaces.Space] = {
                "pixels": pixels_space,
                "proprio": spaces.Box(-np.inf, np.inf, shape=(self.proprio_dim,), dtype=np.float32),
            }
            if obs_mode == "all":
                obs_spaces["state"] = state_space
            self.observation_space = spaces.Dict(obs_spaces)

        self._renderer: OffscreenRenderer | None = None
        self._last_pixels: np.ndarray | None = None
        self._deferred_frames: tuple[np.ndarray, np.ndarray] | None = None  # see defer_frames()
        self._frame_pending = False
        self._pixels_scene = b""  # _scene_key() when _last_pixels was drawn
        self.timings = {"simulate": 0.0, "render": 0.0}
        self._goal_steps = 0
        self._elapsed = 0

    # ------------------------------------------------------------------ task interface
    @property
    @abstractmethod
    def model(self) -> mujoco.MjModel: ...

    @property
    @abstractmethod
    def data(self) -> mujoco.MjData: ...

    @abstractmethod
    def _build_simulation(self) -> None:
        """Create the MuJoCo model and data (called once from ``__init__``)."""

    @abstractmethod
    def _apply_action(self, action: np.ndarray) -> None:
        """Advance the simulation by one control step; ``action`` is already checked and clipped to [-1, 1]."""

    @abstractmethod
    def _reset_simulation(self, options: dict[str, Any] | None) -> None:
        """Reset the scene using ``self.np_random``; honour ``options["initial_state_dict"]`` where supported."""

    @abstractmethod
    def _state(self) -> np.ndarray: ...

    @abstractmethod
    def _proprio(self) -> np.ndarray: ...

    @abstractmethod
    def _reward(self) -> tuple[float, bool, bool]:
        """Return ``(reward, goal_achieved, terminated)`` for the current simulator state."""

    # ------------------------------------------------------------------ gymnasium API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if isinstance(seed, bool):  # Gymnasium would take True as seed 1
            raise TypeError(f"seed must be a non-negative integer or None, got {seed!r}")
        if isinstance(seed, np.integer):  # Gymnasium takes only Python ints
            seed = int(seed)
        if options is not None and not isinstance(options, dict):
            raise TypeError(f"options must be a dict or None, got {type(options).__name__}")
        unknown = sorted(map(str, set(options or {}) - set(self.reset_options)))
        if unknown:  # a misspelt option would otherwise be ignored silently
            raise ValueError(
                f"unknown reset option(s) {unknown}; {type(self).__name__} takes {list(self.reset_options)}"
            )
        super().reset(seed=seed)
        self._reset_simulation(options)
        self._goal_steps = 0
        self._elapsed = 0
        return self._observe(), {}

    def step(self, action):
        raw = np.asarray(action)
        if raw.dtype.kind not in "iuf":  # bools and complex numbers were cast (imaginary parts dropped), text parsed
            raise ValueError(f"action must hold real numbers, got {raw.dtype} values")
        action = raw.astype(np.float64)
        if action.shape != self.action_space.shape:
            raise ValueError(f"action must have shape {self.action_space.shape}, got {action.shape}")
        if not np.all(np.isfinite(action)):
            bad = np.flatnonzero(~np.isfinite(action)).tolist()
            raise ValueError(f"action contains NaN or infinite values at indices {bad}")
        start = time.perf_counter()
        self._apply_action(np.clip(action, -1.0, 1.0))
        self.timings["simulate"] += time.perf_counter() - start
        reward, goal_achieved, terminated = self._reward()
        self._elapsed += 1
        self._goal_steps += int(goal_achieved)
        info = {
            "goal_achieved": bool(goal_achieved),
            "is_success": self.episode_success(self._goal_steps),
            **self._step_info(),
        }
        return self._observe(), float(reward), bool(terminated), False, info

    def _step_info(self) -> dict[str, Any]:
        """Extra task-specific ``info`` entries for the step just taken (e.g. DexMV's ``goal_measurement``)."""
        return {}

    @classmethod
    def episode_success(cls, goal_steps: int) -> bool:
        """The paper's episode rule applied to a count of goal-achieved steps."""
        if cls.success_inclusive:
            return goal_steps >= cls.success_threshold
        return goal_steps > cls.success_threshold

    def render(self) -> np.ndarray | None:
        """``rgb_array``: the current frame ``(H, W, 3)`` from the observation camera (reused when already observed)."""
        if self.render_mode is None:
            gym.logger.warn("render() called without a render_mode; pass render_mode='rgb_array' to the constructor")
            return None
        if self._last_pixels is not None and not self._frame_pending and self._pixels_scene == self._scene_key():
            return np.ascontiguousarray(self._last_pixels.transpose(1, 2, 0))
        return self._get_renderer().render(self.data, self.camera_id).copy()

    def _scene_key(self) -> bytes:
        """What the frame depends on that a caller may set directly (time, joints, mocap bodies): a stale-frame test."""
        data = self.data
        return b"".join(a.tobytes() for a in (np.float64(data.time), data.qpos, data.mocap_pos, data.mocap_quat))

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        super().close()

    # ------------------------------------------------------------------ helpers
    def _get_renderer(self) -> OffscreenRenderer:
        if self._renderer is None:
            self._renderer = OffscreenRenderer(self.model, self.image_height, self.image_width, self.render_quality)
        return self._renderer

    def _observe(self):
        if self.obs_mode == "state":
            self._last_pixels = None
            return self._state()
        if self._deferred_frames is not None:
            pixels = self._deferred_frames[self._last_pixels is self._deferred_frames[0]]
            self._frame_pending = True
        else:
            start = time.perf_counter()
            pixels = self._get_renderer().render_chw(self.data, self.camera_id)
            self.timings["render"] += time.perf_counter() - start
        self._last_pixels = pixels
        self._pixels_scene = self._scene_key()
        if self.obs_mode == "rgb":
            return pixels
        obs = {"pixels": pixels, "proprio": np.asarray(self._proprio(), dtype=np.float32)}
        if self.obs_mode == "all":
            obs["state"] = self._state()
        return obs

    # ------------------------------------------------------------------ frames drawn for several envs at once
    def defer_frames(self) -> None:
        """Let the caller draw this env's frames: observations then carry a ``(3, H, W)`` buffer not yet drawn.

        For a process that hosts several envs of one task and draws all their frames in one
        :class:`~hindex_sb3.envs.rendering.TiledRenderer` pass (:class:`~hindex_sb3.vec_env.SharedMemoryVecEnv`
        with ``envs_per_worker > 1``). After each ``step``/``reset`` it must draw :meth:`pending_frame` and call
        :meth:`frame_drawn` before the observation is used. Two buffers take turns, so an observation stays valid
        until the step after next (and consecutive observations share no array, as Gymnasium's checker wants).
        """
        if self.obs_mode == "state":
            raise ValueError("defer_frames() needs an observation with pixels; this env has obs_mode='state'")
        if self._deferred_frames is None:
            shape = (3, self.image_height, self.image_width)
            self._deferred_frames = (np.zeros(shape, dtype=np.uint8), np.zeros(shape, dtype=np.uint8))

    def pending_frame(self) -> tuple[mujoco.MjModel, mujoco.MjData, int, np.ndarray] | None:
        """What the deferred frame shows (model, data, observation camera) and the buffer it goes into, if pending."""
        if not self._frame_pending:
            return None
        assert self._last_pixels is not None
        return self.model, self.data, self.camera_id, self._last_pixels

    def frame_drawn(self, seconds: float = 0.0) -> None:
        """The deferred frame is in its buffer; ``seconds`` is this env's share of the drawing time."""
        self._frame_pending = False
        self.timings["render"] += seconds

    def reset_timings(self) -> dict[str, float]:
        """Return the seconds spent simulating and rendering since the last call, and restart the count."""
        timings, self.timings = self.timings, {"simulate": 0.0, "render": 0.0}
        return timings

    @property
    def goal_steps(self) -> int:
        """Number of goal-achieved steps in the current episode."""
        return self._goal_steps

    # ------------------------------------------------------------------ pickling (SubprocVecEnv, deepcopy)
    def __getstate__(self) -> dict[str, Any]:
        """Pickle constructor arguments plus the full simulator state; GL resources are recreated on demand."""
        model, data = self.model, self.data
        physics = np.empty(mujoco.mj_stateSize(model, mujoco.mjtState.mjSTATE_INTEGRATION))
        mujoco.mj_getState(model, data, physics, mujoco.mjtState.mjSTATE_INTEGRATION)
        return {
            "init_kwargs": self._init_kwargs,
            "physics": physics,
            "model_fields": {name: getattr(model, name).copy() for name in _RANDOMISED_MODEL_FIELDS},
            "rng_state": None if self._np_random is None else self._np_random.bit_generator.state,
            "rng_seed": self._np_random_seed,
            "episode": (self._elapsed, self._goal_steps),
            "spec": self.spec,
            "task_state": self._task_state(),
            # the last observed frame: render() shows it, and the copy's derived quantities are recomputed below
            "pixels": None if self._last_pixels is None or self._frame_pending else self._last_pixels.copy(),
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state["init_kwargs"])
        for name, value in state["model_fields"].items():
            getattr(self.model, name)[:] = value
        mujoco.mj_setState(self.model, self.data, state["physics"], mujoco.mjtState.mjSTATE_INTEGRATION)
        mujoco.mj_forward(self.model, self.data)
        if state["rng_state"] is not None:
            rng = np.random.Generator(np.random.PCG64())
            rng.bit_generator.state = state["rng_state"]
            self._np_random = rng
            self._np_random_seed = state["rng_seed"]  # else gymnasium's np_random_seed would reseed the copy
        self._elapsed, self._goal_steps = state["episode"]
        self.spec = state["spec"]
        self._restore_task_state(state["task_state"])
        if state["pixels"] is not None:
            self._last_pixels, self._pixels_scene = state["pixels"], self._scene_key()
        self._after_unpickle()

    def _task_state(self) -> dict[str, Any]:
        """What a task computes at reset besides the simulator state (Adroit pen: its length), for pickling."""
        return {}

    def _restore_task_state(self, state: dict[str, Any]) -> None:
        """Set back what :meth:`_task_state` returned."""

    def _after_unpickle(self) -> None:
        """Hook for subclasses whose helpers share the RNG."""
