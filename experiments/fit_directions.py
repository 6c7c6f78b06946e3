"""Encode a VAE run's whole cache and fit attribute directions: mean, balanced, probe and conditional.

    python -m experiments.fit_directions --run runs/001-vae            # latest run when --run is left out
    torchrun --nproc-per-node 4 -m experiments.fit_directions --run ... # encoding sharded over ranks

Writes into the run folder: latents.pt, directions-{mean,balanced,probe,conditional}.pt and, under figures/,
probe-accuracy.png/.csv (held-out balanced accuracy per attribute) and direction-cosine.png/.csv.
"""
from __future__ import annotations

import argparse
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from attributes import (
    AttributeDirections,
    Latents,
    balanced_mean_directions,
    conditional_directions,
    cosine_similarity_frame,
    encode_cache,
    mean_directions,
    probe_directions,
    score_directions,
)
from attributes.artifact import METHODS
from data.cache import load_cache
from data.io import atomic_path, atomic_write_text, file_sha256
from experiments.common import (
    CHECKPOINT_FILE,
    init_distributed,
    latest_run_dir,
    run_cache_dir,
    save_config,
    shutdown_distributed,
)
from models.vae import ConvVAE

LATENTS_FILE = "latents.pt"
# InterFaceGAN-style conditions: each attribute without the attributes it is most entangled with in CelebA
DEFAULT_CONDITIONS: dict[str, list[str]] = {
    "Blond_Hair": ["Male"],
    "Black_Hair": ["Male"],
    "Brown_Hair": ["Male"],
    "Gray_Hair": ["Male", "Young"],
    "Bald": ["Male", "Young"],
    "Bangs": ["Male"],
    "Eyeglasses": ["Male", "Young"],
    "Smiling": ["Male", "Young"],
    "Mouth_Slightly_Open": ["Smiling"],
    "Heavy_Makeup": ["Male", "Young"],
    "Wearing_Lipstick": ["Male", "Heavy_Makeup"],
    "Mustache": ["Male", "Young"],
    "Goatee": ["Male", "Young"],
    "No_Beard": ["Male", "Young"],
    "Young": ["Male", "Eyeglasses", "Gray_Hair"],
    "Male": ["Heavy_Makeup", "Wearing_Lipstick", "No_Beard"],
    "Pale_Skin": ["Male"],
}
DEFAULT_BALANCE_ON = ["Male", "Young"]


@dataclass
class FitConfig:
    """Settings of fit_directions (saved as fit_config.json in the run folder)."""

    run: str = ""  # VAE run folder; "" = the latest under runs/
    fit_split: str = "train"
    valid_split: str = "valid"
    min_count: int = 20  # attributes with fewer positives or negatives in fit_split are left out (reported)
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    conditional: dict[str, list[str]] = field(default_factory=lambda: {k: list(v) for k, v in DEFAULT_CONDITIONS.items()})
    conditional_base: str = "probe"  # which directions the conditional ones are projected from
    balance_on: list[str] = field(default_factory=lambda: list(DEFAULT_BALANCE_ON))
    min_cell_count: int = 10
    C: float = 1.0  # inverse L2 strength of the probes
    n_jobs: int = -1  # joblib workers for the probes
    batch_size: int | None = None  # encoding batch; None = attributes.encode's default (4096 on CUDA, 64 on CPU)
    device: str = "auto"
    compile: bool = False
    reuse_latents: bool = True  # keep latents.pt when it was made from this very checkpoint

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ValueError(f"FitConfig.methods: unknown {unknown}; expected some of {METHODS}")
        if "conditional" in self.methods and self.conditional_base not in self.methods:
            raise ValueError(f"conditional directions need their base method {self.conditional_base!r} in methods")


def run_latents(run_dir: Path, *, config: FitConfig, device: torch.device) -> Latents:
    """The whole cache encoded by the run's checkpoint: latents.pt when current, else encoded (and saved by rank 0)."""
    checkpoint = run_dir / CHECKPOINT_FILE
    if not checkpoint.is_file():
        raise FileNotFoundError(f"{checkpoint} missing: train the VAE first (python -m experiments.train_vae)")
    cache = load_cache(run_cache_dir(run_dir))
    path = run_dir / LATENTS_FILE
    if config.reuse_latents and path.is_file():
        latents = Latents.load(path)
        if latents.checkpoint_sha256 == file_sha256(checkpoint) and len(latents) == len(cache):
            print(f"reusing {path} ({len(latents)} latents of checkpoint {latents.checkpoint_sha256[:12]})")
            return latents
        print(f"{path} is from another checkpoint or cache: encoding again")
    model = ConvVAE.from_checkpoint(checkpoint, map_location=device)
    latents = encode_cache(model, cache, None, checkpoint=checkpoint, batch_size=config.batch_size, device=device,
                           compile_model=config.compile)
    if not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0:
        latents.save(path)
    return latents


def usable_conditions(conditions: dict[str, list[str]], base: AttributeDirections) -> dict[str, list[str]]:
    """The conditions restricted to attributes that have base directions; what is left out is printed."""
    usable, notes = {}, []
    for name, conds in conditions.items():
        kept = [c for c in conds if c in base]
        if name not in base or not kept:
            notes.append(f"{name} (no direction for {[c for c in [name, *conds] if c not in base]})")
        else:
            usable[name] = kept
            if len(kept) < len(conds):
                notes.append(f"{name} | {sorted(set(conds) - set(kept))} (conditioned on {kept} only)")
    if notes:
        print("conditional: left out " + "; ".join(notes))
    return usable


