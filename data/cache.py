"""The uint8 image cache: JPEGs decoded, cropped and resized once, then memory-mapped for every step after.

A cache is a folder:
    images.npy        (N, 3, S, S) uint8, rows in the order of annotations.csv
    annotations.csv   the annotation table (index `image_id`), attributes as 0/1
    meta.json         what it was built from and a fingerprint of what it holds (SHA-256 of the images and of the
                      annotation table); written last, so its presence marks a complete cache

A cache is built whole in a temporary sibling folder and renamed into place (`write_cache`), so two builds into one
folder never mix their files; `load_cache` checks images.npy against meta.json (shape, byte size, a digest of its
header and sampled blocks) before memory-mapping it, so a truncated or swapped file is named, not misread.

Reading half: `load_cache`, `FaceCache`, `split_to_device`, `to_float_images`/`to_uint8_images`.
Building half: `preprocess_image` (the one crop + resize used for the cache, user photos and counterfactual
renders), `load_face_image`, `build_cache` (worker processes, optional JPEG draft decoding) and `write_cache`.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageFile, JpegImagePlugin
from tqdm import tqdm

from data.celeba import PARTITION_NAMES, CelebALayout, attribute_columns, find_celeba, load_celeba_annotations
from data.io import (atomic_path, atomic_write_json, available_cores, disk_errors, ensure_free_space, file_sha256,
                     preallocate)

CACHE_FORMAT_VERSION = 2
IMAGES_FILE = "images.npy"
TABLE_FILE = "annotations.csv"
META_FILE = "meta.json"
SPLITS = PARTITION_NAMES
REBUILD_HINT = "rebuild it with `python -m experiments.prepare_data` (it rebuilds a broken cache by itself)"
KEPT_ON_REBUILD = ("judge-*.pt",)  # files beside the cache that carry over to a rebuilt cache (they check its fingerprint)
LEFT_BY_EARLIER_VERSIONS = ("judge.pt",)  # the one judge file of earlier versions (now judge-ARCH-HASH.pt): not kept


@dataclass
class FaceCache:
    """A built cache: memory-mapped uint8 images, their annotation table and build metadata."""

    directory: Path
    images: np.ndarray  # (N, 3, S, S) uint8
    table: pd.DataFrame  # N rows, same order as images
    meta: dict

    @property
    def attribute_names(self) -> list[str]:
        return list(self.meta["attributes"])

    @property
    def size(self) -> int:
        return int(self.images.shape[-1])

    @property
    def fingerprint(self) -> str:
        """SHA-256 of what the cache holds (its images and its annotation table): equal fingerprints, equal data."""
        return str(self.meta["fingerprint"])

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def split_indices(self, split: str | None) -> np.ndarray:
        """Row positions of a split (`train`/`valid`/`test`), or all rows for None or "all"."""
        if split is None or split == "all":
            return np.arange(len(self))
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS} or 'all'")
        return np.flatnonzero(self.table["partition"].to_numpy() == split)

    def labels(self, split: str | None = None) -> np.ndarray:
        """Attribute labels as bool, shape (n, K), columns in `attribute_names` order."""
        rows = self.split_indices(split)
        return self.table[self.attribute_names].to_numpy(dtype=bool)[rows]


def images_digest(path: Path, blocks: int = 64, block_bytes: int = 4096) -> str:
    """SHA-256 of a file's size, its first block (the .npy header) and `blocks` evenly spaced blocks: cheap to
    check on every open (256 KiB read), yet it tells apart two builds of one size and a truncated file."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        for k in range(blocks + 1):
            f.seek(0 if k == 0 else (size - block_bytes) * k // blocks if size > block_bytes else 0)
            digest.update(f.read(block_bytes))
    return digest.hexdigest()


def _read_meta(directory: Path) -> dict:
    meta_path = directory / META_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(
            f"no complete image cache in {directory} ({META_FILE} missing); "
            "build one with `python -m experiments.prepare_data`"
        )
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"{meta_path}: unreadable cache metadata ({e}); {REBUILD_HINT}") from None
    if not isinstance(meta, dict) or meta.get("format_version") != CACHE_FORMAT_VERSION:
        version = meta.get("format_version") if isinstance(meta, dict) else None
        raise ValueError(f"{meta_path}: cache format version {version!r}, expected {CACHE_FORMAT_VERSION}; {REBUILD_HINT}")
    return meta


