"""Do the project's path and the common pipeline compute the same latents? Numerics, pixels and whole pipelines."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from benchmarks.project import project_encode

if TYPE_CHECKING:
    from benchmarks.context import Context

# Latent agreement, in units of the spread of the baseline's mu (its overall standard deviation).
# numerics: identical uint8 pixels through the project's encoder and the fp32 eager one (bf16 on CUDA is looser).
# pipeline: the project's cache pixels against the common PIL CenterCrop+Resize (different resize / draft decode).
NUMERICS_TOLERANCE = {"fp32": 1e-3, "bf16": 1e-1}  # bf16: a first guess, to be confirmed on a GPU
PIPELINE_MEAN_TOLERANCE = 0.1
PIXEL_CHUNK_ROWS = 4096  # images per chunk of the pixel comparison: one chunk's widened difference is small


def latents_mu(output: Any) -> torch.Tensor:
    """mu (N, D) as float32 on the CPU, from an (mu, logvar) pair, a Latents-like object or a tensor."""
    mu = output[0] if isinstance(output, (tuple, list)) else getattr(output, "mu", output)
    return torch.as_tensor(mu).float().cpu()


def abs_diff(a: torch.Tensor, b: torch.Tensor, scale: float) -> dict[str, float]:
    """Largest and mean |a - b|, absolute and relative to `scale`."""
    d = (a.float() - b.float()).abs()
    return {"max_abs": float(d.max()), "mean_abs": float(d.mean()),
            "max_rel": float(d.max()) / scale, "mean_rel": float(d.mean()) / scale}


def _rows(images: np.ndarray | torch.Tensor, start: int, stop: int) -> np.ndarray:
    chunk = images[start:stop]
    return chunk.cpu().numpy() if torch.is_tensor(chunk) else np.asarray(chunk)


def pixel_diff(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor,
               chunk_rows: int = PIXEL_CHUNK_ROWS) -> dict[str, float]:
    """Largest and mean |a - b| of two uint8 image arrays (N, 3, S, S), `chunk_rows` images at a time.

    One-shot, the widened difference of the whole dataset costs several bytes per pixel (tens of GB for CelebA at
    64 px); in chunks it is one chunk's worth, and a memory-mapped `a` is read a chunk at a time.
    """
    n = len(a)
    if len(b) != n:
        raise ValueError(f"pixel_diff: {n} images against {len(b)}")
    largest, total = 0, 0
    for start in range(0, n, chunk_rows):
        stop = min(start + chunk_rows, n)
        d = np.abs(_rows(a, start, stop).astype(np.int16) - _rows(b, start, stop).astype(np.int16))  # uint8 would wrap
        largest = max(largest, int(d.max()))
        total += int(d.sum(dtype=np.int64))  # exact: no float rounding however many pixels
    count = n * int(np.prod(a.shape[1:]))
    return {"max_abs": float(largest), "mean_abs": total / count if count else 0.0}


def encode_agreement(ctx: Context, outputs: dict[str, Any], baseline_u8: torch.Tensor) -> dict[str, Any]:
    """Numerics on identical pixels, the pixels themselves, the whole pipelines, and resident vs end to end."""
    base_mu = latents_mu(outputs["baseline"])  # (N, D)
    scale = float(base_mu.std())
    precision = "bf16" if ctx.device.type == "cuda" else "fp32"
    same_pixels_mu = latents_mu(project_encode(ctx, baseline_u8))
    numerics = abs_diff(same_pixels_mu, base_mu, scale)
    numerics.update(tolerance_max_rel=NUMERICS_TOLERANCE[precision], project_precision=precision,
                    passed=numerics["max_rel"] <= NUMERICS_TOLERANCE[precision],
                    what="project encode_images vs fp32 eager encoder on the identical uint8 pixels")
    pixels = {**pixel_diff(ctx.cache.images, baseline_u8),
              "what": "cache (preprocess_image, draft) vs common PIL CenterCrop+Resize, in uint8 levels"}
    pipeline = abs_diff(latents_mu(outputs["project_end_to_end"]), base_mu, scale)
    pipeline.update(tolerance_mean_rel=PIPELINE_MEAN_TOLERANCE, passed=pipeline["mean_rel"] <= PIPELINE_MEAN_TOLERANCE,
                    what="project end-to-end mu vs common pipeline mu (different resize filter / draft decode)")
    resident = abs_diff(latents_mu(outputs["project_resident"]), latents_mu(outputs["project_end_to_end"]), scale)
    resident.update(passed=resident["max_rel"] <= NUMERICS_TOLERANCE[precision],
                    what="project resident vs project end-to-end (same cache pixels)")
    return {"mu_std": scale, "numerics": numerics, "pixels": pixels, "pipeline": pipeline,
            "resident_vs_end_to_end": resident,
            "passed": bool(numerics["passed"] and pipeline["passed"] and resident["passed"])}
