"""Suites: the paper's comparisons by name (what ``hindex bench SUITE`` runs before ``--tasks/--methods/--seeds``).

Task keys are the authors' command-line names (``door``, ``place_inside``, ``relocate-mug``), which every
``hindex`` command accepts.
"""

from __future__ import annotations

from dataclasses import dataclass

ADROIT = ("door", "hammer", "pen")
DEXMV = (
    "pour",
    "place_inside",
    "relocate-mug",
    "relocate-foam_brick",
    "relocate-large_clamp",
    "relocate-mustard_bottle",
    "relocate-potted_meat_can",
    "relocate-sugar_box",
    "relocate-tomato_soup_can",
)
#: the paper's 12 tasks (Adroit door/hammer/pen and nine DexMV tasks; Adroit relocate is not among them)
PAPER_TASKS = ADROIT + DEXMV
#: the novel table/floor looks of the visual-generalisation test (Table 3); "plain" is the training look
NOVEL_BACKGROUNDS = ("ceramic", "checker", "grid", "speckle", "dark", "purple")


@dataclass(frozen=True)
class Suite:
    """A named comparison; ``eval_backgrounds`` adds an evaluation of each final policy on those backgrounds."""

    name: str
    tasks: tuple[str, ...]
    methods: tuple[str, ...]
    seeds: tuple[int, ...] = (0, 1, 2)
    eval_backgrounds: tuple[str, ...] = ()
    figure: str = ""


SUITES: dict[str, Suite] = {
    s.name: s
    for s in (
        Suite("main", PAPER_TASKS, ("hindex", "vc1", "mvp", "r3m", "rrl"), figure="Fig. 1 and Fig. 4"),
        Suite("stages", PAPER_TASKS, ("rrl", "frankmocap", "hindex-no-ema", "hindex"), figure="Fig. 6a / Fig. 8"),
        Suite(
            "momentum",
            PAPER_TASKS,
            ("hindex-m0", "hindex-m0.1", "hindex-m0.01", "hindex-m0.001"),
            figure="Fig. 6b / Fig. 9",
        ),
        Suite("adapt-scope", PAPER_TASKS, ("hindex", "hindex-full-adapt"), figure="Fig. 6c / Fig. 7"),
        Suite(
            "background",
            ("relocate-potted_meat_can",),
            ("hindex", "vc1"),
            eval_backgrounds=NOVEL_BACKGROUNDS,
            figure="Table 3",
        ),
    )
}


def get_suite(name: str) -> Suite:
    if not isinstance(name, str):  # (a list raised "unhashable type")
        raise TypeError(f"suite must be a suite name, got {name!r}")
    if name not in SUITES:
        raise ValueError(f"unknown suite {name!r}; choose from {', '.join(SUITES)}")
    return SUITES[name]
