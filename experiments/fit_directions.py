"""Encode a VAE run's whole cache (latents.pt, reused while current) and fit attribute directions of every kind.

    python -m experiments.fit_directions --run runs/001-vae            # the latest run when --run is left out
    torchrun --nproc-per-node 4 -m experiments.fit_directions --run-dir ...  # encoding sharded over ranks

Writes into the run folder: latents.pt, directions-{mean,balanced,probe,conditional}.pt, fit_config.json,
directions-summary.txt and figures/probe-accuracy, figures/direction-cosine (PNG + CSV).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from attributes.fit import FitConfig
from evaluation.figures import direction_figures
from pipeline.cli import parse_config, run_folder_field, run_script
from pipeline.distributed import init_distributed, shutdown_distributed
from pipeline.run import Run


@dataclass
class FitScript:
    """Which run, on which device, and the fitting settings."""

    run: str | None = run_folder_field()
    device: str = "auto"
    encode_batch: int | None = field(default=None, metadata={"help": "encoding batch; None = 4096 CUDA, 64 CPU"})
    compile: bool = field(default=False, metadata={"help": "torch.compile the encoder"})
    fit: FitConfig = field(default_factory=FitConfig, metadata={"flatten": ""})


def main(config: FitScript) -> Path:
    """Encode, fit and save the directions and their figures; returns the run folder."""
    ctx = init_distributed(config.device)
    try:
        run = Run.open(config.run)
        run.check_writable("fit_directions")
        run.latents(ctx.device, batch_size=config.encode_batch, compile_model=config.compile)
        fitted = run.fit_directions(config.fit, ctx.device)
        everywhere = set.intersection(*(set(d.dropped) for d in fitted.values())) if fitted else set()
        for method, dirs in fitted.items():  # what every kind left out is in the fitting's warning, once
            extra = [name for name in dirs.dropped if name not in everywhere]
            print(f"{method}: {len(dirs)} directions -> {run.directions_path(method)}"
                  + (f" (also left out: {extra})" if extra else ""))
        if fitted:
            direction_figures(fitted, run.figures_dir)
        return run.dir
    finally:
        shutdown_distributed()


if __name__ == "__main__":
    run_script("fit_directions", main, parse_config(FitScript, description=__doc__))  # each warning shown once
