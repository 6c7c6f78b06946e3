"""attributes.composite: the change mask sees only the two decodes, and pixels outside it keep their base exactly."""
from __future__ import annotations

import pytest
import torch

from attributes.composite import MaskConfig, change_mask, composite, composited_edit


def _faces(n=3, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 3, size, size, generator=g) * 2 - 1
    recon = (base + 0.05 * torch.randn(n, 3, size, size, generator=g)).clamp(-1, 1)
    return base, recon


def test_masked_change_leaves_every_pixel_outside_the_mask_bit_identical_to_its_base():
    base, recon = _faces()
    edited = recon.clone()
    edited[:, :, 4:10, 6:14] -= 0.9  # a strong local change (a dark patch)...
    edited += 0.02 * torch.randn_like(edited)  # ...and a weak global drift the mask must not follow
    mask = change_mask(recon, edited.clamp(-1, 1))
    assert mask.shape == (3, 1, 32, 32) and float(mask.min()) >= 0 and float(mask.max()) <= 1
    assert bool((mask[:, :, 5:9, 8:12] > 0.99).all())  # the patch is inside, fully
    assert float(mask[:, :, 20:, :].max()) == 0.0  # far from it, nothing: the drift is below the threshold
    for how, start in (("recon", recon), ("input", base)):
        out = composited_edit(base, recon, edited, how)
        outside = (mask == 0).expand_as(out)
        assert torch.equal(out[outside], start[outside])
        inside = (mask == 1).expand_as(out)
        assert torch.allclose(out[inside], (start + edited - recon).clamp(-1, 1)[inside])
    assert torch.equal(composited_edit(base, recon, edited, "none"), edited)


def test_an_edit_that_changes_nothing_composites_to_its_base():
    base, recon = _faces()
    assert float(change_mask(recon, recon.clone()).max()) == 0.0
    assert torch.equal(composited_edit(base, recon, recon.clone(), "input"), base)


def test_mask_radii_scale_with_the_image_side():
    for size in (32, 64, 128):
        recon = torch.zeros(1, 3, size, size)
        edited = recon.clone()
        c = size // 2
        edited[:, :, c, c] = -1.0  # one pixel changed by far more than the threshold
        width = int((change_mask(recon, edited, MaskConfig(smooth=0, feather=0))[0, 0, c] > 0).sum())
        assert width == 2 * round(size / 64) + 1  # grown by `grow` pixels at 64 px, scaled


def test_bad_inputs_name_what_was_expected():
    base, recon = _faces()
    with pytest.raises(ValueError, match="edited must have the shape"):
        change_mask(recon, recon[:, :, :16])
    with pytest.raises(ValueError, match="unknown composite 'blend'"):
        composited_edit(base, recon, recon, "blend")
    with pytest.raises(ValueError, match="needs the input images"):
        composited_edit(None, recon, recon, "input")
    with pytest.raises(ValueError, match="mask must be"):
        composite(base, recon, recon, torch.ones(3, 3, 32, 32))
    with pytest.raises(ValueError, match="threshold must be > 0"):
        MaskConfig(threshold=0)


@pytest.mark.parametrize("shape", [(4, 1, 64, 64), (2, 3, 5, 7), (1, 1, 1, 6), (3, 1, 2, 2)])
def test_the_separable_filters_are_the_pooling_they_replace(shape):
    from torch.nn import functional as F

    from attributes.composite import _grow, _smooth

    x = torch.rand(shape, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(_smooth(x, 1), F.avg_pool2d(x, 3, 1, 1, count_include_pad=False))
    torch.testing.assert_close(_smooth(x, 3), F.avg_pool2d(F.avg_pool2d(F.avg_pool2d(
        x, 3, 1, 1, count_include_pad=False), 3, 1, 1, count_include_pad=False), 3, 1, 1, count_include_pad=False))
    for radius in (1, 2, 3):  # the grow step is exact: a maximum involves no rounding
        assert torch.equal(_grow(x, radius), F.max_pool2d(x, 2 * radius + 1, 1, radius))
