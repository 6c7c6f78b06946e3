"""Editing one face (evaluation.face_edit): the result, outputs that never overwrite each other, the evaluation's pick,
hair-subspace kinds, and the warning for a face unlike the training faces (pipeline.domain)."""
from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY_VAE, write_tiny_cache
from PIL import Image

from attributes.fit import FitConfig
from data.cache import load_cache, to_float_images, write_cache
from data.io import file_sha256
from models.classifier import JudgeConfig
from pipeline.domain import DomainReference, OutOfDomainWarning
from evaluation.face_edit import boundaries_of, edit_face, edit_kind, final_picture, save_face_edit
from pipeline.run import Run, StaleArtifactError
from pipeline.training import TrainConfig, train

HAIR = ("Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair")


def _train(cache_dir: Path, runs: Path, methods=("mean", "probe")) -> Run:
    run = train(TrainConfig(cache_dir=str(cache_dir), epochs=1, batch_size=32, model=TINY_VAE,
                            runs_root=str(runs), device="cpu", progress=False))
    run.fit_directions(FitConfig(methods=methods, min_count=5, probe_jobs=1), progress=False)
    return run


@pytest.fixture(scope="module")
def evaluated_run(tmp_path_factory) -> Run:
    """A tiny run with mean and probe directions and a real (small) evaluation: evaluation.json holds its pick."""
    from evaluation import EvalConfig, evaluate_run, write_evaluation

    root = tmp_path_factory.mktemp("evaluated")
    run = _train(write_tiny_cache(root / "cache", n=160, size=32), root / "runs")
    config = EvalConfig(eval_faces=16, strength_candidates=(0.5, 2.0, 4.0),
                        strength_faces=16, counterfactual_faces=0, progress=False,
                        judge=JudgeConfig(widths=(8, 16), epochs=1, batch_size=32), second_judge=None)
    table, summary, judge_report = evaluate_run(run, config, "cpu")
    write_evaluation(run, table, summary, judge_report, config)
    return Run.open(run.dir)


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory) -> Run:
    """A tiny run with mean and probe directions and no evaluation."""
    root = tmp_path_factory.mktemp("plain")
    return _train(write_tiny_cache(root / "cache", n=160, size=32), root / "runs")


def test_the_result_holds_input_reconstruction_edit_labels_and_distances(plain_run):
    result = edit_face(plain_run, {"Smiling": 1, "Eyeglasses": 0}, index="000150.jpg")
    cache, model, probe = plain_run.cache, plain_run.model(), plain_run.directions("probe")
    row = list(cache.table.index).index("000150.jpg")
    image = to_float_images(torch.from_numpy(np.array(cache.images[row])))
    torch.testing.assert_close(result.image, image)
    with torch.no_grad():
        mu = model.encode(image[None])[0]
        torch.testing.assert_close(result.reconstruction, model.decode(mu)[0].clamp(-1, 1))
        torch.testing.assert_close(result.decoded, model.decode(result.edited_latent[None])[0].clamp(-1, 1))
    # no evaluation: the masked change on the reconstruction, and the fallback kind the run has (probe: no
    # regression was fitted) at strength 1 in offset mode, said so
    torch.testing.assert_close(result.edited, final_picture(image, result.reconstruction, result.decoded, "recon"))
    assert [(s.kind, s.strengths) for s in result.plan.steps] == [("probe", {"Smiling": 1.0, "Eyeglasses": 1.0})]
    assert result.plan.describe() == ("edited with Smiling, Eyeglasses: probe x1 (offset mode; composite recon; kind: "
                                      "probe, the run has no evaluation; strength: x1 without an evaluation's choice)")
    frame = result.frame.set_index("attribute")
    labels = cache.table.loc["000150.jpg"]
    assert frame["source"].to_dict() == {n: int(labels[n]) for n in probe.names}  # a cache image's own labels
    assert frame.loc["Smiling", "target"] == 1 and frame.loc["Eyeglasses", "target"] == 0
    np.testing.assert_allclose(frame["signed_distance_before"], probe.signed_distance(mu)[0], atol=1e-5)
    np.testing.assert_allclose(frame["signed_distance_after"], probe.signed_distance(result.edited_latent[None])[0],
                               atol=1e-5)
    with pytest.raises(ValueError, match="exactly one of an image file"):
        edit_face(plain_run, {"Smiling": 1})
    with pytest.raises(KeyError, match="did you mean 'Smiling'"):
        edit_face(plain_run, {"Smilling": 1}, index="3")


