"""DexMV's YCB objects rebuilt from MuJoCo primitives.

DexMV simulates YCB meshes (convex-decomposed collision hulls plus a textured visual mesh) that cannot be shipped.
Each object here is a set of boxes, cylinders and capsules fitted to the *collision hulls* at the scale DexMV uses
(0.8 for relocate and the banana, 1.0 for the pouring mug), expressed in the mesh's own body frame, so that the body
origin -- whose ``body_xpos`` enters observations and rewards -- sits where DexMV's does. Reference: the
collision hulls of DexMV's YCB assets (github.com/yzqin/dexmv-sim, as vendored by H-InDex); docs/dexmv.md lists
the extents and which primitives stand for each hull.

Mass and inertia are *not* taken from the primitives: DexMV's bodies get their mass from the collision hulls plus
the visual mesh, both at density 1000, which is about twice what the hull volume alone gives (and differs from the
real YCB masses, e.g. sugar box 706 g simulated vs 514 g real). The experts were trained with DexMV's numbers, so
every free object carries an explicit inertial (mass, centre of mass, full inertia in the body frame) measured from
DexMV's compiled models in MuJoCo 4 (legacy mesh inertia, as MuJoCo 2.1 computed it).

Colours follow what H-InDex's cameras actually saw: its renders show the group-2 collision hulls, grey by default,
green for the mustard bottle and black for the sugar box (dexmv.md A4).
"""

from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np

#: DexMV's ``YCB_SIZE`` (metres, unscaled). Rewards use only the z value; the initial body height is z / 2.
YCB_SIZE: dict[str, tuple[float, float, float]] = {
    "sugar_box": (0.0495, 0.0940, 0.1760),
    "tomato_soup_can": (0.0677, 0.0679, 0.1018),
    "mustard_bottle": (0.0576, 0.0959, 0.1913),
    "potted_meat_can": (0.0576, 0.1015, 0.0835),
    "banana": (0.1088, 0.1784, 0.0366),
    "mug": (0.1169, 0.0930, 0.0813),
    "large_clamp": (0.1659, 0.1216, 0.0364),
    "foam_brick": (0.05263, 0.077842, 0.051131),
}

#: DexMV's initial orientation of each object (w, x, y, z); the relocate target uses it too.
YCB_ORIENTATION: dict[str, tuple[float, float, float, float]] = {
    "sugar_box": (1.0, 0.0, 0.0, 0.0),
    "tomato_soup_can": (1.0, 0.0, 0.0, 0.0),
    "mustard_bottle": (0.5, 0.0, 0.0, 0.866),
    "potted_meat_can": (1.0, 0.0, 0.0, 0.0),
    "banana": (0.707, 0.0, 0.0, 0.707),  # place_inside passes this quaternion explicitly
    "mug": (0.707, 0.0, 0.0, 0.707),
    "large_clamp": (0.0, 0.0, 0.0, 1.0),
    "foam_brick": (1.0, 0.0, 0.0, 0.0),
}

GREY = (0.5, 0.5, 0.5, 1.0)  # MuJoCo's default geom colour, which DexMV's collision hulls render with
OBJECT_RGBA: dict[str, tuple[float, float, float, float]] = {
    "mustard_bottle": (0.0, 1.0, 0.0, 1.0),  # H-InDex's YCB_OBJECT_COLOR_MAPPING
    "sugar_box": (0.0, 0.0, 0.0, 1.0),
}


@dataclass(frozen=True)
class Part:
    """One primitive of an object, in the object's body frame.

    ``size`` follows MuJoCo: box half-extents, cylinder (radius, half-height), capsule (radius,) with ``fromto``,
    ellipsoid semi-axes.
    """

    kind: str  # "box" | "cylinder" | "capsule" | "ellipsoid"
    size: tuple[float, ...]
    pos: tuple[float, float, float] = (0.0, 0.0, 0.0)
    quat: tuple[float, float, float, float] = (1.0, 0.0, 0.0, 0.0)
    fromto: tuple[float, float, float, float, float, float] | None = None


@dataclass(frozen=True)
class Inertial:
    """An explicit body inertial: mass (kg), centre of mass and full inertia (Ixx, Iyy, Izz, Ixy, Ixz, Iyz)."""

    mass: float
    ipos: tuple[float, float, float]
    fullinertia: tuple[float, float, float, float, float, float]


@dataclass(frozen=True)
class ObjectModel:
    name: str
    parts: tuple[Part, ...]
    inertial: Inertial | None
    rgba: tuple[float, float, float, float] = GREY


