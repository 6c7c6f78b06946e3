"""`Run`: one run folder `runs/NNN-name/`, the one place that knows its file names and what each file was made from.

    run = Run.open("runs/001-demo")            # or Run.latest()
    run.cache                                  # the image cache it was trained on (opened once)
    run.model()                                # the VAE, rebuilt from checkpoint.pt (loaded and hashed once)
    run.latents()                              # latents.pt, re-encoded when it is stale (and saying so)
    run.directions("probe")                    # refused out loud when fitted on another checkpoint or cache
    run.edit_picks()                           # per attribute, the kind and strength the evaluation picked
    run.domain_reference()                     # where the run's test faces lie (reconstruction PSNR, latents)

Provenance, checked by every consumer:
- a cache carries a fingerprint of its images and labels (data.cache); the checkpoint records the fingerprint of the
  cache it was trained on, and `train --resume` on a changed cache stops, naming both fingerprints;
- latents.pt records the checkpoint's SHA-256 and the cache fingerprint: stale latents are re-encoded;
- each directions file records the checkpoint's SHA-256 and the cache fingerprint of the latents it was fitted on:
  stale directions are refused with the command that refits them;
- a stage's outputs are one set (`Run.writing`, data.io.output_set): fit_directions' files and evaluate's are
  listed with their SHA-256 in directions.manifest.json and evaluation.manifest.json, written last, and a reader
  refuses a set that an interrupted write left mixed (`Run.check_outputs`);
- non-finite latents, weights or directions are refused by the loader (data.io.load_torch_file), naming the file.
- domain-reference.pt records the checkpoint's SHA-256 and the cache fingerprint too: a stale one is computed again.

A relative run folder (and the default `runs/`) is looked for from the working directory, then from the repository
root (`find_path`), so a notebook's kernel in notebooks/ and a script run from anywhere open the same runs.

Run numbers are allocated by exclusive `mkdir` and a re-check, so two runs started at once never share a number;
"the latest run" is the highest-numbered folder holding a checkpoint.
"""
from __future__ import annotations

import dataclasses
import json
import re
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import Any, Iterator

import torch

from attributes.artifact import METHODS, AttributeDirections
from attributes.encode import Latents, encode_cache
from attributes.fit import FitConfig, fit_directions
from data.cache import META_FILE, FaceCache, load_cache, read_fingerprint
from data.io import (
    atomic_write_json,
    atomic_write_text,
    check_output_set,
    check_writable,
    disk_errors,
    file_sha256,
    output_set,
)
from models.checkpoint import load_checkpoint
from models.vae import ConvVAE
from pipeline.domain import DomainReference, domain_reference
from pipeline.picks import EditPick, picks_from_evaluation

RUNS_ROOT = Path("runs")
REPO_ROOT = Path(__file__).resolve().parents[1]  # the folder holding pipeline/, runs/ and notebooks/
_NUMBERED = re.compile(r"^(\d{3,})-(.+)$")


def find_path(path: str | Path) -> list[Path]:
    """Where a run path may be: as given (from the working directory) and, when relative, under the repository
    root, in that order. A notebook's kernel runs in notebooks/, where `runs/` is `../runs`."""
    path = Path(path)
    in_repo = REPO_ROOT / path
    if path.is_absolute() or in_repo.resolve() == path.resolve():
        return [path]
    return [path, in_repo]


def _looked(path: str | Path) -> str:
    """Where `find_path` looked, for an error message."""
    return " and ".join(str(p.resolve()) for p in find_path(path))


class StaleArtifactError(ValueError):
    """An artifact that was made from other inputs than the ones it would be used with."""


def _numbers(root: Path) -> dict[int, list[str]]:
    """Run number -> folder names using it, under `root`."""
    taken: dict[int, list[str]] = {}
    for p in root.iterdir():
        if m := _NUMBERED.match(p.name):
            taken.setdefault(int(m.group(1)), []).append(p.name)
    return taken


