"""Atomic file writes (artifacts, JSON, figures), output sets that become visible together, safe artifact loading,
content hashes, and the errors for a full disk or a read-only folder, shared by every module; the usable core count."""
from __future__ import annotations

import errno
import hashlib
import json
import os
import pickle
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Sequence
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


class DiskFullError(OSError):
    """A write that ran out of disk space; the message names the path, the space it needed and the space free."""

    def __init__(self, message: str):
        super().__init__(message)
        self.errno = errno.ENOSPC


class NotWritableError(PermissionError):
    """An output folder that cannot be written (a read-only file system, or no permission)."""


def _size(nbytes: int) -> str:
    return f"{nbytes / 2**30:.1f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.1f} MiB"


def free_bytes(path: str | os.PathLike) -> int:
    """Free space on the file system that holds `path` (its nearest existing folder)."""
    folder = Path(path).absolute()
    while not folder.is_dir() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free


def disk_full_error(path: str | os.PathLike, needed: int | None) -> DiskFullError:
    """The error for a write of `path` that found the disk full; `needed`: bytes it takes (None: unknown)."""
    need = f"needs about {_size(needed)}" if needed else "needs more space"
    return DiskFullError(f"{path}: the disk is full: writing it {need}, and {_size(free_bytes(path))} are free there. "
                         "Nothing was replaced, and what was half-written is removed; free some space and run again")


def ensure_free_space(path: str | os.PathLike, needed: int) -> None:
    """Raise DiskFullError before writing `needed` bytes at `path` when the file system has less free."""
    if free_bytes(path) < needed:
        raise disk_full_error(path, needed)


_NOT_WRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)  # the errnos of a folder that cannot be written


def _not_writable(folder: Path, error: OSError, remedy: str) -> NotWritableError:
    reason = "a read-only file system" if error.errno == errno.EROFS else "permission denied"
    return NotWritableError(f"{folder} is not writable ({reason}); {remedy}")


# torch.save reports a failed write (a full disk among others) as a RuntimeError from its zip writer
_TORCH_WRITER_FAILED = ("inline_container", "PytorchStreamWriter")


@contextmanager
def disk_errors(path: str | os.PathLike, needed: int | None = None,
                remedy: str = "make it writable or write elsewhere") -> Iterator[None]:
    """Turn a full disk met while writing `path` into DiskFullError, and a read-only folder into NotWritableError,
    both naming it. A caller removes what the write left half-made inside the block (a `finally` there), so the
    free space the error reports counts it as freed.

    A full disk surfaces as OSError(ENOSPC or EDQUOT), or from torch.save as a RuntimeError of its zip writer (then
    told apart from other failures by the space left).
    """
    path = Path(path)
    try:
        yield
    except (DiskFullError, NotWritableError):
        raise
    except (OSError, RuntimeError) as e:
        code = getattr(e, "errno", None)
        full = code in (errno.ENOSPC, errno.EDQUOT) or (
            isinstance(e, RuntimeError) and any(m in str(e) for m in _TORCH_WRITER_FAILED)
            and free_bytes(path) < max(needed or 0, 2**20))
        if full:
            raise disk_full_error(path, needed) from e
        if code in _NOT_WRITABLE:
            raise _not_writable(path.parent, e, remedy) from e
        raise


def check_writable(folder: str | os.PathLike, remedy: str) -> None:
    """Raise NotWritableError unless a file can be made in `folder` (made if missing): checked before work, not
    after it (os.access cannot tell, as root ignores permission bits but not a read-only mount)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-check.", suffix=".tmp", dir=folder)
    except OSError as e:
        if e.errno in _NOT_WRITABLE:
            raise _not_writable(folder, e, remedy) from None
        raise
    os.close(fd)
    os.unlink(probe)


def preallocate(path: str | os.PathLike, nbytes: int) -> None:
    """Reserve `nbytes` of disk for a file now, so that a full disk is an OSError here rather than a SIGBUS when a
    memory map of it is written later (file systems without fallocate are left to `ensure_free_space`)."""
    if not hasattr(os, "posix_fallocate"):
        return
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, nbytes)
    except OSError as e:
        if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike, needed: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    A killed process therefore never leaves a half-written file under the final name. `needed` (bytes, when known)
    is checked against the free space first; a full disk or a read-only folder raise DiskFullError or
    NotWritableError naming `path`, and the temporary file is removed.
    """
    path = Path(path)
    with disk_errors(path, needed):
        path.parent.mkdir(parents=True, exist_ok=True)
        if needed:
            ensure_free_space(path, needed)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        try:
            yield tmp_path
            os.replace(tmp_path, path)
        finally:
            tmp_path.unlink(missing_ok=True)


def _tensor_bytes(obj: Any) -> int:
    """Bytes of the tensors' storages in `obj` (each shared storage once): about what torch.save writes."""
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for _, t in named_tensors(obj)}
    return sum(storages.values())


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """`torch.save` through `atomic_path`; load the result with `torch.load(..., weights_only=True)`."""
    with atomic_path(path, needed=_tensor_bytes(obj) + 2**16) as tmp:
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
    written by torch.save, that holds other objects (which could run code when unpickled), or whose floating-point
    tensors hold a NaN or inf (a damaged file whose tensors still load) raises CorruptArtifactError. Both messages
    name the path, `kind` and `remedy`. `missing` replaces the FileNotFoundError message ("{path}" in it is filled
    in).
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
            loaded = torch.load(path, map_location=map_location, weights_only=True)
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
    where = first_nonfinite(loaded)
    if where:
        raise CorruptArtifactError(f"{path} holds a non-finite number (NaN or inf) at {where}, so it is not usable as "
                                   f"{kind}: the file is damaged. {remedy}")
    return loaded


