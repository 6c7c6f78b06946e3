"""Score attribute edits the way STGAN and AttGAN do: an independent pixel-space judge, on held-out faces.

For each scored face and attribute, the attribute is flipped with STGAN's difference vector (`evaluation.protocol`),
the latent is moved by every direction kind, the result is decoded and judged (on procedural faces, attributes the
generator's consistency rules change with the flip, like a bald head's hair colour, are not counted against
preservation: `flip_rules`):
  success       the judge sees the target value on the edited image;
  preservation  the judge's verdict on every other attribute (bar those the edit sets on purpose) is the one it
                gave the plain reconstruction;
  fidelity      reconstruction PSNR/SSIM against the input;
  ground truth  on procedural faces: PSNR of the edit, and of the unedited reconstruction, against the true
                counterfactual re-rendered from the face's factors with the attribute flipped, and the share of faces
                whose edit is the closer of the two.
Every number is reported per direction kind and, as a curve, per edit strength.
"""
from __future__ import annotations

import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from attributes.artifact import AttributeDirections
from attributes.directions import HAIR_COLOURS, HairSubspaceDirections
from attributes.encode import Latents, encode_images
from data.cache import FaceCache, to_float_images
from evaluation.protocol import CONFLICTS, STGAN_ATTRIBUTES, binomial_halfwidth, eval_rows, flip_changes
from evaluation.strength import DEFAULT_CANDIDATES, pick_kinds, pick_strengths, strength_scores
from models.accel import bf16_autocast, native_bf16
from models.classifier import JudgeConfig, train_judge
from models.metrics import psnr, ssim
from models.vae import ConvVAE
from pipeline.run import Run


@dataclass
class EvalConfig:
    """What to evaluate and on how many faces; sizes default to +-2 % error bars (2,500 faces)."""

    eval_faces: int = field(default=2500, metadata={"help": "faces scored (all of the split when smaller)"})
    curve_faces: int | None = field(default=500, metadata={"help": "faces for the other strengths; None = all"})
    counterfactual_faces: int | None = field(default=500, metadata={
        "help": "faces with a rendered true counterfactual (procedural data only); 0 = none"})
    strengths: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0, 3.0)
    default_strength: float = field(default=2.0, metadata={"help": "the strength of the headline tables"})
    choose_strength: bool = field(default=True, metadata={
        "help": "also score each attribute at its own strength, chosen on the valid split"})
    strength_candidates: tuple[float, ...] = field(default=DEFAULT_CANDIDATES, metadata={
        "help": "the strengths that choice is made among"})
    strength_faces: int = field(default=500, metadata={"help": "valid faces the per-attribute strengths are chosen on"})
    hair_subspace: bool = field(default=True, metadata={
        "help": "also score each kind with hair-colour flips made inside the colour subspace (KIND+hair_subspace)"})
    target_success: float = field(default=0.9, metadata={
        "help": "choice rule: the best-preserving strength whose success reaches this"})
    methods: tuple[str, ...] | None = field(default=None, metadata={"help": "direction kinds; None = all the run has"})
    attributes: tuple[str, ...] | None = field(default=None, metadata={"help": "None = all the directions cover"})
    mode: str = field(default="offset", metadata={"choices": ("offset", "target")})
    flip_rules: str = field(default="auto", metadata={"choices": ("auto", "stgan"), "help": (
        "what a flip also changes, left out of preservation: auto = the generator's rules on procedural faces (a "
        "bald head has no hair colour), else STGAN's; stgan = STGAN's")})
    split: str = field(default="test", metadata={"choices": ("train", "valid", "test")})
    batch_size: int = 256
    amp: bool = field(default=True, metadata={"help": "decode and judge in bf16 where the device has it natively"})
    seed: int = 0
    judge: JudgeConfig = field(default_factory=JudgeConfig, metadata={"flatten": "judge-"})
    force_judge: bool = field(default=False, metadata={"help": "retrain the judge even if <cache>/judge.pt matches"})
    progress: bool = field(default=True, metadata={"cli": False})

    def __post_init__(self) -> None:
        if isinstance(self.judge, dict):  # from JSON
            self.judge = JudgeConfig(**self.judge)
        self.strengths = tuple(float(s) for s in self.strengths)
        self.default_strength = float(self.default_strength)
        self.strength_candidates = tuple(float(s) for s in self.strength_candidates)
        if self.default_strength not in self.strengths:
            self.strengths = tuple(sorted((*self.strengths, self.default_strength)))
        if self.methods is not None:
            self.methods = tuple(self.methods)
        if self.attributes is not None:
            self.attributes = tuple(self.attributes)
        if self.eval_faces < 1:
            raise ValueError(f"EvalConfig.eval_faces must be >= 1, got {self.eval_faces}")
        if self.flip_rules not in ("auto", "stgan"):
            raise ValueError(f"EvalConfig.flip_rules={self.flip_rules!r}; expected 'auto' or 'stgan'")


