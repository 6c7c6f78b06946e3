"""Score attribute edits the way STGAN and AttGAN do, with two judges, and against the truth where there is one.

For each scored face and attribute, the attribute is flipped with STGAN's difference vector (`evaluation.protocol`),
the latent is moved by every direction kind, decoded, optionally composited (`attributes.composite`: only the masked
decoded change, onto the reconstruction or onto the input), and scored (`evaluation.scoring`):
  success, preservation    by the judge that chooses (and, for the pick, by a second judge of another architecture
                           that takes no part in any choice);
  ground truth             on procedural faces: PSNR against the true counterfactual, the share of faces whose edit
                           is closer to it than its base, the share of the edit's change inside the true change region.
Strengths are chosen per (kind, composite, attribute) on the validation split, and per attribute the winning
(kind, composite) is the pseudo-kind "picked" (`evaluation.strength`); the test split only reports. The rule: where
the validation faces have ground truth, faithfulness comes first (`strength_rule` "faithful": an edit must bring most
faces closer to the truth, then the judge must read it); on real data the judge alone ("judge").
"""
from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from attributes.artifact import AttributeDirections
from attributes.composite import COMPOSITES, MaskConfig
from attributes.directions import label_pair_counts
from attributes.hair import HairSubspaceDirections, hair_subspace_kinds
from attributes.interaction import INTERACTION, InteractionDirections, interaction_kind
from attributes.transport import TRANSPORT, TransportDirections, transport_kind
from data.celeba import HAIR_COLOURS
from attributes.encode import Latents, encode_images
from data.cache import FaceCache, to_float_images
from evaluation.counterfactuals import CounterfactualRenderer, flipped_faces, synthetic_root
from evaluation.decoding import AutocastJudge, decode_batched
from evaluation.protocol import EDIT_ASKS, FLIP_RULES, STGAN_ATTRIBUTES, eval_rows, flip_changes, unseen_targets
from evaluation.scoring import HELDOUT, JUDGE, TRUTH, Edit, Faces, Step, score_edit, score_truth
from evaluation.strength import DEFAULT_CANDIDATES, STRENGTH_RULES, capped_at_truth, pick_edits, pick_strengths
from models.accel import native_bf16
from models.classifier import JudgeConfig, train_judge
from models.metrics import psnr, ssim
from models.vae import ConvVAE
from pipeline.run import Run

# built from the fitted kinds and the run's latents when scored
DERIVED_KINDS = ("hair_subspace", INTERACTION, TRANSPORT)
MODEL_KINDS = (INTERACTION, TRANSPORT)  # the derived kinds that are label models of the latents (offset mode only)
PICKED = "picked"  # the table's pseudo-kind: per attribute, the kind, composite and strength that won on validation


