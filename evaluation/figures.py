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

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from attributes.artifact import AttributeDirections
from attributes.directions import cosine_similarity_frame
from attributes.edit import slerp
from data.cache import to_float_images
from data.io import save_figure
from evaluation.decoding import decode_batched
from evaluation.protocol import STGAN_ATTRIBUTES, eval_rows, flip_changes, flip_many
from pipeline.run import Run


@dataclass
class FiguresConfig:
    """Which run, which faces and which edits to draw."""

    method: str | None = field(default=None, metadata={
        "help": "direction kind of the edit figures; None = the best in evaluation.csv, else probe"})
    faces: int = field(default=6, metadata={"help": "rows of the edit grid, strength sweep and multi-edit figures"})
    max_attributes: int = field(default=13, metadata={"help": "toggled-attribute columns of the edit grid"})
    sweep_attribute: str | None = field(default=None, metadata={"help": "None = Smiling if covered"})
    sweep_steps: tuple[float, ...] = (-3, -2, -1, 0, 1, 2, 3)
    multi: tuple[str, ...] | None = field(default=None, metadata={
        "help": "attribute sets flipped together, e.g. Male+Eyeglasses Smiling+Young"})
    interpolation_pairs: int = 3
    interpolation_steps: int = 8
    prior_samples: int = 64
    strength: float = field(default=2.0, metadata={"help": "edit strength (as the evaluation's headline)"})
    split: str = "test"
    seed: int = 0
    pdf: bool = field(default=False, metadata={"help": "also write PDFs"})
    batch_size: int = 256


# ---- drawing helpers ---------------------------------------------------------------------------------------------
# ---- drawing helpers ---------------------------------------------------------------------------------------------
def to_display(images: torch.Tensor) -> np.ndarray:
    """(N, 3, S, S) float in [-1, 1] -> (N, S, S, 3) float in [0, 1] for imshow."""
    return images.detach().float().cpu().add(1).div(2).clamp(0, 1).permute(0, 2, 3, 1).numpy()


def image_grid_figure(
    images: torch.Tensor,
    column_labels: Sequence[str],
    row_labels: Sequence[str] | None = None,
    title: str | None = None,
    pad: int = 2,
):
    """A matplotlib figure of images (R, C, 3, S, S) in [-1, 1] as one mosaic with column headers and row labels.

    Headers are rotated when the columns are many or the labels long, so they never overlap.
    """
    import matplotlib.pyplot as plt

    r, c, _, s, _ = images.shape
    cell = s + pad
    mosaic = np.ones((r * cell + pad, c * cell + pad, 3))
    tiles = to_display(images.reshape(r * c, *images.shape[2:])).reshape(r, c, s, s, 3)
    for i in range(r):
        for j in range(c):
            mosaic[pad + i * cell : pad + i * cell + s, pad + j * cell : pad + j * cell + s] = tiles[i, j]
    inch = 0.95  # per tile
    longest = max((len(str(label)) for label in column_labels), default=0)
    rotate = longest * 0.075 > inch  # ~0.075 in per character at 8 pt
    header = 0.2 + (0.07 * longest * 0.71 if rotate else 0.25)
    fig_w, fig_h = c * inch + (0.9 if row_labels is not None else 0.2), r * inch + header + (0.35 if title else 0)
    fig = plt.figure(figsize=(fig_w, fig_h))
    ax = fig.add_axes([(0.9 if row_labels is not None else 0.1) / fig_w, 0.05 / fig_h, c * inch / fig_w, r * inch / fig_h])
    ax.imshow(mosaic, interpolation="nearest")
    ax.set_xticks([pad + j * cell + s / 2 for j in range(c)])
    ax.set_xticklabels([str(x) for x in column_labels], rotation=45 if rotate else 0,
                       ha="left" if rotate else "center", fontsize=8)
    ax.xaxis.tick_top()
    if row_labels is not None:
        ax.set_yticks([pad + i * cell + s / 2 for i in range(r)])
        ax.set_yticklabels([str(x) for x in row_labels], fontsize=7)
    else:
        ax.set_yticks([])
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=10, y=1 - 0.12 / fig_h, va="top")
    return fig


def _source_target(dirs: AttributeDirections, names: list[str], truth: np.ndarray, target: np.ndarray):
    """Judge/cache-ordered labels -> (source, target) tensors in the directions' name order."""
    cols = [names.index(n) for n in dirs.names]
    return torch.from_numpy(truth[:, cols]), torch.from_numpy(target[:, cols])


