"""A run of the pipeline: its folder and provenance (`Run`), the training loop, torchrun set-up and the CLI helper.

Why a library folder of its own: `data/`, `models/` and `attributes/` each know one stage; a run ties them together
(which checkpoint, which cache, which latents, which directions) and must refuse stale combinations. That knowledge
lives here, once, so the scripts in `experiments/`, the demo and notebooks all share it.
"""
from pipeline.distributed import DistributedContext, init_distributed, pick_device, seed_everything, shutdown_distributed
from pipeline.run import Run, StaleArtifactError
from pipeline.training import TrainConfig, train

__all__ = [
    "DistributedContext",
    "Run",
    "StaleArtifactError",
    "TrainConfig",
    "init_distributed",
    "pick_device",
    "seed_everything",
    "shutdown_distributed",
    "train",
]
