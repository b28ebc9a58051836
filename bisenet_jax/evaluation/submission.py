"""Cityscapes test-server submissions: ``labelIds`` PNGs at full resolution, named as the server matches them.

The server (and cityscapesScripts' ``evalPixelLevelSemanticLabeling``) finds the prediction of
``<city>_<seq>_<frame>_leftImg8bit.png`` by its ``<city>_<seq>_<frame>`` prefix, in one flat
archive; the pixel values must be Cityscapes *labelIds* (0..33), not the 19 train ids the models
predict. Each train id maps back to the labelId that the training label map sends to it.
"""
from __future__ import annotations

import pathlib
import re
import zipfile
from typing import Sequence

import numpy as np
from PIL import Image

from bisenet_jax.data.kinds import cityscapes
from bisenet_jax.evaluation.predict import Predictor, read_image

_FRAME = re.compile(r"^([A-Za-z]+_\d{6}_\d{6})_leftImg8bit$")


def train_id_to_label_id() -> np.ndarray:
    """(256,) uint8 table: train id -> Cityscapes labelId; anything else -> 0 (unlabeled)."""
    table = np.zeros(256, np.uint8)
    for label_id, train_id in sorted(cityscapes.LABEL_TO_TRAIN_ID.items(), reverse=True):
        table[train_id] = label_id  # reverse order: the smallest labelId of a train id wins
    return table


def find_frames(inputs: Sequence[str | pathlib.Path]) -> list[pathlib.Path]:
    """Every ``*_leftImg8bit.png`` under ``inputs`` (files or folders, e.g. ``leftImg8bit/test``), sorted."""
    frames = []
    for item in map(pathlib.Path, inputs):
        if item.is_dir():
            frames += item.rglob("*_leftImg8bit.png")
        elif item.is_file():
            frames.append(item)
        else:
            raise FileNotFoundError(f"Cityscapes input {item} does not exist")
    bad = [f.name for f in frames if not _FRAME.match(f.stem)]
    if bad:
        raise ValueError(f"not Cityscapes frame names (<city>_<seq>_<frame>_leftImg8bit.png): {bad[:3]}")
    if not frames:
        raise FileNotFoundError(f"no *_leftImg8bit.png found under {', '.join(map(str, inputs))}")
    return sorted(set(frames))


def write_submission(predictor: Predictor, inputs: Sequence[str | pathlib.Path],
                     output_dir: str | pathlib.Path) -> pathlib.Path:
    """Predict every frame, write ``<output_dir>/<city>_<seq>_<frame>_leftImg8bit.png`` (labelIds) and
    ``<output_dir>.zip`` holding them flat; returns the zip's path."""
    if predictor.info.num_classes != len(cityscapes.CLASS_NAMES):
        raise ValueError(f"a Cityscapes submission needs a {len(cityscapes.CLASS_NAMES)}-class Cityscapes model, "
                         f"got {predictor.info.num_classes} classes ({predictor.info.name})")
    output_dir = pathlib.Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    table = train_id_to_label_id()
    frames = find_frames(inputs)
    written = []
    for path, _, train_ids in predictor.predict_batches((p, read_image(p)) for p in frames):
        out = output_dir / path.name
        Image.fromarray(table[np.asarray(train_ids, np.int64)]).save(out)
        written.append(out)
    archive = output_dir.with_suffix(".zip")
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for out in written:
            zf.write(out, arcname=out.name)
    return archive
