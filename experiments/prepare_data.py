"""Build the uint8 image cache from real CelebA (any layout) or from procedural faces.

    python -m experiments.prepare_data --celeba-root /data/celeba          # -> cache/celeba-64
    python -m experiments.prepare_data --generate 20000 --size 64          # -> datasets/synthetic, cache/synthetic-64

An intact cache whose settings match is reused (--force rebuilds); a damaged one is rebuilt.
"""
from __future__ import annotations

from pathlib import Path

from data.cache import load_cache
from data.prepare import PrepareConfig, prepare_cache
from pipeline.cli import parse_config, run_script


def main(config: PrepareConfig) -> Path:
    """Make (or reuse) the cache and return its folder."""
    out, reused = prepare_cache(config)
    meta = load_cache(out).meta
    n = meta["num_images"]
    if reused:
        print(f"reused the cache in {out}: {n} images at {meta['size']}px (fingerprint {meta['fingerprint'][:12]}); "
              "--force rebuilds")
    else:
        print(f"cached {n} images at {meta['size']}px in {out}: {n / max(meta['build_seconds'], 1e-9):.0f} images/s "
              f"(draft={meta['draft']}, fingerprint {meta['fingerprint'][:12]})")
    if meta["skipped"]:
        print(f"skipped {len(meta['skipped'])} unreadable images (listed in {out / 'meta.json'})")
    return out


if __name__ == "__main__":
    run_script("prepare_data", main, parse_config(PrepareConfig, description=__doc__))
