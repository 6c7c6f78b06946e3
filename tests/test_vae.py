"""ConvVAE shapes and range, the loss options against their formulas, and self-describing checkpoints."""
import math
import random
import subprocess

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models.checkpoint import code_version, load_checkpoint, restore_rng_states, save_checkpoint, unwrap_model
from models.vae import ANTIXK_KLD_WEIGHT, ConvVAE, VAEConfig, kl_divergence, vae_loss


@pytest.mark.parametrize("size,widths", [(32, (8, 16)), (64, (8, 8, 16, 16)), (128, (4, 8, 8, 16)), (32, (4, 8, 8, 8, 8))])
def test_shapes_and_range_for_every_size(size, widths):
    model = ConvVAE(VAEConfig(image_size=size, latent_dim=6, widths=widths))
    x = torch.rand(2, 3, size, size) * 2 - 1
    recon, mu, logvar = model(x)
    assert recon.shape == x.shape and mu.shape == (2, 6) and logvar.shape == (2, 6)
    assert model.config.bottleneck_size == size // 2 ** len(widths)
    assert recon.abs().max() <= 1  # tanh output: same range as the data
    assert model.decode(torch.randn(5, 6)).shape == (5, 3, size, size)


def test_default_config_is_64px_latent_128_four_stages():
    config = VAEConfig()
    assert (config.image_size, config.latent_dim, len(config.widths), config.bottleneck_size) == (64, 128, 4, 4)


@pytest.mark.parametrize("kwargs,match", [
    (dict(image_size=48, widths=(8, 16)), "power-of-two multiple"),
    (dict(image_size=8, widths=(8, 16, 32, 64)), "power-of-two multiple"),
    (dict(norm="batch"), "norm='batch'"),
    (dict(output="sigmoid"), "output='sigmoid'"),
])
def test_bad_configs_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        VAEConfig(**kwargs)


@pytest.mark.parametrize("norm", ["none", "group"])
def test_given_noise_makes_forward_deterministic_and_eval_equals_train(norm):
    model = ConvVAE(VAEConfig(image_size=32, latent_dim=8, widths=(8, 16), norm=norm))
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    eps = torch.randn(4, 8)
    r1, mu, logvar = model(x, eps)
    model.eval()  # no batch statistics, so eval mode computes the same function
    r2, _, _ = model(x, eps)
    assert torch.equal(r1, r2)
    assert torch.allclose(model.decode(mu + eps * torch.exp(0.5 * logvar)), r1)
    # per-image normalisation: an image's output does not depend on the rest of the batch
    assert torch.allclose(model(x[:1], eps[:1])[0], r1[:1], atol=1e-6)


