"""Attribute edits in latent space by attribute *differences* (STGAN's att_diff = target - source), and interpolation.

Edits always act on the encoder mean `mu` (what `attributes.encode.encode_images` returns), never on a sampled z:
directions are fitted on means, and a sampled z adds noise that the decoder would render as a different face.

Two semantics (`mode`):
  offset  each attribute that differs moves by att_diff * step * strength along its direction (step = the
          distance between the class means along it). An image that already looks Smiling but is labelled not
          Smiling still moves a full step.
  target  each attribute that differs is moved until its signed distance to its boundary (a probe's hyperplane,
          or the class-mean midpoint) equals +strength*margin (target 1) or -strength*margin (target 0), as
          InterFaceGAN does; an image already past that point moves back to it rather than beyond the data.
Several attributes at once: the move is the one vector in the span of the changed directions that meets every
changed attribute's requirement at the same time (a small least-squares solve per sample), so moving one
attribute does not undo another when directions are correlated. Attributes that do not differ add nothing to the
move; for orthogonal directions this reduces to the plain sum of per-attribute moves.
"""
from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from attributes.composite import MaskConfig, composited_edit, in_context
from attributes.context import decode_in_context

EDIT_MODES = ("offset", "target")


class WrongWayEditWarning(UserWarning):
    """An edit moved an attribute's signed distance to its boundary away from the value it was asked for."""


