"""The stages the benchmark times: encoding, cache build, training, directions and (CUDA) the CelebA-sized resident
encode; each returns its JSON-ready results. The scaling sweeps are in benchmarks.scaling."""
from __future__ import annotations

import copy
import functools
import math
import shutil
import statistics
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from attributes.directions import mean_directions, probe_directions
from benchmarks.agreement import encode_agreement, latents_mu
from benchmarks.baseline import DefaultPrecision, JpegFaces, baseline_encode, baseline_loader, baseline_train_epoch
from benchmarks.context import Context
from benchmarks.harness import BYTES_PER_MB, measure, summarise, tree_memory_mb, warm_file_cache
from benchmarks.project import TrainConfig, fit_defaults, project_encode, project_train
from data.cache import build_cache, load_cache, split_to_device, to_uint8_images
from evaluation.decoding import decode_images
from evaluation.edits import EvalConfig
from models.accel import native_bf16, to_model_input
from models.metrics import psnr
from pipeline.training import new_training_model, train_step, training_input

CPU = torch.device("cpu")


# ---- encoding ------------------------------------------------------------------------------------------------------
def _interleaved(runs: dict[str, Callable[[], Any]], repeats: int, device: torch.device,
                 desc: str) -> tuple[dict[str, list], dict[str, Any]]:
    """Each repeat runs every path back to back (so a busy moment hits them alike) -> (samples, last outputs)."""
    samples: dict[str, list] = {k: [] for k in runs}
    outputs: dict[str, Any] = {}
    for _ in tqdm(range(repeats), desc=desc, leave=False):
        for key, fn in runs.items():
            outputs[key], stats = measure(fn, device)
            samples[key].append(stats)
    return samples, outputs


def stage_encode(ctx: Context) -> dict[str, Any]:
    """Project path (end to end from JPEGs, and from a resident cache) against the common pipeline, same images."""
    cfg, device, n = ctx.config, ctx.device, ctx.num_images
    dataset = JpegFaces(ctx.image_paths, cfg.size, ctx.crop)
    e2e_dir = ctx.work / "encode-e2e-cache"

    # Untimed: page-cache warm-up, the baseline's pixels (for the agreement checks) and resident placement.
    warm_file_cache(ctx.image_paths)
    baseline_u8 = torch.cat([to_uint8_images(x) for x in baseline_loader(dataset, 256, ctx.workers, CPU)])
    (resident, _), placement = measure(lambda: split_to_device(ctx.cache, None, device), device)

    # Warm-up of the project's encoder (compilation on CUDA happens here): excluded from the timed runs.
    _, warmup = measure(lambda: project_encode(ctx, resident, resident=True), device)
    _, warm_again = measure(lambda: project_encode(ctx, resident, resident=True), device)

    def project_end_to_end():
        built = build_cache(ctx.root, e2e_dir, size=cfg.size, workers=ctx.workers, force=True, progress=False)
        return project_encode(ctx, load_cache(built).images)

    def baseline():
        with DefaultPrecision():
            loader = baseline_loader(dataset, cfg.baseline_batch_size, ctx.workers, device)
            return baseline_encode(ctx.reference, loader, device)

    runs = {"baseline": baseline, "project_end_to_end": project_end_to_end,
            "project_resident": lambda: project_encode(ctx, resident, resident=True)}
    samples, outputs = _interleaved(runs, cfg.repeats, device, "encode (interleaved repeats)")
    result = {key: summarise(s, n) for key, s in samples.items()}
    for key, fn in runs.items():
        result[key]["peak_tree_pss_mb"] = tree_memory_mb(fn, device)
    result["project_resident"]["latents_device"] = str(outputs["project_resident"][0].device)
    result["project_placement"] = {**summarise([placement], n), "what": "split_to_device of the reference cache"}
    result["compile_warmup"] = {
        "first_call_s": round(warmup["wall_s"], 4), "second_call_s": round(warm_again["wall_s"], 4),
        "warmup_overhead_s": round(max(warmup["wall_s"] - warm_again["wall_s"], 0.0), 4),
        "what": "first encode_images call (torch.compile on CUDA) minus a warm one; excluded from the timed runs",
    }
    base_ips = result["baseline"]["images_per_s"]
    result["speedup_resident"] = round(result["project_resident"]["images_per_s"] / base_ips, 2)
    result["speedup_end_to_end"] = round(result["project_end_to_end"]["images_per_s"] / base_ips, 2)
    result["agreement"] = encode_agreement(ctx, outputs, baseline_u8)
    result.update(_encode_descriptions(ctx))
    if not cfg.keep_work:
        shutil.rmtree(e2e_dir, ignore_errors=True)
    return result


