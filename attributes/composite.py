"""Composited edits: keep only the part of a decoded edit that the edit itself localises.

A latent edit changes the whole decoded picture: besides the attribute, a VAE's entangled latent moves the
background, the skin, the person. The decoded change delta = D(z') - D(z) (N, 3, S, S) is largest where the
attribute is drawn, so its magnitude, smoothed and thresholded, is a soft mask m (N, 1, S, S) in [0, 1] of where
the edit acts, and only the masked change is applied onto a base image:

    out = base + m * (D(z') - D(z))

  base "recon"  the reconstruction D(z): out = (1 - m) D(z) + m D(z'), the decoded edit kept where it acts;
  base "input"  the input image itself: unedited regions keep the input's own pixels (as sharp as STGAN's skip
                connections keep them), and the masked change is added to the input's pixels where it acts.

  "+context"     (`recon+context`, `input+context`) the change is drawn in a context the training labels show
                (`attributes.context`: a mustache drawn on the face moved towards Male) and brought back onto
                the base: out = base + m * (D(z_ctx') - D(z_ctx)), the mask of that change.

The mask looks at the two decodes only (never at labels, a judge or a counterfactual), so the same call serves
procedural faces, CelebA and user photos. `MaskConfig` holds its few constants: a change is "strong" where the
smoothed per-pixel change reaches `threshold` (in [-1, 1] image units, summed over the colour channels as an L2
norm), the mask ramps up from `threshold / 2` to `threshold`, then grows by `grow` pixels and is feathered by box
filters so its edge leaves no seam. Sizes are in pixels of a 64 px image and scale with the image side.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

CONTEXT = "+context"
COMPOSITES = ("none", "recon", "input", "recon" + CONTEXT, "input" + CONTEXT)


def composite_base(how: str) -> str:
    """The image a composite starts from: "none" (the decoded edit itself), "recon" or "input"."""
    if how not in COMPOSITES:
        raise ValueError(f"unknown composite {how!r}; expected one of {COMPOSITES}")
    return how.removesuffix(CONTEXT)


def in_context(how: str) -> bool:
    """Whether a composite draws its change in a context the training labels show (`attributes.context`)."""
    return composite_base(how) != how


@dataclass(frozen=True)
class MaskConfig:
    """Constants of the change mask: strong-change threshold, smoothing and feather passes, grow radius (64 px)."""

    threshold: float = 0.5
    smooth: int = 2
    grow: int = 1
    feather: int = 2

    def __post_init__(self) -> None:
        if not self.threshold > 0:
            raise ValueError(f"MaskConfig.threshold must be > 0, got {self.threshold}")
        if min(self.smooth, self.feather, self.grow) < 0:
            raise ValueError(f"MaskConfig: smooth, grow and feather must be >= 0, got {self}")


def _box_average(x: torch.Tensor) -> torch.Tensor:
    """The mean of each pixel's 3x3 neighbourhood inside the image (N, C, S, S): avg_pool2d(x, 3, 1, 1,
    count_include_pad=False) up to float rounding, as two separable 3-tap sums (several times faster on a CPU)."""
    across = x.clone()
    across[..., 1:] += x[..., :-1]
    across[..., :-1] += x[..., 1:]
    total = across.clone()
    total[..., 1:, :] += across[..., :-1, :]
    total[..., :-1, :] += across[..., 1:, :]
    h, w = x.shape[-2:]
    rows, cols = torch.full((h, 1), 3.0, device=x.device), torch.full((1, w), 3.0, device=x.device)
    rows[[0, -1]] = 2.0 if h > 1 else 1.0
    cols[:, [0, -1]] = 2.0 if w > 1 else 1.0
    return total.div_(rows * cols)


def _smooth(x: torch.Tensor, passes: int) -> torch.Tensor:
    """`passes` 3x3 box filters of (N, C, S, S), edges averaged over the pixels inside: n passes approximate a Gaussian
    of sigma sqrt(2n/3) pixels (the central limit)."""
    for _ in range(passes):
        x = _box_average(x)
    return x


def _grow(x: torch.Tensor, radius: int) -> torch.Tensor:
    """The maximum over each pixel's (2 radius + 1)^2 square inside the image (N, C, S, S): max_pool2d(x, 2 radius + 1,
    1, radius) exactly, as two separable passes of shifted maxima."""
    across = x.clone()
    for k in range(1, min(radius, x.shape[-1] - 1) + 1):
        across[..., k:] = torch.maximum(across[..., k:], x[..., :-k])
        across[..., :-k] = torch.maximum(across[..., :-k], x[..., k:])
    out = across.clone()
    for k in range(1, min(radius, x.shape[-2] - 1) + 1):
        out[..., k:, :] = torch.maximum(out[..., k:, :], across[..., :-k, :])
        out[..., :-k, :] = torch.maximum(out[..., :-k, :], across[..., k:, :])
    return out


def _check_images(what: str, x: torch.Tensor, like: torch.Tensor | None = None) -> torch.Tensor:
    x = torch.as_tensor(x)
    if x.ndim != 4 or x.shape[1] != 3 or not x.is_floating_point():
        raise ValueError(f"{what} must be float images (N, 3, S, S) in [-1, 1], got {tuple(x.shape)} {x.dtype}")
    if like is not None and x.shape != like.shape:
        raise ValueError(f"{what} must have the shape of the reconstruction {tuple(like.shape)}, got {tuple(x.shape)}")
    return x


def change_mask(recon: torch.Tensor, edited: torch.Tensor, config: MaskConfig = MaskConfig()) -> torch.Tensor:
    """Soft mask (N, 1, S, S) in [0, 1] of where a decoded edit acts, from the two decodes alone.

    recon D(z) and edited D(z') are float (N, 3, S, S) in [-1, 1]. The per-pixel change ||D(z') - D(z)||_2 over
    the channels is smoothed (`smooth` 3x3 box passes), ramped from threshold/2 (0) to threshold (1), grown by
    `grow` pixels (max-pool) and feathered (`feather` box passes); passes scale with (S / 64)^2 and radii with
    S / 64, so the mask covers the same part of a face at every size.
    """
    recon = _check_images("recon", recon)
    edited = _check_images("edited", edited, recon)
    scale = recon.shape[-1] / 64
    change = (edited.float() - recon.float()).norm(dim=1, keepdim=True)  # (N, 1, S, S)
    change = _smooth(change, round(config.smooth * scale**2))
    low = config.threshold / 2
    mask = ((change - low) / (config.threshold - low)).clamp(0, 1)
    grow = int(round(config.grow * scale))
    if grow:
        mask = _grow(mask, grow)
    return _smooth(mask, round(config.feather * scale**2)).clamp(0, 1)


def composite(base: torch.Tensor, recon: torch.Tensor, edited: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """base + mask * (edited - recon), clamped to [-1, 1]: (N, 3, S, S). Where mask == 0 the result is `base`,
    bit for bit."""
    recon = _check_images("recon", recon)
    edited = _check_images("edited", edited, recon)
    base = _check_images("base", base, recon)
    mask = torch.as_tensor(mask)
    if mask.shape != (recon.shape[0], 1, *recon.shape[2:]):
        raise ValueError(f"mask must be (N, 1, S, S) = {(recon.shape[0], 1, *recon.shape[2:])}, got {tuple(mask.shape)}")
    # where mask == 0 this adds exact zeros, and clamping leaves an image in [-1, 1] as it is: base, bit for bit;
    # one buffer, changed in place: on a CPU the temporaries of the plain expression cost more than the arithmetic
    dtype = torch.promote_types(torch.promote_types(edited.dtype, recon.dtype), torch.promote_types(mask.dtype, base.dtype))
    return torch.sub(edited, recon).to(dtype).mul_(mask).add_(base).clamp_(-1, 1)


def composited_edit(
    images: torch.Tensor | None, recon: torch.Tensor, edited: torch.Tensor, how: str,
    config: MaskConfig = MaskConfig(), context: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """The edit as `how` composites it: "none" the decoded edit itself, "recon" the masked change on the
    reconstruction, "input" on the input `images` (N, 3, S, S) in [-1, 1]; a "+context" composite takes its change
    from `context` = (D(z_ctx), D(z_ctx')) instead of (recon, edited) (`attributes.context.context_latents`)."""
    base_name = composite_base(how)
    if base_name == "none":
        return edited
    if base_name == "input" and images is None:
        raise ValueError(f"composite {how!r} needs the input images")
    if in_context(how) and context is None:
        raise ValueError(f"composite {how!r} needs the decodes of its context (attributes.context.context_latents)")
    before, after = context if in_context(how) else (recon, edited)
    base = recon if base_name == "recon" else images
    return composite(base.to(after.device, after.dtype), before, after, change_mask(before, after, config))
