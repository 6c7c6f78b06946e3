"""Draw a run's figures from its artifacts (checkpoint, directions, metrics); never trains anything.

    python -m experiments.make_figures --run runs/003-vae [--pdf]

Writes into <run>/figures/, each PNG (and PDF with --pdf) with the data behind it as CSV:
  edit-grid        STGAN's figure: rows are test faces; columns input, reconstruction, then each attribute toggled
  strength-sweep   one attribute moved -3 ... +3 calibrated steps along its direction
  multi-edit       several attribute differences at once
  interpolation    slerp between the latents of two faces
  probe-accuracy, direction-cosine   (re-drawn by experiments.fit_directions' own plotting functions)
  curves           training curves from metrics.csv (experiments.train_vae's plotting function)
  prior-samples    decode(z) for z ~ N(0, I)
"""
from __future__ import annotations

import argparse
import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from attributes.artifact import AttributeDirections
from attributes.edit import slerp
from attributes.encode import encode_images
from data.cache import to_float_images
from experiments.common import pick_device, save_figure
from experiments.evaluate import (
    FIGURES_DIR,
    STGAN_ATTRIBUTES,
    RunArtifacts,
    decode_batched,
    eval_rows,
    flip_changes,
    load_run,
)


@dataclass
class FiguresConfig:
    """Which run, which faces and which edits to draw."""

    run: str | None = None  # run folder; None = the latest under runs/
    method: str | None = None  # direction kind for the edit figures; None = best in evaluation.csv, else probe
    n_faces: int = 6  # rows of the edit grid / strength sweep / multi-edit figures
    max_attributes: int = 13  # columns of toggled attributes in the edit grid (STGAN's 13 first)
    sweep_attribute: str | None = None  # None = Smiling if covered, else the first attribute
    sweep_steps: tuple[float, ...] = (-3, -2, -1, 0, 1, 2, 3)
    multi: tuple[tuple[str, ...], ...] | None = None  # attribute sets flipped together; None = a default choice
    interpolation_pairs: int = 3
    interpolation_steps: int = 8
    prior_samples: int = 64
    strength: float = 2.0  # as evaluate's headline strength
    split: str = "test"
    seed: int = 0
    pdf: bool = False
    device: str = "auto"
    batch_size: int = 256


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
    import matplotlib

    matplotlib.use("Agg")
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
class _Faces:
    """Test faces for the edit figures: ids, uint8 and float images, labels, encoder means and reconstructions."""

    def __init__(self, run: RunArtifacts, config: FiguresConfig, device: torch.device):
        rows = eval_rows(run.cache, config.split, config.n_faces, config.seed)
        self.names = run.cache.attribute_names
        self.ids = [str(i) for i in run.cache.table.index[rows]]
        self.u8 = torch.from_numpy(np.ascontiguousarray(run.cache.images[rows]))
        self.images = to_float_images(self.u8)  # (n, 3, S, S)
        self.truth = run.cache.labels("all")[rows]  # (n, K) bool
        self.mu, _ = encode_images(run.model, self.u8, batch_size=config.batch_size, device=device, progress=False)
        self.recon = decode_batched(run.model, self.mu, config.batch_size, device)


def edit_attributes(dirs: AttributeDirections, config: FiguresConfig) -> list[str]:
    """Attributes for the grid: STGAN's 13 first (when covered), then the rest, at most max_attributes."""
    rest = [n for n in dirs.names if n not in STGAN_ATTRIBUTES]
    return ([n for n in STGAN_ATTRIBUTES if n in dirs.names] + rest)[: config.max_attributes]


def edit_grid(run, faces: _Faces, dirs, config, device, figures: Path) -> list[Path]:
    """STGAN's grid: input, reconstruction, then each attribute toggled (flipped from its label)."""
    attributes = edit_attributes(dirs, config)
    columns = [faces.images, faces.recon]
    records = []
    for attribute in attributes:
        target = flip_changes(attribute, faces.truth, faces.names)
        source, tgt = _source_target(dirs, faces.names, faces.truth, target)
        edited = dirs.edit_by_labels(faces.mu, source, tgt, strength=config.strength)  # (n, D)
        columns.append(decode_batched(run.model, edited, config.batch_size, device))
        j = faces.names.index(attribute)
        records += [{"row": i, "image_id": faces.ids[i], "column": attribute, "from": int(faces.truth[i, j]),
                     "to": int(target[i, j])} for i in range(len(faces.ids))]
    grid = torch.stack(columns, dim=1)  # (n, C, 3, S, S)
    labels = ["input", "reconstruction"] + [a.replace("_", " ") for a in attributes]
    fig = image_grid_figure(grid, labels, faces.ids, f"attribute toggled ({dirs.method} directions, strength {config.strength:g})")
    data = pd.DataFrame.from_records(records).assign(method=dirs.method, strength=config.strength)
    return _finish(fig, data, figures / "edit-grid", config)


