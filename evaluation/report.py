"""Evaluation results as people read them: evaluation.csv / .md / .json and the eval-* figures (PNG + CSV)."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pandas as pd

from data.io import atomic_write_json, atomic_write_text, save_figure
from evaluation.edits import PICKED, EvalConfig
from evaluation.protocol import STGAN_ATTRIBUTES, binomial_halfwidth
from models.classifier import judge_report_frame
from pipeline.run import Run


# ---- reporting --------------------------------------------------------------------------------------------------
def _pct(x: float) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def _db(x: float) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2f}"


def markdown_table(frame: pd.DataFrame, fmt) -> str:
    """A DataFrame (index = rows) as a GitHub markdown table, values through `fmt`."""
    head = "| " + " | ".join([str(frame.index.name or "")] + [str(c) for c in frame.columns]) + " |"
    sep = "|" + "---|" * (len(frame.columns) + 1)
    body = ["| " + " | ".join([str(i)] + [fmt(v) for v in row]) + " |" for i, row in zip(frame.index, frame.to_numpy())]
    return "\n".join([head, sep, *body])


def headline(table: pd.DataFrame, strength: float | None) -> pd.DataFrame:
    """The rows measured on every evaluated face at one strength; None: at each attribute's chosen strength."""
    if strength is None:
        return table[table["subset"] == "chosen"]
    return table[(table["strength"] == strength) & (table["subset"] == "all")]


def curve_points(table: pd.DataFrame) -> pd.DataFrame:
    """Mean success / preservation over attributes per (method, strength), all on the same faces."""
    rows = table[table["subset"] == "curve"] if (table["subset"] == "curve").any() else table
    return rows.groupby(["method", "strength"], sort=False)[["success", "preservation"]].mean().reset_index()


def per_method(table: pd.DataFrame, value: str, strength: float | None) -> pd.DataFrame:
    """attribute x method pivot of `value` at one strength (None: each attribute's chosen one), with `mean` rows."""
    at = headline(table, strength)
    pivot = at.pivot_table(index="attribute", columns="method", values=value, aggfunc="first", sort=False)
    order = list(dict.fromkeys(at["attribute"]))
    methods = list(dict.fromkeys(at["method"]))
    pivot = pivot.reindex(index=order, columns=methods)
    stgan = [a for a in STGAN_ATTRIBUTES if a in pivot.index]
    mean_all = pivot.mean(axis=0)
    if stgan and len(stgan) < len(pivot):  # the number comparable with STGAN/AttGAN's tables
        pivot.loc[f"**mean, STGAN's {len(stgan)}**"] = pivot.loc[stgan].mean(axis=0)
    pivot.loc["**mean**"] = mean_all
    pivot.index.name = "attribute"
    pivot.columns.name = None
    return pivot


UNRELIABLE_JUDGE = 0.8  # balanced test accuracy under which an attribute's edit scores are marked as doubtful


