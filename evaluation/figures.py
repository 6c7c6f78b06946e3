"""A run's figures, each drawn once and saved through one path (PNG, optional PDF, and the CSV behind it):

  edit-grid        STGAN's figure: rows are test faces; columns input, reconstruction, then each attribute toggled
  strength-sweep   one attribute moved -3 ... +3 calibrated steps along its direction
  multi-edit       several attribute differences at once
  interpolation    slerp between the latents of two faces
  prior-samples    decode(z) for z ~ N(0, I)
  probe-accuracy, direction-cosine   how well each direction's boundary separates held-out latents; their cosines
Faces' latents come from the run's latents.pt (`Run.latents`); nothing is trained or encoded twice.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from attributes.artifact import AttributeDirections
from attributes.composite import COMPOSITES, in_context
from attributes.context import decode_in_context
from attributes.directions import cosine_similarity_frame
from attributes.edit import slerp
from attributes.hair import HAIR_SUBSPACE
from data.cache import to_float_images
from data.io import save_figure
from evaluation.decoding import decode_batched
from evaluation.counterfactuals import CounterfactualRenderer, synthetic_root
from evaluation.face_edit import (FALLBACK_COMPOSITE, Directions, edit_kind, fallback_kind, final_picture,
                                  training_pairs)
from evaluation.grids import image_grid_figure
from evaluation.scoring import base_of
from data.synthetic import CLEARED_WHEN_SET
from pipeline.picks import EditPick
from evaluation.protocol import EXCLUSIVE, STGAN_ATTRIBUTES, eval_rows, flip_changes, flip_many
from pipeline.run import Run


@dataclass
class FiguresConfig:
    """Which run, which faces and which edits to draw."""

    method: str | None = field(default=None, metadata={
        "help": "direction kind of the edit figures; None = per attribute the evaluation's pick, else probe"})
    faces: int = field(default=6, metadata={"help": "rows of the edit grid, strength sweep and multi-edit figures"})
    max_attributes: int = field(default=13, metadata={"help": "toggled-attribute columns of the edit grid"})
    sweep_attribute: str | None = field(default=None, metadata={"help": "None = Smiling if covered"})
    sweep_steps: tuple[float, ...] = (-3, -2, -1, 0, 1, 2, 3)
    multi: tuple[str, ...] | None = field(default=None, metadata={
        "help": "attribute sets flipped together, e.g. Male+Eyeglasses Smiling+Young"})
    interpolation_pairs: int = 3
    interpolation_steps: int = 8
    prior_samples: int = 64
    strength: float | None = field(default=None, metadata={
        "help": "edit strength; None = the evaluation's chosen one, else 2"})
    composite: str | None = field(default=None, metadata={
        "choices": COMPOSITES, "help": "none / recon / input [+context] (attributes.composite); None = the pick"})
    locality_attributes: tuple[str, ...] = field(default=(
        "Eyeglasses", "Mustache", "Bangs", "Blond_Hair", "Young", "Pale_Skin"), metadata={
        "help": "rows of the ground-truth locality figure (procedural faces only), one face each"})
    split: str = "test"
    seed: int = 0
    pdf: bool = field(default=False, metadata={"help": "also write PDFs"})
    batch_size: int = 256


def _source_target(dirs: AttributeDirections, names: list[str], truth: np.ndarray, target: np.ndarray):
    """Judge/cache-ordered labels -> (source, target) tensors in the directions' name order."""
    cols = [names.index(n) for n in dirs.names]
    return torch.from_numpy(truth[:, cols]), torch.from_numpy(target[:, cols])


