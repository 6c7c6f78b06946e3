"""Batch encoding of uint8 images and caches to latents, and the Latents file."""
import numpy as np
import pytest
import torch

from attributes import Latents, encode_cache, encode_images
from data.cache import load_cache, to_float_images
from models.vae import ConvVAE, VAEConfig


@pytest.fixture
def model():
    torch.manual_seed(0)
    return ConvVAE(VAEConfig(image_size=32, widths=(8, 16), latent_dim=8))


def reference(model, images_u8):
    """Row-by-row encoding: what every batched path must reproduce, in order."""
    with torch.no_grad():
        rows = [model.eval().encode(to_float_images(torch.from_numpy(np.array(images_u8[i : i + 1])))) for i in
                range(len(images_u8))]
    return torch.cat([r[0] for r in rows]), torch.cat([r[1] for r in rows])


def test_encode_images_matches_row_by_row_in_order(model, tiny_cache_dir):
    cache = load_cache(tiny_cache_dir)
    images = cache.images[:23]  # read-only memmap rows
    ref_mu, ref_logvar = reference(model, images)
    model.train()
    threads = torch.get_num_threads()
    for source in (images, torch.from_numpy(np.array(images))):
        mu, logvar = encode_images(model, source, batch_size=5, progress=False)  # 23 = 4 * 5 + 3
        assert mu.shape == (23, 8) and mu.dtype == torch.float32 and mu.device.type == "cpu"
        torch.testing.assert_close(mu, ref_mu, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(logvar, ref_logvar, rtol=1e-4, atol=1e-5)
        assert not mu.is_inference()  # usable in ordinary (in-place, autograd) code afterwards
    assert model.training  # the caller's mode is restored
    assert torch.get_num_threads() == threads  # and so is the thread setting


def test_encode_images_puts_the_model_layout_back(model):
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    conv = model.encoder[0].weight
    assert conv.is_contiguous()
    encode_images(model, images, progress=False)  # runs channels_last inside
    assert conv.is_contiguous() and not conv.is_contiguous(memory_format=torch.channels_last)
    model.to(memory_format=torch.channels_last)
    encode_images(model, images, progress=False)
    assert model.encoder[0].weight.is_contiguous(memory_format=torch.channels_last)  # a channels_last model stays so


def test_encode_images_rejects_float_images(model):
    with pytest.raises(ValueError, match=r"uint8 \(N, 3, S, S\)"):
        encode_images(model, torch.rand(2, 3, 32, 32), progress=False)


def test_encode_cache_split_and_latents_round_trip(model, tiny_cache_dir, tmp_path):
    cache = load_cache(tiny_cache_dir)
    everything = encode_cache(model, cache, None, batch_size=32, progress=False)
    assert len(everything) == 96 and everything.index[0] == "000001.jpg"
    assert everything.attribute_names == ["Bangs", "Eyeglasses", "Male", "Smiling"]
    assert everything.labels.shape == (96, 4) and everything.labels.dtype == torch.bool
    valid = encode_cache(model, cache, "valid", batch_size=32, progress=False)
    assert valid.index == list(cache.table.index[cache.split_indices("valid")]) and set(valid.partition) == {"valid"}
    selected = everything.select("valid")
    torch.testing.assert_close(selected.mu, valid.mu, rtol=1e-4, atol=1e-5)
    assert torch.equal(selected.labels, valid.labels) and selected.index == valid.index

    checkpoint = tmp_path / "fake.pt"
    checkpoint.write_bytes(b"weights")
    recorded = encode_cache(model, cache, "test", checkpoint=checkpoint, progress=False)
    assert recorded.checkpoint == str(checkpoint) and len(recorded.checkpoint_sha256) == 64
    path = recorded.save(tmp_path / "latents.pt")
    torch.load(path, weights_only=True)  # plain tensors, lists and strings only
    loaded = Latents.load(path)
    assert torch.equal(loaded.mu, recorded.mu) and torch.equal(loaded.logvar, recorded.logvar)
    assert loaded.index == recorded.index and loaded.partition == recorded.partition
    assert torch.equal(loaded.labels, recorded.labels) and loaded.checkpoint_sha256 == recorded.checkpoint_sha256
    with pytest.raises(ValueError, match="no latents in split 'train'"):
        loaded.select("train")


def test_row_source_uses_device_images_as_they_are_and_checks_only_host_images():
    from attributes.encode import _row_source

    cuda = torch.device("cuda", 0)
    on_device = torch.empty(4, 3, 8, 8, dtype=torch.uint8, device="meta")  # stands in for a tensor on a GPU
    host = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)
    asked = []

    def fits(nbytes, device):
        asked.append(nbytes)
        return nbytes <= 1000

    never = lambda *a: pytest.fail("device-resident images must not be checked against free memory")  # noqa: E731
    assert _row_source(on_device, 4, cuda, fits=never) == "on_device"
    assert _row_source(on_device, 4, torch.device("cpu"), fits=never) == "on_device"
    assert _row_source(host, 4, cuda, fits=fits) == "resident" and asked == [4 * 3 * 8 * 8]
    assert _row_source(host, 8, cuda, fits=fits) == "pinned"
    assert _row_source(host.numpy(), 4, cuda, fits=fits) == "resident"  # memory maps and arrays are host images
    assert _row_source(host, 0, cuda, fits=fits) == "pinned" and len(asked) == 3  # nothing to upload
    assert _row_source(host, 4, torch.device("cpu"), fits=never) == "host"


def test_encode_images_takes_device_resident_images_without_pinning(model):
    import copy

    # The meta device has tensors but no memory: the path a GPU-resident image set takes (no free-memory check, no
    # pin_memory, which raises for a non-CPU tensor), with shapes checked, runnable without a GPU.
    images = torch.empty(10, 3, 32, 32, dtype=torch.uint8, device="meta")
    meta_model = copy.deepcopy(model).to("meta")
    mu, logvar = encode_images(meta_model, images, device="meta", batch_size=4, keep_on_device=True, progress=False)
    assert mu.device.type == "meta" and mu.shape == logvar.shape == (10, 8)
