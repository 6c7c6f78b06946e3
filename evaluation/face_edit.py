"""Edit one face by attributes with a fitted run: the library behind `experiments.edit_faces` and the notebook.

It lives with the evaluation because it edits the way the evaluation scored: with its pick, its hair-colour
subspace kinds (`evaluation.edits`) and STGAN's conflict rules (`evaluation.protocol`).

    result = edit_face(run, {"Smiling": 1}, image="face.jpg", eyes=(212, 240, 301, 236))
    save_face_edit(run, result)   # <run>/edits/edit-face-1a2b3c4d-Smiling=1-probe-offset-x1.5.png + .csv

How each attribute is edited (`edit_plan`): method "picked" (the default when the run has an evaluation) takes, per
attribute, the kind, strength and composite the evaluation picked on the valid split (`Run.edit_picks`); a kind
(`KIND` or `KIND+hair_subspace`) edits every attribute with that kind at its chosen strength (1 without an
evaluation). Setting an attribute to 1 clears its mutually exclusive alternatives (a new hair colour clears the
others), as the evaluation's edits do. Attributes set at once are edited kind by kind, in the order first named: one kind's
attributes jointly (each at its own strength; `attributes.edit`'s joint solve keeps them from undoing each other),
then the next kind's from where that left the face. An attribute moved away from its target is warned about.

The edited picture is formed in one place, `final_picture`, from the input, its reconstruction D(mu) and the decoded
edit D(mu'), as the plan's composite says (`attributes.composite`: the decoded edit itself, or only its masked
change applied to the reconstruction or to the input, which keeps a photo's own background and hair; a "+context"
composite draws that change where the run's training labels show the target, `attributes.context`). Attributes
picked with different composites share the least local of them (none < recon < input), in context when any pick
is, so no attribute loses the change its pick relied on. A face unlike the run's training faces is warned about with the numbers
(`pipeline.domain`).
"""
from __future__ import annotations

import hashlib
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from attributes.artifact import METHODS, AttributeDirections, conflicts_cleared
from attributes.composite import COMPOSITES, CONTEXT, composite_base, composited_edit, in_context
from attributes.context import decode_in_context
from attributes.directions import label_pair_counts
from attributes.hair import HAIR_SUBSPACE, HairSubspaceDirections, hair_subspace_kinds
from attributes.interaction import INTERACTION, InteractionDirections, LabelModelKind, interaction_kind
from attributes.transport import TRANSPORT, TransportDirections, transport_kind
from attributes.edit import warn_wrong_way
from data.cache import to_float_images
from data.io import save_figure
from data.photo import load_face_photo
from evaluation.edits import PICKED, flip_rules
from evaluation.grids import image_grid_figure
from evaluation.protocol import EDIT_ASKS, eval_rows
from models.metrics import psnr
from pipeline.domain import DomainCheck, OutOfDomainWarning
from pipeline.run import Run, StaleArtifactError

KINDS = (*METHODS, *(m + HAIR_SUBSPACE for m in METHODS), INTERACTION, TRANSPORT)
EDIT_METHODS = (PICKED, *KINDS)  # what --method takes
# Without an evaluation's pick: the kind and the composite the demo's evaluation picks most often (README, Results)
FALLBACK_KINDS = ("regression", "probe")
FALLBACK_STRENGTH = 1.0  # without an evaluation's chosen strength
FALLBACK_COMPOSITE = "recon"
TRUE, FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}
Directions = AttributeDirections | HairSubspaceDirections | InteractionDirections | TransportDirections


def parse_changes(items: Sequence[str]) -> dict[str, int]:
    """("Smiling=1", "Eyeglasses=0") -> {"Smiling": 1, "Eyeglasses": 0}; anything else raises ValueError."""
    changes: dict[str, int] = {}
    for item in items:
        name, sep, value = (part.strip() for part in item.partition("="))
        if not sep or not name or value.lower() not in TRUE | FALSE:
            raise ValueError(f"--set {item!r}: expected NAME=0 or NAME=1, e.g. Smiling=1")
        if name in changes:
            raise ValueError(f"--set {name} given twice")
        changes[name] = int(value.lower() in TRUE)
    return changes