def _encode_descriptions(ctx: Context) -> dict[str, Any]:
    """What the encode stage compared, in words, and the dataset's size as uint8 and as float32."""
    cfg, n = ctx.config, ctx.num_images
    where = "on the GPU, latents left there" if ctx.device.type == "cuda" else "in host memory"
    return {
        "baseline_pipeline": (f"PIL decode + CenterCrop({ctx.crop}) + Resize({cfg.size}) + ToTensor + Normalize, "
                              f"DataLoader batch {cfg.baseline_batch_size}, {ctx.workers} workers, fp32 eager encoder"),
        "project_pipeline": (f"build_cache ({ctx.workers} workers, draft) + encode_images batch "
                             f"{ctx.encode_batch_size}; resident: uint8 {where}"),
        "dataset_bytes": {"uint8_mb": round(n * 3 * cfg.size**2 / BYTES_PER_MB, 1),
                          "float32_mb": round(n * 3 * cfg.size**2 * 4 / BYTES_PER_MB, 1)},
    }


# What each ingredient of the project's encoder buys on a GPU: (label, batch size, bf16 autocast, torch.compile).
# The last is the project's own setting; the first is what an eager fp32 loop at a DataLoader-sized batch does.
RESIDENT_VARIANTS = (("fp32 eager, DataLoader-sized batch", 256, False, False), ("fp32 eager", None, False, False),
                     ("bf16 + channels_last, eager", None, True, False), ("bf16 + channels_last + compile", None, True, True))


def stage_celeba_resident(ctx: Context) -> dict[str, Any]:
    """CUDA only: encode CelebA's 202,599 images (cache rows replicated on the GPU) from a resident uint8 tensor, with
    the project's settings (the goal) and with each ingredient left out (`variants`)."""
    cfg, device = ctx.config, ctx.device
    base, _ = split_to_device(ctx.cache, None, device)
    reps = math.ceil(cfg.celeba_rows / len(base))
    resident = base.repeat(reps, 1, 1, 1)[: cfg.celeba_rows].contiguous()  # (celeba_rows, 3, S, S) uint8 on the GPU
    del base

    def encode(batch: int | None, amp: bool, compiled: bool) -> Callable[[], Any]:
        return lambda: project_encode(ctx, resident, batch, resident=True, amp=amp,
                                      compiled=compiled and ctx.encode_compile)

    variants = {}
    for label, batch, amp, compiled in RESIDENT_VARIANTS:
        _, warm = measure(encode(batch, amp, compiled), device)
        samples = [measure(encode(batch, amp, compiled), device)[1] for _ in range(cfg.repeats)]
        variants[label] = {**summarise(samples, cfg.celeba_rows), "warmup_s": round(warm["wall_s"], 4),
                           "batch_size": batch or ctx.encode_batch_size}
    out = dict(variants[RESIDENT_VARIANTS[-1][0]])
    out["variants"] = variants
    out["uint8_resident_mb"] = round(resident.numel() / BYTES_PER_MB, 1)
    out["float32_dataset_mb"] = round(resident.numel() * 4 / BYTES_PER_MB, 1)
    return out


# ---- cache build ---------------------------------------------------------------------------------------------------
def stage_cache_build(ctx: Context) -> dict[str, Any]:
    """build_cache with and without PIL draft mode, with one worker and with all cores, interleaved."""
    cfg = ctx.config
    variants = [(draft, w) for draft in (True, False) for w in sorted({1, ctx.workers})]
    # One folder per draft setting: the two hold different pixels, and rebuilding one folder with the other's data
    # would replace a cache (and warn) every repeat.
    folders = {draft: ctx.work / f"build-cache-{'draft' if draft else 'no-draft'}" for draft in (True, False)}
    warm_file_cache(ctx.image_paths)

    def build(draft: bool, workers: int) -> Callable[[], Path]:
        return lambda: build_cache(ctx.root, folders[draft], size=cfg.size, workers=workers, draft=draft, force=True,
                                   progress=False)

    samples: dict[tuple, list] = {v: [] for v in variants}
    for _ in tqdm(range(cfg.repeats), desc="cache build (interleaved repeats)", leave=False):
        for draft, w in variants:
            samples[(draft, w)].append(measure(build(draft, w), CPU)[1])
    runs = []
    for (draft, w), s in samples.items():
        row = {"draft": draft, "workers": w, "folder": folders[draft].name, **summarise(s, ctx.num_images),
               "peak_tree_pss_mb": tree_memory_mb(build(draft, w), CPU)}
        row["images_per_s_per_worker"] = round(row["images_per_s"] / w, 1)
        runs.append(row)
    for folder in folders.values():
        shutil.rmtree(folder, ignore_errors=True)
    by = {(r["draft"], r["workers"]): r["images_per_s"] for r in runs}
    return {"runs": runs, "draft_speedup_all_workers": round(by[(True, ctx.workers)] / by[(False, ctx.workers)], 2)}


