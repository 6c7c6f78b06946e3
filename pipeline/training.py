"""Train the convolutional VAE on an image cache into a run folder: one process, or one rank of torchrun DDP.

    from pipeline import TrainConfig, train
    run = train(TrainConfig(cache_dir="cache/synthetic-64", epochs=10))    # -> Run("runs/001-vae")
    run = train(TrainConfig(resume="runs/001-vae", epochs=20))              # continue it

Reproducibility: the data order of epoch e is a permutation drawn from seed+e (DistributedSampler semantics: every
rank draws the same permutation, pads it to a multiple of the world size, and takes positions rank::world), and the
reparameterisation noise of step t is drawn for the whole global batch from a generator seeded by (seed, t), each
rank keeping its rows. So a resumed run repeats an uninterrupted one exactly on CPU, and N ranks with B/N images
each follow the single-process run with batch B (up to float summation order). On CUDA cuDNN's autotuning and
atomics make a resumed run equal only up to float noise unless `deterministic=True`.
"""
from __future__ import annotations

import dataclasses
import math
import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pandas as pd
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from attributes.encode import encode_images
from data.cache import FaceCache, fits_on_gpu, load_cache, split_to_device, to_float_images
from data.io import atomic_path, atomic_write_json, atomic_write_text, save_figure
from models.accel import BatchGatherer, backend_flags, bf16_autocast, compile_with_fallback, make_adam, to_model_input
from models.checkpoint import restore_rng_states, save_checkpoint
from models.metrics import active_units, kl_per_dimension, psnr, ssim
from models.vae import LIKELIHOODS, ConvVAE, VAEConfig, optimal_log_sigma, vae_loss
from pipeline.distributed import DistributedContext, pick_device, seed_everything
from pipeline.run import RUNS_ROOT, Run

# Fields that may differ between a run and its resumption (they do not change what is computed).
RESUMABLE_OVERRIDES = ("epochs", "device", "threads", "compile", "resume", "runs_root", "log_images_every_epoch",
                       "log_every")


