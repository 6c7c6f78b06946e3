"""Scoring one edit: an attribute flipped along one direction kind at some strengths, decoded once, composited,
judged and, on procedural faces, held against the true counterfactual.

The same code scores the candidate strengths on the validation faces (where strengths and kinds are chosen) and the
chosen ones on the test faces (where they are reported), so the two can never measure different things. Per
(composite, strength, subset) it gives one record:
  success, preservation                   the judge that chooses: sees the target value / keeps its verdict on
                                          every other attribute (bar those the flip sets or implies) from the base
  success_heldout, preservation_heldout   the same by the second judge, which takes no part in any choice (NaN
                                          where it did not score)
  psnr_edit_vs_cf, psnr_base_vs_cf        PSNR against the true counterfactual of the edit and of its base
  closer_to_cf, inside_change             ground truth, see `evaluation.counterfactuals`
  unseen_target                           the share of faces whose target no training face shows (a label pair
                                          never seen, `evaluation.protocol.unseen_targets`); success_seen and
                                          closer_seen, success and closer_to_cf on the other faces
The base of an edit is the image it starts from: the reconstruction, or the input for edits composited onto it.

`score_truth` scores the true counterfactuals themselves the same way (method TRUTH, subset TRUTH): what the judges
read on a perfectly faithful edit. Where that is far below 100 % (a mustache drawn on a woman, which no training
face shows), an edit the judge reads more often than the truth is exaggerating, not succeeding.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from attributes.composite import MaskConfig, change_mask, composite_base, in_context
from attributes.composite import composite as apply_mask
from attributes.context import context_latents
from evaluation.counterfactuals import GroundTruth
from evaluation.decoding import AutocastJudge, decode_batched, decode_images
from evaluation.protocol import binomial_halfwidth
from models.vae import ConvVAE

JUDGE, HELDOUT = "judge", "heldout"  # the judge that chooses, the one that only reports
TRUTH = "truth"  # method and subset of the records that score the true counterfactuals themselves


def base_of(composite: str) -> str:
    """The image an edit starts from: "input" for edits composited onto the input, else "recon"."""
    return "input" if composite_base(composite) == "input" else "recon"


@dataclass
class Faces:
    """Faces an evaluation edits: labels, latents, inputs, reconstructions and the judges' verdicts on both."""

    rows: np.ndarray  # (n,) cache rows, a seeded subset of one split
    truth: np.ndarray  # (n, Kj) bool labels, judge order
    mu: torch.Tensor  # (n, D)
    images: torch.Tensor  # (n, 3, S, S) in [-1, 1]
    recon: torch.Tensor  # (n, 3, S, S) decode(mu)
    verdicts: dict[str, dict[str, np.ndarray]]  # judge (JUDGE, HELDOUT) -> base ("input", "recon") -> (n, Kj)

    def __len__(self) -> int:
        return len(self.rows)

    def bases(self) -> dict[str, torch.Tensor]:
        return {"recon": self.recon, "input": self.images}


@dataclass(frozen=True)
class Step:
    """One strength of an edit, on every face, under these composites and judges, as `subset`."""

    strength: float
    subset: str
    composites: tuple[str, ...] = ("none",)
    heldout: tuple[str, ...] = ()  # composites the held-out judge scores too


@dataclass
class Edit:
    """One attribute flipped along one direction kind: what the edit asks, what preservation counts, its steps."""

    method: str
    directions: Any  # AttributeDirections or HairSubspaceDirections: .names, .edit_by_labels
    attribute: str
    target: np.ndarray  # (n, Kj) bool: the labels the edit asks for
    keep: np.ndarray  # (n, Kj) bool: the labels preservation counts (neither set on purpose nor implied by the flip)
    steps: Sequence[Step]
    unseen: np.ndarray | None = None  # (n,) bool: counterfactuals no training face shows (`protocol.unseen_targets`)
    pair_counts: torch.Tensor | None = None  # (2, 2, Kj, Kj) training label pairs, judge order: "+context" composites


