"""Train the convolutional VAE on an image cache into runs/NNN-name/, single process or torchrun DDP.

    python -m experiments.train_vae --cache-dir cache/synthetic-64 --epochs 10
    python -m experiments.train_vae --resume runs/003-vae --epochs 20      # continue (only run-control flags change)
    torchrun --nproc-per-node=4 -m experiments.train_vae --batch-size 512 # global batch, split across ranks
"""
from __future__ import annotations

import sys
from pathlib import Path

from pipeline.cli import build_config, config_parser, run_script
from pipeline.distributed import init_distributed, shutdown_distributed
from pipeline.training import TrainConfig, resume_config, train


def main(config: TrainConfig) -> Path:
    """Train (under torchrun: one rank of DDP) and return the run folder."""
    ctx = init_distributed(config.device)
    try:
        return train(config, ctx).dir
    finally:
        shutdown_distributed()


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    given = vars(config_parser(TrainConfig, description=__doc__).parse_args(argv))
    if "resume" in given:
        return resume_config(given.pop("resume"), **given)  # flags given with --resume may only change run control
    return build_config(TrainConfig, given)


if __name__ == "__main__":
    run_script("train_vae", lambda argv: main(parse_args(argv)), sys.argv[1:])