def test_edits_of_other_inputs_or_settings_never_overwrite_each_other(plain_run, tmp_path):
    # the same file name in two folders, another picture each; one of them again with its eyes given
    for folder, colour in (("a", (150, 90, 80)), ("b", (90, 120, 150))):
        (tmp_path / folder).mkdir()
        pixels = np.full((218, 178, 3), colour, dtype=np.uint8)
        pixels[150:190, 60:120] = (230, 60, 60)
        Image.fromarray(pixels).save(tmp_path / folder / "face.png")
    made = [save_face_edit(plain_run, edit_face(plain_run, {"Smiling": 1}, image=tmp_path / "a" / "face.png")),
            save_face_edit(plain_run, edit_face(plain_run, {"Smiling": 1}, image=tmp_path / "b" / "face.png")),
            save_face_edit(plain_run, edit_face(plain_run, {"Smiling": 1}, image=tmp_path / "a" / "face.png",
                                                eyes=(69, 111, 108, 111))),
            save_face_edit(plain_run, edit_face(plain_run, {"Smiling": 1}, index="3", strength=1.5)),
            save_face_edit(plain_run, edit_face(plain_run, {"Smiling": 1}, index="3", strength=1.0))]
    assert len(set(made)) == 5 and all(p.is_file() and p.with_suffix(".csv").is_file() for p in made)
    assert made[0].name.startswith("edit-face-") and made[3].name.endswith("-probe-offset-x1.5-recon.png")
    # the same edit again names the same file (nothing piles up); --out is used as given
    again = save_face_edit(plain_run, edit_face(plain_run, {"Smiling": 1}, image=tmp_path / "a" / "face.png"))
    assert again == made[0]
    out = save_face_edit(plain_run, edit_face(plain_run, {"Smiling": 1}, index="3"), tmp_path / "mine.v2.png")
    assert out == tmp_path / "mine.v2.png" and (tmp_path / "mine.v2.csv").is_file()


def _flat(path: Path, colour) -> Path:
    Image.fromarray(np.full((218, 178, 3), colour, dtype=np.uint8)).save(path)
    return path


