"""STGAN's evaluation protocol (Liu et al., CVPR 2019; AttGAN before it): which attributes, how one is flipped
(`flip_changes`, with `check_attribute_conflict`'s rules), and which test faces are scored."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from attributes.artifact import exclusive_alternatives
from attributes.directions import label_pair_counts
from data.celeba import HAIR_COLOURS
from data.cache import FaceCache
from data.celeba import EXCLUSIVE_GROUPS
from data.synthetic import CLEARED_WHEN_SET

# The 13 attributes STGAN (Liu et al., CVPR 2019) and AttGAN report, in their order.
STGAN_ATTRIBUTES = (
    "Bald", "Bangs", "Black_Hair", "Blond_Hair", "Brown_Hair", "Bushy_Eyebrows", "Eyeglasses", "Male",
    "Mouth_Slightly_Open", "Mustache", "No_Beard", "Pale_Skin", "Young",
)


# STGAN's check_attribute_conflict: setting the key attribute to 1 sets these to 0.
CONFLICTS: dict[str, tuple[str, ...]] = {
    **{c: tuple(o for o in HAIR_COLOURS if o != c) for c in HAIR_COLOURS},
    "Bald": ("Bangs",),
    "Receding_Hairline": ("Bangs",),
    "Bangs": ("Bald", "Receding_Hairline"),
    "Straight_Hair": ("Wavy_Hair",),
    "Wavy_Hair": ("Straight_Hair",),
    "Mustache": ("No_Beard",),
    "No_Beard": ("Mustache",),
}


# What an edit asks to clear when it sets an attribute: only its mutually exclusive alternatives (one hair colour
# at a time; straight or wavy). STGAN's rules also clear No_Beard when a mustache is set, which in a latent space
# means moving along "has a beard": the edit then grows a beard the true counterfactual does not have.
EXCLUSIVE: dict[str, tuple[str, ...]] = {a: exclusive_alternatives(a) for group in EXCLUSIVE_GROUPS for a in group}
EDIT_ASKS = {"exclusive": EXCLUSIVE, "stgan": CONFLICTS}

# What a flip implies in the data, by name: the procedural generator's consistency rules (a superset of STGAN's: a
# bald head has no hair colour, texture, fringe or hairline), or STGAN's conflict rules (real CelebA).
FLIP_RULES: dict[str, Mapping[str, Sequence[str]]] = {"generator": CLEARED_WHEN_SET, "stgan": CONFLICTS}


def flip_changes(name: str, source: np.ndarray, names: Sequence[str],
                 conflicts: Mapping[str, Sequence[str]] = CONFLICTS) -> np.ndarray:
    """STGAN's target for flipping `name`: (N, K) bool target labels from source (N, K) bool in `names` order.

    The named attribute is negated; where it becomes 1, attributes that conflict with it (`conflicts`: other hair
    colours, Bangs vs Bald, ...) are set to 0.
    """
    names = list(names)
    if name not in names:
        raise ValueError(f"unknown attribute {name!r}; expected one of {names}")
    target = np.array(source, dtype=bool, copy=True)
    if target.ndim != 2 or target.shape[1] != len(names):
        raise ValueError(f"source must be (N, K={len(names)}), got {target.shape}")
    j = names.index(name)
    target[:, j] = ~target[:, j]
    for other in conflicts.get(name, ()):
        if other in names:
            target[target[:, j], names.index(other)] = False
    return target


def flip_many(names_to_flip: Sequence[str], source: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """Target labels (N, K) with every attribute of `names_to_flip` flipped from `source` (N, K) at once; what one flip
    clears by the conflict rules is cleared too, unless it is itself being flipped."""
    names = list(names)
    flipped_cols = [names.index(a) for a in names_to_flip]
    target = np.array(source, dtype=bool, copy=True)
    for a in names_to_flip:
        one = flip_changes(a, source, names)
        j = names.index(a)
        target[:, j] = one[:, j]
        cleared = (one != source) & ~np.isin(np.arange(len(names)), flipped_cols)[None]
        target[cleared] = False
    return target


def eval_rows(cache: FaceCache, split: str, n: int, seed: int) -> np.ndarray:
    """A fixed, seeded random subset (in random order) of a split's row positions; prefixes are subsets too."""
    rows = cache.split_indices(split)
    if len(rows) == 0:
        raise ValueError(f"{cache.directory}: split {split!r} is empty")
    return np.random.default_rng(seed).permutation(rows)[: min(n, len(rows))]


def binomial_halfwidth(p: float, n: int) -> float:
    """95 % normal-approximation half-width of a proportion."""
    return 1.96 * math.sqrt(max(p * (1 - p), 0.0) / n) if n else float("nan")


def unseen_targets(train_labels: np.ndarray, target: np.ndarray, column: int) -> np.ndarray:
    """Faces whose target pairs the flipped attribute's value with a value of another label that no training face
    shows (a mustache on a woman where every mustache in the data is a man's): train_labels (N, K) bool, target
    (n, K) bool, column the flipped attribute's -> (n,) bool. An edit learned from the data has no example of
    such a face, and the judges, trained on the same data, none either."""
    y = np.asarray(train_labels, dtype=bool)
    t = np.asarray(target, dtype=bool)
    if y.ndim != 2 or t.ndim != 2 or y.shape[1] != t.shape[1] or not 0 <= column < y.shape[1]:
        raise ValueError(f"train_labels (N, K), target (n, K) and a column < K expected, got {y.shape}, {t.shape}, "
                         f"{column}")
    counts = label_pair_counts(torch.from_numpy(y))[:, :, column].numpy()  # (2, 2, K): [flipped value, j's value, j]
    seen = counts[t[:, [column]].astype(np.int64), t.astype(np.int64), np.arange(t.shape[1])]  # (n, K)
    seen[:, column] = 1  # the attribute with itself
    return (seen == 0).any(axis=1)