def strength_sweep(run, faces: _Faces, dirs, config, device, figures: Path) -> list[Path]:
    """One attribute moved by k calibrated steps (k in sweep_steps) along its direction, from each face's mean."""
    names = dirs.names
    attribute = config.sweep_attribute or ("Smiling" if "Smiling" in names else names[0])
    k = dirs.index(attribute)
    columns = [faces.images]
    for step in config.sweep_steps:
        z = faces.mu + float(step) * dirs.steps[k] * dirs.vectors[k]  # (n, D)
        columns.append(decode_batched(run.model, z, config.batch_size, device))
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


def multi_edit(run, faces: _Faces, dirs, config, device, figures: Path) -> list[Path]:
    """Several attribute differences at once (STGAN's multi-attribute edit)."""
    combos = config.multi or default_multi(dirs.names)
    columns = [faces.images, faces.recon]
    records = []
    for combo in combos:
        for a in combo:
            dirs.index(a)  # unknown names raise, naming the valid ones
        target = faces.truth.copy()
        for a in combo:  # each flipped from the source label, conflicts resolved per attribute
            flipped = flip_changes(a, faces.truth, faces.names)
            j = faces.names.index(a)
            target[:, j] = flipped[:, j]
            cleared = (flipped != faces.truth) & ~np.isin(np.arange(len(faces.names)), [faces.names.index(c) for c in combo])
            target[cleared] = False
        source, tgt = _source_target(dirs, faces.names, faces.truth, target)
        edited = dirs.edit_by_labels(faces.mu, source, tgt, strength=config.strength)  # (n, D)
        columns.append(decode_batched(run.model, edited, config.batch_size, device))
        records += [{"row": i, "image_id": faces.ids[i], "column": "+".join(combo),
                     **{f"{a}_from": int(faces.truth[i, faces.names.index(a)]) for a in combo}}
                    for i in range(len(faces.ids))]
    grid = torch.stack(columns, dim=1)
    labels = ["input", "reconstruction"] + [" + ".join(a.replace("_", " ") for a in c) for c in combos]
    fig = image_grid_figure(grid, labels, faces.ids, f"several attributes toggled at once ({dirs.method}, strength {config.strength:g})")
    data = pd.DataFrame.from_records(records).assign(method=dirs.method, strength=config.strength)
    return _finish(fig, data, figures / "multi-edit", config)


def interpolation(run, config: FiguresConfig, device, figures: Path) -> list[Path]:
    """slerp between the encoder means of pairs of test faces; the real faces at both ends."""
    rows = eval_rows(run.cache, config.split, 2 * config.interpolation_pairs, config.seed + 1)
    if len(rows) < 2:
        raise ValueError(f"interpolation needs two {config.split} faces, the split has {len(rows)}")
    pairs = len(rows) // 2
    u8 = torch.from_numpy(np.ascontiguousarray(run.cache.images[rows[: 2 * pairs]]))
    mu, _ = encode_images(run.model, u8, batch_size=config.batch_size, device=device, progress=False)
    a, b = mu[0::2], mu[1::2]  # (P, D)
    ts = torch.linspace(0, 1, config.interpolation_steps)
    path = slerp(a, b, ts)  # (T, P, D)
    decoded = decode_batched(run.model, path.reshape(-1, mu.shape[1]), config.batch_size, device)
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


