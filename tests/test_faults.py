"""Faults a new user meets: a stage interrupted between two of its writes, a full disk, a read-only run folder, NaN in
a loaded file, and the messages each gives (the file, and what to do). Interruptions are simulated by raising at the
second write; the full disk by a patched writer, and by a real small tmpfs where this machine lets a test mount one."""
from __future__ import annotations

import errno
import functools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from celeba_fixtures import write_celeba
from conftest import TINY_VAE, write_tiny_cache

import data.cache
import data.io
import evaluation.report
from attributes.artifact import AttributeDirections
from attributes.encode import Latents
from attributes.fit import FitConfig, fit_directions
from data.cache import build_cache, load_cache
from data.io import CorruptArtifactError, DiskFullError, MixedOutputsError
from evaluation.edits import EvalConfig, evaluate_run
from evaluation.report import write_evaluation
from experiments import evaluate, make_figures
from experiments.evaluate import EvaluateScript
from experiments.make_figures import FiguresScript
from models.checkpoint import save_checkpoint
from models.classifier import JudgeConfig
from models.vae import ConvVAE, VAEConfig
from pipeline.cli import run_script
from pipeline.run import Run
from pipeline.training import TrainConfig, train

REPO = Path(__file__).resolve().parents[1]
JUDGE = JudgeConfig(widths=(8, 16), epochs=1, batch_size=32)


def _train_config(cache_dir: Path, runs: Path, **overrides) -> TrainConfig:
    values = dict(cache_dir=str(cache_dir), runs_root=str(runs), epochs=1, batch_size=8, model=TINY_VAE,
                  device="cpu", progress=False, log_images_every_epoch=False)
    return TrainConfig(**{**values, **overrides})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A trained tiny run (its cache beside it), copied by each test that changes it."""
    root = tmp_path_factory.mktemp("faults")
    return train(_train_config(write_tiny_cache(root / "cache"), root / "runs")).dir


def copy_run(run_dir: Path, tmp_path: Path) -> Run:
    """The run and its cache copied under tmp_path, config.json pointing at the copy (a judge saved beside the cache
    stays this test's own)."""
    config = json.loads((run_dir / Run.CONFIG).read_text())
    cache = shutil.copytree(config["cache_dir"], tmp_path / "cache")
    run = Run(shutil.copytree(run_dir, tmp_path / "runs" / run_dir.name))
    (run.dir / Run.CONFIG).write_text(json.dumps({**config, "cache_dir": str(cache)}))
    return run


def interrupt_call(monkeypatch, owner, name: str, call: int) -> None:
    """Make `owner.name` raise KeyboardInterrupt (a Ctrl-C) on its `call`-th call; the calls before it run."""
    original, calls = getattr(owner, name), []

    def interrupted(*args, **kwargs):
        calls.append(None)
        if len(calls) == call:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, interrupted)


# ---- interrupted stages --------------------------------------------------------------------------------------------
def test_a_fit_interrupted_between_two_kinds_is_refused_not_mixed(tiny, tmp_path, monkeypatch):
    run = copy_run(tiny, tmp_path)
    strict = FitConfig(methods=("mean", "regression"), min_count=20, probe_jobs=1)
    with pytest.warns(UserWarning, match="Eyeglasses"):  # fewer than 20 positives: left out
        old = run.fit_directions(strict, progress=False)
    assert len(old["mean"]) == len(old["regression"]) < 4
    interrupt_call(monkeypatch, AttributeDirections, "save", call=2)  # Ctrl-C after the new mean, before regression
    with pytest.raises(KeyboardInterrupt):
        Run(run.dir).fit_directions(FitConfig(methods=("mean", "regression"), min_count=5, probe_jobs=1),
                                    progress=False)
    monkeypatch.undo()
    assert len(AttributeDirections.load(run.directions_path("mean"))) == 4  # the new mean, beside the old regression
    assert len(AttributeDirections.load(run.directions_path("regression"))) == len(old["regression"])
    unfinished = rf"{run.dir}/directions.manifest.json: the write of this set .* did not finish .*fit_directions --run"
    for method in ("mean", "regression"):
        with pytest.raises(MixedOutputsError, match=unfinished):
            Run(run.dir).directions(method)
    config = EvalConfig(eval_faces=4, progress=False, judge=JUDGE, second_judge=None)
    with pytest.raises(MixedOutputsError, match=unfinished):
        evaluate.main(EvaluateScript(run=str(run.dir), device="cpu", evaluation=config))
    assert not list(Path(run.config()["cache_dir"]).glob("judge-*.pt"))  # refused before any work

    with pytest.warns(UserWarning, match="Eyeglasses"):
        run.fit_directions(strict, progress=False)  # the remedy: fit again, whole
    reread = Run(run.dir)
    assert {len(reread.directions(m)) for m in ("mean", "regression")} == {len(old["mean"])}
    assert {reread.directions(m).info["min_count"] for m in ("mean", "regression")} == {20}
    # a file of the set replaced from elsewhere is refused too, naming it
    shutil.copy(run.directions_path("mean"), run.directions_path("regression"))
    with pytest.raises(MixedOutputsError, match=rf"directions-regression.pt is not the file .*manifest.json lists"):
        Run(run.dir).directions("mean")