def _box(lo: tuple[float, float, float], hi: tuple[float, float, float]) -> Part:
    """A box spanning the axis-aligned corners ``lo``..``hi`` (how the hull extents were measured)."""
    lo_, hi_ = np.asarray(lo), np.asarray(hi)
    return Part("box", tuple((hi_ - lo_) / 2), tuple((hi_ + lo_) / 2))


def _cylinder(radius: float, z0: float, z1: float, x: float = 0.0, y: float = 0.0) -> Part:
    return Part("cylinder", (radius, (z1 - z0) / 2), (x, y, (z0 + z1) / 2))


def _axis_quat(axis: tuple[float, float, float], angle: float) -> tuple[float, float, float, float]:
    a = np.asarray(axis, dtype=float) * np.sin(angle / 2)
    return (float(np.cos(angle / 2)), float(a[0]), float(a[1]), float(a[2]))


def _stadium(yaw_deg: float, centre: tuple[float, float], half_x: float, half_y: float, z0: float, z1: float):
    """A vertical prism with a rounded-rectangle (stadium) cross-section: a box flanked by two cylinders.

    ``centre``, ``half_x`` (> ``half_y``) are in a frame yawed by ``yaw_deg`` about z; an oval bottle is neither a
    box (whose corners stick out where the hand closes) nor an ellipsoid (which cannot stand).
    """
    yaw = np.deg2rad(yaw_deg)
    rot = np.array([[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]])
    z, half_z = (z0 + z1) / 2, (z1 - z0) / 2
    offset = half_x - half_y
    cx, cy = rot @ np.asarray(centre)
    parts = [Part("box", (offset, half_y, half_z), (float(cx), float(cy), z), _axis_quat((0, 0, 1), yaw))]
    for sign in (-1.0, 1.0):
        ex, ey = rot @ (np.asarray(centre) + np.array([sign * offset, 0.0]))
        parts.append(Part("cylinder", (half_y, half_z), (float(ex), float(ey), z)))
    return tuple(parts)


def mug_parts(scale: float, flush_bottom: bool = False) -> tuple[Part, ...]:
    """DexMV's own primitive mug (``objects.build_mug``): 12 staves, a 3-box handle and a bottom disc, hollow inside.

    Relocate and pour use YCB mug meshes; A6 recommends this composite for both (it keeps the cavity that holds the
    water), place-inside uses it as the (static) target mug.

    In ``build_mug`` the staves reach 0.5 mm (x scale) below the bottom disc, so a mug standing on the table touches
    it with 12 box edges: 48 contacts (within the 3 mm contact margin), which made pouring 5x slower than any other
    task. ``flush_bottom`` makes the staves end 4 mm above the disc's underside, still overlapping the 1 cm thick
    disc: the mug stands on its bottom disc like a foot ring (4 contacts); tipped over, the rim still collides.
    """
    s = scale
    # staves span z in [-0.0385, 0.0415] * s; with flush_bottom they start 4 mm above the disc's underside (-0.038 s)
    z_lo = -0.038 * s + 0.004 if flush_bottom else -0.0385 * s
    z_hi = 0.0415 * s
    stave_half, stave_z = (z_hi - z_lo) / 2, (z_hi + z_lo) / 2
    parts = []
    for i in range(12):
        theta = np.deg2rad(30.0 * i)
        pos = (s * (0.045 * np.sin(theta) - 0.006), s * -0.042 * np.cos(theta), stave_z)
        parts.append(Part("box", (0.014 * s, 0.0025 * s, stave_half), pos, _axis_quat((0, 0, 1), theta)))
    handle = (0.0125 * s, 0.006 * s, 0.004 * s)
    parts.append(Part("box", handle, (0.054 * s, 0.0, 0.03 * s), _axis_quat((0, 1, 0), np.deg2rad(40))))
    parts.append(Part("box", (0.004 * s, 0.006 * s, 0.02 * s), (0.062 * s, 0.0, 0.005 * s)))
    parts.append(Part("box", handle, (0.054 * s, 0.0, -0.02 * s), _axis_quat((0, 1, 0), np.deg2rad(-40))))
    parts.append(Part("cylinder", (0.0425 * s, 0.005 * s), (0.0, 0.0, -0.033 * s)))
    return tuple(parts)


def _ellipsoid(yaw_deg: float, centre: tuple[float, float, float], semi_axes: tuple[float, float, float]) -> Part:
    """An ellipsoid yawed by ``yaw_deg``; ``centre`` x, y are in the yawed frame like :func:`_stadium`'s."""
    yaw = np.deg2rad(yaw_deg)
    rot = np.array([[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]])
    cx, cy = rot @ np.asarray(centre[:2])
    return Part("ellipsoid", tuple(semi_axes), (float(cx), float(cy), centre[2]), _axis_quat((0, 0, 1), yaw))


