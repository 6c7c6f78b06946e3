"""Time every stage of the project's path side by side with the common CelebA pipeline, and check they agree.

    python -m experiments.benchmark                       # CPU default: procedural faces (synthetic_images of them)
    python -m experiments.benchmark --preset gpu          # CUDA: CelebA-sized procedural set and sweeps
    python -m experiments.benchmark --preset gpu --celeba-root /data/celeba     # the GPU goals, on real CelebA

Stages: encode (project end to end from JPEGs and from a resident uint8 cache, against a torchvision-style
DataLoader + fp32 eager encoder; the latents must agree), cache_build (draft / no draft, one worker / all cores),
train (the project's training run against a DataLoader-fed fp32 eager loop), directions (mean and probe fits),
scaling (against dataset size and batch size). The code is the `benchmarks` package; what is measured and the
numbers are in benchmarks/RESULTS.md. Results go to runs/NNN-benchmark/ and benchmarks/<date>-<machine>.json.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from benchmarks import GOALS, BenchmarkConfig, gpu_preset, run_benchmark
from data.io import atomic_write_json
from pipeline.cli import config_parser, run_script
from pipeline.distributed import pick_device
from pipeline.run import Run


def parse_args(argv: list[str] | None = None) -> BenchmarkConfig:
    parser = config_parser(BenchmarkConfig, description=__doc__.split("\n\nStages")[0])
    parser.add_argument("--preset", choices=("cpu", "gpu"), default="cpu",
                        help="gpu: CelebA-sized procedural set and sweeps, big batches; flags given still win")
    given = vars(parser.parse_args(argv))
    config = gpu_preset(BenchmarkConfig()) if given.pop("preset") == "gpu" else BenchmarkConfig()
    return dataclasses.replace(config, **{k: tuple(v) if isinstance(v, list) else v for k, v in given.items()})


def main(config: BenchmarkConfig) -> dict[str, Any]:
    """Run the benchmark in a new run folder; print the summary table and where the results went."""
    run_dir = Run.create(config.name, config.runs_root).dir
    atomic_write_json(dataclasses.asdict(config), run_dir / "config.json")
    results = run_benchmark(config, GOALS, pick_device(config.device), run_dir)
    print(results["summary"])
    print(f"results: {results['results_file']} (and {run_dir / 'results.json'})")
    return results


if __name__ == "__main__":
    run_script("benchmark", lambda argv: main(parse_args(argv)), None)