def decode_images(model: ConvVAE, z: torch.Tensor, device: torch.device, amp: bool = False) -> torch.Tensor:
    """decode(z) on `device` as float32 images (B, 3, S, S) clamped to [-1, 1]; under `bf16_autocast` when amp."""
    with bf16_autocast(device, amp):
        return model.decode(z.to(device)).float().clamp(-1, 1)


class AutocastJudge:
    """A judge whose `predict` runs under `bf16_autocast(device, amp)`: the judge as an evaluation scores with it."""

    def __init__(self, judge: torch.nn.Module, device: torch.device, amp: bool):
        self.judge, self.device, self.amp = judge, device, amp
        self.attribute_names = list(judge.attribute_names)

    def predict(self, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        with bf16_autocast(self.device, self.amp):
            return self.judge.predict(images, batch_size)


@torch.inference_mode()
def decode_batched(model: ConvVAE, z: torch.Tensor, batch_size: int, device: torch.device,
                   amp: bool = False) -> torch.Tensor:
    """decode(z) in batches; images (N, 3, S, S) in [-1, 1] on the CPU."""
    model.eval()
    return torch.cat([decode_images(model, z[s : s + batch_size], device, amp).cpu()
                      for s in range(0, z.shape[0], batch_size)])


@torch.inference_mode()
def decode_and_judge(
    model: ConvVAE,
    judge: torch.nn.Module,
    z: torch.Tensor,
    batch_size: int,
    device: torch.device,
    reference: torch.Tensor | None = None,
    reference_rows: torch.Tensor | None = None,
    amp: bool = False,
) -> tuple[np.ndarray, torch.Tensor]:
    """Decode latents (N, D) batch by batch and judge each batch, never holding all N images.

    Returns the judge's verdicts (N, K) bool and, when `reference` images (M, 3, S, S) are given with
    `reference_rows` (N,) (row of `reference` each latent is compared with; rows >= M are skipped), the PSNR of
    each decoded image against its reference (N,), NaN where there is none. amp: see `decode_images`.
    """
    model.eval()
    verdicts, psnrs = [], torch.full((z.shape[0],), float("nan"))
    for s in range(0, z.shape[0], batch_size):
        images = decode_images(model, z[s : s + batch_size], device, amp)  # (B, 3, S, S)
        verdicts.append(judge.predict(images, max(batch_size, 1)).cpu())
        if reference is not None:
            rows = reference_rows[s : s + batch_size]
            have = rows < reference.shape[0]
            if have.any():
                psnrs[s : s + batch_size][have] = psnr(images[have.to(images.device)].cpu(), reference[rows[have]])
    out = torch.cat(verdicts) if verdicts else torch.zeros(0, len(judge.attribute_names), dtype=torch.bool)
    return out.numpy(), psnrs


# ---- ground-truth counterfactuals (procedural faces) -----------------------------------------------------------
def synthetic_root(cache: FaceCache) -> Path | None:
    """The procedural dataset root a cache was built from, or None for real data (no synthetic_factors.csv)."""
    from data.synthetic import FACTORS_FILE, dataset_dir

    source = cache.meta.get("source_root")
    if not source:
        return None
    for candidate in (Path(source), Path(source).parent):
        if (dataset_dir(candidate) / FACTORS_FILE).is_file():
            return candidate
    return None


def render_counterfactuals(
    factors: pd.DataFrame,
    image_ids: Sequence[str],
    changes: Sequence[dict[str, bool]],
    size: int,
    crop_fraction: float | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Re-render each face from its factors with `changes[i]` applied: float (N, 3, size, size) in [-1, 1].

    The render goes through the cache's own crop + resize (data.cache.preprocess_image). Should a change set
    contradict the generator's consistency rules, its first entry (the edited attribute) is applied alone.
    """
    from PIL import Image

    from data.cache import preprocess_image
    from data.synthetic import counterfactual, render

    out = np.empty((len(image_ids), 3, size, size), dtype=np.uint8)
    for i, (image_id, change) in enumerate(
        tqdm(list(zip(image_ids, changes)), desc="counterfactuals", leave=False, disable=not progress)
    ):
        if image_id not in factors.index:
            raise KeyError(f"image {image_id!r} has no row in the procedural dataset's factors table")
        try:
            row = counterfactual(factors.loc[image_id], change)
        except ValueError:  # our conflict rules asked for more than the generator's consistency allows
            first = next(iter(change))  # the edited attribute alone; the generator keeps the rest consistent
            row = counterfactual(factors.loc[image_id], {first: change[first]})
        out[i] = preprocess_image(Image.fromarray(render(row)), size, *(() if crop_fraction is None else (crop_fraction,)))
    return to_float_images(torch.from_numpy(out))


def faces_mu(model: ConvVAE, images_u8: torch.Tensor, rows: np.ndarray, latents: Latents | None, batch_size: int,
             device: torch.device) -> torch.Tensor:
    """Encoder means (n, D) of cache rows `rows`: looked up in `latents` (the whole cache, encoded) when given."""
    if latents is not None:
        return latents.mu[torch.from_numpy(rows)].float()
    return encode_images(model, images_u8, batch_size=batch_size, device=device, progress=False)[0]


# ---- the evaluation ---------------------------------------------------------------------------------------------
# ---- the evaluation ---------------------------------------------------------------------------------------------
@dataclass
class ScoredFaces:
    """The faces an evaluation scores: labels, latents, reconstructions and the judge's verdicts on both."""

    rows: np.ndarray  # (n,) cache rows, a seeded subset of the split
    truth: np.ndarray  # (n, Kj) bool labels, judge order
    mu: torch.Tensor  # (n, D)
    images: torch.Tensor  # (n, 3, S, S) in [-1, 1]
    recon: torch.Tensor  # (n, 3, S, S) decode(mu)
    verdict_input: np.ndarray  # (n, Kj) the judge on the inputs
    verdict_recon: np.ndarray  # (n, Kj) the judge on the reconstructions


def attributes_to_score(judge_names: Sequence[str], directions: dict[str, AttributeDirections],
                        config: EvalConfig) -> list[str]:
    """The configured attributes, else every one the directions and the judge both cover (STGAN's 13 first)."""
    covered = [n for d in directions.values() for n in d.names]
    if config.attributes is not None:
        unknown = [a for a in config.attributes if a not in covered or a not in judge_names]
        if unknown:
            raise ValueError(f"attributes {unknown} are not covered by both the directions and the judge ({judge_names})")
        return list(config.attributes)
    rest = [a for a in judge_names if a in covered and a not in STGAN_ATTRIBUTES]
    attributes = [a for a in STGAN_ATTRIBUTES if a in covered and a in judge_names] + rest
    if not attributes:
        raise ValueError("no attribute is covered by both the directions and the judge")
    return attributes


def scored_faces(model: ConvVAE, cache: FaceCache, judge: torch.nn.Module, config: EvalConfig, device: torch.device,
                 latents: Latents | None = None) -> ScoredFaces:
    """Pick the faces, take their latents (from `latents` when given), reconstruct them and judge both."""
    rows = eval_rows(cache, config.split, config.eval_faces, config.seed)
    images_u8 = torch.from_numpy(np.ascontiguousarray(cache.images[rows]))  # (n, 3, S, S) uint8
    images = to_float_images(images_u8)
    mu = faces_mu(model, images_u8, rows, latents, config.batch_size, device)  # (n, D)
    recon = decode_batched(model, mu, config.batch_size, device, config.amp)  # (n, 3, S, S)
    return ScoredFaces(
        rows=rows, truth=cache.table[list(judge.attribute_names)].to_numpy(dtype=bool)[rows], mu=mu, images=images,
        recon=recon, verdict_input=judge.predict(images, config.judge.eval_batch_size).cpu().numpy(),
        verdict_recon=judge.predict(recon, config.judge.eval_batch_size).cpu().numpy(),
    )


PICKED = "picked"  # the table's pseudo-kind: per attribute, the kind and strength that won on the validation faces


def hair_subspace_kinds(directions: dict[str, AttributeDirections], latents: Latents | None,
                        fit_split: str = "train") -> dict[str, HairSubspaceDirections]:
    """For every kind with all four hair-colour directions, its `HairSubspaceDirections` (class means of the colours
    taken on `fit_split` of the run's latents); kinds whose colour classes are too small are left out, and said so."""
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


def flip_rules(cache: FaceCache, config: EvalConfig) -> tuple[str, Mapping[str, Sequence[str]]]:
    """(name, {attribute: what setting it clears}): what a flip changes in the data, so that preservation does not
    count it and the true counterfactual is rendered with it. The procedural generator's consistency rules
    (`data.synthetic.CLEARED_WHEN_SET`, a superset of STGAN's) on its faces, else STGAN's. Edits ask for STGAN's
    target either way: moving along "no hair colour" as well as "bald" would add a red-haired direction."""
    if config.flip_rules == "stgan" or synthetic_root(cache) is None:
        return "stgan", CONFLICTS
    from data.synthetic import CLEARED_WHEN_SET

    return "generator", CLEARED_WHEN_SET


def strength_split(config: EvalConfig) -> str:
    """Where the per-attribute strengths are chosen: the valid split, or train when valid is the one scored."""
    return "train" if config.split == "valid" else "valid"


def chosen_strengths(model: ConvVAE, cache: FaceCache, judge: torch.nn.Module, directions: dict[str, Any],
                     attributes: dict[str, Sequence[str]], config: EvalConfig, device: torch.device,
                     latents: Latents | None = None) -> tuple[dict[str, dict[str, float]], pd.DataFrame]:
    """({method: {attribute: strength}}, the validation scores they were chosen from) for each kind's
    `attributes[method]`, on `config.strength_faces` faces of another split than the scored one
    (`evaluation.strength`: among `config.strength_candidates`, the best-preserving one whose success reaches
    `config.target_success`, else the best success x preservation). The faces are read, encoded, reconstructed and
    judged once for every kind."""
    judge_names = list(judge.attribute_names)
    rows = eval_rows(cache, strength_split(config), config.strength_faces, config.seed)
    images_u8 = torch.from_numpy(np.ascontiguousarray(cache.images[rows]))  # (n, 3, S, S) uint8
    mu = faces_mu(model, images_u8, rows, latents, config.batch_size, device)  # (n, D)
    labels = cache.table[judge_names].to_numpy(dtype=bool)[rows]  # (n, Kj)
    recon_verdicts, _ = decode_and_judge(model, judge, mu, config.batch_size, device, amp=config.amp)  # (n, Kj)

    def decode(z: torch.Tensor) -> torch.Tensor:
        return decode_images(model, z, device, config.amp)

    kinds = tqdm(directions.items(), desc=f"choose strengths ({strength_split(config)})", unit="kind",
                 disable=not config.progress, leave=False)
    implied = flip_rules(cache, config)[1]
    tables = [strength_scores(dirs, mu, labels, decode, judge, config.strength_candidates,
                              attributes=attributes[method], implied=implied, mode=config.mode,
                              batch_size=config.batch_size, recon_verdicts=recon_verdicts).assign(method=method)
              for method, dirs in kinds]
    scores = pd.concat(tables, ignore_index=True)
    chosen = {method: pick_strengths(part, config.target_success) for method, part in scores.groupby("method", sort=False)}
    return chosen, scores


def _choose(model: ConvVAE, cache: FaceCache, judge: torch.nn.Module, directions: dict[str, AttributeDirections],
            variants: dict[str, HairSubspaceDirections], attributes: Sequence[str], config: EvalConfig,
            device: torch.device, latents: Latents | None) -> tuple[dict[str, dict[str, float]], dict[str, str]]:
    """Strengths chosen per kind and attribute, and per attribute the kind that wins at its chosen strength, all on
    the validation faces; a hair-subspace kind is its base off the hair colours (scored once, as the base)."""
    if not config.choose_strength:
        return {}, {}
    if len(cache.split_indices(strength_split(config))) == 0:
        warnings.warn(f"{cache.directory}: the {strength_split(config)} split is empty, so no per-attribute strength "
                      "is chosen (only the fixed strengths are scored)", stacklevel=3)
        return {}, {}
    hair = [a for a in attributes if a in HAIR_COLOURS]
    variants = variants if hair else {}
    scored = {**{m: [a for a in attributes if a in d.names] for m, d in directions.items()},
              **{m: hair for m in variants}}
    chosen, scores = chosen_strengths(model, cache, judge, {**directions, **variants}, scored, config, device, latents)
    for method, variant in variants.items():
        base = variant.base.method
        chosen[method] = chosen[base] | chosen[method]
        off_hair = scores[(scores["method"] == base) & ~scores["attribute"].isin(HAIR_COLOURS)]
        scores = pd.concat([scores, off_hair.assign(method=method)], ignore_index=True)
    return chosen, pick_kinds(scores, chosen, config.target_success)


def counterfactual_changes(attribute: str, target: np.ndarray, intended: np.ndarray, judge_names: Sequence[str],
                           rendered: set[str]) -> list[dict[str, bool]]:
    """Per face, what to change in its factors: the edited attribute first, then what the conflict rules clear."""
    ja = list(judge_names).index(attribute)
    return [{attribute: bool(target[i, ja])}
            | {judge_names[k]: bool(target[i, k]) for k in np.flatnonzero(intended[i]) if judge_names[k] in rendered}
            for i in range(len(target))]


def _edit_records(method: str, dirs: AttributeDirections, attribute: str, faces: ScoredFaces, target: np.ndarray,
                  keep: np.ndarray, judge_names: list[str], model, judge, config: EvalConfig, device, counterfactual,
                  chosen: float | None = None) -> list[dict]:
    """Score one attribute flipped along one direction kind, at every strength -> one record per (strength, subset).

    target (n, Kj): the labels the edit asks for; keep (n, Kj): the labels preservation counts (neither set on
    purpose nor implied by the flip).

    Every strength goes into one stream of latents, decoded and judged in large batches: the default strength on
    every face, the others (the curve) on a prefix, so the curve has the same faces at every strength; the strength
    `chosen` for this attribute on another split, when given, on every face (subset "chosen").
    """
    n, n_curve = len(faces.rows), min(len(faces.rows), config.curve_faces or len(faces.rows))
    ja = judge_names.index(attribute)
    cols = [judge_names.index(name) for name in dirs.names]  # directions' names are cache attributes
    source, goal = torch.from_numpy(faces.truth[:, cols]), torch.from_numpy(target[:, cols])  # (n, Kd)
    plan = [(s, n if s == config.default_strength else n_curve, None) for s in config.strengths]  # (strength, faces, subset)
    if chosen is not None and chosen != config.default_strength:  # else the default strength's rows are the same edits
        plan.append((chosen, n, "chosen"))
    z = torch.cat([dirs.edit_by_labels(faces.mu[:m], source[:m], goal[:m], strength=strength, mode=config.mode)
                   for strength, m, _ in plan])  # (sum of faces, D)
    cf, recon_cf_psnr = counterfactual if counterfactual is not None else (None, None)
    cf_rows = torch.cat([torch.arange(m) for _, m, _ in plan]) if cf is not None else None
    verdicts, cf_psnr = decode_and_judge(model, judge, z, config.batch_size, device, cf, cf_rows, config.amp)
    records, start = [], 0
    for strength, m, label in plan:
        verdict, edit_psnr = verdicts[start : start + m], cf_psnr[start : start + m]  # (m, Kj), (m,)
        start += m
        if label is not None:
            subsets = [(m, label)]
        else:
            subsets = [(m, "all" if m == n else "curve")] + ([(n_curve, "curve")] if m == n and n_curve < n else [])
        for size, subset in subsets:
            success = float((verdict[:size, ja] == target[:size, ja]).mean())
            same = (verdict[:size] == faces.verdict_recon[:size]) & keep[:size]
            m_cf = min(size, len(cf)) if cf is not None else 0
            records.append({
                "method": method, "attribute": attribute, "strength": strength, "success": success,
                "preservation": float(same.sum() / max(keep[:size].sum(), 1)),
                "psnr_edit_vs_cf": float(edit_psnr[:m_cf].mean()) if m_cf else float("nan"),
                "psnr_recon_vs_cf": float(recon_cf_psnr[:m_cf].mean()) if m_cf else float("nan"),
                # share of faces whose edit is closer to the true counterfactual than the plain reconstruction
                "closer_to_cf": float((edit_psnr[:m_cf] > recon_cf_psnr[:m_cf]).float().mean()) if m_cf else float("nan"),
                "n": size, "n_cf": m_cf, "subset": subset, "success_ci95": binomial_halfwidth(success, size),
                "source_positive_rate": float(faces.truth[:size, ja].mean()),
            })
    if chosen is not None and chosen == config.default_strength:
        records += [r | {"subset": "chosen"} for r in records if r["strength"] == chosen and r["subset"] == "all"]
    return records


def evaluate_edits(
    model: ConvVAE,
    cache: FaceCache,
    directions: dict[str, AttributeDirections],
    judge: torch.nn.Module,
    config: EvalConfig,
    device: torch.device,
    latents: Latents | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The long table (method, attribute, strength, success, preservation, psnr_edit_vs_cf, psnr_recon_vs_cf,
    closer_to_cf, n, subset, ...) and a summary dict (fidelity, judge accuracy on the evaluated originals, sizes,
    the per-attribute strengths chosen on another split).

    `latents`: the whole cache already encoded by `model` (a run's latents.pt); the faces' mu are taken from it
    instead of being encoded again. With `config.amp` the decoder and the judge run under `bf16_autocast` (latents
    and edits stay fp32); summary "precision" says which ran, and for bf16 "bf16_agreement" how far the bf16
    reconstructions and verdicts of the scored faces are from fp32 ones.
    """
    fp32_judge, judge = judge, AutocastJudge(judge, device, config.amp)
    judge_names = list(judge.attribute_names)
    attributes = attributes_to_score(judge_names, directions, config)
    faces = scored_faces(model, cache, judge, config, device, latents)
    variants = hair_subspace_kinds(directions, latents) if config.hair_subspace else {}
    chosen, picked = _choose(model, cache, judge, directions, variants, attributes, config, device, latents)
    directions = {**directions, **variants}
    n = len(faces.rows)
    root = synthetic_root(cache)
    n_cf = min(n, config.counterfactual_faces or n) if root is not None and config.counterfactual_faces != 0 else 0
    if n_cf:
        from data.synthetic import SYNTHETIC_ATTRIBUTES, load_factors

        factors, image_ids = load_factors(root), [str(i) for i in cache.table.index[faces.rows[:n_cf]]]

    rules, implied_rules = flip_rules(cache, config)
    records, by_kind = [], {}
    jobs = [(a, m) for a in attributes for m, d in directions.items() if a in d.names]
    bar = tqdm(jobs, desc="evaluate edits", unit="edit", disable=not config.progress)
    for attribute in attributes:
        target = flip_changes(attribute, faces.truth, judge_names)  # (n, Kj) what the edit asks for: STGAN's
        implied = flip_changes(attribute, faces.truth, judge_names, implied_rules)  # (n, Kj) what the flip changes
        counterfactual = None
        if n_cf:
            changes = counterfactual_changes(attribute, implied[:n_cf], (implied != faces.truth)[:n_cf], judge_names,
                                             set(SYNTHETIC_ATTRIBUTES))
            cf = render_counterfactuals(factors, image_ids, changes, cache.size, cache.meta.get("crop"),
                                        config.progress)  # (n_cf, 3, S, S)
            counterfactual = (cf, psnr(faces.recon[:n_cf], cf))
        for method, dirs in directions.items():
            if attribute not in dirs.names:
                continue
            if method in variants and attribute not in HAIR_COLOURS:  # the very edits of its base kind
                rows = [r | {"method": method} for r in by_kind[variants[method].base.method]]
            else:
                rows = _edit_records(method, dirs, attribute, faces, target, implied == faces.truth, judge_names,
                                     model, judge, config, device, counterfactual,
                                     chosen.get(method, {}).get(attribute))
            by_kind[method] = rows
            records += rows
            bar.update(1)
        if attribute in picked and len(directions) > 1:  # the kind picked on validation, at its chosen strength
            records += [r | {"method": PICKED, "picked_from": picked[attribute]}
                        for r in by_kind[picked[attribute]] if r["subset"] == "chosen"]
    bar.close()
    summary = _summary(faces, cache, judge_names, attributes, directions, config, n_cf, root)
    summary["flip_rules"] = rules
    summary["precision"] = "bf16" if config.amp and native_bf16(device) else "fp32"
    if summary["precision"] == "bf16":  # what bf16 changes, measured on these faces: fp32 decoder and judge beside it
        recon_fp32 = decode_batched(model, faces.mu, config.batch_size, device)  # (n, 3, S, S)
        verdict_fp32 = fp32_judge.predict(recon_fp32, config.judge.eval_batch_size).cpu().numpy()  # (n, Kj)
        summary["bf16_agreement"] = {"verdicts": float((verdict_fp32 == faces.verdict_recon).mean()),
                                     "reconstruction_psnr_db": float(psnr(faces.recon, recon_fp32).mean())}
    if chosen:
        summary.update(chosen_strengths=chosen, picked_kinds=picked, strength_split=strength_split(config),
                       strength_faces=min(config.strength_faces, len(cache.split_indices(strength_split(config)))))
    return pd.DataFrame.from_records(records), summary


def _summary(faces: ScoredFaces, cache: FaceCache, judge_names: list[str], attributes: list[str],
             directions: dict[str, AttributeDirections], config: EvalConfig, n_cf: int, root: Path | None) -> dict:
    """Sizes, fidelity (reconstruction PSNR/SSIM) and the judge's accuracy on the scored inputs and reconstructions."""
    n = len(faces.rows)
    recon_psnr = psnr(faces.recon, faces.images)
    recon_ssim = ssim(faces.recon, faces.images) if cache.size >= 11 else None

    def accuracy(verdicts: np.ndarray) -> dict[str, float]:
        return {name: float((verdicts[:, k] == faces.truth[:, k]).mean()) for k, name in enumerate(judge_names)}

    return {
        "n_images": n,
        "curve_images": min(n, config.curve_faces or n),
        "counterfactual_images": n_cf,
        "split": config.split,
        "attributes": attributes,
        "methods": list(directions),
        "fidelity": {
            "psnr": float(recon_psnr.mean()),
            "psnr_std": float(recon_psnr.std()) if n > 1 else 0.0,
            "ssim": float(recon_ssim.mean()) if recon_ssim is not None else None,
        },
        "judge_accuracy_on_inputs": accuracy(faces.verdict_input),
        "judge_accuracy_on_reconstructions": accuracy(faces.verdict_recon),
        "synthetic_root": str(root) if root is not None else None,
    }


def evaluate_run(run: Run, config: EvalConfig, device: torch.device) -> tuple[pd.DataFrame, dict[str, Any], dict[str, Any]]:
    """Score every (or the configured) direction kind of a run -> (table, summary, judge report).

    The judge is trained on the run's cache (or reused from `<cache>/judge.pt` when its fingerprint matches); the
    faces' latents come from the run's latents.pt.
    """
    start = time.perf_counter()
    methods = list(config.methods) if config.methods else run.direction_methods()
    if not methods:
        raise FileNotFoundError(f"{run.dir}: no directions-*.pt; fit them with "
                                f"`python -m experiments.fit_directions --run {run.dir}`")
    directions = run.all_directions(methods)
    if config.attributes is not None:  # fail before the judge is trained
        covered = {n for d in directions.values() for n in d.names}
        unknown = [a for a in config.attributes if a not in covered or a not in run.cache.attribute_names]
        if unknown:
            raise ValueError(f"attributes {unknown} have no direction in {run.dir} (covered: {sorted(covered)})")
    judge, judge_report = train_judge(run.cache, config.judge, device, force=config.force_judge, progress=config.progress)
    if config.progress:
        print(f"judge {'loaded from' if judge_report.get('reused') else 'trained, saved to'} {judge_report['path']}: "
              f"mean test accuracy {100 * judge_report['mean_accuracy']:.1f} % "
              f"(balanced {100 * judge_report['mean_balanced_accuracy']:.1f} %)")
    # channels_last: oneDNN's and cuDNN's fast convolution layout (both models are this call's own copies)
    model, judge = (m.to(memory_format=torch.channels_last) for m in (run.model(device), judge))
    table, summary = evaluate_edits(model, run.cache, directions, judge, config, device,
                                    latents=run.latents(device, progress=config.progress))
    summary.update(run_dir=str(run.dir), judge={k: v for k, v in judge_report.items() if k != "attributes"},
                   seconds=time.perf_counter() - start)
    return table, summary, judge_report
