"""Procedural CelebA: faces drawn from a small generative model of CelebA's attributes, written in torchvision's layout.

`sample_factors` draws every image's generating factors (sex and age first, then all 40 CelebA attributes
conditional on them, identities shared by several images, CelebA's prevalences and correlations), `render` draws a
face from one row, `counterfactual` changes attributes of a row consistently (the same person, pose and light: a
ground-truth edit), and `generate_synthetic_celeba` writes `root/celeba/` with CelebA's file formats plus
`synthetic_factors.csv`.

Attractive is not drawn directly: it is the judgement `attractive_score(row) > 0`, a fixed logistic-style score of
other attributes plus a per-identity term (`attractive_noise`), see ATTRACTIVE_WEIGHTS.

The annotation files follow CelebA's formats, with two differences in meaning. `list_landmarks_align_celeba.txt`
holds the exact positions of what was drawn (eye centres, nose tip, mouth corners; "lefteye" is the eye on the
image's left), rounded to integers. `list_bbox_celeba.txt` cannot refer to in-the-wild photos as CelebA's does (there
are none): it holds the box of the head outline (skull and jaw, without hair and ears) in the aligned image, through
the pose, clipped to the image.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd
from tqdm import tqdm

from data._synthetic_render import (
    HAIR_COLOUR_ATTRIBUTES,
    HAIR_OTHER,
    HEIGHT,
    JPEG_QUALITY,
    WIDTH,
    annotation_arrays,
    encode_jpeg,
    render_chunk,
    render_factors,
)
from data.cache import preprocess_image
from data.celeba import CELEBA_ATTRIBUTES, LANDMARK_COLUMNS, PARTITION_NAMES
from data.io import atomic_path, atomic_write_json, atomic_write_text, available_cores, save_figure

GENERATOR_VERSION = 3
IMAGE_DIR = "img_align_celeba"
ATTR_FILE = "list_attr_celeba.txt"
PARTITION_FILE = "list_eval_partition.txt"
IDENTITY_FILE = "identity_CelebA.txt"
BBOX_FILE = "list_bbox_celeba.txt"
LANDMARKS_FILE = "list_landmarks_align_celeba.txt"
FACTORS_FILE = "synthetic_factors.csv"
META_FILE = "synthetic_meta.json"

# rendered CelebA attributes: all 40, in CelebA's official order
SYNTHETIC_ATTRIBUTES: tuple[str, ...] = CELEBA_ATTRIBUTES
# CelebA's prevalences (fraction positive): what sample_factors aims at
TARGET_PREVALENCE: dict[str, float] = {
    "5_o_Clock_Shadow": 0.111, "Arched_Eyebrows": 0.267, "Attractive": 0.513, "Bags_Under_Eyes": 0.205,
    "Bald": 0.022, "Bangs": 0.152, "Big_Lips": 0.241, "Big_Nose": 0.235, "Black_Hair": 0.239, "Blond_Hair": 0.148,
    "Blurry": 0.051, "Brown_Hair": 0.205, "Bushy_Eyebrows": 0.142, "Chubby": 0.058, "Double_Chin": 0.047,
    "Eyeglasses": 0.065, "Goatee": 0.063, "Gray_Hair": 0.042, "Heavy_Makeup": 0.387, "High_Cheekbones": 0.455,
    "Male": 0.417, "Mouth_Slightly_Open": 0.483, "Mustache": 0.042, "Narrow_Eyes": 0.115, "No_Beard": 0.835,
    "Oval_Face": 0.284, "Pale_Skin": 0.043, "Pointy_Nose": 0.277, "Receding_Hairline": 0.080, "Rosy_Cheeks": 0.066,
    "Sideburns": 0.057, "Smiling": 0.482, "Straight_Hair": 0.208, "Wavy_Hair": 0.320, "Wearing_Earrings": 0.189,
    "Wearing_Hat": 0.048, "Wearing_Lipstick": 0.472, "Wearing_Necklace": 0.123, "Wearing_Necktie": 0.073,
    "Young": 0.774,
}
# Attractive = attractive_score(row) > 0: this intercept plus these weights of the row's attributes plus the row's
# per-identity `attractive_noise` (standard logistic), so P(Attractive | attributes) = sigmoid(intercept + weights).
# Signs follow CelebA's correlations; the intercept puts the prevalence near CelebA's.
ATTRACTIVE_INTERCEPT = -1.25
ATTRACTIVE_WEIGHTS: dict[str, float] = {
    "Young": 1.4, "Male": -0.6, "Heavy_Makeup": 0.6, "Wearing_Lipstick": 0.4, "High_Cheekbones": 0.4,
    "Oval_Face": 0.4, "Arched_Eyebrows": 0.3, "Pointy_Nose": 0.3, "Chubby": -1.4, "Double_Chin": -0.9,
    "Bags_Under_Eyes": -0.8, "Big_Nose": -0.5, "Blurry": -0.9, "Bald": -0.7, "Gray_Hair": -0.5,
    "Receding_Hairline": -0.5, "Eyeglasses": -0.4,
}
# what counterfactual(row, {"Attractive": v}) changes, in order, until the score agrees: (attribute, new value)
_ATTRACTIVE_EDITS: dict[bool, tuple[tuple[str, bool], ...]] = {
    True: (("Blurry", False), ("Bags_Under_Eyes", False), ("Double_Chin", False), ("Chubby", False),
           ("Eyeglasses", False), ("Heavy_Makeup", True), ("Wearing_Lipstick", True), ("High_Cheekbones", True)),
    False: (("Heavy_Makeup", False), ("Wearing_Lipstick", False), ("High_Cheekbones", False), ("Bags_Under_Eyes", True),
            ("Double_Chin", True), ("Eyeglasses", True), ("Blurry", True)),
}
# CelebA's official split sizes: partitions are contiguous index blocks in this proportion
CELEBA_SPLIT_SIZES = (162770, 19867, 19962)

BOOL_FACTORS = ("jaw_beard", "sunglasses")  # rendered but not CelebA attributes
INT_FACTORS = (
    "identity", "hair_base", "eye_colour", "glasses_style", "glasses_colour", "hat_style", "hat_colour",
    "lipstick_colour", "shadow_colour", "earring_style", "earring_colour", "necklace_colour", "tie_colour",
    "cloth_r", "cloth_g", "cloth_b",
    "bg_r0", "bg_g0", "bg_b0", "bg_r1", "bg_g1", "bg_b1", "noise_seed",
)
FLOAT_FACTORS = (
    # identity
    "skin_tone", "skin_warm", "face_w", "skull_h", "chin_drop", "jaw", "eye_dx", "eye_w", "eye_h", "brow_gap", "brow_w",
    "brow_arch", "nose_len", "nose_w", "mouth_drop", "mouth_w", "lip_u", "lip_l", "hair_shade", "hair_len", "hair_vol",
    "hairline", "parting", "ear_size", "beard_density", "attractive_noise",
    # this photo
    "roll", "shift_x", "shift_y", "scale", "light_angle", "light_strength", "bg_angle", "noise_sigma",
)
FACTOR_COLUMNS: tuple[str, ...] = SYNTHETIC_ATTRIBUTES + BOOL_FACTORS + ("partition",) + INT_FACTORS + FLOAT_FACTORS
_HAIR = HAIR_COLOUR_ATTRIBUTES


# ----------------------------------------------------------------------------------------------------------------
# sampling


def _split_sizes(n: int) -> tuple[int, int, int]:
    total = sum(CELEBA_SPLIT_SIZES)
    train = int(round(n * CELEBA_SPLIT_SIZES[0] / total))
    valid = int(round(n * CELEBA_SPLIT_SIZES[1] / total))
    return train, valid, n - train - valid


def _images_per_identity(n: int) -> float:
    """~20 per identity at CelebA's size (202,599 images / 10,177 people), down to ~4 for small sets."""
    return float(np.clip(np.sqrt(n) / 22.0, 4.0, 20.0))


