"""Drawing in CelebA-aligned coordinates through a photo's pose (Pen), and the colour arithmetic of the drawing.

PIL ImageDraw primitives, every point mapped through the pose first: transforming the points instead of warping the
finished image keeps edges sharp and costs nothing. Colours are RGB tuples of ints; `rgba` adds the opacity PIL's
RGBA drawing blends with.
"""
from __future__ import annotations

import math

import numpy as np
from PIL import ImageDraw

from data.synthetic.geometry import CENTER_X, EYE_Y, Pose

RGB = tuple[int, int, int]
RGBA = tuple[int, int, int, int]  # with the opacity PIL blends with

_UNIT_CIRCLES = {
    k: (np.cos(t), np.sin(t)) for k in (12, 24) for t in [np.linspace(0.0, 2.0 * math.pi, k, endpoint=False)]
}  # polygon vertices of small and large ellipses


class Pen:
    """ImageDraw-like calls in CelebA-aligned coordinates, mapped through the pose (roll, scale, shift) before drawing.

    Ellipses, arcs and rectangles become polygons, so they rotate with the face.
    """

    def __init__(self, draw: ImageDraw.ImageDraw, pose: Pose):
        self.draw = draw
        self.pose = pose

    def _map(self, xs, ys) -> list[tuple[float, float]]:
        px, py = self.pose.apply(xs, ys)
        return list(zip(px.tolist(), py.tolist()))

    def _points(self, points) -> list[tuple[float, float]]:
        """(x, y) pairs mapped in plain Python: cheaper than numpy for the few points of most shapes."""
        a, b, c, d = self.pose.matrix
        tx, ty = self.pose.translation
        out = []
        for x, y in points:
            x, y = float(x) - CENTER_X, float(y) - EYE_Y
            out.append((a * x + b * y + tx, c * x + d * y + ty))
        return out

    def _width(self, width: float) -> int:
        """A line width in pixels of the photo: scaled with the face, at least 1."""
        return max(1, int(round(width * self.pose.scale)))

    def polygon(self, points, fill) -> None:
        self.draw.polygon(self._points(points), fill=fill)

    def line(self, points, fill, width: float = 1) -> None:
        self.draw.line(self._points(points), fill=fill, width=self._width(width), joint="curve" if width > 2 else None)

    def _outline(self, xs, ys, fill, outline, width) -> None:
        points = self._map(xs, ys)
        if fill is not None:
            self.draw.polygon(points, fill=fill)
        if outline is not None:
            self.draw.line(points + points[:1], fill=outline, width=self._width(width), joint="curve")

    def ellipse(self, box, fill=None, outline=None, width: float = 1) -> None:
        x0, y0, x1, y1 = box
        cos, sin = _UNIT_CIRCLES[24 if (x1 - x0) > 12 else 12]
        self._outline((x0 + x1) / 2 + (x1 - x0) / 2 * cos, (y0 + y1) / 2 + (y1 - y0) / 2 * sin, fill, outline, width)

    def arc(self, box, start: float, end: float, fill, width: float = 1) -> None:
        x0, y0, x1, y1 = box
        t = np.radians(np.linspace(start, end, 9))  # PIL's convention: degrees clockwise from 3 o'clock
        xs = (x0 + x1) / 2 + (x1 - x0) / 2 * np.cos(t)
        ys = (y0 + y1) / 2 + (y1 - y0) / 2 * np.sin(t)
        self.draw.line(self._map(xs, ys), fill=fill, width=self._width(width))

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


def lerp_rgb(a, b, t: float) -> RGB:
    """The colour a fraction t of the way from a to b, rounded."""
    return tuple(int(round(a[i] + (b[i] - a[i]) * t)) for i in range(3))


def scale_rgb(c, k: float) -> RGB:
    """Colour c with each channel times k (darker below 1, lighter above), rounded and clipped to 0..255."""
    return tuple(int(min(255, max(0, round(v * k)))) for v in c[:3])


def rgba(c, alpha: float = 1.0) -> RGBA:
    """Colour c with opacity alpha in [0, 1], as PIL's RGBA drawing takes it."""
    return (int(c[0]), int(c[1]), int(c[2]), int(round(255 * alpha)))


def ramp_rgb(colours, t: float) -> RGB:
    """The colour at t in [0, 1] along a ramp of evenly spaced colours."""
    t = min(max(t, 0.0), 1.0) * (len(colours) - 1)
    i = min(int(t), len(colours) - 2)
    return lerp_rgb(colours[i], colours[i + 1], t - i)


def luma(c) -> float:
    """Perceived brightness of colour c (ITU-R 601 weights), 0..255."""
    return 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]


def contrasting(colour, skin, ratio: float) -> RGB:
    """`colour` darkened until its luma is at most `ratio` x the skin's: brows and beards must show on any skin."""
    limit = ratio * luma(skin)
    lum = luma(colour)
    return colour if lum <= limit else scale_rgb(colour, limit / max(lum, 1.0))


def contrast_pick(colour, against) -> RGB:
    """`colour`, or near-black / near-white when its luma is too close to `against`'s to show."""
    if abs(luma(colour) - luma(against)) >= 70:
        return colour
    return (24, 20, 22) if luma(against) > 110 else (246, 240, 226)
