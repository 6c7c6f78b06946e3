"""The uint8 image cache: JPEGs decoded, cropped and resized once, then memory-mapped for every step after.

A cache is a folder:
    images.npy        (N, 3, S, S) uint8, rows in the order of annotations.csv
    annotations.csv   the annotation table (index `image_id`), attributes as 0/1
    meta.json         what it was built from; written last, so its presence marks a complete cache

Reading half: `load_cache`, `FaceCache`, `CachedFaces`, `split_to_device`, `to_float_images`/`to_uint8_images`.
Building half: `preprocess_image` (the one crop + resize used for the cache, user photos and counterfactual
renders), `load_face_image` and `build_cache` (worker processes, optional JPEG draft decoding, atomic writes).
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageFile, JpegImagePlugin
from torch.utils.data import Dataset
from tqdm import tqdm

from data.celeba import PARTITION_NAMES, CelebALayout, attribute_columns, find_celeba, load_celeba_annotations
from data.io import atomic_path, atomic_write_json, available_cores, file_sha256

CACHE_FORMAT_VERSION = 1
IMAGES_FILE = "images.npy"
TABLE_FILE = "annotations.csv"
META_FILE = "meta.json"
SPLITS = PARTITION_NAMES


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


def load_cache(directory: str | Path, mmap: bool = True) -> FaceCache:
    """Open a cache folder written by `build_cache`; raises if it is missing or incomplete."""
    directory = Path(directory)
    meta_path = directory / META_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(
            f"no complete image cache in {directory} ({META_FILE} missing); "
            "build one with `python -m experiments.prepare_data`"
        )
    meta = json.loads(meta_path.read_text())
    if meta.get("format_version") != CACHE_FORMAT_VERSION:
        raise ValueError(
            f"{meta_path}: cache format version {meta.get('format_version')!r}, "
            f"expected {CACHE_FORMAT_VERSION}; rebuild the cache"
        )
    images = np.load(directory / IMAGES_FILE, mmap_mode="r" if mmap else None)
    table = pd.read_csv(directory / TABLE_FILE, index_col="image_id")
    for name in meta["attributes"]:
        table[name] = table[name].astype(bool)
    if images.ndim != 4 or images.shape[1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"{directory / IMAGES_FILE}: expected (N, 3, S, S) uint8, got {images.shape} {images.dtype}")
    if len(table) != images.shape[0]:
        raise ValueError(
            f"{directory}: {TABLE_FILE} has {len(table)} rows but {IMAGES_FILE} has {images.shape[0]} images"
        )
    return FaceCache(directory=directory, images=images, table=table, meta=meta)


def to_float_images(images: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 in [0, 255] -> float in [-1, 1], on whatever device `images` is on."""
    return images.to(dtype).div_(127.5).sub_(1.0)


def to_uint8_images(images: torch.Tensor) -> torch.Tensor:
    """float in [-1, 1] -> uint8 in [0, 255] (clamped, rounded)."""
    return images.detach().float().add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8)


class CachedFaces(Dataset):
    """One split of a cache as (image float (3, S, S) in [-1, 1], labels float (K,)) pairs."""

    def __init__(self, cache: FaceCache, split: str | None = "train"):
        self.cache = cache
        self.rows = cache.split_indices(split)
        self.labels = torch.from_numpy(cache.labels(split).astype(np.float32))  # (n, K)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = torch.from_numpy(np.array(self.cache.images[self.rows[i]]))  # (3, S, S) uint8
        return to_float_images(image), self.labels[i]


def fits_on_gpu(nbytes: int, device: torch.device, fraction: float = 0.5) -> bool:
    """Would `nbytes` take at most `fraction` of the GPU's free memory (the rest stays for activations)?"""
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes <= fraction * free


