"""Train the convolutional VAE on an image cache; one run folder per run, resumable, single process or torchrun DDP.

    python -m experiments.train_vae --cache-dir cache/synthetic-64 --epochs 10
    python -m experiments.train_vae --resume runs/003-vae            # continue a killed run
    torchrun --nproc-per-node=4 -m experiments.train_vae --batch-size 512   # global batch, split across ranks

Reproducibility: the data order of epoch e is a permutation drawn from seed+e (DistributedSampler semantics: every
rank draws the same permutation, pads it to a multiple of the world size, and takes positions rank::world), and the
reparameterisation noise of step t is drawn for the whole global batch from a generator seeded by (seed, t), each
rank keeping its rows. So a resumed run repeats an uninterrupted one exactly on CPU, and N ranks with B/N images
each follow the single-process run with batch B (up to float summation order).
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from data.cache import FaceCache, fits_on_gpu, load_cache, split_to_device, to_float_images
from data.io import atomic_path, atomic_write_json, atomic_write_text
from experiments.common import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    DistributedContext,
    init_distributed,
    load_config,
    new_run_dir,
    save_config,
    seed_everything,
    shutdown_distributed,
)
from models.checkpoint import load_checkpoint, restore_rng_states, save_checkpoint
from models.metrics import active_units, kl_per_dimension, psnr, ssim
from models.vae import LIKELIHOODS, ConvVAE, VAEConfig, optimal_log_sigma, vae_loss

METRICS_CSV = "metrics.csv"
METRICS_JSON = "metrics.json"
FIGURES_DIR = "figures"
# Fields that may differ between a run and its resumption (they do not change what is computed).
RESUMABLE_OVERRIDES = ("epochs", "device", "workers", "compile", "resume", "runs_root", "log_images_every_epoch", "log_every")


@dataclass
class TrainConfig:
    """Settings of one VAE training run (saved as config.json in the run folder)."""

    cache_dir: str = "cache/synthetic-64"
    name: str = "vae"
    epochs: int = 10
    batch_size: int = 64  # global: split across DDP ranks
    lr: float = 1e-3
    beta: float = 1.0
    likelihood: str = "sigma"  # see models.vae.vae_loss
    kl_warmup_steps: int = 0  # linear ramp of beta from 0 over this many steps; 0 = off
    latent_dim: int = 128
    widths: tuple[int, ...] = (32, 64, 128, 256)
    norm: str = "none"  # "none" | "group" (GroupNorm)
    output: str = "tanh"
    device: str = "auto"
    seed: int = 0
    max_train_images: int | None = None
    workers: int | None = None  # CPU threads (no DataLoader workers: batches are indexed from a resident tensor)
    compile: str = "auto"  # "auto" = on for CUDA, off for CPU; "on" | "off"
    resume: str | None = None  # run folder to continue
    runs_root: str = "runs"
    log_images_every_epoch: bool = True
    log_every: int = 10  # steps between host syncs (loss check, progress bar)

    def __post_init__(self) -> None:
        self.widths = tuple(int(w) for w in self.widths)
        self.cache_dir, self.runs_root = str(self.cache_dir), str(self.runs_root)  # Paths welcome; JSON keeps str
        self.resume = str(self.resume) if self.resume is not None else None
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"TrainConfig.likelihood={self.likelihood!r}; expected one of {LIKELIHOODS}")
        if self.compile not in ("auto", "on", "off"):
            raise ValueError(f"TrainConfig.compile={self.compile!r}; expected 'auto', 'on' or 'off'")
        for name, minimum in (("epochs", 0), ("batch_size", 1), ("log_every", 1)):
            if getattr(self, name) < minimum:
                raise ValueError(f"TrainConfig.{name}={getattr(self, name)!r}; expected an integer >= {minimum}")


def resume_config(run_dir: str | Path, **overrides) -> TrainConfig:
    """The saved config of `run_dir`, set to resume it, with run-control `overrides` (e.g. epochs=20)."""
    bad = set(overrides) - set(RESUMABLE_OVERRIDES)
    if bad:
        raise ValueError(f"cannot change {sorted(bad)} when resuming; only {RESUMABLE_OVERRIDES}")
    config = load_config(TrainConfig, Path(run_dir) / CONFIG_FILE)
    return dataclasses.replace(config, **{**overrides, "resume": str(run_dir)})


def epoch_batches(n: int, *, seed: int, epoch: int, batch_size: int, rank: int = 0, world_size: int = 1) -> torch.Tensor:
    """This rank's image indices for every step of an epoch, (steps, batch_size // world_size).

    DistributedSampler semantics: one permutation from seed+epoch, padded by wrapping to a multiple of world_size,
    rank r takes positions r::world. Step t of all ranks together covers positions [t*B, (t+1)*B) of the padded
    permutation, i.e. the same images a single process with batch B sees. The last partial batch is dropped (a
    different random few each epoch) so every step has the same shape.
    """
    if batch_size % world_size:
        raise ValueError(f"batch_size {batch_size} is not divisible by the world size {world_size}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch))
    total = math.ceil(n / world_size) * world_size
    if total > n:
        perm = torch.cat([perm, perm.repeat(math.ceil((total - n) / n))[: total - n]])
    shard = perm[rank::world_size]
    local = batch_size // world_size
    steps = len(shard) // local
    if steps == 0:
        raise ValueError(f"the train split has {n} images, fewer than one batch of {batch_size}")
    return shard[: steps * local].view(steps, local)


def step_noise(
    seed: int, step: int, batch_size: int, latent_dim: int, device: torch.device, rank: int = 0, world_size: int = 1
) -> torch.Tensor:
    """Reparameterisation noise of one step for this rank's rows of the global batch, (B / world, D)."""
    generator = torch.Generator(device=device).manual_seed(seed * 1_000_003 + step)
    eps = torch.randn(batch_size, latent_dim, generator=generator, device=device)  # (B, D)
    return eps[rank::world_size]  # rank r's local row j is global row j*world + r, as in epoch_batches


