"""The benchmark library's parts on the CPU, without running a benchmark: pixel comparison in chunks, the GPU
preset's sizes, resident encodes leaving latents on the device, the goals table, flags from the config fields."""
import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import benchmarks.context
import benchmarks.project
import benchmarks.stages
from benchmarks import CELEBA_IMAGES, GOALS, BenchmarkConfig, SpeedGoals, gpu_preset
from benchmarks.agreement import pixel_diff
from benchmarks.report import DECODE_BOUND, HEADLINE, _goals_table, evaluate_goals
from data.cache import load_cache
from data.synthetic import CELEBA_SPLIT_SIZES
from experiments.benchmark import parse_args
from conftest import write_tiny_cache


def test_pixel_diff_in_chunks_equals_one_shot():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (11, 3, 5, 5), dtype=np.uint8)
    b = rng.integers(0, 256, (11, 3, 5, 5), dtype=np.uint8)
    one_shot = np.abs(a.astype(int) - b.astype(int))
    for chunk_rows in (1, 3, 4, 11, 100):  # 3 and 4 leave a partial last chunk
        got = pixel_diff(a, torch.from_numpy(b), chunk_rows=chunk_rows)  # a memmap-like array against a tensor
        assert got["max_abs"] == one_shot.max()
        assert got["mean_abs"] == pytest.approx(one_shot.mean(), rel=1e-12)
    assert pixel_diff(a, a, chunk_rows=2) == {"max_abs": 0.0, "mean_abs": 0.0}
    with pytest.raises(ValueError, match="11 images against 10"):
        pixel_diff(a, b[:10])


def test_gpu_preset_is_celeba_sized_and_trains_on_50k_images():
    gpu = gpu_preset(BenchmarkConfig())
    assert gpu.synthetic_images == CELEBA_IMAGES == sum(CELEBA_SPLIT_SIZES)  # procedural faces, unless --celeba-root
    assert gpu.train_images >= 50_000
    assert CELEBA_SPLIT_SIZES[0] >= gpu.train_images  # the train split holds a whole timed epoch
    assert parse_args(["--preset", "gpu"]).synthetic_images == CELEBA_IMAGES
    assert parse_args(["--preset", "gpu", "--synthetic-images", "500"]).synthetic_images == 500  # flags still win
    assert BenchmarkConfig().synthetic_images < CELEBA_IMAGES  # the CPU default stays small


def test_resident_encodes_keep_latents_on_the_device(tmp_path, monkeypatch):
    """Every timed resident encode asks encode_images to leave mu/logvar where the images are (the GPU on CUDA), and
    the variants switch off one ingredient each: compile, then bf16, then the big batch."""
    calls = []

    def fake_encode(model, images, **kw):
        calls.append((kw["keep_on_device"], kw["amp"], kw["compile_model"], kw["batch_size"], len(images)))
        return torch.zeros(len(images), 2), torch.zeros(len(images), 2)

    monkeypatch.setattr(benchmarks.project, "encode_images", fake_encode)
    cache = load_cache(write_tiny_cache(tmp_path / "cache", n=8, size=8))
    ctx = SimpleNamespace(config=BenchmarkConfig(celeba_rows=20, repeats=2), device=torch.device("cpu"), cache=cache,
                          model=None, encode_batch_size=4096, encode_compile=True)
    out = benchmarks.stages.stage_celeba_resident(ctx)
    assert len(calls) == 4 * 3 and all(keep and rows == 20 for keep, *_, rows in calls)  # warm-up + 2 repeats each
    settings = [c[1:4] for c in calls[::3]]
    assert settings == [(False, False, 256), (False, False, 4096), (True, False, 4096), (True, True, 4096)]
    assert out["images"] == 20 and out["repeats"] == 2 and out["batch_size"] == 4096
    assert list(out["variants"])[-1] == "bf16 + channels_last + compile" and len(out["variants"]) == 4
    calls.clear()
    benchmarks.project.project_encode(ctx, torch.zeros(3, 3, 8, 8, dtype=torch.uint8))
    assert [c[0] for c in calls] == [False]  # everything else gets its latents on the host


