"""The features of a procedural face drawn over the skin: brows, eyes, nose, mouth, and what age, make-up,
cheekbones, a double chin, stubble and beards add."""
from __future__ import annotations

import numpy as np

from data.synthetic.factors import FactorRow
from data.synthetic.geometry import FaceGeometry, half_width_at, mouth_shape, polyline
from data.synthetic.pen import RGB, Pen, contrasting, lerp_rgb, rgba, scale_rgb

EYE_COLOURS = ((92, 56, 30), (52, 32, 22), (72, 112, 168), (84, 124, 84), (124, 98, 52), (112, 122, 134))
LIPSTICK_COLOURS = ((196, 18, 40), (214, 36, 108), (142, 16, 58), (212, 48, 36))
SHADOW_COLOURS = ((118, 58, 140), (78, 48, 40), (58, 88, 162), (64, 64, 78), (40, 110, 100))


def draw_brows(pen: Pen, factors: FactorRow, geometry: FaceGeometry, natural: RGB, skin: RGB) -> None:
    """Eyebrows in the person's natural hair colour, dark enough to show on `skin`: bushy, arched or plain."""
    cx, by = geometry.center_x, geometry.brow_y
    male = bool(factors["Male"])
    bushy = bool(factors["Bushy_Eyebrows"])
    w = float(factors["brow_w"])
    arched = bool(factors["Arched_Eyebrows"])
    thick = (7.5 + 1.5 * w) if bushy else ((3.2 + 1.0 * w) if male else (2.0 + 0.8 * w))
    if arched:  # groomed: defined and dark enough to show the shape
        thick = max(thick, 3.4)
    colour = contrasting(scale_rgb(natural, 0.8), skin, 0.4 if arched else 0.45)
    u = np.linspace(-1.0, 1.0, 9)
    if arched:  # rising from the inner end to a peak two thirds out, then dropping
        arch = 6.0 + 2.0 * float(factors["brow_arch"])
        profile = np.where(u < 0.35, (u + 1.0) / 1.35, 1.0 - 0.75 * (u - 0.35) / 0.65)
    else:  # nearly straight, a gentle curve
        arch = 1.0 + 1.0 * float(factors["brow_arch"])
        profile = 1.0 - u**2
    for s in (-1, 1):
        ex = cx + s * geometry.eye_offset
        half = geometry.eye_half_width + (4.5 if bushy else 2.5)
        xs = ex + s * u * half + s * 1.5
        centre = by - arch * profile  # (9,)
        thick_u = thick * (1.0 - 0.35 * (u > 0.3) * (u - 0.3))  # taper towards the outer end
        top = centre - thick_u / 2
        bot = centre + thick_u / 2
        pen.polygon(polyline(xs, top) + polyline(xs[::-1], bot[::-1]), fill=rgba(colour))


