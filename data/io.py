"""Atomic file writes (artifacts, JSON, figures) and content hashes shared by every module, and the usable core count."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch


def available_cores() -> int:
    """Cores this process may run on (the affinity mask: a container's share, not the host's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    A killed process therefore never leaves a half-written file under the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """`torch.save` through `atomic_path`; load the result with `torch.load(..., weights_only=True)`."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def load_torch_file(path: str | os.PathLike, *, missing: str, map_location: Any = "cpu") -> Any:
    """`torch.load(..., weights_only=True)`: tensors and plain containers only, so a downloaded file runs no code.

    `missing` is the FileNotFoundError message when there is no such file; "{path}" in it is filled in.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(missing.format(path=path))
    return torch.load(path, map_location=map_location, weights_only=True)


def atomic_write_text(text: str, path: str | os.PathLike) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def atomic_write_json(obj: Any, path: str | os.PathLike) -> Path:
    return atomic_write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n", path)


def file_sha256(path: str | os.PathLike, chunk_bytes: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_bytes), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_figure(fig: Any, data: Any, stem: str | os.PathLike, pdf: bool = False, dpi: int = 130) -> list[Path]:
    """A matplotlib figure as PNG (and PDF) with the data behind it (a DataFrame) as CSV beside it, atomically.

    The one save path of every figure the project draws.
    """
    stem = Path(stem)
    paths = []
    for ext in ("png", "pdf") if pdf else ("png",):
        path = stem.with_suffix(f".{ext}")
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, format=ext, bbox_inches="tight")
        paths.append(path)
    paths.append(atomic_write_text(data.to_csv(index=False), stem.with_suffix(".csv")))
    return paths
