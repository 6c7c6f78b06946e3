"""Drawing one procedural face from its factor row, and encoding it as the generator's JPEG (numpy + PIL only).

Everything is drawn with PIL ImageDraw primitives in CelebA-aligned coordinates, every point mapped through the pose
first (Pen); the parts are drawn back to front: hair behind the head, clothes and neck, ears and head, the face's
features (face_parts), then the hair in front, a hat and what else is worn (hair, accessories). A few vectorised
numpy ops then add the lighting (a gradient over the picture and soft shading of the face away from the light) and
the seeded sensor noise, with no per-pixel Python.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from data.synthetic.accessories import draw_earrings, draw_glasses, draw_hat, draw_necklace, draw_necktie
from data.synthetic.face_parts import (
    draw_age,
    draw_bags,
    draw_brows,
    draw_double_chin,
    draw_eyes,
    draw_facial_hair,
    draw_high_cheekbones,
    draw_mouth,
    draw_nose,
    draw_rosy_cheeks,
    draw_stubble,
)
from data.synthetic.factors import FactorRow, check_factor_row
from data.synthetic.geometry import (
    HEIGHT,
    WIDTH,
    FaceGeometry,
    Pose,
    annotation_arrays,
    face_geometry,
    head_outline,
    polyline,
    pose_of,
)
from data.synthetic.hair import draw_back_hair, draw_bald, draw_front_hair, draw_sideburns, hair_code, hair_rgb
from data.synthetic.pen import RGB, Pen, contrasting, lerp_rgb, ramp_rgb, rgba, scale_rgb

JPEG_QUALITY = 90
JPEG_SUBSAMPLING = 2  # 4:2:0, like CelebA's files
SKIN_RAMP = ((238, 200, 174), (216, 166, 128), (184, 126, 88), (130, 85, 56), (86, 55, 37))
PALE_SKIN = (252, 238, 232)
BLUR_RADIUS = 2.4  # Blurry: Gaussian blur of the drawn picture, before light and sensor noise

_GRID_X, _GRID_Y = np.meshgrid(
    (np.arange(WIDTH, dtype=np.float32) - WIDTH / 2) / (WIDTH / 2),
    (np.arange(HEIGHT, dtype=np.float32) - HEIGHT / 2) / (HEIGHT / 2),
)  # (H, W) each, in [-1, 1]
_MASKS: list[Image.Image] = []  # the background's ramps, made on first use
_NOISE: list[np.ndarray] = []  # the sensor noise bank, made on first use
_NOISE_MARGIN = 96


@dataclass(frozen=True)
class FaceColours:
    """The colours one face is drawn in."""

    skin: RGB  # as drawn: with Pale_Skin and age
    own_skin: RGB  # the person's own tone: contrast rules ignore pale/age flips
    natural_hair: RGB  # the person's own hair colour (`hair_base`): brows, beard, a bald head's fringe
    hair: RGB  # the hair colour attribute's
    hair_dark: RGB
    beard: RGB


def face_colours(factors: FactorRow) -> FaceColours:
    """The FaceColours of one factor row."""
    own_skin = ramp_rgb(SKIN_RAMP, float(factors["skin_tone"]))
    shade = float(factors["hair_shade"])
    natural = hair_rgb(int(factors["hair_base"]), shade)
    code = hair_code(factors)
    hair = hair_rgb(code, shade)
    if code == 1:  # brown hair must not melt into brown skin
        hair = contrasting(hair, own_skin, 0.6)
    return FaceColours(skin=skin_rgb(factors), own_skin=own_skin, natural_hair=natural, hair=hair,
                       hair_dark=scale_rgb(hair, 0.7), beard=contrasting(scale_rgb(natural, 0.75), own_skin, 0.55))


def skin_rgb(factors: FactorRow) -> RGB:
    """The skin colour as drawn: the person's tone and warmth, lightened for Pale_Skin, greyer and darker with age."""
    skin = ramp_rgb(SKIN_RAMP, float(factors["skin_tone"]))
    warm = float(factors["skin_warm"])
    skin = (skin[0] + 8 * warm, skin[1], skin[2] - 8 * warm)
    if bool(factors["Pale_Skin"]):
        skin = lerp_rgb(skin, PALE_SKIN, 0.85)
    if not bool(factors["Young"]):  # older skin: greyer and a little darker
        grey = sum(skin) / 3
        skin = tuple((0.62 * v + 0.38 * grey) * 0.92 for v in skin)
    return scale_rgb(skin, 1.0)


def render(factors: FactorRow) -> np.ndarray:
    """Draw the face of one factor row: (218, 178, 3) uint8, identical to the pixels the generator JPEG-encoded."""
    return render_factors(check_factor_row(factors))


