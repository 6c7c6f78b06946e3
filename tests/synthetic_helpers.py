"""Test-side helpers for the procedural faces: the annotation arrays of a factor table, the model's view of a
render, and contact sheets (PNG grids with a CSV beside them) of generated faces and of counterfactuals."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import pandas as pd
from matplotlib.figure import Figure  # a bare Figure: no pyplot, so no global backend state is touched
from PIL import Image

from data.cache import preprocess_image
from data.io import save_figure
from data.synthetic import IMAGE_DIR, SYNTHETIC_ATTRIBUTES, counterfactual, dataset_dir, load_factors, render
from data.synthetic.geometry import annotation_arrays


def annotation_geometry(table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """What the bbox and landmark files hold for each row: (n, 4) int boxes (x_1, y_1, width, height) of the head
    outline clipped to the image, and (n, 10) int landmarks in LANDMARK_COLUMNS order, both rounded from the drawing."""
    return annotation_arrays(table.to_dict("records"))


def model_view(image: np.ndarray, size: int | None) -> np.ndarray:
    """(H, W, 3) uint8 -> what the model sees: the cache's crop + resize (or the image itself for size=None)."""
    if size is None:
        return image
    return np.transpose(preprocess_image(Image.fromarray(image), size=size), (1, 2, 0))  # (S, S, 3)


_SHORT = {
    "5_o_Clock_Shadow": "stubble", "Arched_Eyebrows": "arched", "Attractive": "attr", "Bags_Under_Eyes": "bags",
    "Bald": "bald", "Bangs": "bangs", "Big_Lips": "lips", "Big_Nose": "bignose", "Black_Hair": "black",
    "Blond_Hair": "blond", "Blurry": "blurry", "Brown_Hair": "brown", "Bushy_Eyebrows": "bushy", "Chubby": "chubby",
    "Double_Chin": "dchin", "Eyeglasses": "glasses", "Goatee": "goatee", "Gray_Hair": "gray", "Heavy_Makeup": "makeup",
    "High_Cheekbones": "cheeks", "Male": "male", "Mouth_Slightly_Open": "open", "Mustache": "mustache",
    "Narrow_Eyes": "narrow", "No_Beard": "", "Oval_Face": "oval", "Pale_Skin": "pale", "Pointy_Nose": "pointy",
    "Receding_Hairline": "receding", "Rosy_Cheeks": "rosy", "Sideburns": "sideburns", "Smiling": "smile",
    "Straight_Hair": "straight", "Wavy_Hair": "wavy", "Wearing_Earrings": "earrings", "Wearing_Hat": "hat",
    "Wearing_Lipstick": "lipstick", "Wearing_Necklace": "necklace", "Wearing_Necktie": "tie", "Young": "young",
}


def _label(row: Mapping) -> str:
    words = [_SHORT[a] for a in SYNTHETIC_ATTRIBUTES if bool(row[a]) and _SHORT[a]]
    if not bool(row["No_Beard"]):
        words.append("beard")
    lines, line = [], ""
    for w in words:
        if len(line) + len(w) > 22:
            lines.append(line)
            line = ""
        line = f"{line} {w}".strip()
    return "\n".join(lines + [line])


def _grid_figure(images: list[np.ndarray], labels: list[str], data: pd.DataFrame, path: Path, cols: int,
                 title: str) -> Path:
    """Save a grid of labelled images as `path` (PNG) with `data` beside it as CSV; returns the PNG's path."""
    rows = (len(images) + cols - 1) // cols
    h, w = images[0].shape[:2]
    fig = Figure(figsize=(cols * 1.6, rows * 1.6 * h / w + rows * 0.5))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, image, label in zip(axes.ravel(), images, labels):
        ax.imshow(image, interpolation="nearest")
        ax.set_title(label, fontsize=5.5, pad=2)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    return save_figure(fig, data, path, dpi=150)[0]


def contact_sheet(root: str | os.PathLike, path: str | os.PathLike, n: int = 32, size: int | None = None,
                  cols: int = 8) -> Path:
    """PNG grid of the first `n` generated images labelled with their positive attributes, plus a CSV beside it.

    size=None shows the 178x218 files; size=64 shows the model's view (the cache's crop and resize).
    """
    folder = dataset_dir(root)
    table = load_factors(folder).iloc[:n]
    images = [model_view(np.asarray(Image.open(folder / IMAGE_DIR / name).convert("RGB")), size)
              for name in table.index]
    labels = [f"{name}\n{_label(row)}" for name, row in table.iterrows()]
    shown = table[list(SYNTHETIC_ATTRIBUTES)].astype(int)
    shown.insert(0, "identity", table["identity"])
    title = f"synthetic CelebA ({'178x218' if size is None else f'{size}x{size}'})"
    return _grid_figure(images, labels, shown.reset_index(), Path(path), cols, title)


def counterfactual_strip(factors_row: pd.Series, path: str | os.PathLike, attributes: Iterable[str] | None = None,
                         size: int | None = None, cols: int = 8) -> Path:
    """PNG of one face and, for each attribute, the face with that attribute toggled (plus a CSV of the changes)."""
    attributes = list(SYNTHETIC_ATTRIBUTES if attributes is None else attributes)
    images = [model_view(render(factors_row), size)]
    labels = ["original"]
    records = [{"panel": 0, "attribute": "", "value": ""}]
    for k, name in enumerate(attributes, start=1):
        value = not bool(factors_row[name])
        images.append(model_view(render(counterfactual(factors_row, {name: value})), size))
        labels.append(f"{'+' if value else '-'}{name}")
        records.append({"panel": k, "attribute": name, "value": int(value)})
    title = f"counterfactuals of {getattr(factors_row, 'name', '')}"
    return _grid_figure(images, labels, pd.DataFrame(records), Path(path), cols, title)
