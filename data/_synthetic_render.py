"""Drawing one procedural face from its factor row: the pixel half of `data.synthetic` (numpy + PIL only).

Everything is drawn with PIL ImageDraw primitives in CelebA-aligned coordinates (eyes at y=112, x=69/108 on the
178x218 image), every point mapped through the pose (roll, scale, shift) first; then a few vectorised numpy ops add
the lighting (a gradient over the picture and soft shading of the face away from the light) and the seeded sensor
noise, with no per-pixel Python. `landmarks` and `face_box` map the same geometry through the same pose, so the
annotation files carry the exact positions of what was drawn.
"""
from __future__ import annotations

import io
import math
from typing import Any, Mapping

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

WIDTH, HEIGHT = 178, 218
CENTER_X = 88.5  # midpoint between the eyes
EYE_Y = 112.0
JPEG_QUALITY = 90
JPEG_SUBSAMPLING = 2  # 4:2:0, like CelebA's files

HAIR_COLOUR_ATTRIBUTES = ("Black_Hair", "Brown_Hair", "Blond_Hair", "Gray_Hair")
# hair_base codes (a person's natural hair colour): 0..3 follow HAIR_COLOUR_ATTRIBUTES,
# 4 = red/auburn (no listed colour)
HAIR_OTHER = 4
# dark and light end of each palette; `hair_shade` in [0, 1] picks a point between them
HAIR_PALETTES = (
    ((16, 14, 16), (48, 40, 38)),  # black
    ((74, 46, 26), (128, 86, 50)),  # brown
    ((200, 163, 92), (244, 220, 152)),  # blond
    ((152, 152, 154), (220, 218, 215)),  # gray
    ((128, 42, 20), (200, 88, 36)),  # red / auburn
)
SKIN_RAMP = ((238, 200, 174), (216, 166, 128), (184, 126, 88), (130, 85, 56), (86, 55, 37))
PALE_SKIN = (252, 238, 232)
EYE_COLOURS = ((92, 56, 30), (52, 32, 22), (72, 112, 168), (84, 124, 84), (124, 98, 52), (112, 122, 134))
GLASSES_COLOURS = ((20, 20, 24), (70, 40, 24), (30, 40, 90), (110, 20, 30), (20, 90, 110))
LIPSTICK_COLOURS = ((196, 18, 40), (214, 36, 108), (142, 16, 58), (212, 48, 36))
SHADOW_COLOURS = ((118, 58, 140), (78, 48, 40), (58, 88, 162), (64, 64, 78), (40, 110, 100))
EARRING_COLOURS = ((236, 192, 52), (226, 228, 238), (250, 246, 236), (200, 24, 60), (30, 120, 220))
NECKLACE_COLOURS = ((232, 190, 60), (214, 216, 224), (246, 242, 232), (196, 20, 52), (24, 22, 26))
TIE_COLOURS = ((24, 36, 96), (150, 20, 34), (96, 18, 44), (30, 90, 50), (60, 64, 76), (20, 20, 24), (180, 120, 30))
SHIRT_COLOUR = (240, 240, 236)
BLUR_RADIUS = 2.4  # Blurry: Gaussian blur of the drawn picture, before light and sensor noise
HAT_COLOURS = (
    (30, 30, 36), (180, 30, 36), (36, 60, 150), (40, 110, 60), (200, 180, 140), (120, 70, 40), (230, 230, 230),
    (240, 150, 30), (90, 40, 120),
)

_GRID_X, _GRID_Y = np.meshgrid(
    (np.arange(WIDTH, dtype=np.float32) - WIDTH / 2) / (WIDTH / 2),
    (np.arange(HEIGHT, dtype=np.float32) - HEIGHT / 2) / (HEIGHT / 2),
)  # (H, W) each, in [-1, 1]


def _pose(f: Mapping[str, Any]) -> tuple[tuple[float, float, float, float], tuple[float, float], float]:
    """The pose of one photo: rotation-and-scale matrix (a, b, c, d), translation and scale."""
    theta = math.radians(float(f["roll"]))
    s = float(f["scale"])
    m = (s * math.cos(theta), -s * math.sin(theta), s * math.sin(theta), s * math.cos(theta))
    return m, (CENTER_X + float(f["shift_x"]), EYE_Y + float(f["shift_y"])), s


def _apply_pose(m, t, xs, ys) -> tuple[np.ndarray, np.ndarray]:
    a, b, c, d = m
    xs = np.asarray(xs, dtype=float) - CENTER_X
    ys = np.asarray(ys, dtype=float) - EYE_Y
    return a * xs + b * ys + t[0], c * xs + d * ys + t[1]


_UNIT_CIRCLES = {
    k: (np.cos(t), np.sin(t)) for k in (12, 24) for t in [np.linspace(0.0, 2.0 * math.pi, k, endpoint=False)]
}  # polygon vertices of small and large ellipses


class _Pen:
    """ImageDraw-like calls in CelebA-aligned coordinates, mapped through the pose (roll, scale, shift) before drawing.

    Transforming the points instead of warping the finished image keeps edges sharp and costs nothing.
    Ellipses, arcs and rectangles become polygons, so they rotate with the face.
    """

    def __init__(self, draw: ImageDraw.ImageDraw, f: Mapping[str, Any]):
        self.draw = draw
        self.m, self.t, self.s = _pose(f)

    def _map(self, xs, ys) -> list[tuple[float, float]]:
        px, py = _apply_pose(self.m, self.t, xs, ys)
        return list(zip(px.tolist(), py.tolist()))

    def _pts(self, points) -> list[tuple[float, float]]:
        """(x, y) pairs mapped in plain Python: cheaper than numpy for the few points of most shapes."""
        a, b, c, d = self.m
        tx, ty = self.t
        out = []
        for x, y in points:
            x, y = float(x) - CENTER_X, float(y) - EYE_Y
            out.append((a * x + b * y + tx, c * x + d * y + ty))
        return out

    def _w(self, width: float) -> int:
        return max(1, int(round(width * self.s)))

    def polygon(self, points, fill) -> None:
        self.draw.polygon(self._pts(points), fill=fill)

    def line(self, points, fill, width: float = 1) -> None:
        self.draw.line(self._pts(points), fill=fill, width=self._w(width), joint="curve" if width > 2 else None)

    def _outline(self, xs, ys, fill, outline, width) -> None:
        pts = self._map(xs, ys)
        if fill is not None:
            self.draw.polygon(pts, fill=fill)
        if outline is not None:
            self.draw.line(pts + pts[:1], fill=outline, width=self._w(width), joint="curve")

    def ellipse(self, box, fill=None, outline=None, width: float = 1) -> None:
        x0, y0, x1, y1 = box
        cos, sin = _UNIT_CIRCLES[24 if (x1 - x0) > 12 else 12]
        self._outline((x0 + x1) / 2 + (x1 - x0) / 2 * cos, (y0 + y1) / 2 + (y1 - y0) / 2 * sin, fill, outline, width)

    def arc(self, box, start: float, end: float, fill, width: float = 1) -> None:
        x0, y0, x1, y1 = box
        t = np.radians(np.linspace(start, end, 9))  # PIL's convention: degrees clockwise from 3 o'clock
        xs = (x0 + x1) / 2 + (x1 - x0) / 2 * np.cos(t)
        ys = (y0 + y1) / 2 + (y1 - y0) / 2 * np.sin(t)
        self.draw.line(self._map(xs, ys), fill=fill, width=self._w(width))

    def rectangle(self, box, fill=None, outline=None, width: float = 1) -> None:
        x0, y0, x1, y1 = box
        self._outline([x0, x1, x1, x0], [y0, y0, y1, y1], fill, outline, width)

    def rounded_rectangle(self, box, radius: float, fill=None, outline=None, width: float = 1) -> None:
        x0, y0, x1, y1 = box
        xs, ys = [], []
        q = np.linspace(0.0, math.pi / 2, 4)
        for cx, cy, a0 in ((x1 - radius, y0 + radius, -math.pi / 2), (x1 - radius, y1 - radius, 0.0),
                           (x0 + radius, y1 - radius, math.pi / 2), (x0 + radius, y0 + radius, math.pi)):
            xs.extend(cx + radius * np.cos(a0 + q))
            ys.extend(cy + radius * np.sin(a0 + q))
        self._outline(xs, ys, fill, outline, width)


