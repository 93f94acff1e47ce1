"""Table and floor looks for the visual-generalisation test, from MuJoCo's built-in textures only.

H-InDex's generalisation runs swap the DexMV table texture (``arena_id`` 1..10: wood, brushed steel, granite, ...).
Those image files are not ours to ship, so ``background=`` offers procedural stand-ins: different colours, checkers,
grids and speckles on the table and the floor. The physics is identical across backgrounds; only materials change.
"""

from __future__ import annotations

from dataclasses import dataclass

import mujoco


@dataclass(frozen=True)
class Surface:
    """A material: a flat colour, or a built-in texture (``checker`` or ``flat`` with ``edge``/``random`` marks)."""

    rgba: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    builtin: str | None = None  # None: no texture, just rgba
    rgb1: tuple[float, float, float] = (1.0, 1.0, 1.0)
    rgb2: tuple[float, float, float] = (0.0, 0.0, 0.0)
    mark: str | None = None  # "edge" | "cross" | "random"
    markrgb: tuple[float, float, float] = (0.0, 0.0, 0.0)
    random: float = 0.0
    texrepeat: tuple[float, float] = (1.0, 1.0)
    specular: float = 0.2
    shininess: float = 0.0


@dataclass(frozen=True)
class Background:
    table: Surface
    floor: Surface
    legs: tuple[float, float, float, float] = (0.6, 0.6, 0.62, 1.0)


_WOOD_FLOOR = Surface(builtin="checker", rgb1=(0.55, 0.42, 0.3), rgb2=(0.45, 0.33, 0.22), texrepeat=(6, 6))

BACKGROUNDS: dict[str, Background] = {
    # What H-InDex's cameras saw: the olive collision box of the table (robosuite's collision colour) on a wood floor.
    "plain": Background(table=Surface(rgba=(0.5, 0.5, 0.0, 1.0)), floor=_WOOD_FLOOR),
    # DexMV's intended look (its ceramic table texture, which H-InDex's renders covered with the collision box).
    "ceramic": Background(
        table=Surface(builtin="flat", rgb1=(0.86, 0.86, 0.83), mark="random", markrgb=(0.78, 0.78, 0.76), random=0.02),
        floor=_WOOD_FLOOR,
    ),
    "checker": Background(
        table=Surface(builtin="checker", rgb1=(0.85, 0.85, 0.85), rgb2=(0.35, 0.35, 0.35), texrepeat=(8, 8)),
        floor=Surface(rgba=(0.4, 0.4, 0.4, 1.0)),
    ),
    "grid": Background(
        table=Surface(
            builtin="flat", rgb1=(0.92, 0.92, 0.88), mark="edge", markrgb=(0.15, 0.3, 0.7), texrepeat=(10, 10)
        ),
        floor=Surface(rgba=(0.15, 0.15, 0.18, 1.0)),
    ),
    "speckle": Background(
        table=Surface(builtin="flat", rgb1=(0.76, 0.66, 0.5), mark="random", markrgb=(0.3, 0.22, 0.15), random=0.08),
        floor=Surface(builtin="checker", rgb1=(0.2, 0.3, 0.4), rgb2=(0.1, 0.2, 0.3), texrepeat=(10, 10)),
    ),
    "dark": Background(
        table=Surface(rgba=(0.12, 0.13, 0.16, 1.0), specular=0.5, shininess=0.5),
        floor=Surface(rgba=(0.75, 0.75, 0.72, 1.0)),
        legs=(0.3, 0.3, 0.3, 1.0),
    ),
    "purple": Background(
        table=Surface(builtin="checker", rgb1=(0.55, 0.3, 0.65), rgb2=(0.45, 0.22, 0.55), texrepeat=(3, 3)),
        floor=_WOOD_FLOOR,
    ),
}


def get_background(name: str) -> Background:
    if name not in BACKGROUNDS:
        raise ValueError(f"unknown background {name!r}; choose from {sorted(BACKGROUNDS)}")
    return BACKGROUNDS[name]


_BUILTINS = {"checker": mujoco.mjtBuiltin.mjBUILTIN_CHECKER, "flat": mujoco.mjtBuiltin.mjBUILTIN_FLAT}
_MARKS = {
    None: mujoco.mjtMark.mjMARK_NONE,
    "edge": mujoco.mjtMark.mjMARK_EDGE,
    "cross": mujoco.mjtMark.mjMARK_CROSS,
    "random": mujoco.mjtMark.mjMARK_RANDOM,
}


def add_surface_material(spec: mujoco.MjSpec, name: str, surface: Surface) -> str:
    """Create the material (and texture) for ``surface`` in ``spec``; return the material name."""
    material = spec.add_material(name=name)
    material.rgba = list(surface.rgba)
    material.specular = surface.specular
    material.shininess = surface.shininess
    if surface.builtin is not None:
        texture = spec.add_texture(
            name=f"{name}_tex",
            type=mujoco.mjtTexture.mjTEXTURE_2D,
            builtin=_BUILTINS[surface.builtin],
            mark=_MARKS[surface.mark],
            rgb1=list(surface.rgb1),
            rgb2=list(surface.rgb2),
            markrgb=list(surface.markrgb),
            random=surface.random,
            width=256,
            height=256,
        )
        material.textures[mujoco.mjtTextureRole.mjTEXROLE_RGB] = texture.name
        material.texrepeat = list(surface.texrepeat)
        material.texuniform = True
    return name
