"""The AttributeDirections file: round trip, lookup, tables, and a run's fit that writes it."""
import json

import pandas as pd
import pytest
import torch

from attributes import AttributeDirections, conditional_directions, mean_directions, probe_directions
from models.checkpoint import save_checkpoint
from models.vae import ConvVAE, VAEConfig
from pipeline.run import Run

NAMES = ["Eyeglasses", "Male", "Smiling", "Young"]


def fitted(method="probe"):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(600, 12, generator=g)
    labels = torch.stack([z[:, 0] > 0.5, z[:, 1] + 0.3 * z[:, 0] > 0, z[:, 2] > 0, z[:, 3] < 0.2], dim=1)
    if method == "mean":
        return mean_directions(z, labels, NAMES)
    return probe_directions(z[:500], labels[:500], NAMES, valid_latents=z[500:], valid_labels=labels[500:],
                            progress=False)


def assert_same(a: AttributeDirections, b: AttributeDirections):
    for key, value in a.to_dict().items():
        other = b.to_dict()[key]
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, other), key
        else:
            assert value == other, key


@pytest.mark.parametrize("method", ["mean", "probe", "conditional"])
def test_save_load_round_trip_weights_only(tmp_path, method):
    dirs = fitted("mean" if method == "mean" else "probe")
    if method == "conditional":
        dirs = conditional_directions(dirs, {"Eyeglasses": ["Male", "Young", "Smiling"]})
    checkpoint = tmp_path / "checkpoint.pt"
    checkpoint.write_bytes(b"not really weights")
    dirs.with_checkpoint(checkpoint)
    path = dirs.save(tmp_path / "directions.pt")
    raw = torch.load(path, weights_only=True)
    assert raw["latent_kind"] == "mu" and raw["version"] == 1 and raw["method"] == method
    loaded = AttributeDirections.load(path)
    assert_same(dirs, loaded)
    assert loaded.checkpoint_sha256 == dirs.checkpoint_sha256 and len(loaded.checkpoint_sha256) == 64
    if method == "probe":
        assert set(loaded.scores["Male"]) >= {"accuracy", "balanced_accuracy", "roc_auc"}


def test_readme_snippet(tmp_path):
    path = fitted().save(tmp_path / "directions-probe.pt")
    from attributes import AttributeDirections

    dirs = AttributeDirections.load(path)
    smiling = dirs["Smiling"]
    assert smiling.shape == (12,) and float(smiling.norm()) == pytest.approx(1.0, abs=1e-5)
    assert float(smiling[2]) > 0.9  # Smiling was planted along latent axis 2


def test_lookup_table_and_errors():
    dirs = fitted()
    assert dirs.names == NAMES and len(dirs) == 4 and "Male" in dirs and "Bald" not in dirs
    with pytest.raises(KeyError, match="did you mean 'Smiling'"):
        dirs["Smilng"]
    with pytest.raises(ValueError, match="valid names: Eyeglasses, Male, Smiling, Young"):
        dirs.index("Blond")
    frame = dirs.to_frame()
    assert isinstance(frame, pd.DataFrame) and list(frame.index) == NAMES
    assert {"step", "margin", "pos_count", "neg_count", "accuracy", "roc_auc"} <= set(frame.columns)
    assert frame.loc["Smiling", "roc_auc"] > 0.95
    torch.testing.assert_close(dirs.subset(["Young", "Male"]).vectors, dirs.vectors[[3, 1]])
    with pytest.raises(FileNotFoundError, match="fit_directions"):
        AttributeDirections.load("nowhere/directions.pt")


def make_run(root, cache_dir):
    """A VAE run folder as train_vae leaves it: config.json with cache_dir, and a checkpoint of a tiny ConvVAE."""
    run = root / "001-vae"
    run.mkdir(parents=True)
    torch.manual_seed(0)
    model = ConvVAE(VAEConfig(image_size=32, widths=(8, 16), latent_dim=8))
    save_checkpoint(run / "checkpoint.pt", model=model, step=0, epoch=0)
    (run / "config.json").write_text(json.dumps({"cache_dir": str(cache_dir)}))
    return run