def _gradient_masks() -> list[Image.Image]:
    """Ramps 0..255 top-to-bottom, left-to-right and along both diagonals, as RGB images for Image.point."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)
    y, x = y / (HEIGHT - 1), x / (WIDTH - 1)
    masks = []
    for ramp in (y, x, (x + y) / 2, (1 - x + y) / 2):
        level = np.rint(255 * ramp).astype(np.uint8)
        masks.append(Image.fromarray(np.repeat(level[:, :, None], 3, axis=2), "RGB"))
    return masks


_MASKS: list[Image.Image] = []
_NOISE: list[np.ndarray] = []
_NOISE_MARGIN = 96


def _background(f: Mapping[str, Any]) -> Image.Image:
    """Two-colour linear gradient in one of four directions: a 256-entry LUT over a cached ramp."""
    if not _MASKS:
        _MASKS.extend(_gradient_masks())
    c0 = np.array([f["bg_r0"], f["bg_g0"], f["bg_b0"]], dtype=np.float64)
    c1 = np.array([f["bg_r1"], f["bg_g1"], f["bg_b1"]], dtype=np.float64)
    lut = np.rint(c0[:, None] + (c1 - c0)[:, None] * np.linspace(0.0, 1.0, 256)[None, :]).astype(np.int64)  # (3, 256)
    mask = _MASKS[min(3, int(float(f["bg_angle"]) * 4))]
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


def _lerp(a, b, t: float) -> tuple[int, int, int]:
    return tuple(int(round(a[i] + (b[i] - a[i]) * t)) for i in range(3))


def _scale(c, k: float) -> tuple[int, int, int]:
    return tuple(int(min(255, max(0, round(v * k)))) for v in c[:3])


def _a(c, alpha: float = 1.0) -> tuple[int, int, int, int]:
    return (int(c[0]), int(c[1]), int(c[2]), int(round(255 * alpha)))


def _ramp(colours, t: float):
    t = min(max(t, 0.0), 1.0) * (len(colours) - 1)
    i = min(int(t), len(colours) - 2)
    return _lerp(colours[i], colours[i + 1], t - i)


def _flag(f: Mapping[str, Any], name: str) -> bool:
    return bool(f[name])


def hair_code(f: Mapping[str, Any]) -> int:
    """The hair colour code that is rendered: the set colour attribute, else red/auburn."""
    for code, name in enumerate(HAIR_COLOUR_ATTRIBUTES):
        if _flag(f, name):
            return code
    return HAIR_OTHER


def _luma(c) -> float:
    return 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]


def _contrasting(colour, skin, ratio: float):
    """`colour` darkened until its luma is at most `ratio` x the skin's: brows and beards must show on any skin."""
    limit = ratio * _luma(skin)
    lum = _luma(colour)
    return colour if lum <= limit else _scale(colour, limit / max(lum, 1.0))


def _hair_rgb(code: int, shade: float):
    dark, light = HAIR_PALETTES[code]
    return _lerp(dark, light, shade)


def _skin_rgb(f: Mapping[str, Any]):
    skin = _ramp(SKIN_RAMP, float(f["skin_tone"]))
    warm = float(f["skin_warm"])
    skin = (skin[0] + 8 * warm, skin[1], skin[2] - 8 * warm)
    if _flag(f, "Pale_Skin"):
        skin = _lerp(skin, PALE_SKIN, 0.85)
    if not _flag(f, "Young"):  # older skin: greyer and a little darker
        grey = sum(skin) / 3
        skin = tuple((0.62 * v + 0.38 * grey) * 0.92 for v in skin)
    return _scale(skin, 1.0)


def _ellipse_pts(cx, cy, rx, ry, t0, t1, k):
    t = np.linspace(t0, t1, k)
    return cx + rx * np.cos(t), cy - ry * np.sin(t)


def _poly(xs, ys) -> list[tuple[float, float]]:
    return list(zip(np.asarray(xs, dtype=float).tolist(), np.asarray(ys, dtype=float).tolist()))


def _face_geometry(f: Mapping[str, Any]) -> dict[str, float]:
    """Named positions of one face in CelebA-aligned coordinates (before the pose warp)."""
    male = _flag(f, "Male")
    jaw = float(f["jaw"])
    g = {}
    g["cx"] = CENTER_X
    g["ey"] = EYE_Y
    g["fw"] = float(f["face_w"]) + (2.5 if male else 0.0)  # half width at the cheekbones
    g["top"] = g["ey"] - float(f["skull_h"])
    g["chin"] = g["ey"] + float(f["chin_drop"]) + (2.0 if male else 0.0)
    # jaw: superellipse exponent (higher = squarer) and half width at the chin
    if _flag(f, "Oval_Face"):  # long, narrow, tapering to a rounded chin
        g["fw"] -= 2.0
        g["chin"] += 4.0
        g["jaw_p"] = 2.0 if male else 1.7
        g["chin_half"] = (6.0 + 2.0 * jaw) if male else (2.0 + 1.5 * jaw)
    else:
        g["jaw_p"] = 3.4 + 1.2 * jaw if male else 2.5 + 0.5 * jaw
        g["chin_half"] = 11.0 + 5.0 * jaw if male else 6.0 + 3.0 * jaw
    if _flag(f, "Double_Chin"):  # heavier jowls
        g["chin_half"] += 4.0
    if _flag(f, "Chubby"):  # a fuller, rounder face and neck
        g["fw"] += 4.5
        g["chin_half"] += 5.0
        g["jaw_p"] += 0.8
        g["chin"] += 2.0
    g["eye_dx"] = float(f["eye_dx"])
    g["ew"] = float(f["eye_w"])
    g["eh"] = float(f["eye_h"]) * (0.42 if _flag(f, "Narrow_Eyes") else 1.0)
    g["brow_y"] = g["ey"] - float(f["brow_gap"])
    g["nose_y"] = g["ey"] + float(f["nose_len"]) + (3.0 if _flag(f, "Big_Nose") else 0.0)
    g["mouth_y"] = g["ey"] + float(f["mouth_drop"])
    g["mw"] = float(f["mouth_w"])
    g["hairline"] = g["ey"] - float(f["hairline"]) + ((2.0 if _flag(f, "Young") else -3.0) if male else 0.0)
    if _flag(f, "Receding_Hairline"):
        g["hairline"] -= 9.0
    g["vol"] = float(f["hair_vol"]) * (0.6 if male else 1.0)
    if _flag(f, "Straight_Hair"):  # sleek: lies flat on the head
        g["vol"] *= 0.5
    elif _flag(f, "Wavy_Hair"):  # full and springy
        g["vol"] += 3.0
    g["hair_end"] = g["ey"] + 52.0 + 66.0 * float(f["hair_len"])  # where long hair ends
    g["neck_w"] = (23.0 if male else 18.0) + (4.0 if _flag(f, "Chubby") else 0.0)
    return g


def _mouth_shape(f: Mapping[str, Any], g) -> tuple[float, float]:
    """Half width of the mouth and how far its corners rise above `mouth_y` (a smile lifts them)."""
    mw = g["mw"] * (1.25 if _flag(f, "Smiling") else 1.0) * (1.12 if _flag(f, "Big_Lips") else 1.0)
    return mw, (5.5 if _flag(f, "Smiling") else 0.0)


