"""optimal_log_sigma(distributed=True) on 2 gloo processes, each with half the batch, equals one process on all of it."""
from __future__ import annotations

import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from models.vae import optimal_log_sigma


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 3, 8, 8, generator=g) * 2 - 1  # (6, 3, 8, 8)
    # a different error per image, so a rank's half alone gives another sigma than the whole batch
    scale = torch.linspace(0.05, 0.6, 6)[:, None, None, None]
    return (x + scale * torch.randn(x.shape, generator=g)).clamp(-1, 1), x


def _rank(rank: int, world: int, port: int, out: str) -> None:
    torch.set_num_threads(1)  # a forked child must not use the parent's OpenMP pool (as DataLoader workers do)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        recon, x = _batch()
        rows = slice(rank * 3, (rank + 1) * 3)
        value = optimal_log_sigma(recon[rows], x[rows], distributed=True)
        torch.save((float(value), str(value.dtype), float(optimal_log_sigma(recon[rows], x[rows]))), f"{out}/{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_distributed_sigma_over_two_ranks_equals_the_single_process_value(tmp_path):
    # fork: the children need not import torch again (the parent never touched a GPU)
    mp.start_processes(_rank, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True, start_method="fork")
    results = {rank: torch.load(tmp_path / f"{rank}.pt") for rank in range(2)}
    recon, x = _batch()
    whole = float(optimal_log_sigma(recon, x))
    assert set(results) == {0, 1}
    for value, dtype, local in results.values():
        assert dtype == "torch.float32"
        assert abs(value - whole) < 1e-6
        assert abs(local - whole) > 1e-3  # the test would notice a rank using only its own half