@dataclass
class EvalConfig:
    """What to evaluate, on how many faces, how strengths are chosen, and the two judges."""

    eval_faces: int = field(default=2500, metadata={"help": "faces scored (all of the split when smaller)"})
    counterfactual_faces: int | None = field(default=500, metadata={
        "help": "scored faces with a true counterfactual (procedural)"})
    default_strength: float = field(default=2.0, metadata={"help": "where nothing is chosen"})
    choose_strength: bool = field(default=True, metadata={"help": "choose strength, kind, composite on valid"})
    strength_candidates: tuple[float, ...] = field(default=DEFAULT_CANDIDATES, metadata={
        "help": "what the choice is made among"})
    strength_faces: int = field(default=500, metadata={"help": "valid faces the choice is made on"})
    strength_rule: str = field(default="auto", metadata={"choices": ("auto", *STRENGTH_RULES), "help": (
        "auto: faithful where there is ground truth")})
    target_success: float = field(default=0.9, metadata={"help": "validation success a choice must reach"})
    truth_target: bool = field(default=True, metadata={"help": "faithful rule: target at most the truth's success"})
    composites: tuple[str, ...] = field(default=COMPOSITES, metadata={
        "help": "decoded edit / masked change on recon / on input"})
    mask_threshold: float = field(default=MaskConfig.threshold, metadata={"help": "composite mask threshold"})
    derived_kinds: tuple[str, ...] = field(default=DERIVED_KINDS, metadata={
        "help": "kinds built on the fitted ones"})
    methods: tuple[str, ...] | None = field(default=None, metadata={"help": "direction kinds; None = all the run has"})
    attributes: tuple[str, ...] | None = field(default=None, metadata={"help": "None = all the directions cover"})
    mode: str = field(default="offset", metadata={"choices": ("offset", "target")})
    # what an edit asks to clear with the attribute it sets: its mutually exclusive alternatives (the other hair
    # colours, straight vs wavy), or STGAN's conflict rules (also No_Beard for a mustache, Bangs for bald)
    edit_clears: str = field(default="exclusive", metadata={"choices": tuple(EDIT_ASKS)})
    # what a flip also changes, left out of preservation: the generator's rules on procedural faces (a bald head
    # has no hair colour), else STGAN's ("auto"); or STGAN's everywhere ("stgan")
    flip_rules: str = field(default="auto", metadata={"choices": ("auto", "stgan")})
    split: str = field(default="test", metadata={"choices": ("train", "valid", "test")})
    batch_size: int = field(default=256, metadata={"cli": False})
    amp: bool = field(default=True, metadata={"help": "bf16 decoder and judges where native"})
    seed: int = 0
    # procedural faces: the judges also learn from true counterfactuals, so they read the attribute itself (a
    # mustache on a woman) and not what goes with it in the data; real faces have none (0 applies)
    judge_counterfactuals: float = field(default=1.0, metadata={
        "help": "share of the judges' training faces flipped (procedural)"})
    judge: JudgeConfig = field(default_factory=JudgeConfig, metadata={"flatten": "judge-"})
    # a judge of another architecture that scores the pick and takes no part in any choice
    second_judge: JudgeConfig | None = field(default_factory=lambda: JudgeConfig(arch="residual"),
                                             metadata={"flatten": "judge2-"})
    force_judge: bool = field(default=False, metadata={"help": "retrain matching judges"})
    progress: bool = field(default=True, metadata={"cli": False})

    def __post_init__(self) -> None:
        if isinstance(self.judge, dict):  # from JSON
            self.judge = JudgeConfig(**self.judge)
        if isinstance(self.second_judge, dict):
            self.second_judge = JudgeConfig(**self.second_judge)
        self.default_strength = float(self.default_strength)
        self.strength_candidates = tuple(float(s) for s in self.strength_candidates)
        self.composites = tuple(self.composites)
        self.derived_kinds = tuple(self.derived_kinds)
        if unknown_kinds := [k for k in self.derived_kinds if k not in DERIVED_KINDS]:
            raise ValueError(f"EvalConfig.derived_kinds: unknown {unknown_kinds}; expected some of {DERIVED_KINDS}")
        if self.methods is not None:
            self.methods = tuple(self.methods)
        if self.attributes is not None:
            self.attributes = tuple(self.attributes)
        if self.eval_faces < 1:
            raise ValueError(f"EvalConfig.eval_faces must be >= 1, got {self.eval_faces}")
        if self.flip_rules not in ("auto", "stgan"):
            raise ValueError(f"EvalConfig.flip_rules={self.flip_rules!r}; expected 'auto' or 'stgan'")
        if self.edit_clears not in EDIT_ASKS:
            raise ValueError(f"EvalConfig.edit_clears={self.edit_clears!r}; expected one of {tuple(EDIT_ASKS)}")
        if self.strength_rule not in ("auto", *STRENGTH_RULES):
            raise ValueError(f"EvalConfig.strength_rule={self.strength_rule!r}; expected 'auto' or one of {STRENGTH_RULES}")
        unknown = [c for c in self.composites if c not in COMPOSITES]
        if unknown or not self.composites:
            raise ValueError(f"EvalConfig.composites={self.composites}; expected some of {COMPOSITES}")
        MaskConfig(threshold=self.mask_threshold)  # refuses a bad threshold now, not after the judges are trained
        JudgeConfig(counterfactual_share=self.judge_counterfactuals)  # the same for the share
        for what, judge in (("judge", self.judge), ("second_judge", self.second_judge)):
            if judge is not None and judge.counterfactual_share:
                raise ValueError(f"EvalConfig.{what}.counterfactual_share={judge.counterfactual_share}: the "
                                 "evaluation sets it for both judges; set EvalConfig.judge_counterfactuals instead")

    @property
    def mask(self) -> MaskConfig:
        return MaskConfig(threshold=self.mask_threshold)


