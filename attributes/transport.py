"""Edits that carry what the labels do not say over to the target class: optimal transport of the residuals.

The interaction kind models a latent as what its labels predict, z = f(y) + r, and moves a face by f(target) -
f(source): the residual r (what the labels do not say: the person, the shape of the hair) is kept as it is. For most
attributes that is right. For some it is not: a bald head has no hair, whatever shape the face's hair had, so the
residual of a bald face varies little where a long-haired face's varies most, and no vector added to every face can
remove each face's own hair. Here the residuals of each attribute's two classes are modelled as Gaussians (Ledoit-Wolf
shrunk covariances, Ledoit & Wolf 2004, so a class of a few hundred faces in a 128-d latent still gives a well-posed
one), and flipping the attribute maps the residual by the optimal-transport map between them (the Monge map between
Gaussians, Knott & Smith 1984), which keeps what the target class varies in and shrinks what it does not:

    z' = f(t) + m_t + A (z - f(s) - m_s),     A = S^-1/2 (S^1/2 T S^1/2)^1/2 S^-1/2

with S, m_s the source class's residual covariance and mean, T, m_t the target's; several flipped attributes apply
their maps one after another. An edit at strength s moves z + s (z' - z).

The edit asks for what the flip implies (`implies`, {attribute: what setting it clears}: the data's consistency
rules, e.g. a bald head has no hair colour). A joint model of the labels needs them: its Bald term is the change
from a face with no hair colour to a bald one, so asking for Bald alone would keep the face's hair colour term.
What the flip clears other than the attribute's exclusive alternatives is carried by the attribute's map
(`carries`): its label term is left in the residual, z' = f(t) + m_t + A (z - f(s~) - m_s), with s~ the source
labels without it and the source class's Gaussian fitted on such residuals, and the target class's Gaussian decides
what stays of it. A bald face labelled with no hair colour still has a fringe of the person's own colour, which the
map keeps, where the label model alone gave every bald head the same fringe. An exclusive alternative is the same
factor in another value (the blond hair's term goes, the black hair's comes), which the label model replaces. The
asked attribute's map alone is applied: transporting the implied attributes' residuals as well, each by its own
map, drew fainter bald heads on the demo's faces (`benchmarks/RESULTS.md`).

    kind = TransportDirections(interaction, train.mu, train.labels, train.attribute_names, implies=rules)
    z_edit = kind.edit(mu, {"Bald": 1})                    # as AttributeDirections.edit, offset mode
"""
from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import torch

from attributes.artifact import exclusive_alternatives
from attributes.directions import _labels, _latents, _name_rows
from attributes.encode import Latents
from attributes.interaction import INTERACTION, ROWS_PER_CHUNK, InteractionDirections, LabelModelKind

TRANSPORT = "transport"  # the kind's name: the interaction model with its residuals transported between classes


def _sqrtm(matrix: torch.Tensor) -> torch.Tensor:
    """The symmetric square root of a symmetric positive semi-definite (D, D) matrix."""
    values, vectors = torch.linalg.eigh(matrix)
    return (vectors * values.clamp_min(0).sqrt()) @ vectors.T


def gaussian_transport_map(source_cov: torch.Tensor, target_cov: torch.Tensor) -> torch.Tensor:
    """The optimal-transport (Monge) map between zero-mean Gaussians of covariances S and T, both (D, D) symmetric
    positive definite: A = S^-1/2 (S^1/2 T S^1/2)^1/2 S^-1/2 (D, D) float64, symmetric, with A S A = T (its inverse
    is the map from T to S)."""
    s, t = (torch.as_tensor(c).to(torch.float64) for c in (source_cov, target_cov))
    if s.ndim != 2 or s.shape[0] != s.shape[1] or s.shape != t.shape:
        raise ValueError(f"covariances must both be (D, D), got {tuple(s.shape)} and {tuple(t.shape)}")
    values, vectors = torch.linalg.eigh(s)
    if float(values.min()) <= 0:
        raise ValueError("the source covariance must be positive definite")
    root, inverse_root = ((vectors * values.pow(p)) @ vectors.T for p in (0.5, -0.5))
    return inverse_root @ _sqrtm(root @ t @ root) @ inverse_root


