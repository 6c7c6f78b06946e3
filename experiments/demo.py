"""The whole pipeline in one command (`make demo`): faces -> cache -> VAE -> directions -> judge -> evaluation -> figures.

    python -m experiments.demo                       # procedural faces: sized for 2 CPU cores, CelebA-sized on a GPU
    python -m experiments.demo --quick               # tiny sizes: a smoke test of every stage
    CELEBA_ROOT=/data/celeba python -m experiments.demo   # real CelebA, larger sizes (a GPU when there is one)

Each stage is one library call, and one `Run` is handed from stage to stage: the trained model, the cache and the
latents stay in memory instead of being reloaded, re-hashed or re-encoded. What exists already is reused (a generated
dataset, a matching cache, a judge trained on the same cache fingerprint), so a second demo only retrains the VAE.
"""
from __future__ import annotations

import dataclasses
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from attributes.fit import FitConfig
from data.cache import load_cache
from data.prepare import PrepareConfig, prepare_cache
from evaluation.edits import EvalConfig, evaluate_run
from evaluation.figures import FiguresConfig, direction_figures, edit_figures
from evaluation.report import headline_lines, write_evaluation
from models.classifier import JudgeConfig
from pipeline.cli import parse_config, run_script
from pipeline.distributed import DistributedContext, pick_device
from pipeline.training import TrainConfig, train


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


# Strengths the per-attribute choice is made among on the procedural faces: the default candidates less 0.5, which
# reaches 90 % success for no attribute there (evaluation.json's chosen_strengths) and costs a seventh of the choice.
SYNTHETIC_CANDIDATES = (1.0, 1.5, 2.0, 2.5, 3.0, 4.0)

# Stage settings of each preset: "synthetic" (procedural faces, no GPU) is sized for 2 CPU cores; a CUDA GPU gets
# "synthetic-gpu" or "celeba"; "quick" is a smoke test of every stage.
PRESETS: dict[str, dict[str, dict]] = {
    "synthetic": dict(prepare=dict(generate=10000, size=64), train=dict(epochs=16, batch_size=64, latent_dim=128),
                      judge=dict(epochs=8), fit=dict(min_count=20),
                      evaluate=dict(eval_faces=300, counterfactual_faces=80,
                                    strength_faces=160, strength_candidates=SYNTHETIC_CANDIDATES)),
    "celeba": dict(prepare=dict(size=64), train=dict(epochs=20, batch_size=128, latent_dim=128), judge=dict(epochs=5),
                   fit=dict(min_count=20), evaluate=dict(eval_faces=2500, counterfactual_faces=0)),
    "celeba-cpu": dict(prepare=dict(size=64), train=dict(epochs=2, batch_size=64, max_train_images=30000),
                       judge=dict(epochs=2, max_train_images=30000), fit=dict(min_count=20),
                       evaluate=dict(eval_faces=500, counterfactual_faces=0)),
    # A CUDA GPU without CelebA: a CelebA-sized procedural set at the "celeba" preset's sizes.
    "synthetic-gpu": dict(prepare=dict(generate=202_599, size=64), synthetic_root="datasets/synthetic-celeba-size",
                          train=dict(epochs=20, batch_size=256, latent_dim=128), judge=dict(epochs=3),
                          fit=dict(min_count=20),
                          evaluate=dict(eval_faces=2500, counterfactual_faces=500,
                                        strength_faces=1000)),
    "quick": dict(prepare=dict(generate=300, size=32), synthetic_root="datasets/synthetic-quick",
                  train=dict(epochs=1, batch_size=32, latent_dim=64),
                  judge=dict(epochs=2, widths=(8, 16, 32)), fit=dict(min_count=5),
                  evaluate=dict(eval_faces=24, counterfactual_faces=8,
                                strength_faces=16, strength_candidates=(1.0, 2.0))),
}


def resolve(config: DemoConfig) -> tuple[str, DemoConfig]:
    """(preset name, the config with every stage config filled in from the preset, the top-level sizes on top)."""
    celeba_root = config.celeba_root or os.environ.get("CELEBA_ROOT") or None
    cuda = pick_device(config.device).type == "cuda"
    if config.quick:
        preset = "quick"
    elif celeba_root:
        preset = "celeba" if cuda else "celeba-cpu"
    else:
        preset = "synthetic-gpu" if cuda else "synthetic"
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
        **{**p["evaluate"], **({"eval_faces": config.eval_faces} if config.eval_faces else {})})
    return preset, dataclasses.replace(
        config, celeba_root=celeba_root, prepare=prepare, train=training, fit=config.fit or FitConfig(**p["fit"]),
        evaluate=evaluate, figures=config.figures or FiguresConfig(seed=config.seed))


@contextmanager
def stage(name: str, timings: dict[str, float]):
    """Print a stage banner and record its wall time."""
    print(f"\n=== {name} ===", flush=True)
    start = time.perf_counter()
    yield
    timings[name] = time.perf_counter() - start
    print(f"--- {name}: {timings[name]:.1f} s", flush=True)


def main(config: DemoConfig) -> Path:
    """Run every stage on one Run; returns the run folder."""
    preset, c = resolve(config)
    device = pick_device(config.device)
    print(f"demo ({preset} preset) on {device}: {c.prepare.celeba_root or f'{c.prepare.generate} procedural faces'}, "
          f"{c.prepare.size}x{c.prepare.size} px; VAE {c.train.epochs} epochs; evaluation on {c.evaluate.eval_faces} faces")
    timings: dict[str, float] = {}
    started = time.perf_counter()
    with stage("1. data: image cache", timings):
        cache_dir, reused = prepare_cache(c.prepare)
        cache = load_cache(cache_dir)
        print(f"{'reused' if reused else 'built'} {cache_dir}: {len(cache)} images (fingerprint {cache.fingerprint[:12]})")
    with stage("2. train the VAE", timings):
        run = train(dataclasses.replace(c.train, cache_dir=str(cache_dir)), DistributedContext(device=device), cache=cache)
    with stage("3. encode + fit attribute directions", timings):
        fitted = run.fit_directions(c.fit, device, progress=c.progress)
        direction_figures(fitted, run.figures_dir)
    with stage("4. judge + evaluation", timings):
        table, summary, judge_report = evaluate_run(run, c.evaluate, device)
        write_evaluation(run, table, summary, judge_report, c.evaluate)
    with stage("5. figures", timings):
        edit_figures(run, c.figures, device)
    print("\n=== done ===")
    for name, seconds in timings.items():
        print(f"  {name:<36} {seconds:7.1f} s")
    print(f"  {'total':<36} {time.perf_counter() - started:7.1f} s")
    print("\n".join(headline_lines(table)))
    print(f"reconstruction PSNR {summary['fidelity']['psnr']:.2f} dB; run: {run.dir}; "
          f"evaluation: {run.path(run.EVAL_MD)}; figures: {run.figures_dir}/")
    return run.dir


if __name__ == "__main__":
    run_script("demo", main, parse_config(DemoConfig, description=__doc__))
