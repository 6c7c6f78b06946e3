"""How far a face is from the faces a run was trained on, so an edit of an unlike photo says so.

Two numbers per face, compared with the same numbers of the run's own test faces (held out from training):
  reconstruction PSNR  of D(mu) against the face: a face the model cannot reconstruct will not keep its identity
                       through an edit (a cat, a painting, a photo unlike the training faces);
  latent distance      the Mahalanobis distance of mu from the training split's latents (a Gaussian fitted to them):
                       a latent where no training face lies is decoded into whatever the decoder makes of it.
A face is outside when its PSNR is below the test faces' 1st percentile or its distance above their 99th.
The reference (`DomainReference`, a run's domain-reference.pt) is computed once per run from latents.pt and the
test images, and records the checkpoint's SHA-256 and the cache fingerprint; `Run.domain_reference` recomputes a
stale one. Checking a face needs only the reference, the model and the face: never the image cache.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from attributes.encode import Latents
from data.cache import FaceCache, to_float_images
from data.io import atomic_torch_save, load_torch_file
from models.metrics import psnr

DOMAIN_VERSION = 1
PERCENTILES = (1.0, 5.0, 50.0, 95.0, 99.0)
REFERENCE_FACES = 2000  # test faces measured: percentiles to ~0.5 %, in seconds on a CPU
LOW, HIGH = 1.0, 99.0  # a face outside [LOW percentile of PSNR, HIGH percentile of distance] is warned about


class OutOfDomainWarning(UserWarning):
    """A face unlike the faces the run was trained on: edits will not keep who it is."""


def latent_whitening(mu: torch.Tensor, ridge: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean (D,), W (D, D)) of a Gaussian fitted to latents (N, D): ||(z - mean) @ W.T|| is z's Mahalanobis distance.

    W = L^-1 for the covariance's Cholesky factor L; `ridge` (relative to the mean variance) keeps it invertible
    when some latent dimensions are unused.
    """
    z = torch.as_tensor(mu).to(torch.float64)
    if z.ndim != 2 or z.shape[0] < 2:
        raise ValueError(f"latents must be (N >= 2, D), got {tuple(z.shape)}")
    mean = z.mean(dim=0)
    centred = z - mean
    cov = centred.T @ centred / (z.shape[0] - 1)  # (D, D)
    cov += torch.eye(z.shape[1], dtype=cov.dtype) * ridge * max(float(cov.diagonal().mean()), 1e-12)
    eye = torch.eye(z.shape[1], dtype=cov.dtype)
    whitening = torch.linalg.solve_triangular(torch.linalg.cholesky(cov), eye, upper=False)  # (D, D)
    return mean.float(), whitening.float()


def latent_distance(mu: torch.Tensor, mean: torch.Tensor, whitening: torch.Tensor) -> torch.Tensor:
    """(N, D) latents -> (N,) Mahalanobis distances under `latent_whitening`'s Gaussian."""
    z = torch.as_tensor(mu).float().cpu()
    if z.ndim != 2 or z.shape[1] != mean.shape[0]:
        raise ValueError(f"mu must be (N, D={mean.shape[0]}), got {tuple(z.shape)}")
    return ((z - mean) @ whitening.T).norm(dim=1)


@dataclass
class DomainCheck:
    """One face against a run's reference: its numbers, whether it is outside, and the one line that says so."""

    psnr: float
    latent_distance: float
    outside: bool
    message: str | None


