"""The demo's presets: every stage's settings for each data source and device, and `resolve`, which picks one.

    from evaluation.presets import DemoConfig, resolve
    preset, config = resolve(DemoConfig(quick=True))   # "quick", with config.prepare / train / fit / evaluate filled in

Here, not in pipeline/, because a preset sizes the evaluation too (EvalConfig, FiguresConfig), and pipeline/ does not
import evaluation/.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

from attributes.fit import FitConfig
from data.prepare import PrepareConfig
from evaluation.edits import EvalConfig
from evaluation.figures import FiguresConfig
from models.classifier import JudgeConfig
from models.vae import VAEConfig
from pipeline.distributed import pick_device
from pipeline.training import TrainConfig


@dataclass
class DemoConfig:
    """The data source and a few sizes; each stage's full config is nested (None = the preset's)."""

    celeba_root: str | None = field(default=None, metadata={"help": "real CelebA; None = $CELEBA_ROOT, else procedural"})
    quick: bool = field(default=False, metadata={"help": "tiny sizes: every stage in a minute or two"})
    generate: int | None = field(default=None, metadata={"help": "procedural faces to generate"})
    size: int | None = field(default=None, metadata={"help": "image side"})
    epochs: int | None = field(default=None, metadata={"help": "VAE epochs"})
    eval_faces: int | None = field(default=None, metadata={"help": "test faces the evaluation scores"})
    device: str = "auto"
    seed: int = 0
    runs_root: str = "runs"
    synthetic_root: str | None = field(default=None, metadata={"help": "None = the preset's, e.g. datasets/synthetic"})
    cache_dir: str | None = field(default=None, metadata={"help": "None = cache/celeba-SIZE or cache/SYNTHETIC-SIZE"})
    progress: bool = field(default=True, metadata={"cli": False})
    prepare: PrepareConfig | None = field(default=None, metadata={"cli": False})
    train: TrainConfig | None = field(default=None, metadata={"cli": False})
    fit: FitConfig | None = field(default=None, metadata={"cli": False})
    evaluate: EvalConfig | None = field(default=None, metadata={"cli": False})
    figures: FiguresConfig | None = field(default=None, metadata={"cli": False})


# The strengths the per-attribute choice is made among in the 2-core presets: a step under 1 flips too few faces for
# the judge to read the attribute, and each candidate costs a decode of every validation face for every kind and
# attribute.
CPU_CANDIDATES = (1.0, 1.5, 2.0, 3.0)

# Stage settings of each preset: "synthetic" (procedural faces, no GPU) is sized for 2 CPU cores; a CUDA GPU gets
# "synthetic-gpu" or "celeba"; "quick" is a smoke test of every stage.
PRESETS: dict[str, dict[str, dict]] = {
    "synthetic": dict(prepare=dict(generate=10000, size=64),
                      train=dict(epochs=16, batch_size=64, model=VAEConfig(latent_dim=128)),
                      judge=dict(epochs=8), fit=dict(min_count=20),
                      evaluate=dict(eval_faces=300, counterfactual_faces=80, strength_faces=120,
                                    strength_candidates=CPU_CANDIDATES, target_success=0.93)),
    "celeba": dict(prepare=dict(size=64), train=dict(epochs=20, batch_size=128, model=VAEConfig(latent_dim=128)),
                   judge=dict(epochs=5), fit=dict(min_count=20),
                   evaluate=dict(eval_faces=2500, counterfactual_faces=0, judge_counterfactuals=0.0)),
    # Real CelebA on a 2-core CPU: every stage sized to finish in about a quarter of an hour (README, Results)
    "celeba-cpu": dict(prepare=dict(size=64), train=dict(epochs=2, batch_size=64, max_train_images=30000),
                       judge=dict(epochs=2, max_train_images=30000), fit=dict(min_count=20),
                       evaluate=dict(eval_faces=300, counterfactual_faces=0, judge_counterfactuals=0.0,
                                     strength_faces=120, strength_candidates=CPU_CANDIDATES)),
    # A CUDA GPU without CelebA: a CelebA-sized procedural set at the "celeba" preset's sizes.
    "synthetic-gpu": dict(prepare=dict(generate=202_599, size=64), synthetic_root="datasets/synthetic-celeba-size",
                          train=dict(epochs=20, batch_size=256, model=VAEConfig(latent_dim=128)), judge=dict(epochs=3),
                          fit=dict(min_count=20),
                          evaluate=dict(eval_faces=2500, counterfactual_faces=500,
                                        strength_faces=1000)),
    "quick": dict(prepare=dict(generate=300, size=32), synthetic_root="datasets/synthetic-quick",
                  train=dict(epochs=1, batch_size=32, model=VAEConfig(latent_dim=64)),
                  judge=dict(epochs=2, widths=(8, 16, 32)), fit=dict(min_count=5),
                  evaluate=dict(eval_faces=24, counterfactual_faces=8,
                                strength_faces=16, strength_candidates=(1.0, 2.0))),
}


def preset_name(quick: bool, celeba: bool, cuda: bool) -> str:
    """The preset for a smoke test, real CelebA or procedural faces, on a CUDA GPU or not."""
    if quick:
        return "quick"
    if celeba:
        return "celeba" if cuda else "celeba-cpu"
    return "synthetic-gpu" if cuda else "synthetic"


def resolve(config: DemoConfig) -> tuple[str, DemoConfig]:
    """(preset name, the config with every stage config filled in from the preset, the top-level sizes on top)."""
    celeba_root = config.celeba_root or os.environ.get("CELEBA_ROOT") or None
    preset = preset_name(config.quick, bool(celeba_root), pick_device(config.device).type == "cuda")
    p = PRESETS[preset]
    sizes = {**p["prepare"], **({"generate": config.generate} if config.generate else {}),
             **({"size": config.size} if config.size else {})}
    synthetic_root = config.synthetic_root or p.get("synthetic_root", "datasets/synthetic")
    # Each procedural set has its own cache (cache/synthetic-64, cache/synthetic-quick-32, ...), so presets never
    # replace each other's.
    default_cache = None if celeba_root else f"cache/{Path(synthetic_root).name}-{sizes['size']}"
    prepare = config.prepare or PrepareConfig(
        celeba_root=celeba_root, **sizes, synthetic_root=synthetic_root, out=config.cache_dir or default_cache,
        seed=config.seed, progress=config.progress)
    training = config.train or TrainConfig(
        cache_dir=str(prepare.out_dir), name="demo-quick" if config.quick else "demo", device=config.device,
        seed=config.seed, runs_root=config.runs_root, progress=config.progress,
        **{**p["train"], **({"epochs": config.epochs} if config.epochs is not None else {})})
    evaluate = config.evaluate or EvalConfig(
        seed=config.seed, progress=config.progress, judge=JudgeConfig(seed=config.seed, **p["judge"]),
        second_judge=JudgeConfig(arch="residual", seed=config.seed, **p["judge"]),
        **{**p["evaluate"], **({"eval_faces": config.eval_faces} if config.eval_faces else {})})
    return preset, dataclasses.replace(
        config, celeba_root=celeba_root, prepare=prepare, train=training, fit=config.fit or FitConfig(**p["fit"]),
        evaluate=evaluate, figures=config.figures or FiguresConfig(seed=config.seed))
