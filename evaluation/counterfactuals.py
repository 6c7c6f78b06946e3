"""Ground truth on procedural faces: the true counterfactual of an edit, where it differs, and how an edit compares.

The procedural generator records every face's factors (`data.synthetic`), so any face can be re-rendered with an
attribute flipped: the same person, pose, light and noise. From it:
  true change region  where the counterfactual render differs from the original render (any channel by more than
                      `REGION_LEVELS` of 255 levels, both rendered through the cache's crop + resize), grown by
                      `REGION_GROW` pixel at 64 px;
  inside_change       per face, the share of an edit's squared pixel change (edit minus its base: the
                      reconstruction, or the input for edits composited onto it) that lies inside that region;
                      1.0 = the edit changed only what the true counterfactual changes;
  closer_to_cf        per face, whether the edit is closer (PSNR) to the counterfactual than its base is: the edit
                      moved towards the truth rather than away from it.
Nothing here looks at the judge. The judge learns from it: `flipped_faces` re-renders training faces with one
attribute flipped, so a judge sees attributes apart from what goes with them in the data.
"""
from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from data.cache import FaceCache, preprocess_image, to_float_images
from data.io import available_cores
from data.synthetic import FACTORS_FILE, SYNTHETIC_ATTRIBUTES, counterfactual, dataset_dir, load_factors, render
from models.metrics import psnr

REGION_LEVELS = 4  # of 255: a pixel whose counterfactual render differs by more is in the true change region
REGION_GROW = 1  # pixels at 64 px, scaled with the image side


def synthetic_root(cache: FaceCache) -> Path | None:
    """The procedural dataset root a cache was built from, or None for real data (no synthetic_factors.csv)."""
    source = cache.meta.get("source_root")
    if not source:
        return None
    for candidate in (Path(source), Path(source).parent):
        if (dataset_dir(candidate) / FACTORS_FILE).is_file():
            return candidate
    return None


def _counterfactual_render(task: tuple[pd.Series, dict[str, bool], int, float | None]) -> np.ndarray:
    """One face's factor row with `change` applied (should the change set contradict the generator's consistency
    rules, its first entry, the edited attribute, alone), drawn and put through the cache's crop + resize: uint8
    (3, S, S)."""
    row, change, size, crop_fraction = task
    try:
        row = counterfactual(row, change)
    except ValueError:  # our conflict rules asked for more than the generator's consistency allows
        first = next(iter(change))  # the edited attribute alone; the generator keeps the rest consistent
        row = counterfactual(row, {first: change[first]})
    # drawn from a dict: the drawing reads each factor by name hundreds of times, a pandas lookup each for a Series
    return preprocess_image(Image.fromarray(render(row.to_dict())), size,
                            *(() if crop_fraction is None else (crop_fraction,)))


def _draw_each(draw: Callable[[Any], Any], tasks: list, workers: int, what: str, progress: bool) -> Iterator[Any]:
    """draw(task) for each task, in order, in `workers` processes when more than one (the drawing is plain Python,
    one core each), under a progress bar named `what`."""
    with tqdm(total=len(tasks), desc=what, leave=False, disable=not progress) as bar:
        if workers > 1 and len(tasks) > 1:
            method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
            with mp.get_context(method).Pool(min(workers, len(tasks))) as pool:
                for result in pool.imap(draw, tasks, chunksize=32):
                    bar.update(1)
                    yield result
        else:
            for task in tasks:
                bar.update(1)
                yield draw(task)


def render_counterfactuals(
    factors: pd.DataFrame,
    image_ids: Sequence[str],
    changes: Sequence[dict[str, bool]],
    size: int,
    crop_fraction: float | None = None,
    progress: bool = False,
    workers: int = 1,
) -> torch.Tensor:
    """Re-render each face from its factors with `changes[i]` applied ({} = the original): uint8 (N, 3, S, S).

    The render goes through the cache's crop + resize (data.cache.preprocess_image), without the JPEG round
    trip of the dataset's files. Should a change set contradict the generator's consistency rules, its first entry
    (the edited attribute) is applied alone. `workers` > 1 draws in that many processes (the drawing is plain Python,
    one core each).
    """
    if len(image_ids) != len(changes):
        raise ValueError(f"{len(image_ids)} image ids for {len(changes)} change sets")
    missing = [i for i in dict.fromkeys(image_ids) if i not in factors.index]
    if missing:
        raise KeyError(f"images {missing[:5]} have no row in the procedural dataset's factors table")
    tasks = [(factors.loc[image_id], change, size, crop_fraction) for image_id, change in zip(image_ids, changes)]
    out = np.empty((len(tasks), 3, size, size), dtype=np.uint8)
    for i, image in enumerate(_draw_each(_counterfactual_render, tasks, workers, "counterfactuals", progress)):
        out[i] = image
    return torch.from_numpy(out)