# ---- the figures -------------------------------------------------------------------------------------------------
class EditFaces:
    """Test faces for the edit figures: ids, images, labels, encoder means (from the run's latents) and reconstructions."""

    def __init__(self, run: Run, config: FiguresConfig, device: torch.device):
        self.rows = rows = eval_rows(run.cache, config.split, config.faces, config.seed)
        self.model = run.model(device)
        self.names = run.cache.attribute_names
        self.ids = [str(i) for i in run.cache.table.index[rows]]
        self.images = to_float_images(torch.from_numpy(np.ascontiguousarray(run.cache.images[rows])))  # (n, 3, S, S)
        self.truth = run.cache.labels("all")[rows]  # (n, K) bool
        self.mu = run.latents(device).mu[torch.from_numpy(rows)]  # (n, D)
        self.recon = decode_batched(self.model, self.mu, config.batch_size, device)

    @property
    def bases(self) -> dict[str, torch.Tensor]:
        """The images edits start from: the reconstructions, or the inputs (edits composited onto them)."""
        return {"recon": self.recon, "input": self.images}


def edit_attributes(dirs: AttributeDirections, config: FiguresConfig) -> list[str]:
    """Attributes for the grid: STGAN's 13 first (when covered), then the rest, at most max_attributes."""
    rest = [n for n in dirs.names if n not in STGAN_ATTRIBUTES]
    return ([n for n in STGAN_ATTRIBUTES if n in dirs.names] + rest)[: config.max_attributes]


@dataclass
class EditRecipes:
    """What the edit figures of one `edit_figures` call edit by, read once: the picks (`Run.edit_picks`: the
    evaluation's, or `config.method`'s at its chosen strengths) and the direction kinds, each built on first use."""

    run: Run
    config: FiguresConfig
    picked: dict[str, EditPick]  # the evaluation's own picks ({} without an evaluation)
    picks: dict[str, EditPick]  # what the figures edit by: `picked`, or config.method's
    kinds: dict[str, Directions] = field(default_factory=dict)

    @classmethod
    def read(cls, run: Run, config: FiguresConfig) -> EditRecipes:
        """The run's picks; a mixed or stale evaluation is refused (`Run.evaluation_summary`)."""
        picked = run.edit_picks()
        return cls(run, config, picked, picked if config.method is None else run.edit_picks(config.method))

    def kind(self, name: str) -> Directions:
        """`evaluation.face_edit.edit_kind`, built once per kind (a hair-subspace kind fits its colour subspace)."""
        if name not in self.kinds:
            self.kinds[name] = edit_kind(self.run, name)
        return self.kinds[name]


def edit_recipe(recipes: EditRecipes, attribute: str) -> EditPick:
    """How the figures edit `attribute`: the evaluation's pick (or `config.method` at its chosen strength), with
    `config.strength` / `config.composite` where given; without an evaluation the fallback kind x2, composited as
    edits are without a pick (`evaluation.face_edit`)."""
    config = recipes.config
    pick = recipes.picks.get(attribute) or EditPick(config.method or fallback_kind(recipes.run), 2.0,
                                                    composite=FALLBACK_COMPOSITE)
    return EditPick(pick.kind, config.strength if config.strength is not None else pick.strength, pick.mode,
                    config.composite or pick.composite)


def toggled(recipes: EditRecipes, faces: EditFaces, attribute: str, pick: EditPick, device,
            batch_size: int) -> torch.Tensor:
    """The faces with `attribute` flipped (its exclusive alternatives cleared) as `pick` edits it: (n, 3, S, S)."""
    dirs = recipes.kind(pick.kind)
    target = flip_changes(attribute, faces.truth, faces.names, EXCLUSIVE)
    source, tgt = _source_target(dirs, faces.names, faces.truth, target)
    edited = dirs.edit_by_labels(faces.mu, source, tgt, strength=pick.strength, mode=pick.mode)  # (n, D)
    context = None
    if in_context(pick.composite):  # the change drawn where the training labels show the target
        drawn = decode_in_context(faces.model, dirs, faces.mu, edited, source, tgt,
                                  training_pairs(recipes.run, dirs.names))
        context = (drawn[0].cpu(), drawn[1].cpu())
    return final_picture(faces.images, faces.recon, decode_batched(faces.model, edited, batch_size, device),
                         pick.composite, context)


