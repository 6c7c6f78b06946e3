"""Edit one face by attributes with a fitted run: original | reconstruction | edit, as a PNG (+ CSV).

    python -m experiments.edit_faces --run runs/001-vae --image face.jpg --set Smiling=1 Eyeglasses=0
    python -m experiments.edit_faces --run runs/001-vae --index 000123.jpg --set Blond_Hair=1 --mode target
    python -m experiments.edit_faces --image photo.jpg --eyes=212,240,301,236 --set Smiling=1

Any JPEG/PNG is preprocessed like the training images; another photo than an aligned CelebA one is aligned from its
two eye centres (--eyes=x1,y1,x2,y2; the `=` form also takes negative numbers). The output's name carries the image,
the changes, the direction kind, the mode and the strength: <run>/edits/edit-IMAGE-CHANGES-METHOD-MODE-xSTRENGTH.png.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from attributes.artifact import METHODS
from data.cache import to_float_images, to_uint8_images
from data.io import save_figure
from data.photo import load_face_photo, parse_eyes
from pipeline.cli import parse_config, run_folder_field, run_script
from pipeline.distributed import pick_device
from pipeline.run import Run

TRUE, FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


@dataclass
class EditConfig:
    """Which face, which changes, with which directions."""

    run: str | None = run_folder_field()
    image: str | None = field(default=None, metadata={"help": "a JPEG/PNG face"})
    index: str | None = field(default=None, metadata={"help": "or a cache image: id (000123.jpg) or row number"})
    set: tuple[str, ...] = field(default=(), metadata={"help": "NAME=0|1 ..., the attribute values to set"})
    eyes: str | None = field(default=None, metadata={"help": "x1,y1,x2,y2 eye centres in --image, to align it"})
    method: str = field(default="probe", metadata={"choices": METHODS})
    mode: str = field(default="offset", metadata={"choices": ("offset", "target")})
    strength: float = 1.0
    out: str | None = field(default=None, metadata={"help": "PNG path; None = <run>/edits/edit-...png"})
    device: str = "auto"


def parse_changes(items: tuple[str, ...]) -> dict[str, int]:
    """("Smiling=1", "Eyeglasses=0") -> {"Smiling": 1, "Eyeglasses": 0}; anything else raises ValueError."""
    changes: dict[str, int] = {}
    for item in items:
        name, sep, value = (part.strip() for part in item.partition("="))
        if not sep or not name or value.lower() not in TRUE | FALSE:
            raise ValueError(f"--set {item!r}: expected NAME=0 or NAME=1, e.g. Smiling=1")
        if name in changes:
            raise ValueError(f"--set {name} given twice")
        changes[name] = int(value.lower() in TRUE)
    return changes


def _face(run: Run, config: EditConfig) -> tuple[torch.Tensor, dict[str, int] | None, str]:
    """(uint8 (3, S, S), its labels when it is a cache image, a name for the output file)."""
    if config.image is not None:
        eyes = parse_eyes(config.eyes) if config.eyes else None
        return torch.from_numpy(load_face_photo(config.image, run.cache.size, eyes)), None, Path(config.image).stem
    cache, ids = run.cache, list(run.cache.table.index)
    if config.index in run.cache.table.index:
        row = ids.index(config.index)
    elif re.fullmatch(r"\d+", config.index) and int(config.index) < len(cache):
        row = int(config.index)
    else:
        raise KeyError(f"--index {config.index!r}: no such image id or row in {cache.directory} "
                       f"(ids look like {ids[0]!r}, rows 0..{len(cache) - 1})")
    labels = {name: int(cache.table[name].iloc[row]) for name in cache.attribute_names}
    return torch.from_numpy(cache.images[row].copy()), labels, Path(ids[row]).stem


def main(config: EditConfig) -> Path:
    """Edit the face and write the comparison PNG and CSV; returns the PNG path."""
    import matplotlib.pyplot as plt

    if (config.image is None) == (config.index is None):
        raise ValueError("give exactly one of --image FILE or --index ID")
    changes = parse_changes(config.set)
    if not changes:
        raise ValueError("nothing to edit: give --set NAME=0|1 ...")
    run, device = Run.open(config.run), pick_device(config.device)
    dirs = run.directions(config.method)  # refused when fitted on another checkpoint or cache
    dirs.resolve_changes(changes)  # unknown names / bad values fail before any model work
    image, labels, name = _face(run, config)
    model = run.model(device)
    x = to_float_images(image[None]).to(device)  # (1, 3, S, S)
    with torch.inference_mode():
        mu = model.encode(x)[0].float()
        predicted = dirs.predict(mu)[0].int().tolist()
        source = {n: (labels[n] if labels and n in labels else predicted[j]) for j, n in enumerate(dirs.names)}
        already = [f"{n}={v}" for n, v in changes.items() if source[n] == v]
        if already:
            print(f"note: the source already has {', '.join(already)}; edits move only attributes that differ")
        edited_mu = dirs.edit(mu, changes, source=source, strength=config.strength, mode=config.mode)
        panels = [x, model.decode(mu), model.decode(edited_mu)]
    change_text = ", ".join(f"{k}={v}" for k, v in changes.items())
    titles = ["original", "reconstruction", f"{change_text}\n({dirs.method}, {config.mode}, x{config.strength:g})"]
    fig, axes = plt.subplots(1, 3, figsize=(7.5, 3.0))
    for ax, panel, title in zip(axes, panels, titles):
        ax.imshow(to_uint8_images(panel[0].cpu()).permute(1, 2, 0).numpy())
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    made_of = f"{name}-{'-'.join(f'{k}={v}' for k, v in changes.items())}-{dirs.method}-{config.mode}-x{config.strength:g}"
    stem = Path(config.out).with_suffix("") if config.out else run.edits_dir / f"edit-{re.sub(r'[^A-Za-z0-9_.=-]+', '_', made_of)}"
    table = pd.DataFrame({
        "attribute": dirs.names, "source": [source[n] for n in dirs.names],
        "target": [changes.get(n, source[n]) for n in dirs.names],
        "signed_distance_before": dirs.signed_distance(mu.cpu())[0].tolist(),
        "signed_distance_after": dirs.signed_distance(edited_mu.cpu())[0].tolist(),
    })
    png = save_figure(fig, table, stem)[0]
    plt.close(fig)
    print(f"wrote {png}")
    return png


if __name__ == "__main__":
    run_script("edit_faces", main, parse_config(EditConfig, description=__doc__))
