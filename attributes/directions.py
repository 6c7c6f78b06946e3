"""Attribute directions in a latent space, six kinds: class means (`mean`), balanced means (`balanced`), linear probes
(`probe`), conditional directions (`conditional`), a joint regression on every label (`regression`) and the probes'
joint activation pattern (`probe_joint`). The hair-colour subspace built on top of any kind is `attributes.hair`.

All functions take latents (N, D) (encoder means `mu`, see attributes.encode) and labels (N, K) bool whose
columns follow `names`. In the spirit of InterFaceGAN's utils/manipulator.py: small functions, shape checks,
ValueErrors. An attribute with fewer than `min_count` positives or negatives is left out by name (returned in
`AttributeDirections.dropped` and warned about): no direction is ever NaN.
"""
from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from attributes.artifact import AttributeDirections, unknown_attribute

DEFAULT_MIN_COUNT = 20


# ---- input checks ---------------------------------------------------------------------------------------------
def _latents(latents, what: str = "latents") -> torch.Tensor:
    z = torch.as_tensor(latents)
    if z.ndim != 2:
        raise ValueError(f"{what} must be (N, D), got shape {tuple(z.shape)}")
    if not z.is_floating_point():
        z = z.float()
    return z


def _labels(labels, n: int, names: Sequence[str] | None = None, what: str = "labels") -> torch.Tensor:
    y = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels)
    if y.ndim != 2 or y.shape[0] != n:
        raise ValueError(f"{what} must be (N={n}, K), got shape {tuple(y.shape)}")
    if y.dtype != torch.bool:
        if not bool(((y == 0) | (y == 1)).all()):
            raise ValueError(f"{what} must be 0/1 or bool")
        y = y.bool()
    if names is not None and len(names) != y.shape[1]:
        raise ValueError(f"{len(names)} names for {y.shape[1]} label columns")
    return y


def _name_rows(names: Sequence[str], wanted: Sequence[str], what: str) -> list[int]:
    names = list(names)
    for w in wanted:
        if w not in names:
            raise unknown_attribute(w, names, what)
    return [names.index(w) for w in wanted]


def _unit(vectors: torch.Tensor) -> torch.Tensor:
    return vectors / vectors.norm(dim=-1, keepdim=True)