def _assign_identities(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int]:
    """Identity index (0..m-1) and split code (0/1/2) per image; splits are contiguous and identity-disjoint."""
    per = _images_per_identity(n)
    blocks, codes, next_id = [], [], 0
    for code, size in enumerate(_split_sizes(n)):
        block: list[int] = []
        while len(block) < size:
            k = 1 + int(rng.poisson(per - 1.0))
            block.extend([next_id] * k)
            next_id += 1
        arr = np.asarray(block[:size], dtype=np.int64)
        rng.shuffle(arr)  # CelebA's files are not grouped by person within a split
        blocks.append(arr)
        codes.append(np.full(size, code, dtype=np.int64))
    return np.concatenate(blocks), np.concatenate(codes), next_id


def _image_ids(n: int) -> pd.Index:
    return pd.Index([f"{i:06d}.jpg" for i in range(1, n + 1)], name="image_id")


def _draw_people(rng: np.random.Generator, m: int) -> dict[str, np.ndarray]:
    """Per-person (m,) traits drawn first: sex, age, pale skin, baldness, grey hair, natural hair colour, bushy brows."""
    male_i = rng.random(m) < 0.417
    young_i = rng.random(m) < np.where(male_i, 0.655, 0.858)
    pale_i = rng.random(m) < np.where(male_i, 0.015, 0.063)
    bald_i = male_i & (rng.random(m) < np.where(young_i, 0.022, 0.10))
    gray_i = rng.random(m) < np.where(young_i, 0.006, 0.165)
    # natural hair colour: 0 black, 1 brown, 2 blond, 3 gray, 4 red/auburn (none of CelebA's colours)
    u = rng.random(m)
    p_black = np.where(male_i, 0.33, 0.21)
    p_brown = np.where(male_i, 0.205, 0.225)
    p_blond = np.where(male_i, 0.03, 0.24)
    hair_base_i = np.select(
        [gray_i, u < p_black, u < p_black + p_brown, u < p_black + p_brown + p_blond], [3, 0, 1, 2], default=HAIR_OTHER
    )
    bushy_i = rng.random(m) < np.where(male_i, 0.22, 0.08)
    return {"male": male_i, "young": young_i, "pale": pale_i, "bald": bald_i, "hair_base": hair_base_i,
            "bushy": bushy_i}


