"""Time every stage of the project's path side by side with the common CelebA pipeline, and check they agree.

    python -m experiments.benchmark                       # CPU default: ~3k procedural faces, a few minutes on 2 cores
    python -m experiments.benchmark --preset gpu --celeba-root /data/celeba     # the GPU goals, on real CelebA

Stages (each measurement: median wall time over interleaved repeats, images/s, peak host memory, peak GPU memory):
  encode      the project's path (JPEGs -> uint8 cache via data.cache.build_cache -> attributes.encode.encode_images;
              on CUDA from a GPU-resident uint8 tensor) against the common one (torchvision.datasets.CelebA-style
              per-image PIL decode + CenterCrop(148) + Resize(64) + ToTensor + Normalize in a DataLoader, batch 64,
              one worker per core, fp32 eager encoder). Same images, same weights; the latents must agree.
  cache_build JPEG -> uint8 cache, with and without PIL draft mode, one worker and all cores.
  train       experiments.train_vae (the project's training run) against the same DataLoader pipeline feeding an fp32
              eager loop with the same model, optimiser and loss.
  directions  attributes.directions.mean_directions and probe_directions on the encoded latents.
  scaling     encoding and training as the dataset grows (cache rows replicated) and as the batch grows.

Peak host memory: this process's exact peak (VmHWM, reset before each measurement through /proc/self/clear_refs) and
the sampled peak PSS of this process plus its children (DataLoader and cache-build workers), taken in one extra
untimed run of each path: the sampler reads /proc every 50 ms, which slowed the timed runs it shared 2 cores with by
about 10 %. Results go to
runs/NNN-benchmark/results.json and benchmarks/<date>-<machine>.json; the summary table is printed.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime
import math
import os
import platform
import re
import resource
import shutil
import statistics
import sys
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from attributes.directions import mean_directions, probe_directions
from attributes.encode import CPU_BATCH, CUDA_BATCH, encode_images
from data.cache import FaceCache, build_cache, load_cache, split_to_device, to_uint8_images, write_cache
from data.celeba import celeba_image_path, find_celeba
from data.io import atomic_write_json, atomic_write_text, available_cores
from data.synthetic import generate_synthetic_celeba
from experiments import train_vae
from experiments.common import new_run_dir, pick_device, save_config, seed_everything
from experiments.fit_directions import FitConfig
from models.vae import ConvVAE, VAEConfig, vae_loss

RESULTS_FORMAT_VERSION = 1
STAGES = ("encode", "cache_build", "train", "directions", "scaling")
CELEBA_IMAGES = 202_599  # images in CelebA (aligned): the size the GPU goals are stated for
CELEBA_WIDTH, CELEBA_CROP = 178, 148  # the common pipeline's CenterCrop(148) on 178-px-wide CelebA images
BYTES_PER_MB = 1 << 20

# The goals the project states for itself; checked against the measured numbers and printed beside them.
GOAL_CPU_ENCODE_SPEEDUP = 5.0  # project encoding vs the common pipeline, same images, same cores
GOAL_GPU_RESIDENT_ENCODE_S = 0.2  # all 202,599 CelebA-sized images from a GPU-resident cache
GOAL_GPU_END_TO_END_SPEEDUP = 30.0  # JPEG files -> latents, cache build included
GOAL_GPU_TRAIN_IMAGES_PER_S = 30_000.0

# Latent agreement, in units of the spread of the baseline's mu (its overall standard deviation).
# numerics: identical uint8 pixels through the project's encoder and the fp32 eager one (bf16 on CUDA is looser).
# pipeline: the project's cache pixels against the common PIL CenterCrop+Resize (different resize / draft decode).
NUMERICS_TOLERANCE = {"fp32": 1e-3, "bf16": 1e-1}  # bf16: a first guess, to be confirmed on a GPU
PIPELINE_MEAN_TOLERANCE = 0.1


@dataclass
class BenchmarkConfig:
    """What the benchmark measures and how big: data, model, repeats, sizes of the scaling sweeps, output folders."""

    celeba_root: str | None = None  # a real CelebA folder (any layout data.celeba finds); None = procedural faces
    synthetic_root: str | None = None  # where procedural faces go; None = datasets/synthetic-benchmark-<n>
    synthetic_images: int = 3000
    size: int = 64
    checkpoint: str | None = None  # VAE weights; None = the default VAEConfig with a seeded random init
    device: str = "auto"
    seed: int = 0
    repeats: int = 3  # interleaved repeats per comparison; medians are reported
    workers: int | None = None  # DataLoader / cache-build workers; None = one per core
    threads: int | None = None  # torch CPU threads for training (both paths); None = the project's default (all cores)
    probe_jobs: int | None = None  # joblib workers of probe_directions; None = experiments.fit_directions' default
    encode_batch_size: int | None = None  # project encoder batch; None = attributes.encode's default (CPU 64, CUDA 4096)
    encode_compile: bool | None = None  # torch.compile the encoder; None = on for CUDA, off for CPU
    baseline_batch_size: int = 64  # the common pipeline's DataLoader batch
    train_images: int = 512  # training images per timed epoch (two epochs per run; the second is reported)
    train_batch_size: int | None = None  # None = TrainConfig's default
    encode_sizes: tuple[int, ...] = (1000, 5000, 20000)  # dataset sizes for encoding (cache rows replicated)
    train_sizes: tuple[int, ...] = (256, 512, 1024)  # training images per epoch for the training sweep
    encode_batch_sizes: tuple[int, ...] = (64, 256, 1024, 2048)
    train_batch_sizes: tuple[int, ...] = (32, 64, 128, 256)
    batch_sweep_images: int = 2048  # images encoded per point of the encoder batch sweep
    celeba_rows: int = CELEBA_IMAGES  # CUDA only: resident encode of this many rows (the 0.2 s goal)
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
        for name in ("synthetic_images", "size", "repeats", "baseline_batch_size", "train_images", "batch_sweep_images"):
            if getattr(self, name) < 1:
                raise ValueError(f"BenchmarkConfig.{name}={getattr(self, name)!r}; expected an integer >= 1")
        for name in ("threads", "workers"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"BenchmarkConfig.{name}={getattr(self, name)!r}; expected None or an integer >= 1")
        for name in ("encode_sizes", "train_sizes", "encode_batch_sizes", "train_batch_sizes"):
            if any(v < 1 for v in getattr(self, name)):
                raise ValueError(f"BenchmarkConfig.{name}={getattr(self, name)}; expected integers >= 1")


def gpu_preset(config: BenchmarkConfig) -> BenchmarkConfig:
    """Sizes for one CUDA GPU: the CelebA-sized sweeps the GPU goals are stated for."""
    return dataclasses.replace(
        config,
        encode_sizes=(10_000, 50_000, 200_000),
        train_sizes=(10_000, 50_000, 200_000),
        encode_batch_sizes=(256, 1024, 4096, 8192, 16384),
        train_batch_sizes=(64, 256, 512, 1024, 2048),
        batch_sweep_images=65_536,
        train_images=50_000,
        train_batch_size=config.train_batch_size or 512,
    )


# ---- machine ------------------------------------------------------------------------------------------------------
def machine_description(device: torch.device) -> str:
    """Hostname-free name of what ran the benchmark: `cpu-2core` or the CUDA device name, e.g. `nvidia-h100-80gb-hbm3`."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        count = torch.cuda.device_count()
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
        return slug if count == 1 else f"{count}x-{slug}"
    return f"cpu-{available_cores()}core"