def _split_images(cache: FaceCache, split: str, limit: int | None = None) -> torch.Tensor:
    images, _ = split_to_device(cache, split, "cpu", subset=slice(limit))  # (n, 3, S, S) uint8
    return images


def _place_train_images(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Whole split resident on the GPU as uint8 when it fits in half the free memory, else pinned host memory."""
    if device.type != "cuda":
        return images
    return images.to(device) if fits_on_gpu(images.nbytes, device) else images.pin_memory()


def _to_input(batch_u8: torch.Tensor, device: torch.device) -> torch.Tensor:
    x = to_float_images(batch_u8.to(device, non_blocking=True))  # (B, 3, S, S) in [-1, 1]
    return x.contiguous(memory_format=torch.channels_last) if device.type == "cuda" else x


def _autocast(device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


@torch.no_grad()
def evaluate(model: ConvVAE, images: torch.Tensor, config: TrainConfig, device: torch.device) -> dict[str, float]:
    """Loss terms with fixed noise (comparable across epochs) and PSNR of decode(mu), means over `images` (uint8)."""
    model.eval()
    totals = {"loss": 0.0, "recon": 0.0, "kl": 0.0, "psnr": 0.0}
    generator = torch.Generator(device=device).manual_seed(config.seed)
    for start in range(0, len(images), config.batch_size):
        x = _to_input(images[start : start + config.batch_size], device)
        with _autocast(device):
            mu, logvar = model.encode(x)
            eps = torch.randn(mu.shape, generator=generator, device=device)
            recon = model.decode(model.reparameterize(mu, logvar, eps))
            mean_recon = model.decode(mu)
        terms = vae_loss(recon, x, mu, logvar, beta=config.beta, likelihood=config.likelihood)
        for key in ("loss", "recon", "kl"):
            totals[key] += float(terms[key]) * len(x)
        totals["psnr"] += float(psnr(mean_recon.float().clamp(-1, 1), x).sum())
    model.train()
    return {key: value / max(len(images), 1) for key, value in totals.items()}


@torch.no_grad()
def save_epoch_figures(model: ConvVAE, images: torch.Tensor, figures: Path, epoch: int, config: TrainConfig, device) -> None:
    """Reconstruction grid (originals over decode(mu)) and prior samples from fixed z, as PNGs."""
    from torchvision.utils import save_image

    model.eval()
    x = _to_input(images[:8], device)
    with _autocast(device):
        recon = model.decode(model.encode(x)[0])
        z = torch.randn(64, config.latent_dim, generator=torch.Generator().manual_seed(config.seed)).to(device)
        samples = model.decode(z)
    model.train()
    grids = {
        f"recon-epoch{epoch:03d}.png": (torch.cat([x, recon.float()]), len(x)),
        f"samples-epoch{epoch:03d}.png": (samples.float(), 8),
    }
    for name, (grid, nrow) in grids.items():
        with atomic_path(figures / name) as tmp:
            save_image(grid.float().clamp(-1, 1).cpu(), tmp, nrow=nrow, normalize=True, value_range=(-1, 1), format="png")


def _read_metrics(path: Path, upto_epoch: int) -> list[dict]:
    """Rows of an existing metrics.csv up to a checkpointed epoch (rows after it belong to the killed epoch)."""
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [row for row in csv.DictReader(f) if int(row["epoch"]) <= upto_epoch]


def _write_metrics(rows: list[dict], path: Path) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[-1].keys()))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(buffer.getvalue(), path)


def plot_curves(rows: list[dict], figures: Path) -> None:
    """Training curves (train and valid loss, recon, KL per epoch) as a PNG with its CSV beside it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ("loss", "recon", "kl")
    epochs = [int(r["epoch"]) for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
    for ax, key in zip(axes, keys):
        ax.plot(epochs, [float(r[key]) for r in rows], "o-", label="train")
        ax.plot(epochs, [float(r[f"valid_{key}"]) for r in rows], "s--", label="valid")
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.legend()
    fig.tight_layout()
    with atomic_path(figures / "curves.png") as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    columns = ["epoch"] + [f"{p}{k}" for k in keys for p in ("", "valid_")]
    _write_metrics([{c: r[c] for c in columns} for r in rows], figures / "curves.csv")


@torch.no_grad()
def final_metrics(model: ConvVAE, images: torch.Tensor, config: TrainConfig, device: torch.device) -> dict:
    """Test-split PSNR/SSIM of decode(mu), KL per latent dimension and active units (Burda et al. 2016)."""
    model.eval()
    mus, logvars, psnrs, ssims = [], [], [], []
    for start in range(0, len(images), config.batch_size):
        x = _to_input(images[start : start + config.batch_size], device)
        with _autocast(device):
            mu, logvar = model.encode(x)
            recon = model.decode(mu).float().clamp(-1, 1)
        mus.append(mu.float().cpu())
        logvars.append(logvar.float().cpu())
        psnrs.append(psnr(recon, x).cpu())
        if x.shape[-1] >= 11:
            ssims.append(ssim(recon, x).cpu())
    mu, logvar = torch.cat(mus), torch.cat(logvars)  # (n, D)
    kl_dims = kl_per_dimension(mu, logvar)  # (D,)
    count, variance = active_units(mu) if len(mu) >= 2 else (0, torch.zeros(mu.shape[1]))
    return {
        "test_images": len(images),
        "test_psnr": float(torch.cat(psnrs).mean()),
        "test_ssim": float(torch.cat(ssims).mean()) if ssims else None,
        "test_kl": float(kl_dims.sum()),
        "kl_per_dim": [round(float(v), 6) for v in kl_dims],
        "active_units": count,
        "active_unit_threshold": 0.01,
        "posterior_mean_variance": [round(float(v), 6) for v in variance],
    }


def _broadcast_path(path: Path | None, ctx: DistributedContext) -> Path:
    if not ctx.is_distributed:
        return path
    holder = [str(path) if path is not None else None]
    dist.broadcast_object_list(holder, src=0)
    return Path(holder[0])


def train(config: TrainConfig, ctx: DistributedContext | None = None) -> tuple[Path, ConvVAE]:
    """The training run on this process (rank); returns the run folder and the trained plain model."""
    ctx = ctx or DistributedContext()
    device, rank, world = ctx.device, ctx.rank, ctx.world_size
    if device.type == "cpu":
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
        torch.set_num_threads(config.workers or max(1, (os.cpu_count() or 1) // local_world))
    else:
        torch.set_float32_matmul_precision("high")  # TF32 matmuls
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True

    cache = load_cache(config.cache_dir)  # before making a run folder, so a missing cache leaves none behind
    # Run folder, config and (when resuming) the checkpoint to continue from.
    checkpoint = None
    if config.resume:
        run_dir = Path(config.resume)
        saved = load_config(TrainConfig, run_dir / CONFIG_FILE)
        changed = [f.name for f in dataclasses.fields(TrainConfig)
                   if f.name not in RESUMABLE_OVERRIDES and getattr(saved, f.name) != getattr(config, f.name)]
        if changed:
            raise ValueError(f"resuming {run_dir}: config differs from {run_dir / CONFIG_FILE} in {changed}")
        checkpoint = load_checkpoint(run_dir / CHECKPOINT_FILE, map_location="cpu")
    else:
        run_dir = _broadcast_path(new_run_dir(config.name, config.runs_root) if ctx.is_main else None, ctx)
    figures = run_dir / FIGURES_DIR
    if ctx.is_main:
        figures.mkdir(parents=True, exist_ok=True)
        save_config(config, run_dir / CONFIG_FILE)

    seed_everything(config.seed)
    train_images = _place_train_images(_split_images(cache, "train", config.max_train_images), device)
    valid_images = _split_images(cache, "valid")
    if len(valid_images) == 0:
        raise ValueError(f"{config.cache_dir}: the cache has no 'valid' images to monitor training with")
    model = ConvVAE(VAEConfig(
        image_size=cache.size, latent_dim=config.latent_dim, widths=config.widths,
        likelihood=config.likelihood, norm=config.norm, output=config.output,
    )).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    start_epoch, step = 0, 0
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        start_epoch, step = int(checkpoint["epoch"]), int(checkpoint["step"])
        restore_rng_states(checkpoint["rng"])
    plain = model
    if ctx.is_distributed:
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if config.compile == "on" or (config.compile == "auto" and device.type == "cuda"):
        model = torch.compile(model)

    rows = _read_metrics(run_dir / METRICS_CSV, start_epoch) if checkpoint is not None else []
    n_train = len(train_images)
    for epoch in range(start_epoch, config.epochs):
        batches = epoch_batches(n_train, seed=config.seed, epoch=epoch, batch_size=config.batch_size, rank=rank,
                                world_size=world).to(train_images.device)  # (steps, B / world), beside the images
        history = torch.zeros(len(batches), 3, device=device)  # (steps, [loss, recon, kl]) kept on device
        epoch_start_step, t0 = step, time.perf_counter()
        bar = tqdm(batches, desc=f"epoch {epoch + 1}/{config.epochs}", disable=not ctx.is_main, leave=False)
        for i, idx in enumerate(bar):
            x = _to_input(train_images[idx], device)
            eps = step_noise(config.seed, step, config.batch_size, config.latent_dim, device, rank, world)
            beta = config.beta * min(1.0, (step + 1) / config.kl_warmup_steps) if config.kl_warmup_steps else config.beta
            with _autocast(device):
                recon, mu, logvar = model(x, eps)
            log_sigma = None
            if config.likelihood == "sigma" and ctx.is_distributed:  # sigma over the global batch, as one process
                log_sigma = optimal_log_sigma(recon, x, distributed=True)
            losses = vae_loss(recon, x, mu, logvar, beta=beta, likelihood=config.likelihood, log_sigma=log_sigma)
            optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            optimizer.step()
            history[i] = torch.stack([losses["loss"], losses["recon"], losses["kl"]]).detach()
            step += 1
            if (i + 1) % config.log_every == 0 or i + 1 == len(batches):
                bad = ~torch.isfinite(history[: i + 1]).all(1)  # (i+1,)
                flag = bad.any().float()
                if ctx.is_distributed:
                    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                if flag.item():
                    first = int(bad.nonzero()[0, 0]) if bad.any() else i
                    raise FloatingPointError(
                        f"non-finite training loss at step {epoch_start_step + first + 1} (epoch {epoch + 1}, "
                        f"batch {first + 1}/{len(batches)}) on rank {rank}; stopped. Last good checkpoint: "
                        f"{run_dir / CHECKPOINT_FILE} (epoch {epoch}). Try a lower --lr or a KL warm-up."
                    )
                bar.set_postfix(loss=f"{history[: i + 1, 0].mean().item():.4g}")
        seconds = time.perf_counter() - t0
        means = history.mean(0)  # (3,)
        if ctx.is_distributed:
            dist.all_reduce(means)
            means /= world
        if not ctx.is_main:
            continue
        valid = evaluate(plain, valid_images, config, device)
        rows.append({
            "epoch": epoch + 1, "step": step, "loss": float(means[0]), "recon": float(means[1]), "kl": float(means[2]),
            "beta": beta, "time_s": round(seconds, 3), "images_per_s": round(len(batches) * config.batch_size / seconds, 1),
            **{f"valid_{k}": v for k, v in valid.items()},
        })
        _write_metrics(rows, run_dir / METRICS_CSV)
        if config.log_images_every_epoch:
            save_epoch_figures(plain, valid_images, figures, epoch + 1, config, device)
        save_checkpoint(run_dir / CHECKPOINT_FILE, model=plain, optimizer=optimizer, step=step, epoch=epoch + 1,
                        extra={"train_config": asdict(config)})
        tqdm.write(
            f"epoch {epoch + 1}: loss {rows[-1]['loss']:.4g} (recon {rows[-1]['recon']:.4g}, kl {rows[-1]['kl']:.4g}), "
            f"valid loss {valid['loss']:.4g}, valid PSNR {valid['psnr']:.2f} dB, {rows[-1]['images_per_s']} img/s"
        )

    if ctx.is_main:
        if rows:
            plot_curves(rows, figures)
        test_images = _split_images(cache, "test")
        results = final_metrics(plain, test_images, config, device) if len(test_images) else {"test_images": 0}
        results.update(
            epochs=config.epochs, steps=step, device=str(device), world_size=world,
            train_images=n_train, images_per_s_last_epoch=float(rows[-1]["images_per_s"]) if rows else None,
        )
        atomic_write_json(results, run_dir / METRICS_JSON)
    if ctx.is_distributed:
        dist.barrier()  # every rank returns once the run folder is complete
    return run_dir, plain


def main(config: TrainConfig) -> Path:
    """Train (under torchrun: one rank of DDP) and return the run folder."""
    ctx = init_distributed(config.device)
    try:
        run_dir, _ = train(config, ctx)
    finally:
        shutdown_distributed()
    return run_dir


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    defaults = TrainConfig()
    for field in dataclasses.fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        default = getattr(defaults, field.name)
        if field.name == "widths":
            parser.add_argument(flag, type=int, nargs="+", default=argparse.SUPPRESS, help=f"default {default}")
        elif isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS)
        elif field.name in ("max_train_images", "workers"):
            parser.add_argument(flag, type=int, default=argparse.SUPPRESS, help="default: all / auto")
        elif field.name == "resume":
            parser.add_argument(flag, default=argparse.SUPPRESS, metavar="RUN_DIR",
                                help="continue this run folder from its checkpoint and config.json")
        else:
            choices = {"likelihood": LIKELIHOODS, "norm": ("none", "group"), "output": ("tanh", "linear"),
                       "compile": ("auto", "on", "off")}.get(field.name)
            parser.add_argument(flag, type=type(default), choices=choices, default=argparse.SUPPRESS,
                                help=f"default {default!r}")
    given = vars(parser.parse_args(argv))
    if "resume" in given:
        # Flags given with --resume may only change run control (e.g. --epochs to train longer).
        return resume_config(given.pop("resume"), **given)
    return TrainConfig(**given)


if __name__ == "__main__":
    main(parse_args())
