"""The hair of a procedural face: its colour, the dome and long locks behind and in front of the face, the fringe
or hairline, straight and wavy texture, sideburns, and a bald scalp with its fringe."""
from __future__ import annotations

import math

import numpy as np

from data.synthetic.factors import HAIR_BY_CODE, HAIR_OTHER, FactorRow
from data.synthetic.geometry import EYE_Y, FaceGeometry, ellipse_points, half_width_at, polyline
from data.synthetic.pen import RGB, RGBA, Pen, lerp_rgb, rgba, scale_rgb

# dark and light end of each hair colour's palette, by hair code (HAIR_BY_CODE's, then HAIR_OTHER's);
# `hair_shade` in [0, 1] picks a point between them
HAIR_PALETTES = (
    ((16, 14, 16), (48, 40, 38)),  # black
    ((74, 46, 26), (128, 86, 50)),  # brown
    ((200, 163, 92), (244, 220, 152)),  # blond
    ((152, 152, 154), (220, 218, 215)),  # gray
    ((128, 42, 20), (200, 88, 36)),  # red / auburn
)
WAVE_AMPLITUDE = 4.5  # Wavy_Hair: how far the outline swings out (px on the 178x218 image)
WAVE_LENGTH = 22.0  # ... and the period of the waves down the sides and of the bands across long hair
_DOME_LUMPS = 14  # lumps over the full circle of the hair dome's outline (7 across the top)


def hair_code(factors: FactorRow) -> int:
    """The hair colour code that is rendered: the set colour attribute, else red/auburn."""
    for code, name in enumerate(HAIR_BY_CODE):
        if bool(factors[name]):
            return code
    return HAIR_OTHER


def hair_rgb(code: int, shade: float) -> RGB:
    """The colour of hair code `code` at `hair_shade` `shade`."""
    dark, light = HAIR_PALETTES[code]
    return lerp_rgb(dark, light, shade)


def _dome_lump(t: np.ndarray) -> np.ndarray:
    """How far Wavy_Hair's dome outline bulges out at angles t: _DOME_LUMPS rounded lumps round the circle."""
    return WAVE_AMPLITUDE * (0.5 - 0.5 * np.cos(_DOME_LUMPS * (t - math.pi / 2)))


def hair_dome_radii(geometry: FaceGeometry) -> tuple[float, float]:
    """Horizontal and vertical radius of the hair dome: the skull's ellipse with the hair's volume around it."""
    vol = geometry.hair_volume
    return geometry.face_half_width + vol, geometry.skull_centre_y - geometry.skull_top + vol


