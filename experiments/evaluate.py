"""Score a run's attribute edits the way STGAN/AttGAN do: an independent pixel-space judge, on held-out faces.

    python -m experiments.evaluate --run runs/003-vae            # default: the latest run
    python -m experiments.evaluate --n-images 500 --strengths 0.5 1 2

For each test face (a fixed, seeded subset) and each attribute, the attribute is flipped with STGAN's difference
vector (one non-zero entry; setting a hair colour clears the others, as STGAN's `check_attribute_conflict`
does), the latent is moved by every direction kind the run has (directions-{mean,probe,conditional,...}.pt), the
result is decoded and judged:
  success       the judge sees the target value on the edited image;
  preservation  the judge's verdict on every other attribute (bar those the edit sets on purpose) is the one it
                gave the plain reconstruction;
  fidelity      reconstruction PSNR/SSIM against the input;
  ground truth  on procedural faces: PSNR of the edit, and of the unedited reconstruction, against the true
                counterfactual re-rendered from the face's factors with the attribute flipped.
Every number is reported per direction kind and, as a curve, per edit strength. Results go into the run folder:
evaluation.csv (long format), evaluation.md, evaluation.json and figures/eval-*.png with CSVs beside them.
"""
from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from attributes.artifact import METHODS, AttributeDirections
from attributes.encode import encode_images
from data.cache import FaceCache, load_cache, to_float_images
from data.io import atomic_write_json, atomic_write_text, file_sha256
from experiments.common import CHECKPOINT_FILE, latest_run_dir, pick_device, run_cache_dir, save_config, save_figure
from models.classifier import JudgeConfig, judge_report_frame, train_judge
from models.metrics import psnr, ssim
from models.vae import ConvVAE

# The 13 attributes STGAN (Liu et al., CVPR 2019) and AttGAN report, in their order.
STGAN_ATTRIBUTES = (
    "Bald", "Bangs", "Black_Hair", "Blond_Hair", "Brown_Hair", "Bushy_Eyebrows", "Eyeglasses", "Male",
    "Mouth_Slightly_Open", "Mustache", "No_Beard", "Pale_Skin", "Young",
)
HAIR_COLOURS = ("Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair")
# STGAN's check_attribute_conflict: setting the key attribute to 1 sets these to 0.
CONFLICTS: dict[str, tuple[str, ...]] = {
    **{c: tuple(o for o in HAIR_COLOURS if o != c) for c in HAIR_COLOURS},
    "Bald": ("Bangs",),
    "Receding_Hairline": ("Bangs",),
    "Bangs": ("Bald", "Receding_Hairline"),
    "Straight_Hair": ("Wavy_Hair",),
    "Wavy_Hair": ("Straight_Hair",),
    "Mustache": ("No_Beard",),
    "No_Beard": ("Mustache",),
}
DIRECTIONS_GLOB = "directions-*.pt"
EVAL_CSV = "evaluation.csv"
EVAL_MD = "evaluation.md"
EVAL_JSON = "evaluation.json"
EVAL_CONFIG = "evaluation-config.json"
FIGURES_DIR = "figures"


@dataclass
class EvalConfig:
    """What to evaluate and on how many faces; sizes default to +-2 % error bars (2,500 faces)."""

    run: str | None = None  # run folder; None = the latest under runs/
    n_images: int = 2500  # faces from the split (all of it when smaller): 95 % half-width <= 2 % at p = 0.5
    curve_images: int | None = 500  # faces for the strengths other than default_strength (None = n_images)
    counterfactual_images: int | None = 500  # faces with a rendered ground-truth counterfactual (procedural only)
    strengths: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0, 3.0)
    default_strength: float = 2.0  # the headline table; on the procedural faces success crosses 90 % near 2 steps
    methods: tuple[str, ...] | None = None  # direction kinds to score; None = every directions-*.pt in the run
    attributes: tuple[str, ...] | None = None  # None = every attribute the directions cover (STGAN's 13 first)
    mode: str = "offset"  # attributes.edit_latents mode; offset = STGAN's att_diff * step * strength
    split: str = "test"
    batch_size: int = 256
    device: str = "auto"
    seed: int = 0
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    force_judge: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.judge, dict):  # from JSON
            self.judge = JudgeConfig(**self.judge)
        self.strengths = tuple(float(s) for s in self.strengths)
        self.default_strength = float(self.default_strength)
        if self.default_strength not in self.strengths:
            self.strengths = tuple(sorted((*self.strengths, self.default_strength)))
        if self.methods is not None:
            self.methods = tuple(self.methods)
        if self.attributes is not None:
            self.attributes = tuple(self.attributes)
        if self.n_images < 1:
            raise ValueError(f"EvalConfig.n_images must be >= 1, got {self.n_images}")