# ---- the figures -------------------------------------------------------------------------------------------------
# ---- the figures -------------------------------------------------------------------------------------------------
class EditFaces:
    """Test faces for the edit figures: ids, images, labels, encoder means (from the run's latents) and reconstructions."""

    def __init__(self, run: Run, config: FiguresConfig, device: torch.device):
        rows = eval_rows(run.cache, config.split, config.faces, config.seed)
        self.model = run.model(device)
        self.names = run.cache.attribute_names
        self.ids = [str(i) for i in run.cache.table.index[rows]]
        self.images = to_float_images(torch.from_numpy(np.ascontiguousarray(run.cache.images[rows])))  # (n, 3, S, S)
        self.truth = run.cache.labels("all")[rows]  # (n, K) bool
        self.mu = run.latents(device).mu[torch.from_numpy(rows)]  # (n, D)
        self.recon = decode_batched(self.model, self.mu, config.batch_size, device)


def edit_attributes(dirs: AttributeDirections, config: FiguresConfig) -> list[str]:
    """Attributes for the grid: STGAN's 13 first (when covered), then the rest, at most max_attributes."""
    rest = [n for n in dirs.names if n not in STGAN_ATTRIBUTES]
    return ([n for n in STGAN_ATTRIBUTES if n in dirs.names] + rest)[: config.max_attributes]


def edit_grid(faces: EditFaces, dirs: AttributeDirections, config: FiguresConfig, device, figures: Path) -> list[Path]:
    """STGAN's grid: input, reconstruction, then each attribute toggled (flipped from its label)."""
    attributes = edit_attributes(dirs, config)
    columns = [faces.images, faces.recon]
    records = []
    for attribute in attributes:
        target = flip_changes(attribute, faces.truth, faces.names)
        source, tgt = _source_target(dirs, faces.names, faces.truth, target)
        edited = dirs.edit_by_labels(faces.mu, source, tgt, strength=config.strength)  # (n, D)
        columns.append(decode_batched(faces.model, edited, config.batch_size, device))
        j = faces.names.index(attribute)
        records += [{"row": i, "image_id": faces.ids[i], "column": attribute, "from": int(faces.truth[i, j]),
                     "to": int(target[i, j])} for i in range(len(faces.ids))]
    grid = torch.stack(columns, dim=1)  # (n, C, 3, S, S)
    labels = ["input", "reconstruction"] + [a.replace("_", " ") for a in attributes]
    fig = image_grid_figure(grid, labels, faces.ids, f"attribute toggled ({dirs.method} directions, strength {config.strength:g})")
    data = pd.DataFrame.from_records(records).assign(method=dirs.method, strength=config.strength)
    return _finish(fig, data, figures / "edit-grid", config)


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
    columns = [faces.images, faces.recon]
    records = []
    for combo in combos:
        for a in combo:
            dirs.index(a)  # unknown names raise, naming the valid ones
        target = flip_many(combo, faces.truth, faces.names)
        source, tgt = _source_target(dirs, faces.names, faces.truth, target)
        edited = dirs.edit_by_labels(faces.mu, source, tgt, strength=config.strength)  # (n, D)
        columns.append(decode_batched(faces.model, edited, config.batch_size, device))
        records += [{"row": i, "image_id": faces.ids[i], "column": "+".join(combo),
                     **{f"{a}_from": int(faces.truth[i, faces.names.index(a)]) for a in combo}}
                    for i in range(len(faces.ids))]
    grid = torch.stack(columns, dim=1)
    labels = ["input", "reconstruction"] + [" + ".join(a.replace("_", " ") for a in c) for c in combos]
    fig = image_grid_figure(grid, labels, faces.ids, f"several attributes toggled at once ({dirs.method}, strength {config.strength:g})")
    data = pd.DataFrame.from_records(records).assign(method=dirs.method, strength=config.strength)
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


def default_method(run: Run) -> str:
    """The direction kind with the best mean edit success in the run's evaluation.csv; else probe; else the first."""
    methods = run.direction_methods()
    path = run.path(Run.EVAL_CSV)
    if path.is_file():
        table = pd.read_csv(path)
        if "subset" in table.columns:
            table = table[table["subset"] == "all"]
        best = table[table["method"].isin(list(methods))].groupby("method")["success"].mean()
        if len(best):
            return str(best.idxmax())
    return "probe" if "probe" in methods else methods[0]


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
        method = config.method or default_method(run)
        dirs = run.directions(method)
        faces = EditFaces(run, config, device)
        for draw in (edit_grid, strength_sweep, multi_edit):
            written += draw(faces, dirs, config, device, figures)
    written += interpolation(run, config, device, figures)
    written += prior_samples(run, config, device, figures)
    return written