def edit_grid(recipes: EditRecipes, faces: EditFaces, device, figures: Path) -> list[Path]:
    """STGAN's grid: input, reconstruction, then each attribute toggled (flipped from its label), each by its pick."""
    run, config = recipes.run, recipes.config
    attributes = edit_attributes(run.directions(run.direction_methods()[0]), config)
    columns, labels, records = [faces.images, faces.recon], ["input", "reconstruction"], []
    for attribute in attributes:
        pick = edit_recipe(recipes, attribute)
        columns.append(toggled(recipes, faces, attribute, pick, device, config.batch_size))
        labels.append(f"{attribute.replace('_', ' ')}: {pick}")
        j = faces.names.index(attribute)
        records += [{"row": i, "image_id": faces.ids[i], "column": attribute, "from": int(faces.truth[i, j]),
                     "to": int(not faces.truth[i, j]), "method": pick.kind, "strength": pick.strength,
                     "composite": pick.composite} for i in range(len(faces.ids))]
    how = "each attribute by the evaluation's pick" if recipes.picked and config.method is None else "edits"
    fig = image_grid_figure(torch.stack(columns, dim=1), labels, faces.ids, f"attribute toggled ({how})")
    return _finish(fig, pd.DataFrame.from_records(records), figures / "edit-grid", config)


def locality_faces(recipes: EditRecipes, device, figures: Path) -> list[Path]:
    """Procedural faces only: per attribute one test face, its true counterfactual, the true change region, the
    picked edit and where that edit changed the picture (|edit - base|, the region outlined in white)."""
    from matplotlib import colormaps

    run, config = recipes.run, recipes.config
    root = synthetic_root(run.cache)
    attributes = [a for a in config.locality_attributes if a in run.cache.attribute_names]
    if root is None or not attributes:
        return []
    faces = EditFaces(run, dataclasses.replace(config, faces=len(attributes)), device)
    renderer = CounterfactualRenderer(root, run.cache, faces.rows)
    names, rows, records = faces.names, [], []
    implied = {a: flip_changes(a, faces.truth, names, CLEARED_WHEN_SET) for a in attributes}
    # every attribute's counterfactuals drawn at once, in one pool of worker processes
    renderer.prefetch({a: renderer.changes(a, implied[a], faces.truth, names) for a in attributes})
    for i, attribute in enumerate(attributes):
        pick = edit_recipe(recipes, attribute)
        edited = toggled(recipes, faces, attribute, pick, device, config.batch_size)[i : i + 1]  # (1, 3, S, S)
        truth = renderer.ground_truth(attribute, implied[attribute], faces.truth, names, faces.bases)
        base = faces.bases[base_of(pick.composite)]
        change = (edited - base[i : i + 1]).norm(dim=1, keepdim=True)  # (1, 1, S, S)
        region = truth.region[i : i + 1].float()
        outline = (torch.nn.functional.max_pool2d(region, 3, 1, 1) - region) > 0
        heat = torch.from_numpy(colormaps["inferno"]((change / change.max().clamp_min(1e-6)).numpy()[0, 0])[..., :3])
        heat = (heat.float().permute(2, 0, 1)[None] * 2 - 1).masked_fill(outline, 1.0)  # (1, 3, S, S)
        rows.append(torch.cat([faces.images[i : i + 1], truth.counterfactual[i : i + 1],
                               region.expand(-1, 3, -1, -1) * 2 - 1, edited, heat]))
        score = truth.score(edited.expand(len(truth), -1, -1, -1), base_of(pick.composite), base)
        records.append({"image_id": faces.ids[i], "attribute": attribute, "method": pick.kind,
                        "strength": pick.strength, "composite": pick.composite,
                        "inside_change": float(score["inside"][i]), "closer_to_cf": float(score["closer"][i])})
    labels = ["input", "true counterfactual", "true change region", "edit (the pick)", "where the edit changed it"]
    notes = [["", "", "", "", f"{100 * r['inside_change']:.0f} % inside"] for r in records]
    fig = image_grid_figure(torch.stack(rows), labels, [f"{r['attribute']}\n{r['image_id']}" for r in records],
                            "ground truth: what the flip changes, and what the edit changed", cell_notes=notes,
                            inch=1.3)
    return _finish(fig, pd.DataFrame.from_records(records), figures / "locality-faces", config)


