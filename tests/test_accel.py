"""models.accel on CPU: backend flags restored, batches gathered into alternating buffers, input conversion,
compile with its eager fallback, and the Adam variant per device."""
from __future__ import annotations

import os
import shutil
import warnings

import pytest
import torch
from torch import nn

from data.cache import to_float_images
from models.accel import BatchGatherer, CompiledWithFallback, backend_flags, bf16_autocast, compile_with_fallback, \
    make_adam, native_bf16, to_model_input


def _flags() -> dict:
    return {
        "matmul_precision": torch.get_float32_matmul_precision(),
        "cudnn.benchmark": torch.backends.cudnn.benchmark,
        "cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
        "cudnn.deterministic": torch.backends.cudnn.deterministic,
        "cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "CUBLAS_WORKSPACE_CONFIG": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
        "fp32_precision": {p: getattr(_obj(p), "fp32_precision", None)
                           for p in ("", "cuda.matmul", "cudnn.conv", "mkldnn.matmul")},
    }


def _obj(path):
    obj = torch.backends
    for part in filter(None, path.split(".")):
        obj = getattr(obj, part, None)
    return obj


@pytest.fixture
def pristine_flags(monkeypatch):
    """Known non-default starting flags, put back afterwards whatever the test does."""
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = (torch.get_float32_matmul_precision(), torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32)
    torch.backends.cudnn.allow_tf32 = False  # not PyTorch's default, so a restore to "the default" would show
    yield
    torch.set_float32_matmul_precision(before[0])
    torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32 = before[1:]
    torch.use_deterministic_algorithms(False)
    torch.backends.cudnn.deterministic = False


@pytest.mark.parametrize("deterministic", [False, True])
def test_backend_flags_cuda_branch_sets_and_restores_every_flag(pristine_flags, deterministic):
    before = _flags()
    with backend_flags("cuda", deterministic=deterministic):
        inside = _flags()
    assert _flags() == before
    assert inside["matmul_precision"] == "high" and inside["cuda.matmul.allow_tf32"] and inside["cudnn.allow_tf32"]
    assert inside["cudnn.benchmark"] is (not deterministic)
    assert inside["deterministic"] is deterministic
    assert inside["CUBLAS_WORKSPACE_CONFIG"] == (":4096:8" if deterministic else None)


def test_backend_flags_restore_when_the_block_raises(pristine_flags):
    before = _flags()
    with pytest.raises(KeyError):
        with backend_flags(torch.device("cuda", 0), deterministic=True):
            raise KeyError("boom")
    assert _flags() == before


def test_backend_flags_keep_a_users_cublas_setting_and_restore_warn_only(pristine_flags, monkeypatch):
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    before = _flags()
    with backend_flags("cuda", deterministic=True):
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"
        assert not torch.is_deterministic_algorithms_warn_only_enabled()
    assert _flags() == before


def test_backend_flags_on_cpu_change_only_determinism(pristine_flags):
    before = _flags()
    with backend_flags("cpu"):
        assert _flags() == before
    with backend_flags("cpu", deterministic=True):
        inside = _flags()
    assert inside == {**before, "deterministic": True, "cudnn.deterministic": True}
    assert _flags() == before


def _images(n=10, size=4):
    return torch.arange(n * 3 * size * size, dtype=torch.int64).remainder(251).to(torch.uint8).view(n, 3, size, size)


def test_batch_gatherer_returns_the_rows_asked_for_in_alternating_buffers():
    images = _images()
    gather = BatchGatherer(images, batch_size=4, device="cpu")
    idx = [torch.tensor([3, 0, 9, 5]), torch.tensor([1, 1, 2, 8]), torch.tensor([7, 6, 4, 0]), torch.tensor([2, 9])]
    first = gather(idx[0])
    assert torch.equal(first, images[idx[0]])
    second = gather(idx[1])
    assert torch.equal(second, images[idx[1]])
    assert torch.equal(first, images[idx[0]])  # still intact: the second batch went to the other buffer
    assert first.data_ptr() != second.data_ptr()
    third = gather(idx[2])
    assert third.data_ptr() == first.data_ptr()  # buffers are reused, not reallocated
    assert torch.equal(third, images[idx[2]]) and torch.equal(second, images[idx[1]])
    last = gather(idx[3])  # a partial last batch
    assert last.shape == (2, 3, 4, 4) and torch.equal(last, images[idx[3]])
    assert last.data_ptr() == second.data_ptr()


def test_batch_gatherer_refuses_device_indices_and_device_images():
    with pytest.raises(ValueError, match="host memory"):
        BatchGatherer(_images().to("meta"), 4, "cpu")
    with pytest.raises(ValueError, match="on the CPU"):
        BatchGatherer(_images(), 4, "cpu")(torch.tensor([0, 1], device="meta"))