def test_a_runs_fit_writes_every_kind_and_its_figures(tmp_path, tiny_cache_dir):
    from attributes.fit import FitConfig
    from evaluation.figures import direction_figures

    run = make_run(tmp_path / "runs", tiny_cache_dir)
    fit = FitConfig(min_count=5, min_cell_count=2, probe_jobs=1,
                    conditional={"Smiling": ["Male", "Bangs"], "Blond_Hair": ["Male"]})
    opened = Run.open(run)
    opened.latents(batch_size=40, progress=False)
    with pytest.warns(UserWarning, match="Blond_Hair"):  # not in this data: left out, and said so
        fitted = opened.fit_directions(fit, progress=False)
    direction_figures(fitted, opened.figures_dir)
    for name in ("latents.pt", "directions-mean.pt", "directions-balanced.pt", "directions-probe.pt",
                 "directions-conditional.pt", "directions-regression.pt", "directions-probe_joint.pt",
                 "figures/probe-accuracy.png", "figures/probe-accuracy.csv",
                 "figures/direction-cosine.png", "figures/direction-cosine.csv", "fit_config.json"):
        assert (run / name).is_file(), name
    probe = AttributeDirections.load(run / "directions-probe.pt")
    assert probe.names == ["Bangs", "Eyeglasses", "Male", "Smiling"] and probe.latent_dim == 8
    assert probe.checkpoint == str(run / "checkpoint.pt") and probe.info["fit_split"] == "train"
    assert all("roc_auc" in probe.scores[n] for n in probe.names)
    conditional = AttributeDirections.load(run / "directions-conditional.pt")
    assert conditional.conditions == {"Smiling": ["Male", "Bangs"]}  # Blond_Hair is not in this data
    for c in ("Male", "Bangs"):
        assert abs(float(conditional["Smiling"] @ probe[c])) < 1e-5
    joint = AttributeDirections.load(run / "directions-probe_joint.pt")
    assert joint.names == probe.names
    moves = probe.probe_weights.double() @ joint.vectors.double().T  # (K, K): probe k's score change along joint t
    off_diagonal = moves - torch.diag(moves.diagonal())
    assert float(off_diagonal.abs().max()) < 1e-4 * float(moves.diagonal().abs().min())  # moves its probe only
    regression = AttributeDirections.load(run / "directions-regression.pt")
    assert torch.allclose(regression.vectors * regression.steps[:, None], regression.pos_mean - regression.neg_mean,
                          atol=1e-5)
    assert all(0.0 <= regression.scores[n]["accuracy"] <= 1.0 for n in regression.names)
    scores = pd.read_csv(run / "figures/probe-accuracy.csv")
    # probe, conditional and probe_joint judge by the same probes: one bar, named for all three
    assert set(scores["method"]) == {"mean", "balanced", "probe, conditional, probe_joint (one boundary)", "regression"}
    cosine = pd.read_csv(run / "figures/direction-cosine.csv", index_col=0)
    assert cosine.shape == (4, 4)  # between the probe directions of the 4 attributes
    # a second call reuses latents.pt of the same checkpoint
    before = (run / "latents.pt").stat().st_mtime_ns
    with pytest.warns(UserWarning, match="Blond_Hair"):
        Run.open(run).fit_directions(fit, progress=False)
    assert (run / "latents.pt").stat().st_mtime_ns == before

    # an edit on the same run: a dataset image by id, and a photo aligned by its eye centres
    import numpy as np
    from PIL import Image

    from evaluation.face_edit import edit_face, save_face_edit

    opened = Run.open(run)  # the run folder fitted above, opened afresh
    png = save_face_edit(opened, edit_face(opened, {"Smiling": 1, "Eyeglasses": 0}, index="000003.jpg",
                                         method="conditional"))
    assert png.parent == run / "edits" and png.is_file()
    assert png.name.startswith("edit-000003-") and png.name.endswith("-Smiling=1-Eyeglasses=0-conditional-offset-x1-recon.png")
    other = save_face_edit(opened, edit_face(opened, {"Smiling": 1, "Eyeglasses": 0}, index="000003.jpg",
                                           method="conditional", mode="target", strength=2))
    assert other != png and png.is_file() and other.is_file()  # another mode/strength never overwrites
    table = pd.read_csv(png.with_suffix(".csv"), index_col="attribute")
    assert table.loc["Smiling", "target"] == 1 and table.loc["Eyeglasses", "target"] == 0
    assert table.loc["Smiling", "source"] == int(pd.read_csv(tiny_cache_dir / "annotations.csv",
                                                             index_col="image_id").loc["000003.jpg", "Smiling"])
    photo = Image.fromarray(np.full((240, 320, 3), 128, dtype=np.uint8))
    photo.save(tmp_path / "photo.jpg")
    result = edit_face(opened, {"Bangs": 1}, image=tmp_path / "photo.jpg", eyes=(140, 120, 180, 118), mode="target")
    png = save_face_edit(opened, result, tmp_path / "edit.png")
    assert png == tmp_path / "edit.png" and png.is_file()
    with pytest.raises(KeyError, match="did you mean 'Bangs'"):
        edit_face(opened, {"Bangz": 1}, index="3")