def test_an_evaluation_interrupted_after_its_table_is_refused_by_make_figures(tiny, tmp_path, monkeypatch):
    run = copy_run(tiny, tmp_path)
    run.fit_directions(FitConfig(methods=("mean",), min_count=5, probe_jobs=1), progress=False)
    config = EvalConfig(eval_faces=8, default_strength=1.0,
                        choose_strength=False, derived_kinds=(), counterfactual_faces=0, progress=False,
                        judge=JUDGE, second_judge=None)
    table, summary, judge_report = evaluate_run(run, config, torch.device("cpu"))
    write_evaluation(run, table, summary, judge_report, config)
    Run(run.dir).check_outputs(Run.EVALUATION)  # a whole set passes
    interrupt_call(monkeypatch, evaluation.report, "write_markdown", call=1)  # the second write of the set
    with pytest.raises(KeyboardInterrupt):
        write_evaluation(run, table.head(3), summary, judge_report, config)
    assert len(pd.read_csv(run.path(Run.EVAL_CSV))) == 3  # the new table beside the old .md, .json and config
    with pytest.raises(MixedOutputsError, match=rf"evaluation.manifest.json: the write .* did not finish .*"
                                                rf"experiments.evaluate --run {run.dir}"):
        make_figures.main(FiguresScript(run=str(run.dir), device="cpu"))
    assert not (run.figures_dir / "edit-grid.png").exists()  # nothing drawn from the mixed set


def test_a_fit_of_fewer_kinds_removes_the_earlier_kinds_out_loud(tiny, tmp_path, capsys):
    run = copy_run(tiny, tmp_path)
    run.fit_directions(FitConfig(methods=("mean", "regression"), min_count=5, probe_jobs=1), progress=False)
    capsys.readouterr()
    run.fit_directions(FitConfig(methods=("mean",), min_count=5, probe_jobs=1), progress=False)
    assert "removed directions-regression.pt" in capsys.readouterr().out
    assert Run(run.dir).direction_methods() == ["mean"] and Run(run.dir).directions("mean").info["min_count"] == 5


def test_an_edit_of_an_attribute_left_out_for_too_few_examples_says_so_with_its_counts(tmp_path):
    n, names = 200, ["Male", "Bald"]
    generator = torch.Generator().manual_seed(0)
    labels = torch.zeros(n, 2, dtype=torch.bool)
    labels[::2, 0] = True
    labels[:10, 1] = True  # 10 positives in the fitting split
    mu = torch.randn(n, 6, generator=generator) + 2 * labels.float() @ torch.randn(2, 6, generator=generator)
    latents = Latents(mu=mu, logvar=torch.zeros(n, 6), index=[f"{i:06d}.jpg" for i in range(n)],
                      partition=["train"] * 160 + ["valid"] * 40, labels=labels, attribute_names=names)
    with pytest.warns(UserWarning, match=r"Bald \(10 positive"):
        fitted = fit_directions(latents, FitConfig(methods=("mean", "probe"), min_count=20, probe_jobs=1),
                                progress=False)
    run_dir = tmp_path / "runs" / "001-vae"
    fitted["probe"].checkpoint = str(run_dir / "checkpoint.pt")
    for dirs in (fitted["mean"], AttributeDirections.load(fitted["probe"].save(tmp_path / "probe.pt"))):
        with pytest.raises(KeyError) as caught:
            dirs.edit(mu[:1], {"Bald": 1})
        message = str(caught.value)
        assert message.startswith(f"attribute 'Bald' has no {dirs.method} direction: it was left out when fitting, "
                                  "with 10 positives and 150 negatives in the train split, fewer than --min-count 20; "
                                  "refit with `python -m experiments.fit_directions "), message
        assert message.endswith("--min-count 10` to bring it back") and "did you mean" not in message
    assert f"--run {run_dir} --min-count 10" in message  # the saved probes know their run


