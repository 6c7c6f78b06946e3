"""Make (or reuse) the image cache for a source: a real CelebA copy, or procedural faces generated first."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from data.cache import build_cache, load_cache


@dataclass
class PrepareConfig:
    """Where the faces come from and how the cache is built."""

    celeba_root: str | None = field(default=None, metadata={"help": "a CelebA copy (torchvision, official or Kaggle "
                                                                    "layout); None = procedural faces"})
    generate: int = field(default=20000, metadata={"help": "procedural faces to generate (without --celeba-root)"})
    size: int = field(default=64, metadata={"help": "image side in the cache (64 or 128)"})
    out: str | None = field(default=None, metadata={"help": "cache folder; None = cache/{celeba,synthetic}-SIZE"})
    synthetic_root: str = "datasets/synthetic"
    seed: int = field(default=0, metadata={"help": "procedural generator seed"})
    decode_workers: int | None = field(default=None, metadata={"help": "image decode processes; None = all cores"})
    skip_bad: bool = field(default=False, metadata={"help": "leave unreadable images out (listed in meta.json)"})
    draft: bool = field(default=True, metadata={"help": "JPEG draft decoding at reduced scale"})
    force: bool = field(default=False, metadata={"help": "rebuild even when a matching cache exists"})
    progress: bool = field(default=True, metadata={"cli": False})

    @property
    def out_dir(self) -> Path:
        source = "synthetic" if self.celeba_root is None else "celeba"
        return Path(self.out) if self.out is not None else Path("cache") / f"{source}-{self.size}"


def prepare_cache(config: PrepareConfig) -> tuple[Path, bool]:
    """Build the cache `config` describes, or reuse a matching intact one -> (cache folder, reused)."""
    force = config.force
    if config.celeba_root is None:
        from data import synthetic  # lazily: real-CelebA users never need the generator

        # The cache's meta cannot see a change of seed (same root, same count), so a regenerated set forces a rebuild.
        if not synthetic.is_complete(config.synthetic_root, config.generate, config.seed):
            force = True
        synthetic.generate_synthetic_celeba(config.synthetic_root, config.generate, seed=config.seed,
                                            workers=config.decode_workers)
        source = config.synthetic_root
    else:
        source = config.celeba_root
    started_at = time.time()
    out = build_cache(source, config.out_dir, size=config.size, workers=config.decode_workers, skip_bad=config.skip_bad,
                      draft=config.draft, force=force, progress=config.progress)
    return out, load_cache(out).meta.get("built_at", 0.0) < started_at