def draw_eyes(pen: Pen, factors: FactorRow, geometry: FaceGeometry, skin: RGB) -> None:
    """Almond eyes with iris, pupil and lid lines (narrow for Narrow_Eyes); Heavy_Makeup adds shadow and liner."""
    cx, ey, ew, eh = geometry.center_x, geometry.eye_y, geometry.eye_half_width, geometry.eye_half_height
    makeup = bool(factors["Heavy_Makeup"])
    iris = EYE_COLOURS[int(factors["eye_colour"]) % len(EYE_COLOURS)]
    line_col = (30, 22, 22)
    u = np.linspace(-1.0, 1.0, 11)
    for s in (-1, 1):
        ex = cx + s * geometry.eye_offset
        if makeup:  # eye shadow up to the brow and a heavy liner with a wing
            shadow = SHADOW_COLOURS[int(factors["shadow_colour"]) % len(SHADOW_COLOURS)]
            pen.ellipse([ex - ew - 4.0, ey - eh - 9.0, ex + ew + 4.0, ey + 2.0], fill=rgba(shadow, 0.75))
        xs = ex + u * ew
        top = ey - eh * np.sqrt(1.0 - u**2) - 0.6 * eh * (1.0 - u**2) * (s * u > 0)  # almond, fuller outwards
        bot = ey + eh * 0.8 * np.sqrt(1.0 - u**2)
        pen.polygon(polyline(xs, top) + polyline(xs[::-1], bot[::-1]), fill=rgba((236, 232, 226)))
        ir = min(float(factors["eye_h"]) * 0.95, ew * 0.55)
        ih = min(ir, eh * 0.9)
        pen.ellipse([ex - ir, ey - ih, ex + ir, ey + ih * 0.9], fill=rgba(iris))
        pr = ir * 0.45
        pen.ellipse([ex - pr, ey - min(pr, ih * 0.8), ex + pr, ey + min(pr, ih * 0.8)], fill=rgba((12, 10, 10)))
        pen.line(polyline(xs, top), fill=rgba(line_col), width=4 if makeup else 2)
        if makeup:
            pen.line([(ex + s * ew, top[-1 if s > 0 else 0]), (ex + s * (ew + 5.0), ey - eh - 2.0)],
                     fill=rgba(line_col), width=3)
        pen.line(polyline(xs, bot), fill=rgba(scale_rgb(skin, 0.72)), width=1)


def draw_nose(pen: Pen, factors: FactorRow, geometry: FaceGeometry, skin: RGB) -> None:
    """The tip sits at (center_x, nose_tip_y), the nose landmark; Big_Nose is wide and long, Pointy_Nose narrow and
    sharp."""
    cx, ey, ny = geometry.center_x, geometry.eye_y, geometry.nose_tip_y
    big, pointy = bool(factors["Big_Nose"]), bool(factors["Pointy_Nose"])
    nw = float(factors["nose_w"]) * (1.5 if big else 1.0) * (0.75 if pointy else 1.0)
    shadow = scale_rgb(skin, 0.78)
    dark = scale_rgb(skin, 0.45)
    if big:  # broad wings and a round tip
        for s in (-1, 1):
            pen.ellipse([cx + s * nw * 0.8 - 4.5, ny - 6.0, cx + s * nw * 0.8 + 4.5, ny + 2.5],
                        fill=rgba(scale_rgb(skin, 0.7), 0.9))
        pen.ellipse([cx - 5.5, ny - 8.0, cx + 5.5, ny + 1.0], fill=rgba(scale_rgb(skin, 1.08)))
    pen.line([(cx + 3.0, ey + 4.0), (cx + 4.0, ny - 6.0)], fill=rgba(shadow, 0.8), width=2)
    if pointy:  # sharp ridge converging on a bright point
        pen.line([(cx - 4.0, ey + 8.0), (cx - 2.0, ny - 1.0)], fill=rgba(scale_rgb(skin, 0.5)), width=2.5)
        pen.line([(cx + 4.0, ey + 8.0), (cx + 2.0, ny - 1.0)], fill=rgba(scale_rgb(skin, 0.5)), width=2.5)
        pen.polygon([(cx - 4.0, ny - 2.5), (cx + 4.0, ny - 2.5), (cx, ny + 3.5)], fill=rgba(scale_rgb(skin, 0.4)))
        pen.ellipse([cx - 2.0, ny - 7.0, cx + 2.0, ny - 2.5], fill=rgba(lerp_rgb(skin, (255, 250, 244), 0.5)))
    else:
        pen.arc([cx - nw, ny - 7.0, cx + nw, ny + 2.0], 20, 160, fill=rgba(shadow), width=2)
    r = 3.2 if big else 2.2
    for s in (-1, 1):
        pen.ellipse([cx + s * nw * 0.45 - r, ny - 1.5, cx + s * nw * 0.45 + r, ny + 1.2 + (0.8 if big else 0.0)],
                    fill=rgba(dark))


