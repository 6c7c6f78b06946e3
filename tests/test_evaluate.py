"""evaluation: success/preservation computed right on a hand-made case, a real tiny run end to end, stale inputs."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY_ATTRIBUTES, TINY_VAE, write_tiny_cache
from torch import nn

from attributes.artifact import AttributeDirections
from data.cache import load_cache, to_float_images, write_cache
from evaluation.counterfactuals import render_counterfactuals, synthetic_root
from evaluation.edits import EvalConfig, evaluate_edits, flip_rules
from evaluation.protocol import flip_changes
from experiments import evaluate
from experiments.evaluate import EvaluateScript
from pipeline.run import Run, StaleArtifactError
from models.accel import native_bf16
from models.classifier import JudgeConfig
from models.metrics import psnr

SIZE = 16
NAMES = ["A", "B", "C", "D"]  # one image quadrant each


def quadrant_means(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, 16, 16) -> (N, 4) mean of each quadrant (top-left, top-right, bottom-left, bottom-right)."""
    h = SIZE // 2
    return torch.stack([x[:, :, :h, :h].mean((1, 2, 3)), x[:, :, :h, h:].mean((1, 2, 3)),
                        x[:, :, h:, :h].mean((1, 2, 3)), x[:, :, h:, h:].mean((1, 2, 3))], dim=1)


