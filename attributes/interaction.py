"""Edits that depend on the rest of the face: a regression of the latents on every label and on pairs of labels.

The regression kind moves every face by the same vector per attribute: the latent change of flipping it "with every
other attribute held fixed", averaged over faces. What an attribute looks like often depends on the others (a
mustache takes the colour of the hair, an open mouth looks different in a smile), so one vector is right for the
average face and wrong for many. Here the latents are modelled as

    f(y) = b + W y + V p(y),   p(y) = ((y_i - ȳ_i)(y_j - ȳ_j)) over the pairs (i, j) kept,

fitted on the training split by least squares, the pair terms ridge-shrunk towards the additive model (the regression
kind's) by `pair_ridge` pseudo-faces, and an edit moves each face by the model's change between its labels and the
labels asked for: z' = z + strength * (f(target) - f(source)). A pair is kept only when all four of its label
combinations are seen on `min_count` training faces, so no pair term is fitted to a combination the data never show
(no mustache without Male, say). With no pair kept, a one-attribute edit is the regression kind's offset edit.

    kind = InteractionDirections(regression, train.mu, train.labels, train.attribute_names)
    z_edit = kind.edit(mu, {"Mustache": 1})                 # as AttributeDirections.edit, offset mode
"""
from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from attributes.artifact import AttributeDirections
from attributes.directions import DEFAULT_MIN_COUNT, _cholesky, _labels, _latents, _name_rows, label_pair_counts
from attributes.edit import EDIT_MODES, warn_wrong_way
from attributes.encode import Latents

INTERACTION = "interaction"  # the kind's name: the regression kind's labels and their pairs
ROWS_PER_CHUNK = 16384  # rows of the design held at once while fitting
DEFAULT_PAIR_RIDGE = 50.0  # pseudo-faces: a pair seen on far more faces than this keeps most of its own effect


def interaction_pairs(labels, *, min_count: int = DEFAULT_MIN_COUNT) -> torch.Tensor:
    """The label pairs (i, j), i < j, whose four combinations (both, only i, only j, neither) are each seen on at
    least `min_count` rows: labels (N, K) 0/1 -> pairs (P, 2) int64, in row-major order."""
    counts = label_pair_counts(labels).cpu()  # (2, 2, K, K)
    k = counts.shape[-1]
    i, j = torch.triu_indices(k, k, offset=1)
    keep = counts[:, :, i, j].amin(dim=(0, 1)) >= min_count  # (K(K-1)/2,): the rarest of the four combinations
    return torch.stack([i[keep], j[keep]], dim=1)  # (P, 2)


