"""Stale or mismatched inputs are recomputed or refused out loud: the three silent-wrong cases of the review, and the
run folder's own bookkeeping (numbers, "latest", leftovers of killed writes)."""
from __future__ import annotations

import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest
from celeba_fixtures import write_celeba
from conftest import TINY_VAE, write_tiny_cache

from attributes.encode import Latents
from attributes.fit import FitConfig
from data.cache import build_cache, load_cache
from pipeline.run import Run, StaleArtifactError
from models.checkpoint import load_checkpoint
from pipeline.training import TrainConfig, resume_config, train

REPO = Path(__file__).resolve().parents[1]
FIT = FitConfig(methods=("mean",), min_count=2, probe_jobs=1)


def _train(cache_dir: Path, runs: Path, **overrides) -> Run:
    values = dict(cache_dir=str(cache_dir), runs_root=str(runs), epochs=1, batch_size=8, model=TINY_VAE,
                  device="cpu", progress=False, log_images_every_epoch=False)
    return train(TrainConfig(**{**values, **overrides}))


def test_edited_labels_reencode_latents_and_refit_on_the_new_labels(tmp_path, capsys):
    fixture = write_celeba(tmp_path / "celeba", "torchvision", n=36, images="gradient")
    cache_dir = build_cache(fixture.root, tmp_path / "cache", size=32, workers=1, progress=False)
    run = _train(cache_dir, tmp_path / "runs")
    before = run.fit_directions(FIT, progress=False)["mean"]
    # flip every Smiling label in list_attr_celeba.txt and rebuild the cache
    attr_file = fixture.base / "list_attr_celeba.txt"
    lines = attr_file.read_text().splitlines()
    column = 1 + lines[1].split().index("Smiling")
    for i in range(2, len(lines)):
        fields = lines[i].split()
        fields[column] = "1" if fields[column] == "-1" else "-1"
        lines[i] = " ".join(fields)
    attr_file.write_text("\n".join(lines) + "\n")
    with pytest.warns(UserWarning, match="replaced the cache"):
        build_cache(fixture.root, cache_dir, size=32, workers=1, progress=False)
    capsys.readouterr()

    again = Run.open(run.dir)
    with pytest.raises(StaleArtifactError, match="fitted on latents of other images or labels.*refit"):
        again.directions("mean")  # the old directions are refused, not used
    after = again.fit_directions(FIT)["mean"]
    assert "latents.pt: made from other images or labels" in capsys.readouterr().out  # re-encoded, and said so
    k = after.names.index("Smiling")
    assert after.pos_count[k] == before.neg_count[k] and after.neg_count[k] == before.pos_count[k]
    assert Latents.load(again.latents_path).cache_fingerprint == load_cache(cache_dir).fingerprint


def test_resume_on_a_rebuilt_cache_of_other_data_stops_naming_both_fingerprints(tmp_path):
    cache_dir = write_tiny_cache(tmp_path / "cache")
    old = load_cache(cache_dir).fingerprint
    run = _train(cache_dir, tmp_path / "runs")
    write_tiny_cache(cache_dir, seed=1)  # the same folder now holds another dataset
    new = load_cache(cache_dir).fingerprint
    with pytest.raises(ValueError, match=rf"cannot resume .*fingerprint {old[:12]}.*fingerprint {new[:12]}"):
        train(TrainConfig(**{**run.config(), "resume": str(run.dir), "epochs": 2}))


def test_another_runs_checkpoint_is_refused_by_edit_faces_as_by_evaluate(tmp_path):
    from evaluation.face_edit import edit_face

    cache_dir = write_tiny_cache(tmp_path / "cache")
    a = _train(cache_dir, tmp_path / "runs", name="a")
    b = _train(cache_dir, tmp_path / "runs", name="b", seed=1)
    a.fit_directions(FIT, progress=False)
    shutil.copy(b.checkpoint_path, a.checkpoint_path)  # same latent size, another model
    with pytest.raises(StaleArtifactError, match=r"fitted on another checkpoint .*refit"):
        edit_face(Run.open(a.dir), {"Smiling": 1}, index="000003.jpg", method="mean")
    assert not (a.dir / "edits").exists()  # nothing was written


def test_directions_of_another_latent_size_name_both_files_and_shapes(tmp_path):
    cache_dir = write_tiny_cache(tmp_path / "cache")
    a = _train(cache_dir, tmp_path / "runs", name="a")
    b = _train(cache_dir, tmp_path / "runs", name="b", model=replace(TINY_VAE, latent_dim=4))
    a.fit_directions(FIT, progress=False)
    shutil.copy(b.checkpoint_path, a.checkpoint_path)
    with pytest.raises(StaleArtifactError, match=r"directions-mean.pt holds 8-dimensional .*checkpoint.pt encodes to 4"):
        Run.open(a.dir).directions("mean")


