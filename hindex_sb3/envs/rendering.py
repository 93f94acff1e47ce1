"""Offscreen MuJoCo rendering tuned for pixel-based RL.

We drive MuJoCo's renderer directly rather than through ``mujoco.Renderer`` or Gymnasium's ``MujocoRenderer`` because:

* the GL backend must follow what :mod:`hindex_sb3._platform` chose, even if ``mujoco`` was imported (and bound to
  GLFW) before us;
* the Adroit XMLs ask for a 4096^2 shadow map, 8x multisampling and a 3024x1680 offscreen buffer. That costs ~10x in
  frame rate on a CPU rasteriser and buys nothing an encoder can use, so the default ``"fast"`` quality drops them,
  while ``"paper"`` keeps the original look;
* we reuse one pixel buffer per renderer (no per-frame allocation).
"""

from __future__ import annotations

import contextlib
import math
import os
from typing import Any, Literal

import mujoco
import numpy as np

RenderQuality = Literal["fast", "paper"]
RENDER_QUALITIES: tuple[str, ...] = ("fast", "paper")
MIN_IMAGE_SIZE = 16
MAX_IMAGE_SIZE = 1024


def _gl_context_class():
    """Pick the GL context class from ``MUJOCO_GL`` at call time (not at ``mujoco`` import time)."""
    backend = os.environ.get("MUJOCO_GL", "").lower()
    if backend == "egl":
        from mujoco.egl import GLContext
    elif backend == "osmesa":
        from mujoco.osmesa import GLContext
    else:
        from mujoco.glfw import GLContext
    return GLContext


#: the process whose GL contexts run on Mesa's threaded software rasteriser (llvmpipe), once one was made
_THREADED_SOFTWARE_GL_PID: int | None = None


def _new_gl_context(width: int, height: int) -> Any:
    """A current GL context, refused in a process forked from one that drew with llvmpipe's threads.

    Mesa's llvmpipe rasterises with worker threads owned by the GL driver's state, which a forked child inherits
    without its threads: the child's first context then waits for them forever (measured: ``gym.make_vec(...,
    "async")``, which forks, after one frame drawn in the parent). An error that names the remedies replaces the hang.
    """
    global _THREADED_SOFTWARE_GL_PID
    owner = _THREADED_SOFTWARE_GL_PID
    if owner is not None and owner != os.getpid():
        raise RuntimeError(
            f"this process was forked from one (pid {owner}) that had drawn frames with Mesa's software rasteriser "
            "(llvmpipe), whose threads do not survive a fork, so drawing here would hang. Start worker processes "
            "with 'forkserver' or 'spawn' (SB3's SubprocVecEnv does by default; gym.make_vec(..., "
            "vectorization_mode='async', vector_kwargs={'context': 'forkserver'})), or set LP_NUM_THREADS=0 before "
            "the first frame (a single-threaded rasteriser)"
        )
    gl = _gl_context_class()(width, height)
    gl.make_current()
    if owner is None and os.environ.get("LP_NUM_THREADS") != "0":
        from OpenGL import GL  # PyOpenGL: a dependency of mujoco, already loaded for the chosen GL backend

        if b"llvmpipe" in (GL.glGetString(GL.GL_RENDERER) or b""):
            _THREADED_SOFTWARE_GL_PID = os.getpid()
    return gl


def validate_image_size(image_size: int | tuple[int, int]) -> tuple[int, int]:
    """Return ``(height, width)``; reject sizes an encoder or the GL framebuffer cannot sensibly use."""
    if isinstance(image_size, (int, np.integer)) and not isinstance(image_size, bool):
        height = width = int(image_size)
    elif (
        isinstance(image_size, (tuple, list))
        and len(image_size) == 2
        and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in image_size)
    ):
        height, width = (int(v) for v in image_size)
    else:
        raise TypeError(f"image_size must be an int or a (height, width) pair of ints, got {image_size!r}")
    for v in (height, width):
        if not MIN_IMAGE_SIZE <= v <= MAX_IMAGE_SIZE:
            raise ValueError(
                f"image_size {image_size!r} out of range: each side must be in [{MIN_IMAGE_SIZE}, {MAX_IMAGE_SIZE}]"
            )
    return height, width


def resolve_camera(model: mujoco.MjModel, camera: str | int) -> int:
    """Map a camera name (or id) to its id, listing the available cameras when it does not exist."""
    names = [mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_CAMERA, i) for i in range(model.ncam)]
    if isinstance(camera, str):
        cam_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera)
        if cam_id < 0:
            raise ValueError(f"unknown camera {camera!r}; this model has cameras {names}")
        return cam_id
    if isinstance(camera, (int, np.integer)) and 0 <= int(camera) < model.ncam:
        return int(camera)
    raise ValueError(f"unknown camera {camera!r}; this model has cameras {names}")