@dataclass
class RunArtifacts:
    """What a trained run folder holds, loaded: the VAE, its cache and every directions file."""

    run_dir: Path
    model: ConvVAE
    cache: FaceCache
    directions: dict[str, AttributeDirections]  # method -> directions, in a fixed order


def load_run(run_dir: str | Path | None, device: torch.device | str = "cpu", methods: Sequence[str] | None = None) -> RunArtifacts:
    """Load a run folder's checkpoint, cache (from its config.json) and directions-*.pt files."""
    run_dir = Path(run_dir) if run_dir else latest_run_dir()
    checkpoint_path = run_dir / CHECKPOINT_FILE
    if not checkpoint_path.is_file():
        raise FileNotFoundError(f"{run_dir}: no {CHECKPOINT_FILE}; train one with `python -m experiments.train_vae`")
    cache_dir = run_cache_dir(run_dir)
    cache = load_cache(cache_dir)
    model = ConvVAE.from_checkpoint(checkpoint_path, map_location=device)
    if model.config.image_size != cache.size:
        raise ValueError(
            f"{checkpoint_path}: model image size {model.config.image_size} != cache {cache_dir} size {cache.size}"
        )
    found = {p.stem.removeprefix("directions-"): p for p in sorted(run_dir.glob(DIRECTIONS_GLOB))}
    if methods is not None:
        missing = [m for m in methods if m not in found]
        if missing:
            raise FileNotFoundError(
                f"{run_dir}: no directions file for {missing} (found {sorted(found) or 'none'}); "
                "run `python -m experiments.fit_directions`"
            )
        found = {m: found[m] for m in methods}
    ranked = sorted(found, key=lambda m: (METHODS.index(m) if m in METHODS else len(METHODS), m))
    directions = {m: AttributeDirections.load(found[m]) for m in ranked}
    digest = file_sha256(checkpoint_path) if any(d.checkpoint_sha256 for d in directions.values()) else None
    stale = [m for m, d in directions.items() if d.checkpoint_sha256 and d.checkpoint_sha256 != digest]
    if stale:  # e.g. training was resumed after the directions were fitted
        raise ValueError(
            f"{run_dir}: directions {stale} were fitted on another version of {CHECKPOINT_FILE}; "
            f"refit them with `python -m experiments.fit_directions --run {run_dir}`"
        )
    return RunArtifacts(run_dir=run_dir, model=model, cache=cache, directions=directions)


def eval_rows(cache: FaceCache, split: str, n: int, seed: int) -> np.ndarray:
    """A fixed, seeded random subset (in random order) of a split's row positions; prefixes are subsets too."""
    rows = cache.split_indices(split)
    if len(rows) == 0:
        raise ValueError(f"{cache.directory}: split {split!r} is empty")
    return np.random.default_rng(seed).permutation(rows)[: min(n, len(rows))]


@torch.inference_mode()
def decode_batched(model: ConvVAE, z: torch.Tensor, batch_size: int, device: torch.device) -> torch.Tensor:
    """decode(z) in batches; images (N, 3, S, S) in [-1, 1] on the CPU."""
    model.eval()
    out = [model.decode(z[s : s + batch_size].to(device)).float().clamp(-1, 1).cpu() for s in range(0, z.shape[0], batch_size)]
    return torch.cat(out)


