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

from benchmarks import STAGES, BenchmarkConfig, SpeedGoals, gpu_preset, run_benchmark
from data.io import atomic_write_json
from pipeline.cli import config_parser, run_script
from pipeline.distributed import pick_device
from pipeline.run import Run

__all__ = ["STAGES", "BenchmarkConfig", "GOALS", "main", "parse_args"]

# The speed goals the project states for itself; checked against the measured numbers and printed beside them.
# The GPU headline is the resident encode and the training throughput. The end-to-end ratio compares two pipelines
# that both decode JPEGs on the same CPU cores: it measures decoding, not the GPU, and is reported as such.
GOAL_CPU_ENCODE_SPEEDUP = 5.0  # project encoding vs the common pipeline, same images, same cores
GOAL_GPU_RESIDENT_ENCODE_S = 0.2  # all 202,599 CelebA-sized images from a GPU-resident cache
GOAL_GPU_TRAIN_IMAGES_PER_S = 30_000.0
GOAL_END_TO_END_SPEEDUP = 30.0  # JPEG files -> latents, cache build included (decode-bound, GPU preset)
GOALS = SpeedGoals(cpu_encode_speedup=GOAL_CPU_ENCODE_SPEEDUP, gpu_resident_encode_s=GOAL_GPU_RESIDENT_ENCODE_S,
                   gpu_train_images_per_s=GOAL_GPU_TRAIN_IMAGES_PER_S, end_to_end_speedup=GOAL_END_TO_END_SPEEDUP)


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
