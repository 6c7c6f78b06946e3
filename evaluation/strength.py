"""How an edit's strength, kind and composite are chosen from validation scores (`evaluation.scoring` records).

Two rules, on the candidates of one attribute:
  judge     among the candidates whose success reaches `target_success`, the one with the highest preservation;
            when none reaches it, the highest success x preservation. Needs nothing but the judge: the rule on
            real data.
  faithful  only edits that bring most faces closer to the true counterfactual than their base (closer_to_cf >=
            FAITHFUL) count; among those whose success reaches `target_success`, the highest closer_to_cf x
            preservation; when none reaches it, the faithful edit the judge reads most (success x preservation);
            when no candidate is faithful, the highest success x closer_to_cf x preservation. An edit the judge
            reads but that moves the face away from the truth (a mustache drawn as a beard) is never preferred
            to one that moves it towards the truth. Needs ground truth on the validation faces: procedural data,
            where the target can also be capped per attribute at the judge's success on the true counterfactuals.
`target_success` is one number, or one per attribute ({attribute: target}, e.g. capped at what the judge reads on
the true counterfactuals, `evaluation.edits.success_targets`).
Ties go to the first candidate (the smaller strength; the kinds and composites in the order they were scored).
The same rule first picks a strength per (kind, composite, attribute) (`pick_strengths`), then, among those
choices, the (kind, composite) of each attribute (`pick_edits`). Everything here is a pure function of a table;
choose on the validation split only: the test split is for reporting.
"""
from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

Target = float | Mapping[str, float]  # one success target, or one per attribute

DEFAULT_CANDIDATES = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0)
STRENGTH_RULES = ("judge", "faithful")
_NEEDS = {"judge": {"success", "preservation"}, "faithful": {"success", "preservation", "closer_to_cf"}}


def _check_scores(scores: pd.DataFrame, need: set[str], target_success: Target, rule: str) -> None:
    if rule not in STRENGTH_RULES:
        raise ValueError(f"unknown strength rule {rule!r}; expected one of {STRENGTH_RULES}")
    targets = target_success if isinstance(target_success, Mapping) else {"every attribute": target_success}
    if bad := {a: t for a, t in targets.items() if not 0 <= t <= 1}:
        raise ValueError(f"target_success must be in [0, 1], got {bad}")
    if isinstance(target_success, Mapping) and "attribute" in scores:
        if missing := sorted(set(map(str, scores["attribute"])) - set(target_success)):
            raise ValueError(f"target_success has no target for {missing}")
    need = need | _NEEDS[rule]
    if not need <= set(scores.columns):
        raise ValueError(f"scores need the columns {sorted(need)}, got {list(scores.columns)}")
    if rule == "faithful" and scores["closer_to_cf"].isna().any():
        raise ValueError("the faithful rule needs closer_to_cf (ground truth) on every candidate")


FAITHFUL = 0.5  # the faithful rule's floor: an edit must bring at least this share of faces closer to the truth


def best_row(part: pd.DataFrame, target_success: float, rule: str = "judge") -> pd.Series:
    """This module's rule on the candidates of one attribute (rows in order of preference for ties; equal merits
    go to the better preservation, then success, then the first row)."""
    part = part.reset_index(drop=True)
    success, preservation = part["success"], part["preservation"]
    if rule == "judge":
        tiers = [(success >= target_success, preservation), (success >= 0, success * preservation)]
    else:
        closer = part["closer_to_cf"]
        faithful = closer >= FAITHFUL
        tiers = [(faithful & (success >= target_success), closer * preservation),
                 (faithful, success * preservation),
                 (success >= 0, success * closer * preservation)]
    good, merit = next((good, merit) for good, merit in tiers if good.any())
    ranked = pd.DataFrame({"merit": merit, "preservation": preservation, "success": success})[good]
    best = ranked.sort_values(["merit", "preservation", "success"], ascending=False, kind="stable").index[0]
    return part.loc[best]


def capped_at_truth(target_success: float, truth: pd.DataFrame) -> dict[str, float]:
    """{attribute: min(target_success, the judge's success on its true counterfactuals)}: truth has one row per
    attribute (columns attribute, success), the judges' verdicts on the counterfactuals of the choosing faces."""
    return {str(a): min(float(target_success), float(s)) for a, s in zip(truth["attribute"], truth["success"])}


def _target_of(target_success: Target, attribute: str) -> float:
    return float(target_success[attribute] if isinstance(target_success, Mapping) else target_success)


def pick_strengths(scores: pd.DataFrame, target_success: Target = 0.9,
                   rule: str = "judge") -> dict[str, dict[str, dict[str, float]]]:
    """{method: {composite: {attribute: strength}}} by the rule, per (kind, composite, attribute) of `scores`
    (columns method, composite, attribute, strength, success, preservation[, closer_to_cf])."""
    _check_scores(scores, {"method", "composite", "attribute", "strength"}, target_success, rule)
    chosen: dict[str, dict[str, dict[str, float]]] = {}
    for (method, composite, attribute), part in scores.groupby(["method", "composite", "attribute"], sort=False):
        row = best_row(part.sort_values("strength", kind="stable"), _target_of(target_success, str(attribute)), rule)
        chosen.setdefault(str(method), {}).setdefault(str(composite), {})[str(attribute)] = float(row["strength"])
    return chosen


def pick_edits(scores: pd.DataFrame, chosen: Mapping[str, Mapping[str, Mapping[str, float]]],
               target_success: Target = 0.9, rule: str = "judge") -> dict[str, dict[str, object]]:
    """{attribute: {"method", "composite", "strength"}}: per attribute, the (kind, composite) whose score at its
    own chosen strength wins by the rule; scores in order of preference for ties."""
    _check_scores(scores, {"method", "composite", "attribute", "strength"}, target_success, rule)
    at_choice = scores[[chosen.get(m, {}).get(c, {}).get(a) == s for m, c, a, s in
                        zip(scores["method"], scores["composite"], scores["attribute"], scores["strength"])]]
    picked = {}
    for attribute, part in at_choice.groupby("attribute", sort=False):
        row = best_row(part, _target_of(target_success, str(attribute)), rule)
        picked[str(attribute)] = {"method": str(row["method"]), "composite": str(row["composite"]),
                                  "strength": float(row["strength"])}
    return picked