# Extents below are at scale 0.8, in the mesh frame (dexmv.md A2 "collision AABB", refined where the hull is not
# box-like; docs/dexmv.md lists the fit of every object).
_MUSTARD_YAW = -22.7  # the bottle's long axis in the YCB mesh frame
_RELOCATE_PARTS: dict[str, tuple[Part, ...]] = {
    # The hull fills only 82 % of its bounding box (a slightly leaning box with chamfered corners): use the box with
    # the hull's volume, centroid and principal moments of inertia instead.
    "sugar_box": (Part("box", (0.0178, 0.0369, 0.0702), (0.0004, -0.0011, -0.0043)),),
    "tomato_soup_can": (_cylinder(0.0279, -0.0482, 0.0348, x=-0.0002, y=0.0014),),
    # An oval bottle (7.7 x 4.7 cm, yawed by -22.7 deg), in DexMV's two hulls: the body as a stadium prism, the
    # shoulders as one smooth half-ellipsoid with its equator on the body's top and its pole at the nozzle tip.
    # (Stacked prisms/cylinders for the shoulders catch the fingers at their steps: 0.64-0.73 expert success over
    # 200 seeds, against 0.92 for the ellipsoid and 0.875 for DexMV's hull meshes.)
    "mustard_bottle": (
        *_stadium(_MUSTARD_YAW, (0.0, -0.0023), 0.0385, 0.0235, -0.0679, 0.0095),
        _ellipsoid(_MUSTARD_YAW, (0.0, -0.0023, 0.0095), (0.0385, 0.0235, 0.0773)),
    ),
    # can and its rim/lid (the two DexMV hulls)
    "potted_meat_can": (
        _box((-0.0408, -0.0228, -0.0405), (0.0370, 0.0226, 0.0179)),
        _box((-0.0434, -0.0254, 0.0179), (0.0396, 0.0239, 0.0283)),
    ),
    "mug": mug_parts(0.8, flush_bottom=True),
    # two jaws and their bridge, the pivot block, and the two handles (each as two boxes along its diagonal)
    "large_clamp": (
        _box((-0.0294, -0.0638, -0.0139), (0.0009, -0.0250, 0.0107)),
        _box((0.0084, -0.0676, -0.0158), (0.0349, -0.0232, 0.0078)),
        _box((0.0009, -0.0666, -0.0158), (0.0084, -0.0430, 0.0078)),
        _box((-0.0294, -0.0250, -0.0158), (0.0349, 0.0090, 0.0125)),
        _box((0.0037, 0.0090, -0.0120), (0.0311, 0.0326, 0.0097)),
        _box((0.0141, 0.0326, -0.0120), (0.0405, 0.0704, 0.0097)),
        _box((-0.0445, 0.0071, -0.0092), (-0.0086, 0.0506, 0.0164)),
        _box((-0.0568, 0.0269, -0.0044), (-0.0445, 0.0572, 0.0164)),
    ),
    "foam_brick": (_box((-0.0213, -0.0317, -0.0143), (0.0221, 0.0316, 0.0272)),),
}

# Banana (place-inside, scale 0.8): capsules along the fruit's centre line, thick as its collision hulls.
_BANANA_PARTS: tuple[Part, ...] = (
    Part("capsule", (0.0155,), fromto=(-0.0105, -0.0670, 0.0010, -0.0139, -0.0310, 0.0010)),
    Part("capsule", (0.0155,), fromto=(-0.0139, -0.0310, 0.0010, -0.0050, 0.0116, 0.0010)),
    Part("capsule", (0.0155,), fromto=(-0.0050, 0.0116, 0.0010, 0.0130, 0.0400, 0.0010)),
    Part("capsule", (0.0130,), fromto=(0.0130, 0.0400, 0.0010, 0.0320, 0.0530, 0.0010)),
)

