"""What bounds the training step and the encoder: the device's measured ceilings, the work each call does (FLOPs), and
where the time goes under the PyTorch profiler (kernels launched, share of the wall time the device is busy)."""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.context import Context
from benchmarks.harness import synchronize
from benchmarks.project import project_encode
from data.cache import split_to_device
from models.accel import compile_with_fallback, to_model_input
from pipeline.training import TrainConfig, new_training_model, train_step, training_input

# Kernels whose names say they are matrix work (cuDNN/CUTLASS convolutions, GEMMs); the rest are elementwise,
# reductions, copies and the optimiser: bound by memory bandwidth or by launches, never by the tensor cores.
MATRIX_KERNEL_MARKERS = ("gemm", "conv", "cutlass", "xmma", "wgmma", "sm90", "cudnn", "implicit", "dgrad", "wgrad",
                         "mkldnn", "addmm", "mm")
# Under this share of the wall time spent in kernels, the device waits on the host: launch- (or Python-) bound.
LAUNCH_BOUND_BUSY = 0.7


def _is_matrix_kernel(name: str) -> bool:
    # Inductor names its fused elementwise kernels after the ops they follow (triton_poi_fused_convolution_...).
    return not name.startswith("triton") and any(m in name.lower() for m in MATRIX_KERNEL_MARKERS)


def _seconds_per_call(fn: Callable[[], Any], device: torch.device, calls: int) -> float:
    """Mean seconds per call over `calls` back-to-back calls, synchronised at both ends only, so the gaps between
    launches count as they do in a training loop."""
    synchronize(device)
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    synchronize(device)
    return (time.perf_counter() - start) / calls