def flip_rules(cache: FaceCache, which: str = "auto") -> tuple[str, Mapping[str, Sequence[str]]]:
    """(name, {attribute: what setting it clears}): what a flip changes in the data, so that preservation does not
    count it and the true counterfactual is rendered with it. The procedural generator's consistency rules
    (`data.synthetic.CLEARED_WHEN_SET`, a superset of STGAN's) on its faces, else STGAN's. What the edit itself asks
    for is `EvalConfig.edit_clears`: moving along "no hair colour" as well as "bald" would add a red-haired
    direction, and along "not No_Beard" as well as "mustache" a beard; only the transport kind, a joint model of the
    labels, asks for these rules' target itself (`attributes.transport`)."""
    name = "stgan" if which == "stgan" or synthetic_root(cache) is None else "generator"
    return name, FLIP_RULES[name]


def strength_split(config: EvalConfig) -> str:
    """Where the per-attribute strengths are chosen: the valid split, or train when valid is the one scored."""
    return "train" if config.split == "valid" else "valid"


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


@dataclass
class Setting:
    """What one evaluation works with: the model, the judges (JUDGE, HELDOUT), the kinds and the attributes."""

    model: ConvVAE
    cache: FaceCache
    judges: dict[str, AutocastJudge]
    directions: dict[str, Any]  # method -> AttributeDirections, HairSubspaceDirections or a MODEL_KINDS model
    variants: dict[str, HairSubspaceDirections]  # the hair-subspace kinds among them
    attributes: list[str]
    config: EvalConfig
    device: torch.device
    latents: Latents | None
    root: Any  # the procedural dataset's root, None for real data

    @property
    def judge_names(self) -> list[str]:
        return list(self.judges[JUDGE].attribute_names)

    def faces(self, split: str, n: int, heldout: bool) -> Faces:
        """A seeded subset of `split`: latents (from the run's latents when given), reconstructions, verdicts."""
        config = self.config
        rows = eval_rows(self.cache, split, n, config.seed)
        images_u8 = torch.from_numpy(np.ascontiguousarray(self.cache.images[rows]))  # (n, 3, S, S) uint8
        images = to_float_images(images_u8)
        if self.latents is not None:
            mu = self.latents.mu[torch.from_numpy(rows)].float()
        else:
            mu = encode_images(self.model, images_u8, batch_size=config.batch_size, device=self.device,
                               progress=False)[0]  # (n, D)
        recon = decode_batched(self.model, mu, config.batch_size, self.device, config.amp)  # (n, 3, S, S)
        judges = (JUDGE, HELDOUT) if heldout and HELDOUT in self.judges else (JUDGE,)
        verdicts = {j: {name: self.judges[j].predict(x, config.batch_size).cpu().numpy()
                        for name, x in (("input", images), ("recon", recon))} for j in judges}
        truth = self.cache.table[self.judge_names].to_numpy(dtype=bool)[rows]
        return Faces(rows=rows, truth=truth, mu=mu, images=images, recon=recon, verdicts=verdicts)

    def renderer(self, faces: Faces, n_cf: int) -> CounterfactualRenderer | None:
        if self.root is None or n_cf == 0:
            return None
        return CounterfactualRenderer(self.root, self.cache, faces.rows[:n_cf], self.config.progress)

    def score_attributes(self, faces: Faces, renderer: CounterfactualRenderer | None, steps_of, desc: str) -> list[dict]:
        """Records of every (attribute, kind) with `steps_of(attribute, method)` steps (empty: not scored); a
        hair-subspace kind off the hair colours reuses its base kind's records (the very same edits, in context
        too: `attributes.context` moves a face into its context with the base kind)."""
        config, names = self.config, self.judge_names
        implied_rules = flip_rules(self.cache, config.flip_rules)[1]
        jobs = [(a, m) for a in self.attributes for m, d in self.directions.items() if a in d.names]
        implied = {a: flip_changes(a, faces.truth, names, implied_rules) for a in self.attributes}  # (n, Kj) each
        train = self.cache.split_indices("train")
        train_labels = self.cache.table[names].to_numpy(dtype=bool)[train] if len(train) else None  # (N, Kj)
        pairs = label_pair_counts(torch.from_numpy(train_labels)) if train_labels is not None else None
        if renderer is not None:  # every attribute's counterfactuals drawn at once, in worker processes
            n_cf = len(renderer.image_ids)
            renderer.prefetch({a: renderer.changes(a, implied[a][:n_cf], faces.truth[:n_cf], names)
                               for a in self.attributes})
        bar = tqdm(total=len(jobs), desc=desc, unit="edit", disable=not config.progress, leave=False)
        records = []
        for attribute in self.attributes:
            target = flip_changes(attribute, faces.truth, names, EDIT_ASKS[config.edit_clears])  # (n, Kj) asked for
            # the counterfactual's labels (what the flip changes by the data's rules), not the edit's ask: a bald
            # face in the data has no hair colour
            unseen = (None if train_labels is None
                      else unseen_targets(train_labels, implied[attribute], names.index(attribute)))  # (n,)
            truth = renderer.ground_truth(attribute, implied[attribute][:n_cf], faces.truth[:n_cf], names,
                                          faces.bases()) if renderer is not None else None
            if truth is not None:  # the truth itself, as the judges read it
                records.append(score_truth(Edit(TRUTH, None, attribute, target, implied[attribute] == faces.truth, (),
                                                unseen), faces, self.judges, truth))
            by_kind: dict[str, list[dict]] = {}
            for method, dirs in self.directions.items():
                if attribute not in dirs.names:
                    continue
                bar.update(1)
                steps = steps_of(attribute, method)
                if not steps:
                    continue
                if method in self.variants and attribute not in HAIR_COLOURS:
                    base = self.variants[method].base.method
                    if base in by_kind:
                        by_kind[method] = [r | {"method": method} for r in by_kind[base]]
                        records += by_kind[method]
                        continue
                edit = Edit(method, dirs, attribute, target, implied[attribute] == faces.truth, steps, unseen, pairs)
                by_kind[method] = score_edit(edit, faces, self.model, self.judges, truth, self.device, mode=config.mode,
                                             batch_size=config.batch_size, amp=config.amp, mask=config.mask)
                records += by_kind[method]
        bar.close()
        return records


