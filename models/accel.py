"""Accelerator plumbing for training loops: scoped backend flags, batch gathering through reusable pinned buffers,
uint8 -> model input conversion, torch.compile with an eager fallback, and the Adam variant for the device.

Everything here also runs on CPU (where pinning and CUDA events are skipped), so a training loop written
against it is the same code on both.
"""
from __future__ import annotations

import inspect
import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from data.cache import to_float_images

CUBLAS_WORKSPACE = ":4096:8"  # what cuBLAS needs to be deterministic (PyTorch's reproducibility notes)


def _device_type(device: torch.device | str) -> str:
    return torch.device(device).type


# Precision knobs of PyTorch's newer TF32 API, parents before children (setting a parent overwrites its children).
_FP32_PRECISION_KNOBS = ("", "cuda.matmul", "cudnn", "cudnn.conv", "cudnn.rnn", "mkldnn", "mkldnn.matmul", "mkldnn.conv",
                         "mkldnn.rnn")


def _knob(path: str):
    obj = torch.backends
    for part in filter(None, path.split(".")):
        obj = getattr(obj, part, None)
    return obj


def _legacy_precision() -> tuple[str, bool, bool] | None:
    """(float32 matmul precision, cudnn.allow_tf32, cuda.matmul.allow_tf32), or None where the new TF32 API was used
    in a way the legacy getters refuse to summarise (they raise)."""
    try:
        return (torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32,
                torch.backends.cuda.matmul.allow_tf32)
    except RuntimeError:
        return None


def _precision_state() -> tuple[tuple[str, bool, bool] | None, dict[str, str]]:
    """Everything that decides fp32 matmul/conv precision, in a form `_restore_precision` puts back exactly: the
    legacy flags and, where this torch has them, the per-backend `fp32_precision` knobs of the newer API."""
    knobs = {path: _knob(path).fp32_precision for path in _FP32_PRECISION_KNOBS
             if hasattr(_knob(path), "fp32_precision")}
    return _legacy_precision(), knobs


def _restore_precision(state: tuple[tuple[str, bool, bool] | None, dict[str, str]]) -> None:
    legacy, knobs = state
    if legacy is not None:
        # The legacy setters also write hidden flags that the legacy getters check the new knobs against, so they go
        # first; the knobs they set differently (e.g. "ieee" where "none" was) are then put back one by one.
        precision, cudnn_tf32, matmul_tf32 = legacy
        torch.set_float32_matmul_precision(precision)
        torch.backends.cudnn.allow_tf32 = cudnn_tf32
        if not knobs:
            torch.backends.cuda.matmul.allow_tf32 = matmul_tf32
    for path, value in knobs.items():
        if _knob(path).fp32_precision != value:
            _knob(path).fp32_precision = value