def _draw_attributes(rng: np.random.Generator, ids: np.ndarray, m: int,
                     people: dict[str, np.ndarray]) -> dict[str, Any]:
    """The (n,) CelebA attributes (Attractive left False: it is computed from the others) and the rendered
    non-CelebA flags, conditional on each person's traits; photo-level ones are "sticky" within a person."""
    n = len(ids)

    def per_id(values: np.ndarray) -> np.ndarray:
        return values[ids]

    def sticky(p: np.ndarray, r: float) -> np.ndarray:
        u_id = rng.random(m)[ids]
        u_img = rng.random(n)
        keep = rng.random(n) < r
        return np.where(keep, u_id, u_img) < p

    male, young, bald = per_id(people["male"]), per_id(people["young"]), per_id(people["bald"])
    hair_base = per_id(people["hair_base"])
    f: dict[str, Any] = {"Attractive": np.zeros(n, dtype=bool)}  # set from the others at the end
    f["Male"], f["Young"], f["Pale_Skin"], f["Bald"] = male, young, per_id(people["pale"]), bald
    for code, name in enumerate(_HAIR):
        f[name] = (hair_base == code) & ~bald
    f["Bushy_Eyebrows"] = per_id(people["bushy"])
    f["Narrow_Eyes"] = sticky(np.full(n, 0.115), 0.6)
    f["Smiling"] = sticky(np.where(male, 0.40, 0.54), 0.3)
    f["Mouth_Slightly_Open"] = sticky(np.where(f["Smiling"], 0.70, 0.28), 0.2)
    f["Eyeglasses"] = sticky(np.where(male, 0.09, 0.036) * np.where(young, 0.8, 1.7), 0.7)
    f["Wearing_Hat"] = sticky(np.where(male, 0.07, 0.033), 0.3)
    f["Bangs"] = sticky(np.where(male, 0.09, 0.195), 0.75) & ~bald
    f["Wearing_Lipstick"] = sticky(np.where(male, 0.004, 0.81), 0.6)
    f["Heavy_Makeup"] = sticky(np.where(male, 0.002, np.where(f["Wearing_Lipstick"], 0.80, 0.12)), 0.6)
    f["Rosy_Cheeks"] = sticky(np.where(male, 0.008, np.where(f["Heavy_Makeup"], 0.13, 0.07)), 0.5)
    f["Wearing_Earrings"] = sticky(np.where(male, 0.02, 0.31), 0.5)
    goatee = sticky(np.where(male, 0.15, 0.0), 0.8)
    mustache = sticky(np.where(male, np.where(goatee, 0.40, 0.05), 0.0), 0.8)
    jaw = sticky(np.where(male, np.where(goatee | mustache, 0.5, 0.25), 0.0), 0.8)
    f["Goatee"], f["Mustache"], f["jaw_beard"] = goatee, mustache, jaw
    f["No_Beard"] = ~(goatee | mustache | jaw)
    f["sunglasses"] = f["Eyeglasses"] & (rng.random(n) < 0.2)
    # the attributes CelebA adds to those above: face shape and features mostly per person, with age and sex
    age_sex = np.where(male, 1.25, 0.8)
    f["5_o_Clock_Shadow"] = sticky(np.where(male, np.where(f["No_Beard"], 0.30, 0.20), 0.0), 0.7)
    f["Sideburns"] = sticky(np.where(male, np.where(f["No_Beard"], 0.06, 0.25), 0.0), 0.8)
    f["Arched_Eyebrows"] = sticky(np.where(male, 0.06, np.where(f["Heavy_Makeup"], 0.50, 0.27)), 0.7)
    f["Bags_Under_Eyes"] = sticky(np.where(young, 0.14, 0.42) * age_sex, 0.6)
    f["Big_Lips"] = sticky(np.where(male, 0.16, 0.30), 0.85)
    f["Big_Nose"] = sticky(np.where(male, 0.36, 0.15) * np.where(young, 0.85, 1.5), 0.85)
    f["Pointy_Nose"] = sticky(np.where(male, 0.19, 0.42) * np.where(f["Big_Nose"], 0.35, 1.0), 0.85)
    f["Chubby"] = sticky(np.where(male, 0.10, 0.028) * np.where(young, 0.55, 2.6), 0.9)
    double_chin = np.where(f["Chubby"], 0.40, np.where(young, 0.012, 0.08)) * np.where(male, 1.2, 0.85)
    f["Double_Chin"] = sticky(double_chin, 0.8)
    f["High_Cheekbones"] = sticky(np.where(f["Smiling"], 0.78, 0.155) * np.where(male, 0.9, 1.07), 0.3)
    f["Oval_Face"] = sticky(np.where(male, 0.19, 0.36) * np.where(f["Chubby"], 0.2, 1.0), 0.8)
    receding = np.where(male, np.where(young, 0.09, 0.25), np.where(young, 0.025, 0.06)) / np.where(male, 0.91, 0.8)
    f["Receding_Hairline"] = sticky(receding, 0.9) & ~bald & ~f["Bangs"]  # the division offsets the Bangs removed
    wavy = sticky(np.where(male, 0.15, 0.45), 0.8)
    f["Wavy_Hair"] = wavy & ~bald
    f["Straight_Hair"] = ~wavy & sticky(np.where(male, 0.29, 0.345), 0.8) & ~bald  # exclusive with wavy
    f["Blurry"] = rng.random(n) < 0.051
    f["Wearing_Necklace"] = sticky(np.where(male, 0.025, 0.19), 0.5)
    f["Wearing_Necktie"] = sticky(np.where(male, 0.165, 0.006), 0.6)

    return f