def _shrunk(second: torch.Tensor, total: torch.Tensor, norms_sq: torch.Tensor, dots: torch.Tensor,
            count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean (D,), Ledoit-Wolf shrunk covariance (D, D)) of a class of `count` rows x from its sums: second = Σ x xᵀ
    (D, D), total = Σ x (D,), and per row norms_sq = |x|² and dots = x·m, m = total / count. The estimate of
    `sklearn.covariance.ledoit_wolf`, without its three passes over the rows."""
    d = total.shape[0]
    mean = total / count
    empirical = second / count - torch.outer(mean, mean)  # (D, D), divided by the count as scikit-learn's
    centred_sq = norms_sq - 2 * dots + mean @ mean  # (n,) |x - m|²
    mu = empirical.diagonal().sum() / d
    delta = ((empirical - mu * torch.eye(d, dtype=empirical.dtype)) ** 2).sum() / d
    beta = ((centred_sq**2).sum() / count - (empirical**2).sum()) / (d * count)
    shrinkage = torch.clamp(torch.minimum(beta, delta) / delta, min=0) if float(delta) > 0 else torch.tensor(0.0)
    return mean, (1 - shrinkage) * empirical + shrinkage * mu * torch.eye(d, dtype=empirical.dtype)


def gaussian(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean (D,), Ledoit-Wolf shrunk covariance (D, D)) of rows x (N, D) float64."""
    total = x.sum(dim=0)
    return _shrunk(x.T @ x, total, (x**2).sum(dim=1), x @ (total / len(x)), len(x))


