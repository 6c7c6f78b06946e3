"""Hair colour as one categorical attribute: moves inside the span of a kind's four hair-colour directions.

One difference vector towards, say, brown also carries the other colours' components (a step towards brown can land
on blond or red). Here a face is moved, inside the span of the four colour directions, to the target colour's class
mean (`hair_colour_move`); `HairSubspaceDirections` wraps any kind so its hair-colour edits are such moves and
everything else is the kind's own edit, and `hair_subspace_kinds` builds one for every kind of a run.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch

from attributes.artifact import AttributeDirections, unknown_attribute
from attributes.directions import DEFAULT_MIN_COUNT, _labels, _latents, _name_rows
from attributes.encode import Latents
from data.celeba import HAIR_COLOURS

HAIR_SUBSPACE = "+hair_subspace"  # KIND + HAIR_SUBSPACE: the kind KIND, its hair colours moved in their subspace


def subspace_basis(vectors, *, rtol: float = 1e-6) -> torch.Tensor:
    """Orthonormal basis Q (D, R) (QR, float64) of the span of `vectors` (R, D); linearly dependent ones raise."""
    v = torch.as_tensor(vectors).to(torch.float64)
    if v.ndim != 2 or v.shape[0] == 0:
        raise ValueError(f"vectors must be (R >= 1, D), got {tuple(v.shape)}")
    if v.shape[0] > v.shape[1]:
        raise ValueError(f"{v.shape[0]} vectors cannot be independent in {v.shape[1]} dimensions")
    q, r = torch.linalg.qr(v.T)  # (D, R), (R, R)
    if (r.diagonal().abs() <= rtol * v.norm(dim=1).max()).any():
        raise ValueError("subspace vectors are linearly dependent")
    return q


def subspace_class_coordinates(latents, labels, names: Sequence[str], basis, classes: Sequence[str], *,
                               min_count: int = DEFAULT_MIN_COUNT) -> torch.Tensor:
    """Coordinates in a subspace of the mean latent of each exclusive class, plus the class "none of them".

    latents (N, D), labels (N, K) with columns `names`, basis Q (D, R), classes C names -> (C + 1, R) float64:
    row c = Qᵀ mean(z over faces labelled with class c and none of the other classes), last row = Qᵀ mean(z over
    faces with none of the classes). A class with fewer than `min_count` such faces raises.
    """
    z = _latents(latents)
    y = _labels(labels, z.shape[0], names)
    q = torch.as_tensor(basis).to(torch.float64)
    if q.ndim != 2 or q.shape[0] != z.shape[1]:
        raise ValueError(f"basis must be (D={z.shape[1]}, R), got {tuple(q.shape)}")
    cols = y[:, _name_rows(names, classes, "class")].cpu()  # (N, C)
    count = cols.sum(dim=1)  # (N,)
    members = [cols[:, c] & (count == 1) for c in range(len(classes))] + [count == 0]  # C + 1 masks (N,)
    coords = z.detach().cpu().to(torch.float64) @ q.cpu()  # (N, R)
    out = []
    for label, mask in zip([*classes, "none"], members):
        if int(mask.sum()) < min_count:
            raise ValueError(f"class {label!r} has {int(mask.sum())} exclusive faces, fewer than {min_count}")
        out.append(coords[mask].mean(dim=0))
    return torch.stack(out)  # (C + 1, R)


def subspace_move(z, basis, target_coords, strength: float | torch.Tensor = 1.0) -> torch.Tensor:
    """Move latents inside a subspace towards target coordinates, leaving the orthogonal complement untouched.

    z (N, D), basis Q (D, R) orthonormal, target_coords (R,) or (N, R), strength a scalar or (N,) ->
    z + strength * Q (target - Qᵀz), in z's dtype: strength 1 puts each face's coordinates exactly at the target,
    0 leaves it, above 1 goes past the target along the same line.
    """
    z = torch.as_tensor(z)
    if z.ndim != 2:
        raise ValueError(f"z must be (N, D), got {tuple(z.shape)}")
    n, d = z.shape
    q = torch.as_tensor(basis).to(z.device, torch.float64)
    if q.ndim != 2 or q.shape[0] != d:
        raise ValueError(f"basis must be (D={d}, R), got {tuple(q.shape)}")
    t = torch.as_tensor(target_coords).to(z.device, torch.float64)
    if t.ndim == 1:
        t = t[None].expand(n, -1)
    if tuple(t.shape) != (n, q.shape[1]):
        raise ValueError(f"target_coords must be (R={q.shape[1]},) or (N={n}, R), got {tuple(t.shape)}")
    s = torch.as_tensor(strength).to(z.device, torch.float64)
    if s.ndim == 0:
        s = s.expand(n)
    if tuple(s.shape) != (n,):
        raise ValueError(f"strength must be a scalar or (N={n},), got {tuple(s.shape)}")
    z64 = z.to(torch.float64)
    return (z64 + s[:, None] * ((t - z64 @ q) @ q.T)).to(z.dtype)  # (N, D)


def hair_colour_move(z, directions: AttributeDirections, target_colour: str | None, class_coords, *,
                     colours: Sequence[str] = HAIR_COLOURS, strength: float | torch.Tensor = 1.0) -> torch.Tensor:
    """Give faces a hair colour by moving them, inside the span of the colour directions, to that colour's mean.

    z (N, D); directions holding every one of `colours`; target_colour one of `colours`, or None for "none of them";
    class_coords (C + 1, R) from `subspace_class_coordinates` on `subspace_basis(directions.vectors of colours)`
    (same colours, same order) -> (N, D). Rather than stepping along one difference vector (which from brown hair
    toward blond, say, also carries the other colours' components), each face's coordinates in the colour subspace
    are set to the target colour's class-mean coordinates (strength 1; see `subspace_move`); everything orthogonal
    to the subspace is kept.
    """
    colours = list(colours)
    if target_colour is not None and target_colour not in colours:
        raise unknown_attribute(target_colour, colours, "hair colour")
    basis = subspace_basis(torch.stack([directions[c] for c in colours]))  # (D, C)
    coords = torch.as_tensor(class_coords).to(torch.float64)
    if tuple(coords.shape) != (len(colours) + 1, basis.shape[1]):
        raise ValueError(f"class_coords must be (C+1={len(colours) + 1}, R={basis.shape[1]}), got {tuple(coords.shape)}")
    row = len(colours) if target_colour is None else colours.index(target_colour)
    return subspace_move(z, basis, coords[row], strength)


class HairSubspaceDirections:
    """A direction kind whose hair-colour changes are `hair_colour_move`s: inside the span of its four colour
    directions, each face is moved to the target colour's class mean (Hair colours are one categorical attribute,
    so one difference vector towards, say, brown also carries the other colours' components).

    Everything else is the base kind's edit. `edit_by_labels` has the base's signature, so it is scored like any
    kind; `strength` scales the subspace move (1 lands on the class mean, as a strength-1 offset edit steps one
    class-mean distance); the hair part ignores `mode`.
    """

    def __init__(self, base: AttributeDirections, latents, labels, names: Sequence[str], *,
                 colours: Sequence[str] = HAIR_COLOURS, min_count: int = DEFAULT_MIN_COUNT):
        missing = [c for c in colours if c not in base]
        if missing:
            raise ValueError(f"{base.method} directions lack the hair colours {missing}: no colour subspace")
        self.base, self.colours = base, list(colours)
        self.names, self.method = list(base.names), f"{base.method}{HAIR_SUBSPACE}"
        self.basis = subspace_basis(torch.stack([base[c] for c in self.colours]))  # (D, C)
        # (C + 1, R): each colour's mean coordinates, then "none of them"; from the fitting split's labels
        self.class_coords = subspace_class_coordinates(latents, labels, names, self.basis, self.colours,
                                                       min_count=min_count)
        self._cols = [base.index(c) for c in self.colours]

    @property
    def context_directions(self) -> AttributeDirections:
        """What moves a face into the context an edit is drawn in (`attributes.context`): the base kind. The subspace
        is for the hair colour an edit sets; the context is the same whichever of the two draws the edit."""
        return self.base

    def edit_by_labels(self, z: torch.Tensor, source: torch.Tensor, target: torch.Tensor, *,
                       strength: float | torch.Tensor = 1.0, mode: str = "offset") -> torch.Tensor:
        """z (N, D); source and target (N, K) 0/1 labels in `names` order -> edited z (N, D)."""
        source, target = torch.as_tensor(source).float(), torch.as_tensor(target).float()  # (N, K)
        cols = self._cols
        held = target.clone()
        held[:, cols] = source[:, cols]  # the base moves every attribute but the colours
        out = self.base.edit_by_labels(z, source, held, strength=strength, mode=mode)  # (N, D)
        changed = (target[:, cols] != source[:, cols]).any(dim=1)  # (N,)
        if not bool(changed.any()):
            return out
        goal, was = target[changed][:, cols].bool(), source[changed][:, cols].bool()  # (M, C)
        if bool((goal.sum(dim=1) > 1).any()):
            raise ValueError(f"a target with more than one of the hair colours {self.colours}")
        none = len(cols)
        row = torch.where(goal.any(dim=1), goal.float().argmax(dim=1), torch.full_like(goal[:, 0], none, dtype=torch.long))
        s = torch.as_tensor(strength, dtype=torch.float64)
        if s.ndim == 1:  # per attribute: the strength of the colour set, else of the colour cleared
            colour = torch.where(row < none, row, was.float().argmax(dim=1))  # (M,)
            s = s[torch.tensor(cols)][colour.cpu()]  # (M,)
        out[changed] = subspace_move(out[changed], self.basis, self.class_coords[row.cpu()], s.to(out.device))
        return out


def hair_subspace_kinds(directions: dict[str, AttributeDirections], latents: Latents | None,
                        fit_split: str = "train") -> dict[str, HairSubspaceDirections]:
    """For every kind with all four hair-colour directions, its `HairSubspaceDirections` (class means of the colours
    taken on `fit_split` of the run's latents); kinds whose colour classes are too small are left out, and said so."""
    if not any(all(c in dirs.names for c in HAIR_COLOURS) for dirs in directions.values()):
        return {}
    if latents is None or latents.labels is None:
        warnings.warn("no labelled latents of the run: the hair-colour subspace kinds are not scored", stacklevel=2)
        return {}
    fit = latents.select(fit_split)
    out, left_out = {}, []
    for method, dirs in directions.items():
        if all(c in dirs.names for c in HAIR_COLOURS):
            try:
                variant = HairSubspaceDirections(dirs, fit.mu, fit.labels, fit.attribute_names,
                                                 min_count=int(dirs.info.get("min_count", 1)))
            except ValueError as error:
                left_out.append(f"{method} ({error})")
                continue
            out[variant.method] = variant
    if left_out:
        warnings.warn("hair-colour subspace left out for " + "; ".join(left_out), stacklevel=2)
    return out
