"""The procedural faces on disk, in torchvision's CelebA layout: `root/celeba/` with CelebA's file formats plus
`synthetic_factors.csv` (every image's generating factors) and `synthetic_meta.json` (written last: completion).

The annotation files follow CelebA's formats, with two differences in meaning. `list_landmarks_align_celeba.txt`
holds the exact positions of what was drawn (eye centres, nose tip, mouth corners; "lefteye" is the eye on the
image's left), rounded to integers. `list_bbox_celeba.txt` cannot refer to in-the-wild photos as CelebA's does (there
are none): it holds the box of the head outline (skull and jaw, without hair and ears) in the aligned image, through
the pose, clipped to the image.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from data.celeba import IMAGE_FOLDER, LANDMARK_COLUMNS, PARTITION_NAMES
from data.io import atomic_path, atomic_write_json, atomic_write_text, available_cores
from data.synthetic.factors import (
    BOOL_FACTORS,
    FACTOR_COLUMNS,
    FLOAT_FACTORS,
    INT_FACTORS,
    SYNTHETIC_ATTRIBUTES,
    sample_factors,
)
from data.synthetic.render import HEIGHT, JPEG_QUALITY, WIDTH, render_chunk

GENERATOR_VERSION = 3
IMAGE_DIR = IMAGE_FOLDER
ATTR_FILE = "list_attr_celeba.txt"
PARTITION_FILE = "list_eval_partition.txt"
IDENTITY_FILE = "identity_CelebA.txt"
BBOX_FILE = "list_bbox_celeba.txt"
LANDMARKS_FILE = "list_landmarks_align_celeba.txt"
FACTORS_FILE = "synthetic_factors.csv"
META_FILE = "synthetic_meta.json"


def dataset_dir(root: str | os.PathLike) -> Path:
    """`root/celeba`, or `root` itself when it already is a generated `celeba` folder."""
    root = Path(root)
    if root.name == "celeba" and (root / IMAGE_DIR).is_dir() and not (root / "celeba").is_dir():
        return root
    return root / "celeba"


def load_factors(root: str | os.PathLike) -> pd.DataFrame:
    """The generating factors of a generated dataset (index image_id), with the dtypes sample_factors gives."""
    path = dataset_dir(root) / FACTORS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: not a dataset written by generate_synthetic_celeba")
    table = pd.read_csv(path, index_col="image_id")
    missing = [c for c in FACTOR_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing} (written by an older generator? regenerate it)")
    empty = table[list(FACTOR_COLUMNS)].isna().to_numpy()  # a file cut short mid-line leaves empty cells
    if empty.any():
        row, column = np.argwhere(empty)[0]
        raise ValueError(f"{path}: no value for {FACTOR_COLUMNS[column]} at {table.index[row]} (line {row + 2}); "
                         "a truncated or damaged file: regenerate the dataset")
    for name in SYNTHETIC_ATTRIBUTES + BOOL_FACTORS:
        column = table[name]
        if column.dtype != bool:
            bad = ~column.isin([0, 1, True, False])
            if bad.any():
                raise ValueError(
                    f"{path}: column {name} has non-boolean value {column[bad].iloc[0]!r} at {column[bad].index[0]}"
                )
            table[name] = column.astype(bool)
    for name in INT_FACTORS:
        table[name] = table[name].astype(np.int64)
    for name in FLOAT_FACTORS:
        table[name] = table[name].astype(np.float64)
    return table


def _attr_text(table: pd.DataFrame) -> str:
    values = table[list(SYNTHETIC_ATTRIBUTES)].to_numpy(dtype=bool)  # (n, K)
    cells = np.where(values, " 1", "-1")
    lines = [str(len(table)), " ".join(SYNTHETIC_ATTRIBUTES) + " "]
    lines += [f"{name} {' '.join(row)}" for name, row in zip(table.index, cells)]
    return "\n".join(lines) + "\n"


def _partition_text(table: pd.DataFrame) -> str:
    codes = table["partition"].map({s: i for i, s in enumerate(PARTITION_NAMES)}).to_numpy()
    return "".join(f"{name} {code}\n" for name, code in zip(table.index, codes))


def _identity_text(table: pd.DataFrame) -> str:
    return "".join(f"{name} {ident}\n" for name, ident in zip(table.index, table["identity"].to_numpy()))


def _bbox_text(table: pd.DataFrame, boxes: np.ndarray) -> str:
    lines = [str(len(table)), "image_id x_1 y_1 width height"]  # CelebA's right-aligned columns
    lines += [f"{name} {x:>5} {y:>3} {w:>3} {h:>3}" for name, (x, y, w, h) in zip(table.index, boxes.tolist())]
    return "\n".join(lines) + "\n"


def _landmarks_text(table: pd.DataFrame, marks: np.ndarray) -> str:
    lines = [str(len(table)), " ".join(LANDMARK_COLUMNS)]
    for name, row in zip(table.index, marks.tolist()):
        lines.append(f"{name} {row[0]:>2}" + "".join(f" {v:>4}" for v in row[1:]))
    return "\n".join(lines) + "\n"


def _read_meta(folder: Path) -> dict | None:
    try:
        return json.loads((folder / META_FILE).read_text())
    except (OSError, ValueError):
        return None


def is_complete(root: str | os.PathLike, n: int, seed: int = 0) -> bool:
    """True when `root` holds a finished dataset from this generator version with this `n` and `seed`."""
    folder = dataset_dir(root)
    meta = _read_meta(folder)
    if not meta or meta.get("version") != GENERATOR_VERSION or meta.get("n") != n or meta.get("seed") != seed:
        return False
    names = (ATTR_FILE, PARTITION_FILE, IDENTITY_FILE, BBOX_FILE, LANDMARKS_FILE, FACTORS_FILE)
    files = [folder / name for name in names]
    images = folder / IMAGE_DIR
    return all(p.is_file() for p in files) and (images / f"{n:06d}.jpg").is_file() and (images / "000001.jpg").is_file()


def generate_synthetic_celeba(
    root: str | os.PathLike, n: int, seed: int = 0, workers: int | None = None, force: bool = False
) -> Path:
    """Write `n` procedural faces in torchvision's CelebA layout under `root/celeba` and return that folder.

    Reuses a complete dataset with the same `n` and `seed` unless `force`. Images are written first, then the
    annotation files, `synthetic_factors.csv`, and `synthetic_meta.json` last (its presence marks completion).
    """
    if not force and is_complete(root, n, seed):
        return dataset_dir(root)  # `root` may itself be the generated folder
    folder = Path(root) / "celeba"
    table = sample_factors(n, seed)
    image_dir = folder / IMAGE_DIR
    image_dir.mkdir(parents=True, exist_ok=True)
    (folder / META_FILE).unlink(missing_ok=True)  # an interrupted regeneration must not look complete
    boxes, marks = _write_images(table, image_dir, available_cores() if workers is None else max(1, int(workers)))
    wanted = set(table.index)
    stale = [p for p in image_dir.glob("[0-9]*.jpg") if p.name not in wanted]
    for p in stale:  # left over from an earlier, larger generation into the same folder
        p.unlink()
    atomic_write_text(_attr_text(table), folder / ATTR_FILE)
    atomic_write_text(_partition_text(table), folder / PARTITION_FILE)
    atomic_write_text(_identity_text(table), folder / IDENTITY_FILE)
    atomic_write_text(_bbox_text(table, boxes), folder / BBOX_FILE)
    atomic_write_text(_landmarks_text(table, marks), folder / LANDMARKS_FILE)
    with atomic_path(folder / FACTORS_FILE) as tmp:
        table.to_csv(tmp)
    atomic_write_json(
        {
            "generator": "latent-edit data.synthetic",
            "version": GENERATOR_VERSION,
            "n": int(n),
            "seed": int(seed),
            "attributes": list(SYNTHETIC_ATTRIBUTES),
            "image_size": [WIDTH, HEIGHT],
            "jpeg_quality": JPEG_QUALITY,
            "identities": int(table["identity"].nunique()),
        },
        folder / META_FILE,
    )
    return folder


def _write_images(table: pd.DataFrame, image_dir: Path, workers: int) -> tuple[np.ndarray, np.ndarray]:
    """Render and write every row's JPEG into `image_dir` on `workers` processes; returns the rows' (n, 4) boxes and
    (n, 10) landmarks (render_chunk's annotation_arrays, computed in the workers)."""
    rows = table.reset_index().to_dict("records")
    chunk = int(np.clip(np.ceil(len(rows) / (4 * workers)), 16, 200))  # small sets still spread over the workers
    tasks = [(str(image_dir), i, rows[i : i + chunk]) for i in range(0, len(rows), chunk)]
    boxes = np.zeros((len(rows), 4), dtype=np.int64)
    marks = np.zeros((len(rows), len(LANDMARK_COLUMNS)), dtype=np.int64)

    def collect(done: tuple[int, np.ndarray, np.ndarray]) -> None:
        start, chunk_boxes, chunk_marks = done
        boxes[start : start + len(chunk_boxes)] = chunk_boxes
        marks[start : start + len(chunk_marks)] = chunk_marks
        bar.update(len(chunk_boxes))

    with tqdm(total=len(rows), desc="synthetic faces", unit="img", leave=False) as bar:
        if workers == 1 or len(tasks) == 1:
            for task in tasks:
                collect(render_chunk(task))
        else:
            # fork: workers only use numpy and PIL, and skip re-importing the package
            method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
            with mp.get_context(method).Pool(min(workers, len(tasks))) as pool:
                for done in pool.imap_unordered(render_chunk, tasks):
                    collect(done)
    return boxes, marks
