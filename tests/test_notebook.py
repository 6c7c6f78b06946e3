"""notebooks/explore_directions.ipynb runs top to bottom as Jupyter runs it (the kernel in notebooks/, the run given
by a path relative to the repository), reads the run's saved evaluation and trains or overwrites nothing."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from conftest import TINY_VAE, write_tiny_cache

import pipeline.run
from attributes.fit import FitConfig
from data.io import file_sha256
from pipeline.run import Run
from pipeline.training import TrainConfig, train

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "explore_directions.ipynb"


def _outputs(cells) -> tuple[str, list]:
    """(all text the cells printed or showed, their images); no cell may have failed."""
    outputs = [o for cell in cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"], [o for o in outputs if o.output_type == "error"]
    text = "\n".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", "")) for o in outputs)
    return text, [o for o in outputs if "image/png" in o.get("data", {})]


@pytest.mark.slow
def test_notebook_reads_the_saved_evaluation_and_trains_nothing(tmp_path, monkeypatch):
    from evaluation import EvalConfig, evaluate_run, write_evaluation
    from models.classifier import JudgeConfig

    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    cache_dir = write_tiny_cache(tmp_path / "cache", n=160, size=32)
    run = train(TrainConfig(cache_dir=str(cache_dir), epochs=1, batch_size=32, model=TINY_VAE,
                            runs_root=str(tmp_path / "runs"), device="cpu", progress=False))
    run.fit_directions(FitConfig(methods=("mean", "probe"), min_count=5, probe_jobs=1), progress=False)
    relative = os.path.relpath(run.dir, REPO)  # from the repository root; not found from notebooks/
    assert not (NOTEBOOK.parent / relative).exists()
    monkeypatch.setenv("LATENT_EDIT_RUN", relative)
    judges = lambda: {p.name: file_sha256(p) for p in cache_dir.glob("judge-*.pt")}  # noqa: E731

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})  # the kernel's cwd
    with client.setup_kernel():
        for i, cell in enumerate(notebook.cells):
            client.execute_cell(cell, i)
        text, images = _outputs(notebook.cells)  # no evaluation yet: says how to make one, evaluates nothing
        assert "direction kinds: ['mean', 'probe']" in text and "step" in text
        assert f"make one with `python -m experiments.evaluate --run {REPO / relative}`" in text
        assert not judges() and "IProgress" not in text
        assert len(images) == 2  # the edit grid and the cosine heat map

        config = EvalConfig(eval_faces=16, strength_candidates=(0.5, 2.0),
                            strength_faces=16, counterfactual_faces=0, progress=False,
                            judge=JudgeConfig(widths=(8, 16), epochs=1, batch_size=32), second_judge=None)
        write_evaluation(run, *evaluate_run(run, config, "cpu"), config)
        judge_sha = judges()
        summary = json.loads(run.path(Run.EVAL_JSON).read_text())
        for i, cell in enumerate(notebook.cells):  # the whole notebook again, in the same kernel
            client.execute_cell(cell, i)
    text, images = _outputs(notebook.cells)  # the saved numbers and the pick, read back
    assert f"16 test faces; reconstruction PSNR {summary['fidelity']['psnr']:.2f} dB" in text
    assert "success %" in text
    for attribute, pick in summary["picked"].items():  # the pick's table: each attribute's kind, composite, strength
        assert re.search(rf"{attribute}\s+{re.escape(pick['method'])}\s+{pick['composite']}\s+{pick['strength']:.1f}",
                         text), attribute
    assert judges() == judge_sha and len(judge_sha) == 1 and len(images) == 2


def test_runs_are_found_from_the_repository_root_when_not_from_the_working_directory(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    (repo / "runs" / "001-a").mkdir(parents=True)
    (repo / "runs" / "001-a" / Run.CHECKPOINT).write_bytes(b"")
    (repo / "notebooks").mkdir()
    monkeypatch.setattr(pipeline.run, "REPO_ROOT", repo)
    monkeypatch.chdir(repo / "notebooks")  # where Jupyter starts a notebook's kernel
    assert Run.open(None).dir == repo / "runs" / "001-a"  # the default: the latest under the repository's runs/
    assert Run.open("runs/001-a").dir == repo / "runs" / "001-a"
    assert Run.open("../runs/001-a").dir == Path("../runs/001-a")  # found from the working directory first
    with pytest.raises(FileNotFoundError, match=rf"runs/002-b does not exist \(looked in {repo}/notebooks/runs/002-b "
                       rf"and {repo}/runs/002-b\)"):
        Run.open("runs/002-b")
    (repo / "runs" / "001-a" / Run.CHECKPOINT).unlink()
    with pytest.raises(FileNotFoundError, match=rf"no run folder with a checkpoint.pt under runs \(looked in "
                       rf"{repo}/notebooks/runs and {repo}/runs\)"):
        Run.open(None)