def load_average() -> list[float] | None:
    """1, 5 and 15-minute load averages: how busy the (possibly shared) machine was."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def machine_info(device: torch.device) -> dict[str, Any]:
    info = {
        "description": machine_description(device),
        "device": str(device),
        "cpu_count": available_cores(),
        "cpu_model": _cpu_model(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(terse=True),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "pillow": Image.__version__,
    }
    try:
        import torchvision

        info["torchvision"] = torchvision.__version__
    except ImportError:
        info["torchvision"] = None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(
            device_name=props.name, device_memory_gb=round(props.total_memory / 1e9, 1),
            cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(), device_count=torch.cuda.device_count(),
        )
    else:
        info["device_name"] = info["cpu_model"]
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# ---- memory -------------------------------------------------------------------------------------------------------
def _status_kb(pid: int | str, key: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _pss_kb(pid: int) -> int:
    """Proportional set size: shared pages (forked workers share the parent's) are split, not counted twice."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return _status_kb(pid, "VmRSS") or 0


def _children(pid: int) -> list[int]:
    """All descendants of `pid` (DataLoader workers, process pools and their children)."""
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        kids: list[int] = []
        try:
            for task in Path(f"/proc/{parent}/task").iterdir():
                kids += [int(k) for k in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
        found += kids
        frontier += kids
    return found


def _reset_peak_rss() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux >= 4.0), so the next peak is the measurement's own."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _lifetime_peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / BYTES_PER_MB if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


class MemoryWatch:
    """Peak memory of one measurement: this process's exact RSS peak, the CUDA caching allocator's peak and, with
    sample_tree, the sampled PSS peak of this process plus its children (a thread that costs the measured code CPU)."""

    def __init__(self, device: torch.device, sample_tree: bool = False, interval_s: float = 0.05):
        self.device, self.sample_tree, self.interval_s = device, sample_tree, interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.tree_peak_kb = 0
        self.result: dict[str, float | str | None] = {}

    def _sample(self) -> None:
        pid = os.getpid()
        total = _pss_kb(pid) + sum(_pss_kb(c) for c in _children(pid))
        self.tree_peak_kb = max(self.tree_peak_kb, total)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def __enter__(self) -> "MemoryWatch":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.gpu_before = torch.cuda.memory_allocated(self.device)
        self.exact = _reset_peak_rss()
        self.before_kb = _status_kb("self", "VmRSS")
        if self.sample_tree:
            self._sample()
            self._thread = threading.Thread(target=self._run, name="benchmark-memory", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._sample()
        hwm = _status_kb("self", "VmHWM")
        if self.exact and hwm is not None and self.before_kb is not None:
            peak_mb, source = hwm / 1024, "VmHWM"
            growth = (hwm - self.before_kb) / 1024
        else:  # no /proc: the process-lifetime peak is an upper bound of the measurement's
            peak_mb, source, growth = _lifetime_peak_rss_mb(), "ru_maxrss (process lifetime)", None
        self.result = {
            "peak_rss_mb": round(peak_mb, 1),
            "peak_rss_growth_mb": None if growth is None else round(growth, 1),
            "peak_tree_pss_mb": round(self.tree_peak_kb / 1024, 1) if self.tree_peak_kb else None,
            "peak_rss_source": source,
            "peak_gpu_mb": None,  # allocated at the peak, tensors that were already resident included
            "peak_gpu_growth_mb": None,  # the peak minus what was allocated before the measurement
        }
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device)
            self.result["peak_gpu_mb"] = round(peak / BYTES_PER_MB, 1)
            self.result["peak_gpu_growth_mb"] = round((peak - self.gpu_before) / BYTES_PER_MB, 1)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(fn: Callable[[], Any], device: torch.device, sample_tree: bool = False) -> tuple[Any, dict[str, Any]]:
    """Run `fn` once under a MemoryWatch; the wall time spans a device synchronisation before and after."""
    with MemoryWatch(device, sample_tree) as watch:
        _sync(device)
        start = time.perf_counter()
        out = fn()
        _sync(device)
        seconds = time.perf_counter() - start
    return out, {"wall_s": seconds, **watch.result}


def tree_memory_mb(fn: Callable[[], Any], device: torch.device) -> float | None:
    """Peak PSS of this process and its workers over one extra, untimed run of `fn`."""
    return measure(fn, device, sample_tree=True)[1]["peak_tree_pss_mb"]


def summarise(samples: Sequence[dict[str, Any]], images: int) -> dict[str, Any]:
    """Median wall time over repeats, images/s from it, and the largest peak of each memory figure."""
    walls = [s["wall_s"] for s in samples]
    wall = statistics.median(walls)
    out: dict[str, Any] = {
        "images": int(images), "repeats": len(samples), "wall_s": round(wall, 4), "wall_s_all": [round(w, 4) for w in walls],
        "images_per_s": round(images / wall, 1) if wall > 0 else None,
    }
    for key in ("peak_rss_mb", "peak_rss_growth_mb", "peak_tree_pss_mb", "peak_gpu_mb", "peak_gpu_growth_mb"):
        values = [s[key] for s in samples if s.get(key) is not None]
        out[key] = max(values) if values else None
    out["peak_rss_source"] = samples[0].get("peak_rss_source")
    return out


# ---- the common pipeline (the baseline) ---------------------------------------------------------------------------
class JpegFaces(Dataset):
    """The common CelebA input pipeline, as torchvision.datasets.CelebA + the usual VAE transforms: per image, PIL
    decode, CenterCrop(148), Resize(64), ToTensor(), Normalize(0.5, 0.5) -> float (3, S, S) in [-1, 1]."""

    def __init__(self, paths: Sequence[Path], size: int, crop: int):
        from torchvision import transforms

        self.paths = [str(p) for p in paths]
        self.transform = transforms.Compose([
            transforms.CenterCrop(crop), transforms.Resize(size), transforms.ToTensor(),
            transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
        ])

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        image = Image.open(self.paths[i])  # torchvision's CelebA opens each file per item, like this
        if image.mode != "RGB":
            image = image.convert("RGB")
        return self.transform(image)


def baseline_loader(dataset: Dataset, batch_size: int, workers: int, device: torch.device, shuffle: bool = False,
                    drop_last: bool = False, seed: int = 0) -> DataLoader:
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, num_workers=workers,
        pin_memory=device.type == "cuda", generator=torch.Generator().manual_seed(seed),
    )


