"""Reading CelebA's annotations in place, in the three layouts users have on disk (torchvision, official, Kaggle).

Layouts (`root` may also be the folder that directly holds the files, e.g. `.../celeba`):
    torchvision  root/celeba/{img_align_celeba/, list_attr_celeba.txt, list_eval_partition.txt,
                 identity_CelebA.txt, list_landmarks_align_celeba.txt}
    official     root/Anno/{list_attr_celeba.txt, identity_CelebA.txt, list_landmarks_align_celeba.txt},
                 root/Eval/list_eval_partition.txt, root/Img/img_align_celeba/
    kaggle       root/{list_attr_celeba.csv, list_eval_partition.csv, list_landmarks_align_celeba.csv},
                 root/img_align_celeba/img_align_celeba/ (or singly nested); no identity file

The text files are parsed with pandas' C tokenizer (fast on all 202,599 rows); only when that fast
parse finds something wrong are the lines scanned one by one, so every error names the file and its line.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

CELEBA_ATTRIBUTES: tuple[str, ...] = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs", "Big_Lips",
    "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby", "Double_Chin",
    "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open",
    "Mustache", "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline",
    "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat",
    "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
)  # fmt: skip
# CelebA's hair colour attributes, in its column order (a face has at most one; none means another colour)
HAIR_COLOURS: tuple[str, ...] = ("Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair")
# Attributes of which a face has at most one: setting one to 1 means the others are 0
EXCLUSIVE_GROUPS: tuple[tuple[str, ...], ...] = (HAIR_COLOURS, ("Straight_Hair", "Wavy_Hair"))
LANDMARK_COLUMNS: tuple[str, ...] = (
    "lefteye_x", "lefteye_y", "righteye_x", "righteye_y", "nose_x", "nose_y",
    "leftmouth_x", "leftmouth_y", "rightmouth_x", "rightmouth_y",
)  # fmt: skip
PARTITION_NAMES: tuple[str, ...] = ("train", "valid", "test")  # codes 0, 1, 2 in list_eval_partition
LAYOUT_KINDS: tuple[str, ...] = ("torchvision", "official", "kaggle")
IMAGE_FOLDER = "img_align_celeba"


@dataclass(frozen=True)
class CelebALayout:
    """Where one CelebA copy keeps its annotation files and aligned images."""

    kind: str  # one of LAYOUT_KINDS
    attr_file: Path
    partition_file: Path
    identity_file: Path | None
    landmarks_file: Path | None
    image_dir: Path


# --------------------------------------------------------------------------------------------- locating files


def _candidate_bases(root: Path) -> list[Path]:
    """`root` itself and a `celeba`/`CelebA` folder inside it, each once (case-insensitive file systems)."""
    bases: list[Path] = []
    for base in (root, root / "celeba", root / "CelebA"):
        if base.is_dir() and not any(base.resolve() == b.resolve() for b in bases):
            bases.append(base)
    return bases


def _image_dir(folder: Path) -> Path:
    """`folder`, or `folder/img_align_celeba` when the archive was unpacked into a folder of its own name."""
    nested = folder / IMAGE_FOLDER
    return nested if nested.is_dir() else folder


def _optional(path: Path) -> Path | None:
    return path if path.is_file() else None


def _layouts_at(base: Path) -> list[tuple[str, Path, dict]]:
    """(kind, attribute file, the rest) of each layout, as it would sit under `base`."""
    return [
        (
            "torchvision",
            base / "list_attr_celeba.txt",
            dict(
                partition_file=base / "list_eval_partition.txt",
                identity_file=base / "identity_CelebA.txt",
                landmarks_file=base / "list_landmarks_align_celeba.txt",
                image_dir=base / IMAGE_FOLDER,
            ),
        ),
        (
            "official",
            base / "Anno" / "list_attr_celeba.txt",
            dict(
                partition_file=base / "Eval" / "list_eval_partition.txt",
                identity_file=base / "Anno" / "identity_CelebA.txt",
                landmarks_file=base / "Anno" / "list_landmarks_align_celeba.txt",
                image_dir=base / "Img" / IMAGE_FOLDER,
            ),
        ),
        (
            "kaggle",
            base / "list_attr_celeba.csv",
            dict(
                partition_file=base / "list_eval_partition.csv",
                identity_file=None,  # Kaggle's copy ships no identities
                landmarks_file=base / "list_landmarks_align_celeba.csv",
                image_dir=base / IMAGE_FOLDER,
            ),
        ),
    ]


def find_celeba(root: str | Path) -> CelebALayout:
    """Detect which CelebA layout `root` holds; raises FileNotFoundError saying what was looked for and where."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"CelebA root {root} is not a folder (or does not exist)")
    tried: list[str] = []
    for base in _candidate_bases(root):
        for kind, attr_file, rest in _layouts_at(base):
            if not attr_file.is_file():
                tried.append(f"{kind}: {attr_file}")
                continue
            partition_file = rest["partition_file"]
            if not partition_file.is_file():
                raise FileNotFoundError(
                    f"found {attr_file} ({kind} layout) but not its partition file {partition_file}"
                )
            identity_file = rest["identity_file"]
            return CelebALayout(
                kind=kind,
                attr_file=attr_file,
                partition_file=partition_file,
                identity_file=None if identity_file is None else _optional(identity_file),
                landmarks_file=_optional(rest["landmarks_file"]),
                image_dir=_image_dir(rest["image_dir"]),
            )
    raise FileNotFoundError(
        f"no CelebA annotation files found under {root}; tried the torchvision, official and kaggle layouts at:\n  "
        + "\n  ".join(tried)
    )


