"""What a procedural face wears: a hat, glasses, earrings, a necklace, a shirt collar and tie."""
from __future__ import annotations

import math
import numpy as np

from data.synthetic.factors import FactorRow
from data.synthetic.geometry import FaceGeometry, ellipse_points, polyline
from data.synthetic.hair import hair_dome_radii
from data.synthetic.pen import RGB, Pen, contrast_pick, lerp_rgb, luma, rgba, scale_rgb

GLASSES_COLOURS = ((20, 20, 24), (70, 40, 24), (30, 40, 90), (110, 20, 30), (20, 90, 110))
EARRING_COLOURS = ((236, 192, 52), (226, 228, 238), (250, 246, 236), (200, 24, 60), (30, 120, 220))
NECKLACE_COLOURS = ((232, 190, 60), (214, 216, 224), (246, 242, 232), (196, 20, 52), (24, 22, 26))
TIE_COLOURS = ((24, 36, 96), (150, 20, 34), (96, 18, 44), (30, 90, 50), (60, 64, 76), (20, 20, 24), (180, 120, 30))
SHIRT_COLOUR = (240, 240, 236)
HAT_COLOURS = (
    (30, 30, 36), (180, 30, 36), (36, 60, 150), (40, 110, 60), (200, 180, 140), (120, 70, 40), (230, 230, 230),
    (240, 150, 30), (90, 40, 120),
)


def draw_hat(pen: Pen, factors: FactorRow, geometry: FaceGeometry) -> None:
    """A beanie, a cap or a brimmed hat over the hair, its lower edge well above the brows (bangs stay visible)."""
    cx, y0, fw = geometry.center_x, geometry.skull_centre_y, geometry.face_half_width
    colour = HAT_COLOURS[int(factors["hat_colour"]) % len(HAT_COLOURS)]
    dark = scale_rgb(colour, 0.7) if sum(colour) > 120 else scale_rgb((70, 70, 80), 1.0)
    style = int(factors["hat_style"]) % 3
    dome_rx, dome_ry = hair_dome_radii(geometry)
    ry = dome_ry + 4.0  # over the hair
    hat_y = min(geometry.hairline_y + 10.0, geometry.brow_y - 15.0)  # the lower edge
    t_side = math.asin(min(1.0, (y0 - hat_y) / ry))
    xs, ys = ellipse_points(cx, y0, dome_rx + 4.0, ry, math.pi - t_side, t_side, 28)
    pen.polygon(polyline(xs, ys), fill=rgba(colour))
    if style == 0:  # beanie: folded band
        pen.polygon([(xs[0], ys[0]), (xs[-1], ys[-1]), (xs[-1] - 1, hat_y - 9), (xs[0] + 1, hat_y - 9)],
                    fill=rgba(dark))
    elif style == 1:  # cap: brim over the forehead
        pen.ellipse([cx - fw - 6.0, hat_y - 6.0, cx + fw + 6.0, hat_y + 6.0], fill=rgba(dark))
    else:  # brimmed hat: wide brim and a band
        pen.ellipse([cx - fw - 32.0, hat_y - 9.0, cx + fw + 32.0, hat_y + 5.0], fill=rgba(colour))
        pen.ellipse([cx - fw - 32.0, hat_y - 9.0, cx + fw + 32.0, hat_y + 5.0], outline=rgba(dark), width=2)
        pen.rectangle([cx - fw - 2.0, hat_y - 14.0, cx + fw + 2.0, hat_y - 8.0], fill=rgba(dark))


def draw_glasses(pen: Pen, factors: FactorRow, geometry: FaceGeometry) -> None:
    """Clear or dark (sunglasses) lenses in one of three frame shapes, with temples to the ears and a bridge."""
    cx, ey, ew, eye = geometry.center_x, geometry.eye_y, geometry.eye_half_width, geometry.eye_offset
    frame = GLASSES_COLOURS[int(factors["glasses_colour"]) % len(GLASSES_COLOURS)]
    sun = bool(factors["sunglasses"])
    style = int(factors["glasses_style"]) % 3
    hw, hh = ew + 5.5, max(float(factors["eye_h"]), 4.0) + 5.0
    lens = rgba((24, 24, 34), 0.88) if sun else rgba((200, 220, 240), 0.18)
    for s in (-1, 1):
        ex = cx + s * eye
        box = [ex - hw, ey - hh + 1.0, ex + hw, ey + hh + 1.0]
        if style == 0:
            pen.rounded_rectangle(box, radius=5, fill=lens)
            pen.rounded_rectangle(box, radius=5, outline=rgba(frame), width=3)
        elif style == 1:
            pen.ellipse(box, fill=lens)
            pen.ellipse(box, outline=rgba(frame), width=3)
        else:
            pen.rectangle(box, fill=lens)
            pen.rectangle(box, outline=rgba(frame), width=3)
        temple_end = (cx + s * (geometry.face_half_width + 2.0), ey - 3.0)
        pen.line([(ex + s * hw, ey - hh + 4.0), temple_end], fill=rgba(frame), width=3)
    pen.line([(cx - eye + hw, ey - 2.0), (cx, ey - 4.0), (cx + eye - hw, ey - 2.0)], fill=rgba(frame), width=3)