def named_tensors(obj: Any, name: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor in `obj`, nested in dicts, lists and tuples, with its place: ("model.encoder.0.weight", tensor)."""
    if isinstance(obj, torch.Tensor):
        yield name or "tensor", obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from named_tensors(value, f"{name}.{key}" if name else str(key))
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from named_tensors(value, f"{name}[{i}]")


def first_nonfinite(obj: Any) -> str | None:
    """Where the first NaN or inf of the floating-point tensors in `obj` is, e.g. "mu[5, 3] (1 of 8,192 values not
    finite)"; None when all are finite."""
    for name, tensor in named_tensors(obj):
        if tensor.is_floating_point() or tensor.is_complex():
            bad = ~torch.isfinite(tensor)
            if bool(bad.any()):
                where = f"{name}[{', '.join(str(int(i)) for i in bad.nonzero()[0])}]" if tensor.ndim else name
                return f"{where} ({int(bad.sum()):,} of {tensor.numel():,} values not finite)"
    return None


def atomic_write_text(text: str, path: str | os.PathLike) -> Path:
    data = text.encode()
    with atomic_path(path, needed=len(data)) as tmp:
        tmp.write_bytes(data)
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

    The one save path of every figure the project draws. A `stem` ending in .png, .pdf or .csv loses that ending;
    any other dot stays part of the name (`edit-x1.5` -> `edit-x1.5.png`).
    """
    stem = Path(stem)
    if stem.suffix.lower() in (".png", ".pdf", ".csv"):
        stem = stem.with_suffix("")
    paths = []
    for ext in ("png", "pdf") if pdf else ("png",):
        path = stem.parent / f"{stem.name}.{ext}"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, format=ext, bbox_inches="tight")
        paths.append(path)
    paths.append(atomic_write_text(data.to_csv(index=False), stem.parent / f"{stem.name}.csv"))
    return paths


# ---- output sets: the files one stage writes, visible together or refused -------------------------------------------
class MixedOutputsError(ValueError):
    """Files of one output set that no single complete write made together (a write was interrupted)."""


def _set_files(folder: Path, patterns: Sequence[str]) -> list[Path]:
    return sorted({p for pattern in patterns for p in folder.glob(pattern) if p.is_file()})


@contextmanager
def output_set(manifest: str | os.PathLike, patterns: Sequence[str]) -> Iterator[list[Path]]:
    """Write a stage's files as one set: yields a list the block appends every path it writes to.

    The manifest is first marked unfinished; the block writes its files (each atomically); then the files matching
    `patterns` (globs relative to the manifest's folder) that the block did not write, an earlier set's, are removed,
    and the manifest is written last, naming every file with its SHA-256. A write killed at any point leaves the
    manifest unfinished, so `check_output_set` refuses the files rather than pass a mix of two writes as one set.
    """
    manifest = Path(manifest)
    folder = manifest.parent
    atomic_write_json({"complete": False, "started": time.strftime("%Y-%m-%d %H:%M:%S"), "pid": os.getpid()}, manifest)
    written: list[Path] = []
    yield written
    kept = {Path(p).resolve() for p in written}
    earlier = [old for old in _set_files(folder, patterns) if old.resolve() not in kept]
    for old in earlier:
        old.unlink()
    if earlier:
        print(f"removed {', '.join(p.relative_to(folder).as_posix() for p in earlier)} from {folder}: an earlier "
              "write's, not part of this one")
    files = {Path(p).resolve().relative_to(folder.resolve()).as_posix(): file_sha256(p) for p in written}
    atomic_write_json({"complete": True, "files": files}, manifest)


def check_output_set(manifest: str | os.PathLike, patterns: Sequence[str], remedy: str) -> None:
    """Raise MixedOutputsError, naming the file, unless the files matching `patterns` are the complete set that
    `manifest` lists, byte for byte. Files without a manifest (from code that writes none) pass as they are."""
    manifest = Path(manifest)
    if not manifest.is_file():
        return
    folder = manifest.parent
    try:
        record = json.loads(manifest.read_text())
        listed = record["files"] if record.get("complete") else None
    except (ValueError, KeyError, AttributeError) as e:
        raise MixedOutputsError(f"{manifest}: unreadable ({e}); {remedy}") from None
    if listed is None:
        raise MixedOutputsError(f"{manifest}: the write of this set that started {record.get('started', '?')} did "
                                f"not finish (interrupted?), so its files may mix two writes; {remedy}")
    for name, sha256 in listed.items():
        path = folder / name
        if not path.is_file():
            raise MixedOutputsError(f"{path} is missing, though {manifest} lists it in the set; {remedy}")
        if (actual := file_sha256(path)) != sha256:
            raise MixedOutputsError(f"{path} is not the file {manifest} lists (SHA-256 {actual[:12]}, listed "
                                    f"{sha256[:12]}): another, unfinished write made it; {remedy}")
    extra = [p for p in _set_files(folder, patterns) if p.relative_to(folder).as_posix() not in listed]
    if extra:
        raise MixedOutputsError(f"{extra[0]} is not in the set {manifest} lists (it came from elsewhere); {remedy}")
