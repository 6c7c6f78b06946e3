"""Figures: every figure written with its CSV, from the run's artifacts alone (nothing retrained or re-encoded)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from test_evaluate import tiny_run  # noqa: F401  (the module-scoped tiny run fixture)

from data.io import file_sha256
from evaluation.figures import FiguresConfig
from evaluation.grids import image_grid_figure, to_display
from experiments import make_figures
from experiments.make_figures import FiguresScript

OWN = ("edit-grid", "strength-sweep", "multi-edit", "interpolation", "prior-samples")
REDRAWN = ("probe-accuracy", "direction-cosine", "curves")


def _forbid(*_args, **_kwargs):
    raise AssertionError("make_figures must not train anything")


def test_all_figures_with_csvs_and_no_retraining(tiny_run, monkeypatch):  # noqa: F811
    import models.classifier
    import pipeline.run
    import pipeline.training

    monkeypatch.setattr(pipeline.training, "train", _forbid)
    monkeypatch.setattr(pipeline.run, "fit_directions", _forbid)
    monkeypatch.setattr(pipeline.run, "encode_cache", _forbid)  # faces' latents come from latents.pt
    monkeypatch.setattr(models.classifier, "train_judge", _forbid)
    artifacts = sorted(tiny_run.glob("*.pt"))
    before = {p.name: file_sha256(p) for p in artifacts}

    figures = make_figures.main(FiguresScript(run=str(tiny_run), device="cpu", figures=FiguresConfig(
        faces=3, prior_samples=16, pdf=True, interpolation_pairs=2, interpolation_steps=5)))
    assert figures == tiny_run / "figures"
    for stem in OWN + REDRAWN:
        assert (figures / f"{stem}.png").stat().st_size > 1000, stem
        assert not pd.read_csv(figures / f"{stem}.csv").empty, stem
    for stem in OWN:
        assert (figures / f"{stem}.pdf").read_bytes()[:4] == b"%PDF"
    assert {p.name: file_sha256(p) for p in artifacts} == before  # checkpoint, directions, latents untouched

    grid = pd.read_csv(figures / "edit-grid.csv")
    assert grid["row"].nunique() == 3 and (grid["from"] != grid["to"]).all()  # every column is a real flip
    sweep = pd.read_csv(figures / "strength-sweep.csv")
    assert sorted(sweep["steps"].unique()) == [-3, -2, -1, 0, 1, 2, 3]
    interp = pd.read_csv(figures / "interpolation.csv")
    assert interp["pair"].nunique() == 2 and sorted(interp["t"].unique()) == pytest.approx(np.linspace(0, 1, 5))


def test_unknown_method_or_attribute_is_a_clear_error(tiny_run):  # noqa: F811
    with pytest.raises(FileNotFoundError, match="directions-balanced"):
        make_figures.main(FiguresScript(run=str(tiny_run), device="cpu", figures=FiguresConfig(method="balanced", faces=2)))
    with pytest.raises(ValueError, match="Smilling"):
        make_figures.main(FiguresScript(run=str(tiny_run), device="cpu",
                                        figures=FiguresConfig(sweep_attribute="Smilling", faces=2)))


def test_display_conversion_keeps_orientation_and_colour():
    image = -torch.ones(1, 3, 4, 6)  # black, 4 rows x 6 columns
    image[0, 0, 0, :] = 1.0  # top row red
    shown = to_display(image)
    assert shown.shape == (1, 4, 6, 3) and shown.min() == 0 and shown.max() == 1
    assert shown[0, 0, 0].tolist() == [1, 0, 0] and shown[0, 1, 0].tolist() == [0, 0, 0]


def test_grid_figure_draws_headers_for_every_column():
    import matplotlib.pyplot as plt

    labels = ["input", "reconstruction", "Mouth_Slightly_Open"]
    fig = image_grid_figure(torch.zeros(2, 3, 3, 8, 8), labels, ["a", "b"], "title")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == labels
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b"]
    plt.close(fig)


def test_kinds_that_share_a_boundary_are_one_bar_named_for_all(tmp_path):
    from attributes import (
        conditional_directions,
        mean_directions,
        probe_directions,
        probe_joint_directions,
        score_directions,
    )
    from evaluation.figures import direction_figures

    g = torch.Generator().manual_seed(0)
    z = torch.randn(300, 6, generator=g)
    labels = torch.stack([z[:, 0] > 0, z[:, 1] + 0.5 * z[:, 0] > 0, z[:, 2] > 0.3], dim=1)
    names = ["Smiling", "Male", "Young"]
    probe = probe_directions(z[:200], labels[:200], names, valid_latents=z[200:], valid_labels=labels[200:], n_jobs=1,
                             progress=False)
    kinds = {"mean": mean_directions(z[:200], labels[:200], names), "probe": probe,
             "conditional": conditional_directions(probe, {"Male": ["Smiling"]}),
             "probe_joint": probe_joint_directions(probe, z[:200])}
    for method in ("mean", "conditional", "probe_joint"):  # probes are scored as they are fitted
        kinds[method].scores = score_directions(kinds[method], z[200:], labels[200:], names)
    paths = direction_figures(kinds, tmp_path)
    scores = pd.read_csv(tmp_path / "probe-accuracy.csv")
    assert set(scores["method"]) == {"mean", "probe, conditional, probe_joint (one boundary)"}
    assert len(scores) == 2 * len(names) and tmp_path / "probe-accuracy.png" in paths
