"""The project's own paths as the benchmark times them: the encoder call and a training run.

The project's training run and fitting defaults are reached through the small adapter below only, so the
restructuring re-points them in one place.
"""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch

from attributes.encode import encode_images
from benchmarks.harness import measure

from attributes.fit import FitConfig
from pipeline.run import Run
from pipeline.training import TrainConfig, train

if TYPE_CHECKING:
    from benchmarks.context import Context


def _train_config(ctx: Context, cache_dir: Path, images: int, batch_size: int | None = None) -> TrainConfig:
    """A two-epoch training run on `images` train-split images of `cache_dir`, under the work folder."""
    base = TrainConfig()
    return dataclasses.replace(
        base, cache_dir=str(cache_dir), name="bench-train", epochs=2,
        batch_size=batch_size or ctx.config.train_batch_size or base.batch_size, max_train_images=images,
        device=str(ctx.device), seed=ctx.config.seed,
        runs_root=str(ctx.work / "train-runs"), log_images_every_epoch=False, threads=ctx.config.threads,
        progress=False,
    )


def _train_run(config: TrainConfig) -> tuple[Path, Path]:
    """One training run -> (its run folder, its metrics.csv)."""
    run = train(config)
    return run.dir, run.path(Run.METRICS_CSV)


def fit_defaults() -> FitConfig:
    """The direction-fitting defaults (splits, min_count, probe C and n_jobs) the directions stage uses."""
    return FitConfig()


# ---- the project's paths -------------------------------------------------------------------------------------------
def project_encode(ctx: Context, images, batch_size: int | None = None, resident: bool = False, amp: bool = True,
                   compiled: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The project's encoder call (compiled on CUDA by default here) -> (mu (N, D), logvar (N, D)).

    resident: the images already sit on the device and the latents stay there, so a timed run measures the
    encoder, not a device-to-host copy of the latents. amp / compiled (None = the benchmark's setting) switch the
    bf16 autocast and torch.compile off, to measure what each buys.
    """
    return encode_images(ctx.model, images, batch_size=batch_size or ctx.encode_batch_size, device=ctx.device,
                         compile_model=ctx.encode_compile if compiled is None else compiled, amp=amp,
                         keep_on_device=resident, progress=False)


def project_train(ctx: Context, cache_dir: Path, images: int, batch_size: int | None = None,
                  sample_tree: bool = False) -> dict[str, Any]:
    """One training run of two epochs; the second (warm, compiled) epoch is the throughput."""
    config = _train_config(ctx, cache_dir, images, batch_size)
    (run_dir, metrics_csv), stats = measure(lambda: _train_run(config), ctx.device, sample_tree)
    metrics = pd.read_csv(metrics_csv)
    warm, first = metrics.iloc[-1], metrics.iloc[0]
    trained = int(images // config.batch_size * config.batch_size)  # the last partial batch is dropped
    out = {
        **stats, "run_wall_s": stats["wall_s"], "wall_s": float(warm["time_s"]), "images": trained,
        "first_epoch_s": float(first["time_s"]), "batch_size": config.batch_size, "compile": config.compile,
    }
    if not ctx.config.keep_work:
        shutil.rmtree(run_dir, ignore_errors=True)
    return out