class Run:
    """A run folder: file names, lazily loaded artifacts (each once) and the provenance checks between them."""

    CONFIG = "config.json"
    CHECKPOINT = "checkpoint.pt"
    METRICS_CSV = "metrics.csv"
    METRICS_JSON = "metrics.json"
    LATENTS = "latents.pt"
    FIT_CONFIG = "fit_config.json"
    DIRECTIONS_SUMMARY = "directions-summary.txt"
    EVAL_CSV = "evaluation.csv"
    EVAL_MD = "evaluation.md"
    EVAL_JSON = "evaluation.json"
    EVAL_CONFIG = "evaluation-config.json"
    FIGURES = "figures"
    EDITS = "edits"
    # Output sets: what one stage writes, made visible together (`writing`) and checked by readers (`check_outputs`)
    DIRECTIONS, EVALUATION = "directions", "evaluation"
    OUTPUT_SETS = {
        DIRECTIONS: ("directions-*.pt", FIT_CONFIG, DIRECTIONS_SUMMARY),
        EVALUATION: (EVAL_CSV, EVAL_MD, EVAL_JSON, EVAL_CONFIG, f"{FIGURES}/eval-*"),
    }
    WRITTEN_BY = {DIRECTIONS: "fit_directions", EVALUATION: "evaluate"}
    DOMAIN_REFERENCE = "domain-reference.pt"

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        self._models: dict[str, ConvVAE] = {}
        self._latents: Latents | None = None
        self._directions: dict[str, AttributeDirections] = {}
        self._checked_outputs: set[str] = set()
        self._evaluation_current = False  # evaluation.json's directions checked against the files now

    def __repr__(self) -> str:
        return f"Run({str(self.dir)!r})"

    # ---- finding and making run folders ---------------------------------------------------------------------
    @classmethod
    def create(cls, name: str, root: str | Path = RUNS_ROOT) -> Run:
        """Make the next numbered folder `root/NNN-name/`; a number is never shared, even by runs started at once."""
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
            raise ValueError(f"run name {name!r}: use letters, digits, '_', '.' and '-' (it becomes a folder name)")
        root = Path(root)
        with disk_errors(root, remedy="make it writable, or pass another --runs-root"):
            root.mkdir(parents=True, exist_ok=True)
        for _ in range(1000):
            number = max(_numbers(root), default=0) + 1
            directory = root / f"{number:03d}-{name}"
            try:
                with disk_errors(directory, remedy="make it writable, or pass another --runs-root"):
                    directory.mkdir()  # exclusive: of two runs of one name, one gets it
            except FileExistsError:
                continue
            # Runs of other names may have taken the same number at once. One that sees another folder with its
            # number gives it up and tries again; the later of two always sees the earlier, so no number is shared.
            if _numbers(root)[number] == [directory.name]:
                return cls(directory)
            directory.rmdir()
        raise RuntimeError(f"could not allocate a run number under {root}")

    @classmethod
    def open(cls, directory: str | Path | None = None, root: str | Path = RUNS_ROOT) -> Run:
        """An existing run folder (a relative one found by `find_path`); None = `Run.latest(root)`."""
        if directory is None or str(directory) == "":
            return cls.latest(root)
        for candidate in find_path(directory):
            if candidate.is_dir():
                return cls(candidate)
        raise FileNotFoundError(f"run folder {directory} does not exist (looked in {_looked(directory)})")

    @classmethod
    def latest(cls, root: str | Path = RUNS_ROOT) -> Run:
        """The highest-numbered run folder that holds a checkpoint under `root` (a relative one found by
        `find_path`: the first place that has such a run)."""
        for folder in find_path(root):
            runs = sorted((int(m.group(1)), p) for p in (folder.iterdir() if folder.is_dir() else [])
                          if (m := _NUMBERED.match(p.name)) and (p / cls.CHECKPOINT).is_file())
            if runs:
                return cls(runs[-1][1])
        raise FileNotFoundError(f"no run folder with a {cls.CHECKPOINT} under {root} (looked in {_looked(root)}); "
                                "train one with `python -m experiments.train_vae`")

    # ---- file names ------------------------------------------------------------------------------------------
    def path(self, name: str) -> Path:
        return self.dir / name

    @property
    def checkpoint_path(self) -> Path:
        return self.dir / self.CHECKPOINT

    @property
    def latents_path(self) -> Path:
        return self.dir / self.LATENTS

    @property
    def figures_dir(self) -> Path:
        return self.dir / self.FIGURES

    @property
    def edits_dir(self) -> Path:
        return self.dir / self.EDITS

    def directions_path(self, method: str) -> Path:
        return self.dir / f"directions-{method}.pt"

    def direction_methods(self) -> list[str]:
        """The direction kinds this run has files for, in METHODS order (unknown kinds last)."""
        found = [p.stem.removeprefix("directions-") for p in self.dir.glob("directions-*.pt")]
        return sorted(found, key=lambda m: (METHODS.index(m) if m in METHODS else len(METHODS), m))

    def remove_partial_writes(self) -> list[Path]:
        """Delete the temporary files that killed atomic writes leave (`.checkpoint.pt.*.tmp`, `figures/.*.tmp` ...)."""
        leftovers = [p for folder in (self.dir, self.figures_dir, self.edits_dir) for p in folder.glob(".*.tmp")
                     if p.is_file()]
        for p in leftovers:
            p.unlink(missing_ok=True)
        return leftovers

    def check_writable(self, script: str) -> None:
        """Raise NotWritableError before `script` starts its work when the run folder (or its figures/) cannot be
        written, rather than after it."""
        remedy = (f"{script} writes its outputs there: make it writable, or copy the run folder somewhere writable "
                  "and pass that with --run")
        for folder in (self.dir, self.figures_dir):
            if folder == self.dir or folder.is_dir():
                check_writable(folder, remedy)

    # ---- output sets ------------------------------------------------------------------------------------------
    def manifest_path(self, outputs: str) -> Path:
        """`directions.manifest.json` / `evaluation.manifest.json`: the files of the set, with their SHA-256."""
        return self.dir / f"{outputs}.manifest.json"

    @contextmanager
    def writing(self, outputs: str) -> Iterator[list[Path]]:
        """Write one output set (Run.DIRECTIONS, Run.EVALUATION): append each path written to the yielded list. The
        files of an earlier set that this one does not write are removed; a write cut short is refused by readers."""
        self._checked_outputs.discard(outputs)
        self._evaluation_current = False  # a refit or a new evaluation: check what the evaluation scored again
        with output_set(self.manifest_path(outputs), self.OUTPUT_SETS[outputs]) as written:
            yield written
        self._checked_outputs.add(outputs)

    def check_outputs(self, outputs: str) -> None:
        """Raise data.io.MixedOutputsError, naming the file, when an output set is not what one complete write made
        (an interrupted fit_directions or evaluate); checked once per Run."""
        if outputs not in self._checked_outputs:
            remedy = f"run `python -m experiments.{self.WRITTEN_BY[outputs]} --run {self.dir}` again"
            check_output_set(self.manifest_path(outputs), self.OUTPUT_SETS[outputs], remedy)
            self._checked_outputs.add(outputs)

    def output_hashes(self, outputs: str) -> dict[str, str]:
        """The SHA-256 of each file of an output set, by its path relative to the run folder: its manifest's record,
        once `check_outputs` has checked the files against it byte for byte; hashed here for a set written without
        a manifest."""
        self.check_outputs(outputs)
        manifest = self.manifest_path(outputs)
        if manifest.is_file():
            return dict(json.loads(manifest.read_text())["files"])
        return {p.relative_to(self.dir).as_posix(): file_sha256(p)
                for p in sorted({f for pattern in self.OUTPUT_SETS[outputs] for f in self.dir.glob(pattern)
                                 if f.is_file()})}

    # ---- the training config and the cache -------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """config.json: the training settings (a dict; `pipeline.training.TrainConfig` rebuilds the dataclass)."""
        path = self.path(self.CONFIG)
        if not path.is_file():
            raise FileNotFoundError(f"{path} missing: {self.dir} is not a VAE run folder (train one with "
                                    "`python -m experiments.train_vae`)")
        try:
            return json.loads(path.read_text())
        except ValueError as e:
            raise ValueError(f"{path}: not valid JSON ({e}); the run folder is damaged") from None

    @property
    def cache_dir(self) -> Path:
        """The cache this run trained on. A path recorded relative to the folder training ran in is found from the
        run folder itself (runs_root's depth above it), so the run can be opened from any working directory."""
        config = self.config()
        if not config.get("cache_dir"):
            raise ValueError(f"{self.path(self.CONFIG)}: no 'cache_dir' entry")
        cache_dir = Path(config["cache_dir"])
        runs_root = Path(config.get("runs_root") or "runs")
        if cache_dir.is_absolute() or cache_dir.exists() or runs_root.is_absolute():
            return cache_dir
        origin = self.dir.resolve().parent  # the runs_root folder
        for _ in runs_root.parts:
            origin = origin.parent
        return origin / cache_dir if (origin / cache_dir).exists() else cache_dir

    @cached_property
    def cache(self) -> FaceCache:
        """The image cache this run was trained on, opened once."""
        return load_cache(self.cache_dir)

    @property
    def cache_fingerprint(self) -> str:
        """The fingerprint of the run's cache without opening images.npy: from the opened cache, else its meta.json,
        else (the cache folder gone) the checkpoint's record of the cache it was trained on."""
        if "cache" in self.__dict__:
            return self.cache.fingerprint
        if (self.cache_dir / META_FILE).is_file():
            try:
                return read_fingerprint(self.cache_dir)
            except (OSError, ValueError):
                return self.cache.fingerprint  # load_cache names what is wrong with the cache
        return self.trained_on or self.cache.fingerprint

    def use_cache(self, cache: FaceCache) -> None:
        """Hand over an already opened cache (the demo's), instead of opening it again."""
        self.__dict__["cache"] = cache

    # ---- the checkpoint and the model ------------------------------------------------------------------------
    @cached_property
    def checkpoint(self) -> dict[str, Any]:
        """checkpoint.pt, loaded once (weights_only)."""
        if not self.checkpoint_path.is_file():
            raise FileNotFoundError(f"{self.checkpoint_path} missing: train the VAE first "
                                    "(python -m experiments.train_vae)")
        return load_checkpoint(self.checkpoint_path)

    @cached_property
    def checkpoint_sha256(self) -> str:
        """SHA-256 of checkpoint.pt, computed once."""
        return file_sha256(self.checkpoint_path)

    def checkpoint_written(self, sha256: str | None = None) -> None:
        """Forget what was cached about checkpoint.pt (it was just rewritten); `sha256` if the writer knows it."""
        for key in ("checkpoint", "checkpoint_sha256"):
            self.__dict__.pop(key, None)
        if sha256 is not None:
            self.__dict__["checkpoint_sha256"] = sha256
        self._models.clear()
        self._latents = None
        self._directions.clear()

    @property
    def trained_on(self) -> str | None:
        """The fingerprint of the cache the checkpoint was trained on (None where the checkpoint does not record it)."""
        return (self.checkpoint.get("extra") or {}).get("cache_fingerprint")

    @property
    def image_size(self) -> int:
        """The side of the images the checkpoint's model takes (the cache's size, without opening the cache)."""
        return int(self.checkpoint["model_args"]["image_size"])

    def model(self, device: str | torch.device = "cpu") -> ConvVAE:
        """The VAE in eval mode on `device`, rebuilt from the checkpoint once per device."""
        key = str(torch.device(device))
        if key not in self._models:
            self._models[key] = ConvVAE.from_checkpoint_dict(self.checkpoint, self.checkpoint_path, map_location=device)
        return self._models[key]

    def use_model(self, model: ConvVAE, device: str | torch.device) -> None:
        """Hand over the model that training left in memory (it equals the checkpoint's weights)."""
        self._models[str(torch.device(device))] = model.eval()

    # ---- latents ------------------------------------------------------------------------------------------------
    def _latents_problem(self, latents: Latents) -> str | None:
        if latents.checkpoint_sha256 != self.checkpoint_sha256:
            return f"made from another checkpoint ({str(latents.checkpoint_sha256)[:12]}, now {self.checkpoint_sha256[:12]})"
        if latents.cache_fingerprint != self.cache_fingerprint:
            return (f"made from other images or labels (cache fingerprint {str(latents.cache_fingerprint)[:12]}, "
                    f"now {self.cache_fingerprint[:12]})")
        return None

    def latents(self, device: str | torch.device = "cpu", *, batch_size: int | None = None,
                compile_model: bool = False, progress: bool = True, save: bool = True) -> Latents:
        """The whole cache encoded by this run's checkpoint: latents.pt when it is current, else encoded again
        (saying why) and saved. Under torchrun every rank gets all rows and rank 0 saves."""
        if self._latents is not None:
            return self._latents
        path, reason = self.latents_path, None
        if path.is_file():
            try:
                latents = Latents.load(path)
            except (ValueError, FileNotFoundError) as e:  # corrupt, unsafe or of an older format
                reason = f"unreadable ({e})"
            else:
                reason = self._latents_problem(latents)
                if reason is None:
                    self._latents = latents
                    return latents
        if reason and progress:
            print(f"{path}: {reason}; encoding again")
        latents = encode_cache(self.model(device), self.cache, None, checkpoint=self.checkpoint_path,
                               checkpoint_sha256=self.checkpoint_sha256, batch_size=batch_size, device=device,
                               compile_model=compile_model, progress=progress)  # refuses non-finite latents
        rank0 = not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0
        if save and rank0:
            latents.save(path)
        self._latents = latents
        return latents

    # ---- directions ---------------------------------------------------------------------------------------------
    def _directions_problem(self, dirs: AttributeDirections, path: Path) -> str | None:
        model_dim = int(self.checkpoint["model_args"]["latent_dim"])
        if dirs.latent_dim != model_dim:
            return (f"{path} holds {dirs.latent_dim}-dimensional directions but {self.checkpoint_path} encodes to "
                    f"{model_dim} dimensions")
        if dirs.checkpoint_sha256 != self.checkpoint_sha256:
            return (f"{path} was fitted on another checkpoint ({str(dirs.checkpoint_sha256)[:12]}) than "
                    f"{self.checkpoint_path} ({self.checkpoint_sha256[:12]})")
        fitted_on = dirs.info.get("cache_fingerprint")
        if fitted_on != self.cache_fingerprint:
            return (f"{path} was fitted on latents of other images or labels (cache fingerprint "
                    f"{str(fitted_on)[:12]}, now {self.cache_fingerprint[:12]})")
        return None

    def directions(self, method: str) -> AttributeDirections:
        """directions-<method>.pt, loaded once; refused (StaleArtifactError) when made from other inputs, and
        (MixedOutputsError) when an interrupted fit left it beside files of another."""
        if method not in self._directions:
            self.check_outputs(self.DIRECTIONS)
            path = self.directions_path(method)
            if not path.is_file():
                have = self.direction_methods()
                raise FileNotFoundError(f"{path} missing (this run has {have or 'no directions'}); fit them with "
                                        f"`python -m experiments.fit_directions --run {self.dir}`")
            dirs = AttributeDirections.load(path)
            problem = self._directions_problem(dirs, path)
            if problem:
                raise StaleArtifactError(f"{problem}; refit with `python -m experiments.fit_directions --run {self.dir}`")
            self._directions[method] = dirs
        return self._directions[method]

    def all_directions(self, methods: list[str] | tuple[str, ...] | None = None) -> dict[str, AttributeDirections]:
        """Every (or the named) direction kind of this run, in METHODS order."""
        return {m: self.directions(m) for m in (self.direction_methods() if methods is None else methods)}

    def save_directions(self, fitted: dict[str, AttributeDirections], config: FitConfig) -> list[Path]:
        """Write the fitted kinds as one set: directions-<method>.pt (stamped with this run's checkpoint and cache
        fingerprint), fit_config.json and a text summary; kinds of an earlier fit that this one lacks are removed."""
        with self.writing(self.DIRECTIONS) as written:
            for method, dirs in fitted.items():
                dirs.with_checkpoint(self.checkpoint_path, sha256=self.checkpoint_sha256)
                dirs.info["cache_fingerprint"] = self.cache_fingerprint
                written.append(dirs.save(self.directions_path(method)))
            written.append(atomic_write_json(dataclasses.asdict(config), self.path(self.FIT_CONFIG)))
            summary = "\n\n".join(f"## {m}\n\n{d.to_frame().round(4).to_string()}" for m, d in fitted.items())
            written.append(atomic_write_text(summary + "\n", self.path(self.DIRECTIONS_SUMMARY)))
        self._directions = dict(fitted)
        return written

    def fit_directions(self, config: FitConfig | None = None, device: str | torch.device = "cpu", *,
                       progress: bool = True) -> dict[str, AttributeDirections]:
        """Fit every configured kind on this run's latents and save them as one set (`save_directions`); under
        torchrun every rank encodes its shard and rank 0 fits and saves."""
        config = config or FitConfig()
        latents = self.latents(device, progress=progress)
        if torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:
            return {}
        fitted = fit_directions(latents, config, progress=progress)
        self.save_directions(fitted, config)
        return fitted

    # ---- what the evaluation picked, and where the run's own faces lie ----------------------------------------
    def evaluation_inputs(self, methods: list[str] | tuple[str, ...]) -> dict[str, str]:
        """What an evaluation of `methods` is made from: each directions-<kind>.pt's SHA-256 (each file is stamped
        with the checkpoint and cache it was fitted on, so these name those too)."""
        hashes = self.output_hashes(self.DIRECTIONS)
        return {m: hashes.get(self.directions_path(m).name) or file_sha256(self.directions_path(m)) for m in methods}

    def evaluation_summary(self, name: str = EVAL_JSON) -> dict[str, Any] | None:
        """evaluation.json (the last evaluation's summary; or its evaluation-config.json), None when not evaluated;
        refused (MixedOutputsError) when the evaluation's files are not one complete write, and (StaleArtifactError)
        when the directions it scored have been refitted since."""
        self.check_outputs(self.EVALUATION)  # also when the file is gone but the set's manifest lists it
        path = self.path(name)
        if not path.is_file():
            return None
        remedy = f"evaluate again with `python -m experiments.evaluate --run {self.dir}`"
        try:
            summary = json.loads(path.read_text())
        except ValueError as e:
            raise ValueError(f"{path}: not valid JSON ({e}); {remedy}") from None
        if name == self.EVAL_JSON and not self._evaluation_current:
            made_from = summary.get("directions_sha256")
            if not isinstance(made_from, dict):
                raise StaleArtifactError(f"{path} does not record the directions it scored (an evaluation older than "
                                         f"this code); {remedy}")
            hashes = self.output_hashes(self.DIRECTIONS)  # a missing file has none
            changed = [m for m, sha in made_from.items() if hashes.get(self.directions_path(m).name) != sha]
            if changed:
                raise StaleArtifactError(f"{path} scored other directions than {self.directions_path(changed[0])} "
                                         f"holds now (refitted since the evaluation); {remedy}")
            self._evaluation_current = True
        return summary

    def edit_picks(self, kind: str | None = None) -> dict[str, EditPick]:
        """Per attribute, how the run's evaluation says to edit it: the kind it picked and that kind's chosen
        strength (kind None), or `kind` at its chosen strength; {} when the run has no evaluation."""
        summary = self.evaluation_summary()
        if summary is None:
            return {}
        mode = (self.evaluation_summary(self.EVAL_CONFIG) or {}).get("mode", "offset")  # what the strengths were for
        return picks_from_evaluation(summary, mode, kind, source=self.path(self.EVAL_JSON))

    def domain_reference(self, device: str | torch.device = "cpu", *, progress: bool = True) -> DomainReference:
        """domain-reference.pt when it is current (it never opens images.npy then), else computed from the test
        split (saying why) and saved: how the run's own test faces reconstruct and where their latents lie."""
        path, reason = self.path(self.DOMAIN_REFERENCE), None
        if path.is_file():
            try:
                reference = DomainReference.load(path)
            except ValueError as e:  # corrupt, unsafe or of an older format
                reason = f"unreadable ({e})"
            else:
                reason = reference.problem(self.checkpoint_sha256, self.cache_fingerprint)
                if reason is None:
                    return reference
        if reason and progress:
            print(f"{path}: {reason}; computing it again")
        reference = domain_reference(self.model(device), self.cache, self.latents(device, progress=progress),
                                     checkpoint_sha256=self.checkpoint_sha256, progress=progress)
        reference.save(path)
        return reference
