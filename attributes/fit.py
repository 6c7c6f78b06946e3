"""Fit every kind of attribute direction on a run's latents: the fitting split for the directions, the validation
split for their scores. What `python -m experiments.fit_directions` does, as one function."""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

from attributes.artifact import METHODS, AttributeDirections
from attributes.directions import (
    DEFAULT_MIN_COUNT,
    balanced_mean_directions,
    conditional_directions,
    mean_directions,
    probe_directions,
    probe_joint_directions,
    regression_directions,
    score_directions,
)
from attributes.encode import Latents

# InterFaceGAN-style conditions: each attribute without the attributes it is most entangled with in CelebA
DEFAULT_CONDITIONS: dict[str, list[str]] = {
    "Blond_Hair": ["Male"],
    "Black_Hair": ["Male"],
    "Brown_Hair": ["Male"],
    "Gray_Hair": ["Male", "Young"],
    "Bald": ["Male", "Young"],
    "Bangs": ["Male"],
    "Eyeglasses": ["Male", "Young"],
    "Smiling": ["Male", "Young"],
    "Mouth_Slightly_Open": ["Smiling"],
    "Heavy_Makeup": ["Male", "Young"],
    "Wearing_Lipstick": ["Male", "Heavy_Makeup"],
    "Mustache": ["Male", "Young"],
    "Goatee": ["Male", "Young"],
    "No_Beard": ["Male", "Young"],
    "Young": ["Male", "Eyeglasses", "Gray_Hair"],
    "Male": ["Heavy_Makeup", "Wearing_Lipstick", "No_Beard"],
    "Pale_Skin": ["Male"],
}
DEFAULT_BALANCE_ON = ("Male", "Young")


@dataclass
class FitConfig:
    """Which direction kinds to fit, on which splits, with which settings (saved as fit_config.json in the run)."""

    methods: tuple[str, ...] = field(default=METHODS, metadata={"choices": METHODS})
    fit_split: str = "train"
    valid_split: str = "valid"
    min_count: int = field(default=DEFAULT_MIN_COUNT,
                           metadata={"help": "fewest positives and negatives in fit_split for a direction"})
    conditional: dict[str, list[str]] = field(default_factory=lambda: {k: list(v) for k, v in DEFAULT_CONDITIONS.items()},
                                              metadata={"help": 'attribute -> conditions, e.g. {"Blond_Hair": ["Male"]}'})
    conditional_base: str = field(default="probe", metadata={"choices": METHODS[:3]})
    balance_on: tuple[str, ...] = DEFAULT_BALANCE_ON
    min_cell_count: int = 10
    C: float = field(default=1.0, metadata={"help": "inverse L2 strength of the probes"})
    ridge: float = field(default=1e-6, metadata={"help": "regression: ridge as a fraction of the mean label variance"})
    probe_jobs: int = field(default=-1, metadata={"help": "joblib workers for the probes (-1 = all cores)"})

    def __post_init__(self) -> None:
        self.methods, self.balance_on = tuple(self.methods), tuple(self.balance_on)
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ValueError(f"FitConfig.methods: unknown {unknown}; expected some of {METHODS}")
        if "conditional" in self.methods and self.conditional_base not in self.methods:
            raise ValueError(f"conditional directions need their base method {self.conditional_base!r} in methods")
        if "probe_joint" in self.methods and "probe" not in self.methods:
            raise ValueError("probe_joint directions are built from the probes: add 'probe' to methods")


def usable_conditions(conditions: dict[str, list[str]], base: AttributeDirections) -> dict[str, list[str]]:
    """The conditions restricted to attributes that have base directions; what is left out is warned about."""
    usable, notes = {}, []
    for name, conds in conditions.items():
        kept = [c for c in conds if c in base]
        if name not in base or not kept:
            notes.append(f"{name} (no direction for {[c for c in [name, *conds] if c not in base]})")
        else:
            usable[name] = kept
            if len(kept) < len(conds):
                notes.append(f"{name} | {sorted(set(conds) - set(kept))} (conditioned on {kept} only)")
    if notes:
        warnings.warn("conditional: left out " + "; ".join(notes), stacklevel=2)
    return usable


def fit_directions(latents: Latents, config: FitConfig | None = None, *, progress: bool = True) -> dict[str, AttributeDirections]:
    """Every requested kind fitted on `config.fit_split` of `latents` and scored on `config.valid_split`."""
    config = config or FitConfig()
    if latents.labels is None:
        raise ValueError("latents carry no labels; encode them with attributes.encode_cache")
    names = latents.attribute_names
    train, valid = latents.select(config.fit_split), latents.select(config.valid_split)
    out: dict[str, AttributeDirections] = {}
    if "mean" in config.methods:
        out["mean"] = mean_directions(train.mu, train.labels, names, min_count=config.min_count)
    if "balanced" in config.methods:
        balance = [b for b in config.balance_on if b in names]
        if len(balance) < len(config.balance_on):
            warnings.warn(f"balanced: balancing on {balance} only (not in this data: "
                          f"{sorted(set(config.balance_on) - set(balance))})", stacklevel=2)
        out["balanced"] = balanced_mean_directions(train.mu, train.labels, names, balance,
                                                   min_count=config.min_count, min_cell_count=config.min_cell_count)
    if "probe" in config.methods:
        out["probe"] = probe_directions(train.mu, train.labels, names, valid_latents=valid.mu,
                                        valid_labels=valid.labels, min_count=config.min_count, C=config.C,
                                        n_jobs=config.probe_jobs, progress=progress)
    if "conditional" in config.methods:
        base = out[config.conditional_base]
        out["conditional"] = conditional_directions(base, usable_conditions(config.conditional, base))
    if "regression" in config.methods:
        out["regression"] = regression_directions(train.mu, train.labels, names, min_count=config.min_count,
                                                  ridge=config.ridge)
    if "probe_joint" in config.methods:
        try:
            out["probe_joint"] = probe_joint_directions(out["probe"], train.mu)
        except ValueError as error:  # more probes than latent dimensions, or probes dependent under the covariance
            warnings.warn(f"probe_joint left out: {error}", stacklevel=2)
    positives = train.labels.sum(0).tolist()  # (K,)
    counts = {name: [int(p), len(train) - int(p)] for name, p in zip(names, positives)}
    for method, dirs in out.items():
        if method != "probe":  # probes are scored inside probe_directions
            dirs.scores = score_directions(dirs, valid.mu, valid.labels, names)
        # min_count and the counts of what was left out: an edit asking for it says why and which flag brings it back
        dirs.info.update(fit_split=config.fit_split, valid_split=config.valid_split, min_count=config.min_count,
                         fit_counts={name: counts[name] for name in dirs.dropped if name in counts})
    return {m: out[m] for m in METHODS if m in out}