def _draw_nuisances(rng: np.random.Generator, ids: np.ndarray, m: int, split: np.ndarray,
                    people: dict[str, np.ndarray]) -> dict[str, Any]:
    """Identity numbers, partitions and everything rendered that is not an attribute: colours and styles,
    per-person face geometry, per-photo pose, light, background and noise."""
    n = len(ids)
    f: dict[str, Any] = {}

    def per_id(values: np.ndarray) -> np.ndarray:
        return values[ids]

    f["identity"] = (rng.permutation(m) + 1)[ids]  # arbitrary 1-based person numbers, like CelebA's
    f["partition"] = np.asarray(PARTITION_NAMES, dtype=object)[split]
    f["hair_base"] = per_id(people["hair_base"])
    f["eye_colour"] = per_id(rng.choice(6, size=m, p=[0.38, 0.27, 0.15, 0.08, 0.07, 0.05]))
    f["glasses_style"] = per_id(rng.integers(0, 3, m))
    f["glasses_colour"] = per_id(rng.integers(0, 5, m))
    f["hat_style"] = rng.integers(0, 3, n)
    f["hat_colour"] = rng.integers(0, 9, n)
    f["lipstick_colour"] = per_id(rng.integers(0, 4, m))
    f["shadow_colour"] = rng.integers(0, 5, n)
    f["earring_style"] = rng.integers(0, 3, n)
    f["earring_colour"] = rng.integers(0, 5, n)
    f["necklace_colour"] = rng.integers(0, 5, n)
    f["tie_colour"] = rng.integers(0, 7, n)
    cloth = rng.integers(15, 240, (n, 3))
    # muted backgrounds: random colours pulled halfway to a random grey
    bg = (0.5 * rng.integers(10, 246, (n, 6)) + 0.5 * rng.integers(40, 220, (n, 1))).astype(np.int64)
    for j, c in enumerate("rgb"):
        f[f"cloth_{c}"] = cloth[:, j]
        f[f"bg_{c}0"] = bg[:, j]
        f[f"bg_{c}1"] = bg[:, 3 + j]
    f["noise_seed"] = rng.integers(0, 2**31 - 1, n)

    tone = np.where(people["pale"], rng.uniform(0.0, 0.2, m), rng.beta(1.2, 2.4, m))
    identity_floats = {
        "skin_tone": tone, "skin_warm": rng.uniform(-1, 1, m), "face_w": rng.uniform(40, 46, m),
        "skull_h": rng.uniform(62, 69, m), "chin_drop": rng.uniform(56, 64, m), "jaw": rng.uniform(0, 1, m),
        "eye_dx": rng.uniform(18.3, 20.7, m), "eye_w": rng.uniform(7.5, 9.5, m), "eye_h": rng.uniform(3.8, 5.0, m),
        "brow_gap": rng.uniform(12, 15, m), "brow_w": rng.uniform(0, 1, m), "brow_arch": rng.uniform(0, 1, m),
        "nose_len": rng.uniform(20, 26, m), "nose_w": rng.uniform(6, 9, m), "mouth_drop": rng.uniform(37, 42, m),
        "mouth_w": rng.uniform(12, 15.5, m), "lip_u": rng.uniform(2.5, 4.0, m), "lip_l": rng.uniform(3.0, 5.0, m),
        "hair_shade": rng.uniform(0, 1, m), "hair_len": rng.uniform(0, 1, m), "hair_vol": rng.uniform(5, 11, m),
        "hairline": rng.uniform(44, 51, m), "parting": rng.uniform(-1, 1, m), "ear_size": rng.uniform(0.85, 1.15, m),
        "beard_density": rng.uniform(0, 1, m), "attractive_noise": rng.logistic(0.0, 1.0, m),
    }
    for name, values in identity_floats.items():
        f[name] = per_id(values)
    f["roll"] = rng.uniform(-5, 5, n)
    f["shift_x"] = rng.uniform(-3, 3, n)
    f["shift_y"] = rng.uniform(-3, 3, n)
    f["scale"] = rng.uniform(0.95, 1.05, n)
    f["light_angle"] = rng.uniform(0, 2 * np.pi, n)
    f["light_strength"] = rng.uniform(0.0, 0.16, n)
    f["bg_angle"] = rng.uniform(0, 1, n)
    f["noise_sigma"] = rng.uniform(1.5, 4.0, n)

    return f


def sample_factors(n: int, seed: int = 0) -> pd.DataFrame:
    """Generating factors of `n` images (index `000001.jpg`...): attributes (bool), identity, partition, nuisances.

    Sex and age are drawn per identity first; the other attributes are conditional on them (beards only on men,
    lipstick and makeup mostly on women, grey hair and baldness mostly on the old, one hair colour at most).
    Photo-level attributes (expression, glasses, hat, makeup...) are redrawn per image but "sticky" within an
    identity: with probability r an image reuses its identity's draw, which keeps each marginal exact.
    """
    if not isinstance(n, (int, np.integer)) or n < 1 or n > 999_999:
        raise ValueError(f"n must be an integer in 1..999999 (six-digit CelebA file names), got {n!r}")
    rng = np.random.default_rng(seed)
    ids, split, m = _assign_identities(int(n), rng)
    people = _draw_people(rng, m)
    f = _draw_attributes(rng, ids, m, people)
    f |= _draw_nuisances(rng, ids, m, split, people)

    table = pd.DataFrame({name: f[name] for name in FACTOR_COLUMNS}, index=_image_ids(int(n)))
    for name in SYNTHETIC_ATTRIBUTES + BOOL_FACTORS:
        table[name] = table[name].astype(bool)
    for name in INT_FACTORS:
        table[name] = table[name].astype(np.int64)
    for name in FLOAT_FACTORS:  # 4 decimals: short CSV text that parses back to the very same doubles
        table[name] = table[name].astype(np.float64).round(4)
    table["Attractive"] = attractive_score(table) > 0  # a judgement of the rest, so computed last
    return table