def split_to_device(
    cache: FaceCache, split: str | None, device: torch.device | str, subset: np.ndarray | slice | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """A split (or `subset`, positions within it, in that order) as uint8 images (n, 3, S, S) and bool labels (n, K)
    on `device`; only those rows are read from the memory map.

    uint8 is 4x smaller than float32: CelebA at 64x64 is 2.5 GB resident, decoded per batch.
    """
    rows, labels = cache.split_indices(split), cache.labels(split)
    if subset is not None:
        rows, labels = rows[subset], labels[subset]
    images = torch.from_numpy(np.ascontiguousarray(cache.images[rows])).to(device)
    return images, torch.from_numpy(np.ascontiguousarray(labels)).to(device)


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


def load_face_image(
    path: str | Path, size: int = 64, crop_fraction: float = DEFAULT_CROP_FRACTION, *, draft: bool = False
) -> np.ndarray:
    """Open one image file and `preprocess_image` it; errors name the file."""
    try:
        with Image.open(path) as img:
            return preprocess_image(img, size, crop_fraction, draft=draft)
    except FileNotFoundError:
        raise FileNotFoundError(f"image {path} does not exist") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ValueError(f"cannot decode image {path}: {type(e).__name__}: {e}") from None


def _init_worker() -> None:
    # Our own worker processes only: make truncated JPEGs raise instead of decoding silently as grey.
    ImageFile.LOAD_TRUNCATED_IMAGES = False


def _decode_chunk(task: tuple[int, list[str], int, float, bool]) -> tuple[int, np.ndarray, list[tuple[int, str]]]:
    """Worker: decode a run of images; returns (first row, (k, 3, S, S) uint8, [(offset, error)])."""
    start, paths, size, crop_fraction, draft = task
    out = np.zeros((len(paths), 3, size, size), dtype=np.uint8)
    failures = []
    for k, path in enumerate(paths):
        try:
            out[k] = load_face_image(path, size, crop_fraction, draft=draft)
        except (FileNotFoundError, ValueError) as e:
            failures.append((k, str(e)))
    return start, out, failures


def _decode_into(
    images: np.ndarray, paths: list[str], size: int, crop_fraction: float, draft: bool, workers: int, progress: bool
) -> dict[int, str]:
    """Fill `images` (N, 3, S, S) row by row from `paths` with a process pool; returns {row: error}."""
    n = len(paths)
    chunk = max(1, min(_CHUNK_IMAGES, -(-n // (4 * workers))))
    tasks = [(start, paths[start : start + chunk], size, crop_fraction, draft) for start in range(0, n, chunk)]
    failures: dict[int, str] = {}
    with multiprocessing.get_context().Pool(min(workers, len(tasks)), initializer=_init_worker) as pool, tqdm(
        total=n, unit="img", desc=f"cache {size}px", disable=not progress
    ) as bar:
        for start, block, errors in pool.imap_unordered(_decode_chunk, tasks):
            images[start : start + len(block)] = block
            failures.update({start + k: message for k, message in errors})
            bar.update(len(block))
    return failures


def _matching_meta(out_dir: Path, wanted: dict) -> dict | None:
    """The meta of a complete cache in `out_dir` built with exactly `wanted`, else None."""
    try:
        meta = json.loads((out_dir / META_FILE).read_text())
    except (OSError, ValueError):
        return None
    if meta.get("format_version") != CACHE_FORMAT_VERSION or any(meta.get(k) != v for k, v in wanted.items()):
        return None
    if not (out_dir / IMAGES_FILE).is_file() or not (out_dir / TABLE_FILE).is_file():
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

    An existing cache whose meta matches (source root, layout, size, crop, file count, draft, skip_bad, and the
    annotation files' SHA-256) is reused
    unless `force`. A corrupt, truncated or missing image is an error naming it; with `skip_bad` it is left out
    and recorded in meta["skipped"]. meta.json is removed first and written last, so an interrupted build never
    looks complete.
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
    workers = max(1, workers or available_cores())
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / META_FILE).unlink(missing_ok=True)  # from here until the end the folder must not look complete
    started = time.perf_counter()
    paths = [str(layout.image_dir / name) for name in table.index]
    n = len(paths)
    with atomic_path(out_dir / IMAGES_FILE) as images_tmp:
        images = np.lib.format.open_memmap(images_tmp, mode="w+", dtype=np.uint8, shape=(n, 3, size, size))
        failures = _decode_into(images, paths, size, crop_fraction, draft, workers, progress)
        if failures and not skip_bad:
            row, message = min(failures.items())
            more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
            raise ValueError(f"{message}{more}; pass skip_bad=True (--skip-bad) to leave bad images out of the cache")
        if failures:  # rare: copy the good rows into a file of the right length, which replaces the first
            keep = np.setdiff1d(np.arange(n), sorted(failures))  # (n_kept,)
            with atomic_path(images_tmp) as compact_tmp:
                compact = np.lib.format.open_memmap(
                    compact_tmp, mode="w+", dtype=np.uint8, shape=(len(keep), 3, size, size)
                )
                for a in range(0, len(keep), 4096):
                    compact[a : a + 4096] = images[keep[a : a + 4096]]
                compact.flush()
                del compact
        else:
            images.flush()
        del images
    skipped = [table.index[row] for row in sorted(failures)]
    written = table.drop(index=skipped)
    attributes = attribute_columns(written)
    written[attributes] = written[attributes].astype(np.int8)  # 0/1 in the CSV
    with atomic_path(out_dir / TABLE_FILE) as table_tmp:
        written.to_csv(table_tmp, index_label="image_id")
    meta = {
        "format_version": CACHE_FORMAT_VERSION,
        "attributes": attributes,
        **wanted,
        "image_dir": str(layout.image_dir.expanduser().resolve()),
        "resample": "bicubic",
        "num_images": len(written),
        "skipped": skipped,
        "skipped_errors": [failures[row] for row in sorted(failures)],
        "build_seconds": round(time.perf_counter() - started, 3),
        "built_at": time.time(),
    }
    atomic_write_json(meta, out_dir / META_FILE)
    return out_dir
