"""The whole pipeline in one command (`make demo`): faces -> cache -> VAE -> directions -> judge -> evaluation -> figures.

    python -m experiments.demo                       # procedural faces, sized to finish in < 10 min on 2 CPU cores
    python -m experiments.demo --quick               # tiny sizes: a smoke test of every stage (~1 min)
    CELEBA_ROOT=/data/celeba python -m experiments.demo   # real CelebA, larger defaults (a GPU when there is one)

Every stage is the project's own script called through its `main(config)`; each reuses what is already there
(a generated dataset, a matching cache, a judge trained on the same cache), so a second demo run only retrains
the VAE.
"""
from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from attributes.artifact import METHODS
from experiments import evaluate, fit_directions, make_figures, prepare_data, train_vae
from experiments.common import pick_device
from models.classifier import JudgeConfig


@dataclass
class DemoConfig:
    """Sizes of every stage; None fields take the preset for the data source (procedural / CelebA / quick)."""

    celeba_root: str | None = None  # None: $CELEBA_ROOT if set, else procedural faces
    quick: bool = False  # tiny sizes for a smoke test
    n_images: int | None = None  # procedural faces to generate
    size: int | None = None  # image side
    epochs: int | None = None  # VAE epochs
    max_train_images: int | None = None
    batch_size: int | None = None
    latent_dim: int | None = None
    judge_epochs: int | None = None
    judge_max_train_images: int | None = None
    eval_images: int | None = None
    curve_images: int | None = None
    counterfactual_images: int | None = None
    strengths: tuple[float, ...] = (0.5, 1.0, 2.0, 3.0)
    methods: tuple[str, ...] = METHODS
    min_count: int | None = None  # fit_directions: fewest positives/negatives for a direction
    fit_jobs: int = -1  # fit_directions: joblib workers for the probes
    n_faces: int = 6  # rows of the edit figures
    synthetic_root: str | None = None  # default datasets/synthetic (datasets/synthetic-quick for --quick)
    cache_dir: str | None = None  # default prepare_data's (cache/synthetic-SIZE, cache/celeba-SIZE)
    runs_root: str = "runs"
    device: str = "auto"
    seed: int = 0
    workers: int | None = None
    progress: bool = True
    presets: dict = field(default_factory=dict, repr=False)  # filled in by resolve(): what was actually used


# The sizes of each preset. Procedural: 10k images at 64 px, 16 epochs: about 7 min on 2 idle CPU cores.
PRESETS = {
    "synthetic": dict(n_images=10000, size=64, epochs=16, max_train_images=None, batch_size=64, latent_dim=128,
                      judge_epochs=4, judge_max_train_images=None, eval_images=300, curve_images=150,
                      counterfactual_images=80, min_count=20),
    "celeba": dict(n_images=None, size=64, epochs=20, max_train_images=None, batch_size=128, latent_dim=128,
                   judge_epochs=5, judge_max_train_images=None, eval_images=2500, curve_images=500,
                   counterfactual_images=0, min_count=20),
    "celeba-cpu": dict(n_images=None, size=64, epochs=2, max_train_images=30000, batch_size=64, latent_dim=128,
                       judge_epochs=2, judge_max_train_images=30000, eval_images=500, curve_images=100,
                       counterfactual_images=0, min_count=20),
    "quick": dict(n_images=300, size=32, epochs=1, max_train_images=None, batch_size=32, latent_dim=32,
                  judge_epochs=2, judge_max_train_images=None, eval_images=24, curve_images=12,
                  counterfactual_images=8, min_count=5),
}


def resolve(config: DemoConfig) -> DemoConfig:
    """Fill the None fields from the preset for the data source (and device) and record them in `presets`."""
    celeba_root = config.celeba_root or os.environ.get("CELEBA_ROOT") or None
    if config.quick:
        preset = "quick"
    elif celeba_root:
        preset = "celeba" if pick_device(config.device).type == "cuda" else "celeba-cpu"
    else:
        preset = "synthetic"
    values = dict(PRESETS[preset])
    for key in values:
        if getattr(config, key) is not None:
            values[key] = getattr(config, key)
    synthetic_root = config.synthetic_root or ("datasets/synthetic-quick" if config.quick else "datasets/synthetic")
    cache_dir = config.cache_dir or ("cache/synthetic-quick-32" if config.quick and not celeba_root else None)
    resolved = DemoConfig(**{**config.__dict__, **values, "celeba_root": celeba_root, "synthetic_root": synthetic_root,
                             "cache_dir": cache_dir})
    resolved.presets = {"preset": preset, **values}
    return resolved


def _stage(name: str, timings: dict[str, float]):
    """Context manager that prints a stage banner and records its wall time."""
    from contextlib import contextmanager

    @contextmanager
    def run():
        print(f"\n=== {name} ===", flush=True)
        start = time.perf_counter()
        yield
        timings[name] = time.perf_counter() - start
        print(f"--- {name}: {timings[name]:.1f} s", flush=True)

    return run()