def render_factors(factors: FactorRow) -> np.ndarray:
    """Draw one face; (HEIGHT, WIDTH, 3) uint8, a pure function of the factor row (its columns unchecked)."""
    image = _background(factors)
    pose = pose_of(factors)
    pen = Pen(ImageDraw.Draw(image, "RGBA"), pose)
    geometry = face_geometry(factors)
    colours = face_colours(factors)
    _draw_head(pen, factors, geometry, colours)
    _draw_features(pen, factors, geometry, colours)
    _draw_hair_and_wear(pen, factors, geometry, colours)
    if bool(factors["Blurry"]):
        image = image.filter(ImageFilter.GaussianBlur(BLUR_RADIUS))
    return _light_and_noise(image, factors, geometry, pose)


def _draw_head(pen: Pen, factors: FactorRow, geometry: FaceGeometry, colours: FaceColours) -> None:
    """What lies under the face's features: the hair behind the head, clothes, neck (with a tie or a necklace),
    ears, and the head's skin."""
    cx, ey, chin = geometry.center_x, geometry.eye_y, geometry.chin_y
    skin = colours.skin
    if not bool(factors["Bald"]):
        draw_back_hair(pen, factors, geometry, colours.hair)
    cloth = (int(factors["cloth_r"]), int(factors["cloth_g"]), int(factors["cloth_b"]))
    pen.ellipse([cx - 92.0, chin + 22.0, cx + 92.0, chin + 130.0], fill=rgba(cloth))
    nw = geometry.neck_half_width
    pen.polygon([(cx - nw, chin - 25.0), (cx + nw, chin - 25.0), (cx + nw + 2.0, chin + 30.0), (cx, chin + 38.0),
                 (cx - nw - 2.0, chin + 30.0)], fill=rgba(scale_rgb(skin, 0.8)))
    if bool(factors["Wearing_Necktie"]):
        draw_necktie(pen, factors, geometry)
    if bool(factors["Wearing_Necklace"]):
        draw_necklace(pen, factors, geometry, scale_rgb(skin, 0.8))
    ear = float(factors["ear_size"])
    for s in (-1, 1):
        ex = cx + s * (geometry.face_half_width + 1.0)
        pen.ellipse([ex - 6.0 * ear, ey - 4.0, ex + 6.0 * ear, ey + 4.0 + 20.0 * ear], fill=rgba(scale_rgb(skin, 0.93)))
    xs, ys = head_outline(geometry)
    pen.polygon(polyline(xs, ys), fill=rgba(skin))


def _draw_features(pen: Pen, factors: FactorRow, geometry: FaceGeometry, colours: FaceColours) -> None:
    """The face on the head's skin: its shape's shading, age, stubble and blush, then brows, eyes, nose, mouth and
    facial hair."""
    skin = colours.skin
    if bool(factors["Double_Chin"]):
        draw_double_chin(pen, geometry, skin)
    if bool(factors["High_Cheekbones"]):
        draw_high_cheekbones(pen, geometry, skin)
    if not bool(factors["Young"]):
        draw_age(pen, factors, geometry, skin)
    if bool(factors["Bags_Under_Eyes"]):
        draw_bags(pen, geometry, skin)
    if bool(factors["5_o_Clock_Shadow"]):
        draw_stubble(pen, geometry, colours.beard)
    if bool(factors["Rosy_Cheeks"]):
        draw_rosy_cheeks(pen, geometry)
    draw_brows(pen, factors, geometry, colours.natural_hair, colours.own_skin)
    draw_eyes(pen, factors, geometry, skin)
    draw_nose(pen, factors, geometry, skin)
    draw_mouth(pen, factors, geometry, skin)
    draw_facial_hair(pen, factors, geometry, colours.beard)


def _draw_hair_and_wear(pen: Pen, factors: FactorRow, geometry: FaceGeometry, colours: FaceColours) -> None:
    """Over the face: the front hair (or a bald scalp), sideburns, then a hat, earrings and glasses."""
    if bool(factors["Bald"]):
        draw_bald(pen, geometry, colours.natural_hair, colours.skin)
    else:
        draw_front_hair(pen, factors, geometry, colours.hair, colours.hair_dark, colours.skin)
    if bool(factors["Sideburns"]):
        draw_sideburns(pen, geometry, colours.beard)
    if bool(factors["Wearing_Hat"]):
        draw_hat(pen, factors, geometry)
    if bool(factors["Wearing_Earrings"]):
        draw_earrings(pen, factors, geometry)
    if bool(factors["Eyeglasses"]):
        draw_glasses(pen, factors, geometry)


