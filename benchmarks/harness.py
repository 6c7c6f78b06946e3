"""Measuring: the machine's description, peak memory of one measurement, timed runs and their medians."""
from __future__ import annotations

import functools
import os
import platform
import re
import resource
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from data.io import available_cores

BYTES_PER_MB = 1 << 20


# ---- machine -------------------------------------------------------------------------------------------------------
def machine_description(device: torch.device) -> str:
    """Hostname-free name of what ran the benchmark: `cpu-<n>core` or the CUDA device, e.g. `nvidia-h100-80gb-hbm3`."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        count = torch.cuda.device_count()
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
        return slug if count == 1 else f"{count}x-{slug}"
    return f"cpu-{available_cores()}core"


def load_average() -> list[float] | None:
    """1, 5 and 15-minute load averages: how busy the (possibly shared) machine was."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def machine_info(device: torch.device) -> dict[str, Any]:
    """What ran the benchmark: CPU, accelerator and library versions (no host name)."""
    info = {
        "description": machine_description(device),
        "device": str(device),
        "cpu_count": available_cores(),
        "cpu_model": _cpu_model(),
        "cpu_bf16": _cpu_bf16_features(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(terse=True),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "pillow": Image.__version__,
    }
    try:
        import torchvision

        info["torchvision"] = torchvision.__version__
    except ImportError:
        info["torchvision"] = None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(
            device_name=props.name, device_memory_gb=round(props.total_memory / 1e9, 1),
            cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(), device_count=torch.cuda.device_count(),
        )
    else:
        info["device_name"] = info["cpu_model"]
    return info


@functools.cache
def _cpuinfo_lines() -> tuple[str, ...]:
    """/proc/cpuinfo's lines, read once; none where there is no such file."""
    try:
        return tuple(Path("/proc/cpuinfo").read_text().splitlines())
    except OSError:
        return ()


def _cpuinfo(key: str) -> str | None:
    """The value of the first /proc/cpuinfo line that starts with `key`, None when no line does."""
    return next((line.split(":", 1)[1] for line in _cpuinfo_lines() if line.startswith(key)), None)


def _cpu_bf16_features() -> list[str]:
    """Which of the CPU's instruction sets oneDNN runs bf16 on (AMX, AVX-512 BF16): what makes bf16 fast on CPU."""
    flags = set((_cpuinfo("flags") or "").split())
    return [f for f in ("amx_bf16", "avx512_bf16") if f in flags]


def _cpu_model() -> str:
    model = _cpuinfo("model name")
    return model.strip() if model is not None else platform.processor() or "unknown"


# ---- memory --------------------------------------------------------------------------------------------------------
def _status_kb(pid: int | str, key: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _pss_kb(pid: int) -> int:
    """Proportional set size: shared pages (forked workers share the parent's) are split, not counted twice."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return _status_kb(pid, "VmRSS") or 0


def _children(pid: int) -> list[int]:
    """All descendants of `pid` (DataLoader workers, process pools and their children)."""
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        kids: list[int] = []
        try:
            for task in Path(f"/proc/{parent}/task").iterdir():
                kids += [int(k) for k in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
        found += kids
        frontier += kids
    return found


def _reset_peak_rss() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux >= 4.0), so the next peak is the measurement's own."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _lifetime_peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / BYTES_PER_MB if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


class MemoryWatch:
    """Peak memory of one measurement: exact RSS peak, CUDA allocator peak, optionally the sampled tree PSS."""

    # The RSS peak is this process's own (VmHWM, reset on entry). With sample_tree, a thread also samples the PSS of
    # this process plus its children (DataLoader / cache-build workers); that thread costs the measured code CPU, so
    # timed runs leave it off and the tree figure comes from one extra untimed run (tree_memory_mb).

    def __init__(self, device: torch.device, sample_tree: bool = False, interval_s: float = 0.05):
        self.device, self.sample_tree, self.interval_s = device, sample_tree, interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.tree_peak_kb = 0
        self.result: dict[str, float | str | None] = {}

    def _sample(self) -> None:
        pid = os.getpid()
        total = _pss_kb(pid) + sum(_pss_kb(c) for c in _children(pid))
        self.tree_peak_kb = max(self.tree_peak_kb, total)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def __enter__(self) -> "MemoryWatch":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.gpu_before = torch.cuda.memory_allocated(self.device)
        self.exact = _reset_peak_rss()
        self.before_kb = _status_kb("self", "VmRSS")
        if self.sample_tree:
            self._sample()
            self._thread = threading.Thread(target=self._run, name="benchmark-memory", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._sample()
        hwm = _status_kb("self", "VmHWM")
        if self.exact and hwm is not None and self.before_kb is not None:
            peak_mb, source = hwm / 1024, "VmHWM"
            growth = (hwm - self.before_kb) / 1024
        else:  # no /proc: the process-lifetime peak is an upper bound of the measurement's
            peak_mb, source, growth = _lifetime_peak_rss_mb(), "ru_maxrss (process lifetime)", None
        self.result = {
            "peak_rss_mb": round(peak_mb, 1),
            "peak_rss_growth_mb": None if growth is None else round(growth, 1),
            "peak_tree_pss_mb": round(self.tree_peak_kb / 1024, 1) if self.tree_peak_kb else None,
            "peak_rss_source": source,
            "peak_gpu_mb": None,  # allocated at the peak, tensors that were already resident included
            "peak_gpu_growth_mb": None,  # the peak minus what was allocated before the measurement
        }
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device)
            self.result["peak_gpu_mb"] = round(peak / BYTES_PER_MB, 1)
            self.result["peak_gpu_growth_mb"] = round((peak - self.gpu_before) / BYTES_PER_MB, 1)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); nothing to wait for on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(fn: Callable[[], Any], device: torch.device, sample_tree: bool = False) -> tuple[Any, dict[str, Any]]:
    """Run `fn` once under a MemoryWatch; the wall time spans a device synchronisation before and after."""
    with MemoryWatch(device, sample_tree) as watch:
        synchronize(device)
        start = time.perf_counter()
        out = fn()
        synchronize(device)
        seconds = time.perf_counter() - start
    return out, {"wall_s": seconds, **watch.result}


def tree_memory_mb(fn: Callable[[], Any], device: torch.device) -> float | None:
    """Peak PSS of this process and its workers over one extra, untimed run of `fn`."""
    return measure(fn, device, sample_tree=True)[1]["peak_tree_pss_mb"]


def summarise(samples: Sequence[dict[str, Any]], images: int) -> dict[str, Any]:
    """Median wall time over repeats, images/s from it, and the largest peak of each memory figure."""
    walls = [s["wall_s"] for s in samples]
    wall = statistics.median(walls)
    out: dict[str, Any] = {
        "images": int(images), "repeats": len(samples), "wall_s": round(wall, 4),
        "wall_s_all": [round(w, 4) for w in walls],
        "images_per_s": round(images / wall, 1) if wall > 0 else None,
    }
    for key in ("peak_rss_mb", "peak_rss_growth_mb", "peak_tree_pss_mb", "peak_gpu_mb", "peak_gpu_growth_mb"):
        values = [s[key] for s in samples if s.get(key) is not None]
        out[key] = max(values) if values else None
    out["peak_rss_source"] = samples[0].get("peak_rss_source")
    return out


def warm_file_cache(paths: Sequence[Path]) -> None:
    """Read every file once so the pipelines compared start from the OS page cache, whichever runs first."""
    for p in paths:
        with open(p, "rb") as f:
            while f.read(1 << 20):
                pass