def main(config: DemoConfig) -> Path:
    """Run every stage; returns the run folder."""
    c = resolve(config)
    device = pick_device(c.device)
    source = f"CelebA at {c.celeba_root}" if c.celeba_root else f"{c.n_images} procedural faces in {c.synthetic_root}"
    print(
        f"demo ({c.presets['preset']} preset) on {device}: {source}, {c.size}x{c.size} px; VAE {c.epochs} epochs "
        f"(batch {c.batch_size}, latent {c.latent_dim}"
        + (f", at most {c.max_train_images} training images" if c.max_train_images else "")
        + f"); judge {c.judge_epochs} epochs; evaluation on {c.eval_images} test faces "
        f"({c.curve_images} for the strength curve{f', {c.counterfactual_images} with counterfactuals' if not c.celeba_root else ''})"
    )
    if device.type == "cpu":
        print(f"CPU threads: {torch.get_num_threads()}")
    timings: dict[str, float] = {}
    started = time.perf_counter()

    with _stage("1. data: image cache", timings):
        cache_dir = prepare_data.main(prepare_data.PrepareConfig(
            celeba_root=c.celeba_root, synthetic=c.n_images or 0, size=c.size, out=c.cache_dir,
            synthetic_root=c.synthetic_root, seed=c.seed, workers=c.workers,
        ))
    with _stage("2. train the VAE", timings):
        run_dir = train_vae.main(train_vae.TrainConfig(
            cache_dir=str(cache_dir), name="demo-quick" if c.quick else "demo", epochs=c.epochs, batch_size=c.batch_size,
            latent_dim=c.latent_dim, device=c.device, seed=c.seed, max_train_images=c.max_train_images,
            runs_root=c.runs_root,
        ))
    with _stage("3. fit attribute directions", timings):
        fit_directions.main(fit_directions.FitConfig(
            run=str(run_dir), methods=list(c.methods), min_count=c.min_count, device=c.device, n_jobs=c.fit_jobs,
        ))
    judge = JudgeConfig(epochs=c.judge_epochs, max_train_images=c.judge_max_train_images, seed=c.seed)
    if c.quick:
        judge.widths = (8, 16, 32)
    with _stage("4-5. judge + evaluation", timings):
        evaluate.main(evaluate.EvalConfig(
            run=str(run_dir), n_images=c.eval_images, curve_images=c.curve_images,
            counterfactual_images=c.counterfactual_images, strengths=c.strengths, device=c.device, seed=c.seed,
            judge=judge, progress=c.progress,
        ))
    with _stage("6. figures", timings):
        figures = make_figures.main(make_figures.FiguresConfig(run=str(run_dir), n_faces=c.n_faces, device=c.device,
                                                               seed=c.seed))
    total = time.perf_counter() - started
    print("\n=== done ===")
    for name, seconds in timings.items():
        print(f"  {name:<32} {seconds:7.1f} s")
    print(f"  {'total':<32} {total:7.1f} s")
    print(f"cache:      {cache_dir}  (judge: {Path(cache_dir) / 'judge.pt'})")
    print(f"run:        {run_dir}")
    print(f"evaluation: {run_dir / evaluate.EVAL_MD}")
    print(f"figures:    {figures}/  ({', '.join(sorted(p.name for p in figures.glob('*.png')))})")
    return run_dir


def parse_args(argv: list[str] | None = None) -> DemoConfig:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Unset sizes come from the preset: " + "; ".join(f"{k}: {v}" for k, v in PRESETS.items()))
    p.add_argument("--celeba-root", default=None, help="real CelebA (default: $CELEBA_ROOT, else procedural faces)")
    p.add_argument("--quick", action="store_true", help="tiny sizes: every stage in about a minute")
    for name in ("n_images", "size", "epochs", "max_train_images", "batch_size", "latent_dim", "judge_epochs",
                 "judge_max_train_images", "eval_images", "curve_images", "counterfactual_images", "min_count"):
        p.add_argument("--" + name.replace("_", "-"), type=int, default=None)
    p.add_argument("--strengths", type=float, nargs="+", default=list(DemoConfig.strengths))
    p.add_argument("--methods", nargs="+", default=list(DemoConfig.methods), choices=METHODS)
    p.add_argument("--runs-root", default=DemoConfig.runs_root)
    p.add_argument("--synthetic-root", default=None)
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--device", default=DemoConfig.device)
    p.add_argument("--seed", type=int, default=DemoConfig.seed)
    p.add_argument("--workers", type=int, default=None)
    a = vars(p.parse_args(argv))
    a["strengths"], a["methods"] = tuple(a["strengths"]), tuple(a["methods"])
    return DemoConfig(**a)


if __name__ == "__main__":
    main(parse_args())