def strength_sweep(faces: EditFaces, dirs: AttributeDirections, config: FiguresConfig, device, figures: Path) -> list[Path]:
    """One attribute moved by k calibrated steps (k in sweep_steps) along its direction, from each face's mean."""
    names = dirs.names
    attribute = config.sweep_attribute or ("Smiling" if "Smiling" in names else names[0])
    k = dirs.index(attribute)
    columns = [faces.images]
    for step in config.sweep_steps:
        z = faces.mu + float(step) * dirs.steps[k] * dirs.vectors[k]  # (n, D)
        columns.append(decode_batched(faces.model, z, config.batch_size, device))
    grid = torch.stack(columns, dim=1)
    labels = ["input"] + [f"{s:+g}" if s else "0 (recon)" for s in config.sweep_steps]
    fig = image_grid_figure(grid, labels, faces.ids,
                            f"{attribute.replace('_', ' ')}: steps along the {dirs.method} direction "
                            f"(1 step = {float(dirs.steps[k]):.2f})")
    data = pd.DataFrame([{"row": i, "image_id": faces.ids[i], "attribute": attribute, "label": int(faces.truth[i, faces.names.index(attribute)]),
                          "steps": s, "latent_offset": float(s) * float(dirs.steps[k]), "method": dirs.method}
                         for i in range(len(faces.ids)) for s in config.sweep_steps])
    return _finish(fig, data, figures / "strength-sweep", config)


def default_multi(names: Sequence[str]) -> tuple[tuple[str, ...], ...]:
    """A few attribute sets to flip together, from whichever the directions cover."""
    wishes = [("Male", "Eyeglasses"), ("Smiling", "Young"), ("Bangs", "Blond_Hair"), ("Male", "Smiling", "Eyeglasses")]
    chosen = [w for w in wishes if all(a in names for a in w)]
    if len(chosen) < 2:
        ordered = list(names)
        chosen += [tuple(ordered[i : i + 2]) for i in range(0, min(len(ordered) - 1, 6), 2)]
        if len(ordered) >= 3:
            chosen.append(tuple(ordered[:3]))
    return tuple(dict.fromkeys(chosen))[:4]


def multi_edit(faces: EditFaces, dirs: AttributeDirections, config: FiguresConfig, device, figures: Path) -> list[Path]:
    """Several attribute differences at once (STGAN's multi-attribute edit)."""
    combos = tuple(tuple(m.split("+")) for m in config.multi) if config.multi else default_multi(dirs.names)
    strength = 2.0 if config.strength is None else config.strength
    columns = [faces.images, faces.recon]
    records = []
    for combo in combos:
        for a in combo:
            dirs.index(a)  # unknown names raise, naming the valid ones
        target = flip_many(combo, faces.truth, faces.names)
        source, tgt = _source_target(dirs, faces.names, faces.truth, target)
        edited = dirs.edit_by_labels(faces.mu, source, tgt, strength=strength)  # (n, D)
        columns.append(decode_batched(faces.model, edited, config.batch_size, device))
        records += [{"row": i, "image_id": faces.ids[i], "column": "+".join(combo),
                     **{f"{a}_from": int(faces.truth[i, faces.names.index(a)]) for a in combo}}
                    for i in range(len(faces.ids))]
    grid = torch.stack(columns, dim=1)
    labels = ["input", "reconstruction"] + [" + ".join(a.replace("_", " ") for a in c) for c in combos]
    fig = image_grid_figure(grid, labels, faces.ids, f"several attributes toggled at once ({dirs.method}, strength {strength:g})")
    data = pd.DataFrame.from_records(records).assign(method=dirs.method, strength=strength)
    return _finish(fig, data, figures / "multi-edit", config)