def boundaries_of(directions: Directions) -> AttributeDirections:
    """The directions whose boundaries judge an edit of this kind (a hair-subspace, interaction or transport kind's
    are its base's)."""
    return directions.base if isinstance(directions, (HairSubspaceDirections, LabelModelKind)) else directions


def edit_kind(run: Run, kind: str) -> Directions:
    """A direction kind of the run by name: directions-KIND.pt (refused when stale), for KIND+hair_subspace that
    kind with hair-colour changes made inside its colour subspace (`attributes.hair.hair_subspace_kinds`), for
    "interaction" the label-pair model fitted on the run's training latents (`attributes.interaction`), for
    "transport" that model with residuals carried between classes (`attributes.transport`)."""
    if kind not in KINDS:
        raise ValueError(f"unknown direction kind {kind!r}; expected one of {', '.join(KINDS)}")
    if kind in (INTERACTION, TRANSPORT):
        return _model_kind(run, kind)
    base_kind = kind.removesuffix(HAIR_SUBSPACE)
    base = run.directions(base_kind)
    if kind == base_kind:
        return base
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        variants = hair_subspace_kinds({base_kind: base}, run.latents())
    if kind not in variants:
        why = "; ".join(str(w.message) for w in caught) or f"{base_kind} lacks a hair colour"
        raise ValueError(f"{kind} is not available in {run.dir}: {why}")
    return variants[kind]


def _model_kind(run: Run, kind: str) -> InteractionDirections | TransportDirections:
    """The interaction or transport kind rebuilt from the run, refused when the evaluation scored another model
    (its strengths were chosen for that one). The transport kind asks for what a flip implies by the rules the
    evaluation used (else the cache's: the generator's on procedural faces, STGAN's on real ones)."""
    latents = run.latents()
    model = interaction_kind({"regression": run.directions("regression")}, latents)[INTERACTION]
    summary = run.evaluation_summary() or {}
    if kind == TRANSPORT:
        rules_name, rules = flip_rules(run.cache, summary.get("flip_rules", "auto"))
        model = transport_kind(model, latents, rules, rules_name)[TRANSPORT]
    scored = summary.get(kind)  # the model the evaluation chose strengths for
    if scored is None and kind in summary.get("methods", ()):
        raise StaleArtifactError(f"{run.path(Run.EVAL_JSON)} scored the {kind} kind without recording its "
                                 "settings (an evaluation older than this code); evaluate again with "
                                 f"`python -m experiments.evaluate --run {run.dir}`")
    # every setting either side records: one the evaluation lacks (made before the code recorded it) differs too
    if scored is not None and (differ := {k: scored.get(k) for k in scored.keys() | model.info.keys()
                                          if model.info.get(k) != scored.get(k)}):
        now = {k: model.info.get(k) for k in differ}
        raise StaleArtifactError(f"{run.path(Run.EVAL_JSON)} scored the {kind} kind with {differ}, rebuilt "
                                 f"from the run now with {now}: its strengths were chosen for another model; "
                                 f"evaluate again with `python -m experiments.evaluate --run {run.dir}`")
    return model


def fallback_kind(run: Run) -> str:
    """The kind edits use without an evaluation's pick: the first of FALLBACK_KINDS the run has, else its first."""
    methods = run.direction_methods()
    return next((k for k in FALLBACK_KINDS if k in methods), methods[0] if methods else FALLBACK_KINDS[0])


@dataclass(frozen=True)
class EditStep:
    """One joint edit: the attributes one direction kind sets together, each at its strength."""

    kind: str
    strengths: dict[str, float]  # attribute -> strength, in the order named

    def __str__(self) -> str:
        shown = dict.fromkeys(f"x{s:g}" for s in self.strengths.values())
        return f"{', '.join(self.strengths)}: {self.kind} {'/'.join(shown)}"


