"""Building the image cache from real (tiny) JPEG folders: order, reuse, bad files, draft decoding."""
from __future__ import annotations

import json

import numpy as np
import pytest
from celeba_fixtures import PALETTE, write_celeba
from PIL import Image

from data.cache import (
    DEFAULT_CROP_FRACTION,
    META_FILE,
    build_cache,
    crop_box,
    draft_scale,
    load_cache,
    load_face_image,
    preprocess_image,
)
from data.celeba import load_celeba_annotations


@pytest.fixture(scope="module")
def solid_celeba(tmp_path_factory):
    """10 real 178x218 JPEGs, image i a solid PALETTE[i], torchvision layout."""
    return write_celeba(tmp_path_factory.mktemp("solid"), "torchvision", n=10, images="solid")


def mean_colours(images: np.ndarray) -> np.ndarray:
    return images.reshape(len(images), 3, -1).mean(-1)  # (N, 3)


@pytest.mark.parametrize("size", [32, 64])
def test_build_shapes_order_and_labels(solid_celeba, tmp_path, size):
    out = build_cache(solid_celeba.root, tmp_path / f"cache-{size}", size=size, workers=2, progress=False)
    cache = load_cache(out)
    assert cache.images.shape == (10, 3, size, size) and cache.images.dtype == np.uint8
    # row i is image i: each image is its own solid colour
    assert np.abs(mean_colours(cache.images) - np.array(PALETTE[:10])).max() < 4
    table = load_celeba_annotations(solid_celeba.root)
    assert list(cache.table.index) == list(table.index)
    assert np.array_equal(cache.labels(), table[list(solid_celeba.attributes)].to_numpy())
    assert cache.attribute_names == list(solid_celeba.attributes)
    for column in ("partition", "identity", "lefteye_x", "rightmouth_y"):
        assert cache.table[column].tolist() == table[column].tolist()
    assert len(cache.split_indices("valid")) == int((table["partition"] == "valid").sum())
    meta = cache.meta
    assert meta["size"] == size and meta["layout"] == "torchvision" and meta["draft"] is True
    assert meta["source_root"] == str(solid_celeba.root.resolve())
    assert meta["file_count"] == meta["num_images"] == 10 and meta["skipped"] == []
    assert meta["crop"] == DEFAULT_CROP_FRACTION and meta["format_version"] == 2 and meta["suspect_damaged"] == []
    assert sorted(p.name for p in out.iterdir()) == ["annotations.csv", "images.npy", "meta.json"]  # no temp files


def test_reuse_and_rebuild(tmp_path):
    fixture = write_celeba(tmp_path / "data", "official", n=6, images="solid")
    out = tmp_path / "cache"

    def built_at() -> float:  # tells a reused cache from a rebuilt one
        return load_cache(out).meta["built_at"]

    build_cache(fixture.root, out, size=32, workers=1, progress=False)
    first = built_at()
    build_cache(fixture.root, out, size=32, workers=1, progress=False)
    assert built_at() == first  # same settings: reused
    build_cache(fixture.root, out, size=32, workers=1, progress=False, draft=False)
    assert built_at() != first and load_cache(out).meta["draft"] is False  # draft changed: rebuilt
    stamp = built_at()
    build_cache(fixture.root, out, size=32, workers=1, progress=False, draft=False, force=True)
    assert built_at() != stamp  # forced
    # more files listed: rebuilt with the new count
    bigger = write_celeba(tmp_path / "data", "official", n=8, images="solid")
    cache = load_cache(build_cache(bigger.root, out, size=32, workers=1, progress=False, draft=False))
    assert len(cache) == 8 and cache.meta["file_count"] == 8
    # same images and count, one label edited: rebuilt, and the cache carries the new label and a new fingerprint
    attr_file = bigger.root / "Anno" / "list_attr_celeba.txt"
    lines = attr_file.read_text().splitlines(keepends=True)
    fields = lines[2].split(" ")
    flip_at = next(i for i, f in enumerate(fields) if f.strip() in ("1", "-1") and i > 0)
    fields[flip_at] = fields[flip_at].replace("-1", " 1") if "-1" in fields[flip_at] else fields[flip_at].replace("1", "-1")
    lines[2] = " ".join(fields)
    attr_file.write_text("".join(lines))
    before, fingerprint = cache.table.iloc[0].copy(), cache.fingerprint
    cache = load_cache(build_cache(bigger.root, out, size=32, workers=1, progress=False, draft=False))
    changed = [c for c in cache.attribute_names if cache.table.iloc[0][c] != before[c]]
    assert len(changed) == 1 and cache.fingerprint != fingerprint
    # a damaged cache (truncated images.npy) is rebuilt, not reused
    stamp = built_at()
    images = out / "images.npy"
    images.write_bytes(images.read_bytes()[:-100])
    build_cache(bigger.root, out, size=32, workers=1, progress=False, draft=False)
    assert built_at() != stamp and len(load_cache(out)) == 8