def _dome(factors: FactorRow, geometry: FaceGeometry, t0: float, t1: float, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Outer edge of the hair dome from angle t0 to t1 (as ellipse_points); Wavy_Hair gives it big rounded lumps."""
    cx, y0 = geometry.center_x, geometry.skull_centre_y
    rx, ry = hair_dome_radii(geometry)
    if not bool(factors["Wavy_Hair"]):
        return ellipse_points(cx, y0, rx, ry, t0, t1, k)
    t = np.linspace(t0, t1, 3 * k)
    lump = _dome_lump(t)
    return cx + (rx + lump) * np.cos(t), y0 - (ry + lump) * np.sin(t)


def _side_edge(factors: FactorRow, geometry: FaceGeometry, s: int, y_start: float,
               y_end: float) -> list[tuple[float, float]]:
    """Outer edge of long hair on side s from y_start (face half width + hair volume) down to y_end (flared out);
    waving for Wavy_Hair."""
    if not bool(factors["Wavy_Hair"]):
        ys = np.array([y_start, y_end])
    else:
        ys = np.linspace(y_start, y_end, max(2, int((y_end - y_start) / 3.0)))
    return polyline(geometry.center_x + s * _side_offset(factors, geometry, ys, y_start, y_end), ys)


def _side_offset(factors: FactorRow, geometry: FaceGeometry, ys, y_start: float, y_end: float) -> np.ndarray:
    """Distance of long hair's outer edge from the face's centre line at heights ys: face half width + hair volume
    at y_start, flared out towards y_end, plus Wavy_Hair's swing."""
    ys = np.asarray(ys, dtype=float)
    flare = 4.0 + 6.0 * float(factors["hair_len"])
    flared = flare * (ys - y_start) / max(y_end - y_start, 1.0)
    return geometry.face_half_width + geometry.hair_volume + flared + _side_wave(factors, ys)


def _side_wave(factors: FactorRow, ys) -> np.ndarray:
    """Sideways swing of Wavy_Hair at heights ys (0 otherwise): crests where the light bands cross the locks."""
    if not bool(factors["Wavy_Hair"]):
        return np.zeros_like(np.asarray(ys, dtype=float))
    phase = 2.0 * math.pi * (np.asarray(ys, dtype=float) - EYE_Y + 16.0) / WAVE_LENGTH  # crests at ey - 16, ey + 6
    return WAVE_AMPLITUDE * (0.5 + 0.5 * np.cos(phase))


def draw_back_hair(pen: Pen, factors: FactorRow, geometry: FaceGeometry, colour: RGB) -> None:
    """The hair behind the head: a short dome for men, a dome with long hair down the sides for women."""
    cx, y0, fw = geometry.center_x, geometry.skull_centre_y, geometry.face_half_width
    if bool(factors["Male"]):
        # short: a dome a few px outside the skull, down to the ears
        xs, ys = _dome(factors, geometry, math.pi + 0.12, -0.12, 30)
        pen.polygon(polyline(xs, ys), fill=rgba(colour))
        return
    y_end = geometry.hair_end_y
    xs, ys = _dome(factors, geometry, math.pi, 0.0, 30)
    right = _side_edge(factors, geometry, 1, y0, y_end - 10.0) + [(cx + fw * 0.7, y_end), (cx - fw * 0.7, y_end)]
    left = _side_edge(factors, geometry, -1, y0, y_end - 10.0)[::-1]
    pen.polygon(polyline(xs, ys) + right + left, fill=rgba(colour))


def draw_front_hair(pen: Pen, factors: FactorRow, geometry: FaceGeometry, colour: RGB, dark: RGB, skin: RGB) -> None:
    """The hair over the head: the dome down to a fringe (Bangs) or the hairline, a parting and a sheen, hair in
    front of the ears (short for men, long locks for women), and straight or wavy texture."""
    cx, y0, fw, vol = geometry.center_x, geometry.skull_centre_y, geometry.face_half_width, geometry.hair_volume
    ry = hair_dome_radii(geometry)[1]
    temple_y = geometry.temple_y
    # outer edge: the hair dome from the left temple over the top to the right temple
    t_side = math.asin(min(1.0, (y0 - temple_y) / ry))
    ox, oy = _dome(factors, geometry, math.pi - t_side, t_side, 28)
    inner, edge = _fringe_or_hairline(pen, factors, geometry, skin, polyline(ox, oy))
    pen.polygon(polyline(ox, oy) + inner, fill=rgba(colour))
    # a parting line and a sheen give the dome some structure
    part = float(factors["parting"])
    px = cx + 14.0 * part
    top = geometry.skull_top
    pen.line([(px, top - vol + 3.0), (px + 4.0 * part, geometry.hairline_y - 1.0)], fill=rgba(dark, 0.8), width=2)
    pen.arc([cx - fw * 0.7, top - vol + 4.0, cx + fw * 0.7, top + 30.0], 200, 330,
            fill=rgba(scale_rgb(colour, 1.25), 0.6), width=3)
    _draw_side_hair(pen, factors, geometry, colour, dark)
    if bool(factors["Straight_Hair"]) or bool(factors["Wavy_Hair"]):
        draw_hair_texture(pen, factors, geometry, colour, edge, t_side)


def _fringe_or_hairline(pen: Pen, factors: FactorRow, geometry: FaceGeometry, skin: RGB,
                        outer: list[tuple[float, float]]) -> tuple[list[tuple[float, float]], tuple[np.ndarray, ...]]:
    """The front hair's lower edge, right to left: a fringe (Bangs, whose shadow on the forehead is drawn here,
    under the hair) or the hairline. Returns it as points and as (x, y) arrays of increasing x (for texture)."""
    cx, fw = geometry.center_x, geometry.face_half_width
    temple_y = geometry.temple_y
    part = float(factors["parting"])
    if bool(factors["Bangs"]):
        # fringe across the forehead down to just above the brows, ragged lower edge, maybe side-swept
        k = 11
        xs = np.linspace(cx + fw - 1.0, cx - fw + 1.0, k)
        fringe = geometry.brow_y - 4.5
        sweep = 5.0 * part * (xs - cx) / fw
        zig = np.where(np.arange(k) % 2 == 0, 0.0, -3.0)
        ys = fringe + sweep + zig
        ys[0] = ys[-1] = temple_y
        # the fringe's shadow on the forehead keeps light bangs visible on light skin
        pen.polygon(outer + polyline(xs, ys + 3.0), fill=rgba(scale_rgb(skin, 0.62), 0.85))
        return polyline(xs, ys), (xs[::-1], np.minimum(ys, fringe + sweep - 3.0)[::-1])  # the fringe's highest points
    xs = np.linspace(cx + fw - 2.0, cx - fw + 2.0, 15)
    rel = np.abs(xs - cx - 6.0 * part) / fw
    # a receding hairline is high and goes back further still at the temples (an M)
    temple_edge = temple_y - (16.0 if bool(factors["Receding_Hairline"]) else 0.0)
    hairline = geometry.hairline_y
    ys = hairline + (temple_edge - hairline) * np.clip(rel, 0, 1) ** (4.0 if bool(factors["Male"]) else 2.2)
    return polyline(xs, ys), (xs[::-1], ys[::-1])


def _draw_side_hair(pen: Pen, factors: FactorRow, geometry: FaceGeometry, colour: RGB, dark: RGB) -> None:
    """Hair in front of the ears: short for men, long locks framing the face for women."""
    cx, fw, ey, temple_y = geometry.center_x, geometry.face_half_width, geometry.eye_y, geometry.temple_y
    if bool(factors["Male"]):
        for s in (-1, 1):  # short hair in front of the ears (long Sideburns are drawn over it)
            pen.polygon(
                [(cx + s * (fw + 1.0), temple_y - 2), (cx + s * (fw - 4.0), temple_y - 2),
                 (cx + s * (fw - 4.0), ey - 1.0), (cx + s * (fw - 0.5), ey - 1.0)],
                fill=rgba(colour),
            )
        return
    y_end = geometry.hair_end_y
    for s in (-1, 1):  # long locks framing the face, over the ears
        inner = []
        for y in np.linspace(temple_y - 10.0, min(geometry.chin_y - 8.0, y_end - 6.0), 7):
            inner.append((cx + s * (half_width_at(geometry, y) - 4.0), y))
        inner.append((cx + s * (geometry.neck_half_width + 2.0), y_end - 4.0))
        outer = [(cx + s * (fw * 0.7), y_end)] + _side_edge(factors, geometry, s, temple_y - 10.0, y_end - 10.0)[::-1]
        pen.polygon(inner + outer, fill=rgba(colour))
        pen.line([(cx + s * (fw + 2.0), temple_y), (cx + s * (fw + 5.0), y_end - 12.0)], fill=rgba(dark, 0.5), width=2)


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
                runs.append(polyline(xs[start:i], ys[start:i]))
            start = None
    return runs


def draw_hair_texture(pen: Pen, factors: FactorRow, geometry: FaceGeometry, colour: RGB,
                      edge: tuple[np.ndarray, ...], t_side: float) -> None:
    """Coarse enough to survive 64 px: Straight_Hair lies flat with long straight sheen bands from the crown and
    down the locks; Wavy_Hair has a lumpy, waving outline (see _dome/_side_edge) and broad light and dark bands
    across the dome (following its lumps) and across the locks (at the outline's crests and troughs). `edge` is the
    hair's lower edge (_fringe_or_hairline's), t_side the angle where the dome meets the temples."""
    dark = rgba(scale_rgb(colour, 0.45), 0.9)
    light = rgba(lerp_rgb(colour, (255, 255, 255), 0.5), 0.9)
    if bool(factors["Straight_Hair"]):
        _draw_straight_texture(pen, factors, geometry, edge, light, dark)
    else:
        _draw_wavy_texture(pen, factors, geometry, edge, t_side, light, dark)


def _lock_edges(factors: FactorRow, geometry: FaceGeometry, s: int, y: float) -> tuple[float, float]:
    """Inner and outer x of side s's long lock at height y (as _draw_side_hair draws it)."""
    temple_y, y_end = geometry.temple_y, geometry.hair_end_y
    x_out = float(_side_offset(factors, geometry, [y], temple_y - 10.0, y_end - 10.0)[0])
    return geometry.center_x + s * (half_width_at(geometry, y) - 4.0), geometry.center_x + s * x_out


def _lock_end(geometry: FaceGeometry) -> float:
    """How far down the locks texture goes."""
    return min(geometry.chin_y - 8.0, geometry.hair_end_y - 14.0)


def _draw_straight_texture(pen: Pen, factors: FactorRow, geometry: FaceGeometry, edge: tuple[np.ndarray, ...],
                           light: RGBA, dark: RGBA) -> None:
    """Straight_Hair: vertical sheen bands from the dome's top to the hairline, and one down each long lock."""
    cx, y0, fw, temple_y = geometry.center_x, geometry.skull_centre_y, geometry.face_half_width, geometry.temple_y
    rx, ry = hair_dome_radii(geometry)
    for k in range(-3, 4):  # vertical bands from the dome's top down to the hairline, broad light ones between
        x = cx + k * 0.27 * fw
        y_top = y0 - ry * math.sqrt(max(0.0, 1.0 - ((x - cx) / rx) ** 2)) + 2.5
        ys = np.linspace(y_top, temple_y, 12)
        wide = k % 2 != 0
        for run in _runs_above(np.full(12, x), ys, edge, 3.0 if wide else 2.0):
            pen.line(run, fill=light if wide else dark, width=6 if wide else 3)
    if bool(factors["Male"]):
        return
    lock_end = _lock_end(geometry)
    for s in (-1, 1):  # a long straight highlight down each lock, a dark strand inside it
        i0, o0 = _lock_edges(factors, geometry, s, temple_y - 4.0)
        i1, o1 = _lock_edges(factors, geometry, s, lock_end)
        pen.line([((i0 + o0) / 2, temple_y - 4.0), ((i1 + o1) / 2, lock_end)], fill=light, width=5)
        pen.line([(0.75 * i0 + 0.25 * o0, temple_y), (0.75 * i1 + 0.25 * o1, lock_end)], fill=dark, width=3)


def _draw_wavy_texture(pen: Pen, factors: FactorRow, geometry: FaceGeometry, edge: tuple[np.ndarray, ...],
                       t_side: float, light: RGBA, dark: RGBA) -> None:
    """Wavy_Hair: bands parallel to the dome's lumpy outline, and bands across each long lock."""
    cx, y0 = geometry.center_x, geometry.skull_centre_y
    rx, ry = hair_dome_radii(geometry)
    t = np.linspace(math.pi - t_side, t_side, 60)
    lump = _dome_lump(t)
    for inset, paint, width in ((5.0, dark, 5), (11.0, light, 5), (17.0, dark, 5)):  # dark / light / dark inwards
        xs = cx + (rx + lump - inset) * np.cos(t)
        ys = y0 - (ry + lump - inset) * np.sin(t)
        for run in _runs_above(xs, ys, edge, 3.0):
            pen.line(run, fill=paint, width=width)
    if bool(factors["Male"]):
        return
    temple_y, lock_end = geometry.temple_y, _lock_end(geometry)
    for s in (-1, 1):  # bands across each lock: light at the outline's crests, dark in its troughs
        y = temple_y - 10.0
        j = 0
        while y <= lock_end:
            x_in, x_out = _lock_edges(factors, geometry, s, y)
            x_in, x_out = x_in + s * 1.0, x_out - s * 1.5
            xm = (x_in + x_out) / 2
            pen.line([(x_in, y - 2.0), (xm, y + 2.0), (x_out, y - 2.0)], fill=light if j % 2 == 0 else dark, width=6)
            y += WAVE_LENGTH / 2
            j += 1


def draw_sideburns(pen: Pen, geometry: FaceGeometry, colour: RGB) -> None:
    """Long, thick sideburns down the cheeks in front of the ears."""
    cx, fw, ey = geometry.center_x, geometry.face_half_width, geometry.eye_y
    for s in (-1, 1):
        pen.polygon([(cx + s * (fw + 1.0), ey - 14.0), (cx + s * (fw - 7.5), ey - 14.0),
                     (cx + s * (fw - 8.5), ey + 28.0), (cx + s * (fw - 2.0), ey + 31.0)], fill=rgba(colour, 0.95))


def draw_bald(pen: Pen, geometry: FaceGeometry, natural: RGB, skin: RGB) -> None:
    """A bare, skin-coloured scalp: shaded towards its edge, with a shiny highlight, and a low fringe of the person's
    natural hair colour round the sides above the ears (grey only when the person's own colour is grey)."""
    cx, y0, fw, ey = geometry.center_x, geometry.skull_centre_y, geometry.face_half_width, geometry.eye_y
    top = geometry.skull_top
    ry = y0 - top
    # the scalp's edge in shadow: a darker band just inside the skull outline above the brows
    xs, ys = ellipse_points(cx, y0, fw, ry, math.pi - 0.55, 0.55, 24)
    ix, iy = ellipse_points(cx, y0 + 2.0, fw - 6.0, ry - 5.0, 0.6, math.pi - 0.6, 24)
    pen.polygon(polyline(xs, ys) + polyline(ix, iy), fill=rgba(scale_rgb(skin, 0.82), 0.8))
    # shine: a broad soft glow and a bright spot on the crown
    glow, spot = lerp_rgb(skin, (255, 255, 255), 0.3), lerp_rgb(skin, (255, 255, 255), 0.65)
    pen.ellipse([cx - fw * 0.55, top + 3.0, cx + fw * 0.35, top + 24.0], fill=rgba(glow, 0.6))
    pen.ellipse([cx - fw * 0.38, top + 6.0, cx + fw * 0.05, top + 15.0], fill=rgba(spot, 0.85))
    for s in (-1, 1):  # the fringe left above and behind the ears
        pen.polygon(
            [(cx + s * (fw + 4.5), ey - 22.0), (cx + s * (fw - 1.0), ey - 24.0), (cx + s * (fw - 4.5), ey - 14.0),
             (cx + s * (fw - 4.5), ey + 6.0), (cx + s * (fw + 1.0), ey + 10.0), (cx + s * (fw + 5.5), ey + 6.0)],
            fill=rgba(natural),
        )