def _gradient_masks() -> list[Image.Image]:
    """Ramps 0..255 top-to-bottom, left-to-right and along both diagonals, as RGB images for Image.point."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)
    y, x = y / (HEIGHT - 1), x / (WIDTH - 1)
    masks = []
    for ramp in (y, x, (x + y) / 2, (1 - x + y) / 2):
        level = np.rint(255 * ramp).astype(np.uint8)
        masks.append(Image.fromarray(np.repeat(level[:, :, None], 3, axis=2), "RGB"))
    return masks


def _background(factors: FactorRow) -> Image.Image:
    """Two-colour linear gradient in one of four directions: a 256-entry LUT over a cached ramp."""
    if not _MASKS:
        _MASKS.extend(_gradient_masks())
    c0 = np.array([factors["bg_r0"], factors["bg_g0"], factors["bg_b0"]], dtype=np.float64)
    c1 = np.array([factors["bg_r1"], factors["bg_g1"], factors["bg_b1"]], dtype=np.float64)
    lut = np.rint(c0[:, None] + (c1 - c0)[:, None] * np.linspace(0.0, 1.0, 256)[None, :]).astype(np.int64)  # (3, 256)
    mask = _MASKS[min(3, int(float(factors["bg_angle"]) * 4))]
    return mask.point(lut.ravel().tolist())


def _noise(seed: int) -> np.ndarray:
    """Unit Gaussian noise (H, W, 3): a window of a fixed bank chosen by `seed` (cheaper than drawing fresh normals)."""
    if not _NOISE:
        bank = np.random.default_rng(20240229).standard_normal((HEIGHT + _NOISE_MARGIN, WIDTH + _NOISE_MARGIN, 3))
        _NOISE.append(bank.astype(np.float32))
    seed = int(seed)
    oy, ox = seed % _NOISE_MARGIN, (seed // _NOISE_MARGIN) % _NOISE_MARGIN
    window = _NOISE[0][oy : oy + HEIGHT, ox : ox + WIDTH]
    shift = (seed // _NOISE_MARGIN**2) % 3
    return window[:, :, [(shift + k) % 3 for k in range(3)]] if shift else window


def _face_shading(factors: FactorRow, geometry: FaceGeometry, pose: Pose) -> np.ndarray:
    """(H, W) multiplier: the side of the face away from the light a little darker, fading out beyond the face."""
    s = pose.scale
    cx, cy = pose.apply([geometry.center_x], [(geometry.skull_top + geometry.chin_y) / 2])
    rx, ry = (geometry.face_half_width + 6.0) * s, (geometry.chin_y - geometry.skull_top) / 2 * s
    px = (np.arange(WIDTH, dtype=np.float32) - float(cx[0])) / rx  # (W,)
    py = (np.arange(HEIGHT, dtype=np.float32) - float(cy[0])) / ry  # (H,)
    angle = float(factors["light_angle"])
    towards = math.cos(angle) * px[None, :] + math.sin(angle) * py[:, None]  # (H, W), +1 on the lit side
    inside = np.clip(1.3 - (px[None, :] ** 2 + py[:, None] ** 2), 0.0, 1.0)
    return 1.0 + np.float32(0.9 * float(factors["light_strength"])) * inside * np.clip(towards, -1.0, 1.0)


def _light_and_noise(image: Image.Image, factors: FactorRow, geometry: FaceGeometry, pose: Pose) -> np.ndarray:
    """The drawn picture lit (a gradient over it and the face's shading) with sensor noise: (H, W, 3) uint8."""
    arr = np.asarray(image, dtype=np.float32)  # (H, W, 3)
    angle = float(factors["light_angle"])
    light = 1.0 + float(factors["light_strength"]) * (math.cos(angle) * _GRID_X + math.sin(angle) * _GRID_Y)  # (H, W)
    light *= _face_shading(factors, geometry, pose)
    for c in range(3):  # plane by plane: broadcasting over a last axis of 3 is several times slower
        np.multiply(arr[:, :, c], light, out=arr[:, :, c])
    arr += _noise(int(factors["noise_seed"])) * np.float32(factors["noise_sigma"])
    arr += np.float32(0.5)
    np.clip(arr, 0.0, 255.0, out=arr)
    return arr.astype(np.uint8)


def encode_jpeg(image: np.ndarray) -> bytes:
    """JPEG bytes exactly as the generator writes them (quality 90, 4:2:0, baseline)."""
    if image.shape != (HEIGHT, WIDTH, 3) or image.dtype != np.uint8:
        raise ValueError(f"expected a ({HEIGHT}, {WIDTH}, 3) uint8 image, got {image.shape} {image.dtype}")
    buf = io.BytesIO()
    Image.fromarray(image, "RGB").save(buf, format="JPEG", quality=JPEG_QUALITY, subsampling=JPEG_SUBSAMPLING,
                                       optimize=False)
    return buf.getvalue()


def render_chunk(task: tuple[str, int, list[dict]]) -> tuple[int, np.ndarray, np.ndarray]:
    """Worker: render and write one chunk of images (rows `start`...) into `image_dir`.

    Returns `start` and the chunk's annotation_arrays, so the geometry is computed in the workers too.
    """
    image_dir, start, rows = task
    for row in rows:
        data = encode_jpeg(render_factors(row))
        with open(f"{image_dir}/{row['image_id']}", "wb") as fh:
            fh.write(data)
    return (start, *annotation_arrays(rows))