def read_fingerprint(directory: str | Path) -> str:
    """The fingerprint a cache folder's meta.json records, without opening its images or annotations; raises
    FileNotFoundError when meta.json is missing and ValueError when it is unreadable, of another format version or
    records no fingerprint."""
    meta = _read_meta(Path(directory))
    if "fingerprint" not in meta:
        raise ValueError(f"{Path(directory) / META_FILE}: records no fingerprint; {REBUILD_HINT}")
    return str(meta["fingerprint"])


def check_images_file(directory: Path, meta: dict) -> None:
    """Raise naming images.npy when it is not the file meta.json describes (shape, byte size, digest)."""
    path = directory / IMAGES_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing from the cache; {REBUILD_HINT}")
    expected_shape = (int(meta["num_images"]), 3, int(meta["size"]), int(meta["size"]))
    with open(path, "rb") as f:
        try:
            major, _ = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(f)
        except ValueError as e:
            raise ValueError(f"{path}: not a .npy image array ({e}); {REBUILD_HINT}") from None
        header_bytes = f.tell()
    if tuple(shape) != expected_shape or dtype != np.uint8:
        raise ValueError(f"{path}: holds {tuple(shape)} {dtype}, but {META_FILE} describes {expected_shape} uint8; "
                         f"{REBUILD_HINT}")
    wanted_bytes = header_bytes + int(np.prod(expected_shape))
    actual_bytes = path.stat().st_size
    if actual_bytes != wanted_bytes:
        raise ValueError(f"{path}: {actual_bytes:,} bytes, expected {wanted_bytes:,} for {expected_shape} uint8 "
                         f"(truncated or damaged); {REBUILD_HINT}")
    if images_digest(path) != meta["images_digest"]:
        raise ValueError(f"{path}: its contents are not the images {META_FILE} was written for (another build's "
                         f"file?); {REBUILD_HINT}")


def load_cache(directory: str | Path, mmap: bool = True) -> FaceCache:
    """Open a cache folder written by `build_cache`/`write_cache`, checked against its meta.json first."""
    directory = Path(directory)
    meta = _read_meta(directory)
    check_images_file(directory, meta)
    images = np.load(directory / IMAGES_FILE, mmap_mode="r" if mmap else None)
    try:
        table = pd.read_csv(directory / TABLE_FILE, index_col="image_id")
    except (OSError, ValueError) as e:
        raise ValueError(f"{directory / TABLE_FILE}: unreadable annotation table ({e}); {REBUILD_HINT}") from None
    missing = [name for name in meta["attributes"] if name not in table.columns]
    if missing:
        raise ValueError(f"{directory / TABLE_FILE}: attribute columns {missing} missing; {REBUILD_HINT}")
    for name in meta["attributes"]:
        table[name] = table[name].astype(bool)
    if len(table) != images.shape[0]:
        raise ValueError(
            f"{directory}: {TABLE_FILE} has {len(table)} rows but {IMAGES_FILE} has {images.shape[0]} images; "
            + REBUILD_HINT
        )
    return FaceCache(directory=directory, images=images, table=table, meta=meta)


