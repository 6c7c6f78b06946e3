"""Where a procedural face's parts are: the CelebA-aligned frame, the photo's pose, the face's named positions
(FaceGeometry), and the annotations (landmarks, head box) that the writer stores, all from one factor row.

Everything is in CelebA-aligned coordinates (eyes at y=112, x=69/108 on the 178x218 image) before the pose; the
pose maps a point into the photo. The renderer draws with the same geometry through the same pose, so the
annotation files carry the exact positions of what was drawn. numpy only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from data.synthetic.factors import FactorRow

WIDTH, HEIGHT = 178, 218
CENTER_X = 88.5  # midpoint between the eyes
EYE_Y = 112.0


@dataclass(frozen=True)
class Pose:
    """One photo's pose: CelebA-aligned points rotated by its roll and scaled about the eyes' midpoint, then shifted."""

    matrix: tuple[float, float, float, float]  # (a, b, c, d): x' = a x + b y, y' = c x + d y about the midpoint
    translation: tuple[float, float]  # where the eyes' midpoint lands
    scale: float

    def apply(self, xs, ys) -> tuple[np.ndarray, np.ndarray]:
        """Points (xs, ys) of any matching shape mapped into the photo."""
        a, b, c, d = self.matrix
        xs = np.asarray(xs, dtype=float) - CENTER_X
        ys = np.asarray(ys, dtype=float) - EYE_Y
        return a * xs + b * ys + self.translation[0], c * xs + d * ys + self.translation[1]


def pose_of(factors: FactorRow) -> Pose:
    """The pose of one photo from its roll (degrees), scale and shift."""
    theta = math.radians(float(factors["roll"]))
    s = float(factors["scale"])
    matrix = (s * math.cos(theta), -s * math.sin(theta), s * math.sin(theta), s * math.cos(theta))
    return Pose(matrix, (CENTER_X + float(factors["shift_x"]), EYE_Y + float(factors["shift_y"])), s)


@dataclass(frozen=True)
class FaceGeometry:
    """Named positions of one face in CelebA-aligned coordinates (before the pose); widths are half widths, from
    the face's centre line to one side."""

    center_x: float  # the face's centre line, midway between the eyes
    eye_y: float  # height of the eye centres
    face_half_width: float  # at the cheekbones
    skull_top: float  # y of the top of the skull (hair excluded)
    chin_y: float
    jaw_exponent: float  # superellipse exponent of the jaw below the cheekbones: higher is squarer
    chin_half_width: float  # where the jaw meets the chin
    eye_offset: float  # each eye's centre from the centre line
    eye_half_width: float
    eye_half_height: float
    brow_y: float
    nose_tip_y: float
    mouth_y: float
    mouth_half_width: float  # at rest (mouth_shape widens a smile)
    hairline_y: float
    hair_volume: float  # how far the hair stands off the skull
    hair_end_y: float  # where long hair ends
    neck_half_width: float

    @property
    def skull_centre_y(self) -> float:
        """Centre of the skull's ellipse (its widest point), a little below the eyes."""
        return self.eye_y + 6.0

    @property
    def temple_y(self) -> float:
        """Height of the temples, where the front hair meets the side of the face."""
        return self.eye_y - 6.0


def face_geometry(factors: FactorRow) -> FaceGeometry:
    """The FaceGeometry of one factor row: the person's proportions with what the attributes change (an oval or
    chubby face, a double chin, narrow eyes, a big nose, a receding hairline, straight or wavy hair)."""
    male = bool(factors["Male"])
    jaw = float(factors["jaw"])
    face_half_width = float(factors["face_w"]) + (2.5 if male else 0.0)
    chin_y = EYE_Y + float(factors["chin_drop"]) + (2.0 if male else 0.0)
    if bool(factors["Oval_Face"]):  # long, narrow, tapering to a rounded chin
        face_half_width -= 2.0
        chin_y += 4.0
        jaw_exponent = 2.0 if male else 1.7
        chin_half_width = (6.0 + 2.0 * jaw) if male else (2.0 + 1.5 * jaw)
    else:
        jaw_exponent = 3.4 + 1.2 * jaw if male else 2.5 + 0.5 * jaw
        chin_half_width = 11.0 + 5.0 * jaw if male else 6.0 + 3.0 * jaw
    if bool(factors["Double_Chin"]):  # heavier jowls
        chin_half_width += 4.0
    if bool(factors["Chubby"]):  # a fuller, rounder face and neck
        face_half_width += 4.5
        chin_half_width += 5.0
        jaw_exponent += 0.8
        chin_y += 2.0
    hairline_y = EYE_Y - float(factors["hairline"]) + ((2.0 if bool(factors["Young"]) else -3.0) if male else 0.0)
    if bool(factors["Receding_Hairline"]):
        hairline_y -= 9.0
    hair_volume = float(factors["hair_vol"]) * (0.6 if male else 1.0)
    if bool(factors["Straight_Hair"]):  # sleek: lies flat on the head
        hair_volume *= 0.5
    elif bool(factors["Wavy_Hair"]):  # full and springy
        hair_volume += 3.0
    return FaceGeometry(
        center_x=CENTER_X,
        eye_y=EYE_Y,
        face_half_width=face_half_width,
        skull_top=EYE_Y - float(factors["skull_h"]),
        chin_y=chin_y,
        jaw_exponent=jaw_exponent,
        chin_half_width=chin_half_width,
        eye_offset=float(factors["eye_dx"]),
        eye_half_width=float(factors["eye_w"]),
        eye_half_height=float(factors["eye_h"]) * (0.42 if bool(factors["Narrow_Eyes"]) else 1.0),
        brow_y=EYE_Y - float(factors["brow_gap"]),
        nose_tip_y=EYE_Y + float(factors["nose_len"]) + (3.0 if bool(factors["Big_Nose"]) else 0.0),
        mouth_y=EYE_Y + float(factors["mouth_drop"]),
        mouth_half_width=float(factors["mouth_w"]),
        hairline_y=hairline_y,
        hair_volume=hair_volume,
        hair_end_y=EYE_Y + 52.0 + 66.0 * float(factors["hair_len"]),
        neck_half_width=(23.0 if male else 18.0) + (4.0 if bool(factors["Chubby"]) else 0.0),
    )


