"""`AttributeDirections`: the saved set of per-attribute latent directions that edits and evaluation read.

One file holds, for K attributes over a D-dimensional latent space (always the encoder's mean `mu`):
    vectors (K, D) unit directions, steps (K,) calibrated move per attribute, margins (K,) for target-mode edits,
    class means / counts, the boundary each attribute is judged by (a probe's hyperplane, or for mean directions
    the hyperplane through the midpoint of the class means), scores, conditioning info and the VAE checkpoint it
    was fitted on (path + sha256).
Everything is stored as tensors, str, int, float, lists and dicts so `torch.load(..., weights_only=True)` reads it.
"""
from __future__ import annotations

import difflib
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from attributes.edit import EDIT_MODES, edit_latents, warn_wrong_way
from data.celeba import EXCLUSIVE_GROUPS
from data.io import CorruptArtifactError, atomic_torch_save, file_sha256, load_torch_file

ARTIFACT_VERSION = 1
METHODS = ("mean", "balanced", "probe", "conditional", "regression", "probe_joint")
LATENT_KIND = "mu"


class UnknownAttributeError(KeyError, ValueError):
    """An attribute name that the directions do not have; the message lists the valid names and the closest match."""

    def __str__(self) -> str:  # KeyError would otherwise print the message in quotes
        return str(self.args[0]) if self.args else ""


def unknown_attribute(name: str, valid: Sequence[str], what: str = "attribute") -> UnknownAttributeError:
    """Build the error for an unknown name, suggesting the closest valid ones (difflib)."""
    close = difflib.get_close_matches(str(name), list(valid), n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return UnknownAttributeError(f"unknown {what} {name!r}{hint} valid names: {', '.join(valid)}")


def exclusive_alternatives(name: str) -> tuple[str, ...]:
    """The attributes a face cannot have together with `name` (`data.celeba.EXCLUSIVE_GROUPS`)."""
    return next((tuple(o for o in group if o != name) for group in EXCLUSIVE_GROUPS if name in group), ())


def conflicts_cleared(changes: Mapping[str, Any], names: Sequence[str],
                      rules: Mapping[str, Sequence[str]] | None = None) -> dict[str, str]:
    """{attribute: the change that clears it}: what each attribute `changes` sets to 1 sets to 0 (`rules`
    {attribute: what setting it clears}, e.g. `evaluation.protocol.EDIT_ASKS`; None = its mutually exclusive
    alternatives, `exclusive_alternatives`), unless `changes` sets it itself; only attributes in `names`."""
    cleared: dict[str, str] = {}
    for name, value in changes.items():
        for other in (exclusive_alternatives(name) if rules is None else rules.get(name, ())) if value else ():
            if other in names and other not in changes:
                cleared.setdefault(other, name)
    return cleared


def _check01(labels: torch.Tensor, what: str) -> torch.Tensor:
    """`labels` when every value is 0 or 1, else a ValueError naming `what`."""
    if not bool(((labels == 0) | (labels == 1)).all()):
        raise ValueError(f"{what} must be 0/1 or bool")
    return labels


def _value01(name: str, value: Any) -> int:
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (int, np.integer)) and value in (0, 1):
        return int(value)
    if isinstance(value, (float, np.floating)) and float(value) in (0.0, 1.0):
        return int(value)
    raise ValueError(f"attribute {name}: value {value!r} must be 0 or 1 (or a bool)")


