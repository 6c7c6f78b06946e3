"""Sampling the generating factors of procedural faces: who each person is, what each photo shows.

`sample_factors` draws every image's factors (sex and age first, then all 40 CelebA attributes conditional on them,
identities shared by several images, CelebA's prevalences and correlations). Attractive is not drawn directly: it
is the judgement `attractive_score(row) > 0`, a fixed logistic-style score of other attributes plus a per-identity
term (`attractive_noise`), see ATTRACTIVE_WEIGHTS.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd

from data.celeba import CELEBA_ATTRIBUTES, HAIR_COLOURS, PARTITION_NAMES

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
# hair_base, a person's natural hair colour, is written in synthetic_factors.csv as a code: HAIR_BY_CODE[code], or
# HAIR_OTHER for red/auburn (none of CelebA's HAIR_COLOURS). The codes are part of the file format: they keep this
# order, not CelebA's.
_BLACK, _BLOND, _BROWN, _GRAY = HAIR_COLOURS
HAIR_BY_CODE: tuple[str, ...] = (_BLACK, _BROWN, _BLOND, _GRAY)
HAIR_OTHER = len(HAIR_BY_CODE)
FactorRow = Mapping[str, Any]  # one image's factors: a row of sample_factors/load_factors, as a Series or a dict


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
    """Per-person (m,) traits drawn first: sex, age, pale skin, baldness, grey hair, natural hair colour, bushy
    brows."""
    male_i = rng.random(m) < 0.417
    young_i = rng.random(m) < np.where(male_i, 0.655, 0.858)
    pale_i = rng.random(m) < np.where(male_i, 0.015, 0.063)
    bald_i = male_i & (rng.random(m) < np.where(young_i, 0.022, 0.10))
    gray_i = rng.random(m) < np.where(young_i, 0.006, 0.165)
    # natural hair colour, as HAIR_BY_CODE: 0 black, 1 brown, 2 blond, 3 gray, HAIR_OTHER red/auburn
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


def _sticky_sampler(rng: np.random.Generator, ids: np.ndarray, m: int) -> Callable[[np.ndarray, float], np.ndarray]:
    """sticky(p, r): (n,) bools, True with probability p (n,); with probability r an image reuses its person's draw,
    which keeps each marginal exact while photos of one person mostly agree."""
    n = len(ids)

    def sticky(p: np.ndarray, r: float) -> np.ndarray:
        u_id = rng.random(m)[ids]
        u_img = rng.random(n)
        keep = rng.random(n) < r
        return np.where(keep, u_id, u_img) < p

    return sticky


def _draw_attributes(rng: np.random.Generator, ids: np.ndarray, m: int,
                     people: dict[str, np.ndarray]) -> dict[str, Any]:
    """The (n,) CelebA attributes (Attractive left False: it is computed from the others) and the rendered
    non-CelebA flags, conditional on each person's traits; photo-level ones are "sticky" within a person."""
    n = len(ids)
    sticky = _sticky_sampler(rng, ids, m)

    def per_id(values: np.ndarray) -> np.ndarray:
        return values[ids]

    male, young, bald = per_id(people["male"]), per_id(people["young"]), per_id(people["bald"])
    hair_base = per_id(people["hair_base"])
    columns: dict[str, Any] = {"Attractive": np.zeros(n, dtype=bool)}  # set from the others at the end
    columns["Male"], columns["Young"], columns["Pale_Skin"], columns["Bald"] = male, young, per_id(people["pale"]), bald
    for code, name in enumerate(HAIR_BY_CODE):
        columns[name] = (hair_base == code) & ~bald
    columns["Bushy_Eyebrows"] = per_id(people["bushy"])
    columns["Narrow_Eyes"] = sticky(np.full(n, 0.115), 0.6)
    columns["Smiling"] = sticky(np.where(male, 0.40, 0.54), 0.3)
    columns["Mouth_Slightly_Open"] = sticky(np.where(columns["Smiling"], 0.70, 0.28), 0.2)
    columns["Eyeglasses"] = sticky(np.where(male, 0.09, 0.036) * np.where(young, 0.8, 1.7), 0.7)
    columns["Wearing_Hat"] = sticky(np.where(male, 0.07, 0.033), 0.3)
    columns["Bangs"] = sticky(np.where(male, 0.09, 0.195), 0.75) & ~bald
    columns["Wearing_Lipstick"] = sticky(np.where(male, 0.004, 0.81), 0.6)
    columns["Heavy_Makeup"] = sticky(np.where(male, 0.002, np.where(columns["Wearing_Lipstick"], 0.80, 0.12)), 0.6)
    columns["Rosy_Cheeks"] = sticky(np.where(male, 0.008, np.where(columns["Heavy_Makeup"], 0.13, 0.07)), 0.5)
    columns["Wearing_Earrings"] = sticky(np.where(male, 0.02, 0.31), 0.5)
    goatee = sticky(np.where(male, 0.15, 0.0), 0.8)
    mustache = sticky(np.where(male, np.where(goatee, 0.40, 0.05), 0.0), 0.8)
    jaw = sticky(np.where(male, np.where(goatee | mustache, 0.5, 0.25), 0.0), 0.8)
    columns["Goatee"], columns["Mustache"], columns["jaw_beard"] = goatee, mustache, jaw
    columns["No_Beard"] = ~(goatee | mustache | jaw)
    columns["sunglasses"] = columns["Eyeglasses"] & (rng.random(n) < 0.2)
    _draw_face_attributes(rng, sticky, male, young, bald, columns)
    return columns