@dataclass
class EditPlan:
    """How a set of changes is edited: the method, the mode, the steps in order, where the kinds and strengths came
    from, and notes on choices made."""

    method: str
    mode: str
    steps: list[EditStep]
    kinds_from: str  # e.g. "the evaluation's pick"
    strengths_from: str  # e.g. "the evaluation's choice"
    notes: list[str] = field(default_factory=list)
    composite: str = FALLBACK_COMPOSITE  # how the decoded edit becomes the picture (attributes.composite)
    clears: str = "exclusive"  # what setting an attribute also clears (evaluation.protocol.EDIT_ASKS)

    def kind_of(self, attribute: str) -> str | None:
        return next((step.kind for step in self.steps if attribute in step.strengths), None)

    def describe(self) -> str:
        """One line: which kind and strength each attribute is edited with, in what mode and order, and why."""
        how = "; ".join(str(step) for step in self.steps)
        order = "; kind by kind in this order" if len(self.steps) > 1 else ""
        return (f"edited with {how} ({self.mode} mode; composite {self.composite}; kind: {self.kinds_from}; "
                f"strength: {self.strengths_from}{order})")


def edit_plan(run: Run, changes: Mapping[str, int], method: str | None = None, mode: str | None = None,
              strength: float | None = None, composite: str | None = None) -> EditPlan:
    """The steps that edit `changes`: see the module docstring. method None = "picked" when the run has an
    evaluation, else probe; mode None = the evaluation's (else offset); strength None = the evaluation's chosen one
    for each attribute and kind (in the evaluation's mode only), else 1; composite None = the least local of the
    changed attributes' picked composites (else none)."""
    if composite is not None and composite not in COMPOSITES:
        raise ValueError(f"unknown composite {composite!r}; expected one of {COMPOSITES}")
    if not changes:
        raise ValueError("nothing to edit: give the attribute values to set, e.g. --set Smiling=1")
    picked, fallback = run.edit_picks(), fallback_kind(run)
    kinds_from = ("the evaluation's pick" if picked else f"{fallback}, the run has no evaluation") \
        if method is None else ("the evaluation's pick" if method == PICKED else "asked for")
    method = method or (PICKED if picked else fallback)
    if method not in EDIT_METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(EDIT_METHODS)}")
    if method == PICKED and not picked:
        raise ValueError(f"{run.dir} has no evaluation to take the pick from ({Run.EVAL_JSON}): run `python -m "
                         f"experiments.evaluate --run {run.dir}`, or give a kind, e.g. --method {fallback}")
    picks = picked if method == PICKED else run.edit_picks(method)
    evaluated_mode = next((p.mode for p in picks.values()), None)
    mode = mode or evaluated_mode or "offset"
    notes, steps, chosen_any = [], {}, False
    for attribute in changes:
        pick = picks.get(attribute)
        kind = pick.kind if pick and method == PICKED else (fallback if method == PICKED else method)
        if method == PICKED and pick is None:
            notes.append(f"{attribute} has no pick in the evaluation: edited with {kind}")
        chosen = pick.strength if pick and pick.kind == kind and pick.mode == mode else None
        if strength is None and chosen is None and pick is not None:
            notes.append(f"the evaluation chose {attribute}'s strength for {pick.mode} edits: {mode} at "
                         f"x{FALLBACK_STRENGTH:g}")
        chosen_any |= strength is None and chosen is not None
        steps.setdefault(kind, {})[attribute] = strength if strength is not None else (chosen or FALLBACK_STRENGTH)
    strengths_from = "asked for" if strength is not None else (
        "the evaluation's choice" if chosen_any else f"x{FALLBACK_STRENGTH:g} without an evaluation's choice")
    if composite is None:  # the least local of the picks' (none < recon < input), so none loses what it relied on
        picked_composites = [picks[a].composite for a in changes if a in picks]
        composite = (min(map(composite_base, picked_composites), key=COMPOSITES.index) if picked_composites
                     else FALLBACK_COMPOSITE)
        if composite != "none" and any(map(in_context, picked_composites)):
            composite += CONTEXT
    evaluated = run.evaluation_summary(Run.EVAL_CONFIG)  # an evaluation from before `edit_clears` asked STGAN's
    clears = "exclusive" if evaluated is None else evaluated.get("edit_clears", "stgan")
    return EditPlan(method, mode, [EditStep(kind, strengths) for kind, strengths in steps.items()], kinds_from,
                    strengths_from, notes, composite, clears)


Distances = dict[str, tuple[torch.Tensor, torch.Tensor]]  # attribute -> signed distances (N,) before, after