def draw_earrings(pen: Pen, factors: FactorRow, geometry: FaceGeometry) -> None:
    """A hoop, a drop or a large stud at each ear lobe."""
    cx, ey, fw = geometry.center_x, geometry.eye_y, geometry.face_half_width
    colour = EARRING_COLOURS[int(factors["earring_colour"]) % len(EARRING_COLOURS)]
    outline = rgba(scale_rgb(colour, 0.45))
    style = int(factors["earring_style"]) % 3
    for s in (-1, 1):
        x, y = cx + s * (fw + 2.0), ey + 22.0
        if style == 0:  # hoop
            pen.ellipse([x - 7.0, y - 1.0, x + 7.0, y + 13.0], outline=rgba(colour), width=3)
        elif style == 1:  # drop
            pen.line([(x, y), (x, y + 6.0)], fill=rgba(colour), width=2)
            pen.ellipse([x - 5.0, y + 5.0, x + 5.0, y + 15.0], fill=rgba(colour), outline=outline, width=1)
        else:  # large stud
            pen.ellipse([x - 4.5, y - 3.0, x + 4.5, y + 6.0], fill=rgba(colour), outline=outline, width=1)


def draw_necklace(pen: Pen, factors: FactorRow, geometry: FaceGeometry, skin: RGB) -> None:
    """A chunky chain of large beads round the neck right under the jaw (which, drawn later, hides its ends) with a
    pendant below the chin: high enough to lie inside the 148-px crop the model sees, bold enough for 64 px."""
    cx, nw = geometry.center_x, geometry.neck_half_width
    chin = geometry.chin_y + (6.0 if bool(factors["Double_Chin"]) else 0.0)  # below the jowls
    colour = contrast_pick(NECKLACE_COLOURS[int(factors["necklace_colour"]) % len(NECKLACE_COLOURS)], skin)
    rim = rgba(scale_rgb(colour, 0.45) if luma(colour) > 110 else lerp_rgb(colour, (255, 255, 255), 0.55))
    t = np.linspace(0.0, math.pi, 11)
    xs = cx - nw * np.cos(t)
    ys = chin - 4.0 + 9.0 * np.sin(t) ** 0.6  # a flat U: across the whole neck just under the jaw
    pen.line(polyline(xs, ys), fill=rgba(colour), width=5)
    for x, y in zip(xs[1:-1], ys[1:-1]):
        pen.ellipse([x - 4.0, y - 4.0, x + 4.0, y + 4.0], fill=rgba(colour), outline=rim, width=1)
    pen.ellipse([cx - 6.0, chin + 6.0, cx + 6.0, chin + 19.0], fill=rgba(colour), outline=rim, width=1.5)


def draw_necktie(pen: Pen, factors: FactorRow, geometry: FaceGeometry) -> None:
    """A white shirt collar close under the chin and a tie knot and blade between its points."""
    cx, chin, nw = geometry.center_x, geometry.chin_y, geometry.neck_half_width
    tie = TIE_COLOURS[int(factors["tie_colour"]) % len(TIE_COLOURS)]
    for s in (-1, 1):
        pen.polygon([(cx + s * (nw + 4.0), chin - 8.0), (cx + s * 1.0, chin + 9.0),
                     (cx + s * (nw + 10.0), chin + 26.0), (cx + s * (nw + 14.0), chin + 4.0)], fill=rgba(SHIRT_COLOUR))
    pen.polygon([(cx - 7.0, chin + 1.0), (cx + 7.0, chin + 1.0), (cx + 4.5, chin + 11.0), (cx - 4.5, chin + 11.0)],
                fill=rgba(tie))
    pen.polygon([(cx - 4.5, chin + 11.0), (cx + 4.5, chin + 11.0), (cx + 9.0, chin + 52.0), (cx, chin + 60.0),
                 (cx - 9.0, chin + 52.0)], fill=rgba(scale_rgb(tie, 0.9)))