def wrong_way_counts(before: torch.Tensor, after: torch.Tensor, source: torch.Tensor, target: torch.Tensor,
                     rtol: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    """(wrong, asked) per attribute, both (K,) int64: of the rows asked to change it (target != source), how many
    the edit moved away from the target (a smaller signed distance for target 1, a larger one for target 0).

    before, after (N, K) signed distances to each attribute's boundary; source, target (N, K) 0/1. A move within
    rtol x (1 + |before|) of none counts as none (float rounding).
    """
    before, after = torch.as_tensor(before).double(), torch.as_tensor(after).double()
    sign = torch.as_tensor(target).double() - torch.as_tensor(source).double()  # (N, K) in {-1, 0, 1}
    if not before.shape == after.shape == sign.shape or before.ndim != 2:
        raise ValueError(f"before, after, source and target must all be (N, K), got {tuple(before.shape)}, "
                         f"{tuple(after.shape)} and {tuple(sign.shape)}")
    wrong = (sign != 0) & ((after - before) * sign < -rtol * (1 + before.abs()))
    return wrong.sum(dim=0).cpu(), (sign != 0).sum(dim=0).cpu()


def warn_wrong_way(names: Sequence[str], before: torch.Tensor, after: torch.Tensor, source: torch.Tensor,
                   target: torch.Tensor, what: str = "the edit") -> dict[str, int]:
    """Warn (WrongWayEditWarning), naming each attribute and its count, when `what` moved an attribute's boundary
    distance away from its target; returns {name: faces moved the wrong way} for those attributes.

    Arguments as `wrong_way_counts`, columns in `names` order. Several attributes set at once pull on each other
    when their directions are correlated with the other attributes' boundaries; one can end up further from its
    target than it started.
    """
    wrong, asked = wrong_way_counts(before, after, source, target)
    found = {name: int(w) for name, w in zip(names, wrong.tolist()) if w}
    if found:
        of = dict(zip(names, asked.tolist()))
        counts = ", ".join(f"{name} on {w} of {of[name]} faces" for name, w in found.items())
        warnings.warn(f"{what} moved {counts} away from the target (its signed distance to the boundary went the "
                      "other way): the attributes set together pull against each other; set them one at a time, "
                      "or with another direction kind", WrongWayEditWarning, stacklevel=3)
    return found


def _joint_move(directions: torch.Tensor, constraints: torch.Tensor, required: torch.Tensor,
                changed: torch.Tensor) -> torch.Tensor:
    """Per-sample move delta = alpha @ directions with constraints[k]·delta = required[:, k] for every changed k.

    directions (K, D), constraints (K, D), required (N, K), changed (N, K) bool -> delta (N, D).
    Unchanged attributes get alpha = 0 and no constraint; each system is solved with a pseudo-inverse so nearly
    parallel changed directions give the least-squares move instead of blowing up. The system depends only on
    which attributes change, so it is solved once per distinct pattern (few: usually one or a handful).
    """
    k = directions.shape[0]
    gram = constraints @ directions.T  # (K, K): effect of a unit move along direction j on constraint i
    eye = torch.eye(k, dtype=directions.dtype, device=directions.device)

    def inverses(masks: torch.Tensor) -> torch.Tensor:  # (M, K) bool -> (M, K, K) solves, unchanged rows zero
        m = masks.to(directions.dtype)
        # rows/cols of unchanged attributes become identity rows with a zero right-hand side -> alpha = 0 there
        system = m[:, :, None] * gram[None] * m[:, None, :] + (1 - m)[:, :, None] * eye[None]
        return torch.linalg.pinv(system, rtol=1e-6) * m[:, :, None]

    rhs = required * changed.to(required.dtype)  # (N, K)
    alpha = torch.empty_like(rhs)
    patterns, which = torch.unique(changed, dim=0, return_inverse=True)  # (P, K), (N,)
    if len(patterns) <= 64:
        inverse = inverses(patterns)
        for p in range(len(patterns)):
            rows = which == p
            alpha[rows] = rhs[rows] @ inverse[p].T
    else:  # many distinct patterns: one solve per row, in chunks to bound the (n, K, K) memory
        for a in range(0, len(rhs), 4096):
            alpha[a : a + 4096] = torch.einsum("nij,nj->ni", inverses(changed[a : a + 4096]), rhs[a : a + 4096])
    return alpha @ directions  # (N, D)


def _per_attribute(t, k: int, what: str) -> torch.Tensor:
    """A scalar or (K,) value as (K,); anything else a ValueError naming `what`."""
    t = torch.as_tensor(t)
    if t.ndim == 0:
        t = t.expand(k)
    if tuple(t.shape) != (k,):
        raise ValueError(f"{what} must be a scalar or (K={k},), got {tuple(t.shape)}")
    return t


def _labels01(t, n: int, k: int, what: str) -> torch.Tensor:
    """0/1 labels (N, K) (a (K,) row is broadcast to every sample); anything else a ValueError naming `what`."""
    t = torch.as_tensor(t)
    if t.ndim == 1 and t.shape[0] == k:
        t = t.expand(n, k)
    if tuple(t.shape) != (n, k):
        raise ValueError(f"{what} must be (N={n}, K={k}), got {tuple(t.shape)}")
    if not bool(((t == 0) | (t == 1)).all()):
        raise ValueError(f"{what} must hold only 0/1 values")
    return t


def edit_latents(
    z: torch.Tensor,
    directions: torch.Tensor,
    steps: torch.Tensor,
    source: torch.Tensor,
    target: torch.Tensor,
    *,
    strength: float | torch.Tensor = 1.0,
    mode: str = "offset",
    probe_weights: torch.Tensor | None = None,
    probe_bias: torch.Tensor | None = None,
    margins: torch.Tensor | None = None,
) -> torch.Tensor:
    """Move latents so attributes go from `source` to `target`; only attributes that differ move.

    z (N, D) encoder means; directions (K, D) unit; steps (K,); source, target (N, K) in {0, 1} (bool or numbers);
    strength a scalar or (K,). mode "offset": each changed attribute's projection on its direction changes by
    att_diff * step * strength. mode "target": needs the boundaries, probe_weights (K, D) and probe_bias (K,)
    (any scale: the decision function w·z + b) and margins (K,) (default steps / 2); each changed attribute lands
    at signed distance ±strength * margin. Rows with target == source come back unchanged (bit for bit).
    Returns (N, D) in z's dtype.
    """
    if mode not in EDIT_MODES:
        raise ValueError(f"unknown edit mode {mode!r}; expected one of {EDIT_MODES}")
    z = torch.as_tensor(z)
    if z.ndim != 2:
        raise ValueError(f"z must be (N, D), got {tuple(z.shape)}")
    n, d = z.shape
    dev, work = z.device, torch.float64 if z.device.type == "cpu" else torch.float32
    v = torch.as_tensor(directions).to(dev, work)
    if v.ndim != 2 or v.shape[1] != d:
        raise ValueError(f"directions must be (K, D={d}), got {tuple(v.shape)}")
    k = v.shape[0]
    per_attr = lambda t, what: _per_attribute(t, k, what).to(dev, work)  # noqa: E731
    s, t = (_labels01(x, n, k, what).to(dev, work) for x, what in ((source, "source"), (target, "target")))
    diff = t - s  # (N, K) in {-1, 0, 1}
    changed = diff != 0
    if not bool(changed.any()):
        return z.clone()
    strength_k = per_attr(strength, "strength")
    z_work = z.to(work)
    if mode == "offset":
        required = diff * (per_attr(steps, "steps") * strength_k)[None]  # (N, K)
        delta = _joint_move(v, v, required, changed)
    else:
        if probe_weights is None or probe_bias is None:
            raise ValueError("target mode needs the boundaries: probe_weights (K, D) and probe_bias (K,)")
        w = torch.as_tensor(probe_weights).to(dev, work)
        if tuple(w.shape) != (k, d):
            raise ValueError(f"probe_weights must be (K={k}, D={d}), got {tuple(w.shape)}")
        norm = w.norm(dim=1)
        normals, offsets = w / norm[:, None], per_attr(probe_bias, "probe_bias") / norm  # unit normals, (K,)
        margin_k = per_attr(steps, "steps") / 2 if margins is None else per_attr(margins, "margins")
        goal = torch.where(t > 0, 1.0, -1.0) * (strength_k * margin_k)[None]  # (N, K)
        current = z_work @ normals.T + offsets[None]  # (N, K) signed distances now
        delta = _joint_move(v, normals, goal - current, changed)
    moved = (z_work + delta).to(z.dtype)
    return torch.where(changed.any(dim=1, keepdim=True), moved, z)


def lerp(a: torch.Tensor, b: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
    """Linear interpolation (1 - t) a + t b. a, b (..., D); t scalar -> (..., D); t (T,) -> (T, ..., D)."""
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    t = torch.as_tensor(t, dtype=a.dtype, device=a.device)
    if t.ndim > 1:
        raise ValueError(f"t must be a scalar or (T,), got {tuple(t.shape)}")
    tt = t.reshape(t.shape + (1,) * a.ndim)  # () or (T, 1, ..., 1)
    return (1 - tt) * a + tt * b


def slerp(a: torch.Tensor, b: torch.Tensor, t: float | torch.Tensor, *, eps: float = 1e-6) -> torch.Tensor:
    """Spherical interpolation along the great circle from a to b (White 2016), per row of the last dim.

    a, b (..., D); t scalar -> (..., D); t (T,) -> (T, ..., D). Norms are interpolated the way the classic formula
    does (sin-weighted sum of the unnormalised vectors). Rows whose vectors are (nearly) parallel, or zero, fall
    back to lerp, where the formula's 0/0 would be unstable.
    """
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    t = torch.as_tensor(t, dtype=a.dtype, device=a.device)
    if t.ndim > 1:
        raise ValueError(f"t must be a scalar or (T,), got {tuple(t.shape)}")
    tt = t.reshape(t.shape + (1,) * a.ndim)
    na, nb = a.norm(dim=-1, keepdim=True), b.norm(dim=-1, keepdim=True)  # (..., 1)
    cos = ((a * b).sum(-1, keepdim=True) / (na * nb).clamp_min(1e-12)).clamp(-1, 1)
    omega = torch.arccos(cos)
    sin = torch.sin(omega)
    parallel = (sin.abs() < eps) | (na < eps) | (nb < eps)
    safe_sin = torch.where(parallel, torch.ones_like(sin), sin)
    spherical = (torch.sin((1 - tt) * omega) * a + torch.sin(tt * omega) * b) / safe_sin
    return torch.where(parallel, lerp(a, b, t), spherical)


def edit_images(
    model: torch.nn.Module,
    images: torch.Tensor,
    directions: Any,
    changes: Mapping[str, Any],
    source: Any = None,
    strength: float | Mapping[str, float] = 1.0,
    mode: str = "offset",
    composite: str = "recon",
    mask: MaskConfig = MaskConfig(),
    pair_counts: torch.Tensor | None = None,
) -> torch.Tensor:
    """Encode (mu), edit, decode: images float (N, 3, S, S) in [-1, 1] -> edited images (N, 3, S, S) in [-1, 1].

    `directions` is an `attributes.AttributeDirections`; runs on the model's device; source None = predicted from
    the latents, strength one number or {name: strength} (see `AttributeDirections.edit`). `composite`: "none" the
    decoded edit; "recon" (default: the composite the evaluation picks most on procedural faces, README) / "input"
    only its masked change, applied to the reconstruction / to the input images; "recon+context" / "input+context"
    that change drawn where the training labels show the target (`attributes.context`), which needs `pair_counts`
    (2, 2, K, K), the training labels' `label_pair_counts` in the directions' `names` order.
    """
    images = torch.as_tensor(images)
    if images.ndim != 4 or images.shape[1] != 3 or not images.is_floating_point():
        raise ValueError(f"images must be float (N, 3, S, S) in [-1, 1], got {tuple(images.shape)} {images.dtype}")
    if in_context(composite) and pair_counts is None:
        raise ValueError(f"composite {composite!r} needs pair_counts: the training labels' label_pair_counts "
                         "(attributes.directions), columns in the directions' names order")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            x = images.to(device)
            mu, _ = model.encode(x)
            mu = mu.float()
            edited = directions.edit(mu, changes, source=source, strength=strength, mode=mode)
            decoded = model.decode(edited).float().clamp(-1, 1)
            if composite == "none":
                return decoded
            context = None
            if in_context(composite):
                before, after = directions.edit_labels(mu, changes, source)[:2]
                context = decode_in_context(model, directions, mu, edited, before, after, pair_counts)
            return composited_edit(x, model.decode(mu).float().clamp(-1, 1), decoded, composite, mask, context)
    finally:
        model.train(was_training)