@torch.inference_mode()
def decode_and_judge(
    model: ConvVAE,
    judge: torch.nn.Module,
    z: torch.Tensor,
    batch_size: int,
    device: torch.device,
    reference: torch.Tensor | None = None,
    reference_rows: torch.Tensor | None = None,
) -> tuple[np.ndarray, torch.Tensor]:
    """Decode latents (N, D) batch by batch and judge each batch, never holding all N images.

    Returns the judge's verdicts (N, K) bool and, when `reference` images (M, 3, S, S) are given with
    `reference_rows` (N,) (row of `reference` each latent is compared with; rows >= M are skipped), the PSNR of
    each decoded image against its reference (N,), NaN where there is none.
    """
    model.eval()
    verdicts, psnrs = [], torch.full((z.shape[0],), float("nan"))
    for s in range(0, z.shape[0], batch_size):
        images = model.decode(z[s : s + batch_size].to(device)).float().clamp(-1, 1)  # (B, 3, S, S)
        verdicts.append(judge.predict(images, max(batch_size, 1)).cpu())
        if reference is not None:
            rows = reference_rows[s : s + batch_size]
            have = rows < reference.shape[0]
            if have.any():
                psnrs[s : s + batch_size][have] = psnr(images[have.to(images.device)].cpu(), reference[rows[have]])
    out = torch.cat(verdicts) if verdicts else torch.zeros(0, len(judge.attribute_names), dtype=torch.bool)
    return out.numpy(), psnrs