def landmarks(f: Mapping[str, Any]) -> np.ndarray:
    """CelebA's five landmarks as drawn, through the pose: (10,) float, in data.celeba.LANDMARK_COLUMNS order.

    Eye centres (the image's left eye first, as in CelebA), the nose tip and the mouth corners.
    """
    g = _face_geometry(f)
    cx, ey = g["cx"], g["ey"]
    mw, lift = _mouth_shape(f, g)
    xs = [cx - g["eye_dx"], cx + g["eye_dx"], cx, cx - mw, cx + mw]
    ys = [ey, ey, g["nose_y"], g["mouth_y"] - lift, g["mouth_y"] - lift]
    m, t, _ = _pose(f)
    px, py = _apply_pose(m, t, xs, ys)
    return np.stack([px, py], axis=1).ravel()


def face_box(f: Mapping[str, Any]) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) of the head outline (skull and jaw, without hair or ears) through the pose, unclipped."""
    g = _face_geometry(f)
    xs, ys = _head_outline(g)
    m, t, _ = _pose(f)
    px, py = _apply_pose(m, t, xs, ys)
    return float(px.min()), float(py.min()), float(px.max()), float(py.max())


def _head_outline(g) -> tuple[np.ndarray, np.ndarray]:
    """Skull ellipse over the top, superellipse jaw below the cheekbones (square for men, oval for women)."""
    cx, y0, fw = g["cx"], g["ey"] + 6.0, g["fw"]
    tx, ty = _ellipse_pts(cx, y0, fw, y0 - g["top"], math.pi, 0.0, 32)
    u = np.linspace(0.0, 1.0, 20)[1:]
    p = g["jaw_p"]
    w = g["chin_half"] + (fw - g["chin_half"]) * (1.0 - u**p) ** (1.0 / p)
    ys = y0 + u * (g["chin"] - y0)
    xs = np.concatenate([tx, cx + w, (cx - w)[::-1]])
    yy = np.concatenate([ty, ys, ys[::-1]])
    return xs, yy


def _face_half_width(g, y: float) -> float:
    y0 = g["ey"] + 6.0
    if y <= y0:
        ry = y0 - g["top"]
        return g["fw"] * math.sqrt(max(0.0, 1.0 - ((y0 - y) / ry) ** 2))
    u = min(1.0, (y - y0) / (g["chin"] - y0))
    p = g["jaw_p"]
    return g["chin_half"] + (g["fw"] - g["chin_half"]) * (1.0 - u**p) ** (1.0 / p)


WAVE_AMPLITUDE = 4.5  # Wavy_Hair: how far the outline swings out (px on the 178x218 image)
WAVE_LENGTH = 22.0  # ... and the period of the waves down the sides and of the bands across long hair
_DOME_LUMPS = 14  # lumps over the full circle of the hair dome's outline (7 across the top)


def _dome_lump(t: np.ndarray) -> np.ndarray:
    """How far Wavy_Hair's dome outline bulges out at angles t: _DOME_LUMPS rounded lumps round the circle."""
    return WAVE_AMPLITUDE * (0.5 - 0.5 * np.cos(_DOME_LUMPS * (t - math.pi / 2)))


