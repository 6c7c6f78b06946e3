"""The run's edit pick: per attribute, the direction kind, strength and composite its evaluation chose on the valid
split.

The evaluation (`evaluation.edits`) writes them into evaluation.json's summary: `picked` {attribute: {method,
composite, strength}} and `chosen_strengths` {kind: {composite: {attribute: strength}}}; `Run.edit_picks` reads them
through `picks_from_evaluation`. A summary written before composites (`picked_kinds` {attribute: kind},
`chosen_strengths` {kind: {attribute: strength}}) reads as plain decoded edits.
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from attributes.composite import COMPOSITES


@dataclass(frozen=True)
class EditPick:
    """How to edit one attribute: the direction kind, its strength, the edit mode that strength was chosen in and
    how the decoded edit is composited (`attributes.composite`)."""

    kind: str
    strength: float
    mode: str = "offset"
    composite: str = "none"

    def __str__(self) -> str:
        return f"{self.kind} x{self.strength:g}" + ("" if self.composite == "none" else f" [{self.composite}]")


def _strength(value: Any, where: str, source: str | os.PathLike) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{source}: {where} = {value!r}, expected a finite number; evaluate again with "
                         "`python -m experiments.evaluate`")
    return float(value)


def _strengths(chosen: Any, source: str | os.PathLike) -> dict[str, dict[str, dict[str, float]]]:
    """`chosen_strengths` checked -> {kind: {composite: {attribute: strength}}}, else a ValueError naming `source`."""
    if not isinstance(chosen, Mapping):
        raise ValueError(f"{source}: chosen_strengths is {type(chosen).__name__}, expected {{kind: {{composite: "
                         "{attribute: strength}}}}; evaluate again with `python -m experiments.evaluate`")
    out: dict[str, dict[str, dict[str, float]]] = {}
    for kind, per_composite in chosen.items():
        if not isinstance(per_composite, Mapping):
            raise ValueError(f"{source}: chosen_strengths[{kind!r}] is not a mapping")
        if per_composite and not any(isinstance(v, Mapping) for v in per_composite.values()):
            per_composite = {"none": per_composite}  # written before composites: plain decoded edits
        for composite, per_attribute in per_composite.items():
            if composite not in COMPOSITES or not isinstance(per_attribute, Mapping):
                raise ValueError(f"{source}: chosen_strengths[{kind!r}][{composite!r}] is not a composite's "
                                 f"{{attribute: strength}} (composites: {COMPOSITES})")
            for attribute, strength in per_attribute.items():
                out.setdefault(str(kind), {}).setdefault(composite, {})[str(attribute)] = _strength(
                    strength, f"chosen_strengths[{kind!r}][{composite!r}][{attribute!r}]", source)
    return out


def picks_from_evaluation(summary: Mapping[str, Any], mode: str = "offset", kind: str | None = None,
                          source: str | os.PathLike = "evaluation.json") -> dict[str, EditPick]:
    """{attribute: EditPick} from an evaluation summary.

    kind None: each attribute's pick (kind, composite, strength). A kind: that kind for every attribute it was
    scored on, under the attribute's picked composite (plain edits where the pick has none), at its chosen strength.
    {} when the evaluation chose nothing (`--no-choose-strength`). A malformed summary raises ValueError naming
    `source`.
    """
    chosen = _strengths(summary.get("chosen_strengths") or {}, source)
    picked = summary.get("picked")
    if picked is None and summary.get("picked_kinds"):  # written before composites
        picked = {a: {"method": k, "composite": "none"} for a, k in summary["picked_kinds"].items()}
    if not isinstance(picked or {}, Mapping):
        raise ValueError(f"{source}: picked is {type(picked).__name__}, expected {{attribute: {{method, composite, "
                         "strength}}}}")
    picked = picked or {}
    if kind is not None:
        per_composite, out = chosen.get(kind, {}), {}
        for attribute in dict.fromkeys(a for per in per_composite.values() for a in per):
            composite = picked.get(attribute, {}).get("composite", "none")
            if attribute not in per_composite.get(composite, {}):
                composite = "none"
            if attribute in per_composite.get(composite, {}):
                out[attribute] = EditPick(kind, per_composite[composite][attribute], mode, composite)
        return out
    picks = {}
    for attribute, pick in picked.items():
        if not isinstance(pick, Mapping) or "method" not in pick:
            raise ValueError(f"{source}: picked[{attribute!r}] = {pick!r}, expected {{method, composite, strength}}")
        method, composite = str(pick["method"]), str(pick.get("composite", "none"))
        strength = chosen.get(method, {}).get(composite, {}).get(str(attribute))
        if strength is None:
            raise ValueError(f"{source}: {attribute} is picked with {method!r} [{composite}], which has no chosen "
                             f"strength for it (chosen_strengths has {sorted(chosen)}); evaluate again")
        picks[str(attribute)] = EditPick(method, strength, mode, composite)
    return picks