def configure_model_visuals(model: mujoco.MjModel, height: int, width: int, quality: str) -> None:
    """Set the model's visual options that the GL context reads at creation time.

    ``height`` and ``width`` are those of the framebuffer: one image, or a whole atlas of tiles.
    """
    if quality not in RENDER_QUALITIES:
        raise ValueError(f"render_quality must be one of {RENDER_QUALITIES}, got {quality!r}")
    if quality == "fast":
        model.vis.quality.offsamples = 0
        model.vis.quality.shadowsize = 0
        # A framebuffer the size of the image: clearing/reading a 3024x1680 buffer per frame is pure waste.
        model.vis.global_.offwidth = width
        model.vis.global_.offheight = height
    else:
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, width)
        model.vis.global_.offheight = max(model.vis.global_.offheight, height)


class OffscreenRenderer:
    """Renders RGB frames of one model from fixed cameras into a reused buffer.

    The caller owns the model; :func:`configure_model_visuals` is applied to it here, so create one renderer per
    model (our environments do) and call :meth:`close` to release the GL context.
    """

    def __init__(self, model: mujoco.MjModel, height: int, width: int, quality: str = "fast", max_geom: int = 2000):
        configure_model_visuals(model, height, width, quality)
        self.model = model
        self.height, self.width = height, width
        self.quality = quality
        self._gl = _new_gl_context(width, height)
        try:
            self._con = mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_150)
        except Exception:
            self._gl.free()
            raise
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self._con)
        self._scene = mujoco.MjvScene(model, maxgeom=max_geom)
        if quality == "fast":
            self._scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
            self._scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        self._option = mujoco.MjvOption()
        self._perturb = mujoco.MjvPerturb()
        self._camera = mujoco.MjvCamera()
        self._camera.type = mujoco.mjtCamera.mjCAMERA_FIXED
        self._rect = mujoco.MjrRect(0, 0, width, height)
        self._buffer = np.empty((height, width, 3), dtype=np.uint8)

    @property
    def closed(self) -> bool:
        return self._gl is None

    def render(self, data: mujoco.MjData, camera_id: int) -> np.ndarray:
        """Render into the internal buffer and return it as an upright ``(H, W, 3)`` view (valid until next call)."""
        if self._gl is None:
            raise RuntimeError("render() called after close()")
        self._gl.make_current()
        self._camera.fixedcamid = camera_id
        mujoco.mjv_updateScene(
            self.model, data, self._option, self._perturb, self._camera, mujoco.mjtCatBit.mjCAT_ALL, self._scene
        )
        mujoco.mjr_render(self._rect, self._scene, self._con)
        mujoco.mjr_readPixels(self._buffer, None, self._rect, self._con)
        return self._buffer[::-1]  # OpenGL's origin is bottom-left

    def render_chw(self, data: mujoco.MjData, camera_id: int) -> np.ndarray:
        """Render and return a fresh channel-first ``(3, H, W)`` uint8 array (what SB3 takes as an image)."""
        return np.ascontiguousarray(self.render(data, camera_id).transpose(2, 0, 1))

    def close(self) -> None:
        if self._gl is None:
            return
        try:
            self._gl.make_current()
            self._con.free()
        finally:
            self._gl.free()
            self._gl = None

    def __del__(self):  # best effort; explicit close() is the contract
        with contextlib.suppress(Exception):
            self.close()


#: The tiled framebuffer's longest side: well inside every GL implementation's renderbuffer limit (>= 8192 on
#: Mesa and NVIDIA), and 16 tiles of 224 px need only 896.
MAX_ATLAS_SIDE = 4096


def _atlas_grid(slots: int, height: int, width: int) -> tuple[int, int]:
    """Columns and rows for ``slots`` tiles of ``height`` x ``width``: as square in pixels as they come, each side at
    most :data:`MAX_ATLAS_SIDE` (a square grid of wide or tall tiles would pass it: 20 tiles of 16x1024 made a
    5120-pixel side, 300 an incomplete framebuffer)."""
    max_cols, max_rows = MAX_ATLAS_SIDE // width, MAX_ATLAS_SIDE // height
    square = math.ceil(math.sqrt(slots * height / width))
    cols = min(max_cols, max(math.ceil(slots / max_rows), square))
    return cols, math.ceil(slots / cols)


