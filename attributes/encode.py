"""Encode a whole image set to latents in large batches: the encoder means `mu` (and log-variances), in dataset order.

Directions and edits use `mu`, never a sampled z (see attributes.edit). On CUDA the uint8 images go to the GPU once
when they fit (else in pinned chunks) and are decoded to [-1, 1] per batch under bf16 autocast, channels_last and
inference mode; on CPU in fp32, channels_last, each conv fused with its activation (ConvVAE.encode_fused). Under torchrun each rank encodes one contiguous shard and the shards are
all-gathered back into dataset order.
"""
from __future__ import annotations

import math
import os
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from data.cache import FaceCache, fits_on_gpu, to_float_images
from data.io import atomic_torch_save, file_sha256, load_torch_file

LATENTS_VERSION = 2
# CPU: small batches stay in the processor's cache (benchmarks/RESULTS.md has the batch sweep)
CUDA_BATCH, CPU_BATCH = 4096, 64


def _check_images(images) -> tuple[int, ...]:
    shape = tuple(images.shape)
    dtype_ok = images.dtype == torch.uint8 if isinstance(images, torch.Tensor) else images.dtype == np.uint8
    if len(shape) != 4 or shape[1] != 3 or not dtype_ok:
        raise ValueError(f"images must be uint8 (N, 3, S, S) (tensor or ndarray), got {shape} {images.dtype}")
    return shape


def _rows(images, start: int, stop: int) -> torch.Tensor:
    """uint8 rows [start, stop) as a CPU tensor (a copy for read-only memmaps, a view otherwise)."""
    if isinstance(images, torch.Tensor):
        return images[start:stop]
    block = images[start:stop]
    return torch.from_numpy(np.array(block) if not block.flags.writeable or not block.flags.c_contiguous else block)


@contextmanager
def _channels_last(model: torch.nn.Module):
    """Model weights in channels_last for the block; a model that was not is put back in the default layout."""
    convs = [p for p in model.parameters() if p.ndim == 4]
    was = all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    model.to(memory_format=torch.channels_last)
    try:
        yield
    finally:
        if not was:
            model.to(memory_format=torch.contiguous_format)


