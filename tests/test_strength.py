"""evaluation.strength: per-attribute strength chosen on validation faces with a stub decoder and judge."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from attributes.artifact import AttributeDirections
from evaluation.protocol import flip_changes
from evaluation.strength import choose_strengths, pick_strengths, strength_scores, strength_vector

NAMES = ["A", "B", "C"]


class ThresholdJudge:
    """Stub judge on 'images' that are the latents themselves: attribute k present when z_k > 1."""

    attribute_names = NAMES

    def predict(self, images):
        return images[:, :3] > 1


def identity_decode(z):
    return z.clone()


def directions(leak: float = 0.0) -> AttributeDirections:
    """Axis directions with unit steps; A's direction leaks into B's axis by `leak`."""
    v = torch.eye(3)
    v[0, 1] = leak
    v = v / v.norm(dim=1, keepdim=True)
    return AttributeDirections(names=NAMES, vectors=v, steps=torch.ones(3), method="mean", pos_mean=v * 0.5 + 1,
                               neg_mean=v * -0.5 + 1, pos_count=torch.full((3,), 50), neg_count=torch.full((3,), 50))


def faces(n=200, seed=0):
    """Latents at 0 or at 2 per axis with labels to match (so the judge is right on the reconstructions)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.rand(n, 3, generator=g) < 0.5
    z = torch.where(y, 2.0, 0.0) + 0.3 * torch.randn(n, 3, generator=g).clamp(-1.5, 1.5) * 0.5
    return z, y.numpy()


def test_flip_follows_given_conflicts():
    src = np.array([[0, 1, 0], [1, 1, 0]], dtype=bool)
    out = flip_changes("A", src, NAMES, {"A": ("B",)})
    assert out.tolist() == [[True, False, False], [False, True, False]]
    with pytest.raises(ValueError, match="unknown attribute"):
        flip_changes("Z", src, NAMES)


def test_smallest_strength_that_flips_is_chosen():
    z, y = faces()
    scores = strength_scores(directions(), z, y, identity_decode, ThresholdJudge(), (0.5, 1.0, 2.0, 3.0))
    assert list(scores.columns) == ["attribute", "strength", "success", "preservation", "n"]
    a = scores[scores["attribute"] == "A"].set_index("strength")
    # a face 2 units from the other side needs more than one unit step; the axes do not interact
    assert a.loc[0.5, "success"] < 0.2 and a.loc[3.0, "success"] == 1.0
    assert (scores["preservation"] == 1.0).all()
    chosen = choose_strengths(directions(), z, y, identity_decode, ThresholdJudge(), (0.5, 1.0, 2.0, 3.0))
    assert chosen == {"A": 2.0, "B": 2.0, "C": 2.0} or all(v in (2.0, 3.0) for v in chosen.values())
    assert min(chosen.values()) >= 1.0


def test_leaky_direction_trades_success_for_preservation():
    z, y = faces()
    scores = strength_scores(directions(leak=0.6), z, y, identity_decode, ThresholdJudge(), (1.0, 2.0, 3.0, 6.0),
                             attributes=["A"])
    a = scores.set_index("strength")
    assert a["preservation"].is_monotonic_decreasing and a.loc[6.0, "preservation"] < a.loc[2.0, "preservation"]


def test_pick_rule_and_fallback():
    table = pd.DataFrame({
        "attribute": ["X"] * 3 + ["Y"] * 3,
        "strength": [1.0, 2.0, 3.0] * 2,
        "success": [0.5, 0.92, 0.99, 0.2, 0.6, 0.8],
        "preservation": [0.99, 0.95, 0.90, 0.99, 0.9, 0.5],
    })
    assert pick_strengths(table, 0.9) == {"X": 2.0, "Y": 2.0}  # Y: none reaches 0.9 -> max success x preservation
    assert pick_strengths(table, 0.0) == {"X": 1.0, "Y": 1.0}
    with pytest.raises(ValueError, match="target_success"):
        pick_strengths(table, 1.5)
    assert strength_vector({"B": 2.5}, NAMES).tolist() == [1.0, 2.5, 1.0]


def test_bad_inputs_are_explained():
    z, y = faces(20)
    with pytest.raises(ValueError, match="labels_valid"):
        strength_scores(directions(), z, y[:, :2], identity_decode, ThresholdJudge())
    with pytest.raises(ValueError, match="candidates"):
        strength_scores(directions(), z, y, identity_decode, ThresholdJudge(), (0.0, 1.0))
    with pytest.raises(ValueError, match="no direction"):
        strength_scores(directions(), z, y, identity_decode, ThresholdJudge(), attributes=["Q"])


def test_pick_kinds_takes_each_kinds_own_chosen_strength_and_the_same_rule():
    from evaluation.strength import pick_kinds

    rows = [  # method, attribute, strength, success, preservation
        ("mean", "A", 1.0, 0.95, 0.80), ("mean", "A", 2.0, 0.99, 0.70),
        ("balanced", "A", 1.0, 0.60, 0.99), ("balanced", "A", 3.0, 0.92, 0.90),
        ("mean", "B", 1.0, 0.50, 0.90), ("balanced", "B", 1.0, 0.40, 0.99),
    ]
    scores = pd.DataFrame(rows, columns=["method", "attribute", "strength", "success", "preservation"])
    chosen = {"mean": {"A": 1.0, "B": 1.0}, "balanced": {"A": 3.0, "B": 1.0}}
    # A: both reach 90 % at their chosen strengths; balanced preserves better. B: neither does; best product wins.
    assert pick_kinds(scores, chosen) == {"A": "balanced", "B": "mean"}
    # a kind's score at a strength it did not choose does not count
    assert pick_kinds(scores, {"mean": {"A": 1.0, "B": 1.0}, "balanced": {"A": 1.0, "B": 1.0}}) == {"A": "mean", "B": "mean"}


def test_what_a_flip_implies_is_not_counted_against_preservation_and_not_edited_for():
    # Setting A pushes B down (A's direction leaks into -B), so the judge loses B on faces that had it. When the
    # data's rules say that setting A clears B (as going bald clears a hair colour), that loss is no longer a
    # preservation failure; the edit itself still moves along A alone, so success is the same.
    z, y = faces()
    args = (directions(leak=-0.6), z, y, identity_decode, ThresholdJudge(), (3.0, 6.0))
    plain = strength_scores(*args, attributes=["A"]).set_index("strength")
    implied = strength_scores(*args, attributes=["A"], implied={"A": ("B",)}).set_index("strength")
    assert (implied["success"] == plain["success"]).all()
    assert plain.loc[6.0, "preservation"] < 0.95 and (implied["preservation"] > plain["preservation"]).all()
