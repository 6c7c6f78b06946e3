"""Reading CelebA annotations in the torchvision, official and Kaggle layouts, with the real files' quirks."""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
from celeba_fixtures import FIXTURE_ATTRIBUTES, write_celeba

from data.celeba import (
    CELEBA_ATTRIBUTES,
    LANDMARK_COLUMNS,
    CelebALayout,
    attribute_columns,
    celeba_image_path,
    find_celeba,
    load_celeba_annotations,
)


def assert_same_table(table: pd.DataFrame, expected: pd.DataFrame) -> None:
    """Every value, every column name and order, every dtype family."""
    assert table.index.name == "image_id"
    assert list(table.index) == list(expected.index)
    assert list(table.columns) == list(expected.columns)
    for name in expected.columns:
        got, want = table[name], expected[name]
        if want.dtype == bool:
            assert got.dtype == bool, name
        elif name == "partition":
            assert pd.api.types.is_string_dtype(got.dtype)
        else:
            assert pd.api.types.is_integer_dtype(got.dtype), name
        assert got.tolist() == want.tolist(), name


LAYOUT_CASES = [
    pytest.param("torchvision", dict(), id="torchvision"),
    pytest.param("torchvision", dict(pass_inner=True), id="torchvision-inner-root"),
    pytest.param("official", dict(), id="official"),
    pytest.param("kaggle", dict(nested=True), id="kaggle-double-nested"),
    pytest.param("kaggle", dict(nested=False, landmarks=False), id="kaggle-single-nested"),
]


@pytest.mark.parametrize("layout,options", LAYOUT_CASES)
def test_each_layout_reads_every_value(tmp_path, layout, options):
    fixture = write_celeba(tmp_path / "data", layout, n=11, **options)
    found = find_celeba(fixture.root)
    assert found.kind == layout
    assert found.image_dir == fixture.image_dir
    assert (found.identity_file is None) == (layout == "kaggle")
    assert (found.landmarks_file is None) == (not options.get("landmarks", True))
    table = load_celeba_annotations(fixture.root)
    assert_same_table(table, fixture.expected)
    assert attribute_columns(table) == list(FIXTURE_ATTRIBUTES)
    assert set(table["partition"]) == {"train", "valid", "test"}
    assert celeba_image_path(fixture.root, "000003.jpg") == fixture.image_dir / "000003.jpg"
    assert celeba_image_path(found, "000003.jpg") == fixture.image_dir / "000003.jpg"
    # the layout object is accepted in place of the root
    assert_same_table(load_celeba_annotations(found), fixture.expected)


def test_text_files_carry_the_real_quirks(tmp_path):
    """Guard the fixture itself: CRLF, count line, trailing-space header, runs of spaces."""
    fixture = write_celeba(tmp_path, "torchvision", n=6)
    raw = (fixture.base / "list_attr_celeba.txt").read_bytes()
    lines = raw.split(b"\r\n")
    assert lines[0] == b"6" and lines[1].endswith(b"Young ") and b"\n" not in lines[2]
    assert re.search(rb"\d  1", raw) and re.search(rb" -1 -1|\d -1", raw)
    assert b"  " in (fixture.base / "list_landmarks_align_celeba.txt").read_bytes().split(b"\r\n")[2]


def test_all_forty_official_attributes(tmp_path):
    fixture = write_celeba(tmp_path, "torchvision", n=8, attributes=CELEBA_ATTRIBUTES)
    table = load_celeba_annotations(fixture.root)
    assert len(CELEBA_ATTRIBUTES) == 40 and CELEBA_ATTRIBUTES[0] == "5_o_Clock_Shadow" and CELEBA_ATTRIBUTES[-1] == "Young"
    assert attribute_columns(table) == list(CELEBA_ATTRIBUTES)  # 40, no empty 41st from the trailing space
    assert list(table.columns) == [*CELEBA_ATTRIBUTES, "partition", "identity", *LANDMARK_COLUMNS]
    assert_same_table(table, fixture.expected)


def test_all_forty_attributes_kaggle(tmp_path):
    fixture = write_celeba(tmp_path, "kaggle", n=7, attributes=CELEBA_ATTRIBUTES)
    table = load_celeba_annotations(fixture.root)
    assert attribute_columns(table) == list(CELEBA_ATTRIBUTES)
    assert_same_table(table, fixture.expected)


def test_blank_lines_are_ignored_and_line_numbers_stay_true(tmp_path):
    fixture = write_celeba(tmp_path, "torchvision", n=6)
    path = fixture.base / "list_attr_celeba.txt"
    lines = path.read_text().splitlines()
    lines.insert(4, "   ")  # a blank line between rows 2 and 3
    lines[6] = "000004.jpg  1  7 -1 -1  1"  # line 7 of the file now holds a bad value
    path.write_text("\r\n".join(lines) + "\r\n\r\n")
    with pytest.raises(ValueError, match=r"list_attr_celeba\.txt, line 7: value '7'"):
        load_celeba_annotations(fixture.root)


# ------------------------------------------------------------------------------------------------ bad input


def rewrite_line(path: Path, lineno: int, new: str | None) -> None:
    """Replace (or delete, with None) 1-based line `lineno`, keeping CRLF endings."""
    lines = path.read_bytes().decode().split("\r\n")
    if new is None:
        del lines[lineno - 1]
    else:
        lines[lineno - 1] = new
    path.write_bytes("\r\n".join(lines).encode())