def _dome(f, g, t0: float, t1: float, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Outer edge of the hair dome from angle t0 to t1 (as _ellipse_pts); Wavy_Hair gives it big rounded lumps."""
    cx, y0, fw, vol = g["cx"], g["ey"] + 6.0, g["fw"], g["vol"]
    rx, ry = fw + vol, y0 - g["top"] + vol
    if not _flag(f, "Wavy_Hair"):
        return _ellipse_pts(cx, y0, rx, ry, t0, t1, k)
    t = np.linspace(t0, t1, 3 * k)
    lump = _dome_lump(t)
    return cx + (rx + lump) * np.cos(t), y0 - (ry + lump) * np.sin(t)


def _side_edge(f, g, s: int, y_start: float, y_end: float) -> list[tuple[float, float]]:
    """Outer edge of long hair on side s from y_start (width fw + vol) down to y_end (flared out); waving for
    Wavy_Hair."""
    if not _flag(f, "Wavy_Hair"):
        ys = np.array([y_start, y_end])
    else:
        ys = np.linspace(y_start, y_end, max(2, int((y_end - y_start) / 3.0)))
    return _poly(g["cx"] + s * _side_offset(f, g, ys, y_start, y_end), ys)


def _side_offset(f, g, ys, y_start: float, y_end: float) -> np.ndarray:
    """Distance of long hair's outer edge from the face's centre line at heights ys: fw + vol at y_start, flared out
    towards y_end, plus Wavy_Hair's swing."""
    ys = np.asarray(ys, dtype=float)
    flare = 4.0 + 6.0 * float(f["hair_len"])
    return g["fw"] + g["vol"] + flare * (ys - y_start) / max(y_end - y_start, 1.0) + _side_wave(f, ys)


def _side_wave(f, ys) -> np.ndarray:
    """Sideways swing of Wavy_Hair at heights ys (0 otherwise): crests where the light bands cross the locks."""
    if not _flag(f, "Wavy_Hair"):
        return np.zeros_like(np.asarray(ys, dtype=float))
    phase = 2.0 * math.pi * (np.asarray(ys, dtype=float) - EYE_Y + 16.0) / WAVE_LENGTH  # crests at ey - 16, ey + 6
    return WAVE_AMPLITUDE * (0.5 + 0.5 * np.cos(phase))


def _draw_back_hair(d: _Pen, f, g, colour) -> None:
    cx, y0, fw, vol = g["cx"], g["ey"] + 6.0, g["fw"], g["vol"]
    if _flag(f, "Male"):
        # short: a dome a few px outside the skull, down to the ears
        xs, ys = _dome(f, g, math.pi + 0.12, -0.12, 30)
        d.polygon(_poly(xs, ys), fill=_a(colour))
        return
    y_end = g["hair_end"]
    xs, ys = _dome(f, g, math.pi, 0.0, 30)
    right = _side_edge(f, g, 1, y0, y_end - 10.0) + [(cx + fw * 0.7, y_end), (cx - fw * 0.7, y_end)]
    left = _side_edge(f, g, -1, y0, y_end - 10.0)[::-1]
    d.polygon(_poly(xs, ys) + right + left, fill=_a(colour))


def _draw_front_hair(d: _Pen, f, g, colour, dark, skin) -> None:
    cx, y0, fw, vol = g["cx"], g["ey"] + 6.0, g["fw"], g["vol"]
    ry = y0 - g["top"] + vol
    temple_y = g["ey"] - 6.0
    # outer edge: the hair dome from the left temple over the top to the right temple
    t_side = math.asin(min(1.0, (y0 - temple_y) / ry))
    ox, oy = _dome(f, g, math.pi - t_side, t_side, 28)
    part = float(f["parting"])
    if _flag(f, "Bangs"):
        # fringe across the forehead down to just above the brows, ragged lower edge, maybe side-swept
        k = 11
        xs = np.linspace(cx + fw - 1.0, cx - fw + 1.0, k)
        fringe = g["brow_y"] - 4.5
        sweep = 5.0 * part * (xs - cx) / fw
        zig = np.where(np.arange(k) % 2 == 0, 0.0, -3.0)
        ys = fringe + sweep + zig
        ys[0] = ys[-1] = temple_y
        inner = _poly(xs, ys)
        # the fringe's shadow on the forehead keeps light bangs visible on light skin
        d.polygon(_poly(ox, oy) + _poly(xs, ys + 3.0), fill=_a(_scale(skin, 0.62), 0.85))
        edge_x, edge_y = xs[::-1], np.minimum(ys, fringe + sweep - 3.0)[::-1]  # the fringe's highest points
    else:
        xs = np.linspace(cx + fw - 2.0, cx - fw + 2.0, 15)
        rel = np.abs(xs - cx - 6.0 * part) / fw
        # a receding hairline is high and goes back further still at the temples (an M)
        temple_edge = temple_y - (16.0 if _flag(f, "Receding_Hairline") else 0.0)
        ys = g["hairline"] + (temple_edge - g["hairline"]) * np.clip(rel, 0, 1) ** (4.0 if _flag(f, "Male") else 2.2)
        inner = _poly(xs, ys)
        edge_x, edge_y = xs[::-1], ys[::-1]
    d.polygon(_poly(ox, oy) + inner, fill=_a(colour))
    # a parting line and a sheen give the dome some structure
    px = cx + 14.0 * part
    d.line([(px, g["top"] - vol + 3.0), (px + 4.0 * part, g["hairline"] - 1.0)], fill=_a(dark, 0.8), width=2)
    d.arc([cx - fw * 0.7, g["top"] - vol + 4.0, cx + fw * 0.7, g["top"] + 30.0], 200, 330,
          fill=_a(_scale(colour, 1.25), 0.6), width=3)
    if _flag(f, "Male"):
        for s in (-1, 1):  # short hair in front of the ears (long Sideburns are drawn over it)
            d.polygon(
                [(cx + s * (fw + 1.0), temple_y - 2), (cx + s * (fw - 4.0), temple_y - 2),
                 (cx + s * (fw - 4.0), g["ey"] - 1.0), (cx + s * (fw - 0.5), g["ey"] - 1.0)],
                fill=_a(colour),
            )
    else:
        y_end = g["hair_end"]
        for s in (-1, 1):  # long locks framing the face, over the ears
            inner_pts = []
            for y in np.linspace(temple_y - 10.0, min(g["chin"] - 8.0, y_end - 6.0), 7):
                inner_pts.append((cx + s * (_face_half_width(g, y) - 4.0), y))
            inner_pts.append((cx + s * (g["neck_w"] + 2.0), y_end - 4.0))
            outer = [(cx + s * (fw * 0.7), y_end)] + _side_edge(f, g, s, temple_y - 10.0, y_end - 10.0)[::-1]
            d.polygon(inner_pts + outer, fill=_a(colour))
            d.line([(cx + s * (fw + 2.0), temple_y), (cx + s * (fw + 5.0), y_end - 12.0)], fill=_a(dark, 0.5), width=2)
    if _flag(f, "Straight_Hair") or _flag(f, "Wavy_Hair"):
        _draw_hair_texture(d, f, g, colour, (edge_x, edge_y), t_side)


def _runs_above(xs, ys, edge: tuple[np.ndarray, np.ndarray], margin: float) -> list[list[tuple[float, float]]]:
    """The stretches of the polyline (xs, ys) that stay at least `margin` above the hair's lower edge (the
    hairline or fringe, given as increasing x and its y): texture must not spill onto the forehead."""
    xs, ys = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    ok = ys <= np.interp(xs, edge[0], edge[1], left=-1e9, right=-1e9) - margin
    runs, start = [], None
    for i, good in enumerate(ok.tolist() + [False]):
        if good and start is None:
            start = i
        elif not good and start is not None:
            if i - start >= 2:
                runs.append(_poly(xs[start:i], ys[start:i]))
            start = None
    return runs


def _draw_hair_texture(d: _Pen, f, g, colour, edge, t_side: float) -> None:
    """Coarse enough to survive 64 px: Straight_Hair lies flat with long straight sheen bands from the crown and
    down the locks; Wavy_Hair has a lumpy, waving outline (see _dome/_side_edge) and broad light and dark bands
    across the dome (following its lumps) and across the locks (at the outline's crests and troughs)."""
    cx, y0, fw, vol = g["cx"], g["ey"] + 6.0, g["fw"], g["vol"]
    dark = _a(_scale(colour, 0.45), 0.9)
    light = _a(_lerp(colour, (255, 255, 255), 0.5), 0.9)
    temple_y = g["ey"] - 6.0
    long_hair = not _flag(f, "Male")
    y_end = g["hair_end"]
    lock_end = min(g["chin"] - 8.0, y_end - 14.0)

    def lock_edges(s: int, y: float) -> tuple[float, float]:  # inner and outer x of a lock at height y (_side_edge's)
        x_out = float(_side_offset(f, g, [y], temple_y - 10.0, y_end - 10.0)[0])
        return cx + s * (_face_half_width(g, y) - 4.0), cx + s * x_out

    if _flag(f, "Straight_Hair"):
        rx, ry = fw + vol, y0 - g["top"] + vol
        for k in range(-3, 4):  # vertical bands from the dome's top down to the hairline, broad light ones between
            x = cx + k * 0.27 * fw
            y_top = y0 - ry * math.sqrt(max(0.0, 1.0 - ((x - cx) / rx) ** 2)) + 2.5
            ys = np.linspace(y_top, temple_y, 12)
            wide = k % 2 != 0
            for run in _runs_above(np.full(12, x), ys, edge, 3.0 if wide else 2.0):
                d.line(run, fill=light if wide else dark, width=6 if wide else 3)
        if long_hair:
            for s in (-1, 1):  # a long straight highlight down each lock, a dark strand inside it
                (i0, o0), (i1, o1) = lock_edges(s, temple_y - 4.0), lock_edges(s, lock_end)
                d.line([((i0 + o0) / 2, temple_y - 4.0), ((i1 + o1) / 2, lock_end)], fill=light, width=5)
                d.line([(0.75 * i0 + 0.25 * o0, temple_y), (0.75 * i1 + 0.25 * o1, lock_end)], fill=dark, width=3)
        return
    # wavy: bands parallel to the lumpy outline, dark / light / dark inwards
    rx, ry = fw + vol, y0 - g["top"] + vol
    t = np.linspace(math.pi - t_side, t_side, 60)
    lump = _dome_lump(t)
    for inset, paint, width in ((5.0, dark, 5), (11.0, light, 5), (17.0, dark, 5)):
        xs = cx + (rx + lump - inset) * np.cos(t)
        ys = y0 - (ry + lump - inset) * np.sin(t)
        for run in _runs_above(xs, ys, edge, 3.0):
            d.line(run, fill=paint, width=width)
    if long_hair:
        for s in (-1, 1):  # bands across each lock: light at the outline's crests, dark in its troughs
            y = temple_y - 10.0
            j = 0
            while y <= lock_end:
                x_in, x_out = lock_edges(s, y)
                x_in, x_out = x_in + s * 1.0, x_out - s * 1.5
                xm = (x_in + x_out) / 2
                d.line([(x_in, y - 2.0), (xm, y + 2.0), (x_out, y - 2.0)], fill=light if j % 2 == 0 else dark,
                       width=6)
                y += WAVE_LENGTH / 2
                j += 1


def _draw_sideburns(d: _Pen, f, g, colour) -> None:
    cx, fw, ey = g["cx"], g["fw"], g["ey"]
    for s in (-1, 1):  # long and thick, down the cheek in front of the ear
        d.polygon([(cx + s * (fw + 1.0), ey - 14.0), (cx + s * (fw - 7.5), ey - 14.0), (cx + s * (fw - 8.5), ey + 28.0),
                   (cx + s * (fw - 2.0), ey + 31.0)], fill=_a(colour, 0.95))


def _draw_bald(d: _Pen, f, g, natural, skin) -> None:
    """A bare, skin-coloured scalp: shaded towards its edge, with a shiny highlight, and a low fringe of the person's
    natural hair colour round the sides above the ears (grey only when the person's own colour is grey)."""
    cx, y0, fw, ey = g["cx"], g["ey"] + 6.0, g["fw"], g["ey"]
    top = g["top"]
    ry = y0 - top
    # the scalp's edge in shadow: a darker band just inside the skull outline above the brows
    xs, ys = _ellipse_pts(cx, y0, fw, ry, math.pi - 0.55, 0.55, 24)
    ix, iy = _ellipse_pts(cx, y0 + 2.0, fw - 6.0, ry - 5.0, 0.6, math.pi - 0.6, 24)
    d.polygon(_poly(xs, ys) + _poly(ix, iy), fill=_a(_scale(skin, 0.82), 0.8))
    # shine: a broad soft glow and a bright spot on the crown
    d.ellipse([cx - fw * 0.55, top + 3.0, cx + fw * 0.35, top + 24.0], fill=_a(_lerp(skin, (255, 255, 255), 0.3), 0.6))
    d.ellipse([cx - fw * 0.38, top + 6.0, cx + fw * 0.05, top + 15.0], fill=_a(_lerp(skin, (255, 255, 255), 0.65), 0.85))
    for s in (-1, 1):  # the fringe left above and behind the ears
        d.polygon(
            [(cx + s * (fw + 4.5), ey - 22.0), (cx + s * (fw - 1.0), ey - 24.0), (cx + s * (fw - 4.5), ey - 14.0),
             (cx + s * (fw - 4.5), ey + 6.0), (cx + s * (fw + 1.0), ey + 10.0), (cx + s * (fw + 5.5), ey + 6.0)],
            fill=_a(natural),
        )


def _draw_hat(d: _Pen, f, g) -> None:
    cx, y0, fw = g["cx"], g["ey"] + 6.0, g["fw"]
    colour = HAT_COLOURS[int(f["hat_colour"]) % len(HAT_COLOURS)]
    dark = _scale(colour, 0.7) if sum(colour) > 120 else _scale((70, 70, 80), 1.0)
    style = int(f["hat_style"]) % 3
    ry = y0 - g["top"] + g["vol"] + 4.0
    hat_y = min(g["hairline"] + 10.0, g["brow_y"] - 15.0)  # lower edge well above the brows: bangs stay visible
    t_side = math.asin(min(1.0, (y0 - hat_y) / ry))
    xs, ys = _ellipse_pts(cx, y0, fw + g["vol"] + 4.0, ry, math.pi - t_side, t_side, 28)
    d.polygon(_poly(xs, ys), fill=_a(colour))
    if style == 0:  # beanie: folded band
        d.polygon([(xs[0], ys[0]), (xs[-1], ys[-1]), (xs[-1] - 1, hat_y - 9), (xs[0] + 1, hat_y - 9)], fill=_a(dark))
    elif style == 1:  # cap: brim over the forehead
        d.ellipse([cx - fw - 6.0, hat_y - 6.0, cx + fw + 6.0, hat_y + 6.0], fill=_a(dark))
    else:  # brimmed hat: wide brim and a band
        d.ellipse([cx - fw - 32.0, hat_y - 9.0, cx + fw + 32.0, hat_y + 5.0], fill=_a(colour))
        d.ellipse([cx - fw - 32.0, hat_y - 9.0, cx + fw + 32.0, hat_y + 5.0], outline=_a(dark), width=2)
        d.rectangle([cx - fw - 2.0, hat_y - 14.0, cx + fw + 2.0, hat_y - 8.0], fill=_a(dark))


def _draw_eyes(d: _Pen, f, g, skin) -> None:
    cx, ey, ew, eh = g["cx"], g["ey"], g["ew"], g["eh"]
    makeup = _flag(f, "Heavy_Makeup")
    iris = EYE_COLOURS[int(f["eye_colour"]) % len(EYE_COLOURS)]
    line_col = (30, 22, 22)
    u = np.linspace(-1.0, 1.0, 11)
    for s in (-1, 1):
        ex = cx + s * g["eye_dx"]
        if makeup:  # eye shadow up to the brow and a heavy liner with a wing
            shadow = SHADOW_COLOURS[int(f["shadow_colour"]) % len(SHADOW_COLOURS)]
            d.ellipse([ex - ew - 4.0, ey - eh - 9.0, ex + ew + 4.0, ey + 2.0], fill=_a(shadow, 0.75))
        xs = ex + u * ew
        top = ey - eh * np.sqrt(1.0 - u**2) - 0.6 * eh * (1.0 - u**2) * (s * u > 0)  # almond, fuller outwards
        bot = ey + eh * 0.8 * np.sqrt(1.0 - u**2)
        d.polygon(_poly(xs, top) + _poly(xs[::-1], bot[::-1]), fill=_a((236, 232, 226)))
        ir = min(float(f["eye_h"]) * 0.95, ew * 0.55)
        ih = min(ir, eh * 0.9)
        d.ellipse([ex - ir, ey - ih, ex + ir, ey + ih * 0.9], fill=_a(iris))
        pr = ir * 0.45
        d.ellipse([ex - pr, ey - min(pr, ih * 0.8), ex + pr, ey + min(pr, ih * 0.8)], fill=_a((12, 10, 10)))
        d.line(_poly(xs, top), fill=_a(line_col), width=4 if makeup else 2)
        if makeup:
            d.line([(ex + s * ew, top[-1 if s > 0 else 0]), (ex + s * (ew + 5.0), ey - eh - 2.0)],
                   fill=_a(line_col), width=3)
        d.line(_poly(xs, bot), fill=_a(_scale(skin, 0.72)), width=1)


def _draw_brows(d: _Pen, f, g, natural, skin) -> None:
    cx, by = g["cx"], g["brow_y"]
    male = _flag(f, "Male")
    bushy = _flag(f, "Bushy_Eyebrows")
    w = float(f["brow_w"])
    arched = _flag(f, "Arched_Eyebrows")
    thick = (7.5 + 1.5 * w) if bushy else ((3.2 + 1.0 * w) if male else (2.0 + 0.8 * w))
    if arched:  # groomed: defined and dark enough to show the shape
        thick = max(thick, 3.4)
    colour = _contrasting(_scale(natural, 0.8), skin, 0.4 if arched else 0.45)
    u = np.linspace(-1.0, 1.0, 9)
    if arched:  # rising from the inner end to a peak two thirds out, then dropping
        arch = 6.0 + 2.0 * float(f["brow_arch"])
        profile = np.where(u < 0.35, (u + 1.0) / 1.35, 1.0 - 0.75 * (u - 0.35) / 0.65)
    else:  # nearly straight, a gentle curve
        arch = 1.0 + 1.0 * float(f["brow_arch"])
        profile = 1.0 - u**2
    for s in (-1, 1):
        ex = cx + s * g["eye_dx"]
        half = g["ew"] + (4.5 if bushy else 2.5)
        xs = ex + s * u * half + s * 1.5
        centre = by - arch * profile  # (9,)
        thick_u = thick * (1.0 - 0.35 * (u > 0.3) * (u - 0.3))  # taper towards the outer end
        top = centre - thick_u / 2
        bot = centre + thick_u / 2
        d.polygon(_poly(xs, top) + _poly(xs[::-1], bot[::-1]), fill=_a(colour))


def _draw_mouth(d: _Pen, f, g, skin) -> None:
    cx, my = g["cx"], g["mouth_y"]
    male = _flag(f, "Male")
    smiling = _flag(f, "Smiling")
    open_ = _flag(f, "Mouth_Slightly_Open")
    mw, lift = _mouth_shape(f, g)
    big = _flag(f, "Big_Lips")
    curv = 4.5 if smiling else 0.4
    gap = (8.0 if smiling else 5.5) if open_ else 0.0
    thin = (0.85 if male else 1.0) * (0.8 if smiling else 1.0) * (0.85 if not _flag(f, "Young") else 1.0)
    lu = float(f["lip_u"]) * thin * (1.9 if big else 1.0)
    ll = float(f["lip_l"]) * thin * (2.0 if big else 1.0)
    u = np.linspace(-1.0, 1.0, 15)
    xs = cx + u * mw
    bell = np.sqrt(np.clip(1.0 - u**2, 0.0, 1.0))
    centre = my - lift * u**2 + curv * (1.0 - u**2)
    up_open = centre - gap * 0.35 * bell
    lo_open = centre + gap * 0.65 * bell
    cupid = 1.2 * np.exp(-((np.abs(u) - 0.25) ** 2) / 0.02)
    up_top = up_open - lu * bell - cupid
    lo_bot = lo_open + ll * bell
    if _flag(f, "Wearing_Lipstick"):
        lip = LIPSTICK_COLOURS[int(f["lipstick_colour"]) % len(LIPSTICK_COLOURS)]
    else:
        lip = _lerp(skin, (176, 92, 90), (0.3 if male else 0.35) + (0.25 if big else 0.0))
    if big:  # full lips cast a shadow under the lower one
        d.line(_poly(xs[2:-2], lo_bot[2:-2] + 2.0), fill=_a(_scale(skin, 0.45), 0.9), width=3)
    d.polygon(_poly(xs, up_top) + _poly(xs[::-1], lo_bot[::-1]), fill=_a(lip))
    if open_:
        d.polygon(_poly(xs, up_open) + _poly(xs[::-1], lo_open[::-1]), fill=_a((52, 18, 24)))
        if smiling:
            teeth_bot = up_open + gap * 0.42 * bell
            sel = np.abs(u) <= 0.8
            d.polygon(_poly(xs[sel], up_open[sel]) + _poly(xs[sel][::-1], teeth_bot[sel][::-1]),
                      fill=_a((238, 234, 222)))
    else:
        d.line(_poly(xs, centre), fill=_a(_scale(lip, 0.45)), width=2)
    if smiling:  # raised cheeks and short smile creases beside the corners
        for s in (-1, 1):
            x = cx + s * (mw + 3.5)
            ex = cx + s * (g["eye_dx"] + 2.0)
            d.ellipse([ex - 10.0, g["ey"] + 14.0, ex + 10.0, g["ey"] + 26.0], fill=_a(_scale(skin, 1.18), 0.6))
            d.line([(x - s * 1.0, my - lift - 8.0), (x + s * 2.0, my - lift), (x, my - lift + 7.0)],
                   fill=_a(_scale(skin, 0.55)), width=2.5)


def _draw_nose(d: _Pen, f, g, skin) -> None:
    """The tip sits at (cx, nose_y), the nose landmark; Big_Nose is wide and long, Pointy_Nose narrow and sharp."""
    cx, ey, ny = g["cx"], g["ey"], g["nose_y"]
    big, pointy = _flag(f, "Big_Nose"), _flag(f, "Pointy_Nose")
    nw = float(f["nose_w"]) * (1.5 if big else 1.0) * (0.75 if pointy else 1.0)
    shadow = _scale(skin, 0.78)
    dark = _scale(skin, 0.45)
    if big:  # broad wings and a round tip
        for s in (-1, 1):
            d.ellipse([cx + s * nw * 0.8 - 4.5, ny - 6.0, cx + s * nw * 0.8 + 4.5, ny + 2.5],
                      fill=_a(_scale(skin, 0.7), 0.9))
        d.ellipse([cx - 5.5, ny - 8.0, cx + 5.5, ny + 1.0], fill=_a(_scale(skin, 1.08)))
    d.line([(cx + 3.0, ey + 4.0), (cx + 4.0, ny - 6.0)], fill=_a(shadow, 0.8), width=2)
    if pointy:  # sharp ridge converging on a bright point
        d.line([(cx - 4.0, ey + 8.0), (cx - 2.0, ny - 1.0)], fill=_a(_scale(skin, 0.5)), width=2.5)
        d.line([(cx + 4.0, ey + 8.0), (cx + 2.0, ny - 1.0)], fill=_a(_scale(skin, 0.5)), width=2.5)
        d.polygon([(cx - 4.0, ny - 2.5), (cx + 4.0, ny - 2.5), (cx, ny + 3.5)], fill=_a(_scale(skin, 0.4)))
        d.ellipse([cx - 2.0, ny - 7.0, cx + 2.0, ny - 2.5], fill=_a(_lerp(skin, (255, 250, 244), 0.5)))
    else:
        d.arc([cx - nw, ny - 7.0, cx + nw, ny + 2.0], 20, 160, fill=_a(shadow), width=2)
    r = 3.2 if big else 2.2
    for s in (-1, 1):
        d.ellipse([cx + s * nw * 0.45 - r, ny - 1.5, cx + s * nw * 0.45 + r, ny + 1.2 + (0.8 if big else 0.0)],
                  fill=_a(dark))


def _draw_age(d: _Pen, f, g, skin) -> None:
    cx, ey = g["cx"], g["ey"]
    line = _a(_scale(skin, 0.6))
    for k in range(3):  # forehead lines (bangs or a hat may hide them, as in life)
        y = g["brow_y"] - 8.0 - 5.0 * k
        d.arc([cx - 20.0, y - 3.0, cx + 20.0, y + 5.0], 200, 340, fill=line, width=2)
    for s in (-1, 1):
        ex = cx + s * g["eye_dx"]
        x0 = ex + s * (g["ew"] + 2.0)
        for dy in (-3.0, 0.0, 3.0):  # crow's feet
            d.line([(x0, ey + dy * 0.5), (x0 + s * 6.0, ey + dy * 1.6)], fill=line, width=1)
        nx = cx + s * (float(f["nose_w"]) + 2.0)
        d.line([(nx, g["nose_y"] - 3.0), (nx + s * 7.0, g["mouth_y"] - 2.0), (nx + s * 9.0, g["mouth_y"] + 8.0)],
               fill=line, width=2)


def _draw_bags(d: _Pen, f, g, skin) -> None:
    cx, ey, ew = g["cx"], g["ey"], g["ew"]
    puff = _a(_lerp(_scale(skin, 0.72), (96, 60, 96), 0.2), 0.7)  # darker and a little purple
    crease = _a(_scale(skin, 0.5))
    for s in (-1, 1):
        ex = cx + s * g["eye_dx"]
        u = np.linspace(-1.0, 1.0, 9)
        xs = ex + u * (ew + 1.5)
        upper = ey + 3.0 + 0.0 * u
        lower = ey + 4.0 + 6.5 * np.sqrt(1.0 - u**2)
        d.polygon(_poly(xs, upper) + _poly(xs[::-1], lower[::-1]), fill=puff)
        d.line(_poly(xs, lower), fill=crease, width=2)


def _draw_high_cheekbones(d: _Pen, f, g, skin) -> None:
    cx, ey, fw = g["cx"], g["ey"], g["fw"]
    for s in (-1, 1):  # a lit ridge below the outer eye and the hollow under it, slanting towards the mouth
        x = cx + s * (g["eye_dx"] + 5.0)
        d.ellipse([x - 9.0, ey + 9.0, x + 9.0, ey + 16.0], fill=_a(_lerp(skin, (255, 248, 240), 0.45), 0.7))
        d.polygon([(cx + s * (fw - 1.0), ey + 15.0), (cx + s * (g["eye_dx"] + 3.0), ey + 19.0),
                   (cx + s * (g["mw"] + 5.0), ey + 31.0), (cx + s * (g["eye_dx"] + 1.0), ey + 23.5),
                   (cx + s * (fw - 2.0), ey + 21.0)], fill=_a(_scale(skin, 0.6), 0.75))


def _draw_double_chin(d: _Pen, f, g, skin) -> None:
    cx, chin = g["cx"], g["chin"]
    w = max(g["chin_half"], 8.0) + 8.0
    d.ellipse([cx - w, chin - 8.0, cx + w, chin + 7.0], fill=_a(_scale(skin, 0.97)))
    d.arc([cx - w, chin - 6.0, cx + w, chin + 8.0], 20, 160, fill=_a(_scale(skin, 0.5)), width=2)  # its shadow
    d.arc([cx - w + 3.0, chin - 18.0, cx + w - 3.0, chin - 3.0], 25, 155, fill=_a(_scale(skin, 0.45)), width=3)


def _shadow_outline(g) -> list[tuple[float, float]]:
    """Cheeks, jaw, chin and upper lip, where stubble and beards grow."""
    cx = g["cx"]
    outer = []
    for y in np.linspace(g["ey"] + 8.0, g["chin"], 12):
        outer.append((cx + _face_half_width(g, y) + 0.5, y))
    outer += [(cx - x + cx, y) for x, y in outer[::-1]]
    outer[len(outer) // 2 - 1] = (outer[len(outer) // 2 - 1][0], g["chin"] + 1.5)
    return outer


def _draw_stubble(d: _Pen, f, g, colour) -> None:
    cx, my, mw = g["cx"], g["mouth_y"], g["mw"]
    outer = _shadow_outline(g)
    half = len(outer) // 2
    # up to the nose: the upper lip is shaded too
    inner = [(cx - g["fw"] + 9.0, g["ey"] + 14.0), (cx - mw - 6.0, g["nose_y"] + 2.0),
             (cx + mw + 6.0, g["nose_y"] + 2.0), (cx + g["fw"] - 9.0, g["ey"] + 14.0)]
    tint = _a(_lerp(_scale(colour, 0.5), (40, 48, 64), 0.3), 0.5)  # blue-grey, as shaved stubble looks
    d.polygon(outer[:half] + outer[half:] + inner, fill=tint)


def _draw_facial_hair(d: _Pen, f, g, colour) -> None:
    cx, my, mw = g["cx"], g["mouth_y"], g["mw"]
    density = float(f["beard_density"])
    smiling = _flag(f, "Smiling")
    lift = 5.5 if smiling else 0.0  # follows the mouth corners
    if _flag(f, "jaw_beard"):
        # stubble / beard over cheeks, jaw and chin, leaving the mouth
        outer = _shadow_outline(g)
        right = outer[: len(outer) // 2]
        left = outer[len(outer) // 2:]
        inner = [(cx - g["fw"] + 9.0, g["ey"] + 14.0), (cx - mw - 6.0, my - 6.0), (cx - mw - 4.0, my + 5.0),
                 (cx, my + 11.0), (cx + mw + 4.0, my + 5.0), (cx + mw + 6.0, my - 6.0),
                 (cx + g["fw"] - 9.0, g["ey"] + 14.0)]
        d.polygon(right + left + inner, fill=_a(colour, 0.65 + 0.3 * density))
    if _flag(f, "Goatee"):
        top = my + 6.0
        gw = 10.0 + 4.0 * density
        d.polygon([(cx - gw, top), (cx + gw, top), (cx + gw * 0.8, g["chin"] - 3.0), (cx + gw * 0.4, g["chin"] + 2.0),
                   (cx - gw * 0.4, g["chin"] + 2.0), (cx - gw * 0.8, g["chin"] - 3.0)], fill=_a(colour, 0.95))
    if _flag(f, "Mustache"):
        ny = g["nose_y"] + 3.0
        low = my - 2.5 - float(f["lip_u"]) * 0.5
        w = mw + 3.0
        d.polygon([(cx - 3.0, ny), (cx + 3.0, ny), (cx + w * 0.8, ny + 2.0), (cx + w, low - lift + 4.0),
                   (cx + w - 3.0, low - lift + 5.0),
                   (cx, low), (cx - w + 3.0, low - lift + 5.0), (cx - w, low - lift + 4.0), (cx - w * 0.8, ny + 2.0)],
                  fill=_a(colour, 0.97))


def _draw_glasses(d: _Pen, f, g) -> None:
    cx, ey, ew = g["cx"], g["ey"], g["ew"]
    frame = GLASSES_COLOURS[int(f["glasses_colour"]) % len(GLASSES_COLOURS)]
    sun = _flag(f, "sunglasses")
    style = int(f["glasses_style"]) % 3
    hw, hh = ew + 5.5, max(float(f["eye_h"]), 4.0) + 5.0
    lens = _a((24, 24, 34), 0.88) if sun else _a((200, 220, 240), 0.18)
    for s in (-1, 1):
        ex = cx + s * g["eye_dx"]
        box = [ex - hw, ey - hh + 1.0, ex + hw, ey + hh + 1.0]
        if style == 0:
            d.rounded_rectangle(box, radius=5, fill=lens)
            d.rounded_rectangle(box, radius=5, outline=_a(frame), width=3)
        elif style == 1:
            d.ellipse(box, fill=lens)
            d.ellipse(box, outline=_a(frame), width=3)
        else:
            d.rectangle(box, fill=lens)
            d.rectangle(box, outline=_a(frame), width=3)
        d.line([(ex + s * hw, ey - hh + 4.0), (cx + s * (g["fw"] + 2.0), ey - 3.0)], fill=_a(frame), width=3)
    d.line([(cx - g["eye_dx"] + hw, ey - 2.0), (cx, ey - 4.0), (cx + g["eye_dx"] - hw, ey - 2.0)],
           fill=_a(frame), width=3)


def _draw_earrings(d: _Pen, f, g) -> None:
    cx, ey, fw = g["cx"], g["ey"], g["fw"]
    colour = EARRING_COLOURS[int(f["earring_colour"]) % len(EARRING_COLOURS)]
    outline = _a(_scale(colour, 0.45))
    style = int(f["earring_style"]) % 3
    for s in (-1, 1):
        x, y = cx + s * (fw + 2.0), ey + 22.0
        if style == 0:  # hoop
            d.ellipse([x - 7.0, y - 1.0, x + 7.0, y + 13.0], outline=_a(colour), width=3)
        elif style == 1:  # drop
            d.line([(x, y), (x, y + 6.0)], fill=_a(colour), width=2)
            d.ellipse([x - 5.0, y + 5.0, x + 5.0, y + 15.0], fill=_a(colour), outline=outline, width=1)
        else:  # large stud
            d.ellipse([x - 4.5, y - 3.0, x + 4.5, y + 6.0], fill=_a(colour), outline=outline, width=1)


def _contrast_pick(colour, against):
    """`colour`, or near-black / near-white when its luma is too close to `against`'s to show."""
    if abs(_luma(colour) - _luma(against)) >= 70:
        return colour
    return (24, 20, 22) if _luma(against) > 110 else (246, 240, 226)


def _draw_necklace(d: _Pen, f, g, skin) -> None:
    """A chunky chain of large beads round the neck right under the jaw (which, drawn later, hides its ends) with a
    pendant below the chin: high enough to lie inside the 148-px crop the model sees, bold enough for 64 px."""
    cx, nw = g["cx"], g["neck_w"]
    chin = g["chin"] + (6.0 if _flag(f, "Double_Chin") else 0.0)  # below the jowls
    colour = _contrast_pick(NECKLACE_COLOURS[int(f["necklace_colour"]) % len(NECKLACE_COLOURS)], skin)
    rim = _a(_scale(colour, 0.45) if _luma(colour) > 110 else _lerp(colour, (255, 255, 255), 0.55))
    t = np.linspace(0.0, math.pi, 11)
    xs = cx - nw * np.cos(t)
    ys = chin - 4.0 + 9.0 * np.sin(t) ** 0.6  # a flat U: across the whole neck just under the jaw
    d.line(_poly(xs, ys), fill=_a(colour), width=5)
    for x, y in zip(xs[1:-1], ys[1:-1]):
        d.ellipse([x - 4.0, y - 4.0, x + 4.0, y + 4.0], fill=_a(colour), outline=rim, width=1)
    d.ellipse([cx - 6.0, chin + 6.0, cx + 6.0, chin + 19.0], fill=_a(colour), outline=rim, width=1.5)


def _draw_necktie(d: _Pen, f, g) -> None:
    """A white shirt collar close under the chin and a tie knot and blade between its points."""
    cx, chin, nw = g["cx"], g["chin"], g["neck_w"]
    tie = TIE_COLOURS[int(f["tie_colour"]) % len(TIE_COLOURS)]
    for s in (-1, 1):
        d.polygon([(cx + s * (nw + 4.0), chin - 8.0), (cx + s * 1.0, chin + 9.0), (cx + s * (nw + 10.0), chin + 26.0),
                   (cx + s * (nw + 14.0), chin + 4.0)], fill=_a(SHIRT_COLOUR))
    d.polygon([(cx - 7.0, chin + 1.0), (cx + 7.0, chin + 1.0), (cx + 4.5, chin + 11.0), (cx - 4.5, chin + 11.0)],
              fill=_a(tie))
    d.polygon([(cx - 4.5, chin + 11.0), (cx + 4.5, chin + 11.0), (cx + 9.0, chin + 52.0), (cx, chin + 60.0),
               (cx - 9.0, chin + 52.0)], fill=_a(_scale(tie, 0.9)))


def _face_shading(f: Mapping[str, Any]) -> np.ndarray:
    """(H, W) multiplier: the side of the face away from the light a little darker, fading out beyond the face."""
    g = _face_geometry(f)
    m, t, s = _pose(f)
    cx, cy = _apply_pose(m, t, [g["cx"]], [(g["top"] + g["chin"]) / 2])
    rx, ry = (g["fw"] + 6.0) * s, (g["chin"] - g["top"]) / 2 * s
    px = (np.arange(WIDTH, dtype=np.float32) - float(cx[0])) / rx  # (W,)
    py = (np.arange(HEIGHT, dtype=np.float32) - float(cy[0])) / ry  # (H,)
    angle = float(f["light_angle"])
    towards = math.cos(angle) * px[None, :] + math.sin(angle) * py[:, None]  # (H, W), +1 on the lit side
    inside = np.clip(1.3 - (px[None, :] ** 2 + py[:, None] ** 2), 0.0, 1.0)
    return 1.0 + np.float32(0.9 * float(f["light_strength"])) * inside * np.clip(towards, -1.0, 1.0)


def render_factors(f: Mapping[str, Any]) -> np.ndarray:
    """Draw one face; (HEIGHT, WIDTH, 3) uint8, a pure function of the factor row."""
    img = _background(f)
    d = _Pen(ImageDraw.Draw(img, "RGBA"), f)
    g = _face_geometry(f)
    cx, ey = g["cx"], g["ey"]
    skin = _skin_rgb(f)
    base_skin = _ramp(SKIN_RAMP, float(f["skin_tone"]))  # the identity's own tone: contrast rules ignore pale/age flips
    shade = float(f["hair_shade"])
    bald = _flag(f, "Bald")
    natural = _hair_rgb(int(f["hair_base"]), shade)
    hair = _hair_rgb(hair_code(f), shade)
    if hair_code(f) == 1:  # brown hair must not melt into brown skin
        hair = _contrasting(hair, base_skin, 0.6)
    hair_dark = _scale(hair, 0.7)
    beard = _contrasting(_scale(natural, 0.75), base_skin, 0.55)

    if not bald:
        _draw_back_hair(d, f, g, hair)
    cloth = (int(f["cloth_r"]), int(f["cloth_g"]), int(f["cloth_b"]))
    d.ellipse([cx - 92.0, g["chin"] + 22.0, cx + 92.0, g["chin"] + 130.0], fill=_a(cloth))
    nw = g["neck_w"]
    d.polygon([(cx - nw, g["chin"] - 25.0), (cx + nw, g["chin"] - 25.0), (cx + nw + 2.0, g["chin"] + 30.0),
               (cx, g["chin"] + 38.0), (cx - nw - 2.0, g["chin"] + 30.0)], fill=_a(_scale(skin, 0.8)))
    if _flag(f, "Wearing_Necktie"):
        _draw_necktie(d, f, g)
    if _flag(f, "Wearing_Necklace"):
        _draw_necklace(d, f, g, _scale(skin, 0.8))
    ear = float(f["ear_size"])
    for s in (-1, 1):
        ex = cx + s * (g["fw"] + 1.0)
        d.ellipse([ex - 6.0 * ear, ey - 4.0, ex + 6.0 * ear, ey + 4.0 + 20.0 * ear], fill=_a(_scale(skin, 0.93)))
    xs, ys = _head_outline(g)
    d.polygon(_poly(xs, ys), fill=_a(skin))
    if _flag(f, "Double_Chin"):
        _draw_double_chin(d, f, g, skin)
    if _flag(f, "High_Cheekbones"):
        _draw_high_cheekbones(d, f, g, skin)
    if not _flag(f, "Young"):
        _draw_age(d, f, g, skin)
    if _flag(f, "Bags_Under_Eyes"):
        _draw_bags(d, f, g, skin)
    if _flag(f, "5_o_Clock_Shadow"):
        _draw_stubble(d, f, g, beard)
    if _flag(f, "Rosy_Cheeks"):
        for s in (-1, 1):
            x = cx + s * (g["eye_dx"] + 3.0)
            d.ellipse([x - 12.0, ey + 15.0, x + 12.0, ey + 32.0], fill=_a((232, 56, 86), 0.62))
    _draw_brows(d, f, g, natural, base_skin)
    _draw_eyes(d, f, g, skin)
    _draw_nose(d, f, g, skin)
    _draw_mouth(d, f, g, skin)
    _draw_facial_hair(d, f, g, beard)
    if bald:
        _draw_bald(d, f, g, natural, skin)
    else:
        _draw_front_hair(d, f, g, hair, hair_dark, skin)
    if _flag(f, "Sideburns"):
        _draw_sideburns(d, f, g, beard)
    if _flag(f, "Wearing_Hat"):
        _draw_hat(d, f, g)
    if _flag(f, "Wearing_Earrings"):
        _draw_earrings(d, f, g)
    if _flag(f, "Eyeglasses"):
        _draw_glasses(d, f, g)

    if _flag(f, "Blurry"):
        img = img.filter(ImageFilter.GaussianBlur(BLUR_RADIUS))
    arr = np.asarray(img, dtype=np.float32)  # (H, W, 3)
    angle = float(f["light_angle"])
    light = 1.0 + float(f["light_strength"]) * (math.cos(angle) * _GRID_X + math.sin(angle) * _GRID_Y)  # (H, W)
    light *= _face_shading(f)
    for c in range(3):  # plane by plane: broadcasting over a last axis of 3 is several times slower
        np.multiply(arr[:, :, c], light, out=arr[:, :, c])
    arr += _noise(int(f["noise_seed"])) * np.float32(f["noise_sigma"])
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


def annotation_arrays(rows: list[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """The bbox and landmark file rows of factor rows: (n, 4) int (x_1, y_1, width, height) of the head outline
    clipped to the image (at least 1 px wide and high), and (n, 10) int landmarks, both rounded from the drawing."""
    marks = np.rint(np.array([landmarks(r) for r in rows], dtype=np.float64).reshape(-1, 10))
    boxes = np.array([face_box(r) for r in rows], dtype=np.float64).reshape(-1, 4)
    x0 = np.clip(np.floor(boxes[:, 0]), 0, WIDTH - 1)
    y0 = np.clip(np.floor(boxes[:, 1]), 0, HEIGHT - 1)
    x1 = np.clip(np.ceil(boxes[:, 2]), x0 + 1, WIDTH)
    y1 = np.clip(np.ceil(boxes[:, 3]), y0 + 1, HEIGHT)
    return np.stack([x0, y0, x1 - x0, y1 - y0], axis=1).astype(np.int64), marks.astype(np.int64)


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
