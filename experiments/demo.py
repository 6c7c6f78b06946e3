"""The whole pipeline in one command (`make demo`): faces -> cache -> VAE -> directions -> judge -> evaluation -> figures.

    python -m experiments.demo                       # procedural faces: sized for 2 CPU cores, CelebA-sized on a GPU
    python -m experiments.demo --quick               # tiny sizes: a smoke test of every stage
    CELEBA_ROOT=/data/celeba python -m experiments.demo   # real CelebA, larger sizes (a GPU when there is one)

Each stage is one library call, and one `Run` is handed from stage to stage: the trained model, the cache and the
latents stay in memory instead of being reloaded, re-hashed or re-encoded. What exists already is reused (a generated
dataset, a matching cache, judges trained on the same cache fingerprint); each demo trains, fits and evaluates a new
run, and writes its stages' wall times and the machine to demo.json. The presets, every stage's sizes per data
source and device, are `evaluation.presets`.
"""
from __future__ import annotations

import dataclasses
import time
from contextlib import contextmanager
from pathlib import Path

from benchmarks.harness import machine_info
from data.cache import load_cache
from data.io import atomic_write_json, file_sha256
from data.prepare import prepare_cache
from evaluation.edits import evaluate_run
from evaluation.figures import direction_figures, edit_figures
from evaluation.presets import DemoConfig, resolve
from evaluation.report import DEMO_FILE, headline_lines, write_evaluation
from pipeline.cli import parse_config, run_script
from pipeline.distributed import DistributedContext, pick_device
from pipeline.training import train


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
    timings["total"] = time.perf_counter() - started
    sizes = {"faces": c.prepare.generate if not c.prepare.celeba_root else "CelebA", "size": c.prepare.size,
             "epochs": c.train.epochs, "eval_faces": c.evaluate.eval_faces}
    atomic_write_json({"preset": preset, "sizes": sizes, "seconds": timings, "machine": machine_info(device),
                       "evaluation_sha256": file_sha256(run.path(run.EVAL_JSON))}, run.path(DEMO_FILE))
    print("\n=== done ===")
    for name, seconds in timings.items():
        print(f"  {name:<36} {seconds:7.1f} s")
    print("\n".join(headline_lines(table, judge_report)))
    print(f"reconstruction PSNR {summary['fidelity']['psnr']:.2f} dB; run: {run.dir}; "
          f"evaluation: {run.path(run.EVAL_MD)}; figures: {run.figures_dir}/")
    return run.dir


if __name__ == "__main__":
    run_script("demo", main, parse_config(DemoConfig, description=__doc__))