def test_a_corrupt_latents_file_is_reencoded_not_fatal(tmp_path, capsys):
    cache_dir = write_tiny_cache(tmp_path / "cache")
    run = _train(cache_dir, tmp_path / "runs")
    run.latents()
    run.latents_path.write_bytes(run.latents_path.read_bytes()[:100])
    latents = Run.open(run.dir).latents()
    assert "latents.pt: unreadable" in capsys.readouterr().out and len(latents) == len(load_cache(cache_dir))


def test_run_numbers_are_never_shared_and_latest_is_the_highest_with_a_checkpoint(tmp_path):
    root = tmp_path / "runs"
    names = [f"n{i % 3}" for i in range(12)]
    with ThreadPoolExecutor(6) as pool:
        runs = list(pool.map(lambda name: Run.create(name, root), names))
    numbers = [int(r.dir.name.split("-")[0]) for r in runs]
    assert len(set(numbers)) == 12 and len(list(root.iterdir())) == 12  # twelve runs at once: twelve numbers
    with pytest.raises(FileNotFoundError, match="no run folder with a checkpoint.pt"):
        Run.latest(root)
    by_number = sorted(zip(numbers, runs), key=lambda pair: pair[0])
    middle = by_number[5][1]
    (middle.dir / "checkpoint.pt").write_bytes(b"x")
    assert Run.latest(root).dir == middle.dir  # the higher-numbered ones have no checkpoint (yet)
    with pytest.raises(ValueError, match="run name"):
        Run.create("a/b", root)


def test_resume_without_checkpoint_is_one_line_and_leftover_writes_are_cleaned(tmp_path):
    cache_dir = write_tiny_cache(tmp_path / "cache")
    empty = Run.create("empty", tmp_path / "runs")
    (empty.dir / "config.json").write_text('{"cache_dir": "%s"}' % cache_dir)
    result = subprocess.run([sys.executable, "-m", "experiments.train_vae", "--resume", str(empty.dir)], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"train_vae: cannot resume {empty.dir}: it has no checkpoint.pt yet (the run stopped before its first epoch "
        "ended); start it again without --resume"]
    run = _train(cache_dir, tmp_path / "runs")
    leftovers = [run.dir / ".checkpoint.pt.abc123.tmp", run.figures_dir / ".recon-epoch001.png.def456.tmp"]
    for leftover in leftovers:
        leftover.write_bytes(b"half a file")
    train(TrainConfig(**{**run.config(), "resume": str(run.dir), "epochs": 2}))
    assert not any(leftover.exists() for leftover in leftovers)


def test_divergence_before_any_checkpoint_says_so(tmp_path):
    cache_dir = write_tiny_cache(tmp_path / "cache")
    with pytest.raises(FloatingPointError, match="no checkpoint was written .*lower --lr"):
        _train(cache_dir, tmp_path / "runs", lr=1e6, log_every=1)


def test_resume_with_another_runs_checkpoint_names_both_files_and_models(tmp_path):
    cache_dir = write_tiny_cache(tmp_path / "cache")
    a = _train(cache_dir, tmp_path / "runs", name="a")
    b = _train(cache_dir, tmp_path / "runs", name="b", model=replace(TINY_VAE, latent_dim=4))
    shutil.copy(b.checkpoint_path, a.checkpoint_path)
    with pytest.raises(ValueError, match=r"cannot resume .*checkpoint.pt holds a model .*'latent_dim': 4.*config.json"):
        train(TrainConfig(**{**a.config(), "resume": str(a.dir), "epochs": 2}))


def test_a_run_made_with_relative_paths_opens_from_any_working_directory(tmp_path, monkeypatch):
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    elsewhere.mkdir()
    write_tiny_cache(project / "cache" / "tiny")
    (project / "runs").mkdir()
    run = Run.create("rel", project / "runs")
    (run.dir / Run.CONFIG).write_text('{"cache_dir": "cache/tiny", "runs_root": "runs"}')
    monkeypatch.chdir(elsewhere)
    reopened = Run.open(run.dir)
    assert reopened.cache_dir == project / "cache" / "tiny"
    assert len(reopened.cache) > 0
    monkeypatch.chdir(project)  # from where training ran, the recorded path itself
    assert Run.open(run.dir).cache_dir == Path("cache/tiny")


def test_resume_from_another_working_directory_finds_the_cache_the_run_recorded(tmp_path, monkeypatch):
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    elsewhere.mkdir()
    write_tiny_cache(project / "cache" / "tiny")
    monkeypatch.chdir(project)
    run = _train(Path("cache/tiny"), Path("runs"))  # config.json records both paths relative to `project`
    assert run.config()["cache_dir"] == "cache/tiny"
    monkeypatch.chdir(elsewhere)
    resumed = train(resume_config(project / run.dir, epochs=2))  # what `train_vae --resume` does
    assert load_checkpoint(resumed.checkpoint_path)["epoch"] == 2
    assert resumed.config()["cache_dir"] == "cache/tiny"  # still recorded as it was
