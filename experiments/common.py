"""What every experiment script shares: run folders, device choice, seeding, torchrun set-up, config I/O."""
from __future__ import annotations

import dataclasses
import json
import os
import random
import re
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist

from data.io import atomic_path, atomic_write_json, atomic_write_text

RUNS_ROOT = Path("runs")
CONFIG_FILE = "config.json"
CHECKPOINT_FILE = "checkpoint.pt"

T = TypeVar("T")


def new_run_dir(name: str, root: str | Path = RUNS_ROOT) -> Path:
    """Create and return the next numbered run folder, e.g. runs/003-name/."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    numbers = [int(m.group(1)) for p in root.iterdir() if (m := re.match(r"(\d{3,})-", p.name))]
    for number in range(max(numbers, default=0) + 1, max(numbers, default=0) + 1000):
        run_dir = root / f"{number:03d}-{name}"
        try:
            run_dir.mkdir()
            return run_dir
        except FileExistsError:  # another process took this number first
            continue
    raise RuntimeError(f"could not create a run folder under {root}")


def latest_run_dir(root: str | Path = RUNS_ROOT) -> Path:
    """The highest-numbered run folder under `root`."""
    runs = sorted((p for p in Path(root).glob("[0-9][0-9][0-9]*-*") if p.is_dir()), key=lambda p: int(p.name.split("-")[0]))
    if not runs:
        raise FileNotFoundError(f"no run folders under {root}; train one with `python -m experiments.train_vae`")
    return runs[-1]


def run_cache_dir(run_dir: Path) -> Path:
    """The cache a VAE run was trained on, from its config.json."""
    config_path = run_dir / CONFIG_FILE
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} missing: {run_dir} is not a VAE run folder")
    cache_dir = json.loads(config_path.read_text()).get("cache_dir")
    if not cache_dir:
        raise ValueError(f"{config_path}: no 'cache_dir' entry")
    return Path(cache_dir)


def pick_device(name: str = "auto") -> torch.device:
    """'auto' means CUDA when there is one, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """The one place seeds are set: Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def save_config(config: Any, path: str | Path) -> Path:
    """A config dataclass as JSON (never pickled)."""
    return atomic_write_json(dataclasses.asdict(config), path)


def load_config(cls: type[T], path: str | Path) -> T:
    """Rebuild a config dataclass from JSON, ignoring keys the class no longer has."""
    values = json.loads(Path(path).read_text())
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in names})


@dataclasses.dataclass(frozen=True)
class DistributedContext:
    """Where this process sits under torchrun (or a single process when not launched by it)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto") -> DistributedContext:
    """Join the torchrun process group when launched by torchrun: NCCL on GPUs, gloo on CPU."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return DistributedContext(device=pick_device(device))
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    chosen = pick_device(device)
    if chosen.type == "cuda":
        torch.cuda.set_device(local_rank)
        chosen = torch.device("cuda", local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if chosen.type == "cuda" else "gloo")
    return DistributedContext(rank=rank, world_size=world_size, local_rank=local_rank, device=chosen)


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def save_figure(fig: Any, data: Any, stem: Path, pdf: bool = False) -> list[Path]:
    """A matplotlib figure as PNG (and PDF) with the data behind it (a DataFrame) as CSV beside it, atomically."""
    paths = []
    for ext in ("png", "pdf") if pdf else ("png",):
        path = stem.with_suffix(f".{ext}")
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=130, format=ext, bbox_inches="tight")
        paths.append(path)
    paths.append(atomic_write_text(data.to_csv(index=False), stem.with_suffix(".csv")))
    return paths
