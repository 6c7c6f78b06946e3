"""The benchmark as a library: every stage of the project's path timed beside the common CelebA pipeline.

    config.py     BenchmarkConfig and the GPU preset
    harness.py    machine description, peak-memory watch, timed measurements and their medians
    baseline.py   the common torchvision-style pipeline (JPEG Dataset, DataLoader, fp32 eager encode / train)
    project.py    the project's encode call and training run (the one adapter to the training / fitting code)
    context.py    what every stage shares: dataset, reference cache, models, work folders
    agreement.py  do both paths compute the same latents
    stages.py     encode, cache build, train, directions, CelebA-sized resident encode
    scaling.py    throughput against dataset size and batch size
    report.py     goals, the Markdown summary, the results file name
    runner.py     one run: set up, stages, goals, files

`python -m experiments.benchmark` is the command line; `run_benchmark` checks a run against a SpeedGoals, the
project's own being `GOALS`.
Measured numbers live in benchmarks/RESULTS.md, not in this code.
"""
from benchmarks.config import CELEBA_IMAGES, STAGES, BenchmarkConfig, gpu_preset
from benchmarks.report import GOALS, SpeedGoals
from benchmarks.runner import run_benchmark

__all__ = ["CELEBA_IMAGES", "GOALS", "STAGES", "BenchmarkConfig", "SpeedGoals", "gpu_preset", "run_benchmark"]