class QuadrantVAE(nn.Module):
    """Stub VAE with a 4-d latent: z_k = 4 x quadrant k's mean; decode paints quadrant k with z_k / 4."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))  # so the model has a device

    def encode(self, x):
        mu = 4 * quadrant_means(x)
        return mu, torch.zeros_like(mu)

    def decode(self, z):
        h = SIZE // 2
        out = torch.empty(z.shape[0], 3, SIZE, SIZE)
        for k, (r, c) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
            out[:, :, r * h : (r + 1) * h, c * h : (c + 1) * h] = (z[:, k] / 4)[:, None, None, None]
        return out + 0 * self.dummy


class QuadrantJudge(nn.Module):
    """Stub judge: attribute k is present when quadrant k is brighter than mid-grey."""

    attribute_names = NAMES

    def predict(self, images, batch_size=512):
        return quadrant_means(images.float()) > 0


def write_quadrant_cache(directory: Path, labels: np.ndarray, strong: np.ndarray, valid: int = 0) -> Path:
    """Quadrant k at pixel value +0.25 (label 1) or -0.25 (label 0); `strong` rows carry +0.75 in quadrant A; the
    first `valid` rows are the valid split, the rest the test split."""
    n = len(labels)
    values = np.where(labels, 0.25, -0.25)
    values[strong, 0] = 0.75
    images = np.empty((n, 3, SIZE, SIZE), dtype=np.uint8)
    h = SIZE // 2
    for k, (r, c) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        images[:, :, r * h : (r + 1) * h, c * h : (c + 1) * h] = np.round((values[:, k] + 1) * 127.5)[:, None, None, None]
    table = pd.DataFrame(labels.astype(bool), columns=NAMES)
    table.index = pd.Index([f"{i + 1:06d}.jpg" for i in range(n)], name="image_id")
    table["partition"] = ["valid"] * valid + ["test"] * (n - valid)
    meta = {"size": SIZE, "crop": None, "source_root": str(directory), "layout": "fixture", "file_count": n,
            "skipped": [], "draft": False}
    return write_cache(directory, table, meta, images)


def axis_directions(step: float = 2.0) -> AttributeDirections:
    k = len(NAMES)
    return AttributeDirections(
        names=NAMES, vectors=torch.eye(k), steps=torch.full((k,), step), method="mean",
        pos_mean=torch.eye(k), neg_mean=-torch.eye(k), pos_count=torch.ones(k, dtype=torch.int64),
        neg_count=torch.ones(k, dtype=torch.int64),
    )


def quadrant_config(**kw) -> EvalConfig:
    return EvalConfig(**{**dict(progress=False, batch_size=16, second_judge=None, composites=("none",)), **kw})


def test_success_and_preservation_on_a_hand_made_case(tmp_path):
    rng = np.random.default_rng(1)
    n = 80
    labels = rng.random((n, 4)) < 0.5
    labels[40:44, 0] = True
    strong = np.zeros(n, dtype=bool)
    strong[40:44] = True  # test faces far on the positive side of A: one step (2.0) brings them from 3 to 1
    cache = load_cache(write_quadrant_cache(tmp_path / "cache", labels, strong, valid=40))
    config = quadrant_config(eval_faces=40, strength_candidates=(0.25, 1.0))
    table, summary = evaluate_edits(QuadrantVAE(), cache, {"mean": axis_directions()}, QuadrantJudge(), config,
                                    torch.device("cpu"))
    candidates = table[table["subset"] == "candidate"].set_index(["attribute", "strength"])
    assert set(candidates["split"]) == {"valid"} and (candidates["n"] == 40).all()
    # on the validation faces, a quarter of a step never crosses the boundary and a whole step always does
    assert (candidates.xs(0.25, level="strength")["success"] == 0).all()
    assert (candidates.xs(1.0, level="strength")["success"] == 1).all()
    assert summary["strength_rule"] == "judge" and summary["chosen_strengths"]["mean"]["none"] == dict.fromkeys(NAMES, 1.0)
    tested = table[(table["subset"] == "chosen") & (table["method"] == "mean")].set_index("attribute")
    assert set(tested["split"]) == {"test"} and (tested["n"] == 40).all()
    # strength 1 moves each latent coordinate from +-1 to -+1: every flip succeeds except the strong A rows
    assert tested.loc["A", "success"] == pytest.approx(1 - strong.sum() / 40)
    for name in "BCD":
        assert tested.loc[name, "success"] == 1.0
    # axis-aligned moves touch no other quadrant
    assert (table["preservation"] == 1.0).all()
    assert table["psnr_edit_vs_cf"].isna().all()  # no procedural factors: no ground truth
    assert summary["fidelity"]["psnr"] > 35  # the stub reconstructs up to uint8 rounding
    assert all(v == 1.0 for v in summary["judge_accuracy_on_inputs"].values())


def test_the_truth_is_scored_as_the_judge_reads_it():
    from evaluation.counterfactuals import GroundTruth
    from evaluation.scoring import TRUTH, Edit, Faces, score_truth

    n = 4
    truth = np.zeros((n, 4), dtype=bool)
    images = torch.full((n, 3, SIZE, SIZE), -0.25)  # every quadrant dark: no attribute
    judge = QuadrantJudge()
    faces = Faces(rows=np.arange(n), truth=truth, mu=4 * quadrant_means(images), images=images, recon=images,
                  verdicts={"judge": {"input": judge.predict(images).numpy(), "recon": judge.predict(images).numpy()}})
    h = SIZE // 2
    counterfactual = images.clone()
    counterfactual[:3, :, :h, :h] = 0.25  # three faces' true A reads as A
    counterfactual[3, :, :h, :h] = -0.1  # the fourth's truth is too faint for the judge
    counterfactual[0, :, :h, h:] = 0.25  # and the first's truth also changes B
    target = truth.copy()
    target[:, 0] = True
    edit = Edit("mean", None, "A", target, target == truth, (), unseen=np.array([False, False, False, True]))
    record = score_truth(edit, faces, {"judge": judge}, GroundTruth(counterfactual, torch.ones(n, 1, SIZE, SIZE,
                                                                                             dtype=torch.bool), {}))
    assert record["method"] == record["subset"] == TRUTH and record["n"] == record["n_cf"] == n
    assert record["success"] == 0.75 and record["preservation"] == pytest.approx(11 / 12)
    assert record["success_seen"] == 1.0 and record["unseen_target"] == 0.25
    assert math.isnan(record["success_heldout"]) and math.isnan(record["closer_to_cf"])


def test_the_faithful_rule_asks_no_more_success_than_the_truth_gets():
    from evaluation.edits import success_targets

    scores = pd.DataFrame({"subset": ["truth", "truth", "candidate"], "attribute": ["A", "B", "A"],
                           "success": [0.35, 0.99, 0.5]})
    assert success_targets(scores, EvalConfig(target_success=0.93), "faithful") == {"A": 0.35, "B": 0.93}
    assert success_targets(scores, EvalConfig(target_success=0.93, truth_target=False), "faithful") == 0.93
    assert success_targets(scores, EvalConfig(target_success=0.93), "judge") == 0.93  # real data: no truth to read
    assert success_targets(scores[scores["subset"] != "truth"], EvalConfig(target_success=0.93), "faithful") == 0.93


def test_preservation_counts_judge_changes_on_other_attributes(tmp_path):
    labels = np.zeros((10, 4), dtype=bool)
    cache = load_cache(write_quadrant_cache(tmp_path / "cache", labels, np.zeros(10, dtype=bool)))
    dirs = axis_directions()
    # A's direction also drags quadrant B: flipping A flips the judge's B verdict on every image
    dirs.vectors[0] = torch.tensor([1.0, 1.0, 0.0, 0.0]) / math.sqrt(2)
    dirs.steps[0] = 2 * math.sqrt(2)
    config = quadrant_config(eval_faces=10, default_strength=1.0)
    with pytest.warns(UserWarning, match="valid split is empty"):
        table, _ = evaluate_edits(QuadrantVAE(), cache, {"mean": dirs}, QuadrantJudge(), config, torch.device("cpu"))
    row = table.set_index("attribute").loc["A"]
    assert row["success"] == 1.0 and row["strength"] == 1.0
    assert row["preservation"] == pytest.approx(2 / 3)  # B changed, C and D kept


def test_choosing_never_reads_the_test_split(tmp_path):
    """Every image and latent the choice touches is a validation face; the test faces are read afterwards."""
    from evaluation.edits import Setting, choose
    from evaluation.decoding import AutocastJudge
    from evaluation.scoring import JUDGE

    rng = np.random.default_rng(2)
    labels = rng.random((60, 4)) < 0.5
    cache = load_cache(write_quadrant_cache(tmp_path / "cache", labels, np.zeros(60, dtype=bool), valid=30))
    read: list[int] = []

    class RowSpy:
        """The cache's images, recording every row read."""

        def __init__(self, images):
            self.images, self.shape = images, images.shape

        def __len__(self):
            return len(self.images)

        def __getitem__(self, rows):
            read.extend(np.atleast_1d(np.arange(len(self.images))[rows]).tolist())
            return self.images[rows]

    cache.images = RowSpy(cache.images)
    config = quadrant_config(eval_faces=30, strength_candidates=(0.5, 1.0), composites=("none", "recon", "input"))
    judge = AutocastJudge(QuadrantJudge(), torch.device("cpu"), False)
    setting = Setting(QuadrantVAE(), cache, {JUDGE: judge}, {"mean": axis_directions()}, {}, NAMES, config,
                      torch.device("cpu"), None, None)
    chosen, picked, _, _, candidates = choose(setting)
    valid = set(cache.split_indices("valid").tolist())
    assert read and set(read) <= valid and set(picked) == set(NAMES)
    assert set(candidates["composite"]) == {"none", "recon", "input"} and (candidates["n"] == 30).all()
    read.clear()
    evaluate_edits(QuadrantVAE(), cache, {"mean": axis_directions()}, QuadrantJudge(), config, torch.device("cpu"))
    assert set(read) & set(cache.split_indices("test").tolist())  # the evaluation itself reads the test faces