def class_gaussians(x: torch.Tensor, members: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per attribute, its two classes' means and Ledoit-Wolf shrunk covariances (Ledoit & Wolf 2004, as
    `sklearn.covariance.ledoit_wolf`): x (N, D) float64, members (N, K) bool -> means (K, 2, D), covariances
    (K, 2, D, D), counts (K, 2); [j, v] is the class of rows with attribute j at v. Each attribute reads only its
    smaller class's rows: the other class's sums are the totals less these."""
    n, d = x.shape
    k = members.shape[1]
    norms_sq = (x**2).sum(dim=1)  # (N,)
    total, second = x.sum(dim=0), x.T @ x  # (D,), (D, D)
    means, covs = torch.zeros(k, 2, d, dtype=x.dtype), torch.zeros(k, 2, d, d, dtype=x.dtype)
    counts = torch.stack([(~members).sum(dim=0), members.sum(dim=0)], dim=1)  # (K, 2)
    for j in range(k):
        small = int(counts[j, 1] > counts[j, 0])  # the class read row by row
        rows = members[:, j] if small else ~members[:, j]
        part = x[rows]  # (n_small, D)
        sums = {small: (part.sum(dim=0), part.T @ part)}
        sums[1 - small] = (total - sums[small][0], second - sums[small][1])
        for v in (0, 1):
            if int(counts[j, v]) == 0:
                continue
            in_class = rows if v == small else ~rows
            dots = (x @ (sums[v][0] / int(counts[j, v])))[in_class]  # (n_v,) x·m, without copying the rows
            means[j, v], covs[j, v] = _shrunk(sums[v][1], sums[v][0], norms_sq[in_class], dots, int(counts[j, v]))
    return means, covs, counts


def implications(source: torch.Tensor, target: torch.Tensor, names: Sequence[str],
                 implies: Mapping[str, Sequence[str]]) -> dict[int, torch.Tensor]:
    """What each change of an edit implies: {column a: (N, K) bool, the attributes that setting a clears in each
    row}. Where an attribute goes from 0 to 1 (source (N, K) -> target (N, K), in `names` order), the attributes
    `implies` names for it ({attribute: what setting it clears}) are cleared, unless the edit changes them itself or
    they are 0 already. An attribute two changes clear counts for the first in `names` order."""
    source, target = torch.as_tensor(source), torch.as_tensor(target)
    changed = target != source  # (N, K): what the edit asks for itself
    column = {name: j for j, name in enumerate(names)}
    taken = torch.zeros_like(changed)  # what an earlier change already clears
    out = {}
    for a, name in enumerate(names):
        cols = [column[other] for other in implies.get(name, ()) if other in column]
        set_now = (target[:, a] == 1) & changed[:, a]  # (N,)
        if not cols or not bool(set_now.any()):
            continue
        clears = torch.zeros_like(changed)
        clears[:, cols] = set_now[:, None] & ~changed[:, cols] & (target[:, cols] != 0) & ~taken[:, cols]
        if bool(clears.any()):
            out[a], taken = clears, taken | clears
    return out


def implied_target(source: torch.Tensor, target: torch.Tensor, names: Sequence[str],
                   implies: Mapping[str, Sequence[str]]) -> torch.Tensor:
    """`target` (N, K) with what each newly set attribute implies (`implications`) cleared; source (N, K). Only
    names in `names` (the columns' order) count."""
    out = torch.as_tensor(target).clone()
    for clears in implications(source, target, names, implies).values():
        out[clears] = 0
    return out


class TransportDirections(LabelModelKind):
    """The interaction kind's label model, with each face's residual carried to the target class by the
    optimal-transport map between the two classes' residual Gaussians; edits ask for what the flip implies.

    `model` (the run's InteractionDirections) gives the label model; its base (the regression directions) the
    names, the boundaries an edit is judged by and the labels predicted where none are given. An attribute with
    fewer than `min_count` training faces in either class keeps its residual (the interaction kind's edit).
    `carries` {attribute: what its flip clears and its map carries}: None = all that `implies` clears but the
    attribute's exclusive alternatives (`default_carries`). Offset mode only.
    """

    def __init__(self, model: InteractionDirections, latents, labels, names: Sequence[str], *,
                 implies: Mapping[str, Sequence[str]] | None = None, implies_name: str = "none",
                 carries: Mapping[str, Sequence[str]] | None = None, min_count: int | None = None):
        z = _latents(latents)
        y_all = _labels(labels, z.shape[0], names)
        if z.shape[1] != model.latent_dim:
            raise ValueError(f"latents are (N, {z.shape[1]}) but the {INTERACTION} model is {model.latent_dim}-d")
        self.model, self.base = model, model.base
        self.names, self.method = list(model.names), TRANSPORT
        self.implies = {str(k): tuple(v) for k, v in (implies or {}).items()}
        carries = default_carries(self.implies) if carries is None else carries
        min_count = int(model.info["min_count"]) if min_count is None else int(min_count)
        y = y_all[:, _name_rows(names, self.names, "label")].to(torch.float64).cpu()  # (N, K) in model order
        z64 = z.detach().to(torch.float64).cpu()
        residual = self._residual(z64, y)  # (N, D)
        k, d = len(self.names), z64.shape[1]
        # [j, v]: class v's mean residual and Ledoit-Wolf covariance; maps[j, v] carries class v to class 1 - v
        self.means, covs, counts = class_gaussians(residual, y > 0.5)
        self.transported = counts.amin(dim=1) >= min_count  # (K,)
        column = {name: j for j, name in enumerate(self.names)}
        # {j: columns}: what setting attribute j clears whose look its map carries (in the residual, as if unlabelled)
        self.carried = {column[a]: cols for a, cleared in carries.items() if a in column and self.transported[column[a]]
                        and (cols := [column[o] for o in cleared if o in column])}
        for j, cols in self.carried.items():  # the class that setting j leaves: its residuals without those labels
            unset = y[:, j] < 0.5  # (N,)
            labelled = unset & (y[:, cols] > 0.5).any(dim=1)  # (N,)
            unlabelled = y[labelled].clone()
            unlabelled[:, cols] = 0
            without = residual[unset]  # (N_0, D)
            without[labelled[unset]] = residual[labelled] + self.model.change(unlabelled, y[labelled])
            self.means[j, 0], covs[j, 0] = gaussian(without)
        self.maps = torch.eye(d, dtype=torch.float64).repeat(k, 2, 1, 1)
        for j in self.transported.nonzero().flatten().tolist():
            self.maps[j, 0] = gaussian_transport_map(covs[j, 0], covs[j, 1])
            self.maps[j, 1] = torch.linalg.inv(self.maps[j, 0])  # the map back is the inverse
        # the rules by name and content: `face_edit.edit_kind` refuses an evaluation made under other rules
        self.info = {"min_count": min_count, "implies": implies_name,
                     "implied": {name: list(cleared) for name, cleared in sorted(self.implies.items())},
                     "carried": {self.names[j]: [self.names[o] for o in cols]
                                 for j, cols in sorted(self.carried.items())},
                     "transported": int(self.transported.sum()),
                     "num_latents": int(z.shape[0]), **{f"model_{key}": value for key, value in model.info.items()}}

    def _residual(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """z (N, D) float64 less what `labels` (N, K) predict, a chunk of rows at a time -> (N, D)."""
        return torch.cat([z[c] - self.model.predict(labels[c]) for c in
                          (slice(a, a + ROWS_PER_CHUNK) for a in range(0, len(labels), ROWS_PER_CHUNK))])

    def _move(self, z: torch.Tensor, source: torch.Tensor, target: torch.Tensor, asked: torch.Tensor) -> torch.Tensor:
        """The full transport of z (N, D) float64 from labels source to target, both (N, K) float64; the residual
        is transported for the changes `asked` (N, K) bool only -> (N, D)."""
        flipped = asked.any(dim=0).nonzero().flatten().tolist()
        unlabelled = source.clone()  # what a transported flip clears and carries leaves the labels for the residual
        for j in (j for j in flipped if j in self.carried):
            rows, cols = (asked[:, j] & (source[:, j] == 0)).nonzero().flatten(), self.carried[j]
            unlabelled[rows[:, None], cols] = torch.minimum(source[rows][:, cols], target[rows][:, cols])
        residual = z - self.model.predict(unlabelled)  # (N, D)
        for j in flipped:
            for v in (0, 1):  # the class the rows leave
                rows = (asked[:, j] & (source[:, j] == v)).nonzero().flatten()
                centred = residual[rows] - self.means[j, v]  # (R, D)
                residual[rows] = self.means[j, 1 - v] + centred @ self.maps[j, v]  # the maps are symmetric
        return self.model.predict(target) + residual

    def edit_by_labels(self, z: torch.Tensor, source: torch.Tensor, target: torch.Tensor, *,
                       strength: float | torch.Tensor = 1.0, mode: str = "offset") -> torch.Tensor:
        """z (N, D); source and target (N, K) 0/1 labels in `names` order; strength a number or (K,) -> (N, D).

        The target is first completed with what the flip implies (`implications`). Each face moves by
        strength * (z' - z), z' its full transport; with per-attribute strengths the asked changes are made one at
        a time in `names` order, each with what it implies and scaled by its attribute's strength (strengths all 1
        give the full transport). Rows with target == source come back unchanged.
        """
        z, s, t = self._checked(z, source, target, mode)
        k = s.shape[1]
        asked = s != t  # (N, K): what the flip implies moves the label model, or is carried, never transported
        asked_target, t = t, implied_target(s, t, self.names, self.implies)
        changed = (s != t).any(dim=1)  # (N,)
        if not bool(changed.any()):
            return z.clone()
        strength_k = torch.as_tensor(strength, dtype=torch.float64).cpu()
        now = z.detach().to(torch.float64).cpu()
        if strength_k.ndim == 0:
            now = now + strength_k * (self._move(now, s, t, asked) - now)
        elif tuple(strength_k.shape) == (k,):
            labels, implied = s.clone(), implications(s, asked_target, self.names, self.implies)
            for a in asked.any(dim=0).nonzero().flatten().tolist():
                step = asked & (torch.arange(k) == a)  # (N, K): this change, and what it implies
                step |= implied.get(a, torch.zeros_like(step))
                after = torch.where(step, t, labels)
                now = now + strength_k[a] * (self._move(now, labels, after, asked & step) - now)
                labels = after
        else:
            raise ValueError(f"strength must be a number or (K={k},), got {tuple(strength_k.shape)}")
        moved = now.to(z.device, z.dtype)
        return torch.where(changed[:, None].to(z.device), moved, z)


def default_carries(implies: Mapping[str, Sequence[str]]) -> dict[str, tuple[str, ...]]:
    """{attribute: what its transport map carries}: what setting it clears (`implies`) other than its exclusive
    alternatives. An exclusive alternative is the same factor in another value, which the label model replaces
    (blond hair's term goes, black hair's comes); anything else cleared is a label the target class does not use,
    whether or not its faces still show it (a bald head keeps a fringe of the person's own colour, but no bangs):
    the target class's Gaussian says which, so the map carries it."""
    return {name: tuple(o for o in cleared if o not in exclusive_alternatives(name))
            for name, cleared in implies.items()}


def transport_kind(model: InteractionDirections | None, latents: Latents | None, implies: Mapping[str, Sequence[str]],
                   implies_name: str, fit_split: str = "train", **options) -> dict[str, TransportDirections]:
    """{"transport": TransportDirections} fitted on `fit_split` of the run's latents on top of the interaction
    `model`; {} (and said so) without one or without labelled latents."""
    if model is None:
        return {}
    if latents is None or latents.labels is None:
        warnings.warn(f"no labelled latents of the run: the {TRANSPORT} kind is not scored", stacklevel=2)
        return {}
    fit = latents.select(fit_split)
    return {TRANSPORT: TransportDirections(model, fit.mu, fit.labels, fit.attribute_names, implies=implies,
                                           implies_name=implies_name, **options)}