class TiledRenderer:
    """Renders the scenes of several envs of one task into one offscreen buffer, read back once.

    Why: on a GPU, one context per env and one blocking ``mjr_readPixels`` per frame leave the renderer waiting on
    the GPU after every frame, and worker processes do not add up (a lent H200 rendered ~4,300 door frames/s at
    224 px with 4 or 16 processes alike). Drawing ``k`` scenes into one buffer and reading it back once per round
    reached 9,000-13,000 frames/s there with 4-16 scenes per process. On a CPU rasteriser it neither helps nor hurts.

    Each scene is drawn where :class:`OffscreenRenderer` draws it, at the buffer's origin, then copied on the GPU
    (``glBlitFramebuffer``, no read-back) to its own tile: drawing each scene straight into its tile would move its
    viewport, and the rasteriser rounds a few edge pixels differently there (~5 in 100,000 values). So a frame is
    bit for bit the frame :class:`OffscreenRenderer` draws for the same state, whichever tile it went through, and
    results do not depend on how many envs a worker hosts. Fast quality only: a multisampled buffer (paper quality)
    cannot be copied between tiles before it is resolved.

    The scenes must share the meshes and textures of ``model`` (envs of one task do: their randomised placements
    are read from each env's own model and data when its scene is built).
    """

    def __init__(self, model: mujoco.MjModel, height: int, width: int, tiles: int, max_geom: int = 2000) -> None:
        if isinstance(tiles, bool) or not isinstance(tiles, int) or tiles < 1:
            raise ValueError(f"tiles must be a positive int, got {tiles!r}")
        self.height, self.width = height, width
        slots = (MAX_ATLAS_SIDE // height) * (MAX_ATLAS_SIDE // width)  # slot 0 is where every scene is drawn
        self.tiles = min(tiles, slots - 1)  # more scenes than fit are drawn in several rounds
        self.cols, self.rows = _atlas_grid(self.tiles + 1, height, width)
        self._renderer = OffscreenRenderer(model, self.rows * height, self.cols * width, "fast", max_geom)
        self._atlas = self._renderer._buffer
        self._origin = mujoco.MjrRect(0, 0, width, height)  # where every scene is drawn before its copy
        self._queued: list[np.ndarray] = []  # output frames of the tiles drawn since the last read-back
        from OpenGL import GL  # PyOpenGL: a dependency of mujoco, already loaded for the chosen GL backend

        self._gl_api = GL

    @property
    def closed(self) -> bool:
        return self._renderer.closed

    def render_into(self, scenes: list[tuple[mujoco.MjModel, mujoco.MjData, int]], out: list[np.ndarray]) -> None:
        """Draw scene ``i`` = ``(model, data, camera_id)`` and write its ``(3, H, W)`` uint8 frame into ``out[i]``."""
        if len(scenes) != len(out):
            raise ValueError(f"{len(scenes)} scenes for {len(out)} output frames")
        for scene, frame in zip(scenes, out, strict=True):
            self.draw(scene, frame)
        self.flush()

    def draw(self, scene: tuple[mujoco.MjModel, mujoco.MjData, int], out: np.ndarray) -> None:
        """Draw one scene into the next free tile; its frame reaches ``out`` at the next :meth:`flush` (or earlier,
        when the buffer is full). One scene at a time lets the caller draw each env as soon as its physics is done,
        while other threads still step the others; the data must not change until the flush."""
        if len(self._queued) == self.tiles:
            self.flush()
        r, h, w, gl = self._renderer, self.height, self.width, self._gl_api
        r._gl.make_current()  # every time: another renderer of this thread may have been current since
        model, data, camera_id = scene
        r._camera.fixedcamid = camera_id
        mujoco.mjv_updateScene(model, data, r._option, r._perturb, r._camera, mujoco.mjtCatBit.mjCAT_ALL, r._scene)
        mujoco.mjr_render(self._origin, r._scene, r._con)
        x, y = self._slot(len(self._queued))
        fbo = r._con.offFBO
        gl.glBindFramebuffer(gl.GL_READ_FRAMEBUFFER, fbo)
        gl.glBindFramebuffer(gl.GL_DRAW_FRAMEBUFFER, fbo)
        gl.glBlitFramebuffer(0, 0, w, h, x, y, x + w, y + h, gl.GL_COLOR_BUFFER_BIT, gl.GL_NEAREST)
        self._queued.append(out)

    def flush(self) -> None:
        """Read back the tiles drawn since the last flush (one read-back) into their output frames."""
        if not self._queued:
            return
        r, h, w = self._renderer, self.height, self.width
        r._gl.make_current()
        used_rows = -(-(len(self._queued) + 1) // self.cols)
        atlas = self._atlas[: used_rows * h]  # only the rows holding tiles are read back
        mujoco.mjr_readPixels(atlas, None, mujoco.MjrRect(0, 0, self.cols * w, used_rows * h), r._con)
        for i, frame in enumerate(self._queued):
            x, y = self._slot(i)
            np.copyto(frame, atlas[y : y + h, x : x + w][::-1].transpose(2, 0, 1))
        self._queued = []

    def _slot(self, i: int) -> tuple[int, int]:
        """Pixel origin of scene ``i``'s tile (slot ``i + 1``), counted from the bottom-left as GL counts."""
        row, col = divmod(i + 1, self.cols)
        return col * self.width, row * self.height

    def close(self) -> None:
        self._renderer.close()