def fit_all(latents: Latents, config: FitConfig) -> dict[str, AttributeDirections]:
    """Every requested method on the fit split, scored on the valid split."""
    if latents.labels is None:
        raise ValueError("latents carry no labels; encode them with encode_cache")
    names = latents.attribute_names
    train, valid = latents.select(config.fit_split), latents.select(config.valid_split)
    out: dict[str, AttributeDirections] = {}
    if "mean" in config.methods:
        out["mean"] = mean_directions(train.mu, train.labels, names, min_count=config.min_count)
    if "balanced" in config.methods:
        balance = [b for b in config.balance_on if b in names]
        if len(balance) < len(config.balance_on):
            print(f"balanced: balancing on {balance} (not in this data: {sorted(set(config.balance_on) - set(balance))})")
        out["balanced"] = balanced_mean_directions(train.mu, train.labels, names, balance,
                                                   min_count=config.min_count, min_cell_count=config.min_cell_count)
    if "probe" in config.methods:
        out["probe"] = probe_directions(train.mu, train.labels, names, valid_latents=valid.mu,
                                        valid_labels=valid.labels, min_count=config.min_count, C=config.C,
                                        n_jobs=config.n_jobs)
    if "conditional" in config.methods:
        base = out[config.conditional_base]
        out["conditional"] = conditional_directions(base, usable_conditions(config.conditional, base))
    for method, dirs in out.items():
        if method != "probe":  # probes are scored inside probe_directions
            dirs.scores = score_directions(dirs, valid.mu, valid.labels, names)
        dirs.info.update(fit_split=config.fit_split, valid_split=config.valid_split)
    return out


def plot_scores(directions: dict[str, AttributeDirections], figures: Path) -> Path:
    """Held-out balanced accuracy per attribute and method: a horizontal bar chart PNG and its CSV."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    frame = pd.DataFrame(
        [{"attribute": n, "method": m, **d.scores.get(n, {})} for m, d in directions.items() for n in d.names]
    )
    with atomic_path(figures / "probe-accuracy.csv") as tmp:
        frame.to_csv(tmp, index=False)
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
    with atomic_path(figures / "probe-accuracy.png") as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return figures / "probe-accuracy.png"


def plot_cosines(directions: AttributeDirections, figures: Path) -> Path:
    """Cosine similarity between every pair of directions: a heat map PNG and its CSV."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frame = cosine_similarity_frame(directions.names, directions.vectors)
    with atomic_path(figures / "direction-cosine.csv") as tmp:
        frame.to_csv(tmp)
    k = len(frame)
    fig, ax = plt.subplots(figsize=(0.3 * k + 3, 0.3 * k + 2.5))
    image = ax.imshow(frame.to_numpy(), cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set_xticks(range(k), frame.columns, rotation=90, fontsize=7)
    ax.set_yticks(range(k), frame.index, fontsize=7)
    ax.set_title(f"cosine similarity of {directions.method} directions")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    with atomic_path(figures / "direction-cosine.png") as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return figures / "direction-cosine.png"


def main(config: FitConfig) -> Path:
    """Encode, fit, save the direction files and figures; returns the run folder."""
    ctx = init_distributed(config.device)
    try:
        run_dir = Path(config.run) if config.run else latest_run_dir()
        latents = run_latents(run_dir, config=config, device=ctx.device)
        if not ctx.is_main:
            return run_dir
        save_config(config, run_dir / "fit_config.json")
        checkpoint = run_dir / CHECKPOINT_FILE
        fitted = fit_all(latents, config)
        for method, dirs in fitted.items():
            dirs.with_checkpoint(checkpoint, sha256=latents.checkpoint_sha256).save(run_dir / f"directions-{method}.pt")
            print(f"{method}: {len(dirs)} directions -> {run_dir / f'directions-{method}.pt'}"
                  + (f" (left out: {dirs.dropped})" if dirs.dropped else ""))
        figures = run_dir / "figures"
        figures.mkdir(exist_ok=True)
        plot_scores(fitted, figures)
        plot_cosines(fitted.get("probe") or next(iter(fitted.values())), figures)
        summary = "\n\n".join(f"## {m}\n\n{d.to_frame().round(4).to_string()}" for m, d in fitted.items())
        atomic_write_text(summary + "\n", run_dir / "directions-summary.txt")
        return run_dir
    finally:
        shutdown_distributed()


def parse_args(argv: list[str] | None = None) -> FitConfig:
    defaults = FitConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default=defaults.run, help="VAE run folder (default: the latest)")
    p.add_argument("--fit-split", default=defaults.fit_split)
    p.add_argument("--valid-split", default=defaults.valid_split)
    p.add_argument("--min-count", type=int, default=defaults.min_count)
    p.add_argument("--methods", nargs="+", default=defaults.methods, choices=METHODS)
    p.add_argument("--conditional", default=None,
                   help='JSON dict attribute -> conditions, e.g. \'{"Blond_Hair": ["Male"]}\' (default: built-in)')
    p.add_argument("--conditional-base", default=defaults.conditional_base, choices=METHODS[:3])
    p.add_argument("--balance-on", nargs="*", default=defaults.balance_on)
    p.add_argument("--C", type=float, default=defaults.C)
    p.add_argument("--n-jobs", type=int, default=defaults.n_jobs)
    p.add_argument("--batch-size", type=int, default=defaults.batch_size)
    p.add_argument("--device", default=defaults.device)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--no-reuse-latents", dest="reuse_latents", action="store_false")
    args = vars(p.parse_args(argv))
    if args["conditional"] is None:
        args["conditional"] = defaults.conditional
    else:
        try:
            args["conditional"] = json.loads(args["conditional"])
        except json.JSONDecodeError as e:
            p.error(f"--conditional: not JSON ({e}): {args['conditional']!r}")
    return FitConfig(**args)


if __name__ == "__main__":
    with warnings.catch_warnings():
        warnings.simplefilter("always")  # left-out attributes must be seen
        main(parse_args())
