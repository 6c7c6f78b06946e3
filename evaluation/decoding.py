"""Decoding latents and judging images in batches, as the evaluation, its figures and the benchmarks do."""
from __future__ import annotations

import torch

from models.accel import bf16_autocast, native_bf16
from models.vae import ConvVAE


def decode_images(model: ConvVAE, z: torch.Tensor, device: torch.device, amp: bool = False) -> torch.Tensor:
    """decode(z) on `device` as float32 images (B, 3, S, S) clamped to [-1, 1]; in bf16 when amp and the device runs
    it natively: on a CPU each transposed convolution fused with its activation (`ConvVAE.decode_fused`), elsewhere
    under `bf16_autocast`."""
    z = z.to(device)
    with bf16_autocast(device, amp):
        if amp and native_bf16(device) and hasattr(model, "decode_fused"):
            decoded = model.decode_fused(z, torch.bfloat16)
        else:
            decoded = model.decode(z)
    return decoded.float().clamp(-1, 1)


@torch.inference_mode()
def decode_batched(model: ConvVAE, z: torch.Tensor, batch_size: int, device: torch.device,
                   amp: bool = False) -> torch.Tensor:
    """decode(z) in batches; images (N, 3, S, S) in [-1, 1] on the CPU."""
    model.eval()
    return torch.cat([decode_images(model, z[s : s + batch_size], device, amp).cpu()
                      for s in range(0, z.shape[0], batch_size)])


class AutocastJudge:
    """A judge whose `predict` runs under `bf16_autocast(device, amp)`: the judge as an evaluation scores with it."""

    def __init__(self, judge: torch.nn.Module, device: torch.device, amp: bool):
        # scoring runs many batches: a judge that has a faster inference copy (AttributeJudge) scores with it
        self.judge = judge.for_inference() if hasattr(judge, "for_inference") else judge
        self.device, self.amp = device, amp
        self.attribute_names = list(judge.attribute_names)

    def predict(self, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """Bool verdicts (N, K) of float images (N, 3, S, S) in [-1, 1]."""
        with bf16_autocast(self.device, self.amp):
            return self.judge.predict(images, batch_size)