def attractive_score(factors: pd.DataFrame | pd.Series | Mapping) -> Any:
    """ATTRACTIVE_INTERCEPT + ATTRACTIVE_WEIGHTS of the attributes + `attractive_noise`; Attractive is score > 0.

    Works on one row (a float) or a table (a Series).
    """
    score = ATTRACTIVE_INTERCEPT + factors["attractive_noise"]
    for name, weight in ATTRACTIVE_WEIGHTS.items():
        value = factors[name]
        score = score + weight * (value.astype(float) if isinstance(value, pd.Series) else float(bool(value)))
    return score


# ----------------------------------------------------------------------------------------------------------------
# rendering and counterfactuals


def _as_mapping(factors: Mapping | pd.Series) -> Mapping:
    missing = [c for c in FACTOR_COLUMNS if c not in factors and c != "partition"]
    if missing:
        raise KeyError(f"factor row lacks columns {missing}; expected the columns of sample_factors/load_factors")
    return factors


def render(factors: Mapping | pd.Series) -> np.ndarray:
    """Draw the face of one factor row: (218, 178, 3) uint8, identical to the pixels the generator JPEG-encoded."""
    return render_factors(_as_mapping(factors))


def jpeg_bytes(image: np.ndarray) -> bytes:
    """Encode a rendered image exactly as the generator does (JPEG quality 90, 4:2:0)."""
    return encode_jpeg(image)


def write_jpeg(image: np.ndarray, path: str | os.PathLike) -> Path:
    """Write `image` as a JPEG file byte-identical to the generator's for the same pixels."""
    path = Path(path)
    path.write_bytes(encode_jpeg(image))
    return path


def _set_natural_hair_colour(row: pd.Series) -> None:
    for name in _HAIR:
        row[name] = False
    base = int(row["hair_base"])
    if base < len(_HAIR):
        row[_HAIR[base]] = True


# What setting an attribute clears to keep a face's labels consistent: a bald head has no hair colour, texture,
# fringe or hairline; a hair colour, fringe, hairline or texture un-balds; a fringe hides the hairline; a beard
# clears No_Beard and No_Beard every beard. The generator's counterpart of STGAN's conflict rules, and a superset
# of them; on procedural faces the evaluation does not count what it clears against an edit's preservation.
CLEARED_WHEN_SET: dict[str, tuple[str, ...]] = {
    **{colour: (*(other for other in _HAIR if other != colour), "Bald") for colour in _HAIR},
    "Bald": ("Bangs", "Straight_Hair", "Wavy_Hair", "Receding_Hairline", *_HAIR),
    "Bangs": ("Bald", "Receding_Hairline"),
    "Receding_Hairline": ("Bald", "Bangs"),
    "Straight_Hair": ("Bald", "Wavy_Hair"),
    "Wavy_Hair": ("Bald", "Straight_Hair"),
    "Mustache": ("No_Beard",),
    "Goatee": ("No_Beard",),
    "No_Beard": ("Mustache", "Goatee"),
}


def _apply_change(row: pd.Series, name: str, value: bool) -> None:
    """Set one attribute and what consistency demands of the others (see `counterfactual`)."""
    grows_hair = value and bool(row["Bald"]) and name in ("Bangs", "Receding_Hairline", "Straight_Hair", "Wavy_Hair")
    row[name] = value
    if value:
        for other in CLEARED_WHEN_SET.get(name, ()):
            row[other] = False
    if grows_hair or (name == "Bald" and not value):
        _set_natural_hair_colour(row)  # un-balding brings back the person's own colour
    if name in ("Mustache", "Goatee"):
        row["No_Beard"] = not (bool(row["Mustache"]) or bool(row["Goatee"]) or bool(row["jaw_beard"]))
    elif name == "No_Beard":
        if value:
            row["jaw_beard"] = False
        elif not (bool(row["Mustache"]) or bool(row["Goatee"]) or bool(row["jaw_beard"])):
            row["jaw_beard"] = True


def _make_attractive(row: pd.Series, value: bool, keep: set[str]) -> None:
    """Edit the attributes the Attractive score weighs, in _ATTRACTIVE_EDITS[value] order, until the score agrees.

    Attributes named in `keep` (asked for explicitly) are left alone; make-up and lipstick are only put on women
    (taking them off works for anyone). If the listed edits are not enough, the per-identity `attractive_noise` moves
    just past the threshold: that part of the judgement is not drawn, so only the label changes then.
    """
    for name, target in _ATTRACTIVE_EDITS[value]:
        if (attractive_score(row) > 0) == value:
            return
        if name in keep or bool(row[name]) == target:
            continue
        if target and name in ("Heavy_Makeup", "Wearing_Lipstick") and bool(row["Male"]):
            continue
        _apply_change(row, name, target)
    score = attractive_score(row)
    if (score > 0) != value:
        row["attractive_noise"] = round(float(row["attractive_noise"]) - score + (0.01 if value else -0.01), 4)


