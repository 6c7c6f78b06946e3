"""Procedural CelebA: faces drawn from a small generative model of CelebA's attributes, written in torchvision's layout.

`sample_factors` draws every image's generating factors (sex and age first, then all 40 CelebA attributes
conditional on them, identities shared by several images, CelebA's prevalences and correlations), `render` draws a
face from one row, `counterfactual` changes attributes of a row consistently (the same person, pose and light: a
ground-truth edit), and `generate_synthetic_celeba` writes `root/celeba/` with CelebA's file formats plus
`synthetic_factors.csv`.

Modules: `factors` (sampling), `rules` (counterfactuals and CLEARED_WHEN_SET), `writer` (the files on disk), and the
drawing: `render` (one face, back to front, lit, JPEG-encoded), `geometry` (pose, FaceGeometry, landmarks), `pen`
(drawing through the pose, colours), `hair`, `face_parts`, `accessories`.
"""
from data.synthetic.factors import (
    ATTRACTIVE_INTERCEPT,
    ATTRACTIVE_WEIGHTS,
    BOOL_FACTORS,
    CELEBA_SPLIT_SIZES,
    FACTOR_COLUMNS,
    FLOAT_FACTORS,
    INT_FACTORS,
    SYNTHETIC_ATTRIBUTES,
    TARGET_PREVALENCE,
    attractive_score,
    sample_factors,
)
from data.synthetic.render import render
from data.synthetic.rules import CLEARED_WHEN_SET, counterfactual
from data.synthetic.writer import (
    ATTR_FILE,
    BBOX_FILE,
    FACTORS_FILE,
    GENERATOR_VERSION,
    IDENTITY_FILE,
    IMAGE_DIR,
    LANDMARKS_FILE,
    META_FILE,
    PARTITION_FILE,
    dataset_dir,
    generate_synthetic_celeba,
    is_complete,
    load_factors,
)

__all__ = [
    "ATTRACTIVE_INTERCEPT",
    "ATTRACTIVE_WEIGHTS",
    "ATTR_FILE",
    "BBOX_FILE",
    "BOOL_FACTORS",
    "CELEBA_SPLIT_SIZES",
    "CLEARED_WHEN_SET",
    "FACTORS_FILE",
    "FACTOR_COLUMNS",
    "FLOAT_FACTORS",
    "GENERATOR_VERSION",
    "IDENTITY_FILE",
    "IMAGE_DIR",
    "INT_FACTORS",
    "LANDMARKS_FILE",
    "META_FILE",
    "PARTITION_FILE",
    "SYNTHETIC_ATTRIBUTES",
    "TARGET_PREVALENCE",
    "attractive_score",
    "counterfactual",
    "dataset_dir",
    "generate_synthetic_celeba",
    "is_complete",
    "load_factors",
    "render",
    "sample_factors",
]