def test_missing_root_and_no_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a folder"):
        find_celeba(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError) as info:
        load_celeba_annotations(tmp_path / "empty")
    message = str(info.value)
    assert "no CelebA annotation files found" in message and str(tmp_path / "empty") in message
    for expected in ("torchvision", "official", "kaggle", "list_attr_celeba.txt", "Anno", "list_attr_celeba.csv"):
        assert expected in message


def test_missing_partition_file(tmp_path):
    fixture = write_celeba(tmp_path, "official", n=6)
    (fixture.base / "Eval" / "list_eval_partition.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"official layout.*Eval/list_eval_partition\.txt"):
        find_celeba(fixture.root)


def test_wrong_number_of_fields_names_file_and_line(tmp_path):
    fixture = write_celeba(tmp_path, "torchvision", n=8)
    path = fixture.base / "list_attr_celeba.txt"
    rewrite_line(path, 6, "000004.jpg  1 -1  1")  # data row 4 is line 6 (count line + header first)
    with pytest.raises(ValueError, match=r"list_attr_celeba\.txt, line 6: expected 6 fields .* found 4"):
        load_celeba_annotations(fixture.root)
    rewrite_line(path, 6, "000004.jpg  1 -1  1  1  1  1")  # one too many
    with pytest.raises(ValueError, match=r"list_attr_celeba\.txt, line 6: expected 6 fields .* found 7"):
        load_celeba_annotations(fixture.root)


def test_value_other_than_plus_minus_one(tmp_path):
    fixture = write_celeba(tmp_path, "torchvision", n=8)
    path = fixture.base / "list_attr_celeba.txt"
    rewrite_line(path, 9, "000007.jpg  1 -1  0  1  1")
    with pytest.raises(ValueError, match=r"list_attr_celeba\.txt, line 9: value '0' for Male of 000007\.jpg"):
        load_celeba_annotations(fixture.root)
    rewrite_line(path, 9, "000007.jpg  1 -1  1  yes  1")
    with pytest.raises(ValueError, match=r"line 9: value 'yes' for Smiling .* not an integer"):
        load_celeba_annotations(fixture.root)


def test_kaggle_bad_value_line_number(tmp_path):
    fixture = write_celeba(tmp_path, "kaggle", n=8)
    path = fixture.base / "list_attr_celeba.csv"
    lines = path.read_text().splitlines()
    lines[3] = lines[3].rsplit(",", 1)[0] + ",2"  # line 4: header, then rows 1..
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"list_attr_celeba\.csv, line 4: value '2' for Young of 000003\.jpg"):
        load_celeba_annotations(fixture.root)


def test_bad_partition_value(tmp_path):
    fixture = write_celeba(tmp_path, "torchvision", n=6)
    rewrite_line(fixture.base / "list_eval_partition.txt", 5, "000005.jpg 3")
    with pytest.raises(ValueError, match=r"list_eval_partition\.txt, line 5: value '3'.*expected one of \[0, 1, 2\]"):
        load_celeba_annotations(fixture.root)


def test_count_line_disagrees(tmp_path):
    fixture = write_celeba(tmp_path, "torchvision", n=6)
    rewrite_line(fixture.base / "list_landmarks_align_celeba.txt", 1, "202599")
    with pytest.raises(ValueError, match=r"list_landmarks_align_celeba\.txt, line 1: the count line says 202599 images but the file lists 6"):
        load_celeba_annotations(fixture.root)


def test_image_missing_from_one_file(tmp_path):
    fixture = write_celeba(tmp_path, "torchvision", n=6)
    base = fixture.base
    rewrite_line(base / "list_eval_partition.txt", 4, None)  # drops 000004.jpg
    with pytest.raises(
        ValueError,
        match=r"image 000004\.jpg is listed in .*list_attr_celeba\.txt \(line 6\) but not in .*list_eval_partition\.txt",
    ):
        load_celeba_annotations(fixture.root)


def test_image_only_in_the_second_file(tmp_path):
    fixture = write_celeba(tmp_path, "official", n=6)
    path = fixture.base / "Anno" / "identity_CelebA.txt"
    path.write_bytes(path.read_bytes() + b"000099.jpg 12\r\n")
    with pytest.raises(
        ValueError, match=r"image 000099\.jpg is listed in .*identity_CelebA\.txt \(line 7\) but not in .*list_attr_celeba\.txt"
    ):
        load_celeba_annotations(fixture.root)


def test_duplicate_image(tmp_path):
    fixture = write_celeba(tmp_path, "torchvision", n=6)
    path = fixture.base / "identity_CelebA.txt"
    rewrite_line(path, 5, "000002.jpg 17")
    with pytest.raises(ValueError, match=r"identity_CelebA\.txt, line 5: image 000002\.jpg is listed again \(first on line 2\)"):
        load_celeba_annotations(fixture.root)


def test_layout_is_frozen_dataclass(tmp_path):
    fixture = write_celeba(tmp_path, "kaggle", n=6)
    layout = find_celeba(fixture.root)
    assert isinstance(layout, CelebALayout)
    with pytest.raises(Exception):
        layout.kind = "official"  # type: ignore[misc]
    assert load_celeba_annotations(layout)["partition"].tolist() == fixture.expected["partition"].tolist()
