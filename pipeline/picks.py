"""The run's edit pick: per attribute, the direction kind and strength its evaluation chose on the valid split.

The evaluation (`evaluation.edits`) writes them into evaluation.json's summary: `picked_kinds` {attribute: kind} and
`chosen_strengths` {kind: {attribute: strength}}; `Run.edit_picks` reads them through `picks_from_evaluation`.
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class EditPick:
    """How to edit one attribute: the direction kind, its strength and the edit mode that strength was chosen in."""

    kind: str
    strength: float
    mode: str = "offset"

    def __str__(self) -> str:
        return f"{self.kind} x{self.strength:g}"


def _strengths(chosen: Any, source: str | os.PathLike) -> dict[str, dict[str, float]]:
    """`chosen_strengths` checked: {kind: {attribute: finite positive number}}, else a ValueError naming `source`."""
    if not isinstance(chosen, Mapping):
        raise ValueError(f"{source}: chosen_strengths is {type(chosen).__name__}, expected {{kind: {{attribute: "
                         "strength}}}}; evaluate again with `python -m experiments.evaluate`")
    out: dict[str, dict[str, float]] = {}
    for kind, per_attribute in chosen.items():
        if not isinstance(per_attribute, Mapping):
            raise ValueError(f"{source}: chosen_strengths[{kind!r}] is not a {{attribute: strength}} mapping")
        for attribute, strength in per_attribute.items():
            if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not math.isfinite(strength):
                raise ValueError(f"{source}: chosen_strengths[{kind!r}][{attribute!r}] = {strength!r}, expected a "
                                 "finite number")
            out.setdefault(str(kind), {})[str(attribute)] = float(strength)
    return out


def picks_from_evaluation(summary: Mapping[str, Any], mode: str = "offset", kind: str | None = None,
                          source: str | os.PathLike = "evaluation.json") -> dict[str, EditPick]:
    """{attribute: EditPick} from an evaluation summary.

    kind None: each attribute's picked kind at that kind's chosen strength. A kind: that kind at its chosen strength,
    for every attribute it was scored on. {} when the evaluation chose no strengths (`--no-choose-strength`).
    A malformed summary raises ValueError naming `source`.
    """
    chosen = _strengths(summary.get("chosen_strengths") or {}, source)
    if kind is not None:
        return {attribute: EditPick(kind, strength, mode) for attribute, strength in chosen.get(kind, {}).items()}
    picked = summary.get("picked_kinds") or {}
    if not isinstance(picked, Mapping):
        raise ValueError(f"{source}: picked_kinds is {type(picked).__name__}, expected {{attribute: kind}}")
    picks = {}
    for attribute, picked_kind in picked.items():
        strength = chosen.get(str(picked_kind), {}).get(str(attribute))
        if strength is None:
            raise ValueError(f"{source}: {attribute} is picked with {picked_kind!r}, which has no chosen strength "
                             f"for it (chosen_strengths has {sorted(chosen)}); evaluate again")
        picks[str(attribute)] = EditPick(str(picked_kind), strength, mode)
    return picks