def to_float_images(images: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 in [0, 255] -> float in [-1, 1], on whatever device `images` is on."""
    return images.to(dtype).div_(127.5).sub_(1.0)


def to_uint8_images(images: torch.Tensor) -> torch.Tensor:
    """float in [-1, 1] -> uint8 in [0, 255] (clamped, rounded)."""
    return images.detach().float().add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8)


def fits_on_gpu(nbytes: int, device: torch.device, fraction: float = 0.5) -> bool:
    """Would `nbytes` take at most `fraction` of the GPU's free memory (the rest stays for activations)?

    Free = what the driver reports plus what PyTorch's caching allocator holds but does not use (the driver counts
    those cached blocks as used).
    """
    free, _ = torch.cuda.mem_get_info(device)
    free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return nbytes <= fraction * free


UPLOAD_CHUNK_BYTES = 64 * 2**20  # staging buffer for uploads: large copies, small pinned footprint


def split_to_device(
    cache: FaceCache, split: str | None, device: torch.device | str, subset: np.ndarray | slice | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """A split (or `subset`, positions within it, in that order) as uint8 images (n, 3, S, S) and bool labels (n, K)
    on `device`; only those rows are read from the memory map.

    uint8 is 4x smaller than float32: CelebA at 64x64 is 2.5 GB resident, decoded per batch. To CUDA the rows go
    straight from the memory map to the GPU in chunks (`copy_rows_chunked`), never as a whole host copy, so torchrun
    ranks sharing a machine do not each hold the split in host RAM.
    """
    device = torch.device(device)
    rows, labels = cache.split_indices(split), cache.labels(split)
    if subset is not None:
        rows, labels = rows[subset], labels[subset]
    labels = torch.from_numpy(np.ascontiguousarray(labels)).to(device)
    if device.type == "cuda":
        return copy_rows_chunked(cache.images, rows, device), labels
    return torch.from_numpy(np.ascontiguousarray(cache.images[rows])).to(device), labels


def copy_rows_chunked(
    source: np.ndarray, rows: np.ndarray, device: torch.device | str, chunk_rows: int | None = None
) -> torch.Tensor:
    """source[rows] (uint8 (N, ...) array or memory map) as a new (len(rows), ...) tensor on `device`, read in chunks
    of `chunk_rows` rows through two alternating staging buffers (pinned on CUDA, so each chunk's copy to the GPU
    runs while the next chunk is read from disk)."""
    device = torch.device(device)
    cuda = device.type == "cuda"
    rows = np.asarray(rows, dtype=np.int64)
    row_shape = tuple(source.shape[1:])
    out = torch.empty((len(rows), *row_shape), dtype=torch.uint8, device=device)  # (n, 3, S, S)
    if not len(rows):
        return out
    row_bytes = max(1, int(np.prod(row_shape)))
    chunk_rows = max(1, min(len(rows), chunk_rows or UPLOAD_CHUNK_BYTES // row_bytes))
    staging = [torch.empty((chunk_rows, *row_shape), dtype=torch.uint8, pin_memory=cuda) for _ in range(2)]
    copied = [None, None]  # per staging buffer: the CUDA event of its last upload
    for k, start in enumerate(range(0, len(rows), chunk_rows)):
        chunk = rows[start : start + chunk_rows]
        buffer = staging[k % 2][: len(chunk)]
        if copied[k % 2] is not None:
            copied[k % 2].synchronize()  # the upload still reading this buffer must finish before it is refilled
        # mode="clip" lets numpy write into `out` directly (the default "raise" buffers a copy); rows are in range
        np.take(source, chunk, axis=0, out=buffer.numpy(), mode="clip")
        out[start : start + len(chunk)].copy_(buffer, non_blocking=cuda)
        if cuda:
            copied[k % 2] = torch.cuda.Event()
            copied[k % 2].record(torch.cuda.current_stream(device))
    for event in copied:
        if event is not None:
            event.synchronize()  # the staging buffers are freed on return
    return out


# ------------------------------------------------------------------------------------------------ building

DEFAULT_CROP_FRACTION = 148 / 178  # CelebA's usual 148-px centre square of the 178-px-wide aligned images
RESAMPLE = Image.Resampling.BICUBIC  # Pillow's BICUBIC widens its kernel when shrinking, so it is antialiased
DRAFT_SCALES = (8, 4, 2, 1)  # the reductions libjpeg can decode at directly
_CHUNK_IMAGES = 256  # images per worker task: large enough to amortise pickling, small enough for a smooth bar


def crop_box(
    width: int, height: int, crop_fraction: float = DEFAULT_CROP_FRACTION
) -> tuple[float, float, float, float]:
    """(left, top, right, bottom) of the centre square of side round(crop_fraction * width), clipped to the image."""
    side = min(round(crop_fraction * width), width, height)
    left, top = (width - side) / 2, (height - side) / 2
    return left, top, left + side, top + side


def draft_scale(width: int, height: int, size: int, crop_fraction: float = DEFAULT_CROP_FRACTION) -> int:
    """The largest JPEG decode reduction (8, 4, 2 or 1) that still leaves the crop at least `size` pixels wide."""
    left, _, right, _ = crop_box(width, height, crop_fraction)
    return next(s for s in DRAFT_SCALES if (right - left) / s >= size or s == 1)


def preprocess_image(
    img: Image.Image, size: int = 64, crop_fraction: float = DEFAULT_CROP_FRACTION, *, draft: bool = False
) -> np.ndarray:
    """The one crop + resize used everywhere (cache, user photos, counterfactual renders): (3, S, S) uint8.

    Centre square of side round(crop_fraction * width), resized to size x size with antialiased bicubic.
    The crop box is passed to `resize` in (possibly fractional) coordinates, so the filter also sees the pixels
    just outside it instead of clamping at the crop edge. With `draft=True` a not-yet-loaded JPEG is decoded by
    libjpeg at 1/2, 1/4 or 1/8 scale (the smallest that keeps the crop >= size pixels) and the crop is scaled
    exactly to match (`img` itself is drafted, as `Image.draft` always does). An image the caller already drafted
    is cropped by its own reduced width, which frames it up to a fraction of a reduced pixel differently.
    Raises OSError for a truncated or undecodable file (unless PIL's global LOAD_TRUNCATED_IMAGES is set).
    """
    width, height = img.size  # full resolution, unless the caller drafted already
    box = crop_box(width, height, crop_fraction)
    if draft and isinstance(img, JpegImagePlugin.JpegImageFile) and img.tile:
        scale = draft_scale(width, height, size, crop_fraction)
        if scale > 1:
            drafted = img.draft("RGB", (width // scale, height // scale))
            if drafted is not None:
                reduced_width = drafted[1][2]  # width / scale as a float: the true scale of the decoded pixels
                box = tuple(v * reduced_width / width for v in box)  # type: ignore[assignment]
    img.load()
    if img.mode != "RGB":
        img = img.convert("RGB")
    resized = img.resize((size, size), RESAMPLE, box=box)
    return np.ascontiguousarray(np.asarray(resized).transpose(2, 0, 1))  # (3, S, S)


def _bottom_flat_only(img: Image.Image) -> bool:
    """The bottom eighth of a decoded picture is one flat colour while its top half is not: what a JPEG of the right
    length whose second half was zeroed (a damaged download) decodes to. No photo is that flat."""
    w, h = img.size
    bottom = np.asarray(img.crop((0, h - max(1, h // 8), w, h))).reshape(-1, len(img.getbands()))
    top = np.asarray(img.crop((0, 0, w, max(1, h // 2)))).reshape(-1, len(img.getbands()))
    spread = lambda pixels: int((pixels.max(0).astype(np.int16) - pixels.min(0)).max())  # noqa: E731
    return spread(bottom) <= 1 and spread(top) > 8


def _zeroed_tail(path: str | Path, zeros: int = 64) -> bool:
    """The last 64 bytes before the file's final end marker (FFD9) are zeros: a download whose second part never came,
    zero-filled to full length. Encoders pad their data's end with 1-bits, and no picture codes as 512 zero bits. The
    zeros decode as one tile repeated (not flat) when they outlast the picture, so the flat-bottom check misses it."""
    with open(path, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        f.seek(max(0, size - zeros - 2))
        tail = f.read()
    return len(tail) == zeros + 2 and tail.endswith(b"\xff\xd9") and not any(tail[:zeros])


def _load_checked(
    path: str | Path, size: int, crop_fraction: float, draft: bool
) -> tuple[np.ndarray, bool]:
    """`preprocess_image` of one file -> ((3, S, S) uint8, looks damaged); errors name the file."""
    try:
        with Image.open(path) as img:
            pixels = preprocess_image(img, size, crop_fraction, draft=draft)  # loads `img` (drafted) in place
            return pixels, _bottom_flat_only(img) or _zeroed_tail(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"image {path} does not exist") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ValueError(f"cannot decode image {path}: {type(e).__name__}: {e}") from None


def load_face_image(
    path: str | Path, size: int = 64, crop_fraction: float = DEFAULT_CROP_FRACTION, *, draft: bool = False
) -> np.ndarray:
    """Open one image file and `preprocess_image` it; errors name the file."""
    return _load_checked(path, size, crop_fraction, draft)[0]


def _init_worker() -> None:
    # Our own worker processes only: make truncated JPEGs raise instead of decoding silently as grey.
    ImageFile.LOAD_TRUNCATED_IMAGES = False


def _decode_chunk(task: tuple[int, list[str], int, float, bool]) -> tuple[int, np.ndarray, list[tuple[int, str]], list[int]]:
    """Worker: decode a run of images -> (first row, (k, 3, S, S) uint8, [(offset, error)], [offset looking damaged])."""
    start, paths, size, crop_fraction, draft = task
    out = np.zeros((len(paths), 3, size, size), dtype=np.uint8)
    failures, damaged = [], []
    for k, path in enumerate(paths):
        try:
            out[k], flat = _load_checked(path, size, crop_fraction, draft)
        except (FileNotFoundError, ValueError) as e:
            failures.append((k, str(e)))
            continue
        if flat:
            damaged.append(k)
    return start, out, failures, damaged


def _decode_into(
    images: np.ndarray, paths: list[str], size: int, crop_fraction: float, draft: bool, workers: int, progress: bool
) -> tuple[dict[int, str], list[int]]:
    """Fill `images` (N, 3, S, S) row by row from `paths` with a process pool -> ({row: error}, damaged rows)."""
    n = len(paths)
    chunk = max(1, min(_CHUNK_IMAGES, -(-n // (4 * workers))))
    tasks = [(start, paths[start : start + chunk], size, crop_fraction, draft) for start in range(0, n, chunk)]
    failures: dict[int, str] = {}
    damaged: list[int] = []
    with multiprocessing.get_context().Pool(min(workers, len(tasks)), initializer=_init_worker) as pool, tqdm(
        total=n, unit="img", desc=f"cache {size}px", disable=not progress
    ) as bar:
        for start, block, errors, flat in pool.imap_unordered(_decode_chunk, tasks):
            images[start : start + len(block)] = block
            failures.update({start + k: message for k, message in errors})
            damaged += [start + k for k in flat]
            bar.update(len(block))
    return failures, sorted(damaged)


# ---- writing a cache folder: staged in a sibling, renamed into place ------------------------------------------------
def _is_cache_folder(directory: Path) -> bool:
    """True for a folder that holds nothing but what a cache build leaves (so replacing it loses nothing else)."""
    allowed = {IMAGES_FILE, TABLE_FILE, META_FILE, *LEFT_BY_EARLIER_VERSIONS}
    return all(p.name in allowed or p.name.startswith(".") or any(p.match(k) for k in KEPT_ON_REBUILD)
               for p in directory.iterdir())


def _install(stage: Path, directory: Path) -> None:
    """Rename the finished `stage` onto `directory`; an old cache there is moved aside first and then deleted."""
    if not directory.exists():
        os.rename(stage, directory)
        return
    old = directory.parent / f".{directory.name}.old-{os.getpid()}-{time.monotonic_ns()}"
    os.rename(directory, old)
    for kept in (path for pattern in KEPT_ON_REBUILD for path in old.glob(pattern)):  # e.g. the judges: they
        if kept.is_file() and not (stage / kept.name).exists():                      # re-check the fingerprint
            os.replace(kept, stage / kept.name)
    os.rename(stage, directory)
    shutil.rmtree(old, ignore_errors=True)


def _new_images_file(path: Path, shape: tuple[int, ...]) -> np.memmap:
    """A new uint8 .npy memory map of `shape` at `path` (header and full length written), its disk space reserved: a
    full disk is an OSError here, not a SIGBUS that kills the process when a page of the map is first written."""
    images = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape)
    preallocate(path, path.stat().st_size)
    return images


@contextmanager
def _staged(directory: Path, shape: tuple[int, ...]) -> Iterator[tuple[Path, np.memmap]]:
    """A new sibling folder to build `directory` in, holding the (N, 3, S, S) images.npy memory map with its disk space
    reserved (a full disk: DiskFullError naming `directory` now, not a SIGBUS that kills the process when a page of
    the map is first written); the folder is removed afterwards, whatever happens."""
    if directory.exists() and (not directory.is_dir() or not _is_cache_folder(directory)):
        raise FileExistsError(f"{directory} exists and is not an image cache folder; choose another output folder")
    needed = int(np.prod(shape)) + 2**20  # the images, and 1 MiB for the table and meta.json
    stage = directory.parent / f".{directory.name}.building-{os.getpid()}-{time.monotonic_ns()}"
    with disk_errors(directory, needed, remedy="make it writable, or build the cache elsewhere (--out)"):
        try:
            directory.parent.mkdir(parents=True, exist_ok=True)
            _remove_abandoned_stages(directory)  # their space counts as free
            ensure_free_space(directory, needed)
            stage.mkdir()
            yield stage, _new_images_file(stage / IMAGES_FILE, shape)  # held by the caller alone, who closes it
        finally:
            shutil.rmtree(stage, ignore_errors=True)


def _remove_abandoned_stages(directory: Path) -> None:
    """Delete staging folders of builds of `directory` whose process is gone (killed mid-build: the size of a whole
    cache each); a build still running keeps its own."""
    for stage in directory.parent.glob(f".{directory.name}.building-*-*"):
        try:
            pid = int(stage.name[len(f".{directory.name}.building-"):].split("-")[0])
            os.kill(pid, 0)  # raises when no such process exists
        except ProcessLookupError:
            shutil.rmtree(stage, ignore_errors=True)
        except (ValueError, PermissionError):
            continue  # not our naming, or another user's live process


def _finish(stage: Path, table: pd.DataFrame, meta: dict) -> dict:
    """Write the table and, last, meta.json with the fingerprint of what the staged folder holds."""
    table = table.copy()
    attributes = attribute_columns(table)
    table[attributes] = table[attributes].astype(np.int8)  # 0/1 in the CSV
    table.to_csv(stage / TABLE_FILE, index_label="image_id")
    images_sha, labels_sha = file_sha256(stage / IMAGES_FILE), file_sha256(stage / TABLE_FILE)
    meta = {
        "format_version": CACHE_FORMAT_VERSION,
        "attributes": attributes,
        "num_images": len(table),
        **meta,
        "images_sha256": images_sha,
        "labels_sha256": labels_sha,
        "fingerprint": hashlib.sha256(f"{images_sha}:{labels_sha}".encode()).hexdigest(),
        "images_digest": images_digest(stage / IMAGES_FILE),
    }
    atomic_write_json(meta, stage / META_FILE)
    return meta


def write_cache(
    directory: str | Path, table: pd.DataFrame, meta: dict, fill: Callable[[np.ndarray], None] | np.ndarray
) -> Path:
    """Write a complete cache folder: `table` (one row per image, bool attribute columns), `meta` (must hold "size")
    and the images, given as an (N, 3, S, S) uint8 array or as `fill(out)` writing into the (N, 3, S, S) memmap.

    Everything is staged in a temporary sibling folder and renamed into place, so a reader sees the old cache or the
    new one, never a mix; meta.json gains the fingerprint. Returns `directory`.
    """
    directory = Path(directory)
    size = int(meta["size"])
    with _staged(directory, (len(table), 3, size, size)) as (stage, images):
        if callable(fill):
            fill(images)
        else:
            images[:] = fill
        images.flush()
        del images
        _finish(stage, table, {**meta, "size": size})
        _install(stage, directory)
    return directory


def _matching_meta(out_dir: Path, wanted: dict) -> dict | None:
    """The meta of a complete, intact cache in `out_dir` built with exactly `wanted`, else None."""
    try:
        meta = _read_meta(out_dir)
        check_images_file(out_dir, meta)
    except (OSError, ValueError, KeyError):
        return None  # missing, from an older format, or damaged: rebuilt
    if any(meta.get(k) != v for k, v in wanted.items()) or not (out_dir / TABLE_FILE).is_file():
        return None
    return meta


def _annotations_digest(layout: CelebALayout) -> str:
    """SHA-256 over the attribute, partition and identity files, in that order."""
    files = [layout.attr_file, layout.partition_file, layout.identity_file]
    return hashlib.sha256("".join(file_sha256(f) for f in files if f is not None).encode()).hexdigest()


def build_cache(
    celeba_root: str | Path,
    out_dir: str | Path,
    size: int = 64,
    workers: int | None = None,
    skip_bad: bool = False,
    draft: bool = True,
    force: bool = False,
    *,
    crop_fraction: float = DEFAULT_CROP_FRACTION,
    progress: bool = True,
) -> Path:
    """Decode, crop and resize every image of a CelebA copy (any layout) into a cache folder; returns `out_dir`.

    An intact cache whose meta matches (source root, layout, size, crop, file count, draft, skip_bad, and the
    annotation files' SHA-256) is reused unless `force`; a damaged one is rebuilt. A corrupt, truncated or missing
    image is an error naming it; with `skip_bad` it is left out and recorded in meta["skipped"]. Images that look like
    broken downloads (the file ends in zeroed bytes, or the bottom rows decode to one flat colour) are listed in
    meta["suspect_damaged"] and warned about. A full disk raises DiskFullError (data.io) naming the folder and the
    space needed, before anything is decoded where it can tell, and the staging folder is removed.
    Replacing a cache that held different data warns, naming both fingerprints.
    """
    layout = find_celeba(celeba_root)
    table = load_celeba_annotations(layout)
    out_dir = Path(out_dir)
    wanted = {
        "source_root": str(Path(celeba_root).expanduser().resolve()),
        "layout": layout.kind,
        "size": int(size),
        "crop": float(crop_fraction),
        "file_count": len(table),
        "draft": bool(draft),
        "skip_bad": bool(skip_bad),
        # the annotation files' contents: an edited label file with the same image count must not reuse the cache
        "annotations_sha256": _annotations_digest(layout),
    }
    if not force and _matching_meta(out_dir, wanted) is not None:
        return out_dir
    if not layout.image_dir.is_dir():
        raise FileNotFoundError(f"image folder {layout.image_dir} not found (annotations read from {layout.attr_file})")
    try:
        old_fingerprint = _read_meta(out_dir).get("fingerprint")
    except (OSError, ValueError):
        old_fingerprint = None
    workers = max(1, workers or available_cores())
    started = time.perf_counter()
    paths = [str(layout.image_dir / name) for name in table.index]
    n = len(paths)
    with _staged(out_dir, (n, 3, size, size)) as (stage, images):
        failures, damaged = _decode_into(images, paths, size, crop_fraction, draft, workers, progress)
        if failures and not skip_bad:
            row, message = min(failures.items())
            more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
            raise ValueError(f"{message}{more}; pass skip_bad=True (--skip-bad) to leave bad images out of the cache")
        _write_kept_rows(images, failures, stage / IMAGES_FILE)
        del images
        skipped = [table.index[row] for row in sorted(failures)]
        suspect = [table.index[row] for row in damaged if row not in failures]
        meta = _finish(stage, table.drop(index=skipped), {
            **wanted,
            "image_dir": str(layout.image_dir.expanduser().resolve()),
            "resample": "bicubic",
            "skipped": skipped,
            "skipped_errors": [failures[row] for row in sorted(failures)],
            "suspect_damaged": suspect,
            "build_seconds": round(time.perf_counter() - started, 3),
            "built_at": time.time(),
        })
        _install(stage, out_dir)
    _warn_after_build(out_dir, suspect, old_fingerprint, meta["fingerprint"])
    return out_dir


def _write_kept_rows(images: np.memmap, failures: dict[int, str], path: Path) -> None:
    """Flush the decoded images; when rows failed (rare), copy the good rows into a file of the right length, which
    replaces the first."""
    if not failures:
        images.flush()
        return
    keep = np.setdiff1d(np.arange(len(images)), sorted(failures))  # (n_kept,)
    with atomic_path(path, needed=len(keep) * int(np.prod(images.shape[1:]))) as compact_tmp:
        compact = _new_images_file(compact_tmp, (len(keep), *images.shape[1:]))
        for a in range(0, len(keep), 4096):
            compact[a : a + 4096] = images[keep[a : a + 4096]]
        compact.flush()
        del compact


def _warn_after_build(out_dir: Path, suspect: list[str], old_fingerprint: str | None, fingerprint: str) -> None:
    """Say what a user must know about a fresh build: images that look damaged, and data replaced under runs."""
    if suspect:
        warnings.warn(f"{len(suspect)} image(s) end in zeroed bytes or decode with flat bottom rows, as broken "
                      "downloads do: "
                      f"{', '.join(suspect[:5])}{' ...' if len(suspect) > 5 else ''} (all listed in "
                      f"{out_dir / META_FILE} under 'suspect_damaged'); check them against the originals", stacklevel=3)
    if old_fingerprint and old_fingerprint != fingerprint:
        warnings.warn(f"replaced the cache in {out_dir}: it held other data (fingerprint {old_fingerprint[:12]}, now "
                      f"{fingerprint[:12]}); runs trained on the old cache refuse to resume on it and "
                      "re-encode their latents", stacklevel=3)
