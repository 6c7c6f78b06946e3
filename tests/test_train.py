"""train_vae end to end on the tiny cache: run folder contents, exact resume, NaN stop, batching, CLI."""
import json

import pytest
import torch
from conftest import TINY_VAE
from PIL import Image

import pipeline.training as train_module
from data.cache import load_cache
from experiments.train_vae import parse_args
from pipeline.training import TrainConfig, epoch_batches, resume_config, step_noise, train
from models.checkpoint import load_checkpoint
from models.vae import ConvVAE

pytestmark = pytest.mark.slow


def main(config):
    return train(config).dir


def _config(cache_dir, runs_root, **overrides):
    values = dict(cache_dir=str(cache_dir), runs_root=str(runs_root), epochs=2, batch_size=16, model=TINY_VAE,
                  lr=2e-3, log_every=2, progress=False)
    values.update(overrides)
    return TrainConfig(**values)


def test_run_folder_holds_everything(tiny_cache_dir, tmp_path):
    run = main(_config(tiny_cache_dir, tmp_path / "runs", name="tiny"))
    assert run.name == "001-tiny"
    rows = (run / "metrics.csv").read_text().strip().splitlines()
    header = rows[0].split(",")
    assert len(rows) == 3 and {"epoch", "step", "loss", "recon", "kl", "images_per_s", "valid_loss", "valid_psnr"} <= set(header)
    assert [r.split(",")[1] for r in rows[1:]] == ["4", "8"]  # 76 train images // 16 = 4 steps per epoch
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test_images"] == 10 and metrics["steps"] == 8
    assert 5 < metrics["test_psnr"] < 60 and -1 <= metrics["test_ssim"] <= 1
    assert len(metrics["kl_per_dim"]) == 8 and 0 <= metrics["active_units"] <= 8
    assert sum(metrics["kl_per_dim"]) == pytest.approx(metrics["test_kl"], rel=1e-4)
    for name in ("recon-epoch001", "recon-epoch002", "samples-epoch002", "curves"):
        assert Image.open(run / "figures" / f"{name}.png").size[0] > 32
    assert (run / "figures" / "curves.csv").read_text().startswith("epoch,loss,valid_loss")
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["widths"] == [8, 16] and config["cache_dir"] == str(tiny_cache_dir)
    assert config["model"]["image_size"] == 32  # the cache's, whatever the config asked
    ckpt = load_checkpoint(run / "checkpoint.pt")
    assert (ckpt["epoch"], ckpt["step"]) == (2, 8) and ckpt["model_args"]["image_size"] == 32
    model = ConvVAE.from_checkpoint(run / "checkpoint.pt")
    x = torch.from_numpy(load_cache(tiny_cache_dir).images[:4].copy()).float() / 127.5 - 1
    assert model(x)[0].shape == x.shape
    assert main(_config(tiny_cache_dir, tmp_path / "runs", name="tiny", epochs=1)).name == "002-tiny"


def test_killed_and_resumed_run_ends_with_identical_weights(tiny_cache_dir, tmp_path, monkeypatch):
    straight = main(_config(tiny_cache_dir, tmp_path / "a", kl_warmup_steps=5))

    real_save = train_module.save_checkpoint

    def save_then_die(*args, **kwargs):  # the process is killed right after epoch 1's checkpoint
        real_save(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        main(_config(tiny_cache_dir, tmp_path / "b", kl_warmup_steps=5))
    monkeypatch.setattr(train_module, "save_checkpoint", real_save)
    killed = next((tmp_path / "b").iterdir())
    assert load_checkpoint(killed / "checkpoint.pt")["epoch"] == 1
    resumed = main(resume_config(killed))
    assert resumed == killed

    a, b = load_checkpoint(straight / "checkpoint.pt"), load_checkpoint(resumed / "checkpoint.pt")
    assert (a["epoch"], a["step"]) == (b["epoch"], b["step"]) == (2, 8)
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for pa, pb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(pa["exp_avg_sq"], pb["exp_avg_sq"])
    assert (straight / "metrics.csv").read_text().count("\n") == (resumed / "metrics.csv").read_text().count("\n") == 3


def _edit_recorded_config(run, edit) -> None:
    """Apply `edit` to both records of a run's TrainConfig: config.json and the checkpoint's train_config."""
    (run / "config.json").write_text(json.dumps(edit(json.loads((run / "config.json").read_text()))))
    checkpoint = load_checkpoint(run / "checkpoint.pt")
    checkpoint["extra"]["train_config"] = edit(checkpoint["extra"]["train_config"])
    torch.save(checkpoint, run / "checkpoint.pt")


def test_resume_refuses_a_changed_model_or_setting(tiny_cache_dir, tmp_path):
    run = main(_config(tiny_cache_dir, tmp_path / "runs", epochs=1))
    with pytest.raises(ValueError, match=r"cannot change \['model'\]"):
        resume_config(run, model=TINY_VAE)
    changed = TrainConfig(**{**json.loads((run / "config.json").read_text()), "lr": 0.5, "resume": str(run)})
    with pytest.raises(ValueError, match=r"config differs from the one .*checkpoint.pt was trained with in \['lr'\]"):
        main(changed)
    edited = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**edited, "beta": 4.0}))  # resume_config reads the edited file
    with pytest.raises(ValueError, match=r"checkpoint.pt was trained with in \['beta'\]"):
        main(resume_config(run, epochs=2))
    (run / "config.json").write_text(json.dumps(edited))
    checkpoint = load_checkpoint(run / "checkpoint.pt")
    del checkpoint["extra"]["train_config"]  # a checkpoint train() did not write: what it was trained with is unknown
    torch.save(checkpoint, run / "checkpoint.pt")
    with pytest.raises(ValueError, match=r"checkpoint.pt records no train_config"):
        main(resume_config(run, epochs=2))