def test_flip_changes_follows_stgan_conflicts():
    names = ["Bald", "Bangs", "Black_Hair", "Blond_Hair", "Brown_Hair", "Male"]
    source = np.array([[0, 1, 1, 0, 0, 1], [0, 0, 0, 1, 0, 0]], dtype=bool)
    target = flip_changes("Blond_Hair", source, names)
    assert target[0].tolist() == [False, True, False, True, False, True]  # blond set -> black cleared
    assert target[1].tolist() == [False, False, False, False, False, False]  # blond cleared, nothing else
    assert flip_changes("Bald", source, names)[0].tolist() == [True, False, True, False, False, True]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A real (tiny, barely trained) run, made through the libraries: tiny cache -> train -> fit directions."""
    from attributes.fit import FitConfig
    from pipeline.training import TrainConfig, train

    root = tmp_path_factory.mktemp("run")
    cache_dir = write_tiny_cache(root / "cache", n=160, size=32)
    run = train(TrainConfig(cache_dir=str(cache_dir), epochs=1, batch_size=32, model=TINY_VAE,
                            runs_root=str(root / "runs"), device="cpu", progress=False))
    run.fit_directions(FitConfig(min_count=5, probe_jobs=1, methods=("mean", "probe", "conditional")), progress=False)
    return run.dir


TINY_JUDGES = dict(judge=JudgeConfig(widths=(8, 16), epochs=2, batch_size=32),
                   second_judge=JudgeConfig(arch="residual", widths=(8, 16), epochs=2, batch_size=32))


def test_main_writes_csv_md_and_figures(tiny_run):
    config = EvalConfig(eval_faces=16, default_strength=1.0, progress=False, strength_candidates=(0.5, 2.0, 4.0),
                        strength_faces=12, **TINY_JUDGES)
    assert evaluate.main(EvaluateScript(run=str(tiny_run), device="cpu", evaluation=config)) == tiny_run
    table = pd.read_csv(tiny_run / "evaluation.csv")
    assert list(table.columns[:13]) == ["method", "composite", "attribute", "strength", "subset", "success",
                                        "preservation", "success_heldout", "preservation_heldout", "psnr_edit_vs_cf",
                                        "psnr_base_vs_cf", "closer_to_cf", "inside_change"]
    assert set(table["method"]) == {"mean", "probe", "conditional", "picked"}
    assert set(table["composite"]) == {"none", "recon", "input", "recon+context", "input+context"}
    assert set(table["attribute"]) <= set(TINY_ATTRIBUTES) and "Male" in set(table["attribute"])
    assert table["success"].between(0, 1).all() and table["preservation"].between(0, 1).all()
    # the validation faces at every candidate strength: the choice's input and the strength curve
    candidates = table[table["subset"] == "candidate"]
    assert set(candidates["split"]) == {"valid"} and set(candidates["strength"]) == {0.5, 2.0, 4.0}
    # every kind and composite once on all 16 test faces at its own strength, chosen on the valid faces
    chosen = table[(table["subset"] == "chosen") & (table["method"] != "picked")]
    assert set(chosen["split"]) == {"test"} and set(chosen["n"]) == {16}
    assert len(chosen) == len(candidates) / 3
    summary = json.loads((tiny_run / "evaluation.json").read_text())
    assert summary["strength_split"] == "valid" and summary["strength_faces"] > 0
    assert summary["strength_rule"] == "judge"  # real (not procedural) data: no ground truth to be faithful to
    for _, r in chosen.iterrows():
        assert r["strength"] == summary["chosen_strengths"][r["method"]][r["composite"]][r["attribute"]]
    # per attribute, one kind and composite at its chosen strength, scored by the held-out judge as well
    picked = table[table["method"] == "picked"]
    assert set(picked["attribute"]) == set(chosen["attribute"]) and len(picked) == len(set(chosen["attribute"]))
    assert picked["success_heldout"].between(0, 1).all()
    is_pick = [summary["picked"][a]["method"] == m and summary["picked"][a]["composite"] == c
               for m, c, a in zip(chosen["method"], chosen["composite"], chosen["attribute"])]
    assert chosen["success_heldout"].notna().tolist() == is_pick  # the held-out judge scores the pick only
    for _, r in picked.iterrows():
        assert summary["picked"][r["attribute"]] == {"method": r["picked_from"], "composite": r["composite"],
                                                    "strength": r["strength"]}
    md = (tiny_run / "evaluation.md").read_text()
    assert "The pick" in md and "held-out judge" in md and "own strength" in md and "Composites" in md
    for method in ("mean", "probe", "conditional"):
        assert method in md
    assert "| **mean** |" in md and "Judges' accuracy" in md and "PSNR" in md
    assert 0 < summary["fidelity"]["psnr"] < 60 and summary["synthetic_root"] is None
    assert summary["flip_rules"] == "stgan"  # real (not procedural) data: STGAN's conflict rules
    # two judge files, one per config, and the held-out judge is the residual one
    assert Path(summary["judge"]["path"]).name.startswith("judge-plain-")
    assert Path(summary["heldout_judge"]["path"]).name.startswith("judge-residual-")
    # the precision is said, and where it is bf16, what it changed against fp32 on the same faces
    assert summary["precision"] == ("bf16" if native_bf16("cpu") else "fp32")
    assert "Precision:" in md
    if native_bf16("cpu"):
        agreement = summary["bf16_agreement"]
        assert 0.9 < agreement["verdicts"] <= 1 and agreement["reconstruction_psnr_db"] > 30
    for stem in ("eval-tradeoff", "eval-success"):
        assert (tiny_run / "figures" / f"{stem}.png").stat().st_size > 0
        assert not pd.read_csv(tiny_run / "figures" / f"{stem}.csv").empty


def test_unknown_attribute_is_a_clear_error(tiny_run):
    config = EvalConfig(eval_faces=4, attributes=("Smilling",), progress=False, **TINY_JUDGES)
    with pytest.raises(ValueError, match="Smilling"):
        evaluate.main(EvaluateScript(run=str(tiny_run), device="cpu", evaluation=config))


def test_counterfactual_psnr_on_procedural_faces(tmp_path):
    synthetic = pytest.importorskip("data.synthetic")
    from data.prepare import PrepareConfig, prepare_cache

    cache_dir, _ = prepare_cache(PrepareConfig(generate=60, synthetic_root=str(tmp_path / "synthetic"), size=32,
                                               out=str(tmp_path / "cache"), decode_workers=1, progress=False))
    cache = load_cache(cache_dir)
    assert synthetic_root(cache) is not None
    factors = synthetic.load_factors(synthetic_root(cache))
    rows = cache.split_indices("all")[:6]
    ids = [str(i) for i in cache.table.index[rows]]
    # no change: the re-rendered face is the cached one up to JPEG loss
    same = to_float_images(render_counterfactuals(factors, ids, [{}] * len(ids), cache.size, cache.meta["crop"]))
    original = to_float_images(torch.from_numpy(np.ascontiguousarray(cache.images[rows])))
    assert psnr(same, original).min() > 25
    name = "Eyeglasses" if "Eyeglasses" in cache.attribute_names else cache.attribute_names[0]
    j = cache.attribute_names.index(name)
    flipped = [{name: not bool(cache.labels("all")[r, j])} for r in rows]
    changed = to_float_images(render_counterfactuals(factors, ids, flipped, cache.size, cache.meta["crop"]))
    assert (psnr(changed, original) < psnr(same, original)).all()  # the flip changes pixels
    # faces for a judge to learn from: each with one attribute (drawn at random) flipped, and the labels it then has
    from evaluation.counterfactuals import flipped_faces

    images, labels = flipped_faces(synthetic_root(cache), cache, rows, seed=3, workers=1)
    drawn = [cache.attribute_names[k] for k in np.random.default_rng(3).integers(0, len(cache.attribute_names), 6)]
    before = cache.labels("all")[rows]
    expected = [{a: not bool(before[i, cache.attribute_names.index(a)])} for i, a in enumerate(drawn)]
    assert torch.equal(images, render_counterfactuals(factors, ids, expected, cache.size, cache.meta["crop"]))
    for i, change in enumerate(expected):
        (a, value), = change.items()
        assert labels[i, cache.attribute_names.index(a)].item() == value  # the flipped attribute, as asked
        assert labels[i].tolist() == [bool(synthetic.counterfactual(factors.loc[ids[i]], change)[name])
                                      for name in cache.attribute_names]  # and what the generator changes with it
    # the whole ground-truth path of evaluate_edits: finite PSNRs for every edit with a rendered counterfactual
    from attributes.directions import mean_directions
    from attributes.encode import encode_images
    from models.classifier import AttributeJudge
    from models.vae import ConvVAE, VAEConfig

    model = ConvVAE(VAEConfig(image_size=32, latent_dim=8, widths=(8, 16))).eval()
    mu, _ = encode_images(model, cache.images, batch_size=64, progress=False)
    directions = mean_directions(mu, cache.labels("all"), cache.attribute_names, min_count=1)
    judge = AttributeJudge(cache.attribute_names, 32, JudgeConfig(widths=(8, 16))).eval()
    config = EvalConfig(eval_faces=5, counterfactual_faces=3, strength_faces=4, strength_candidates=(1.0, 2.0),
                        attributes=(name, "Male"), progress=False, second_judge=None)
    table, summary = evaluate_edits(model, cache, {"mean": directions}, judge, config, torch.device("cpu"))
    tested = table[table["split"] == "test"]
    assert summary["counterfactual_images"] == 3 and (tested["n_cf"] == 3).all()
    # the choice used ground truth on its own (valid) faces, so it weighed faithfulness
    assert summary["strength_rule"] == "faithful" and (table[table["split"] == "valid"]["n_cf"] == 4).all()
    assert summary["flip_rules"] == "generator"  # procedural faces: flips follow the generator's consistency rules
    assert flip_rules(cache, "stgan")[0] == "stgan"
    with pytest.raises(ValueError, match="flip_rules='generator'; expected 'auto' or 'stgan'"):
        EvalConfig(flip_rules="generator")
    with pytest.raises(ValueError, match=r"judge.counterfactual_share=0.5: .* set EvalConfig.judge_counterfactuals"):
        EvalConfig(judge=JudgeConfig(counterfactual_share=0.5))  # one share for both judges, set in one place
    truth = table[table["subset"] == "truth"]  # the judges' verdicts on the counterfactuals, per attribute and split
    assert sorted(zip(truth["split"], truth["attribute"])) == sorted((s, a) for s in ("test", "valid")
                                                                     for a in (name, "Male"))
    assert (truth["method"] == "truth").all() and truth["success"].between(0, 1).all()
    assert (truth["n"] == truth["n_cf"]).all() and set(truth["n_cf"]) == {3, 4}
    assert isinstance(summary["success_targets"], dict)  # the faithful rule asked no more than the truth's success
    table = table[table["subset"] != "truth"]
    assert np.isfinite(table[["psnr_edit_vs_cf", "psnr_base_vs_cf", "closer_to_cf"]].to_numpy()).all()
    assert table[table["composite"] == "none"]["inside_change"].between(0, 1).all()
    # an untrained model's edits move less than the composite mask's threshold: nothing changes, no share to take
    masked = table[table["composite"] != "none"]
    assert masked["inside_change"].isna().all()
    assert np.allclose(masked["psnr_edit_vs_cf"], masked["psnr_base_vs_cf"])
    # an edit composited onto the input is held against the input: its base PSNR is the input's, not the recon's
    base = tested.groupby("composite")["psnr_base_vs_cf"].mean()
    assert base["input"] > base["recon"] == pytest.approx(base["none"])
    # the dataset regenerated (another seed) since the cache was built: its factors are other people's, refused
    from evaluation.counterfactuals import CounterfactualRenderer

    other = synthetic.generate_synthetic_celeba(tmp_path / "other", 60, seed=1, workers=1)
    factors_csv = synthetic.dataset_dir(synthetic_root(cache)) / synthetic.FACTORS_FILE
    kept = factors_csv.read_text()
    factors_csv.write_text((other / synthetic.FACTORS_FILE).read_text())
    with pytest.raises(ValueError, match=r"synthetic_factors.csv does not describe the faces of .*regenerated"):
        CounterfactualRenderer(synthetic_root(cache), cache, rows)
    # a factors file cut short in its last line: the empty cell is named, not rendered as a NaN
    lines = kept.splitlines()
    factors_csv.write_text("\n".join(lines[:-1] + [lines[-1][: len(lines[-1]) // 2]]) + "\n")
    with pytest.raises(ValueError, match=rf"synthetic_factors.csv: no value for \w+ at \S+ \(line {len(lines)}\)"):
        CounterfactualRenderer(synthetic_root(cache), cache, rows)


def test_directions_of_another_checkpoint_are_refused(tiny_run, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(tiny_run, copy)
    checkpoint = torch.load(copy / "checkpoint.pt", weights_only=True)
    checkpoint["step"] += 1  # as if training had been resumed after fit_directions
    torch.save(checkpoint, copy / "checkpoint.pt")
    with pytest.raises(StaleArtifactError, match="fitted on another checkpoint.*refit"):
        Run.open(copy).directions("mean")


def test_the_headline_says_so_when_the_judge_is_unreliable_on_most_attributes():
    from evaluation.report import headline_lines

    table = pd.DataFrame({"method": ["picked", "picked"], "composite": ["none"] * 2, "attribute": ["A", "B"],
                          "subset": ["chosen"] * 2, **{c: [0.5, 0.5] for c in (
                              "success", "preservation", "success_heldout", "preservation_heldout", "closer_to_cf",
                              "inside_change")}})
    good = {"attributes": {"A": {"balanced_accuracy": 0.95}, "B": {"balanced_accuracy": 0.9}}}
    bad = {"attributes": {"A": {"balanced_accuracy": 0.55}, "B": {"balanced_accuracy": 0.6}}}
    assert not any("CAVEAT" in line for line in headline_lines(table, good))
    assert headline_lines(table, bad)[0].startswith("CAVEAT: the judge's balanced test accuracy is under 80 % on 2 of")


def test_unseen_targets_are_label_pairs_no_training_face_has():
    from evaluation.protocol import unseen_targets

    # columns Male, Mustache, Smiling: every mustache in the training faces is a man's, and none smiles
    train = np.array([[1, 1, 0], [1, 0, 1], [0, 0, 1], [0, 0, 0]], dtype=bool)
    target = np.array([[0, 1, 0],    # a woman asked for a mustache: never seen
                       [1, 1, 0],    # a man, not smiling: seen
                       [1, 1, 1],    # a smiling man: a smiling mustache never seen
                       [0, 0, 1]],   # a mustache taken away from a smiling woman: both pairs seen
                      dtype=bool)
    assert unseen_targets(train, target, column=1).tolist() == [True, False, True, False]
    assert not unseen_targets(train, train, column=1).any()  # the training faces themselves are all seen
    with pytest.raises(ValueError, match="a column < K"):
        unseen_targets(train, target, column=3)
