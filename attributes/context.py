"""Edits whose target the data never show, drawn where the data do show it, and only the change brought back.

Every mustache in CelebA's training faces (and in the procedural ones) is a man's: a decoder trained on them has
never drawn a mustache on a woman, and a latent step towards Mustache from a woman's face draws a faint smudge. The
step itself is fine; the context is missing. So the edit is drawn in a *context* the training labels do show (the
face moved, by the same kind of direction, to the label values seen with the target: for a woman asked for a
mustache, Male), and only its masked change is brought back onto the face:

    z_ctx = the face moved to the context labels        change = D(z_ctx + (z' - z)) - D(z_ctx)
    out   = base + m * change,  m the change's own mask (`attributes.composite.change_mask`)

The context is read from the training labels alone (`label_pair_counts`): label j is moved when, at its target
value, no training face shows it beside a changed attribute's target value, while its other value is shown. Faces
whose target the data show keep z_ctx = z, so for them a context composite is the plain one, bit for bit. Nothing
here looks at a judge or a counterfactual; on real CelebA the same labels give the same contexts.
"""
from __future__ import annotations

import torch

CONTEXT_STRENGTH = 1.5  # how far a label is moved into its context, in calibrated steps of its direction


def context_labels(pair_counts: torch.Tensor, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The labels of the context each face's edit is drawn in: (N, K) 0/1, `source` with every label j flipped that,
    at its target value, no training face shows beside the target value of an attribute the edit changes (when the
    training faces show its other value there).

    pair_counts (2, 2, K, K) int: [v, w, i, j] the training faces with label i at v and label j at w
    (`attributes.directions.label_pair_counts`, columns in the order of source and target); source, target (N, K)
    0/1 labels before and after the edit. Rows whose target the data show come back equal to `source`.
    """
    counts = torch.as_tensor(pair_counts)
    src, tgt = torch.as_tensor(source).long(), torch.as_tensor(target).long()
    if src.ndim != 2 or src.shape != tgt.shape:
        raise ValueError(f"source and target must both be (N, K), got {tuple(src.shape)} and {tuple(tgt.shape)}")
    k = src.shape[1]
    if counts.shape != (2, 2, k, k):
        raise ValueError(f"pair_counts must be (2, 2, K, K) = (2, 2, {k}, {k}), got {tuple(counts.shape)}")
    if not bool(((src == 0) | (src == 1)).all() and ((tgt == 0) | (tgt == 1)).all()):
        raise ValueError("source and target must be 0/1 labels")
    changed = src != tgt  # (N, K)
    i, j = torch.arange(k)[:, None], torch.arange(k)[None, :]
    # [n, i, j]: training faces with changed attribute i at its target and label j at its target / at the other value
    at_target = counts[tgt[:, :, None], tgt[:, None, :], i, j]  # (N, K, K)
    at_other = counts[tgt[:, :, None], 1 - tgt[:, None, :], i, j]
    blocked = changed[:, :, None] & (at_target == 0) & (at_other > 0) & ~changed[:, None, :]  # (N, K, K)
    moved = blocked.any(dim=1)  # (N, K): label j is moved into its context for some changed attribute
    return torch.where(moved, 1 - tgt, src)


def context_latents(directions, z: torch.Tensor, source: torch.Tensor, target: torch.Tensor,
                    pair_counts: torch.Tensor, strength: float = CONTEXT_STRENGTH) -> tuple[torch.Tensor, torch.Tensor]:
    """(z_ctx (N, D), in_context (N,) bool): latents z moved by `directions` (anything with `edit_by_labels`, whose
    `names` order source, target and pair_counts) to their `context_labels`, offset mode at `strength`; faces with
    nothing to move keep z exactly. A kind that names other `context_directions` (a hair-subspace kind: its base
    kind) moves them with those."""
    source, target = torch.as_tensor(source).to(z.device), torch.as_tensor(target).to(z.device)
    context = context_labels(torch.as_tensor(pair_counts).cpu(), source.cpu(), target.cpu()).to(z.device)
    in_context = (context != source.long()).any(dim=1)  # (N,)
    if not bool(in_context.any()):
        return z, in_context
    mover = getattr(directions, "context_directions", directions)
    moved = mover.edit_by_labels(z, source, context, strength=strength, mode="offset")  # (N, D)
    return torch.where(in_context[:, None], moved, z), in_context


@torch.inference_mode()
def decode_in_context(model, directions, z: torch.Tensor, edited: torch.Tensor, source: torch.Tensor,
                      target: torch.Tensor, pair_counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(D(z_ctx), D(z_ctx + edited - z)), each float (N, 3, S, S) in [-1, 1] on the model's device: the edit z -> edited
    (N, D) drawn in its context (`context_latents`; arguments as there), what a "+context" composite takes."""
    shift = context_latents(directions, z, source, target, pair_counts)[0] - z  # (N, D): 0 where nothing moved
    # decoded apart, batched as the plain decodes are: faces with nothing to move then match them bit for bit
    before, after = (model.decode(w + shift).float().clamp(-1, 1) for w in (z, edited))
    return before, after