def test_a_run_saved_before_amp_existed_resumes_in_the_precision_it_was_trained_in(tiny_cache_dir, tmp_path):
    run = main(_config(tiny_cache_dir, tmp_path / "runs", epochs=1, device="cpu"))
    _edit_recorded_config(run, lambda saved: {k: v for k, v in saved.items() if k != "amp"})  # neither records amp
    saved = json.loads((run / "config.json").read_text())
    assert resume_config(run, epochs=2).amp is False  # the recommended way resumes in fp32, as the CPU trained then
    with pytest.raises(ValueError, match=r"config differs .* in \['amp'\]"):  # bf16 asked for: refused out loud
        main(TrainConfig(**{**saved, "epochs": 2, "resume": str(run)}))
    assert main(resume_config(run, epochs=2)) == run


def test_a_run_saved_in_the_flat_layout_resumes_as_an_uninterrupted_run(tiny_cache_dir, tmp_path):
    """config.json and the checkpoint's train_config with the model's fields beside the training ones, and model_args
    with the likelihood: resumed, the run ends with the weights of one trained straight through."""
    straight = main(_config(tiny_cache_dir, tmp_path / "a", likelihood="mse"))
    run = main(_config(tiny_cache_dir, tmp_path / "b", likelihood="mse", epochs=1))

    def flat(saved):
        model = saved.pop("model")
        return {**saved, **{k: model[k] for k in ("latent_dim", "widths", "norm", "output")}}

    _edit_recorded_config(run, flat)
    checkpoint = load_checkpoint(run / "checkpoint.pt")
    checkpoint["model_args"]["likelihood"] = "mse"
    torch.save(checkpoint, run / "checkpoint.pt")
    config = resume_config(run, epochs=2)
    assert (config.model.latent_dim, config.model.widths, config.likelihood) == (8, (8, 16), "mse")
    assert main(config) == run
    assert json.loads((run / "config.json").read_text())["model"]["widths"] == [8, 16]  # rewritten nested
    a, b = load_checkpoint(straight / "checkpoint.pt"), load_checkpoint(run / "checkpoint.pt")
    assert (a["epoch"], a["step"]) == (b["epoch"], b["step"]) == (2, 8)
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key


def test_non_finite_loss_stops_with_step_and_keeps_last_good_checkpoint(tiny_cache_dir, tmp_path, monkeypatch):
    real_loss = train_module.vae_loss
    calls = {"train": 0}

    def loss_with_nan_at_step_6(recon, x, *args, **kwargs):
        out = real_loss(recon, x, *args, **kwargs)
        if recon.requires_grad:  # training steps only, not evaluation
            calls["train"] += 1
            if calls["train"] == 6:
                out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(train_module, "vae_loss", loss_with_nan_at_step_6)
    with pytest.raises(FloatingPointError, match=r"step 6 \(epoch 2, batch 2/4\)"):
        main(_config(tiny_cache_dir, tmp_path / "runs", epochs=3))
    run = next((tmp_path / "runs").iterdir())
    ckpt = load_checkpoint(run / "checkpoint.pt")
    assert ckpt["epoch"] == 1 and all(torch.isfinite(v).all() for v in ckpt["model"].values())
    assert (run / "metrics.csv").read_text().count("\n") == 2


