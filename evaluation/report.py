"""Evaluation results as people read them: evaluation.csv / .md / .json and the eval-* figures (PNG + CSV)."""
from __future__ import annotations

import dataclasses
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from attributes.composite import COMPOSITES
from data.io import atomic_write_json, atomic_write_text, file_sha256
from evaluation.edits import PICKED, EvalConfig
from evaluation.plots import plot_evaluation
from evaluation.protocol import STGAN_ATTRIBUTES, binomial_halfwidth
from evaluation.strength import STRENGTH_RULES, capped_at_truth, pick_edits, pick_strengths
from evaluation.tables import (
    SCORES,
    chosen_rows,
    composite_means,
    curve_points,
    per_method,
    pick_frame,
    picked_rows,
    truth_rows,
)
from models.classifier import judge_report_frame
from pipeline.run import Run

DEMO_FILE = "demo.json"  # the demo's stage timings and machine, beside the run's evaluation
UNRELIABLE_JUDGE = 0.8  # balanced test accuracy under which an attribute's edit scores are marked as doubtful


def _pct(x: float) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def _truth_capped(summary: dict) -> bool:
    """Whether the evaluation asked each attribute no more success than the judge read on its true counterfactuals
    (evaluation.json's `success_targets` per attribute, `evaluation.edits.success_targets`)."""
    return isinstance(summary.get("success_targets"), dict)


def markdown_table(frame: pd.DataFrame, fmt) -> str:
    """A DataFrame (index = rows) as a GitHub markdown table, values through `fmt`."""
    head = "| " + " | ".join([str(frame.index.name or "")] + [str(c) for c in frame.columns]) + " |"
    sep = "|" + "---|" * (len(frame.columns) + 1)
    body = ["| " + " | ".join([str(i)] + [fmt(v) for v in row]) + " |" for i, row in zip(frame.index, frame.to_numpy())]
    return "\n".join([head, sep, *body])