@contextmanager
def _cpu_threads(threads: int):
    """Use `threads` intra-op threads for the block, then restore the previous setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _row_source(images, rows: int, device: torch.device, fits=fits_on_gpu) -> str:
    """Where the batches of `rows` rows of `images` come from when encoding on `device`:

    "on_device": the images already live on an accelerator: used as they are (a view per batch, moved only if on
      another device), never checked against free memory and never pinned (pinning a GPU tensor raises);
    "resident": host images uploaded once, when they fit in half the GPU's free memory (`fits`);
    "pinned": host images copied per batch through pinned memory;
    "host": host images read per batch on a CPU device.
    """
    if isinstance(images, torch.Tensor) and images.device.type != "cpu":
        return "on_device"
    if device.type != "cuda":
        return "host"
    return "resident" if rows > 0 and fits(rows * math.prod(images.shape[1:]), device) else "pinned"


def _encode_range(model, images, start, stop, *, batch_size, device, compile_model, amp, progress, desc):
    """Encode rows [start, stop) -> lists of (mu, logvar) chunks on `device` (inference tensors)."""
    cuda = device.type == "cuda"
    # CPU: oneDNN conv + LeakyReLU fused (ConvVAE.encode_fused; other models fall back to their encode)
    encode = torch.compile(model.encode) if compile_model else getattr(model, "encode_fused", model.encode)
    source = _row_source(images, stop - start, device)
    resident = None
    if source == "resident":
        resident = _rows(images, start, stop).to(device, non_blocking=False)  # one transfer for the whole shard

    def batch(a: int, b: int) -> torch.Tensor:
        if source == "on_device":
            return images[a:b].to(device, non_blocking=True)  # a view when already on `device`
        if resident is not None:
            return resident[a - start : b - start]
        x = _rows(images, a, b)
        return x.pin_memory().to(device, non_blocking=True) if source == "pinned" else x

    mus, logvars = [], []
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda and amp else nullcontext()
    with torch.inference_mode(), autocast:
        for a in tqdm(range(start, stop, batch_size), desc=desc, disable=not progress, unit="batch"):
            # channels_last while still uint8: a quarter of the bytes to move than after the float conversion
            x = to_float_images(batch(a, min(a + batch_size, stop)).contiguous(memory_format=torch.channels_last))
            mu, logvar = encode(x)
            mus.append(mu.float()), logvars.append(logvar.float())
    return mus, logvars


def encode_images(
    model: torch.nn.Module,
    images: torch.Tensor | np.ndarray,
    *,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    keep_on_device: bool = False,
    compile_model: bool = False,
    amp: bool = True,
    progress: bool = True,
    distributed: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Encoder means and log-variances of uint8 images (N, 3, S, S) -> (mu (N, D), logvar (N, D)) float32.

    Rows come back in the order of `images`, on CPU unless keep_on_device. batch_size defaults to 4096 on CUDA,
    64 on CPU. device defaults to the model's; the model is moved there, and put in eval mode and channels_last
    for the call (its training flag and memory layout are restored). amp: bf16 autocast on CUDA (latents then match fp32 to
    about 1e-2 relative; plenty for directions), never on CPU. distributed None = shard across ranks when a torch.distributed
    process group is initialised (torchrun via pipeline.distributed.init_distributed); every rank gets all N rows.
    """
    n = _check_images(images)[0]
    device = torch.device(device) if device is not None else next(model.parameters()).device
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    batch_size = int(batch_size or (CUDA_BATCH if device.type == "cuda" else CPU_BATCH))
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    rank, world = _world()
    if distributed is False:
        rank, world = 0, 1
    shard = math.ceil(n / world) if n else 0
    start, stop = min(n, rank * shard), min(n, (rank + 1) * shard)

    was_training = model.training
    model.to(device).eval()
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    threads = _cpu_threads((os.cpu_count() or 1) // max(1, local_world)) if device.type == "cpu" else nullcontext()
    try:
        with threads, _channels_last(model):
            kw = dict(batch_size=batch_size, device=device, compile_model=compile_model, amp=amp)
            mus, logvars = _encode_range(model, images, start, stop, progress=progress and rank == 0,
                                         desc=f"encode {n} images" + (f" ({world} ranks)" if world > 1 else ""), **kw)
            if not mus:  # an empty shard (N < world size) or N = 0: one row tells the latent size
                probe_mu, probe_lv = _encode_range(model, images, 0, min(1, n), progress=False, desc="", **kw) \
                    if n else ([], [])
                if not probe_mu:
                    raise ValueError("cannot encode an empty image set: the latent size is unknown")
                mus, logvars = [probe_mu[0][:0]], [probe_lv[0][:0]]
    finally:
        model.train(was_training)
    mu, logvar = torch.cat(mus), torch.cat(logvars)  # (n_local, D), normal tensors outside inference mode
    if world > 1:
        mu, logvar = _gather_shards(mu, shard, n), _gather_shards(logvar, shard, n)
    if not keep_on_device:
        mu, logvar = mu.cpu(), logvar.cpu()
    return mu, logvar


def _gather_shards(local: torch.Tensor, shard: int, n: int) -> torch.Tensor:
    """All-gather equal-size (zero-padded) shards, concatenate in rank order and trim the padding -> (n, D)."""
    padded = torch.zeros((shard, local.shape[1]), dtype=local.dtype, device=local.device)
    padded[: len(local)] = local
    parts = [torch.empty_like(padded) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, padded)
    return torch.cat(parts)[:n]


@dataclass(eq=False)
class Latents:
    """Encoder means and log-variances of a set of images, with their ids, partitions, labels and provenance."""

    mu: torch.Tensor  # (N, D)
    logvar: torch.Tensor  # (N, D)
    index: list[str]  # image ids, row order
    partition: list[str] | None = None  # per row: train / valid / test
    split: str = "all"  # the split that was encoded
    labels: torch.Tensor | None = None  # (N, K) bool, columns = attribute_names
    attribute_names: list[str] = field(default_factory=list)
    checkpoint: str | None = None
    checkpoint_sha256: str | None = None  # what encoded them
    cache_dir: str | None = None
    cache_fingerprint: str | None = None  # what was encoded (data.cache: images + labels)
    version: int = LATENTS_VERSION

    def __post_init__(self) -> None:
        self.mu, self.logvar = torch.as_tensor(self.mu), torch.as_tensor(self.logvar)
        n = self.mu.shape[0]
        if self.mu.ndim != 2 or self.logvar.shape != self.mu.shape:
            raise ValueError(f"mu and logvar must both be (N, D), got {tuple(self.mu.shape)} and {tuple(self.logvar.shape)}")
        self.index = [str(i) for i in self.index]
        if len(self.index) != n:
            raise ValueError(f"index has {len(self.index)} ids for {n} latents")
        if self.partition is not None:
            self.partition = [str(p) for p in self.partition]
            if len(self.partition) != n:
                raise ValueError(f"partition has {len(self.partition)} entries for {n} latents")
        self.attribute_names = [str(a) for a in self.attribute_names]
        if self.labels is not None:
            self.labels = torch.as_tensor(self.labels).bool()
            if tuple(self.labels.shape) != (n, len(self.attribute_names)):
                raise ValueError(f"labels must be (N={n}, K={len(self.attribute_names)}), got {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return int(self.mu.shape[0])

    @property
    def latent_dim(self) -> int:
        return int(self.mu.shape[1])

    def rows(self, split: str | None) -> np.ndarray:
        """Row positions of a partition, or all rows for None / "all"."""
        if split is None or split == "all":
            return np.arange(len(self))
        if self.partition is None:
            raise ValueError(f"these latents have no partition column; cannot select split {split!r}")
        rows = np.flatnonzero(np.asarray(self.partition) == split)
        if not len(rows):
            raise ValueError(f"no latents in split {split!r}; partitions present: {sorted(set(self.partition))}")
        return rows

    def select(self, split: str | None) -> Latents:
        """The rows of one split as a new Latents."""
        rows = self.rows(split)
        idx = torch.from_numpy(rows)
        return Latents(
            mu=self.mu[idx], logvar=self.logvar[idx], index=[self.index[i] for i in rows],
            partition=None if self.partition is None else [self.partition[i] for i in rows],
            split=split or "all", labels=None if self.labels is None else self.labels[idx],
            attribute_names=list(self.attribute_names), checkpoint=self.checkpoint,
            checkpoint_sha256=self.checkpoint_sha256, cache_dir=self.cache_dir, cache_fingerprint=self.cache_fingerprint,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version, "mu": self.mu.contiguous(), "logvar": self.logvar.contiguous(),
            "index": list(self.index), "partition": None if self.partition is None else list(self.partition),
            "split": self.split, "labels": self.labels, "attribute_names": list(self.attribute_names),
            "checkpoint": self.checkpoint, "checkpoint_sha256": self.checkpoint_sha256, "cache_dir": self.cache_dir,
            "cache_fingerprint": self.cache_fingerprint,
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically; read back with `Latents.load` (weights_only=True)."""
        return atomic_torch_save(self.to_dict(), path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Latents:
        """Read a file written by `save` (weights_only=True); a damaged one raises data.io.CorruptArtifactError."""
        remedy = ("Latents are encoded from the run's checkpoint by `python -m experiments.fit_directions`; it "
                  "re-encodes when the file is gone, so delete a damaged one.")
        data = load_torch_file(path, kind="encoded latents", remedy=remedy)
        if not isinstance(data, dict) or data.get("version") != LATENTS_VERSION:
            raise ValueError(f"{path}: not a version-{LATENTS_VERSION} latents file. {remedy}")
        return cls(**data)


def encode_cache(
    model: torch.nn.Module,
    cache: FaceCache,
    split: str | None = None,
    *,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_sha256: str | None = None,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    compile_model: bool = False,
    amp: bool = True,
    progress: bool = True,
    distributed: bool | None = None,
) -> Latents:
    """Encode one split of a cache (None / "all" = every image) -> Latents with ids, partitions and labels.

    checkpoint: the VAE checkpoint file the model came from, recorded with its sha256 (hashed here unless given);
    the cache's fingerprint is recorded too, so a consumer can tell stale latents. A model that encodes any image to
    a non-finite mu or logvar is refused (ValueError naming the first such image).
    """
    rows = cache.split_indices(split)
    whole = split is None or split == "all"
    images = cache.images if whole else cache.images[rows]  # the memmap itself when encoding everything
    mu, logvar = encode_images(model, images, batch_size=batch_size, device=device, compile_model=compile_model,
                               amp=amp, progress=progress, distributed=distributed)
    table = cache.table.iloc[rows]
    bad = ~(torch.isfinite(mu).all(1) & torch.isfinite(logvar).all(1))  # (N,)
    if bad.any():
        raise ValueError(f"{'the model' if checkpoint is None else checkpoint} encodes {int(bad.sum())} image(s) of "
                         f"{cache.directory} to non-finite latents (first: {table.index[int(bad.nonzero()[0, 0])]}); "
                         "the model is unusable: train again with `python -m experiments.train_vae` (a lower --lr)")
    partition = table["partition"].astype(str).tolist() if "partition" in table.columns else None
    return Latents(
        mu=mu, logvar=logvar, index=[str(i) for i in table.index], partition=partition, split=split or "all",
        labels=torch.from_numpy(cache.labels(split)), attribute_names=cache.attribute_names,
        checkpoint=None if checkpoint is None else str(checkpoint),
        checkpoint_sha256=checkpoint_sha256 or (None if checkpoint is None else file_sha256(checkpoint)),
        cache_dir=str(cache.directory), cache_fingerprint=cache.fingerprint,
    )