def counterfactual(factors_row: pd.Series | Mapping, changes: Mapping[str, bool]) -> pd.Series:
    """The same person, pose, light and noise with attributes set as in `changes`, kept consistent.

    A hair colour set clears the others and Bald; a hair colour cleared leaves red/auburn hair (no listed colour);
    Bald clears Bangs, the hair colours, Straight_Hair, Wavy_Hair and Receding_Hairline; un-balding brings back the
    natural colour (`hair_base`), and Bangs, Receding_Hairline, Straight_Hair or Wavy_Hair set un-bald. Straight_Hair
    and Wavy_Hair exclude each other, as do Bangs and Receding_Hairline (a fringe would hide the hairline).
    Mustache or Goatee clear No_Beard; No_Beard clears all facial hair, and No_Beard=False with neither mustache nor
    goatee grows a beard along the jaw.

    Attractive is a judgement of the other attributes (`attractive_score`), so it is recomputed after every change.
    Setting it edits what the score weighs, one attribute at a time in a fixed order, stopping as soon as the score
    agrees: for True the photo is sharpened and bags under the eyes, a double chin, chubbiness and glasses are
    removed, then (women only) make-up and lipstick and high cheekbones added; for False make-up, lipstick and high
    cheekbones go, then bags under the eyes, a double chin, glasses and blur come. Attributes also named in
    `changes` are kept as asked. When those edits cannot move the score far enough, the undrawn per-identity term
    `attractive_noise` is moved just past the threshold as well (with no edit left to make, only the label changes).
    Raises if `changes` contradict each other.
    """
    row = pd.Series(dict(factors_row), dtype=object) if not isinstance(factors_row, pd.Series) else factors_row.copy()
    _as_mapping(row)
    wanted: dict[str, bool] = {}
    for name, value in changes.items():
        if name not in SYNTHETIC_ATTRIBUTES:
            raise KeyError(f"cannot change {name!r}: not a rendered attribute; expected one of {SYNTHETIC_ATTRIBUTES}")
        if not isinstance(value, (bool, np.bool_, int, np.integer)) or int(value) not in (0, 1):
            raise ValueError(f"change {name}={value!r}: expected a bool")
        wanted[name] = bool(value)
    for name, value in wanted.items():
        if name != "Attractive":
            _apply_change(row, name, value)
    if "Attractive" in wanted:
        _make_attractive(row, wanted["Attractive"], set(wanted) - {"Attractive"})
    row["Attractive"] = bool(attractive_score(row) > 0)
    wrong = {k: bool(row[k]) for k, v in wanted.items() if bool(row[k]) != v}
    if wrong:
        raise ValueError(f"contradictory changes {dict(changes)}: after applying them {wrong}")
    for name in SYNTHETIC_ATTRIBUTES + BOOL_FACTORS:
        row[name] = bool(row[name])
    return row


# ----------------------------------------------------------------------------------------------------------------
# files


def dataset_dir(root: str | os.PathLike) -> Path:
    """`root/celeba`, or `root` itself when it already is a generated `celeba` folder."""
    root = Path(root)
    if root.name == "celeba" and (root / IMAGE_DIR).is_dir() and not (root / "celeba").is_dir():
        return root
    return root / "celeba"


def load_factors(root: str | os.PathLike) -> pd.DataFrame:
    """The generating factors of a generated dataset (index image_id), with the dtypes sample_factors gives."""
    path = dataset_dir(root) / FACTORS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: not a dataset written by generate_synthetic_celeba")
    table = pd.read_csv(path, index_col="image_id")
    missing = [c for c in FACTOR_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing} (written by an older generator? regenerate it)")
    for name in SYNTHETIC_ATTRIBUTES + BOOL_FACTORS:
        column = table[name]
        if column.dtype != bool:
            bad = ~column.isin([0, 1, True, False])
            if bad.any():
                raise ValueError(
                    f"{path}: column {name} has non-boolean value {column[bad].iloc[0]!r} at {column[bad].index[0]}"
                )
            table[name] = column.astype(bool)
    for name in INT_FACTORS:
        table[name] = table[name].astype(np.int64)
    for name in FLOAT_FACTORS:
        table[name] = table[name].astype(np.float64)
    return table


def _attr_text(table: pd.DataFrame) -> str:
    values = table[list(SYNTHETIC_ATTRIBUTES)].to_numpy(dtype=bool)  # (n, K)
    cells = np.where(values, " 1", "-1")
    lines = [str(len(table)), " ".join(SYNTHETIC_ATTRIBUTES) + " "]
    lines += [f"{name} {' '.join(row)}" for name, row in zip(table.index, cells)]
    return "\n".join(lines) + "\n"


def _partition_text(table: pd.DataFrame) -> str:
    codes = table["partition"].map({s: i for i, s in enumerate(PARTITION_NAMES)}).to_numpy()
    return "".join(f"{name} {code}\n" for name, code in zip(table.index, codes))