def apply_steps(plan: EditPlan, kinds: Mapping[str, Directions], mu: torch.Tensor, changes: Mapping[str, int],
                source: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, Distances]:
    """Edit latents mu (N, D) by the plan's steps -> (edited (N, D), {attribute set: (distance before, after)}).

    `source` {attribute: (N,) 0/1}: the faces' labels; attributes it lacks are predicted by each step's kind. What a
    change clears by STGAN's rules is set in the same step, at that change's strength. Each attribute set is
    measured against the boundary of the kind that sets it; one moved away from its target is warned about
    (`attributes.edit.warn_wrong_way`).
    """
    labels = {n: torch.as_tensor(v).float().reshape(-1).cpu() for n, v in source.items()}
    z, asked = mu, {}  # attribute set -> (the boundaries it is judged by, its label before (N,), its target)
    for step in plan.steps:
        kind = kinds[step.kind]
        judge = boundaries_of(kind)
        cleared = conflicts_cleared({a: changes[a] for a in step.strengths}, judge.names, EDIT_ASKS[plan.clears])
        # a cleared attribute is moved at the strength of the change that clears it
        strengths = dict(step.strengths) | {a: step.strengths[by] for a, by in cleared.items() if a not in changes}
        predicted = judge.predict(z).float().cpu()  # (N, K): the labels `source` does not give
        src = torch.stack([labels.get(n, predicted[:, j]) for j, n in enumerate(judge.names)], dim=1)  # (N, K)
        tgt, strength = src.clone(), torch.ones(len(judge))
        for a, s in strengths.items():
            j = judge.index(a)
            tgt[:, j], strength[j] = changes.get(a, 0), s
            asked.setdefault(a, (judge, src[:, j], changes.get(a, 0)))
        z = kind.edit_by_labels(z, src.to(z.device), tgt.to(z.device), strength=strength.to(z.device), mode=plan.mode)
        labels.update({a: tgt[:, judge.index(a)] for a in strengths})
    distances = {a: tuple(judge.signed_distance(latents)[:, judge.index(a)].cpu() for latents in (mu, z))
                 for a, (judge, _, _) in asked.items()}
    if asked:
        def columns(values) -> torch.Tensor:  # per attribute (N,) or a number -> (N, A)
            return torch.stack([torch.as_tensor(v, dtype=torch.float32).expand(len(mu)) for v in values], dim=1)

        names = list(asked)
        warn_wrong_way(names, columns(distances[a][0] for a in names), columns(distances[a][1] for a in names),
                       columns(asked[a][1] for a in names), columns(asked[a][2] for a in names))
    return z, distances


def training_pairs(run: Run, names: Sequence[str]) -> torch.Tensor:
    """How often each pair of label values occurs among the run's training faces: (2, 2, K, K) in `names` order
    (`attributes.directions.label_pair_counts`), what a "+context" composite reads its contexts from."""
    columns = [run.cache.attribute_names.index(n) for n in names]
    return label_pair_counts(torch.from_numpy(np.ascontiguousarray(run.cache.labels("train")[:, columns])))


