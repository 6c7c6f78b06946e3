"""Atomic file writes (artifacts, JSON, figures), safe artifact loading and content hashes shared by every module,
and the usable core count."""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import tempfile
import warnings
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


class CorruptArtifactError(ValueError):
    """A saved artifact that exists but cannot be read safely: truncated, corrupt, not a torch file, or unsafe."""


# Lines of torch's own error text that are advice about loading the file unsafely (weights_only=False,
# allow-listing globals): never passed on, since the files this code reads never need that.
_TORCH_ADVICE = ("weights_only", "weights only", "torch.load", "trust", "file an issue", "safe_globals")


def _short_reason(error: Exception) -> str:
    """What went wrong reading the file, in one line, without torch's advice about loading it unsafely."""
    lines = []
    for line in str(error).splitlines():
        line = line.strip().removeprefix("WeightsUnpickler error:").strip()
        if line and not any(a in line.lower() for a in _TORCH_ADVICE):
            lines.append(line)
    detail = lines[0].split(". This is an internal")[0] if lines else ""  # miniz's boilerplate after the cause
    if len(detail) > 160:
        detail = detail[:157] + "..."
    return f"{type(error).__name__}: {detail}" if detail else type(error).__name__


def load_torch_file(
    path: str | os.PathLike, *, kind: str, remedy: str, map_location: Any = "cpu", missing: str | None = None
) -> Any:
    """`torch.load(..., weights_only=True)`: tensors and plain containers only, so a downloaded file runs no code.

    kind: what the file should hold, for messages ("a latent-edit VAE checkpoint"); remedy: how to get a good one
    ("train again with ..."). A missing path raises FileNotFoundError; a file that is empty, truncated, corrupt, not
    written by torch.save, or that holds other objects (which could run code when unpickled) raises
    CorruptArtifactError. Both messages name the path, `kind` and `remedy`. `missing` replaces the
    FileNotFoundError message ("{path}" in it is filled in).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(missing.format(path=path) if missing is not None
                                else f"no such file {path}: expected {kind} there. {remedy}")
    if not path.is_file():
        raise CorruptArtifactError(f"{path} is not a file: expected {kind} there. {remedy}")
    if isinstance(map_location, (str, torch.device)):
        torch.device(map_location)  # a misspelt device fails here, not as a "corrupt file" below
    with open(path, "rb"):  # a permission error is about access, not the file's content: raised as it is
        pass
    if path.stat().st_size == 0:
        raise CorruptArtifactError(f"{path} is empty (0 bytes), not {kind}: it was probably cut off while being "
                                   f"written or copied. {remedy}")
    try:
        with warnings.catch_warnings():
            # torch warns about a plain pickle's protocol before refusing it; the error below says what matters
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location=map_location, weights_only=True)
    except MemoryError:
        raise
    except Exception as e:  # a damaged file surfaces as almost any exception type from the zip reader or unpickler
        if isinstance(e, RuntimeError) and "deserialize object on" in str(e):
            raise  # the tensors' device is unavailable (e.g. map_location="cuda" without a GPU): not the file's fault
        unsafe = re.search(r"GLOBAL ([\w.]+)", str(e)) if isinstance(e, pickle.UnpicklingError) else None
        if unsafe:
            message = (f"{path} was not loaded: it should be {kind}, but it holds objects other than tensors and "
                       f"plain containers ({unsafe.group(1)}), and loading it could run code. A good file comes from "
                       f"this code: {remedy}")
        else:
            message = (f"{path} is not readable as {kind}: it is truncated, corrupt or not a file written by "
                       f"torch.save ({_short_reason(e)}). {remedy}")
        raise CorruptArtifactError(message) from None  # not chained: torch's text suggests loading unsafely


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