def _draw_face_attributes(rng: np.random.Generator, sticky: Callable[[np.ndarray, float], np.ndarray],
                          male: np.ndarray, young: np.ndarray, bald: np.ndarray, columns: dict[str, Any]) -> None:
    """Add to `columns` the attributes CelebA has beyond those drawn first: face shape and features mostly per
    person, with age and sex, and conditional on the first ones (beards, make-up, smiles, bangs)."""
    n = len(male)
    age_sex = np.where(male, 1.25, 0.8)
    columns["5_o_Clock_Shadow"] = sticky(np.where(male, np.where(columns["No_Beard"], 0.30, 0.20), 0.0), 0.7)
    columns["Sideburns"] = sticky(np.where(male, np.where(columns["No_Beard"], 0.06, 0.25), 0.0), 0.8)
    columns["Arched_Eyebrows"] = sticky(np.where(male, 0.06, np.where(columns["Heavy_Makeup"], 0.50, 0.27)), 0.7)
    columns["Bags_Under_Eyes"] = sticky(np.where(young, 0.14, 0.42) * age_sex, 0.6)
    columns["Big_Lips"] = sticky(np.where(male, 0.16, 0.30), 0.85)
    columns["Big_Nose"] = sticky(np.where(male, 0.36, 0.15) * np.where(young, 0.85, 1.5), 0.85)
    columns["Pointy_Nose"] = sticky(np.where(male, 0.19, 0.42) * np.where(columns["Big_Nose"], 0.35, 1.0), 0.85)
    columns["Chubby"] = sticky(np.where(male, 0.10, 0.028) * np.where(young, 0.55, 2.6), 0.9)
    double_chin = np.where(columns["Chubby"], 0.40, np.where(young, 0.012, 0.08)) * np.where(male, 1.2, 0.85)
    columns["Double_Chin"] = sticky(double_chin, 0.8)
    columns["High_Cheekbones"] = sticky(np.where(columns["Smiling"], 0.78, 0.155) * np.where(male, 0.9, 1.07), 0.3)
    columns["Oval_Face"] = sticky(np.where(male, 0.19, 0.36) * np.where(columns["Chubby"], 0.2, 1.0), 0.8)
    receding = np.where(male, np.where(young, 0.09, 0.25), np.where(young, 0.025, 0.06)) / np.where(male, 0.91, 0.8)
    # the division offsets the Bangs removed
    columns["Receding_Hairline"] = sticky(receding, 0.9) & ~bald & ~columns["Bangs"]
    wavy = sticky(np.where(male, 0.15, 0.45), 0.8)
    columns["Wavy_Hair"] = wavy & ~bald
    columns["Straight_Hair"] = ~wavy & sticky(np.where(male, 0.29, 0.345), 0.8) & ~bald  # exclusive with wavy
    columns["Blurry"] = rng.random(n) < 0.051
    columns["Wearing_Necklace"] = sticky(np.where(male, 0.025, 0.19), 0.5)
    columns["Wearing_Necktie"] = sticky(np.where(male, 0.165, 0.006), 0.6)

