"""The long evaluation table read as people read it: which rows are the test split's chosen edits and the pick,
attribute x kind pivots with mean rows, the strength curve. Shared by the report (evaluation.md) and its plots."""
from __future__ import annotations

import pandas as pd

from attributes.composite import COMPOSITES
from evaluation.edits import PICKED
from evaluation.scoring import TRUTH
from evaluation.protocol import STGAN_ATTRIBUTES

SCORES = ("success", "preservation", "success_heldout", "preservation_heldout", "closer_to_cf", "inside_change")


def chosen_rows(table: pd.DataFrame, composite: str | None = "none") -> pd.DataFrame:
    """Every kind (and the pick) at its chosen strength on every scored face; one composite, or all for None."""
    rows = table[table["subset"] == "chosen"]
    return rows if composite is None else rows[rows["composite"] == composite]


def picked_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The pick: per attribute, the (kind, composite, strength) that won on the validation faces."""
    return table[table["method"] == PICKED]


def truth_rows(table: pd.DataFrame, splits: set[str] | None = None) -> pd.DataFrame:
    """The judges' verdicts on the true counterfactuals, one row per attribute, of the faces of `splits` (default:
    the scored split's)."""
    rows = table[table["subset"] == TRUTH]
    if "split" not in table:
        return rows
    return rows[rows["split"].isin(set(table.loc[table["subset"] == "chosen", "split"]) if splits is None else splits)]


def curve_points(table: pd.DataFrame, composite: str = "none") -> pd.DataFrame:
    """Mean success / preservation over attributes per (method, strength) of one composite on the validation
    faces, where every kind is scored at every candidate strength."""
    rows = table[(table["subset"] == "candidate") & (table["composite"] == composite)]
    return rows.groupby(["method", "strength"], sort=False)[["success", "preservation"]].mean().reset_index()


def with_means(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` (index attribute) with mean rows over STGAN's 13 (when they are not all) and over all."""
    stgan = [a for a in STGAN_ATTRIBUTES if a in frame.index]
    means = frame.select_dtypes("number").mean(axis=0)
    if stgan and len(stgan) < len(frame):  # the number comparable with STGAN/AttGAN's tables
        frame.loc[f"**mean, STGAN's {len(stgan)}**"] = frame.loc[stgan].select_dtypes("number").mean(axis=0)
    frame.loc["**mean**"] = means
    return frame


def per_method(table: pd.DataFrame, value: str, composite: str = "none") -> pd.DataFrame:
    """attribute x method pivot of `value` at each kind's chosen strength under one composite, with mean rows."""
    at = chosen_rows(table, composite)
    at = at[at["method"] != PICKED]
    pivot = at.pivot_table(index="attribute", columns="method", values=value, aggfunc="first", sort=False)
    pivot = pivot.reindex(index=list(dict.fromkeys(at["attribute"])), columns=list(dict.fromkeys(at["method"])))
    pivot = with_means(pivot)
    pivot.index.name, pivot.columns.name = "attribute", None
    return pivot


def composite_means(table: pd.DataFrame) -> pd.DataFrame:
    """(method, composite) x mean scores over the attributes, at each one's chosen strength."""
    at = chosen_rows(table, None)
    at = at[at["method"] != PICKED]
    frame = at.groupby(["method", "composite"], sort=False)[["success", "preservation", "closer_to_cf",
                                                              "inside_change"]].mean()
    order = [(m, c) for m in dict.fromkeys(at["method"]) for c in COMPOSITES if (m, c) in frame.index]
    frame = frame.loc[order + [key for key in frame.index if key not in order]]  # each kind's in COMPOSITES order
    frame.index = [f"{m} [{c}]" for m, c in frame.index]
    frame.index.name = "kind [composite]"
    return frame


def pick_frame(table: pd.DataFrame) -> pd.DataFrame:
    """The pick, one row per attribute: kind, composite, strength and every score (and, where there is ground
    truth, `truth_success`: the judge's success on the true counterfactuals), with mean rows."""
    pick = picked_rows(table).set_index("attribute")
    frame = pick[["picked_from", "composite", "strength", *SCORES]].rename(columns={"picked_from": "kind"})
    truth = truth_rows(table).set_index("attribute")
    if len(truth):  # what the judge reads on the truth itself, beside what it reads on the edit
        frame["truth_success"] = truth["success"].reindex(frame.index)
    frame = with_means(frame)
    frame.index.name = "attribute"
    return frame