def celeba_image_path(root_or_layout: str | Path | CelebALayout, image_id: str) -> Path:
    """Path of one aligned image, e.g. `celeba_image_path(root, "000001.jpg")`."""
    layout = root_or_layout if isinstance(root_or_layout, CelebALayout) else find_celeba(root_or_layout)
    return layout.image_dir / image_id


# --------------------------------------------------------------------------------------------- parsing one file


@dataclass
class _Table:
    """One parsed annotation file: image names, integer values and where each row came from."""

    path: Path
    ids: pd.Index  # (n,) image file names, in file order
    names: list[str]  # value column names (from the header, or given)
    values: np.ndarray  # (n, k) int64
    line_numbers: np.ndarray  # (n,) 1-based line of each row in the file


def _split(line: str, csv: bool) -> list[str]:
    return [field.strip() for field in line.split(",")] if csv else line.split()


def _check_line(
    path: Path, lineno: int, line: str, names: list[str], csv: bool, allowed: tuple[int, ...] | None
) -> None:
    """Raise the precise error for one data line, if it has one."""
    fields = _split(line, csv)
    if len(fields) != len(names) + 1:
        raise ValueError(
            f"{path}, line {lineno}: expected {len(names) + 1} fields (image name + {len(names)} values), "
            f"found {len(fields)}: {line.strip()[:120]!r}"
        )
    for name, field in zip(names, fields[1:]):
        try:
            value = int(field)
        except ValueError:
            raise ValueError(
                f"{path}, line {lineno}: value {field!r} for {name} of {fields[0]} is not an integer"
            ) from None
        if allowed is not None and value not in allowed:
            raise ValueError(
                f"{path}, line {lineno}: value {field!r} for {name} of {fields[0]}; expected one of {list(allowed)}"
            )


def _read_head(path: Path, lines: list[str], kept: list[int], csv: bool, header: bool,
               names: list[str] | None) -> tuple[int, list[str], int | None, int | None]:
    """The count line and header of an annotation file -> (position in `kept` of the first row, column names,
    the count, its line number)."""
    pos = 0
    count, count_line = None, None
    if pos < len(kept):
        first = _split(lines[kept[pos]], csv)
        if len(first) == 1 and first[0].isdigit():  # the count line of the official text files
            count, count_line = int(first[0]), kept[pos] + 1
            pos += 1
    if header:
        if pos >= len(kept):
            raise ValueError(f"{path}: no header line (expected the column names)")
        header_line = kept[pos] + 1
        names = _split(lines[kept[pos]], csv)
        if names and names[0].lower() == "image_id":
            names = names[1:]
        if not names or any(not n for n in names):
            raise ValueError(f"{path}, line {header_line}: bad header {lines[kept[pos]].strip()[:120]!r}")
        duplicated = pd.Index(names)[pd.Index(names).duplicated()]
        if len(duplicated):
            raise ValueError(f"{path}, line {header_line}: column {duplicated[0]!r} appears twice in the header")
        pos += 1
    elif pos < len(kept) and _split(lines[kept[pos]], csv)[0].lower() == "image_id":
        pos += 1  # Kaggle's CSVs name their columns even where the text files do not
    if names is None:
        raise ValueError(f"{path}: no column names (a header or given names are needed)")
    return pos, names, count, count_line


