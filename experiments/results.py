"""Print the README's results block of a run: the pick by both judges and against the truth, the best single kinds,
the setup and, for a demo run, its wall time and machine.

    python -m experiments.results --run runs/001-demo      # default: the latest run
"""
from __future__ import annotations

from dataclasses import dataclass

from evaluation.report import results_markdown
from pipeline.cli import parse_config, run_folder_field, run_script
from pipeline.run import Run


@dataclass
class ResultsScript:
    """Which run."""

    run: str | None = run_folder_field()


def main(config: ResultsScript) -> str:
    """Print the block and return it."""
    text = results_markdown(Run.open(config.run))
    print(text)
    return text


if __name__ == "__main__":
    run_script("results", main, parse_config(ResultsScript, description=__doc__))