def choose(setting: Setting) -> tuple[dict, dict, float | dict[str, float], str, pd.DataFrame]:
    """On the validation faces: ({method: {composite: {attribute: strength}}}, {attribute: {method, composite,
    strength}} the pick, the success asked (`success_targets`), the rule, the candidates' and the truth's scores)."""
    config = setting.config
    split = strength_split(config)
    faces = setting.faces(split, config.strength_faces, heldout=False)
    renderer = setting.renderer(faces, len(faces))
    steps = [Step(s, "candidate", config.composites) for s in config.strength_candidates]
    scores = pd.DataFrame.from_records(setting.score_attributes(faces, renderer, lambda a, m: steps,
                                                                f"choose strengths ({split})"))
    rule = strength_rule(config, renderer is not None)
    candidates = scores[scores["subset"] != TRUTH]
    target = success_targets(scores, config, rule)
    chosen = pick_strengths(candidates, target, rule)
    return chosen, pick_edits(candidates, chosen, target, rule), target, rule, scores


def success_targets(scores: pd.DataFrame, config: EvalConfig, rule: str) -> float | dict[str, float]:
    """The success the choice asks of an edit: `config.target_success`, or, under the faithful rule with
    `config.truth_target`, per attribute no more than the judge reads on the true counterfactuals of the same
    faces (scores' TRUTH rows): an edit the judge reads more often than the truth is exaggerating."""
    truth = scores[scores["subset"] == TRUTH]
    if rule != "faithful" or not config.truth_target or truth.empty:
        return config.target_success
    return capped_at_truth(config.target_success, truth)