def test_build_is_staged_so_a_failed_rebuild_keeps_the_old_cache(tmp_path):
    fixture = write_celeba(tmp_path / "data", "torchvision", n=6, images="solid")
    out = tmp_path / "cache"
    good = load_cache(build_cache(fixture.root, out, size=32, workers=1, progress=False)).fingerprint
    (fixture.image_dir / "000002.jpg").write_bytes(b"broken")
    with pytest.raises(ValueError, match="000002.jpg"):
        build_cache(fixture.root, out, size=32, workers=1, progress=False, force=True)
    assert load_cache(out).fingerprint == good  # the old cache is whole
    (out / "judge.pt").write_bytes(b"an earlier version's judge")  # a cache folder as earlier versions left it
    (fixture.image_dir / "000002.jpg").write_bytes((fixture.image_dir / "000001.jpg").read_bytes())
    build_cache(fixture.root, out, size=32, workers=1, progress=False, force=True)
    assert load_cache(out).fingerprint != good and not (out / "judge.pt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "data"]  # no staging folder left behind
    (tmp_path / "not-a-cache").mkdir()
    (tmp_path / "not-a-cache" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not-a-cache exists and is not an image cache folder"):
        build_cache(fixture.root, tmp_path / "not-a-cache", size=32, workers=1, progress=False)


def test_a_killed_builds_staging_folder_is_removed_by_the_next_build(tmp_path):
    import os
    import subprocess
    import sys

    fixture = write_celeba(tmp_path / "data", "torchvision", n=6, images="solid")
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(gone.stdout)  # a process that has exited, as a killed build's has
    abandoned = tmp_path / f".cache.building-{dead_pid}-1"
    live = tmp_path / f".cache.building-{os.getpid()}-2"  # a build still running (this process) keeps its folder
    for stage in (abandoned, live):
        stage.mkdir()
        (stage / "images.npy").write_bytes(b"partial")
    build_cache(fixture.root, tmp_path / "cache", size=32, workers=1, progress=False)
    assert not abandoned.exists() and live.is_dir()


def test_replacing_a_cache_with_other_data_warns_with_both_fingerprints(tmp_path):
    a = write_celeba(tmp_path / "a", "torchvision", n=6, images="solid")
    b = write_celeba(tmp_path / "b", "torchvision", n=6, images="gradient")
    out = tmp_path / "cache"
    old = load_cache(build_cache(a.root, out, size=32, workers=1, progress=False)).fingerprint
    with pytest.warns(UserWarning, match=rf"replaced the cache .*{old[:12]}"):
        build_cache(b.root, out, size=32, workers=1, progress=False)


def test_images_with_a_zeroed_second_half_are_reported(tmp_path):
    fixture = write_celeba(tmp_path / "data", "torchvision", n=6, images="gradient")
    damaged = fixture.image_dir / "000004.jpg"
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2 : -2] = bytes(len(data) - 2 - len(data) // 2)  # right length, end marker kept
    damaged.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="000004.jpg"):
        cache = load_cache(build_cache(fixture.root, tmp_path / "cache", size=32, workers=2, progress=False))
    assert cache.meta["suspect_damaged"] == ["000004.jpg"] and len(cache) == 6


def test_detailed_jpegs_with_a_zeroed_second_half_are_reported_at_every_size_and_decode(tmp_path):
    fixture = write_celeba(tmp_path / "data", "torchvision", n=10, images="gradient")
    noise = np.random.default_rng(0)
    for path in sorted(fixture.image_dir.glob("*.jpg")):  # photo-like detail: files of 40 kB and more
        pixels = np.asarray(Image.open(path)) // 2 + noise.integers(0, 128, (218, 178, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(path, quality=95)
    damaged = ["000002.jpg", "000005.jpg", "000009.jpg"]
    for name in damaged:  # right length, end marker kept: the zeros decode as one repeated tile, not a flat bottom
        data = bytearray((fixture.image_dir / name).read_bytes())
        data[len(data) // 2 : -2] = bytes(len(data) - 2 - len(data) // 2)
        (fixture.image_dir / name).write_bytes(bytes(data))
    for size, draft in ((32, True), (64, True), (64, False)):
        with pytest.warns(UserWarning, match="3 image.*end in zeroed bytes.*000002.jpg"):
            cache = load_cache(build_cache(fixture.root, tmp_path / f"cache-{size}-{draft}", size=size, draft=draft,
                                           workers=1, progress=False))
        assert cache.meta["suspect_damaged"] == damaged and len(cache) == 10


def test_corrupt_and_truncated_jpegs(tmp_path):
    fixture = write_celeba(tmp_path / "data", "kaggle", n=8, images="solid")
    truncated = fixture.image_dir / "000003.jpg"
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    with Image.open(truncated) as img, pytest.raises(OSError):
        img.load()  # PIL itself must refuse it, or the cache would hold a grey half-image
    out = tmp_path / "cache"
    with pytest.raises(ValueError, match=r"cannot decode image .*000003\.jpg.*--skip-bad"):
        build_cache(fixture.root, out, size=32, workers=2, progress=False)
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # nothing half-built is left
    (fixture.image_dir / "000006.jpg").write_bytes(b"not a jpeg at all")
    (fixture.image_dir / "000008.jpg").unlink()
    with pytest.raises(ValueError, match=r"000003\.jpg.*\(and 2 more\)"):
        build_cache(fixture.root, out, size=32, workers=2, progress=False)

    cache = load_cache(build_cache(fixture.root, out, size=32, workers=2, skip_bad=True, progress=False))
    bad = ["000003.jpg", "000006.jpg", "000008.jpg"]
    assert cache.meta["skipped"] == bad and cache.meta["num_images"] == 5 and cache.meta["file_count"] == 8
    assert "does not exist" in cache.meta["skipped_errors"][2]
    kept = [i for i in range(8) if f"{i + 1:06d}.jpg" not in bad]
    assert list(cache.table.index) == [f"{i + 1:06d}.jpg" for i in kept]
    assert np.abs(mean_colours(cache.images) - np.array([PALETTE[i] for i in kept])).max() < 4
    expected = fixture.expected.drop(index=bad)
    assert np.array_equal(cache.labels(), expected[list(fixture.attributes)].to_numpy())


def test_missing_image_is_named(tmp_path):
    fixture = write_celeba(tmp_path / "data", "torchvision", n=6, images="solid")
    (fixture.image_dir / "000004.jpg").unlink()
    with pytest.raises(ValueError, match=r"image .*000004\.jpg does not exist"):
        build_cache(fixture.root, tmp_path / "cache", size=32, workers=1, progress=False)


def test_missing_image_folder(tmp_path):
    fixture = write_celeba(tmp_path / "data", "official", n=6)  # annotations only
    (fixture.image_dir).rmdir()
    with pytest.raises(FileNotFoundError, match=r"image folder .*Img/img_align_celeba not found"):
        build_cache(fixture.root, tmp_path / "cache", size=32, workers=1, progress=False)


@pytest.mark.parametrize("size", [32, 64])
def test_draft_agrees_with_full_decode(tmp_path, size):
    fixture = write_celeba(tmp_path / "data", "torchvision", n=6, images="gradient")
    draft = load_cache(build_cache(fixture.root, tmp_path / "d", size=size, workers=1, progress=False))
    full = load_cache(build_cache(fixture.root, tmp_path / "f", size=size, workers=1, draft=False, progress=False))
    difference = np.abs(draft.images.astype(np.int16) - full.images.astype(np.int16))
    # exact-scale draft crops measure ~0.45 levels here; cropping by the reduced width alone is several times worse
    assert difference.mean() < 1.0 and np.percentile(difference, 99) <= 4
    assert draft.meta["draft"] and not full.meta["draft"]


def test_crop_geometry():
    assert crop_box(178, 218) == (15, 35, 163, 183)  # CelebA's 148-px centre square
    assert draft_scale(178, 218, 64) == 2 and draft_scale(178, 218, 32) == 4 and draft_scale(178, 218, 128) == 1
    assert crop_box(300, 200, 1.0) == (50, 0, 250, 200)  # never larger than the short side


def test_preprocess_frames_the_crop(tmp_path):
    """Inside the 148-px square is green, outside red: the result is green up to the filter's edge."""
    pixels = np.zeros((218, 178, 3), np.uint8)
    pixels[...] = (255, 0, 0)
    pixels[35:183, 15:163] = (0, 255, 0)
    for mode in ("RGB", "RGBA", "L"):
        out = preprocess_image(Image.fromarray(pixels).convert(mode), size=64)
        assert out.shape == (3, 64, 64) and out.dtype == np.uint8
        inner = out[:, 2:-2, 2:-2].astype(int)
        if mode == "L":
            assert (np.abs(inner - inner[0, 0, 0]) <= 1).all()
        else:
            assert (inner[1] >= 250).all() and (inner[0] <= 5).all()
    # a JPEG the caller drafted already is cropped by its own reduced width
    Image.fromarray(pixels).save(tmp_path / "face.jpg", quality=95)
    with Image.open(tmp_path / "face.jpg") as img:
        img.draft("RGB", (89, 109))
        assert img.size == (89, 109)
        drafted = preprocess_image(img, size=32)
    full = load_face_image(tmp_path / "face.jpg", size=32)
    own_draft = load_face_image(tmp_path / "face.jpg", size=32, draft=True)
    assert np.abs(drafted.astype(int) - full).mean() < 3 and np.abs(own_draft.astype(int) - full).mean() < 3


def test_meta_written_last_survives_json(solid_celeba, tmp_path):
    out = build_cache(solid_celeba.root, tmp_path / "c", size=32, workers=1, progress=False)
    meta = json.loads((out / META_FILE).read_text())
    for key in ("format_version", "attributes", "size", "crop", "source_root", "layout", "num_images",
                "file_count", "skipped", "draft", "fingerprint", "images_digest"):  # fmt: skip
        assert key in meta


def test_prepare_data_from_a_celeba_root(solid_celeba, tmp_path, capsys):
    from data.prepare import PrepareConfig
    from experiments.prepare_data import main

    out = main(PrepareConfig(celeba_root=str(solid_celeba.root), size=32, out=str(tmp_path / "prep"), decode_workers=1))
    assert out == tmp_path / "prep" and len(load_cache(out)) == 10
    assert "images/s" in capsys.readouterr().out
    main(PrepareConfig(celeba_root=str(solid_celeba.root), size=32, out=str(tmp_path / "prep"), decode_workers=1))
    assert "reused" in capsys.readouterr().out