def _identity_text(table: pd.DataFrame) -> str:
    return "".join(f"{name} {ident}\n" for name, ident in zip(table.index, table["identity"].to_numpy()))


def annotation_geometry(table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """What the bbox and landmark files hold for each row: (n, 4) int boxes (x_1, y_1, width, height) of the head
    outline clipped to the image, and (n, 10) int landmarks in LANDMARK_COLUMNS order, both rounded from the drawing."""
    return annotation_arrays(table.to_dict("records"))


def _bbox_text(table: pd.DataFrame, boxes: np.ndarray) -> str:
    lines = [str(len(table)), "image_id x_1 y_1 width height"]  # CelebA's right-aligned columns
    lines += [f"{name} {x:>5} {y:>3} {w:>3} {h:>3}" for name, (x, y, w, h) in zip(table.index, boxes.tolist())]
    return "\n".join(lines) + "\n"


def _landmarks_text(table: pd.DataFrame, marks: np.ndarray) -> str:
    lines = [str(len(table)), " ".join(LANDMARK_COLUMNS)]
    for name, row in zip(table.index, marks.tolist()):
        lines.append(f"{name} {row[0]:>2}" + "".join(f" {v:>4}" for v in row[1:]))
    return "\n".join(lines) + "\n"


def _read_meta(folder: Path) -> dict | None:
    try:
        return json.loads((folder / META_FILE).read_text())
    except (OSError, ValueError):
        return None


def is_complete(root: str | os.PathLike, n: int, seed: int = 0) -> bool:
    """True when `root` holds a finished dataset from this generator version with this `n` and `seed`."""
    folder = dataset_dir(root)
    meta = _read_meta(folder)
    if not meta or meta.get("version") != GENERATOR_VERSION or meta.get("n") != n or meta.get("seed") != seed:
        return False
    names = (ATTR_FILE, PARTITION_FILE, IDENTITY_FILE, BBOX_FILE, LANDMARKS_FILE, FACTORS_FILE)
    files = [folder / name for name in names]
    images = folder / IMAGE_DIR
    return all(p.is_file() for p in files) and (images / f"{n:06d}.jpg").is_file() and (images / "000001.jpg").is_file()


def generate_synthetic_celeba(
    root: str | os.PathLike, n: int, seed: int = 0, workers: int | None = None, force: bool = False
) -> Path:
    """Write `n` procedural faces in torchvision's CelebA layout under `root/celeba` and return that folder.

    Reuses a complete dataset with the same `n` and `seed` unless `force`. Images are written first, then the
    annotation files, `synthetic_factors.csv`, and `synthetic_meta.json` last (its presence marks completion).
    """
    if not force and is_complete(root, n, seed):
        return dataset_dir(root)  # `root` may itself be the generated folder
    folder = Path(root) / "celeba"
    table = sample_factors(n, seed)
    image_dir = folder / IMAGE_DIR
    image_dir.mkdir(parents=True, exist_ok=True)
    (folder / META_FILE).unlink(missing_ok=True)  # an interrupted regeneration must not look complete
    workers = available_cores() if workers is None else max(1, int(workers))
    rows = table.reset_index().to_dict("records")
    chunk = int(np.clip(np.ceil(len(rows) / (4 * workers)), 16, 200))  # small sets still spread over the workers
    tasks = [(str(image_dir), i, rows[i : i + chunk]) for i in range(0, len(rows), chunk)]
    boxes = np.zeros((len(rows), 4), dtype=np.int64)
    marks = np.zeros((len(rows), len(LANDMARK_COLUMNS)), dtype=np.int64)

    def collect(done: tuple[int, np.ndarray, np.ndarray]) -> None:
        start, chunk_boxes, chunk_marks = done
        boxes[start : start + len(chunk_boxes)] = chunk_boxes
        marks[start : start + len(chunk_marks)] = chunk_marks
        bar.update(len(chunk_boxes))

    with tqdm(total=len(rows), desc="synthetic faces", unit="img", leave=False) as bar:
        if workers == 1 or len(tasks) == 1:
            for task in tasks:
                collect(render_chunk(task))
        else:
            # fork: workers only use numpy and PIL, and skip re-importing the package
            method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
            with mp.get_context(method).Pool(min(workers, len(tasks))) as pool:
                for done in pool.imap_unordered(render_chunk, tasks):
                    collect(done)
    wanted = set(table.index)
    stale = [p for p in image_dir.glob("[0-9]*.jpg") if p.name not in wanted]
    for p in stale:  # left over from an earlier, larger generation into the same folder
        p.unlink()
    atomic_write_text(_attr_text(table), folder / ATTR_FILE)
    atomic_write_text(_partition_text(table), folder / PARTITION_FILE)
    atomic_write_text(_identity_text(table), folder / IDENTITY_FILE)
    atomic_write_text(_bbox_text(table, boxes), folder / BBOX_FILE)
    atomic_write_text(_landmarks_text(table, marks), folder / LANDMARKS_FILE)
    with atomic_path(folder / FACTORS_FILE) as tmp:
        table.to_csv(tmp)
    atomic_write_json(
        {
            "generator": "latent-edit data.synthetic",
            "version": GENERATOR_VERSION,
            "n": int(n),
            "seed": int(seed),
            "attributes": list(SYNTHETIC_ATTRIBUTES),
            "image_size": [WIDTH, HEIGHT],
            "jpeg_quality": JPEG_QUALITY,
            "identities": int(table["identity"].nunique()),
        },
        folder / META_FILE,
    )
    return folder


# ----------------------------------------------------------------------------------------------------------------
# figures


def _preprocess(image: np.ndarray, size: int | None) -> np.ndarray:
    """(H, W, 3) uint8 -> what the model sees: the cache's crop + resize (or the image itself for size=None)."""
    if size is None:
        return image
    from PIL import Image

    return np.transpose(preprocess_image(Image.fromarray(image), size=size), (1, 2, 0))  # (S, S, 3)


_SHORT = {
    "5_o_Clock_Shadow": "stubble", "Arched_Eyebrows": "arched", "Attractive": "attr", "Bags_Under_Eyes": "bags",
    "Bald": "bald", "Bangs": "bangs", "Big_Lips": "lips", "Big_Nose": "bignose", "Black_Hair": "black",
    "Blond_Hair": "blond", "Blurry": "blurry", "Brown_Hair": "brown", "Bushy_Eyebrows": "bushy", "Chubby": "chubby",
    "Double_Chin": "dchin", "Eyeglasses": "glasses", "Goatee": "goatee", "Gray_Hair": "gray", "Heavy_Makeup": "makeup",
    "High_Cheekbones": "cheeks", "Male": "male", "Mouth_Slightly_Open": "open", "Mustache": "mustache",
    "Narrow_Eyes": "narrow", "No_Beard": "", "Oval_Face": "oval", "Pale_Skin": "pale", "Pointy_Nose": "pointy",
    "Receding_Hairline": "receding", "Rosy_Cheeks": "rosy", "Sideburns": "sideburns", "Smiling": "smile",
    "Straight_Hair": "straight", "Wavy_Hair": "wavy", "Wearing_Earrings": "earrings", "Wearing_Hat": "hat",
    "Wearing_Lipstick": "lipstick", "Wearing_Necklace": "necklace", "Wearing_Necktie": "tie", "Young": "young",
}


def _label(row: Mapping) -> str:
    words = [_SHORT[a] for a in SYNTHETIC_ATTRIBUTES if bool(row[a]) and _SHORT[a]]
    if not bool(row["No_Beard"]):
        words.append("beard")
    lines, line = [], ""
    for w in words:
        if len(line) + len(w) > 22:
            lines.append(line)
            line = ""
        line = f"{line} {w}".strip()
    return "\n".join(lines + [line])


def _grid_figure(images: list[np.ndarray], labels: list[str], data: pd.DataFrame, path: Path, cols: int,
                 title: str) -> Path:
    """Save a grid of labelled images as `path` (PNG) with `data` beside it as CSV; returns the PNG's path."""
    from matplotlib.figure import Figure  # a bare Figure: no pyplot, so no global backend state is touched

    rows = (len(images) + cols - 1) // cols
    h, w = images[0].shape[:2]
    fig = Figure(figsize=(cols * 1.6, rows * 1.6 * h / w + rows * 0.5))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, image, label in zip(axes.ravel(), images, labels):
        ax.imshow(image, interpolation="nearest")
        ax.set_title(label, fontsize=5.5, pad=2)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    return save_figure(fig, data, path, dpi=150)[0]


def contact_sheet(root: str | os.PathLike, path: str | os.PathLike, n: int = 32, size: int | None = None,
                  cols: int = 8) -> Path:
    """PNG grid of the first `n` generated images labelled with their positive attributes, plus a CSV beside it.

    size=None shows the 178x218 files; size=64 shows the model's view (the cache's crop and resize).
    """
    from PIL import Image

    folder = dataset_dir(root)
    table = load_factors(folder).iloc[:n]
    images = [_preprocess(np.asarray(Image.open(folder / IMAGE_DIR / name).convert("RGB")), size)
              for name in table.index]
    labels = [f"{name}\n{_label(row)}" for name, row in table.iterrows()]
    shown = table[list(SYNTHETIC_ATTRIBUTES)].astype(int)
    shown.insert(0, "identity", table["identity"])
    title = f"synthetic CelebA ({'178x218' if size is None else f'{size}x{size}'})"
    return _grid_figure(images, labels, shown.reset_index(), Path(path), cols, title)


def counterfactual_strip(factors_row: pd.Series, path: str | os.PathLike, attributes: Iterable[str] | None = None,
                         size: int | None = None, cols: int = 8) -> Path:
    """PNG of one face and, for each attribute, the face with that attribute toggled (plus a CSV of the changes)."""
    attributes = list(SYNTHETIC_ATTRIBUTES if attributes is None else attributes)
    images = [_preprocess(render(factors_row), size)]
    labels = ["original"]
    records = [{"panel": 0, "attribute": "", "value": ""}]
    for k, name in enumerate(attributes, start=1):
        value = not bool(factors_row[name])
        images.append(_preprocess(render(counterfactual(factors_row, {name: value})), size))
        labels.append(f"{'+' if value else '-'}{name}")
        records.append({"panel": k, "attribute": name, "value": int(value)})
    title = f"counterfactuals of {getattr(factors_row, 'name', '')}"
    return _grid_figure(images, labels, pd.DataFrame(records), Path(path), cols, title)
