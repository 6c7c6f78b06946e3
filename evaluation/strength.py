"""Per-attribute edit strength chosen on the validation split, scored the way `experiments.evaluate` scores edits.

Each attribute is flipped on validation faces (STGAN's difference vector: the attribute negated; where it becomes 1,
the attributes that conflict with it cleared) at every candidate strength; the edited latents are decoded and judged
by the independent pixel-space judge:
  success       the judge sees the target value of the flipped attribute;
  preservation  the judge's verdict on every attribute the edit does not set on purpose equals its verdict on the
                plain reconstruction.
`pick_strengths` then applies the rule: among the candidates whose success reaches `target_success`, the one with
the highest preservation (ties: the smaller strength); when none reaches it, the one maximising
success x preservation (ties: the smaller strength).

Everything here is a pure function of its inputs: `decode` is any callable latents (B, D) -> images (B, ...), and
`judge` any object with `.predict(images) -> (B, K) bool` and `.attribute_names` (K names). Choose on the
validation split only; the test split is for reporting.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from evaluation.protocol import CONFLICTS, flip_changes

DEFAULT_CANDIDATES = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0)


def _judge_latents(z: torch.Tensor, decode: Callable, judge: Any, batch_size: int) -> np.ndarray:
    """Decode latents (N, D) batch by batch and judge each batch -> verdicts (N, K) bool."""
    out = []
    with torch.inference_mode():
        for s in range(0, z.shape[0], batch_size):
            out.append(torch.as_tensor(judge.predict(decode(z[s : s + batch_size]))).bool().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, len(judge.attribute_names)), dtype=bool)


def strength_scores(
    directions: Any,
    mu_valid: torch.Tensor,
    labels_valid,
    decode: Callable[[torch.Tensor], torch.Tensor],
    judge: Any,
    candidates: Sequence[float] = DEFAULT_CANDIDATES,
    *,
    attributes: Sequence[str] | None = None,
    conflicts: Mapping[str, Sequence[str]] = CONFLICTS,
    implied: Mapping[str, Sequence[str]] | None = None,
    mode: str = "offset",
    batch_size: int = 256,
    recon_verdicts: np.ndarray | None = None,
) -> pd.DataFrame:
    """Success and preservation of flipping each attribute at each candidate strength on validation faces.

    directions: an `AttributeDirections` (or anything with `.names` and `.edit_by_labels(z, source, target,
    strength=, mode=)`); mu_valid (N, D) encoder means; labels_valid (N, K) 0/1 ground truth with columns in
    `judge.attribute_names` order (every direction name must be one of them); attributes: which to score (default:
    every direction name the judge knows). The whole edit of one flip (the attribute and what its conflicts clear)
    uses the candidate strength. implied: rules of what else a flip changes in the data (e.g. a bald head loses its
    hair colour), not edited for but not counted against preservation either; None = `conflicts`. recon_verdicts:
    the judge's (N, K) verdicts on decode(mu_valid) when the caller already has them (scoring several kinds on the
    same faces), else computed here. Returns a long table: attribute, strength, success, preservation, n.
    """
    judge_names = list(judge.attribute_names)
    z = torch.as_tensor(mu_valid)
    if z.ndim != 2:
        raise ValueError(f"mu_valid must be (N, D), got {tuple(z.shape)}")
    truth = np.asarray(labels_valid).astype(bool)
    if truth.shape != (z.shape[0], len(judge_names)):
        raise ValueError(f"labels_valid must be (N={z.shape[0]}, K={len(judge_names)}) in the judge's attribute "
                         f"order, got {truth.shape}")
    candidates = [float(s) for s in candidates]
    if not candidates or any(not np.isfinite(s) or s <= 0 for s in candidates):
        raise ValueError(f"candidates must be positive strengths, got {candidates}")
    missing = [n for n in directions.names if n not in judge_names]
    if missing:
        raise ValueError(f"directions {missing} are not judged (judge attributes: {judge_names})")
    attributes = list(directions.names if attributes is None else attributes)
    unknown = [a for a in attributes if a not in directions.names]
    if unknown:
        raise ValueError(f"attributes {unknown} have no direction (directions: {list(directions.names)})")
    cols = [judge_names.index(n) for n in directions.names]  # direction row -> judge column
    recon = _judge_latents(z, decode, judge, batch_size) if recon_verdicts is None else np.asarray(recon_verdicts)
    if recon.shape != truth.shape:  # (N, K) verdicts on the plain reconstructions
        raise ValueError(f"recon_verdicts must be (N={z.shape[0]}, K={len(judge_names)}), got {recon.shape}")
    records = []
    for attribute in attributes:
        ja = judge_names.index(attribute)
        target_all = flip_changes(attribute, truth, judge_names, conflicts)  # (N, K) the edit asked for
        # attributes neither set on purpose nor implied by the flip: preservation is measured on these
        keep = (target_all if implied is None else flip_changes(attribute, truth, judge_names, implied)) == truth
        source, target = torch.from_numpy(truth[:, cols]), torch.from_numpy(target_all[:, cols])  # (N, Kd)
        edited = torch.cat([directions.edit_by_labels(z, source, target, strength=s, mode=mode) for s in candidates])
        verdicts = _judge_latents(edited, decode, judge, batch_size).reshape(len(candidates), *truth.shape)
        for s, verdict in zip(candidates, verdicts):  # verdict (N, K)
            same = (verdict == recon) & keep
            records.append({
                "attribute": attribute,
                "strength": s,
                "success": float((verdict[:, ja] == target_all[:, ja]).mean()),
                "preservation": float(same.sum() / max(int(keep.sum()), 1)),
                "n": int(z.shape[0]),
            })
    return pd.DataFrame.from_records(records, columns=["attribute", "strength", "success", "preservation", "n"])


def pick_strengths(scores: pd.DataFrame, target_success: float = 0.9) -> dict[str, float]:
    """The rule of this module on a `strength_scores` table -> {attribute: strength}.

    Among an attribute's strengths with success >= target_success, the one with the highest preservation; when none
    reaches it, the one with the highest success x preservation. Ties go to the smaller strength.
    """
    _check_scores(scores, {"attribute", "strength", "success", "preservation"}, target_success)
    return {str(attribute): float(_best_row(part.sort_values("strength"), target_success)["strength"])
            for attribute, part in scores.groupby("attribute", sort=False)}


def _check_scores(scores: pd.DataFrame, need: set[str], target_success: float) -> None:
    if not 0 <= target_success <= 1:
        raise ValueError(f"target_success must be in [0, 1], got {target_success}")
    if not need <= set(scores.columns):
        raise ValueError(f"scores need the columns {sorted(need)}, got {list(scores.columns)}")


def _best_row(part: pd.DataFrame, target_success: float) -> pd.Series:
    """This module's rule on rows of one attribute: the best-preserving row reaching target_success, else the best
    success x preservation; ties go to the first row."""
    good = part[part["success"] >= target_success]
    if len(good):
        return good.loc[good["preservation"].idxmax()]  # idxmax: the first of ties
    return part.loc[(part["success"] * part["preservation"]).idxmax()]


def pick_kinds(scores: pd.DataFrame, chosen: Mapping[str, Mapping[str, float]],
               target_success: float = 0.9) -> dict[str, str]:
    """{attribute: method}: for each attribute, the direction kind whose validation score at its own chosen strength
    wins by the same rule as `pick_strengths`. scores: `strength_scores` tables with a `method` column (the kinds in
    order of preference for ties); chosen: {method: {attribute: strength}}."""
    _check_scores(scores, {"method", "attribute", "strength", "success", "preservation"}, target_success)
    at_choice = scores[[chosen.get(m, {}).get(a) == s
                        for m, a, s in zip(scores["method"], scores["attribute"], scores["strength"])]]
    return {str(attribute): str(_best_row(part.reset_index(drop=True), target_success)["method"])
            for attribute, part in at_choice.groupby("attribute", sort=False)}


def choose_strengths(
    directions: Any,
    mu_valid: torch.Tensor,
    labels_valid,
    decode: Callable[[torch.Tensor], torch.Tensor],
    judge: Any,
    candidates: Sequence[float] = DEFAULT_CANDIDATES,
    target_success: float = 0.9,
    **kwargs: Any,
) -> dict[str, float]:
    """{attribute: strength} chosen on validation faces: `strength_scores` (keyword arguments go to it), then
    `pick_strengths`. To use it in an evaluation, edit attribute a's flip with strength=chosen[a]."""
    return pick_strengths(strength_scores(directions, mu_valid, labels_valid, decode, judge, candidates, **kwargs),
                          target_success)


def strength_vector(chosen: Mapping[str, float], names: Sequence[str], default: float = 1.0) -> torch.Tensor:
    """{attribute: strength} -> (K,) float tensor in `names` order (`default` for attributes not in `chosen`), the
    per-attribute `strength` that `AttributeDirections.edit_by_labels` / `edit_latents` accept."""
    return torch.tensor([float(chosen.get(n, default)) for n in names], dtype=torch.float32)
