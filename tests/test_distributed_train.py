"""DDP on 2 CPU processes (gloo via torch.distributed.run) matches one process on the same global batches."""
import json
import os
import socket
import subprocess
import sys
import textwrap
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from conftest import TINY_VAE

from pipeline.training import TrainConfig, train
from models.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]

# Each rank trains through the real code path and saves the weights it ended with.
DRIVER = textwrap.dedent(
    """
    import json, sys
    import torch
    from pipeline import TrainConfig, init_distributed, shutdown_distributed, train

    config, out = TrainConfig(**json.loads(sys.argv[1])), sys.argv[2]
    ctx = init_distributed(config.device)
    run = train(config, ctx)
    torch.save(run.model(ctx.device).state_dict(), f"{out}/rank{ctx.rank}.pt")
    shutdown_distributed()
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_cpu_ranks_match_single_process(tiny_cache_dir, tmp_path):
    # fp32: bf16 rounds a batch of 8 per rank differently from a batch of 16, and the sums are what this checks
    values = dict(cache_dir=str(tiny_cache_dir), epochs=2, batch_size=16, model=asdict(TINY_VAE), lr=2e-3,
                  likelihood="sigma", kl_warmup_steps=3, device="cpu", threads=1, log_every=2, progress=False,
                  amp=False)
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    ddp_config = {**values, "runs_root": str(tmp_path / "ddp")}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", "--master-addr=127.0.0.1",
         f"--master-port={_free_port()}", str(driver), json.dumps(ddp_config), str(tmp_path)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]

    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for key in ranks[0]:
        assert torch.equal(ranks[0][key], ranks[1][key]), key
    runs = list((tmp_path / "ddp").iterdir())
    assert len(runs) == 1  # rank 0 alone made the run folder and wrote its files
    ddp_ckpt = load_checkpoint(runs[0] / "checkpoint.pt")
    assert (ddp_ckpt["epoch"], ddp_ckpt["step"]) == (2, 8)
    assert ddp_ckpt["model"].keys() == ranks[0].keys()  # plain weights, no `module.` prefix
    assert json.loads((runs[0] / "metrics.json").read_text())["world_size"] == 2

    single = load_checkpoint(train(TrainConfig(**{**values, "runs_root": str(tmp_path / "single")})).checkpoint_path)
    assert single["step"] == ddp_ckpt["step"]
    for key, value in single["model"].items():
        assert torch.allclose(ranks[0][key], value, rtol=1e-4, atol=1e-5), (key, (ranks[0][key] - value).abs().max())
        assert torch.equal(ddp_ckpt["model"][key], ranks[0][key])