def strength_rule(config: EvalConfig, ground_truth: bool) -> str:
    """The rule in force: "faithful" needs ground truth on the choosing faces, "judge" does not."""
    if config.strength_rule == "auto":
        return "faithful" if ground_truth else "judge"
    if config.strength_rule == "faithful" and not ground_truth:
        raise ValueError("strength_rule='faithful' needs ground truth on the validation faces (procedural data)")
    return config.strength_rule


def _test_steps(config: EvalConfig, chosen: dict, picked: dict):
    """steps_of(attribute, method) on the test faces: each composite at its chosen strength on every face
    (composites sharing a strength share one decode); the held-out judge scores the pick."""

    def steps_of(attribute: str, method: str) -> list[Step]:
        at: dict[float, list[str]] = {}
        for composite in config.composites:
            s = chosen.get(method, {}).get(composite, {}).get(attribute, config.default_strength)
            at.setdefault(s, []).append(composite)
        pick = picked.get(attribute, {})
        return [Step(s, "chosen", tuple(composites),
                     tuple(c for c in composites if pick.get("method") == method and pick.get("composite") == c))
                for s, composites in at.items()]

    return steps_of


def model_kinds(directions: dict[str, AttributeDirections], latents: Latents | None, cache: FaceCache,
                config: EvalConfig) -> dict[str, InteractionDirections | TransportDirections]:
    """The label-model kinds of `config.derived_kinds` (MODEL_KINDS), fitted on the run's training latents: the
    interaction kind, and the transport kind on it (its edits ask for what the flip implies, `flip_rules`)."""
    wanted = [k for k in MODEL_KINDS if k in config.derived_kinds]
    if wanted and config.mode != "offset":
        warnings.warn(f"the {' and '.join(wanted)} kinds edit in offset mode only: not scored in {config.mode} mode",
                      stacklevel=2)
        return {}
    built: dict[str, Any] = interaction_kind(directions, latents) if wanted else {}
    if TRANSPORT in wanted and built:
        name, rules = flip_rules(cache, config.flip_rules)
        built.update(transport_kind(built[INTERACTION], latents, rules, name))
    return {k: v for k, v in built.items() if k in wanted}


