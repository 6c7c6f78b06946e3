"""The transport kind: the interaction model with each face's residual carried to the target class's Gaussian."""
import pytest
import torch

from attributes import regression_directions
from attributes.interaction import InteractionDirections
from attributes.transport import TRANSPORT, TransportDirections, gaussian_transport_map, implied_target

D = 8
NAMES = ["A", "B", "C"]


def class_latents(n=8000, seed=5):
    """Latents z = Y b + r where A's faces have no residual in dims 0-3 (a bald head has no hair shape) and the
    other faces vary there widely; B is cleared whenever A is set (a bald head has no hair colour).
    Returns z (N, D), labels (N, 3) bool, b (3, D)."""
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(n, generator=g) < 0.3
    b_label = (torch.rand(n, generator=g) < 0.5) & ~a
    c = torch.rand(n, generator=g) < 0.4
    y = torch.stack([a, b_label, c], dim=1)  # (N, 3)
    b = torch.randn(3, D, generator=g)
    scale = torch.ones(n, D)
    scale[:, :4] = torch.where(a[:, None], 0.05, 2.0)
    z = y.float() @ b + scale * torch.randn(n, D, generator=g)
    return z, y, b


def fitted(z, y, **options) -> TransportDirections:
    model = InteractionDirections(regression_directions(z, y, NAMES, min_count=20), z, y, NAMES)
    return TransportDirections(model, z, y, NAMES, **options)


def test_the_gaussian_map_carries_one_covariance_onto_the_other():
    g = torch.Generator().manual_seed(0)
    s = (m := torch.randn(5, 5, generator=g, dtype=torch.float64)) @ m.T + 0.1 * torch.eye(5, dtype=torch.float64)
    t = (m := torch.randn(5, 5, generator=g, dtype=torch.float64)) @ m.T + 0.1 * torch.eye(5, dtype=torch.float64)
    a = gaussian_transport_map(s, t)
    torch.testing.assert_close(a, a.T)
    torch.testing.assert_close(a @ s @ a, t)  # N(0, S) mapped by A is N(0, T)
    torch.testing.assert_close(gaussian_transport_map(s, s), torch.eye(5, dtype=torch.float64))
    with pytest.raises(ValueError, match="positive definite"):
        gaussian_transport_map(torch.zeros(5, 5), t)
    with pytest.raises(ValueError, match=r"must both be \(D, D\)"):
        gaussian_transport_map(s, t[:4, :4])


def test_the_implied_target_clears_what_setting_an_attribute_implies():
    source = torch.tensor([[0, 1, 1], [0, 1, 1], [1, 0, 0], [0, 1, 0]])
    target = torch.tensor([[1, 1, 1], [1, 1, 0], [0, 0, 0], [1, 0, 0]])  # row 3: the edit clears B itself
    rules = {"A": ("B", "C", "Absent")}
    out = implied_target(source, target, NAMES, rules)
    assert out.tolist() == [[1, 0, 0], [1, 0, 0], [0, 0, 0], [1, 0, 0]]
    assert implied_target(source, target, NAMES, {}).tolist() == target.tolist()
    keep = target.clone()
    keep[1, 2] = 1  # asked to keep C... but C is not changed by the edit, so the rule clears it
    assert implied_target(source, keep, NAMES, rules)[1].tolist() == [1, 0, 0]
    kept = torch.tensor([[0, 1, 0]])
    asked_c = torch.tensor([[1, 1, 1]])  # C set by the edit itself is kept
    assert implied_target(kept, asked_c, NAMES, rules).tolist() == [[1, 0, 1]]