class DefaultPrecision:
    """PyTorch's out-of-the-box float settings (fp32 matmuls, cuDNN autotuning off) for the baseline's duration,
    whatever the project's code set before; restored on exit."""

    def __enter__(self) -> None:
        self.saved = (torch.get_float32_matmul_precision(), torch.backends.cudnn.benchmark,
                      torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
        torch.set_float32_matmul_precision("highest")
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.allow_tf32 = True  # PyTorch's default for convolutions
        torch.backends.cuda.matmul.allow_tf32 = False

    def __exit__(self, *exc) -> None:
        precision, benchmark, cudnn_tf32, matmul_tf32 = self.saved
        torch.set_float32_matmul_precision(precision)
        torch.backends.cudnn.benchmark = benchmark
        torch.backends.cudnn.allow_tf32 = cudnn_tf32
        torch.backends.cuda.matmul.allow_tf32 = matmul_tf32


@torch.inference_mode()
def baseline_encode(model: ConvVAE, loader: DataLoader, device: torch.device) -> torch.Tensor:
    """fp32 eager encoding of every batch the loader yields -> mu (N, D) on the CPU."""
    mus = []
    for x in loader:
        mu, _ = model.encode(x.to(device, non_blocking=True))
        mus.append(mu.cpu())
    return torch.cat(mus)


def baseline_train_epoch(model: ConvVAE, optimizer: torch.optim.Optimizer, loader: DataLoader, device: torch.device,
                         beta: float, likelihood: str) -> float:
    """One fp32 eager epoch (forward, project loss, backward, Adam step); returns the last loss (a host sync)."""
    loss = torch.zeros(())
    for x in loader:
        x = x.to(device, non_blocking=True)
        recon, mu, logvar = model(x)
        loss = vae_loss(recon, x, mu, logvar, beta=beta, likelihood=likelihood)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return float(loss.detach())


# ---- set-up -------------------------------------------------------------------------------------------------------
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
    results: dict[str, Any] = field(default_factory=dict)

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
    if config.checkpoint is None:
        seed_everything(config.seed)
        return ConvVAE(VAEConfig(image_size=config.size)).eval()
    model = ConvVAE.from_checkpoint(config.checkpoint, map_location="cpu")
    if model.config.image_size != config.size:
        raise ValueError(f"{config.checkpoint}: model image_size {model.config.image_size} != --size {config.size}")
    return model


def setup(config: BenchmarkConfig) -> Context:
    device = pick_device(config.device)
    workers = config.workers or available_cores()
    run_dir = new_run_dir(config.name, config.runs_root)
    work = run_dir / "work"
    work.mkdir()
    save_config(config, run_dir / "config.json")
    root, kind = ensure_dataset(config)
    # The reference cache: the same images in the same order for every stage, and the file list of the baseline.
    cache_dir = build_cache(root, work / "reference-cache", size=config.size, workers=workers, progress=False)
    cache = load_cache(cache_dir)
    layout = find_celeba(root)
    paths = [celeba_image_path(layout, image_id) for image_id in cache.table.index]
    with Image.open(paths[0]) as first:
        width = first.width
    crop = round(CELEBA_CROP / CELEBA_WIDTH * width)  # 148 on CelebA's 178-px width
    model = make_model(config)
    return Context(
        config=config, device=device, workers=workers, run_dir=run_dir, work=work, root=root, dataset_kind=kind,
        cache_dir=cache_dir, cache=cache, model=copy.deepcopy(model).to(device), reference=copy.deepcopy(model).to(device).eval(),
        image_paths=paths, crop=crop,
        encode_batch_size=config.encode_batch_size or (CUDA_BATCH if device.type == "cuda" else CPU_BATCH),
        encode_compile=device.type == "cuda" if config.encode_compile is None else config.encode_compile,
    )


def project_encode(ctx: "Context", images, batch_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The project's encoder call, as experiments.fit_directions makes it (compiled on CUDA by default here)."""
    return encode_images(ctx.model, images, batch_size=batch_size or ctx.encode_batch_size, device=ctx.device,
                         compile_model=ctx.encode_compile, progress=False)


def _warm_file_cache(paths: Sequence[Path]) -> None:
    """Read every JPEG once so both pipelines start from the OS page cache, whichever runs first."""
    for p in paths:
        with open(p, "rb") as f:
            while f.read(1 << 20):
                pass


def _abs_diff(a: torch.Tensor, b: torch.Tensor, scale: float) -> dict[str, float]:
    d = (a.float() - b.float()).abs()
    return {"max_abs": float(d.max()), "mean_abs": float(d.mean()),
            "max_rel": float(d.max()) / scale, "mean_rel": float(d.mean()) / scale}


# ---- stage 1: encoding ----------------------------------------------------------------------------------------------
def stage_encode(ctx: Context) -> dict[str, Any]:
    """Project path (end to end from JPEGs, and from a resident cache) against the common pipeline, same images."""
    cfg, device = ctx.config, ctx.device
    n = ctx.num_images
    dataset = JpegFaces(ctx.image_paths, cfg.size, ctx.crop)
    e2e_dir = ctx.work / "encode-e2e-cache"

    # Untimed: page-cache warm-up, the baseline's pixels (for the agreement checks) and resident placement.
    _warm_file_cache(ctx.image_paths)
    baseline_u8 = torch.cat([to_uint8_images(x) for x in baseline_loader(dataset, 256, ctx.workers, torch.device("cpu"))])
    cache = ctx.cache
    (resident, _), placement = measure(lambda: split_to_device(cache, None, device), device)

    # Warm-up of the project's encoder (compilation on CUDA happens here): excluded from the timed runs.
    _, warmup = measure(lambda: project_encode(ctx, resident), device)
    _, warm_again = measure(lambda: project_encode(ctx, resident), device)

    def project_end_to_end():
        built = build_cache(ctx.root, e2e_dir, size=cfg.size, workers=ctx.workers, force=True, progress=False)
        return project_encode(ctx, load_cache(built).images)

    def project_resident():
        return project_encode(ctx, resident)

    def baseline():
        with DefaultPrecision():
            return baseline_encode(ctx.reference, baseline_loader(dataset, cfg.baseline_batch_size, ctx.workers, device), device)

    runs = {"baseline": baseline, "project_end_to_end": project_end_to_end, "project_resident": project_resident}
    samples: dict[str, list] = {k: [] for k in runs}
    outputs: dict[str, Any] = {}
    for _ in tqdm(range(cfg.repeats), desc="encode (interleaved repeats)", leave=False):
        for key, fn in runs.items():
            outputs[key], stats = measure(fn, device)
            samples[key].append(stats)
    result = {key: summarise(s, n) for key, s in samples.items()}
    for key, fn in runs.items():
        result[key]["peak_tree_pss_mb"] = tree_memory_mb(fn, device)
    result["project_placement"] = {**summarise([placement], n), "what": "split_to_device of the reference cache"}
    warm_s = warm_again["wall_s"]
    result["compile_warmup"] = {
        "first_call_s": round(warmup["wall_s"], 4), "second_call_s": round(warm_s, 4),
        "warmup_overhead_s": round(max(warmup["wall_s"] - warm_s, 0.0), 4),
        "what": "first encode_images call (torch.compile on CUDA) minus a warm one; excluded from the timed runs",
    }
    base_ips = result["baseline"]["images_per_s"]
    result["speedup_resident"] = round(result["project_resident"]["images_per_s"] / base_ips, 2)
    result["speedup_end_to_end"] = round(result["project_end_to_end"]["images_per_s"] / base_ips, 2)
    result["agreement"] = encode_agreement(ctx, outputs, baseline_u8, cache)
    result["baseline_pipeline"] = (f"PIL decode + CenterCrop({ctx.crop}) + Resize({cfg.size}) + ToTensor + Normalize, "
                                   f"DataLoader batch {cfg.baseline_batch_size}, {ctx.workers} workers, fp32 eager encoder")
    result["project_pipeline"] = (f"build_cache ({ctx.workers} workers, draft) + encode_images batch {ctx.encode_batch_size}; "
                                  f"resident: uint8 {'on the GPU' if device.type == 'cuda' else 'in host memory'}")
    result["dataset_bytes"] = {"uint8_mb": round(n * 3 * cfg.size**2 / BYTES_PER_MB, 1),
                               "float32_mb": round(n * 3 * cfg.size**2 * 4 / BYTES_PER_MB, 1)}
    if not cfg.keep_work:
        shutil.rmtree(e2e_dir, ignore_errors=True)
    return result


def _mu(output: Any) -> torch.Tensor:
    mu = output[0] if isinstance(output, (tuple, list)) else getattr(output, "mu", output)
    return torch.as_tensor(mu).float().cpu()


def encode_agreement(ctx: Context, outputs: dict[str, Any], baseline_u8: torch.Tensor, cache) -> dict[str, Any]:
    """Do both paths compute the same latents? Numerics on identical pixels, then the pixels and whole pipelines."""
    base_mu = _mu(outputs["baseline"])  # (N, D)
    scale = float(base_mu.std())
    precision = "bf16" if ctx.device.type == "cuda" else "fp32"
    same_pixels_mu = _mu(project_encode(ctx, baseline_u8))
    numerics = _abs_diff(same_pixels_mu, base_mu, scale)
    numerics.update(tolerance_max_rel=NUMERICS_TOLERANCE[precision], project_precision=precision,
                    passed=numerics["max_rel"] <= NUMERICS_TOLERANCE[precision],
                    what="project encode_images vs fp32 eager encoder on the identical uint8 pixels")
    cache_u8 = torch.from_numpy(np.array(cache.images))  # (N, 3, S, S) uint8
    pixel_diff = (cache_u8.int() - baseline_u8.int()).abs().float()
    pixels = {"max_abs": float(pixel_diff.max()), "mean_abs": float(pixel_diff.mean()),
              "what": "cache (preprocess_image, draft) vs common PIL CenterCrop+Resize, in uint8 levels"}
    pipeline = _abs_diff(_mu(outputs["project_end_to_end"]), base_mu, scale)
    pipeline.update(tolerance_mean_rel=PIPELINE_MEAN_TOLERANCE, passed=pipeline["mean_rel"] <= PIPELINE_MEAN_TOLERANCE,
                    what="project end-to-end mu vs common pipeline mu (different resize filter / draft decode)")
    resident = _abs_diff(_mu(outputs["project_resident"]), _mu(outputs["project_end_to_end"]), scale)
    resident.update(passed=resident["max_rel"] <= NUMERICS_TOLERANCE[precision],
                    what="project resident vs project end-to-end (same cache pixels)")
    return {"mu_std": scale, "numerics": numerics, "pixels": pixels, "pipeline": pipeline,
            "resident_vs_end_to_end": resident, "passed": bool(numerics["passed"] and pipeline["passed"] and resident["passed"])}


# ---- stage 2: cache build -------------------------------------------------------------------------------------------
def stage_cache_build(ctx: Context) -> dict[str, Any]:
    """build_cache with and without PIL draft mode, with one worker and with all cores, interleaved."""
    cfg = ctx.config
    variants = [(draft, w) for draft in (True, False) for w in sorted({1, ctx.workers})]
    samples: dict[tuple, list] = {v: [] for v in variants}
    out_dir = ctx.work / "build-cache"
    _warm_file_cache(ctx.image_paths)
    def build(draft: bool, workers: int) -> Callable[[], Path]:
        return lambda: build_cache(ctx.root, out_dir, size=cfg.size, workers=workers, draft=draft, force=True,
                                   progress=False)

    cpu = torch.device("cpu")
    for _ in tqdm(range(cfg.repeats), desc="cache build (interleaved repeats)", leave=False):
        for draft, w in variants:
            samples[(draft, w)].append(measure(build(draft, w), cpu)[1])
    runs = []
    for (draft, w), s in samples.items():
        row = {"draft": draft, "workers": w, **summarise(s, ctx.num_images),
               "peak_tree_pss_mb": tree_memory_mb(build(draft, w), cpu)}
        row["images_per_s_per_worker"] = round(row["images_per_s"] / w, 1)
        runs.append(row)
    shutil.rmtree(out_dir, ignore_errors=True)
    by = {(r["draft"], r["workers"]): r["images_per_s"] for r in runs}
    return {"runs": runs, "draft_speedup_all_workers": round(by[(True, ctx.workers)] / by[(False, ctx.workers)], 2)}


# ---- stage 3: training ----------------------------------------------------------------------------------------------
def _train_config(ctx: Context, cache_dir: Path, images: int, batch_size: int | None = None) -> train_vae.TrainConfig:
    base = train_vae.TrainConfig()
    return dataclasses.replace(
        base, cache_dir=str(cache_dir), name="bench-train", epochs=2, batch_size=batch_size or ctx.config.train_batch_size
        or base.batch_size, max_train_images=images, device=str(ctx.device), seed=ctx.config.seed,
        runs_root=str(ctx.work / "train-runs"), log_images_every_epoch=False, workers=ctx.config.threads,
    )


def project_train(ctx: Context, cache_dir: Path, images: int, batch_size: int | None = None,
                  sample_tree: bool = False) -> dict[str, Any]:
    """One experiments.train_vae run of two epochs; the second (warm, compiled) epoch is the throughput."""
    config = _train_config(ctx, cache_dir, images, batch_size)
    run_dir, stats = measure(lambda: train_vae.main(config), ctx.device, sample_tree)
    metrics = pd.read_csv(run_dir / train_vae.METRICS_CSV)
    warm, first = metrics.iloc[-1], metrics.iloc[0]
    trained = int(images // config.batch_size * config.batch_size)  # the last partial batch is dropped
    out = {
        **stats, "run_wall_s": stats["wall_s"], "wall_s": float(warm["time_s"]), "images": trained,
        "first_epoch_s": float(first["time_s"]), "batch_size": config.batch_size,
        "compile": config.compile,
    }
    if not ctx.config.keep_work:
        shutil.rmtree(run_dir, ignore_errors=True)
    return out


def baseline_train(ctx: Context, paths: Sequence[Path], batch_size: int, sample_tree: bool = False) -> dict[str, Any]:
    """Two fp32 eager epochs fed by the common DataLoader pipeline from JPEGs; the second epoch is the throughput."""
    defaults = train_vae.TrainConfig()
    seed_everything(ctx.config.seed)
    model = copy.deepcopy(ctx.reference).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=defaults.lr)
    dataset = JpegFaces(paths, ctx.config.size, ctx.crop)
    times = []
    with DefaultPrecision():
        for epoch in range(2):
            loader = baseline_loader(dataset, batch_size, ctx.workers, ctx.device, shuffle=True, drop_last=True,
                                     seed=ctx.config.seed + epoch)
            _, stats = measure(lambda: baseline_train_epoch(model, optimizer, loader, ctx.device, defaults.beta,
                                                            defaults.likelihood), ctx.device, sample_tree)
            times.append(stats)
    tree = [t["peak_tree_pss_mb"] for t in times if t["peak_tree_pss_mb"] is not None]
    return {**times[-1], "images": len(paths) // batch_size * batch_size, "first_epoch_s": times[0]["wall_s"],
            "batch_size": batch_size, "peak_tree_pss_mb": max(tree, default=None)}


def stage_train(ctx: Context) -> dict[str, Any]:
    cfg = ctx.config
    cache = ctx.cache
    train_rows = cache.split_indices("train")
    images = min(cfg.train_images, len(train_rows))
    batch = cfg.train_batch_size or train_vae.TrainConfig().batch_size
    if images < batch:
        raise ValueError(f"train stage: {images} training images are fewer than one batch of {batch}")
    paths = [ctx.image_paths[i] for i in train_rows[:images]]  # the images max_train_images selects
    samples: dict[str, list] = {"baseline": [], "project": []}
    extra: dict[str, list] = {"baseline": [], "project": []}
    for _ in tqdm(range(cfg.repeats), desc="train (interleaved repeats)", leave=False):
        for key in samples:
            run = baseline_train(ctx, paths, batch) if key == "baseline" else project_train(ctx, ctx.cache_dir, images, batch)
            samples[key].append(run)
            extra[key].append(run["first_epoch_s"])
    result: dict[str, Any] = {}
    for key, runs in samples.items():
        result[key] = summarise(runs, runs[0]["images"])
        result[key]["first_epoch_s_median"] = round(statistics.median(extra[key]), 4)
        result[key]["batch_size"] = batch
    result["baseline"]["peak_tree_pss_mb"] = baseline_train(ctx, paths, batch, sample_tree=True)["peak_tree_pss_mb"]
    result["project"]["peak_tree_pss_mb"] = project_train(ctx, ctx.cache_dir, images, batch, sample_tree=True)[
        "peak_tree_pss_mb"]
    result["project"]["run_wall_s_median"] = round(statistics.median(r["run_wall_s"] for r in samples["project"]), 3)
    result["project"]["compile"] = samples["project"][0]["compile"]
    result["project"]["compile_warmup_s"] = round(max(
        result["project"]["first_epoch_s_median"] - result["project"]["wall_s"], 0.0), 4)
    result["speedup"] = round(result["project"]["images_per_s"] / result["baseline"]["images_per_s"], 2)
    result["what"] = ("images/s of the second (warm) epoch; project = experiments.train_vae.main (its own epoch timer, "
                      "whole run wall time beside it), baseline = DataLoader from JPEGs + fp32 eager step, same model, "
                      "Adam lr and loss")
    return result


# ---- stage 4: directions ----------------------------------------------------------------------------------------------
def stage_directions(ctx: Context) -> dict[str, Any]:
    """mean_directions and probe_directions as experiments.fit_directions calls them: fitted on the train split's
    latents (probes scored on valid), FitConfig's defaults."""
    cfg = ctx.config
    fit = FitConfig()
    jobs = fit.n_jobs if cfg.probe_jobs is None else cfg.probe_jobs
    cache = ctx.cache
    images, labels = split_to_device(cache, None, ctx.device)
    mu = _mu(project_encode(ctx, images))  # (N, D)
    labels = labels.cpu()
    names = cache.attribute_names
    train = torch.from_numpy(cache.split_indices(fit.fit_split))
    valid = torch.from_numpy(cache.split_indices(fit.valid_split))
    samples: dict[str, list] = {"mean": [], "probe": []}
    counts: dict[str, int] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "left out N attributes" is the same every repeat; the kept count is recorded
        for _ in tqdm(range(cfg.repeats), desc="directions", leave=False):
            out, stats = measure(lambda: mean_directions(mu[train], labels[train], names, min_count=fit.min_count),
                                 torch.device("cpu"))
            samples["mean"].append(stats)
            counts["mean"] = len(out.names)
            out, stats = measure(lambda: probe_directions(
                mu[train], labels[train], names, valid_latents=mu[valid], valid_labels=labels[valid],
                min_count=fit.min_count, C=fit.C, n_jobs=jobs, progress=False), torch.device("cpu"))
            samples["probe"].append(stats)
            counts["probe"] = len(out.names)
    return {
        "mean": {**summarise(samples["mean"], len(train)), "attributes": counts["mean"]},
        "probe": {**summarise(samples["probe"], len(train)), "attributes": counts["probe"], "n_jobs": jobs},
        "attributes_in_cache": len(names), "latent_dim": int(mu.shape[1]), "min_count": fit.min_count,
        "what": "images/s = latents/s of the train split; probes also score the valid split",
    }


# ---- stage 5: scaling ---------------------------------------------------------------------------------------------------
def replicate_cache(source: Path, rows: int, out_dir: Path) -> Path:
    """A cache of `rows` rows made by repeating the source cache's rows (ids suffixed `-rK`), written without holding
    it in memory; stands in for a bigger dataset when only the throughput matters."""
    cache = load_cache(source)
    n = len(cache)
    copies = math.ceil(rows / n)

    def fill(out: np.ndarray) -> None:
        for k in range(copies):
            start = k * n
            out[start:min(start + n, rows)] = cache.images[: min(n, rows - start)]

    tables = []
    for k in range(copies):
        part = cache.table.copy()
        part.index = pd.Index([f"{i}-r{k}" if k else i for i in part.index], name=cache.table.index.name)
        tables.append(part)
    table = pd.concat(tables).iloc[:rows]
    keep = ("size", "crop", "layout", "draft")
    meta = {**{key: cache.meta[key] for key in keep if key in cache.meta},
            "source_root": f"{cache.meta.get('source_root')} (rows replicated x{copies})"}
    return write_cache(out_dir, table, meta, fill)


def _linear_fit(sizes: Sequence[int], seconds: Sequence[float]) -> dict[str, float]:
    """seconds = a + b * size by least squares; R^2 near 1 means the cost grows linearly with the size."""
    x, y = np.asarray(sizes, float), np.asarray(seconds, float)
    if len(x) < 2:
        return {"intercept_s": float(y[0]) if len(y) else 0.0, "seconds_per_1k": float("nan"), "r2": float("nan")}
    b, a = np.polyfit(x, y, 1)
    pred = a + b * x
    ss = float(((y - y.mean()) ** 2).sum())
    return {"intercept_s": round(float(a), 4), "seconds_per_1k": round(float(b) * 1000, 5),
            "r2": round(1 - float(((y - pred) ** 2).sum()) / ss, 4) if ss > 0 else 1.0}


def _knee(points: Sequence[dict[str, Any]], key: str) -> int | None:
    """The smallest batch size reaching 90% of the best throughput: past it, a bigger batch buys little."""
    ok = [p for p in points if p.get("images_per_s")]
    if not ok:
        return None
    best = max(p["images_per_s"] for p in ok)
    return min(p[key] for p in ok if p["images_per_s"] >= 0.9 * best)


def stage_scaling(ctx: Context) -> dict[str, Any]:
    cfg, device = ctx.config, ctx.device
    base = ctx.cache
    train_fraction = len(base.split_indices("train")) / len(base)
    rows = max([*cfg.encode_sizes, cfg.batch_sweep_images,
                *(math.ceil(s / max(train_fraction, 1e-9)) + 1 for s in cfg.train_sizes)])
    big_dir = replicate_cache(ctx.cache_dir, max(rows, len(base)), ctx.work / "replicated-cache")
    big = load_cache(big_dir)
    result: dict[str, Any] = {"replicated_rows": len(big), "source_rows": len(base)}

    encode_points = []
    for n in tqdm(cfg.encode_sizes, desc="scaling: encode vs dataset size", leave=False):
        resident, placement = measure(lambda: _rows_to_device(big, n, device), device)
        if ctx.encode_compile:  # a new tail-batch shape recompiles: keep that out of the timing
            project_encode(ctx, resident)
        _, stats = measure(lambda: project_encode(ctx, resident), device)
        float32_mb = n * 3 * cfg.size**2 * 4 / BYTES_PER_MB
        encode_points.append({
            "images": n, **summarise([stats], n), "placement_s": round(placement["wall_s"], 4),
            "float32_dataset_mb": round(float32_mb, 1), "uint8_dataset_mb": round(float32_mb / 4, 1),
        })
        del resident
    result["encode_by_size"] = encode_points
    result["encode_fit"] = _linear_fit([p["images"] for p in encode_points], [p["wall_s"] for p in encode_points])

    train_points = []
    for n in tqdm(cfg.train_sizes, desc="scaling: train vs dataset size", leave=False):
        run = project_train(ctx, big_dir, n)
        train_points.append({**summarise([run], run["images"]), "first_epoch_s": round(run["first_epoch_s"], 4),
                             "batch_size": run["batch_size"]})
    result["train_by_size"] = train_points
    result["train_fit"] = _linear_fit([p["images"] for p in train_points], [p["wall_s"] for p in train_points])

    sweep = min(cfg.batch_sweep_images, len(big))
    resident = _rows_to_device(big, sweep, device)
    batch_points = []
    for b in tqdm(cfg.encode_batch_sizes, desc="scaling: encode vs batch", leave=False):
        # Warm-up: a new batch shape recompiles under torch.compile (the whole call, for the tail batch too).
        project_encode(ctx, resident if ctx.encode_compile else resident[: min(b, sweep)], b)
        _, stats = measure(lambda: project_encode(ctx, resident, b), device)
        batch_points.append({"batch_size": b, **summarise([stats], sweep)})
    del resident
    result["encode_by_batch"] = batch_points
    result["encode_knee_batch"] = _knee(batch_points, "batch_size")

    images = min(cfg.train_images, len(big.split_indices("train")))
    train_batch_points = []
    for b in tqdm(cfg.train_batch_sizes, desc="scaling: train vs batch", leave=False):
        if b > images:
            continue
        run = project_train(ctx, big_dir, images, b)
        train_batch_points.append({"batch_size": b, **summarise([run], run["images"]),
                                   "first_epoch_s": round(run["first_epoch_s"], 4)})
    result["train_by_batch"] = train_batch_points
    result["train_knee_batch"] = _knee(train_batch_points, "batch_size")
    result["what"] = ("one measurement per point; encode = encode_images from resident uint8 rows (placement timed "
                      "apart); train = experiments.train_vae, second epoch; knee = smallest batch within 90% of the best")
    if not cfg.keep_work:
        shutil.rmtree(big_dir, ignore_errors=True)
    return result


def _rows_to_device(cache, n: int, device: torch.device) -> torch.Tensor:
    """The first `n` uint8 rows of a cache, resident on `device`, (n, 3, S, S)."""
    return torch.from_numpy(np.array(cache.images[:n])).to(device)  # a copy: the memmap is read-only


def stage_celeba_resident(ctx: Context) -> dict[str, Any]:
    """CUDA only: encode CelebA's 202,599 images (cache rows replicated on the GPU) from a resident uint8 tensor."""
    cfg, device = ctx.config, ctx.device
    base, _ = split_to_device(ctx.cache, None, device)
    reps = math.ceil(cfg.celeba_rows / len(base))
    resident = base.repeat(reps, 1, 1, 1)[: cfg.celeba_rows].contiguous()  # (202599, 3, S, S) uint8 on the GPU
    del base
    _, warm = measure(lambda: project_encode(ctx, resident), device)
    samples = [measure(lambda: project_encode(ctx, resident), device)[1]
               for _ in range(cfg.repeats)]
    out = summarise(samples, cfg.celeba_rows)
    out["warmup_s"] = round(warm["wall_s"], 4)
    out["uint8_resident_mb"] = round(resident.numel() / BYTES_PER_MB, 1)
    out["float32_dataset_mb"] = round(resident.numel() * 4 / BYTES_PER_MB, 1)
    return out


# ---- goals and summary ----------------------------------------------------------------------------------------------
def _goal(name: str, target: str, measured: float | None, unit: str, passed: bool | None, note: str = "") -> dict:
    return {"goal": name, "target": target, "measured": measured, "unit": unit,
            "status": "not measured" if passed is None else ("pass" if passed else "FAIL"), "note": note}


def evaluate_goals(stages: dict[str, Any], device: torch.device) -> list[dict[str, Any]]:
    goals = []
    cuda = device.type == "cuda"
    enc = stages.get("encode")
    if not cuda:
        goals.append(_goal(
            "CPU: project encoding throughput vs common pipeline (resident uint8 cache)", f">= {GOAL_CPU_ENCODE_SPEEDUP:g}x",
            enc["speedup_resident"] if enc else None, "x", enc["speedup_resident"] >= GOAL_CPU_ENCODE_SPEEDUP if enc else None,
            f"end to end incl. cache build: {enc['speedup_end_to_end']}x" if enc else "encode stage not run"))
    no_gpu = "needs a CUDA device" if not cuda else ""
    celeba = stages.get("celeba_resident")
    goals.append(_goal(
        f"GPU: encode {CELEBA_IMAGES:,} images from a resident cache", f"<= {GOAL_GPU_RESIDENT_ENCODE_S:g} s",
        celeba["wall_s"] if celeba else None, "s", celeba["wall_s"] <= GOAL_GPU_RESIDENT_ENCODE_S if celeba else None,
        no_gpu or (f"peak GPU {celeba['peak_gpu_mb']} MB; float32 dataset would be {celeba['float32_dataset_mb']} MB"
                   if celeba else "stage not run")))
    goals.append(_goal(
        "GPU: end to end from JPEG files vs common pipeline", f">= {GOAL_GPU_END_TO_END_SPEEDUP:g}x",
        enc["speedup_end_to_end"] if (enc and cuda) else None, "x",
        enc["speedup_end_to_end"] >= GOAL_GPU_END_TO_END_SPEEDUP if (enc and cuda) else None, no_gpu))
    train = stages.get("train")
    goals.append(_goal(
        "GPU: training throughput", f">= {GOAL_GPU_TRAIN_IMAGES_PER_S:,.0f} images/s",
        train["project"]["images_per_s"] if (train and cuda) else None, "images/s",
        train["project"]["images_per_s"] >= GOAL_GPU_TRAIN_IMAGES_PER_S if (train and cuda) else None, no_gpu))
    if enc:
        goals.append(_goal("latents agree with the common pipeline", "numerics + pipeline within tolerance",
                           enc["agreement"]["pipeline"]["mean_rel"], "mean |d mu| / std(mu)", enc["agreement"]["passed"],
                           f"numerics max rel {enc['agreement']['numerics']['max_rel']:.2e}"))
    scaling = stages.get("scaling")
    if scaling and scaling["encode_by_size"]:
        top = max(scaling["encode_by_size"], key=lambda p: p["images"])
        growth = top["peak_gpu_mb"] if cuda else top["peak_rss_growth_mb"]
        goals.append(_goal(
            f"no float32 copy of the dataset: peak {'GPU' if cuda else 'RSS growth'} while encoding {top['images']:,} images",
            f"< float32 dataset ({top['float32_dataset_mb']} MB)", growth, "MB",
            None if growth is None else growth < top["float32_dataset_mb"],
            f"uint8 rows {top['uint8_dataset_mb']} MB (placed before the measurement)"))
    return goals


def _scaling_row(label: str, size: int, point: dict) -> str:
    """One row of the scaling table: label, size, wall time, throughput, memory."""
    return (f"| {label} | {_fmt(size)} | {_fmt(point['wall_s'], 3)} | {_fmt(point['images_per_s'])} | "
            f"{_fmt(point['peak_rss_growth_mb'])} | {_fmt(point['peak_gpu_mb'])} |")


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}" if abs(value) >= 0.01 or value == 0 else f"{value:.2e}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def summary_markdown(results: dict[str, Any]) -> str:
    """The tables the lead pastes into benchmarks/RESULTS.md."""
    m, stages = results["machine"], results["stages"]
    lines = [
        f"### {results['date']} - {m['description']} ({m['device_name']}; torch {m['torch']}, {m['cpu_count']} cores, "
        f"dataset: {results['dataset']['kind']} {results['dataset']['num_images']:,} images at {results['dataset']['size']}px, "
        f"{results['config']['repeats']} repeats, median)",
        "",
        "| stage | path | images | wall s | images/s | peak RSS MB | peak PSS incl. workers MB | peak GPU MB |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]

    def row(stage: str, path: str, r: dict[str, Any]) -> None:
        lines.append(f"| {stage} | {path} | {_fmt(r['images'])} | {_fmt(r['wall_s'], 3)} | {_fmt(r['images_per_s'])} | "
                     f"{_fmt(r.get('peak_rss_mb'))} | {_fmt(r.get('peak_tree_pss_mb'))} | {_fmt(r.get('peak_gpu_mb'))} |")

    if "encode" in stages:
        e = stages["encode"]
        row("encode", "common pipeline (PIL + DataLoader, fp32 eager)", e["baseline"])
        row("encode", "project end to end (build_cache + encode_images)", e["project_end_to_end"])
        row("encode", "project from resident uint8 cache", e["project_resident"])
    if "celeba_resident" in stages:
        row("encode", f"project, {CELEBA_IMAGES:,} rows resident on GPU", stages["celeba_resident"])
    if "cache_build" in stages:
        for r in stages["cache_build"]["runs"]:
            row("cache build", f"{'draft' if r['draft'] else 'no draft'}, {r['workers']} worker(s) "
                f"({_fmt(r['images_per_s_per_worker'])}/s per worker)", r)
    if "train" in stages:
        t = stages["train"]
        row("train", f"common pipeline (JPEG DataLoader, fp32 eager), batch {t['baseline']['batch_size']}", t["baseline"])
        row("train", f"project (train_vae), batch {t['project']['batch_size']}", t["project"])
    if "directions" in stages:
        d = stages["directions"]
        row("directions", f"mean_directions ({d['mean']['attributes']} attributes)", d["mean"])
        row("directions", f"probe_directions ({d['probe']['attributes']} attributes)", d["probe"])
    if "encode" in stages:
        e = stages["encode"]
        a = e["agreement"]
        lines += [
            "",
            f"Encoding speed-up: resident {e['speedup_resident']}x, end to end {e['speedup_end_to_end']}x; "
            f"compile/warm-up {e['compile_warmup']['warmup_overhead_s']} s excluded; "
            f"placement of the cache {e['project_placement']['wall_s']} s.",
            f"Latent agreement (std of mu {a['mu_std']:.3g}): numerics max |d mu| {a['numerics']['max_abs']:.2e} "
            f"({'pass' if a['numerics']['passed'] else 'FAIL'}, tol {a['numerics']['tolerance_max_rel']:g} x std); "
            f"pixels max {a['pixels']['max_abs']:.0f} / mean {a['pixels']['mean_abs']:.2f} levels; "
            f"pipeline max |d mu| {a['pipeline']['max_abs']:.3g}, mean {a['pipeline']['mean_abs']:.3g} "
            f"({'pass' if a['pipeline']['passed'] else 'FAIL'}, tol mean {PIPELINE_MEAN_TOLERANCE:g} x std).",
        ]
    if "train" in stages:
        t = stages["train"]
        lines.append(f"Training speed-up {t['speedup']}x; project first epoch {t['project']['first_epoch_s_median']} s "
                     f"(compile {t['project']['compile']}, warm-up {t['project']['compile_warmup_s']} s excluded).")
    if "scaling" in stages:
        s = stages["scaling"]
        lines += ["", "| scaling | size | wall s | images/s | peak RSS growth MB | peak GPU MB |", "|---|---:|---:|---:|---:|---:|"]
        for stage in ("encode", "train"):
            for p in s[f"{stage}_by_size"]:
                lines.append(_scaling_row(f"{stage} vs dataset size", p["images"], p))
        for stage in ("encode", "train"):
            for p in s[f"{stage}_by_batch"]:
                lines.append(_scaling_row(f"{stage} vs batch ({_fmt(p['images'])} images)", p["batch_size"], p))
        lines.append(f"Linear fits (seconds = a + b * images): encode {s['encode_fit']['seconds_per_1k']} s/1k images, "
                     f"R^2 {s['encode_fit']['r2']}; train {s['train_fit']['seconds_per_1k']} s/1k images, R^2 "
                     f"{s['train_fit']['r2']}. Knee (90% of best): encode batch {s['encode_knee_batch']}, "
                     f"train batch {s['train_knee_batch']}.")
    lines += ["", "| goal | target | measured | status | note |", "|---|---|---:|---|---|"]
    for g in results["goals"]:
        measured = "-" if g["measured"] is None else f"{_fmt(g['measured'], 2)} {g['unit']}"
        lines.append(f"| {g['goal']} | {g['target']} | {measured} | {g['status']} | {g['note']} |")
    return "\n".join(lines) + "\n"


def results_path(out_dir: Path, date: str, machine: str) -> Path:
    """benchmarks/<date>-<machine>.json, numbered -2, -3, ... when that name is taken (results are never overwritten)."""
    path = out_dir / f"{date}-{machine}.json"
    k = 2
    while path.exists():
        path = out_dir / f"{date}-{machine}-{k}.json"
        k += 1
    return path


# ---- main ------------------------------------------------------------------------------------------------------------
def run_stages(ctx: Context) -> tuple[dict[str, Any], float]:
    stages: dict[str, Any] = {}
    started = time.perf_counter()
    order = [s for s in STAGES if s in ctx.config.stages]
    for name in tqdm(order, desc="benchmark stages"):
        stage_start = time.perf_counter()
        stages[name] = {"encode": stage_encode, "cache_build": stage_cache_build, "train": stage_train,
                        "directions": stage_directions, "scaling": stage_scaling}[name](ctx)
        stages[name]["stage_wall_s"] = round(time.perf_counter() - stage_start, 2)
        tqdm.write(f"stage {name} done in {stages[name]['stage_wall_s']} s")
        if name == "encode" and ctx.device.type == "cuda":
            stages["celeba_resident"] = stage_celeba_resident(ctx)
    return stages, started


def main(config: BenchmarkConfig) -> dict[str, Any]:
    """Run the configured stages; write results.json + summary.md in the run folder and the JSON under out_dir."""
    load_before = load_average()
    threads_before = torch.get_num_threads()  # train_vae sets the thread count and leaves it set: restored below
    try:
        if config.threads:
            torch.set_num_threads(config.threads)
        ctx = setup(config)
        stages, started = run_stages(ctx)
    finally:
        torch.set_num_threads(threads_before)
    now = datetime.datetime.now(datetime.timezone.utc)
    results = {
        "format_version": RESULTS_FORMAT_VERSION,
        "date": now.strftime("%Y-%m-%d"),
        "timestamp_utc": now.isoformat(timespec="seconds"),
        "machine": {**machine_info(ctx.device), "load_average_start": load_before, "load_average_end": load_average()},
        "config": dataclasses.asdict(config),
        "dataset": {"kind": ctx.dataset_kind, "root": str(ctx.root), "num_images": ctx.num_images, "size": config.size,
                    "baseline_crop": ctx.crop, "encode_batch_size": ctx.encode_batch_size, "workers": ctx.workers},
        "model": {"config": dataclasses.asdict(ctx.reference.config), "weights": config.checkpoint or "random init (seeded)",
                  "parameters": sum(p.numel() for p in ctx.reference.parameters())},
        "stages": stages,
        "total_wall_s": round(time.perf_counter() - started, 1),
        "run_dir": str(ctx.run_dir),
    }
    results["goals"] = evaluate_goals(stages, ctx.device)
    summary = summary_markdown(results)
    atomic_write_json(results, ctx.run_dir / "results.json")
    atomic_write_text(summary, ctx.run_dir / "summary.md")
    out = results_path(Path(config.out_dir), results["date"], results["machine"]["description"])
    atomic_write_json(results, out)
    results["results_file"] = str(out)
    if not config.keep_work:
        shutil.rmtree(ctx.work, ignore_errors=True)
    print(summary)
    print(f"results: {out} (and {ctx.run_dir / 'results.json'})")
    return results


def parse_args(argv: list[str] | None = None) -> BenchmarkConfig:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", choices=("cpu", "gpu"), default="cpu",
                        help="gpu: CelebA-sized sweeps (10k/50k/200k images, big batches); flags given still win")
    defaults = BenchmarkConfig()
    for f in dataclasses.fields(BenchmarkConfig):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS)
        elif isinstance(default, tuple):
            kind = str if f.name == "stages" else int
            parser.add_argument(flag, type=kind, nargs="+", default=argparse.SUPPRESS, help=f"default {default}")
        elif default is None:  # "auto": the type comes from the annotation, e.g. "int | None"
            if f.type.startswith("bool"):
                parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                                    help="default: on for CUDA, off for CPU")
                continue
            kind = int if f.type.startswith("int") else str
            parser.add_argument(flag, type=kind, default=argparse.SUPPRESS, help="default: auto")
        else:
            parser.add_argument(flag, type=type(default), default=argparse.SUPPRESS, help=f"default {default!r}")
    given = vars(parser.parse_args(argv))
    preset = given.pop("preset")
    config = BenchmarkConfig()
    if preset == "gpu":
        config = gpu_preset(config)
    return dataclasses.replace(config, **given)


if __name__ == "__main__":
    main(parse_args())
