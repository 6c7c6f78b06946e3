"""Self-describing training checkpoints: model config + plain weights + optimizer + RNG states + code version.

Everything is stored as tensors, lists, dicts, strings and numbers so `torch.load(weights_only=True)` can read it.
"""
from __future__ import annotations

import dataclasses
import functools
import random
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from data.io import atomic_torch_save, load_torch_file

CHECKPOINT_FORMAT_VERSION = 1


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module inside torch.compile (`_orig_mod`) and DistributedDataParallel (`module`) wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """The git commit of this code (`git rev-parse HEAD`), or "unknown" outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"


def rng_states() -> dict[str, Any]:
    """Python, NumPy, torch CPU and CUDA generator states in weights_only-loadable form."""
    version, mt_state, gauss_next = random.getstate()
    name, key, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    return {
        "python": {"version": version, "state": list(mt_state), "gauss_next": gauss_next},
        "numpy": {
            "bit_generator": str(name),
            "key": torch.from_numpy(key.astype(np.int64)),  # (624,) uint32 values
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_states(states: dict[str, Any]) -> None:
    """Inverse of `rng_states`; CUDA states are restored only when the device count matches."""
    py = states["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss_next"]))
    np_state = states["numpy"]
    np.random.set_state(
        (
            np_state["bit_generator"],
            np_state["key"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(states["torch"].cpu())
    cuda = states.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])


def save_checkpoint(
    path: str | Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    step: int,
    epoch: int,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically; `model` may be wrapped (compile/DDP), its plain weights are stored.

    `model` must carry a dataclass `.config` (e.g. VAEConfig), stored as `model_args` so the file rebuilds the model.
    """
    plain = unwrap_model(model)
    config = getattr(plain, "config", None)
    if config is None or not dataclasses.is_dataclass(config):
        raise TypeError(f"save_checkpoint: {type(plain).__name__} has no dataclass `.config` to store as model_args")
    checkpoint = {
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "model_class": type(plain).__name__,
        "model_args": dataclasses.asdict(config),
        "model": {k: v.detach().cpu() for k, v in plain.state_dict().items()},
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "step": int(step),
        "epoch": int(epoch),
        "rng": rng_states(),
        "code_version": code_version(),
        "extra": extra or {},
    }
    return atomic_torch_save(checkpoint, path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint` (weights_only=True, nothing unpickled)."""
    remedy = ("Train again with `python -m experiments.train_vae`, or resume with `python -m experiments.train_vae "
              "--resume RUN` (from a run whose checkpoint.pt is intact).")
    checkpoint = load_torch_file(path, kind="a latent-edit VAE checkpoint", remedy=remedy,
                                 missing=f"no checkpoint at {{path}}. {remedy}", map_location=map_location)
    if not isinstance(checkpoint, dict) or "model" not in checkpoint:
        raise ValueError(f"{path}: not a latent-edit checkpoint (expected a dict with a 'model' entry). {remedy}")
    return checkpoint