def _batch():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 8, 8, generator=g) * 2 - 1
    recon = (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    mu, logvar = torch.randn(3, 5, generator=g), 0.3 * torch.randn(3, 5, generator=g)
    return recon, x, mu, logvar


def test_kl_closed_form_is_zero_at_the_prior_and_positive_elsewhere():
    assert torch.equal(kl_divergence(torch.zeros(2, 4), torch.zeros(2, 4)), torch.zeros(2, 4))
    _, _, mu, logvar = _batch()
    assert (kl_divergence(mu, logvar) > 0).all()


def test_sigma_vae_nll_is_half_d_log_mse_plus_constant():
    recon, x, mu, logvar = _batch()
    out = vae_loss(recon, x, mu, logvar, likelihood="sigma", beta=0.5)
    D = x[0].numel()
    mse = float(((recon - x) ** 2).mean())
    expected_recon = D / 2 * math.log(mse) + D / 2 * (1 + math.log(2 * math.pi))
    assert out["recon"].item() == pytest.approx(expected_recon, rel=1e-5)
    kl = float(kl_divergence(mu, logvar).sum(1).mean())
    assert out["kl"].item() == pytest.approx(kl, rel=1e-6)
    assert out["loss"].item() == pytest.approx(expected_recon + 0.5 * kl, rel=1e-5)
    # sigma is the optimum, so passing it explicitly (as the DDP loop does) changes nothing
    given = vae_loss(recon, x, mu, logvar, likelihood="sigma", beta=0.5, log_sigma=0.5 * math.log(mse))
    assert given["loss"].item() == pytest.approx(out["loss"].item(), rel=1e-6)


def test_sigma_vae_gradient_equals_fixed_optimal_sigma_gradient():
    recon, x, mu, logvar = _batch()
    recon.requires_grad_(True)
    vae_loss(recon, x, mu, logvar, likelihood="sigma")["loss"].backward()
    mse = ((recon.detach() - x) ** 2).mean()
    expected = (recon.detach() - x) / mse / x.shape[0]  # d/d recon of sum_i ||x_i - r_i||^2 / (2 sigma^2) / N
    assert torch.allclose(recon.grad, expected, rtol=1e-5)


def test_gaussian_mse_and_antixk_formulas():
    recon, x, mu, logvar = _batch()
    kl = kl_divergence(mu, logvar).sum(1).mean()
    sse = ((recon - x) ** 2).flatten(1).sum(1).mean()
    D = x[0].numel()
    unit = vae_loss(recon, x, mu, logvar, likelihood="gaussian")
    assert unit["recon"].item() == pytest.approx(float(0.5 * sse + D / 2 * math.log(2 * math.pi)), rel=1e-6)
    mse = vae_loss(recon, x, mu, logvar, likelihood="mse", beta=2.0)
    assert mse["loss"].item() == pytest.approx(float(sse + 2 * kl), rel=1e-6)
    # AntixK/PyTorch-VAE VanillaVAE.loss_function with M_N = kld_weight = 0.00025
    antixk = vae_loss(recon, x, mu, logvar, likelihood="antixk")
    reference_kld = torch.mean(-0.5 * torch.sum(1 + logvar - mu**2 - logvar.exp(), dim=1), dim=0)
    reference = F.mse_loss(recon, x) + ANTIXK_KLD_WEIGHT * reference_kld
    assert antixk["loss"].item() == pytest.approx(reference.item(), rel=1e-6)
    assert antixk["recon"].item() == pytest.approx(F.mse_loss(recon, x).item(), rel=1e-6)
    with pytest.raises(ValueError, match="unknown likelihood 'l1'"):
        vae_loss(recon, x, mu, logvar, likelihood="l1")
    with pytest.raises(ValueError, match="recon shape"):
        vae_loss(recon[:, :, :4], x, mu, logvar)


def test_checkpoint_round_trip_strips_compile_wrapper_and_rebuilds(tmp_path):
    model = ConvVAE(VAEConfig(image_size=32, latent_dim=8, widths=(8, 16), norm="group"))
    compiled = torch.compile(model)  # nothing is compiled until called; only the `_orig_mod.` wrapper matters here
    assert unwrap_model(compiled) is model
    optimizer = torch.optim.Adam(model.parameters())
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    model(x)[0].sum().backward()
    optimizer.step()
    path = save_checkpoint(tmp_path / "ckpt.pt", model=compiled, optimizer=optimizer, step=7, epoch=2, extra={"note": "x"})
    ckpt = load_checkpoint(path)
    assert not any(k.startswith(("_orig_mod.", "module.")) for k in ckpt["model"])
    assert ckpt["model_args"]["widths"] == (8, 16) and ckpt["model_args"]["norm"] == "group"
    assert (ckpt["step"], ckpt["epoch"], ckpt["extra"]) == (7, 2, {"note": "x"})
    saved_state = ckpt["optimizer"]["state"]
    assert len(saved_state) == len(list(model.parameters())) and int(saved_state[0]["step"]) == 1
    rebuilt = ConvVAE.from_checkpoint(path)
    assert rebuilt.config == model.config and not rebuilt.training
    for key, value in model.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[key], value)
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write left no temporary file