def _labels(edit: Edit, faces: Faces, judge_names: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """(source, target) (n, Kd) in the edit's directions' order, and those columns' judge indices."""
    cols = [list(judge_names).index(name) for name in edit.directions.names]
    return torch.from_numpy(faces.truth[:, cols]), torch.from_numpy(edit.target[:, cols]), cols


def _latents(edit: Edit, faces: Faces, judge_names: Sequence[str], mode: str) -> torch.Tensor:
    """Every step's edited latents, one stream (steps * n, D)."""
    source, goal, _ = _labels(edit, faces, judge_names)  # (n, Kd)
    return torch.cat([edit.directions.edit_by_labels(faces.mu, source, goal, strength=s.strength, mode=mode)
                      for s in edit.steps])


def _context_shift(edit: Edit, faces: Faces, judge_names: Sequence[str]) -> torch.Tensor | None:
    """z_ctx - mu (n, D) for the edit's "+context" composites, None when no face needs a context (those composites
    are then the plain ones) or no step asks for one."""
    if edit.pair_counts is None or not any(in_context(c) for step in edit.steps for c in step.composites):
        return None
    source, goal, cols = _labels(edit, faces, judge_names)
    counts = edit.pair_counts[:, :, cols][:, :, :, cols]  # (2, 2, Kd, Kd)
    z_ctx, moved = context_latents(edit.directions, faces.mu, source, goal, counts)
    return z_ctx - faces.mu if bool(moved.any()) else None


@torch.inference_mode()
def score_edit(edit: Edit, faces: Faces, model: ConvVAE, judges: Mapping[str, AutocastJudge],
               ground_truth: GroundTruth | None, device: torch.device, *, mode: str = "offset",
               batch_size: int = 256, amp: bool = False, mask: MaskConfig = MaskConfig()) -> list[dict]:
    """Decode every step's edits in batches, composite, judge and compare them -> one record per (composite,
    strength, subset). Each decoded batch is used for every composite of its step, and then dropped; it is
    composited and judged on `device`, and only what the ground truth scores comes back to the CPU."""
    judge_names = judges[JUDGE].attribute_names
    ja = judge_names.index(edit.attribute)
    z = _latents(edit, faces, judge_names, mode)  # (steps * n, D)
    shift = _context_shift(edit, faces, judge_names)  # (n, D) or None
    n, n_cf = len(faces), len(ground_truth) if ground_truth is not None else 0
    moved = shift.any(dim=1) if shift is not None else torch.zeros(n, dtype=torch.bool)  # (n,) faces in context
    # D(z_ctx) of the faces in context, decoded once for every step (the others' context is the face itself)
    ctx_recon = (decode_batched(model, faces.mu[moved] + shift[moved], batch_size, device, amp)
                 if bool(moved.any()) else None)
    records, start = [], 0
    for step in edit.steps:
        # without a face in context a "+context" composite is its plain one: its record is copied, not recomputed
        copies = {} if ctx_recon is not None else {
            c: composite_base(c) for c in step.composites
            if in_context(c) and composite_base(c) in step.composites
            and (c not in step.heldout or composite_base(c) in step.heldout)}
        scored = [c for c in step.composites if c not in copies]
        per_face: dict[str, dict[str, list]] = {c: {} for c in scored}
        needed = {base_of(c) for c in scored}
        for a in range(0, n, batch_size):
            b = min(a + batch_size, n)
            decoded = decode_images(model, z[start + a : start + b], device, amp)  # (B, 3, S, S) on the device
            recon = faces.recon[a:b].to(device)
            bases = {name: recon if name == "recon" else images[a:b].to(device)
                     for name, images in faces.bases().items() if name in needed}
            where = change_mask(recon, decoded, mask) if set(scored) - {"none"} else None  # (B, 1, S, S)
            here = moved[a:b].nonzero().squeeze(1)  # (M,) faces of this batch in context
            if ctx_recon is not None and len(here) and any(map(in_context, scored)):  # the change drawn there
                first = int(moved[:a].sum())  # their rows in ctx_recon
                ctx_before = ctx_recon[first : first + len(here)].to(device)  # (M, 3, S, S)
                ctx_after = decode_images(model, z[start + a + here] + shift[a + here], device, amp)
                ctx_where = change_mask(ctx_before, ctx_after, mask)
            batch: dict[str, dict[str, np.ndarray]] = {}  # composite -> this batch's per-face verdicts and scores
            for composite in scored:
                base = bases[base_of(composite)]
                plain = batch.get(composite_base(composite)) if in_context(composite) else None
                if plain is not None and (composite not in step.heldout or HELDOUT in plain or HELDOUT not in judges):
                    # only the faces in context differ from the plain composite: score those, keep the rest
                    got_now = {key: value.copy() for key, value in plain.items() if key != HELDOUT or
                               composite in step.heldout}
                    if len(here):
                        out = apply_mask(base[here], ctx_before, ctx_after, ctx_where)  # (M, 3, S, S)
                        for j in (JUDGE, HELDOUT):
                            if j in got_now:
                                got_now[j][here.numpy()] = judges[j].predict(out).cpu().numpy()
                        cf = (a + here < n_cf).numpy()
                        if cf.any():
                            rows = here[torch.from_numpy(cf)]
                            gt = ground_truth.part(a + rows).score(out.cpu()[torch.from_numpy(cf)], base_of(composite),
                                                                    base.cpu()[rows])
                            for key, value in gt.items():
                                got_now[key][rows.numpy()] = value.numpy()
                else:
                    out = decoded if composite_base(composite) == "none" else apply_mask(base, recon, decoded, where)
                    if in_context(composite) and len(here):
                        out = out.clone()
                        out[here] = apply_mask(base[here], ctx_before, ctx_after, ctx_where)
                    got_now = {JUDGE: judges[JUDGE].predict(out).cpu().numpy()}
                    if composite in step.heldout and HELDOUT in judges:
                        got_now[HELDOUT] = judges[HELDOUT].predict(out).cpu().numpy()
                    if a < n_cf:
                        k = min(b, n_cf) - a  # faces of this batch with a counterfactual
                        gt = ground_truth.part(slice(a, a + k)).score(out[:k].cpu(), base_of(composite), base[:k].cpu())
                        got_now.update({key: value.numpy() for key, value in gt.items()})
                batch[composite] = got_now
                for key, value in got_now.items():
                    per_face[composite].setdefault(key, []).append(value)
        start += n
        done = {c: _record(edit, step, c, {k: np.concatenate(v) for k, v in got.items()}, faces, ja)
                for c, got in per_face.items()}
        records += [done[c] if c in done else done[copies[c]] | {"composite": c} for c in step.composites]
    return records


def _judged(verdict: np.ndarray | None, edit: Edit, base_verdict: np.ndarray, ja: int) -> tuple[float, float]:
    """(success, preservation) of verdicts (m, Kj) on the first m faces; NaNs when not judged."""
    if verdict is None:
        return float("nan"), float("nan")
    m = len(verdict)
    keep = edit.keep[:m]
    same = (verdict == base_verdict[:m]) & keep
    return float((verdict[:, ja] == edit.target[:m, ja]).mean()), float(same.sum() / max(keep.sum(), 1))


def _on_seen(values: np.ndarray, edit: Edit) -> float:
    """The mean of per-face `values` (the first m faces) over those whose target the training faces show."""
    if edit.unseen is None or not len(values):
        return float("nan")
    seen = ~edit.unseen[: len(values)]
    kept = values[seen]
    return float(np.nanmean(kept)) if len(kept) and not np.isnan(kept).all() else float("nan")


def _record(edit: Edit, step: Step, composite: str, got: dict[str, np.ndarray], faces: Faces, ja: int, *,
            base: str | None = None, n_cf: int | None = None) -> dict:
    """One row of the table from the verdicts (and ground-truth scores) `got` on the first len(got[JUDGE]) faces,
    judged against the base's verdicts (`base_of(composite)` unless given); n_cf the faces with a counterfactual
    (default: those the ground truth scored)."""
    base = base or base_of(composite)
    n = len(got[JUDGE])
    n_cf = len(got.get("psnr", ())) if n_cf is None else n_cf
    success, preservation = _judged(got[JUDGE], edit, faces.verdicts[JUDGE][base], ja)
    heldout = _judged(got.get(HELDOUT), edit, faces.verdicts.get(HELDOUT, {}).get(base), ja)
    mean = lambda key: float(np.nanmean(got[key])) if key in got and not np.isnan(got[key]).all() else float("nan")  # noqa: E731
    return {
        "method": edit.method, "composite": composite, "attribute": edit.attribute, "strength": step.strength,
        "subset": step.subset, "success": success, "preservation": preservation,
        "success_heldout": heldout[0], "preservation_heldout": heldout[1],
        "psnr_edit_vs_cf": mean("psnr"), "psnr_base_vs_cf": mean("base_psnr"),
        "closer_to_cf": mean("closer"), "inside_change": mean("inside"),
        "n": n, "n_cf": n_cf, "success_ci95": binomial_halfwidth(success, n),
        "source_positive_rate": float(faces.truth[:n, ja].mean()),
        "unseen_target": float(edit.unseen[:n].mean()) if edit.unseen is not None else float("nan"),
        "success_seen": _on_seen((got[JUDGE][:, ja] == edit.target[:n, ja]).astype(float), edit),
        "closer_seen": _on_seen(got["closer"], edit) if "closer" in got else float("nan"),
    }


@torch.inference_mode()
def score_truth(edit: Edit, faces: Faces, judges: Mapping[str, AutocastJudge], ground_truth: GroundTruth) -> dict:
    """The judges' verdicts on the true counterfactuals of `edit`'s flip (its target, keep and unseen; its kind and
    steps are not used), against their verdicts on the inputs the counterfactuals re-render: one record of method
    and subset TRUTH over the len(ground_truth) faces that have one. The ground-truth columns are NaN."""
    ja = judges[JUDGE].attribute_names.index(edit.attribute)
    verdicts = {j: judges[j].predict(ground_truth.counterfactual).cpu().numpy()
                for j in (JUDGE, HELDOUT) if j in faces.verdicts}  # (n_cf, Kj) each
    return _record(edit, Step(float("nan"), TRUTH), "none", verdicts, faces, ja, base="input",
                   n_cf=len(ground_truth)) | {"method": TRUTH}
