"""What a person watches: a tqdm progress bar, TensorBoard event files (tensorboardX, no TensorFlow
needed) and a JSON-lines metrics log. Only process 0 writes.

A ``gs://`` workdir: tensorboardX writes to GCS only through its own google-cloud-storage writer, and
GCS objects cannot be appended to. So both files are written to a local staging folder (with the
workdir's ``metrics.jsonl`` copied down first, so a resumed run appends to it as it does locally)
and uploaded through ``bisenet_jax.paths`` (one client, one set of credentials and error messages)
at most every ``sync_every_s`` seconds, at ``flush()`` and at ``close()``. A process killed in
between loses at most that much of the log; checkpoints are unaffected.
"""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import sys
import tempfile
import time
from typing import Any, Mapping, Sequence

import jax
import numpy as np

from bisenet_jax import paths

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


def _summary_writer_class():
    """tensorboardX's SummaryWriter, imported without PyTorch. tensorboardX imports torch when it is
    installed (to accept torch tensors, which nothing here passes), and that import took 1.4-1.9 s of
    every training start on the 2-core development machine (``python -X importtime -c "import
    tensorboardX"``), more beside other jobs. A None entry in ``sys.modules`` makes ``import torch``
    raise ImportError, which tensorboardX catches; the entry goes again once tensorboardX is loaded,
    so the process can still import torch later. A process that already imported torch is left as is."""
    if "tensorboardX" in sys.modules or "torch" in sys.modules:
        from tensorboardX import SummaryWriter
        return SummaryWriter
    sys.modules["torch"] = None
    try:
        from tensorboardX import SummaryWriter
    finally:
        del sys.modules["torch"]
    return SummaryWriter


class MetricWriter:
    def __init__(self, workdir: str | os.PathLike, enabled: bool | None = None, sync_every_s: float = 60.0):
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        self.workdir = paths.path(workdir)
        self._tb = None
        self._remote = paths.is_remote(self.workdir)
        self._sync_every_s, self._synced_at = sync_every_s, time.time()
        if self.enabled:
            SummaryWriter = _summary_writer_class()
            self._local = pathlib.Path(tempfile.mkdtemp(prefix="bisenet_metrics_")) if self._remote else self.workdir
            if self._remote and (self.workdir / METRICS_FILE).exists():
                paths.copy(self.workdir / METRICS_FILE, self._local / METRICS_FILE)
            self._tb = SummaryWriter(str(self._local / TENSORBOARD_DIR))
            self._jsonl = open(self._local / METRICS_FILE, "a")

    def scalars(self, step: int, values: Mapping[str, float], prefix: str = "") -> None:
        if not self.enabled:
            return
        values = {f"{prefix}{k}": float(v) for k, v in values.items()}
        for key, value in values.items():
            self._tb.add_scalar(key, value, step)
        self._jsonl.write(json.dumps({"step": int(step), "time": time.time(), **values}) + "\n")
        self._jsonl.flush()
        if self._remote and time.time() - self._synced_at > self._sync_every_s:
            self.flush()

    def images(self, step: int, name: str, images: Sequence[np.ndarray]) -> None:
        """uint8 (H, W, 3) images, e.g. input | ground truth | prediction side by side."""
        if not self.enabled:
            return
        for i, image in enumerate(images):
            self._tb.add_image(f"{name}/{i}", np.asarray(image), step, dataformats="HWC")

    def flush(self) -> None:
        if self.enabled:
            self._tb.flush()
            self._jsonl.flush()
            self._upload()

    def close(self) -> None:
        if self.enabled:
            self._tb.close()
            self._jsonl.close()
            self._upload()
            if self._remote:
                shutil.rmtree(self._local, ignore_errors=True)

    def _upload(self) -> None:
        """A gs:// workdir: the staged files replace their copies in the workdir (each event file
        is this run's own: tensorboardX names it by time and host)."""
        if not self._remote:
            return
        paths.copy(self._local / METRICS_FILE, self.workdir / METRICS_FILE)
        for event_file in sorted((self._local / TENSORBOARD_DIR).glob("*")):
            paths.copy(event_file, self.workdir / TENSORBOARD_DIR / event_file.name)
        self._synced_at = time.time()


def progress_bar(total: int, initial: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=initial, disable=not (enabled and jax.process_index() == 0),
                dynamic_ncols=True, unit="step", desc="train")