def context_decodes(run: Run, kind: Directions, model, mu: torch.Tensor, edited: torch.Tensor,
                    source: Mapping[str, torch.Tensor], changes: Mapping[str, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(D(z_ctx), D(z_ctx + edited - mu)) on the CPU, each (N, 3, S, S): the edit of latents mu (N, D) drawn in the
    context the run's training labels show (`attributes.context`), the faces moved there by `kind`. `source`
    {attribute: (N,) 0/1} gives the faces' labels (the others are predicted by `kind`'s boundaries); the target is
    source with `changes` set."""
    judge = boundaries_of(kind)
    predicted = judge.predict(mu).float().cpu()  # (N, K)
    before = torch.stack([torch.as_tensor(source[n]).float().reshape(-1).cpu() if n in source else predicted[:, j]
                          for j, n in enumerate(kind.names)], dim=1)  # (N, K) in kind.names order
    after = before.clone()
    for a, value in changes.items():
        if a in kind.names:
            after[:, list(kind.names).index(a)] = float(value)
    drawn = decode_in_context(model, kind, mu, edited, before.to(mu.device), after.to(mu.device),
                              training_pairs(run, kind.names))
    return drawn[0].cpu(), drawn[1].cpu()


def final_picture(image: torch.Tensor, reconstruction: torch.Tensor, decoded: torch.Tensor,
                  composite: str = FALLBACK_COMPOSITE,
                  context: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """The edited picture shown and saved, formed from the input, its reconstruction D(mu) and the decoded edit
    D(mu'), each (3, S, S) or (N, 3, S, S) in [-1, 1], as `composite` says: the one place that decides it; a
    "+context" composite also takes `context_decodes` (each of the same shape)."""
    if not image.shape == reconstruction.shape == decoded.shape:
        raise ValueError(f"image, reconstruction and decoded edit must have one shape, got {tuple(image.shape)}, "
                         f"{tuple(reconstruction.shape)} and {tuple(decoded.shape)}")
    single = image.ndim == 3
    batch = [t[None] if single else t for t in (image, reconstruction, decoded)]
    if context is not None:
        context = tuple(t[None] if single else t for t in context)
    out = composited_edit(batch[0], batch[1], batch[2], composite, context=context)
    return out[0] if single else out


@dataclass
class FaceInput:
    """A face to edit: uint8 pixels (3, S, S), its labels when it is a cache image, a name and a digest of it."""

    pixels: torch.Tensor
    labels: dict[str, int] | None
    name: str
    digest: str  # 8 hex digits: SHA-256 of the input's bytes and its alignment


def load_face(run: Run, image: str | Path | None = None, index: str | int | None = None,
              eyes: Sequence[float] | None = None) -> FaceInput:
    """A photo file (aligned by its eye centres when given) or a cache image (id like 000123.jpg, or row number)."""
    if (image is None) == (index is None):
        raise ValueError("give exactly one of an image file (--image FILE) or a cache image (--index ID)")
    if image is not None:
        pixels = torch.from_numpy(load_face_photo(image, run.image_size, eyes))
        made_of = Path(image).read_bytes() + f"|eyes={list(eyes) if eyes else None}".encode()
        return FaceInput(pixels, None, Path(image).stem, hashlib.sha256(made_of).hexdigest()[:8])
    cache, index = run.cache, str(index)
    ids = list(cache.table.index)
    if index in cache.table.index:
        row = ids.index(index)
    elif re.fullmatch(r"\d+", index) and int(index) < len(cache):
        row = int(index)
    else:
        raise KeyError(f"--index {index!r}: no such image id or row in {cache.directory} "
                       f"(ids look like {ids[0]!r}, rows 0..{len(cache) - 1})")
    pixels = np.ascontiguousarray(cache.images[row])
    labels = {name: int(cache.table[name].iloc[row]) for name in cache.attribute_names}
    return FaceInput(torch.from_numpy(pixels.copy()), labels, Path(ids[row]).stem,
                     hashlib.sha256(pixels.tobytes()).hexdigest()[:8])


@dataclass
class FaceEdit:
    """One edited face: the pictures (each (3, S, S) in [-1, 1]), its latents, per-attribute labels and boundary
    distances, how it was edited and how far it is from the run's training faces."""

    face: FaceInput
    plan: EditPlan
    changes: dict[str, int]
    image: torch.Tensor
    reconstruction: torch.Tensor  # D(mu)
    decoded: torch.Tensor  # D(mu')
    edited: torch.Tensor  # final_picture(image, reconstruction, decoded)
    latent: torch.Tensor  # mu (D,)
    edited_latent: torch.Tensor  # mu' (D,)
    frame: pd.DataFrame  # per attribute: kind, source, target, signed distance before and after
    domain: DomainCheck
    notes: list[str] = field(default_factory=list)

    def output_name(self) -> str:
        """What made it, as a file name: input name and digest, changes, kinds, mode, strengths."""
        kinds = ",".join(dict.fromkeys(step.kind for step in self.plan.steps))
        strengths = ",".join(dict.fromkeys(f"{s:g}" for step in self.plan.steps for s in step.strengths.values()))
        changes = "-".join(f"{k}={v}" for k, v in self.changes.items())
        made_of = (f"{self.face.name}-{self.face.digest}-{changes}-{kinds}-{self.plan.mode}-x{strengths}"
                   f"-{self.plan.composite}")
        return "edit-" + re.sub(r"[^A-Za-z0-9_.,=+-]+", "_", made_of)


def attribute_frame(judge: AttributeDirections, plan: EditPlan, changes: Mapping[str, int], source: Mapping[str, int],
                    mu: torch.Tensor, edited: torch.Tensor, moved: Distances) -> pd.DataFrame:
    """One row per attribute of `judge`: the kind that set it, source and target labels, signed distances before and
    after (to the setting kind's boundary for attributes the edit set, `moved` from `apply_steps`; else `judge`'s)."""
    before, after = judge.signed_distance(mu.cpu())[0].tolist(), judge.signed_distance(edited.cpu())[0].tolist()
    return pd.DataFrame({
        "attribute": judge.names,
        "kind": [plan.kind_of(n) or judge.method for n in judge.names],
        "source": [source[n] for n in judge.names],
        "target": [changes.get(n, 0 if n in moved else source[n]) for n in judge.names],
        "signed_distance_before": [float(moved[n][0][0]) if n in moved else b for n, b in zip(judge.names, before)],
        "signed_distance_after": [float(moved[n][1][0]) if n in moved else a for n, a in zip(judge.names, after)],
    })


def edit_face(run: Run, changes: Mapping[str, int], *, image: str | Path | None = None,
              index: str | int | None = None, eyes: Sequence[float] | None = None, method: str | None = None,
              mode: str | None = None, strength: float | None = None, composite: str | None = None,
              device: str | torch.device = "cpu") -> FaceEdit:
    """Encode one face (a photo, or a cache image by id or row), edit it by `changes` {attribute: 0/1} as
    `edit_plan` says, decode. Unknown attributes and stale directions fail before any model work. A photo's labels
    are predicted by the first kind's boundaries; a cache image's are its own."""
    if (image is None) == (index is None):
        raise ValueError("give exactly one of an image file (--image FILE) or a cache image (--index ID)")
    changes = dict(changes)
    plan = edit_plan(run, changes, method, mode, strength, composite)
    kinds = {step.kind: edit_kind(run, step.kind) for step in plan.steps}
    for step in plan.steps:
        boundaries_of(kinds[step.kind]).resolve_changes({a: changes[a] for a in step.strengths})
    face = load_face(run, image, index, eyes)
    model, first = run.model(device), boundaries_of(kinds[plan.steps[0].kind])
    x = to_float_images(face.pixels[None]).to(device)  # (1, 3, S, S)
    with torch.inference_mode():
        mu = model.encode(x)[0].float()  # (1, D)
        predicted = first.predict(mu)[0].int().tolist()
        given = face.labels or {}
        source = {n: given.get(n, predicted[j]) for j, n in enumerate(first.names)}
        # moved: {attribute the edit set: its distances before and after, to the boundary of the kind that set it}
        edited_mu, moved = apply_steps(plan, kinds, mu, changes, {n: torch.tensor([v]) for n, v in source.items()})
        reconstruction, decoded = model.decode(torch.cat([mu, edited_mu])).float().clamp(-1, 1).cpu()
        context = (context_decodes(run, kinds[plan.steps[0].kind], model, mu, edited_mu,
                                   {n: torch.tensor([v]) for n, v in source.items()}, changes)
                   if in_context(plan.composite) else None)
    image_f, notes = x[0].cpu(), list(plan.notes)
    already = [f"{n}={v}" for n, v in changes.items() if source.get(n) == v]
    if already:
        notes.append(f"the face already has {', '.join(already)} ({'labelled' if face.labels else 'predicted'}): "
                     "edits move only attributes that differ")
    cleared = [a for a in moved if a not in changes and source.get(a) == 1]
    if cleared:
        notes.append(f"also cleared ({plan.clears} alternatives): {', '.join(cleared)}")
    domain = run.domain_reference(device).check(float(psnr(reconstruction[None], image_f[None])[0]), mu.cpu())
    if domain.outside:
        warnings.warn(f"{image or face.name}: {domain.message}", OutOfDomainWarning, stacklevel=2)
    frame = attribute_frame(first, plan, changes, source, mu, edited_mu, moved)
    return FaceEdit(face, plan, changes, image_f, reconstruction, decoded,
                    final_picture(image_f, reconstruction, decoded, plan.composite,
                                  context and (context[0][0], context[1][0])), mu[0].cpu(), edited_mu[0].cpu(),
                    frame, domain, notes)


def save_face_edit(run: Run, result: FaceEdit, out: str | Path | None = None) -> Path:
    """Write input | reconstruction | edit as a PNG with the per-attribute table as CSV beside it; returns the PNG.

    Without `out`, <run>/edits/<FaceEdit.output_name()>.png: edits of other inputs (same file name in another folder,
    other eye positions), changes, kinds, modes or strengths never overwrite each other.
    """
    import matplotlib.pyplot as plt

    change_text = ", ".join(f"{k}={v}" for k, v in result.changes.items())
    how = "; ".join(f"{step.kind} x{'/'.join(dict.fromkeys(f'{s:g}' for s in step.strengths.values()))}"
                    for step in result.plan.steps)
    grid = torch.stack([result.image, result.reconstruction, result.edited])[None]  # (1, 3, 3, S, S)
    fig = image_grid_figure(grid, ["input", "reconstruction", f"{change_text}\n{how}, {result.plan.mode}"],
                            inch=1.9)
    png = save_figure(fig, result.frame, Path(out) if out else run.edits_dir / result.output_name())[0]
    plt.close(fig)
    return png


def compare_kinds(run: Run, attribute: str, value: int = 1, *, kind: str | None = None,
                  strength: float | None = None, composite: str | None = None, faces: int = 4, split: str = "test",
                  seed: int = 0, device: str | torch.device = "cpu"):
    """A figure of test faces: input | reconstruction | `attribute` set to `value` by each kind (the run's pick
    first, then every kind the run has; or only `kind`), each at `strength` (None: its chosen strength, else 1).
    Faces that already have the value are marked ("already Smiling"). Faces' latents come from latents.pt."""
    rows = eval_rows(run.cache, split, faces, seed)
    names = run.cache.attribute_names
    labels = torch.from_numpy(run.cache.labels("all")[rows]).float()  # (n, K) in the cache's order
    images = to_float_images(torch.from_numpy(np.ascontiguousarray(run.cache.images[rows])))  # (n, 3, S, S)
    mu = run.latents(device).mu[torch.from_numpy(rows)].to(device)  # (n, D)
    pick = run.edit_picks().get(attribute)
    wanted = [kind] if kind else list(dict.fromkeys(([pick.kind] if pick else []) + run.direction_methods()))
    kinds = {k: directions for k in wanted if attribute in boundaries_of(directions := edit_kind(run, k))}
    if not kinds:
        raise ValueError(f"no direction kind of {run.dir} among {wanted} covers {attribute!r}")
    model = run.model(device)
    source = {n: labels[:, j] for j, n in enumerate(names)}
    with torch.inference_mode():
        reconstruction = model.decode(mu).float().clamp(-1, 1).cpu()
        columns, titles = [images, reconstruction], ["input", "reconstruction"]
        for k, directions in kinds.items():
            plan = edit_plan(run, {attribute: value}, k, None, strength, composite)
            edited, _ = apply_steps(plan, {k: directions}, mu, {attribute: value}, source)
            context = (context_decodes(run, directions, model, mu, edited, source, {attribute: value})
                       if in_context(plan.composite) else None)
            columns.append(final_picture(images, reconstruction, model.decode(edited).float().clamp(-1, 1).cpu(),
                                         plan.composite, context))
            picked = " (picked)" if pick and pick.kind == k else ""
            shown = "" if plan.composite == "none" else f" [{plan.composite}]"
            titles.append(f"{k} x{plan.steps[0].strengths[attribute]:g}{shown}{picked}")
    already = f"already {attribute}" if value else f"already without {attribute}"
    notes = [["", ""] + [already if has else ""] * len(kinds) for has in (source[attribute] == value).tolist()]
    ids = [str(i) for i in run.cache.table.index[rows]]
    return image_grid_figure(torch.stack(columns, dim=1), titles, ids, cell_notes=notes, inch=1.6)