def _fake_stages(end_to_end: float) -> dict:
    timing = {"images_per_s": 40_000.0, "wall_s": 0.1, "peak_gpu_mb": 1.0, "float32_dataset_mb": 2.0}
    agreement = {"passed": True, "pipeline": {"mean_rel": 0.01}, "numerics": {"max_rel": 1e-4}}
    return {"encode": {"speedup_resident": 9.0, "speedup_end_to_end": end_to_end, "agreement": agreement},
            "celeba_resident": timing, "train": {"project": {**timing, "batch_size": 512}}}


def test_goals_separate_the_gpu_headline_from_the_decode_bound_ratio():
    goals = {g["goal"]: g for g in evaluate_goals(_fake_stages(end_to_end=3.0), True, GOALS)}
    headline = [g for g in goals.values() if g["kind"] == HEADLINE]
    assert {g["unit"] for g in headline} == {"s", "images/s"}  # resident encode and training
    assert all(g["status"] == "pass" for g in headline)
    (decode,) = [g for g in goals.values() if g["kind"] == DECODE_BOUND]
    assert not decode["goal"].startswith("GPU") and "decod" in decode["goal"] and "not a GPU figure" in decode["note"]
    assert decode["measured"] == 3.0 and decode["status"] == "FAIL"
    # The targets are the ones passed in: the report holds none of its own.
    easy = SpeedGoals(cpu_encode_speedup=1, gpu_resident_encode_s=1, gpu_train_images_per_s=1, end_to_end_speedup=2)
    assert {g["status"] for g in evaluate_goals(_fake_stages(end_to_end=3.0), True, easy)} == {"pass"}
    table = _goals_table(evaluate_goals(_fake_stages(end_to_end=3.0), True, GOALS))
    assert all(row.count(" | ") == 5 for row in [table[1], *table[3:]])  # "|d mu|" in a unit does not split a cell
    # Training is judged at its best batch: the scaling sweep's fastest point when it beats the train stage's.
    swept = {**_fake_stages(end_to_end=3.0), "scaling": {"encode_by_size": [],
                                                         "train_by_batch": [{"images_per_s": 50_000.0, "batch_size": 2048}]}}
    (training,) = [g for g in evaluate_goals(swept, True, GOALS) if g["unit"] == "images/s"]
    assert training["measured"] == 50_000.0 and training["note"] == "batch 2048"
    cpu = evaluate_goals(_fake_stages(end_to_end=3.0), False, GOALS)
    assert {g["status"] for g in cpu if g["kind"] in (HEADLINE, DECODE_BOUND)} == {"not measured"}


def test_flags_come_from_the_config_fields():
    config = parse_args(["--size", "32", "--celeba-root", "x", "--encode-sizes", "5", "6", "--keep-work",
                         "--no-encode-compile", "--train-batch-size", "8"])
    assert (config.size, config.celeba_root, config.encode_sizes) == (32, "x", (5, 6))
    assert config.keep_work is True and config.encode_compile is False and config.train_batch_size == 8
    untouched = {f.name for f in dataclasses.fields(BenchmarkConfig)} - {
        "size", "celeba_root", "encode_sizes", "keep_work", "encode_compile", "train_batch_size"}
    assert all(getattr(config, name) == getattr(BenchmarkConfig(), name) for name in untouched)
    with pytest.raises(SystemExit):
        parse_args(["--size", "big"])


def test_reference_cache_is_reused_across_benchmark_runs(tmp_path):
    """--reference-cache points at prepare_data's cache of the same images: a second run reuses it instead of
    building a copy in its work folder (at CelebA size, 2.4 GB at 64 px and 9.5 GB at 128 px per run)."""
    config = BenchmarkConfig(synthetic_root=str(tmp_path / "faces"), synthetic_images=40, size=32, decode_workers=1,
                             reference_cache=str(tmp_path / "shared-cache"))
    runs = []
    for k in range(2):
        (tmp_path / f"run{k}").mkdir()
        runs.append(benchmarks.context.setup(config, torch.device("cpu"), tmp_path / f"run{k}"))
    assert all(ctx.cache_dir == tmp_path / "shared-cache" for ctx in runs)
    assert runs[0].cache.meta["built_at"] == runs[1].cache.meta["built_at"]  # built once
    assert not any((tmp_path / f"run{k}" / "work" / "reference-cache").exists() for k in range(2))