# ---- non-finite numbers ------------------------------------------------------------------------------------------
def test_nan_latents_are_named_then_reencoded_and_fit_as_clean_ones(tiny, tmp_path, capsys):
    run = copy_run(tiny, tmp_path)
    fit = FitConfig(methods=("mean", "probe", "regression"), min_count=5, probe_jobs=1)
    clean = run.fit_directions(fit, progress=False)
    path = run.latents_path
    d = torch.load(path, weights_only=True)
    d["mu"][5, 3] = float("nan")
    torch.save(d, path)
    with pytest.raises(CorruptArtifactError, match=rf"{path} holds a non-finite number \(NaN or inf\) at mu\[5, 3\] "
                                                   r".*re-encodes when the file is gone"):
        Latents.load(path)
    capsys.readouterr()
    again = Run(run.dir).fit_directions(fit)  # what the script does: says why it encodes again
    out = capsys.readouterr().out
    assert f"{path}: unreadable" in out and "mu[5, 3]" in out and "encoding again" in out
    assert torch.isfinite(Latents.load(path).mu).all()
    for method, dirs in clean.items():  # no kind loses attributes or moves: the fit saw the clean latents
        assert again[method].names == dirs.names
        torch.testing.assert_close(again[method].vectors, dirs.vectors)


# ---- a full disk ---------------------------------------------------------------------------------------------------
def _enospc(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_while_saving_a_checkpoint_is_named_and_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    model = ConvVAE(VAEConfig(image_size=16, latent_dim=4, widths=(4, 8)))
    save_checkpoint(path, model=model, step=1, epoch=1)
    before = path.read_bytes()

    def fills_the_disk(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"half a checkpoint")
        _enospc()

    monkeypatch.setattr(torch, "save", fills_the_disk)
    with pytest.raises(DiskFullError, match=rf"^{path}: the disk is full: writing it needs about 0.1 MiB, and "
                                            r"[\d.]+ [MG]iB are free there\. Nothing was replaced"):
        save_checkpoint(path, model=model, step=2, epoch=2)
    assert path.read_bytes() == before and sorted(tmp_path.iterdir()) == [path]  # the half-written file is gone

    def other_failure(obj, f, *args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")

    monkeypatch.setattr(torch, "save", other_failure)
    with pytest.raises(RuntimeError, match="enforce fail") as caught:  # with space left, not called a full disk
        save_checkpoint(path, model=model, step=2, epoch=2)
    assert not isinstance(caught.value, DiskFullError) and path.read_bytes() == before


def test_a_full_disk_while_building_a_cache_is_named_and_keeps_the_old_cache(tmp_path, monkeypatch):
    cache_dir = write_tiny_cache(tmp_path / "cache")
    old = load_cache(cache_dir).fingerprint
    monkeypatch.setattr(data.cache, "preallocate", _enospc)  # the images file finds the disk full
    with pytest.raises(DiskFullError, match=rf"^{cache_dir}: the disk is full: writing it needs about 1.3 MiB"):
        write_tiny_cache(cache_dir, seed=1)
    assert load_cache(cache_dir).fingerprint == old and sorted(p.name for p in tmp_path.iterdir()) == ["cache"]

    monkeypatch.undo()  # too little free space is found before decoding a single image
    fixture = write_celeba(tmp_path / "celeba", "torchvision", n=6, images="solid")
    monkeypatch.setattr(data.io.shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(10**9, 10**9 - 4096, 4096))
    monkeypatch.setattr(data.cache, "_decode_into", lambda *_: pytest.fail("decoded on a full disk"))
    with pytest.raises(DiskFullError, match=r"cache2: the disk is full: writing it needs about 1.0 MiB, and 0.0 MiB"):
        build_cache(fixture.root, tmp_path / "cache2", size=32, workers=1, progress=False)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@functools.lru_cache(maxsize=1)
def cannot_mount() -> str | None:
    """Why this process cannot mount a file system in a private mount namespace; None when it can."""
    if os.geteuid() != 0:
        return "mounting needs root"
    if shutil.which("unshare") is None:
        return "no unshare command"
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
                           capture_output=True, text=True)
    return None if probe.returncode == 0 else f"this machine does not allow mounts: {probe.stderr.strip()}"


def run_driver(code: str, args: list[str], mounts: str | None = None) -> dict:
    """Run python `code` with `args` (after the shell commands `mounts`, in a private mount namespace that ends with
    it) -> the JSON object it prints last; a traceback fails the test."""
    command = shlex.join([sys.executable, "-c", code, *args])
    argv = ["unshare", "-m", "sh", "-c", f"{mounts} && exec {command}"] if mounts else ["sh", "-c", command]
    result = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": f"{REPO}:{REPO / 'tests'}"})
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


FULL_TMPFS = """
import json, shutil, sys
from pathlib import Path
import data.cache, data.io
from data.cache import build_cache, load_cache
from data.io import DiskFullError
from data.prepare import PrepareConfig
from experiments import prepare_data
from models.checkpoint import save_checkpoint
from models.vae import ConvVAE, VAEConfig
from pipeline.cli import run_script

disk, small, big = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
cache, out = disk / "cache", {}
build_cache(small, cache, size=32, workers=1, progress=False)
out["old"] = load_cache(cache).fingerprint
try:
    run_script("prepare_data", prepare_data.main, PrepareConfig(celeba_root=big, out=str(cache), size=64,
                                                                decode_workers=1, force=True, progress=False))
except SystemExit as stop:
    out["prepare_data"] = str(stop.code)
data.cache.ensure_free_space = lambda *args: None  # as where the size is not known first: the memory map meets it
try:
    build_cache(big, cache, size=64, workers=1, force=True, progress=False)
except DiskFullError as e:
    out["memory_map"] = str(e)
out["after"], out["cache_listing"] = load_cache(cache).fingerprint, sorted(p.name for p in disk.iterdir())
checkpoint = disk / "checkpoint.pt"
save_checkpoint(checkpoint, model=ConvVAE(VAEConfig(image_size=16, latent_dim=4, widths=(4, 8))), step=1, epoch=1)
before = checkpoint.read_bytes()
(disk / "filler").write_bytes(bytes(shutil.disk_usage(disk).free - 2**16))
data.io.ensure_free_space = lambda *args: None  # torch.save meets the full disk itself
try:
    save_checkpoint(checkpoint, model=ConvVAE(VAEConfig(image_size=32, latent_dim=16, widths=(16, 32))), step=2,
                    epoch=2)
except DiskFullError as e:
    out["checkpoint"] = str(e)
out["checkpoint_intact"] = checkpoint.read_bytes() == before
out["listing"] = sorted(p.name for p in disk.iterdir())
print(json.dumps(out))
"""


def test_a_real_full_tmpfs_gives_one_line_errors_not_a_bus_error(tmp_path):
    if reason := cannot_mount():
        pytest.skip(f"a small tmpfs is needed to fill a disk for real: {reason}")
    small = write_celeba(tmp_path / "small", "torchvision", n=20, images="gradient").root
    big = write_celeba(tmp_path / "big", "torchvision", n=200, images="gradient").root
    disk = tmp_path / "disk"
    disk.mkdir()
    out = run_driver(FULL_TMPFS, [str(disk), str(small), str(big)], f"mount -t tmpfs -o size=2M tmpfs {disk}")
    cache = disk / "cache"
    assert out["prepare_data"].startswith(f"prepare_data: {cache}: the disk is full: writing it needs about 3.3 MiB")
    assert out["memory_map"].startswith(f"{cache}: the disk is full") and "\n" not in out["prepare_data"]
    assert out["after"] == out["old"] and out["cache_listing"] == ["cache"]  # the old cache, no staging folder
    assert out["checkpoint"].startswith(f"{disk}/checkpoint.pt: the disk is full: writing it needs about")
    assert out["checkpoint_intact"] and out["listing"] == ["cache", "checkpoint.pt", "filler"]  # no .tmp left


# ---- a read-only run folder ----------------------------------------------------------------------------------------
READ_ONLY = """
import json, sys
from attributes.fit import FitConfig
from data.prepare import PrepareConfig
from evaluation.edits import EvalConfig
from experiments import edit_faces, evaluate, fit_directions, make_figures, prepare_data, train_vae
from models.classifier import JudgeConfig
from pipeline.cli import run_script

run, celeba, out = sys.argv[1], sys.argv[2], {}
scripts = {
    "fit_directions": (fit_directions.main, fit_directions.FitScript(run=run, device="cpu", fit=FitConfig(
        methods=("mean",), min_count=2, probe_jobs=1))),
    "evaluate": (evaluate.main, evaluate.EvaluateScript(run=run, device="cpu", evaluation=EvalConfig(
        eval_faces=4, progress=False, judge=JudgeConfig(widths=(8, 16), epochs=1), second_judge=None))),
    "make_figures": (make_figures.main, make_figures.FiguresScript(run=run, device="cpu")),
    "train_vae": (lambda argv: train_vae.main(train_vae.parse_args(argv)), ["--resume", run, "--epochs", "2"]),
    "edit_faces": (edit_faces.main, edit_faces.EditConfig(run=run, index="000003.jpg", set=("Smiling=1",),
                                                          method="mean", device="cpu")),
    "prepare_data": (prepare_data.main, PrepareConfig(celeba_root=celeba, out=run + "/cache", size=32,
                                                      decode_workers=1, progress=False)),
}
for name, (main, config) in scripts.items():
    try:
        run_script(name, main, config)
    except SystemExit as stop:
        out[name] = str(stop.code)
print(json.dumps(out))
"""


def test_a_read_only_run_folder_stops_every_script_before_its_work(tiny, tmp_path):
    run = copy_run(tiny, tmp_path)
    run.fit_directions(FitConfig(methods=("mean",), min_count=5, probe_jobs=1), progress=False)
    celeba = write_celeba(tmp_path / "celeba", "torchvision", n=6, images="solid").root
    before = sorted(str(p.relative_to(run.dir)) for p in run.dir.rglob("*"))
    args = [str(run.dir), str(celeba)]
    if os.geteuid() == 0:  # root writes through permission bits: only a read-only mount stops it
        if reason := cannot_mount():
            pytest.skip(f"a read-only bind mount is needed as root: {reason}")
        out = run_driver(READ_ONLY, args, f"mount --bind {run.dir} {run.dir} && mount -o remount,bind,ro {run.dir}")
    else:
        for folder in (run.dir, run.figures_dir):
            folder.chmod(0o555)
        try:
            out = run_driver(READ_ONLY, args)
        finally:
            for folder in (run.dir, run.figures_dir):
                folder.chmod(0o755)
    not_writable = r"is not writable \((a read-only file system|permission denied)\)"
    for script in ("fit_directions", "evaluate", "make_figures", "train_vae"):
        assert re.match(rf"{script}: {run.dir} {not_writable}; {script} writes its outputs there: make it writable, "
                        "or copy the run folder somewhere writable and pass that with --run$", out[script]), out
    # the run folder (its domain-reference.pt) or its edits/ folder, whichever it writes first
    assert re.match(rf"edit_faces: {run.dir}(/edits)? {not_writable}", out["edit_faces"]), out
    assert re.match(rf"prepare_data: {run.dir} {not_writable}; make it writable, or build the cache elsewhere",
                    out["prepare_data"]), out
    assert not list(Path(run.config()["cache_dir"]).glob("judge-*.pt"))  # evaluate stopped before training a judge
    assert sorted(str(p.relative_to(run.dir)) for p in run.dir.rglob("*")) == before


def test_a_diverging_loss_is_one_line(tmp_path):
    cache_dir = write_tiny_cache(tmp_path / "cache")
    with pytest.raises(SystemExit) as stop:
        run_script("train_vae", train, _train_config(cache_dir, tmp_path / "runs", lr=1e6, log_every=1))
    assert re.fullmatch(r"train_vae: non-finite training loss at step \d+ .*lower --lr.*", str(stop.value.code))
