"""evaluation.counterfactuals: the true change region and the locality measure, exact on hand-made cases."""
from __future__ import annotations

import math

import pytest
import torch

from evaluation.counterfactuals import inside_change, true_change_region


def _renders(size=32):
    original = torch.full((2, 3, size, size), 120, dtype=torch.uint8)
    flipped = original.clone()
    flipped[:, 1, 10:14, 10:20] = 200  # the attribute: a green bar
    flipped[1, 0, 0, 0] = 123  # a difference of 3 levels: below the threshold
    return original, flipped


def test_region_is_where_the_renders_differ_grown_by_a_pixel():
    original, flipped = _renders(size=64)
    region = true_change_region(original, flipped)
    assert region.shape == (2, 1, 64, 64) and region.dtype == torch.bool
    expected = torch.zeros(64, 64, dtype=torch.bool)
    expected[9:15, 9:21] = True  # the bar grown by one pixel
    assert torch.equal(region[0, 0], expected) and torch.equal(region[1, 0], expected)
    assert not true_change_region(original, flipped, grow=0)[0, 0, 9, 9]
    with pytest.raises(ValueError, match="uint8"):
        true_change_region(original.float(), flipped.float())


def test_an_edit_changing_only_inside_the_region_scores_one_and_only_outside_zero():
    original, flipped = _renders()
    region = true_change_region(original, flipped)
    base = torch.zeros(2, 3, 32, 32)
    inside_only = base.clone()
    inside_only[:, :, 11:13, 12:18] = 0.5
    outside_only = base.clone()
    outside_only[:, :, 25:30, 0:6] = -0.3
    assert inside_change(inside_only, base, region).tolist() == [1.0, 1.0]
    assert inside_change(outside_only, base, region).tolist() == [0.0, 0.0]
    half = inside_only + outside_only * 0  # equal energy inside and outside: one half
    half[:, :, 25:27, 0:6] = 0.5
    expected = (2 * 6) / (2 * 6 + 2 * 6)
    assert inside_change(half, base, region).tolist() == pytest.approx([expected, expected])
    unchanged = inside_change(base.clone(), base, region)
    assert all(math.isnan(v) for v in unchanged.tolist())  # an edit that changes nothing has no share


def test_an_edit_equal_to_its_base_is_never_closer_whatever_its_memory_layout():
    from evaluation.counterfactuals import GroundTruth
    from models.metrics import psnr

    g = torch.Generator().manual_seed(0)
    base = torch.rand(6, 3, 32, 32, generator=g) * 2 - 1
    counterfactual = torch.rand(6, 3, 32, 32, generator=g) * 2 - 1
    edited = base.contiguous(memory_format=torch.channels_last)  # the same pixels, as a channels_last decode holds them
    assert torch.equal(psnr(edited, counterfactual), psnr(base, counterfactual))  # equal images, equal PSNRs
    region = torch.ones(6, 1, 32, 32, dtype=torch.bool)
    truth = GroundTruth(counterfactual, region, {"input": psnr(base, counterfactual)})
    assert truth.score(edited, "input", base)["closer"].sum() == 0
