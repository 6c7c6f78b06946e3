"""Difference edits in latent space, interpolation, image edits through a tiny ConvVAE, wrong-way warnings."""
import math

import warnings

import pytest
import torch

from attributes import (
    AttributeDirections,
    WrongWayEditWarning,
    edit_images,
    edit_latents,
    lerp,
    mean_directions,
    slerp,
    wrong_way_counts,
)

D, K = 10, 4


def orthonormal(k=K, d=D, seed=0):
    q, _ = torch.linalg.qr(torch.randn(d, k, generator=torch.Generator().manual_seed(seed)))
    return q.T.contiguous()  # (K, D)


def random_labels(n, k=K, seed=0):
    return (torch.rand(n, k, generator=torch.Generator().manual_seed(seed)) < 0.5).float()


@pytest.mark.parametrize("mode", ["offset", "target"])
def test_target_equal_source_changes_nothing(mode):
    z = torch.randn(6, D)
    v = orthonormal()
    src = random_labels(6)
    out = edit_latents(z, v, torch.ones(K), src, src.clone(), mode=mode, probe_weights=v * 3, probe_bias=torch.ones(K))
    assert torch.equal(out, z)
    # and per row: a row whose target equals its source is bit-for-bit unchanged while others move
    tgt = src.clone()
    tgt[0, 1] = 1 - tgt[0, 1]
    out = edit_latents(z, v, torch.ones(K), src, tgt, mode=mode, probe_weights=v * 3, probe_bias=torch.ones(K))
    assert torch.equal(out[1:], z[1:]) and not torch.equal(out[0], z[0])


def test_multi_attribute_offset_moves_only_the_differing_attributes():
    z = torch.randn(5, D)
    v, steps = orthonormal(), torch.tensor([1.0, 2.0, 3.0, 4.0])
    src = torch.zeros(5, K)
    src[:, 2] = 1
    tgt = src.clone()
    tgt[:, 0], tgt[:, 2] = 1, 0  # add attribute 0, remove attribute 2
    out = edit_latents(z, v, steps, src, tgt, strength=0.5)
    moved = (out - z) @ v.T  # (N, K) change of each projection
    torch.testing.assert_close(moved[:, 0], torch.full((5,), 0.5 * 1.0))
    torch.testing.assert_close(moved[:, 2], torch.full((5,), -0.5 * 3.0))
    torch.testing.assert_close(moved[:, [1, 3]], torch.zeros(5, 2), atol=1e-6, rtol=0)
    # nothing moves outside the span of the changed directions either
    residual = (out - z) - ((out - z) @ v[[0, 2]].T) @ v[[0, 2]]
    assert residual.abs().max() < 1e-6


def test_correlated_directions_do_not_undo_each_other():
    v = torch.nn.functional.normalize(torch.eye(K, D) + 0.6 * torch.ones(K, D) / math.sqrt(D), dim=1)
    z = torch.randn(3, D)
    src, tgt = torch.zeros(3, K), torch.zeros(3, K)
    tgt[:, :3] = 1
    steps = torch.tensor([1.5, 1.0, 0.5, 2.0])
    out = edit_latents(z, v, steps, src, tgt)
    # each changed attribute moves along its own direction by exactly its step, jointly
    torch.testing.assert_close(((out - z) @ v.T)[:, :3], steps[:3].expand(3, 3), atol=1e-5, rtol=0)
    # many distinct change patterns per batch (solved row by row) obey the same rule
    g = torch.Generator().manual_seed(7)
    w = torch.nn.functional.normalize(torch.randn(8, D, generator=g) + 0.5, dim=1)
    z, src, tgt = torch.randn(300, D, generator=g), random_labels(300, 8, seed=8), random_labels(300, 8, seed=9)
    assert len(torch.unique(tgt != src, dim=0)) > 64
    out = edit_latents(z, w, torch.ones(8), src, tgt)
    changed = tgt != src
    torch.testing.assert_close(((out - z) @ w.T)[changed], (tgt - src)[changed], atol=1e-5, rtol=0)


def test_target_mode_lands_at_requested_signed_distance():
    g = torch.Generator().manual_seed(3)
    w = torch.randn(K, D, generator=g) * 2  # unnormalised, non-orthogonal probe normals
    b = torch.randn(K, generator=g)
    v = torch.nn.functional.normalize(w, dim=1)
    margins = torch.tensor([1.0, 0.5, 2.0, 1.5])
    z = torch.randn(8, D, generator=g)
    src = random_labels(8, seed=4)
    tgt = src.clone()
    tgt[:, 1] = 1 - tgt[:, 1]
    tgt[:, 3] = 1 - tgt[:, 3]
    out = edit_latents(z, v, torch.ones(K), src, tgt, strength=1.5, mode="target", probe_weights=w, probe_bias=b,
                       margins=margins)
    dist = (out @ w.T + b) / w.norm(dim=1)  # (N, K) signed distances after the edit
    want = torch.where(tgt > 0, 1.0, -1.0) * 1.5 * margins
    torch.testing.assert_close(dist[:, [1, 3]], want[:, [1, 3]], atol=1e-5, rtol=0)
    # an image already past the goal is pulled back to it, not pushed further
    zz = torch.zeros(1, D) + 100 * v[0]
    one = edit_latents(zz, v, torch.ones(K), torch.zeros(1, K), torch.tensor([[1.0, 0, 0, 0]]), mode="target",
                       probe_weights=w, probe_bias=b, margins=margins)
    assert float((one @ w[0] + b[0]) / w[0].norm()) == pytest.approx(1.0, abs=1e-4)
    with pytest.raises(ValueError, match="probe_weights"):
        edit_latents(z, v, torch.ones(K), src, tgt, mode="target")
    with pytest.raises(ValueError, match="0/1"):
        edit_latents(z, v, torch.ones(K), src, tgt * 2)


