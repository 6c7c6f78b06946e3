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


def _rank(rank: int, world: int, port: int, results) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        recon, x = _batch()
        rows = slice(rank * 3, (rank + 1) * 3)
        value = optimal_log_sigma(recon[rows], x[rows], distributed=True)
        results[rank] = (float(value), str(value.dtype), float(optimal_log_sigma(recon[rows], x[rows])))
    finally:
        dist.destroy_process_group()


def test_distributed_sigma_over_two_ranks_equals_the_single_process_value():
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_rank, args=(2, _free_port(), results), nprocs=2, join=True)
        results = dict(results)
    recon, x = _batch()
    whole = float(optimal_log_sigma(recon, x))
    assert set(results) == {0, 1}
    for value, dtype, local in results.values():
        assert dtype == "torch.float32"
        assert abs(value - whole) < 1e-6
        assert abs(local - whole) > 1e-3  # the test would notice a rank using only its own half
