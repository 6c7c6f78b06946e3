"""The eval-* figures of an evaluation table (PNG + the CSV behind each), sized to be read at a glance:

  eval-tradeoff      success against preservation over strength, one line per kind (colour and marker of its own)
  eval-success       heat map: attributes x kinds, success at each kind's chosen strength, and the pick
  eval-ground-truth  heat map: attributes x kinds, PSNR of the edit minus its base's against the true counterfactual
  eval-locality      per attribute, the pick's share of faces closer to the truth and of its change inside the true
                     change region
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from data.io import save_figure
from evaluation.edits import PICKED
from evaluation.tables import chosen_rows, curve_points, per_method, pick_frame, picked_rows

MARKERS = "osD^vP*Xh<>p"


def kind_styles(kinds: list[str]) -> dict[str, dict]:
    """A colour (tab20) and a marker per kind, distinct for up to 20 kinds, the same in every plot."""
    import matplotlib.pyplot as plt

    colours = plt.get_cmap("tab20").colors
    return {k: {"color": colours[(2 * i) % 20 + (2 * i) // 20], "marker": MARKERS[i % len(MARKERS)]}
            for i, k in enumerate(kinds)}


def _heatmap(frame: pd.DataFrame, title: str, label: str, stem: Path, *, fmt: str, cmap: str, centre: float | None,
             vmin: float | None = None, vmax: float | None = None) -> list[Path]:
    """attributes (rows) x columns, each cell written in; one PNG + CSV."""
    import matplotlib.pyplot as plt

    values = frame.to_numpy(dtype=float)
    rows, cols = values.shape
    fig, ax = plt.subplots(figsize=(2.2 + 0.62 * cols, 1.3 + 0.24 * rows))
    if centre is not None:
        span = np.nanmax(np.abs(values - centre)) if np.isfinite(values).any() else 1.0
        vmin, vmax = centre - span, centre + span
    image = ax.imshow(values, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    for i in range(rows):
        for j in range(cols):
            if np.isfinite(values[i, j]):
                ax.text(j, i, format(values[i, j], fmt), ha="center", va="center", fontsize=6)
    ax.set_xticks(range(cols), frame.columns, rotation=40, ha="right", fontsize=7)
    ax.set_yticks(range(rows), frame.index, fontsize=7)
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02, label=label)
    fig.tight_layout()
    paths = save_figure(fig, frame.reset_index(), stem)
    plt.close(fig)
    return paths


def _by_attribute(table: pd.DataFrame, value: str) -> pd.DataFrame:
    """attributes x (kinds, then the pick) of `value` at the chosen strengths of plain edits (the pick's own)."""
    frame = per_method(table, value)
    frame = frame[~frame.index.str.startswith("**mean")]
    pick = picked_rows(table).set_index("attribute")[value]
    if len(pick):
        frame[PICKED] = pick.reindex(frame.index)
    return frame


def plot_tradeoff(table: pd.DataFrame, figures: Path) -> list[Path]:
    """Success against preservation per kind over the curve's strengths; ★ each kind at its chosen strengths."""
    import matplotlib.pyplot as plt

    curve = curve_points(table)
    if curve.empty:
        return []
    chosen = chosen_rows(table).groupby("method", sort=False)[["success", "preservation"]].mean()
    styles = kind_styles(list(dict.fromkeys(curve["method"])))
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for method, part in curve.groupby("method", sort=False):
        part = part.sort_values("strength")
        ax.plot(100 * part["preservation"], 100 * part["success"], "-", lw=1, ms=4, label=method, **styles[method])
        if method in chosen.index:
            ax.plot(100 * chosen.loc[method, "preservation"], 100 * chosen.loc[method, "success"], marker="*",
                    ms=12, color=styles[method]["color"], markeredgecolor="k", ls="none")
    for _, r in curve[curve["method"] == curve["method"].iloc[0]].iterrows():  # strengths labelled once
        ax.annotate(f"{r['strength']:g}", (100 * r["preservation"], 100 * r["success"]), fontsize=7,
                    textcoords="offset points", xytext=(4, -8))
    ax.set_xlabel("preservation of other attributes (%)")
    ax.set_ylabel("edit success (%)")
    ax.set_title("plain edits on the validation faces at each strength (numbers);\n★ each kind at its chosen "
                 "strengths, on the test faces", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    paths = save_figure(fig, curve, figures / "eval-tradeoff")
    plt.close(fig)
    return paths


def plot_locality(table: pd.DataFrame, figures: Path) -> list[Path]:
    """Per attribute, the pick's closer_to_cf, inside_change and judge success (horizontal bars), the judge's success
    on the true counterfactuals marked on the last (where the table has it), the 50 % line drawn."""
    import matplotlib.pyplot as plt

    pick = pick_frame(table)
    columns = ["kind", "composite", "strength", "closer_to_cf", "inside_change", "success"]
    pick = pick[~pick.index.str.startswith("**mean")][columns + (["truth_success"] if "truth_success" in pick else [])]
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.3 * len(pick)))
    y = np.arange(len(pick))
    ax.barh(y - 0.27, 100 * pick["closer_to_cf"], 0.27, label="faces closer to the true counterfactual than the base")
    ax.barh(y, 100 * pick["inside_change"], 0.27, label="share of the change inside the true change region")
    ax.barh(y + 0.27, 100 * pick["success"], 0.27, label="judge success on the edit")
    if "truth_success" in pick:
        ax.plot(100 * pick["truth_success"], y + 0.27, "k|", ms=8, mew=2, label="judge success on the truth")
    ax.set_yticks(y, [f"{a}  ({k} [{c}] ×{s:g})" for a, k, c, s in
                      zip(pick.index, pick["kind"], pick["composite"], pick["strength"])], fontsize=7)
    ax.invert_yaxis()
    ax.axvline(50, color="0.5", lw=0.8, ls="--")
    ax.set_xlim(0, 100)
    ax.set_xlabel("%")
    ax.set_title("the picked edits against the ground truth, and what the judge reads", fontsize=9, pad=34)
    ax.legend(fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False)
    fig.tight_layout()
    paths = save_figure(fig, pick.reset_index(), figures / "eval-locality")
    plt.close(fig)
    return paths


def plot_evaluation(table: pd.DataFrame, figures: Path) -> list[Path]:
    """Every eval-* figure the table can fill."""
    figures.mkdir(parents=True, exist_ok=True)
    written = plot_tradeoff(table, figures)
    if not chosen_rows(table).empty:
        written += _heatmap(100 * _by_attribute(table, "success"), "edit success at each kind's chosen strength (%)",
                            "%", figures / "eval-success", fmt=".0f", cmap="viridis", centre=None, vmin=0, vmax=100)
    if (table["n_cf"] > 0).any() and not chosen_rows(table).empty:
        gain = _by_attribute(table, "psnr_edit_vs_cf") - _by_attribute(table, "psnr_base_vs_cf")
        written += _heatmap(gain, "ground truth: PSNR of the edit minus its base's against the true counterfactual",
                            "dB (> 0: the edit is closer)", figures / "eval-ground-truth", fmt=".1f", cmap="RdBu",
                            centre=0.0)
        if (table["method"] == PICKED).any():
            written += plot_locality(table, figures)
    return written
