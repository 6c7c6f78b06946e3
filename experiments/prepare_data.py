"""Build the uint8 image cache from real CelebA (any layout) or from the procedural face generator.

    python -m experiments.prepare_data --celeba-root /data/celeba          # -> cache/celeba-64
    python -m experiments.prepare_data --synthetic 20000 --size 64         # -> datasets/synthetic, cache/synthetic-64
    python -m experiments.prepare_data --celeba-root ... --size 128 --skip-bad --no-draft --workers 8

A cache whose meta matches (source, layout, size, crop, file count, draft, skip-bad) is reused; --force rebuilds.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

from data.cache import build_cache, load_cache


@dataclass
class PrepareConfig:
    """Where the faces come from and how the cache is built."""

    celeba_root: str | None = None  # None: generate procedural faces instead
    synthetic: int = 20000  # number of procedural images (when celeba_root is None)
    size: int = 64
    out: str | None = None  # default cache/celeba-{size} or cache/synthetic-{size}
    synthetic_root: str = "datasets/synthetic"
    seed: int = 0  # of the procedural generator
    workers: int | None = None  # decode processes; None = all cores
    skip_bad: bool = False
    draft: bool = True  # JPEG draft decoding at reduced scale
    force: bool = False


def main(config: PrepareConfig) -> Path:
    """Make (or reuse) the cache and return its folder."""
    force = config.force
    if config.celeba_root is None:
        from data import synthetic  # lazily: real-CelebA users never need the generator

        # The cache's meta cannot see a change of seed (same root, same count), so a regenerated set forces a rebuild.
        if not synthetic.is_complete(config.synthetic_root, config.synthetic, config.seed):
            force = True
        started = time.perf_counter()
        synthetic.generate_synthetic_celeba(
            config.synthetic_root, config.synthetic, seed=config.seed, workers=config.workers
        )
        seconds = time.perf_counter() - started
        print(f"procedural faces: {config.synthetic} in {config.synthetic_root} ({seconds:.1f} s)")
        source, name = config.synthetic_root, "synthetic"
    else:
        source, name = config.celeba_root, "celeba"
    out = Path(config.out) if config.out is not None else Path("cache") / f"{name}-{config.size}"
    started_at = time.time()
    started = time.perf_counter()
    build_cache(
        source, out, size=config.size, workers=config.workers, skip_bad=config.skip_bad, draft=config.draft, force=force
    )
    elapsed = time.perf_counter() - started
    meta = load_cache(out).meta
    n = meta["num_images"]
    if meta.get("built_at", 0.0) < started_at:
        print(f"reused the cache in {out}: {n} images at {meta['size']}px (draft={meta['draft']}); --force rebuilds")
    else:
        decode = meta["build_seconds"]
        print(
            f"cached {n} images at {config.size}px in {out}: {n / max(decode, 1e-9):.0f} images/s decoding + writing "
            f"({n / max(elapsed, 1e-9):.0f} images/s including annotation parsing; draft={config.draft}, "
            f"workers={config.workers or 'all cores'})"
        )
        if meta["skipped"]:
            print(f"skipped {len(meta['skipped'])} unreadable images (listed in {out / 'meta.json'})")
    return out


def parse_args(argv: list[str] | None = None) -> PrepareConfig:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--celeba-root", metavar="DIR", help="a CelebA copy (torchvision, official or Kaggle layout)")
    source.add_argument("--synthetic", type=int, metavar="N", default=PrepareConfig.synthetic,
                        help=f"generate N procedural faces instead (default {PrepareConfig.synthetic})")  # fmt: skip
    parser.add_argument("--size", type=int, default=PrepareConfig.size, help="image side in the cache (64 or 128)")
    parser.add_argument("--out", metavar="DIR", help="cache folder (default cache/celeba-SIZE or cache/synthetic-SIZE)")
    parser.add_argument("--synthetic-root", default=PrepareConfig.synthetic_root, metavar="DIR")
    parser.add_argument("--seed", type=int, default=PrepareConfig.seed, help="procedural generator seed")
    parser.add_argument("--workers", type=int, help="decode processes (default: all cores)")
    parser.add_argument("--skip-bad", action="store_true", help="leave unreadable images out (recorded in meta.json)")
    parser.add_argument("--no-draft", dest="draft", action="store_false", help="decode JPEGs at full resolution")
    parser.add_argument("--force", action="store_true", help="rebuild even when a matching cache exists")
    args = parser.parse_args(argv)
    return PrepareConfig(**vars(args))


if __name__ == "__main__":
    main(parse_args())