def _marker(judge_report: dict):
    """A function marking (†) the rows of attributes whose judge is unreliable, and whether any is."""
    doubtful = {name for name, r in judge_report["attributes"].items()
                if not r["balanced_accuracy"] >= UNRELIABLE_JUDGE}

    def marked(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.copy()
        frame.index = [f"{i} †" if i in doubtful else i for i in frame.index]
        frame.index.name = "attribute"
        return frame

    return marked, doubtful


# What preservation leaves out besides STGAN's conflicts, as evaluation.json's flip_rules names it
_IMPLIED = {"stgan": "", "generator": "; preservation also leaves out what the generator's consistency rules change "
                                      "with the flip, e.g. a bald head's hair colour, texture, fringe and hairline"}
_RULES = {
    "faithful": "only edits that bring most faces closer to the true counterfactual count; among those whose "
                "success reaches {t} %, the most faces closer × preservation, else the one the judge reads most "
                "(success × preservation); when no edit brings most faces closer, the best success × closer × "
                "preservation",
    "judge": "among the strengths whose success reaches {t} %, the best-preserving one (else the best success × "
             "preservation)",
}


def _pick_section(table: pd.DataFrame, summary: dict, config: EvalConfig, marked) -> list[str]:
    frame = marked(pick_frame(table))
    cells = frame[list(SCORES)].map(_pct)
    cells.insert(0, "edit", [f"{k} [{c}] ×{s:g}" if isinstance(k, str) else "" for k, c, s in
                             zip(frame["kind"], frame["composite"], frame["strength"])])
    cells.columns = ["edit", "success", "preservation", "success (held-out judge)", "preservation (held-out judge)",
                     "closer to truth", "inside change"]
    truth_note = ""
    if "truth_success" in frame:
        cells["success of the truth"] = frame["truth_success"].map(_pct)
        truth_note = (" `success of the truth`: the judge's success on the true counterfactuals of the faces with "
                      "ground truth, what a perfectly faithful edit would score; an edit read more often than the "
                      "truth exaggerates.")
    rule = _RULES[summary.get("strength_rule") or "judge"].format(t=f"{100 * config.target_success:.0f}")
    if _truth_capped(summary):
        rule += (" (the success asked is, per attribute, at most the judge's success on the true counterfactuals of "
                 "the validation faces)")
    return [
        "## The pick: each attribute's edit, chosen on the validation split",
        "",
        f"Chosen on {summary.get('strength_faces', '?')} faces of the {summary.get('strength_split', 'valid')} split "
        f"(never on the scored faces), per attribute among every kind, composite and strength in "
        f"{list(config.strength_candidates)}: {rule}. `edit` is kind [composite] ×strength. Success and preservation "
        "by the judge that chose, then by the held-out judge (another architecture, no part in any choice). "
        "`closer to truth`: faces whose edit is closer (PSNR) to the true counterfactual than its base is; `inside "
        "change`: the share of the edit's squared change inside the true change region." + truth_note,
        "",
        markdown_table(cells, str),
        "",
    ]


def _unseen_section(table: pd.DataFrame, marked) -> list[str]:
    """The pick on the attributes whose targets the training faces do not all show: how many faces ask for a label
    pair no training face has, and success and closer to the truth with and without them."""
    pick = picked_rows(table).set_index("attribute")
    if "unseen_target" not in pick or not (pick["unseen_target"] > 0).any():
        return []
    rows = pick[pick["unseen_target"] > 0]
    cells = pd.DataFrame({"faces whose target no training face shows": rows["unseen_target"].map(_pct),
                          "success": rows["success"].map(_pct), "success, the other faces": rows["success_seen"].map(_pct),
                          "closer to truth": rows["closer_to_cf"].map(_pct),
                          "closer to truth, the other faces": rows["closer_seen"].map(_pct)})
    return [
        "## The pick where the data never show the target",
        "",
        "A flip (with what it implies, as in preservation) can pair the flipped attribute with a label value that no "
        "training face has (a mustache or a beard on a woman, where every one in the data is a man's): no edit "
        "learned from the data has an example of such a face, and a judge sees one only among true counterfactuals "
        "(see how the judges were trained, above). Attributes with such targets, and the pick's scores with and "
        "without those faces:",
        "",
        markdown_table(marked(cells), str),
        "",
    ]


def _kinds_section(table: pd.DataFrame, summary: dict, config: EvalConfig, marked) -> list[str]:
    success, kept = per_method(table, "success"), per_method(table, "preservation")
    strength = per_method(table, "strength")
    cells = success.map(_pct) + " / " + kept.map(_pct) + "  ×" + strength.map(lambda x: f"{x:g}")
    means = cells.index.str.startswith("**mean")
    cells.loc[means] = (success.map(_pct) + " / " + kept.map(_pct)).loc[means]
    lines = [
        "## Every kind at its own strength (plain decoded edits): success / preservation (%) ×strength",
        "",
        markdown_table(marked(cells), str),
        "",
    ]
    if summary["counterfactual_images"]:
        lines += [
            f"## Ground truth (plain decoded edits): faces (%) closer to the true counterfactual than the "
            f"reconstruction, on {summary['counterfactual_images']} faces",
            "",
            markdown_table(per_method(table, "closer_to_cf"), _pct),
            "",
            "## Ground truth: share (%) of the edit's change inside the true change region",
            "",
            markdown_table(per_method(table, "inside_change"), _pct),
            "",
        ]
    lines += [
        "## Composites: every kind as a plain decoded edit [none], its masked change on the reconstruction [recon] "
        "and on the input [input], and those two with the change drawn where the training labels show the target "
        "[+context] (mean over attributes, %)",
        "",
        markdown_table(composite_means(table), _pct),
        "",
    ]
    return lines


def other_choices(table: pd.DataFrame, targets=(0.9, 0.93, 0.95)) -> pd.DataFrame:
    """The pick each rule and target would make, scored on the validation faces it is chosen on (optimistic: the
    winner of many options scores higher there than on new faces): one row per (rule, target), means over STGAN's 13
    and over all attributes."""
    candidates = table[table["subset"] == "candidate"]
    if candidates.empty:
        return pd.DataFrame()
    rules = [r for r in STRENGTH_RULES if r == "judge" or candidates["closer_to_cf"].notna().all()]
    truth = truth_rows(table, set(candidates["split"]))
    capped_too = set(candidates["attribute"]) <= set(truth["attribute"])  # the truth read on every choosing face
    rows = []
    for rule, capped in [(r, c) for r in rules for c in ((False, True) if r == "faithful" and capped_too else (False,))]:
        for target in targets:
            asked = capped_at_truth(target, truth) if capped else target
            picked = pick_edits(candidates, pick_strengths(candidates, asked, rule), asked, rule)
            at = pd.concat([candidates[(candidates["method"] == p["method"]) & (candidates["composite"] == p["composite"])
                                       & (candidates["attribute"] == a) & (candidates["strength"] == p["strength"])]
                            for a, p in picked.items()])
            stgan = at[at["attribute"].isin(STGAN_ATTRIBUTES)]
            rows.append({"rule": rule, "target": target, "capped": capped,
                         **{f"STGAN's 13: {c}": stgan[c].mean() for c in ("success", "preservation", "closer_to_cf")},
                         **{f"all: {c}": at[c].mean() for c in ("success", "preservation", "closer_to_cf")}})
    return pd.DataFrame(rows)


def _choices_section(table: pd.DataFrame, summary: dict, config: EvalConfig) -> list[str]:
    frame = other_choices(table)
    if frame.empty:
        return []
    in_force = ((frame["rule"] == summary.get("strength_rule")) & (frame["target"] == config.target_success)
                & (frame["capped"] == _truth_capped(summary)))
    frame.index = [f"{r} ≥ {100 * t:.0f} %" + (", at most the truth's" if c else "") + (" (in force)" if f else "")
                   for r, t, c, f in zip(frame["rule"], frame["target"], frame["capped"], in_force)]
    frame.index.name = "rule, target"
    return ["## What other choice rules would pick (scored on the validation faces, so optimistic)", "",
            "The same candidates, picked by each rule at a few target successes: how much judge success the faithful "
            "rule gives up for faces brought closer to the truth; \"at most the truth's\": each attribute's target "
            "capped at the judge's success on its true counterfactuals.", "",
            markdown_table(frame.drop(columns=["rule", "target", "capped"]), _pct), ""]


def _curve_section(table: pd.DataFrame, summary: dict) -> list[str]:
    curve = curve_points(table)
    if curve.empty:
        return []
    frame = curve.pivot(index="strength", columns="method", values=["success", "preservation"])
    methods = list(dict.fromkeys(curve["method"]))
    frame = frame[[(v, m) for v in ("success", "preservation") for m in methods]]
    frame.columns = [f"{m} {v}" for v, m in frame.columns]
    frame.index = [f"{x:g}" for x in frame.index]
    frame.index.name = "strength"
    return [f"## Strength curve (plain decoded edits, mean over attributes, on the {summary.get('strength_faces')} "
            "validation faces the choice was made on)", "", markdown_table(frame, _pct), ""]


def _precision_lines(summary: dict) -> list[str]:
    """What evaluating in bf16 changed, measured on the evaluated faces."""
    agreement = summary.get("bf16_agreement")
    if summary.get("precision") != "bf16" or not agreement:
        return [f"Precision: {summary.get('precision', 'fp32')}.", ""]
    return ["Precision: the decoder and the judges ran under bf16 autocast (latents and edits are fp32). On these "
            f"faces the bf16 reconstructions are {agreement['reconstruction_psnr_db']:.1f} dB from fp32 ones, and the "
            f"judge's bf16 verdicts on them agree with all-fp32 verdicts for {100 * agreement['verdicts']:.2f} % of "
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
        f"## Judges' accuracy (%): test split ({judge_report.get('num_test', '?')} images), and on the evaluated "
        "faces and their reconstructions",
        "",
    ]
    heldout = judge_report.get("heldout")
    for name, report in (("judge (chooses)", judge_report), ("held-out judge", heldout)):
        if report is not None:
            lines.append(f"{name}, {report.get('arch', '?')}: mean test accuracy {100 * report['mean_accuracy']:.1f} %, "
                         f"balanced {100 * report['mean_balanced_accuracy']:.1f} %.")
    jf = judge_report_frame(judge_report)[["accuracy", "balanced_accuracy", "positive_rate"]].copy()
    jf["on evaluated inputs"] = pd.Series(summary["judge_accuracy_on_inputs"])
    jf["on reconstructions"] = pd.Series(summary["judge_accuracy_on_reconstructions"])
    if heldout is not None:
        jf["held-out judge: accuracy"] = judge_report_frame(heldout)["accuracy"]
        jf["held-out judge: on reconstructions"] = pd.Series(summary.get("heldout_judge_accuracy_on_reconstructions", {}))
    return lines + ["", markdown_table(jf, _pct), ""]


def _flipped(judge_report: dict) -> str:
    """How many of the judge's training faces were true counterfactuals, as a clause ("" for none)."""
    flipped, n = judge_report.get("num_counterfactual", 0), judge_report.get("num_train", 0)
    if not flipped:
        return ""
    which = "every one of its" if flipped == n else f"{flipped} of its"
    return (f", {which} {n} faces shown as a true counterfactual with one attribute flipped at random, so the judges "
            "read an attribute apart from what goes with it in the data, a mustache on a woman included")


def write_markdown(table: pd.DataFrame, summary: dict, judge_report: dict, config: EvalConfig, path: Path) -> Path:
    """evaluation.md: the pick, every kind and composite, ground truth, the strength curve, fidelity, judges."""
    marked, doubtful = _marker(judge_report)
    n = summary["n_images"]
    lines = [
        f"# Edit evaluation of {summary.get('run_dir', '')}",
        "",
        f"{n} {summary['split']} faces (seed {config.seed}); 95 % half-width of a success rate at p = 0.5: "
        f"±{100 * binomial_halfwidth(0.5, n):.1f} %. Edits: one attribute flipped (STGAN's difference vector; the "
        f"edit also clears {config.edit_clears} alternatives{_IMPLIED[summary.get('flip_rules', 'stgan')]}), "
        f"`{config.mode}` mode. Judges: pixel-space CNNs trained on the cache's train split{_flipped(judge_report)} "
        "(accuracy below).",
        "",
    ]
    if doubtful:
        lines += [f"† the judge's balanced test accuracy on this attribute is below {100 * UNRELIABLE_JUDGE:.0f} %: "
                  "its verdicts, and so these scores, are doubtful (see the judge table below).", ""]
    if not picked_rows(table).empty:
        lines += _pick_section(table, summary, config, marked) + _unseen_section(table, marked)
    lines += _kinds_section(table, summary, config, marked) + _choices_section(table, summary, config)
    lines += _curve_section(table, summary) + _fidelity_and_judge_section(summary, judge_report)
    return atomic_write_text("\n".join(lines), path)


def write_evaluation(run: Run, table: pd.DataFrame, summary: dict, judge_report: dict, config: EvalConfig) -> list[Path]:
    """Every output of an evaluation into the run folder, as one set (`Run.writing`): evaluation.csv/.md/.json, its
    config, the eval-* figures."""
    with run.writing(Run.EVALUATION) as written:
        written += [atomic_write_text(table.to_csv(index=False), run.path(Run.EVAL_CSV)),
                    write_markdown(table, summary, judge_report, config, run.path(Run.EVAL_MD)),
                    atomic_write_json(summary, run.path(Run.EVAL_JSON)),
                    atomic_write_json(dataclasses.asdict(config), run.path(Run.EVAL_CONFIG))]
        written += plot_evaluation(table, run.figures_dir)
    return written


def headline_means(table: pd.DataFrame) -> pd.DataFrame:
    """Mean scores per kind [composite] at the chosen strengths and of the pick, over all attributes and over STGAN's
    13 (columns prefixed stgan_)."""
    at = chosen_rows(table, None)
    at = at.assign(kind=np.where(at["method"] == PICKED, PICKED, at["method"] + " [" + at["composite"] + "]"))
    columns = [c for c in SCORES if c in at.columns]
    frame = at.groupby("kind", sort=False)[columns].mean()
    stgan = at[at["attribute"].isin(STGAN_ATTRIBUTES)].groupby("kind", sort=False)[columns].mean()
    return frame.join(stgan.add_prefix("stgan_"))


def headline_lines(table: pd.DataFrame, judge_report: dict | None = None) -> list[str]:
    """The console summary: the pick by both judges and against the truth, over all attributes and STGAN's 13; a
    caveat first when the judge is unreliable on most of the scored attributes (its numbers then mean little)."""
    frame = headline_means(table)
    if PICKED not in frame.index:
        return []
    r, lines = frame.loc[PICKED], []
    if judge_report is not None:
        scored = set(table["attribute"])
        doubtful = _marker(judge_report)[1] & scored
        if 2 * len(doubtful) > len(scored):
            lines.append(f"CAVEAT: the judge's balanced test accuracy is under {100 * UNRELIABLE_JUDGE:.0f} % on "
                         f"{len(doubtful)} of the {len(scored)} scored attributes: the numbers below say little (a "
                         "longer-trained judge or more data make them meaningful)")
    lines.append("the pick (chosen on validation) — success / preservation by the judge, by the held-out judge; "
                 "closer to the true counterfactual; change inside its region:")
    for label, p in (("all attributes", ""), ("STGAN's 13", "stgan_")):
        lines.append(f"  {label:>14}: {_pct(r[p + 'success'])} / {_pct(r[p + 'preservation'])} %; "
                     f"{_pct(r[p + 'success_heldout'])} / {_pct(r[p + 'preservation_heldout'])} %; "
                     f"closer {_pct(r[p + 'closer_to_cf'])} %; inside {_pct(r[p + 'inside_change'])} %")
    truth = truth_rows(table)
    if len(truth):
        stgan = truth[truth["attribute"].isin(STGAN_ATTRIBUTES)]
        lines.append("the true counterfactuals themselves, as the same judges read them: "
                     + "; ".join(f"{label} {_pct(t['success'].mean())} / {_pct(t['preservation'].mean())} %, "
                                 f"{_pct(t['success_heldout'].mean())} / {_pct(t['preservation_heldout'].mean())} %"
                                 for label, t in (("all", truth), ("STGAN's 13", stgan)) if len(t)))
    return lines


def results_markdown(run: Run) -> str:
    """The README's results block from a run's evaluation (and its demo.json when the demo made it): the pick over
    STGAN's 13 and all attributes by both judges and against the truth, what each composite and the best plain kind
    give, the setup and the wall time. `python -m experiments.results --run RUN` prints it."""
    summary, config = run.evaluation_summary(), run.evaluation_summary(Run.EVAL_CONFIG)
    if summary is None or config is None:
        raise FileNotFoundError(f"{run.path(Run.EVAL_JSON)} missing: evaluate the run first with "
                                f"`python -m experiments.evaluate --run {run.dir}`")
    table = pd.read_csv(run.path(Run.EVAL_CSV))
    means = headline_means(table)
    rows = {f"the pick, {scope}": means.loc[PICKED, [p + c for c in SCORES]].set_axis(SCORES)
            for scope, p in (("STGAN's 13", "stgan_"), ("all 40", ""))} if PICKED in means.index else {}
    pick = picked_rows(table)
    stgan_pick = pick[pick["attribute"].isin(STGAN_ATTRIBUTES)]
    if "success_seen" in pick and (stgan_pick["unseen_target"] > 0).any():
        row = pd.Series(float("nan"), index=list(SCORES))
        row[["success", "closer_to_cf"]] = stgan_pick[["success_seen", "closer_seen"]].mean().to_numpy()
        rows["the pick, STGAN's 13, only faces whose target the training faces show"] = row
    truth = truth_rows(table)
    truth = truth[truth["attribute"].isin(STGAN_ATTRIBUTES)]
    if len(truth):  # the ceiling a faithful edit meets: the judges' verdicts on the truth itself
        rows["the true counterfactuals themselves, STGAN's 13"] = truth[list(SCORES)].mean()
    for composite in COMPOSITES:  # every kind under one composite: the best kind's plain numbers
        kinds = means[means.index.str.endswith(f"[{composite}]")]
        if len(kinds):
            best = kinds["stgan_success"].idxmax()
            row = kinds.loc[best, [f"stgan_{c}" for c in SCORES]].set_axis(SCORES)
            row[["success_heldout", "preservation_heldout"]] = float("nan")  # the held-out judge scores the pick only
            rows[f"best single kind under {composite} ({best.split(' [')[0]}), STGAN's 13"] = row
    frame = pd.DataFrame(rows).T
    frame.columns = ["success", "preservation", "success (held-out judge)", "preservation (held-out judge)",
                     "closer to the truth", "change inside its region"]
    frame.index.name = "edits (test faces)"
    judge, heldout = summary.get("judge", {}), summary.get("heldout_judge", {})
    capped = (" (per attribute at most what the judge reads on the true counterfactuals)"
              if _truth_capped(summary) else "")
    lines = [
        f"Run `{run.dir.name}`: {summary['n_images']} {summary['split']} faces ({summary['counterfactual_images']} with "
        f"ground truth); reconstruction PSNR {summary['fidelity']['psnr']:.2f} dB; judges {100 * judge.get('mean_accuracy', float('nan')):.1f} % "
        f"and {100 * heldout.get('mean_accuracy', float('nan')):.1f} % mean test accuracy"
        f"{' (trained on true counterfactuals, one attribute flipped)' if judge.get('num_counterfactual') else ''}"
        "; the choice made on "
        f"{summary.get('strength_faces', '?')} validation faces by the {summary.get('strength_rule')} rule at "
        f"{100 * config['target_success']:.0f} % target success{capped}.",
        "",
        markdown_table(frame, _pct),
    ]
    demo = demo_record(run)
    if demo is not None:
        machine, seconds = demo["machine"], demo["seconds"]
        stages = ", ".join(f"{name.split('. ', 1)[-1]} {s:.0f} s" for name, s in seconds.items() if name != "total")
        sizes = demo.get("sizes", {})
        made = (f"{sizes['faces']} faces at {sizes['size']} px, {sizes['epochs']} epochs" if sizes else "")
        lines += ["", f"`python -m experiments.demo` ({demo['preset']} preset{'; ' + made if made else ''}) on "
                  f"{machine['cpu_count']} cores of an {machine['cpu_model']} "
                  f"({', '.join(machine.get('cpu_bf16', [])) or 'no native bf16'}): pipeline {seconds['total']:.0f} s "
                  f"({stages})."]
    return "\n".join(lines) + "\n"


def demo_record(run: Run) -> dict | None:
    """demo.json when the demo made the run's current evaluation (its timings and sizes then describe it); None
    when there is none, or, said so, when the run has been evaluated again since."""
    path = run.path(DEMO_FILE)
    if not path.is_file():
        return None
    try:
        demo = json.loads(path.read_text())
    except ValueError as e:
        raise ValueError(f"{path}: not valid JSON ({e}); run the demo again to remake it") from None
    if demo.get("evaluation_sha256") != file_sha256(run.path(Run.EVAL_JSON)):
        warnings.warn(f"{path} timed an earlier evaluation of {run.dir} than {Run.EVAL_JSON} holds now: its wall "
                      "times and sizes are left out", stacklevel=2)
        return None
    return demo