def test_epoch_batches_follow_distributed_sampler_semantics():
    single = epoch_batches(10, seed=3, epoch=1, batch_size=4)
    assert single.shape == (2, 4)  # 10 // 4 full batches; the last 2 images are dropped this epoch
    ranks = [epoch_batches(10, seed=3, epoch=1, batch_size=4, rank=r, world_size=2) for r in range(2)]
    for step in range(2):  # ranks together see exactly the single process's global batch
        union = torch.stack([ranks[0][step], ranks[1][step]], 1).flatten()  # interleaved: global row j*world + r
        assert torch.equal(union, single[step])
    assert torch.equal(epoch_batches(10, seed=3, epoch=1, batch_size=4), single)
    assert not torch.equal(epoch_batches(10, seed=3, epoch=2, batch_size=4), single)
    padded = [epoch_batches(7, seed=0, epoch=0, batch_size=2, rank=r, world_size=2) for r in range(2)]
    assert padded[0].shape == padded[1].shape == (4, 1)  # 7 padded to 8 by wrapping around
    seen = torch.cat(padded).flatten().tolist()
    assert len(seen) == 8 and set(seen) == set(range(7))  # every image once, one repeated
    with pytest.raises(ValueError, match="not divisible by the world size 3"):
        epoch_batches(10, seed=0, epoch=0, batch_size=4, world_size=3)
    with pytest.raises(ValueError, match="fewer than one batch"):
        epoch_batches(3, seed=0, epoch=0, batch_size=4)
    noise = step_noise(0, 5, 4, 3, torch.device("cpu"))
    assert torch.equal(step_noise(0, 5, 4, 3, torch.device("cpu"), rank=1, world_size=2), noise[1::2])


def test_parse_args_and_resume_overrides(tiny_cache_dir, tmp_path):
    config = parse_args(["--cache-dir", "c", "--widths", "8", "16", "--latent-dim", "4", "--max-train-images", "50",
                         "--likelihood", "antixk", "--norm", "group", "--no-log-images-every-epoch"])
    assert config.model.widths == (8, 16) and config.model.latent_dim == 4 and config.max_train_images == 50
    assert config.likelihood == "antixk" and config.log_images_every_epoch is False and config.epochs == 10
    assert config.model.norm == "group" and config.model.output == "tanh"  # the model's flags set the nested config
    run = main(_config(tiny_cache_dir, tmp_path / "runs", epochs=1, max_train_images=40))
    resumed = parse_args(["--resume", str(run), "--epochs", "3"])
    assert resumed.epochs == 3 and resumed.max_train_images == 40 and resumed.resume == str(run)
    assert (resumed.model.latent_dim, resumed.model.image_size) == (8, 32)
    assert json.loads((run / "metrics.json").read_text())["train_images"] == 40
    with pytest.raises(ValueError, match="likelihood='l2'"):
        TrainConfig(likelihood="l2")


def test_global_torch_settings_are_restored_after_training(tiny_cache_dir, tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        before = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
                  torch.get_float32_matmul_precision(), torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32)
        main(_config(tiny_cache_dir, tmp_path / "runs", epochs=1, threads=2, deterministic=True,
                     log_images_every_epoch=False))
        after = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
                 torch.get_float32_matmul_precision(), torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32)
        assert after == before  # threads, deterministic algorithms and the CUDA backend flags: all put back
    finally:
        torch.set_num_threads(threads)


def test_train_without_a_context_runs_on_the_configured_device(tiny_cache_dir, tmp_path, monkeypatch):
    """`train(config)` (how the benchmark and notebooks call it) asks for config.device, not a CPU default, so what a
    GPU machine reports as the GPU's training is trained on the GPU."""
    asked = []

    def pick(name="auto"):
        asked.append(name)
        return torch.device("cpu")

    monkeypatch.setattr(train_module, "pick_device", pick)
    run = train(_config(tiny_cache_dir, tmp_path / "runs", epochs=1, device="auto"))
    assert asked == ["auto"] and json.loads(run.path(run.METRICS_JSON).read_text())["device"] == "cpu"
