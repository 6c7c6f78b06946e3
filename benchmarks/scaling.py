"""How encoding and training scale: with the dataset size (cache rows replicated) and with the batch size."""
from __future__ import annotations

import math
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from benchmarks.context import Context
from benchmarks.harness import BYTES_PER_MB, measure, summarise
from benchmarks.project import project_encode, project_train
from data.cache import FaceCache, load_cache, write_cache


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



def _rows_to_device(cache: FaceCache, n: int, device: torch.device) -> torch.Tensor:
    """The first `n` uint8 rows of a cache, resident on `device`, (n, 3, S, S)."""
    return torch.from_numpy(np.array(cache.images[:n])).to(device)  # a copy: the memmap is read-only


def _encode_by_size(ctx: Context, big: FaceCache) -> list[dict[str, Any]]:
    """encode_images from resident rows at each of encode_sizes; the placement is timed apart."""
    cfg, device = ctx.config, ctx.device
    points = []
    for n in tqdm(cfg.encode_sizes, desc="scaling: encode vs dataset size", leave=False):
        on_device, placement = measure(lambda: _rows_to_device(big, n, device), device)
        if ctx.encode_compile:  # a new tail-batch shape recompiles: keep that out of the timing
            project_encode(ctx, on_device, resident=True)
        _, stats = measure(lambda: project_encode(ctx, on_device, resident=True), device)
        float32_mb = n * 3 * cfg.size**2 * 4 / BYTES_PER_MB
        points.append({
            "images": n, **summarise([stats], n), "placement_s": round(placement["wall_s"], 4),
            "float32_dataset_mb": round(float32_mb, 1), "uint8_dataset_mb": round(float32_mb / 4, 1),
        })
        on_device = None  # freed before the next size is placed
    return points


def _encode_by_batch(ctx: Context, big: FaceCache) -> list[dict[str, Any]]:
    """encode_images of batch_sweep_images resident rows at each of encode_batch_sizes."""
    cfg, device = ctx.config, ctx.device
    sweep = min(cfg.batch_sweep_images, len(big))
    on_device = _rows_to_device(big, sweep, device)
    points = []
    for b in tqdm(cfg.encode_batch_sizes, desc="scaling: encode vs batch", leave=False):
        # Warm-up: a new batch shape recompiles under torch.compile (the whole call, for the tail batch too).
        project_encode(ctx, on_device if ctx.encode_compile else on_device[: min(b, sweep)], b, resident=True)
        _, stats = measure(lambda: project_encode(ctx, on_device, b, resident=True), device)
        points.append({"batch_size": b, **summarise([stats], sweep)})
    return points


def _train_point(ctx: Context, big_dir: Path, images: int, batch_size: int | None = None) -> dict[str, Any]:
    run = project_train(ctx, big_dir, images, batch_size)
    return {**summarise([run], run["images"]), "first_epoch_s": round(run["first_epoch_s"], 4),
            "batch_size": run["batch_size"]}


def stage_scaling(ctx: Context) -> dict[str, Any]:
    """Encoding and training against the dataset size and the batch size, on a cache replicated to the largest size."""
    cfg, base = ctx.config, ctx.cache
    train_fraction = len(base.split_indices("train")) / len(base)
    rows = max([*cfg.encode_sizes, cfg.batch_sweep_images,
                *(math.ceil(s / max(train_fraction, 1e-9)) + 1 for s in cfg.train_sizes)])
    big_dir = replicate_cache(ctx.cache_dir, max(rows, len(base)), ctx.work / "replicated-cache")
    big = load_cache(big_dir)
    result: dict[str, Any] = {"replicated_rows": len(big), "source_rows": len(base)}

    result["encode_by_size"] = _encode_by_size(ctx, big)
    result["encode_fit"] = _linear_fit([p["images"] for p in result["encode_by_size"]],
                                       [p["wall_s"] for p in result["encode_by_size"]])
    result["train_by_size"] = [_train_point(ctx, big_dir, n)
                               for n in tqdm(cfg.train_sizes, desc="scaling: train vs dataset size", leave=False)]
    result["train_fit"] = _linear_fit([p["images"] for p in result["train_by_size"]],
                                      [p["wall_s"] for p in result["train_by_size"]])
    result["encode_by_batch"] = _encode_by_batch(ctx, big)
    result["encode_knee_batch"] = _knee(result["encode_by_batch"], "batch_size")

    images = min(cfg.train_images, len(big.split_indices("train")))
    result["train_by_batch"] = [_train_point(ctx, big_dir, images, b)
                                for b in tqdm(cfg.train_batch_sizes, desc="scaling: train vs batch", leave=False)
                                if b <= images]
    result["train_knee_batch"] = _knee(result["train_by_batch"], "batch_size")
    result["what"] = ("one measurement per point; encode = encode_images from resident uint8 rows (placement timed "
                      "apart); train = the project's training run, second epoch; knee = smallest batch within 90% of "
                      "the best")
    if not cfg.keep_work:
        shutil.rmtree(big_dir, ignore_errors=True)
    return result
