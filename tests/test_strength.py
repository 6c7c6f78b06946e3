"""evaluation.strength: the choice rules on hand-made validation tables."""
from __future__ import annotations

import pandas as pd
import pytest

from evaluation.strength import best_row, pick_edits, pick_strengths

COLUMNS = ["method", "composite", "attribute", "strength", "success", "preservation", "closer_to_cf"]


def scores(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=COLUMNS)


def test_judge_rule_takes_the_best_preserving_strength_that_reaches_the_target_else_the_best_product():
    table = scores([
        ("mean", "none", "X", 1.0, 0.50, 0.99, 0.9), ("mean", "none", "X", 2.0, 0.92, 0.95, 0.2),
        ("mean", "none", "X", 3.0, 0.99, 0.90, 0.1),
        ("mean", "none", "Y", 1.0, 0.20, 0.99, 0.9), ("mean", "none", "Y", 2.0, 0.60, 0.90, 0.5),
        ("mean", "none", "Y", 3.0, 0.80, 0.50, 0.1),
    ])
    assert pick_strengths(table, 0.9) == {"mean": {"none": {"X": 2.0, "Y": 2.0}}}  # Y: none reaches 0.9
    assert pick_strengths(table, 0.0) == {"mean": {"none": {"X": 1.0, "Y": 1.0}}}
    with pytest.raises(ValueError, match="target_success"):
        pick_strengths(table, 1.5)
    with pytest.raises(ValueError, match="unknown strength rule 'judges'"):
        pick_strengths(table, 0.9, "judges")


def test_faithful_rule_weighs_the_faces_brought_closer_to_the_truth():
    table = scores([  # both reach the target; the weaker edit moves more faces towards the counterfactual
        ("mean", "none", "X", 1.5, 0.93, 0.94, 0.80), ("mean", "none", "X", 3.0, 0.99, 0.95, 0.60),
        # only an unfaithful edit reaches the target: the faithful edit the judge reads most wins instead
        ("mean", "none", "Y", 1.0, 0.40, 0.98, 0.90), ("mean", "none", "Y", 1.5, 0.60, 0.97, 0.70),
        ("mean", "none", "Y", 3.0, 0.97, 0.90, 0.05),
        # no edit brings most faces closer: the best success x closer x preservation
        ("mean", "none", "Z", 1.0, 0.30, 0.99, 0.40), ("mean", "none", "Z", 2.0, 0.90, 0.95, 0.20),
    ])
    assert pick_strengths(table, 0.9, "judge") == {"mean": {"none": {"X": 3.0, "Y": 3.0, "Z": 2.0}}}
    assert pick_strengths(table, 0.9, "faithful") == {"mean": {"none": {"X": 1.5, "Y": 1.5, "Z": 2.0}}}
    with pytest.raises(ValueError, match="closer_to_cf"):
        pick_strengths(table.drop(columns="closer_to_cf"), 0.9, "faithful")
    with pytest.raises(ValueError, match="ground truth"):
        pick_strengths(table.assign(closer_to_cf=float("nan")), 0.9, "faithful")


def test_ties_go_to_better_preservation_then_to_the_smaller_strength():
    part = scores([("mean", "none", "X", s, 0.95, p, 0.6) for s, p in ((1.0, 0.90), (2.0, 0.97), (3.0, 0.97))])
    assert best_row(part, 0.9, "judge")["strength"] == 2.0  # equal preservation: the smaller strength
    part["closer_to_cf"] = [0.7, 0.6, 0.6]
    assert best_row(part, 0.9, "faithful")["strength"] == 1.0


def test_the_pick_compares_each_kind_and_composite_at_its_own_chosen_strength():
    table = scores([
        ("mean", "none", "A", 1.0, 0.95, 0.80, 0.5), ("mean", "none", "A", 2.0, 0.99, 0.70, 0.3),
        ("mean", "input", "A", 1.0, 0.93, 0.90, 0.7), ("mean", "input", "A", 2.0, 0.98, 0.85, 0.4),
        ("balanced", "none", "A", 1.0, 0.60, 0.99, 0.9), ("balanced", "none", "A", 3.0, 0.92, 0.90, 0.6),
    ])
    chosen = pick_strengths(table, 0.9, "faithful")
    assert chosen == {"mean": {"none": {"A": 1.0}, "input": {"A": 1.0}}, "balanced": {"none": {"A": 3.0}}}
    assert pick_edits(table, chosen, 0.9, "faithful") == {"A": {"method": "mean", "composite": "input", "strength": 1.0}}
    # a kind's score at a strength it did not choose does not count: balanced at 1.0 misses the target
    only = {"mean": {"none": {"A": 2.0}}, "balanced": {"none": {"A": 1.0}}}
    assert pick_edits(table, only, 0.9, "judge")["A"]["method"] == "mean"


def test_a_per_attribute_target_asks_each_attribute_for_its_own_success():
    table = scores([  # X: the judge reads the truth on 40 % of faces; a 90 % edit of X would exaggerate
        ("mean", "none", "X", 1.0, 0.45, 0.97, 0.85), ("mean", "none", "X", 3.0, 0.95, 0.85, 0.55),
        ("mean", "none", "Y", 1.0, 0.45, 0.97, 0.85), ("mean", "none", "Y", 3.0, 0.95, 0.85, 0.55),
    ])
    per_attribute = {"X": 0.4, "Y": 0.9}
    chosen = pick_strengths(table, per_attribute, "faithful")
    assert chosen == {"mean": {"none": {"X": 1.0, "Y": 3.0}}}
    assert pick_edits(table, chosen, per_attribute, "faithful")["X"]["strength"] == 1.0
    assert pick_strengths(table, 0.9, "faithful") == {"mean": {"none": {"X": 3.0, "Y": 3.0}}}
    with pytest.raises(ValueError, match=r"no target for \['Y'\]"):
        pick_strengths(table, {"X": 0.4}, "faithful")
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        pick_strengths(table, {"X": 0.4, "Y": 1.2}, "faithful")