def mouth_shape(factors: FactorRow, geometry: FaceGeometry) -> tuple[float, float]:
    """Half width of the mouth as drawn and how far its corners rise above `mouth_y` (a smile lifts them)."""
    smiling = bool(factors["Smiling"])
    half_width = geometry.mouth_half_width * (1.25 if smiling else 1.0) * (1.12 if bool(factors["Big_Lips"]) else 1.0)
    return half_width, (5.5 if smiling else 0.0)


def head_outline(geometry: FaceGeometry) -> tuple[np.ndarray, np.ndarray]:
    """Skull ellipse over the top, superellipse jaw below the cheekbones (square for men, oval for women)."""
    cx, y0, fw = geometry.center_x, geometry.skull_centre_y, geometry.face_half_width
    tx, ty = ellipse_points(cx, y0, fw, y0 - geometry.skull_top, math.pi, 0.0, 32)
    u = np.linspace(0.0, 1.0, 20)[1:]
    p = geometry.jaw_exponent
    w = geometry.chin_half_width + (fw - geometry.chin_half_width) * (1.0 - u**p) ** (1.0 / p)
    ys = y0 + u * (geometry.chin_y - y0)
    xs = np.concatenate([tx, cx + w, (cx - w)[::-1]])
    yy = np.concatenate([ty, ys, ys[::-1]])
    return xs, yy


def half_width_at(geometry: FaceGeometry, y: float) -> float:
    """Half width of the head outline (head_outline's) at height y."""
    y0 = geometry.skull_centre_y
    if y <= y0:
        ry = y0 - geometry.skull_top
        return geometry.face_half_width * math.sqrt(max(0.0, 1.0 - ((y0 - y) / ry) ** 2))
    u = min(1.0, (y - y0) / (geometry.chin_y - y0))
    p = geometry.jaw_exponent
    chin = geometry.chin_half_width
    return chin + (geometry.face_half_width - chin) * (1.0 - u**p) ** (1.0 / p)


def ellipse_points(cx, cy, rx, ry, t0: float, t1: float, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(k,) x and y of the ellipse centred at (cx, cy) with radii rx, ry from angle t0 to t1 (radians,
    anticlockwise on the image from 3 o'clock)."""
    t = np.linspace(t0, t1, k)
    return cx + rx * np.cos(t), cy - ry * np.sin(t)


def polyline(xs, ys) -> list[tuple[float, float]]:
    """(x, y) pairs of two coordinate arrays, as the Pen's point lists."""
    return list(zip(np.asarray(xs, dtype=float).tolist(), np.asarray(ys, dtype=float).tolist()))


def landmarks(factors: FactorRow) -> np.ndarray:
    """CelebA's five landmarks as drawn, through the pose: (10,) float, in data.celeba.LANDMARK_COLUMNS order.

    Eye centres (the image's left eye first, as in CelebA), the nose tip and the mouth corners.
    """
    geometry = face_geometry(factors)
    cx, ey = geometry.center_x, geometry.eye_y
    mw, lift = mouth_shape(factors, geometry)
    xs = [cx - geometry.eye_offset, cx + geometry.eye_offset, cx, cx - mw, cx + mw]
    ys = [ey, ey, geometry.nose_tip_y, geometry.mouth_y - lift, geometry.mouth_y - lift]
    px, py = pose_of(factors).apply(xs, ys)
    return np.stack([px, py], axis=1).ravel()


def face_box(factors: FactorRow) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) of the head outline (skull and jaw, without hair or ears) through the pose, unclipped."""
    geometry = face_geometry(factors)
    xs, ys = head_outline(geometry)
    px, py = pose_of(factors).apply(xs, ys)
    return float(px.min()), float(py.min()), float(px.max()), float(py.max())


def annotation_arrays(rows: list[FactorRow]) -> tuple[np.ndarray, np.ndarray]:
    """The bbox and landmark file rows of factor rows: (n, 4) int (x_1, y_1, width, height) of the head outline
    clipped to the image (at least 1 px wide and high), and (n, 10) int landmarks, both rounded from the drawing."""
    marks = np.rint(np.array([landmarks(r) for r in rows], dtype=np.float64).reshape(-1, 10))
    boxes = np.array([face_box(r) for r in rows], dtype=np.float64).reshape(-1, 4)
    x0 = np.clip(np.floor(boxes[:, 0]), 0, WIDTH - 1)
    y0 = np.clip(np.floor(boxes[:, 1]), 0, HEIGHT - 1)
    x1 = np.clip(np.ceil(boxes[:, 2]), x0 + 1, WIDTH)
    y1 = np.clip(np.ceil(boxes[:, 3]), y0 + 1, HEIGHT)
    return np.stack([x0, y0, x1 - x0, y1 - y0], axis=1).astype(np.int64), marks.astype(np.int64)
