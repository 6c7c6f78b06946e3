"""The procedural faces open with torchvision's own CelebA class, every target type and split reading the truth."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from synthetic_helpers import annotation_geometry

from data.celeba import CELEBA_ATTRIBUTES
from data.synthetic import generate_synthetic_celeba, load_factors, render
from data.synthetic.render import encode_jpeg

torchvision_datasets = pytest.importorskip("torchvision.datasets")

N_FACES = 40
SPLITS = {"train": ["train"], "valid": ["valid"], "test": ["test"], "all": ["train", "valid", "test"]}


class UncheckedCelebA(torchvision_datasets.CelebA):
    """torchvision's CelebA without the MD5 check of the annotation files, as users open re-made CelebA folders."""

    def _check_integrity(self) -> bool:
        return True


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("torchvision")
    generate_synthetic_celeba(root, N_FACES, seed=3, workers=2)
    return root


@pytest.fixture(scope="module")
def truth(root):
    factors = load_factors(root)
    boxes, marks = annotation_geometry(factors)
    return factors, boxes, marks


def _decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


@pytest.mark.parametrize("split", list(SPLITS))
@pytest.mark.parametrize("target_type", ["attr", "identity", "bbox", "landmarks"])
def test_each_target_type_and_split_reads_the_generator_truth(root, truth, split, target_type):
    factors, boxes, marks = truth
    dataset = UncheckedCelebA(root, split=split, target_type=target_type, download=False)
    rows = np.flatnonzero(factors["partition"].isin(SPLITS[split]).to_numpy())
    assert 0 < len(rows) and len(dataset) == len(rows)
    assert list(dataset.filename) == factors.index[rows].tolist()
    # real CelebA's header line ends in a space, so torchvision's names end in '' there too: ours match it
    assert dataset.attr_names == [*CELEBA_ATTRIBUTES, ""]
    for k, row in enumerate(rows):
        _, target = dataset[k]
        if target_type == "attr":
            expected = factors.iloc[row][list(CELEBA_ATTRIBUTES)].to_numpy(dtype=np.int64)
            assert target.tolist() == expected.tolist()
        elif target_type == "identity":
            assert int(target) == int(factors["identity"].iloc[row])
        elif target_type == "bbox":
            assert target.tolist() == boxes[row].tolist()
        else:
            assert target.tolist() == marks[row].tolist()


def test_images_are_the_renders_of_their_factors(root, truth):
    factors, _, _ = truth
    dataset = UncheckedCelebA(root, split="all", target_type=["attr", "identity", "bbox", "landmarks"])
    assert len(dataset) == N_FACES
    for k in range(N_FACES):
        image, (attr, identity, bbox, landmarks) = dataset[k]
        row = factors.iloc[k]
        pixels = np.asarray(image.convert("RGB"))
        drawn = render(row)
        assert pixels.shape == drawn.shape == (218, 178, 3)
        assert np.array_equal(pixels, _decode(encode_jpeg(drawn)))  # exactly the encoded render of this row
        error = np.abs(pixels.astype(np.int16) - drawn.astype(np.int16)).mean()
        other = np.abs(pixels.astype(np.int16) - render(factors.iloc[(k + 1) % N_FACES]).astype(np.int16)).mean()
        # quality-90 JPEG smooths the sensor noise a little; another face is a world apart
        assert error < 5.0 and other > 4 * error, f"{factors.index[k]}: mean error {error:.2f}, other face {other:.2f}"
        assert attr.tolist() == row[list(CELEBA_ATTRIBUTES)].astype(int).tolist() and int(identity) == row["identity"]
        assert bbox.shape == (4,) and landmarks.shape == (10,)
