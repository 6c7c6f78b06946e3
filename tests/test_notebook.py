"""notebooks/explore_directions.ipynb runs top to bottom on a tiny run made here, with the libraries' public names."""
from __future__ import annotations

from pathlib import Path

import pytest
from conftest import write_tiny_cache

from attributes.fit import FitConfig
from pipeline.training import TrainConfig, train

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "explore_directions.ipynb"


@pytest.mark.slow
def test_notebook_executes_on_a_tiny_run(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    cache_dir = write_tiny_cache(tmp_path / "cache", n=160, size=32)
    run = train(TrainConfig(cache_dir=str(cache_dir), epochs=1, batch_size=32, latent_dim=8, widths=(8, 16),
                            runs_root=str(tmp_path / "runs"), device="cpu", progress=False))
    run.fit_directions(FitConfig(methods=("mean", "probe"), min_count=5, probe_jobs=1), progress=False)
    monkeypatch.setenv("LATENT_EDIT_RUN", str(run.dir))
    monkeypatch.setenv("LATENT_EDIT_EVAL_FACES", "16")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "\n".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", "")) for o in outputs)
    assert "direction kinds: ['mean', 'probe']" in text and "step" in text and "stgan_success" in text
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 2  # the cosine heat map and the edited faces