def draw_mouth(pen: Pen, factors: FactorRow, geometry: FaceGeometry, skin: RGB) -> None:
    """Lips (big, with lipstick, thinner with age), open with teeth or closed, and a smile's cheeks and creases."""
    cx, my, ey = geometry.center_x, geometry.mouth_y, geometry.eye_y
    male = bool(factors["Male"])
    smiling = bool(factors["Smiling"])
    open_ = bool(factors["Mouth_Slightly_Open"])
    mw, lift = mouth_shape(factors, geometry)
    big = bool(factors["Big_Lips"])
    curv = 4.5 if smiling else 0.4
    gap = (8.0 if smiling else 5.5) if open_ else 0.0
    thin = (0.85 if male else 1.0) * (0.8 if smiling else 1.0) * (0.85 if not bool(factors["Young"]) else 1.0)
    lu = float(factors["lip_u"]) * thin * (1.9 if big else 1.0)
    ll = float(factors["lip_l"]) * thin * (2.0 if big else 1.0)
    u = np.linspace(-1.0, 1.0, 15)
    xs = cx + u * mw
    bell = np.sqrt(np.clip(1.0 - u**2, 0.0, 1.0))
    centre = my - lift * u**2 + curv * (1.0 - u**2)
    up_open = centre - gap * 0.35 * bell
    lo_open = centre + gap * 0.65 * bell
    cupid = 1.2 * np.exp(-((np.abs(u) - 0.25) ** 2) / 0.02)
    up_top = up_open - lu * bell - cupid
    lo_bot = lo_open + ll * bell
    if bool(factors["Wearing_Lipstick"]):
        lip = LIPSTICK_COLOURS[int(factors["lipstick_colour"]) % len(LIPSTICK_COLOURS)]
    else:
        lip = lerp_rgb(skin, (176, 92, 90), (0.3 if male else 0.35) + (0.25 if big else 0.0))
    if big:  # full lips cast a shadow under the lower one
        pen.line(polyline(xs[2:-2], lo_bot[2:-2] + 2.0), fill=rgba(scale_rgb(skin, 0.45), 0.9), width=3)
    pen.polygon(polyline(xs, up_top) + polyline(xs[::-1], lo_bot[::-1]), fill=rgba(lip))
    if open_:
        pen.polygon(polyline(xs, up_open) + polyline(xs[::-1], lo_open[::-1]), fill=rgba((52, 18, 24)))
        if smiling:
            teeth_bot = up_open + gap * 0.42 * bell
            sel = np.abs(u) <= 0.8
            pen.polygon(polyline(xs[sel], up_open[sel]) + polyline(xs[sel][::-1], teeth_bot[sel][::-1]),
                        fill=rgba((238, 234, 222)))
    else:
        pen.line(polyline(xs, centre), fill=rgba(scale_rgb(lip, 0.45)), width=2)
    if smiling:  # raised cheeks and short smile creases beside the corners
        for s in (-1, 1):
            x = cx + s * (mw + 3.5)
            ex = cx + s * (geometry.eye_offset + 2.0)
            pen.ellipse([ex - 10.0, ey + 14.0, ex + 10.0, ey + 26.0], fill=rgba(scale_rgb(skin, 1.18), 0.6))
            pen.line([(x - s * 1.0, my - lift - 8.0), (x + s * 2.0, my - lift), (x, my - lift + 7.0)],
                     fill=rgba(scale_rgb(skin, 0.55)), width=2.5)


