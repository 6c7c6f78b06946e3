"""Draw a run's figures from its artifacts (checkpoint, latents, directions, metrics); never trains anything.

    python -m experiments.make_figures --run runs/003-vae [--pdf]

Writes into <run>/figures/, each PNG (and PDF with --pdf) with the data behind it as CSV: edit-grid, strength-sweep,
multi-edit, interpolation, prior-samples, probe-accuracy, direction-cosine and curves.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from evaluation.figures import FiguresConfig, direction_figures, edit_figures
from pipeline.cli import parse_config, run_folder_field, run_script
from pipeline.distributed import pick_device
from pipeline.run import Run
from pipeline.training import plot_curves


@dataclass
class FiguresScript:
    """Which run, on which device, and what to draw."""

    run: str | None = run_folder_field()
    device: str = "auto"
    figures: FiguresConfig = field(default_factory=FiguresConfig, metadata={"flatten": ""})


def main(config: FiguresScript) -> Path:
    """Draw every figure of a run into <run>/figures/; returns that folder."""
    run, device = Run.open(config.run), pick_device(config.device)
    run.check_writable("make_figures")
    run.check_outputs(Run.EVALUATION)  # the edit figures' default kind is read from evaluation.csv
    written = edit_figures(run, config.figures, device)
    if run.direction_methods():
        written += direction_figures(run.all_directions(), run.figures_dir)
    else:
        print(f"{run.dir}: no directions-*.pt, so no edit figures; run `python -m experiments.fit_directions`")
    metrics = run.path(Run.METRICS_CSV)
    if metrics.is_file():
        written += plot_curves(pd.read_csv(metrics), run.figures_dir)
    for path in written:
        if path.suffix in (".png", ".pdf"):
            print(f"figure: {path}")
    return run.figures_dir


if __name__ == "__main__":
    run_script("make_figures", main, parse_config(FiguresScript, description=__doc__))
