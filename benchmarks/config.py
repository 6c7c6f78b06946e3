"""What the benchmark measures and how big: the config dataclass and the GPU preset."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

STAGES = ("encode", "resident", "cache_build", "train", "precision", "directions", "profile", "scaling")  # in running order
CELEBA_IMAGES = 202_599  # images in CelebA (aligned): the size the GPU goals are stated for


@dataclass
class BenchmarkConfig:
    """What the benchmark measures and how big: data, model, repeats, sizes of the scaling sweeps, output folders."""

    celeba_root: str | None = None  # a real CelebA folder (any layout data.celeba finds); None = procedural faces
    synthetic_root: str | None = None  # where procedural faces go; None = datasets/synthetic-benchmark-<n>
    synthetic_images: int = 3000
    reference_cache: str | None = None  # a cache of these images to reuse (prepare_data's); None = built in work/
    size: int = 64
    checkpoint: str | None = None  # VAE weights; None = the default VAEConfig with a seeded random init
    device: str = "auto"
    seed: int = 0
    repeats: int = 3  # interleaved repeats per comparison; medians are reported
    decode_workers: int | None = None  # image-decoding processes (DataLoader, cache build); None = one per core
    threads: int | None = None  # torch CPU threads for training (both paths); None = the project's default (all cores)
    probe_jobs: int | None = None  # joblib workers of probe_directions; None = the fitting defaults' n_jobs
    encode_batch: int | None = None  # the project encoder's batch; None = attributes.encode's default for the device
    encode_compile: bool | None = None  # torch.compile the encoder; None = on for CUDA, off for CPU
    baseline_batch_size: int = 64  # the common pipeline's DataLoader batch
    train_images: int = 512  # training images per timed epoch (two epochs per run; the second is reported)
    train_batch_size: int | None = None  # None = TrainConfig's default
    encode_sizes: tuple[int, ...] = (1000, 5000, 20000)  # dataset sizes for encoding (cache rows replicated)
    train_sizes: tuple[int, ...] = (256, 512, 1024)  # training images per epoch for the training sweep
    encode_batch_sizes: tuple[int, ...] = (64, 256, 1024, 2048)
    train_batch_sizes: tuple[int, ...] = (32, 64, 128, 256)
    batch_sweep_images: int = 2048  # images encoded per point of the encoder batch sweep
    celeba_rows: int = CELEBA_IMAGES  # resident stage (CUDA only): encode this many rows (the resident-encode goal)
    profile_steps: int = 10  # profile and precision stages: training steps and encoder/decoder batches timed
    stages: tuple[str, ...] = STAGES
    out_dir: str = "benchmarks"  # results JSON <date>-<machine>.json goes here
    runs_root: str = "runs"
    name: str = "benchmark"
    keep_work: bool = False  # keep the caches and training runs built under the run folder

    def __post_init__(self) -> None:
        for name in ("encode_sizes", "train_sizes", "encode_batch_sizes", "train_batch_sizes", "stages"):
            setattr(self, name, tuple(getattr(self, name)))  # JSON round-trips give lists
        unknown = [s for s in self.stages if s not in STAGES]
        if unknown:
            raise ValueError(f"BenchmarkConfig.stages: unknown stage(s) {unknown}; expected some of {STAGES}")
        positive = ("synthetic_images", "size", "repeats", "baseline_batch_size", "train_images", "batch_sweep_images",
                    "profile_steps")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"BenchmarkConfig.{name}={getattr(self, name)!r}; expected an integer >= 1")
        for name in ("threads", "decode_workers"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"BenchmarkConfig.{name}={getattr(self, name)!r}; expected None or an integer >= 1")
        for name in ("encode_sizes", "train_sizes", "encode_batch_sizes", "train_batch_sizes"):
            if any(v < 1 for v in getattr(self, name)):
                raise ValueError(f"BenchmarkConfig.{name}={getattr(self, name)}; expected integers >= 1")


def gpu_preset(config: BenchmarkConfig) -> BenchmarkConfig:
    """Sizes for one CUDA GPU: the CelebA-sized sweeps the GPU goals are stated for.

    Without a real CelebA folder the procedural set is CelebA-sized too, so the train split holds the
    `train_images` a timed epoch needs (a small set would time mostly per-epoch overhead).
    """
    return dataclasses.replace(
        config,
        synthetic_images=CELEBA_IMAGES,
        encode_sizes=(10_000, 50_000, 200_000),
        train_sizes=(10_000, 50_000, 200_000),
        encode_batch_sizes=(256, 1024, 4096, 8192, 16384),
        train_batch_sizes=(64, 256, 512, 1024, 2048),
        batch_sweep_images=65_536,
        train_images=50_000,
        train_batch_size=config.train_batch_size or 512,
    )