def device_ceilings(device: torch.device) -> dict[str, Any]:
    """Measured peaks to compare against: a large matrix product (bf16 on CUDA, fp32 on CPU) and a device copy."""
    cuda = device.type == "cuda"
    n, dtype = (8192, torch.bfloat16) if cuda else (1024, torch.float32)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b  # warm-up: library handles and kernel choice stay out of the timing
    matmul_s = _seconds_per_call(lambda: a @ b, device, 10 if cuda else 3)
    elements = (1 << 28) if cuda else (1 << 24)  # 1 GiB / 64 MiB of float32: far past the caches
    src = torch.rand(elements, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    copy_s = _seconds_per_call(lambda: dst.copy_(src), device, 10)
    return {"matmul_tflops": round(2 * n**3 / matmul_s / 1e12, 2), "matmul": f"{n}x{n}x{n} {str(dtype)[6:]}",
            "copy_gb_per_s": round(2 * src.numel() * 4 / copy_s / 1e9, 1), "copy": "read + write of a float32 tensor"}


def _flops(fn: Callable[[], Any]) -> int:
    """FLOPs of one call, counted by PyTorch's FlopCounterMode (matrix products and convolutions, forward and
    backward; elementwise work is not counted)."""
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return int(counter.get_total_flops())


def _profile(fn: Callable[[], Any], device: torch.device, calls: int) -> dict[str, Any]:
    """Kernels per call, kernel time per call and the share of it in matrix kernels, under the PyTorch profiler."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    synchronize(device)
    with profile(activities=activities) as prof:
        for _ in range(calls):
            fn()
        synchronize(device)
    on_device = device.type == "cuda"
    if on_device:
        kernels = [e for e in prof.events() if e.device_type == DeviceType.CUDA]
    else:  # top-level ops, so time spent in nested ops is counted once
        kernels = [e for e in prof.events() if e.device_type == DeviceType.CPU and e.cpu_parent is None]

    def time_of(event) -> float:  # microseconds
        return event.time_range.elapsed_us()

    total_us = sum(time_of(e) for e in kernels)
    matrix_us = sum(time_of(e) for e in kernels if _is_matrix_kernel(e.name))
    by_name: dict[str, float] = {}
    for e in kernels:
        by_name[e.name] = by_name.get(e.name, 0.0) + time_of(e)
    top = sorted(by_name.items(), key=lambda kv: -kv[1])[:8]
    return {
        "kernels_per_call": round(len(kernels) / calls, 1) if on_device else None,
        "ops_per_call": round(len(kernels) / calls, 1),
        "kernel_ms_per_call": round(total_us / calls / 1e3, 4),
        "matrix_share": round(matrix_us / total_us, 3) if total_us else None,
        "matrix_ms_per_call": round(matrix_us / calls / 1e3, 4),
        "top": [{"name": name[:120], "ms_per_call": round(us / calls / 1e3, 4)} for name, us in top],
    }


def _verdict(busy: float | None, matrix_tflops: float | None, ceilings: dict[str, Any]) -> str:
    """What bounds the call, read from the device-busy share and the matrix kernels' achieved rate."""
    if busy is None:
        return "CPU: every op runs on the host; see the top ops"
    if busy < LAUNCH_BOUND_BUSY:
        return (f"launch-bound: the GPU is busy {busy:.0%} of the wall time; the rest is host-side launch and Python "
                "overhead between kernels")
    if matrix_tflops is not None and matrix_tflops >= 0.5 * ceilings["matmul_tflops"]:
        return f"compute-bound: matrix kernels at {matrix_tflops / ceilings['matmul_tflops']:.0%} of the measured peak"
    return ("memory-bound: the GPU is busy, but the matrix kernels run far below the measured matrix peak and the "
            "elementwise kernels move activations through memory")


def _analyse(name: str, fn: Callable[[], Any], device: torch.device, images: int, calls: int,
             ceilings: dict[str, Any], flops: int) -> dict[str, Any]:
    seconds = _seconds_per_call(fn, device, calls)
    prof = _profile(fn, device, calls)
    kernel_s = prof["kernel_ms_per_call"] / 1e3
    busy = min(kernel_s / seconds, 1.0) if device.type == "cuda" else None
    matrix_s = prof["matrix_ms_per_call"] / 1e3
    matrix_tflops = flops / matrix_s / 1e12 if matrix_s > 0 else None
    return {
        "what": name, "images_per_call": images, "ms_per_call": round(seconds * 1e3, 4),
        "images_per_s": round(images / seconds, 1), "gflops_per_call": round(flops / 1e9, 2),
        "achieved_tflops": round(flops / seconds / 1e12, 3),
        "fraction_of_matmul_peak": round(flops / seconds / 1e12 / ceilings["matmul_tflops"], 4),
        "device_busy_share": None if busy is None else round(busy, 3),
        "matrix_kernel_tflops": None if matrix_tflops is None else round(matrix_tflops, 2),
        **prof, "verdict": _verdict(busy, matrix_tflops, ceilings),
    }


def stage_profile(ctx: Context) -> dict[str, Any]:
    """One training step at the configured batch (the project's `train_step`, compiled on CUDA) and one encoder batch,
    each timed over back-to-back calls, profiled, and set against the device's measured ceilings."""
    cfg, device = ctx.config, ctx.device
    cuda = device.type == "cuda"
    ceilings = device_ceilings(device)
    defaults = TrainConfig()
    batch = cfg.train_batch_size or defaults.batch_size
    images, _ = split_to_device(ctx.cache, "train", device, slice(batch))
    if len(images) < batch:
        raise ValueError(f"profile stage: the train split holds {len(images)} images, fewer than one batch of {batch}")
    model, optimizer = new_training_model(ctx.reference.config, defaults.lr, device)
    model.load_state_dict(ctx.reference.state_dict())
    compiled = compile_with_fallback(model, enabled=defaults.compiles_on(device))
    x = training_input(images, device)  # (B, 3, S, S), as training feeds the model
    eps = torch.randn(batch, model.config.latent_dim, device=device)  # (B, D)

    def step(net=compiled) -> torch.Tensor:
        return train_step(net, optimizer, x, eps, beta=defaults.beta, likelihood=defaults.likelihood)

    for _ in range(3):  # compile, cuDNN autotuning and the optimiser's state stay out of the timing
        step()
    train_flops = _flops(lambda: step(model))  # the eager model: the counter sees through no compiled graph
    calls = cfg.profile_steps
    result = {"ceilings": ceilings, "train_step": _analyse(f"train_step, batch {batch}", step, device, batch, calls,
                                                           ceilings, train_flops)}
    encode_batch = min(ctx.encode_batch_size, len(ctx.cache))
    resident, _ = split_to_device(ctx.cache, None, device, slice(encode_batch))

    def encode() -> torch.Tensor:
        return project_encode(ctx, resident, encode_batch, resident=True)[0]

    encode()
    with torch.inference_mode():  # the plain encoder: fused CPU kernels are invisible to the counter
        encode_flops = _flops(lambda: ctx.reference.encode(to_model_input(resident, device, channels_last=cuda)))
    result["encode"] = _analyse(f"encode_images, one batch of {encode_batch}", encode, device, encode_batch, calls,
                                ceilings, encode_flops)
    return result