# ---- training ------------------------------------------------------------------------------------------------------
def baseline_train(ctx: Context, paths: Sequence[Path], batch_size: int, sample_tree: bool = False) -> dict[str, Any]:
    """Two fp32 eager epochs fed by the common DataLoader pipeline from JPEGs; the second epoch is the throughput."""
    defaults = TrainConfig()
    torch.manual_seed(ctx.config.seed)  # the reparameterisation noise; shuffling has its own seeded generator
    model = copy.deepcopy(ctx.reference).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=defaults.lr)
    dataset = JpegFaces(paths, ctx.config.size, ctx.crop)
    times = []
    with DefaultPrecision():
        for epoch in range(2):
            loader = baseline_loader(dataset, batch_size, ctx.workers, ctx.device, shuffle=True, drop_last=True,
                                     seed=ctx.config.seed + epoch)
            _, stats = measure(lambda: baseline_train_epoch(model, optimizer, loader, ctx.device, defaults.beta,
                                                            defaults.likelihood), ctx.device, sample_tree)
            times.append(stats)
    tree = [t["peak_tree_pss_mb"] for t in times if t["peak_tree_pss_mb"] is not None]
    return {**times[-1], "images": len(paths) // batch_size * batch_size, "first_epoch_s": times[0]["wall_s"],
            "batch_size": batch_size, "peak_tree_pss_mb": max(tree, default=None)}


def _train_images(ctx: Context, batch: int) -> int:
    """Training images per timed epoch: `train_images`, or the whole train split when it is smaller (warned)."""
    available = len(ctx.cache.split_indices("train"))
    images = min(ctx.config.train_images, available)
    if images < ctx.config.train_images:
        warnings.warn(f"train stage: the train split holds {available:,} images, fewer than train_images="
                      f"{ctx.config.train_images:,}; timing {images:,} (more per-epoch overhead in the figure)",
                      stacklevel=2)
    if images < batch:
        raise ValueError(f"train stage: {images} training images are fewer than one batch of {batch}")
    return images


def stage_train(ctx: Context) -> dict[str, Any]:
    """The project's training run against the common pipeline's fp32 eager loop, interleaved, second epochs."""
    cfg = ctx.config
    batch = cfg.train_batch_size or TrainConfig().batch_size
    images = _train_images(ctx, batch)
    paths = [ctx.image_paths[i] for i in ctx.cache.split_indices("train")[:images]]  # what max_train_images selects
    runs = {"baseline": lambda: baseline_train(ctx, paths, batch),
            "project": lambda: project_train(ctx, ctx.cache_dir, images, batch)}
    samples: dict[str, list] = {key: [] for key in runs}
    for _ in tqdm(range(cfg.repeats), desc="train (interleaved repeats)", leave=False):
        for key, fn in runs.items():
            samples[key].append(fn())
    result: dict[str, Any] = {}
    for key, done in samples.items():
        result[key] = summarise(done, done[0]["images"])
        result[key]["first_epoch_s_median"] = round(statistics.median(r["first_epoch_s"] for r in done), 4)
        result[key]["batch_size"] = batch
    result["baseline"]["peak_tree_pss_mb"] = baseline_train(ctx, paths, batch, sample_tree=True)["peak_tree_pss_mb"]
    result["project"]["peak_tree_pss_mb"] = project_train(ctx, ctx.cache_dir, images, batch,
                                                          sample_tree=True)["peak_tree_pss_mb"]
    project = result["project"]
    project["run_wall_s_median"] = round(statistics.median(r["run_wall_s"] for r in samples["project"]), 3)
    project["compile"] = samples["project"][0]["compile"]
    project["compile_warmup_s"] = round(max(project["first_epoch_s_median"] - project["wall_s"], 0.0), 4)
    result["speedup"] = round(project["images_per_s"] / result["baseline"]["images_per_s"], 2)
    result["what"] = ("images/s of the second (warm) epoch; project = the project's training run (its own epoch timer, "
                      "whole run wall time beside it), baseline = DataLoader from JPEGs + fp32 eager step, same model, "
                      "Adam lr and loss")
    return result


