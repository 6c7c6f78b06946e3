"""The cache reader on a real (tiny) cache folder."""
import numpy as np
import pytest
import torch

from data.cache import load_cache, split_to_device, to_float_images, to_uint8_images


def test_load_cache_splits_and_labels(tiny_cache_dir):
    cache = load_cache(tiny_cache_dir)
    assert len(cache) == 96 and cache.size == 32
    sizes = [len(cache.split_indices(s)) for s in ("train", "valid", "test")]
    assert sizes == [76, 10, 10]
    assert cache.labels("test").shape == (10, 4) and cache.labels().dtype == bool
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        cache.split_indices("dev")


def test_split_to_device_reads_the_split_rows_and_converts_both_ways(tiny_cache_dir):
    cache = load_cache(tiny_cache_dir)
    rows = cache.split_indices("valid")
    images_u8, labels = split_to_device(cache, "valid", "cpu", subset=[3, 1])
    assert torch.equal(images_u8, torch.from_numpy(cache.images[rows[[3, 1]]]))
    assert torch.equal(labels, torch.from_numpy(cache.labels("valid")[[3, 1]]))
    image = to_float_images(images_u8)
    assert image.shape == (2, 3, 32, 32) and image.min() >= -1 and image.max() <= 1
    assert torch.equal(to_uint8_images(image), images_u8)


def test_incomplete_cache_is_refused(tiny_cache_dir):
    (tiny_cache_dir / "meta.json").unlink()
    with pytest.raises(FileNotFoundError, match="prepare_data"):
        load_cache(tiny_cache_dir)


def test_images_file_that_does_not_match_meta_is_named(tiny_cache_dir):
    images = np.load(tiny_cache_dir / "images.npy")
    np.save(tiny_cache_dir / "images.npy", images[:-1])
    with pytest.raises(ValueError, match=r"images\.npy: holds \(95, 3, 32, 32\).*prepare_data"):
        load_cache(tiny_cache_dir)


def test_truncated_images_file_is_named_with_the_remedy(tiny_cache_dir):
    path = tiny_cache_dir / "images.npy"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"images\.npy: .* bytes, expected .*truncated.*prepare_data"):
        load_cache(tiny_cache_dir)


def test_images_file_of_another_build_is_refused(tiny_cache_dir, tmp_path):
    from conftest import write_tiny_cache

    other = write_tiny_cache(tmp_path / "other", seed=1)  # same shape, other pixels
    (tiny_cache_dir / "images.npy").write_bytes((other / "images.npy").read_bytes())
    with pytest.raises(ValueError, match="not the images meta.json was written for"):
        load_cache(tiny_cache_dir)


def test_fingerprint_follows_images_and_labels(tmp_path):
    from conftest import write_tiny_cache

    a = load_cache(write_tiny_cache(tmp_path / "a")).fingerprint
    assert load_cache(write_tiny_cache(tmp_path / "b")).fingerprint == a  # same content, same fingerprint
    assert load_cache(write_tiny_cache(tmp_path / "c", seed=1)).fingerprint != a