def test_a_checkpoint_whose_model_args_carry_the_likelihood_still_loads(tmp_path):
    """The likelihood is the loss's (TrainConfig's); model_args written with it rebuild the same network."""
    model = ConvVAE(VAEConfig(image_size=16, latent_dim=4, widths=(4, 8)))
    path = save_checkpoint(tmp_path / "ckpt.pt", model=model, step=1, epoch=1)
    checkpoint = load_checkpoint(path)
    checkpoint["model_args"]["likelihood"] = "antixk"
    torch.save(checkpoint, path)
    rebuilt = ConvVAE.from_checkpoint(path)
    assert rebuilt.config == model.config
    for key, value in model.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[key], value)
    checkpoint["model_args"]["depth"] = 3  # a key no network has is still refused
    torch.save(checkpoint, path)
    with pytest.raises(ValueError, match=r"ckpt.pt: model_args has \['depth'\]"):
        ConvVAE.from_checkpoint(path)


def test_checkpoint_restores_python_numpy_torch_rng(tmp_path):
    model = ConvVAE(VAEConfig(image_size=32, latent_dim=4, widths=(4, 4)))
    random.seed(3), np.random.seed(3), torch.manual_seed(3)
    np.random.normal()  # leave a cached Gaussian in the legacy state
    save_checkpoint(tmp_path / "c.pt", model=model, step=0, epoch=0)
    first = (random.random(), np.random.normal(size=3), torch.rand(3))
    restore_rng_states(load_checkpoint(tmp_path / "c.pt")["rng"])
    again = (random.random(), np.random.normal(size=3), torch.rand(3))
    assert first[0] == again[0] and np.array_equal(first[1], again[1]) and torch.equal(first[2], again[2])


def test_code_version_is_the_git_commit():
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True)
    expected = head.stdout.strip() if head.returncode == 0 else "unknown"
    assert code_version() == expected


