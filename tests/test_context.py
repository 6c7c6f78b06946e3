"""attributes.context: an edit whose target no training face shows is drawn in a context the labels do show, and only
its change comes back; exact on hand-made label pairs, a gated decoder and a tiny ConvVAE."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from test_evaluate import NAMES, SIZE, QuadrantJudge, QuadrantVAE, axis_directions

from attributes import context_labels, context_latents, edit_images, label_pair_counts
from attributes.composite import composited_edit
from attributes.context import CONTEXT_STRENGTH
from data.cache import load_cache, write_cache
from evaluation.edits import EvalConfig, evaluate_edits

MUSTACHE, MALE, SMILING = 0, 1, 2


def _pairs(rows) -> torch.Tensor:
    return label_pair_counts(torch.tensor(rows, dtype=torch.bool))


def test_a_label_no_training_face_shows_beside_the_target_is_moved_to_the_value_that_is_shown():
    # every mustache is a man's; smiling goes with everything
    pairs = _pairs([[1, 1, 0], [1, 1, 1], [0, 1, 0], [0, 0, 1], [0, 0, 0]])
    source = torch.tensor([[0, 0, 0], [0, 1, 0], [0, 0, 0], [1, 1, 1]])
    target = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 0, 1], [0, 1, 1]])
    context = context_labels(pairs, source, target)
    # a woman asked for a mustache is drawn as a man; a man, a smile, or a mustache removed need no context
    assert context.tolist() == [[0, 1, 0], [0, 1, 0], [0, 0, 0], [1, 1, 1]]


def test_a_label_is_moved_only_where_its_other_value_is_shown_and_never_one_the_edit_sets():
    # Mustache=1 is never seen beside Smiling=1 nor beside Smiling=0 (no mustache at all): nothing to move to
    pairs = _pairs([[0, 1, 0], [0, 0, 1]])
    assert context_labels(pairs, torch.tensor([[0, 0, 0]]), torch.tensor([[1, 0, 0]])).tolist() == [[0, 0, 0]]
    # Male set by the edit itself is not moved into a context, even where Mustache=1 is only seen with Male=1
    pairs = _pairs([[1, 1, 0], [0, 0, 0]])
    assert context_labels(pairs, torch.tensor([[0, 1, 0]]), torch.tensor([[1, 0, 0]])).tolist() == [[0, 1, 0]]
    with pytest.raises(ValueError, match=r"pair_counts must be \(2, 2, K, K\) = \(2, 2, 2, 2\)"):
        context_labels(pairs, torch.zeros(1, 2), torch.ones(1, 2))
    with pytest.raises(ValueError, match="0/1 labels"):
        context_labels(pairs, torch.full((1, 3), 2), torch.ones(1, 3))


def test_context_latents_move_only_the_faces_that_need_it_along_the_directions():
    dirs = axis_directions(step=2.0)  # names A B C D on the latent axes
    pairs = _pairs([[1, 1, 0, 0], [1, 1, 1, 1], [0, 1, 0, 1], [0, 0, 1, 0]])  # A only with B
    z = torch.tensor([[-1.0, -1.0, 1.0, -1.0], [-1.0, 1.0, -1.0, 1.0]])
    source = (z > 0).long()
    target = source.clone()
    target[:, 0] = 1
    z_ctx, moved = context_latents(dirs, z, source, target, pairs)
    assert moved.tolist() == [True, False]
    assert torch.equal(z_ctx[1], z[1])  # its target is shown: untouched, bit for bit
    expected = z[0].clone()
    expected[1] += CONTEXT_STRENGTH * 2.0  # B moved into the context by its calibrated step
    torch.testing.assert_close(z_ctx[0], expected)


def test_a_context_composite_brings_back_only_the_change_drawn_in_context():
    g = torch.Generator().manual_seed(0)
    image, recon = torch.rand(2, 1, 3, 16, 16, generator=g) * 0.2 - 0.1
    before = recon.clone()
    before[:, :, :, 8:] = 0.8  # the context: the right half is drawn otherwise
    after = before.clone()
    after[:, :, :4, :4] -= 0.9  # the change drawn there, top-left
    out = composited_edit(image, recon, recon.clone(), "input+context", context=(before, after))
    # the context itself never comes back: outside the change every pixel is the input's, bit for bit
    assert torch.equal(out[:, :, 4:, :], image[:, :, 4:, :]) and torch.equal(out[:, :, :, 4:], image[:, :, :, 4:])
    torch.testing.assert_close(out[:, :, :4, :4], (image[:, :, :4, :4] - 0.9).clamp(-1, 1))
    # a context that is the face itself is the plain composite
    edited = after - before + recon
    assert torch.equal(composited_edit(image, recon, edited, "recon+context", context=(recon, edited)),
                       composited_edit(image, recon, edited, "recon"))
    with pytest.raises(ValueError, match="needs the decodes of its context"):
        composited_edit(image, recon, edited, "recon+context")


class GatedQuadrantVAE(QuadrantVAE):
    """QuadrantVAE whose decoder draws attribute A only on faces with B, as one trained on faces where A always
    comes with B would: elsewhere quadrant A stays at its 'absent' grey."""

    def decode(self, z):
        out = super().decode(z)
        h = SIZE // 2
        gated = torch.where(z[:, 1:2] > 0, z[:, 0:1] / 4, torch.full_like(z[:, 0:1], -0.25))  # (N, 1)
        out[:, :, :h, :h] = gated[:, :, None, None]
        return out


def _gated_cache(directory, seed=0):
    """Train, valid and test faces whose A always comes with B (A=1, B=0 is never shown)."""
    rng = np.random.default_rng(seed)
    n = 120
    labels = rng.random((n, 4)) < 0.5
    labels[:, 0] &= labels[:, 1]
    images = np.empty((n, 3, SIZE, SIZE), dtype=np.uint8)
    h = SIZE // 2
    values = np.where(labels, 0.25, -0.25)
    for k, (r, c) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        images[:, :, r * h : (r + 1) * h, c * h : (c + 1) * h] = np.round((values[:, k] + 1) * 127.5)[:, None, None, None]
    table = pd.DataFrame(labels, columns=NAMES)
    table.index = pd.Index([f"{i + 1:06d}.jpg" for i in range(n)], name="image_id")
    table["partition"] = ["train"] * 40 + ["valid"] * 40 + ["test"] * 40
    meta = {"size": SIZE, "crop": None, "source_root": str(directory), "layout": "fixture", "file_count": n,
            "skipped": [], "draft": False}
    return load_cache(write_cache(directory, table, meta, images)), labels


def test_the_evaluation_scores_context_composites_and_copies_them_where_no_face_needs_one(tmp_path):
    cache, labels = _gated_cache(tmp_path / "cache")
    config = EvalConfig(progress=False, batch_size=16, second_judge=None, eval_faces=40, strength_candidates=(1.0,),
                        composites=("recon", "recon+context"))
    table, _ = evaluate_edits(GatedQuadrantVAE(), cache, {"mean": axis_directions()}, QuadrantJudge(), config,
                              torch.device("cpu"))
    tested = table[(table["subset"] == "chosen") & (table["method"] == "mean")].set_index(["attribute", "composite"])
    test = labels[80:]
    asked_without_b = (~test[:, 0] & ~test[:, 1]).mean()  # faces asked for A that the gated decoder cannot draw it on
    assert asked_without_b > 0.1
    assert tested.loc[("A", "recon"), "success"] == pytest.approx(1 - asked_without_b)
    assert tested.loc[("A", "recon+context"), "success"] == 1.0  # drawn beside B, brought back without it
    assert tested.loc[("A", "recon+context"), "preservation"] == 1.0  # B, C and D read as they were
    # B=0 beside A=1 is never shown either (A only comes with B), so B's context composite is scored on its own;
    for name in "CD":  # every target of C and D is shown in training: their context composite is the plain one
        plain, context = tested.loc[(name, "recon")], tested.loc[(name, "recon+context")]
        assert plain.drop("composite", errors="ignore").equals(context.drop("composite", errors="ignore"))


def test_edit_images_in_context_needs_the_label_pairs_and_is_the_plain_edit_where_none_is_needed(tiny_setup):
    model, dirs = tiny_setup  # names Eyeglasses, Male, Smiling
    images = torch.rand(3, 3, 32, 32) * 2 - 1
    with pytest.raises(ValueError, match="needs pair_counts"):
        edit_images(model, images, dirs, {"Smiling": 1}, strength=3.0, composite="input+context")
    every_pair = label_pair_counts(torch.tensor([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)]).bool())
    assert torch.equal(edit_images(model, images, dirs, {"Smiling": 1}, strength=3.0, composite="input+context",
                                   pair_counts=every_pair),
                       edit_images(model, images, dirs, {"Smiling": 1}, strength=3.0, composite="input"))
    # glasses only on men: a face predicted female is edited in a male context, and the result differs
    glasses_on_men = label_pair_counts(torch.tensor([[1, 1, 0], [0, 1, 1], [0, 0, 0], [0, 0, 1]]).bool())
    women = {"Male": [0, 0, 0], "Eyeglasses": [0, 0, 0], "Smiling": [0, 0, 0]}
    plain = edit_images(model, images, dirs, {"Eyeglasses": 1}, source=women, strength=3.0, composite="recon")
    drawn = edit_images(model, images, dirs, {"Eyeglasses": 1}, source=women, strength=3.0,
                        composite="recon+context", pair_counts=glasses_on_men)
    assert drawn.shape == plain.shape and not torch.equal(drawn, plain)
