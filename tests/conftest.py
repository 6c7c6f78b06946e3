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


def draw_tiny_face(labels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """One uint8 (3, size, size) image showing TINY_ATTRIBUTES' labels (K,) as visible blocks on a noisy colour."""
    q = size // 4
    base = rng.integers(60, 160, size=3)[:, None, None]
    img = np.broadcast_to(base, (3, size, size)).astype(np.int16) + rng.integers(-8, 9, (3, size, size))
    if labels[0]:  # Bangs: dark band across the top
        img[:, :q, :] = 30
    if labels[1]:  # Eyeglasses: bright bar in the middle
        img[:, q + q // 2 : 2 * q, q : 3 * q] = 240
    if labels[2]:  # Male: bluish tint on the lower half
        img[2, 2 * q :, :] += 60
    if labels[3]:  # Smiling: red block near the bottom
        img[0, 3 * q :, q : 3 * q] = 230
    return np.clip(img, 0, 255).astype(np.uint8)


def write_tiny_cache(directory: Path, n: int = 96, size: int = 32, seed: int = 0,
                     labels: np.ndarray | None = None) -> Path:
    """A cache whose images carry their attributes as visible blocks (so models can learn them), 80/10/10 split;
    `labels` (n, 4) bool, else drawn at random."""
    rng = np.random.default_rng(seed)
    if labels is None:
        labels = rng.random((n, len(TINY_ATTRIBUTES))) < np.array([0.3, 0.2, 0.45, 0.5])
    images = np.stack([draw_tiny_face(row, size, rng) for row in labels])
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


@pytest.fixture
def tiny_setup():
    """A tiny untrained 32 px ConvVAE (8-d latent) and mean directions of Eyeglasses, Male, Smiling in its space."""
    from attributes import mean_directions
    from models.vae import ConvVAE

    torch.manual_seed(0)
    model = ConvVAE(VAEConfig(image_size=32, widths=(8, 16), latent_dim=8)).eval()
    g = torch.Generator().manual_seed(5)
    z = torch.randn(400, 8, generator=g)
    labels = torch.stack([z[:, 0] > 0.3, z[:, 1] > -0.2, z[:, 2] > 0], dim=1)
    dirs = mean_directions(z, labels, ["Eyeglasses", "Male", "Smiling"])
    return model, dirs