def interpolation(run: Run, config: FiguresConfig, device, figures: Path) -> list[Path]:
    """slerp between the encoder means of pairs of test faces; the real faces at both ends."""
    rows = eval_rows(run.cache, config.split, 2 * config.interpolation_pairs, config.seed + 1)
    if len(rows) < 2:
        raise ValueError(f"interpolation needs two {config.split} faces, the split has {len(rows)}")
    pairs = len(rows) // 2
    u8 = torch.from_numpy(np.ascontiguousarray(run.cache.images[rows[: 2 * pairs]]))
    mu = run.latents(device).mu[torch.from_numpy(rows[: 2 * pairs])]  # (2P, D)
    a, b = mu[0::2], mu[1::2]  # (P, D)
    ts = torch.linspace(0, 1, config.interpolation_steps)
    path = slerp(a, b, ts)  # (T, P, D)
    decoded = decode_batched(run.model(device), path.reshape(-1, mu.shape[1]), config.batch_size, device)
    decoded = decoded.reshape(len(ts), pairs, *decoded.shape[1:]).transpose(0, 1)  # (P, T, 3, S, S)
    images = to_float_images(u8)
    grid = torch.cat([images[0::2, None], decoded, images[1::2, None]], dim=1)
    ids = [str(i) for i in run.cache.table.index[rows[: 2 * pairs]]]
    labels = ["face A"] + [f"t={t:.2f}" for t in ts.tolist()] + ["face B"]
    fig = image_grid_figure(grid, labels, [f"{ids[2 * p]}→{ids[2 * p + 1]}" for p in range(pairs)],
                            "latent interpolation (slerp between encoder means)")
    data = pd.DataFrame([{"pair": p, "face_a": ids[2 * p], "face_b": ids[2 * p + 1], "t": t,
                          "latent_norm": float(path[i, p].norm())} for p in range(pairs) for i, t in enumerate(ts.tolist())])
    return _finish(fig, data, figures / "interpolation", config)