def prior_samples(run, config: FiguresConfig, device, figures: Path) -> list[Path]:
    """decode(z), z ~ N(0, I) from a fixed seed, as an 8-wide grid; the CSV holds the z's."""
    n = config.prior_samples
    z = torch.randn(n, run.model.config.latent_dim, generator=torch.Generator().manual_seed(config.seed))
    decoded = decode_batched(run.model, z, config.batch_size, device)
    cols = 8
    rows = -(-n // cols)
    padded = torch.cat([decoded, torch.ones(rows * cols - n, *decoded.shape[1:])]) if rows * cols > n else decoded
    fig = image_grid_figure(padded.reshape(rows, cols, *decoded.shape[1:]), [""] * cols, None,
                            f"samples from the prior (seed {config.seed})")
    data = pd.DataFrame(z.numpy(), columns=[f"z{i}" for i in range(z.shape[1])])
    data.insert(0, "sample", range(n))
    return _finish(fig, data, figures / "prior-samples", config)


def training_curves(run, config: FiguresConfig, figures: Path) -> list[Path]:
    """Re-draw train_vae's curves (its own plotting function) from the run's metrics.csv."""
    from experiments.train_vae import METRICS_CSV, plot_curves

    path = run.run_dir / METRICS_CSV
    if not path.is_file():
        print(f"no {path}: training curves skipped")
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return []
    plot_curves(rows, figures)
    return [figures / "curves.png", figures / "curves.csv"]


def direction_figures(run, figures: Path) -> list[Path]:
    """Re-draw fit_directions' probe-accuracy bars and cosine heat map (its own plotting functions)."""
    from experiments.fit_directions import plot_cosines, plot_scores

    out = []
    if any(d.scores for d in run.directions.values()):
        out += [plot_scores(run.directions, figures), figures / "probe-accuracy.csv"]
    base = run.directions.get("probe") or next(iter(run.directions.values()))
    out += [plot_cosines(base, figures), figures / "direction-cosine.csv"]
    return out


def default_method(run: RunArtifacts) -> str:
    """The direction kind with the best mean edit success in the run's evaluation.csv; else probe; else the first."""
    from experiments.evaluate import EVAL_CSV

    path = run.run_dir / EVAL_CSV
    if path.is_file():
        table = pd.read_csv(path)
        if "subset" in table.columns:
            table = table[table["subset"] == "all"]
        best = table[table["method"].isin(list(run.directions))].groupby("method")["success"].mean()
        if len(best):
            return str(best.idxmax())
    return "probe" if "probe" in run.directions else next(iter(run.directions))


def _finish(fig, data: pd.DataFrame, stem: Path, config: FiguresConfig) -> list[Path]:
    import matplotlib.pyplot as plt

    paths = save_figure(fig, data, stem, config.pdf)
    plt.close(fig)
    return paths


def main(config: FiguresConfig) -> Path:
    """Draw every figure of a run into <run>/figures/; returns that folder."""
    device = pick_device(config.device)
    run = load_run(config.run, device)
    figures = run.run_dir / FIGURES_DIR
    figures.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    steps = ["curves", "prior"]
    if run.directions:
        steps = ["grid", "sweep", "multi", "interpolation", "directions"] + steps
    else:
        steps = ["interpolation"] + steps
        print(f"{run.run_dir}: no directions-*.pt, so no edit figures; run `python -m experiments.fit_directions`")
    dirs = faces = None
    if run.directions:
        method = config.method or default_method(run)
        if method not in run.directions:
            raise FileNotFoundError(f"{run.run_dir}: no directions-{method}.pt (have {sorted(run.directions)})")
        dirs = run.directions[method]
        faces = _Faces(run, config, device)
    for step in tqdm(steps, desc="figures", unit="figure"):
        if step == "grid":
            written += edit_grid(run, faces, dirs, config, device, figures)
        elif step == "sweep":
            written += strength_sweep(run, faces, dirs, config, device, figures)
        elif step == "multi":
            written += multi_edit(run, faces, dirs, config, device, figures)
        elif step == "interpolation":
            written += interpolation(run, config, device, figures)
        elif step == "directions":
            written += direction_figures(run, figures)
        elif step == "curves":
            written += training_curves(run, config, figures)
        elif step == "prior":
            written += prior_samples(run, config, device, figures)
    for path in written:
        if path.suffix in (".png", ".pdf"):
            print(f"figure: {path}")
    return figures


def parse_args(argv: list[str] | None = None) -> FiguresConfig:
    d = FiguresConfig()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--run", default=None, help="run folder (default: the latest under runs/)")
    p.add_argument("--method", default=None, help="direction kind for the edit figures (default: the best in evaluation.csv, else probe)")
    p.add_argument("--n-faces", type=int, default=d.n_faces)
    p.add_argument("--max-attributes", type=int, default=d.max_attributes)
    p.add_argument("--sweep-attribute", default=None)
    p.add_argument("--multi", nargs="+", default=None, metavar="A+B",
                   help="attribute sets flipped together, e.g. Male+Eyeglasses Smiling+Young")
    p.add_argument("--strength", type=float, default=d.strength)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--pdf", action="store_true", help="also write PDFs")
    p.add_argument("--device", default=d.device)
    a = p.parse_args(argv)
    return FiguresConfig(
        run=a.run, method=a.method, n_faces=a.n_faces, max_attributes=a.max_attributes,
        sweep_attribute=a.sweep_attribute, multi=tuple(tuple(m.split("+")) for m in a.multi) if a.multi else None,
        strength=a.strength, seed=a.seed, pdf=a.pdf, device=a.device,
    )


if __name__ == "__main__":
    main(parse_args())
