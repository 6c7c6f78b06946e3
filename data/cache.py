"""The uint8 image cache: JPEGs decoded, cropped and resized once, then memory-mapped for every step after.

A cache is a folder:
    images.npy        (N, 3, S, S) uint8, rows in the order of annotations.csv
    annotations.csv   the annotation table (index `image_id`), attributes as 0/1
    meta.json         what it was built from; written last, so its presence marks a complete cache
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

CACHE_FORMAT_VERSION = 1
IMAGES_FILE = "images.npy"
TABLE_FILE = "annotations.csv"
META_FILE = "meta.json"
SPLITS = ("train", "valid", "test")


@dataclass
class FaceCache:
    """A built cache: memory-mapped uint8 images, their annotation table and build metadata."""

    directory: Path
    images: np.ndarray  # (N, 3, S, S) uint8
    table: pd.DataFrame  # N rows, same order as images
    meta: dict

    @property
    def attribute_names(self) -> list[str]:
        return list(self.meta["attributes"])

    @property
    def size(self) -> int:
        return int(self.images.shape[-1])

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def split_indices(self, split: str | None) -> np.ndarray:
        """Row positions of a split (`train`/`valid`/`test`), or all rows for None or "all"."""
        if split is None or split == "all":
            return np.arange(len(self))
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS} or 'all'")
        return np.flatnonzero(self.table["partition"].to_numpy() == split)

    def labels(self, split: str | None = None) -> np.ndarray:
        """Attribute labels as bool, shape (n, K), columns in `attribute_names` order."""
        rows = self.split_indices(split)
        return self.table[self.attribute_names].to_numpy(dtype=bool)[rows]


def load_cache(directory: str | Path, mmap: bool = True) -> FaceCache:
    """Open a cache folder written by `build_cache`; raises if it is missing or incomplete."""
    directory = Path(directory)
    meta_path = directory / META_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(
            f"no complete image cache in {directory} ({META_FILE} missing); "
            "build one with `python -m experiments.prepare_data`"
        )
    meta = json.loads(meta_path.read_text())
    if meta.get("format_version") != CACHE_FORMAT_VERSION:
        raise ValueError(
            f"{meta_path}: cache format version {meta.get('format_version')!r}, "
            f"expected {CACHE_FORMAT_VERSION}; rebuild the cache"
        )
    images = np.load(directory / IMAGES_FILE, mmap_mode="r" if mmap else None)
    table = pd.read_csv(directory / TABLE_FILE, index_col="image_id")
    for name in meta["attributes"]:
        table[name] = table[name].astype(bool)
    if images.ndim != 4 or images.shape[1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"{directory / IMAGES_FILE}: expected (N, 3, S, S) uint8, got {images.shape} {images.dtype}")
    if len(table) != images.shape[0]:
        raise ValueError(
            f"{directory}: {TABLE_FILE} has {len(table)} rows but {IMAGES_FILE} has {images.shape[0]} images"
        )
    return FaceCache(directory=directory, images=images, table=table, meta=meta)


def to_float_images(images: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 in [0, 255] -> float in [-1, 1], on whatever device `images` is on."""
    return images.to(dtype).div_(127.5).sub_(1.0)


def to_uint8_images(images: torch.Tensor) -> torch.Tensor:
    """float in [-1, 1] -> uint8 in [0, 255] (clamped, rounded)."""
    return images.detach().float().add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8)


class CachedFaces(Dataset):
    """One split of a cache as (image float (3, S, S) in [-1, 1], labels float (K,)) pairs."""

    def __init__(self, cache: FaceCache, split: str | None = "train"):
        self.cache = cache
        self.rows = cache.split_indices(split)
        self.labels = torch.from_numpy(cache.labels(split).astype(np.float32))  # (n, K)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = torch.from_numpy(np.array(self.cache.images[self.rows[i]]))  # (3, S, S) uint8
        return to_float_images(image), self.labels[i]


def split_to_device(
    cache: FaceCache, split: str | None, device: torch.device | str
) -> tuple[torch.Tensor, torch.Tensor]:
    """A whole split as uint8 images (n, 3, S, S) and bool labels (n, K) on `device`.

    uint8 is 4x smaller than float32: CelebA at 64x64 is 2.5 GB resident, decoded per batch.
    """
    rows = cache.split_indices(split)
    images = torch.from_numpy(np.ascontiguousarray(cache.images[rows])).to(device)
    labels = torch.from_numpy(cache.labels(split)).to(device)
    return images, labels