def _marker(judge_report: dict):
    """A function marking (†) the rows of attributes whose judge is unreliable, and whether any is."""
    doubtful = {name for name, r in judge_report["attributes"].items()
                if not r["balanced_accuracy"] >= UNRELIABLE_JUDGE}

    def marked(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.copy()
        frame.index = [f"{i} †" if i in doubtful else i for i in frame.index]
        frame.index.name = "attribute"
        return frame

    return marked, bool(doubtful)


# What preservation leaves out besides STGAN's conflicts, as evaluation.json's flip_rules names it
_IMPLIED = {"stgan": "", "generator": "; preservation also leaves out what the generator's consistency rules change "
                                      "with the flip, e.g. a bald head's hair colour, texture, fringe and hairline"}


def _headline_section(table: pd.DataFrame, summary: dict, config: EvalConfig, marked, doubtful: bool) -> list[str]:
    s, n = config.default_strength, summary["n_images"]
    lines = [
        f"# Edit evaluation of {summary.get('run_dir', '')}",
        "",
        f"{n} {summary['split']} faces (seed {config.seed}); 95 % half-width of a success rate at p = 0.5: "
        f"±{100 * binomial_halfwidth(0.5, n):.1f} %. Edits: STGAN difference vector (one attribute flipped; what it "
        f"conflicts with cleared by STGAN's rules, e.g. a new hair colour clears the others"
        f"{_IMPLIED[summary.get('flip_rules', 'stgan')]}), `{config.mode}` mode, strength {s:g}. Judge: pixel-space "
        f"CNN trained on the cache's train split (accuracy below).",
        "",
        f"## Edit success (%) at strength {s:g}: the judge sees the target value",
        "",
        markdown_table(marked(per_method(table, "success", s)), _pct),
        "",
        f"## Preservation (%) at strength {s:g}: the judge's verdict on the other attributes is unchanged",
        "",
        markdown_table(marked(per_method(table, "preservation", s)), _pct),
        "",
    ]
    if doubtful:
        lines += [f"† the judge's balanced test accuracy on this attribute is below {100 * UNRELIABLE_JUDGE:.0f} %: "
                  "its verdicts, and so these scores, are doubtful (see the judge table below).", ""]
    return lines


def _ground_truth_section(table: pd.DataFrame, summary: dict, config: EvalConfig) -> list[str]:
    s = config.default_strength
    gt = per_method(table, "psnr_edit_vs_cf", s)
    base = headline(table, s).groupby("attribute", sort=False)["psnr_recon_vs_cf"].first()
    gt["reconstruction (no edit)"] = base.reindex(gt.index[:-1]).tolist() + [base.mean()]
    return [
        f"## Ground truth: PSNR (dB) against the true counterfactual, strength {s:g}",
        "",
        f"On {summary['counterfactual_images']} procedural faces re-rendered from their factors with the attribute "
        "flipped. An edit helps when its PSNR beats the unedited reconstruction's (last column).",
        "",
        markdown_table(gt, _db),
        "",
        f"## Ground truth: faces (%) whose edit is closer to the true counterfactual than the reconstruction, "
        f"strength {s:g}",
        "",
        markdown_table(per_method(table, "closer_to_cf", s), _pct),
        "",
    ]


def _chosen_section(table: pd.DataFrame, summary: dict, config: EvalConfig, marked) -> list[str]:
    chosen_at = per_method(table, "strength", None)
    success, kept = per_method(table, "success", None), per_method(table, "preservation", None)
    cells = success.map(_pct) + " / " + kept.map(_pct) + "  ×" + chosen_at.map(lambda x: f"{x:g}")
    means = cells.index.str.startswith("**mean")
    cells.loc[means] = (success.map(_pct) + " / " + kept.map(_pct)).loc[means]
    if PICKED in cells.columns:  # which kind each attribute's pick is
        kinds = table[table["method"] == PICKED].groupby("attribute", sort=False)["picked_from"].first()
        picked_rows = ~means
        cells.loc[picked_rows, PICKED] = (cells.loc[picked_rows, PICKED] + " "
                                          + kinds.reindex(cells.index[picked_rows]).fillna(""))
    return [
        "## Each attribute at its own strength: success / preservation (%) ×strength",
        "",
        f"Strengths chosen per attribute and direction kind on {summary.get('strength_faces', '?')} faces of the "
        f"{summary.get('strength_split', 'valid')} split (never on the scored faces): among {list(config.strength_candidates)}, "
        f"the best-preserving one whose success reaches {100 * config.target_success:.0f} %, else the best "
        f"success × preservation. `{PICKED}`: per attribute, the kind whose validation score at its chosen strength "
        "wins by the same rule (its name after the cell).",
        "",
        markdown_table(marked(cells), str),
        "",
    ]


def _curve_section(table: pd.DataFrame, summary: dict) -> list[str]:
    curve = curve_points(table)
    curve_frame = curve.pivot(index="strength", columns="method", values=["success", "preservation"])
    methods = list(dict.fromkeys(curve["method"]))  # the kinds scored at fixed strengths (not the pick)
    curve_frame = curve_frame[[(v, m) for v in ("success", "preservation") for m in methods]]
    curve_frame.columns = [f"{m} {v}" for v, m in curve_frame.columns]
    curve_frame.index = [f"{x:g}" for x in curve_frame.index]
    curve_frame.index.name = "strength"
    return [
        f"## Strength curve (mean over attributes, on the first {summary['curve_images']} of the faces at every "
        "strength)",
        "",
        markdown_table(curve_frame, _pct),
        "",
    ]


def _precision_lines(summary: dict) -> list[str]:
    """What evaluating in bf16 changed, measured on the evaluated faces (older summaries have no such entry)."""
    agreement = summary.get("bf16_agreement")
    if summary.get("precision") != "bf16" or not agreement:
        return [f"Precision: {summary.get('precision', 'fp32')}.", ""]
    return ["Precision: the decoder and the judge ran under bf16 autocast (latents and edits are fp32). On these faces "
            f"the bf16 reconstructions are {agreement['reconstruction_psnr_db']:.1f} dB from fp32 ones, and the judge's "
            f"bf16 verdicts on them agree with all-fp32 verdicts for {100 * agreement['verdicts']:.2f} % of "
            "(face, attribute) pairs.", ""]


def _fidelity_and_judge_section(summary: dict, judge_report: dict) -> list[str]:
    lines = [
        "## Fidelity",
        "",
        f"Reconstruction of the {summary['n_images']} evaluated faces: PSNR {summary['fidelity']['psnr']:.2f} dB"
        + (f", SSIM {summary['fidelity']['ssim']:.3f}" if summary["fidelity"]["ssim"] is not None else "")
        + ".",
        "",
        *_precision_lines(summary),
        f"## Judge accuracy (%): test split ({judge_report.get('num_test', '?')} images), and on the evaluated faces "
        "and their reconstructions",
        "",
        f"Mean test accuracy {100 * judge_report['mean_accuracy']:.1f} %, balanced "
        f"{100 * judge_report['mean_balanced_accuracy']:.1f} %.",
        "",
    ]
    jf = judge_report_frame(judge_report)[["accuracy", "balanced_accuracy", "positive_rate"]].copy()
    jf["on evaluated inputs"] = pd.Series(summary["judge_accuracy_on_inputs"])
    jf["on reconstructions"] = pd.Series(summary["judge_accuracy_on_reconstructions"])
    return lines + [markdown_table(jf, _pct), ""]


def write_markdown(table: pd.DataFrame, summary: dict, judge_report: dict, config: EvalConfig, path: Path) -> Path:
    """evaluation.md: success / preservation / ground-truth tables per attribute and method, the chosen-strength
    table, the strength curve, fidelity, judge."""
    marked, doubtful = _marker(judge_report)
    lines = _headline_section(table, summary, config, marked, doubtful)
    if summary["counterfactual_images"]:
        lines += _ground_truth_section(table, summary, config)
    if (table["subset"] == "chosen").any():
        lines += _chosen_section(table, summary, config, marked)
    lines += _curve_section(table, summary) + _fidelity_and_judge_section(summary, judge_report)
    return atomic_write_text("\n".join(lines), path)


def plot_evaluation(table: pd.DataFrame, config: EvalConfig, figures: Path) -> list[Path]:
    """Success-vs-preservation curves over strength, and per-attribute success per method; PNG + CSV each."""
    import matplotlib.pyplot as plt

    written = []
    figures.mkdir(parents=True, exist_ok=True)
    curve = curve_points(table)
    chosen = headline(table, None).groupby("method", sort=False)[["success", "preservation"]].mean()
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for method, part in curve.groupby("method", sort=False):
        part = part.sort_values("strength")
        line, = ax.plot(100 * part["preservation"], 100 * part["success"], "o-", label=method)
        if method in chosen.index:  # each attribute at its own strength (chosen on another split)
            ax.plot(100 * chosen.loc[method, "preservation"], 100 * chosen.loc[method, "success"], "*", ms=12,
                    color=line.get_color(), markeredgecolor="k")
        for _, r in part.iterrows():
            ax.annotate(f"{r['strength']:g}", (100 * r["preservation"], 100 * r["success"]), fontsize=7,
                        textcoords="offset points", xytext=(3, 3))
    ax.set_xlabel("preservation of other attributes (%)")
    ax.set_ylabel("edit success (%)")
    ax.set_title("edit strength trade-off (labels: strength; ★ per-attribute strengths)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    written += save_figure(fig, curve, figures / "eval-tradeoff")
    plt.close(fig)

    at = per_method(table, "success", config.default_strength)
    at = at[~at.index.str.startswith("**mean")]
    fig, ax = plt.subplots(figsize=(max(6, 0.55 * len(at) * max(1, len(at.columns)) ** 0.5 + 2), 4))
    width = 0.8 / max(len(at.columns), 1)
    x = np.arange(len(at))
    for i, method in enumerate(at.columns):
        ax.bar(x + (i - (len(at.columns) - 1) / 2) * width, 100 * at[method].to_numpy(), width, label=method)
    ax.set_xticks(x, at.index, rotation=45, ha="right")
    ax.set_ylabel("edit success (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"edit success per attribute (strength {config.default_strength:g})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    written += save_figure(fig, at.reset_index(), figures / "eval-success")
    plt.close(fig)

    if table["n_cf"].max() > 0:
        at = headline(table, config.default_strength)
        gt = at.pivot_table(index="attribute", columns="method", values="psnr_edit_vs_cf", sort=False)
        gt = gt.reindex(index=list(dict.fromkeys(at["attribute"])), columns=list(dict.fromkeys(at["method"])))
        gt["reconstruction"] = at.groupby("attribute", sort=False)["psnr_recon_vs_cf"].first().reindex(gt.index)
        fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(gt) + 2), 4))
        width = 0.8 / len(gt.columns)
        x = np.arange(len(gt))
        for i, column in enumerate(gt.columns):
            ax.bar(x + (i - (len(gt.columns) - 1) / 2) * width, gt[column].to_numpy(), width, label=column,
                   color="0.6" if column == "reconstruction" else None)
        ax.set_xticks(x, gt.index, rotation=45, ha="right")
        ax.set_ylabel("PSNR vs true counterfactual (dB)")
        lo = np.nanmin(gt.to_numpy())
        ax.set_ylim(max(0.0, lo - 3), None)
        ax.set_title(f"ground truth: edit vs counterfactual (strength {config.default_strength:g})")
        ax.legend(fontsize=8)
        fig.tight_layout()
        written += save_figure(fig, gt.reset_index(), figures / "eval-counterfactual-psnr")
        plt.close(fig)
    return written



