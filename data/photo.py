"""User photos -> faces preprocessed exactly like the cache: transparency flattened, optionally eye-aligned.

An aligned CelebA image (178x218) needs nothing; another photo can be aligned first by giving its two eye centres
(x1,y1,x2,y2 in the photo's pixels): a similarity transform puts them where CelebA's aligned images have them.
"""
from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from data.cache import preprocess_image

CELEBA_ALIGNED_SIZE = (178, 218)  # (width, height) of img_align_celeba
CELEBA_EYES = ((69.0, 111.0), (108.0, 111.0))  # typical eye centres (viewer's left, right) in aligned CelebA
# Mid grey (128, 128, 128): what transparent areas of a photo, and the area an alignment pulls in from outside the
# photo, become. Black would read as dark hair or a dark background to the encoder; mid grey is the least of either.
NEUTRAL_BACKGROUND = (128, 128, 128)
MIN_EYE_DISTANCE = 4.0  # pixels: closer eyes would blow a few pixels up to the whole face


def parse_eyes(text: str) -> tuple[float, float, float, float]:
    """"x1,y1,x2,y2" -> four floats, the two eye centres in pixels; negative numbers are accepted.

    On a command line give a value that starts with a minus as `--eyes=-3,40,60,41`: argparse takes a separate
    argument starting with "-" for an option. Raises ValueError naming `text` unless it is four finite numbers.
    """
    parts = [p.strip() for p in str(text).split(",")]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise ValueError(f"eyes {text!r}: expected four numbers x1,y1,x2,y2 (the two eye centres in the photo's "
                         "pixels), e.g. --eyes=212,240,301,236")
    return values  # type: ignore[return-value]


def check_eyes(eyes: Sequence[float], size: tuple[int, int]) -> tuple[float, float, float, float]:
    """`eyes` as four floats, if both centres lie inside an image of `size` (width, height) and are apart enough."""
    if len(eyes) != 4 or not all(isinstance(v, (int, float, np.integer, np.floating)) for v in eyes):
        raise ValueError(f"eyes {eyes!r}: expected four numbers x1,y1,x2,y2")
    x1, y1, x2, y2 = (float(v) for v in eyes)
    shown = f"{x1:g},{y1:g},{x2:g},{y2:g}"
    width, height = size
    for which, (x, y) in (("first", (x1, y1)), ("second", (x2, y2))):
        if not (0 <= x <= width - 1 and 0 <= y <= height - 1):  # also catches NaN
            raise ValueError(f"eyes {shown}: the {which} eye ({x:g},{y:g}) is outside the {width}x{height} image; "
                             f"expected eye centres with x in 0..{width - 1} and y in 0..{height - 1} (pixels, "
                             "from the top-left corner)")
    distance = math.hypot(x2 - x1, y2 - y1)
    if distance < MIN_EYE_DISTANCE:
        same = " (the same point)" if distance < 1 else ""
        raise ValueError(f"eyes {shown}: the eye centres are {distance:.1f} pixels apart{same}; expected at least "
                         f"{MIN_EYE_DISTANCE:g}: x1,y1 is one eye's centre and x2,y2 the other's")
    return x1, y1, x2, y2


def flatten_transparency(img: Image.Image) -> tuple[Image.Image, bool]:
    """`img` as RGB, with any transparent areas composited onto NEUTRAL_BACKGROUND -> (image, had transparency)."""
    has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
    if has_alpha:
        rgba = img.convert("RGBA")  # also resolves a palette's or a single colour's transparency
        if rgba.getchannel("A").getextrema()[0] < 255:  # an alpha channel that is opaque everywhere changes nothing
            background = Image.new("RGBA", rgba.size, (*NEUTRAL_BACKGROUND, 255))
            return Image.alpha_composite(background, rgba).convert("RGB"), True
        img = rgba
    return (img if img.mode == "RGB" else img.convert("RGB")), False


def align_face(img: Image.Image, eyes: Sequence[float]) -> Image.Image:
    """Similarity-transform `img` so its eye centres land on CELEBA_EYES in a 178x218 image, like img_align_celeba.

    eyes: x1,y1,x2,y2 inside `img` (either eye first). Areas the transform pulls in from outside the photo, and
    transparent ones, become NEUTRAL_BACKGROUND.
    """
    x1, y1, x2, y2 = check_eyes(eyes, img.size)
    img = flatten_transparency(img)[0]
    p1, p2 = complex(x1, y1), complex(x2, y2)
    if p2.real < p1.real:  # the viewer's left eye first
        p1, p2 = p2, p1
    q1, q2 = complex(*CELEBA_EYES[0]), complex(*CELEBA_EYES[1])
    # PIL's AFFINE maps output pixels to input pixels: input = a * output + b, as complex numbers
    a = (p2 - p1) / (q2 - q1)
    b = p1 - a * q1
    coeffs = (a.real, -a.imag, b.real, a.imag, a.real, b.imag)
    return img.transform(CELEBA_ALIGNED_SIZE, Image.Transform.AFFINE, coeffs, resample=Image.Resampling.BICUBIC,
                         fillcolor=NEUTRAL_BACKGROUND)


def load_face_photo(path: str | os.PathLike, size: int, eyes: Sequence[float] | None = None) -> np.ndarray:
    """A face photo -> (3, S, S) uint8, preprocessed exactly like the cache (aligned first when `eyes` are given).

    Transparent areas are composited onto NEUTRAL_BACKGROUND, with a warning naming the file; so is a photo that is
    neither aligned by `eyes` nor the size of an aligned CelebA image (its centre crop is used as it is).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no image file {path}: expected a JPEG or PNG photo of a face")
    try:
        with Image.open(path) as opened:
            opened.load()  # Image.open only reads the header: decode now, so a damaged file fails here
            img = ImageOps.exif_transpose(opened)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ValueError(f"{path} is not a readable image ({type(e).__name__}: {e}); expected a JPEG or PNG "
                         "photo of a face") from None
    img, had_transparency = flatten_transparency(img)
    if had_transparency:
        warnings.warn(f"{path} has transparent areas: they are filled with the neutral grey {NEUTRAL_BACKGROUND} "
                      "before encoding (the model was trained on opaque photos)", stacklevel=2)
    if eyes is not None:
        img = align_face(img, eyes)
    elif img.size != CELEBA_ALIGNED_SIZE:
        warnings.warn(f"{path} is {img.size[0]}x{img.size[1]}, not an aligned CelebA image "
                      f"({CELEBA_ALIGNED_SIZE[0]}x{CELEBA_ALIGNED_SIZE[1]}): its centre crop is used as it is; give "
                      "the eye centres (x1,y1,x2,y2) to align it", stacklevel=2)
    return preprocess_image(img, size)