@dataclass(eq=False)
class DomainReference:
    """Percentiles of the run's test faces' reconstruction PSNR and latent distance, and the Gaussian of the latter."""

    psnr_percentiles: torch.Tensor  # (P,) at PERCENTILES, dB
    distance_percentiles: torch.Tensor  # (P,) at PERCENTILES
    latent_mean: torch.Tensor  # (D,) of the training split's latents
    latent_whitening: torch.Tensor  # (D, D)
    split: str
    faces: int
    checkpoint_sha256: str | None = None
    cache_fingerprint: str | None = None
    percentiles: list[float] = field(default_factory=lambda: list(PERCENTILES))
    version: int = DOMAIN_VERSION

    def __post_init__(self) -> None:
        self.percentiles = [float(p) for p in self.percentiles]
        for name in ("psnr_percentiles", "distance_percentiles"):
            value = torch.as_tensor(getattr(self, name), dtype=torch.float32)
            if tuple(value.shape) != (len(self.percentiles),):
                raise ValueError(f"{name} must be ({len(self.percentiles)},), got {tuple(value.shape)}")
            setattr(self, name, value)
        self.latent_mean = torch.as_tensor(self.latent_mean, dtype=torch.float32)
        self.latent_whitening = torch.as_tensor(self.latent_whitening, dtype=torch.float32)
        d = self.latent_mean.shape[0]
        if self.latent_mean.ndim != 1 or tuple(self.latent_whitening.shape) != (d, d):
            raise ValueError(f"latent_mean (D,) and latent_whitening (D, D) expected, got "
                             f"{tuple(self.latent_mean.shape)} and {tuple(self.latent_whitening.shape)}")

    def at(self, values: torch.Tensor, percentile: float) -> float:
        """One of `values` (psnr_percentiles or distance_percentiles) at a stored percentile."""
        return float(values[self.percentiles.index(percentile)])

    def problem(self, checkpoint_sha256: str, cache_fingerprint: str) -> str | None:
        """Why this reference does not describe a run of that checkpoint and cache, or None."""
        if self.checkpoint_sha256 != checkpoint_sha256:
            return f"made from another checkpoint ({str(self.checkpoint_sha256)[:12]}, now {checkpoint_sha256[:12]})"
        if self.cache_fingerprint != cache_fingerprint:
            return (f"made from other images (cache fingerprint {str(self.cache_fingerprint)[:12]}, now "
                    f"{cache_fingerprint[:12]})")
        return None

    def check(self, face_psnr: float, mu: torch.Tensor) -> DomainCheck:
        """One face's reconstruction PSNR (dB) and latent mu (D,) or (1, D) against the reference."""
        distance = float(latent_distance(torch.as_tensor(mu).reshape(1, -1), self.latent_mean,
                                         self.latent_whitening)[0])
        low, high = self.at(self.psnr_percentiles, LOW), self.at(self.psnr_percentiles, HIGH)
        far = self.at(self.distance_percentiles, HIGH)
        notes = []
        if face_psnr < low:
            notes.append(f"reconstruction {face_psnr:.1f} dB; this run's test faces reconstruct at {low:.1f}–"
                         f"{high:.1f} dB ({LOW:g}–{HIGH:g}th percentile)")
        if distance > far:
            notes.append(f"its latent lies {distance:.1f} from the training faces' (Mahalanobis); "
                         f"{HIGH:g} % of the test faces lie within {far:.1f}")
        message = "; ".join(notes) + ": edits will not keep this person (the model was trained on other faces)"
        return DomainCheck(float(face_psnr), distance, bool(notes), message if notes else None)

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "psnr_percentiles": self.psnr_percentiles,
                "distance_percentiles": self.distance_percentiles, "latent_mean": self.latent_mean,
                "latent_whitening": self.latent_whitening, "split": self.split, "faces": int(self.faces),
                "checkpoint_sha256": self.checkpoint_sha256, "cache_fingerprint": self.cache_fingerprint,
                "percentiles": list(self.percentiles)}

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically; `DomainReference.load` reads it back with weights_only=True."""
        return atomic_torch_save(self.to_dict(), path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> DomainReference:
        """Read a file written by `save` (weights_only=True); a damaged one raises data.io.CorruptArtifactError."""
        remedy = "It is computed again from the run's test faces when it is gone, so delete a damaged one."
        data = load_torch_file(path, kind="domain reference", remedy=remedy)
        if not isinstance(data, dict) or data.get("version") != DOMAIN_VERSION:
            raise ValueError(f"{path}: not a version-{DOMAIN_VERSION} domain reference. {remedy}")
        return cls(**data)


def reference_split(cache: FaceCache) -> str:
    """The split the reference is measured on: test, else valid, else train (a cache without held-out faces)."""
    for split in ("test", "valid"):
        if len(cache.split_indices(split)):
            return split
    return "train"


@torch.inference_mode()
def reconstruction_psnr(model: torch.nn.Module, images: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """PSNR (dB) of D(mu) against images: images float (N, 3, S, S) in [-1, 1], mu (N, D) -> (N,), on the CPU."""
    device = next(model.parameters()).device
    recon = model.decode(torch.as_tensor(mu).float().to(device)).float().clamp(-1, 1).cpu()
    return psnr(recon, images.float().cpu())


def domain_reference(model: torch.nn.Module, cache: FaceCache, latents: Latents, *, checkpoint_sha256: str | None,
                     faces: int = REFERENCE_FACES, batch_size: int = 256, progress: bool = True) -> DomainReference:
    """The reference of a run: its model, the cache it was trained on and that cache's latents (latents.pt).

    The Gaussian is fitted to the train split's latents; PSNR and distance percentiles come from up to `faces`
    evenly spaced faces of the test split (`reference_split`), decoded from their latents.
    """
    if len(latents) != len(cache) or latents.cache_fingerprint != cache.fingerprint:
        raise ValueError(f"latents of {latents.cache_dir} ({len(latents)} rows) are not this cache's "
                         f"({cache.directory}, {len(cache)} rows): encode them again")
    mean, whitening = latent_whitening(latents.select("train").mu if latents.partition else latents.mu)
    split = reference_split(cache)
    rows = cache.split_indices(split)
    rows = rows[np.linspace(0, len(rows) - 1, min(faces, len(rows))).round().astype(int)]
    scores = []
    for start in tqdm(range(0, len(rows), batch_size), desc="domain reference", unit="batch", disable=not progress,
                      leave=False):
        batch = rows[start : start + batch_size]
        images = to_float_images(torch.from_numpy(np.ascontiguousarray(cache.images[batch])))  # (B, 3, S, S)
        scores.append(reconstruction_psnr(model, images, latents.mu[torch.from_numpy(batch)]))
    quantiles = torch.tensor(PERCENTILES, dtype=torch.float64) / 100
    psnr_p = torch.quantile(torch.cat(scores).double(), quantiles)
    distances = latent_distance(latents.mu[torch.from_numpy(rows)], mean, whitening)  # (n,)
    distance_p = torch.quantile(distances.double(), quantiles)
    return DomainReference(psnr_percentiles=psnr_p, distance_percentiles=distance_p, latent_mean=mean,
                           latent_whitening=whitening, split=split, faces=len(rows),
                           checkpoint_sha256=checkpoint_sha256, cache_fingerprint=cache.fingerprint)