def write_evaluation(run: Run, table: pd.DataFrame, summary: dict, judge_report: dict, config: EvalConfig) -> list[Path]:
    """Every output of an evaluation into the run folder, as one set (`Run.writing`): evaluation.csv/.md/.json, its
    config, the eval-* figures."""
    with run.writing(Run.EVALUATION) as written:
        written += [atomic_write_text(table.to_csv(index=False), run.path(Run.EVAL_CSV)),
                    write_markdown(table, summary, judge_report, config, run.path(Run.EVAL_MD)),
                    atomic_write_json(summary, run.path(Run.EVAL_JSON)),
                    atomic_write_json(dataclasses.asdict(config), run.path(Run.EVAL_CONFIG))]
        written += plot_evaluation(table, config, run.figures_dir)
    return written


def headline_means(table: pd.DataFrame, strength: float | None) -> pd.DataFrame:
    """Mean success and preservation per method at one strength (None: each attribute's chosen one), over all
    attributes and over STGAN's 13."""
    at = headline(table, strength)
    stgan = at[at["attribute"].isin(STGAN_ATTRIBUTES)]
    frame = at.groupby("method", sort=False)[["success", "preservation"]].mean()
    frame[["stgan_success", "stgan_preservation"]] = stgan.groupby("method", sort=False)[["success", "preservation"]].mean()
    return frame


def headline_lines(table: pd.DataFrame, config: EvalConfig) -> list[str]:
    """The console summary: mean success / preservation per method at the default strength and, when scored, at
    each attribute's chosen strength."""
    lines = []
    for label, strength in ((f"strength {config.default_strength:g}", config.default_strength),
                            ("chosen strengths", None)):
        frame = headline_means(table, strength)
        if len(frame):
            lines.append(f"edit success / preservation at {label} (STGAN's 13 in brackets):")
        for method, r in frame.iterrows():
            lines.append(f"  {method:>12}: {100 * r['success']:.1f} % / {100 * r['preservation']:.1f} % "
                         f"({100 * r['stgan_success']:.1f} / {100 * r['stgan_preservation']:.1f})")
    return lines