@dataclass
class TrainConfig:
    """Settings of one VAE training run (saved as config.json in the run folder)."""

    cache_dir: str = field(default="cache/synthetic-64", metadata={"help": "image cache (prepare_data)"})
    name: str = field(default="vae", metadata={"help": "run folder runs/NNN-NAME"})
    epochs: int = 10
    batch_size: int = field(default=64, metadata={"help": "global batch, split across DDP ranks"})
    lr: float = 1e-3
    beta: float = 1.0
    likelihood: str = field(default="sigma", metadata={"choices": LIKELIHOODS, "help": "see models.vae.vae_loss"})
    kl_warmup_steps: int = field(default=0, metadata={"help": "linear beta ramp over this many steps; 0 = off"})
    # the network, flagged as if its fields were this class's (--latent-dim, --widths, --norm, --output); train()
    # sizes it for the cache's images
    model: VAEConfig = field(default_factory=VAEConfig, metadata={"flatten": ""})
    device: str = "auto"
    seed: int = 0
    max_train_images: int | None = field(default=None, metadata={"help": "a prefix of the train split; None = all"})
    threads: int | None = field(default=None, metadata={"help": "torch CPU threads; None = cores / local ranks"})
    amp: bool = field(default=True, metadata={
        "help": "bf16 autocast where the device runs it natively (CUDA; CPUs with AVX-512 BF16 or AMX)"})
    compile: str = field(default="auto", metadata={"choices": ("auto", "on", "off"), "help": "auto = on for CUDA"})
    deterministic: bool = field(default=False, metadata={"help": "CUDA: deterministic kernels, no cuDNN autotuning"})
    resume: str | None = field(default=None, metadata={"help": "continue this run folder from its checkpoint",
                                                       "default_text": "none"})
    runs_root: str = str(RUNS_ROOT)
    log_images_every_epoch: bool = True
    log_every: int = field(default=10, metadata={"help": "steps between host syncs (loss check, progress bar)"})
    progress: bool = field(default=True, metadata={"cli": False})

    def __post_init__(self) -> None:
        if isinstance(self.model, dict):  # from JSON
            self.model = VAEConfig(**self.model)
        self.cache_dir, self.runs_root = str(self.cache_dir), str(self.runs_root)  # Paths welcome; JSON keeps str
        self.resume = str(self.resume) if self.resume is not None else None
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"TrainConfig.likelihood={self.likelihood!r}; expected one of {LIKELIHOODS}")
        if self.compile not in ("auto", "on", "off"):
            raise ValueError(f"TrainConfig.compile={self.compile!r}; expected 'auto', 'on' or 'off'")
        for name, minimum in (("epochs", 0), ("batch_size", 1), ("log_every", 1)):
            if getattr(self, name) < minimum:
                raise ValueError(f"TrainConfig.{name}={getattr(self, name)!r}; expected an integer >= {minimum}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"TrainConfig.lr={self.lr!r}; expected a positive finite learning rate")

    def for_cache(self, cache: FaceCache) -> TrainConfig:
        """This config with the model sized for `cache`'s images."""
        return dataclasses.replace(self, model=dataclasses.replace(self.model, image_size=cache.size))

    def compiles_on(self, device: torch.device) -> bool:
        """Whether the run torch.compiles its model on `device` ("auto": on CUDA only)."""
        return self.compile == "on" or (self.compile == "auto" and device.type == "cuda")


def resume_config(run_dir: str | Path, **overrides) -> TrainConfig:
    """The saved config of `run_dir`, set to resume it, with run-control `overrides` (e.g. epochs=20)."""
    bad = set(overrides) - set(RESUMABLE_OVERRIDES) - {"progress"}
    if bad:
        raise ValueError(f"cannot change {sorted(bad)} when resuming {run_dir}; only {RESUMABLE_OVERRIDES}")
    return dataclasses.replace(saved_config(Run.open(run_dir)), **overrides, resume=str(run_dir))


def saved_config(run: Run) -> TrainConfig:
    """A run's config.json as a TrainConfig (see `config_from_dict`)."""
    return config_from_dict(run.config())


def config_from_dict(values: dict[str, Any]) -> TrainConfig:
    """A TrainConfig from its saved dict (config.json, a checkpoint's extra["train_config"]). A dict in the flat
    layout (the model's fields beside the training ones) gets them nested under "model"; a dict without `amp` gets
    what the code that wrote it did."""
    values = dict(values)
    if "model" not in values:
        values["model"] = {f.name: values.pop(f.name) for f in dataclasses.fields(VAEConfig) if f.name in values}
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {k: v for k, v in values.items() if k in names}
    if "amp" not in values:  # written by code without TrainConfig.amp, which trained in bf16 on CUDA only
        values["amp"] = pick_device(values.get("device", "auto")).type == "cuda"
    return TrainConfig(**values)


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


@contextmanager
def cpu_threads(threads: int | None) -> Iterator[None]:
    """`threads` torch CPU threads for the block (None = leave as is), restored after."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _train_split(cache: FaceCache, config: TrainConfig, device: torch.device,
                 world: int) -> tuple[torch.Tensor, BatchGatherer | None]:
    """The train split as uint8 (n, 3, S, S): resident on the GPU when it fits in half the free memory (uploaded in
    chunks straight from the memory map), else in host memory with a gatherer that stages each batch through two
    pinned buffers so its copy overlaps compute; on CPU the host tensor alone."""
    subset = slice(config.max_train_images)
    if device.type == "cuda":
        rows = len(cache.split_indices("train")[subset])
        if fits_on_gpu(rows * 3 * cache.size**2, device):
            return split_to_device(cache, "train", device, subset)[0], None
    images = split_to_device(cache, "train", "cpu", subset)[0]
    gather = BatchGatherer(images, config.batch_size // world, device) if device.type == "cuda" else None
    return images, gather


def training_input(batch_u8: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A uint8 batch (B, 3, S, S) as the training model takes it on every device: [-1, 1] floats, channels_last (the
    layout `new_training_model` gives the model). Benchmarks that time the training step feed it through this too."""
    return to_model_input(batch_u8, device, channels_last=True)  # (B, 3, S, S) in [-1, 1]


def new_training_model(model_config: VAEConfig, lr: float, device: torch.device) -> tuple[ConvVAE, torch.optim.Adam]:
    """A fresh model on `device` and its optimiser, as a training run starts: channels_last (cuDNN's and oneDNN's fast
    convolution layout: benchmarks/RESULTS.md has the CPU step times), Adam fused on CUDA."""
    model = ConvVAE(model_config).to(device).to(memory_format=torch.channels_last)
    return model, make_adam(model.parameters(), lr, device)


def train_step(model, optimizer: torch.optim.Optimizer, x: torch.Tensor, eps: torch.Tensor, *, beta: float,
               likelihood: str, distributed: bool = False, amp: bool = True) -> torch.Tensor:
    """One optimisation step on the model input x (B, 3, S, S) with noise eps (B, D) -> [loss, recon, kl] (3,),
    detached and left on the device (reading it is a host sync). amp: the forward pass under `bf16_autocast`."""
    with bf16_autocast(x.device, amp):
        recon, mu, logvar = model(x, eps)
    log_sigma = None
    if likelihood == "sigma" and distributed:  # sigma over the global batch, as one process would compute it
        log_sigma = optimal_log_sigma(recon, x, distributed=True)
    losses = vae_loss(recon, x, mu, logvar, beta=beta, likelihood=likelihood, log_sigma=log_sigma)
    optimizer.zero_grad(set_to_none=True)
    losses["loss"].backward()
    optimizer.step()
    return torch.stack([losses["loss"], losses["recon"], losses["kl"]]).detach()


@torch.no_grad()
def validation_losses(model: ConvVAE, images: torch.Tensor, config: TrainConfig, device: torch.device) -> dict[str, float]:
    """Loss terms with fixed noise (comparable across epochs) and PSNR of decode(mu), means over `images` (uint8)."""
    model.eval()
    totals = {"loss": 0.0, "recon": 0.0, "kl": 0.0, "psnr": 0.0}
    generator = torch.Generator(device=device).manual_seed(config.seed)
    for start in range(0, len(images), config.batch_size):
        x = training_input(images[start : start + config.batch_size], device)
        with bf16_autocast(device, config.amp):
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
    x = training_input(images[:8], device)
    with bf16_autocast(device, config.amp):
        recon = model.decode(model.encode(x)[0])
        z = torch.randn(64, config.model.latent_dim, generator=torch.Generator().manual_seed(config.seed)).to(device)
        samples = model.decode(z)
    model.train()
    grids = {
        f"recon-epoch{epoch:03d}.png": (torch.cat([x, recon.float()]), len(x)),
        f"samples-epoch{epoch:03d}.png": (samples.float(), 8),
    }
    for name, (grid, nrow) in grids.items():
        with atomic_path(figures / name) as tmp:
            save_image(grid.float().clamp(-1, 1).cpu(), tmp, nrow=nrow, normalize=True, value_range=(-1, 1), format="png")


def plot_curves(rows: list[dict] | pd.DataFrame, figures: Path) -> list[Path]:
    """Training curves (train and valid loss, recon, KL per epoch) as figures/curves.png with curves.csv beside it."""
    import matplotlib.pyplot as plt

    frame = pd.DataFrame(rows)
    keys = ("loss", "recon", "kl")
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
    for ax, key in zip(axes, keys):
        ax.plot(frame["epoch"], frame[key].astype(float), "o-", label="train")
        ax.plot(frame["epoch"], frame[f"valid_{key}"].astype(float), "s--", label="valid")
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.legend()
    fig.tight_layout()
    paths = save_figure(fig, frame[["epoch"] + [f"{p}{k}" for k in keys for p in ("", "valid_")]], figures / "curves")
    plt.close(fig)
    return paths


@torch.no_grad()
def final_metrics(model: ConvVAE, images: torch.Tensor, config: TrainConfig, device: torch.device) -> dict:
    """Test-split PSNR/SSIM of decode(mu), KL per latent dimension and active units (Burda et al. 2016)."""
    mu, logvar = encode_images(model, images, batch_size=config.batch_size, device=device, progress=False,
                               distributed=False)  # (n, D); rank 0 alone computes these
    model.eval()
    psnrs, ssims = [], []
    for start in range(0, len(images), config.batch_size):
        x = to_float_images(images[start : start + config.batch_size].to(device))  # (B, 3, S, S)
        with bf16_autocast(device, config.amp):
            recon = model.decode(mu[start : start + config.batch_size].to(device)).float().clamp(-1, 1)
        # On the model's device: SSIM's float64 window passes over a CelebA-sized test split take minutes on a CPU.
        psnrs.append(psnr(recon, x).cpu())
        if x.shape[-1] >= 11:
            ssims.append(ssim(recon, x).cpu())
    model.train()
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


def _open_for_resume(config: TrainConfig, cache: FaceCache) -> tuple[Run, dict]:
    """The run to continue and its checkpoint, after checking both still fit `config` and `cache`: the model against
    the checkpoint's model_args, the other settings against the TrainConfig it records it was trained with
    (`resume_config` reads config.json, so config.json cannot check what it gave)."""
    run = Run.open(config.resume)
    run.check_writable("train_vae")
    if not run.checkpoint_path.is_file():
        raise FileNotFoundError(f"cannot resume {run.dir}: it has no {Run.CHECKPOINT} yet (the run stopped before its "
                                f"first epoch ended); start it again without --resume")
    checkpoint = run.checkpoint
    stored = VAEConfig.from_model_args(checkpoint["model_args"], run.checkpoint_path)
    if stored != config.model:
        raise ValueError(f"cannot resume {run.dir}: {run.checkpoint_path} holds a model {asdict(stored)} "
                         f"but {run.path(Run.CONFIG)} with cache {cache.directory} asks for {asdict(config.model)}")
    recorded = (checkpoint.get("extra") or {}).get("train_config")
    if recorded is None:
        raise ValueError(f"cannot resume {run.dir}: {run.checkpoint_path} records no train_config, so the settings it "
                         "was trained with are unknown; start a new run")
    trained = config_from_dict(recorded)
    names = {f.name for f in dataclasses.fields(TrainConfig)} - set(RESUMABLE_OVERRIDES) - {"progress", "model"}
    changed = sorted(name for name in names if getattr(trained, name) != getattr(config, name))
    if changed:
        raise ValueError(f"resuming {run.dir}: config differs from the one {run.checkpoint_path} was trained with in "
                         f"{changed}")
    if run.trained_on is not None and run.trained_on != cache.fingerprint:
        raise ValueError(
            f"cannot resume {run.dir}: {run.checkpoint_path} was trained on a cache with fingerprint "
            f"{run.trained_on[:12]}, but {cache.directory} now holds other data (fingerprint {cache.fingerprint[:12]}); "
            "rebuild the original cache or start a new run"
        )
    removed = run.remove_partial_writes()
    if removed:
        print(f"removed {len(removed)} partial write(s) a killed run left in {run.dir}")
    return run, checkpoint


def train(config: TrainConfig, ctx: DistributedContext | None = None, *, cache: FaceCache | None = None) -> Run:
    """Train (on this process, or this rank under torchrun) and return the run, its model kept in memory.

    Without `ctx`, a single process on `config.device` ("auto": the GPU when there is one).
    """
    ctx = ctx or DistributedContext(device=pick_device(config.device))
    if cache is None:  # before a run folder is made; a resumed run's cache is found as `Run.cache_dir` finds it
        cache = load_cache(Run.open(config.resume).cache_dir if config.resume else config.cache_dir)
    threads = config.threads or (max(1, (os.cpu_count() or 1) // ctx.local_world_size) if ctx.device.type == "cpu" else None)
    with cpu_threads(threads), backend_flags(ctx.device, deterministic=config.deterministic):
        return _train(config, ctx, cache)


def _train(config: TrainConfig, ctx: DistributedContext, cache: FaceCache) -> Run:
    """The training loop, top to bottom (set-up or resume, epochs of steps, each epoch's writes, the final metrics):
    one function on purpose, so the whole loop reads in order, as nanoGPT's does."""
    device, rank, world = ctx.device, ctx.rank, ctx.world_size
    config = config.for_cache(cache)
    checkpoint = None
    if config.resume:
        run, checkpoint = _open_for_resume(config, cache)
    else:
        run = Run(ctx.broadcast(str(Run.create(config.name, config.runs_root).dir) if ctx.is_main else None))
    run.use_cache(cache)
    figures = run.figures_dir
    if ctx.is_main:
        figures.mkdir(parents=True, exist_ok=True)
        atomic_write_json(asdict(config), run.path(Run.CONFIG))

    seed_everything(config.seed)
    train_images, gather = _train_split(cache, config, device, world)  # (n, 3, S, S) uint8
    valid_images, _ = split_to_device(cache, "valid", "cpu")
    if len(valid_images) == 0:
        raise ValueError(f"{config.cache_dir}: the cache has no 'valid' images to monitor training with")
    model, optimizer = new_training_model(config.model, config.lr, device)
    start_epoch, step = 0, 0
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        start_epoch, step = int(checkpoint["epoch"]), int(checkpoint["step"])
        restore_rng_states(checkpoint["rng"])
    plain = model
    if ctx.is_distributed:
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    model = compile_with_fallback(model, enabled=config.compiles_on(device))

    rows = _read_metrics(run, start_epoch) if checkpoint is not None else []
    n_train = len(train_images)
    for epoch in range(start_epoch, config.epochs):
        batches = epoch_batches(n_train, seed=config.seed, epoch=epoch, batch_size=config.batch_size, rank=rank,
                                world_size=world)  # (steps, B / world)
        if gather is None:
            batches = batches.to(train_images.device)  # beside the images, so indexing them needs no sync
        history = torch.zeros(len(batches), 3, device=device)  # (steps, [loss, recon, kl]) kept on device
        epoch_start_step, t0 = step, time.perf_counter()
        bar = tqdm(batches, desc=f"epoch {epoch + 1}/{config.epochs}", disable=not (ctx.is_main and config.progress),
                   leave=False)
        for i, idx in enumerate(bar):
            x = training_input(gather(idx) if gather is not None else train_images[idx], device)
            eps = step_noise(config.seed, step, config.batch_size, config.model.latent_dim, device, rank, world)
            beta = config.beta * min(1.0, (step + 1) / config.kl_warmup_steps) if config.kl_warmup_steps else config.beta
            history[i] = train_step(model, optimizer, x, eps, beta=beta, likelihood=config.likelihood,
                                    distributed=ctx.is_distributed, amp=config.amp)
            step += 1
            if (i + 1) % config.log_every == 0 or i + 1 == len(batches):
                _stop_if_diverged(history[: i + 1], ctx, run, epoch, epoch_start_step, len(batches))
                bar.set_postfix(loss=f"{history[: i + 1, 0].mean().item():.4g}")
        seconds = time.perf_counter() - t0
        means = history.mean(0)  # (3,)
        if ctx.is_distributed:
            dist.all_reduce(means)
            means /= world
        if ctx.is_main:
            rows.append({"epoch": epoch + 1, "step": step, "loss": float(means[0]), "recon": float(means[1]),
                         "kl": float(means[2]), "beta": beta, "time_s": round(seconds, 3),
                         "images_per_s": round(len(batches) * config.batch_size / seconds, 1)})
            _end_epoch(run, plain, optimizer, rows, valid_images, config, device, step, cache.fingerprint)

    if ctx.is_main:
        if rows:
            plot_curves(rows, figures)
        test_images, _ = split_to_device(cache, "test", "cpu")
        results = final_metrics(plain, test_images, config, device) if len(test_images) else {"test_images": 0}
        results.update(
            epochs=config.epochs, steps=step, device=str(device), world_size=world,
            train_images=n_train, images_per_s_last_epoch=float(rows[-1]["images_per_s"]) if rows else None,
        )
        atomic_write_json(results, run.path(Run.METRICS_JSON))
    if ctx.is_distributed:
        dist.barrier()  # every rank returns once the run folder is complete
    run.checkpoint_written()
    run.use_model(plain, device)
    return run


def _end_epoch(run: Run, model: ConvVAE, optimizer: torch.optim.Optimizer, rows: list[dict], valid_images: torch.Tensor,
               config: TrainConfig, device: torch.device, step: int, cache_fingerprint: str) -> None:
    """Rank 0 after each epoch: validation losses into the epoch's row, metrics.csv, figures, then the checkpoint."""
    epoch = rows[-1]["epoch"]
    valid = validation_losses(model, valid_images, config, device)
    rows[-1].update({f"valid_{k}": v for k, v in valid.items()})
    atomic_write_text(pd.DataFrame(rows).to_csv(index=False), run.path(Run.METRICS_CSV))
    if config.log_images_every_epoch:
        save_epoch_figures(model, valid_images, run.figures_dir, epoch, config, device)
    save_checkpoint(run.checkpoint_path, model=model, optimizer=optimizer, step=step, epoch=epoch,
                    extra={"train_config": asdict(config), "cache_fingerprint": cache_fingerprint})
    if config.progress:
        r = rows[-1]
        tqdm.write(f"epoch {epoch}: loss {r['loss']:.4g} (recon {r['recon']:.4g}, kl {r['kl']:.4g}), valid loss "
                   f"{valid['loss']:.4g}, valid PSNR {valid['psnr']:.2f} dB, {r['images_per_s']} img/s")


def _read_metrics(run: Run, upto_epoch: int) -> list[dict]:
    """Rows of an existing metrics.csv up to a checkpointed epoch (rows after it belong to the killed epoch)."""
    path = run.path(Run.METRICS_CSV)
    if not path.is_file():
        return []
    frame = pd.read_csv(path)
    return frame[frame["epoch"] <= upto_epoch].to_dict("records")


def _stop_if_diverged(history: torch.Tensor, ctx: DistributedContext, run: Run, epoch: int, epoch_start_step: int,
                      steps: int) -> None:
    """Raise FloatingPointError when a logged loss is not finite (on any rank), naming the step and what to do."""
    bad = ~torch.isfinite(history).all(1)  # (i+1,)
    flag = bad.any().float()
    if ctx.is_distributed:
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    if not flag.item():
        return
    first = int(bad.nonzero()[0, 0]) if bad.any() else len(history) - 1
    saved = (f"the last good checkpoint is {run.checkpoint_path} (epoch {epoch})" if epoch > 0
             else "no checkpoint was written (it diverged in the first epoch)")
    raise FloatingPointError(
        f"non-finite training loss at step {epoch_start_step + first + 1} (epoch {epoch + 1}, batch {first + 1}/{steps}) "
        f"on rank {ctx.rank}; stopped: {saved}. Try a lower --lr or a KL warm-up (--kl-warmup-steps)."
    )