# ---- class means ------------------------------------------------------------------------------------------------
def class_means(latents, labels) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-attribute class means for all K attributes at once, as one product with the label matrix.

    latents (N, D), labels (N, K) bool -> pos_mean (K, D), neg_mean (K, D), pos_count (K,), neg_count (K,).
    Computed in float64 on the latents' device; an empty class has a NaN mean (filter with `min_count`).
    """
    z = _latents(latents)
    y = _labels(labels, z.shape[0])
    z64, y64 = z.to(torch.float64), y.to(torch.float64)
    pos_sum = y64.T @ z64  # (K, D)
    neg_sum = z64.sum(dim=0, keepdim=True) - pos_sum  # (K, D)
    pos_count = y.sum(dim=0).to(torch.int64)  # (K,)
    neg_count = y.shape[0] - pos_count
    nan_div = lambda s, c: s / torch.where(c > 0, c, 0).to(torch.float64)[:, None]  # noqa: E731  (0/0 -> NaN)
    return nan_div(pos_sum, pos_count).float(), nan_div(neg_sum, neg_count).float(), pos_count, neg_count


def label_pair_counts(labels) -> torch.Tensor:
    """How often each pair of label values occurs: labels (N, K) 0/1 -> counts (2, 2, K, K) int64, counts[v, w, i, j]
    the rows with label i at v and label j at w."""
    y = _labels(labels, len(labels)).to(torch.float64)
    both = y.T @ y  # (K, K): i and j set
    ones = y.sum(dim=0)  # (K,)
    only_i, only_j = ones[:, None] - both, ones[None, :] - both
    neither = len(y) - ones[:, None] - ones[None, :] + both
    return torch.stack([torch.stack([neither, only_j]), torch.stack([only_i, both])]).round().to(torch.int64)


def enough_samples(
    names: Sequence[str], pos_count, neg_count, min_count: int = DEFAULT_MIN_COUNT, *, warn: bool = True
) -> tuple[list[int], list[str]]:
    """Rows with at least `min_count` (and never fewer than 1) positives and negatives, and the names of the others
    (warned about)."""
    pos_count, neg_count = torch.as_tensor(pos_count).tolist(), torch.as_tensor(neg_count).tolist()
    need = max(int(min_count), 1)  # one class alone has no direction, whatever min_count says
    keep, dropped, why = [], [], []
    for i, (name, p, q) in enumerate(zip(names, pos_count, neg_count)):
        if p >= need and q >= need:
            keep.append(i)
        else:
            dropped.append(name)
            why.append(f"{name} ({p} positive, {q} negative)")
    if dropped and warn:
        warnings.warn(f"left out {len(dropped)} attribute(s) with fewer than {need} positives or negatives: "
                      + ", ".join(why), stacklevel=3)
    return keep, dropped


def _nonzero(names: Sequence[str], vectors: torch.Tensor, eps: float = 1e-8) -> tuple[list[int], list[str]]:
    """Positions of rows with a usable (non-zero, finite) vector, and the names of the others (warned about)."""
    norms = vectors.norm(dim=1).tolist()
    ok = [j for j, v in enumerate(norms) if v > eps and np.isfinite(v)]
    bad = [names[j] for j in range(len(norms)) if j not in ok]
    if bad:
        warnings.warn(f"left out attribute(s) with a zero or undefined direction: {bad}", stacklevel=3)
    return ok, bad


def mean_directions(latents, labels, names: Sequence[str], *, min_count: int = DEFAULT_MIN_COUNT) -> AttributeDirections:
    """Unit directions along pos_mean - neg_mean; step = the distance between the class means.

    latents (N, D), labels (N, K) -> AttributeDirections(method="mean") with vectors * steps == pos_mean - neg_mean.
    """
    z = _latents(latents)
    y = _labels(labels, z.shape[0], names)
    names = list(names)
    pos_mean, neg_mean, pos_count, neg_count = class_means(z, y)
    keep, dropped = enough_samples(names, pos_count, neg_count, min_count)
    ok, zero = _nonzero([names[i] for i in keep], (pos_mean - neg_mean)[keep])
    keep = [keep[j] for j in ok]
    diff = (pos_mean - neg_mean)[keep].cpu()  # (K', D)
    return AttributeDirections(
        names=[names[i] for i in keep], vectors=_unit(diff), steps=diff.norm(dim=1), method="mean",
        pos_mean=pos_mean[keep].cpu(), neg_mean=neg_mean[keep].cpu(), pos_count=pos_count[keep].cpu(),
        neg_count=neg_count[keep].cpu(), dropped=dropped + zero,
        info={"min_count": int(min_count), "num_latents": int(z.shape[0])},
    )


# ---- balanced (bias-corrected) means ----------------------------------------------------------------------------
def balanced_class_means(
    latents, target, cells, *, min_cell_count: int = 10
) -> tuple[torch.Tensor, torch.Tensor, int, int, list[int], list[int]]:
    """Class means of one attribute averaged over equal-weighted cells of other attributes (White 2016).

    latents (N, D), target (N,) bool, cells (N, M) bool -> pos_mean (D,), neg_mean (D,), pos_count, neg_count,
    used cells, skipped cells. Cell c is the combination with bit j = cells[:, j]. A cell is used only when it has
    at least `min_cell_count` positives and negatives; non-empty cells that are not used are returned as skipped.
    With no usable cell the means are NaN and the counts 0.
    """
    z = _latents(latents)
    t = torch.as_tensor(target).bool().reshape(-1)
    if t.shape[0] != z.shape[0]:
        raise ValueError(f"target must be (N={z.shape[0]},), got {tuple(t.shape)}")
    c = _labels(cells, z.shape[0], what="cells")
    m = c.shape[1]
    cell_id = (c.long() * (2 ** torch.arange(m, device=c.device))).sum(dim=1)  # (N,)
    onehot = torch.nn.functional.one_hot(cell_id, 2**m).to(torch.float64)  # (N, 2^m)
    tf = t.to(torch.float64)[:, None]
    pos_cells, neg_cells = onehot * tf, onehot * (1 - tf)  # (N, 2^m)
    pos_n, neg_n = pos_cells.sum(0).tolist(), neg_cells.sum(0).tolist()  # (2^m,)
    used = [i for i in range(2**m) if pos_n[i] >= min_cell_count and neg_n[i] >= min_cell_count]
    skipped = [i for i in range(2**m) if i not in used and pos_n[i] + neg_n[i] > 0]
    if not used:
        nan = torch.full((z.shape[1],), float("nan"))
        return nan, nan.clone(), 0, 0, used, skipped
    z64 = z.to(torch.float64)
    pn, nn = torch.tensor(pos_n, dtype=torch.float64)[used], torch.tensor(neg_n, dtype=torch.float64)[used]
    pos_means = (pos_cells[:, used].T @ z64) / pn[:, None].to(z.device)  # (C, D)
    neg_means = (neg_cells[:, used].T @ z64) / nn[:, None].to(z.device)
    return (pos_means.mean(0).float().cpu(), neg_means.mean(0).float().cpu(), int(pn.sum()), int(nn.sum()),
            used, skipped)


def cell_name(cell: int, balance: Sequence[str]) -> str:
    """Human-readable cell, e.g. 'Male=1,Young=0'."""
    return ",".join(f"{b}={(cell >> j) & 1}" for j, b in enumerate(balance))


def balanced_mean_directions(
    latents,
    labels,
    names: Sequence[str],
    balance_on: Mapping[str, Sequence[str]] | Sequence[str],
    *,
    min_count: int = DEFAULT_MIN_COUNT,
    min_cell_count: int = 10,
) -> AttributeDirections:
    """Mean-difference directions that do not inherit the data's correlations with the `balance_on` attributes.

    balance_on: a dict attribute -> attributes to balance over, or one list used for every attribute (an attribute
    is never balanced on itself; attributes missing from a dict get the plain mean). Each attribute's positive and
    negative means are averaged over the cells (combinations) of its balance attributes with equal weight, so
    Smiling within Male and within not-Male counts the same however skewed Smiling is between them. Cells with fewer
    than `min_cell_count` positives or negatives are skipped (warned, listed in info["skipped_cells"]); an attribute
    with no usable cell is left out (listed in `dropped`).
    """
    z = _latents(latents)
    y = _labels(labels, z.shape[0], names)
    names = list(names)
    if isinstance(balance_on, Mapping):
        _name_rows(names, list(balance_on), "attribute in balance_on")
        plan = {n: [b for b in balance_on.get(n, []) if b != n] for n in names}
    else:
        plan = {n: [b for b in balance_on if b != n] for n in names}
    for n, bs in plan.items():
        _name_rows(names, bs, f"balance attribute for {n}")
    _, _, pos_count, neg_count = class_means(z, y)
    keep, dropped = enough_samples(names, pos_count, neg_count, min_count)
    fitted, skipped_cells, no_cell = [], {}, []
    for i in keep:
        name, balance = names[i], plan[names[i]]
        pm, nm, pc, nc, used, skipped = balanced_class_means(
            z, y[:, i], y[:, _name_rows(names, balance, "balance attribute")], min_cell_count=min_cell_count)
        if skipped:
            skipped_cells[name] = [cell_name(s, balance) for s in skipped]
        if used:
            fitted.append((name, pm, nm, pc, nc))
        else:
            no_cell.append(name)
    if skipped_cells:
        warnings.warn(f"balanced means skipped cells with fewer than {min_cell_count} positives or negatives: "
                      + "; ".join(f"{n}: {c}" for n, c in skipped_cells.items()), stacklevel=2)
    if no_cell:
        warnings.warn(f"left out {no_cell}: no cell of their balance attributes has {min_cell_count} positives "
                      "and negatives", stacklevel=2)
    d = z.shape[1]
    pos_mean = torch.stack([f[1] for f in fitted]) if fitted else torch.empty(0, d)
    neg_mean = torch.stack([f[2] for f in fitted]) if fitted else torch.empty(0, d)
    ok, zero = _nonzero([f[0] for f in fitted], pos_mean - neg_mean)
    fitted, pos_mean, neg_mean = [fitted[j] for j in ok], pos_mean[ok], neg_mean[ok]
    diff = pos_mean - neg_mean  # (K', D)
    picked = [f[0] for f in fitted]
    return AttributeDirections(
        names=picked, vectors=_unit(diff), steps=diff.norm(dim=1), method="balanced", pos_mean=pos_mean,
        neg_mean=neg_mean, pos_count=[f[3] for f in fitted], neg_count=[f[4] for f in fitted],
        balance_on={n: plan[n] for n in picked if plan[n]}, dropped=dropped + no_cell + zero,
        info={"min_count": int(min_count), "min_cell_count": int(min_cell_count), "skipped_cells": skipped_cells,
              "num_latents": int(z.shape[0])},
    )


# ---- linear probes ----------------------------------------------------------------------------------------------
def _fit_probe(
    x_std: np.ndarray, y: np.ndarray, c: float, max_iter: int, seed: int, name: str = "?"
) -> tuple[np.ndarray, float]:
    """One logistic regression on standardised latents -> (w (D,), b) in standardised space."""
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=c, class_weight="balanced", max_iter=max_iter, random_state=seed)
    try:
        clf.fit(x_std, y)
    except MemoryError:
        raise
    except Exception as e:  # scikit-learn's own message names no attribute
        raise ValueError(f"the probe for attribute {name!r} could not be fitted ({int(y.sum())} positive, "
                         f"{int(len(y) - y.sum())} negative latents; C={c}): {e}") from e
    return clf.coef_[0].astype(np.float64), float(clf.intercept_[0])


def probe_directions(
    latents,
    labels,
    names: Sequence[str],
    *,
    valid_latents=None,
    valid_labels=None,
    min_count: int = DEFAULT_MIN_COUNT,
    C: float = 1.0,
    max_iter: int = 1000,
    n_jobs: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> AttributeDirections:
    """A logistic-regression probe per attribute (StandardScaler, class_weight='balanced'), fitted in parallel.

    latents (N, D), labels (N, K): the fitting split; valid_latents (M, D) / valid_labels (M, K) are scored
    (accuracy, balanced_accuracy, roc_auc). The probe's normal is mapped back to raw latents,
    w_raw = w / scale, b_raw = b - sum(w * mean / scale), so w_raw·z + b_raw is its decision function on z
    (kept as the boundary: probe_weights, probe_bias). The edit direction is the probe's activation pattern
    Cov(z) w_raw, normalised; its step the distance between the class means along it, and the target-mode
    margin half the class-mean gap measured across the boundary.
    n_jobs follows joblib (None = 1, -1 = all cores).
    """
    from joblib import Parallel, delayed
    from sklearn.preprocessing import StandardScaler

    z = _latents(latents)
    y = _labels(labels, z.shape[0], names)
    names = list(names)
    pos_mean, neg_mean, pos_count, neg_count = class_means(z, y)
    keep, dropped = enough_samples(names, pos_count, neg_count, min_count)
    x = z.detach().cpu().numpy().astype(np.float64)
    scaler = StandardScaler().fit(x)  # the same for every attribute: fitted once
    x_std, y_np = scaler.transform(x), y.cpu().numpy()
    jobs = (delayed(_fit_probe)(x_std, y_np[:, i], C, max_iter, seed, names[i]) for i in keep)
    results = list(tqdm(Parallel(n_jobs=n_jobs, return_as="generator")(jobs), total=len(keep), desc="probes",
                        disable=not progress))
    d = z.shape[1]
    w_std = np.stack([w for w, _ in results]) if results else np.zeros((0, d))  # (K', D)
    b_std = np.array([b for _, b in results], dtype=np.float64)  # (K',)
    w_raw = torch.from_numpy(w_std / scaler.scale_[None, :])
    b_raw = torch.from_numpy(b_std - (w_std * scaler.mean_[None, :] / scaler.scale_[None, :]).sum(axis=1))
    ok, zero = _nonzero([names[i] for i in keep], w_raw)
    keep, w_raw, b_raw = [keep[j] for j in ok], w_raw[ok], b_raw[ok]
    # Edit along the probe's activation pattern Cov(z) w (Haufe et al. 2014, "On the interpretation of weight
    # vectors of linear models"), not along its normal w: the normal is the best *filter* for telling the classes
    # apart and mostly points along low-variance latent axes the decoder hardly uses (a step along it changes few
    # of the attributes the judge sees); the pattern is how the latents
    # actually move with the attribute (for Gaussian classes it is the class-mean difference). The normal stays
    # the boundary (probe_weights) for scoring, predictions and target-mode edits.
    cov = torch.cov(z.detach().cpu().double().T)  # (D, D)
    units = _unit(w_raw @ cov).float()  # (K', D)
    class_gap = (pos_mean[keep] - neg_mean[keep]).cpu()  # (K', D)
    steps = (class_gap * units).sum(dim=1)  # (K',) class-mean distance along the edit direction
    margins = (class_gap * _unit(w_raw).float()).sum(dim=1) / 2  # (K',) half the class-mean gap across the boundary
    directions = AttributeDirections(
        names=[names[i] for i in keep], vectors=units, steps=steps, margins=margins, method="probe",
        pos_mean=pos_mean[keep].cpu(),
        neg_mean=neg_mean[keep].cpu(), pos_count=pos_count[keep].cpu(), neg_count=neg_count[keep].cpu(),
        probe_weights=w_raw.float(), probe_bias=b_raw.float(), dropped=dropped + zero,
        info={"min_count": int(min_count), "C": float(C), "num_latents": int(z.shape[0])},
    )
    if valid_latents is not None:
        directions.scores = score_directions(directions, valid_latents, valid_labels, names)
    return directions


def score_directions(directions: AttributeDirections, latents, labels, names: Sequence[str]) -> dict[str, dict[str, float]]:
    """Accuracy, balanced accuracy and ROC AUC of each attribute's boundary on held-out latents.

    latents (M, D), labels (M, K) with columns in `names` order (a superset of directions.names). ROC AUC is NaN
    when the held-out split has only one class of an attribute.
    """
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, roc_auc_score

    z = _latents(latents, "valid latents")
    y = _labels(labels, z.shape[0], names, "valid labels")
    rows = _name_rows(names, directions.names, "attribute in labels")
    dist = directions.signed_distance(z.cpu()).numpy()  # (M, K')
    truth = y[:, rows].cpu().numpy()
    scores = {}
    for j, name in enumerate(directions.names):
        t, s = truth[:, j], dist[:, j]
        both = 0 < t.sum() < len(t)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # single-class held-out splits: reported as NaN below
            scores[name] = {
                "accuracy": float(accuracy_score(t, s > 0)),
                "balanced_accuracy": float(balanced_accuracy_score(t, s > 0)) if both else float("nan"),
                "roc_auc": float(roc_auc_score(t, s)) if both else float("nan"),
                "valid_count": float(len(t)),
            }
    return scores


# ---- conditional directions -------------------------------------------------------------------------------------
def project_out(directions, conditions, *, rtol: float = 1e-6) -> torch.Tensor:
    """d - Q Qᵀ d with Q (D, M) an orthonormal basis (QR) of the condition directions.

    directions (..., D), conditions (M, D) -> (..., D), not renormalised. Linearly dependent conditions raise.
    """
    d = torch.as_tensor(directions).float()
    c = torch.as_tensor(conditions).float()
    if c.ndim != 2 or c.shape[1] != d.shape[-1]:
        raise ValueError(f"conditions must be (M, D={d.shape[-1]}), got {tuple(c.shape)}")
    if c.shape[0] == 0:
        return d.clone()
    if c.shape[0] > c.shape[1]:
        raise ValueError(f"{c.shape[0]} conditions cannot be independent in {c.shape[1]} dimensions")
    q, r = torch.linalg.qr(c.T.to(torch.float64))  # (D, M), (M, M)
    diag = r.diagonal().abs()
    if (diag <= rtol * c.to(torch.float64).norm(dim=1).max()).any():
        raise ValueError("condition directions are linearly dependent; condition on fewer attributes")
    d64 = d.to(torch.float64)
    return (d64 - (d64 @ q) @ q.T).float()


def conditional_directions(
    base: AttributeDirections,
    conditions: Mapping[str, Sequence[str]],
    *,
    min_residual: float = 0.05,
) -> AttributeDirections:
    """`base` with, for each attribute in `conditions`, the components along its condition attributes' directions
    projected out (InterFaceGAN conditional manipulation, any number of conditions): e.g. Blond_Hair without Male.

    Attributes not in `conditions` keep their base direction. The step becomes the distance between the class means
    along the new direction; the boundary stays the base's (a probe's hyperplane or the class-mean midpoint), so
    target-mode edits still land on the base classifier's scale. An attribute whose direction lies (almost) inside
    the span of its conditions (residual norm < `min_residual`) or whose class means no longer separate along it is
    left out with a warning.
    """
    for name, conds in conditions.items():
        base.index(name)
        for c in conds:
            base.index(c)
            if c == name:
                raise ValueError(f"{name} cannot be conditioned on itself")
    vectors, steps, keep, bad, why = base.vectors.clone(), base.steps.clone(), [], [], []
    for i, name in enumerate(base.names):
        conds = list(conditions.get(name, []))
        if conds:
            residual = project_out(base.vectors[i], torch.stack([base[c] for c in conds]))  # (D,)
            norm = float(residual.norm())
            unit = residual / norm if norm > 0 else residual
            step = float((base.pos_mean[i] - base.neg_mean[i]) @ unit)
            if norm < min_residual or not step > 0:
                bad.append(name)
                why.append(f"{name} (residual {norm:.3f}, step {step:.3f})")
                continue
            vectors[i], steps[i] = unit, step
        keep.append(i)
    if bad:
        warnings.warn("left out conditional directions that vanish once their conditions are projected out: "
                      + ", ".join(why), stacklevel=2)
    out = base.subset([base.names[i] for i in keep])
    out.vectors, out.steps = vectors[keep], steps[keep]
    # A probe base keeps its hyperplane, so its margins (measured across it) stay; a mean base's boundary is
    # perpendicular to the direction, so it moves with it.
    out.margins = out.margins if base.probe_weights is not None else steps[keep] / 2
    out.method = "conditional"
    out.conditions = {n: list(conditions[n]) for n in out.names if conditions.get(n)}
    out.dropped = list(base.dropped) + bad
    out.info = {**base.info, "base_method": base.method, "min_residual": float(min_residual)}
    return out


def cosine_similarity_frame(names: Sequence[str], vectors) -> pd.DataFrame:
    """(K, D) vectors -> K x K DataFrame of cosine similarities, indexed and columned by `names`."""
    v = torch.as_tensor(vectors).to(torch.float64)
    if v.ndim != 2 or v.shape[0] != len(names):
        raise ValueError(f"vectors must be (K={len(names)}, D), got {tuple(v.shape)}")
    u = v / v.norm(dim=1, keepdim=True)
    sim = (u @ u.T).clamp(-1, 1).numpy()
    return pd.DataFrame(sim, index=pd.Index(list(names), name="attribute"), columns=list(names))


# ---- joint least-squares (regression) directions ----------------------------------------------------------------
def _cholesky(gram: torch.Tensor, message: str, rtol: float = 1e-10) -> torch.Tensor:
    """Lower Cholesky factor of a symmetric (K, K) matrix; a singular or numerically rank-deficient one raises."""
    chol, info = torch.linalg.cholesky_ex(gram)
    if gram.shape[0] and (int(info) != 0 or float(chol.diagonal().min()) ** 2
                          <= rtol * float(gram.diagonal().abs().max())):
        raise ValueError(message)
    return chol


def regression_coefficients(latents, labels, *, ridge: float = 1e-6) -> torch.Tensor:
    """Joint least squares of the latents on all label columns at once: B = (YᵀY + λI)⁻¹ YᵀZ.

    latents (N, D), labels (N, K) 0/1 -> B (K, D) float64, with Y and Z the column-centred labels and latents.
    Row k is the latent change per unit change of attribute k with every other attribute held fixed (multiple
    regression; the mean difference of one attribute, by contrast, also carries whatever correlates with it).
    λ = `ridge` times the mean diagonal of YᵀY: a scale-free ridge that only guards against (nearly) collinear or
    constant label columns at its default; it shrinks B towards zero as it grows. Solved with a Cholesky solve.
    """
    z = _latents(latents)
    y = _labels(labels, z.shape[0])
    if ridge < 0:
        raise ValueError(f"ridge must be >= 0, got {ridge}")
    if z.shape[0] < 2:
        raise ValueError("regression needs at least two latents")
    z64, y64 = z.to(torch.float64), y.to(torch.float64)
    yc = y64 - y64.mean(dim=0, keepdim=True)  # (N, K)
    zc = z64 - z64.mean(dim=0, keepdim=True)  # (N, D)
    gram = yc.T @ yc  # (K, K)
    k = gram.shape[0]
    lam = ridge * float(gram.diagonal().mean()) if k else 0.0
    gram = gram + lam * torch.eye(k, dtype=torch.float64, device=gram.device)
    chol = _cholesky(gram, "labels are collinear (YᵀY is singular); raise `ridge` or leave out duplicated attributes")
    return torch.cholesky_solve(yc.T @ zc, chol)  # (K, D)


def regression_directions(
    latents,
    labels,
    names: Sequence[str],
    *,
    min_count: int = DEFAULT_MIN_COUNT,
    ridge: float = 1e-6,
) -> AttributeDirections:
    """Directions from one joint regression of the latents on all attribute labels (method "regression").

    latents (N, D), labels (N, K) -> AttributeDirections(method="regression"). With B = `regression_coefficients`
    over the attributes that have `min_count` positives and negatives, row b_k gives the unit direction b_k/|b_k|
    and the step |b_k|: the latent distance of flipping attribute k with the others held fixed (plat's balanced
    means generalised to every attribute at once, with no empty-cell problem).
    Class means are the regression's, not the raw ones: with the other attributes at their average,
    pos_mean = z̄ + (1 - ȳ_k) b_k and neg_mean = z̄ - ȳ_k b_k, so vectors * steps == pos_mean - neg_mean as for mean
    directions, and the boundary (`AttributeDirections.boundaries`) is the hyperplane perpendicular to b_k halfway
    between them; `score_directions` thus scores the projection on b_k thresholded at that midpoint, and target-mode
    margins are steps / 2. pos_count / neg_count are the real label counts.
    """
    z = _latents(latents)
    y = _labels(labels, z.shape[0], names)
    names = list(names)
    _, _, pos_count, neg_count = class_means(z, y)
    keep, dropped = enough_samples(names, pos_count, neg_count, min_count)
    coef = regression_coefficients(z, y[:, keep], ridge=ridge) if keep else torch.zeros(0, z.shape[1])
    ok, zero = _nonzero([names[i] for i in keep], coef)
    keep, coef = [keep[j] for j in ok], coef[ok].cpu()  # (K', D) float64
    z_bar = z.to(torch.float64).mean(dim=0).cpu()  # (D,)
    y_bar = y[:, keep].to(torch.float64).mean(dim=0).cpu()  # (K',)
    pos_mean = z_bar[None] + (1 - y_bar)[:, None] * coef  # (K', D)
    neg_mean = z_bar[None] - y_bar[:, None] * coef
    return AttributeDirections(
        names=[names[i] for i in keep], vectors=_unit(coef).float(), steps=coef.norm(dim=1).float(),
        method="regression", pos_mean=pos_mean.float(), neg_mean=neg_mean.float(),
        pos_count=pos_count[keep].cpu(), neg_count=neg_count[keep].cpu(), dropped=dropped + zero,
        info={"min_count": int(min_count), "ridge": float(ridge), "num_latents": int(z.shape[0])},
    )


# ---- joint activation pattern of the probes ---------------------------------------------------------------------
def joint_activation_pattern(weights, covariance) -> torch.Tensor:
    """A = Σ W (WᵀΣW)⁻¹ for probe weights W (D, K) and latent covariance Σ (D, D) -> A (D, K) float64.

    Column t moves probe t's decision function wᵀz + b by exactly one unit and leaves every other probe's unchanged
    (WᵀA = I), and is the smallest such move in the Mahalanobis norm δᵀΣ⁻¹δ. For K = 1 it is the probe's activation
    pattern Σw (Haufe et al. 2014) scaled to one unit. Probes whose weights are linearly dependent under Σ raise.
    """
    w = torch.as_tensor(weights).to(torch.float64)
    cov = torch.as_tensor(covariance).to(torch.float64).to(w.device)
    if w.ndim != 2:
        raise ValueError(f"weights must be (D, K), got {tuple(w.shape)}")
    d, k = w.shape
    if tuple(cov.shape) != (d, d):
        raise ValueError(f"covariance must be (D={d}, D={d}), got {tuple(cov.shape)}")
    if k > d:
        raise ValueError(f"{k} probes cannot be moved independently in {d} dimensions")
    sw = cov @ w  # (D, K)
    gram = w.T @ sw  # (K, K) = WᵀΣW
    chol = _cholesky(gram, "probe weights are linearly dependent under the covariance (WᵀΣW is singular)")
    return torch.cholesky_solve(sw.T, chol).T  # (D, K) = ΣW (WᵀΣW)⁻¹ (WᵀΣW symmetric)


def probe_joint_directions(probes: AttributeDirections, latents) -> AttributeDirections:
    """The probes' joint activation pattern as edit directions (method "probe_joint").

    probes: `probe_directions` output (needs probe_weights / probe_bias); latents (N, D): the split the probes were
    fitted on, for the covariance Σ. Direction t is column t of `joint_activation_pattern(W, Σ)`, normalised: a
    move along it changes probe t's score and no other probe's. Step: one step moves probe t's score by the
    class-mean gap along it, g_t = w_t·(pos_mean_t - neg_mean_t), so step = g_t |a_t| (a_t moves the score by one
    unit); a non-positive gap leaves the attribute out. The boundaries stay the probes' hyperplanes (probe_weights,
    probe_bias) and the margins the probes' (half the class-mean gap across each hyperplane), so target mode and
    `score_directions` read them exactly as for "probe".
    """
    if probes.probe_weights is None:
        raise ValueError(f"probe_joint needs probe directions (with probe_weights), got method {probes.method!r}")
    z = _latents(latents)
    if z.shape[1] != probes.latent_dim:
        raise ValueError(f"latents must be (N, D={probes.latent_dim}), got {tuple(z.shape)}")
    if z.shape[0] < 2:
        raise ValueError("probe_joint needs at least two latents for the covariance")
    cov = torch.cov(z.detach().cpu().double().T)  # (D, D)
    w = probes.probe_weights.double()  # (K, D)
    pattern = joint_activation_pattern(w.T, cov).T  # (K, D): row t moves probe t by one unit
    gap = ((probes.pos_mean - probes.neg_mean).double() * w).sum(dim=1)  # (K,) class-mean gap in score units
    steps = gap * pattern.norm(dim=1)  # (K,) latent distance that moves probe t by its gap
    good = [j for j, g in enumerate(gap.tolist()) if g > 0 and np.isfinite(g)]
    bad = [probes.names[j] for j in range(len(probes)) if j not in good]
    if bad:
        warnings.warn(f"left out attribute(s) whose probe does not separate the class means: {bad}", stacklevel=2)
    out = probes.subset([probes.names[j] for j in good])
    out.vectors, out.steps = _unit(pattern[good]).float(), steps[good].float()
    out.method = "probe_joint"
    out.dropped = list(probes.dropped) + bad
    out.info = {**probes.info, "base_method": probes.method, "num_latents_covariance": int(z.shape[0])}
    return out