def test_lerp_and_slerp_shapes_and_endpoints():
    a, b = torch.randn(5, D), torch.randn(5, D)
    t = torch.linspace(0, 1, 7)
    for f in (lerp, slerp):
        path = f(a, b, t)
        assert path.shape == (7, 5, D)
        torch.testing.assert_close(path[0], a, atol=1e-5, rtol=0)
        torch.testing.assert_close(path[-1], b, atol=1e-5, rtol=0)
        assert f(a, b, 0.5).shape == (5, D)
    # equal-norm endpoints stay on the sphere under slerp, not under lerp
    b_same = b / b.norm(dim=1, keepdim=True) * a.norm(dim=1, keepdim=True)
    mid = slerp(a, b_same, 0.5)
    torch.testing.assert_close(mid.norm(dim=1), a.norm(dim=1), atol=1e-4, rtol=0)
    # parallel vectors fall back to lerp without NaN
    par = slerp(a, 2 * a, t)
    assert torch.isfinite(par).all()
    torch.testing.assert_close(par, lerp(a, 2 * a, t))


def test_edit_images_and_named_edits(tiny_setup):
    model, dirs = tiny_setup
    images = torch.rand(3, 3, 32, 32) * 2 - 1
    edited = edit_images(model, images, dirs, {"Smiling": 1, "Male": 0}, strength=1.0)
    assert edited.shape == (3, 3, 32, 32) and edited.min() >= -1 and edited.max() <= 1
    with torch.no_grad():
        mu, _ = model.encode(images)
    # source None = the artifact's own predictions: asking for what is predicted already changes nothing
    predicted = dirs.predict(mu)
    same = {name: int(predicted[0, j]) for j, name in enumerate(dirs.names)}
    assert torch.equal(dirs.edit(mu[:1], same), mu[:1])
    with torch.no_grad():
        unchanged = edit_images(model, images[:1], dirs, same)
        assert torch.equal(unchanged, model.decode(model.encode(images[:1])[0]))
    # an explicit source in a mapping; missing names are predicted
    out = dirs.edit(mu, {"Smiling": 1}, source={"Smiling": 0})
    torch.testing.assert_close((out - mu) @ dirs["Smiling"], dirs.steps[2].expand(3), atol=1e-5, rtol=0)


def test_bad_names_and_values_are_explained(tiny_setup):
    model, dirs = tiny_setup
    z = torch.randn(2, 8)
    with pytest.raises(KeyError, match="did you mean 'Smiling'") as err:
        dirs.edit(z, {"Smilling": 1})
    assert "Eyeglasses, Male, Smiling" in str(err.value)
    with pytest.raises(ValueError, match="Smiling: value 2 must be 0 or 1"):
        dirs.edit(z, {"Smiling": 2})
    with pytest.raises(ValueError, match="mode"):
        dirs.edit(z, {"Smiling": 1}, mode="push")


def test_parse_changes():
    from evaluation.face_edit import parse_changes

    assert parse_changes(("Smiling=1", "Eyeglasses=0", "Blond_Hair=true")) == {
        "Smiling": 1, "Eyeglasses": 0, "Blond_Hair": 1}
    with pytest.raises(ValueError, match="Smiling=2.*NAME=0 or NAME=1"):
        parse_changes(("Smiling=2",))
    with pytest.raises(ValueError, match="NAME=0"):
        parse_changes(("Smiling",))
    with pytest.raises(ValueError, match="given twice"):
        parse_changes(("Smiling=1", "Smiling=0"))