# Measured from DexMV's compiled models (collision hulls + visual mesh at density 1000) in MuJoCo 4.0.0.
_INERTIALS: dict[str, Inertial] = {
    "sugar_box": Inertial(
        0.7062, (0.0004312, -0.001283, -0.00462), (0.001453, 0.001216, 0.0003794, -8.59e-06, 4.277e-05, -1.505e-05)
    ),
    "tomato_soup_can": Inertial(
        0.3702,
        (-0.0002875, 0.001345, -0.006159),
        (0.0002634, 0.0002643, 0.0001364, 3.014e-08, -1.777e-07, 1.939e-07),
    ),
    "mustard_bottle": Inertial(
        0.6829, (-0.0008349, -0.001643, -0.003343), (0.001116, 0.001219, 0.000316, 5.207e-05, -3.289e-06, -6.414e-06)
    ),
    "potted_meat_can": Inertial(
        0.406, (-0.001931, -0.0003848, -0.005956), (0.000204, 0.0003339, 0.0002432, -6.928e-06, 8.44e-08, 1.117e-06)
    ),
    "mug": Inertial(
        0.4169, (-0.000829, 0.0003838, -0.002326), (0.0002378, 0.0002728, 0.0002731, 1.366e-06, -3.815e-06, -8.158e-08)
    ),
    "large_clamp": Inertial(
        0.2417, (0.0001248, -0.004145, -0.0006957), (0.0002503, 0.0001253, 0.000356, 1.875e-05, 1.194e-05, -1.18e-05)
    ),
    "foam_brick": Inertial(
        0.2074, (-0.0001045, -0.0001755, 0.006544), (9.264e-05, 5.798e-05, 9.411e-05, -4.157e-07, -1.372e-07, 7.11e-07)
    ),
    "banana": Inertial(
        0.2262, (0.000818, 0.001662, 3.272e-05), (0.0003253, 8.7e-05, 0.0003866, -0.0001095, 4.867e-06, 1.503e-06)
    ),
    # YCB mug, collision version v2 at scale 1.0 (pour)
    "pour_mug": Inertial(
        1.007, (-0.0001013, 0.0004455, -0.002179), (0.001071, 0.001183, 0.00125, 8.283e-06, -7.866e-06, 1.554e-06)
    ),
}

RELOCATE_OBJECTS: tuple[str, ...] = tuple(_RELOCATE_PARTS)


def relocate_object(name: str) -> ObjectModel:
    """A relocate object at DexMV's relocate scale (0.8)."""
    if name not in _RELOCATE_PARTS:
        raise ValueError(f"unknown relocate object {name!r}; choose from {RELOCATE_OBJECTS}")
    return ObjectModel(name, _RELOCATE_PARTS[name], _INERTIALS[name], OBJECT_RGBA.get(name, GREY))


def banana() -> ObjectModel:
    return ObjectModel("banana", _BANANA_PARTS, _INERTIALS["banana"])


def pour_mug() -> ObjectModel:
    """The pouring mug: DexMV's primitive mug at scale 1.0 with the inertial of the YCB mug DexMV pours with."""
    return ObjectModel("mug", mug_parts(1.0, flush_bottom=True), _INERTIALS["pour_mug"])


def target_mug(scale: float) -> ObjectModel:
    """The static mug of place-inside (``build_mug`` at ``mug_scale``); static bodies need no inertial."""
    return ObjectModel("mug", mug_parts(scale), None)


_GEOM_TYPES = {
    "box": mujoco.mjtGeom.mjGEOM_BOX,
    "cylinder": mujoco.mjtGeom.mjGEOM_CYLINDER,
    "capsule": mujoco.mjtGeom.mjGEOM_CAPSULE,
    "ellipsoid": mujoco.mjtGeom.mjGEOM_ELLIPSOID,
}


def add_parts(
    body: mujoco.MjsBody,
    obj: ObjectModel,
    prefix: str,
    *,
    rgba: tuple[float, float, float, float] | None = None,
    collide: bool = True,
    group: int = 2,
    **geom_attrs,
) -> list[str]:
    """Add ``obj``'s primitives to ``body`` as geoms named ``{prefix}_{i}``; return the names.

    ``collide=False`` makes them visual-only (the relocate target). ``geom_attrs`` are MjsGeom fields set on every
    part (friction, solref, condim, margin, gap, ...), as DexMV passes its kwargs to every collision hull.
    """
    names = []
    for i, part in enumerate(obj.parts):
        name = f"{prefix}_{i}"
        geom = body.add_geom(name=name, type=_GEOM_TYPES[part.kind], group=group)
        size = np.zeros(3)
        size[: len(part.size)] = part.size
        geom.size = size
        if part.fromto is not None:
            geom.fromto = list(part.fromto)
        else:
            geom.pos = list(part.pos)
            geom.quat = list(part.quat)
        geom.rgba = list(rgba if rgba is not None else obj.rgba)
        if not collide:
            geom.contype = 0
            geom.conaffinity = 0
        for key, value in geom_attrs.items():
            setattr(geom, key, value)
        names.append(name)
    if obj.inertial is not None and collide:
        body.explicitinertial = True
        body.mass = obj.inertial.mass
        body.ipos = list(obj.inertial.ipos)
        body.fullinertia = list(obj.inertial.fullinertia)
    return names
