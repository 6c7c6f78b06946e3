"""Writers of tiny CelebA copies in the three on-disk layouts, with the quirks of the real files.

Quirks reproduced in the text layouts: a count line, a header with a trailing space, right-aligned 2-character
`-1`/` 1` fields (so runs of spaces between values), right-aligned landmark columns and CRLF line endings.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from data.celeba import LANDMARK_COLUMNS, PARTITION_NAMES

FIXTURE_ATTRIBUTES = ("Bangs", "Eyeglasses", "Male", "Smiling", "Young")
IMAGE_SIZE = (178, 218)  # (width, height) of CelebA's aligned images
# Distinct solid colours 100 levels apart per channel, so JPEG noise never confuses two of them.
PALETTE = [c for c in itertools.product((30, 130, 230), repeat=3)]


@dataclass
class CelebAFixture:
    """A written fixture: the root to pass to the reader, and the values written (the expected frame)."""

    root: Path  # what a user would pass as celeba_root
    base: Path  # the folder that holds the layout's files
    image_dir: Path
    expected: pd.DataFrame  # index image_id; bool attributes, partition str, identity/landmarks int
    attributes: tuple[str, ...]


def expected_table(n: int, attributes=FIXTURE_ATTRIBUTES, seed: int = 0, identity=True, landmarks=True) -> pd.DataFrame:
    """Random annotation values for `n` images, as the reader should return them."""
    rng = np.random.default_rng(seed)
    columns: dict[str, np.ndarray] = {}
    values = rng.random((n, len(attributes))) < 0.5
    values[0] = True  # both signs present in every column
    values[1] = False
    for j, name in enumerate(attributes):
        columns[name] = values[:, j]
    columns["partition"] = np.array([PARTITION_NAMES[i % 3] for i in range(n)], dtype=object)
    if identity:
        columns["identity"] = rng.integers(1, 10178, size=n)
    if landmarks:
        for name in LANDMARK_COLUMNS:
            # three-digit values make the right-aligned columns ragged, as in the real file
            columns[name] = rng.integers(5 if name.endswith("_x") else 95, 170, size=n)
    table = pd.DataFrame(columns, index=pd.Index([f"{i + 1:06d}.jpg" for i in range(n)], name="image_id"))
    table["partition"] = table["partition"].astype(str)
    return table


def _text_file(path: Path, lines: list[str], newline: str = "\r\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        f.write("".join(line + newline for line in lines))
    return path


def attr_lines(table: pd.DataFrame, attributes) -> list[str]:
    """list_attr_celeba.txt: count line, header with trailing space, `name -1  1 ...` rows."""
    values = np.where(table[list(attributes)].to_numpy(), 1, -1)
    rows = [f"{name} " + " ".join(f"{v:2d}" for v in row) for name, row in zip(table.index, values)]
    return [str(len(table)), " ".join(attributes) + " ", *rows]


def landmark_lines(table: pd.DataFrame) -> list[str]:
    values = table[list(LANDMARK_COLUMNS)].to_numpy()
    rows = [f"{name}" + "".join(f"{v:5d}" for v in row) for name, row in zip(table.index, values)]
    return [str(len(table)), " ".join(LANDMARK_COLUMNS), *rows]


def partition_lines(table: pd.DataFrame) -> list[str]:
    return [f"{name} {PARTITION_NAMES.index(p)}" for name, p in zip(table.index, table["partition"])]


def identity_lines(table: pd.DataFrame) -> list[str]:
    return [f"{name} {v}" for name, v in zip(table.index, table["identity"])]


def write_images(image_dir: Path, names, pattern: str = "solid", size=IMAGE_SIZE, quality: int = 95) -> list[Path]:
    """Real JPEGs: image i is PALETTE[i] ("solid") or a smooth, distinct colour pattern ("gradient")."""
    image_dir.mkdir(parents=True, exist_ok=True)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    paths = []
    for i, name in enumerate(names):
        colour = np.array(PALETTE[i % len(PALETTE)], dtype=np.float32)
        if pattern == "solid":
            pixels = np.broadcast_to(colour, (h, w, 3))
        else:
            phase = 0.7 * i
            wave = np.stack(
                [np.sin(xx / 9.0 + phase), np.cos(yy / 13.0 - phase), np.sin((xx + yy) / 17.0 + 2 * phase)], axis=-1
            )
            pixels = 0.5 * colour + 60.0 * wave + 0.3 * xx[..., None] + 40
        path = image_dir / name
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=quality)
        paths.append(path)
    return paths


def write_celeba(
    root: Path,
    layout: str = "torchvision",
    n: int = 9,
    attributes=FIXTURE_ATTRIBUTES,
    *,
    seed: int = 0,
    images: str | None = None,
    nested: bool = True,
    landmarks: bool = True,
    pass_inner: bool = False,
) -> CelebAFixture:
    """Write a CelebA copy under `root` in `layout` ("torchvision", "official" or "kaggle").

    `images`: None (annotations only), "solid" or "gradient". `nested`: Kaggle's doubled image folder.
    `pass_inner`: for torchvision, return the `celeba` folder itself as the root to pass.
    """
    identity = layout != "kaggle"
    table = expected_table(n, attributes, seed=seed, identity=identity, landmarks=landmarks)
    if layout == "torchvision":
        base = root / "celeba"
        _text_file(base / "list_attr_celeba.txt", attr_lines(table, attributes))
        _text_file(base / "list_eval_partition.txt", partition_lines(table))
        _text_file(base / "identity_CelebA.txt", identity_lines(table))
        if landmarks:
            _text_file(base / "list_landmarks_align_celeba.txt", landmark_lines(table))
        # the bbox file refers to the in-the-wild images; the reader must not trip over it
        _text_file(base / "list_bbox_celeba.txt", [str(n), "image_id x_1 y_1 width height "]
                   + [f"{name}    95   71  226  313" for name in table.index])  # fmt: skip
        image_dir = base / "img_align_celeba"
        given_root = base if pass_inner else root
    elif layout == "official":
        base = root
        _text_file(base / "Anno" / "list_attr_celeba.txt", attr_lines(table, attributes))
        _text_file(base / "Anno" / "identity_CelebA.txt", identity_lines(table))
        if landmarks:
            _text_file(base / "Anno" / "list_landmarks_align_celeba.txt", landmark_lines(table))
        _text_file(base / "Eval" / "list_eval_partition.txt", partition_lines(table))
        image_dir = base / "Img" / "img_align_celeba"
        given_root = root
    elif layout == "kaggle":
        base = root
        values = np.where(table[list(attributes)].to_numpy(), 1, -1)
        _text_file(
            base / "list_attr_celeba.csv",
            [",".join(["image_id", *attributes])]
            + [",".join([name, *map(str, row)]) for name, row in zip(table.index, values)],
            newline="\n",
        )
        _text_file(
            base / "list_eval_partition.csv",
            ["image_id,partition"] + [line.replace(" ", ",") for line in partition_lines(table)],
            newline="\n",
        )
        if landmarks:
            lm = table[list(LANDMARK_COLUMNS)].to_numpy()
            _text_file(
                base / "list_landmarks_align_celeba.csv",
                [",".join(["image_id", *LANDMARK_COLUMNS])]
                + [",".join([name, *map(str, row)]) for name, row in zip(table.index, lm)],
                newline="\n",
            )
        image_dir = base / "img_align_celeba" / "img_align_celeba" if nested else base / "img_align_celeba"
        given_root = root
    else:
        raise ValueError(f"unknown fixture layout {layout!r}")
    image_dir.mkdir(parents=True, exist_ok=True)
    if images is not None:
        write_images(image_dir, table.index, pattern=images)
    return CelebAFixture(root=given_root, base=base, image_dir=image_dir, expected=table, attributes=tuple(attributes))