def test_a_flip_takes_the_target_classs_residual_where_the_interaction_kind_keeps_the_faces():
    z, y, b = class_latents()
    kind = fitted(z, y, implies={"A": ("B",)}, implies_name="test", carries={})  # B cleared by the label model
    assert kind.method == TRANSPORT and kind.info["transported"] == 3 and kind.info["implies"] == "test"
    assert kind.info["carried"] == {}
    without_a = ~y[:, 0]
    faces, source = z[without_a][:2000], y[without_a][:2000].float()
    target = source.clone()
    target[:, 0] = 1
    moved = kind.edit_by_labels(faces, source, target)
    # the hair-shape dimensions' residual (the latent less what its labels predict) shrinks to what A's faces show;
    # the interaction kind keeps each face's own
    implied = implied_target(source, target, NAMES, kind.implies)
    spread = lambda x, labels: (x.double() - kind.model.predict(labels))[:, :4].std(dim=0).mean().item()  # noqa: E731
    assert spread(z[y[:, 0]], y[y[:, 0]].float()) < 0.1 and spread(faces, source) > 1.5
    assert spread(moved, implied) < 0.1
    assert spread(kind.model.edit_by_labels(faces, source, implied), implied) > 1.5
    # the other dimensions (what A's faces vary in as much as the others) keep the face, moved by A's effect and
    # by clearing B, as the flip implies
    expected = faces[:, 4:] + b[0, 4:] - source[:, 1:2] * b[1, 4:]
    assert (moved[:, 4:] - expected).abs().mean() < 0.1
    # half the strength goes half way
    torch.testing.assert_close(kind.edit_by_labels(faces, source, target, strength=0.5), (faces + moved) / 2)


def test_what_a_flip_clears_but_the_target_class_still_shows_is_carried_by_the_map():
    """A's faces carry no B label but still show B's look (a bald head's fringe keeps the person's hair colour)."""
    g = torch.Generator().manual_seed(3)
    n = 8000
    a, shows_b, c = (torch.rand(n, generator=g) < p for p in (0.3, 0.5, 0.4))
    y = torch.stack([a, shows_b & ~a, c], dim=1)  # (N, 3): B is labelled on faces without A only
    b = torch.randn(3, D, generator=g)
    z = torch.stack([a, shows_b, c], dim=1).float() @ b + torch.randn(n, D, generator=g)
    faces, source, look = z[~a][:2000], y[~a][:2000].float(), shows_b[~a][:2000]
    target = source.clone()
    target[:, 0] = 1
    unit = b[1] / b[1].norm()

    def separation(latents):  # how far B's look sets faces apart along its direction
        along = latents @ unit
        return (along[look].mean() - along[~look].mean()).item()

    carried = fitted(z, y, implies={"A": ("B",)})
    assert carried.info["carried"] == {"A": ["B"]}
    assert separation(faces) > 0.9 * b[1].norm()
    assert separation(carried.edit_by_labels(faces, source, target)) > 0.8 * separation(faces)
    cleared = fitted(z, y, implies={"A": ("B",)}, carries={})  # the label model gives every face A's mean look
    assert abs(separation(cleared.edit_by_labels(faces, source, target))) < 0.2 * separation(faces)


def test_only_what_is_not_an_exclusive_alternative_is_carried():
    from attributes.transport import default_carries

    rules = {"Black_Hair": ("Blond_Hair", "Brown_Hair", "Bald"), "Bald": ("Bangs", "Black_Hair"), "Bangs": ()}
    assert default_carries(rules) == {"Black_Hair": ("Bald",), "Bald": ("Bangs", "Black_Hair"), "Bangs": ()}


