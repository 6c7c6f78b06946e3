"""Edit one face by attributes with a fitted run: original | reconstruction | edit, as a PNG (+ CSV).

    python -m experiments.edit_faces --run runs/001-vae --image face.jpg --set Smiling=1 Eyeglasses=0
    python -m experiments.edit_faces --run runs/001-vae --index 000123.jpg --set Blond_Hair=1 --mode target
    python -m experiments.edit_faces --image photo.jpg --eyes 212,240,301,236 --set Smiling=1

Any JPEG/PNG is preprocessed like the training images (data.cache.preprocess_image: centre square crop, resize).
An aligned CelebA image (178x218) needs nothing; another photo can be aligned first by giving its two eye centres
(--eyes x1,y1,x2,y2): a similarity transform puts them where CelebA's aligned images have them.
Writes <run>/edits/edit-<image>-<changes>.png and .csv (source, target and signed distances per attribute).
"""
from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from attributes import AttributeDirections
from attributes.artifact import METHODS
from data.cache import load_cache, to_float_images, to_uint8_images
from data.io import atomic_path, file_sha256
from experiments.common import CHECKPOINT_FILE, latest_run_dir, pick_device, run_cache_dir
from models.vae import ConvVAE

CELEBA_ALIGNED_SIZE = (178, 218)  # (width, height) of img_align_celeba
CELEBA_EYES = ((69.0, 111.0), (108.0, 111.0))  # typical eye centres (viewer's left, right) in aligned CelebA
TRUE, FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


@dataclass
class EditConfig:
    """Settings of one edit_faces call."""

    run: str = ""  # run folder with checkpoint.pt and directions-*.pt; "" = latest
    image: str | None = None  # a JPEG/PNG file
    index: str | None = None  # or a dataset image: an image id (000123.jpg) or a row number
    changes: dict[str, int] = field(default_factory=dict)  # attribute -> 0/1
    eyes: list[float] | None = None  # x1, y1, x2, y2 of the eye centres in `image`, to align it
    method: str = "probe"  # which directions-<method>.pt
    mode: str = "offset"  # "offset" | "target" (see attributes.edit)
    strength: float = 1.0
    out: str | None = None  # PNG path; default <run>/edits/...
    device: str = "auto"


def parse_changes(items: list[str]) -> dict[str, int]:
    """["Smiling=1", "Eyeglasses=0"] -> {"Smiling": 1, "Eyeglasses": 0}; anything else raises ValueError."""
    changes: dict[str, int] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ValueError(f"--set {item!r}: expected NAME=0 or NAME=1, e.g. Smiling=1")
        v = value.strip().lower()
        if v not in TRUE | FALSE:
            raise ValueError(f"--set {item!r}: the value must be 0 or 1 (or true/false), got {value!r}")
        if name in changes:
            raise ValueError(f"--set {name} given twice")
        changes[name] = int(v in TRUE)
    return changes


def align_face(img: Image.Image, eyes: tuple[float, float, float, float] | list[float]) -> Image.Image:
    """Similarity-transform `img` so its eye centres land on CELEBA_EYES in a 178x218 image, like img_align_celeba."""
    if len(eyes) != 4:
        raise ValueError(f"eyes must be x1,y1,x2,y2, got {eyes}")
    p1, p2 = complex(eyes[0], eyes[1]), complex(eyes[2], eyes[3])
    if abs(p2 - p1) < 1:
        raise ValueError(f"eyes {eyes}: both eye centres are at the same point")
    if p2.real < p1.real:  # the viewer's left eye first
        p1, p2 = p2, p1
    q1, q2 = complex(*CELEBA_EYES[0]), complex(*CELEBA_EYES[1])
    # PIL's AFFINE maps output pixels to input pixels: input = a * output + b, as complex numbers
    a = (p2 - p1) / (q2 - q1)
    b = p1 - a * q1
    coeffs = (a.real, -a.imag, b.real, a.imag, a.real, b.imag)
    return img.transform(CELEBA_ALIGNED_SIZE, Image.Transform.AFFINE, coeffs, resample=Image.Resampling.BICUBIC)


def load_face(path: str | Path, size: int, eyes: list[float] | None = None) -> np.ndarray:
    """A face photo -> (3, S, S) uint8, preprocessed exactly like the cache (aligned first when `eyes` are given)."""
    from data.cache import preprocess_image

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no image file {path}")
    try:
        with Image.open(path) as opened:
            img = ImageOps.exif_transpose(opened).convert("RGB")
    except OSError as e:
        raise ValueError(f"{path}: not a readable image ({e})") from None
    if eyes is not None:
        img = align_face(img, eyes)
    elif img.size != CELEBA_ALIGNED_SIZE:
        print(f"note: {path} is {img.size[0]}x{img.size[1]}, not an aligned CelebA image; "
              "pass --eyes x1,y1,x2,y2 to align it, else the centre crop is used as is")
    return preprocess_image(img, size)