def _one_flip(task: tuple[pd.Series, str, list[str], int, float | None]) -> tuple[np.ndarray, np.ndarray]:
    """One face's factor row with `attribute` flipped (and what the generator's consistency rules change with it),
    drawn through the cache's crop + resize: uint8 (3, S, S), and the labels it then has, bool (K,) in `names` order."""
    row, attribute, names, size, crop_fraction = task
    row = counterfactual(row, {attribute: not bool(row[attribute])})
    image = preprocess_image(Image.fromarray(render(row.to_dict())), size,
                             *(() if crop_fraction is None else (crop_fraction,)))
    return image, row[names].to_numpy(dtype=bool)


def flipped_faces(root: Path, cache: FaceCache, rows: np.ndarray, seed: int, progress: bool = False,
                  workers: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The cache's faces `rows`, each re-rendered with one attribute flipped: uint8 images (n, 3, S, S) and their
    labels, bool (n, K) in the cache's attribute order.

    Each face's attribute is drawn at random (`seed`) among the cache's attributes that the generator renders. The
    faces a judge learns from this way show attributes apart from what goes with them in the data (a mustache on a
    woman, a man with make-up), so it reads the attribute itself rather than its companions.
    """
    factors = load_factors(root)
    image_ids = [str(i) for i in cache.table.index[rows]]
    _check_factors_describe(factors, cache, image_ids, dataset_dir(root) / FACTORS_FILE)
    names = list(cache.attribute_names)
    flippable = [a for a in names if a in SYNTHETIC_ATTRIBUTES]
    drawn = np.random.default_rng(seed).integers(0, len(flippable), len(image_ids))
    tasks = [(factors.loc[i], flippable[a], names, cache.size, cache.meta.get("crop")) for i, a in zip(image_ids, drawn)]
    images = np.empty((len(tasks), 3, cache.size, cache.size), dtype=np.uint8)
    labels = np.empty((len(tasks), len(names)), dtype=bool)
    workers = available_cores() if workers is None else workers
    for i, (image, label) in enumerate(_draw_each(_one_flip, tasks, workers, "flipped faces", progress)):
        images[i], labels[i] = image, label
    return torch.from_numpy(images), torch.from_numpy(labels)


def counterfactual_changes(attribute: str, target: np.ndarray, intended: np.ndarray, judge_names: Sequence[str],
                           rendered: set[str]) -> list[dict[str, bool]]:
    """Per face, what to change in its factors: the edited attribute first, then what the conflict rules clear."""
    ja = list(judge_names).index(attribute)
    return [{attribute: bool(target[i, ja])}
            | {judge_names[k]: bool(target[i, k]) for k in np.flatnonzero(intended[i]) if judge_names[k] in rendered}
            for i in range(len(target))]


def true_change_region(original: torch.Tensor, flipped: torch.Tensor, levels: int = REGION_LEVELS,
                       grow: int = REGION_GROW) -> torch.Tensor:
    """Bool (N, 1, S, S): where the uint8 renders `flipped` and `original` (N, 3, S, S) differ in any channel by
    more than `levels`, grown by `grow` pixels at 64 px (scaled with S)."""
    if original.dtype != torch.uint8 or flipped.dtype != torch.uint8 or original.shape != flipped.shape:
        raise ValueError(f"renders must be uint8 (N, 3, S, S) of one shape, got {tuple(original.shape)} "
                         f"{original.dtype} and {tuple(flipped.shape)} {flipped.dtype}")
    region = (flipped.short() - original.short()).abs().amax(dim=1, keepdim=True) > levels  # (N, 1, S, S)
    radius = int(round(grow * original.shape[-1] / 64))
    if radius:
        region = F.max_pool2d(region.float(), 2 * radius + 1, stride=1, padding=radius) > 0
    return region


def inside_change(edited: torch.Tensor, base: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """(N,) share of each edit's squared change from `base` that lies inside `region` (N, 1, S, S) bool; NaN for an
    edit that changes nothing. edited and base float (N, 3, S, S)."""
    if edited.shape != base.shape or region.shape != (edited.shape[0], 1, *edited.shape[2:]):
        raise ValueError(f"edited and base must be (N, 3, S, S) and region (N, 1, S, S), got {tuple(edited.shape)}, "
                         f"{tuple(base.shape)}, {tuple(region.shape)}")
    diff = torch.sub(edited.float(), base.float())
    energy = diff.mul_(diff).sum(dim=1, keepdim=True)  # (N, 1, S, S)
    total = energy.sum(dim=(1, 2, 3))
    inside = energy.mul_(region).sum(dim=(1, 2, 3))
    return torch.where(total > 0, inside / total.clamp_min(1e-30), torch.full_like(total, float("nan")))


@dataclass
class GroundTruth:
    """One attribute's true counterfactuals of the first faces, and what the edits' bases score against them."""

    counterfactual: torch.Tensor  # (n_cf, 3, S, S) float in [-1, 1]
    region: torch.Tensor  # (n_cf, 1, S, S) bool: the true change region
    base_psnr: dict[str, torch.Tensor]  # base name ("recon", "input") -> (n_cf,) PSNR of the base against it

    def __len__(self) -> int:
        return self.counterfactual.shape[0]

    def part(self, rows: slice) -> GroundTruth:
        """The ground truth of faces `rows` only."""
        return GroundTruth(self.counterfactual[rows], self.region[rows], {k: v[rows] for k, v in self.base_psnr.items()})

    def score(self, edited: torch.Tensor, base: str, base_images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per face of the first len(self) edits (N, 3, S, S), made from `base_images` ("recon" or "input"): psnr
        and base_psnr against the counterfactual, closer (1.0 where the edit is the closer), inside."""
        # one layout for every comparison (the counterfactuals' NCHW): mixed layouts make each elementwise pass slow
        edited, base_images = (x[: len(self)].float().contiguous() for x in (edited, base_images))
        edit_psnr = psnr(edited, self.counterfactual)
        return {"psnr": edit_psnr, "base_psnr": self.base_psnr[base], "closer": (edit_psnr > self.base_psnr[base]).float(),
                "inside": inside_change(edited, base_images, self.region)}


def _check_factors_describe(factors: pd.DataFrame, cache: FaceCache, image_ids: list[str], path: Path) -> None:
    """Raise ValueError, naming the file, unless the factors hold these faces with the cache's labels: a dataset
    regenerated (another seed, another size) since the cache was built would give other people's counterfactuals."""
    absent = [i for i in image_ids if i not in factors.index]
    if absent:
        raise ValueError(f"{path} has no factors for {absent[0]} ({len(absent)} of the {len(image_ids)} faces scored) "
                         f"of {cache.directory}: it describes another dataset; rebuild the cache from it")
    names = [a for a in SYNTHETIC_ATTRIBUTES if a in cache.table.columns]
    differ = (factors.loc[image_ids, names].to_numpy(dtype=bool)
              != cache.table.loc[image_ids, names].to_numpy(dtype=bool))  # (n, K)
    if differ.any():
        row, column = np.argwhere(differ)[0]
        raise ValueError(f"{path} does not describe the faces of {cache.directory}: {image_ids[row]} has "
                         f"{names[column]}={bool(factors.loc[image_ids[row], names[column]])} there but not in the cache "
                         f"({int(differ.any(axis=1).sum())} of {len(image_ids)} faces differ); the dataset was "
                         "regenerated since the cache was built: rebuild the cache from it")


class CounterfactualRenderer:
    """Renders the true counterfactuals (and the originals, once) of a fixed list of procedural faces; `prefetch`
    draws those of many attributes at once in worker processes."""

    def __init__(self, root: Path, cache: FaceCache, rows: np.ndarray, progress: bool = False):
        self.factors, self.size, self.crop = load_factors(root), cache.size, cache.meta.get("crop")
        self.image_ids = [str(i) for i in cache.table.index[rows]]
        _check_factors_describe(self.factors, cache, self.image_ids, dataset_dir(root) / FACTORS_FILE)
        self.progress = progress
        self.original = self._render([{}] * len(self.image_ids))  # (n, 3, S, S) uint8
        self._drawn: dict[str, torch.Tensor] = {}

    def _render(self, changes: Sequence[dict[str, bool]]) -> torch.Tensor:
        """The faces re-rendered with `changes`, one change set per face, for one or more rounds of the faces."""
        rounds = len(changes) // max(len(self.image_ids), 1)
        return render_counterfactuals(self.factors, self.image_ids * rounds, changes, self.size, self.crop,
                                      self.progress, workers=available_cores())

    @staticmethod
    def changes(attribute: str, implied: np.ndarray, truth: np.ndarray,
                judge_names: Sequence[str]) -> list[dict[str, bool]]:
        """Per face, the factor changes of flipping `attribute`: implied (n, Kj) the labels it leads to."""
        return counterfactual_changes(attribute, implied, implied != truth, judge_names, set(SYNTHETIC_ATTRIBUTES))

    def prefetch(self, changes: dict[str, list[dict[str, bool]]]) -> None:
        """Draw the counterfactuals of every attribute in `changes` ({attribute: per-face changes}) in one pool."""
        todo = [a for a in changes if a not in self._drawn]
        if not todo:
            return
        drawn = self._render([c for a in todo for c in changes[a]])  # (len(todo) * n, 3, S, S)
        for k, attribute in enumerate(todo):
            self._drawn[attribute] = drawn[k * len(self.image_ids) : (k + 1) * len(self.image_ids)]

    def ground_truth(self, attribute: str, implied: np.ndarray, truth: np.ndarray, judge_names: Sequence[str],
                     bases: dict[str, torch.Tensor]) -> GroundTruth:
        """The faces' counterfactuals with `attribute` flipped: implied (n, Kj) the labels the flip leads to,
        truth (n, Kj) the faces' labels; bases {name: (n, 3, S, S) float} the unedited images edits start from."""
        if attribute not in self._drawn:  # else drawn by an earlier `prefetch`
            self.prefetch({attribute: self.changes(attribute, implied, truth, judge_names)})
        flipped = self._drawn.pop(attribute)  # (n, 3, S, S) uint8
        cf = to_float_images(flipped)
        return GroundTruth(cf, true_change_region(self.original, flipped),
                           {name: psnr(images[: len(cf)].float(), cf) for name, images in bases.items()})