def evaluate_edits(
    model: ConvVAE,
    cache: FaceCache,
    directions: dict[str, AttributeDirections],
    judge: torch.nn.Module,
    config: EvalConfig,
    device: torch.device,
    latents: Latents | None = None,
    heldout_judge: torch.nn.Module | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The long table (method, composite, attribute, strength, subset, success, preservation, success_heldout,
    preservation_heldout, psnr_edit_vs_cf, psnr_base_vs_cf, closer_to_cf, inside_change, n, ..., split) and a
    summary (fidelity, judge accuracy on the evaluated faces, sizes, the choice made on the validation split). Rows
    of subset "chosen" are the scored split's (every kind and composite at its chosen strength, and the pick);
    rows of subset "candidate" are the validation faces' scores at every candidate strength, the choice's input;
    rows of method and subset TRUTH ("truth"), on both splits, are the judges' verdicts on the true counterfactuals.

    `latents`: the whole cache already encoded by `model` (a run's latents.pt); the faces' mu are taken from it
    instead of being encoded again. `heldout_judge`: the second judge, which scores the pick. With `config.amp`
    the decoder and the judges run under `bf16_autocast` (latents and edits stay fp32); summary "precision" says
    which ran, and for bf16 "bf16_agreement" how far the bf16 reconstructions and verdicts are from fp32 ones.
    """
    judges = {JUDGE: AutocastJudge(judge, device, config.amp)}
    if heldout_judge is not None:
        judges[HELDOUT] = AutocastJudge(heldout_judge, device, config.amp)
    variants = hair_subspace_kinds(directions, latents) if "hair_subspace" in config.derived_kinds else {}
    models = model_kinds(directions, latents, cache, config)
    setting = Setting(model, cache, judges, {**directions, **variants, **models}, variants,
                      attributes_to_score(list(judge.attribute_names), directions, config), config, device, latents,
                      synthetic_root(cache))
    chosen, picked, targets, rule, candidates = {}, {}, None, None, pd.DataFrame()
    if config.choose_strength and len(cache.split_indices(strength_split(config))):
        chosen, picked, targets, rule, candidates = choose(setting)
    elif config.choose_strength:
        warnings.warn(f"{cache.directory}: the {strength_split(config)} split is empty, so nothing is chosen: every "
                      f"kind is scored at strength {config.default_strength:g}", stacklevel=2)
    faces = setting.faces(config.split, config.eval_faces, heldout=True)
    n_cf = min(len(faces), config.counterfactual_faces or len(faces)) if config.counterfactual_faces != 0 else 0
    records = setting.score_attributes(faces, setting.renderer(faces, n_cf), _test_steps(config, chosen, picked),
                                       "evaluate edits")
    if len(setting.directions) * len(config.composites) > 1:  # the pick, with the held-out judge's verdicts
        records += [r | {"method": PICKED, "picked_from": picked[r["attribute"]]["method"]} for r in records
                    if r["subset"] == "chosen" and picked.get(r["attribute"], {}).get("method") == r["method"]
                    and picked[r["attribute"]]["composite"] == r["composite"]]
    summary = _summary(faces, cache, setting, n_cf if setting.root is not None else 0)
    summary.update(flip_rules=flip_rules(cache, config.flip_rules)[0], strength_rule=rule,
                   precision="bf16" if config.amp and native_bf16(device) else "fp32")
    for kind, built in models.items():  # rebuilt from the run wherever it edits: `face_edit.edit_kind` checks it
        summary[kind] = built.info
    if summary["precision"] == "bf16":  # what bf16 changes, measured on these faces: fp32 decoder and judge beside it
        recon_fp32 = decode_batched(model, faces.mu, config.batch_size, device)  # (n, 3, S, S)
        verdict_fp32 = judge.predict(recon_fp32, config.batch_size).cpu().numpy()  # (n, Kj)
        summary["bf16_agreement"] = {"verdicts": float((verdict_fp32 == faces.verdicts[JUDGE]["recon"]).mean()),
                                     "reconstruction_psnr_db": float(psnr(faces.recon, recon_fp32).mean())}
    if chosen:
        summary.update(chosen_strengths=chosen, picked=picked, strength_split=strength_split(config),
                       success_targets=targets,
                       strength_faces=min(config.strength_faces, len(cache.split_indices(strength_split(config)))))
    # one long table: the test split's rows, then the validation candidates the choice was made from (the curve)
    table = pd.concat([pd.DataFrame.from_records(records).assign(split=config.split),
                       candidates.assign(split=strength_split(config))], ignore_index=True)
    return table, summary


def _summary(faces: Faces, cache: FaceCache, setting: Setting, n_cf: int) -> dict:
    """Sizes, fidelity (reconstruction PSNR/SSIM) and the judges' accuracy on the scored inputs and reconstructions."""
    n, config = len(faces), setting.config
    recon_psnr = psnr(faces.recon, faces.images)
    recon_ssim = ssim(faces.recon, faces.images) if cache.size >= 11 else None

    def accuracy(verdicts: np.ndarray) -> dict[str, float]:
        return {name: float((verdicts[:, k] == faces.truth[:, k]).mean()) for k, name in enumerate(setting.judge_names)}

    return {
        "n_images": n,
        "counterfactual_images": n_cf,
        "split": config.split,
        "attributes": setting.attributes,
        "methods": list(setting.directions),
        "composites": list(config.composites),
        "fidelity": {
            "psnr": float(recon_psnr.mean()),
            "psnr_std": float(recon_psnr.std()) if n > 1 else 0.0,
            "ssim": float(recon_ssim.mean()) if recon_ssim is not None else None,
        },
        "judge_accuracy_on_inputs": accuracy(faces.verdicts[JUDGE]["input"]),
        "judge_accuracy_on_reconstructions": accuracy(faces.verdicts[JUDGE]["recon"]),
        **({"heldout_judge_accuracy_on_reconstructions": accuracy(faces.verdicts[HELDOUT]["recon"])}
           if HELDOUT in faces.verdicts else {}),
        "synthetic_root": str(setting.root) if setting.root is not None else None,
    }


def evaluate_run(run: Run, config: EvalConfig, device: torch.device) -> tuple[pd.DataFrame, dict[str, Any], dict[str, Any]]:
    """Score every (or the configured) direction kind of a run -> (table, summary, judge report).

    The judges are trained on the run's cache (or reused from `<cache>/judge-*.pt` when the cache's fingerprint and
    the config match); the faces' latents come from the run's latents.pt. The judge report is the choosing judge's,
    with the second judge's under "heldout".
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
    drawn: dict[tuple[bytes, int], tuple[torch.Tensor, torch.Tensor]] = {}  # flipped faces both judges learn from
    judge, judge_report = _judge(run, config.judge, config, device, "judge", drawn)
    heldout, heldout_report = (_judge(run, config.second_judge, config, device, "second judge", drawn)
                               if config.second_judge is not None else (None, None))
    # channels_last: oneDNN's and cuDNN's fast convolution layout (the models are this call's own copies)
    model = run.model(device).to(memory_format=torch.channels_last)
    table, summary = evaluate_edits(model, run.cache, directions, judge, config, device,
                                    latents=run.latents(device, progress=config.progress), heldout_judge=heldout)
    summary.update(run_dir=str(run.dir), judge={k: v for k, v in judge_report.items() if k != "attributes"},
                   directions_sha256=run.evaluation_inputs(methods), seconds=time.perf_counter() - start)
    if heldout_report is not None:
        summary["heldout_judge"] = {k: v for k, v in heldout_report.items() if k != "attributes"}
        judge_report = dict(judge_report, heldout=heldout_report)
    return table, summary, judge_report


def _judge(run: Run, judge_config: JudgeConfig, config: EvalConfig, device: torch.device, what: str,
           drawn: dict[tuple[bytes, int], tuple[torch.Tensor, torch.Tensor]]):
    """A judge of `judge_config` on the run's cache (reused when it matches), in channels_last, and its report; on
    procedural faces, `config.judge_counterfactuals` of its training faces are shown with one attribute flipped
    (drawn once into `drawn` for judges that ask for the same faces and seed)."""
    root = synthetic_root(run.cache)
    share = config.judge_counterfactuals if root is not None else 0.0
    judge_config = dataclasses.replace(judge_config, counterfactual_share=share)

    def flipped(rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        key = (rows.tobytes(), judge_config.seed)
        if key not in drawn:
            drawn[key] = flipped_faces(root, run.cache, rows, judge_config.seed, config.progress)
        return drawn[key]

    judge, report = train_judge(run.cache, judge_config, device, counterfactuals=flipped if share else None,
                                force=config.force_judge, progress=config.progress)
    if config.progress:
        print(f"{what} ({judge_config.arch}) {'loaded from' if report.get('reused') else 'trained, saved to'} "
              f"{report['path']}: mean test accuracy {100 * report['mean_accuracy']:.1f} % "
              f"(balanced {100 * report['mean_balanced_accuracy']:.1f} %)")
    return judge.to(memory_format=torch.channels_last), report
