"""Score a run's attribute edits the way STGAN/AttGAN do: an independent pixel-space judge, on held-out faces.

    python -m experiments.evaluate --run runs/003-vae --eval-faces 500      # default: the latest run

Writes evaluation.csv/.md/.json and figures/eval-*.png (+ CSV) into the run; evaluation/edits.py says what they mean.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from evaluation.edits import EvalConfig, evaluate_run
from evaluation.report import headline_lines, write_evaluation
from pipeline.cli import parse_config, run_folder_field, run_script
from pipeline.distributed import pick_device
from pipeline.run import Run


@dataclass
class EvaluateScript:
    """Which run, on which device, and the evaluation settings."""

    run: str | None = run_folder_field()
    device: str = "auto"
    evaluation: EvalConfig = field(default_factory=EvalConfig, metadata={"flatten": ""})


def main(config: EvaluateScript) -> Path:
    """Evaluate a run's edits and write the results into its folder; returns the run folder."""
    run, device = Run.open(config.run), pick_device(config.device)
    run.check_writable("evaluate")  # before the judge and the edits, not after them
    table, summary, judge_report = evaluate_run(run, config.evaluation, device)
    written = write_evaluation(run, table, summary, judge_report, config.evaluation)
    print("\n".join(headline_lines(table, judge_report)))
    print(f"fidelity: PSNR {summary['fidelity']['psnr']:.2f} dB on {summary['n_images']} faces")
    for path in written:
        if path.suffix in (".md", ".png"):
            print(f"wrote {path}")
    return run.dir


if __name__ == "__main__":
    run_script("evaluate", main, parse_config(EvaluateScript, description=__doc__))
