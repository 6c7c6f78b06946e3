"""Damaged, foreign and unsafe artifact files: every loader names the file, what it expected and the fix."""
import os
import pickle
import re
import traceback

import pytest
import torch

from attributes.artifact import AttributeDirections
from attributes.encode import Latents
from data.io import CorruptArtifactError, load_torch_file
from models.checkpoint import load_checkpoint, save_checkpoint
from models.classifier import load_judge
from models.vae import ConvVAE, VAEConfig

# name, loader, the kind its messages name, a piece of its remedy
LOADERS = [
    ("checkpoint", load_checkpoint, "a latent-edit VAE checkpoint", "python -m experiments.train_vae"),
    ("latents", Latents.load, "encoded latents", "re-encodes when the file is gone, so delete a damaged one"),
    ("directions", AttributeDirections.load, "attribute directions", "python -m experiments.fit_directions --run"),
    ("judge", load_judge, "the attribute judge", "retrains when the file is gone, so delete a damaged one"),
]


class RunsCommand:
    """Unpickling this calls os.system(command): what a malicious file would do."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class Custom:
    """An ordinary class: not a tensor or plain container, so weights_only refuses it too."""


@pytest.fixture(scope="module")
def checkpoint_bytes(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint.pt"
    save_checkpoint(path, model=ConvVAE(VAEConfig(image_size=16, latent_dim=4, widths=(4, 8))), step=1, epoch=1)
    return path.read_bytes()


def bad_files(folder, checkpoint_bytes):
    """(description, path) of every kind of bad file, and the marker file the malicious ones would create."""
    marker = folder / "code-ran"
    files = {
        "truncated": checkpoint_bytes[: len(checkpoint_bytes) // 2],
        "cut-near-end": checkpoint_bytes[:-7],
        "empty": b"",
        "random": os.urandom(4096),
        "text": b"model: 1\nthis is a text file, not a checkpoint\n",
    }
    paths = []
    for name, data in files.items():
        (folder / name).write_bytes(data)
        paths.append((name, folder / name))
    torch.save({"model": RunsCommand(f"touch {marker}")}, folder / "malicious-torch")
    (folder / "malicious-pickle").write_bytes(pickle.dumps(RunsCommand(f"touch {marker}"), protocol=2))
    torch.save({"model": Custom()}, folder / "custom-class")
    paths += [(n, folder / n) for n in ("malicious-torch", "malicious-pickle", "custom-class")]
    return paths, marker


@pytest.mark.parametrize("name, loader, kind, remedy", LOADERS, ids=[entry[0] for entry in LOADERS])
def test_bad_files_name_the_path_kind_and_remedy(tmp_path, checkpoint_bytes, name, loader, kind, remedy):
    paths, marker = bad_files(tmp_path, checkpoint_bytes)
    for what, path in paths:
        with pytest.raises(CorruptArtifactError) as caught:
            loader(path)
        message = str(caught.value)
        assert str(path) in message, (what, message)
        assert kind in message and remedy in message, (what, message)
        assert "weights_only" not in message, (what, message)
        # nor in the printed traceback: torch's own text (which suggests weights_only=False) is not chained
        assert "weights_only" not in "".join(traceback.format_exception(caught.value)), what
        if what.startswith(("malicious", "custom")):
            assert "objects other than tensors and plain containers" in message, message
            assert "not loaded" in message and "could run code" in message, message
        else:
            assert "truncated, corrupt or not a file written by torch.save" in message or "empty" in message, message
    assert not marker.exists(), "unpickling a file ran its code"


@pytest.mark.parametrize("name, loader, kind, remedy", LOADERS, ids=[entry[0] for entry in LOADERS])
def test_missing_file_names_the_path_and_remedy(tmp_path, name, loader, kind, remedy):
    path = tmp_path / "run" / f"{name}.pt"
    with pytest.raises(FileNotFoundError) as caught:
        loader(path)
    assert str(path) in str(caught.value) and remedy in str(caught.value)


def test_messages_read_whole(tmp_path, checkpoint_bytes):
    (tmp_path / "checkpoint.pt").write_bytes(checkpoint_bytes[:100])
    with pytest.raises(CorruptArtifactError, match=r"checkpoint.pt is not readable as a latent-edit VAE checkpoint: "
                       r"it is truncated, corrupt or not a file written by torch.save \(RuntimeError: "
                       r"PytorchStreamReader failed reading zip archive: failed finding central directory\)\. "
                       r"Train again"):
        load_checkpoint(tmp_path / "checkpoint.pt")
    torch.save({"x": Custom()}, tmp_path / "directions-probe.pt")
    with pytest.raises(CorruptArtifactError, match=r"directions-probe.pt was not loaded: it should be attribute "
                       r"directions, but it holds objects other than tensors and plain containers \(.*Custom\)"):
        AttributeDirections.load(tmp_path / "directions-probe.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CorruptArtifactError, match=r"empty.pt is empty \(0 bytes\), not encoded latents"):
        Latents.load(tmp_path / "empty.pt")
    (tmp_path / "folder.pt").mkdir()
    with pytest.raises(CorruptArtifactError, match="folder.pt is not a file: expected the attribute judge"):
        load_judge(tmp_path / "folder.pt")


def test_is_a_value_error_and_good_files_still_load(tmp_path, checkpoint_bytes):
    assert issubclass(CorruptArtifactError, ValueError)  # callers that retry on ValueError (train_judge) keep working
    (tmp_path / "checkpoint.pt").write_bytes(checkpoint_bytes)
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 1
    # a misspelt device is the caller's mistake, not a corrupt file
    with pytest.raises(RuntimeError) as caught:
        load_torch_file(tmp_path / "checkpoint.pt", kind="k", remedy="r", map_location="cdua")
    assert not isinstance(caught.value, CorruptArtifactError)


@pytest.mark.parametrize("name, loader, kind, remedy", LOADERS, ids=[entry[0] for entry in LOADERS])
def test_non_finite_numbers_are_refused_naming_the_file_and_the_entry(tmp_path, name, loader, kind, remedy):
    path = tmp_path / f"{name}.pt"  # a damaged file whose tensors still load
    damaged = {"version": 1, "mu": torch.zeros(8, 4), "steps": torch.ones(3)}
    damaged["mu"][5, 3] = float("nan")
    torch.save(damaged, path)
    with pytest.raises(CorruptArtifactError) as caught:
        loader(path)
    message = str(caught.value)
    assert f"{path} holds a non-finite number (NaN or inf) at mu[5, 3] (1 of 32 values not finite)" in message
    assert kind in message and remedy in message, message


def test_a_checkpoint_with_an_inf_weight_names_the_weight(tmp_path, checkpoint_bytes):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(checkpoint_bytes)
    checkpoint = torch.load(path, weights_only=True)
    name = next(iter(checkpoint["model"]))
    checkpoint["model"][name].view(-1)[0] = float("inf")
    torch.save(checkpoint, path)
    with pytest.raises(CorruptArtifactError, match=rf"checkpoint.pt holds a non-finite number \(NaN or inf\) at "
                                                   rf"model.{re.escape(name)}\[0(, 0)*\] .*Train again"):
        load_checkpoint(path)
