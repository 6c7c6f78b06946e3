"""One benchmark run: set up, run the configured stages, check the goals, write results.json, summary.md and the
results JSON under out_dir."""
from __future__ import annotations

import dataclasses
import datetime
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from benchmarks.config import STAGES, BenchmarkConfig
from benchmarks.context import Context, setup
from benchmarks.harness import load_average, machine_info
from benchmarks.report import SpeedGoals, evaluate_goals, results_path, summary_markdown
from benchmarks.profiling import stage_profile
from benchmarks.scaling import stage_scaling
from benchmarks.stages import (stage_cache_build, stage_celeba_resident, stage_directions, stage_encode, stage_precision,
                               stage_train)
from data.io import atomic_write_json, atomic_write_text

RESULTS_FORMAT_VERSION = 1
STAGE_FUNCTIONS = {"encode": stage_encode, "resident": stage_celeba_resident, "cache_build": stage_cache_build,
                   "train": stage_train, "directions": stage_directions, "scaling": stage_scaling,
                   "profile": stage_profile, "precision": stage_precision}
STAGE_KEYS = {"resident": "celeba_resident"}  # the key a stage's results go under, where it differs from its name
CUDA_ONLY = ("resident",)
PARTIAL_RESULTS = "results.partial.json"


def run_stages(ctx: Context, after_each: Callable[[dict[str, Any]], None] = lambda stages: None) -> dict[str, Any]:
    """The configured stages in STAGES order, each with its own wall time; `after_each(stages so far)` runs after
    every stage, so a run stopped midway keeps what it finished."""
    stages: dict[str, Any] = {}
    for name in tqdm([s for s in STAGES if s in ctx.config.stages], desc="benchmark stages"):
        if name in CUDA_ONLY and ctx.device.type != "cuda":
            tqdm.write(f"stage {name}: CUDA only, skipped on {ctx.device}")
            continue
        started = time.perf_counter()
        key = STAGE_KEYS.get(name, name)
        stages[key] = STAGE_FUNCTIONS[name](ctx)
        stages[key]["stage_wall_s"] = round(time.perf_counter() - started, 2)
        tqdm.write(f"stage {name} done in {stages[key]['stage_wall_s']} s")
        after_each(stages)
    return stages


def _describe(ctx: Context) -> dict[str, Any]:
    """The dataset and model the numbers are for."""
    cfg = ctx.config
    return {
        "dataset": {"kind": ctx.dataset_kind, "root": str(ctx.root), "num_images": ctx.num_images, "size": cfg.size,
                    "baseline_crop": ctx.crop, "encode_batch_size": ctx.encode_batch_size, "workers": ctx.workers},
        "model": {"config": dataclasses.asdict(ctx.reference.config),
                  "weights": cfg.checkpoint or "random init (seeded)",
                  "parameters": sum(p.numel() for p in ctx.reference.parameters())},
    }


def run_benchmark(config: BenchmarkConfig, goals: SpeedGoals, device: torch.device, run_dir: Path) -> dict[str, Any]:
    """Run the configured stages on `device`; write results.json + summary.md in `run_dir` and the JSON under
    out_dir. Returns the results, with "summary" (the Markdown) and "results_file" added."""
    load_before = load_average()
    threads_before = torch.get_num_threads()  # training sets the thread count and leaves it set: restored below
    try:
        if config.threads:
            torch.set_num_threads(config.threads)
        ctx = setup(config, device, run_dir)
        started = time.perf_counter()  # the stages' total, without the dataset and reference-cache set-up
        partial = {"complete": False, "config": dataclasses.asdict(config), "machine": machine_info(device)}
        stages = run_stages(ctx, lambda done: atomic_write_json({**partial, "stages": done}, run_dir / PARTIAL_RESULTS))
    finally:
        torch.set_num_threads(threads_before)
    now = datetime.datetime.now(datetime.timezone.utc)
    results = {
        "format_version": RESULTS_FORMAT_VERSION,
        "date": now.strftime("%Y-%m-%d"),
        "timestamp_utc": now.isoformat(timespec="seconds"),
        "machine": {**machine_info(device), "load_average_start": load_before, "load_average_end": load_average()},
        "config": dataclasses.asdict(config),
        **_describe(ctx),
        "stages": stages,
        "total_wall_s": round(time.perf_counter() - started, 1),
        "run_dir": str(run_dir),
    }
    results["goals"] = evaluate_goals(stages, device.type == "cuda", goals)
    summary = summary_markdown(results)
    atomic_write_json(results, run_dir / "results.json")
    atomic_write_text(summary, run_dir / "summary.md")
    out = results_path(Path(config.out_dir), results["date"], results["machine"]["description"])
    atomic_write_json(results, out)
    (run_dir / PARTIAL_RESULTS).unlink(missing_ok=True)  # results.json now holds every stage
    if not config.keep_work:
        shutil.rmtree(ctx.work, ignore_errors=True)
    return {**results, "summary": summary, "results_file": str(out)}