def dataset_face(cache, index: str) -> tuple[np.ndarray, dict[str, int], str]:
    """(3, S, S) uint8, its labels and its id for an image id or row number of the cache."""
    ids = list(cache.table.index)
    if re.fullmatch(r"\d+", index) and index not in cache.table.index:
        row = int(index)
        if not 0 <= row < len(cache):
            raise ValueError(f"--index {row}: the cache has rows 0..{len(cache) - 1}")
    elif index in cache.table.index:
        row = ids.index(index)
    else:
        raise KeyError(f"--index {index!r}: no such image id in {cache.directory} (ids look like {ids[0]!r})")
    labels = {name: int(cache.table[name].iloc[row]) for name in cache.attribute_names}
    return np.array(cache.images[row]), labels, str(ids[row])


def main(config: EditConfig) -> Path:
    """Edit the face and write the comparison PNG and CSV; returns the PNG path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    if (config.image is None) == (config.index is None):
        raise ValueError("give exactly one of --image FILE or --index ID")
    if not config.changes:
        raise ValueError("nothing to edit: give --set NAME=0|1 ...")
    run_dir = Path(config.run) if config.run else latest_run_dir()
    dirs = AttributeDirections.load(run_dir / f"directions-{config.method}.pt")
    dirs.resolve_changes(config.changes)  # unknown names / bad values fail before any model work
    checkpoint = run_dir / CHECKPOINT_FILE
    if dirs.checkpoint_sha256 and dirs.checkpoint_sha256 != file_sha256(checkpoint):
        print(f"warning: {checkpoint} changed since the directions were fitted; refit with experiments.fit_directions")
    device = pick_device(config.device)
    model = ConvVAE.from_checkpoint(checkpoint, map_location=device)
    size = model.config.image_size
    source = None
    if config.index is not None:
        image, labels, name = dataset_face(load_cache(run_cache_dir(run_dir)), config.index)
        source = {n: labels[n] for n in dirs.names if n in labels}  # true labels; the rest predicted
    else:
        image, name = load_face(config.image, size, config.eyes), Path(config.image).stem
    x = to_float_images(torch.from_numpy(image)[None]).to(device)  # (1, 3, S, S)
    with torch.inference_mode():
        mu, _ = model.encode(x)
        mu = mu.float()
        predicted = dirs.predict(mu.cpu())[0].int().tolist()
        src = {n: (source[n] if source and n in source else predicted[j]) for j, n in enumerate(dirs.names)}
        already = [f"{n}={v}" for n, v in config.changes.items() if src[n] == v]
        if already:
            print(f"note: the source already has {', '.join(already)}; edits move only attributes that differ")
        edited_mu = dirs.edit(mu, config.changes, source=src, strength=config.strength, mode=config.mode)
        recon, edited = model.decode(mu), model.decode(edited_mu)
    panels = [x, recon, edited]
    change_text = ", ".join(f"{k}={v}" for k, v in config.changes.items())
    titles = ["original", "reconstruction", f"{change_text}\n({dirs.method}, {config.mode}, x{config.strength:g})"]
    fig, axes = plt.subplots(1, 3, figsize=(7.5, 3.0))
    for ax, panel, title in zip(axes, panels, titles):
        ax.imshow(to_uint8_images(panel[0].cpu()).permute(1, 2, 0).numpy())
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    slug = re.sub(r"[^A-Za-z0-9_.=-]+", "_", f"{Path(name).stem}-{'-'.join(f'{k}={v}' for k, v in config.changes.items())}")
    out = Path(config.out) if config.out else run_dir / "edits" / f"edit-{slug}.png"
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    before, after = dirs.signed_distance(mu.cpu())[0], dirs.signed_distance(edited_mu.cpu())[0]
    table = pd.DataFrame({
        "attribute": dirs.names, "source": [src[n] for n in dirs.names],
        "target": [config.changes.get(n, src[n]) for n in dirs.names],
        "signed_distance_before": before.tolist(), "signed_distance_after": after.tolist(),
    })
    with atomic_path(out.with_suffix(".csv")) as tmp:
        table.to_csv(tmp, index=False)
    print(f"wrote {out}")
    return out


def parse_args(argv: list[str] | None = None) -> EditConfig:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default="", help="run folder (default: the latest)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--image", help="a JPEG/PNG face")
    source.add_argument("--index", help="a dataset image id (000123.jpg) or row number")
    p.add_argument("--set", nargs="+", required=True, metavar="NAME=0|1", help="attribute values to set")
    p.add_argument("--eyes", help="x1,y1,x2,y2 eye centres in --image, to align it like CelebA")
    p.add_argument("--method", default="probe", choices=METHODS)
    p.add_argument("--mode", default="offset", choices=["offset", "target"])
    p.add_argument("--strength", type=float, default=1.0)
    p.add_argument("--out", default=None)
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    try:
        changes = parse_changes(args.set)
        eyes = None if args.eyes is None else [float(v) for v in args.eyes.split(",")]
    except ValueError as e:
        p.error(str(e) if "--set" in str(e) else f"--eyes {args.eyes!r}: expected four numbers x1,y1,x2,y2")
    if eyes is not None and len(eyes) != 4:
        p.error(f"--eyes {args.eyes!r}: expected four numbers x1,y1,x2,y2")
    return EditConfig(run=args.run, image=args.image, index=args.index, changes=changes, eyes=eyes,
                      method=args.method, mode=args.mode, strength=args.strength, out=args.out, device=args.device)


if __name__ == "__main__":
    try:
        main(parse_args())
    except (KeyError, ValueError, FileNotFoundError) as e:
        sys.exit(f"edit_faces: {e}")