@dataclass(eq=False)
class AttributeDirections:
    """Unit latent directions, calibrated steps and decision boundaries for a set of binary attributes."""

    names: list[str]
    vectors: torch.Tensor  # (K, D) unit
    steps: torch.Tensor  # (K,) distance between the class means along each direction
    method: str
    pos_mean: torch.Tensor  # (K, D) mean latent of the positives (balanced: over cells; regression: the model's)
    neg_mean: torch.Tensor  # (K, D)
    pos_count: torch.Tensor  # (K,) int64, samples the direction was fitted on
    neg_count: torch.Tensor  # (K,) int64
    margins: torch.Tensor | None = None  # (K,) target-mode distance to the boundary; default steps / 2
    probe_weights: torch.Tensor | None = None  # (K, D) raw-latent decision function w·z + b (probe, probe_joint)
    probe_bias: torch.Tensor | None = None  # (K,)
    scores: dict[str, dict[str, float]] = field(default_factory=dict)  # name -> metric -> value
    conditions: dict[str, list[str]] = field(default_factory=dict)  # conditional: name -> names projected out
    balance_on: dict[str, list[str]] = field(default_factory=dict)  # balanced: name -> cell attributes
    dropped: list[str] = field(default_factory=list)  # attributes left out (too few samples, degenerate)
    checkpoint: str | None = None
    checkpoint_sha256: str | None = None
    latent_kind: str = LATENT_KIND
    version: int = ARTIFACT_VERSION
    info: dict[str, Any] = field(default_factory=dict)  # free-form JSON-like provenance (splits, settings)

    def __post_init__(self) -> None:
        self.names = [str(n) for n in self.names]
        k = len(self.names)
        if len(set(self.names)) != k:
            raise ValueError(f"duplicate attribute names in {self.names}")
        if self.method not in METHODS:
            raise ValueError(f"unknown direction method {self.method!r}; expected one of {METHODS}")
        self.vectors = torch.as_tensor(self.vectors, dtype=torch.float32)
        if self.vectors.ndim != 2 or self.vectors.shape[0] != k:
            raise ValueError(f"vectors must be (K={k}, D), got {tuple(self.vectors.shape)}")
        d = self.vectors.shape[1]

        def vec(t, what, dtype=torch.float32):
            t = torch.as_tensor(t, dtype=dtype)
            if tuple(t.shape) != (k,):
                raise ValueError(f"{what} must be (K={k},), got {tuple(t.shape)}")
            return t

        def mat(t, what):
            t = torch.as_tensor(t, dtype=torch.float32)
            if tuple(t.shape) != (k, d):
                raise ValueError(f"{what} must be (K={k}, D={d}), got {tuple(t.shape)}")
            return t

        self.steps = vec(self.steps, "steps")
        self.pos_mean, self.neg_mean = mat(self.pos_mean, "pos_mean"), mat(self.neg_mean, "neg_mean")
        self.pos_count = vec(self.pos_count, "pos_count", torch.int64)
        self.neg_count = vec(self.neg_count, "neg_count", torch.int64)
        self.margins = self.steps / 2 if self.margins is None else vec(self.margins, "margins")
        if (self.probe_weights is None) != (self.probe_bias is None):
            raise ValueError("probe_weights and probe_bias go together")
        if self.probe_weights is not None:
            self.probe_weights = mat(self.probe_weights, "probe_weights")
            self.probe_bias = vec(self.probe_bias, "probe_bias")
        if k:
            norms = self.vectors.norm(dim=1)
            if not torch.isfinite(self.vectors).all() or not torch.allclose(norms, torch.ones_like(norms), atol=1e-4):
                bad = [n for n, v in zip(self.names, norms.tolist()) if not math.isfinite(v) or abs(v - 1) > 1e-4]
                raise ValueError(f"direction vectors must be finite and unit length; not so for {bad}")
            if not torch.isfinite(self.steps).all():
                raise ValueError("steps must be finite")
        for table, what in ((self.conditions, "conditions"), (self.balance_on, "balance_on"), (self.scores, "scores")):
            for name in table:
                if name not in self.names:
                    raise unknown_attribute(name, self.names, f"attribute in {what}")
        self.conditions = {str(a): [str(c) for c in cs] for a, cs in self.conditions.items()}
        self.balance_on = {str(a): [str(c) for c in cs] for a, cs in self.balance_on.items()}
        self.scores = {str(a): {str(m): float(v) for m, v in s.items()} for a, s in self.scores.items()}
        self.dropped = [str(n) for n in self.dropped]

    # ---- lookup -------------------------------------------------------------------------------------------
    @property
    def latent_dim(self) -> int:
        return int(self.vectors.shape[1])

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, name: object) -> bool:
        return name in self.names

    def __iter__(self):
        return iter(self.names)

    def index(self, name: str) -> int:
        """Row of `name`; an unknown name raises UnknownAttributeError (a KeyError and a ValueError) with suggestions,
        or, for a name left out when fitting, with its counts and the flag that brings it back."""
        try:
            return self.names.index(name)
        except ValueError:
            raise (self._left_out(name) if name in self.dropped else unknown_attribute(name, self.names)) from None

    def _left_out(self, name: str) -> UnknownAttributeError:
        """The error for an attribute the fit left out: why, from the counts `attributes.fit` records in `info`."""
        counts, need = self.info.get("fit_counts", {}).get(name), self.info.get("min_count")
        split = self.info.get("fit_split", "fitting")
        head = f"attribute {name!r} has no {self.method} direction: it was left out when fitting"
        run = f"--run {Path(self.checkpoint).parent} " if self.checkpoint else ""
        if counts is None:  # a file without fit_counts: the possible causes, not the counts
            return UnknownAttributeError(f"{head} (too few samples, or a degenerate direction; see the warnings of "
                                         "fit_directions)")
        fewer = min(counts)
        if need is not None and fewer < max(int(need), 1):
            bring_back = (f"refit with `python -m experiments.fit_directions {run}--min-count {fewer}` to bring it "
                          "back" if fewer > 0 else "no --min-count brings it back: one class alone has no direction")
            return UnknownAttributeError(f"{head}, with {counts[0]} positives and {counts[1]} negatives in the {split} "
                                         f"split, fewer than --min-count {need}; {bring_back}")
        return UnknownAttributeError(f"{head}: its direction was degenerate ({counts[0]} positives, {counts[1]} "
                                     f"negatives in the {split} split; see the warnings of fit_directions)")

    def __getitem__(self, name: str) -> torch.Tensor:
        """The unit direction (D,) of one attribute."""
        return self.vectors[self.index(name)]

    def subset(self, names: Sequence[str]) -> AttributeDirections:
        """The same directions restricted to `names` (in that order)."""
        rows = [self.index(n) for n in names]
        pick = lambda t: None if t is None else t[rows].clone()  # noqa: E731
        keep = set(names)
        return AttributeDirections(
            names=list(names), vectors=pick(self.vectors), steps=pick(self.steps), method=self.method,
            pos_mean=pick(self.pos_mean), neg_mean=pick(self.neg_mean), pos_count=pick(self.pos_count),
            neg_count=pick(self.neg_count), margins=pick(self.margins), probe_weights=pick(self.probe_weights),
            probe_bias=pick(self.probe_bias), scores={k: v for k, v in self.scores.items() if k in keep},
            conditions={k: v for k, v in self.conditions.items() if k in keep},
            balance_on={k: v for k, v in self.balance_on.items() if k in keep}, dropped=list(self.dropped),
            checkpoint=self.checkpoint, checkpoint_sha256=self.checkpoint_sha256, latent_kind=self.latent_kind,
            version=self.version, info=dict(self.info),
        )

    # ---- decision boundaries --------------------------------------------------------------------------------
    def boundaries(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Unit normals (K, D) and offsets (K,) so that normals @ z + offsets is the signed distance to each boundary.

        Probe directions use the probe's hyperplane; the others the hyperplane through the midpoint of the class
        means, perpendicular to the direction.
        """
        if self.probe_weights is not None:
            norm = self.probe_weights.norm(dim=1)  # (K,)
            return self.probe_weights / norm[:, None], self.probe_bias / norm
        midpoint = (self.pos_mean + self.neg_mean) / 2  # (K, D)
        return self.vectors.clone(), -(self.vectors * midpoint).sum(dim=1)

    def signed_distance(self, z: torch.Tensor) -> torch.Tensor:
        """(N, D) latents -> (N, K) signed distances to each attribute's boundary (positive = has it)."""
        normals, offsets = self.boundaries()
        z = torch.as_tensor(z)
        return z.float() @ normals.to(z.device).T + offsets.to(z.device)  # (N, K)

    def predict(self, z: torch.Tensor) -> torch.Tensor:
        """(N, D) latents -> (N, K) bool predicted attributes."""
        return self.signed_distance(z) > 0

    # ---- editing ----------------------------------------------------------------------------------------------
    def resolve_changes(self, changes: Mapping[str, Any]) -> dict[int, int]:
        """{name: 0/1} -> {row: 0/1}; unknown names raise with the closest valid one, values other than 0/1 raise."""
        if not isinstance(changes, Mapping):
            raise TypeError(f"changes must be a mapping name -> 0/1, got {type(changes).__name__}")
        return {self.index(name): _value01(name, value) for name, value in changes.items()}

    def source_labels(self, z: torch.Tensor, source: Any = None) -> torch.Tensor:
        """Source labels (N, K) in `names` order on z's device: given (array, or mapping name -> values, the
        missing names predicted from z) or, for None, all predicted from z. Given values are checked on the host,
        before they move to z's device, so nothing waits on the device."""
        n, k = z.shape[0], len(self)
        if source is None:
            return self.predict(z).float()
        if isinstance(source, Mapping):
            given = {}
            for name, values in source.items():
                self.index(name)  # raises the error naming the closest valid attribute
                column = torch.as_tensor(np.asarray(values, dtype=np.float32)).reshape(-1)
                if column.numel() not in (1, n):
                    raise ValueError(f"source[{name!r}] must hold 1 or N={n} values, got {column.numel()}")
                given[name] = _check01(column, f"source[{name!r}]").expand(n)
            predicted = self.predict(z).float() if any(name not in given for name in self.names) else None
            return torch.stack([given[name].to(z.device) if name in given else predicted[:, j]
                                for j, name in enumerate(self.names)], dim=1)  # (N, K)
        host = source if isinstance(source, torch.Tensor) else torch.as_tensor(np.asarray(source))
        if host.ndim == 1:
            host = host[None].expand(n, -1)
        if tuple(host.shape) != (n, k):
            raise ValueError(f"source must be (N={n}, K={k}) in the order {self.names}, got {tuple(host.shape)}")
        return _check01(host.float(), "source labels").to(z.device)

    def edit_by_labels(
        self, z: torch.Tensor, source: torch.Tensor, target: torch.Tensor, *,
        strength: float | torch.Tensor = 1.0, mode: str = "offset",
    ) -> torch.Tensor:
        """`attributes.edit.edit_latents` with these vectors, steps and boundaries.

        z (N, D); source and target (N, K) 0/1 labels in `names` order -> edited z (N, D).
        """
        device = z.device
        normals, offsets = self.boundaries()
        return edit_latents(
            z, self.vectors.to(device), self.steps.to(device), source, target, strength=strength, mode=mode,
            probe_weights=normals.to(device), probe_bias=offsets.to(device), margins=self.margins.to(device),
        )

    def edit(
        self,
        z: torch.Tensor,
        changes: Mapping[str, int | bool],
        source: torch.Tensor | np.ndarray | Mapping[str, Any] | None = None,
        *,
        strength: float | Mapping[str, float] = 1.0,
        mode: str = "offset",
        clear_exclusive: bool = True,
    ) -> torch.Tensor:
        """Edit latents `z` (N, D) (encoder means) so the named attributes take the given 0/1 values.

        `source` (N, K) in `names` order, or a mapping name -> values; None = this artifact's own predictions.
        `strength` one number, or per attribute {name: strength} (others 1), e.g. a run's chosen strengths
        (`Run.edit_picks`). `clear_exclusive`: an attribute set to 1 also clears its mutually exclusive alternatives
        (`data.celeba.EXCLUSIVE_GROUPS`: another hair colour, straight vs wavy), as the evaluation's edits do.
        See `attributes.edit.edit_latents` for the offset / target semantics. An attribute the edit moves away
        from its target on some faces is warned about with its count (`attributes.edit.warn_wrong_way`).
        """
        if mode not in EDIT_MODES:
            raise ValueError(f"unknown edit mode {mode!r}; expected one of {EDIT_MODES}")
        z = torch.as_tensor(z)
        source, target, strength = self.edit_labels(z, changes, source, strength, clear_exclusive)
        edited = self.edit_by_labels(z, source, target, strength=strength, mode=mode)
        warn_wrong_way(self.names, self.signed_distance(z), self.signed_distance(edited), source, target,
                       f"the {self.method} edit")
        return edited

    def edit_labels(
        self, z: torch.Tensor, changes: Mapping[str, int | bool], source: Any = None,
        strength: float | Mapping[str, float] = 1.0, clear_exclusive: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor, float | torch.Tensor]:
        """What `edit` asks for, as `edit_by_labels` takes it: (source (N, K), target (N, K), strength: a number
        or (K,)), in `names` order; see `edit` for the arguments."""
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"z must be (N, D={self.latent_dim}), got {tuple(z.shape)}")
        rows = self.resolve_changes(changes)
        if isinstance(strength, Mapping):
            per_attribute = {self.index(name): float(s) for name, s in strength.items()}
            strength = torch.tensor([per_attribute.get(j, 1.0) for j in range(len(self))])
        source = self.source_labels(z, source)  # (N, K)
        target = source.clone()
        for j, value in rows.items():
            target[:, j] = value
        # a cleared alternative is moved at its own entry of `strength`, not at the clearing change's
        set_to = {self.names[j]: value for j, value in rows.items()}
        for other in conflicts_cleared(set_to, self.names) if clear_exclusive else ():
            target[:, self.index(other)] = 0
        return source, target, strength

    # ---- tables, provenance, I/O -----------------------------------------------------------------------------
    def to_frame(self) -> pd.DataFrame:
        """One row per attribute: step, margin, counts, scores and conditioning."""
        frame = pd.DataFrame(
            {
                "step": self.steps.tolist(),
                "margin": self.margins.tolist(),
                "pos_count": self.pos_count.tolist(),
                "neg_count": self.neg_count.tolist(),
            },
            index=pd.Index(self.names, name="attribute"),
        )
        metrics = sorted({m for s in self.scores.values() for m in s})
        for metric in metrics:
            frame[metric] = [self.scores.get(n, {}).get(metric, float("nan")) for n in self.names]
        if self.conditions:
            frame["conditions"] = [",".join(self.conditions.get(n, [])) for n in self.names]
        if self.balance_on:
            frame["balance_on"] = [",".join(self.balance_on.get(n, [])) for n in self.names]
        return frame

    def with_checkpoint(self, path: str | os.PathLike, sha256: str | None = None) -> AttributeDirections:
        """Record the VAE checkpoint these directions were fitted on (path and sha256, hashed unless given); returns
        self."""
        self.checkpoint = str(path)
        self.checkpoint_sha256 = sha256 or file_sha256(path)
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": int(self.version),
            "names": list(self.names),
            "vectors": self.vectors.contiguous(),
            "steps": self.steps,
            "method": self.method,
            "pos_mean": self.pos_mean,
            "neg_mean": self.neg_mean,
            "pos_count": self.pos_count,
            "neg_count": self.neg_count,
            "margins": self.margins,
            "probe_weights": self.probe_weights,
            "probe_bias": self.probe_bias,
            "scores": {k: dict(v) for k, v in self.scores.items()},
            "conditions": {k: list(v) for k, v in self.conditions.items()},
            "balance_on": {k: list(v) for k, v in self.balance_on.items()},
            "dropped": list(self.dropped),
            "checkpoint": self.checkpoint,
            "checkpoint_sha256": self.checkpoint_sha256,
            "latent_kind": self.latent_kind,
            "info": dict(self.info),
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically; `AttributeDirections.load` reads it back with weights_only=True."""
        return atomic_torch_save(self.to_dict(), path)

    @classmethod
    def load(cls, path: str | os.PathLike, map_location: str | torch.device = "cpu") -> AttributeDirections:
        """Read a file written by `save` (weights_only=True); a damaged one raises data.io.CorruptArtifactError."""
        remedy = f"Fit the directions again with `python -m experiments.fit_directions --run {Path(path).parent}`."
        data = load_torch_file(path, kind="attribute directions", remedy=remedy, map_location=map_location)
        if not isinstance(data, dict) or "vectors" not in data:
            raise ValueError(f"{path}: not an AttributeDirections file. {remedy}")
        if data.get("version") != ARTIFACT_VERSION:
            raise ValueError(f"{path}: directions version {data.get('version')!r}, expected {ARTIFACT_VERSION}. "
                             f"{remedy}")
        try:
            return cls(**data)
        except (TypeError, ValueError) as e:  # entries of the wrong shape, or vectors that are not unit length
            raise CorruptArtifactError(f"{path}: not valid attribute directions ({e}). {remedy}") from None