def test_strengths_unchanged_rows_and_bad_input():
    z, y, _ = class_latents(n=3000)
    kind = fitted(z, y)
    faces, source = z[:40], y[:40].float()
    target = source.clone()
    target[:, 0], target[:, 2] = 1 - target[:, 0], 1 - target[:, 2]
    target[:5] = source[:5]
    one = kind.edit_by_labels(faces, source, target)
    assert torch.equal(one[:5], faces[:5])  # unchanged rows, bit for bit
    torch.testing.assert_close(kind.edit_by_labels(faces, source, target, strength=torch.ones(3)), one)
    only_a = target.clone()
    only_a[:, 2] = source[:, 2]
    torch.testing.assert_close(kind.edit_by_labels(faces, source, target, strength=torch.tensor([1.0, 1.0, 0.0])),
                               kind.edit_by_labels(faces, source, only_a))
    for carries in (None, {}):  # one change at its own strength moves what it implies at that strength too
        implying = fitted(z, y, implies={"A": ("B",)}, carries=carries)
        torch.testing.assert_close(implying.edit_by_labels(faces, source, only_a, strength=torch.tensor([1.5, 1, 1])),
                                   implying.edit_by_labels(faces, source, only_a, strength=1.5))
    with pytest.raises(ValueError, match="the transport kind edits in offset mode only"):  # (the checks it shares
        kind.edit_by_labels(faces, source, target, mode="target")  # with the interaction kind: test_interaction)
    with pytest.raises(ValueError, match=r"strength must be a number or \(K=3,\)"):
        kind.edit_by_labels(faces, source, target, strength=torch.ones(2))
    with pytest.raises(ValueError, match=r"latents are \(N, 4\)"):
        TransportDirections(kind.model, z[:, :4], y, NAMES)


def test_a_class_too_small_keeps_the_interaction_kinds_edit():
    z, y, _ = class_latents(n=3000)
    kind = fitted(z, y, min_count=10**6)
    assert kind.info["transported"] == 0
    faces, source = z[:50], y[:50].float()
    for name in NAMES:
        torch.testing.assert_close(kind.edit(faces, {name: 1}, source), kind.model.edit(faces, {name: 1}, source))


def test_the_evaluation_builds_the_transport_kind_with_the_caches_flip_rules(tmp_path):
    from conftest import write_tiny_cache

    from attributes.encode import Latents
    from data.cache import load_cache
    from evaluation.edits import MODEL_KINDS, EvalConfig, model_kinds
    from evaluation.protocol import FLIP_RULES

    z, y, _ = class_latents(n=600)
    latents = Latents(mu=z, logvar=torch.zeros_like(z), index=[str(i) for i in range(len(z))],
                      partition=["train"] * len(z), labels=y, attribute_names=NAMES)
    directions = {"regression": regression_directions(z, y, NAMES, min_count=20)}
    cache = load_cache(write_tiny_cache(tmp_path / "cache"))  # not procedural faces: STGAN's rules
    assert MODEL_KINDS == ("interaction", TRANSPORT)
    built = model_kinds(directions, latents, cache, EvalConfig(derived_kinds=("transport",)))
    assert list(built) == [TRANSPORT] and built[TRANSPORT].info["implies"] == "stgan"
    assert built[TRANSPORT].implies == {k: tuple(v) for k, v in FLIP_RULES["stgan"].items()}
    assert list(model_kinds(directions, latents, cache, EvalConfig())) == ["interaction", TRANSPORT]
    with pytest.warns(UserWarning, match="interaction and transport kinds edit in offset mode only"):
        assert model_kinds(directions, latents, cache, EvalConfig(mode="target")) == {}


def test_class_gaussians_are_scikit_learns_ledoit_wolf_estimates():
    from sklearn.covariance import ledoit_wolf

    from attributes.transport import class_gaussians

    g = torch.Generator().manual_seed(2)
    x = torch.randn(900, 6, generator=g, dtype=torch.float64) @ torch.randn(6, 6, generator=g, dtype=torch.float64)
    members = torch.stack([torch.rand(900, generator=g) < p for p in (0.05, 0.5, 0.9)], dim=1)  # (N, 3)
    x[members[:, 0]] += 3.0  # a class apart
    means, covs, counts = class_gaussians(x, members)
    assert counts.tolist() == [[int((~members[:, j]).sum()), int(members[:, j].sum())] for j in range(3)]
    for j in range(3):
        for v in (0, 1):
            rows = members[:, j] == bool(v)
            expected, _ = ledoit_wolf(x[rows].numpy())
            torch.testing.assert_close(covs[j, v], torch.from_numpy(expected))
            torch.testing.assert_close(means[j, v], x[rows].mean(dim=0))