def test_partial_source_mapping_follows_the_latents_device():
    """Given columns and predicted ones meet on z's device (a "meta" tensor stands in for a GPU): no device clash,
    and no check that would have to read values back from the device."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(64, 6, generator=g)
    y = torch.rand(64, 3, generator=g) < 0.5
    dirs = mean_directions(z, y, ["Smiling", "Male", "Young"], min_count=1)
    on_meta = dirs.source_labels(z.to("meta"), {"Smiling": 0, "Young": [1] * 64})
    assert on_meta.device.type == "meta" and tuple(on_meta.shape) == (64, 3)
    on_cpu = dirs.source_labels(z, {"Smiling": 0, "Young": [1] * 64})
    assert (on_cpu[:, 0] == 0).all() and (on_cpu[:, 2] == 1).all()
    assert torch.equal(on_cpu[:, 1], dirs.predict(z)[:, 1].float())
    with pytest.raises(ValueError, match="source\\['Smiling'\\] must be 0/1"):
        dirs.source_labels(z, {"Smiling": 2})
    with pytest.raises(ValueError, match="1 or N=64"):
        dirs.source_labels(z, {"Smiling": [0, 1]})


def _skewed_directions() -> AttributeDirections:
    """Edit directions A = e1, B = e2 whose boundaries are not their directions: B's boundary normal leans against
    A's direction (as a joint-activation kind's may), so a step along A lowers B's signed distance twice as much as
    a step along B raises it."""
    vectors = torch.eye(2)
    weights = torch.tensor([[1.0, 0.0], [-2.0, 1.0]])  # boundary normals (any scale), zero offsets
    return AttributeDirections(names=["A", "B"], vectors=vectors, steps=torch.ones(2), method="probe_joint",
                               pos_mean=vectors, neg_mean=-vectors, pos_count=torch.full((2,), 50),
                               neg_count=torch.full((2,), 50), probe_weights=weights, probe_bias=torch.zeros(2))


def test_an_edit_that_moves_an_attribute_away_from_its_target_is_warned_with_its_count():
    dirs = _skewed_directions()
    z = torch.randn(7, 2, generator=torch.Generator().manual_seed(0))
    with pytest.warns(WrongWayEditWarning, match=r"moved B on 7 of 7 faces away from the target") as caught:
        edited = dirs.edit(z, {"A": 1, "B": 1}, source=torch.zeros(7, 2))
    assert "A on" not in str(caught[0].message)  # A moved towards its target
    moved = dirs.signed_distance(edited) - dirs.signed_distance(z)  # (7, 2)
    assert (moved[:, 0] > 0).all() and (moved[:, 1] < 0).all()
    # only the faces asked to change count: 3 already have B, so B is not moved on them (nor counted)
    source = torch.zeros(7, 2)
    source[:3, 1] = 1
    with pytest.warns(WrongWayEditWarning, match=r"B on 4 of 4 faces"):
        dirs.edit(z, {"A": 1, "B": 1}, source=source)
    # each alone moves the right way: no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dirs.edit(z, {"B": 1}, source=torch.zeros(7, 2))
        dirs.edit(z, {"A": 1}, source=torch.zeros(7, 2))
    wrong, asked = wrong_way_counts(torch.zeros(2, 2), torch.tensor([[1.0, -1.0], [-1.0, 1.0]]),
                                    torch.tensor([[0, 0], [1, 0]]), torch.tensor([[1, 1], [0, 0]]))
    assert wrong.tolist() == [0, 1] and asked.tolist() == [2, 1]  # row 1: A 1 -> 0 fell (right), B unasked


def test_edits_take_per_attribute_strengths_clear_exclusive_alternatives_and_composite(tiny_setup):
    from attributes.composite import change_mask, composited_edit

    model, _ = tiny_setup
    g = torch.Generator().manual_seed(6)
    z = torch.randn(400, 8, generator=g)
    labels = torch.stack([z[:, 0] > 0.5, (z[:, 0] <= 0.5) & (z[:, 1] > 0), z[:, 2] > 0], dim=1)
    dirs = mean_directions(z, labels, ["Black_Hair", "Blond_Hair", "Smiling"])
    mu = torch.zeros(2, 8)
    black = {"Black_Hair": [1, 1], "Blond_Hair": [0, 0], "Smiling": [0, 0]}
    # per-attribute strengths: Smiling moves 3 steps, the others keep 1
    out = dirs.edit(mu, {"Smiling": 1}, source=black, strength={"Smiling": 3.0})
    torch.testing.assert_close((out - mu) @ dirs["Smiling"], 3 * dirs.steps[2].expand(2), atol=1e-5, rtol=0)
    # a new hair colour clears the other (their directions are not orthogonal: the joint solve moves both)
    cleared = dirs.edit(mu, {"Blond_Hair": 1}, source=black)
    kept = dirs.edit(mu, {"Blond_Hair": 1}, source=black, clear_exclusive=False)
    assert (dirs.signed_distance(cleared)[:, 0] < dirs.signed_distance(kept)[:, 0]).all()
    # edit_images composites as asked: the default applies the masked change onto the reconstruction
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    smiles = {"Smiling": 1}
    with torch.no_grad():
        mu_images = model.encode(images)[0]
        recon = model.decode(mu_images).clamp(-1, 1)
        decoded = model.decode(dirs.edit(mu_images, smiles, strength=4.0)).clamp(-1, 1)
    for how in ("none", "recon", "input"):
        torch.testing.assert_close(edit_images(model, images, dirs, smiles, strength=4.0, composite=how),
                                   composited_edit(images, recon, decoded, how))
    torch.testing.assert_close(edit_images(model, images, dirs, smiles, strength=4.0),
                               composited_edit(images, recon, decoded, "recon"))
    mask = change_mask(recon, decoded)
    assert mask.shape == (2, 1, 32, 32) and mask.amax() > 0.5  # the edit is strong enough to pass the mask
    with pytest.raises(ValueError, match="unknown composite 'blend'"):
        edit_images(model, images, dirs, smiles, composite="blend")