def _read_table(
    path: Path, *, header: bool, names: list[str] | None = None, allowed: tuple[int, ...] | None = None
) -> _Table:
    """Parse a CelebA annotation file: optional count line, header (if `header`), then `name v1 v2 ...` rows.

    Whitespace files may have CRLF endings, a trailing space after the header and right-aligned fields
    separated by runs of spaces; `.csv` files are comma separated with an `image_id,...` header.
    """
    csv = path.suffix.lower() == ".csv"
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not a UTF-8 text file ({e})") from None
    lines = text.splitlines()  # handles \n, \r\n and \r
    kept = [i for i, line in enumerate(lines) if line.strip()]  # blank lines carry nothing; line numbers stay right
    pos, names, count, count_line = _read_head(path, lines, kept, csv, header, names)
    data = kept[pos:]
    line_numbers = np.asarray(data, dtype=np.int64) + 1  # (n,)

    def scan_for_error(reason: str) -> ValueError:
        for i in data:
            _check_line(path, i + 1, lines[i], names, csv, allowed)
        return ValueError(f"{path}: could not parse the annotation rows ({reason})")

    if not data:
        raise ValueError(f"{path}: no annotation rows")
    body = "\n".join(lines[i] for i in data)
    try:
        frame = pd.read_csv(
            io.StringIO(body),
            sep="," if csv else r"\s+",
            skipinitialspace=csv,
            header=None,
            dtype={0: str},
            skip_blank_lines=False,
        )
    except (pd.errors.ParserError, ValueError) as e:
        raise scan_for_error(str(e)) from None
    if frame.shape[1] != len(names) + 1 or not all(pd.api.types.is_integer_dtype(t) for t in frame.dtypes.iloc[1:]):
        raise scan_for_error("wrong number of fields or non-integer values")
    values = frame.iloc[:, 1:].to_numpy(dtype=np.int64)  # (n, k)
    if allowed is not None:
        bad = np.ones(values.shape, dtype=bool)  # (n, k); a loop over the few allowed values beats np.isin here
        for value in allowed:
            bad &= values != value
        if bad.any():
            row = int(np.flatnonzero(bad.any(axis=1))[0])
            _check_line(path, int(line_numbers[row]), lines[data[row]], names, csv, allowed)
    ids = pd.Index(frame.iloc[:, 0], name="image_id")
    if ids.has_duplicates:
        row = int(np.flatnonzero(ids.duplicated())[0])
        first = int(line_numbers[np.flatnonzero(ids == ids[row])[0]])
        raise ValueError(f"{path}, line {line_numbers[row]}: image {ids[row]} is listed again (first on line {first})")
    if count is not None and count != len(ids):
        raise ValueError(
            f"{path}, line {count_line}: the count line says {count} images but the file lists {len(ids)}"
        )
    return _Table(path=path, ids=ids, names=list(names), values=values, line_numbers=line_numbers)


def _rows_in_order(reference: _Table, other: _Table) -> np.ndarray:
    """Positions in `other` of `reference`'s images; raises if either file lists an image the other lacks."""
    positions = other.ids.get_indexer(reference.ids)  # (n,)
    if (positions < 0).any():
        row = int(np.flatnonzero(positions < 0)[0])
        raise ValueError(
            f"image {reference.ids[row]} is listed in {reference.path} (line {reference.line_numbers[row]}) "
            f"but not in {other.path}"
        )
    if len(other.ids) != len(reference.ids):
        extra = np.flatnonzero(~other.ids.isin(reference.ids))
        row = int(extra[0])
        raise ValueError(
            f"image {other.ids[row]} is listed in {other.path} (line {other.line_numbers[row]}) "
            f"but not in {reference.path}"
        )
    return positions


def load_celeba_annotations(root: str | Path | CelebALayout) -> pd.DataFrame:
    """All of CelebA's annotations as one frame indexed by image file name (index `image_id`).

    Columns: one bool per attribute (header order), `partition` (train/valid/test), then `identity` (int)
    and the landmark columns (int) when those files exist. Rows follow the attribute file.
    """
    layout = root if isinstance(root, CelebALayout) else find_celeba(root)
    attrs = _read_table(layout.attr_file, header=True, allowed=(-1, 1))
    partition = _read_table(layout.partition_file, header=False, names=["partition"], allowed=(0, 1, 2))
    columns: dict[str, np.ndarray] = {name: attrs.values[:, j] == 1 for j, name in enumerate(attrs.names)}
    codes = partition.values[_rows_in_order(attrs, partition), 0]  # (n,)
    columns["partition"] = np.asarray(PARTITION_NAMES, dtype=object)[codes]
    if layout.identity_file is not None:
        identity = _read_table(layout.identity_file, header=False, names=["identity"])
        columns["identity"] = identity.values[_rows_in_order(attrs, identity), 0]
    if layout.landmarks_file is not None:
        landmarks = _read_table(layout.landmarks_file, header=True)
        rows = _rows_in_order(attrs, landmarks)
        for j, name in enumerate(landmarks.names):
            if name in columns:
                raise ValueError(f"{landmarks.path}: landmark column {name!r} clashes with a column already read")
            columns[name] = landmarks.values[rows, j]
    table = pd.DataFrame(columns, index=attrs.ids)
    table["partition"] = table["partition"].astype(str)
    return table


def attribute_columns(table: pd.DataFrame) -> list[str]:
    """The attribute (bool) columns of an annotation table, in column order."""
    return [name for name in table.columns if pd.api.types.is_bool_dtype(table[name].dtype)]