def draw_age(pen: Pen, factors: FactorRow, geometry: FaceGeometry, skin: RGB) -> None:
    """Lines of an older face: across the forehead, crow's feet, and from the nose to the mouth's corners."""
    cx, ey, my = geometry.center_x, geometry.eye_y, geometry.mouth_y
    line = rgba(scale_rgb(skin, 0.6))
    for k in range(3):  # forehead lines (bangs or a hat may hide them, as in life)
        y = geometry.brow_y - 8.0 - 5.0 * k
        pen.arc([cx - 20.0, y - 3.0, cx + 20.0, y + 5.0], 200, 340, fill=line, width=2)
    for s in (-1, 1):
        ex = cx + s * geometry.eye_offset
        x0 = ex + s * (geometry.eye_half_width + 2.0)
        for dy in (-3.0, 0.0, 3.0):  # crow's feet
            pen.line([(x0, ey + dy * 0.5), (x0 + s * 6.0, ey + dy * 1.6)], fill=line, width=1)
        nx = cx + s * (float(factors["nose_w"]) + 2.0)
        pen.line([(nx, geometry.nose_tip_y - 3.0), (nx + s * 7.0, my - 2.0), (nx + s * 9.0, my + 8.0)], fill=line,
                 width=2)


def draw_bags(pen: Pen, geometry: FaceGeometry, skin: RGB) -> None:
    """Puffy, darker bags under the eyes with a crease below."""
    cx, ey, ew = geometry.center_x, geometry.eye_y, geometry.eye_half_width
    puff = rgba(lerp_rgb(scale_rgb(skin, 0.72), (96, 60, 96), 0.2), 0.7)  # darker and a little purple
    crease = rgba(scale_rgb(skin, 0.5))
    for s in (-1, 1):
        ex = cx + s * geometry.eye_offset
        u = np.linspace(-1.0, 1.0, 9)
        xs = ex + u * (ew + 1.5)
        upper = ey + 3.0 + 0.0 * u
        lower = ey + 4.0 + 6.5 * np.sqrt(1.0 - u**2)
        pen.polygon(polyline(xs, upper) + polyline(xs[::-1], lower[::-1]), fill=puff)
        pen.line(polyline(xs, lower), fill=crease, width=2)


def draw_high_cheekbones(pen: Pen, geometry: FaceGeometry, skin: RGB) -> None:
    """A lit ridge below each outer eye and the hollow under it, slanting towards the mouth."""
    cx, ey, fw, eye = geometry.center_x, geometry.eye_y, geometry.face_half_width, geometry.eye_offset
    for s in (-1, 1):
        x = cx + s * (eye + 5.0)
        pen.ellipse([x - 9.0, ey + 9.0, x + 9.0, ey + 16.0], fill=rgba(lerp_rgb(skin, (255, 248, 240), 0.45), 0.7))
        pen.polygon([(cx + s * (fw - 1.0), ey + 15.0), (cx + s * (eye + 3.0), ey + 19.0),
                     (cx + s * (geometry.mouth_half_width + 5.0), ey + 31.0), (cx + s * (eye + 1.0), ey + 23.5),
                     (cx + s * (fw - 2.0), ey + 21.0)], fill=rgba(scale_rgb(skin, 0.6), 0.75))


def draw_double_chin(pen: Pen, geometry: FaceGeometry, skin: RGB) -> None:
    """A fold of skin under the chin with its shadow and a crease above."""
    cx, chin = geometry.center_x, geometry.chin_y
    w = max(geometry.chin_half_width, 8.0) + 8.0
    pen.ellipse([cx - w, chin - 8.0, cx + w, chin + 7.0], fill=rgba(scale_rgb(skin, 0.97)))
    pen.arc([cx - w, chin - 6.0, cx + w, chin + 8.0], 20, 160, fill=rgba(scale_rgb(skin, 0.5)), width=2)  # its shadow
    pen.arc([cx - w + 3.0, chin - 18.0, cx + w - 3.0, chin - 3.0], 25, 155, fill=rgba(scale_rgb(skin, 0.45)), width=3)