def flip_changes(name: str, source: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """STGAN's target for flipping `name`: (N, K) bool target labels from source (N, K) bool in `names` order.

    The named attribute is negated; where it becomes 1, attributes that conflict with it (other hair colours,
    Bangs vs Bald, ...) are set to 0.
    """
    names = list(names)
    target = np.array(source, dtype=bool, copy=True)
    j = names.index(name)
    target[:, j] = ~target[:, j]
    for other in CONFLICTS.get(name, ()):
        if other in names:
            target[target[:, j], names.index(other)] = False
    return target


def binomial_halfwidth(p: float, n: int) -> float:
    """95 % normal-approximation half-width of a proportion."""
    return 1.96 * math.sqrt(max(p * (1 - p), 0.0) / n) if n else float("nan")


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


# ---- the evaluation ---------------------------------------------------------------------------------------------
def evaluate_edits(
    model: ConvVAE,
    cache: FaceCache,
    directions: dict[str, AttributeDirections],
    judge: torch.nn.Module,
    config: EvalConfig,
    device: torch.device,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The long table (method, attribute, strength, success, preservation, psnr_edit_vs_cf, psnr_recon_vs_cf, n, ...)
    and a summary dict (fidelity, judge accuracy on the evaluated originals, sizes)."""
    judge_names = list(judge.attribute_names)
    covered = [n for d in directions.values() for n in d.names]
    if config.attributes is not None:
        unknown = [a for a in config.attributes if a not in covered or a not in judge_names]
        if unknown:
            raise ValueError(f"attributes {unknown} are not covered by both the directions and the judge ({judge_names})")
        attributes = list(config.attributes)
    else:
        rest = [a for a in judge_names if a in covered and a not in STGAN_ATTRIBUTES]
        attributes = [a for a in STGAN_ATTRIBUTES if a in covered and a in judge_names] + rest
    if not attributes:
        raise ValueError("no attribute is covered by both the directions and the judge")

    rows = eval_rows(cache, config.split, config.n_images, config.seed)
    n = len(rows)
    n_curve = min(n, config.curve_images or n)
    images_u8 = torch.from_numpy(np.ascontiguousarray(cache.images[rows]))  # (n, 3, S, S) uint8
    truth = cache.table[judge_names].to_numpy(dtype=bool)[rows]  # (n, Kj) ground-truth labels
    images = to_float_images(images_u8)  # (n, 3, S, S)

    mu, _ = encode_images(model, images_u8, batch_size=config.batch_size, device=device, progress=config.progress)  # (n, D)
    recon = decode_batched(model, mu, config.batch_size, device)  # (n, 3, S, S)
    recon_psnr, recon_ssim = psnr(recon, images), ssim(recon, images) if cache.size >= 11 else None
    verdict_input = judge.predict(images, config.judge.eval_batch_size).cpu().numpy()  # (n, Kj)
    verdict_recon = judge.predict(recon, config.judge.eval_batch_size).cpu().numpy()

    root = synthetic_root(cache)
    factors = None
    n_cf = 0
    if root is not None and config.counterfactual_images != 0:
        from data.synthetic import SYNTHETIC_ATTRIBUTES, load_factors

        factors = load_factors(root)
        n_cf = min(n, config.counterfactual_images or n)
        image_ids = [str(i) for i in cache.table.index[rows[:n_cf]]]

    records = []
    jobs = [(a, m) for a in attributes for m, d in directions.items() if a in d.names]
    bar = tqdm(total=len(jobs) * len(config.strengths), desc="evaluate edits", unit="edit", disable=not config.progress)
    for attribute in attributes:
        ja = judge_names.index(attribute)
        target_all = flip_changes(attribute, truth, judge_names)  # (n, Kj)
        intended = target_all != truth  # attributes set on purpose, excluded from preservation
        keep = ~intended
        cf = None
        if factors is not None:
            synth = set(SYNTHETIC_ATTRIBUTES)
            changes = [  # the edited attribute first, then what the conflict rules clear
                {attribute: bool(target_all[i, ja])}
                | {judge_names[k]: bool(target_all[i, k]) for k in np.flatnonzero(intended[i]) if judge_names[k] in synth}
                for i in range(n_cf)
            ]
            cf = render_counterfactuals(factors, image_ids, changes, cache.size, cache.meta.get("crop"),
                                        config.progress)  # (n_cf, 3, S, S)
            recon_cf_psnr = psnr(recon[:n_cf], cf)  # (n_cf,)
        for method, dirs in directions.items():
            if attribute not in dirs.names:
                continue
            cols = [judge_names.index(name) for name in dirs.names]  # directions' names are cache attributes
            source = torch.from_numpy(truth[:, cols])  # (n, Kd)
            target = torch.from_numpy(target_all[:, cols])
            # every strength of this method in one stream of latents, decoded and judged in large batches:
            # the default strength on every face, the curve on a prefix (the same faces at every strength)
            sizes = [n if strength == config.default_strength else n_curve for strength in config.strengths]
            z = torch.cat([
                dirs.edit_by_labels(mu[:m], source[:m], target[:m], strength=strength, mode=config.mode)
                for strength, m in zip(config.strengths, sizes)
            ])  # (sum(sizes), D)
            cf_rows = torch.cat([torch.arange(m) for m in sizes]) if cf is not None else None
            verdicts, cf_psnr = decode_and_judge(model, judge, z, config.batch_size, device, cf, cf_rows)
            start = 0
            for strength, m in zip(config.strengths, sizes):
                verdict, edit_psnr = verdicts[start : start + m], cf_psnr[start : start + m]  # (m, Kj), (m,)
                start += m
                subsets = [(m, "all" if m == n else "curve")]
                if m == n and n_curve < n:
                    subsets.append((n_curve, "curve"))
                for size, subset in subsets:
                    success = float((verdict[:size, ja] == target_all[:size, ja]).mean())
                    same = (verdict[:size] == verdict_recon[:size]) & keep[:size]
                    m_cf = min(size, n_cf) if cf is not None else 0
                    records.append({
                        "method": method,
                        "attribute": attribute,
                        "strength": strength,
                        "success": success,
                        "preservation": float(same.sum() / max(keep[:size].sum(), 1)),
                        "psnr_edit_vs_cf": float(edit_psnr[:m_cf].mean()) if m_cf else float("nan"),
                        "psnr_recon_vs_cf": float(recon_cf_psnr[:m_cf].mean()) if m_cf else float("nan"),
                        "n": size,
                        "n_cf": m_cf,
                        "subset": subset,
                        "success_ci95": binomial_halfwidth(success, size),
                        "source_positive_rate": float(truth[:size, ja].mean()),
                    })
                bar.update(1)
    bar.close()
    table = pd.DataFrame.from_records(records)
    judge_on_inputs = {
        name: float((verdict_input[:, k] == truth[:, k]).mean()) for k, name in enumerate(judge_names)
    }
    summary = {
        "n_images": n,
        "curve_images": n_curve,
        "counterfactual_images": n_cf,
        "split": config.split,
        "attributes": attributes,
        "methods": list(directions),
        "fidelity": {
            "psnr": float(recon_psnr.mean()),
            "psnr_std": float(recon_psnr.std()) if n > 1 else 0.0,
            "ssim": float(recon_ssim.mean()) if recon_ssim is not None else None,
        },
        "judge_accuracy_on_inputs": judge_on_inputs,
        "judge_accuracy_on_reconstructions": {
            name: float((verdict_recon[:, k] == truth[:, k]).mean()) for k, name in enumerate(judge_names)
        },
        "synthetic_root": str(root) if root is not None else None,
    }
    return table, summary


# ---- reporting --------------------------------------------------------------------------------------------------
def _pct(x: float) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def _db(x: float) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2f}"


def markdown_table(frame: pd.DataFrame, fmt) -> str:
    """A DataFrame (index = rows) as a GitHub markdown table, values through `fmt`."""
    head = "| " + " | ".join([str(frame.index.name or "")] + [str(c) for c in frame.columns]) + " |"
    sep = "|" + "---|" * (len(frame.columns) + 1)
    body = ["| " + " | ".join([str(i)] + [fmt(v) for v in row]) + " |" for i, row in zip(frame.index, frame.to_numpy())]
    return "\n".join([head, sep, *body])


def headline(table: pd.DataFrame, strength: float) -> pd.DataFrame:
    """The rows measured on every evaluated face at one strength."""
    return table[(table["strength"] == strength) & (table["subset"] == "all")]


def curve_points(table: pd.DataFrame) -> pd.DataFrame:
    """Mean success / preservation over attributes per (method, strength), all on the same faces."""
    rows = table[table["subset"] == "curve"] if (table["subset"] == "curve").any() else table
    return rows.groupby(["method", "strength"], sort=False)[["success", "preservation"]].mean().reset_index()


def per_method(table: pd.DataFrame, value: str, strength: float) -> pd.DataFrame:
    """attribute x method pivot of `value` at one strength, with a final `mean` row."""
    at = headline(table, strength)
    pivot = at.pivot_table(index="attribute", columns="method", values=value, aggfunc="first", sort=False)
    order = list(dict.fromkeys(at["attribute"]))
    methods = list(dict.fromkeys(at["method"]))
    pivot = pivot.reindex(index=order, columns=methods)
    stgan = [a for a in STGAN_ATTRIBUTES if a in pivot.index]
    mean_all = pivot.mean(axis=0)
    if stgan and len(stgan) < len(pivot):  # the number comparable with STGAN/AttGAN's tables
        pivot.loc[f"**mean, STGAN's {len(stgan)}**"] = pivot.loc[stgan].mean(axis=0)
    pivot.loc["**mean**"] = mean_all
    pivot.index.name = "attribute"
    pivot.columns.name = None
    return pivot


UNRELIABLE_JUDGE = 0.8  # balanced test accuracy under which an attribute's edit scores are marked as doubtful


def write_markdown(table: pd.DataFrame, summary: dict, judge_report: dict, config: EvalConfig, path: Path) -> Path:
    """evaluation.md: success / preservation / ground-truth tables per attribute and method, fidelity, judge."""
    s = config.default_strength
    doubtful = {name for name, r in judge_report["attributes"].items()
                if not r["balanced_accuracy"] >= UNRELIABLE_JUDGE}

    def marked(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.copy()
        frame.index = [f"{i} †" if i in doubtful else i for i in frame.index]
        frame.index.name = "attribute"
        return frame

    n, n_curve = summary["n_images"], summary["curve_images"]
    lines = [
        f"# Edit evaluation of {summary.get('run_dir', '')}",
        "",
        f"{n} {summary['split']} faces (seed {config.seed}); 95 % half-width of a success rate at p = 0.5: "
        f"±{100 * binomial_halfwidth(0.5, n):.1f} %. Edits: STGAN difference vector (one attribute flipped; a new hair "
        f"colour clears the others), `{config.mode}` mode, strength {s:g}. Judge: pixel-space CNN trained on the cache's "
        f"train split (accuracy below).",
        "",
        f"## Edit success (%) at strength {s:g}: the judge sees the target value",
        "",
        markdown_table(marked(per_method(table, "success", s)), _pct),
        "",
        f"## Preservation (%) at strength {s:g}: the judge's verdict on the other attributes is unchanged",
        "",
        markdown_table(marked(per_method(table, "preservation", s)), _pct),
        "",
    ]
    if doubtful:
        lines += [f"† the judge's balanced test accuracy on this attribute is below {100 * UNRELIABLE_JUDGE:.0f} %: "
                  "its verdicts, and so these scores, are doubtful (see the judge table below).", ""]
    if summary["counterfactual_images"]:
        gt = per_method(table, "psnr_edit_vs_cf", s)
        base = headline(table, s).groupby("attribute", sort=False)["psnr_recon_vs_cf"].first()
        gt["reconstruction (no edit)"] = base.reindex(gt.index[:-1]).tolist() + [base.mean()]
        lines += [
            f"## Ground truth: PSNR (dB) against the true counterfactual, strength {s:g}",
            "",
            f"On {summary['counterfactual_images']} procedural faces re-rendered from their factors with the attribute "
            "flipped. An edit helps when its PSNR beats the unedited reconstruction's (last column).",
            "",
            markdown_table(gt, _db),
            "",
        ]
    curve = curve_points(table)
    curve_frame = curve.pivot(index="strength", columns="method", values=["success", "preservation"])
    methods = list(dict.fromkeys(table["method"]))
    curve_frame = curve_frame[[(v, m) for v in ("success", "preservation") for m in methods]]
    curve_frame.columns = [f"{m} {v}" for v, m in curve_frame.columns]
    curve_frame.index = [f"{x:g}" for x in curve_frame.index]
    curve_frame.index.name = "strength"
    lines += [
        f"## Strength curve (mean over attributes, on the first {n_curve} of the faces at every strength)",
        "",
        markdown_table(curve_frame, _pct),
        "",
        "## Fidelity",
        "",
        f"Reconstruction of the {n} evaluated faces: PSNR {summary['fidelity']['psnr']:.2f} dB"
        + (f", SSIM {summary['fidelity']['ssim']:.3f}" if summary["fidelity"]["ssim"] is not None else "")
        + ".",
        "",
        f"## Judge accuracy (%): test split ({judge_report.get('num_test', '?')} images), and on the evaluated faces "
        "and their reconstructions",
        "",
        f"Mean test accuracy {100 * judge_report['mean_accuracy']:.1f} %, balanced {100 * judge_report['mean_balanced_accuracy']:.1f} %.",
        "",
    ]
    jf = judge_report_frame(judge_report)[["accuracy", "balanced_accuracy", "positive_rate"]].copy()
    jf["on evaluated inputs"] = pd.Series(summary["judge_accuracy_on_inputs"])
    jf["on reconstructions"] = pd.Series(summary["judge_accuracy_on_reconstructions"])
    lines += [markdown_table(jf, _pct), ""]
    return atomic_write_text("\n".join(lines), path)


def plot_evaluation(table: pd.DataFrame, config: EvalConfig, figures: Path) -> list[Path]:
    """Success-vs-preservation curves over strength, and per-attribute success per method; PNG + CSV each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    figures.mkdir(parents=True, exist_ok=True)
    curve = curve_points(table)
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for method, part in curve.groupby("method", sort=False):
        part = part.sort_values("strength")
        ax.plot(100 * part["preservation"], 100 * part["success"], "o-", label=method)
        for _, r in part.iterrows():
            ax.annotate(f"{r['strength']:g}", (100 * r["preservation"], 100 * r["success"]), fontsize=7,
                        textcoords="offset points", xytext=(3, 3))
    ax.set_xlabel("preservation of other attributes (%)")
    ax.set_ylabel("edit success (%)")
    ax.set_title("edit strength trade-off (labels: strength)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    written += save_figure(fig, curve, figures / "eval-tradeoff")
    plt.close(fig)

    at = per_method(table, "success", config.default_strength)
    at = at[~at.index.str.startswith("**mean")]
    fig, ax = plt.subplots(figsize=(max(6, 0.55 * len(at) * max(1, len(at.columns)) ** 0.5 + 2), 4))
    width = 0.8 / max(len(at.columns), 1)
    x = np.arange(len(at))
    for i, method in enumerate(at.columns):
        ax.bar(x + (i - (len(at.columns) - 1) / 2) * width, 100 * at[method].to_numpy(), width, label=method)
    ax.set_xticks(x, at.index, rotation=45, ha="right")
    ax.set_ylabel("edit success (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"edit success per attribute (strength {config.default_strength:g})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    written += save_figure(fig, at.reset_index(), figures / "eval-success")
    plt.close(fig)

    if table["n_cf"].max() > 0:
        at = headline(table, config.default_strength)
        gt = at.pivot_table(index="attribute", columns="method", values="psnr_edit_vs_cf", sort=False)
        gt = gt.reindex(index=list(dict.fromkeys(at["attribute"])), columns=list(dict.fromkeys(at["method"])))
        gt["reconstruction"] = at.groupby("attribute", sort=False)["psnr_recon_vs_cf"].first().reindex(gt.index)
        fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(gt) + 2), 4))
        width = 0.8 / len(gt.columns)
        x = np.arange(len(gt))
        for i, column in enumerate(gt.columns):
            ax.bar(x + (i - (len(gt.columns) - 1) / 2) * width, gt[column].to_numpy(), width, label=column,
                   color="0.6" if column == "reconstruction" else None)
        ax.set_xticks(x, gt.index, rotation=45, ha="right")
        ax.set_ylabel("PSNR vs true counterfactual (dB)")
        lo = np.nanmin(gt.to_numpy())
        ax.set_ylim(max(0.0, lo - 3), None)
        ax.set_title(f"ground truth: edit vs counterfactual (strength {config.default_strength:g})")
        ax.legend(fontsize=8)
        fig.tight_layout()
        written += save_figure(fig, gt.reset_index(), figures / "eval-counterfactual-psnr")
        plt.close(fig)
    return written


def main(config: EvalConfig) -> Path:
    """Evaluate a run's edits; writes evaluation.{csv,md,json} and figures/eval-*.png into the run folder."""
    device = pick_device(config.device)
    start = time.perf_counter()
    run = load_run(config.run, device, config.methods)
    if not run.directions:
        raise FileNotFoundError(f"{run.run_dir}: no {DIRECTIONS_GLOB}; run `python -m experiments.fit_directions --run {run.run_dir}`")
    if config.attributes is not None:  # fail before the judge is trained
        covered = {n for d in run.directions.values() for n in d.names}
        unknown = [a for a in config.attributes if a not in covered or a not in run.cache.attribute_names]
        if unknown:
            raise ValueError(
                f"attributes {unknown} have no direction in {run.run_dir} (covered: {sorted(covered)})"
            )
    judge, judge_report = train_judge(run.cache, config.judge, device, force=config.force_judge, progress=config.progress)
    print(
        f"judge {'loaded from' if judge_report.get('reused') else 'trained, saved to'} {judge_report['path']}: "
        f"mean test accuracy {100 * judge_report['mean_accuracy']:.1f} % "
        f"(balanced {100 * judge_report['mean_balanced_accuracy']:.1f} %)"
    )
    table, summary = evaluate_edits(run.model, run.cache, run.directions, judge, config, device)
    summary["run_dir"] = str(run.run_dir)
    summary["judge"] = {k: v for k, v in judge_report.items() if k != "attributes"}
    summary["seconds"] = time.perf_counter() - start

    save_config(config, run.run_dir / EVAL_CONFIG)
    csv_path = atomic_write_text(table.to_csv(index=False), run.run_dir / EVAL_CSV)
    md_path = write_markdown(table, summary, judge_report, config, run.run_dir / EVAL_MD)
    atomic_write_json(summary, run.run_dir / EVAL_JSON)
    figures = plot_evaluation(table, config, run.run_dir / FIGURES_DIR)
    at = headline(table, config.default_strength).groupby("method", sort=False)[["success", "preservation"]].mean()
    for method, r in at.iterrows():
        print(f"  {method:>12}: success {100 * r['success']:.1f} %, preservation {100 * r['preservation']:.1f} %")
    print(f"fidelity: PSNR {summary['fidelity']['psnr']:.2f} dB on {summary['n_images']} faces")
    print(f"evaluation: {csv_path}\n            {md_path}")
    for path in figures:
        if path.suffix == ".png":
            print(f"figure:     {path}")
    return run.run_dir


def parse_args(argv: list[str] | None = None) -> EvalConfig:
    defaults = EvalConfig()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--run", default=None, help="run folder (default: the latest under runs/)")
    p.add_argument("--n-images", type=int, default=defaults.n_images)
    p.add_argument("--curve-images", type=int, default=defaults.curve_images, help="faces for the strength curve; 0 = all")
    p.add_argument("--counterfactual-images", type=int, default=defaults.counterfactual_images,
                   help="procedural faces with a rendered counterfactual; 0 = none")
    p.add_argument("--strengths", type=float, nargs="+", default=list(defaults.strengths))
    p.add_argument("--default-strength", type=float, default=defaults.default_strength)
    p.add_argument("--methods", nargs="+", default=None, help="direction kinds (default: all in the run)")
    p.add_argument("--attributes", nargs="+", default=None, help="attributes (default: all the directions cover)")
    p.add_argument("--mode", choices=("offset", "target"), default=defaults.mode)
    p.add_argument("--split", default=defaults.split, choices=("train", "valid", "test"))
    p.add_argument("--batch-size", type=int, default=defaults.batch_size)
    p.add_argument("--device", default=defaults.device)
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--judge-epochs", type=int, default=defaults.judge.epochs)
    p.add_argument("--judge-max-train-images", type=int, default=None)
    p.add_argument("--force-judge", action="store_true", help="retrain the judge even if <cache>/judge.pt matches")
    a = p.parse_args(argv)
    return EvalConfig(
        run=a.run, n_images=a.n_images, curve_images=a.curve_images or None,
        counterfactual_images=a.counterfactual_images, strengths=tuple(a.strengths),
        default_strength=a.default_strength, methods=tuple(a.methods) if a.methods else None,
        attributes=tuple(a.attributes) if a.attributes else None, mode=a.mode, split=a.split,
        batch_size=a.batch_size, device=a.device, seed=a.seed,
        judge=JudgeConfig(epochs=a.judge_epochs, max_train_images=a.judge_max_train_images),
        force_judge=a.force_judge,
    )


if __name__ == "__main__":
    main(parse_args())
