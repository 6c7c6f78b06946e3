"""Shared fixtures: a tiny image cache in the real on-disk format, with attributes that change pixels."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from data.cache import write_cache
from models.vae import VAEConfig

TINY_ATTRIBUTES = ("Bangs", "Eyeglasses", "Male", "Smiling")
TINY_VAE = VAEConfig(latent_dim=8, widths=(8, 16))  # the tests' VAE (train() sizes it for the cache's images)


def write_tiny_cache(directory: Path, n: int = 96, size: int = 32, seed: int = 0) -> Path:
    """A cache whose images carry their attributes as visible blocks (so models can learn them), 80/10/10 split."""
    rng = np.random.default_rng(seed)
    labels = rng.random((n, len(TINY_ATTRIBUTES))) < np.array([0.3, 0.2, 0.45, 0.5])
    images = np.empty((n, 3, size, size), dtype=np.uint8)
    q = size // 4
    for i in range(n):
        base = rng.integers(60, 160, size=3)[:, None, None]
        img = np.broadcast_to(base, (3, size, size)).astype(np.int16) + rng.integers(-8, 9, (3, size, size))
        if labels[i, 0]:  # Bangs: dark band across the top
            img[:, :q, :] = 30
        if labels[i, 1]:  # Eyeglasses: bright bar in the middle
            img[:, q + q // 2 : 2 * q, q : 3 * q] = 240
        if labels[i, 2]:  # Male: bluish tint on the lower half
            img[2, 2 * q :, :] += 60
        if labels[i, 3]:  # Smiling: red block near the bottom
            img[0, 3 * q :, q : 3 * q] = 230
        images[i] = np.clip(img, 0, 255)
    partition = np.array(["train"] * n, dtype=object)
    partition[int(0.8 * n) : int(0.9 * n)] = "valid"
    partition[int(0.9 * n) :] = "test"
    table = pd.DataFrame(labels.astype(int), columns=list(TINY_ATTRIBUTES))
    table.index = pd.Index([f"{i + 1:06d}.jpg" for i in range(n)], name="image_id")
    table["partition"] = partition
    table[list(TINY_ATTRIBUTES)] = table[list(TINY_ATTRIBUTES)].astype(bool)
    meta = {"size": size, "crop": None, "source_root": "tests/tiny", "layout": "fixture", "file_count": n, "skipped": [],
            "draft": False}
    write_cache(directory, table, meta, images)
    return directory


@pytest.fixture
def tiny_cache_dir(tmp_path: Path) -> Path:
    """Path of a freshly written 96-image, 32x32 cache."""
    return write_tiny_cache(tmp_path / "tiny-cache")


@pytest.fixture(autouse=True)
def _deterministic_torch():
    torch.manual_seed(0)
    yield