class LabelModelKind:
    """What the kinds that model the latents from the labels share (`InteractionDirections`, and
    `attributes.transport.TransportDirections` on it): a `base` (the regression directions) for names, boundaries and
    predicted labels, `method`, offset-mode edits checked the same way, and `edit` as `AttributeDirections.edit`."""

    base: AttributeDirections
    names: list[str]
    method: str

    def __contains__(self, name: object) -> bool:
        return name in self.base

    def __len__(self) -> int:
        return len(self.names)

    @property
    def latent_dim(self) -> int:
        return self.base.latent_dim

    def _checked(self, z: torch.Tensor, source: torch.Tensor, target: torch.Tensor,
                 mode: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(z, source, target) of `edit_by_labels`, the labels float64 on the CPU; bad shapes or a mode other
        than offset raise ValueError."""
        if mode not in EDIT_MODES:
            raise ValueError(f"unknown edit mode {mode!r}; expected one of {EDIT_MODES}")
        if mode != "offset":
            raise ValueError(f"the {self.method} kind edits in offset mode only (it has no decision boundary), "
                             f"got mode={mode!r}")
        z = torch.as_tensor(z)
        n, k = z.shape[0], len(self.names)
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"z must be (N, D={self.latent_dim}), got {tuple(z.shape)}")
        s, t = (_labels(x, n, what=what).to(torch.float64).cpu() for x, what in ((source, "source"),
                                                                              (target, "target")))
        if s.shape[1] != k or t.shape[1] != k:
            raise ValueError(f"source and target must be (N={n}, K={k}) in the order {self.names}, got "
                             f"{tuple(s.shape)} and {tuple(t.shape)}")
        return z, s, t

    def edit_by_labels(self, z: torch.Tensor, source: torch.Tensor, target: torch.Tensor, *,
                       strength: float | torch.Tensor = 1.0, mode: str = "offset") -> torch.Tensor:
        raise NotImplementedError

    def edit(self, z: torch.Tensor, changes: Mapping[str, int | bool], source: Any = None, *,
             strength: float | Mapping[str, float] = 1.0, mode: str = "offset",
             clear_exclusive: bool = True) -> torch.Tensor:
        """As `AttributeDirections.edit` (the same arguments; labels not given are the base kind's predictions),
        offset mode only; a face moved away from its target by the base kind's boundary is warned about."""
        z = torch.as_tensor(z)
        source, target, strength = self.base.edit_labels(z, changes, source, strength, clear_exclusive)
        edited = self.edit_by_labels(z, source, target, strength=strength, mode=mode)
        warn_wrong_way(self.names, self.base.signed_distance(z), self.base.signed_distance(edited), source, target,
                       f"the {self.method} edit")
        return edited


class InteractionDirections(LabelModelKind):
    """The regression kind's labels plus their well-populated pairs as a model of the latents; an edit is the
    model's change between a face's labels and its target labels, so it depends on the face's other attributes.

    `base` (the run's regression directions) gives the names, the boundaries an edit is judged by and the labels
    predicted where none are given. Offset mode only: the model has no decision boundary of its own.
    """

    def __init__(self, base: AttributeDirections, latents, labels, names: Sequence[str], *,
                 min_count: int | None = None, pair_ridge: float = DEFAULT_PAIR_RIDGE, ridge: float = 1e-6):
        if pair_ridge < 0 or ridge < 0:
            raise ValueError(f"pair_ridge and ridge must be >= 0, got {pair_ridge} and {ridge}")
        z = _latents(latents)
        y_all = _labels(labels, z.shape[0], names)
        if z.shape[1] != base.latent_dim:
            raise ValueError(f"latents are (N, {z.shape[1]}) but the {base.method} directions are {base.latent_dim}-d")
        self.base, self.names, self.method = base, list(base.names), INTERACTION
        min_count = int(base.info.get("min_count", DEFAULT_MIN_COUNT)) if min_count is None else int(min_count)
        y = y_all[:, _name_rows(names, self.names, "label")].to(torch.float64).cpu()  # (N, K) in base order
        z64 = z.detach().to(torch.float64).cpu()
        self.pairs = interaction_pairs(y, min_count=min_count)  # (P, 2)
        self.label_mean = y.mean(dim=0)  # (K,)
        # the design (N, K + P) in row chunks: on CelebA's 162,770 training faces it would be about a gigabyte
        chunks = [slice(a, a + ROWS_PER_CHUNK) for a in range(0, len(y), ROWS_PER_CHUNK)]
        x_mean = sum(self._design(y[c]).sum(dim=0) for c in chunks) / len(y)  # (K + P,)
        z_mean = z64.mean(dim=0)  # (D,)
        gram = torch.zeros(len(x_mean), len(x_mean), dtype=torch.float64)  # (K + P, K + P)
        cross = torch.zeros(len(x_mean), z64.shape[1], dtype=torch.float64)  # (K + P, D)
        for c in chunks:
            xc = self._design(y[c]) - x_mean
            gram += xc.T @ xc
            cross += xc.T @ (z64[c] - z_mean)
        k = len(self.names)
        # the labels get the regression kind's scale-free guard; the pairs a ridge in faces, which shrinks them
        # towards the additive model
        penalty = torch.full((gram.shape[0],), float(pair_ridge), dtype=torch.float64)
        penalty[:k] = ridge * float(gram.diagonal()[:k].mean()) if k else 0.0
        chol = _cholesky(gram + torch.diag(penalty), "labels are collinear; raise `ridge` or `pair_ridge`")
        self.coef = torch.cholesky_solve(cross, chol)  # (K + P, D) float64
        self.design_mean, self.latent_mean = x_mean, z_mean  # (K + P,), (D,): f(y) = z̄ + (design(y) - x̄) coef
        self.info = {"min_count": min_count, "pair_ridge": float(pair_ridge), "ridge": float(ridge),
                     "pairs": int(len(self.pairs)), "num_latents": int(z.shape[0])}

    def pair_names(self) -> list[tuple[str, str]]:
        """The kept pairs as (name, name)."""
        return [(self.names[i], self.names[j]) for i, j in self.pairs.tolist()]

    def _design(self, y: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Labels (N, K) float64 -> the model's inputs (N, K + P): the labels, then the centred pair products; with
        `labels` (K,) bool, only the inputs that involve one of those labels (N, K' + P')."""
        pairs, columns = self.pairs.to(y.device), slice(None)
        if labels is not None:
            pairs, columns = pairs[labels[pairs[:, 0]] | labels[pairs[:, 1]]], labels
        centred = y - self.label_mean.to(y.device)
        return torch.cat([y[:, columns], centred[:, pairs[:, 0]] * centred[:, pairs[:, 1]]], dim=1)

    def change(self, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
        """f(after) - f(before) for labels (N, K) 0/1 each -> (N, D) float64, reading only the model's inputs that
        involve a label some row changes, a chunk of rows at a time."""
        b, a = (torch.as_tensor(y).to(torch.float64).cpu() for y in (before, after))
        moved = (a != b).any(dim=0)  # (K,)
        coef = self.coef[torch.cat([moved, moved[self.pairs[:, 0]] | moved[self.pairs[:, 1]]])]  # (K' + P', D)
        out = torch.zeros(len(a), self.latent_dim, dtype=torch.float64)
        for r in range(0, len(a), ROWS_PER_CHUNK):
            rows = slice(r, r + ROWS_PER_CHUNK)
            out[rows] = (self._design(a[rows], moved) - self._design(b[rows], moved)) @ coef
        return out

    def predict(self, labels: torch.Tensor) -> torch.Tensor:
        """f(y): the latent the model expects of labels (N, K) 0/1 in `names` order -> (N, D) float64."""
        y = torch.as_tensor(labels).to(torch.float64).cpu()
        return self.latent_mean + (self._design(y) - self.design_mean) @ self.coef

    def edit_by_labels(self, z: torch.Tensor, source: torch.Tensor, target: torch.Tensor, *,
                       strength: float | torch.Tensor = 1.0, mode: str = "offset") -> torch.Tensor:
        """z (N, D); source and target (N, K) 0/1 labels in `names` order; strength a number or (K,) -> (N, D).

        Each face moves by strength * (f(target) - f(source)). With per-attribute strengths the changed attributes
        are set one at a time in `names` order, each step f(after) - f(before) scaled by its attribute's strength
        (equal strengths give the same move as one step). Rows with target == source come back unchanged.
        """
        z, s, t = self._checked(z, source, target, mode)
        n, k = s.shape
        changed = s != t  # (N, K)
        if not bool(changed.any()):
            return z.clone()
        strength_k = torch.as_tensor(strength, dtype=torch.float64).cpu()
        if strength_k.ndim == 0:
            delta_labels = strength_k * (self._design(t) - self._design(s))  # (N, K + P)
        elif tuple(strength_k.shape) == (k,):
            delta_labels, now = torch.zeros(n, self.coef.shape[0], dtype=torch.float64), s.clone()
            for a in changed.any(dim=0).nonzero().flatten().tolist():
                after = now.clone()
                after[:, a] = t[:, a]
                delta_labels += strength_k[a] * (self._design(after) - self._design(now))
                now = after
        else:
            raise ValueError(f"strength must be a number or (K={k},), got {tuple(strength_k.shape)}")
        delta = (delta_labels @ self.coef).to(z.device)  # (N, D)
        moved = (z.to(torch.float64) + delta).to(z.dtype)
        return torch.where(changed.any(dim=1, keepdim=True).to(z.device), moved, z)

def interaction_kind(directions: Mapping[str, AttributeDirections], latents: Latents | None,
                     fit_split: str = "train", **options) -> dict[str, InteractionDirections]:
    """{"interaction": InteractionDirections} fitted on `fit_split` of the run's latents, on the regression kind's
    labels; {} (and said so) when the run has no regression directions or no labelled latents."""
    if "regression" not in directions:
        return {}
    if latents is None or latents.labels is None:
        warnings.warn(f"no labelled latents of the run: the {INTERACTION} kind is not scored", stacklevel=2)
        return {}
    fit = latents.select(fit_split)
    return {INTERACTION: InteractionDirections(directions["regression"], fit.mu, fit.labels, fit.attribute_names,
                                               **options)}