@pytest.mark.parametrize("channels_last", [False, True])
def test_to_model_input_equals_the_plain_conversion(channels_last):
    batch = torch.randint(0, 256, (3, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    x = to_model_input(batch, "cpu", channels_last=channels_last)
    assert x.dtype == torch.float32 and torch.equal(x, batch.float() / 127.5 - 1.0)
    assert torch.equal(x, to_float_images(batch))
    assert x.is_contiguous(memory_format=torch.channels_last) is channels_last
    assert x.is_contiguous() is (not channels_last)
    assert torch.equal(batch, to_float_images(batch).add(1).mul(127.5).round().to(torch.uint8))  # input untouched


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 5)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def _has_cxx() -> bool:
    return any(shutil.which(c) for c in ("c++", "g++", "clang++"))


@pytest.mark.skipif(not _has_cxx(), reason="inductor's CPU backend needs a C++ compiler (c++/g++/clang++), none on PATH")
def test_compile_with_inductor_matches_eager():
    torch.manual_seed(0)
    model = _Tiny()
    x = torch.randn(2, 3, 8, 8)
    compiled = compile_with_fallback(model, enabled=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a fallback would warn: this must really compile
        out = compiled(x)
    assert not compiled.fell_back
    torch.testing.assert_close(out, model(x), rtol=1e-5, atol=1e-5)


def test_compile_failure_falls_back_to_eager_with_one_warning():
    torch.manual_seed(0)
    model = _Tiny()
    x = torch.randn(2, 3, 8, 8)
    calls = []

    def broken_backend(graph_module, example_inputs):
        calls.append(1)
        raise OSError("no C compiler")

    wrapped = compile_with_fallback(model, enabled=True, backend=broken_backend)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outs = [wrapped(x), wrapped(x), wrapped(x[:1])]
    messages = [str(w.message) for w in caught if "torch.compile failed" in str(w.message)]
    assert len(messages) == 1 and "continuing in eager mode" in messages[0] and "no C compiler" in messages[0]
    assert wrapped.fell_back and len(calls) == 1  # never compiled again after the failure
    expected = model(x)
    assert torch.equal(outs[0], expected) and torch.equal(outs[1], expected) and torch.equal(outs[2], model(x[:1]))


def test_compile_disabled_is_the_plain_module():
    model = _Tiny()
    wrapped = compile_with_fallback(model, enabled=False)
    x = torch.randn(1, 3, 8, 8)
    assert isinstance(wrapped, CompiledWithFallback) and wrapped.compiled is None
    assert torch.equal(wrapped(x), model(x)) and wrapped.module is model
    wrapped.eval()  # module methods reach the wrapped module
    assert not model.training and next(wrapped.parameters()) is model.conv.weight


def test_make_adam_is_fused_on_cpu_and_steps_as_plain_adam_does():
    torch.manual_seed(0)
    start, grads = torch.randn(5, 4), [torch.randn(5, 4) for _ in range(3)]
    fused_param, plain_param = nn.Parameter(start.clone()), nn.Parameter(start.clone())
    fused, plain = make_adam([fused_param], 1e-2, "cpu"), torch.optim.Adam([plain_param], lr=1e-2)
    assert isinstance(fused, torch.optim.Adam) and fused.defaults["fused"] and fused.defaults["lr"] == 1e-2
    for grad in grads:
        for optimizer, param in ((fused, fused_param), (plain, plain_param)):
            param.grad = grad.clone()
            optimizer.step()
    assert not torch.equal(fused_param, start)
    torch.testing.assert_close(fused_param, plain_param)


@pytest.mark.parametrize("chunk_rows", [1, 7, 76, 1000])
def test_chunked_upload_equals_the_plain_read(tiny_cache_dir, chunk_rows):
    from data.cache import copy_rows_chunked, load_cache, split_to_device

    cache = load_cache(tiny_cache_dir)  # images memory-mapped, as in training
    rows = cache.split_indices("train")
    plain, _ = split_to_device(cache, "train", "cpu")
    chunked = copy_rows_chunked(cache.images, rows, "cpu", chunk_rows=chunk_rows)
    assert chunked.dtype == torch.uint8 and torch.equal(chunked, plain)
    shuffled = rows[[5, 0, 70, 5, 33]]  # any order, repeats allowed (a subset of the split)
    assert torch.equal(copy_rows_chunked(cache.images, shuffled, "cpu", chunk_rows=2),
                       torch.from_numpy(cache.images[shuffled]))
    assert copy_rows_chunked(cache.images, rows[:0], "cpu").shape == (0, 3, 32, 32)


def test_bf16_autocast_runs_bf16_only_where_the_device_has_it_natively_and_when_enabled():
    a, b = torch.randn(8, 16), torch.randn(16, 4)
    with bf16_autocast("cpu", enabled=False):
        assert (a @ b).dtype == torch.float32
    with bf16_autocast("cpu"):
        # bf16 where oneDNN has native kernels; emulated bf16 would be slower than fp32, so fp32 stays there
        assert (a @ b).dtype == (torch.bfloat16 if native_bf16("cpu") else torch.float32)
    assert native_bf16("cuda") and not native_bf16("meta")


def test_training_step_under_bf16_moves_the_weights_like_fp32_up_to_bf16_rounding():
    from models.vae import ConvVAE, VAEConfig
    from pipeline.training import train_step

    torch.manual_seed(0)
    reference = ConvVAE(VAEConfig(image_size=32, latent_dim=8, widths=(8, 16)))
    x, eps = torch.rand(16, 3, 32, 32) * 2 - 1, torch.randn(16, 8)
    after, losses = {}, {}
    for amp in (False, True):
        model = ConvVAE(reference.config)
        model.load_state_dict(reference.state_dict())
        optimizer = torch.optim.Adam(model.parameters(), 1e-3)
        losses[amp] = train_step(model, optimizer, x, eps, beta=1.0, likelihood="sigma", amp=amp)
        after[amp] = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert losses[True].dtype == torch.float32  # the loss is computed in fp32 either way
    if not native_bf16("cpu"):
        assert torch.equal(after[True], after[False])  # no native bf16: amp is a no-op
        return
    assert not torch.equal(after[True], after[False])  # the forward pass did run in bf16
    # Adam's first step moves every weight by about lr (1e-3) whatever the gradient's scale, so a gradient near zero
    # may flip its step; nearly every weight must move the same way, and the losses agree to bf16's precision
    before = torch.cat([p.flatten() for p in reference.parameters()]).detach()
    same_way = ((after[True] - before).sign() == (after[False] - before).sign()).float().mean()
    assert same_way > 0.95, same_way
    assert torch.allclose(losses[True], losses[False], rtol=2e-2)
