"""What every stage shares: the dataset, the reference cache, the two copies of the model and the work folders."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from attributes.encode import CPU_BATCH, CUDA_BATCH
from benchmarks.baseline import baseline_crop
from benchmarks.config import BenchmarkConfig
from data.cache import FaceCache, build_cache, load_cache
from data.celeba import celeba_image_path, find_celeba
from data.io import available_cores
from data.synthetic import generate_synthetic_celeba
from models.vae import ConvVAE, VAEConfig


@dataclass
class Context:
    """What every stage shares: config, device, dataset, the reference cache, the model and the work folders."""

    config: BenchmarkConfig
    device: torch.device
    workers: int
    run_dir: Path
    work: Path
    root: Path
    dataset_kind: str
    cache_dir: Path
    cache: FaceCache  # the reference cache, loaded once
    model: ConvVAE  # the project's copy (its code may convert or compile it)
    reference: ConvVAE  # an untouched fp32 copy of the same weights for the baseline
    image_paths: list[Path]
    crop: int
    encode_batch_size: int
    encode_compile: bool

    @property
    def num_images(self) -> int:
        return len(self.image_paths)


def ensure_dataset(config: BenchmarkConfig) -> tuple[Path, str]:
    """The JPEG dataset to benchmark on: real CelebA when given, else procedural faces (generated once)."""
    if config.celeba_root is not None:
        find_celeba(config.celeba_root)  # raises naming the folder when it is not a CelebA layout
        return Path(config.celeba_root), "celeba"
    root = Path(config.synthetic_root or f"datasets/synthetic-benchmark-{config.synthetic_images}")
    generate_synthetic_celeba(root, config.synthetic_images, seed=config.seed)  # reuses a complete one
    return root, "synthetic"


def make_model(config: BenchmarkConfig) -> ConvVAE:
    """The checkpoint's VAE, or the default VAEConfig with a seeded random init (throughput ignores the weights)."""
    if config.checkpoint is None:
        torch.manual_seed(config.seed)  # the init draws from torch's generator only
        return ConvVAE(VAEConfig(image_size=config.size)).eval()
    model = ConvVAE.from_checkpoint(config.checkpoint, map_location="cpu")
    if model.config.image_size != config.size:
        raise ValueError(f"{config.checkpoint}: model image_size {model.config.image_size} != --size {config.size}")
    return model


def setup(config: BenchmarkConfig, device: torch.device, run_dir: Path) -> Context:
    """Dataset, reference cache and models for a benchmark writing into `run_dir` (its work/ folder is made here)."""
    workers = config.decode_workers or available_cores()
    work = run_dir / "work"
    work.mkdir()
    root, kind = ensure_dataset(config)
    # The reference cache: the same images in the same order for every stage, and the file list of the baseline.
    # Reused when it already holds these images at this size (build_cache checks), else built there.
    reference = Path(config.reference_cache) if config.reference_cache else work / "reference-cache"
    cache_dir = build_cache(root, reference, size=config.size, workers=workers, progress=False)
    cache = load_cache(cache_dir)
    layout = find_celeba(root)
    paths = [celeba_image_path(layout, image_id) for image_id in cache.table.index]
    with Image.open(paths[0]) as first:
        crop = baseline_crop(first.width)
    model = make_model(config)
    return Context(
        config=config, device=device, workers=workers, run_dir=run_dir, work=work, root=root, dataset_kind=kind,
        cache_dir=cache_dir, cache=cache, model=copy.deepcopy(model).to(device),
        reference=copy.deepcopy(model).to(device).eval(), image_paths=paths, crop=crop,
        encode_batch_size=config.encode_batch or (CUDA_BATCH if device.type == "cuda" else CPU_BATCH),
        encode_compile=device.type == "cuda" if config.encode_compile is None else config.encode_compile,
    )
