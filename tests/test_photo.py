"""User photos: transparency, eye positions, alignment and unreadable files (data.photo)."""
import argparse
import warnings

import numpy as np
import pytest
from PIL import Image

from data.cache import load_face_image
from data.photo import (
    CELEBA_ALIGNED_SIZE,
    CELEBA_EYES,
    NEUTRAL_BACKGROUND,
    align_face,
    check_eyes,
    flatten_transparency,
    load_face_photo,
    parse_eyes,
)


def test_aligned_photo_is_preprocessed_like_the_cache(tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (CELEBA_ALIGNED_SIZE[1], CELEBA_ALIGNED_SIZE[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "face.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an opaque, aligned-size photo needs no note
        face = load_face_photo(tmp_path / "face.png", 32)
    assert face.shape == (3, 32, 32) and face.dtype == np.uint8
    np.testing.assert_array_equal(face, load_face_image(tmp_path / "face.png", 32))


def test_transparent_areas_become_the_neutral_grey_with_a_warning(tmp_path):
    width, height = CELEBA_ALIGNED_SIZE
    rgba = np.zeros((height, width, 4), dtype=np.uint8)
    rgba[:, :, 0] = 255  # red everywhere, but the left half is fully transparent
    rgba[:, width // 2 :, 3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "cutout.png")
    with pytest.warns(UserWarning, match=r"cutout.png has transparent areas.*\(128, 128, 128\)"):
        face = load_face_photo(tmp_path / "cutout.png", 32)
    assert tuple(face[:, 16, 2]) == NEUTRAL_BACKGROUND  # left: the grey, not black
    assert tuple(face[:, 16, 29]) == (255, 0, 0)  # right: opaque red kept
    # half-transparent pixels blend; LA and palette images with a transparent colour are flattened the same way
    flat, had = flatten_transparency(Image.new("RGBA", (2, 2), (255, 0, 0, 128)))
    assert had and np.allclose(np.asarray(flat)[0, 0], [191, 64, 64], atol=1)
    flat, had = flatten_transparency(Image.new("LA", (2, 2), (10, 0)))
    assert had and tuple(np.asarray(flat)[0, 0]) == NEUTRAL_BACKGROUND
    palette = Image.new("P", (2, 2), 3)
    palette.info["transparency"] = 3
    flat, had = flatten_transparency(palette)
    assert had and tuple(np.asarray(flat)[0, 0]) == NEUTRAL_BACKGROUND
    # an alpha channel that is opaque everywhere is no transparency: no grey, no warning
    flat, had = flatten_transparency(Image.new("RGBA", (2, 2), (1, 2, 3, 255)))
    assert not had and flat.mode == "RGB" and tuple(np.asarray(flat)[0, 0]) == (1, 2, 3)


def test_parse_eyes():
    assert parse_eyes("212,240,301,236") == (212.0, 240.0, 301.0, 236.0)
    assert parse_eyes(" -3, 40.5 ,60,41") == (-3.0, 40.5, 60.0, 41.0)
    for bad in ("1,2,3", "1,2,3,4,5", "a,b,c,d", "1;2;3;4", "nan,1,2,3", "", "1,2,,4"):
        with pytest.raises(ValueError, match=f"eyes '{bad}': expected four numbers x1,y1,x2,y2"):
            parse_eyes(bad)
    # the documented command-line form for a leading minus
    parser = argparse.ArgumentParser()
    parser.add_argument("--eyes", type=parse_eyes)
    assert parser.parse_args(["--eyes=-3,40,60,41"]).eyes == (-3.0, 40.0, 60.0, 41.0)


def test_eye_positions_are_checked_against_the_image(tmp_path):
    Image.new("RGB", (400, 300), (90, 80, 70)).save(tmp_path / "photo.png")
    with pytest.raises(ValueError, match=r"eyes 5000,5000,5100,5000: the first eye \(5000,5000\) is outside the "
                       r"400x300 image; expected eye centres with x in 0..399 and y in 0..299"):
        load_face_photo(tmp_path / "photo.png", 32, eyes=(5000, 5000, 5100, 5000))
    with pytest.raises(ValueError, match=r"the first eye \(-3,40\) is outside the 100x100 image"):
        check_eyes(parse_eyes("-3,40,60,41"), (100, 100))
    with pytest.raises(ValueError, match=r"the second eye \(60,100\) is outside the 100x100 image"):
        check_eyes((3, 40, 60, 100), (100, 100))
    with pytest.raises(ValueError, match=r"eyes 10,10,12,10: the eye centres are 2.0 pixels apart; expected at "
                       r"least 4"):
        check_eyes((10, 10, 12, 10), (100, 100))
    with pytest.raises(ValueError, match="same point"):
        align_face(Image.new("RGB", (100, 100)), (10, 10, 10, 10))
    assert check_eyes((0, 0, 99, 99), (100, 100)) == (0.0, 0.0, 99.0, 99.0)  # the corner pixels are inside


def _blob_centre(image: np.ndarray, x: float, y: float, radius: int = 6) -> tuple[float, float]:
    """Intensity-weighted centre of the bright pixels within `radius` of (x, y)."""
    x0, y0 = round(x) - radius, round(y) - radius
    patch = image[y0 : y0 + 2 * radius + 1, x0 : x0 + 2 * radius + 1].astype(np.float64)
    weights = np.clip(patch - 40, 0, None)
    ys, xs = np.mgrid[: patch.shape[0], : patch.shape[1]]
    return x0 + (weights * xs).sum() / weights.sum(), y0 + (weights * ys).sum() / weights.sum()


@pytest.mark.parametrize("eyes", [((150.0, 170.0), (230.0, 140.0)), ((300.5, 90.0), (180.0, 200.5))])
def test_alignment_puts_the_eyes_on_celeba_eyes(eyes):
    # round blobs at the given (sub-pixel) eye centres of a dark photo, tilted and scaled: the viewer's left eye
    # red, the right one green, so a face turned upside down would fail; either eye may be given first
    ys, xs = np.mgrid[:300, :400].astype(np.float64)
    photo = np.zeros((300, 400, 3))
    for x, y in eyes:
        channel = 0 if x == min(e[0] for e in eyes) else 1
        photo[:, :, channel] += 255 * np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * 3.0**2))
    img = Image.fromarray(np.clip(photo, 0, 255).astype(np.uint8))
    aligned = np.asarray(align_face(img, (*eyes[0], *eyes[1])))
    assert aligned.shape == (CELEBA_ALIGNED_SIZE[1], CELEBA_ALIGNED_SIZE[0], 3)
    for channel, (x, y) in enumerate(CELEBA_EYES):
        cx, cy = _blob_centre(aligned[:, :, channel], x, y)
        assert abs(cx - x) < 1.0 and abs(cy - y) < 1.0, (channel, x, y, cx, cy)
    # what the transform pulls in from outside the photo is the neutral grey, not black
    assert tuple(aligned[0, 0]) == NEUTRAL_BACKGROUND


def test_missing_or_unreadable_photo_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no image file .*nowhere.jpg: expected a JPEG or PNG"):
        load_face_photo(tmp_path / "nowhere.jpg", 32)
    (tmp_path / "notes.jpg").write_text("not a picture\n")
    with pytest.raises(ValueError, match=r"notes.jpg is not a readable image \(UnidentifiedImageError"):
        load_face_photo(tmp_path / "notes.jpg", 32)
    Image.new("RGB", (178, 218), (200, 100, 50)).save(tmp_path / "cut.png")
    data = (tmp_path / "cut.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cut.png is not a readable image"):
        load_face_photo(tmp_path / "cut.png", 32)