# ---- directions ----------------------------------------------------------------------------------------------------
def stage_directions(ctx: Context) -> dict[str, Any]:
    """mean_directions and probe_directions as the project fits them: on the train split's latents (probes scored
    on valid), with the fitting defaults."""
    cfg, cache = ctx.config, ctx.cache
    fit = fit_defaults()
    jobs = fit.n_jobs if cfg.probe_jobs is None else cfg.probe_jobs
    images, labels = split_to_device(cache, None, ctx.device)
    mu = latents_mu(project_encode(ctx, images))  # (N, D)
    labels, names = labels.cpu(), cache.attribute_names
    train = torch.from_numpy(cache.split_indices(fit.fit_split))
    valid = torch.from_numpy(cache.split_indices(fit.valid_split))
    fits = {
        "mean": lambda: mean_directions(mu[train], labels[train], names, min_count=fit.min_count),
        "probe": lambda: probe_directions(mu[train], labels[train], names, valid_latents=mu[valid],
                                          valid_labels=labels[valid], min_count=fit.min_count, C=fit.C, n_jobs=jobs,
                                          progress=False),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "left out N attributes" is the same every repeat; the kept count is recorded
        samples, outputs = _interleaved(fits, cfg.repeats, CPU, "directions")
    return {
        "mean": {**summarise(samples["mean"], len(train)), "attributes": len(outputs["mean"].names)},
        "probe": {**summarise(samples["probe"], len(train)), "attributes": len(outputs["probe"].names), "n_jobs": jobs},
        "attributes_in_cache": len(names), "latent_dim": int(mu.shape[1]), "min_count": fit.min_count,
        "what": "images/s = latents/s of the train split; probes also score the valid split",
    }


# ---- precision -----------------------------------------------------------------------------------------------------
def stage_precision(ctx: Context) -> dict[str, Any]:
    """What bf16 autocast (`models.accel.bf16_autocast`) buys and changes where the device runs it natively: the
    training step and one evaluation decode batch, each timed in fp32 and in bf16, interleaved, and how far the bf16
    decode lands from the fp32 one (PSNR between the two, on latents of real faces)."""
    cfg, device = ctx.config, ctx.device
    if not native_bf16(device):
        return {"skipped": f"{device} has no native bf16: the project runs fp32 there"}
    defaults = TrainConfig()
    batch = cfg.train_batch_size or defaults.batch_size
    images, _ = split_to_device(ctx.cache, "train", device, slice(max(batch, EvalConfig().batch_size)))
    if len(images) < batch:
        raise ValueError(f"precision stage: the train split holds {len(images)} images, fewer than one batch of {batch}")
    decode_batch = len(images)  # the evaluation's batch, or the whole split when smaller
    x = training_input(images[:batch], device)  # (B, 3, S, S), as training feeds the model
    eps = torch.randn(batch, ctx.reference.config.latent_dim, generator=torch.Generator().manual_seed(cfg.seed))
    eps = eps.to(device)  # (B, D)
    decoder = copy.deepcopy(ctx.reference).to(device).eval().to(memory_format=torch.channels_last)
    with torch.inference_mode():
        z = decoder.encode(to_model_input(images, device, channels_last=True))[0]  # (b, D)

    @torch.inference_mode()
    def decode(amp: bool) -> torch.Tensor:
        return decode_images(decoder, z, device, amp)

    runs: dict[str, Callable[[], Any]] = {}
    for amp, name in ((False, "fp32"), (True, "bf16")):
        model, optimizer = new_training_model(ctx.reference.config, defaults.lr, device)
        model.load_state_dict(ctx.reference.state_dict())
        runs[f"train_step_{name}"] = functools.partial(train_step, model, optimizer, x, eps, beta=defaults.beta,
                                                       likelihood=defaults.likelihood, amp=amp)
        runs[f"decode_{name}"] = functools.partial(decode, amp)
    for fn in runs.values():  # warm-up: oneDNN / cuDNN pick their kernels, Adam makes its state
        fn()
    samples, outputs = _interleaved(runs, cfg.profile_steps, device, "precision (interleaved repeats)")
    result: dict[str, Any] = {key: summarise(s, batch if key.startswith("train") else decode_batch)
                              for key, s in samples.items()}
    result["train_step_speedup"] = round(result["train_step_fp32"]["wall_s"] / result["train_step_bf16"]["wall_s"], 2)
    result["decode_speedup"] = round(result["decode_fp32"]["wall_s"] / result["decode_bf16"]["wall_s"], 2)
    result["decode_bf16_vs_fp32_psnr_db"] = round(float(psnr(outputs["decode_bf16"], outputs["decode_fp32"]).mean()), 2)
    result["what"] = (f"median of {cfg.profile_steps} interleaved calls: a training step (batch {batch}) and an "
                      f"evaluation decode (batch {decode_batch}, channels_last), fp32 against bf16 autocast; the PSNR "
                      "is between the two decodes of the same latents")
    return result