@contextmanager
def backend_flags(device: torch.device | str, *, deterministic: bool = False) -> Iterator[None]:
    """Fast (or deterministic) backend settings for the block, every flag restored on exit, also on error.

    CUDA: TF32 matmuls and convolutions, and cuDNN autotuning unless `deterministic`. deterministic (any device):
    torch.use_deterministic_algorithms(True), cudnn.deterministic, and on CUDA CUBLAS_WORKSPACE_CONFIG when unset
    (cuBLAS reads it when it creates its workspace, so set it before the first matmul on the GPU). The flags are
    process-global, so only the device's type matters: "cuda" sets the CUDA flags even on a machine without a GPU.
    """
    kind = _device_type(device)
    precision = _precision_state()
    saved = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic,
             torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    saved_env = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    try:
        if kind == "cuda":
            # "high" keeps the legacy and new TF32 APIs consistent (setting only one makes the other's getters raise)
            torch.set_float32_matmul_precision("high")
            torch.backends.cudnn.allow_tf32 = True
            # autotuning picks the fastest algorithm per shape, which need not be the same one from run to run
            torch.backends.cudnn.benchmark = not deterministic
            if deterministic and saved_env is None:
                os.environ["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_WORKSPACE
        if deterministic:
            torch.backends.cudnn.deterministic = True
            torch.use_deterministic_algorithms(True)
        yield
    finally:
        benchmark, cudnn_deterministic, deterministic_algorithms, warn_only = saved
        _restore_precision(precision)
        torch.backends.cudnn.benchmark = benchmark
        torch.backends.cudnn.deterministic = cudnn_deterministic
        torch.use_deterministic_algorithms(deterministic_algorithms, warn_only=warn_only)
        if saved_env is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        else:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = saved_env


class BatchGatherer:
    """Gathers rows of a host uint8 tensor into two alternating reusable (pinned on CUDA) buffers, then to the device."""

    def __init__(self, images: torch.Tensor, batch_size: int, device: torch.device | str):
        if images.device.type != "cpu":
            raise ValueError(f"BatchGatherer gathers from host memory; the images are on {images.device}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.images = images  # (N, 3, S, S) uint8, pageable: only the small buffers are pinned
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        shape = (batch_size, *images.shape[1:])
        # pin_memory needs CUDA; on CPU the buffers are plain and the "transfer" is the buffer itself
        self.buffers = [torch.empty(shape, dtype=images.dtype, pin_memory=self.cuda) for _ in range(2)]
        self.copied: list[Any] = [None, None]  # per buffer: the CUDA event of its last host->device copy
        self.stream = torch.cuda.Stream(self.device) if self.cuda else None
        self.turn = 0

    def __call__(self, idx: torch.Tensor) -> torch.Tensor:
        """Rows `idx` (CPU int64 tensor, at most batch_size of them) as a (len(idx), 3, S, S) uint8 tensor on the
        device. On CUDA the result is a fresh device tensor; on CPU it is a view of a buffer that stays intact until
        the call after next (two buffers alternate)."""
        if idx.device.type != "cpu":
            raise ValueError("BatchGatherer needs the row indices on the CPU (a device tensor would sync every step)")
        k, self.turn = self.turn, 1 - self.turn
        if self.copied[k] is not None:
            self.copied[k].synchronize()  # the copy that last read this buffer (two batches ago) must be done
        buffer = self.buffers[k][: len(idx)]  # (b, 3, S, S), contiguous
        torch.index_select(self.images, 0, idx, out=buffer)
        if not self.cuda:
            return buffer
        compute = torch.cuda.current_stream(self.device)
        # a side stream, so the copy of this batch runs while the compute stream still works on the previous one
        with torch.cuda.stream(self.stream):
            batch = buffer.to(self.device, non_blocking=True)
            event = torch.cuda.Event()
            event.record(self.stream)
        self.copied[k] = event
        compute.wait_stream(self.stream)
        batch.record_stream(compute)  # allocated on the side stream, used on the compute stream
        return batch


def native_bf16(device: torch.device | str) -> bool:
    """Whether bf16 autocast speeds `device` up: CUDA, or a CPU whose oneDNN has native bf16 kernels (AVX-512 BF16 or
    AMX). Elsewhere CPU bf16 is emulated and slower than fp32, so it is not used there."""
    kind = _device_type(device)
    if kind == "cuda":
        return True
    if kind != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # an older or stripped build without the query
        return False


def onednn_fuses(x: torch.Tensor, op: str, dtype: torch.dtype) -> bool:
    """Whether oneDNN's convolution + activation in one call, `torch.ops.mkldnn.<op>` (`_convolution_pointwise`,
    `_convolution_transpose_pointwise`), can take `x` in `dtype`: a CPU tensor, float32 or bfloat16, no autograd (the
    ops have no backward), and a torch built with oneDNN."""
    return (x.device.type == "cpu" and dtype in (torch.float32, torch.bfloat16) and not torch.is_grad_enabled()
            and torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, op))


def bf16_autocast(device: torch.device | str, enabled: bool = True):
    """bf16 autocast on `device` when `enabled` and the device runs bf16 natively (`native_bf16`), else a no-op.

    Matmuls and convolutions run in bf16 and accumulate in fp32; losses and reductions the caller computes outside
    the block stay fp32. The `precision` stage of experiments.benchmark measures what it buys and what it changes.
    """
    return torch.autocast(_device_type(device), dtype=torch.bfloat16, enabled=enabled and native_bf16(device))


def to_model_input(batch_u8: torch.Tensor, device: torch.device | str, channels_last: bool) -> torch.Tensor:
    """uint8 images (B, 3, S, S) -> float32 in [-1, 1] on `device`, in channels_last when asked, with one float copy.

    The layout change happens while the data are still uint8 (a quarter of the bytes of the float tensor), and the
    float conversion keeps that layout.
    """
    x = batch_u8.to(device, non_blocking=True)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return to_float_images(x)  # (B, 3, S, S)


class CompiledWithFallback:
    """A module compiled with torch.compile that switches to eager for good if its first compiled call fails."""

    def __init__(self, module: nn.Module | Callable, compiled: Callable | None):
        self.module = module
        self.compiled = compiled
        self.first_call = compiled is not None
        self.fell_back = False

    def __getattr__(self, name: str) -> Any:
        # train()/eval()/parameters() and the like reach the wrapped module
        if name in ("module", "compiled"):
            raise AttributeError(name)
        return getattr(self.module, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.compiled is None:
            return self.module(*args, **kwargs)
        if not self.first_call:
            return self.compiled(*args, **kwargs)
        self.first_call = False
        try:
            return self.compiled(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 - the compile stack raises many types (BackendCompilerFailed, OSError, ...)
            warnings.warn(f"torch.compile failed ({_describe(error)}); continuing in eager "
                          "mode", RuntimeWarning, stacklevel=2)
            self.compiled, self.fell_back = None, True
            return self.module(*args, **kwargs)


def _describe(error: BaseException) -> str:
    """`Type: first line` of the innermost cause: dynamo wraps the backend's own error (a missing compiler, ...)."""
    while True:
        inner = getattr(error, "inner_exception", None) or error.__cause__
        if inner is None or inner is error:
            break
        error = inner
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0][:300] if text else 'no message'}"


def compile_with_fallback(module: nn.Module | Callable, *, enabled: bool, backend: str | Callable = "inductor",
                          **compile_kwargs: Any) -> CompiledWithFallback:
    """torch.compile(module) when `enabled`, called through a wrapper that falls back to eager mode (one warning) if
    the first call fails to compile, e.g. without a C compiler or Python headers for Triton's kernels.

    Dynamo's caches are reset first, so each call compiles afresh: a process making several runs otherwise reuses
    the first run's graphs and the later runs show no compile time. Only the first call is guarded: a backward graph
    that AOTAutograd compiles lazily, at the first backward(), fails outside the wrapper.
    """
    if not enabled:
        return CompiledWithFallback(module, None)
    torch._dynamo.reset()
    return CompiledWithFallback(module, torch.compile(module, backend=backend, **compile_kwargs))


def make_adam(params, lr: float, device: torch.device | str) -> torch.optim.Adam:
    """Adam; on CUDA and CPU the fused implementation (one kernel for all parameters, a few percent of a 2-core CPU
    training step) when this torch has it; the same update up to float rounding."""
    fused = _device_type(device) in ("cuda", "cpu") and "fused" in inspect.signature(torch.optim.Adam).parameters
    return torch.optim.Adam(params, lr=lr, **({"fused": True} if fused else {}))