def _draw_nuisances(rng: np.random.Generator, ids: np.ndarray, m: int, split: np.ndarray,
                    people: dict[str, np.ndarray]) -> dict[str, Any]:
    """Identity numbers, partitions and everything rendered that is not an attribute: colours and styles,
    per-person face geometry, per-photo pose, light, background and noise."""
    n = len(ids)
    columns: dict[str, Any] = {}

    def per_id(values: np.ndarray) -> np.ndarray:
        return values[ids]

    columns["identity"] = (rng.permutation(m) + 1)[ids]  # arbitrary 1-based person numbers, like CelebA's
    columns["partition"] = np.asarray(PARTITION_NAMES, dtype=object)[split]
    columns["hair_base"] = per_id(people["hair_base"])
    columns["eye_colour"] = per_id(rng.choice(6, size=m, p=[0.38, 0.27, 0.15, 0.08, 0.07, 0.05]))
    columns["glasses_style"] = per_id(rng.integers(0, 3, m))
    columns["glasses_colour"] = per_id(rng.integers(0, 5, m))
    columns["hat_style"] = rng.integers(0, 3, n)
    columns["hat_colour"] = rng.integers(0, 9, n)
    columns["lipstick_colour"] = per_id(rng.integers(0, 4, m))
    columns["shadow_colour"] = rng.integers(0, 5, n)
    columns["earring_style"] = rng.integers(0, 3, n)
    columns["earring_colour"] = rng.integers(0, 5, n)
    columns["necklace_colour"] = rng.integers(0, 5, n)
    columns["tie_colour"] = rng.integers(0, 7, n)
    cloth = rng.integers(15, 240, (n, 3))
    # muted backgrounds: random colours pulled halfway to a random grey
    bg = (0.5 * rng.integers(10, 246, (n, 6)) + 0.5 * rng.integers(40, 220, (n, 1))).astype(np.int64)
    for j, c in enumerate("rgb"):
        columns[f"cloth_{c}"] = cloth[:, j]
        columns[f"bg_{c}0"] = bg[:, j]
        columns[f"bg_{c}1"] = bg[:, 3 + j]
    columns["noise_seed"] = rng.integers(0, 2**31 - 1, n)

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
        columns[name] = per_id(values)
    columns["roll"] = rng.uniform(-5, 5, n)
    columns["shift_x"] = rng.uniform(-3, 3, n)
    columns["shift_y"] = rng.uniform(-3, 3, n)
    columns["scale"] = rng.uniform(0.95, 1.05, n)
    columns["light_angle"] = rng.uniform(0, 2 * np.pi, n)
    columns["light_strength"] = rng.uniform(0.0, 0.16, n)
    columns["bg_angle"] = rng.uniform(0, 1, n)
    columns["noise_sigma"] = rng.uniform(1.5, 4.0, n)

    return columns


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
    columns = _draw_attributes(rng, ids, m, people)
    columns |= _draw_nuisances(rng, ids, m, split, people)

    table = pd.DataFrame({name: columns[name] for name in FACTOR_COLUMNS}, index=_image_ids(int(n)))
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


def check_factor_row(factors: FactorRow) -> FactorRow:
    """`factors` itself when it holds every column of sample_factors/load_factors (partition may be missing)."""
    missing = [c for c in FACTOR_COLUMNS if c not in factors and c != "partition"]
    if missing:
        raise KeyError(f"factor row lacks columns {missing}; expected the columns of sample_factors/load_factors")
    return factors
