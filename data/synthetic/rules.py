"""Counterfactuals of procedural faces: the same person, pose and light with attributes changed consistently.

`counterfactual(row, changes)` is the ground-truth edit of a face; CLEARED_WHEN_SET and `_apply_change` are the
consistency rules it keeps (a bald head has no hair colour, a beard is not No_Beard, ...).
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from data.celeba import HAIR_COLOURS
from data.synthetic.factors import (
    BOOL_FACTORS,
    HAIR_BY_CODE,
    SYNTHETIC_ATTRIBUTES,
    attractive_score,
    check_factor_row,
)

# what counterfactual(row, {"Attractive": v}) changes, in order, until the score agrees: (attribute, new value)
ATTRACTIVE_EDITS: dict[bool, tuple[tuple[str, bool], ...]] = {
    True: (("Blurry", False), ("Bags_Under_Eyes", False), ("Double_Chin", False), ("Chubby", False),
           ("Eyeglasses", False), ("Heavy_Makeup", True), ("Wearing_Lipstick", True), ("High_Cheekbones", True)),
    False: (("Heavy_Makeup", False), ("Wearing_Lipstick", False), ("High_Cheekbones", False), ("Bags_Under_Eyes", True),
            ("Double_Chin", True), ("Eyeglasses", True), ("Blurry", True)),
}


def _set_natural_hair_colour(row: pd.Series) -> None:
    """Set the hair colour attributes to the person's own colour (`hair_base`): one of them, or none for red."""
    for name in HAIR_COLOURS:
        row[name] = False
    base = int(row["hair_base"])
    if base < len(HAIR_BY_CODE):
        row[HAIR_BY_CODE[base]] = True


# What setting an attribute clears to keep a face's labels consistent: a bald head has no hair colour, texture,
# fringe or hairline; a hair colour, fringe, hairline or texture un-balds; a fringe hides the hairline; a beard
# clears No_Beard and No_Beard every beard. The generator's counterpart of STGAN's conflict rules, and a superset
# of them; on procedural faces the evaluation does not count what it clears against an edit's preservation.
CLEARED_WHEN_SET: dict[str, tuple[str, ...]] = {
    **{colour: (*(other for other in HAIR_COLOURS if other != colour), "Bald") for colour in HAIR_COLOURS},
    "Bald": ("Bangs", "Straight_Hair", "Wavy_Hair", "Receding_Hairline", *HAIR_COLOURS),
    "Bangs": ("Bald", "Receding_Hairline"),
    "Receding_Hairline": ("Bald", "Bangs"),
    "Straight_Hair": ("Bald", "Wavy_Hair"),
    "Wavy_Hair": ("Bald", "Straight_Hair"),
    "Mustache": ("No_Beard",),
    "Goatee": ("No_Beard",),
    "No_Beard": ("Mustache", "Goatee"),
}


def _apply_change(row: pd.Series, name: str, value: bool) -> None:
    """Set one attribute and what consistency demands of the others (see `counterfactual`)."""
    grows_hair = value and bool(row["Bald"]) and name in ("Bangs", "Receding_Hairline", "Straight_Hair", "Wavy_Hair")
    row[name] = value
    if value:
        for other in CLEARED_WHEN_SET.get(name, ()):
            row[other] = False
    if grows_hair or (name == "Bald" and not value):
        _set_natural_hair_colour(row)  # un-balding brings back the person's own colour
    if name in ("Mustache", "Goatee"):
        row["No_Beard"] = not (bool(row["Mustache"]) or bool(row["Goatee"]) or bool(row["jaw_beard"]))
    elif name == "No_Beard":
        if value:
            row["jaw_beard"] = False
        elif not (bool(row["Mustache"]) or bool(row["Goatee"]) or bool(row["jaw_beard"])):
            row["jaw_beard"] = True


def _make_attractive(row: pd.Series, value: bool, keep: set[str]) -> None:
    """Edit the attributes the Attractive score weighs, in ATTRACTIVE_EDITS[value] order, until the score agrees.

    Attributes named in `keep` (asked for explicitly) are left alone; make-up and lipstick are only put on women
    (taking them off works for anyone). If the listed edits are not enough, the per-identity `attractive_noise` moves
    just past the threshold: that part of the judgement is not drawn, so only the label changes then.
    """
    for name, target in ATTRACTIVE_EDITS[value]:
        if (attractive_score(row) > 0) == value:
            return
        if name in keep or bool(row[name]) == target:
            continue
        if target and name in ("Heavy_Makeup", "Wearing_Lipstick") and bool(row["Male"]):
            continue
        _apply_change(row, name, target)
    score = attractive_score(row)
    if (score > 0) != value:
        row["attractive_noise"] = round(float(row["attractive_noise"]) - score + (0.01 if value else -0.01), 4)


def counterfactual(factors_row: pd.Series | Mapping, changes: Mapping[str, bool]) -> pd.Series:
    """The same person, pose, light and noise with attributes set as in `changes`, kept consistent.

    A hair colour set clears the others and Bald; a hair colour cleared leaves red/auburn hair (no listed colour);
    Bald clears Bangs, the hair colours, Straight_Hair, Wavy_Hair and Receding_Hairline; un-balding brings back the
    natural colour (`hair_base`), and Bangs, Receding_Hairline, Straight_Hair or Wavy_Hair set un-bald. Straight_Hair
    and Wavy_Hair exclude each other, as do Bangs and Receding_Hairline (a fringe would hide the hairline).
    Mustache or Goatee clear No_Beard; No_Beard clears all facial hair, and No_Beard=False with neither mustache nor
    goatee grows a beard along the jaw.

    Attractive is a judgement of the other attributes (`attractive_score`), so it is recomputed after every change.
    Setting it edits what the score weighs, one attribute at a time in a fixed order, stopping as soon as the score
    agrees: for True the photo is sharpened and bags under the eyes, a double chin, chubbiness and glasses are
    removed, then (women only) make-up and lipstick and high cheekbones added; for False make-up, lipstick and high
    cheekbones go, then bags under the eyes, a double chin, glasses and blur come. Attributes also named in
    `changes` are kept as asked. When those edits cannot move the score far enough, the undrawn per-identity term
    `attractive_noise` is moved just past the threshold as well (with no edit left to make, only the label changes).
    Raises if `changes` contradict each other.
    """
    row = pd.Series(dict(factors_row), dtype=object) if not isinstance(factors_row, pd.Series) else factors_row.copy()
    check_factor_row(row)
    wanted: dict[str, bool] = {}
    for name, value in changes.items():
        if name not in SYNTHETIC_ATTRIBUTES:
            raise KeyError(f"cannot change {name!r}: not a rendered attribute; expected one of {SYNTHETIC_ATTRIBUTES}")
        if not isinstance(value, (bool, np.bool_, int, np.integer)) or int(value) not in (0, 1):
            raise ValueError(f"change {name}={value!r}: expected a bool")
        wanted[name] = bool(value)
    for name, value in wanted.items():
        if name != "Attractive":
            _apply_change(row, name, value)
    if "Attractive" in wanted:
        _make_attractive(row, wanted["Attractive"], set(wanted) - {"Attractive"})
    row["Attractive"] = bool(attractive_score(row) > 0)
    wrong = {k: bool(row[k]) for k, v in wanted.items() if bool(row[k]) != v}
    if wrong:
        raise ValueError(f"contradictory changes {dict(changes)}: after applying them {wrong}")
    for name in SYNTHETIC_ATTRIBUTES + BOOL_FACTORS:
        row[name] = bool(row[name])
    return row