def _tabby(path: Path) -> Path:
    """Dark and light stripes a dozen pixels wide: fur-like, high-frequency at the model's 32 pixels."""
    y, x = np.mgrid[:218, :178]
    stripes = np.where(((x + y // 3) // 12) % 2 == 0, 40, 200)
    Image.fromarray(np.stack([stripes, stripes * 0.8, stripes * 0.5], -1).astype(np.uint8)).save(path)
    return path


def test_a_face_unlike_the_training_faces_is_warned_about_with_its_numbers(plain_run, tmp_path):
    for picture in (_flat(tmp_path / "magenta.png", (255, 0, 255)), _tabby(tmp_path / "tabby.png")):
        with pytest.warns(OutOfDomainWarning, match=rf"{picture.name}: reconstruction [0-9.]+ dB; this run's test "
                          r"faces reconstruct at [0-9.]+–[0-9.]+ dB .*edits will not keep this person"):
            result = edit_face(plain_run, {"Smiling": 1}, image=picture)
        assert result.domain.outside
    # the run's own test face of median reconstruction quality: no warning
    reference = plain_run.domain_reference()
    test_rows = plain_run.cache.split_indices("test")
    scores = []
    for row in test_rows:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OutOfDomainWarning)
            scores.append((edit_face(plain_run, {"Smiling": 1}, index=str(row)).domain.psnr, row))
    median_row = sorted(scores)[len(scores) // 2][1]
    with warnings.catch_warnings():
        warnings.simplefilter("error", OutOfDomainWarning)
        result = edit_face(plain_run, {"Smiling": 1}, index=str(median_row))
    assert not result.domain.outside and result.domain.message is None
    assert reference.split == "test" and reference.faces == len(test_rows)
    np.testing.assert_allclose(sorted(s for s, _ in scores)[len(scores) // 2],
                               float(reference.psnr_percentiles[2]), atol=1.5)  # the median, as stored


def test_the_reference_is_stored_once_with_provenance_and_a_stale_one_is_recomputed(plain_run, capsys):
    path = plain_run.path(Run.DOMAIN_REFERENCE)
    reference = plain_run.domain_reference()
    assert path.is_file() and reference.checkpoint_sha256 == file_sha256(plain_run.checkpoint_path)
    assert reference.cache_fingerprint == plain_run.cache.fingerprint
    before = path.stat().st_mtime_ns
    Run.open(plain_run.dir).domain_reference()
    assert path.stat().st_mtime_ns == before  # current: read, not recomputed
    stale = DomainReference.load(path)
    stale.checkpoint_sha256 = "0" * 64
    stale.save(path)
    capsys.readouterr()
    again = Run.open(plain_run.dir).domain_reference()
    assert "made from another checkpoint (000000000000" in capsys.readouterr().out
    assert again.checkpoint_sha256 == reference.checkpoint_sha256 and torch.equal(again.psnr_percentiles,
                                                                                  reference.psnr_percentiles)


def test_editing_a_photo_does_not_open_the_image_cache(plain_run, tmp_path, monkeypatch):
    from experiments.edit_faces import EditConfig, main

    plain_run.domain_reference()  # made once, with the cache
    copy = tmp_path / "work" / "runs" / plain_run.dir.name
    shutil.copytree(plain_run.dir, copy)
    cache_copy = tmp_path / "work" / "cache"
    shutil.copytree(plain_run.cache.directory, cache_copy)
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "cache_dir": str(cache_copy)}))
    (cache_copy / "images.npy").unlink()  # the 120 MB file of a real cache
    monkeypatch.chdir(tmp_path / "work")  # no --run: the latest run under runs/
    with pytest.warns(OutOfDomainWarning):
        png = main(EditConfig(image=str(_tabby(tmp_path / "tabby.png")), set=("Smiling=1",), device="cpu"))
    assert png.resolve().parent == (copy / "edits").resolve() and png.is_file()
    with pytest.raises(FileNotFoundError, match="images.npy missing"):  # what does need it still says so
        main(EditConfig(index="3", set=("Smiling=1",), device="cpu"))


def test_the_cli_edits_with_the_evaluations_pick_and_says_so(evaluated_run, capsys):
    from experiments.edit_faces import EditConfig, main

    summary = json.loads(evaluated_run.path(Run.EVAL_JSON).read_text())
    pick = summary["picked"]["Smiling"]
    kind, composite, strength = pick["method"], pick["composite"], pick["strength"]
    png = main(EditConfig(run=str(evaluated_run.dir), index="3", set=("Smiling=1",), device="cpu"))
    out = capsys.readouterr().out
    assert (f"edited with Smiling: {kind} x{strength:g} (offset mode; composite {composite}; kind: the evaluation's "
            "pick; strength: the evaluation's choice)") in out
    assert png.name.endswith(f"-{kind}-offset-x{strength:g}-{composite}.png")
    assert pd.read_csv(png.with_suffix(".csv")).set_index("attribute").loc["Smiling", "kind"] == kind
    picks = evaluated_run.edit_picks()
    assert {a: (p.kind, p.composite, p.strength) for a, p in picks.items()} == {
        a: (p["method"], p["composite"], p["strength"]) for a, p in summary["picked"].items()}
    table = pd.read_csv(evaluated_run.path(Run.EVAL_CSV))  # and the evaluation's own rows of the pick
    rows = table[table["method"] == "picked"].set_index("attribute")
    assert {a: (p.kind, p.composite, p.strength) for a, p in picks.items()} == {
        a: (r["picked_from"], r["composite"], r["strength"]) for a, r in rows.iterrows()}
    # another kind asked for: that kind at its own chosen strength, under the attribute's picked composite
    main(EditConfig(run=str(evaluated_run.dir), index="3", set=("Smiling=1",), method="probe", device="cpu"))
    probe_strength = summary["chosen_strengths"]["probe"][composite]["Smiling"]
    assert (f"Smiling: probe x{probe_strength:g} (offset mode; composite {composite}; kind: asked for; strength: the "
            "evaluation's choice)") in capsys.readouterr().out


def test_attributes_with_different_picked_kinds_are_edited_kind_by_kind_in_order(evaluated_run, tmp_path):
    copy = Run(shutil.copytree(evaluated_run.dir, tmp_path / "runs" / evaluated_run.dir.name))
    summary = json.loads(copy.path(Run.EVAL_JSON).read_text())
    summary["picked"] = {"Smiling": {"method": "probe", "composite": "none", "strength": 1.5},
                         "Bangs": {"method": "mean", "composite": "none", "strength": 3.0}}
    summary["chosen_strengths"] = {"probe": {"none": {"Smiling": 1.5, "Bangs": 1.0}},
                                   "mean": {"none": {"Smiling": 1.0, "Bangs": 3.0}}}
    _rewrite_summary(copy, summary)
    result = edit_face(copy, {"Bangs": 1, "Smiling": 1}, index="000150.jpg")
    steps = [(s.kind, s.strengths) for s in result.plan.steps]
    assert steps == [("mean", {"Bangs": 3.0}), ("probe", {"Smiling": 1.5})]
    assert "kind by kind in this order" in result.plan.describe()
    # the same as Bangs by mean at x3, then Smiling by probe at x1.5 from there
    labels = {n: int(copy.cache.table.loc["000150.jpg", n]) for n in copy.cache.attribute_names}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        step = copy.directions("mean").edit(result.latent[None], {"Bangs": 1}, source=labels, strength=3.0)
        step = copy.directions("probe").edit(step, {"Smiling": 1}, source=labels | {"Bangs": 1}, strength=1.5)
    torch.testing.assert_close(result.edited_latent, step[0], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="no evaluation to take the pick from.*experiments.evaluate"):
        copy.path(Run.EVAL_JSON).unlink()
        copy.manifest_path(Run.EVALUATION).unlink()
        edit_face(copy, {"Smiling": 1}, index="3", method="picked")


def test_a_pick_in_context_puts_the_edit_of_every_attribute_set_with_it_in_context(evaluated_run, tmp_path):
    from attributes import context_labels
    from evaluation.face_edit import final_picture, training_pairs

    copy = Run(shutil.copytree(evaluated_run.dir, tmp_path / "runs" / evaluated_run.dir.name))
    summary = json.loads(copy.path(Run.EVAL_JSON).read_text())
    summary["picked"] = {"Smiling": {"method": "probe", "composite": "input", "strength": 1.5},
                         "Bangs": {"method": "probe", "composite": "recon+context", "strength": 2.0}}
    summary["chosen_strengths"] = {"probe": {"input": {"Smiling": 1.5}, "recon+context": {"Bangs": 2.0}}}
    _rewrite_summary(copy, summary)
    changes = {"Bangs": 1, "Smiling": 1}
    result = edit_face(copy, changes, index="000150.jpg")
    assert result.plan.composite == "recon+context"  # the least local base (none < recon < input), in context
    assert "composite recon+context" in result.plan.describe()
    plain = final_picture(result.image, result.reconstruction, result.decoded, "recon")
    probe = copy.directions("probe")
    source = torch.tensor([[int(copy.cache.table.loc["000150.jpg", n]) for n in probe.names]])
    target = source.clone()
    for a, v in changes.items():
        target[0, probe.index(a)] = v
    needs_context = not torch.equal(context_labels(training_pairs(copy, probe.names), source, target), source)
    # in context only where the training labels never show the target; elsewhere the plain recon composite
    assert torch.equal(result.edited, plain) != needs_context


def _rewrite_summary(run: Run, summary: dict) -> None:
    """evaluation.json replaced by `summary` as one complete write of the evaluation's set (the rest kept as is)."""
    from data.io import atomic_write_json

    kept = [run.path(n) for n in (Run.EVAL_CSV, Run.EVAL_MD, Run.EVAL_CONFIG)] + sorted(run.figures_dir.glob("eval-*"))
    with run.writing(Run.EVALUATION) as written:
        written += [atomic_write_json(summary, run.path(Run.EVAL_JSON)), *kept]


def test_the_pick_is_refused_when_the_evaluation_is_mixed_or_its_directions_were_refitted(evaluated_run, tmp_path):
    from data.io import MixedOutputsError
    from pipeline.run import StaleArtifactError

    copy = Run(shutil.copytree(evaluated_run.dir, tmp_path / "runs" / evaluated_run.dir.name))
    summary = json.loads(copy.path(Run.EVAL_JSON).read_text())
    assert set(summary["directions_sha256"]) == {"mean", "probe"}
    assert Run(copy.dir).edit_picks()  # the evaluation as written: its pick is used
    # evaluation.json changed outside a complete write of the set: refused, naming it
    copy.path(Run.EVAL_JSON).write_text(json.dumps(dict(summary, picked={})))
    with pytest.raises(MixedOutputsError, match="evaluation.json"):
        Run(copy.dir).edit_picks()
    _rewrite_summary(copy, summary)
    # the directions refitted after the evaluation: its strengths were chosen for others, so the pick is refused
    refit = Run(copy.dir)
    refit.fit_directions(FitConfig(methods=("mean", "probe"), min_count=3, probe_jobs=1), progress=False)
    for reader in (refit, Run(copy.dir)):
        with pytest.raises(StaleArtifactError, match=r"evaluation.json scored other directions than .*directions-"):
            reader.edit_picks()
    # an evaluation that records no directions (made by older code) is refused too
    _rewrite_summary(copy, {k: v for k, v in summary.items() if k != "directions_sha256"})
    with pytest.raises(StaleArtifactError, match="does not record the directions it scored"):
        Run(copy.dir).evaluation_summary()


def _hair_cache(directory: Path, n: int = 200, size: int = 32) -> Path:
    """Faces with one of four hair colours (or none) as a top band, and Smiling as a red block."""
    rng = np.random.default_rng(1)
    colour = rng.integers(0, 5, n)  # 0..3 = HAIR, 4 = none
    smiling = rng.random(n) < 0.5
    bands = np.array([[20, 20, 20], [230, 200, 90], [120, 70, 30], [170, 170, 170], [110, 110, 110]])
    images = np.empty((n, 3, size, size), dtype=np.uint8)
    for i in range(n):
        img = np.full((3, size, size), 120, dtype=np.int16) + rng.integers(-6, 7, (3, size, size))
        img[:, : size // 4] = bands[colour[i]][:, None, None]
        if smiling[i]:
            img[0, 3 * size // 4 :, size // 4 : 3 * size // 4] = 230
        images[i] = np.clip(img, 0, 255)
    table = pd.DataFrame({c: colour == k for k, c in enumerate(HAIR)} | {"Smiling": smiling})
    table.index = pd.Index([f"{i + 1:06d}.jpg" for i in range(n)], name="image_id")
    table["partition"] = np.where(np.arange(n) < 0.8 * n, "train", np.where(np.arange(n) < 0.9 * n, "valid", "test"))
    meta = {"size": size, "crop": None, "source_root": "tests/hair", "layout": "fixture", "file_count": n,
            "skipped": [], "draft": False}
    return write_cache(directory, table, meta, images)


def test_a_hair_subspace_kind_moves_the_colour_to_its_class_mean(tmp_path):
    from experiments.edit_faces import EditConfig
    from pipeline.cli import parse_config

    run = _train(_hair_cache(tmp_path / "cache"), tmp_path / "runs")
    assert parse_config(EditConfig, ["--method", "probe+hair_subspace"]).method == "probe+hair_subspace"
    cache = load_cache(run.cache_dir)
    black = next(str(i) for i in cache.table.index[cache.table["Black_Hair"]])
    result = edit_face(run, {"Blond_Hair": 1}, index=black, method="probe+hair_subspace", strength=1.0)
    kind = edit_kind(run, "probe+hair_subspace")
    assert result.plan.steps[0].kind == "probe+hair_subspace"
    coordinates = result.edited_latent.double() @ kind.basis  # (R,) in the colour subspace
    torch.testing.assert_close(coordinates, kind.class_coords[HAIR.index("Blond_Hair")], atol=1e-4, rtol=0)
    frame = result.frame.set_index("attribute")
    assert frame.loc["Black_Hair", "target"] == 0 and "also cleared (exclusive alternatives): Black_Hair" in result.notes
    with pytest.raises(ValueError, match="unknown direction kind 'probe\\+fringe'"):
        edit_kind(run, "probe+fringe")


def test_the_interaction_kind_edits_a_face_as_its_model_says(tmp_path):
    from attributes.interaction import InteractionDirections

    run = _train(write_tiny_cache(tmp_path / "cache", n=200, size=32, seed=4), tmp_path / "runs", methods=("regression",))
    kind = edit_kind(run, "interaction")
    assert isinstance(kind, InteractionDirections) and kind.base.method == "regression"
    assert boundaries_of(kind) is kind.base  # what the notebook's direction table shows for an interaction pick
    cache = load_cache(run.cache_dir)
    image_id = str(cache.table.index[~cache.table["Smiling"]][0])
    result = edit_face(run, {"Smiling": 1}, index=image_id, method="interaction", strength=1.5)
    assert [step.kind for step in result.plan.steps] == ["interaction"]
    row = list(cache.table.index).index(image_id)
    mu = run.latents().mu[row : row + 1].float()  # (1, D), as encoded when the run fitted its directions
    source = {n: [int(cache.table.loc[image_id, n])] for n in kind.names}
    expected = kind.edit(mu, {"Smiling": 1}, source, strength=1.5)[0]
    torch.testing.assert_close(result.edited_latent, expected, atol=1e-4, rtol=0)
    assert not torch.allclose(result.edited_latent, mu[0])
    with pytest.raises(ValueError, match="offset mode only"):
        edit_face(run, {"Smiling": 1}, index=image_id, method="interaction", mode="target")
    # an evaluation that chose its strengths for this kind with other settings (an older pair ridge) is refused
    run.evaluation_summary = lambda name=Run.EVAL_JSON: {"interaction": dict(kind.info, pair_ridge=10.0)}
    with pytest.raises(StaleArtifactError, match=r"scored the interaction kind with \{'pair_ridge': 10.0\}.*"
                                                 r"\{'pair_ridge': 50.0\}.*evaluate again"):
        edit_kind(run, "interaction")
    run.evaluation_summary = lambda name=Run.EVAL_JSON: {"methods": ["regression", "interaction"]}
    with pytest.raises(StaleArtifactError, match="without recording its settings"):
        edit_kind(run, "interaction")
    run.evaluation_summary = lambda name=Run.EVAL_JSON: {"interaction": dict(kind.info)}
    assert edit_kind(run, "interaction").info == kind.info


def test_the_transport_kind_edits_a_face_with_the_rules_its_evaluation_used(tmp_path):
    from attributes.transport import TransportDirections

    run = _train(write_tiny_cache(tmp_path / "cache", n=200, size=32, seed=4), tmp_path / "runs", methods=("regression",))
    kind = edit_kind(run, "transport")  # no evaluation: the cache's rules (STGAN's: the tiny cache is not procedural)
    assert isinstance(kind, TransportDirections) and kind.info["implies"] == "stgan"
    assert boundaries_of(kind) is kind.base and kind.model.info == edit_kind(run, "interaction").info
    cache = load_cache(run.cache_dir)
    image_id = str(cache.table.index[~cache.table["Smiling"]][0])
    result = edit_face(run, {"Smiling": 1}, index=image_id, method="transport", strength=1.0)
    row = list(cache.table.index).index(image_id)
    mu = run.latents().mu[row : row + 1].float()
    source = {n: [int(cache.table.loc[image_id, n])] for n in kind.names}
    torch.testing.assert_close(result.edited_latent, kind.edit(mu, {"Smiling": 1}, source)[0], atol=1e-4, rtol=0)
    # an evaluation that scored it under other flip rules chose its strengths for another kind: refused
    run.evaluation_summary = lambda name=Run.EVAL_JSON: {"flip_rules": "stgan",
                                                         "transport": dict(kind.info, implies="generator")}
    with pytest.raises(StaleArtifactError, match=r"scored the transport kind with \{'implies': 'generator'\}"):
        edit_kind(run, "transport")
    # the rules are recorded by content too: the same name with other rules (the code's rules changed since the
    # evaluation) is refused
    from evaluation.protocol import FLIP_RULES

    assert kind.info["implied"]["Bald"] == list(FLIP_RULES["stgan"]["Bald"])
    run.evaluation_summary = lambda name=Run.EVAL_JSON: {"flip_rules": "stgan",
                                                         "transport": dict(kind.info, implied={"Bald": ["Bangs"]})}
    with pytest.raises(StaleArtifactError, match=r"scored the transport kind with \{'implied'"):
        edit_kind(run, "transport")
    # an evaluation made before the kind recorded what its maps carry chose strengths for edits without it: refused
    before_carried = {k: v for k, v in kind.info.items() if k != "carried"}
    run.evaluation_summary = lambda name=Run.EVAL_JSON: {"flip_rules": "stgan", "transport": before_carried}
    with pytest.raises(StaleArtifactError, match=r"scored the transport kind with \{'carried': None\}"):
        edit_kind(run, "transport")
    run.evaluation_summary = lambda name=Run.EVAL_JSON: {"flip_rules": "stgan", "transport": json.loads(
        json.dumps(kind.info))}  # as evaluation.json stores it
    assert edit_kind(run, "transport").info == kind.info