def _shadow_outline(geometry: FaceGeometry) -> list[tuple[float, float]]:
    """Cheeks, jaw, chin and upper lip, where stubble and beards grow."""
    cx = geometry.center_x
    outer = []
    for y in np.linspace(geometry.eye_y + 8.0, geometry.chin_y, 12):
        outer.append((cx + half_width_at(geometry, y) + 0.5, y))
    outer += [(cx - x + cx, y) for x, y in outer[::-1]]
    outer[len(outer) // 2 - 1] = (outer[len(outer) // 2 - 1][0], geometry.chin_y + 1.5)
    return outer


def draw_stubble(pen: Pen, geometry: FaceGeometry, colour: RGB) -> None:
    """5_o_Clock_Shadow: a blue-grey tint over cheeks, jaw, chin and upper lip."""
    cx, mw, fw = geometry.center_x, geometry.mouth_half_width, geometry.face_half_width
    ey, ny = geometry.eye_y, geometry.nose_tip_y
    outer = _shadow_outline(geometry)
    half = len(outer) // 2
    # up to the nose: the upper lip is shaded too
    inner = [(cx - fw + 9.0, ey + 14.0), (cx - mw - 6.0, ny + 2.0), (cx + mw + 6.0, ny + 2.0),
             (cx + fw - 9.0, ey + 14.0)]
    tint = rgba(lerp_rgb(scale_rgb(colour, 0.5), (40, 48, 64), 0.3), 0.5)  # blue-grey, as shaved stubble looks
    pen.polygon(outer[:half] + outer[half:] + inner, fill=tint)


def draw_facial_hair(pen: Pen, factors: FactorRow, geometry: FaceGeometry, colour: RGB) -> None:
    """A beard along the jaw (jaw_beard), a goatee and a mustache, as thick as `beard_density`."""
    cx, my, mw, fw = geometry.center_x, geometry.mouth_y, geometry.mouth_half_width, geometry.face_half_width
    ey, chin = geometry.eye_y, geometry.chin_y
    density = float(factors["beard_density"])
    smiling = bool(factors["Smiling"])
    lift = 5.5 if smiling else 0.0  # follows the mouth corners
    if bool(factors["jaw_beard"]):
        # stubble / beard over cheeks, jaw and chin, leaving the mouth
        outer = _shadow_outline(geometry)
        right = outer[: len(outer) // 2]
        left = outer[len(outer) // 2:]
        inner = [(cx - fw + 9.0, ey + 14.0), (cx - mw - 6.0, my - 6.0), (cx - mw - 4.0, my + 5.0),
                 (cx, my + 11.0), (cx + mw + 4.0, my + 5.0), (cx + mw + 6.0, my - 6.0), (cx + fw - 9.0, ey + 14.0)]
        pen.polygon(right + left + inner, fill=rgba(colour, 0.65 + 0.3 * density))
    if bool(factors["Goatee"]):
        top = my + 6.0
        gw = 10.0 + 4.0 * density
        pen.polygon([(cx - gw, top), (cx + gw, top), (cx + gw * 0.8, chin - 3.0), (cx + gw * 0.4, chin + 2.0),
                     (cx - gw * 0.4, chin + 2.0), (cx - gw * 0.8, chin - 3.0)], fill=rgba(colour, 0.95))
    if bool(factors["Mustache"]):
        ny = geometry.nose_tip_y + 3.0
        low = my - 2.5 - float(factors["lip_u"]) * 0.5
        w = mw + 3.0
        pen.polygon([(cx - 3.0, ny), (cx + 3.0, ny), (cx + w * 0.8, ny + 2.0), (cx + w, low - lift + 4.0),
                     (cx + w - 3.0, low - lift + 5.0),
                     (cx, low), (cx - w + 3.0, low - lift + 5.0), (cx - w, low - lift + 4.0), (cx - w * 0.8, ny + 2.0)],
                    fill=rgba(colour, 0.97))


def draw_rosy_cheeks(pen: Pen, geometry: FaceGeometry) -> None:
    """A pink flush on each cheek."""
    cx, ey = geometry.center_x, geometry.eye_y
    for s in (-1, 1):
        x = cx + s * (geometry.eye_offset + 3.0)
        pen.ellipse([x - 12.0, ey + 15.0, x + 12.0, ey + 32.0], fill=rgba((232, 56, 86), 0.62))
