"""Direction fitting on synthetic Gaussian latents with planted attribute directions."""
import numpy as np
import pandas as pd
import pytest
import torch

from attributes import (
    AttributeDirections,
    balanced_mean_directions,
    class_means,
    conditional_directions,
    cosine_similarity_frame,
    mean_directions,
    probe_directions,
    project_out,
)

D = 16


def planted(n=2000, seed=0, separation=3.0):
    """Latents = isotropic noise + separation * label along a random unit direction; one label column."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(D, generator=g)
    u /= u.norm()
    y = torch.rand(n, generator=g) < 0.4  # (N,)
    z = torch.randn(n, D, generator=g) + separation * y[:, None] * u  # (N, D)
    return z, y[:, None], u


def correlated(n=4000, seed=1):
    """Smiling correlated with Male in the labels (80% vs 20%); each attribute shifts its own latent axis."""
    g = torch.Generator().manual_seed(seed)
    male = torch.rand(n, generator=g) < 0.5
    smiling = torch.where(male, torch.rand(n, generator=g) < 0.8, torch.rand(n, generator=g) < 0.2)
    z = torch.randn(n, D, generator=g) * 0.5
    z[:, 0] += 2.0 * male
    z[:, 1] += 2.0 * smiling
    return z, torch.stack([male, smiling], dim=1), ["Male", "Smiling"]


def test_class_means_match_per_attribute_loop():
    z, labels, names = correlated(n=500)
    pos_mean, neg_mean, pos_count, neg_count = class_means(z, labels)
    for k in range(len(names)):
        y = labels[:, k]
        torch.testing.assert_close(pos_mean[k], z[y].mean(0), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(neg_mean[k], z[~y].mean(0), rtol=1e-5, atol=1e-5)
        assert pos_count[k] == y.sum() and neg_count[k] == (~y).sum()
    with pytest.raises(ValueError, match=r"\(N=500, K\)"):
        class_means(z, labels[:10])


def test_mean_and_probe_recover_planted_direction():
    z, y, u = planted()
    mean = mean_directions(z, y, ["Smiling"])
    assert float(mean["Smiling"] @ u) > 0.99
    # steps calibrate: vectors * steps is exactly the class-mean difference
    torch.testing.assert_close(mean.vectors * mean.steps[:, None], mean.pos_mean - mean.neg_mean)
    assert abs(float(mean.steps[0]) - 3.0) < 0.2

    probe = probe_directions(z[:1500], y[:1500], ["Smiling"], valid_latents=z[1500:], valid_labels=y[1500:],
                             progress=False)
    assert float(probe["Smiling"] @ u) > 0.99
    assert probe.scores["Smiling"]["roc_auc"] > 0.97 and probe.scores["Smiling"]["balanced_accuracy"] > 0.9


def test_probe_weights_are_the_decision_function_on_raw_latents():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    z, labels, names = correlated(n=600)
    z = z * torch.linspace(0.2, 5, D) + 3.0  # unequal scales and a shift: the mapping back must undo both
    probe = probe_directions(z, labels, names, progress=False)
    for k, name in enumerate(names):
        pipe = make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=1000,
                                                                  random_state=0))
        pipe.fit(z.double().numpy(), labels[:, k].numpy())
        expected = pipe.decision_function(z.double().numpy())
        raw = (z.double() @ probe.probe_weights[k].double() + probe.probe_bias[k].double()).numpy()
        np.testing.assert_allclose(raw, expected, rtol=1e-3, atol=1e-3)
        assert torch.equal(probe.predict(z)[:, k], torch.from_numpy(expected > 0))


def test_balanced_mean_removes_inherited_correlation():
    z, labels, names = correlated()
    plain = mean_directions(z, labels, names)
    balanced = balanced_mean_directions(z, labels, names, {"Smiling": ["Male"]})
    male_axis = torch.eye(D)[0]
    assert float(plain["Smiling"] @ male_axis) > 0.4  # the plain mean inherits Male
    assert abs(float(balanced["Smiling"] @ male_axis)) < 0.05
    assert float(balanced["Smiling"] @ torch.eye(D)[1]) > 0.99
    assert balanced.balance_on == {"Smiling": ["Male"]}
    torch.testing.assert_close(balanced["Male"], plain["Male"])  # not in the dict -> plain mean


def test_balanced_mean_skips_thin_cells_explicitly():
    z, labels, names = correlated(n=400)
    labels = labels.clone()
    labels[labels[:, 0], 1] = True  # every Male smiles: the Male cell has no negatives
    with pytest.warns(UserWarning, match="skipped cells"):
        balanced = balanced_mean_directions(z, labels, names, ["Male"], min_cell_count=5)
    assert balanced.info["skipped_cells"]["Smiling"] == ["Male=1"]
    assert int(balanced.pos_count[balanced.index("Smiling")]) == int((labels[:, 1] & ~labels[:, 0]).sum())
    assert torch.isfinite(balanced.vectors).all()
    with pytest.raises(KeyError, match="did you mean 'Male'"):
        balanced_mean_directions(z, labels, names, ["Mael"])


def test_conditional_direction_is_orthogonal_to_three_conditions():
    g = torch.Generator().manual_seed(2)
    n, names = 3000, ["Blond_Hair", "Male", "Young", "Eyeglasses", "Smiling"]
    labels = torch.rand(n, len(names), generator=g) < 0.4
    axes = torch.randn(len(names), D, generator=g) * 0.3 + torch.eye(len(names), D)  # entangled directions
    z = torch.randn(n, D, generator=g) + labels.float() @ axes * 2
    base = mean_directions(z, labels, names)
    conds = ["Male", "Young", "Eyeglasses"]
    cond = conditional_directions(base, {"Blond_Hair": conds})
    assert cond.method == "conditional" and cond.conditions == {"Blond_Hair": conds}
    v = cond["Blond_Hair"]
    assert abs(float(v.norm()) - 1) < 1e-5
    for c in conds:
        assert abs(float(v @ base[c])) < 1e-5
    assert float(v @ base["Blond_Hair"]) > 0.5  # still mostly the attribute itself
    torch.testing.assert_close(cond["Smiling"], base["Smiling"])  # unconditioned: unchanged
    # the step is the class-mean distance along the new direction
    i = cond.index("Blond_Hair")
    torch.testing.assert_close(cond.steps[i], (base.pos_mean[i] - base.neg_mean[i]) @ v)


def test_project_out_rejects_dependent_conditions():
    a = torch.randn(2, D)
    with pytest.raises(ValueError, match="linearly dependent"):
        project_out(torch.randn(D), torch.stack([a[0], a[1], a[0] + 2 * a[1]]))
    torch.testing.assert_close(project_out(a[0], a[:1]) @ a[0], torch.tensor(0.0), atol=1e-5, rtol=0)


def test_too_few_positives_is_reported_and_left_out():
    z, labels, names = correlated(n=500)
    rare = torch.zeros(len(z), dtype=torch.bool)
    rare[:7] = True  # 7 positives < min_count
    labels = torch.cat([labels, rare[:, None]], dim=1)
    names = names + ["Bald"]
    with pytest.warns(UserWarning, match=r"Bald \(7 positive"):
        mean = mean_directions(z, labels, names, min_count=20)
    with pytest.warns(UserWarning, match="Bald"):
        probe = probe_directions(z, labels, names, min_count=20, progress=False)
    for dirs in (mean, probe):
        assert dirs.names == ["Male", "Smiling"] and dirs.dropped == ["Bald"] and "Bald" not in dirs
        assert torch.isfinite(dirs.vectors).all() and torch.isfinite(dirs.steps).all()
    with pytest.raises(KeyError, match="too few samples"):
        mean["Bald"]


def test_probes_in_parallel_match_sequential():
    z, labels, names = correlated(n=400)
    one = probe_directions(z, labels, names, n_jobs=1, progress=False)
    two = probe_directions(z, labels, names, n_jobs=2, progress=False)
    torch.testing.assert_close(one.vectors, two.vectors)


def test_cosine_similarity_frame():
    z, labels, names = correlated()
    mean = mean_directions(z, labels, names)
    frame = cosine_similarity_frame(mean.names, mean.vectors)
    assert isinstance(frame, pd.DataFrame) and list(frame.index) == names and list(frame.columns) == names
    np.testing.assert_allclose(np.diag(frame.to_numpy()), 1.0, atol=1e-6)
    np.testing.assert_allclose(frame.to_numpy(), frame.to_numpy().T)
    assert frame.loc["Male", "Smiling"] == pytest.approx(float(mean["Male"] @ mean["Smiling"]), abs=1e-6)
    with pytest.raises(ValueError):
        cosine_similarity_frame(["a"], mean.vectors)


def test_directions_reject_non_unit_vectors():
    with pytest.raises(ValueError, match="unit length"):
        AttributeDirections(names=["A"], vectors=torch.ones(1, 3), steps=[1.0], method="mean",
                            pos_mean=torch.zeros(1, 3), neg_mean=torch.zeros(1, 3), pos_count=[5], neg_count=[5])


def test_one_class_attribute_is_left_out_by_name_even_with_min_count_0():
    from attributes.directions import enough_samples

    z, labels, names = correlated(n=400)
    labels = torch.cat([labels, torch.zeros(len(z), 1, dtype=torch.bool)], dim=1)  # "Bald": no positive at all
    names = [*names, "Bald"]
    with pytest.warns(UserWarning, match=r"fewer than 1 positives or negatives: Bald \(0 positive, 400 negative\)"):
        probe = probe_directions(z, labels, names, min_count=0, progress=False)
    assert probe.names == ["Male", "Smiling"] and probe.dropped == ["Bald"]
    with pytest.warns(UserWarning, match="Bald"):
        assert mean_directions(z, labels, names, min_count=0).dropped == ["Bald"]
    with pytest.warns(UserWarning, match=r"A \(0 positive, 5 negative\), B \(3 positive, 0 negative\)"):
        assert enough_samples(["A", "B", "C"], [0, 3, 1], [5, 0, 1], min_count=0) == ([2], ["A", "B"])


def test_probe_fit_errors_name_the_attribute():
    z, labels, names = correlated(n=200)
    with pytest.raises(ValueError, match=r"probe for attribute 'Male' could not be fitted .*C=-1"):
        probe_directions(z, labels, names, C=-1.0, progress=False)


# ---- regression, joint probe pattern, hair-colour subspace ------------------------------------------------------
def linear_latents(n=6000, seed=2, noise=0.3):
    """Latents = Y @ B_true + noise with correlated labels: A drives B (80 % vs 20 %), C independent."""
    from attributes import regression_directions  # noqa: F401  (import checked here)

    g = torch.Generator().manual_seed(seed)
    a = torch.rand(n, generator=g) < 0.5
    b = torch.where(a, torch.rand(n, generator=g) < 0.8, torch.rand(n, generator=g) < 0.2)
    c = torch.rand(n, generator=g) < 0.3
    y = torch.stack([a, b, c], dim=1)  # (N, 3)
    b_true = torch.randn(3, D, generator=g) * torch.tensor([[2.0], [1.0], [1.5]])  # (3, D), not orthogonal
    z = y.float() @ b_true + noise * torch.randn(n, D, generator=g) + 1.0  # (N, D)
    return z, y, ["A", "B", "C"], b_true


def test_regression_recovers_true_coefficients_where_means_are_biased():
    from attributes import regression_coefficients, regression_directions

    z, y, names, b_true = linear_latents()
    coef = regression_coefficients(z, y).float()
    torch.testing.assert_close(coef, b_true, atol=0.05, rtol=0)
    reg = regression_directions(z, y, names)
    mean = mean_directions(z, y, names)
    assert reg.method == "regression"
    for k, name in enumerate(names):
        u = b_true[k] / b_true[k].norm()
        assert float(reg[name] @ u) > 0.999
        assert float(reg.steps[k]) == pytest.approx(float(b_true[k].norm()), rel=0.02)
    # the correlated pair's mean differences carry each other's coefficients; the regression's do not
    assert float(mean["B"] @ (b_true[1] / b_true[1].norm())) < 0.95
    # A's mean difference is b_A plus the share of B that comes with A: b_A + (P(B|A) - P(B|not A)) b_B
    torch.testing.assert_close(mean.pos_mean[0] - mean.neg_mean[0], b_true[0] + 0.6 * b_true[1], atol=0.25, rtol=0)
    torch.testing.assert_close(reg.vectors * reg.steps[:, None], reg.pos_mean - reg.neg_mean, atol=1e-4, rtol=0)
    assert reg.pos_count.tolist() == y.sum(0).tolist()


def test_regression_boundary_scores_and_survives_save(tmp_path):
    from attributes import regression_directions, score_directions

    z, y, names, _ = linear_latents()
    reg = regression_directions(z[:4000], y[:4000], names)
    scores = score_directions(reg, z[4000:], y[4000:], names)
    assert all(scores[n]["balanced_accuracy"] > 0.9 for n in names)
    reg.save(tmp_path / "directions-regression.pt")
    back = AttributeDirections.load(tmp_path / "directions-regression.pt")
    assert back.method == "regression" and torch.equal(back.vectors, reg.vectors)


def test_regression_rejects_collinear_labels_without_ridge():
    from attributes import regression_coefficients, regression_directions

    z, y, names, _ = linear_latents(n=500)
    twin = torch.cat([y, y[:, :1]], dim=1)  # (N, 4): A twice
    with pytest.raises(ValueError, match="collinear"):
        regression_coefficients(z, twin, ridge=0.0)
    coef = regression_coefficients(z, twin, ridge=1e-3)  # the ridge splits A's effect between the twins
    assert torch.isfinite(coef).all()
    with pytest.raises(ValueError, match="ridge"):
        regression_directions(z, y, names, ridge=-1.0)


def test_joint_activation_pattern_moves_one_probe_only():
    from attributes import joint_activation_pattern

    g = torch.Generator().manual_seed(5)
    w = torch.randn(D, 4, generator=g, dtype=torch.float64)
    m = torch.randn(D, D, generator=g, dtype=torch.float64)
    cov = m @ m.T + 0.1 * torch.eye(D, dtype=torch.float64)
    a = joint_activation_pattern(w, cov)  # (D, 4)
    torch.testing.assert_close(w.T @ a, torch.eye(4, dtype=torch.float64), atol=1e-5, rtol=0)
    # among moves that shift probe 0 by one and the others by none, it has the smallest Mahalanobis norm
    cinv = torch.linalg.inv(cov)
    null = torch.linalg.svd(w.T).Vh[4:].T  # (D, D-4): directions no probe sees
    other = a[:, 0] + null @ torch.randn(D - 4, generator=g, dtype=torch.float64)
    assert float(a[:, 0] @ cinv @ a[:, 0]) < float(other @ cinv @ other)
    with pytest.raises(ValueError, match="dependent"):
        joint_activation_pattern(torch.cat([w, w[:, :1]], dim=1), cov)
    with pytest.raises(ValueError, match="covariance"):
        joint_activation_pattern(w, cov[:3])


def test_probe_joint_directions_keep_other_probes_fixed():
    from attributes import probe_joint_directions

    z, y, names, _ = linear_latents(n=3000)
    probe = probe_directions(z, y, names, progress=False)
    joint = probe_joint_directions(probe, z)
    assert joint.method == "probe_joint" and joint.names == probe.names
    torch.testing.assert_close(joint.probe_weights, probe.probe_weights)
    torch.testing.assert_close(joint.margins, probe.margins)
    w, b = probe.probe_weights.double(), probe.probe_bias.double()
    z0 = z[:50].double()
    for t in range(len(names)):
        moved = z0 + joint.steps[t].double() * joint.vectors[t].double()
        change = (moved - z0) @ w.T  # (50, K) change of every probe's score
        gap = float((probe.pos_mean[t] - probe.neg_mean[t]).double() @ w[t])
        others = [j for j in range(len(names)) if j != t]
        torch.testing.assert_close(change[:, t], torch.full((50,), gap, dtype=torch.float64), atol=1e-3, rtol=1e-4)
        assert float(change[:, others].abs().max()) < 1e-3 * gap
    # target mode with the probes' boundaries lands at the margin and leaves the other probes where they were
    src = probe.predict(z[:50]).float()
    tgt = src.clone()
    tgt[:, 1] = 1 - tgt[:, 1]
    out = joint.edit_by_labels(z[:50], src, tgt, mode="target")
    dist_before, dist_after = probe.signed_distance(z[:50]), probe.signed_distance(out)
    want = torch.where(tgt[:, 1] > 0, 1.0, -1.0) * joint.margins[1]
    torch.testing.assert_close(dist_after[:, 1], want, atol=1e-3, rtol=0)
    torch.testing.assert_close(dist_after[:, [0, 2]], dist_before[:, [0, 2]], atol=1e-3, rtol=0)
    with pytest.raises(ValueError, match="probe_weights"):
        probe_joint_directions(mean_directions(z, y, names), z)


def hair_latents(n=4000, seed=7):
    """Four exclusive hair colours (and none) at fixed class centres in a 4-d block of the latent, plus a face axis."""
    g = torch.Generator().manual_seed(seed)
    colour = torch.randint(0, 5, (n,), generator=g)  # 0..3 a colour, 4 none
    centres = torch.randn(5, D, generator=g) * 2  # (5, D)
    centres[:, 6:] = 0  # colour lives in the first 6 axes
    z = centres[colour] + 0.2 * torch.randn(n, D, generator=g)
    z[:, 8] += 3 * (torch.rand(n, generator=g) < 0.5)  # an unrelated attribute
    y = torch.nn.functional.one_hot(colour, 5)[:, :4].bool()  # (N, 4)
    return z, y, centres


def test_hair_colour_move_lands_at_class_mean_and_keeps_the_rest():
    from attributes import hair_colour_move, subspace_basis, subspace_class_coordinates, subspace_move
    from attributes.hair import HAIR_COLOURS

    z, y, centres = hair_latents()
    names = list(HAIR_COLOURS)
    dirs = mean_directions(z, y, names)
    basis = subspace_basis(dirs.vectors)  # (D, 4)
    torch.testing.assert_close(basis.T @ basis, torch.eye(4, dtype=torch.float64), atol=1e-10, rtol=0)
    coords = subspace_class_coordinates(z, y, names, basis, names)  # (5, 4)
    members = [y[:, c] for c in range(4)] + [~y.any(dim=1)]
    expected = torch.stack([z[m].double().mean(0) for m in members]) @ basis  # (5, 4)
    torch.testing.assert_close(coords, expected, atol=1e-6, rtol=0)
    z0 = z[y[:, 2]][:20]  # brown-haired faces
    moved = hair_colour_move(z0, dirs, "Blond_Hair", coords)
    torch.testing.assert_close(moved.double() @ basis, coords[1].expand(20, -1), atol=1e-5, rtol=0)
    outside = torch.eye(D, dtype=torch.float64) - basis @ basis.T  # projector onto the complement
    torch.testing.assert_close(moved.double() @ outside, z0.double() @ outside, atol=1e-5, rtol=0)
    # the subspace's coordinates classify each moved face as the target colour (nearest class centre)
    for target, row in [("Black_Hair", 0), ("Gray_Hair", 3), (None, 4)]:
        out = hair_colour_move(z0, dirs, target, coords).double() @ basis
        nearest = torch.cdist(out, coords).argmin(dim=1)
        assert (nearest == row).all()
    half = subspace_move(z0, basis, coords[1], strength=0.5)
    torch.testing.assert_close(half.double() @ basis, (z0.double() @ basis + coords[1]) / 2, atol=1e-5, rtol=0)
    with pytest.raises(KeyError, match="Blond_Hair"):
        hair_colour_move(z0, dirs, "Blonde_Hair", coords)
    with pytest.raises(ValueError, match="class_coords"):
        hair_colour_move(z0, dirs, "Blond_Hair", coords[:4])
    with pytest.raises(ValueError, match="dependent"):
        subspace_basis(torch.stack([dirs.vectors[0], dirs.vectors[0]]))


def test_hair_subspace_kind_moves_colours_in_the_subspace_and_the_rest_like_its_base():
    from attributes.hair import HAIR_COLOURS, HairSubspaceDirections

    z, y, _ = hair_latents()
    other = (z[:, 8] > 1.5)[:, None]  # the unrelated attribute as a fifth label
    names = [*HAIR_COLOURS, "Other"]
    labels = torch.cat([y, other], dim=1)  # (N, 5)
    base = mean_directions(z, labels, names)
    kind = HairSubspaceDirections(base, z, labels, names)
    assert kind.names == names and kind.method == "mean+hair_subspace"
    brown = labels[:, 2] & ~labels[:, 4]
    z0, source = z[brown][:20], labels[brown][:20].float()  # (20, D), (20, 5)
    to_blond = source.clone()
    to_blond[:, 2], to_blond[:, 1] = 0, 1
    moved = kind.edit_by_labels(z0, source, to_blond, strength=1.0)
    torch.testing.assert_close(moved.double() @ kind.basis, kind.class_coords[1].expand(20, -1), atol=1e-5, rtol=0)
    # a change off the colours is exactly the base kind's edit, and the colour part leaves the base edit alone
    to_other = source.clone()
    to_other[:, 4] = 1
    torch.testing.assert_close(kind.edit_by_labels(z0, source, to_other, strength=2.0),
                               base.edit_by_labels(z0, source, to_other, strength=2.0))
    # per-attribute strength: the colour set (Blond, column 1) decides the subspace move
    strength = torch.tensor([3.0, 0.5, 3.0, 3.0, 3.0])
    half = kind.edit_by_labels(z0, source, to_blond, strength=strength).double() @ kind.basis
    torch.testing.assert_close(half, (z0.double() @ kind.basis + kind.class_coords[1]) / 2, atol=1e-5, rtol=0)
    two = to_blond.clone()
    two[:, 0] = 1
    with pytest.raises(ValueError, match="more than one"):
        kind.edit_by_labels(z0, source, two)
    with pytest.raises(ValueError, match="lack the hair colours"):
        HairSubspaceDirections(base.subset(["Black_Hair", "Other"]), z, labels, names)


def test_hair_subspace_kind_moves_a_face_into_its_context_with_its_base_kind():
    from attributes.context import CONTEXT_STRENGTH, context_latents
    from attributes.directions import label_pair_counts
    from attributes.hair import HAIR_COLOURS, HairSubspaceDirections

    z, y, _ = hair_latents()
    names = [*HAIR_COLOURS, "Other"]
    labels = torch.cat([y, (z[:, 8] > 1.5)[:, None]], dim=1)  # (N, 5)
    base = mean_directions(z, labels, names)
    kind = HairSubspaceDirections(base, z, labels, names)
    # in the training labels "Other" is only ever seen with black hair: a brown-haired face asked for it is drawn
    # with black hair, a context that changes the hair colours
    training = labels.clone()
    training[training[:, 4], :4] = torch.tensor([True, False, False, False])
    pairs = label_pair_counts(training)
    brown = labels[:, 2] & ~labels[:, 4]
    z0, source = z[brown][:20], labels[brown][:20].long()
    target = source.clone()
    target[:, 4] = 1
    z_ctx, moved = context_latents(kind, z0, source, target, pairs)
    assert bool(moved.all())
    torch.testing.assert_close(z_ctx, context_latents(base, z0, source, target, pairs)[0])
    black = source.clone()
    black[:, 0], black[:, 2] = 1, 0
    own = kind.edit_by_labels(z0, source, black, strength=CONTEXT_STRENGTH)  # the subspace kind's own colour move
    assert not torch.allclose(z_ctx, own)


def test_fit_leaves_probe_joint_out_out_loud_when_there_are_more_probes_than_dimensions():
    from attributes.encode import Latents
    from attributes.fit import FitConfig, fit_directions

    g = torch.Generator().manual_seed(3)
    n, d, k = 400, 3, 4  # 4 attributes in a 3-d latent: no move changes one probe and leaves the other three
    labels = torch.rand(n, k, generator=g) < 0.5
    mu = labels[:, :d].float() * 2 + 0.3 * torch.randn(n, d, generator=g)
    latents = Latents(mu=mu, logvar=torch.zeros(n, d), index=[f"{i:06d}.jpg" for i in range(n)],
                      partition=["train"] * 300 + ["valid"] * 100, labels=labels,
                      attribute_names=["A", "B", "C", "E"])
    config = FitConfig(methods=("mean", "probe", "probe_joint"), min_count=5, probe_jobs=1)
    with pytest.warns(UserWarning, match="probe_joint left out: 4 probes cannot be moved independently in 3"):
        fitted = fit_directions(latents, config, progress=False)
    assert list(fitted) == ["mean", "probe"]