def test_load_checkpoint_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "missing.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="other.pt: not a latent-edit checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def _ops_run(fn) -> set[str]:
    """Names of the operators `fn` dispatched on CPU."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return {event.key for event in prof.key_averages()}


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="oneDNN (mkldnn) not built into this torch")
@pytest.mark.parametrize("size,widths", [(32, (8, 16)), (64, (8, 8, 16, 16))])
def test_encode_fused_is_encode_with_conv_and_activation_in_one_call(size, widths):
    torch.manual_seed(0)
    model = ConvVAE(VAEConfig(image_size=size, latent_dim=6, widths=widths)).eval()
    x = torch.rand(5, 3, size, size) * 2 - 1
    with torch.inference_mode():
        expected = model.encode(x)
        for layout in (torch.contiguous_format, torch.channels_last):
            fused = model.encode_fused(x.contiguous(memory_format=layout))
            for got, want in zip(fused, expected):
                torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        ops = _ops_run(lambda: model.encode_fused(x))
    assert "mkldnn::_convolution_pointwise" in ops and "aten::leaky_relu" not in ops


def test_encode_fused_falls_back_to_encode_where_it_cannot_fuse():
    torch.manual_seed(0)
    model = ConvVAE(VAEConfig(image_size=32, latent_dim=6, widths=(8, 16)))
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    mu, _ = model.encode_fused(x)  # grad mode: the fused op has no autograd formula, so encode() runs
    mu.sum().backward()
    assert model.fc_mu.weight.grad is not None and model.encoder[0].weight.grad is not None
    grouped = ConvVAE(VAEConfig(image_size=32, latent_dim=6, widths=(8, 16), norm="group")).eval()
    with torch.inference_mode():  # a norm between conv and activation: nothing to fuse
        ops = _ops_run(lambda: grouped.encode_fused(x))
        torch.testing.assert_close(grouped.encode_fused(x)[0], grouped.encode(x)[0])
    assert "aten::leaky_relu" in ops and "mkldnn::_convolution_pointwise" not in ops


@pytest.mark.parametrize("likelihood", ["sigma", "gaussian", "mse", "antixk"])
def test_loss_is_fp32_under_bf16_autocast_and_equals_the_fp32_loss_of_the_same_values(likelihood):
    torch.manual_seed(0)
    model = ConvVAE(VAEConfig(image_size=16, latent_dim=6, widths=(8, 16)))
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    eps = torch.randn(4, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        recon, mu, logvar = model(x, eps)
        assert recon.dtype == mu.dtype == logvar.dtype == torch.bfloat16  # what the training loop hands the loss
        terms = vae_loss(recon, x, mu, logvar, beta=0.7, likelihood=likelihood)
    reference = vae_loss(recon.float(), x, mu.float(), logvar.float(), beta=0.7, likelihood=likelihood)
    for key in ("loss", "recon", "kl"):
        assert terms[key].dtype == torch.float32 and terms[key].ndim == 0
        torch.testing.assert_close(terms[key], reference[key], rtol=1e-6, atol=1e-6)


def test_gaussian_and_given_sigma_accept_floats_and_tensors_alike():
    recon, x, mu, logvar = _batch()
    for likelihood, log_sigma in [("gaussian", 0.3), ("sigma", -0.8), ("sigma", -9.0)]:
        as_float = vae_loss(recon, x, mu, logvar, likelihood=likelihood, log_sigma=log_sigma)
        as_tensor = vae_loss(recon, x, mu, logvar, likelihood=likelihood, log_sigma=torch.tensor(log_sigma))
        torch.testing.assert_close(as_float["loss"], as_tensor["loss"])
        assert as_float["loss"].dtype == torch.float32
    # sigma's log_sigma is clipped at -6 whichever type it comes as
    clipped = vae_loss(recon, x, mu, logvar, likelihood="sigma", log_sigma=-9.0)["recon"]
    at_min = vae_loss(recon, x, mu, logvar, likelihood="sigma", log_sigma=-6.0)["recon"]
    torch.testing.assert_close(clipped, at_min)
    # a learned gaussian log_sigma keeps its gradient
    learned = torch.tensor(0.2, requires_grad=True)
    vae_loss(recon, x, mu, logvar, likelihood="gaussian", log_sigma=learned)["loss"].backward()
    assert learned.grad is not None and learned.grad != 0


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="oneDNN (mkldnn) not built into this torch")
@pytest.mark.parametrize("output", ["tanh", "linear"])
def test_decode_fused_is_decode_with_each_transposed_conv_and_activation_in_one_call(output):
    torch.manual_seed(0)
    model = ConvVAE(VAEConfig(image_size=32, latent_dim=6, widths=(8, 16), output=output)).eval()
    model = model.to(memory_format=torch.channels_last)
    z = torch.randn(5, 6)
    with torch.inference_mode():
        expected = model.decode(z)
        torch.testing.assert_close(model.decode_fused(z), expected, rtol=1e-5, atol=1e-6)
        ops = _ops_run(lambda: model.decode_fused(z))
        assert "mkldnn::_convolution_transpose_pointwise" in ops and "aten::conv_transpose2d" not in ops
        fused_bf16 = model.decode_fused(z, torch.bfloat16)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            autocast_bf16 = model.decode(z)
    assert fused_bf16.dtype == torch.bfloat16 and fused_bf16.shape == expected.shape
    # bf16 either way: the fused decode is as close to the fp32 one as autocast's (its activations round once less)
    fused_error = (fused_bf16.float() - expected).abs().max()
    assert 0 < fused_error <= 2 * (autocast_bf16.float() - expected).abs().max()


def test_decode_fused_falls_back_to_decode_where_it_cannot_fuse():
    torch.manual_seed(0)
    model = ConvVAE(VAEConfig(image_size=32, latent_dim=6, widths=(8, 16)))
    z = torch.randn(3, 6)
    model.decode_fused(z).sum().backward()  # grad mode: the fused op has no autograd formula, so decode() runs
    assert model.fc_decode.weight.grad is not None
    grouped = ConvVAE(VAEConfig(image_size=32, latent_dim=6, widths=(8, 16), norm="group")).eval()
    with torch.inference_mode():
        assert torch.equal(grouped.decode_fused(z), grouped.decode(z))
