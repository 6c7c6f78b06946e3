"""Edit one face by attributes with a fitted run: input | reconstruction | edit, as a PNG (+ CSV).

    python -m experiments.edit_faces --run runs/001-vae --image face.jpg --set Smiling=1 Eyeglasses=0
    python -m experiments.edit_faces --run runs/001-vae --index 000123.jpg --set Blond_Hair=1 --method probe
    python -m experiments.edit_faces --image photo.jpg --eyes=212,240,301,236 --set Smiling=1

Each attribute is edited with the kind and strength the run's evaluation picked for it (--method picked, the
default once `experiments.evaluate` has run; else probe); the output says which. Several attributes with
different picked kinds are edited kind by kind, in the order given. Any JPEG/PNG is preprocessed like the training
images; a photo other than an aligned CelebA one is aligned from its two eye centres (--eyes=x1,y1,x2,y2; the `=`
form also takes negative numbers), and one unlike the training faces is warned about with the numbers. The output
<run>/edits/edit-IMAGE-DIGEST-CHANGES-KINDS-MODE-xSTRENGTHS.png carries what made it (DIGEST: of the input's bytes
and its alignment), so no edit overwrites another. The library: `evaluation.face_edit`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from attributes.composite import COMPOSITES
from data.photo import parse_eyes
from pipeline.cli import parse_config, run_folder_field, run_script
from pipeline.distributed import pick_device
from evaluation.face_edit import EDIT_METHODS, edit_face, parse_changes, save_face_edit
from pipeline.run import Run

NONE = {"default_text": "none"}


@dataclass
class EditConfig:
    """Which face, which changes, with which directions."""

    run: str | None = run_folder_field()
    image: str | None = field(default=None, metadata={"help": "a JPEG/PNG face", **NONE})
    index: str | None = field(default=None, metadata={"help": "or a cache image: id (000123.jpg) or row", **NONE})
    set: tuple[str, ...] = field(default=(), metadata={"help": "NAME=0|1 ..., the attribute values to set"})
    eyes: str | None = field(default=None, metadata={"help": "x1,y1,x2,y2 eye centres in --image, to align", **NONE})
    method: str | None = field(default=None, metadata={
        "choices": EDIT_METHODS, "help": "direction kind; None = picked when the run is evaluated, else probe"})
    mode: str | None = field(default=None, metadata={
        "choices": ("offset", "target"), "help": "None = the evaluation's (offset without one)"})
    strength: float | None = field(default=None, metadata={"help": "None = the evaluation's chosen one, else 1"})
    composite: str | None = field(default=None, metadata={
        "choices": COMPOSITES, "help": "the decoded edit as is, or its masked change onto the reconstruction or the "
                                       "input (+context: drawn where the training labels show the target); None = "
                                       "the evaluation's pick (recon without one)"})
    out: str | None = field(default=None, metadata={"help": "PNG path; None = <run>/edits/edit-...png", **NONE})
    device: str = "auto"


def main(config: EditConfig) -> Path:
    """Edit the face and write the comparison PNG and CSV; returns the PNG path."""
    changes = parse_changes(config.set)
    run = Run.open(config.run)
    result = edit_face(run, changes, image=config.image, index=config.index,
                       eyes=parse_eyes(config.eyes) if config.eyes else None, method=config.method,
                       mode=config.mode, strength=config.strength, composite=config.composite,
                       device=pick_device(config.device))
    for note in result.notes:
        print(f"note: {note}")
    print(result.plan.describe())
    png = save_face_edit(run, result, config.out)
    print(f"wrote {png}")
    return png


if __name__ == "__main__":
    run_script("edit_faces", main, parse_config(EditConfig, description=__doc__))
