"""Sharded encoding under torchrun (2 gloo CPU processes) gives exactly the single-process rows, in order."""
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import torch

from attributes import encode_images
from models.vae import ConvVAE, VAEConfig

REPO = Path(__file__).resolve().parents[1]

WORKER = textwrap.dedent(
    """
    import sys
    import numpy as np
    import torch
    from attributes import encode_images
    from pipeline.distributed import init_distributed, shutdown_distributed
    from models.vae import ConvVAE, VAEConfig

    folder = sys.argv[1]
    ctx = init_distributed("cpu")
    assert ctx.world_size == 2, ctx
    model = ConvVAE(VAEConfig(image_size=32, widths=(8, 16), latent_dim=8))
    model.load_state_dict(torch.load(f"{folder}/model.pt", weights_only=True))
    images = np.load(f"{folder}/images.npy", mmap_mode="r")
    for n in (len(images), 1):  # 37 rows over 2 ranks (19 + 18), and 1 row (rank 1 has an empty shard)
        mu, logvar = encode_images(model, images[:n], batch_size=4, progress=False)
        if ctx.is_main:
            torch.save({"mu": mu, "logvar": logvar}, f"{folder}/out-{n}.pt")
    shutdown_distributed()
    """
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_rank_encoding_equals_single_process(tmp_path):
    torch.manual_seed(0)
    model = ConvVAE(VAEConfig(image_size=32, widths=(8, 16), latent_dim=8))
    torch.save(model.state_dict(), tmp_path / "model.pt")
    images = np.random.default_rng(0).integers(0, 256, (37, 3, 32, 32), dtype=np.uint8)  # N odd
    np.save(tmp_path / "images.npy", images)
    (tmp_path / "worker.py").write_text(WORKER)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc-per-node=2",
           "--master-addr=127.0.0.1", f"--master-port={free_port()}", str(tmp_path / "worker.py"), str(tmp_path)]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    for n in (37, 1):
        sharded = torch.load(tmp_path / f"out-{n}.pt", weights_only=True)
        mu, logvar = encode_images(model, images[:n], batch_size=4, progress=False, distributed=False)
        assert sharded["mu"].shape == (n, 8)
        # same rows in the same order: no duplicated, dropped or padded rows
        torch.testing.assert_close(sharded["mu"], mu, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(sharded["logvar"], logvar, rtol=1e-5, atol=1e-6)
        assert (sharded["mu"].abs().sum(dim=1) > 0).all()
