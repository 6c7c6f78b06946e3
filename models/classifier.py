"""An independent pixel-space attribute classifier (the "judge") that scores edits, as STGAN and AttGAN do.

It is trained on the cache's training images (never on VAE outputs), so it does not share the VAE's blind spots;
an edit succeeds when the judge sees the target value on the decoded image. A judge trained on the data alone also
reads what goes with an attribute there (every mustache in CelebA is a man's, so a mustache on a woman reads as
none): where the faces have true counterfactuals (procedural data), `JudgeConfig.counterfactual_share` of the
training faces are shown with one attribute flipped instead, and the judge learns each attribute apart from its
companions. Because an edit score
is only as good as its judge, `train_judge` reports per-attribute test accuracy and balanced accuracy.

Two architectures (`JudgeConfig.arch`): "plain", strided convolutions with ReLU, and "residual", a patchifying
stem and pre-activation residual blocks with SiLU and average-pool downsampling. An evaluation chooses its edits with one and
reports them with the other as well, so a choice that only fits one network's quirks shows.

The judge depends only on the data, so it lives in the cache folder, one file per config
(`<cache>/judge-ARCH-HASH.pt`, HASH a digest of the config), and is reused by every run on that cache while the
cache's fingerprint (its images and labels) is unchanged: a judge of another config is kept beside it, never over it.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from tqdm import tqdm

from data.cache import FaceCache, split_to_device, to_float_images
from data.io import atomic_torch_save, load_torch_file
from models.accel import backend_flags, bf16_autocast, onednn_fuses

JUDGE_FORMAT_VERSION = 3  # 3: the architecture is named by JudgeConfig.arch
ARCHITECTURES = ("plain", "residual")


@dataclass
class JudgeConfig:
    """Judge architecture and training schedule (defaults sized for CPU training of a 64x64 cache)."""

    arch: str = field(default="plain", metadata={"choices": ARCHITECTURES})
    widths: tuple[int, ...] = field(default=(16, 32, 64, 128), metadata={"cli": False})
    epochs: int = 4
    batch_size: int = field(default=128, metadata={"cli": False})
    lr: float = field(default=3e-3, metadata={"cli": False})
    weight_decay: float = field(default=1e-4, metadata={"cli": False})
    max_shift: float = field(default=0.06, metadata={"cli": False})  # random translation, a fraction of the side
    flip: bool = field(default=True, metadata={"cli": False})  # horizontal flips: CelebA's attributes are symmetric
    # weight positives by sqrt(neg/pos) per attribute: better recall on rare attributes
    balance: bool = field(default=True, metadata={"cli": False})
    max_train_images: int | None = field(default=None, metadata={"help": "a random subset of the train split", "cli": False})
    # the share of training faces shown as a true counterfactual, one attribute flipped (needs procedural faces)
    counterfactual_share: float = field(default=0.0, metadata={"cli": False})
    eval_batch_size: int = field(default=512, metadata={"cli": False})
    # bf16 autocast for training where the device runs it natively (models.accel.native_bf16)
    amp: bool = field(default=True, metadata={"cli": False})
    seed: int = field(default=0, metadata={"cli": False})

    def __post_init__(self) -> None:
        self.widths = tuple(int(w) for w in self.widths)  # JSON round-trips give lists
        if not self.widths or any(w <= 0 for w in self.widths):
            raise ValueError(f"JudgeConfig.widths must be non-empty positive channel counts, got {self.widths}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"JudgeConfig: epochs and batch_size must be >= 1, got {self.epochs}, {self.batch_size}")
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"JudgeConfig.arch={self.arch!r}; expected one of {ARCHITECTURES}")
        if not 0.0 <= self.counterfactual_share <= 1.0:
            raise ValueError(f"JudgeConfig.counterfactual_share must be in [0, 1], got {self.counterfactual_share}")

    def file_name(self) -> str:
        """judge-ARCH-HASH.pt: one file per config, HASH the first 10 hex digits of the config's SHA-256."""
        digest = hashlib.sha256(_canonical(dataclasses.asdict(self)).encode())
        return f"judge-{self.arch}-{digest.hexdigest()[:10]}.pt"


