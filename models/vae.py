"""A convolutional VAE for square RGB faces in [-1, 1], and its loss (ELBO with a choice of likelihood).

Architecture (DCGAN-like, in the pytorch/examples VAE style): `len(widths)` stride-2 4x4 convolutions down to a
`image_size / 2**len(widths)` square bottleneck, two linear heads for (mu, logvar), then the mirror image with
stride-2 transposed convolutions. Design choices:

- No normalisation layers by default ("group" = GroupNorm selectable), never BatchNorm: without batch statistics the
  network computes the same function in train and eval mode, needs no SyncBatchNorm under DistributedDataParallel,
  and a DDP step on B/world images per rank gives exactly the gradient of a single process on the B images.
  GroupNorm (also per image, so equally DDP-exact) stays available for comparison.
- The likelihood is the loss's (`vae_loss`), not the network's: the same network trains under any of them.
  "sigma" (the sigma-VAE) by default balances reconstruction and KL without a hand-tuned beta; the AntixK recipe
  ("antixk") stays selectable, and the README's results compare the two.
- tanh output: decode() is guaranteed to return images in [-1, 1] like the data, which every consumer (editing,
  uint8 conversion, metrics with data_range=2) relies on. "linear" is selectable for comparison.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from models.accel import onednn_fuses

LIKELIHOODS = ("sigma", "gaussian", "mse", "antixk")
ANTIXK_KLD_WEIGHT = 0.00025  # AntixK/PyTorch-VAE configs/vae.yaml `kld_weight`
MIN_LOG_SIGMA = -6.0  # Rybkin et al. soft-clip the optimal log sigma at -6 so perfect batches do not give -inf
LEAKY_SLOPE = 0.2
NORMS = ("none", "group")
OUTPUTS = ("tanh", "linear")
# model_args keys a checkpoint may carry that describe its training, not the network (the likelihood is the loss's):
# ignored when the network is rebuilt.
TRAINING_MODEL_ARGS = ("likelihood",)


@dataclass
class VAEConfig:
    """Shape of a ConvVAE: image size, channel widths per stage, latent size and layer options."""

    # The images' side and channels are the data's, so training sets them from the cache (no flag).
    image_size: int = field(default=64, metadata={"cli": False})
    latent_dim: int = 128
    widths: tuple[int, ...] = (32, 64, 128, 256)
    in_channels: int = field(default=3, metadata={"cli": False})
    norm: str = field(default="none", metadata={"choices": NORMS})
    output: str = field(default="tanh", metadata={"choices": OUTPUTS})

    def __post_init__(self) -> None:
        self.widths = tuple(int(w) for w in self.widths)  # JSON round-trips give lists
        if not self.widths or any(w <= 0 for w in self.widths):
            raise ValueError(f"VAEConfig.widths must be non-empty positive channel counts, got {self.widths}")
        if self.latent_dim <= 0:
            raise ValueError(f"VAEConfig.latent_dim must be positive, got {self.latent_dim}")
        factor = 2 ** len(self.widths)
        bottleneck = self.image_size // factor
        if self.image_size % factor or bottleneck < 1 or bottleneck & (bottleneck - 1):
            raise ValueError(
                f"VAEConfig.image_size={self.image_size} must be a power-of-two multiple of 2**len(widths)={factor} "
                f"(widths={self.widths})"
            )
        if self.norm not in NORMS:
            raise ValueError(f"VAEConfig.norm={self.norm!r}; expected one of {NORMS}")
        if self.output not in OUTPUTS:
            raise ValueError(f"VAEConfig.output={self.output!r}; expected one of {OUTPUTS}")

    @classmethod
    def from_model_args(cls, args: dict, path: str | Path) -> "VAEConfig":
        """The config a checkpoint's `model_args` describe (`path` names the file in errors); keys that describe the
        training (TRAINING_MODEL_ARGS) are ignored, any other unknown key is refused."""
        args = {k: v for k, v in args.items() if k not in TRAINING_MODEL_ARGS}
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(args) - set(known))
        if unknown:
            raise ValueError(f"{path}: model_args has {unknown}, which no ConvVAE takes; expected keys among {known}")
        return cls(**args)

    @property
    def bottleneck_size(self) -> int:
        """Spatial side of the smallest feature map."""
        return self.image_size // 2 ** len(self.widths)


def _norm(kind: str, channels: int) -> nn.Module:
    # Groups of a few channels each; gcd keeps any width valid.
    return nn.GroupNorm(math.gcd(channels, 8), channels) if kind == "group" else nn.Identity()


def _fusable(x: torch.Tensor, config: VAEConfig, op: str = "_convolution_pointwise",
             dtype: torch.dtype = torch.float32) -> bool:
    """Can ConvVAE.encode_fused (decode_fused: op "_convolution_transpose_pointwise") run this float32 input in
    `dtype`, each convolution fused with its activation? Not with a norm between the two."""
    return x.dtype == torch.float32 and config.norm == "none" and onednn_fuses(x, op, dtype)


class ConvVAE(nn.Module):
    """Convolutional VAE: encode(x)->(mu, logvar), decode(z)->image, forward(x)->(recon, mu, logvar)."""

    def __init__(self, config: VAEConfig | None = None):
        super().__init__()
        self.config = config = config or VAEConfig()
        widths, s = config.widths, config.bottleneck_size
        # No conv bias before a norm: the norm's per-channel shift makes it redundant, and with one channel per group
        # the norm cancels it exactly, leaving rounding noise as its gradient (which Adam amplifies to full steps).
        bias = config.norm == "none"
        down: list[nn.Module] = []
        channels = config.in_channels
        for w in widths:
            down += [
                nn.Conv2d(channels, w, 4, stride=2, padding=1, bias=bias), _norm(config.norm, w), nn.LeakyReLU(LEAKY_SLOPE)
            ]
            channels = w
        self.encoder = nn.Sequential(*down)
        flat = widths[-1] * s * s
        self.fc_mu = nn.Linear(flat, config.latent_dim)
        self.fc_logvar = nn.Linear(flat, config.latent_dim)
        self.fc_decode = nn.Linear(config.latent_dim, flat)
        up: list[nn.Module] = [_norm(config.norm, widths[-1]), nn.LeakyReLU(LEAKY_SLOPE)]
        for w_in, w_out in zip(widths[::-1], widths[::-1][1:]):
            up += [
                nn.ConvTranspose2d(w_in, w_out, 4, stride=2, padding=1, bias=bias), _norm(config.norm, w_out), nn.LeakyReLU(LEAKY_SLOPE)
            ]
        up.append(nn.ConvTranspose2d(widths[0], config.in_channels, 4, stride=2, padding=1))
        if config.output == "tanh":
            up.append(nn.Tanh())
        self.decoder = nn.Sequential(*up)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x).flatten(1)  # (N, C*s*s)
        return self.fc_mu(h), self.fc_logvar(h)  # (N, D), (N, D)

    def encode_fused(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """encode() for inference on CPU, each conv and its LeakyReLU in one oneDNN call; anything else -> encode().

        The same fusion torch.compile's freezing makes, without compiling and without baking in the weights (they are
        read at every call): bit-identical latents, faster because every activation map makes one trip through
        memory instead of three (benchmarks/RESULTS.md has the figures). Needs no_grad or inference_mode (the op has no autograd formula),
        fp32 and norm "none".
        """
        if not _fusable(x, self.config):
            return self.encode(x)
        h = x
        for conv in (m for m in self.encoder if isinstance(m, nn.Conv2d)):
            h = torch.ops.mkldnn._convolution_pointwise(
                h, conv.weight, conv.bias, conv.padding, conv.stride, conv.dilation, conv.groups,
                "leaky_relu", [LEAKY_SLOPE], "",
            )
        h = h.flatten(1)  # (N, C*s*s)
        return self.fc_mu(h), self.fc_logvar(h)  # (N, D), (N, D)

    def reparameterize(self, mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor | None = None) -> torch.Tensor:
        """z = mu + sigma * eps; pass `eps` (N, D) to control the noise (exact resume, DDP), else drawn here."""
        if eps is None:
            eps = torch.randn_like(mu)
        return mu + eps.to(mu.dtype) * torch.exp(0.5 * logvar)  # (N, D)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        s, c = self.config.bottleneck_size, self.config.widths[-1]
        h = self.fc_decode(z).view(z.shape[0], c, s, s)  # (N, C, s, s)
        return self.decoder(h)  # (N, 3, S, S)

    def decode_fused(self, z: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """decode() for inference on CPU in `dtype` (float32, or bfloat16 where oneDNN runs it natively), each
        transposed convolution and its activation in one oneDNN call; anything else -> decode() (under whatever
        autocast the caller set).

        Every activation map makes one trip through memory instead of two, about a third less decoding time in bf16
        (benchmarks/RESULTS.md). In bf16 the activation is applied before the rounding to bf16 rather than after it,
        so the images are as close to fp32 ones as bf16 autocast's, not bit-identical to them. Needs no_grad or
        inference_mode and norm "none"; weights are read (and cast) at every call.
        """
        if not _fusable(z, self.config, "_convolution_transpose_pointwise", dtype):
            return self.decode(z)
        s, c = self.config.bottleneck_size, self.config.widths[-1]
        cast = lambda t: None if t is None else t.to(dtype)  # noqa: E731
        h = nn.functional.linear(z.to(dtype), cast(self.fc_decode.weight), cast(self.fc_decode.bias))
        h = nn.functional.leaky_relu(h.view(z.shape[0], c, s, s), LEAKY_SLOPE)  # (N, C, s, s)
        h = h.contiguous(memory_format=torch.channels_last)
        convs = [m for m in self.decoder if isinstance(m, nn.ConvTranspose2d)]
        for k, conv in enumerate(convs):
            last = k == len(convs) - 1
            activation, scalars = (("tanh" if self.config.output == "tanh" else "none", []) if last
                                   else ("leaky_relu", [LEAKY_SLOPE]))
            h = torch.ops.mkldnn._convolution_transpose_pointwise(
                h, cast(conv.weight), cast(conv.bias), conv.padding, conv.output_padding, conv.stride, conv.dilation,
                conv.groups, activation, scalars, "",
            )
        return h  # (N, 3, S, S) in `dtype`

    def forward(
        self, x: torch.Tensor, eps: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x)
        return self.decode(self.reparameterize(mu, logvar, eps)), mu, logvar

    @classmethod
    def from_checkpoint(cls, path: str | Path, map_location: str | torch.device = "cpu") -> "ConvVAE":
        """Rebuild the model (config + weights, eval mode) from a checkpoint file alone."""
        from models.checkpoint import load_checkpoint

        return cls.from_checkpoint_dict(load_checkpoint(path), path, map_location)

    @classmethod
    def from_checkpoint_dict(cls, checkpoint: dict, path: str | Path, map_location: str | torch.device = "cpu") -> "ConvVAE":
        """Rebuild the model from an already loaded checkpoint dict (`path` names it in errors)."""
        if "model_args" not in checkpoint or "model" not in checkpoint:
            raise ValueError(f"{path}: not a ConvVAE checkpoint (needs 'model_args' and 'model' keys)")
        model = cls(VAEConfig.from_model_args(checkpoint["model_args"], path))
        model.load_state_dict(checkpoint["model"])
        return model.to(map_location).eval()


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x) || N(0, I)) per image and latent dimension, (N, D)."""
    return 0.5 * (mu.float().pow(2) + logvar.float().exp() - 1.0 - logvar.float())


