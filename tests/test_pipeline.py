"""The whole demo, end to end, on a tiny procedural data set: every stage's artifacts exist and agree."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch

from attributes.artifact import AttributeDirections
from attributes.composite import COMPOSITES
from attributes.fit import FitConfig
from data.io import atomic_write_json
import evaluation.presets
from evaluation import EvalConfig, FiguresConfig
from evaluation.presets import DemoConfig, resolve
from evaluation.protocol import STGAN_ATTRIBUTES
from experiments import demo
from models.classifier import JudgeConfig


@pytest.mark.slow
def test_demo_end_to_end_on_tiny_procedural_faces(tmp_path, monkeypatch):
    monkeypatch.delenv("CELEBA_ROOT", raising=False)
    config = DemoConfig(
        quick=True, generate=300, size=32, epochs=1, device="cpu", progress=False,
        synthetic_root=str(tmp_path / "datasets" / "synthetic"), cache_dir=str(tmp_path / "cache" / "synthetic-32"),
        runs_root=str(tmp_path / "runs"), fit=FitConfig(min_count=5, probe_jobs=1), figures=FiguresConfig(faces=3),
        evaluate=EvalConfig(eval_faces=16, counterfactual_faces=4, strength_candidates=(1.0, 2.0), strength_faces=12,
                            progress=False, judge=JudgeConfig(epochs=2, widths=(8, 16, 32)),
                            second_judge=JudgeConfig(arch="residual", epochs=2, widths=(8, 16, 32))),
    )
    run = demo.main(config)

    cache = tmp_path / "cache" / "synthetic-32"
    assert (tmp_path / "datasets" / "synthetic" / "celeba" / "synthetic_factors.csv").is_file()
    for name in ("meta.json", "images.npy", "annotations.csv"):
        assert (cache / name).is_file(), name
    assert {p.name.split("-")[1] for p in cache.glob("judge-*.pt")} == {"plain", "residual"}  # one file per judge
    assert run.parent == tmp_path / "runs"
    methods = set(FitConfig().methods)
    assert {"mean", "probe", "conditional"} <= methods
    for name in ("config.json", "checkpoint.pt", "metrics.csv", "evaluation.csv", "evaluation.md", "evaluation.json",
                 *(f"directions-{method}.pt" for method in methods)):
        assert (run / name).is_file(), name

    covered = set()
    for method in methods:
        covered |= set(AttributeDirections.load(run / f"directions-{method}.pt").names)
    table = pd.read_csv(run / "evaluation.csv")
    assert set(table["attribute"]) == covered  # every attribute that has a direction is evaluated
    hair_kinds = {m for m in table["method"] if m.endswith("+hair_subspace")}
    assert "regression" in methods  # so the interaction kind is fitted on its labels and scored
    assert set(table["method"]) == methods | hair_kinds | {"interaction", "transport", "picked", "truth"}
    assert "mean+hair_subspace" in hair_kinds
    truth = table[table["method"] == "truth"]  # the judges' verdicts on the true counterfactuals, both splits
    assert (truth["subset"] == "truth").all() and len(truth) == 2 * len(covered)
    assert truth.groupby("split")["n_cf"].first().to_dict() == {"test": 4, "valid": 12}
    table = table[table["method"] != "truth"]
    picked = table[table["method"] == "picked"]
    assert (picked["subset"] == "chosen").all() and set(picked["attribute"]) == covered
    for _, r in picked.iterrows():  # a copy of the picked kind's own chosen-strength row
        own = table[(table["method"] == r["picked_from"]) & (table["attribute"] == r["attribute"])
                    & (table["composite"] == r["composite"]) & (table["subset"] == "chosen")]
        assert len(own) == 1 and own["success"].item() == r["success"] and own["strength"].item() == r["strength"]
    assert set(table["strength"]) == {1.0, 2.0}
    # a hair-subspace kind differs from its base on the hair colours only (in context too: the base kind moves a face
    # into its context)
    mean, subspace = (table[table["method"] == m].set_index(["attribute", "composite", "strength", "subset"])
                      for m in ("mean", "mean+hair_subspace"))
    off_hair = ~mean.index.get_level_values("attribute").str.endswith("_Hair")
    pd.testing.assert_frame_equal(mean[off_hair].drop(columns="method"), subspace[off_hair].drop(columns="method"))
    assert set(subspace.index.get_level_values("composite")) == set(COMPOSITES)
    assert table["success"].between(0, 1).all() and table["preservation"].between(0, 1).all()
    # faces whose target no training face shows; where there are none, the scores on "the other faces" are all of them
    assert table["unseen_target"].between(0, 1).all() and (table["unseen_target"] > 0).any()
    seen_all = table[table["unseen_target"] == 0]
    np.testing.assert_allclose(seen_all["success_seen"], seen_all["success"])
    tested = table[table["split"] == "test"]
    assert (tested["n"] == 16).all() and (table[table["split"] == "valid"]["n"] == 12).all()
    assert table["psnr_edit_vs_cf"].notna().all() and (tested["n_cf"] == 4).all()  # ground truth on procedural faces
    md = (run / "evaluation.md").read_text()
    for attribute in covered:
        assert f"| {attribute} |" in md
    assert "| inside change | success of the truth |" in md  # the pick's table: what the judge reads on the truth
    summary = json.loads((run / "evaluation.json").read_text())
    assert summary["synthetic_root"] is not None
    assert summary["interaction"]["pair_ridge"] == 50.0  # what edit_kind checks when it rebuilds the kind
    assert summary["transport"]["implies"] == "generator"  # the procedural rules: a bald head has no hair colour
    assert set(summary["success_targets"]) == covered and max(summary["success_targets"].values()) <= 0.9
    # both judges learnt from true counterfactuals of their training faces, and evaluation.md says so
    flipped = [summary[j]["num_counterfactual"] / summary[j]["num_train"] for j in ("judge", "heldout_judge")]
    assert flipped == [1.0, 1.0] and "shown as a true counterfactual" in md

    figures = run / "figures"
    for stem in ("edit-grid", "strength-sweep", "multi-edit", "interpolation", "probe-accuracy", "direction-cosine",
                 "curves", "prior-samples", "eval-tradeoff", "eval-success", "eval-ground-truth", "eval-locality",
                 "locality-faces"):
        assert (figures / f"{stem}.png").is_file() and (figures / f"{stem}.csv").is_file(), stem

    # the README's results block: the demo's own wall times while demo.json timed this evaluation, not after another
    from evaluation.report import results_markdown
    from pipeline.run import Run

    block = results_markdown(Run(run))
    assert "`python -m experiments.demo` (quick preset; 300 faces at 32 px, 1 epochs)" in block
    picked = table[(table["method"] == "picked") & table["attribute"].isin(STGAN_ATTRIBUTES)]
    seen_row = "| the pick, STGAN's 13, only faces whose target the training faces show | "
    assert (seen_row in block) == bool((picked["unseen_target"] > 0).any())
    assert "| the true counterfactuals themselves, STGAN's 13 | " in block
    assert "mean test accuracy (trained on true counterfactuals, one attribute flipped)" in block
    evaluated_again = json.loads((run / "evaluation.json").read_text()) | {"seconds": 1.0}
    kept = [run / n for n in ("evaluation.csv", "evaluation.md", "evaluation-config.json")] + sorted(figures.glob("eval-*"))
    with Run(run).writing(Run.EVALUATION) as written:
        written += [atomic_write_json(evaluated_again, run / "evaluation.json"), *kept]
    with pytest.warns(UserWarning, match="demo.json timed an earlier evaluation"):
        block = results_markdown(Run(run))
    assert "Run `" in block and "experiments.demo" not in block


def test_demo_presets_follow_the_device_and_keep_their_caches_apart(monkeypatch):
    """Procedural faces on a CUDA GPU get the CelebA-sized preset; on CPU the 2-core one; each set its own cache."""
    cpu_preset, cpu = resolve(DemoConfig(device="cpu"))
    assert cpu_preset == "synthetic" and cpu.prepare.generate == 10000
    assert (cpu.prepare.synthetic_root, str(cpu.prepare.out_dir)) == ("datasets/synthetic", "cache/synthetic-64")
    quick_preset, quick = resolve(DemoConfig(device="cpu", quick=True))
    assert quick_preset == "quick" and str(quick.prepare.out_dir) == "cache/synthetic-quick-32"
    assert (quick.train.model.latent_dim, quick.train.batch_size, cpu.train.model.latent_dim) == (64, 32, 128)
    assert resolve(DemoConfig(device="cpu", quick=True, epochs=3))[1].train.epochs == 3  # a given size wins

    monkeypatch.setattr(evaluation.presets, "pick_device", lambda name="auto": torch.device("cuda"))
    gpu_preset, gpu = resolve(DemoConfig(size=128))
    assert gpu_preset == "synthetic-gpu" and gpu.prepare.generate == 202_599 and gpu.train.batch_size == 256
    assert str(gpu.prepare.out_dir) == "cache/synthetic-celeba-size-128" != str(cpu.prepare.out_dir)
    _, own = resolve(DemoConfig(synthetic_root="/data/faces", generate=500))
    assert own.prepare.generate == 500 and str(own.prepare.out_dir) == "cache/faces-64"
    monkeypatch.setenv("CELEBA_ROOT", "/data/celeba")
    celeba_preset, celeba = resolve(DemoConfig())
    assert celeba_preset == "celeba" and str(celeba.prepare.out_dir) == "cache/celeba-64"


@pytest.mark.slow
def test_demo_on_real_celeba_files_finishes_with_the_cpu_preset(tmp_path, monkeypatch):
    """CelebA's official Anno/Eval/Img layout (procedural faces copied into it, as a user's download would be laid
    out) through the real-data CPU preset, sizes cut down, to evaluation.md: no ground truth, so the judge's rule."""
    import shutil

    from data.synthetic import generate_synthetic_celeba

    generated = generate_synthetic_celeba(tmp_path / "generated", 240, seed=3, workers=1)
    celeba = tmp_path / "celeba"
    (celeba / "Anno").mkdir(parents=True)
    (celeba / "Eval").mkdir()
    (celeba / "Img").mkdir()
    shutil.copytree(generated / "img_align_celeba", celeba / "Img" / "img_align_celeba")
    for name in ("list_attr_celeba.txt", "list_bbox_celeba.txt", "list_landmarks_align_celeba.txt", "identity_CelebA.txt"):
        shutil.copy(generated / name, celeba / "Anno" / name)
    shutil.copy(generated / "list_eval_partition.txt", celeba / "Eval" / "list_eval_partition.txt")
    monkeypatch.chdir(tmp_path)
    preset, config = resolve(DemoConfig(celeba_root=str(celeba), device="cpu", size=32, epochs=1, eval_faces=16,
                                        progress=False, figures=FiguresConfig(faces=2)))
    assert preset == "celeba-cpu"
    # faces read as real CelebA: no ground truth scored, and judges that learn from the faces as they are, even
    # where the files are procedural ones with their factors beside them
    assert config.evaluate.counterfactual_faces == 0 and config.evaluate.judge_counterfactuals == 0
    small = dict(strength_faces=12, judge=JudgeConfig(epochs=1, widths=(8, 16, 32)),
                 second_judge=JudgeConfig(arch="residual", epochs=1, widths=(8, 16, 32)))
    config = dataclasses.replace(config, evaluate=dataclasses.replace(config.evaluate, **small),
                                 fit=dataclasses.replace(config.fit, min_count=3, probe_jobs=1))
    run = demo.main(config)
    summary = json.loads((run / "evaluation.json").read_text())
    assert summary["synthetic_root"] is None and summary["strength_rule"] == "judge"
    assert summary["counterfactual_images"] == 0 and summary["picked"]
    assert summary["judge"]["num_counterfactual"] == 0  # no ground truth: the judges learn from the faces alone
    assert "The pick" in (run / "evaluation.md").read_text()
