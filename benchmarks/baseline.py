"""The common CelebA pipeline the project is compared with: torchvision-style per-image decode in a DataLoader
feeding an fp32 eager model, for encoding and for training."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from models.vae import ConvVAE, vae_loss

CELEBA_WIDTH, CELEBA_CROP = 178, 148  # the common pipeline's CenterCrop(148) on 178-px-wide CelebA images


def baseline_crop(image_width: int) -> int:
    """The common CenterCrop scaled to the dataset's image width: 148 on CelebA's 178 px."""
    return round(CELEBA_CROP / CELEBA_WIDTH * image_width)


class JpegFaces(Dataset):
    """torchvision.datasets.CelebA + the usual VAE transforms: PIL decode, crop, resize, normalise, per image."""

    # Each item: PIL decode, CenterCrop(crop), Resize(size), ToTensor(), Normalize(0.5, 0.5) -> (3, S, S) in [-1, 1].

    def __init__(self, paths: Sequence[Path], size: int, crop: int):
        from torchvision import transforms

        self.paths = [str(p) for p in paths]
        self.transform = transforms.Compose([
            transforms.CenterCrop(crop), transforms.Resize(size), transforms.ToTensor(),
            transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
        ])

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        image = Image.open(self.paths[i])  # torchvision's CelebA opens each file per item, like this
        if image.mode != "RGB":
            image = image.convert("RGB")
        return self.transform(image)


def baseline_loader(dataset: Dataset, batch_size: int, workers: int, device: torch.device, shuffle: bool = False,
                    drop_last: bool = False, seed: int = 0) -> DataLoader:
    """The DataLoader the common pipeline uses: worker processes, pinned memory on CUDA, seeded shuffling."""
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, num_workers=workers,
        pin_memory=device.type == "cuda", generator=torch.Generator().manual_seed(seed),
    )


class DefaultPrecision:
    """PyTorch's out-of-the-box float settings (fp32 matmuls, no cuDNN autotuning) while the baseline runs."""

    # Whatever the project's code set before (training turns on TF32 and autotuning) is restored on exit.

    def __enter__(self) -> None:
        self.saved = (torch.get_float32_matmul_precision(), torch.backends.cudnn.benchmark,
                      torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
        torch.set_float32_matmul_precision("highest")
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.allow_tf32 = True  # PyTorch's default for convolutions
        torch.backends.cuda.matmul.allow_tf32 = False

    def __exit__(self, *exc) -> None:
        precision, benchmark, cudnn_tf32, matmul_tf32 = self.saved
        torch.set_float32_matmul_precision(precision)
        torch.backends.cudnn.benchmark = benchmark
        torch.backends.cudnn.allow_tf32 = cudnn_tf32
        torch.backends.cuda.matmul.allow_tf32 = matmul_tf32


@torch.inference_mode()
def baseline_encode(model: ConvVAE, loader: DataLoader, device: torch.device) -> torch.Tensor:
    """fp32 eager encoding of every batch the loader yields -> mu (N, D) on the CPU."""
    mus = []
    for x in loader:
        mu, _ = model.encode(x.to(device, non_blocking=True))
        mus.append(mu.cpu())
    return torch.cat(mus)


def baseline_train_epoch(model: ConvVAE, optimizer: torch.optim.Optimizer, loader: DataLoader, device: torch.device,
                         beta: float, likelihood: str) -> float:
    """One fp32 eager epoch (forward, project loss, backward, Adam step); returns the last loss (a host sync)."""
    loss = torch.zeros(())
    for x in loader:
        x = x.to(device, non_blocking=True)
        recon, mu, logvar = model(x)
        loss = vae_loss(recon, x, mu, logvar, beta=beta, likelihood=likelihood)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return float(loss.detach())