def prior_samples(run: Run, config: FiguresConfig, device, figures: Path) -> list[Path]:
    """decode(z), z ~ N(0, I) from a fixed seed, as an 8-wide grid; the CSV holds the z's."""
    n = config.prior_samples
    model = run.model(device)
    z = torch.randn(n, model.config.latent_dim, generator=torch.Generator().manual_seed(config.seed))
    decoded = decode_batched(model, z, config.batch_size, device)
    cols = 8
    rows = -(-n // cols)
    padded = torch.cat([decoded, torch.ones(rows * cols - n, *decoded.shape[1:])]) if rows * cols > n else decoded
    fig = image_grid_figure(padded.reshape(rows, cols, *decoded.shape[1:]), [""] * cols, None,
                            f"samples from the prior (seed {config.seed})")
    data = pd.DataFrame(z.numpy(), columns=[f"z{i}" for i in range(z.shape[1])])
    data.insert(0, "sample", range(n))
    return _finish(fig, data, figures / "prior-samples", config)


def default_method(run: Run, picked: dict[str, EditPick]) -> str:
    """The direction kind the evaluation picked most often (`picked`: `Run.edit_picks()`; a hair-subspace kind counts
    as its base); else probe; else the first kind: the one kind of the sweep and multi-edit figures."""
    methods = run.direction_methods()
    picked = [p.kind.removesuffix(HAIR_SUBSPACE) for p in picked.values()]
    picked = [k for k in picked if k in methods]
    if picked:
        return max(dict.fromkeys(picked), key=picked.count)
    return fallback_kind(run)


def plot_scores(directions: dict[str, AttributeDirections], figures: Path) -> list[Path]:
    """Held-out balanced accuracy per attribute and method: a horizontal bar chart PNG and its CSV."""
    import matplotlib.pyplot as plt
    import pandas as pd

    frame = pd.DataFrame(
        [{"attribute": n, "method": m, **d.scores.get(n, {})} for m, d in directions.items() for n in d.names]
    )
    table = frame.pivot(index="attribute", columns="method", values="balanced_accuracy")
    table = table[[m for m in directions if m in table.columns]]  # fitting order, not alphabetical
    sort_by = "probe" if "probe" in table.columns else table.columns[0]
    table = table.sort_values(sort_by)
    fig, ax = plt.subplots(figsize=(8, 0.28 * len(table) + 1.5))
    height = 0.8 / len(table.columns)
    for j, method in enumerate(table.columns):
        ax.barh(np.arange(len(table)) + j * height, table[method].to_numpy(), height=height, label=method)
    ax.set_yticks(np.arange(len(table)) + 0.4 - height / 2, table.index)
    ax.axvline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_xlim(min(0.4, float(np.nanmin(table.to_numpy(dtype=float), initial=1.0)) - 0.02), 1.0)
    ax.set_xlabel("held-out balanced accuracy (sign of the signed distance to each boundary)")
    ax.set_title("Attribute directions: how well each boundary separates the valid split")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    paths = save_figure(fig, frame, figures / "probe-accuracy")
    plt.close(fig)
    return paths


def plot_cosines(directions: AttributeDirections, figures: Path) -> list[Path]:
    """Cosine similarity between every pair of directions: a heat map PNG and its CSV."""
    import matplotlib.pyplot as plt

    frame = cosine_similarity_frame(directions.names, directions.vectors)
    k = len(frame)
    fig, ax = plt.subplots(figsize=(0.3 * k + 3, 0.3 * k + 2.5))
    image = ax.imshow(frame.to_numpy(), cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set_xticks(range(k), frame.columns, rotation=90, fontsize=7)
    ax.set_yticks(range(k), frame.index, fontsize=7)
    ax.set_title(f"cosine similarity of {directions.method} directions")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    paths = save_figure(fig, frame.reset_index(), figures / "direction-cosine")
    plt.close(fig)
    return paths


def _finish(fig, data: pd.DataFrame, stem: Path, config: FiguresConfig) -> list[Path]:
    import matplotlib.pyplot as plt

    paths = save_figure(fig, data, stem, config.pdf)
    plt.close(fig)
    return paths


def direction_figures(directions: dict[str, AttributeDirections], figures: Path) -> list[Path]:
    """Held-out accuracy of each distinct boundary, and the cosines between the probe (else first) directions.

    Kinds that share their boundaries (probe, conditional and probe_joint all judge by the probes' hyperplanes) are
    one bar, labelled with every kind that shares it: three identical bars would read as three confirmations.
    """
    figures.mkdir(parents=True, exist_ok=True)
    shared: dict[str, list[str]] = {}  # first kind of each distinct boundary set -> the kinds that have it
    for method, dirs in directions.items():
        normals, offsets = dirs.boundaries()
        for first in shared:
            other = directions[first]
            if other.names == dirs.names and torch.allclose(other.boundaries()[0], normals, atol=1e-6) \
                    and torch.allclose(other.boundaries()[1], offsets, atol=1e-6):
                shared[first].append(method)
                break
        else:
            shared[method] = [method]
    distinct = {(", ".join(kinds) + " (one boundary)" if len(kinds) > 1 else first): directions[first]
                for first, kinds in shared.items()}
    out = plot_scores(distinct, figures) if any(d.scores for d in distinct.values()) else []
    return out + plot_cosines(directions.get("probe") or next(iter(directions.values())), figures)


def edit_figures(run: Run, config: FiguresConfig, device: torch.device) -> list[Path]:
    """Every figure drawn from the decoder: edit grid, sweep, multi-edit (when the run has directions), interpolation
    and prior samples."""
    figures = run.figures_dir
    figures.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    methods = run.direction_methods()
    if methods:
        recipes = EditRecipes.read(run, config)  # the picks, read once: a mixed evaluation set is refused
        dirs = run.directions(config.method or default_method(run, recipes.picked))
        faces = EditFaces(run, config, device)
        written += edit_grid(recipes, faces, device, figures)
        for draw in (strength_sweep, multi_edit):
            written += draw(faces, dirs, config, device, figures)
        written += locality_faces(recipes, device, figures)
    written += interpolation(run, config, device, figures)
    written += prior_samples(run, config, device, figures)
    return written
