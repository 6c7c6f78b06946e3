"""The cache reader on a real (tiny) cache folder."""
import numpy as np
import pytest
import torch

from data.cache import CachedFaces, load_cache, split_to_device, to_float_images, to_uint8_images


def test_load_cache_splits_and_labels(tiny_cache_dir):
    cache = load_cache(tiny_cache_dir)
    assert len(cache) == 96 and cache.size == 32
    sizes = [len(cache.split_indices(s)) for s in ("train", "valid", "test")]
    assert sizes == [76, 10, 10]
    assert cache.labels("test").shape == (10, 4) and cache.labels().dtype == bool
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        cache.split_indices("dev")


def test_dataset_range_and_device_split_agree(tiny_cache_dir):
    cache = load_cache(tiny_cache_dir)
    ds = CachedFaces(cache, "valid")
    image, labels = ds[3]
    assert image.shape == (3, 32, 32) and image.min() >= -1 and image.max() <= 1
    images_u8, labels_all = split_to_device(cache, "valid", "cpu")
    assert torch.equal(to_float_images(images_u8[3]), image)
    assert torch.equal(labels_all[3].float(), labels)
    assert torch.equal(to_uint8_images(to_float_images(images_u8)), images_u8)


def test_incomplete_cache_is_refused(tiny_cache_dir):
    (tiny_cache_dir / "meta.json").unlink()
    with pytest.raises(FileNotFoundError, match="prepare_data"):
        load_cache(tiny_cache_dir)


def test_row_mismatch_names_both_files(tiny_cache_dir):
    images = np.load(tiny_cache_dir / "images.npy")
    np.save(tiny_cache_dir / "images.npy", images[:-1])
    with pytest.raises(ValueError, match="95 images"):
        load_cache(tiny_cache_dir)