def _plain_features(widths: tuple[int, ...]) -> nn.Sequential:
    """Per width: a stride-2 3x3 convolution, then a 3x3 one, each with BatchNorm and ReLU: (N, 3, S, S) ->
    (N, widths[-1], S / 2**len(widths), same)."""
    layers: list[nn.Module] = []
    channels = 3
    for w in widths:
        layers += [nn.Conv2d(channels, w, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
        layers += [nn.Conv2d(w, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
        channels = w
    return nn.Sequential(*layers)


class _ResidualBlock(nn.Module):
    """x + conv(act(norm(conv(act(norm(x)))))), pre-activation style (He et al. 2016), with SiLU."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _residual_features(widths: tuple[int, ...]) -> nn.Sequential:
    """A 4x4 stride-2 stem, then per width a residual block, with 2x2 average pooling and a 1x1 convolution between
    widths: the same output shape as `_plain_features`, from another network."""
    layers: list[nn.Module] = [nn.Conv2d(3, widths[0], 4, stride=2, padding=1), _ResidualBlock(widths[0])]
    for w_in, w_out in zip(widths, widths[1:]):
        layers += [nn.AvgPool2d(2), nn.Conv2d(w_in, w_out, 1), _ResidualBlock(w_out)]
    layers += [nn.BatchNorm2d(widths[-1]), nn.SiLU()]
    return nn.Sequential(*layers)


class _ConvReLU(nn.Module):
    """A convolution and the ReLU after it, for inference: on a CPU one oneDNN call (fp32, or the bf16 of an active
    autocast), the same logits as the two layers; elsewhere, or with gradients, the two layers."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else x.dtype
        if not onednn_fuses(x, "_convolution_pointwise", dtype):
            return F.relu(self.conv(x))
        conv = self.conv
        return torch.ops.mkldnn._convolution_pointwise(
            x.to(dtype), conv.weight.to(dtype), None if conv.bias is None else conv.bias.to(dtype), conv.padding,
            conv.stride, conv.dilation, conv.groups, "relu", [], "",
        )


class AttributeJudge(nn.Module):
    """Small CNN: images (N, 3, S, S) in [-1, 1] -> attribute logits (N, K)."""

    def __init__(self, attribute_names: list[str], image_size: int, config: JudgeConfig | None = None):
        super().__init__()
        self.config = config = config or JudgeConfig()
        self.attribute_names = [str(n) for n in attribute_names]
        self.image_size = int(image_size)
        side = self.image_size // 2 ** len(config.widths)
        if side < 1 or self.image_size % 2 ** len(config.widths):
            raise ValueError(
                f"AttributeJudge: image size {image_size} is not divisible by 2**{len(config.widths)} "
                f"(widths={config.widths})"
            )
        self.features = _plain_features(config.widths) if config.arch == "plain" else _residual_features(config.widths)
        # Flatten rather than global pooling: where a feature is (hairline, mouth, chin) is what tells attributes apart.
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.2),
                                  nn.Linear(config.widths[-1] * side * side, len(self.attribute_names)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # (N, K)

    def for_inference(self) -> AttributeJudge:
        """A copy in eval mode for scoring many images: in the plain architecture each convolution is folded with the
        BatchNorm after it and runs with its ReLU in one call on a CPU (`_ConvReLU`), one pass over memory instead of
        three; the same function up to float rounding. The residual architecture normalises before its convolutions,
        which does not fold: its copy is unchanged."""
        judge = copy.deepcopy(self).eval()
        layers, fused = list(judge.features), []
        while layers:
            layer = layers.pop(0)
            if isinstance(layer, nn.Conv2d) and layers and isinstance(layers[0], nn.BatchNorm2d):
                layer = fuse_conv_bn_eval(layer, layers.pop(0))
                if layers and isinstance(layers[0], nn.ReLU):
                    layers.pop(0)
                    layer = _ConvReLU(layer)
            fused.append(layer)
        judge.features = nn.Sequential(*fused)
        return judge

    @torch.inference_mode()
    def predict(self, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """Bool verdicts (N, K) for float images in [-1, 1] or uint8 images, batched, on the judge's device."""
        device = next(self.parameters()).device
        was_training = self.training
        if was_training:  # eval() walks every module: not once per batch of an evaluation's many calls
            self.eval()
        out = []
        for start in range(0, images.shape[0], batch_size):
            batch = images[start : start + batch_size].to(device)
            if batch.dtype == torch.uint8:
                batch = to_float_images(batch)
            out.append(self(batch.float()) > 0)
        if was_training:
            self.train()
        if not out:
            return torch.zeros(0, len(self.attribute_names), dtype=torch.bool, device=device)
        return torch.cat(out)

    def to_dict(self) -> dict[str, Any]:
        return {
            "attributes": list(self.attribute_names),
            "image_size": self.image_size,
            "config": dataclasses.asdict(self.config),
            "model": {k: v.detach().cpu() for k, v in self.state_dict().items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AttributeJudge":
        judge = cls(data["attributes"], data["image_size"], JudgeConfig(**data["config"]))
        judge.load_state_dict(data["model"])
        return judge.eval()


def augment(x: torch.Tensor, max_shift: float, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Random per-image translation (border-padded) and horizontal flip of a float batch (N, 3, S, S).

    The draws come from `generator`, which must be on x's device: drawn there, nothing is copied from the host per
    step. A CPU generator with a given seed gives the same batch every time.
    """
    n = x.shape[0]
    if flip:
        flip_mask = torch.rand(n, generator=generator, device=x.device) < 0.5  # (N,)
        x = torch.where(flip_mask[:, None, None, None], x.flip(3), x)
    if max_shift > 0:
        shifts = (torch.rand(n, 2, generator=generator, device=x.device) * 2 - 1) * (2 * max_shift)  # grid units: side = 2
        theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)  # (N, 2, 3) affine: identity plus the shift
        theta[:, 0, 0] = theta[:, 1, 1] = 1.0
        theta[:, :, 2] = shifts
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return x


def accuracy_report(predicted: np.ndarray, truth: np.ndarray, names: list[str]) -> dict[str, dict[str, float]]:
    """Per attribute: accuracy, balanced accuracy (mean of the per-class recalls) and positive rate."""
    predicted, truth = np.asarray(predicted, dtype=bool), np.asarray(truth, dtype=bool)
    report: dict[str, dict[str, float]] = {}
    for k, name in enumerate(names):
        p, t = predicted[:, k], truth[:, k]
        recalls = [float((p[t == c] == c).mean()) for c in (True, False) if (t == c).any()]
        report[name] = {
            "accuracy": float((p == t).mean()) if len(t) else float("nan"),
            "balanced_accuracy": float(np.mean(recalls)) if recalls else float("nan"),
            "positive_rate": float(t.mean()) if len(t) else float("nan"),
        }
    return report


def _canonical(d: dict) -> str:
    """`d` as JSON with sorted keys (tuples as lists, anything else as its str): equal for equal settings."""
    return json.dumps(d, sort_keys=True, default=str)


def _same_meta(a: dict, b: dict) -> bool:
    return _canonical(a) == _canonical(b)  # JSON-normalised first: tuples vs lists


def load_judge(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[AttributeJudge, dict[str, Any]]:
    """Read a judge file (weights_only=True) -> (judge in eval mode, stored dict with `report` and `cache_fingerprint`)."""
    remedy = ("The judge is trained on the cache by models.classifier.train_judge (which `python -m "
              "experiments.evaluate` runs); it retrains when the file is gone, so delete a damaged one.")
    data = load_torch_file(path, kind="the attribute judge", remedy=remedy, map_location=map_location)
    if not isinstance(data, dict) or data.get("format_version") != JUDGE_FORMAT_VERSION or "model" not in data:
        raise ValueError(f"{path}: not a judge file of format version {JUDGE_FORMAT_VERSION}. {remedy}")
    return AttributeJudge.from_dict(data).to(map_location), data


def save_judge(judge: AttributeJudge, report: dict[str, Any], cache: FaceCache, path: str | Path) -> Path:
    """Write the judge with its attribute names, config, accuracy report and the fingerprint of the cache it was
    trained on."""
    data = {"format_version": JUDGE_FORMAT_VERSION, **judge.to_dict(), "report": report,
            "cache_fingerprint": cache.fingerprint, "cache_dir": str(cache.directory)}
    return atomic_torch_save(data, path)


def _reusable_judge(path: Path, cache: FaceCache, config: JudgeConfig,
                    device: torch.device) -> tuple[AttributeJudge, dict[str, Any]] | None:
    """The judge saved at `path` when it was trained on this cache's fingerprint with this config, else None."""
    if not path.is_file():
        return None
    try:
        judge, data = load_judge(path, map_location=device)
    except (ValueError, KeyError, RuntimeError, TypeError):
        return None  # stale format: retrain and overwrite
    if (data.get("cache_fingerprint") == cache.fingerprint and _same_meta(data["config"], dataclasses.asdict(config))
            and judge.attribute_names == cache.attribute_names):
        return judge, dict(data["report"], reused=True, path=str(path))
    return None


def _fit_judge(judge: AttributeJudge, images: torch.Tensor, labels: torch.Tensor, config: JudgeConfig,
               generator: torch.Generator, device: torch.device, progress: bool) -> float:
    """Train `judge` on uint8 images (n, 3, S, S) and bool labels (n, K) on `device`; returns the final loss."""
    optimizer = torch.optim.AdamW(judge.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    n = images.shape[0]
    pos_weight = None
    if config.balance:  # sqrt of the class ratio: a compromise between plain accuracy and balanced accuracy
        positives = labels.float().sum(0).clamp(min=1)  # (K,)
        pos_weight = ((n - positives).clamp(min=1) / positives).sqrt().clamp(0.2, 10.0).to(device)
    steps_per_epoch = math.ceil(n / config.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=config.epochs * steps_per_epoch, pct_start=0.2
    )
    # The augmentation draws on the device, from its own generator seeded from the config (`generator` orders the
    # batches): no per-step host->device copies of masks and shifts.
    augment_generator = torch.Generator(device=device).manual_seed(config.seed)
    judge.train()
    bar = tqdm(total=config.epochs * steps_per_epoch, desc="judge", unit="batch", disable=not progress, leave=False)
    with backend_flags(device):  # TF32 and cuDNN autotuning on CUDA for this loop only
        for epoch in range(config.epochs):
            order = torch.randperm(n, generator=generator).to(device)  # one copy per epoch
            for b in range(steps_per_epoch):
                rows = order[b * config.batch_size : (b + 1) * config.batch_size]
                x = augment(to_float_images(images[rows]), config.max_shift, config.flip, augment_generator)
                with bf16_autocast(device, config.amp):
                    logits = judge(x.contiguous(memory_format=torch.channels_last))  # (B, K)
                loss = F.binary_cross_entropy_with_logits(logits.float(), labels[rows].float(), pos_weight=pos_weight)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                bar.update(1)
                if progress and b % 25 == 0:  # .item() waits for the GPU: not every step, never for a hidden bar
                    bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}")
    bar.close()
    judge.eval()
    return float(loss.item())


def train_judge(
    cache: FaceCache,
    config: JudgeConfig | None = None,
    device: torch.device | str = "cpu",
    *,
    counterfactuals: Callable[[np.ndarray], tuple[torch.Tensor, torch.Tensor]] | None = None,
    path: str | Path | None = None,
    force: bool = False,
    progress: bool = True,
) -> tuple[AttributeJudge, dict[str, Any]]:
    """Train the judge on `cache`'s train split, score it on the test split, save it to `<cache>/<config.file_name()>`.

    With `config.counterfactual_share` > 0, that share of the training faces (drawn with `config.seed`) is replaced
    by `counterfactuals(rows)`: rows (m,) positions in the cache, giving uint8 images (m, 3, S, S) and bool labels
    (m, K) in the cache's attribute order (e.g. `evaluation.counterfactuals.flipped_faces`).

    An existing judge file is reused when it was trained on a cache of the same fingerprint with the same config (unless
    `force`); a judge of another config has another file name, so it is never overwritten. Returns (judge in eval mode on `device`, report) where report holds per-attribute test
    `accuracy` / `balanced_accuracy` / `positive_rate`, their means, the split evaluated and the training time.
    """
    config = config or JudgeConfig()
    device = torch.device(device)
    path = Path(path) if path is not None else Path(cache.directory) / config.file_name()
    reused = None if force else _reusable_judge(path, cache, config, device)
    if reused is not None:
        return reused

    names = cache.attribute_names
    available = len(cache.split_indices("train"))
    if available == 0:
        raise ValueError(f"{cache.directory}: the cache has no 'train' images to train the judge on")
    generator = torch.Generator().manual_seed(config.seed)
    keep = None
    if config.max_train_images is not None and available > config.max_train_images:
        keep = torch.randperm(available, generator=generator)[: config.max_train_images].numpy()
    train_images, train_labels = split_to_device(cache, "train", device, keep)  # (n, 3, S, S) uint8, (n, K) bool
    n_flipped = round(config.counterfactual_share * train_images.shape[0])
    if n_flipped:
        if counterfactuals is None:
            raise ValueError(f"JudgeConfig.counterfactual_share={config.counterfactual_share} needs the true "
                             f"counterfactuals of the training faces, and none were given for {cache.directory} "
                             "(only procedural faces have them): set it to 0")
        positions = torch.randperm(train_images.shape[0], generator=generator)[:n_flipped]  # (m,) within the split
        train_rows = cache.split_indices("train") if keep is None else cache.split_indices("train")[keep]
        images, labels = counterfactuals(train_rows[positions.numpy()])
        expected = (n_flipped, *train_images.shape[1:])
        if tuple(images.shape) != expected or tuple(labels.shape) != (n_flipped, train_labels.shape[1]):
            raise ValueError(f"counterfactuals gave images {tuple(images.shape)} and labels {tuple(labels.shape)}; "
                             f"expected {expected} and {(n_flipped, train_labels.shape[1])}")
        train_images[positions.to(device)] = images.to(device, torch.uint8)
        train_labels[positions.to(device)] = labels.to(device, torch.bool)

    torch.manual_seed(config.seed)  # weight init
    # channels_last: the fast convolution layout of cuDNN and of oneDNN alike
    judge = AttributeJudge(names, cache.size, config).to(device).to(memory_format=torch.channels_last)
    start = time.perf_counter()
    final_loss = _fit_judge(judge, train_images, train_labels, config, generator, device, progress)
    seconds = time.perf_counter() - start

    split = "test" if len(cache.split_indices("test")) else "valid"
    test_images, test_labels = split_to_device(cache, split, "cpu")
    predicted = judge.predict(test_images, config.eval_batch_size).cpu().numpy()
    per_attribute = accuracy_report(predicted, test_labels.numpy(), names)
    report = {
        "arch": config.arch,
        "split": split,
        "num_test": int(test_images.shape[0]),
        "num_train": int(train_images.shape[0]),
        "num_counterfactual": int(n_flipped),
        "train_seconds": float(seconds),
        "final_loss": final_loss,
        "mean_accuracy": float(np.nanmean([r["accuracy"] for r in per_attribute.values()])),
        "mean_balanced_accuracy": float(np.nanmean([r["balanced_accuracy"] for r in per_attribute.values()])),
        "attributes": per_attribute,
    }
    save_judge(judge, report, cache, path)
    return judge, dict(report, reused=False, path=str(path))


def judge_report_frame(report: dict[str, Any]):
    """The per-attribute part of a judge report as a DataFrame (index `attribute`)."""
    import pandas as pd

    frame = pd.DataFrame.from_dict(report["attributes"], orient="index")
    frame.index.name = "attribute"
    return frame