def optimal_log_sigma(recon: torch.Tensor, x: torch.Tensor, distributed: bool = False) -> torch.Tensor:
    """log of the sigma-VAE's optimal shared sigma: 0.5 * log(MSE over the batch), detached, clipped at -6.

    distributed: the MSE over the global batch of every torch.distributed rank, so that each rank uses the
    single-process value (the ranks must all call it).
    """
    sq = (recon.detach().float() - x.float()).pow(2)
    if not distributed:
        return (0.5 * torch.log(sq.mean())).clamp(min=MIN_LOG_SIGMA)
    # float64: a global pixel count passes 2**24 (float32's exact integers) at 128 px on a few ranks. The count is
    # filled in on the device (torch.tensor(n, device=...) would copy from pageable host memory every step).
    sse_and_count = torch.stack([
        sq.sum(dtype=torch.float64), torch.full((), sq.numel(), dtype=torch.float64, device=sq.device)
    ])
    dist.all_reduce(sse_and_count)
    return (0.5 * torch.log(sse_and_count[0] / sse_and_count[1])).float().clamp(min=MIN_LOG_SIGMA)


def vae_loss(
    recon: torch.Tensor,
    x: torch.Tensor,
    mu: torch.Tensor,
    logvar: torch.Tensor,
    *,
    beta: float = 1.0,
    likelihood: str = "sigma",
    log_sigma: float | torch.Tensor | None = None,
    kld_weight: float = ANTIXK_KLD_WEIGHT,
) -> dict[str, torch.Tensor]:
    """Negative ELBO (Kingma & Welling 2014, "Auto-Encoding Variational Bayes"): recon NLL + beta * KL.

    recon, x: (N, C, H, W) in [-1, 1]; mu, logvar: (N, D). Returns scalars `loss`, `recon`, `kl`: per-image sums
    (over pixels, over latent dims) averaged over the batch, so DDP's gradient averaging equals the global batch.
    `likelihood`:
      - "sigma": Gaussian decoder with one shared variance set to its analytic optimum, sigma^2 = MSE of the batch
        (Rybkin, Daniilidis & Levine 2021, "Simple and Effective VAE Training with Calibrated Decoders"); the NLL is
        D/2*log(2*pi*sigma^2) + ||x - recon||^2 / (2 sigma^2) per image, i.e. D/2*log(sigma^2) + const on average.
        `log_sigma` may be given (e.g. the optimum over all DDP ranks); it is detached either way, which leaves the
        gradient unchanged because d NLL / d sigma = 0 at the optimum.
      - "gaussian": the same NLL with a fixed or learned `log_sigma` (default 0, i.e. sigma = 1).
      - "mse": sum of squared errors per image (a Gaussian with sigma^2 = 1/2, constants dropped).
      - "antixk": the plain recipe popular on CelebA, exactly AntixK/PyTorch-VAE VanillaVAE.loss_function:
        F.mse_loss(recon, x) (mean over batch AND pixels) + kld_weight * KL with kld_weight = 0.00025 (times `beta`).
        Here `recon` is that per-pixel mean, not a per-image sum. (That repo feeds [0, 1] images to a tanh decoder;
        on our [-1, 1] data the MSE is 4x larger for the same error, so the effective KL weight is 4x smaller.)
    """
    if recon.shape != x.shape:
        raise ValueError(f"vae_loss: recon shape {tuple(recon.shape)} != x shape {tuple(x.shape)}")
    recon, x = recon.float(), x.float()  # the loss in fp32 even under bf16 autocast
    kl = kl_divergence(mu, logvar).sum(1).mean()
    sq = (recon - x).pow(2).flatten(1)  # (N, C*H*W)
    if likelihood == "antixk":
        nll = sq.mean()
        return {"loss": nll + beta * kld_weight * kl, "recon": nll, "kl": kl}
    if likelihood == "mse":
        nll = sq.sum(1).mean()
    elif likelihood in ("sigma", "gaussian"):
        if likelihood == "sigma" and log_sigma is None:
            log_sigma = optimal_log_sigma(recon, x)
        elif log_sigma is None:
            log_sigma = 0.0
        # A Python float stays a Python float: a tensor made from it would be a host->device copy every step.
        if isinstance(log_sigma, torch.Tensor):
            log_sigma = log_sigma.to(device=x.device, dtype=torch.float32)
            if likelihood == "sigma":
                log_sigma = log_sigma.detach().clamp(min=MIN_LOG_SIGMA)
            inverse_variance = torch.exp(-2.0 * log_sigma)
        else:
            log_sigma = max(float(log_sigma), MIN_LOG_SIGMA) if likelihood == "sigma" else float(log_sigma)
            inverse_variance = math.exp(-2.0 * log_sigma)
        pixel_nll = 0.5 * sq * inverse_variance + log_sigma + 0.5 * math.log(2 * math.pi)
        nll = pixel_nll.sum(1).mean()
    else:
        raise ValueError(f"vae_loss: unknown likelihood {likelihood!r}; expected one of {LIKELIHOODS}")
    return {"loss": nll + beta * kl, "recon": nll, "kl": kl}
