"""The interaction kind: a regression of the latents on labels and label pairs, whose edits depend on the face."""
import pytest
import torch

from attributes import AttributeDirections, regression_directions
from attributes.interaction import INTERACTION, InteractionDirections, interaction_pairs

D = 8


def pair_latents(n=6000, seed=3, noise=0.2):
    """Latents where A's effect depends on B (a mustache takes the hair's colour): z = Y b + A*B v + noise.
    Returns z, labels (A, B, C), names, b (3, D), v (D,)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.rand(n, 3, generator=g) < torch.tensor([0.3, 0.5, 0.4])  # (N, 3) independent labels
    b = torch.randn(3, D, generator=g)
    v = 2.0 * torch.randn(D, generator=g)
    a_and_b = (y[:, 0] & y[:, 1]).float()[:, None]
    z = y.float() @ b + a_and_b * v + noise * torch.randn(n, D, generator=g)
    return z, y, ["A", "B", "C"], b, v


def fitted(z, y, names, **options) -> InteractionDirections:
    return InteractionDirections(regression_directions(z, y, names, min_count=20), z, y, names, **options)


def test_pairs_are_kept_only_when_all_four_combinations_are_seen():
    # A and B: every combination 25 times; C only ever with A (no "C without A"); D constant 0
    a = torch.tensor([1] * 50 + [0] * 50)
    b = torch.tensor(([1] * 25 + [0] * 25) * 2)
    c = torch.tensor([1] * 20 + [0] * 80)
    d = torch.zeros(100, dtype=torch.long)
    y = torch.stack([a, b, c, d], dim=1)
    assert interaction_pairs(y, min_count=25).tolist() == [[0, 1]]
    assert interaction_pairs(y, min_count=26).tolist() == []
    # C is never seen without A (nor without B), D never set: only (A, B) however few faces a cell needs
    assert interaction_pairs(y, min_count=1).tolist() == [[0, 1]]


def test_an_edit_depends_on_the_other_labels_where_the_regression_kind_averages():
    z, y, names, b, v = pair_latents()
    kind = fitted(z, y, names, pair_ridge=1.0)
    assert kind.pair_names() == [("A", "B"), ("A", "C"), ("B", "C")]
    without_a = ~y[:, 0]
    faces, source = z[without_a][:400], y[without_a][:400].float()  # (400, D), (400, 3)
    target = source.clone()
    target[:, 0] = 1
    moved = kind.edit_by_labels(faces, source, target) - faces  # (400, D)
    truth = b[0] + source[:, 1:2] * v  # flipping A adds b_A, and v where B is set
    torch.testing.assert_close(moved, truth, atol=0.1, rtol=0)
    regression = kind.base.edit_by_labels(faces, source, target) - faces  # one vector for every face
    assert (regression - truth).norm(dim=1).mean() > 5 * (moved - truth).norm(dim=1).mean()


def test_the_models_change_between_labels_is_the_difference_of_its_predictions():
    z, y, names, _, _ = pair_latents(n=2000)
    kind = fitted(z, y, names, pair_ridge=1.0)
    before = y[:300].double()
    after = before.clone()
    after[:100, 0] = 1 - after[:100, 0]  # A flipped on some rows, C on others, B on none
    after[200:, 2] = 1 - after[200:, 2]
    torch.testing.assert_close(kind.change(before, after), kind.predict(after) - kind.predict(before))
    assert kind.change(before, before).abs().max() == 0


def test_without_pairs_a_one_attribute_edit_is_the_regression_kinds():
    z, y, names, _, _ = pair_latents(n=3000)
    kind = fitted(z, y, names, min_count=10**6)  # no pair has a million faces
    assert kind.pair_names() == [] and kind.info["pairs"] == 0
    faces, source = z[:50], y[:50].float()
    for name in names:
        changes = {name: 1}
        torch.testing.assert_close(kind.edit(faces, changes, source), kind.base.edit(faces, changes, source),
                                   atol=1e-4, rtol=0)


def test_strengths_unchanged_rows_and_bad_input():
    z, y, names, _, _ = pair_latents(n=3000)
    kind = fitted(z, y, names)
    faces, source = z[:30], y[:30].float()
    target = source.clone()
    target[:, 0], target[:, 2] = 1 - target[:, 0], 1 - target[:, 2]  # A and C flipped on every face
    target[:5] = source[:5]  # five faces asked for nothing
    one = kind.edit_by_labels(faces, source, target, strength=1.5)
    assert torch.equal(one[:5], faces[:5])  # unchanged rows, bit for bit
    torch.testing.assert_close(kind.edit_by_labels(faces, source, target, strength=torch.full((3,), 1.5)), one)
    zero = kind.edit_by_labels(faces, source, target, strength=torch.tensor([1.0, 1.0, 0.0]))  # C held
    only_a = target.clone()
    only_a[:, 2] = source[:, 2]
    torch.testing.assert_close(zero, kind.edit_by_labels(faces, source, only_a))
    with pytest.raises(ValueError, match="offset mode only"):
        kind.edit_by_labels(faces, source, target, mode="target")
    with pytest.raises(ValueError, match=r"strength must be a number or \(K=3,\)"):
        kind.edit_by_labels(faces, source, target, strength=torch.ones(2))
    with pytest.raises(ValueError, match=r"z must be \(N, D=8\)"):
        kind.edit_by_labels(faces[:, :4], source, target)
    with pytest.raises(KeyError, match="Smiling"):
        kind.edit(faces, {"Smiling": 1}, source)
    with pytest.raises(ValueError, match="pair_ridge and ridge must be >= 0"):
        fitted(z, y, names, pair_ridge=-1)


def test_the_kind_follows_the_regression_directions_it_was_built_on():
    z, y, names, _, _ = pair_latents(n=3000)
    base = regression_directions(z, y, names, min_count=20).subset(["A", "B"])
    kind = InteractionDirections(base, z, y, names)
    assert kind.names == ["A", "B"] and kind.method == INTERACTION and "C" not in kind
    assert isinstance(kind.base, AttributeDirections) and kind.latent_dim == D
    with pytest.raises(ValueError, match=r"latents are \(N, 4\) but the regression directions are 8-d"):
        InteractionDirections(base, z[:, :4], y, names)


def test_the_evaluation_scores_only_derived_kinds_it_knows():
    from evaluation.edits import DERIVED_KINDS, EvalConfig

    assert INTERACTION in DERIVED_KINDS and EvalConfig().derived_kinds == DERIVED_KINDS
    with pytest.raises(ValueError, match=r"derived_kinds: unknown \['fringe'\]"):
        EvalConfig(derived_kinds=("interaction", "fringe"))
